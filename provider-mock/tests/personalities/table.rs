//! The table.

use super::*;

/// What becomes of a WR when the device deals with it in ERROR: one that was outstanding when the
/// QP moved to ERROR, or one posted while it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Completes with a flush error before the call that flushed it returns.
    Flushed,
    /// Completes with a flush error, but only after the device's flush delay (never at once).
    FlushedLate,
    /// The post fails synchronously with `InvalidState`; the error names this errno.
    Refused(&'static str),
    /// Accepted, and never completes.
    Never,
}

/// One value per work queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct PerQueue<T> {
    pub(super) send: T,
    pub(super) recv: T,
}

impl<T: Copy> PerQueue<T> {
    pub(super) fn get(&self, queue: WorkQueue) -> T {
        match queue {
            WorkQueue::Send => self.send,
            WorkQueue::Recv => self.recv,
        }
    }
}

/// The same value on both queues.
pub(super) const fn both<T: Copy>(v: T) -> PerQueue<T> {
    PerQueue { send: v, recv: v }
}

/// What the tests expect of one device of the default fabric.
pub(super) struct Row {
    /// The device's name on the default fabric.
    pub(super) device: &'static str,
    /// The personality the default fabric gives it.
    pub(super) personality: Personality,
    /// Receives outstanding when the QP is moved to ERROR.
    pub(super) error_flushes: Fate,
    /// The first zero-length marker posted on each queue while the QP is in ERROR.
    pub(super) first_marker: PerQueue<Fate>,
    /// Whether another move to ERROR completes a first marker that was left pending.
    pub(super) re_error_completes: PerQueue<bool>,
    /// A second marker posted on each queue, after that repeated move to ERROR.
    pub(super) second_marker: PerQueue<Fate>,
    /// The strategy a drain reports when it starts from RTS.
    pub(super) strategy: DrainStrategy,
    /// The strategy a drain reports when the QP is already in ERROR.
    pub(super) strategy_in_error: DrainStrategy,
    /// What a drain with WRs outstanding must fall back on.
    pub(super) fallback: Option<Fallback>,
    /// Whether the provider knows the device drops posts in ERROR and settles them itself.
    pub(super) drops_posts_in_error: bool,
}

/// One row per personality: the behaviour of the real device it imitates.
pub(super) const ROWS: [Row; 9] = [
    // mlx5: ERROR flushes at once, and so are WRs posted in ERROR: the Linux algorithm works.
    Row {
        device: "mock0",
        personality: Personality::Ib,
        error_flushes: Flushed,
        first_marker: both(Flushed),
        re_error_completes: both(false),
        second_marker: both(Flushed),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // rxe: a send posted in ERROR is flushed, a receive waits for the next move to ERROR.
    Row {
        device: "mockrxe0",
        personality: Personality::Rxe,
        error_flushes: FlushedLate,
        first_marker: PerQueue {
            send: Flushed,
            recv: Never,
        },
        re_error_completes: PerQueue {
            send: false,
            recv: true,
        },
        second_marker: PerQueue {
            send: Flushed,
            recv: Never,
        },
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // Kernel siw: like an HCA.
    Row {
        device: "mockiw0",
        personality: Personality::IwarpKernel,
        error_flushes: Flushed,
        first_marker: both(Flushed),
        re_error_completes: both(false),
        second_marker: both(Flushed),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // User-space siw: posts in ERROR are accepted and never complete, whatever one does.
    Row {
        device: "mocksiw0",
        personality: Personality::Siw,
        error_flushes: Flushed,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(Never),
        strategy: WaitForFlush,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: true,
    },
    // Chelsio: posts in ERROR fail with EINVAL.
    Row {
        device: "mockcxgb0",
        personality: Personality::Cxgb4,
        error_flushes: Flushed,
        first_marker: both(Refused("EINVAL")),
        re_error_completes: both(false),
        second_marker: both(Refused("EINVAL")),
        strategy: FlushMarker,
        strategy_in_error: FlushMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // erdma: posts in ERROR fail with EIO; the marker must go in before ERROR.
    Row {
        device: "mockerdma0",
        personality: Personality::Erdma,
        error_flushes: Flushed,
        first_marker: both(Refused("EIO")),
        re_error_completes: both(false),
        second_marker: both(Refused("EIO")),
        strategy: MarkerThenError,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: false,
    },
    // irdma: everything is flushed, by a worker, later.
    Row {
        device: "mockirdma0",
        personality: Personality::Irdma,
        error_flushes: FlushedLate,
        first_marker: both(FlushedLate),
        re_error_completes: both(false),
        second_marker: both(FlushedLate),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // X722: the first post in ERROR on each queue is lost; later ones are flushed late.
    Row {
        device: "mocklost0",
        personality: Personality::LostMarker,
        error_flushes: FlushedLate,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(FlushedLate),
        strategy: WaitForFlush,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: false,
    },
    // A device in fatal error nobody reported: nothing ever completes.
    Row {
        device: "mockdead0",
        personality: Personality::Dead,
        error_flushes: Never,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(Never),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: Some(Fallback::DeadlinePassed),
        drops_posts_in_error: false,
    },
];
