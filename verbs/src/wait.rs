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
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EBADF));
            }
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

/// Waiting again after a read found nothing. An fd in an error or hangup state polls readable
/// forever while its read keeps answering `EAGAIN`; after such an empty wakeup this sleeps a
/// millisecond before polling again, so a reader loop stays bounded by its deadline without
/// spinning a CPU.
#[derive(Debug, Default)]
pub struct Rewait {
    woke: bool,
}

impl Rewait {
    /// A waiter that has not woken yet.
    pub fn new() -> Rewait {
        Rewait::default()
    }

    /// Called after a read found nothing: waits for `fd` until `deadline` (`Ok(false)` when it
    /// passed).
    pub fn wait(&mut self, fd: RawFd, deadline: Instant) -> Result<bool, Error> {
        if self.woke {
            let pause = deadline
                .saturating_duration_since(Instant::now())
                .min(std::time::Duration::from_millis(1));
            std::thread::sleep(pause);
        }
        self.woke = readable(fd, deadline)?;
        Ok(self.woke)
    }
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

    #[test]
    fn an_fd_that_stays_readable_with_nothing_to_read_does_not_spin() {
        let mut fds = [0; 2];
        // SAFETY: a valid array of two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: writing one byte from a valid buffer to our pipe; it is never read, so the fd
        // stays readable, as a CM or completion channel in an error state does.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut rewait = Rewait::new();
        let mut rounds = 0;
        while rewait.wait(fds[0], deadline).unwrap() && Instant::now() < deadline {
            rounds += 1;
        }
        assert!(rounds <= 60, "{rounds} wakeups in 50 ms: the loop spins");
        // SAFETY: closing the two fds we own.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
