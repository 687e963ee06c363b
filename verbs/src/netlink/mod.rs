//! The kernel's RDMA netlink interface (`NETLINK_RDMA`, client `RDMA_NL_NLDEV`), spoken directly.
//!
//! This is what `rdma dev show`, `rdma link show` and `rdma link add|delete` (iproute2) do,
//! without needing the `rdma` tool installed: list the RDMA devices with their ports and
//! netdevs, and create or delete software devices (`rxe`, `siw`) on top of a netdev. The
//! device monitor and the software-device fixtures use it; nothing here needs rdma-core.
//!
//! The protocol (`<rdma/rdma_netlink.h>`, `<linux/netlink.h>`): a request is a `nlmsghdr`
//! whose type is `(RDMA_NL_NLDEV << 10) + op`, followed directly by netlink attributes (no
//! generic-netlink header). Dumps (`NLM_F_DUMP`) are answered by one message per object and
//! a final `NLMSG_DONE`; other requests ask for an ack (`NLM_F_ACK`), an `NLMSG_ERROR` whose
//! errno is 0 on success.
//!
//! Every call takes a timeout and never waits past it. The kernel handles a netlink request
//! synchronously inside the sender's `sendto`, and some requests block there: deleting a
//! device waits, uninterruptibly, until every process has released the device's objects, and
//! adding one may load a module. So each call runs its socket I/O on a short-lived worker
//! thread and the caller waits for that thread's answer only until the timeout; the worker
//! itself uses the same deadline for every receive. A process that may still hold the device
//! it deletes uses [`delete_link_elsewhere`] instead: the request is sent by a child process,
//! as a thread of the holder could never end.
//!
//! Reply parsing is pure code over byte slices: every length is checked, and malformed or
//! truncated replies give an [`io::ErrorKind::InvalidData`] error, never a panic.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// `RDMA_NL_NLDEV`: the netlink client for the RDMA device interface.
const RDMA_NL_NLDEV: u16 = 5;

/// `RDMA_NLDEV_CMD_GET`: device attributes (can dump).
const CMD_GET: u16 = 1;
/// `RDMA_NLDEV_CMD_NEWLINK`: create a software device on a netdev.
const CMD_NEWLINK: u16 = 3;
/// `RDMA_NLDEV_CMD_DELLINK`: unregister a device that allows it.
const CMD_DELLINK: u16 = 4;
/// `RDMA_NLDEV_CMD_PORT_GET`: port attributes (dump needs `DEV_INDEX`).
const CMD_PORT_GET: u16 = 5;

const ATTR_DEV_INDEX: u16 = 1;
const ATTR_DEV_NAME: u16 = 2;
const ATTR_PORT_INDEX: u16 = 3;
const ATTR_NODE_GUID: u16 = 6;
const ATTR_SYS_IMAGE_GUID: u16 = 7;
const ATTR_PORT_STATE: u16 = 12;
const ATTR_PORT_PHYS_STATE: u16 = 13;
const ATTR_NDEV_INDEX: u16 = 50;
const ATTR_NDEV_NAME: u16 = 51;
const ATTR_LINK_TYPE: u16 = 65;
const ATTR_DEV_PROTOCOL: u16 = 67;

/// `IB_DEVICE_NAME_MAX` (64) less the terminating NUL.
const MAX_DEV_NAME: usize = 63;
/// `IFNAMSIZ` (16) less the terminating NUL: the kernel copies link type and netdev name into
/// `char[IFNAMSIZ]`.
const MAX_IFNAME: usize = 15;

const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP: u16 = 0x300;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// `sizeof(struct nlmsghdr)`, already 4-aligned.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`, already 4-aligned.
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;

/// Receive buffer: larger than any datagram a netlink dump sends (the kernel caps those at
/// 32 KiB); a longer one is detected with `MSG_TRUNC` and reported, not cut silently.
const RECV_BUF: usize = 64 * 1024;

/// How many times [`list_devices`] starts over when a device vanishes between its listing
/// and its port query.
const LIST_ATTEMPTS: usize = 3;

/// One RDMA device, as `rdma dev show` and `rdma link show` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaDevice {
    /// The kernel's device index (`RDMA_NLDEV_ATTR_DEV_INDEX`), the handle for
    /// [`delete_link`].
    pub index: u32,
    /// The device name, e.g. `rxe0` or `mlx5_0`.
    pub name: String,
    /// Node GUID as a number (the kernel sends it in host order; `rdma dev show` prints it
    /// as four hex groups, most significant first). 0 if the kernel did not send it.
    pub node_guid: u64,
    /// System image GUID, same encoding as `node_guid`. 0 if the kernel did not send it.
    pub sys_image_guid: u64,
    /// The device protocol (`RDMA_NLDEV_ATTR_DEV_PROTOCOL`): `"ib"`, `"roce"`, `"iw"`, ...;
    /// `None` on kernels that do not report it.
    pub protocol: Option<String>,
    /// The device's ports, sorted by port number.
    pub ports: Vec<RdmaPort>,
}

/// One port of an [`RdmaDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaPort {
    /// Port number, starting at 1 as in sysfs.
    pub port: u32,
    /// The netdev under this port (RoCE, iWARP), if any and visible in this network namespace.
    pub netdev: Option<String>,
    /// The ifindex of that netdev.
    pub netdev_index: Option<u32>,
    /// Logical port state (`enum ib_port_state`: 1 DOWN, 2 INIT, 3 ARMED, 4 ACTIVE,
    /// 5 ACTIVE_DEFER).
    pub state: Option<u8>,
    /// Physical port state (1 SLEEP, 2 POLLING, 3 DISABLED, 4 TRAINING, 5 LINK_UP,
    /// 6 LINK_ERROR_RECOVERY, 7 PHY_TEST).
    pub phys_state: Option<u8>,
}

/// Lists the RDMA devices of this network namespace with their ports.
///
/// One `RDMA_NLDEV_CMD_GET` dump, then one `RDMA_NLDEV_CMD_PORT_GET` dump per device. If a
/// device disappears between the two (`EINVAL`/`ENODEV` from its port dump) the listing
/// starts over, at most three times. Fails with [`io::ErrorKind::Unsupported`] when the kernel
/// has no RDMA netlink (ib_core not loaded or not built), and with
/// [`io::ErrorKind::TimedOut`] when the whole listing did not finish within `timeout`.
pub fn list_devices(timeout: Duration) -> io::Result<Vec<RdmaDevice>> {
    bounded(timeout, "listing RDMA devices", move |deadline| {
        let mut sock = NlSocket::open()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match list_once(&mut sock, deadline) {
                Err(e) if attempt < LIST_ATTEMPTS && is_vanished(&e) => continue,
                other => return other,
            }
        }
    })
}

/// Creates a software RDMA device, like `rdma link add NAME type LINK_TYPE netdev NETDEV`.
///
/// `link_type` is the kernel's link type, `"rxe"` (Soft-RoCE) or `"siw"` (Soft-iWARP); the
/// kernel loads the module `rdma-link-<type>` if needed. Needs `CAP_NET_ADMIN`. Errors from
/// the kernel come back as the errno of its ack, kept as the raw OS error (for example
/// `EPERM`, `ENODEV` for an unknown netdev, `EINVAL` for an unknown link type, `EEXIST` when
/// rxe already runs on that netdev; the exact codes are the driver's); names that the
/// kernel would truncate or reject are refused here with [`io::ErrorKind::InvalidInput`].
/// On timeout ([`io::ErrorKind::TimedOut`]) the request may still complete in the kernel.
pub fn add_link(name: &str, link_type: &str, netdev: &str, timeout: Duration) -> io::Result<()> {
    check_name("device name", name, MAX_DEV_NAME)?;
    if name.contains('%') {
        return Err(invalid_input("device name must not contain '%'"));
    }
    check_name("link type", link_type, MAX_IFNAME)?;
    check_name("netdev name", netdev, MAX_IFNAME)?;
    let request_attrs = [
        (ATTR_DEV_NAME, AttrValue::Str(name.to_owned())),
        (ATTR_LINK_TYPE, AttrValue::Str(link_type.to_owned())),
        (ATTR_NDEV_NAME, AttrValue::Str(netdev.to_owned())),
    ];
    let what = format!("adding RDMA link {name} ({link_type} on {netdev})");
    bounded(timeout, &what, move |deadline| {
        let mut sock = NlSocket::open()?;
        sock.request(CMD_NEWLINK, NLM_F_ACK, &request_attrs, deadline, |_| Ok(()))
    })
}

/// Deletes the RDMA device with kernel index `index`, like `rdma link delete`.
///
/// Only devices created with [`add_link`] (or otherwise marked deletable by their driver)
/// can be deleted; others give `EINVAL`, as does an unknown index. Needs `CAP_NET_ADMIN`.
///
/// The kernel's delete blocks until every process has closed the device's verbs objects.
/// This call waits for the kernel's ack at most `timeout` and then fails with
/// [`io::ErrorKind::TimedOut`]; the request is *not* cancelled: the kernel still completes
/// it once the device is released (a detached worker thread stays blocked in the kernel
/// until then), and a `remove` uevent for the device reports that moment.
pub fn delete_link(index: u32, timeout: Duration) -> io::Result<()> {
    let request_attrs = [(ATTR_DEV_INDEX, AttrValue::U32(index))];
    let what = format!("deleting RDMA device index {index}");
    bounded(timeout, &what, move |deadline| {
        let mut sock = NlSocket::open()?;
        sock.request(CMD_DELLINK, NLM_F_ACK, &request_attrs, deadline, |_| Ok(()))
    })
}

/// One listing attempt on an open socket.
fn list_once(sock: &mut NlSocket, deadline: Instant) -> io::Result<Vec<RdmaDevice>> {
    let mut devices = Vec::new();
    sock.request(CMD_GET, NLM_F_DUMP, &[], deadline, |payload| {
        devices.push(parse_device(payload)?);
        Ok(())
    })?;
    for device in &mut devices {
        let attrs = [(ATTR_DEV_INDEX, AttrValue::U32(device.index))];
        let index = device.index;
        let ports = &mut device.ports;
        sock.request(CMD_PORT_GET, NLM_F_DUMP, &attrs, deadline, |payload| {
            let (dev_index, port) = parse_port(payload)?;
            if dev_index.is_none_or(|i| i == index) {
                ports.push(port);
            }
            Ok(())
        })?;
        ports.sort_by_key(|p| p.port);
    }
    Ok(devices)
}

/// Whether a port dump failed because its device went away meanwhile.
fn is_vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENODEV))
}

/// Runs `work` on a worker thread and waits for its answer at most `timeout`.
///
/// The worker gets the same deadline for its own waits; if it is stuck inside the kernel (a
/// blocking `sendto`), it is left to finish on its own and its answer is dropped.
fn bounded<T, F>(timeout: Duration, what: &str, work: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(Instant) -> io::Result<T> + Send + 'static,
{
    let deadline = deadline_after(timeout);
    let (tx, rx) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("rdma-netlink".into())
        .spawn(move || {
            // The receiver is gone if the caller timed out; the answer is then dropped.
            let _ = tx.send(work(deadline));
        })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{what}: no answer from the kernel within {timeout:?} (the request, if sent, \
                 still completes in the kernel)"
            ),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(io::Error::other(format!(
            "{what}: the netlink worker thread ended without an answer"
        ))),
    }
}

/// `now + timeout`, or about a century from now if that overflows `Instant`.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

fn invalid_input(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

fn malformed(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed RDMA netlink reply: {msg}"),
    )
}

/// Refuses names the kernel would reject or silently truncate.
fn check_name(what: &str, value: &str, max: usize) -> io::Result<()> {
    if value.is_empty() {
        return Err(invalid_input(&format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(invalid_input(&format!(
            "{what} {value:?} is longer than {max} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(invalid_input(&format!("{what} contains a NUL byte")));
    }
    Ok(())
}

mod elsewhere;
mod message;
mod socket;
#[cfg(test)]
mod tests;

pub use elsewhere::{DeleteChild, delete_link_elsewhere};

use message::*;
use socket::*;
