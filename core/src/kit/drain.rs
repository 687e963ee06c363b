//! How a [`KitQp`] drains: the drain's bookkeeping around [`engine::run`], and the
//! [`DrainTarget`] the kit builds from the provider's primitives.
//!
//! The kit decides that a queue is done from completions alone: what it polled and what its
//! ledger knows ([`Ledger::awaiting`]). It never asks the device how full its rings are — a
//! real device cannot say — so the mock, driven by the same code, is judged on what real
//! providers run.

use std::time::{Duration, Instant};

use super::qp::KitQp;
use super::raw::RawQp;
use super::{QpBook, lock};
use crate::DrainReport;
use crate::drain::engine::{self, DrainPlan, DrainTarget, WaitFor};
use crate::drain::{DrainStart, Ledger, WorkQueue};
use crate::error::{Error, ErrorKind, Result};
use crate::state::QpState;
use crate::wr::{RecvWr, RemoteAddr, SendOp, SendWr};

/// The longest a drain sleeps in the device's wait before it looks at its ledger again.
const WAIT_SLICE: Duration = Duration::from_millis(1);

impl<Q: RawQp> KitQp<Q> {
    /// Drains with the plan `plan_for` gives for the QP's state (a profile's
    /// [`plan_for`](crate::drain::DrainProfile::plan_for), or a fixed plan to try one on a
    /// device). Otherwise what [`drain`](crate::QueuePair::drain) does.
    pub fn drain_with(
        &self,
        plan_for: impl FnOnce(QpState) -> DrainPlan,
        deadline: Instant,
    ) -> Result<DrainReport> {
        self.run_drain(|_| Ok(plan_for(self.raw.state()?)), deadline)
    }

    /// Drains with the profile's plan, asking the device for the QP's state only where the
    /// plan depends on it.
    ///
    /// Waiting for the flush cannot tell an unsignaled send that ran from one the device will
    /// flush later (on a device that flushes asynchronously): nothing completes for the first,
    /// and the second's flush may come after the drain decided. So while such a send is
    /// outstanding and the send queue still takes WRs that run or flush in order (RTS, SQD), the
    /// drain posts a signaled marker behind it first and moves to ERROR after
    /// ([`DrainPlan::MarkerThenError`]): the marker's completion settles the question.
    ///
    /// The choice is made once the drain has started, when posts are refused: an unsignaled
    /// send posted between a look before and the start would be taken for a silent success.
    pub(crate) fn drain_by_profile(&self, deadline: Instant) -> Result<DrainReport> {
        let profile = self.profile;
        match profile.plan {
            DrainPlan::MarkerThenError => self.drain_with(|s| profile.plan_for(s), deadline),
            DrainPlan::WaitForFlush => self.run_drain(
                |began| {
                    if !began.unsure_sends {
                        return Ok(DrainPlan::WaitForFlush);
                    }
                    Ok(match self.raw.state()? {
                        QpState::ReadyToSend | QpState::SendQueueDrained => {
                            DrainPlan::MarkerThenError
                        }
                        _ => DrainPlan::WaitForFlush,
                    })
                },
                deadline,
            ),
            plan => self.run_drain(|_| Ok(plan), deadline),
        }
    }

    /// The drain: starts it in the ledger (or waits for another caller's), runs the plan
    /// `choose` picks, and reports.
    ///
    /// Nothing of the provider's, nor `choose` (a caller's `plan_for`), runs under the QP's
    /// lock: the device may take its time to move the QP to ERROR, and meanwhile a second
    /// drain waits by its own deadline, a racing post is refused at once, and a poll of a CQ
    /// the QP shares resolves what it finds for the QP without waiting for the device.
    fn run_drain(
        &self,
        choose: impl FnOnce(&Began) -> Result<DrainPlan>,
        deadline: Instant,
    ) -> Result<DrainReport> {
        self.check()?;
        let start = Instant::now();
        let Some(began) = self.begin_drain(deadline, start)? else {
            return Ok(DrainReport::already_drained(start.elapsed()));
        };
        let _unwind = EndOnUnwind(self);
        let drainer = Drainer {
            qp: self,
            idle: began.idle,
        };
        let idle = began.idle == [true; 2];
        // The plan, why it fell back, and whether it moved the QP to ERROR without recording
        // it (the idle drain leaves that to the lock below).
        let outcome = choose(&began).and_then(|plan| {
            if idle && plan != DrainPlan::Synthesize {
                drainer
                    .drain_idle()
                    .map(|fallback| (plan, fallback, fallback.is_none()))
            } else {
                engine::run_since(&drainer, plan, deadline, began.at)
                    .map(|fallback| (plan, fallback, false))
            }
        });
        // Checked and finished under one lock.
        let mut book = lock(&self.book);
        let (plan, fallback, entered_error) = match outcome.and_then(|r| self.check().map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                book.ledger.interrupt_drain();
                self.end_drain(&book);
                return Err(e);
            }
        };
        if entered_error {
            book.in_error = true;
        }
        let counts = book.ledger.finish_drain();
        self.end_drain(&book);
        drop(book);
        self.report(plan, counts, fallback, start)
    }

    /// The report of a drain that finished: `counts` are the WRs outstanding at its start and
    /// how many of them were synthesized.
    fn report(
        &self,
        plan: DrainPlan,
        (at_start, synthesized): (usize, usize),
        fallback: Option<crate::drain::Fallback>,
        start: Instant,
    ) -> Result<DrainReport> {
        if self.send_cq.overflowed() || self.recv_cq.overflowed() {
            // Completions were lost before they could be delivered: "every WR completes exactly
            // once" does not hold, though the QP is drained.
            return Err(Error::new(
                ErrorKind::Overflow,
                "the QP is drained, but its completion queue overflowed: completions were lost",
            ));
        }
        Ok(DrainReport {
            strategy: plan.strategy(),
            completed_by_device: at_start.saturating_sub(synthesized),
            synthesized,
            fallback,
            elapsed: start.elapsed(),
        })
    }

    /// Starts the drain in the ledger, waiting for another caller's drain to end first; `None`
    /// when the QP is drained already, else what the plan may depend on. Posts are refused from
    /// here on, so a queue idle now stays idle: its drain is ERROR alone, with no marker and no
    /// wait.
    fn begin_drain(&self, deadline: Instant, start: Instant) -> Result<Option<Began>> {
        let mut book = lock(&self.book);
        let mut waited = false;
        loop {
            // Under the lock `destroy` takes: no drain starts on a destroyed device QP.
            self.check()?;
            match book.ledger.begin_drain() {
                DrainStart::Start => {
                    let idle = WorkQueue::BOTH.map(|q| book.ledger.outstanding(q) == 0);
                    let began = Began {
                        idle,
                        unsure_sends: !idle[WorkQueue::Send.index()]
                            && book.ledger.has_unsure_sends(),
                        // After a wait for another drain (one that ended without finishing),
                        // the time left is what is left now: the fallback's reserve is a share
                        // of it.
                        at: if waited { Instant::now() } else { start },
                    };
                    return Ok(Some(began));
                }
                DrainStart::Done => return Ok(None),
                DrainStart::InProgress => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timed_out(
                    "another drain of this QP was still running at the deadline",
                ));
            }
            let left = (deadline - now).max(Duration::from_micros(1));
            book.drain_waiters += 1;
            waited = true;
            book = match self.drain_ended.wait_timeout(book, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            book.drain_waiters -= 1;
        }
    }

    /// Wakes the callers waiting for this drain to end, if there are any (a notification costs
    /// a system call even when nobody waits).
    fn end_drain(&self, book: &QpBook) {
        if book.drain_waiters > 0 {
            self.drain_ended.notify_all();
        }
    }

    /// Whether what a drain waits for holds.
    fn holds(&self, what: WaitFor) -> bool {
        holds_in(&lock(&self.book), what)
    }

    /// Whether what a drain waits for holds with nothing outstanding on its queue: nothing
    /// the device completed can be waiting in the CQ for this queue.
    fn holds_idle(&self, what: WaitFor) -> bool {
        let queue = match what {
            WaitFor::Marker(q) | WaitFor::DeviceIdle(q) => q,
        };
        let book = lock(&self.book);
        book.ledger.outstanding(queue) == 0 && holds_in(&book, what)
    }

    /// Runs `f` on the ledger and delivers the completions it synthesized to `queue`'s CQ.
    fn deliver_from_ledger(
        &self,
        queue: WorkQueue,
        f: impl FnOnce(&mut Ledger, &mut Vec<crate::wr::Completion>) -> usize,
    ) {
        let mut out = Vec::new();
        f(&mut lock(&self.book).ledger, &mut out);
        // Delivered after the QP's lock is released: the CQ's lock comes first.
        self.cq(queue).deliver(out);
    }
}

/// Whether what a drain waits for holds, by the QP's book.
fn holds_in(book: &QpBook, what: WaitFor) -> bool {
    match what {
        WaitFor::Marker(queue) => !book.ledger.marker_pending(queue),
        WaitFor::DeviceIdle(queue) => book.ledger.awaiting(queue) == 0,
    }
}

/// What a drain's plan may depend on, read from the ledger as the drain began.
pub(crate) struct Began {
    /// The queues with nothing outstanding (send, receive).
    pub(crate) idle: [bool; 2],
    /// An unsignaled send is outstanding ([`Ledger::has_unsure_sends`]).
    pub(crate) unsure_sends: bool,
    /// When the drain began.
    pub(crate) at: Instant,
}

/// Ends the drain as interrupted if the provider panics in the middle of it: a QP left
/// "draining" would make `destroy` (which waits for a running drain) hang, and every later drain
/// time out.
struct EndOnUnwind<'a, Q: RawQp>(&'a KitQp<Q>);

impl<Q: RawQp> Drop for EndOnUnwind<'_, Q> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.book).ledger.interrupt_drain();
            self.0.drain_ended.notify_all();
        }
    }
}

/// The drain's primitives, built from the provider's.
struct Drainer<'a, Q: RawQp> {
    qp: &'a KitQp<Q>,
    /// The queues that had nothing outstanding when the drain began (send, receive): nothing
    /// can complete on them, so they get no marker, no wait and nothing to settle.
    idle: [bool; 2],
}

impl<Q: RawQp> Drainer<'_, Q> {
    fn idle(&self, queue: WorkQueue) -> bool {
        self.idle[queue.index()]
    }

    /// The drain of a QP with nothing outstanding on either queue: the move to ERROR is all
    /// there is to do (nothing can complete: no marker, no wait, nothing to settle), which the
    /// caller records when it finishes the drain. A move the device refuses is a failed step,
    /// as in [`engine::run`]: the drain falls back the same way, and the device is not asked
    /// again.
    fn drain_idle(&self) -> Result<Option<crate::drain::Fallback>> {
        match self.qp.raw.enter_error() {
            Ok(()) => Ok(None),
            Err(e) => engine::fall_back(self, Some(crate::drain::Fallback::StepFailed(e.kind()))),
        }
    }
}

impl<Q: RawQp> DrainTarget for Drainer<'_, Q> {
    fn enter_error(&self) -> Result<()> {
        self.qp.raw.enter_error()?;
        lock(&self.qp.book).in_error = true;
        Ok(())
    }

    fn post_marker(&self, queue: WorkQueue) -> Result<bool> {
        if self.idle(queue) {
            return Ok(false);
        }
        let mut book = lock(&self.qp.book);
        let Some(token) = book.ledger.arm_marker(queue) else {
            return Ok(false);
        };
        // A zero-length RDMA WRITE touches no remote memory; a receive without SGEs takes no
        // data.
        let posted = match queue {
            WorkQueue::Send => self.qp.raw.post_send(&[SendWr::new(
                token.wr_id(),
                SendOp::Write(RemoteAddr { addr: 0, rkey: 0 }),
                &[],
            )]),
            WorkQueue::Recv => self.qp.raw.post_recv(&[RecvWr::new(token.wr_id(), &[])]),
        };
        posted.map_err(|e| e.error)?;
        Ok(true)
    }

    fn arm_flush_marker(&self, queue: WorkQueue) -> Result<bool> {
        if self.idle(queue) {
            return Ok(false);
        }
        Ok(lock(&self.qp.book).ledger.arm_marker(queue).is_some())
    }

    fn wait(&self, what: WaitFor, deadline: Instant) -> Result<bool> {
        let queue = match what {
            WaitFor::Marker(q) | WaitFor::DeviceIdle(q) => q,
        };
        if self.idle(queue) {
            return Ok(true);
        }
        // An empty queue: done without polling. A queue with nothing awaited but something
        // outstanding (unsignaled sends, doomed WRs) is polled first: what the device completed
        // for it (an unsignaled send's error) is resolved before the queue is settled.
        if self.qp.holds_idle(what) {
            return Ok(true);
        }
        let cq = self.qp.cq(queue);
        loop {
            cq.pump()?;
            if self.qp.holds(what) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // A ULP polling the CQ may resolve what the drain waits for (its marker, the last
            // flush) without waking it: the drain naps in short slices.
            cq.nap(now, deadline.min(now + WAIT_SLICE))?;
            self.qp.life.check()?;
        }
    }

    fn settle(&self, queue: WorkQueue) -> Result<()> {
        if self.idle(queue) {
            return Ok(());
        }
        self.qp
            .deliver_from_ledger(queue, |l, out| l.settle(queue, out));
        Ok(())
    }

    fn stop_hardware(&self) -> Result<()> {
        // What the device completed so far is resolved first, on both CQs (the drain may have
        // waited on one only): some devices purge a QP's completions from its CQs when the QP
        // is destroyed, and a success must not become a synthesized flush.
        self.qp.pump_both();
        self.qp.raw.stop()
    }

    fn synthesize_rest(&self) -> Result<()> {
        // And what the device completed before it stopped, where the CQs keep it.
        self.qp.pump_both();
        for queue in WorkQueue::BOTH {
            self.qp
                .deliver_from_ledger(queue, |l, out| l.synthesize(queue, out));
        }
        Ok(())
    }
}
