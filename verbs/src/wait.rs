//! Waiting for a file descriptor with a deadline: every wait of the crate goes through here.

use std::os::fd::RawFd;
use std::time::Instant;

use anyverbs::Error;

/// Waits until `fd` is readable (or has an error or hangup the next read reports) or `deadline`
/// passes; `Ok(true)` when readable, `Ok(false)` at the deadline. The one `poll(2)` loop of the
/// crate: netlink, uevents, completion channels, CM channels and the event threads all wait here.
pub fn poll_readable(fd: RawFd, deadline: Instant) -> std::io::Result<bool> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        // Round up, so a sub-millisecond remainder does not become a busy poll of 0 ms.
        let ms = libc::c_int::try_from(remaining.as_nanos().div_ceil(1_000_000))
            .unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one live pollfd and nfds is 1; poll(2) writes only its `revents`.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// [`poll_readable`], with the core's error.
pub fn readable(fd: RawFd, deadline: Instant) -> Result<bool, Error> {
    poll_readable(fd, deadline).map_err(|e| crate::error::io_failed("poll", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_silent_fd_times_out_at_the_deadline_and_a_written_one_is_readable() {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let start = Instant::now();
        assert!(!readable(fds[0], start + Duration::from_millis(50)).unwrap());
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // SAFETY: writing one byte from a valid buffer to our pipe.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        assert!(readable(fds[0], Instant::now() + Duration::from_secs(1)).unwrap());
        // SAFETY: closing the two fds we own.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
