//! Budgets.

use super::*;

/// How long the naive algorithm waits for a marker before calling it lost.
pub(super) const NAIVE_WINDOW: Duration = Duration::from_millis(100);
/// The deadline every drain gets (the dead device uses all of it).
pub(super) const DRAIN_BUDGET: Duration = Duration::from_millis(500);
/// How long the CQ must stay quiet after a drain returned.
pub(super) const QUIET: Duration = Duration::from_millis(20);
/// A drain that need not wait for the deadline returns well before this.
pub(super) const PROMPT: Duration = Duration::from_millis(100);
/// Receives posted before anything else happens, from `wr_id` [`RECV_BASE`].
pub(super) const RECVS: u64 = 3;
pub(super) const RECV_BASE: u64 = 100;
pub(super) const SEND_BASE: u64 = 200;
pub(super) const MARKER_BASE: u64 = 1000;
pub(super) const RACE_BASE: u64 = 10_000;

/// How long asynchronously flushing devices take to flush.
pub(super) fn flush_delay() -> Duration {
    FabricConfig::default().flush_delay
}
