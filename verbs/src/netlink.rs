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
//! itself uses the same deadline for every receive.
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

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// The value of a request attribute.
#[derive(Debug, Clone)]
enum AttrValue {
    /// `NLA_U32`, host order.
    U32(u32),
    /// `NLA_NUL_STRING`: the bytes and a terminating NUL.
    Str(String),
}

/// The netlink message type of an NLDEV operation: `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`.
const fn nldev_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Encodes one request: `nlmsghdr` (with `NLM_F_REQUEST` added to `flags`), then each
/// attribute padded to 4 bytes. `nlmsg_pid` is 0: the kernel knows the sender.
fn encode_request(op: u16, flags: u16, seq: u32, attrs: &[(u16, AttrValue)]) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    for (ty, value) in attrs {
        let payload: Vec<u8> = match value {
            AttrValue::U32(v) => v.to_ne_bytes().to_vec(),
            AttrValue::Str(s) => s.bytes().chain([0]).collect(),
        };
        // Attribute payloads here are at most a 64-byte name: the u16 length cannot overflow.
        let nla_len = (NLA_HDRLEN + payload.len()) as u16;
        buf.extend_from_slice(&nla_len.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&payload);
        buf.resize(align4(buf.len()), 0);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&nldev_type(op).to_ne_bytes());
    buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf[12..16].copy_from_slice(&0u32.to_ne_bytes());
    buf
}

// ---------------------------------------------------------------------------------------
// Parsing (pure, over byte slices)
// ---------------------------------------------------------------------------------------

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    read_u32(buf, at).map(|v| v as i32)
}

/// One netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NlMsg<'a> {
    ty: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into its netlink messages, checking every length.
fn split_messages(buf: &[u8]) -> io::Result<Vec<NlMsg<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(malformed(&format!(
                "{} trailing bytes, less than a message header",
                rest.len()
            )));
        }
        let len = read_u32(rest, 0).ok_or_else(|| malformed("message header"))? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed(&format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        out.push(NlMsg {
            ty: read_u16(rest, 4).ok_or_else(|| malformed("message type"))?,
            seq: read_u32(rest, 8).ok_or_else(|| malformed("message sequence"))?,
            payload: &rest[NLMSG_HDRLEN..len],
        });
        // The last message may lack its padding.
        at = at.saturating_add(align4(len)).min(buf.len());
    }
    Ok(out)
}

/// Handles one received datagram of the reply to request `seq` of operation `op`.
///
/// Messages with another sequence number (stale replies) are skipped, as are `NLMSG_NOOP`
/// and unexpected types; each data message's payload goes to `on_data`. Returns `Ok(true)`
/// when the reply is complete (`NLMSG_DONE`, or an `NLMSG_ERROR` ack with errno 0), and
/// maps a negative errno in `NLMSG_ERROR` or `NLMSG_DONE` to [`io::Error::from_raw_os_error`].
fn process_reply(
    buf: &[u8],
    seq: u32,
    op: u16,
    on_data: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    for msg in split_messages(buf)? {
        if msg.seq != seq {
            continue;
        }
        match msg.ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = read_i32(msg.payload, 0)
                    .ok_or_else(|| malformed("NLMSG_ERROR without errno"))?;
                return match errno {
                    0 => Ok(true),
                    e if e < 0 => Err(io::Error::from_raw_os_error(
                        e.checked_neg()
                            .ok_or_else(|| malformed("errno out of range"))?,
                    )),
                    e => Err(malformed(&format!("positive errno {e} in NLMSG_ERROR"))),
                };
            }
            NLMSG_DONE => {
                // The kernel puts the dump's status (0 or a negative errno) in the payload.
                if let Some(e) = read_i32(msg.payload, 0)
                    && e < 0
                {
                    return Err(io::Error::from_raw_os_error(
                        e.checked_neg()
                            .ok_or_else(|| malformed("errno out of range"))?,
                    ));
                }
                return Ok(true);
            }
            NLMSG_OVERRUN => return Err(io::Error::other("RDMA netlink reply overrun")),
            ty if ty == nldev_type(op) => on_data(msg.payload)?,
            _ => {}
        }
    }
    Ok(false)
}

/// One attribute: its type (flag bits masked off), whether it is in network byte order, and
/// its payload without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attr<'a> {
    ty: u16,
    net_order: bool,
    payload: &'a [u8],
}

/// Splits a message payload into its attributes, checking every length.
fn parse_attrs(buf: &[u8]) -> io::Result<Vec<Attr<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < NLA_HDRLEN {
            return Err(malformed(&format!(
                "{} trailing bytes, less than an attribute header",
                rest.len()
            )));
        }
        let len = read_u16(rest, 0).ok_or_else(|| malformed("attribute header"))? as usize;
        let raw_ty = read_u16(rest, 2).ok_or_else(|| malformed("attribute header"))?;
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(malformed(&format!(
                "attribute {raw_ty:#x} length {len} with {} bytes left",
                rest.len()
            )));
        }
        out.push(Attr {
            ty: raw_ty & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER),
            net_order: raw_ty & NLA_F_NET_BYTEORDER != 0,
            payload: &rest[NLA_HDRLEN..len],
        });
        at = at.saturating_add(align4(len)).min(buf.len());
    }
    Ok(out)
}

fn attr_array<const N: usize>(attr: &Attr<'_>, what: &str) -> io::Result<[u8; N]> {
    attr.payload.try_into().map_err(|_| {
        malformed(&format!(
            "{what} attribute {} has {} bytes, not {N}",
            attr.ty,
            attr.payload.len()
        ))
    })
}

fn attr_u8(attr: &Attr<'_>) -> io::Result<u8> {
    Ok(attr_array::<1>(attr, "u8")?[0])
}

fn attr_u32(attr: &Attr<'_>) -> io::Result<u32> {
    let bytes = attr_array::<4>(attr, "u32")?;
    Ok(if attr.net_order {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_ne_bytes(bytes)
    })
}

fn attr_u64(attr: &Attr<'_>) -> io::Result<u64> {
    let bytes = attr_array::<8>(attr, "u64")?;
    Ok(if attr.net_order {
        u64::from_be_bytes(bytes)
    } else {
        u64::from_ne_bytes(bytes)
    })
}

/// A string attribute: the bytes up to the first NUL (or all of them), as UTF-8.
fn attr_string(attr: &Attr<'_>) -> io::Result<String> {
    let bytes = attr.payload.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8(bytes.to_vec())
        .map_err(|_| malformed(&format!("string attribute {} is not UTF-8", attr.ty)))
}

/// Parses the payload of one `RDMA_NLDEV_CMD_GET` reply message. `DEV_INDEX` and `DEV_NAME`
/// are required; unknown and nested attributes are skipped. `ports` is left empty.
fn parse_device(payload: &[u8]) -> io::Result<RdmaDevice> {
    let mut index = None;
    let mut name = None;
    let mut node_guid = 0;
    let mut sys_image_guid = 0;
    let mut protocol = None;
    for attr in parse_attrs(payload)? {
        match attr.ty {
            ATTR_DEV_INDEX => index = Some(attr_u32(&attr)?),
            ATTR_DEV_NAME => name = Some(attr_string(&attr)?),
            ATTR_NODE_GUID => node_guid = attr_u64(&attr)?,
            ATTR_SYS_IMAGE_GUID => sys_image_guid = attr_u64(&attr)?,
            ATTR_DEV_PROTOCOL => protocol = Some(attr_string(&attr)?),
            // PAD (0) before 64-bit values, nested tables (DRIVER) and anything newer.
            _ => {}
        }
    }
    Ok(RdmaDevice {
        index: index.ok_or_else(|| malformed("device without DEV_INDEX"))?,
        name: name.ok_or_else(|| malformed("device without DEV_NAME"))?,
        node_guid,
        sys_image_guid,
        protocol,
        ports: Vec::new(),
    })
}

/// Parses the payload of one `RDMA_NLDEV_CMD_PORT_GET` reply message: the device index (if
/// sent) and the port. `PORT_INDEX` is required.
fn parse_port(payload: &[u8]) -> io::Result<(Option<u32>, RdmaPort)> {
    let mut dev_index = None;
    let mut port = None;
    let mut netdev = None;
    let mut netdev_index = None;
    let mut state = None;
    let mut phys_state = None;
    for attr in parse_attrs(payload)? {
        match attr.ty {
            ATTR_DEV_INDEX => dev_index = Some(attr_u32(&attr)?),
            ATTR_PORT_INDEX => port = Some(attr_u32(&attr)?),
            ATTR_NDEV_NAME => netdev = Some(attr_string(&attr)?),
            ATTR_NDEV_INDEX => netdev_index = Some(attr_u32(&attr)?),
            ATTR_PORT_STATE => state = Some(attr_u8(&attr)?),
            ATTR_PORT_PHYS_STATE => phys_state = Some(attr_u8(&attr)?),
            _ => {}
        }
    }
    let port = port.ok_or_else(|| malformed("port without PORT_INDEX"))?;
    Ok((
        dev_index,
        RdmaPort {
            port,
            netdev,
            netdev_index,
            state,
            phys_state,
        },
    ))
}

// ---------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------

/// `struct sockaddr_nl`, spelled out so it can be built without zeroing a foreign struct.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SockaddrNl {
    nl_family: libc::sa_family_t,
    nl_pad: u16,
    nl_pid: u32,
    nl_groups: u32,
}

const SOCKADDR_NL_LEN: libc::socklen_t = size_of::<SockaddrNl>() as libc::socklen_t;

/// A `NETLINK_RDMA` socket with its next sequence number.
struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    fn open() -> io::Result<NlSocket> {
        // SAFETY: socket(2) takes only integers; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_RDMA,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) => io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "this kernel has no RDMA netlink (socket(AF_NETLINK, NETLINK_RDMA): \
                         {e}); ib_core is not loaded or not built"
                    ),
                ),
                _ => e,
            });
        }
        // SAFETY: `fd` is a fresh descriptor from socket(2) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A fresh socket has nothing queued; sequence numbers tell apart the replies to this
        // socket's successive requests (a listing sends several).
        let seq = 0;
        Ok(NlSocket {
            fd,
            seq,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends one request and feeds the payloads of its reply to `on_data` until the reply is
    /// complete, an error arrives or `deadline` passes.
    fn request(
        &mut self,
        op: u16,
        flags: u16,
        attrs: &[(u16, AttrValue)],
        deadline: Instant,
        mut on_data: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&encode_request(op, flags, seq, attrs))?;
        loop {
            let len = self.recv(deadline)?;
            let Some(datagram) = self.buf.get(..len) else {
                return Err(malformed("datagram longer than the buffer"));
            };
            if process_reply(datagram, seq, op, &mut on_data)? {
                return Ok(());
            }
        }
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        let kernel = SockaddrNl {
            nl_family: libc::AF_NETLINK as libc::sa_family_t,
            ..SockaddrNl::default()
        };
        loop {
            // SAFETY: `msg` is valid for reads of `msg.len()` bytes and `kernel` is a live
            // `sockaddr_nl` of SOCKADDR_NL_LEN bytes; sendto(2) reads both only during the call.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&raw const kernel).cast(),
                    SOCKADDR_NL_LEN,
                )
            };
            if sent < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if sent as usize != msg.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short send on a netlink socket",
                ));
            }
            return Ok(());
        }
    }

    /// Receives one datagram from the kernel into `self.buf`, waiting at most until
    /// `deadline`; datagrams from other senders are dropped. Returns its length.
    fn recv(&mut self, deadline: Instant) -> io::Result<usize> {
        loop {
            let mut from = SockaddrNl::default();
            let mut from_len = SOCKADDR_NL_LEN;
            // SAFETY: `self.buf` is valid for writes of its length; `from`/`from_len` are live
            // locals describing a buffer of SOCKADDR_NL_LEN bytes. With MSG_TRUNC the return
            // value may exceed the buffer, but the kernel writes at most `self.buf.len()`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        wait_readable(&self.fd, deadline, "RDMA netlink reply")?;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if from.nl_pid != 0 {
                // Not from the kernel: some other process addressed our port. Drop it, but
                // do not let a stream of those outlast the deadline.
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out waiting for RDMA netlink reply",
                    ));
                }
                continue;
            }
            if n > self.buf.len() {
                return Err(malformed(&format!(
                    "datagram of {n} bytes truncated to {}",
                    self.buf.len()
                )));
            }
            return Ok(n);
        }
    }
}

/// Waits until `fd` is readable or `deadline` passes (then `TimedOut`). Retries on EINTR
/// with the remaining time.
fn wait_readable(fd: &OwnedFd, deadline: Instant, what: &str) -> io::Result<()> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out waiting for {what}"),
            ));
        }
        // Round up so a sub-millisecond remainder does not become a busy poll of 0 ms.
        let ms = remaining.as_nanos().div_ceil(1_000_000);
        let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one live pollfd and nfds is 1; poll(2) writes only its `revents`.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            // Readable, or an error/hangup that the next recv reports.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a netlink message with the given header fields and payload, padded.
    fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&1234u32.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    /// Builds one attribute, padded.
    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn s(v: &str) -> Vec<u8> {
        v.bytes().chain([0]).collect()
    }

    /// A device message shaped like the kernel's `fill_dev_info` output for rxe0.
    fn rxe0_payload() -> Vec<u8> {
        [
            attr(ATTR_DEV_INDEX, &3u32.to_ne_bytes()),
            attr(ATTR_DEV_NAME, &s("rxe0")),
            attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
            attr(4, &0x1234_5678_9abc_def0u64.to_ne_bytes()), // CAP_FLAGS, unused
            attr(0, &[]),                                     // RDMA_NLDEV_ATTR_PAD
            attr(ATTR_NODE_GUID, &0x5054_00ff_fe12_3456u64.to_ne_bytes()),
            attr(ATTR_SYS_IMAGE_GUID, &0x5054_00ff_fe12_3457u64.to_ne_bytes()),
            attr(14, &[1]), // DEV_NODE_TYPE
            attr(ATTR_DEV_PROTOCOL, &s("roce")),
            // DRIVER, nested: skipped.
            attr(52 | NLA_F_NESTED, &attr(53, &attr(54, &s("x")))),
            attr(0x3fff, b"future attribute"),
        ]
        .concat()
    }

    fn port_payload(dev: u32, port: u32) -> Vec<u8> {
        [
            attr(ATTR_DEV_INDEX, &dev.to_ne_bytes()),
            attr(ATTR_DEV_NAME, &s("rxe0")),
            attr(ATTR_PORT_INDEX, &port.to_ne_bytes()),
            attr(ATTR_PORT_STATE, &[4]),
            attr(ATTR_PORT_PHYS_STATE, &[5]),
            attr(ATTR_NDEV_INDEX, &2u32.to_ne_bytes()),
            attr(ATTR_NDEV_NAME, &s("eth0")),
        ]
        .concat()
    }

    #[test]
    fn uapi_numbers() {
        assert_eq!(nldev_type(CMD_GET), 0x1401);
        assert_eq!(nldev_type(CMD_NEWLINK), 0x1403);
        assert_eq!(nldev_type(CMD_DELLINK), 0x1404);
        assert_eq!(nldev_type(CMD_PORT_GET), 0x1405);
        assert_eq!(size_of::<SockaddrNl>(), 12);
        assert_eq!(libc::NETLINK_RDMA, 20);
    }

    #[test]
    fn encode_dump_request() {
        let m = encode_request(CMD_GET, NLM_F_DUMP, 7, &[]);
        let mut want = Vec::new();
        want.extend_from_slice(&16u32.to_ne_bytes());
        want.extend_from_slice(&0x1401u16.to_ne_bytes());
        want.extend_from_slice(&0x301u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        assert_eq!(m, want);
    }

    #[test]
    fn encode_newlink_request() {
        let attrs = [
            (ATTR_DEV_NAME, AttrValue::Str("rxe0".into())),
            (ATTR_LINK_TYPE, AttrValue::Str("rxe".into())),
            (ATTR_NDEV_NAME, AttrValue::Str("enp0s3".into())),
        ];
        let m = encode_request(CMD_NEWLINK, NLM_F_ACK, 42, &attrs);
        let body = [
            attr(ATTR_DEV_NAME, b"rxe0\0"),
            attr(ATTR_LINK_TYPE, b"rxe\0"),
            attr(ATTR_NDEV_NAME, b"enp0s3\0"),
        ]
        .concat();
        let mut want = msg(0x1403, NLM_F_REQUEST | NLM_F_ACK, 42, &body);
        want[12..16].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(m, want);
        // "rxe0\0" is 5 bytes: nla_len 9, padded to 12.
        assert_eq!(read_u16(&m, 16), Some(9));
        assert_eq!(m.len(), 16 + 12 + 8 + 12);
        assert_eq!(read_u32(&m, 0), Some(m.len() as u32));
        // The encoding parses back.
        let msgs = split_messages(&m).unwrap();
        assert_eq!(msgs.len(), 1);
        let a = parse_attrs(msgs[0].payload).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(attr_string(&a[2]).unwrap(), "enp0s3");
    }

    #[test]
    fn encode_dellink_request() {
        let m = encode_request(
            CMD_DELLINK,
            NLM_F_ACK,
            1,
            &[(ATTR_DEV_INDEX, AttrValue::U32(9))],
        );
        let mut want = msg(0x1404, 0x05, 1, &attr(ATTR_DEV_INDEX, &9u32.to_ne_bytes()));
        want[12..16].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(m, want);
        assert_eq!(m.len(), 24);
    }

    #[test]
    fn parses_device() {
        let d = parse_device(&rxe0_payload()).unwrap();
        assert_eq!(
            d,
            RdmaDevice {
                index: 3,
                name: "rxe0".into(),
                node_guid: 0x5054_00ff_fe12_3456,
                sys_image_guid: 0x5054_00ff_fe12_3457,
                protocol: Some("roce".into()),
                ports: vec![],
            }
        );
    }

    #[test]
    fn parses_port_and_net_byteorder() {
        let (dev, p) = parse_port(&port_payload(3, 1)).unwrap();
        assert_eq!(dev, Some(3));
        assert_eq!(
            p,
            RdmaPort {
                port: 1,
                netdev: Some("eth0".into()),
                netdev_index: Some(2),
                state: Some(4),
                phys_state: Some(5),
            }
        );
        let be = attr(ATTR_PORT_INDEX | NLA_F_NET_BYTEORDER, &2u32.to_be_bytes());
        assert_eq!(parse_port(&be).unwrap().1.port, 2);
        // An IB port without netdev.
        let ib = [
            attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_PORT_STATE, &[1]),
        ]
        .concat();
        let (dev, p) = parse_port(&ib).unwrap();
        assert_eq!(dev, None);
        assert_eq!((p.netdev, p.netdev_index, p.state), (None, None, Some(1)));
    }

    #[test]
    fn multipart_dump_with_stale_and_done() {
        let ty = nldev_type(CMD_GET);
        let mut dgram = msg(ty, 0x2, 99, &rxe0_payload()); // stale: other seq
        dgram.extend(msg(ty, 0x2, 5, &rxe0_payload()));
        dgram.extend(msg(NLMSG_NOOP, 0, 5, &[]));
        dgram.extend(msg(0x1405, 0x2, 5, b"other op")); // unexpected type: skipped
        let mut got = Vec::new();
        let mut sink = |p: &[u8]| {
            got.push(parse_device(p)?);
            Ok(())
        };
        assert!(!process_reply(&dgram, 5, CMD_GET, &mut sink).unwrap());
        let done = msg(NLMSG_DONE, 0x2, 5, &0i32.to_ne_bytes());
        assert!(process_reply(&done, 5, CMD_GET, &mut sink).unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "rxe0");
        // A DONE for another request does not finish this one.
        let mut nothing = |_: &[u8]| Ok(());
        let stale_done = msg(NLMSG_DONE, 0x2, 4, &0i32.to_ne_bytes());
        assert!(!process_reply(&stale_done, 5, CMD_GET, &mut nothing).unwrap());
        // A DONE with no payload (old kernels) finishes it.
        assert!(process_reply(&msg(NLMSG_DONE, 2, 5, &[]), 5, CMD_GET, &mut nothing).unwrap());
    }

    #[test]
    fn errors_and_acks() {
        let mut nothing = |_: &[u8]| Ok(());
        let mut err_payload = (-libc::EPERM).to_ne_bytes().to_vec();
        err_payload.extend(encode_request(CMD_NEWLINK, NLM_F_ACK, 8, &[])); // echoed request
        let e = process_reply(
            &msg(NLMSG_ERROR, 0, 8, &err_payload),
            8,
            CMD_NEWLINK,
            &mut nothing,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));

        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend(encode_request(CMD_NEWLINK, NLM_F_ACK, 8, &[]));
        assert!(
            process_reply(
                &msg(NLMSG_ERROR, 0x100, 8, &ack),
                8,
                CMD_NEWLINK,
                &mut nothing
            )
            .unwrap()
        );

        let done = msg(NLMSG_DONE, 2, 8, &(-libc::EOPNOTSUPP).to_ne_bytes());
        let e = process_reply(&done, 8, CMD_GET, &mut nothing).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));

        let e =
            process_reply(&msg(NLMSG_ERROR, 0, 8, &[0, 0]), 8, CMD_GET, &mut nothing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = process_reply(
            &msg(NLMSG_ERROR, 0, 8, &5i32.to_ne_bytes()),
            8,
            CMD_GET,
            &mut nothing,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = process_reply(
            &msg(NLMSG_ERROR, 0, 8, &i32::MIN.to_ne_bytes()),
            8,
            CMD_GET,
            &mut nothing,
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(process_reply(&msg(NLMSG_OVERRUN, 0, 8, &[]), 8, CMD_GET, &mut nothing).is_err());
        // An error from a stale request is ignored.
        let stale = msg(NLMSG_ERROR, 0, 7, &(-libc::EPERM).to_ne_bytes());
        assert!(!process_reply(&stale, 8, CMD_GET, &mut nothing).unwrap());
    }

    fn invalid(r: io::Result<impl std::fmt::Debug>) {
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn malformed_messages() {
        invalid(split_messages(&[1, 2, 3]));
        let good = msg(NLMSG_DONE, 2, 1, &0i32.to_ne_bytes());
        let mut short_len = good.clone();
        short_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
        invalid(split_messages(&short_len));
        let mut long_len = good.clone();
        long_len[0..4].copy_from_slice(&100u32.to_ne_bytes());
        invalid(split_messages(&long_len));
        let mut huge_len = good.clone();
        huge_len[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        invalid(split_messages(&huge_len));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 5]);
        invalid(split_messages(&trailing));
        assert_eq!(split_messages(&[]).unwrap(), vec![]);
        // A last message without padding is accepted.
        let mut unpadded = msg(0x1401, 2, 1, &[]);
        unpadded.extend_from_slice(&(17u32).to_ne_bytes());
        unpadded.extend_from_slice(&[0; 12]);
        unpadded.push(9);
        let msgs = split_messages(&unpadded).unwrap();
        assert_eq!(msgs[1].payload, &[9]);
    }

    #[test]
    fn malformed_attributes() {
        invalid(parse_attrs(&[4, 0]));
        invalid(parse_attrs(&[2, 0, 1, 0])); // nla_len < 4
        invalid(parse_attrs(&[12, 0, 1, 0, 0, 0, 0, 0])); // longer than the buffer
        let mut trailing = attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes());
        trailing.extend_from_slice(&[0, 0]);
        invalid(parse_attrs(&trailing));
        // Wrong sizes for typed attributes.
        invalid(parse_device(
            &[attr(ATTR_DEV_INDEX, &[1, 0]), attr(ATTR_DEV_NAME, &s("x"))].concat(),
        ));
        invalid(parse_device(
            &[
                attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
                attr(ATTR_DEV_NAME, &s("x")),
                attr(ATTR_NODE_GUID, &[0; 4]),
            ]
            .concat(),
        ));
        invalid(parse_port(
            &[
                attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
                attr(ATTR_PORT_STATE, &[1, 2]),
            ]
            .concat(),
        ));
        // Missing required attributes.
        invalid(parse_device(&attr(ATTR_DEV_NAME, &s("x"))));
        invalid(parse_device(&attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes())));
        invalid(parse_port(&attr(ATTR_PORT_STATE, &[1])));
        // Not UTF-8.
        invalid(parse_device(
            &[
                attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
                attr(ATTR_DEV_NAME, &[0xff, 0xfe, 0]),
            ]
            .concat(),
        ));
        // A string without NUL is taken whole.
        let d = parse_device(
            &[
                attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
                attr(ATTR_DEV_NAME, b"siw0"),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(d.name, "siw0");
    }

    /// Every truncation and every single-byte corruption of a valid reply gives a result,
    /// never a panic or an out-of-bounds read.
    #[test]
    fn truncated_and_corrupted_replies_never_panic() {
        let ty = nldev_type(CMD_GET);
        let mut dgram = msg(ty, 2, 5, &rxe0_payload());
        dgram.extend(msg(nldev_type(CMD_PORT_GET), 2, 5, &port_payload(3, 1)));
        dgram.extend(msg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
        let mut sink = |p: &[u8]| {
            let _ = parse_device(p)?;
            let _ = parse_port(p);
            Ok(())
        };
        assert!(process_reply(&dgram, 5, CMD_GET, &mut sink).unwrap());
        for cut in 0..dgram.len() {
            let _ = process_reply(&dgram[..cut], 5, CMD_GET, &mut sink);
        }
        for i in 0..dgram.len() {
            for v in [0u8, 1, 3, 0x7f, 0x80, 0xff] {
                let mut bad = dgram.clone();
                bad[i] = v;
                let _ = process_reply(&bad, 5, CMD_GET, &mut sink);
                let _ = process_reply(&bad, 5, CMD_PORT_GET, &mut sink);
            }
        }
        let payload = rxe0_payload();
        for cut in 0..payload.len() {
            let _ = parse_device(&payload[..cut]);
            let _ = parse_port(&payload[..cut]);
        }
    }

    #[test]
    fn add_link_refuses_bad_names_before_the_kernel() {
        let t = Duration::from_secs(1);
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(add_link("", "rxe", "eth0", t)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(add_link("rxe%d", "rxe", "eth0", t)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(add_link(&"r".repeat(64), "rxe", "eth0", t)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(add_link("rxe0", "rxe\0", "eth0", t)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(add_link("rxe0", "rxe", "a-very-long-ifname", t)),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(add_link("rxe0", "", "eth0", t)),
            io::ErrorKind::InvalidInput
        );
    }

    /// On a kernel without RDMA this is a clear error; with RDMA, a list. Never a hang.
    #[test]
    fn list_devices_here_returns_promptly() {
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        let r = list_devices(timeout);
        assert!(start.elapsed() < timeout + Duration::from_millis(500));
        match r {
            Ok(devices) => {
                for d in devices {
                    assert!(!d.name.is_empty());
                }
            }
            Err(e) => {
                assert_ne!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                assert!(!e.to_string().is_empty());
                if e.kind() == io::ErrorKind::Unsupported {
                    assert!(e.to_string().contains("RDMA netlink"), "{e}");
                }
            }
        }
    }

    #[test]
    fn delete_link_here_fails_promptly() {
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        // No device has this index; on a kernel with RDMA the kernel answers EINVAL
        // (or EPERM without CAP_NET_ADMIN).
        let r = delete_link(u32::MAX - 1, timeout);
        assert!(start.elapsed() < timeout + Duration::from_millis(500));
        assert!(r.is_err());
    }

    #[test]
    fn bounded_times_out_without_waiting_for_the_worker() {
        let start = Instant::now();
        let r: io::Result<()> = bounded(Duration::from_millis(50), "test", |_| {
            thread::sleep(Duration::from_millis(500));
            Ok(())
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_millis(400));
        assert!(deadline_after(Duration::MAX) > Instant::now());
    }
}
