//! Clause 4: twice, every state, races.

use super::*;

pub(super) fn second_drain_is_a_no_op<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let busy = Busy::new(ctx, 64, 4, 2, false)?;
    busy.drain_all_flushed(ctx, ctx.drain_deadline())?;
    let pair = &busy.pair;
    // A deadline in the past: there is nothing to wait for, so it does not matter.
    expect_already_drained(&pair.a, Instant::now())?;
    let again = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    ensure_eq!(
        again.report.strategy,
        DrainStrategy::AlreadyDrained,
        "strategy of a third drain"
    );
    ensure!(
        again.completions.is_empty(),
        "completions after draining a drained QP: {:?}",
        again.completions
    );
    busy.expect_terminal(ctx)
}

pub(super) fn from_initial_state<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let lone = ctx.lone_qp(8)?;
    ensure_eq!(
        lone.qp.state()?,
        ctx.state_model().initial(),
        "state of a new QP"
    );
    let mr = ctx.mr_filled(&lone.pd, SLOTS_LEN, 0)?;
    let d = ctx.drain_and_collect(&lone.qp, &[&lone.cq])?;
    expect_first_report(&d.report, Outstanding::Exactly(0))?;
    ctx.expect_each_once(&d.completions, &Expected::new())?;
    expect_terminal(ctx, &lone.qp, &[&lone.cq], slot(&mr, 0))
}

/// Posts receives on an unconnected QP in `state` (INIT or IDLE) and drains it.
fn unconnected_with_receives<P: Provider>(ctx: &Ctx<'_, P>, state: QpState) -> CaseResult {
    let lone = ctx.lone_qp(64)?;
    if lone.qp.state()? != state {
        lone.qp.modify(state)?;
    }
    ensure_eq!(lone.qp.state()?, state, "state before posting");
    let mr = ctx.mr_filled(&lone.pd, SLOTS_LEN, 0)?;
    post_recvs(&lone.qp, &mr, RECV..RECV + 6)?;
    let d = ctx.drain_and_collect(&lone.qp, &[&lone.cq])?;
    expect_first_report(&d.report, Outstanding::Exactly(6))?;
    let expected = Expected::new()
        .on_qp(lone.qp.qp_num())
        .must(RECV..RECV + 6, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &lone.qp, &[&lone.cq], slot(&mr, 0))
}

/// The unconnected states the `from_*_with_receives` cases drain in, by row: the initial
/// state that takes receives on each state model.
pub(super) const UNCONNECTED: [QpState; 2] = [QpState::Init, QpState::Idle];

/// Row `row` of [`UNCONNECTED`]: [`unconnected_with_receives`] in that state.
pub(super) fn unconnected_row<P: Provider>(ctx: &Ctx<'_, P>, row: usize) -> CaseResult {
    unconnected_with_receives(ctx, UNCONNECTED[row])
}

pub(super) fn from_rts_empty<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    ensure_eq!(
        pair.a.state()?,
        QpState::ReadyToSend,
        "state before the drain"
    );
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Exactly(0))?;
    ctx.expect_each_once(&d.completions, &Expected::new())?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn from_rts_full_queues<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const DEPTH: u32 = 16;
    let init = QpInit {
        max_send_wr: DEPTH,
        max_recv_wr: DEPTH,
        ..QpInit::default()
    };
    let pair = ctx.pair_with(&init, &stalling_params(), 4 * DEPTH)?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    let depth = u64::from(DEPTH);
    post_recvs(&pair.a, &mr, RECV..RECV + depth)?;
    let sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + depth, false)?;
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(
        &d.report,
        Outstanding::Exactly(DEPTH as usize + sends.len()),
    )?;
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + depth, FLUSHED)
        .must(sends, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn from_sqd<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair_with(&QpInit::default(), &stalling_params(), 64)?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &mr, RECV..RECV + 4)?;
    // In flight (stalled on RNR) when the send queue is told to drain ...
    let mut sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + 2, false)?;
    pair.a.modify(QpState::SendQueueDrained)?;
    ensure_eq!(
        pair.a.state()?,
        QpState::SendQueueDrained,
        "state after modify to SQD"
    );
    // ... and posted in SQD, which holds them back (and the peer has no receive for them).
    sends.extend(post_stalled_sends(
        ctx,
        &pair.a,
        &mr,
        SEND + 100..SEND + 102,
        false,
    )?);
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Exactly(4 + sends.len()))?;
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 4, FLUSHED)
        .must(sends, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn from_closing<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &mr, RECV..RECV + 4)?;
    pair.a.modify(QpState::Closing)?;
    let state = pair.a.state()?;
    ensure!(
        matches!(state, QpState::Closing | QpState::Idle | QpState::Error),
        "state after RTS→CLOSING is {state}"
    );
    // The flushes of the move to CLOSING may be in the CQ already, or still on their way: take
    // what is there, and the drain accounts for the rest.
    let mut seen = ctx.poll_all(&pair.cq_a)?;
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Between(0, 4))?;
    seen.extend(&d.completions);
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 4, FLUSHED);
    ctx.expect_each_once(&seen, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn from_error<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair_with(&QpInit::default(), &stalling_params(), 64)?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &mr, RECV..RECV + 6)?;
    let sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + 3, false)?;
    let n = 6 + sends.len();
    pair.a.modify(QpState::Error)?;
    // The ULP polls once (taking whatever flushes are there already), then drains.
    let mut seen = ctx.poll_all(&pair.cq_a)?;
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Between(0, n))?;
    seen.extend(&d.completions);
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 6, FLUSHED)
        .must(sends, FLUSHED);
    ctx.expect_each_once(&seen, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn racing_drains<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair_with(&QpInit::default(), &stalling_params(), 256)?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &mr, RECV..RECV + 8)?;
    let sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + 4, false)?;
    let n = 8 + sends.len();
    // The same deadline for both: whichever does the work returns by it, and the other waits
    // for that one.
    let deadline = ctx.drain_deadline();
    let start = Barrier::new(2);
    let results: Vec<(anyverbs::Result<DrainReport>, Instant)> = thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let r = pair.a.drain(deadline);
                    (r, Instant::now())
                })
            })
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("a draining thread panicked"))
            .collect()
    });
    let mut reports = Vec::new();
    for (r, returned) in &results {
        ensure!(
            *returned <= deadline + crate::ctx::DRAIN_SLACK,
            "a racing drain returned {:?} after its deadline",
            *returned - deadline
        );
        match r {
            Ok(report) => reports.push(*report),
            // With the same deadline, the drain doing the work finishes by it (even when it has
            // to fall back), so the waiting one sees it finish rather than timing out.
            Err(e) => return Err(CaseError::Failed(format!("a racing drain failed: {e}"))),
        }
    }
    let worked: Vec<&DrainReport> = reports
        .iter()
        .filter(|r| r.strategy != DrainStrategy::AlreadyDrained)
        .collect();
    ensure!(
        !worked.is_empty(),
        "neither racing drain did the work: {reports:?}"
    );
    for r in &reports {
        if r.strategy == DrainStrategy::AlreadyDrained {
            ensure_eq!(
                (r.accounted(), r.fallback),
                (0, None),
                "the racing drain that found the QP drained (accounted, fallback)"
            );
        } else {
            expect_first_report(r, Outstanding::Between(0, n))?;
        }
    }
    // One did the work, or both took part in it (each reporting all of it, or sharing it).
    let counts: Vec<usize> = worked.iter().map(|r| r.accounted()).collect();
    ensure!(
        counts.iter().all(|&c| c == n) || counts.iter().sum::<usize>() == n,
        "racing drains account for {counts:?} WRs; {n} were outstanding"
    );
    if n > 0 && worked.iter().any(|r| r.fallback.is_some()) {
        ensure!(
            worked.iter().any(|r| r.synthesized > 0),
            "a racing drain fell back with {n} WRs outstanding, but none was synthesized: \
             {reports:?}"
        );
    }
    // A third drain finds it drained; collect everything.
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    ensure_eq!(
        d.report.strategy,
        DrainStrategy::AlreadyDrained,
        "strategy of a drain after the race"
    );
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 8, FLUSHED)
        .must(sends, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

pub(super) fn while_another_thread_posts<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    // Deep enough that the poster never fills the receive queue (nothing completes until the
    // drain) and the CQ never overflows.
    let limits = ctx.info().limits;
    let depth = limits.max_qp_wr.min(2048);
    let max_posts = u64::from(depth.min(2000));
    let init = QpInit {
        max_recv_wr: depth,
        ..QpInit::default()
    };
    let pair = ctx.pair_with(
        &init,
        &ConnParams::default(),
        (depth + 64).min(limits.max_cqe),
    )?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    let posted = AtomicUsize::new(0);
    let give_up = ctx.deadline();
    let (posts, drain) = thread::scope(|s| {
        let poster = s.spawn(|| {
            let mut posts = Posts::default();
            for id in RECV..RECV + max_posts {
                let began = Instant::now();
                match pair.a.post_recv(&[RecvWr::new(id, &[slot(&mr, id)])]) {
                    Ok(()) => posts.accepted.push((id, began)),
                    Err(e) => {
                        posts.refused = Some((id, e.kind(), e.accepted));
                        break;
                    }
                }
                posted.fetch_add(1, Ordering::SeqCst);
                if id % 4 == 0 {
                    thread::yield_now();
                }
            }
            posts
        });
        let drainer = s.spawn(|| {
            while posted.load(Ordering::SeqCst) < 16 && Instant::now() < give_up {
                thread::yield_now();
            }
            ctx.drain_and_collect(&pair.a, &[&pair.cq_a])
        });
        let posts = poster.join().expect("the posting thread panicked");
        let drain = drainer.join().expect("the draining thread panicked");
        (posts, drain)
    });
    let d: Drained = drain?;
    if let Some((id, _)) = posts.accepted.iter().find(|(_, began)| *began > d.returned) {
        return Err(CaseError::Failed(format!(
            "post_recv of wr_id {id}, called after the drain had returned, succeeded"
        )));
    }
    if let Some((id, kind, n)) = posts.refused {
        ensure_eq!(
            (kind, n),
            (ErrorKind::InvalidState, 0),
            "the refused post of wr_id {id} (kind, accepted)"
        );
    }
    // Anything that turns up now came after the drain returned.
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    let ids: Vec<u64> = posts.accepted.iter().map(|(id, _)| *id).collect();
    expect_first_report(&d.report, Outstanding::Between(0, ids.len()))?;
    ensure!(
        ids.len() >= 16,
        "only {} receives were posted before the drain",
        ids.len()
    );
    let expected = Expected::new().on_qp(pair.a.qp_num()).must(ids, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

/// What the posting thread of [`while_another_thread_posts`] did.
#[derive(Debug, Default)]
pub(super) struct Posts {
    /// Each accepted `wr_id`, with when its `post_recv` was called.
    pub(super) accepted: Vec<(u64, Instant)>,
    /// The first refused `wr_id`, the error's kind and how many WRs that post accepted.
    pub(super) refused: Option<(u64, ErrorKind, usize)>,
}

pub(super) fn shared_cq_other_qp_untouched<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const OTHER_RECV: u64 = RECV + 500;
    const PEER_SEND: u64 = SEND + 500;
    let device = ctx.open()?;
    let pd = device.alloc_pd()?;
    let shared = device.create_cq(256)?;
    let (cq_xp, cq_yp) = (device.create_cq(64)?, device.create_cq(64)?);
    let init = QpInit::default();
    let x = pd.create_qp(&shared, &shared, &init)?;
    let y = pd.create_qp(&shared, &shared, &init)?;
    let xp = pd.create_qp(&cq_xp, &cq_xp, &init)?;
    let yp = pd.create_qp(&cq_yp, &cq_yp, &init)?;
    let params = ConnParams::default();
    let (_lx, _) = ctx.connect(&device, &x, &xp, &params)?;
    let (_ly, _) = ctx.connect(&device, &y, &yp, &params)?;
    let mr = ctx.mr_filled(&pd, SLOTS_LEN, 0)?;
    post_recvs(&x, &mr, RECV..RECV + 8)?;
    post_recvs(&y, &mr, OTHER_RECV..OTHER_RECV + 8)?;

    // Drain x: its receives, and nothing of y's, on the shared CQ.
    let d = ctx.drain_and_collect(&x, &[&shared])?;
    expect_first_report(&d.report, Outstanding::Exactly(8))?;
    ctx.expect_each_once(
        &d.completions,
        &Expected::new()
            .on_qp(x.qp_num())
            .must(RECV..RECV + 8, FLUSHED),
    )?;
    expect_terminal(ctx, &x, &[&shared], slot(&mr, 0))?;
    ensure_eq!(y.state()?, QpState::ReadyToSend, "state of the other QP");

    // y's receives are still posted: its peer's SENDs land in them.
    let msgs: Vec<SendWr> = (PEER_SEND..PEER_SEND + 2)
        .map(|id| SendWr::single(id, SendOp::Send, mr.sge(0, 32)))
        .collect();
    yp.post_send(&msgs)?;
    let mut sent = Vec::new();
    let until = ctx.drain_deadline();
    let mut buf = [Completion::default(); 4];
    while sent.len() < 2 {
        match cq_yp.wait(&mut buf, until) {
            Ok(k) => sent.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::TimedOut => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Where data moves, each SEND that succeeded consumed the matching receive (in order),
    // which must have succeeded; where it does not, the drain of y flushes them.
    let mut expected = Expected::new().on_qp(y.qp_num());
    for i in 0..2 {
        let send_ok = sent
            .iter()
            .any(|c| c.wr_id == PEER_SEND + i && c.status.is_success());
        let status = if send_ok {
            SUCCEEDED
        } else {
            SUCCEEDED_OR_FLUSHED
        };
        expected = expected.must([OTHER_RECV + i], status);
    }
    expected = expected.must(OTHER_RECV + 2..OTHER_RECV + 8, FLUSHED);
    let mut seen = ctx.poll_all(&shared)?;
    let d = ctx.drain_and_collect(&y, &[&shared])?;
    expect_first_report(&d.report, Outstanding::Between(6, 8))?;
    seen.extend(&d.completions);
    ctx.expect_each_once(&seen, &expected)?;
    expect_terminal(ctx, &y, &[&shared], slot(&mr, 0))
}
