//! The QP state machine: initial state, connection, legal and illegal transitions, ERROR.

use std::time::Duration;

use anyverbs::cm::ready_for_receives;
use anyverbs::{
    Caps, Completion, ConnParams, Device, ErrorKind, Listener, MemoryRegion, ProtectionDomain,
    Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, StateModel, WcStatus,
};

use crate::case::{Case, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "state::initial_state",
            description: "A new QP is in the initial state of its model (RESET or IDLE).",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(initial_state::<P>),
        },
        Case {
            name: "state::connect_reaches_rts",
            description: "Both ends of a connection are ready to send once it is established.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(connect_reaches_rts::<P>),
        },
        Case {
            name: "state::receives_before_connect",
            description: "Fresh QPs made ready for receives (cm::ready_for_receives: INIT on \
                          InfiniBand, IDLE as it is on iWARP) take receives before connect and \
                          accept, and the receives take the peer's first SENDs — the passive \
                          side's sent before the active side has seen the connection up.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(receives_before_connect::<P>),
        },
        Case {
            name: "state::illegal_transitions_rejected",
            description: "Every transition the state model forbids to the ULP fails with \
                          InvalidState and leaves the state unchanged, from the initial state and \
                          from RTS.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(illegal_transitions_rejected::<P>),
        },
        Case {
            name: "state::infiniband_reset_to_init",
            description: "An InfiniBand QP moves RESET→INIT→INIT by modify, and back to RESET.",
            needs: Needs::model(StateModel::InfiniBand),
            run: CaseFn::Plain(infiniband_reset_to_init::<P>),
        },
        Case {
            name: "state::error_flushes_outstanding",
            description: "Moving a QP to ERROR completes every posted receive with a flush error, \
                          in order, exactly once.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(error_flushes_outstanding::<P>),
        },
        Case {
            name: "state::post_in_error_is_flushed",
            description: "On a device that flushes posts in ERROR, a send and a receive posted \
                          in ERROR each complete with a flush error.",
            needs: Needs::caps(Caps::POST_IN_ERROR_FLUSHED),
            run: CaseFn::Plain(post_in_error_is_flushed::<P>),
        },
        Case {
            name: "state::sqd_pauses_the_send_queue",
            description: "In SQD a posted send does not execute; back in RTS it completes.",
            needs: Needs::caps(Caps::SQ_DRAIN_STATE).and_model(StateModel::InfiniBand),
            run: CaseFn::Plain(sqd_pauses_the_send_queue::<P>),
        },
        Case {
            name: "state::iwarp_close_with_empty_send_queue",
            description: "An iWARP QP with an empty send queue moves RTS→CLOSING and flushes its \
                          receives.",
            needs: Needs::model(StateModel::Iwarp),
            run: CaseFn::Plain(iwarp_close_with_empty_send_queue::<P>),
        },
    ]
}

fn initial_state<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let qp = ctx.lone_qp(8)?.qp;
    ensure_eq!(
        qp.state()?,
        ctx.state_model().initial(),
        "state of a new QP"
    );
    Ok(())
}

fn connect_reaches_rts<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    ensure_eq!(pair.a.state()?, QpState::ReadyToSend, "active side");
    ensure_eq!(pair.b.state()?, QpState::ReadyToSend, "passive side");
    ensure_eq!(
        pair.connection.peer_qp_num,
        pair.b.qp_num(),
        "peer QP number the active side learned"
    );
    Ok(())
}

fn receives_before_connect<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let (cq_a, cq_b) = (device.create_cq(16)?, device.create_cq(16)?);
    let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default())?;
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default())?;
    let mr = ctx.mr_filled(&pd, 256, 0)?;
    mr.write(128, &[0xa1; 64])?;
    mr.write(192, &[0xb2; 64])?;
    let model = ctx.state_model();
    for qp in [&a, &b] {
        ready_for_receives(qp, model)?;
        let state = qp.state()?;
        ensure!(
            model.can_post_recv(state),
            "after ready_for_receives QP {} is in {state}, where the {model:?} model refuses \
             receives",
            qp.qp_num()
        );
    }
    a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])])?;
    b.post_recv(&[RecvWr::new(2, &[mr.sge(64, 64)])])?;

    let listener = device.listen(addr)?;
    a.connect(listener.local_addr(), &ConnParams::default())?;
    let request = listener.next_request(ctx.deadline())?;
    listener.accept(&request, &b, &ConnParams::default())?;
    // The passive side may send as soon as it has accepted.
    b.post_send(&[SendWr::send(3, &[mr.sge(128, 64)])])?;
    a.wait_connected(ctx.deadline())?;
    a.post_send(&[SendWr::send(4, &[mr.sge(192, 64)])])?;
    let mut at_a = ctx.completions(&cq_a, 2)?;
    let mut at_b = ctx.completions(&cq_b, 2)?;
    at_a.sort_by_key(|c| c.wr_id);
    at_b.sort_by_key(|c| c.wr_id);
    ctx.expect_status(&at_a[0], 1, WcStatus::Success)?;
    ctx.expect_status(&at_a[1], 4, WcStatus::Success)?;
    ctx.expect_status(&at_b[0], 2, WcStatus::Success)?;
    ctx.expect_status(&at_b[1], 3, WcStatus::Success)?;
    let got = ctx.contents(&mr)?;
    ensure_eq!(
        &got[..64],
        &[0xa1; 64][..],
        "bytes the active side received"
    );
    ensure_eq!(
        &got[64..128],
        &[0xb2; 64][..],
        "bytes the passive side received"
    );
    a.drain(ctx.drain_deadline())?;
    b.drain(ctx.drain_deadline())?;
    Ok(())
}

fn check_illegal_from<Q: QueuePair>(model: StateModel, qp: &Q) -> CaseResult {
    let from = qp.state()?;
    for &to in model.states() {
        if model.allows(from, to, anyverbs::Cause::Modify) {
            continue;
        }
        match qp.modify(to) {
            Ok(()) => {
                return Err(crate::CaseError::Failed(format!(
                    "modify {from}→{to} succeeded; the {model:?} model forbids it"
                )));
            }
            Err(e) => ensure_eq!(e.kind(), ErrorKind::InvalidState, "modify {from}→{to}"),
        }
        ensure_eq!(qp.state()?, from, "state after the refused {from}→{to}");
    }
    Ok(())
}

fn illegal_transitions_rejected<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let model = ctx.state_model();
    let fresh = ctx.lone_qp(8)?;
    check_illegal_from(model, &fresh.qp)?;
    let pair = ctx.pair()?;
    check_illegal_from(model, &pair.a)?;
    Ok(())
}

fn infiniband_reset_to_init<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let qp = ctx.lone_qp(8)?.qp;
    qp.modify(QpState::Init)?;
    ensure_eq!(qp.state()?, QpState::Init, "after RESET→INIT");
    qp.modify(QpState::Init)?;
    ensure_eq!(qp.state()?, QpState::Init, "after INIT→INIT");
    qp.modify(QpState::Reset)?;
    ensure_eq!(qp.state()?, QpState::Reset, "after INIT→RESET");
    Ok(())
}

fn error_flushes_outstanding<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 4096, 0)?;
    let recvs: Vec<RecvWr> = (0..5)
        .map(|i| RecvWr::single(100 + i, mr.sge(i as usize * 64, 64)))
        .collect();
    pair.b.post_recv(&recvs)?;
    pair.b.modify(QpState::Error)?;
    ensure_eq!(
        pair.b.state()?,
        QpState::Error,
        "state after modify to ERROR"
    );
    let got = ctx.completions(&pair.cq_b, 5)?;
    for (i, c) in got.iter().enumerate() {
        ctx.expect_status(c, 100 + i as u64, WcStatus::WrFlushError)?;
    }
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn post_in_error_is_flushed<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 1)?;
    pair.a.modify(QpState::Error)?;
    pair.a.post_send(&[SendWr::send(1, &[mr.sge(0, 64)])])?;
    pair.a.post_recv(&[RecvWr::new(2, &[mr.sge(64, 64)])])?;
    let mut got: Vec<Completion> = ctx.completions(&pair.cq_a, 2)?;
    got.sort_by_key(|c| c.wr_id);
    ctx.expect_status(&got[0], 1, WcStatus::WrFlushError)?;
    ctx.expect_status(&got[1], 2, WcStatus::WrFlushError)?;
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))
}

fn sqd_pauses_the_send_queue<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 3)?;
    pair.b.post_recv(&[RecvWr::new(10, &[mr.sge(128, 64)])])?;
    pair.a.modify(QpState::SendQueueDrained)?;
    pair.a.post_send(&[SendWr::send(11, &[mr.sge(0, 64)])])?;
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(1))?;
    pair.a.modify(QpState::ReadyToSend)?;
    let c = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&c, 11, WcStatus::Success)?;
    let c = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&c, 10, WcStatus::Success)
}

fn iwarp_close_with_empty_send_queue<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 0)?;
    pair.a.post_recv(&[RecvWr::new(20, &[mr.sge(0, 64)])])?;
    pair.a.modify(QpState::Closing)?;
    let state = pair.a.state()?;
    ensure!(
        matches!(state, QpState::Closing | QpState::Idle | QpState::Error),
        "state after RTS→CLOSING is {state}"
    );
    let c = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&c, 20, WcStatus::WrFlushError)
}
