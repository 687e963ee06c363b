//! [`CompletionQueue`]: where completions of posted WRs arrive.

use std::time::Instant;

use crate::error::Result;
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
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize>;

    /// Destroys the CQ; [`ErrorKind::Busy`](crate::ErrorKind::Busy) while a QP uses it.
    fn destroy(&self) -> Result<()>;
}
