//! Waiting for a file descriptor with a deadline: every wait of the crate goes through here.

use std::os::fd::RawFd;
use std::time::Instant;

use anyverbs::Error;

use crate::error::call_failed;

/// Waits until `fd` is readable or `deadline` passes; `Ok(true)` when readable. Never waits past
/// the deadline (the longest single `poll(2)` is one second, so a deadline far away still
/// returns).
pub fn readable(fd: RawFd, deadline: Instant) -> Result<bool, Error> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let ms = (deadline - now).as_millis().clamp(1, 1000) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return Ok(true);
        }
        if rc < 0 {
            let errno = crate::error::last_errno();
            if errno != libc::EINTR {
                return Err(call_failed("poll", errno));
            }
        }
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
}
