//! Deleting a device from a process of its own.
//!
//! The kernel's delete blocks, uninterruptibly, inside the sender's `sendto` until every
//! process has closed the device's verbs files. A thread of the process that holds some of
//! those files and asks for the delete itself can then never let the process end: the files
//! close only once every thread has ended, and the asking thread ends only once they are
//! closed. A crash, a kill or an exit with such a delete pending hangs the process forever,
//! and the device never comes back. So the request is sent by a child forked for it, which
//! holds none of this process's descriptors and lives in a session of its own: it waits in the
//! kernel instead, and ends by itself once the delete completed, whatever became of this
//! process.

use super::*;

/// How the child says what happened: its exit status is 0 for a completed delete, else the
/// errno (1..=[`MAX_ERRNO_STATUS`]), or one of the codes below.
const MAX_ERRNO_STATUS: i32 = 200;
/// The kernel's reply made no sense.
const STATUS_MALFORMED: i32 = 201;

/// The child's code, between fork and (never) exec: only system calls on memory prepared before
/// the fork, no allocation, no lock — what a child of a multithreaded process may do.
fn delete_in_child(request: &[u8], reply: &mut [u8], maps: &mut [u8]) -> ! {
    // SAFETY: every call below takes integers or pointers into `request` and `reply`, which
    // are valid for their lengths for the whole child's life, and the kernel address `kernel`,
    // a live local; `_exit` ends the child without running anything of the parent's.
    unsafe {
        let errno = || *libc::__errno_location();
        // A session of its own (a signal to the parent's group does not reach it), and none of
        // the parent's descriptors or mappings of RDMA device files (a verbs file it inherited
        // — a provider maps its queues from it — would hold the very device it deletes).
        libc::setsid();
        close_every_descriptor(maps);
        unmap_device_files(maps);
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_RDMA,
        );
        if fd < 0 {
            libc::_exit(errno().clamp(1, MAX_ERRNO_STATUS));
        }
        let kernel = SockaddrNl {
            nl_family: libc::AF_NETLINK as libc::sa_family_t,
            ..SockaddrNl::default()
        };
        loop {
            let sent = libc::sendto(
                fd,
                request.as_ptr().cast(),
                request.len(),
                0,
                (&raw const kernel).cast(),
                SOCKADDR_NL_LEN,
            );
            if sent >= 0 {
                break;
            }
            if errno() != libc::EINTR {
                libc::_exit(errno().clamp(1, MAX_ERRNO_STATUS));
            }
        }
        loop {
            let got = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
            if got < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                libc::_exit(errno().clamp(1, MAX_ERRNO_STATUS));
            }
            // The ack: NLMSG_ERROR, its errno right behind the 16-byte header (0: deleted).
            let datagram = &reply[..(got as usize).min(reply.len())];
            if read_u16(datagram, 4) == Some(NLMSG_ERROR) {
                match read_i32(datagram, 16) {
                    Some(0) => libc::_exit(0),
                    Some(e) if e < 0 => libc::_exit(
                        e.checked_neg()
                            .map_or(MAX_ERRNO_STATUS, |e| e.clamp(1, MAX_ERRNO_STATUS)),
                    ),
                    _ => libc::_exit(STATUS_MALFORMED),
                }
            }
        }
    }
}

/// Closes, in the child, every descriptor it inherited: `close_range`, or where the kernel
/// has none (before 5.9) or a seccomp filter refuses it, one `close` for each entry of
/// `/proc/self/fd`, read through `buf` with `getdents64`. A descriptor left open would be a
/// verbs file holding the very device the child deletes (the delete then waits for the child
/// forever), and the standard library's pipe, open, keeps the parent's spawn from returning.
fn close_every_descriptor(buf: &mut [u8]) {
    // SAFETY: system calls on integers.
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } == 0 {
        return;
    }
    close_listed_descriptors(buf);
}

/// The fallback of [`close_every_descriptor`]: closes every descriptor `/proc/self/fd` lists,
/// with system calls only (`buf` holds the directory entries).
fn close_listed_descriptors(buf: &mut [u8]) {
    const FDS: &[u8] = b"/proc/self/fd\0";
    // SAFETY: `FDS` is a NUL-terminated path.
    let dir = unsafe {
        libc::open(
            FDS.as_ptr().cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return;
    }
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        let got = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if got <= 0 {
            break;
        }
        // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, NUL-terminated name.
        let entries = &buf[..(got as usize).min(buf.len())];
        let mut at = 0;
        while let Some(reclen) = read_u16(entries, at + 16) {
            let reclen = reclen as usize;
            let Some(name) = entries.get(at + 19..at + reclen) else {
                break;
            };
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let fd = number(&name[..len], 10).and_then(|fd| i32::try_from(fd).ok());
            if let Some(fd) = fd.filter(|&fd| fd != dir && len > 0) {
                // SAFETY: closing a descriptor number; nothing in the child uses it.
                unsafe { libc::close(fd) };
            }
            if reclen == 0 {
                break;
            }
            at += reclen;
        }
    }
    // SAFETY: `dir` was opened above and is closed once.
    unsafe { libc::close(dir) };
}

/// Unmaps, in the child, every mapping of a file under `/dev/infiniband/` (a user-space
/// provider's queues, mapped from its verbs file): a mapping holds its file as a descriptor does.
/// Reads `/proc/self/maps` through `buf`, a line at a time, with system calls only.
fn unmap_device_files(buf: &mut [u8]) {
    const MAPS: &[u8] = b"/proc/self/maps\0";
    const DEVICES: &[u8] = b"/dev/infiniband/";
    // SAFETY: `MAPS` is a NUL-terminated path; `buf` is valid for writes of its length.
    let fd = unsafe { libc::open(MAPS.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return;
    }
    let mut kept = 0;
    loop {
        // SAFETY: writes at most `buf.len() - kept` bytes into `buf[kept..]`.
        let got = unsafe { libc::read(fd, buf[kept..].as_mut_ptr().cast(), buf.len() - kept) };
        if got <= 0 {
            break;
        }
        let filled = kept + got as usize;
        // Every whole line: a mapping of a device file is unmapped.
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + end];
            if line.windows(DEVICES.len()).any(|w| w == DEVICES)
                && let Some((from, to)) = mapping_range(line)
            {
                // SAFETY: unmapping a range the kernel just listed as mapped; nothing in the
                // child uses device mappings.
                unsafe { libc::munmap(from as *mut libc::c_void, to - from) };
            }
            start += end + 1;
        }
        // The unfinished line moves to the front (a line longer than the buffer is dropped).
        kept = if start == 0 && filled == buf.len() {
            0
        } else {
            buf.copy_within(start..filled, 0);
            filled - start
        };
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
}

/// The address range at the start of a `/proc/self/maps` line (`start-end ...`, hexadecimal).
fn mapping_range(line: &[u8]) -> Option<(usize, usize)> {
    let dash = line.iter().position(|&b| b == b'-')?;
    let space = line.iter().position(|&b| b == b' ')?;
    let (from, to) = (
        number(&line[..dash], 16)?,
        number(line.get(dash + 1..space)?, 16)?,
    );
    (from < to).then_some((from, to))
}

/// The number `digits` spell in `radix`, without allocating (the child parses with it); `None`
/// for a stray character or an overflow. An empty slice is 0.
fn number(digits: &[u8], radix: u32) -> Option<usize> {
    digits.iter().try_fold(0usize, |v, &b| {
        let d = (b as char).to_digit(radix)? as usize;
        v.checked_mul(radix as usize)?.checked_add(d)
    })
}

/// A delete of the RDMA device with kernel index `index` under way in a child process (see the
/// module docs): [`DeleteChild::poll`] says when it is over.
pub struct DeleteChild {
    child: std::process::Child,
    /// Its status can no longer be had (`waitpid` failed: this process ignores `SIGCHLD`, or
    /// something else reaped it): what the delete did is unknown.
    lost: bool,
}

/// Starts deleting the RDMA device with kernel index `index` from a child process; returns at
/// once. Like [`delete_link`], it completes once every process released the device.
pub fn delete_link_elsewhere(index: u32) -> io::Result<DeleteChild> {
    use std::os::unix::process::CommandExt;
    let request = encode_request(
        CMD_DELLINK,
        NLM_F_ACK,
        1,
        &[(ATTR_DEV_INDEX, AttrValue::U32(index))],
    );
    let mut reply = vec![0u8; RECV_BUF];
    let mut maps = vec![0u8; 64 * 1024];
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and only makes system calls
    // on buffers allocated before the fork (`delete_in_child`); it never returns, so the child
    // never reaches exec (closing every descriptor also closed the one through which the
    // standard library learns of a failed exec: the parent's spawn returns at once).
    unsafe {
        cmd.pre_exec(move || delete_in_child(&request, &mut reply, &mut maps));
    }
    Ok(DeleteChild {
        child: cmd.spawn()?,
        lost: false,
    })
}

impl DeleteChild {
    /// `None` while the delete waits; then its outcome (the child is reaped).
    pub fn poll(&mut self) -> Option<io::Result<()>> {
        let status = match self.child.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) => status,
            Err(_) => {
                // Not a failed delete: the delete may well be under way, or done.
                self.lost = true;
                return None;
            }
        };
        let Some(code) = status.code() else {
            // Killed by a signal: perhaps once its delete completed (a task blocked in the
            // delete dies only on its way out of it). Not a failed delete: unknown.
            self.lost = true;
            return None;
        };
        Some(match code {
            0 => Ok(()),
            STATUS_MALFORMED => Err(malformed("the kernel's reply to the delete")),
            errno if errno <= MAX_ERRNO_STATUS => Err(io::Error::from_raw_os_error(errno)),
            _ => Err(io::Error::other(format!(
                "the process deleting the device ended with {status}"
            ))),
        })
    }

    /// Whether the outcome of the delete can no longer be known ([`poll`](Self::poll) says
    /// `None` forever): the child's status cannot be had, or a signal killed it. It is to be
    /// left to whoever puts the device home (a delete taken for failed would leave the device
    /// deleted for good).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stops waiting for the delete: the child goes on alone and ends when the delete does.
    /// (It is not killed: the delete it waits for cannot be taken back.)
    pub fn leave(self) {
        // Dropping a `Child` neither kills nor waits: it is reaped by init once this process
        // is gone, or stays a zombie until then.
        drop(self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::{close_listed_descriptors, mapping_range};

    /// Where `close_range` is missing (kernels before 5.9) or refused (a seccomp filter), the
    /// child must still close every inherited descriptor: a verbs file left open holds the
    /// device it deletes, and the standard library's pipe left open keeps `spawn` waiting.
    #[test]
    fn the_fallback_closes_every_inherited_descriptor() {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (read, write) = std::io::pipe().unwrap();
        let (kept_r, kept_w) = (read.as_raw_fd(), write.as_raw_fd());
        let mut buf = vec![0u8; 4096];
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: only system calls on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                close_listed_descriptors(&mut buf);
                let open = |fd| libc::fcntl(fd, libc::F_GETFD) >= 0;
                let left = [0, 1, 2, kept_r, kept_w].into_iter().any(open);
                libc::_exit(if left { 1 } else { 0 })
            });
        }
        let status = cmd.spawn().unwrap().wait().unwrap();
        assert_eq!(status.code(), Some(0), "a descriptor survived the fallback");
    }

    /// A child killed by a signal may have been killed on its way out of a completed delete:
    /// its outcome is unknown, not a failed delete (which would tell the restorer that nothing
    /// was removed, and leave the device deleted for good).
    #[test]
    fn a_child_killed_by_a_signal_is_lost_not_failed() {
        let mut child = super::DeleteChild {
            child: std::process::Command::new("/bin/sleep")
                .arg("30")
                .spawn()
                .unwrap(),
            lost: false,
        };
        child.child.kill().unwrap();
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !child.lost() && std::time::Instant::now() < limit {
            if let Some(outcome) = child.poll() {
                panic!("a killed child was taken for an outcome: {outcome:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(child.lost(), "the killed child was never reported lost");
    }

    #[test]
    fn a_maps_line_gives_its_range() {
        let line = b"7f0c1a000000-7f0c1a021000 rw-s 00000000 00:06 123   /dev/infiniband/uverbs0";
        assert_eq!(
            mapping_range(line),
            Some((0x7f0c_1a00_0000, 0x7f0c_1a02_1000))
        );
        assert_eq!(mapping_range(b"garbage"), None);
        assert_eq!(mapping_range(b"10-5 r--p"), None);
        assert_eq!(mapping_range(b"zz-10 r--p"), None);
    }
}
