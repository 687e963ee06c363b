//! The drain contract (`anyverbs::drain`), clause by clause: exactly-once accounting of every
//! `wr_id` (clause 2), a terminal QP afterwards (3), every QP state and every race (4), the
//! deadline (1, 5) and the report (6) — plus the naive marker drain of Linux's `ib_drain_qp`,
//! which completes only where posts in ERROR are flushed.
//!
//! Every case counts `wr_id`s, not just return values: [`Ctx::drain_and_collect`] drains and
//! collects what the CQs hold (and checks the deadline, the report's time and that nothing
//! completes afterwards), [`Expected`] says which ids must appear exactly once and which may
//! appear at most once, and `expect_terminal` checks what a drained QP must look like.
//!
//! The WRs whose count a report must match are the ones certainly outstanding when the drain
//! starts: receives nobody sends to, and, where the transport retries on RNR
//! ([`Caps::RNR_RETRY`]), sends to a peer without receives under an infinite RNR retry count.
//! Without RNR retries (iWARP) such a SEND would terminate the connection, so there the cases
//! use receives only.

use std::ops::Range;
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Caps, Completion, CompletionQueue, ConnParams, Device, DrainReport, DrainStrategy, ErrorKind,
    MemoryRegion, ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr, SendFlags,
    SendOp, SendWr, Sge, StateModel,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::{Ctx, Drained, Expected, FLUSHED, Pair, SUCCEEDED, SUCCEEDED_OR_FLUSHED};
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "drain::accounts_for_every_wr",
            description: "After drain returns Ok, every WR outstanding in RTS (receives, and \
                          signaled and unsignaled sends stalled behind an RNR) has exactly one \
                          flush completion in the CQ, the report counts them, and nothing \
                          completes later.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(accounts_for_every_wr::<P>),
        },
        Case {
            name: "drain::returns_by_short_deadline",
            description: "Given a 300 ms deadline with WRs outstanding, drain returns by the \
                          deadline and still accounts for every WR exactly once.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(returns_by_short_deadline::<P>),
        },
        Case {
            name: "drain::qp_is_terminal_after_drain",
            description: "A drained QP stays in ERROR: every modify to another state fails with \
                          InvalidState, posts fail with InvalidState accepting nothing, and it \
                          can be destroyed.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(qp_is_terminal_after_drain::<P>),
        },
        Case {
            name: "drain::second_drain_is_a_no_op",
            description: "Draining a drained QP returns AlreadyDrained at once, accounting for \
                          nothing and completing nothing — even with its deadline already past.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(second_drain_is_a_no_op::<P>),
        },
        Case {
            name: "drain::from_initial_state",
            description: "Draining a QP in its initial state (RESET or IDLE), never connected \
                          and with nothing posted, returns Ok accounting for nothing and leaves \
                          it in ERROR.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(from_initial_state::<P>),
        },
        Case {
            name: "drain::from_init_with_receives",
            description: "Draining an InfiniBand QP in INIT with receives posted flushes each \
                          receive exactly once.",
            needs: Needs::model(StateModel::InfiniBand),
            run: CaseFn::Row(unconnected_row::<P>, 0),
        },
        Case {
            name: "drain::from_idle_with_receives",
            description: "Draining an iWARP QP in IDLE with receives posted flushes each receive \
                          exactly once.",
            needs: Needs::model(StateModel::Iwarp),
            run: CaseFn::Row(unconnected_row::<P>, 1),
        },
        Case {
            name: "drain::from_rts_empty",
            description: "Draining a connected QP with empty queues returns Ok accounting for \
                          nothing, and nothing completes.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(from_rts_empty::<P>),
        },
        Case {
            name: "drain::from_rts_full_queues",
            description: "Draining a connected QP whose receive queue (and, where sends stall on \
                          RNR, send queue) is full accounts for every WR exactly once.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(from_rts_full_queues::<P>),
        },
        Case {
            name: "drain::from_sqd",
            description: "Draining a QP in SQD — sends stalled on RNR before the transition, \
                          sends posted in SQD, receives — accounts for every WR exactly once.",
            needs: Needs::caps(Caps::SQ_DRAIN_STATE).and_model(StateModel::InfiniBand),
            run: CaseFn::Plain(from_sqd::<P>),
        },
        Case {
            name: "drain::from_closing",
            description: "An iWARP QP moved to CLOSING (empty send queue, receives posted) \
                          flushes its receives and disconnects; draining it then returns Ok and \
                          each receive is seen exactly once overall.",
            needs: Needs::model(StateModel::Iwarp),
            run: CaseFn::Plain(from_closing::<P>),
        },
        Case {
            name: "drain::from_error",
            description: "Draining a QP the ULP already moved to ERROR (and polled once) \
                          accounts for every WR exactly once overall.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(from_error::<P>),
        },
        Case {
            name: "drain::racing_drains",
            description: "Two threads drain one QP at once: both return Ok, their reports \
                          agree on the total, and every WR is seen exactly once.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(racing_drains::<P>),
        },
        Case {
            name: "drain::while_another_thread_posts",
            description: "While one thread posts receives one at a time, another drains: every \
                          post that returned Ok is seen exactly once, the first refused post \
                          fails with InvalidState accepting nothing, and no post succeeds after \
                          the drain returned.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(while_another_thread_posts::<P>),
        },
        Case {
            name: "drain::while_the_ulp_polls",
            description: "While another thread keeps polling the QP's CQ, a drain returns                           without waiting for what that thread took (it never falls back with                           nothing to synthesize), and every receive is seen exactly once.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(while_the_ulp_polls::<P>),
        },
        Case {
            name: "drain::shared_cq_other_qp_untouched",
            description: "Draining one of two QPs that share a CQ flushes only its own WRs: the \
                          other QP's receives stay posted and later complete normally when its \
                          peer sends; nothing is seen twice.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(shared_cq_other_qp_untouched::<P>),
        },
        Case {
            name: "drain::unsignaled_successes_not_repeated",
            description: "Unsignaled RDMA WRITEs that ran before the drain are seen at most \
                          once afterwards, and never as a success.",
            needs: Needs::caps(Caps::RDMA_WRITE),
            run: CaseFn::Plain(unsignaled_successes_not_repeated::<P>),
        },
        Case {
            name: "drain::naive_marker_drain_completes",
            description: "Where posts in ERROR are flushed, the naive marker drain of Linux's \
                          ib_drain_qp (ERROR, a zero-length send and a receive marker, wait for \
                          both) completes in 200 ms, every WR before the markers seen once.",
            needs: Needs::caps(Caps::POST_IN_ERROR_FLUSHED.union(Caps::ZERO_LENGTH)),
            run: CaseFn::Plain(naive_marker_drain_completes::<P>),
        },
        Case {
            name: "drain::naive_marker_drain_hangs_where_posts_in_error_are_not_flushed",
            description: "Where posts in ERROR are not flushed, the naive marker drain of Linux's \
                          ib_drain_qp does not complete — a marker is refused or never completes, \
                          the hang ib_drain_qp hits on such devices — yet qp.drain on the same QP \
                          returns Ok and every WR, and every marker the device accepted, is seen \
                          exactly once.",
            needs: Needs::caps(Caps::ZERO_LENGTH).and_lacks(Caps::POST_IN_ERROR_FLUSHED),
            run: CaseFn::Plain(naive_marker_drain_hangs::<P>),
        },
    ]
}

mod clauses;
mod every_state;
mod fixtures;
mod naive_marker;
mod with_a_poller;

use clauses::*;
use every_state::*;
use fixtures::*;
use naive_marker::*;
use with_a_poller::*;
