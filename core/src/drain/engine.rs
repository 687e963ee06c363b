//! The drain algorithms, written once against [`DrainTarget`]: the few primitive operations a
//! provider offers on one of its QPs.
//!
//! A provider's `QueuePair::drain` starts the drain in its [`Ledger`](super::Ledger)
//! (`begin_drain`), calls [`run`] with the [`DrainPlan`] it chose for the device, and builds the
//! [`DrainReport`](super::DrainReport) from the ledger (`finish_drain`) and the fallback `run`
//! returns. `run` never waits past the deadline; when the plan cannot finish it stops the
//! hardware and synthesizes the rest, so its only errors are those of the stop and the
//! synthesis themselves.

use std::time::{Duration, Instant};

use super::{DrainStrategy, Fallback, WorkQueue};

/// The most time [`run`] keeps back before the deadline for stopping the hardware QP and
/// synthesizing, should the plan not finish.
pub const FALLBACK_RESERVE: Duration = Duration::from_millis(10);
use crate::error::Result;

/// The algorithm a provider uses to drain QPs of one device; see the
/// [table of strategies](super#strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainPlan {
    /// ERROR, then a marker on each busy queue, then wait for the markers.
    ErrorThenMarker {
        /// Move to ERROR once more after posting the receive marker: on rxe a receive posted in
        /// ERROR completes only when the QP is moved to ERROR again.
        repeat_error_for_recv: bool,
    },
    /// A marker on the send queue while the QP still runs, then ERROR, then wait for the marker
    /// and for the device to flush the receive queue (for devices that ignore WRs posted in
    /// ERROR).
    MarkerThenError,
    /// ERROR, then wait until the device has finished with both queues, then settle them from
    /// the ledger.
    WaitForFlush,
    /// ERROR, then a provider-side marker on each busy queue (an empty queue needs none), each
    /// completing when the device has flushed everything before it.
    FlushMarker,
    /// The device is known dead: stop the hardware QP and synthesize everything.
    Synthesize,
}

impl DrainPlan {
    /// The strategy a report names for this plan.
    pub fn strategy(self) -> DrainStrategy {
        match self {
            DrainPlan::ErrorThenMarker { .. } => DrainStrategy::ErrorThenMarker,
            DrainPlan::MarkerThenError => DrainStrategy::MarkerThenError,
            DrainPlan::WaitForFlush => DrainStrategy::WaitForFlush,
            DrainPlan::FlushMarker => DrainStrategy::FlushMarker,
            DrainPlan::Synthesize => DrainStrategy::Synthesized,
        }
    }
}

/// What a drain waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitFor {
    /// The marker armed on this queue has completed (its completion was resolved by the
    /// ledger).
    Marker(WorkQueue),
    /// The device has finished with every WR on this queue that it will ever finish (its ring
    /// is empty, WRs it dropped aside) and every completion it produced has been resolved.
    DeviceIdle(WorkQueue),
}

/// The primitive operations a provider offers on the QP being drained. Each takes the
/// provider's own locks; none may block past a deadline it is given.
pub trait DrainTarget {
    /// Moves the hardware QP to ERROR (again, if it is there already: that repetition is what
    /// flushes receives posted in ERROR on rxe). From RESET, goes through INIT where the state
    /// model requires it.
    fn enter_error(&self) -> Result<()>;

    /// Arms a marker in the ledger and posts it to the device on `queue` (a zero-length RDMA
    /// WRITE on the send queue, a receive without SGEs on the receive queue). Returns `false`
    /// without posting when nothing is outstanding on the queue.
    fn post_marker(&self, queue: WorkQueue) -> Result<bool>;

    /// Arms a provider-side marker on `queue` without posting anything to the device. Returns
    /// `false` when nothing is outstanding on the queue (the synchronous "already empty").
    fn arm_flush_marker(&self, queue: WorkQueue) -> Result<bool>;

    /// Waits until `what` holds (`Ok(true)`) or `deadline` passes (`Ok(false)`).
    fn wait(&self, what: WaitFor, deadline: Instant) -> Result<bool>;

    /// Settles `queue` in the ledger and delivers what it synthesized to the queue's CQ (see
    /// [`Ledger::settle`](super::Ledger::settle)). Called once the queue's marker completed or
    /// the device went idle on it.
    fn settle(&self, queue: WorkQueue) -> Result<()>;

    /// Stops the hardware QP for good (destroys it in the device): afterwards the device
    /// touches none of the QP's buffers and produces no completion for it.
    fn stop_hardware(&self) -> Result<()>;

    /// Synthesizes a flush completion for every WR still outstanding and delivers each to its
    /// queue's CQ (see [`Ledger::synthesize`](super::Ledger::synthesize)).
    fn synthesize_rest(&self) -> Result<()>;
}

/// Carries out `plan` on `target` by `deadline`. Returns `None` when the plan finished, or why
/// it had to fall back to stopping the hardware and synthesizing.
///
/// The plan's waits end a little before `deadline` (a tenth of the time left, at most
/// [`FALLBACK_RESERVE`]), so that stopping the hardware and synthesizing still fit before it: a
/// drain on a dead device returns by its deadline, and a second caller waiting for it with the
/// same deadline sees it finish.
pub fn run<T: DrainTarget + ?Sized>(
    target: &T,
    plan: DrainPlan,
    deadline: Instant,
) -> Result<Option<Fallback>> {
    run_since(target, plan, deadline, Instant::now())
}

/// [`run`] for a drain that started at `now`, as the caller read the clock (a clock read costs
/// as much as a short drain's bookkeeping).
pub fn run_since<T: DrainTarget + ?Sized>(
    target: &T,
    plan: DrainPlan,
    deadline: Instant,
    now: Instant,
) -> Result<Option<Fallback>> {
    let left = deadline.saturating_duration_since(now);
    let wait_until = deadline - (left / 10).min(FALLBACK_RESERVE);
    let fallback = match attempt(target, plan, wait_until) {
        Ok(true) => return Ok(None),
        Ok(false) if plan == DrainPlan::Synthesize => None,
        Ok(false) => Some(Fallback::DeadlinePassed),
        Err(e) => Some(Fallback::StepFailed(e.kind())),
    };
    fall_back(target, fallback)
}

/// The end of a drain that could not finish its plan (or whose plan is to synthesize): stops
/// the hardware QP and synthesizes what is left; returns `why`.
pub(crate) fn fall_back<T: DrainTarget + ?Sized>(
    target: &T,
    why: Option<Fallback>,
) -> Result<Option<Fallback>> {
    target.stop_hardware()?;
    target.synthesize_rest()?;
    Ok(why)
}

/// Runs the plan's steps; `Ok(false)` when the deadline passed first.
fn attempt<T: DrainTarget + ?Sized>(t: &T, plan: DrainPlan, deadline: Instant) -> Result<bool> {
    let mut busy = [false; 2];
    match plan {
        DrainPlan::ErrorThenMarker {
            repeat_error_for_recv,
        } => {
            t.enter_error()?;
            for (i, q) in WorkQueue::BOTH.into_iter().enumerate() {
                busy[i] = t.post_marker(q)?;
            }
            if repeat_error_for_recv && busy[1] {
                t.enter_error()?;
            }
            wait_all(t, busy, WaitFor::Marker, deadline)
        }
        DrainPlan::MarkerThenError => {
            // Only the send queue gets a marker before ERROR: a receive marker on a live QP
            // could be consumed by an incoming SEND, whose data would then be lost unseen. The
            // receive queue is flushed by ERROR and waited for like WaitForFlush.
            let send_busy = t.post_marker(WorkQueue::Send)?;
            t.enter_error()?;
            Ok(wait_all(t, [send_busy, false], WaitFor::Marker, deadline)?
                && wait_all(t, [false, true], WaitFor::DeviceIdle, deadline)?)
        }
        DrainPlan::WaitForFlush => {
            t.enter_error()?;
            wait_all(t, [true; 2], WaitFor::DeviceIdle, deadline)
        }
        DrainPlan::FlushMarker => {
            t.enter_error()?;
            for (i, q) in WorkQueue::BOTH.into_iter().enumerate() {
                busy[i] = t.arm_flush_marker(q)?;
            }
            wait_all(t, busy, WaitFor::DeviceIdle, deadline)
        }
        DrainPlan::Synthesize => Ok(false),
    }
}

/// Waits for `what` on each busy queue, settling each queue as soon as it is done.
fn wait_all<T: DrainTarget + ?Sized>(
    t: &T,
    busy: [bool; 2],
    what: fn(WorkQueue) -> WaitFor,
    deadline: Instant,
) -> Result<bool> {
    for (i, q) in WorkQueue::BOTH.into_iter().enumerate() {
        if busy[i] {
            if !t.wait(what(q), deadline)? {
                return Ok(false);
            }
            t.settle(q)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::time::Duration;

    use super::*;
    use crate::error::{Error, ErrorKind};

    /// A scripted target: records the steps it is asked for and answers as told.
    #[derive(Default)]
    struct Script {
        log: RefCell<Vec<String>>,
        outstanding: [bool; 2],
        refuse_marker: bool,
        never_done: bool,
    }

    impl Script {
        fn note(&self, s: impl Into<String>) {
            self.log.borrow_mut().push(s.into());
        }
        fn steps(&self) -> Vec<String> {
            self.log.borrow().clone()
        }
    }

    fn idx(q: WorkQueue) -> usize {
        match q {
            WorkQueue::Send => 0,
            WorkQueue::Recv => 1,
        }
    }

    impl DrainTarget for Script {
        fn enter_error(&self) -> Result<()> {
            self.note("error");
            Ok(())
        }
        fn post_marker(&self, q: WorkQueue) -> Result<bool> {
            if self.refuse_marker {
                return Err(Error::invalid_state("EINVAL"));
            }
            let busy = self.outstanding[idx(q)];
            if busy {
                self.note(format!("marker {q:?}"));
            }
            Ok(busy)
        }
        fn arm_flush_marker(&self, q: WorkQueue) -> Result<bool> {
            let busy = self.outstanding[idx(q)];
            if busy {
                self.note(format!("flush marker {q:?}"));
            }
            Ok(busy)
        }
        fn wait(&self, what: WaitFor, _deadline: Instant) -> Result<bool> {
            self.note(format!("wait {what:?}"));
            Ok(!self.never_done)
        }
        fn settle(&self, q: WorkQueue) -> Result<()> {
            self.note(format!("settle {q:?}"));
            Ok(())
        }
        fn stop_hardware(&self) -> Result<()> {
            self.note("stop");
            Ok(())
        }
        fn synthesize_rest(&self) -> Result<()> {
            self.note("synthesize");
            Ok(())
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    #[test]
    fn error_then_marker_repeats_error_after_a_receive_marker() {
        let t = Script {
            outstanding: [true, true],
            ..Script::default()
        };
        let plan = DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: true,
        };
        assert_eq!(run(&t, plan, soon()).unwrap(), None);
        assert_eq!(
            t.steps(),
            [
                "error",
                "marker Send",
                "marker Recv",
                "error",
                "wait Marker(Send)",
                "settle Send",
                "wait Marker(Recv)",
                "settle Recv"
            ]
        );
    }

    #[test]
    fn marker_then_error_marks_only_the_send_queue_before_the_transition() {
        let t = Script {
            outstanding: [true, false],
            ..Script::default()
        };
        assert_eq!(run(&t, DrainPlan::MarkerThenError, soon()).unwrap(), None);
        assert_eq!(
            t.steps(),
            [
                "marker Send",
                "error",
                "wait Marker(Send)",
                "settle Send",
                "wait DeviceIdle(Recv)",
                "settle Recv"
            ]
        );
    }

    #[test]
    fn flush_marker_on_empty_queues_waits_for_nothing() {
        let t = Script::default();
        assert_eq!(run(&t, DrainPlan::FlushMarker, soon()).unwrap(), None);
        assert_eq!(t.steps(), ["error"]);
    }

    #[test]
    fn wait_for_flush_waits_on_both_queues() {
        let t = Script::default();
        assert_eq!(run(&t, DrainPlan::WaitForFlush, soon()).unwrap(), None);
        assert_eq!(
            t.steps(),
            [
                "error",
                "wait DeviceIdle(Send)",
                "settle Send",
                "wait DeviceIdle(Recv)",
                "settle Recv"
            ]
        );
    }

    #[test]
    fn a_passed_deadline_stops_the_hardware_before_synthesizing() {
        let t = Script {
            outstanding: [true, true],
            never_done: true,
            ..Script::default()
        };
        let plan = DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: false,
        };
        assert_eq!(
            run(&t, plan, soon()).unwrap(),
            Some(Fallback::DeadlinePassed)
        );
        let steps = t.steps();
        assert_eq!(&steps[steps.len() - 2..], ["stop", "synthesize"]);
    }

    #[test]
    fn a_refused_marker_falls_back_with_its_error_kind() {
        let t = Script {
            outstanding: [true, true],
            refuse_marker: true,
            ..Script::default()
        };
        let plan = DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: false,
        };
        assert_eq!(
            run(&t, plan, soon()).unwrap(),
            Some(Fallback::StepFailed(ErrorKind::InvalidState))
        );
        assert_eq!(t.steps(), ["error", "stop", "synthesize"]);
    }

    #[test]
    fn synthesize_plan_is_not_a_fallback() {
        let t = Script::default();
        assert_eq!(run(&t, DrainPlan::Synthesize, soon()).unwrap(), None);
        assert_eq!(t.steps(), ["stop", "synthesize"]);
    }
}
