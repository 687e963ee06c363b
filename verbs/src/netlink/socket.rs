//! The netlink socket: send a request, read its replies, every wait bounded.

use super::*;

// ---------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------

/// `struct sockaddr_nl`, spelled out so it can be built without zeroing a foreign struct.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SockaddrNl {
    pub(super) nl_family: libc::sa_family_t,
    pub(super) nl_pad: u16,
    pub(super) nl_pid: u32,
    pub(super) nl_groups: u32,
}

pub(super) const SOCKADDR_NL_LEN: libc::socklen_t = size_of::<SockaddrNl>() as libc::socklen_t;

/// A `NETLINK_RDMA` socket with its next sequence number.
pub(super) struct NlSocket {
    pub(super) fd: OwnedFd,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

impl NlSocket {
    pub(super) fn open() -> io::Result<NlSocket> {
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
    pub(super) fn request(
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

    pub(super) fn send(&self, msg: &[u8]) -> io::Result<()> {
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
    pub(super) fn recv(&mut self, deadline: Instant) -> io::Result<usize> {
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
pub(super) fn wait_readable(fd: &OwnedFd, deadline: Instant, what: &str) -> io::Result<()> {
    if crate::wait::poll_readable(fd.as_raw_fd(), deadline)? {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out waiting for {what}"),
    ))
}
