//! The drain contract, what a drain reports, and the building blocks providers drain with.
//!
//! # The contract
//!
//! `QueuePair::drain(deadline)` is how a ULP learns that a QP is quiet and safe to destroy:
//!
//! 1. It returns `Result<DrainReport, Error>` and never blocks past the deadline.
//! 2. After it returns `Ok`, every WR posted before the call has produced exactly one completion
//!    (success or flush error) in its CQ, synthesized by the provider where the device could not
//!    produce it; the ULP's completion handling sees every `wr_id` exactly once. Marker WRs the
//!    provider posts for itself never reach the ULP. (An unsignaled send that succeeded produces
//!    no completion, as always in verbs; one whose fate the device never reported is given a
//!    flush completion, so it too is seen at most once.)
//! 3. After it returns, no further completion for the QP will ever appear; the QP is in its
//!    terminal ERROR state, posting to it fails with [`ErrorKind::InvalidState`], and destroying
//!    it is safe.
//! 4. It is correct in every QP state, with empty or full queues, when called twice or from two
//!    threads at once, and while another thread posts: a post that races the drain either is
//!    covered by clause 2 or fails synchronously with [`ErrorKind::InvalidState`].
//! 5. On a device that silently stopped working (no flush completion will ever come, and nobody
//!    said so) it still returns by the deadline, with every outstanding WR accounted for by
//!    synthesized flush completions, and the report says so ([`DrainReport::fallback`]). A device
//!    known to be *lost* (removed, or a fatal error: see [`event`](crate::event)) is different:
//!    every call on its handles, `drain` included, fails at once with
//!    [`ErrorKind::DeviceLost`]; nothing of it will ever complete, and it no longer touches any
//!    buffer, so the ULP owns the buffers of every outstanding WR again.
//! 6. The [`DrainReport`] says which strategy ran, how many WRs the device completed and how many
//!    the provider synthesized, and how long it took.
//!
//! ## When the device does not finish in time
//!
//! A provider never returns [`ErrorKind::TimedOut`] just because the device was slow. When the
//! deadline passes, or a step of its strategy fails (a marker post refused, a transition
//! rejected), it *stops the hardware QP for good* (destroys it in the device, after which the
//! device touches none of its buffers) and synthesizes flush completions for everything still
//! outstanding; the report's [`fallback`](DrainReport::fallback) says why. Synthesizing without
//! stopping the hardware first would hand the ULP buffers the device may still write.
//!
//! A drain can still fail: when the QP handle was destroyed ([`ErrorKind::Destroyed`]), when its
//! CQ overflowed so that completions were lost before they could be delivered
//! ([`ErrorKind::Overflow`]; the QP is drained all the same), when another thread's drain of the
//! same QP is still running at this caller's deadline ([`ErrorKind::TimedOut`]; that drain goes
//! on), or when the hardware QP could not be stopped (the provider's error; the QP stays
//! draining and a later drain tries again).
//!
//! # Strategies
//!
//! Devices disagree about WRs posted in ERROR (see [`Caps::POST_IN_ERROR_FLUSHED`]), so each
//! provider picks, per device, a [`DrainPlan`] that is sound for it; [`engine::run`] carries
//! it out against the provider's [`DrainTarget`]:
//!
//! | plan | steps | for |
//! |---|---|---|
//! | [`ErrorThenMarker`](DrainPlan::ErrorThenMarker) | ERROR, marker on each busy queue, wait for the markers (repeat ERROR after a receive marker where receives posted in ERROR wait for it) | InfiniBand/RoCE, irdma; rxe with the repeat |
//! | [`MarkerThenError`](DrainPlan::MarkerThenError) | send marker first, then ERROR, wait for it and for the receive queue's flush (a receive marker on a live QP could swallow an incoming SEND) | devices that ignore WRs posted in ERROR (erdma) |
//! | [`WaitForFlush`](DrainPlan::WaitForFlush) | ERROR, wait until the device's queues are empty, settle the rest from the ledger | devices whose posts in ERROR never complete (user-space siw, X722) |
//! | [`FlushMarker`](DrainPlan::FlushMarker) | ERROR, a provider-side marker per busy queue (refused at once on an empty queue) that completes when the device has flushed everything before it | devices that refuse posts in ERROR (Chelsio) |
//! | [`Synthesize`](DrainPlan::Synthesize) | stop the hardware, synthesize every completion | a device the provider knows has stopped working while its handles live on (a hung device it detected) |
//!
//! Which plan a driver needs is data: [`profiles`] is one table from driver (by its PCI
//! function's kernel driver or its vendor id, never the device name) to plan, each entry with its
//! reason and source, read by the mock's personalities and the real providers alike.
//!
//! Every plan rests on the provider's [`Ledger`]: its record of each WR it posted for the ULP,
//! tagged with a [`Token`] in place of the ULP's `wr_id`. The ledger turns device completions
//! back into the ULP's, drops marker completions and any completion that arrives after the
//! drain, repairs the meaningless opcode of flushed completions, and knows what to synthesize.
//!
//! [`ErrorKind::InvalidState`]: crate::ErrorKind::InvalidState
//! [`ErrorKind::TimedOut`]: crate::ErrorKind::TimedOut
//! [`ErrorKind::Destroyed`]: crate::ErrorKind::Destroyed
//! [`ErrorKind::Overflow`]: crate::ErrorKind::Overflow
//! [`Caps::POST_IN_ERROR_FLUSHED`]: crate::Caps::POST_IN_ERROR_FLUSHED

pub mod engine;
pub mod ledger;
pub mod profiles;

use std::fmt;
use std::time::Duration;

use crate::error::ErrorKind;

pub use engine::{DrainPlan, DrainTarget, WaitFor};
pub use ledger::{DrainPhase, DrainStart, Ledger, Token, WorkQueue};
pub use profiles::{DrainProfile, DriverKey, profile_for};

/// How a drain made sure that nothing is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DrainStrategy {
    /// The QP was already drained; nothing was done.
    AlreadyDrained,
    /// Move to ERROR, then wait until the device's queues are empty (the "flush complete"
    /// condition); what is left in the ledger is settled (unsignaled successes retired,
    /// WRs the device dropped given flush completions).
    WaitForFlush,
    /// Move to ERROR, post a marker WR on each busy queue, and wait for the markers' flush
    /// completions (the InfiniBand algorithm; repeats the ERROR transition where receives posted
    /// in ERROR need it).
    ErrorThenMarker,
    /// Post a send marker first, then move to ERROR (for devices that ignore WRs posted in
    /// ERROR); the receive queue is waited for as in `WaitForFlush`.
    MarkerThenError,
    /// Move to ERROR, then place a provider-side marker behind each busy queue's WRs (refused at
    /// once when the queue is empty); it completes when the device has flushed every WR before
    /// it.
    FlushMarker,
    /// The device is known to be dead: the provider stopped the hardware QP and synthesized every
    /// completion.
    Synthesized,
}

impl fmt::Display for DrainStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrainStrategy::AlreadyDrained => "already drained",
            DrainStrategy::WaitForFlush => "wait for flush",
            DrainStrategy::ErrorThenMarker => "error then marker",
            DrainStrategy::MarkerThenError => "marker then error",
            DrainStrategy::FlushMarker => "flush marker",
            DrainStrategy::Synthesized => "synthesized",
        })
    }
}

/// Why a drain had to stop the hardware QP and synthesize what the device did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fallback {
    /// The deadline passed before the device finished (a dead device, a lost marker).
    DeadlinePassed,
    /// A step of the strategy failed with this kind of error (a marker post refused, a
    /// transition rejected).
    StepFailed(ErrorKind),
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::DeadlinePassed => f.write_str("the deadline passed"),
            Fallback::StepFailed(kind) => write!(f, "a step failed ({kind})"),
        }
    }
}

/// What a successful drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DrainReport {
    /// The strategy that ran.
    pub strategy: DrainStrategy,
    /// WRs outstanding when the drain started that the device completed (with success or a
    /// flush error).
    pub completed_by_device: usize,
    /// WRs whose flush completion the provider synthesized.
    pub synthesized: usize,
    /// Set when the strategy could not finish and the provider stopped the hardware QP and
    /// synthesized the rest.
    pub fallback: Option<Fallback>,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl DrainReport {
    /// The report of a drain that found the QP already drained.
    pub fn already_drained(elapsed: Duration) -> DrainReport {
        DrainReport {
            strategy: DrainStrategy::AlreadyDrained,
            completed_by_device: 0,
            synthesized: 0,
            fallback: None,
            elapsed,
        }
    }

    /// WRs the drain accounted for: `completed_by_device + synthesized` (saturating, so that a
    /// report from a broken provider cannot overflow it).
    pub fn accounted(&self) -> usize {
        self.completed_by_device.saturating_add(self.synthesized)
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} completed by the device, {} synthesized in {:?}",
            self.strategy, self.completed_by_device, self.synthesized, self.elapsed
        )?;
        if let Some(why) = self.fallback {
            write!(f, " (fell back: {why})")?;
        }
        Ok(())
    }
}
