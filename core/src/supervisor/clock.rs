//! [`Clock`]: the supervisor's source of time, injectable so that a 10-minute window is tested
//! in microseconds.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::event::Wakeup;

/// Longest a supervisor sleeps in one go, even with no timer pending, so that nothing waits
/// without a deadline.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(1);

/// Where the supervisor's timers (the return window, reconnect delays, the loss timeout) get
/// their time.
///
/// Deadlines handed to ULP code (the drain deadline of [`Service::stop`](super::Service::stop))
/// are always real time.
pub trait Clock: Send + Sync + 'static {
    /// Now, on this clock.
    fn now(&self) -> Instant;

    /// Waits until `wakeup`'s generation differs from `seen`, or this clock reaches `until`,
    /// or at most one second of real time passes (so nothing waits forever).
    fn wait(&self, wakeup: &Arc<Wakeup>, seen: u64, until: Option<Instant>);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wait(&self, wakeup: &Arc<Wakeup>, seen: u64, until: Option<Instant>) {
        let cap = Instant::now() + MAX_IDLE;
        wakeup.wait(seen, until.map_or(cap, |u| u.min(cap)));
    }
}

/// A clock that moves only when told to ([`advance`](ManualClock::advance)), for tests. Waiters
/// wake as soon as it moves.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    inner: Mutex<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    offset: Duration,
    waiters: Vec<Weak<Wakeup>>,
}

impl ManualClock {
    /// A clock standing at the real time of its creation.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            base: Instant::now(),
            inner: Mutex::new(ManualInner {
                offset: Duration::ZERO,
                waiters: Vec::new(),
            }),
        })
    }

    /// Moves the clock forward by `by` and wakes every supervisor using it.
    pub fn advance(&self, by: Duration) {
        let waiters = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.offset += by;
            inner.waiters.retain(|w| w.strong_count() > 0);
            inner.waiters.clone()
        };
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify();
        }
    }

    /// How far the clock has been moved.
    pub fn elapsed(&self) -> Duration {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).offset
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn wait(&self, wakeup: &Arc<Wakeup>, seen: u64, until: Option<Instant>) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !inner
                .waiters
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(wakeup)))
            {
                inner.waiters.push(Arc::downgrade(wakeup));
            }
        }
        if until.is_some_and(|u| self.now() >= u) {
            return;
        }
        wakeup.wait(seen, Instant::now() + MAX_IDLE);
    }
}

impl Clock for Arc<ManualClock> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn wait(&self, wakeup: &Arc<Wakeup>, seen: u64, until: Option<Instant>) {
        (**self).wait(wakeup, seen, until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_wakes_a_waiter_at_once() {
        let clock = ManualClock::new();
        let wakeup = Wakeup::new();
        let start = clock.now();
        let waiter = {
            let clock = Arc::clone(&clock);
            let wakeup = Arc::clone(&wakeup);
            std::thread::spawn(move || {
                let seen = wakeup.generation();
                let real = Instant::now();
                clock.wait(&wakeup, seen, Some(start + Duration::from_secs(600)));
                real.elapsed()
            })
        };
        // Let the waiter register, then jump ten minutes.
        while clock.inner.lock().unwrap().waiters.is_empty() {
            std::thread::yield_now();
        }
        clock.advance(Duration::from_secs(600));
        let real = waiter.join().unwrap();
        assert!(real < MAX_IDLE, "woke after {real:?}");
        assert_eq!(clock.now() - start, Duration::from_secs(600));
    }

    #[test]
    fn a_deadline_already_reached_returns_at_once() {
        let clock = ManualClock::new();
        let wakeup = Wakeup::new();
        let real = Instant::now();
        clock.wait(&wakeup, wakeup.generation(), Some(clock.now()));
        assert!(real.elapsed() < MAX_IDLE);
    }
}
