//! Kernel uevents for the `infiniband` device class (`NETLINK_KOBJECT_UEVENT`, group 1).
//!
//! The device monitor uses this to learn, without polling, that an RDMA device was added or
//! removed: registering an RDMA device (a driver probe, `rdma link add`) adds a device of
//! class `infiniband` and the kernel broadcasts an `add` uevent for it; unregistering one
//! (`rdma link delete`, driver unload) broadcasts `remove`. A uevent says only *that*
//! something changed; the monitor then lists the devices again (see [`crate::netlink`]).
//!
//! Only messages sent by the kernel itself are accepted: the source address of each datagram
//! must have `nl_pid` 0, which no userspace sender can have, so other processes cannot forge
//! events. udev's re-broadcasts (`libudev` header, group 2) are not kernel uevents and are
//! skipped too.
//!
//! If events arrive faster than they are read, the socket overflows and the kernel drops
//! some; [`UeventSocket::recv`] then reports an error for which [`is_overflow`] is true, and
//! the monitor must rescan instead of trusting its event history.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// The kernel's uevent multicast group (`udev` listens to group 2 for its own messages).
const KERNEL_GROUP: u32 = 1;
/// The receive buffer asked for: bursts of uevents (module loads, many devices) must fit.
const RCVBUF: libc::c_int = 16 * 1024 * 1024;
/// Larger than any uevent (the kernel's environment buffer is 2 KiB).
const MSG_BUF: usize = 8192;
/// The device class this module reports.
const SUBSYSTEM: &str = "infiniband";

/// What happened to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UeventAction {
    /// The device was registered.
    Add,
    /// The device was unregistered.
    Remove,
    /// An attribute of the device changed.
    Change,
    /// Another action, as the kernel names it (`move` on a rename, `online`, `offline`,
    /// `bind`, `unbind`); the monitor should rescan.
    Other(String),
}

impl UeventAction {
    fn from_name(name: &str) -> UeventAction {
        match name {
            "add" => UeventAction::Add,
            "remove" => UeventAction::Remove,
            "change" => UeventAction::Change,
            other => UeventAction::Other(other.to_owned()),
        }
    }
}

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `ACTION`.
    pub action: UeventAction,
    /// `DEVPATH`, relative to `/sys`, e.g. `/devices/virtual/infiniband/rxe0`.
    pub devpath: String,
    /// `SUBSYSTEM`, e.g. `infiniband`.
    pub subsystem: String,
    /// The last component of `DEVPATH`: the device name, e.g. `rxe0`.
    pub name: Option<String>,
    /// `SEQNUM`, the kernel's uevent sequence number, if present and numeric.
    pub seqnum: Option<u64>,
}

/// Parses one kernel uevent datagram: `ACTION@DEVPATH\0ACTION=...\0DEVPATH=...\0SUBSYSTEM=...\0
/// SEQNUM=...\0...`.
///
/// Returns `None` for anything else: udev's `libudev` messages, garbage, a header that
/// disagrees with its `ACTION`/`DEVPATH` keys, or a message lacking `ACTION`, `DEVPATH` or
/// `SUBSYSTEM`. Any subsystem is accepted here; [`UeventSocket::recv`] keeps `infiniband`.
pub fn parse_uevent(buf: &[u8]) -> Option<Uevent> {
    let mut fields = buf.split(|&b| b == 0);
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (header_action, header_devpath) = header.split_once('@')?;
    let mut action = None;
    let mut devpath = None;
    let mut subsystem = None;
    let mut seqnum = None;
    for field in fields {
        // Values of other keys may be anything; skip what is not UTF-8 "KEY=VALUE".
        let Some((key, value)) = std::str::from_utf8(field)
            .ok()
            .and_then(|f| f.split_once('='))
        else {
            continue;
        };
        match key {
            "ACTION" => action = Some(value),
            "DEVPATH" => devpath = Some(value),
            "SUBSYSTEM" => subsystem = Some(value),
            "SEQNUM" => seqnum = value.parse().ok(),
            _ => {}
        }
    }
    let (action, devpath, subsystem) = (action?, devpath?, subsystem?);
    if action != header_action || devpath != header_devpath || action.is_empty() {
        return None;
    }
    if !devpath.starts_with('/') || subsystem.is_empty() {
        return None;
    }
    let name = devpath
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    Some(Uevent {
        action: UeventAction::from_name(action),
        devpath: devpath.to_owned(),
        subsystem: subsystem.to_owned(),
        name,
        seqnum,
    })
}

/// The filter [`UeventSocket::recv`] applies: the kernel's (sender port 0) uevents of class
/// `infiniband`.
fn accept(sender_pid: u32, buf: &[u8]) -> Option<Uevent> {
    if sender_pid != 0 {
        return None;
    }
    parse_uevent(buf).filter(|ev| ev.subsystem == SUBSYSTEM)
}

/// The error payload for an overflowed socket.
#[derive(Debug)]
struct Overflowed;

impl std::fmt::Display for Overflowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("uevent socket overflowed; rescan")
    }
}

impl std::error::Error for Overflowed {}

/// Whether `err` (from [`UeventSocket::recv`]) means the socket overflowed (`ENOBUFS`) and
/// uevents were lost: the caller should rescan the devices. The socket remains usable.
pub fn is_overflow(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Overflowed>())
}

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

/// A socket subscribed to the kernel's uevents; close-on-exec and non-blocking.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    /// Opens the socket and joins the kernel's uevent group. Works on any Linux kernel, with or
    /// without RDMA; no privileges are needed. Asks for a 16 MiB receive buffer
    /// (`SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`, which the kernel caps at
    /// `net.core.rmem_max`).
    ///
    /// Uevents of RDMA devices are delivered in the device's network namespace (the initial
    /// one unless the RDMA subsystem is in exclusive netns mode).
    pub fn open() -> io::Result<UeventSocket> {
        // SAFETY: socket(2) takes only integers; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_KOBJECT_UEVENT,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor from socket(2) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if set_int_opt(&fd, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            set_int_opt(&fd, libc::SO_RCVBUF, RCVBUF)?;
        }
        let addr = SockaddrNl {
            nl_family: libc::AF_NETLINK as libc::sa_family_t,
            nl_pid: 0, // the kernel picks our port id
            nl_groups: KERNEL_GROUP,
            ..SockaddrNl::default()
        };
        // SAFETY: `addr` is a live `sockaddr_nl` of SOCKADDR_NL_LEN bytes, read only during
        // the call.
        let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), SOCKADDR_NL_LEN) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(UeventSocket { fd })
    }

    /// Returns the next `infiniband` uevent from the kernel, or `None` once `deadline` has
    /// passed without one. Other events (other subsystems, non-kernel senders, udev's
    /// messages, truncated datagrams) are skipped; skipping never runs past the deadline.
    ///
    /// If the socket overflowed and events were lost, returns an error of kind
    /// [`io::ErrorKind::Other`] ("uevent socket overflowed; rescan") for which
    /// [`is_overflow`] is true, once; later calls receive normally.
    pub fn recv(&self, deadline: Instant) -> io::Result<Option<Uevent>> {
        let mut buf = [0u8; MSG_BUF];
        loop {
            let mut from = SockaddrNl::default();
            let mut from_len = SOCKADDR_NL_LEN;
            // SAFETY: `buf` is valid for writes of its length; `from`/`from_len` are live locals
            // describing SOCKADDR_NL_LEN bytes. With MSG_TRUNC the return value may exceed the
            // buffer, but the kernel writes at most `buf.len()` bytes.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        return Err(io::Error::other(Overflowed));
                    }
                    Some(libc::EAGAIN) => {
                        if !wait_readable(&self.fd, deadline)? {
                            return Ok(None);
                        }
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if let Some(ev) = buf.get(..n).and_then(|msg| accept(from.nl_pid, msg)) {
                return Ok(Some(ev));
            }
            // Skipped (or truncated: `n` beyond the buffer); go on only while time remains.
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// The socket, for `poll`/`epoll` in an event loop.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for UeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn set_int_opt(fd: &OwnedFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; setsockopt(2) reads
    // it only during the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn wait_readable(fd: &OwnedFd, deadline: Instant) -> io::Result<bool> {
    crate::wait::poll_readable(fd.as_raw_fd(), deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(action: &str, devpath: &str, subsystem: &str, seq: u64) -> Vec<u8> {
        format!(
            "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM={subsystem}\0\
             NAME=x\0SEQNUM={seq}\0"
        )
        .into_bytes()
    }

    #[test]
    fn parses_virtual_rxe_add_and_remove() {
        let ev = parse_uevent(&event(
            "add",
            "/devices/virtual/infiniband/rxe0",
            "infiniband",
            4711,
        ))
        .unwrap();
        assert_eq!(
            ev,
            Uevent {
                action: UeventAction::Add,
                devpath: "/devices/virtual/infiniband/rxe0".into(),
                subsystem: "infiniband".into(),
                name: Some("rxe0".into()),
                seqnum: Some(4711),
            }
        );
        let ev = parse_uevent(&event(
            "remove",
            "/devices/virtual/infiniband/rxe0",
            "infiniband",
            4712,
        ))
        .unwrap();
        assert_eq!(ev.action, UeventAction::Remove);
        assert_eq!(ev.name.as_deref(), Some("rxe0"));
        assert_eq!(ev.seqnum, Some(4712));
    }

    #[test]
    fn parses_pci_device_and_other_actions() {
        let path = "/devices/pci0000:00/0000:00:03.0/infiniband/mlx5_0";
        let ev = parse_uevent(&event("add", path, "infiniband", 1)).unwrap();
        assert_eq!(ev.name.as_deref(), Some("mlx5_0"));
        assert_eq!(ev.devpath, path);
        let ev = parse_uevent(&event("change", path, "infiniband", 2)).unwrap();
        assert_eq!(ev.action, UeventAction::Change);
        let ev = parse_uevent(&event("move", path, "infiniband", 3)).unwrap();
        assert_eq!(ev.action, UeventAction::Other("move".into()));
        // No SEQNUM, no trailing NUL: still an event.
        let ev = parse_uevent(
            format!("add@{path}\0ACTION=add\0DEVPATH={path}\0SUBSYSTEM=infiniband").as_bytes(),
        )
        .unwrap();
        assert_eq!(ev.seqnum, None);
    }

    #[test]
    fn accepts_only_kernel_infiniband_events() {
        let ib = event("add", "/devices/virtual/infiniband/rxe0", "infiniband", 1);
        assert!(accept(0, &ib).is_some());
        // Forged by a userspace process.
        assert!(accept(4242, &ib).is_none());
        // Other classes, including RDMA's own char-device classes.
        let verbs = event(
            "add",
            "/devices/virtual/infiniband_verbs/uverbs0",
            "infiniband_verbs",
            2,
        );
        assert!(parse_uevent(&verbs).is_some());
        assert!(accept(0, &verbs).is_none());
        let net = event("add", "/devices/virtual/net/veth0", "net", 3);
        assert!(accept(0, &net).is_none());
    }

    #[test]
    fn rejects_garbage_and_udev_messages() {
        assert_eq!(parse_uevent(b""), None);
        assert_eq!(parse_uevent(b"\0\0\0"), None);
        assert_eq!(parse_uevent(&[0xff, 0xfe, b'@', 0]), None);
        assert_eq!(parse_uevent(b"add@/devices/virtual/infiniband/rxe0"), None);
        let mut libudev = b"libudev\0".to_vec();
        libudev.extend_from_slice(&[0xfe, 0xed, 0xca, 0xfe, 0, 0, 0, 0]);
        libudev.extend(event(
            "add",
            "/devices/virtual/infiniband/rxe0",
            "infiniband",
            1,
        ));
        assert_eq!(parse_uevent(&libudev), None);
        // Header and keys disagree.
        assert_eq!(
            parse_uevent(b"add@/devices/a\0ACTION=remove\0DEVPATH=/devices/a\0SUBSYSTEM=x\0"),
            None
        );
        assert_eq!(
            parse_uevent(b"add@/devices/a\0ACTION=add\0DEVPATH=/devices/b\0SUBSYSTEM=x\0"),
            None
        );
        // Missing SUBSYSTEM.
        assert_eq!(
            parse_uevent(b"add@/devices/a\0ACTION=add\0DEVPATH=/devices/a\0"),
            None
        );
        // Every truncation of a valid event parses or is refused, without panicking.
        let ev = event("add", "/devices/virtual/infiniband/rxe0", "infiniband", 9);
        for cut in 0..ev.len() {
            let _ = parse_uevent(&ev[..cut]);
        }
        for i in 0..ev.len() {
            let mut bad = ev.clone();
            bad[i] = 0xff;
            let _ = parse_uevent(&bad);
        }
        // A bad SEQNUM is dropped, not fatal.
        let ev = parse_uevent(
            b"add@/devices/a/rxe1\0ACTION=add\0DEVPATH=/devices/a/rxe1\0SUBSYSTEM=infiniband\0SEQNUM=x\0",
        )
        .unwrap();
        assert_eq!((ev.seqnum, ev.name.as_deref()), (None, Some("rxe1")));
    }

    #[test]
    fn overflow_error_is_recognisable() {
        let e = io::Error::other(Overflowed);
        assert!(is_overflow(&e));
        assert_eq!(e.to_string(), "uevent socket overflowed; rescan");
        assert!(!is_overflow(&io::Error::from_raw_os_error(libc::ENOBUFS)));
    }

    /// Uevents are generic: the socket opens without RDMA, and with no RDMA device coming or
    /// going, `recv` returns `None` at its deadline.
    #[test]
    fn recv_here_times_out_within_bounds() {
        let sock = UeventSocket::open().unwrap();
        let start = Instant::now();
        let r = sock.recv(start + Duration::from_millis(100)).unwrap();
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        if let Some(ev) = r {
            assert_eq!(ev.subsystem, "infiniband");
        } else {
            assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
        }
        // A deadline in the past still returns promptly.
        assert!(sock.recv(Instant::now()).is_ok());
        assert!(sock.as_fd().as_raw_fd() >= 0);
    }

    /// A userspace process sending an `infiniband` uevent straight to our socket is ignored.
    /// Needs CAP_NET_ADMIN to send on NETLINK_KOBJECT_UEVENT; skipped without it.
    #[test]
    fn forged_uevents_are_ignored() {
        let sock = UeventSocket::open().unwrap();
        let mut ours = SockaddrNl::default();
        let mut len = SOCKADDR_NL_LEN;
        // SAFETY: `ours`/`len` are live locals describing SOCKADDR_NL_LEN bytes.
        let r = unsafe { libc::getsockname(sock.fd.as_raw_fd(), (&raw mut ours).cast(), &mut len) };
        assert_eq!(r, 0);
        let forger = UeventSocket::open().unwrap();
        let msg = event(
            "add",
            "/devices/virtual/infiniband/forged0",
            "infiniband",
            1,
        );
        let to = SockaddrNl {
            nl_family: libc::AF_NETLINK as libc::sa_family_t,
            nl_pid: ours.nl_pid,
            ..SockaddrNl::default()
        };
        // SAFETY: `msg` is valid for reads of its length and `to` is a live sockaddr_nl.
        let sent = unsafe {
            libc::sendto(
                forger.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                SOCKADDR_NL_LEN,
            )
        };
        if sent < 0 {
            eprintln!(
                "skipped: cannot send on a uevent socket: {}",
                io::Error::last_os_error()
            );
            return;
        }
        // The datagram was delivered (so the filter, not the kernel, drops it) ...
        let delivered = wait_readable(&sock.fd, Instant::now() + Duration::from_secs(1)).unwrap();
        assert!(delivered, "the forged datagram never arrived");
        // ... and recv skips it.
        let r = sock
            .recv(Instant::now() + Duration::from_millis(100))
            .unwrap();
        assert!(
            r.as_ref()
                .is_none_or(|ev| ev.name.as_deref() != Some("forged0")),
            "{r:?}"
        );
    }
}
