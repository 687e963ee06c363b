//! bad_input cases: every bad input is refused with a typed error, and loses nothing.
//!
//! Each case makes one bad call and checks two things:
//!
//! 1. the call fails with the right [`ErrorKind`] (or, where real hardware can only notice the
//!    problem while executing the WR, the WR completes with the right [`WcStatus`]);
//! 2. nothing is lost: the objects involved still work afterwards, the WRs of a batch in front of
//!    a refused one are posted and complete, and the refused WR and those behind it never
//!    complete. Every WR has its own `wr_id`; at the end every QP is drained and every CQ emptied,
//!    and the case checks that each `wr_id` completed at most once and no refused one at all.

use std::time::Duration;

use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Listener,
    MemoryRegion, PostError, ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr,
    RemoteAddr, SendOp, SendWr, SgList, Sge, StateModel, WcOpcode, WcStatus,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::{Ctx, Pair};
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    let mut cases = vec![
        case(
            "bad_input::too_many_sges_send",
            "A send WR with more SGEs than the QP's max_send_sge is refused with InvalidArgument; \
             the WR before it completes, it and the one after never do, and the QP keeps working.",
            Needs::NOTHING,
            too_many_sges_send::<P>,
        ),
        case(
            "bad_input::too_many_sges_recv",
            "A receive WR with more SGEs than the QP's max_recv_sge is refused with \
             InvalidArgument; the WR before it completes, it and the one after never do, and the \
             QP keeps working.",
            Needs::NOTHING,
            too_many_sges_recv::<P>,
        ),
    ];
    cases.extend(bad_sge::ROWS.iter().enumerate().map(|(row, r)| Case {
        name: r.name,
        description: r.description,
        needs: Needs::NOTHING,
        run: CaseFn::Row(bad_sge::run_row::<P>, row),
    }));
    cases.extend(remote::ROWS.iter().enumerate().map(|(row, r)| Case {
        name: r.name,
        description: r.description,
        needs: r.needs,
        run: CaseFn::Row(remote::run_row::<P>, row),
    }));
    cases.extend([
        case(
            "bad_input::atomic_without_remote_atomic_access",
            "A fetch-and-add to a region registered without remote atomic access completes with \
             a remote access error, after the one before it succeeded, and changes nothing; the \
             one behind it is flushed.",
            Needs::caps(Caps::ATOMICS),
            atomic_without_remote_atomic_access::<P>,
        ),
        case(
            "bad_input::atomic_misaligned",
            "An atomic whose remote address is not 8-byte aligned is refused with \
             InvalidArgument; the WR before it completes, it and the one after never do and \
             change nothing, and the QP keeps working.",
            Needs::caps(Caps::ATOMICS),
            atomic_misaligned::<P>,
        ),
        case(
            "bad_input::atomic_wrong_local_length",
            "An atomic whose local scatter list is not one SGE of 8 bytes (one of 4, or two of \
             4) is refused with InvalidArgument; the WR before it completes, it and the one \
             after never do and change nothing, and the QP keeps working.",
            Needs::caps(Caps::ATOMICS),
            atomic_wrong_local_length::<P>,
        ),
        case(
            "bad_input::recv_queue_overflow",
            "Posting more receives than max_recv_wr is refused with ResourceExhausted after \
             exactly max_recv_wr were posted, and those all complete.",
            Needs::NOTHING,
            recv_queue_overflow::<P>,
        ),
        case(
            "bad_input::send_queue_overflow",
            "Posting more sends than max_send_wr to a QP whose peer answers RNR is refused with \
             ResourceExhausted after exactly max_send_wr were posted, and those all complete in \
             order once the peer posts receives.",
            // Stalling the sends needs RNR flow control, which only InfiniBand has: on iWARP a
            // SEND that finds no receive posted terminates the connection.
            Needs::model(StateModel::InfiniBand),
            send_queue_overflow::<P>,
        ),
        case(
            "bad_input::post_send_before_connect",
            "Posting a send to a QP that was never connected (RESET or IDLE) is refused with \
             InvalidState, and the QP can still be connected and used.",
            Needs::NOTHING,
            post_send_before_connect::<P>,
        ),
        case(
            "bad_input::post_recv_in_reset",
            "Posting a receive to an InfiniBand QP in RESET is refused with InvalidState, and the \
             QP can still be connected and used.",
            // Only the InfiniBand initial state forbids receives (StateModel::can_post_recv): on
            // iWARP, receives posted in IDLE are legal.
            Needs::model(StateModel::InfiniBand),
            post_recv_in_reset::<P>,
        ),
        case(
            "bad_input::post_send_in_init",
            "Posting a send to an InfiniBand QP in INIT is refused with InvalidState, while a \
             receive is accepted, and the QP can still be connected and used.",
            Needs::model(StateModel::InfiniBand),
            post_send_in_init::<P>,
        ),
        case(
            "bad_input::post_after_destroy",
            "Every call on a destroyed QP but destroy fails with Destroyed, destroying it again \
             is a no-op, and its PD, CQ and listener keep working.",
            Needs::NOTHING,
            post_after_destroy::<P>,
        ),
        case(
            "bad_input::destroy_pd_with_mrs",
            "Destroying a PD that still has memory regions fails with Busy and changes nothing; \
             once they are gone it succeeds.",
            Needs::NOTHING,
            destroy_pd_with_mrs::<P>,
        ),
        case(
            "bad_input::destroy_pd_with_qps",
            "Destroying a PD that still has queue pairs fails with Busy and changes nothing; \
             once they are gone it succeeds.",
            Needs::NOTHING,
            destroy_pd_with_qps::<P>,
        ),
        case(
            "bad_input::destroy_cq_in_use",
            "Destroying a CQ that a QP uses fails with Busy, the CQ still delivers completions, \
             and once the QP is gone it can be destroyed.",
            Needs::NOTHING,
            destroy_cq_in_use::<P>,
        ),
        case(
            "bad_input::zero_depth_cq",
            "Creating a CQ of depth 0 fails with InvalidArgument, and the device still creates \
             CQs.",
            Needs::NOTHING,
            zero_depth_cq::<P>,
        ),
        case(
            "bad_input::zero_sized_qp",
            "Creating a QP with max_send_wr 0 or max_recv_wr 0 fails with InvalidArgument and \
             leaves its PD and CQ as they were.",
            Needs::NOTHING,
            zero_sized_qp::<P>,
        ),
        case(
            "bad_input::open_unknown_device",
            "Opening a device name the provider does not have fails with NotFound, and the \
             device under test still opens.",
            Needs::NOTHING,
            open_unknown_device::<P>,
        ),
        case(
            "bad_input::connect_refused",
            "Connecting to an address of the device where nobody listens fails with \
             ConnectionRefused, and the QP, its CQ and PD can then be destroyed cleanly.",
            Needs::NOTHING,
            connect_refused::<P>,
        ),
    ]);
    cases
}

fn case<P: Provider>(
    name: &'static str,
    description: &'static str,
    needs: Needs,
    run: fn(&Ctx<'_, P>) -> CaseResult,
) -> Case<P> {
    Case {
        name,
        description,
        needs,
        run: CaseFn::Plain(run),
    }
}

mod atomics;
mod bad_sge;
mod dead_handles;
mod fixtures;
mod overflow;
mod remote;
mod sge_count;
mod sizes;
mod wrong_state;

use atomics::*;
use dead_handles::*;
use fixtures::*;
use overflow::*;
use sge_count::*;
use sizes::*;
use wrong_state::*;
