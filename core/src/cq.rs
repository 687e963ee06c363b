//! [`CompletionQueue`]: where completions of posted WRs arrive; [`CompletionChannel`]: how an
//! event loop learns that they did.
//!
//! # Waiting from an event loop
//!
//! [`CompletionQueue::wait`] blocks a thread. A ULP on an async runtime or a `poll(2)` loop
//! instead creates its CQs on a [`CompletionChannel`]
//! ([`Device::create_cq_with`](crate::Device::create_cq_with)), watches the channel's
//! [`fd`](CompletionChannel::fd) for readability, and *arms* each CQ
//! ([`CompletionQueue::arm`]) before it sleeps — verbs' `ibv_comp_channel`,
//! `ibv_req_notify_cq`, `ibv_get_cq_event` and `ibv_ack_cq_events`. One channel may serve many
//! CQs; [`next`](CompletionChannel::next) names the CQ that fired.
//!
//! Arming fires the channel once, for the next completion that arrives *after* the arm. A
//! completion that arrived between the ULP's last empty poll and the arm need not fire anything,
//! so the loop is, as in verbs: **poll until empty, arm, poll again** — and sleep only if that
//! last poll found nothing:
//!
//! ```
//! use std::time::Duration;
//! use anyverbs::{Completion, CompletionChannel, CompletionQueue, Device, Provider, Result};
//!
//! /// Handles every completion of `cq` until `handle` says stop, sleeping on the channel in
//! /// between (a real loop sleeps in poll(2)/epoll on `channel.fd()`).
//! fn serve<P: Provider>(
//!     channel: &P::Channel,
//!     cq: &P::Cq,
//!     handle: &mut dyn FnMut(&Completion) -> bool,
//! ) -> Result<()> {
//!     let mut wc = [Completion::default(); 16];
//!     loop {
//!         // 1. Poll until empty.
//!         loop {
//!             let n = cq.poll(&mut wc)?;
//!             for c in &wc[..n] {
//!                 if !handle(c) {
//!                     return Ok(());
//!                 }
//!             }
//!             if n < wc.len() {
//!                 break;
//!             }
//!         }
//!         // 2. Arm; 3. poll again: what arrived before the arm fires nothing.
//!         cq.arm(false)?;
//!         let n = cq.poll(&mut wc)?;
//!         if n > 0 {
//!             for c in &wc[..n] {
//!                 if !handle(c) {
//!                     return Ok(());
//!                 }
//!             }
//!             continue;
//!         }
//!         // 4. Sleep until the channel fires (here: by asking it), then read its events.
//!         while channel.next()?.is_none() {
//!             std::thread::sleep(Duration::from_millis(1));
//!         }
//!     }
//! }
//!
//! let provider = anyverbs_provider_mock::MockProvider::new();
//! let dev = provider.open("mock0")?;
//! let channel = dev.create_channel()?;
//! let cq = dev.create_cq_with(16, Some(&channel))?;
//! cq.arm(false)?;
//! assert_eq!(channel.next()?, None, "nothing completed: nothing fired");
//! # let _ = serve::<anyverbs_provider_mock::MockProvider>;
//! # Ok::<(), anyverbs::Error>(())
//! ```
//!
//! A wakeup is a hint: the CQ it names may have nothing for the ULP when polled. A provider on
//! the [`kit`](crate::kit) routes completions to QPs and swallows the drain's markers, and a
//! drain may have moved completions aside before the ULP polls; both fire the channel all the
//! same.
//!
//! Only what the device completes fires a channel. The flush completions a drain makes up when
//! it falls back (a stalled or dead device: [`DrainReport::synthesized`](crate::DrainReport))
//! fire nothing — the kernel's channel cannot be poked — so the drain's caller polls the CQ
//! once the drain returns, or wakes its event loop itself. A lost device makes the channel's
//! fd readable, so a loop asleep on it wakes then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};
use crate::wr::Completion;

/// A completion queue. The caller owns the buffer completions are written into.
pub trait CompletionQueue: Send + Sync {
    /// The CQ's number, unique on its device (named by [`DeviceEvent::CqError`](crate::DeviceEvent::CqError)).
    fn cq_num(&self) -> u32;

    /// Number of completions the CQ holds.
    fn capacity(&self) -> u32;

    /// Moves up to `out.len()` completions into `out`, oldest first, without blocking; returns
    /// how many. A CQ that overflowed returns [`ErrorKind::Overflow`](crate::ErrorKind::Overflow).
    fn poll(&self, out: &mut [Completion]) -> Result<usize>;

    /// Like [`poll`](Self::poll), but waits until at least one completion is there or `deadline`
    /// passes ([`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut)). An empty `out` is
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument). Works with or without
    /// a [`CompletionChannel`], and neither needs nor consumes an [`arm`](Self::arm).
    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize>;

    /// Arms the CQ (`ibv_req_notify_cq`): the next completion that arrives after this call
    /// fires the CQ's [`CompletionChannel`] once, then the CQ is disarmed until armed again.
    /// With `solicited_only`, only a receive of a message sent with
    /// [`SendFlags::SOLICITED`](crate::SendFlags::SOLICITED), or a completion in error,
    /// fires it. Arming an armed CQ changes nothing (but widens a solicited-only arm to every
    /// completion).
    ///
    /// A completion already in the CQ need not fire it (devices differ): arm, then
    /// [`poll`](Self::poll) again before sleeping (see the [module documentation](self)).
    ///
    /// Fails with [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) on a CQ created
    /// without a channel; the default fails with
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported), for a provider without
    /// completion channels.
    fn arm(&self, solicited_only: bool) -> Result<()> {
        let _ = solicited_only;
        Err(Error::not_supported(
            "this provider has no completion channels",
        ))
    }

    /// Destroys the CQ; [`ErrorKind::Busy`](crate::ErrorKind::Busy) while a QP uses it.
    fn destroy(&self) -> Result<()>;
}

/// A completion channel (`ibv_comp_channel`): a file descriptor an event loop watches, and the
/// queue of notifications of the armed CQs created on it
/// ([`Device::create_cq_with`](crate::Device::create_cq_with)).
///
/// Each [`arm`](CompletionQueue::arm) of a CQ yields at most one notification, which
/// [`next`](Self::next) returns (and acknowledges: there is no separate `ibv_ack_cq_events`).
/// The [`fd`](Self::fd) is readable while a notification is waiting. A notification is a hint
/// that the CQ may hold completions, never a promise (see the [module documentation](self)).
///
/// Once the device is lost, the fd becomes readable (or reports an error condition, as the
/// kernel's does after disassociation: `poll(2)` returns it either way) and every call but
/// [`destroy`](Self::destroy) fails with [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost),
/// so a loop asleep on the fd learns of the loss. [`destroy`](Self::destroy) fails with
/// [`ErrorKind::Busy`](crate::ErrorKind::Busy) while a CQ created on the channel is alive.
pub trait CompletionChannel: Send + Sync {
    /// A file descriptor that is readable while [`next`](Self::next) has a notification to
    /// return (or the device is lost). Register it with an event loop (poll, epoll, mio,
    /// tokio's `AsyncFd`) for readability and never read from it or close it; it stays open as
    /// long as the handle lives.
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;

    /// The number ([`CompletionQueue::cq_num`]) of a CQ that fired, without blocking, and
    /// acknowledges it; `Ok(None)` when none did. Read until `Ok(None)` before sleeping on the
    /// fd again.
    fn next(&self) -> Result<Option<u32>>;

    /// Destroys the channel; [`ErrorKind::Busy`](crate::ErrorKind::Busy) while a CQ created on
    /// it is alive (dropped CQs that QPs still use included).
    fn destroy(&self) -> Result<()>;
}

/// The CQs created on one channel, by number (a count per number: a destroyed CQ's number may
/// be given to a new one before the old handle is gone): what a channel checks the CQ numbers
/// it reports against, and what makes its destroy `Busy`.
#[derive(Debug, Default)]
pub(crate) struct ChannelMembers {
    inner: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    /// The CQs on the channel now, with how many of each number.
    live: FxHashMap<u32, u32>,
    /// The numbers of CQs that were on the channel and left it (a late notification of one is
    /// no lie), not since reused by a CQ on it.
    departed: FxHashSet<u32>,
}

impl ChannelMembers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts CQ `cq_num` in until the membership returned is left or dropped.
    pub(crate) fn join(self: &Arc<Self>, cq_num: u32) -> ChannelMembership {
        let mut m = self.lock();
        m.departed.remove(&cq_num);
        *m.live.entry(cq_num).or_default() += 1;
        drop(m);
        ChannelMembership {
            members: Arc::clone(self),
            cq_num,
            left: AtomicBool::new(false),
        }
    }

    /// Whether a CQ numbered `cq_num` is on the channel.
    pub(crate) fn contains(&self, cq_num: u32) -> bool {
        self.lock().live.contains_key(&cq_num)
    }

    /// Whether a CQ numbered `cq_num` was on the channel and left it.
    pub(crate) fn departed(&self, cq_num: u32) -> bool {
        self.lock().departed.contains(&cq_num)
    }

    /// How many CQs are on the channel.
    pub(crate) fn count(&self) -> u32 {
        self.lock().live.values().sum()
    }
}

/// One CQ's place on a channel; leaves it when dropped.
#[derive(Debug)]
pub(crate) struct ChannelMembership {
    members: Arc<ChannelMembers>,
    cq_num: u32,
    left: AtomicBool,
}

impl ChannelMembership {
    /// Leaves the channel (once).
    pub(crate) fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut m = self.members.lock();
        if let Some(n) = m.live.get_mut(&self.cq_num) {
            *n -= 1;
            if *n == 0 {
                m.live.remove(&self.cq_num);
                m.departed.insert(self.cq_num);
            }
        }
    }
}

impl Drop for ChannelMembership {
    fn drop(&mut self) {
        self.leave();
    }
}
