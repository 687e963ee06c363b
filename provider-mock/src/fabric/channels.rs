//! Completion channels of the simulated devices, and the progress timer they need.
//!
//! A channel is a queue of the numbers of CQs that fired and a connected socket pair whose read
//! end is the fd a ULP watches: one byte sits in it while the queue holds something (or the
//! device is lost), as the kernel's completion channel is readable while an event waits. The
//! queue has its own lock, below the fabric's: a CQ fires its channel as a completion enters the
//! ring (under the fabric's lock), and a ULP reads the channel without taking the fabric's.
//!
//! ## Progress while nobody calls
//!
//! The fabric has no progress thread: stalled WRs retry and delayed completions land when
//! something calls into it (see the parent module). A ULP asleep in `poll(2)` on a channel's
//! fd calls nothing, so while a channel exists the fabric arms a timer
//! ([`State::wake_at`](super::State::wake_at)) for its next time-bound change — an RNR or ACK
//! retry running out, a delayed (asynchronous) flush coming due — after every progress step:
//! the timer thread runs one progress step then, which may complete WRs, fire channels and arm
//! the next timer. Without a channel nobody can sleep on the fabric but in its own waits, which
//! wake at those times themselves, so no timer is armed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::State;
use crate::error::{MockError, MockResult};

/// What a channel's queue holds.
#[derive(Default)]
struct Queue {
    /// CQs that fired and were not read yet, each at most once, oldest first.
    fired: VecDeque<u32>,
    /// The device was lost: the fd stays readable.
    lost: bool,
    /// Whether the socket holds its byte.
    #[cfg(unix)]
    signalled: bool,
}

/// The part of a channel its CQs fire and its handle reads: shared, with its own lock.
pub(crate) struct ChannelCore {
    queue: Mutex<Queue>,
    /// Writer and reader of the readiness socket pair.
    #[cfg(unix)]
    pair: (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ),
}

impl ChannelCore {
    fn new() -> MockResult<ChannelCore> {
        #[cfg(unix)]
        let pair = {
            let pair = std::os::unix::net::UnixStream::pair().map_err(|e| {
                MockError::BadArgument(format!("cannot make the channel's socket pair: {e}"))
            })?;
            for end in [&pair.0, &pair.1] {
                end.set_nonblocking(true).map_err(|e| {
                    MockError::BadArgument(format!("cannot make the channel non-blocking: {e}"))
                })?;
            }
            pair
        };
        Ok(ChannelCore {
            queue: Mutex::default(),
            #[cfg(unix)]
            pair,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a notification of CQ `cq` (once: a CQ already waiting to be read is not queued
    /// again, so the queue never holds more than the channel's CQs).
    pub(crate) fn fire(&self, cq: u32) {
        let mut q = self.lock();
        if !q.fired.contains(&cq) {
            q.fired.push_back(cq);
        }
        self.sync(&mut q);
    }

    /// The oldest notification, taken.
    pub(crate) fn next(&self) -> Option<u32> {
        let mut q = self.lock();
        let got = q.fired.pop_front();
        self.sync(&mut q);
        got
    }

    /// Marks the device lost: the fd stays readable, so a loop asleep on it wakes.
    pub(crate) fn lose(&self) {
        let mut q = self.lock();
        q.lost = true;
        self.sync(&mut q);
    }

    /// Forgets what was queued (the channel was destroyed).
    fn clear(&self) {
        let mut q = self.lock();
        q.fired.clear();
        self.sync(&mut q);
    }

    /// Keeps the socket's byte in step with the queue.
    #[cfg(unix)]
    fn sync(&self, q: &mut Queue) {
        use std::io::{Read, Write};
        let want = !q.fired.is_empty() || q.lost;
        if want == q.signalled {
            return;
        }
        if want {
            // One byte into an empty non-blocking socket does not block, and fails only when
            // the process is out of socket buffers (then the fd stays unreadable).
            q.signalled = (&self.pair.0).write(&[1]).is_ok();
        } else {
            let mut sink = [0u8; 8];
            while matches!((&self.pair.1).read(&mut sink), Ok(n) if n > 0) {}
            q.signalled = false;
        }
    }

    #[cfg(not(unix))]
    fn sync(&self, _q: &mut Queue) {}

    /// The fd a ULP watches.
    #[cfg(unix)]
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pair.1.as_fd()
    }
}

/// A channel as the fabric keeps it.
pub(super) struct ChannelRec {
    pub(super) device: u32,
    pub(super) core: Arc<ChannelCore>,
    /// CQs created on it and not yet destroyed.
    pub(super) users: u32,
    /// Its handle was dropped while CQs used it: removed with the last of them.
    pub(super) dropped: bool,
}

/// How a CQ is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arm {
    /// Every completion fires the channel.
    Any,
    /// Only a solicited receive, or an error completion.
    Solicited,
}

impl State {
    /// Creates a channel on incarnation `device`.
    pub(crate) fn create_channel(&mut self, device: u32) -> MockResult<(u32, Arc<ChannelCore>)> {
        let core = Arc::new(ChannelCore::new()?);
        let id = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1).max(1);
        self.channels.insert(
            id,
            ChannelRec {
                device,
                core: Arc::clone(&core),
                users: 0,
                dropped: false,
            },
        );
        // An open file of the device, as the kernel counts it: a reset device waits for it.
        self.inc_mut(device).live.channels += 1;
        Ok((id, core))
    }

    /// Destroys channel `id`; `Busy` while CQs use it.
    pub(crate) fn destroy_channel(&mut self, id: u32) -> MockResult<()> {
        let Some(ch) = self.channels.get(&id) else {
            return Ok(());
        };
        if ch.users > 0 {
            return Err(MockError::InUse {
                what: "completion channel",
                users: format!("{} completion queue(s)", ch.users),
            });
        }
        ch.core.clear();
        self.remove_channel(id);
        Ok(())
    }

    /// The channel's handle is gone: it goes now, or with its last CQ.
    pub(crate) fn drop_channel(&mut self, id: u32) {
        if self.destroy_channel(id).is_err()
            && let Some(ch) = self.channels.get_mut(&id)
        {
            ch.dropped = true;
        }
    }

    /// Counts a CQ in on channel `id` (of incarnation `device`); its core, for the CQ to fire.
    pub(super) fn join_channel(&mut self, id: u32, device: u32) -> MockResult<Arc<ChannelCore>> {
        let ch = self
            .channels
            .get_mut(&id)
            .filter(|c| !c.dropped)
            .ok_or(MockError::Destroyed("completion channel"))?;
        if ch.device != device {
            return Err(MockError::BadArgument(
                "the completion channel belongs to another device".into(),
            ));
        }
        ch.users += 1;
        Ok(Arc::clone(&ch.core))
    }

    /// A CQ on channel `id` was destroyed.
    pub(super) fn leave_channel(&mut self, id: u32) {
        let reap = match self.channels.get_mut(&id) {
            Some(ch) => {
                ch.users -= 1;
                ch.dropped && ch.users == 0
            }
            None => false,
        };
        if reap {
            self.remove_channel(id);
        }
    }

    /// Forgets channel `id`, which its device no longer counts.
    fn remove_channel(&mut self, id: u32) {
        if let Some(ch) = self.channels.remove(&id) {
            self.inc_mut(ch.device).live.channels -= 1;
        }
    }

    /// Arms CQ `id` (`ibv_req_notify_cq`).
    pub(crate) fn arm_cq(&mut self, id: u32, solicited_only: bool) -> MockResult<()> {
        let cq = self
            .cqs
            .get_mut(&id)
            .filter(|c| !c.dropped)
            .ok_or(MockError::Destroyed("completion queue"))?;
        if cq.channel.is_none() {
            return Err(MockError::WrongState(
                "the completion queue was created without a completion channel".into(),
            ));
        }
        cq.armed = match (cq.armed, solicited_only) {
            (Some(Arm::Any), _) | (_, false) => Some(Arm::Any),
            (_, true) => Some(Arm::Solicited),
        };
        Ok(())
    }

    /// A completion of a solicited message was just queued on CQ `id`: a solicited-only arm
    /// fires too.
    pub(super) fn solicited_event(&mut self, id: u32) {
        if let Some(cq) = self.cqs.get_mut(&id) {
            cq.fire(id, true);
        }
    }

    /// Makes the channels of incarnation `dev` readable for good: it was lost.
    pub(super) fn lose_channels(&mut self, dev: u32) {
        for ch in self.channels.values().filter(|c| c.device == dev) {
            ch.core.lose();
        }
    }

    /// While a channel exists, asks for a progress step at the fabric's next time-bound change
    /// (see the module documentation), unless one is armed for then or earlier.
    pub(super) fn schedule_progress(&mut self) {
        if self.channels.is_empty() || (self.stalled.is_empty() && self.delayed.is_empty()) {
            return;
        }
        let Some(next) = self.next_timer() else {
            return;
        };
        // A change already due that this step left alone is looked at again shortly, not in a
        // loop of timers; a timer armed for a time past is taken as lost (a thread that could
        // not be started).
        let now = Instant::now();
        let next = next.max(now + Duration::from_millis(1));
        if self.progress_at.is_some_and(|at| at <= next && at > now) {
            return;
        }
        self.progress_at = Some(next);
        self.wake_at(next);
    }

    /// The progress timer armed for `at` ran.
    pub(super) fn progress_timer_ran(&mut self, at: Instant) {
        if self.progress_at.is_some_and(|armed| armed <= at) {
            self.progress_at = None;
        }
    }
}
