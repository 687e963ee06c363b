//! [`KitCq`]: a completion queue whose completions are resolved when they are polled, and the
//! router that sends each raw completion to the ledger of its QP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::life::DeviceLife;
use super::raw::{RawChannel, RawCq};
use super::{QpBook, SharedBook, lock};
use crate::cq::{ChannelMembers, ChannelMembership, CompletionChannel, CompletionQueue};
use crate::drain::DrainPhase;
use crate::error::{Error, ErrorKind, Result};
use crate::wr::{Completion, WcStatus};

/// How many raw completions a drain moves aside per call into the device.
const PUMP_BATCH: usize = 32;

/// What the router keeps under the CQ's lock.
struct Router {
    /// Completions already resolved for the ULP, polled from the device by a drain (or moved
    /// aside before a QP was reset or destroyed), and completions a drain synthesized. The
    /// ULP's next poll returns them first, in order.
    held: VecDeque<Completion>,
    /// The ledger of every QP that uses the CQ, by QP number.
    routes: FxHashMap<u32, SharedBook>,
    /// The buffer a drain's pump polls the device through.
    scratch: Vec<Completion>,
    /// Work queues attached (a QP whose two queues use this CQ counts twice).
    attached: u32,
    /// Raw completions dropped: markers aside, those of no QP attached (a destroyed QP) or of
    /// nothing outstanding.
    unrouted: u64,
    /// The device's CQ was destroyed: nothing calls into it any more.
    destroyed: bool,
}

impl Router {
    /// Resolves the raw completions in `buf` in place: what the ULP must see is moved to the
    /// front, in order; returns how many, and whether any of them belonged to a QP being
    /// drained. Consecutive completions of one QP take its lock once.
    fn resolve_in_place(&mut self, buf: &mut [Completion]) -> (usize, bool) {
        let Router {
            routes, unrouted, ..
        } = self;
        let mut kept = 0;
        let mut for_a_drain = false;
        let mut current: Option<(u32, MutexGuard<'_, QpBook>)> = None;
        for i in 0..buf.len() {
            let qp_num = buf[i].qp_num;
            if current.as_ref().map(|(n, _)| *n) != Some(qp_num) {
                current = None;
                match routes.get(&qp_num) {
                    Some(book) => current = Some((qp_num, lock(book))),
                    None => {
                        *unrouted += 1;
                        continue;
                    }
                }
            }
            let (_, book) = current.as_mut().expect("set above");
            for_a_drain |= book.ledger.phase() == DrainPhase::Draining;
            // An error completion of one of its WRs means the device moved the QP to ERROR. A
            // stale one says nothing about it: a late flush of a destroyed QP whose number this
            // QP now has, or of a WR posted before a RESET (moved aside while the RESET is under
            // way, or discarded by it). Told apart by its token, before it is resolved.
            let stale_error = buf[i].status != WcStatus::Success
                && book
                    .resetting
                    .is_some_and(|mark| book.ledger.posted_before(&buf[i], mark));
            if book.ledger.resolve_in_place(&mut buf[i]) {
                if buf[i].status != WcStatus::Success && !stale_error {
                    book.in_error = true;
                }
                buf[kept] = buf[i];
                kept += 1;
            }
        }
        (kept, for_a_drain)
    }
}

/// The shared part of a [`KitCq`]: its QPs keep it alive, to poll it while they drain.
pub(crate) struct CqCore<C> {
    pub(crate) raw: C,
    capacity: u32,
    life: DeviceLife,
    router: Mutex<Router>,
    /// ULP threads in [`KitCq::wait`].
    waiters: AtomicUsize,
    /// The device said the CQ overflowed: completions were lost.
    overflowed: AtomicBool,
    /// The CQ's place on its completion channel, if it was created on one: left when the
    /// device's CQ is destroyed, or when the last holder of this core (the handle, its QPs) is
    /// gone.
    channel: Option<ChannelMembership>,
}

impl<C: RawCq> CqCore<C> {
    /// The ULP's poll: put-aside completions first, then the device's, resolved.
    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut r = lock(&self.router);
        if r.destroyed {
            return Err(Error::destroyed("completion queue"));
        }
        // What a drain put aside comes first, copied out as whole runs.
        let mut n = out.len().min(r.held.len());
        if n > 0 {
            let (front, back) = r.held.as_slices();
            let k = front.len().min(n);
            out[..k].copy_from_slice(&front[..k]);
            out[k..n].copy_from_slice(&back[..n - k]);
            r.held.drain(..n);
        }
        let mut for_a_drain = false;
        while n < out.len() {
            let want = out.len() - n;
            let got = match self.raw.poll(&mut out[n..]) {
                Ok(got) => got.min(want),
                Err(e) => {
                    self.note(&e);
                    // What was already taken from the held queue is returned; the error comes
                    // with the next call.
                    return if n > 0 { Ok(n) } else { Err(e) };
                }
            };
            if got == 0 {
                // Nothing new: the common poll of a busy-polling ULP.
                break;
            }
            let (kept, drained) = r.resolve_in_place(&mut out[n..n + got]);
            n += kept;
            for_a_drain |= drained;
            if got < want {
                break;
            }
        }
        drop(r);
        if for_a_drain {
            // This poll took completions a drain of their QP may be waiting for (its marker, the
            // last flush): the drain's wait on this CQ is woken to look, rather than sleep out
            // its slice.
            self.raw.wake();
        }
        Ok(n)
    }

    /// Moves everything the device has completed aside, resolved, for the ULP's next poll (a
    /// drain does this: it must see its QP's completions whether or not the ULP polls).
    pub(crate) fn pump(&self) -> Result<()> {
        let mut r = lock(&self.router);
        if r.destroyed {
            return Err(Error::destroyed("completion queue"));
        }
        // The router's buffer, so that a pump does not initialise one each time.
        let mut buf = std::mem::take(&mut r.scratch);
        buf.resize(PUMP_BATCH, Completion::default());
        let result = self.pump_with(&mut r, &mut buf);
        r.scratch = buf;
        drop(r);
        match result {
            Ok(moved) | Err((_, moved)) if moved => self.wake_waiters(),
            _ => {}
        }
        result.map(|_| ()).map_err(|(e, _)| e)
    }

    /// [`pump`](Self::pump) under the router's lock, through `buf`; returns whether anything
    /// was put aside (with the error, if one ended it).
    fn pump_with(
        &self,
        r: &mut Router,
        buf: &mut [Completion],
    ) -> std::result::Result<bool, (Error, bool)> {
        let mut moved = false;
        loop {
            let got = match self.raw.poll(buf) {
                Ok(got) => got.min(buf.len()),
                Err(e) => {
                    self.note(&e);
                    return Err((e, moved));
                }
            };
            let (kept, _) = r.resolve_in_place(&mut buf[..got]);
            r.held.extend(&buf[..kept]);
            moved |= kept > 0;
            if got < buf.len() {
                return Ok(moved);
            }
        }
    }

    /// Puts completions the kit synthesized behind everything put aside, for the ULP.
    pub(crate) fn deliver(&self, completions: Vec<Completion>) {
        if completions.is_empty() {
            return;
        }
        lock(&self.router).held.extend(completions);
        self.wake_waiters();
    }

    fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.raw.wake();
        }
    }

    /// Waits for the device until `until` (a short slice of a longer wait) for a kit-internal
    /// waiter — a drain, a disconnect waiting for quiet sends — that is not the CQ's only
    /// reader: a ULP polling it may resolve what the waiter looks for without waking it, and a
    /// ULP waiting on it may consume the device's wake. So the waiter sleeps in short slices,
    /// leaves the device's wake alone while a waiting ULP has completions put aside, and gives
    /// back a wake it consumed that was the ULP's.
    pub(crate) fn nap(&self, now: Instant, until: Instant) -> Result<()> {
        if self.ulp_has_pending() {
            self.raw.wake();
            std::thread::sleep(until.saturating_duration_since(now));
        } else {
            self.raw.wait(until)?;
            if self.ulp_has_pending() {
                self.raw.wake();
            }
        }
        Ok(())
    }

    /// Whether a ULP thread waits on the CQ while completions are put aside for it: the device's
    /// wake is then the waiter's, and a drain must not consume it in its own wait.
    pub(crate) fn ulp_has_pending(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0 && !lock(&self.router).held.is_empty()
    }

    /// Remembers an overflow the device reported.
    fn note(&self, e: &Error) {
        if e.kind() == ErrorKind::Overflow {
            self.overflowed.store(true, Ordering::Release);
        }
    }

    /// Whether the device said the CQ overflowed.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Routes the completions of QP `qp_num` to `book`, and reserves a slot for the drain's
    /// marker of each of `queues` work queues.
    pub(crate) fn attach(&self, qp_num: u32, book: &SharedBook, queues: u32) -> Result<()> {
        let mut r = lock(&self.router);
        self.raw.reserve(r.attached + queues)?;
        r.attached += queues;
        r.routes.insert(qp_num, Arc::clone(book));
        Ok(())
    }

    /// Stops routing to `book` (if QP `qp_num` is still routed to it) and gives back its
    /// queues' reservation. Called once for each [`attach`](Self::attach) that succeeded.
    pub(crate) fn detach(&self, qp_num: u32, book: &SharedBook, queues: u32) {
        let mut r = lock(&self.router);
        if r.routes.get(&qp_num).is_some_and(|b| Arc::ptr_eq(b, book)) {
            r.routes.remove(&qp_num);
        }
        // Given back even when a newer QP took the number's route over (a drain that fell back
        // stopped the device QP, and the device gave its number away while the handle lived):
        // the queues were counted when they attached.
        r.attached = r.attached.saturating_sub(queues);
    }

    /// Raw completions dropped so far (see [`KitCq::unrouted`]).
    fn unrouted(&self) -> u64 {
        lock(&self.router).unrouted
    }
}

/// A completion queue built on the kit: a provider's [`RawCq`] below, the ULP's
/// [`CompletionQueue`] above.
///
/// Completions are resolved when they are polled, exactly as on hardware: each raw completion
/// is routed by its QP number to that QP's [`Ledger`](crate::drain::Ledger), which matches it by
/// its token (generation, queue and sequence — never by its position), gives it back the ULP's
/// `wr_id`, swallows the drain's markers and drops what belongs to nothing outstanding. What a
/// drain polled on the ULP's behalf is held and returned first, in order.
pub struct KitCq<C: RawCq> {
    pub(crate) core: Arc<CqCore<C>>,
    destroyed: AtomicBool,
    /// Held while the device's CQ is being destroyed: two threads destroying the handle at
    /// once destroy it in the device once.
    destroying: Mutex<()>,
}

impl<C: RawCq> std::fmt::Debug for KitCq<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitCq")
            .field("cq_num", &self.core.raw.cq_num())
            .field("capacity", &self.core.capacity)
            .finish_non_exhaustive()
    }
}

impl<C: RawCq> KitCq<C> {
    /// Wraps the device's CQ, created for `capacity` completions (the depth the ULP asked for),
    /// of the device whose liveness is `life`.
    pub fn new(raw: C, capacity: u32, life: DeviceLife) -> KitCq<C> {
        KitCq::build(raw, capacity, life, None)
    }

    /// [`new`](Self::new) for a device CQ the provider created on `channel`'s raw channel
    /// ([`KitChannel::raw`]): the CQ can be [armed](CompletionQueue::arm), and the channel is
    /// `Busy` while the CQ lives. Fails as a call on the channel does (destroyed, device lost).
    pub fn with_channel<Ch: RawChannel>(
        raw: C,
        capacity: u32,
        life: DeviceLife,
        channel: &KitChannel<Ch>,
    ) -> Result<KitCq<C>> {
        channel.check()?;
        let membership = channel.members.join(raw.cq_num());
        Ok(KitCq::build(raw, capacity, life, Some(membership)))
    }

    fn build(
        raw: C,
        capacity: u32,
        life: DeviceLife,
        channel: Option<ChannelMembership>,
    ) -> KitCq<C> {
        KitCq {
            core: Arc::new(CqCore {
                raw,
                capacity,
                life,
                router: Mutex::new(Router {
                    held: VecDeque::new(),
                    routes: FxHashMap::default(),
                    scratch: Vec::new(),
                    attached: 0,
                    unrouted: 0,
                    destroyed: false,
                }),
                waiters: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
                channel,
            }),
            destroyed: AtomicBool::new(false),
            destroying: Mutex::new(()),
        }
    }

    /// The device's CQ.
    pub fn raw(&self) -> &C {
        &self.core.raw
    }

    /// Raw completions the kit dropped: those of QPs no longer attached (destroyed, their
    /// number perhaps reused) and those of nothing outstanding (after a drain). Markers are not
    /// counted.
    pub fn unrouted(&self) -> u64 {
        self.core.unrouted()
    }

    /// `DeviceLost` once the device is lost (whatever else happened to the handle), else
    /// `Destroyed` once the handle was destroyed.
    pub(crate) fn check(&self) -> Result<()> {
        self.core.life.check()?;
        if self.destroyed.load(Ordering::Acquire) {
            return Err(Error::destroyed("completion queue"));
        }
        Ok(())
    }
}

impl<C: RawCq> CompletionQueue for KitCq<C> {
    fn cq_num(&self) -> u32 {
        self.core.raw.cq_num()
    }

    fn capacity(&self) -> u32 {
        self.core.capacity
    }

    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        self.check()?;
        self.core.poll(out)
    }

    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize> {
        if out.is_empty() {
            return Err(Error::invalid_argument(
                "wait needs room for at least one completion",
            ));
        }
        self.check()?;
        // Counted as a waiter before the first poll, so that completions a drain puts aside
        // after that poll wake this wait.
        self.core.waiters.fetch_add(1, Ordering::SeqCst);
        let result = (|| loop {
            let n = self.core.poll(out)?;
            if n > 0 {
                // The device's wake is one wake: a delivery of several completions wakes one
                // waiter, which passes it on to the next while some are left for it.
                if self.core.waiters.load(Ordering::SeqCst) > 1
                    && !lock(&self.core.router).held.is_empty()
                {
                    self.core.raw.wake();
                }
                return Ok(n);
            }
            if !self.core.raw.wait(deadline)? {
                let n = self.core.poll(out)?;
                if n > 0 {
                    return Ok(n);
                }
                return Err(Error::timed_out("no completion arrived by the deadline"));
            }
            self.core.life.check()?;
        })();
        self.core.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn destroy(&self) -> Result<()> {
        let _destroying = lock(&self.destroying);
        if self.destroyed.load(Ordering::Acquire) {
            return Ok(());
        }
        // Nothing may call into the device CQ once it is destroyed: not while a QP uses it
        // (whatever the provider says), nor while a thread waits on it. A waiter counts itself
        // before it polls, and polls check the flag under this lock.
        let mut r = lock(&self.core.router);
        if r.attached > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "the completion queue is in use by {} work queue(s) of live QPs",
                    r.attached
                ),
            ));
        }
        if self.core.waiters.load(Ordering::SeqCst) > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                "a thread is waiting on the completion queue",
            ));
        }
        self.core.raw.destroy()?;
        r.destroyed = true;
        self.destroyed.store(true, Ordering::Release);
        if let Some(membership) = &self.core.channel {
            membership.leave();
        }
        Ok(())
    }

    fn arm(&self, solicited_only: bool) -> Result<()> {
        self.check()?;
        if self.core.channel.is_none() {
            return Err(Error::invalid_state(
                "the completion queue was created without a completion channel",
            ));
        }
        // Completions a drain already moved aside are in `held`, found by the ULP's poll after
        // the arm, as verbs' arm-then-poll finds those already in the ring.
        self.core.raw.arm(solicited_only)
    }
}

/// A completion channel built on the kit: a provider's [`RawChannel`] below, the ULP's
/// [`CompletionChannel`] above.
///
/// The kit keeps the CQs created on it ([`KitCq::with_channel`]): destroying the channel is
/// `Busy` while any is alive, and a notification that names a CQ no longer on it (a late event
/// of a destroyed CQ) is dropped. Every call but `destroy` fails with `DeviceLost` once the
/// device is lost, and with `Destroyed` after a destroy.
pub struct KitChannel<Ch: RawChannel> {
    raw: Ch,
    life: DeviceLife,
    members: Arc<ChannelMembers>,
    destroyed: AtomicBool,
    /// Held while the device's channel is being destroyed.
    destroying: Mutex<()>,
}

impl<Ch: RawChannel> std::fmt::Debug for KitChannel<Ch> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitChannel")
            .field("cqs", &self.members.count())
            .finish_non_exhaustive()
    }
}

impl<Ch: RawChannel> KitChannel<Ch> {
    /// Wraps the device's channel, of the device whose liveness is `life`.
    pub fn new(raw: Ch, life: DeviceLife) -> KitChannel<Ch> {
        KitChannel {
            raw,
            life,
            members: Arc::default(),
            destroyed: AtomicBool::new(false),
            destroying: Mutex::new(()),
        }
    }

    /// The device's channel, to create CQs on.
    pub fn raw(&self) -> &Ch {
        &self.raw
    }

    /// `DeviceLost` once the device is lost, else `Destroyed` once the handle was destroyed.
    pub(crate) fn check(&self) -> Result<()> {
        self.life.check()?;
        if self.destroyed.load(Ordering::Acquire) {
            return Err(Error::destroyed("completion channel"));
        }
        Ok(())
    }
}

impl<Ch: RawChannel> CompletionChannel for KitChannel<Ch> {
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.raw.fd()
    }

    fn next(&self) -> Result<Option<u32>> {
        self.check()?;
        loop {
            match self.raw.next()? {
                None => return Ok(None),
                Some(cq_num) if self.members.contains(cq_num) => return Ok(Some(cq_num)),
                // A CQ that left the channel since it fired: nothing of it to poll.
                Some(_) => continue,
            }
        }
    }

    fn destroy(&self) -> Result<()> {
        let _destroying = lock(&self.destroying);
        if self.destroyed.load(Ordering::Acquire) {
            return Ok(());
        }
        let cqs = self.members.count();
        if cqs > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("the completion channel is in use by {cqs} completion queue(s)"),
            ));
        }
        self.raw.destroy()?;
        self.destroyed.store(true, Ordering::Release);
        Ok(())
    }
}
