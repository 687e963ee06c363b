//! The provider kit: the provider half every provider needs, written once.
//!
//! A provider supplies its device's primitives — post raw WRs, poll raw completions, modify the
//! hardware QP, arm and read its notification source — as a [`RawQp`] and a [`RawCq`]; the kit
//! supplies everything above them as [`KitQp`] and [`KitCq`], which implement the ULP's
//! [`QueuePair`](crate::QueuePair) and [`CompletionQueue`](crate::CompletionQueue):
//!
//! - **Admission and queue depths.** Every WR enters the QP's
//!   [`Ledger`] and is posted under a [token](crate::drain::Token) in
//!   its `wr_id`; a WR the device refuses is withdrawn, so `PostError::accepted` stays exact.
//!   The ULP gets the depths it asked for; the device's queues have one more slot each, for the
//!   drain's marker ([`device_init`]).
//! - **Resolution at poll time.** A raw completion is resolved when the CQ is polled, as on
//!   hardware: routed by QP number to its QP's ledger and matched by its token (generation,
//!   queue, sequence), never by its position in the CQ. Markers are swallowed; late completions
//!   of destroyed QPs — even under a reused QP number — are dropped.
//! - **Drain.** [`QueuePair::drain`](crate::QueuePair::drain) runs the device's
//!   [`DrainProfile`](crate::drain::DrainProfile) through
//!   [`engine::run`](crate::drain::engine::run). A drain polls its QP's CQs itself and holds
//!   what it polled for the ULP, in order; it decides that a queue is done from completions
//!   alone, never from the device's internals.
//! - **State and lifetime.** The kit knows when a QP is in ERROR (its own transitions, the error
//!   completions it resolves), refuses everything but ERROR after a drain, forgets the queues
//!   on RESET, and fails every call on a destroyed handle with `Destroyed` and on a lost device
//!   with `DeviceLost` ([`DeviceLife`]).
//!
//! The in-process mock (`anyverbs-provider-mock`) is a device simulator behind this kit, so the
//! conformance suite judges, on every mock personality, the provider half that the real
//! providers run.

mod cq;
mod drain;
mod life;
mod qp;
pub mod raw;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::drain::Ledger;

pub use cq::KitCq;
pub use life::DeviceLife;
pub use qp::{KitQp, device_init};
pub use raw::{RawCq, RawQp};

/// What the kit knows about one QP, shared by the QP and the routers of its CQs.
pub(crate) struct QpBook {
    pub(crate) ledger: Ledger,
    /// The QP is in ERROR as far as the kit knows: WRs posted now are doomed.
    pub(crate) in_error: bool,
    /// Set while a RESET moves aside what the device completed before it: the
    /// [`mark`](Ledger::mark) taken at the RESET. Error completions of WRs posted before it
    /// are stale: they do not put the reset QP in ERROR.
    pub(crate) resetting: Option<[u64; 2]>,
    /// Callers waiting for another caller's drain of the QP to end.
    pub(crate) drain_waiters: usize,
}

pub(crate) type SharedBook = Arc<Mutex<QpBook>>;

/// Takes a lock; a panic while holding it (a bug) does not make every later call panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
