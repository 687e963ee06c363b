//! How a [`KitQp`] disconnects: where the device needs it (iWARP), a wait for a quiet send
//! queue judged from completions alone, as the drain judges; then the provider's close, orderly
//! or abrupt.

use std::time::{Duration, Instant};

use super::lock;
use super::qp::KitQp;
use super::raw::RawQp;
use crate::caps::Caps;
use crate::drain::{DrainPhase, WorkQueue};
use crate::error::{ErrorKind, Result};
use crate::qp::DisconnectReport;
use crate::state::QpState;

/// The longest the wait for quiet sends sleeps in the device's wait before it looks again.
const WAIT_SLICE: Duration = Duration::from_millis(1);

/// Whether the send queue is quiet, by the ledger: nothing signaled awaits a completion, and no
/// unsignaled send's fate is unknown.
enum Sends {
    Quiet,
    /// Only unsignaled sends are outstanding, with nothing after them to say whether they ran:
    /// no completion will tell, so waiting cannot make the close orderly.
    Unsure,
    /// Signaled sends await their completions.
    Awaited,
}

impl<Q: RawQp> KitQp<Q> {
    /// [`QueuePair::disconnect`](crate::QueuePair::disconnect).
    pub(crate) fn disconnect_by(&self, deadline: Instant) -> Result<DisconnectReport> {
        let start = Instant::now();
        let _alive = self.connection_guard()?;
        let mut orderly = true;
        if self.life.caps().contains(Caps::CLOSE_NEEDS_QUIET_SENDS) {
            orderly = self.wait_for_quiet_sends(deadline)?;
        }
        // Under the QP's lock, which every post takes across the device's post: no send can
        // reach the device between this look at the send queue and the close. One posted since
        // the wait found the queue quiet makes the close abrupt: never CLOSING with it on the
        // device.
        let book = lock(&self.book);
        let sends_outstanding = book.ledger.outstanding(WorkQueue::Send);
        if orderly
            && self.life.caps().contains(Caps::CLOSE_NEEDS_QUIET_SENDS)
            && book.ledger.phase() == DrainPhase::Open
            && (book.ledger.awaiting(WorkQueue::Send) > 0 || book.ledger.has_unsure_sends())
        {
            orderly = false;
        }
        let state = match self.raw.disconnect(orderly) {
            Err(e) if orderly && e.kind() == ErrorKind::InvalidState && sends_outstanding > 0 => {
                // The device still holds a send the ledger could not see complete (an
                // unsignaled one that ran): no CLOSING then, ERROR.
                orderly = false;
                self.raw.disconnect(false)?
            }
            other => other?,
        };
        let mut book = book;
        if state == QpState::Error {
            book.in_error = true;
            // Where an orderly close is CLOSING, a QP left in ERROR (drained before, or its
            // peer gone first) was not closed in order.
            if self.life.caps().contains(Caps::CLOSE_NEEDS_QUIET_SENDS) {
                orderly = false;
            }
        }
        drop(book);
        Ok(DisconnectReport {
            orderly,
            sends_outstanding,
            elapsed: start.elapsed(),
        })
    }

    /// Waits until the send queue is quiet or `deadline` passes; true if it is quiet.
    fn wait_for_quiet_sends(&self, deadline: Instant) -> Result<bool> {
        let cq = &self.send_cq;
        loop {
            self.check()?;
            cq.pump()?;
            let sends = {
                let book = lock(&self.book);
                if book.ledger.phase() != DrainPhase::Open {
                    // Drained or draining: nothing of the ULP's is on the device to wait for.
                    return Ok(true);
                }
                if book.ledger.awaiting(WorkQueue::Send) > 0 {
                    Sends::Awaited
                } else if book.ledger.has_unsure_sends() {
                    Sends::Unsure
                } else {
                    Sends::Quiet
                }
            };
            match sends {
                Sends::Quiet => return Ok(true),
                Sends::Unsure => return Ok(false),
                Sends::Awaited => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // As a drain waits: in short slices.
            cq.nap(now, deadline.min(now + WAIT_SLICE))?;
            self.life.check()?;
        }
    }
}
