//! The drain contract, and what a drain reports.
//!
//! `QueuePair::drain(deadline)` is how a ULP learns that a QP is quiet and safe to destroy:
//!
//! 1. It returns `Result<DrainReport, Error>` and never blocks past the deadline.
//! 2. After it returns `Ok`, every WR posted before the call has produced exactly one completion
//!    (success or flush error) in its CQ, synthesized by the provider where the device could not
//!    produce it; the ULP's completion handling sees every `wr_id` exactly once. (A signaled-off
//!    send that succeeded produces no completion, as always in verbs.)
//! 3. After it returns, no further completion for the QP will ever appear; the QP is in its
//!    terminal ERROR state, posting to it fails with [`ErrorKind::InvalidState`], and destroying
//!    it is safe.
//! 4. It is correct in every QP state, with empty or full queues, when called twice or from two
//!    threads at once, and while another thread posts (a racing post is either covered by 2 or
//!    fails synchronously).
//! 5. On a dead device it still returns within the deadline, with every outstanding WR accounted
//!    for by synthesized flush completions, and the report says so.
//!
//! [`ErrorKind::InvalidState`]: crate::ErrorKind::InvalidState

use std::fmt;
use std::time::Duration;

/// How a drain made sure that nothing is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DrainStrategy {
    /// The QP was already drained; nothing was done.
    AlreadyDrained,
    /// Move to ERROR, then wait until the provider's own count of outstanding WRs on both queues
    /// reaches zero (every WR flushed).
    WaitForFlush,
    /// Move to ERROR, post a marker WR on each queue, and wait for the markers' flush
    /// completions (the InfiniBand algorithm; repeats the ERROR transition where receives posted
    /// in ERROR need it).
    ErrorThenMarker,
    /// Post the marker first, then move to ERROR (for devices that ignore WRs posted in ERROR).
    MarkerThenError,
    /// The device could not flush (dead, or its flushes never arrive); the provider synthesized
    /// flush completions from its record of outstanding WRs.
    Synthesized,
}

impl fmt::Display for DrainStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrainStrategy::AlreadyDrained => "already drained",
            DrainStrategy::WaitForFlush => "wait for flush",
            DrainStrategy::ErrorThenMarker => "error then marker",
            DrainStrategy::MarkerThenError => "marker then error",
            DrainStrategy::Synthesized => "synthesized",
        })
    }
}

/// What a successful drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DrainReport {
    /// The strategy that ran.
    pub strategy: DrainStrategy,
    /// WRs the device flushed itself.
    pub flushed_by_device: usize,
    /// WRs whose flush completion the provider had to synthesize.
    pub synthesized: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}
