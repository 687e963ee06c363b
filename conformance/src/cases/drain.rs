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

use crate::case::{Case, CaseError, CaseResult, Needs};
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
            run: accounts_for_every_wr::<P>,
        },
        Case {
            name: "drain::returns_by_short_deadline",
            description: "Given a 300 ms deadline with WRs outstanding, drain returns by the \
                          deadline and still accounts for every WR exactly once.",
            needs: Needs::NOTHING,
            run: returns_by_short_deadline::<P>,
        },
        Case {
            name: "drain::qp_is_terminal_after_drain",
            description: "A drained QP stays in ERROR: every modify to another state fails with \
                          InvalidState, posts fail with InvalidState accepting nothing, and it \
                          can be destroyed.",
            needs: Needs::NOTHING,
            run: qp_is_terminal_after_drain::<P>,
        },
        Case {
            name: "drain::second_drain_is_a_no_op",
            description: "Draining a drained QP returns AlreadyDrained at once, accounting for \
                          nothing and completing nothing — even with its deadline already past.",
            needs: Needs::NOTHING,
            run: second_drain_is_a_no_op::<P>,
        },
        Case {
            name: "drain::from_initial_state",
            description: "Draining a QP in its initial state (RESET or IDLE), never connected \
                          and with nothing posted, returns Ok accounting for nothing and leaves \
                          it in ERROR.",
            needs: Needs::NOTHING,
            run: from_initial_state::<P>,
        },
        Case {
            name: "drain::from_init_with_receives",
            description: "Draining an InfiniBand QP in INIT with receives posted flushes each \
                          receive exactly once.",
            needs: Needs::model(StateModel::InfiniBand),
            run: from_init_with_receives::<P>,
        },
        Case {
            name: "drain::from_idle_with_receives",
            description: "Draining an iWARP QP in IDLE with receives posted flushes each receive \
                          exactly once.",
            needs: Needs::model(StateModel::Iwarp),
            run: from_idle_with_receives::<P>,
        },
        Case {
            name: "drain::from_rts_empty",
            description: "Draining a connected QP with empty queues returns Ok accounting for \
                          nothing, and nothing completes.",
            needs: Needs::NOTHING,
            run: from_rts_empty::<P>,
        },
        Case {
            name: "drain::from_rts_full_queues",
            description: "Draining a connected QP whose receive queue (and, where sends stall on \
                          RNR, send queue) is full accounts for every WR exactly once.",
            needs: Needs::NOTHING,
            run: from_rts_full_queues::<P>,
        },
        Case {
            name: "drain::from_sqd",
            description: "Draining a QP in SQD — sends stalled on RNR before the transition, \
                          sends posted in SQD, receives — accounts for every WR exactly once.",
            needs: Needs::caps(Caps::SQ_DRAIN_STATE).and_model(StateModel::InfiniBand),
            run: from_sqd::<P>,
        },
        Case {
            name: "drain::from_closing",
            description: "An iWARP QP moved to CLOSING (empty send queue, receives posted) \
                          flushes its receives and disconnects; draining it then returns Ok and \
                          each receive is seen exactly once overall.",
            needs: Needs::model(StateModel::Iwarp),
            run: from_closing::<P>,
        },
        Case {
            name: "drain::from_error",
            description: "Draining a QP the ULP already moved to ERROR (and polled once) \
                          accounts for every WR exactly once overall.",
            needs: Needs::NOTHING,
            run: from_error::<P>,
        },
        Case {
            name: "drain::racing_drains",
            description: "Two threads drain one QP at once: both return Ok, their reports \
                          agree on the total, and every WR is seen exactly once.",
            needs: Needs::NOTHING,
            run: racing_drains::<P>,
        },
        Case {
            name: "drain::while_another_thread_posts",
            description: "While one thread posts receives one at a time, another drains: every \
                          post that returned Ok is seen exactly once, the first refused post \
                          fails with InvalidState accepting nothing, and no post succeeds after \
                          the drain returned.",
            needs: Needs::NOTHING,
            run: while_another_thread_posts::<P>,
        },
        Case {
            name: "drain::shared_cq_other_qp_untouched",
            description: "Draining one of two QPs that share a CQ flushes only its own WRs: the \
                          other QP's receives stay posted and later complete normally when its \
                          peer sends; nothing is seen twice.",
            needs: Needs::NOTHING,
            run: shared_cq_other_qp_untouched::<P>,
        },
        Case {
            name: "drain::unsignaled_successes_not_repeated",
            description: "Unsignaled RDMA WRITEs that ran before the drain are seen at most \
                          once afterwards, and never as a success.",
            needs: Needs::caps(Caps::RDMA_WRITE),
            run: unsignaled_successes_not_repeated::<P>,
        },
        Case {
            name: "drain::naive_marker_drain_completes",
            description: "Where posts in ERROR are flushed, the naive marker drain of Linux's \
                          ib_drain_qp (ERROR, a zero-length send and a receive marker, wait for \
                          both) completes in 200 ms, every WR before the markers seen once.",
            needs: Needs::caps(Caps::POST_IN_ERROR_FLUSHED.union(Caps::ZERO_LENGTH)),
            run: naive_marker_drain_completes::<P>,
        },
        Case {
            name: "drain::naive_marker_drain_hangs_where_posts_in_error_are_not_flushed",
            description: "Where posts in ERROR are not flushed, the naive marker drain of Linux's \
                          ib_drain_qp does not complete — a marker is refused or never completes, \
                          the hang ib_drain_qp hits on such devices — yet qp.drain on the same QP \
                          returns Ok and every WR, and every marker the device accepted, is seen \
                          exactly once.",
            needs: Needs::caps(Caps::ZERO_LENGTH).and_lacks(Caps::POST_IN_ERROR_FLUSHED),
            run: naive_marker_drain_hangs::<P>,
        },
    ]
}

// ----- fixtures and checks shared by the cases -----

/// First `wr_id` of the receives a case posts.
const RECV: u64 = 1000;
/// First `wr_id` of the sends a case posts.
const SEND: u64 = 2000;

/// Connection parameters under which a SEND to a peer without receives retries for ever (an RNR
/// retry count of 7 means "infinite"), where the transport retries at all.
fn stalling_params() -> ConnParams {
    ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    }
}

/// Whether sends to a peer without receives stay outstanding (RNR retries) rather than
/// terminating the connection.
fn sends_stall<P: Provider>(ctx: &Ctx<'_, P>) -> bool {
    ctx.info().caps.contains(Caps::RNR_RETRY)
}

/// A 64-byte slot of `mr` for `wr_id` (slots repeat every 32 ids; nothing is ever received into
/// them, so sharing is harmless).
fn slot<M: MemoryRegion>(mr: &M, wr_id: u64) -> Sge {
    mr.sge((wr_id % 32) as usize * 64, 64)
}

/// A region big enough for [`slot`].
const SLOTS_LEN: usize = 32 * 64;

/// Posts one receive per id of `ids` on `qp`, in one batch.
fn post_recvs<Q: QueuePair, M: MemoryRegion>(qp: &Q, mr: &M, ids: Range<u64>) -> CaseResult {
    let wrs: Vec<RecvWr> = ids.map(|id| RecvWr::single(id, slot(mr, id))).collect();
    qp.post_recv(&wrs)?;
    Ok(())
}

/// Where sends stall on RNR, posts a 64-byte SEND per id of `ids` on `qp` (whose peer must have
/// no receives and whose connection must use [`stalling_params`]), every other one unsignaled
/// if `mix_unsignaled`; returns the ids posted — none where the transport does not retry on
/// RNR.
fn post_stalled_sends<P: Provider>(
    ctx: &Ctx<'_, P>,
    qp: &P::Qp,
    mr: &P::Mr,
    ids: Range<u64>,
    mix_unsignaled: bool,
) -> Result<Vec<u64>, CaseError> {
    if !sends_stall(ctx) {
        return Ok(Vec::new());
    }
    let wrs: Vec<SendWr> = ids
        .clone()
        .map(|id| {
            let wr = SendWr::single(id, SendOp::Send, slot(mr, id));
            if mix_unsignaled && id % 2 == 1 {
                wr.with_flags(SendFlags::empty())
            } else {
                wr
            }
        })
        .collect();
    qp.post_send(&wrs)?;
    Ok(ids.collect())
}

/// A connected pair whose QP `a` has receives and, where sends stall on RNR, sends outstanding.
struct Busy<P: Provider> {
    pair: Pair<P>,
    mr: P::Mr,
    recvs: Range<u64>,
    sends: Vec<u64>,
}

impl<P: Provider> Busy<P> {
    /// `recvs` receives and (where sends stall) `sends` sends on `a`, every other send
    /// unsignaled if `mix_unsignaled`, with CQs of `cq_depth`.
    fn new(
        ctx: &Ctx<'_, P>,
        cq_depth: u32,
        recvs: u64,
        sends: u64,
        mix_unsignaled: bool,
    ) -> Result<Busy<P>, CaseError> {
        let pair = ctx.pair_with(&QpInit::default(), &stalling_params(), cq_depth)?;
        let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 5)?;
        post_recvs(&pair.a, &mr, RECV..RECV + recvs)?;
        let sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + sends, mix_unsignaled)?;
        Ok(Busy {
            pair,
            mr,
            recvs: RECV..RECV + recvs,
            sends,
        })
    }

    /// Drains `a` by `deadline` and checks the report and that every outstanding WR — they
    /// certainly never ran, signaled or not — was flushed exactly once.
    fn drain_all_flushed(&self, ctx: &Ctx<'_, P>, deadline: Instant) -> Result<Drained, CaseError> {
        let a = &self.pair.a;
        let d = ctx.drain_and_collect_by(a, &[&self.pair.cq_a], deadline)?;
        let outstanding = self.recvs.clone().count() + self.sends.len();
        expect_first_report(&d.report, Outstanding::Exactly(outstanding))?;
        let expected = Expected::new()
            .on_qp(a.qp_num())
            .must(self.recvs.clone(), FLUSHED)
            .must(self.sends.iter().copied(), FLUSHED);
        ctx.expect_each_once(&d.completions, &expected)?;
        Ok(d)
    }

    /// [`expect_terminal`] on `a`.
    fn expect_terminal(&self, ctx: &Ctx<'_, P>) -> CaseResult {
        expect_terminal(ctx, &self.pair.a, &[&self.pair.cq_a], slot(&self.mr, 0))
    }
}

/// How many WRs were outstanding when a drain started, for checking its report.
#[derive(Debug, Clone, Copy)]
enum Outstanding {
    /// Exactly these many, all certainly not yet completed.
    Exactly(usize),
    /// Somewhere in this range: some may have completed (and been polled, or not) before the
    /// drain started.
    Between(usize, usize),
}

/// Checks the report of the first drain of a QP (clause 6): a real strategy, totals that match
/// what was outstanding, and a fallback only with something synthesized when something was
/// certainly outstanding.
fn expect_first_report(report: &DrainReport, outstanding: Outstanding) -> CaseResult {
    ensure!(
        report.strategy != DrainStrategy::AlreadyDrained,
        "the first drain of a QP reports that it was already drained ({report})"
    );
    let certain = match outstanding {
        Outstanding::Exactly(n) => {
            ensure_eq!(
                report.accounted(),
                n,
                "WRs the drain report accounts for ({report})"
            );
            n
        }
        Outstanding::Between(lo, hi) => {
            ensure!(
                (lo..=hi).contains(&report.accounted()),
                "the drain report accounts for {} WRs; between {lo} and {hi} were outstanding \
                 ({report})",
                report.accounted()
            );
            lo
        }
    };
    if report.fallback.is_some() && certain > 0 {
        ensure!(
            report.synthesized > 0,
            "the drain fell back (stopped the hardware QP) with {certain} WRs outstanding but \
             synthesized nothing ({report})"
        );
    }
    Ok(())
}

/// Checks that a drained QP is terminal (clause 3) and that draining it again is a no-op (clause
/// 4), then destroys it: it is in ERROR; a send and a receive are each refused with
/// InvalidState, nothing accepted; a second drain returns AlreadyDrained at once, accounting for
/// nothing; nothing completes on `cqs`; destroy succeeds.
fn expect_terminal<P: Provider>(
    ctx: &Ctx<'_, P>,
    qp: &P::Qp,
    cqs: &[&P::Cq],
    sge: Sge,
) -> CaseResult {
    ensure_eq!(qp.state()?, QpState::Error, "state of a drained QP");
    let e = qp.post_send(&[SendWr::send(u64::MAX - 1, &[sge])]).err();
    ensure_eq!(
        e.as_ref().map(|e| (e.kind(), e.accepted)),
        Some((ErrorKind::InvalidState, 0)),
        "post_send to a drained QP (kind, accepted)"
    );
    let e = qp.post_recv(&[RecvWr::new(u64::MAX, &[sge])]).err();
    ensure_eq!(
        e.as_ref().map(|e| (e.kind(), e.accepted)),
        Some((ErrorKind::InvalidState, 0)),
        "post_recv to a drained QP (kind, accepted)"
    );
    expect_already_drained(qp, ctx.drain_deadline())?;
    for cq in cqs {
        ctx.expect_quiet(cq, Duration::from_millis(10))?;
    }
    qp.destroy()?;
    Ok(())
}

/// How long a drain of a drained QP may take.
const NO_OP_DRAIN: Duration = Duration::from_millis(250);

/// Drains a drained QP: Ok, AlreadyDrained, nothing accounted, no fallback, at once.
fn expect_already_drained<Q: QueuePair>(qp: &Q, deadline: Instant) -> CaseResult {
    let start = Instant::now();
    let again = qp
        .drain(deadline)
        .map_err(|e| CaseError::Failed(format!("draining a drained QP failed: {e}")))?;
    let took = start.elapsed();
    ensure_eq!(
        again.strategy,
        DrainStrategy::AlreadyDrained,
        "strategy of a drain of a drained QP ({again})"
    );
    ensure_eq!(
        (again.accounted(), again.fallback),
        (0, None),
        "what a drain of a drained QP accounts for (accounted, fallback)"
    );
    ensure!(took <= NO_OP_DRAIN, "draining a drained QP took {took:?}");
    ensure!(
        again.elapsed <= took,
        "the report of a second drain says {:?}; the call took {took:?}",
        again.elapsed
    );
    Ok(())
}

// ----- clause 2: every WR exactly once -----

fn accounts_for_every_wr<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    // Signaled and unsignaled alike: a WR that never executed completes with a flush error.
    let busy = Busy::new(ctx, 256, 8, 8, true)?;
    busy.drain_all_flushed(ctx, ctx.drain_deadline())?;
    busy.expect_terminal(ctx)
}

fn unsignaled_successes_not_repeated<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const WRITES: Range<u64> = SEND..SEND + 4;
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0x77)?;
    let target = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &src, RECV..RECV + 2)?;
    let writes: Vec<SendWr> = WRITES
        .map(|id| {
            let off = (id - SEND) as usize * 64;
            SendWr::single(id, SendOp::Write(target.remote(off)), src.sge(off, 64))
                .with_flags(SendFlags::empty())
        })
        .collect();
    pair.a.post_send(&writes)?;
    // Give them time to land. A device that moves no data leaves them outstanding, and the
    // drain flushes them: at most once, never a success, either way.
    let until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < until && ctx.contents(&target)?[..256].contains(&0) {
        thread::sleep(Duration::from_millis(1));
    }
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Between(2, 2 + WRITES.count()))?;
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 2, FLUSHED)
        .may(WRITES, FLUSHED);
    ctx.expect_each_once(&d.completions, &expected)?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&src, 0))
}

// ----- clauses 1 and 5: the deadline -----

fn returns_by_short_deadline<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let busy = Busy::new(ctx, 64, 8, 4, false)?;
    // `drain_and_collect_by` fails the case if the drain returns later than the deadline plus
    // a little slack.
    busy.drain_all_flushed(ctx, Instant::now() + Duration::from_millis(300))?;
    busy.expect_terminal(ctx)
}

// ----- clause 3: terminal -----

fn qp_is_terminal_after_drain<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let busy = Busy::new(ctx, 64, 2, 2, false)?;
    busy.drain_all_flushed(ctx, ctx.drain_deadline())?;
    let pair = &busy.pair;
    for &to in ctx.state_model().states() {
        if to == QpState::Error {
            continue;
        }
        match pair.a.modify(to) {
            Ok(()) => {
                return Err(CaseError::Failed(format!(
                    "a drained QP moved to {to}; it must stay in ERROR"
                )));
            }
            Err(e) => ensure_eq!(
                e.kind(),
                ErrorKind::InvalidState,
                "modify of a drained QP to {to}"
            ),
        }
        ensure_eq!(
            pair.a.state()?,
            QpState::Error,
            "state after the refused move to {to}"
        );
    }
    busy.expect_terminal(ctx)
}

// ----- clause 4: twice, every state, races -----

fn second_drain_is_a_no_op<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_initial_state<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_init_with_receives<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    unconnected_with_receives(ctx, QpState::Init)
}

fn from_idle_with_receives<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    unconnected_with_receives(ctx, QpState::Idle)
}

fn from_rts_empty<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_rts_full_queues<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_sqd<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_closing<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn from_error<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn racing_drains<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn while_another_thread_posts<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
struct Posts {
    /// Each accepted `wr_id`, with when its `post_recv` was called.
    accepted: Vec<(u64, Instant)>,
    /// The first refused `wr_id`, the error's kind and how many WRs that post accepted.
    refused: Option<(u64, ErrorKind, usize)>,
}

fn shared_cq_other_qp_untouched<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

// ----- the naive marker drain -----

/// `wr_id` of the naive drain's send marker.
const SEND_MARKER: u64 = 0x4d41_524b_0000_0001;
/// `wr_id` of the naive drain's receive marker.
const RECV_MARKER: u64 = 0x4d41_524b_0000_0002;

/// How the naive marker drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NaiveOutcome {
    /// Both markers completed.
    Completed,
    /// A marker post was refused synchronously.
    PostRefused(ErrorKind),
    /// A marker never completed before the deadline.
    TimedOut,
}

/// What the naive marker drain did.
#[derive(Debug)]
struct NaiveDrain {
    outcome: NaiveOutcome,
    /// The markers the device accepted.
    accepted: Vec<u64>,
    /// Every completion it polled while waiting (the ULP's too).
    seen: Vec<Completion>,
}

/// The naive marker drain, as Linux's `ib_drain_qp` does it, over the public API: move `qp` to
/// ERROR, post a zero-length send marker and a receive marker, and wait on `cq` for both
/// markers' completions until `deadline` (where the kernel would wait for ever).
fn naive_drain<P: Provider>(
    qp: &P::Qp,
    cq: &P::Cq,
    deadline: Instant,
) -> Result<NaiveDrain, CaseError> {
    let mut naive = NaiveDrain {
        outcome: NaiveOutcome::TimedOut,
        accepted: Vec::new(),
        seen: Vec::new(),
    };
    qp.modify(QpState::Error)?;
    if let Err(e) = qp.post_send(&[SendWr::send(SEND_MARKER, &[])]) {
        naive.outcome = NaiveOutcome::PostRefused(e.kind());
        return Ok(naive);
    }
    naive.accepted.push(SEND_MARKER);
    if let Err(e) = qp.post_recv(&[RecvWr::new(RECV_MARKER, &[])]) {
        naive.outcome = NaiveOutcome::PostRefused(e.kind());
        return Ok(naive);
    }
    naive.accepted.push(RECV_MARKER);
    let mut buf = [Completion::default(); 16];
    loop {
        let both = [SEND_MARKER, RECV_MARKER]
            .iter()
            .all(|m| naive.seen.iter().any(|c| c.wr_id == *m));
        if both {
            naive.outcome = NaiveOutcome::Completed;
            return Ok(naive);
        }
        if Instant::now() >= deadline {
            return Ok(naive);
        }
        match cq.wait(&mut buf, deadline) {
            Ok(k) => naive.seen.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(naive),
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long the naive drain may wait for its markers.
const NAIVE_WAIT: Duration = Duration::from_millis(200);

/// A pair with receives (and, where sends stall, sends) outstanding on `a`, for the naive
/// drain cases; returns the pair, its region and the expectation for the ULP's WRs.
fn naive_fixture<P: Provider>(
    ctx: &Ctx<'_, P>,
) -> Result<(Pair<P>, P::Mr, Expected, usize), CaseError> {
    let pair = ctx.pair_with(&QpInit::default(), &stalling_params(), 64)?;
    let mr = ctx.mr_filled(&pair.pd, SLOTS_LEN, 0)?;
    post_recvs(&pair.a, &mr, RECV..RECV + 4)?;
    let sends = post_stalled_sends(ctx, &pair.a, &mr, SEND..SEND + 2, false)?;
    let n = 4 + sends.len();
    let expected = Expected::new()
        .on_qp(pair.a.qp_num())
        .must(RECV..RECV + 4, FLUSHED)
        .must(sends, FLUSHED);
    Ok((pair, mr, expected, n))
}

fn naive_marker_drain_completes<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let (pair, mr, expected, _) = naive_fixture(ctx)?;
    let naive = naive_drain::<P>(&pair.a, &pair.cq_a, Instant::now() + NAIVE_WAIT)?;
    ensure_eq!(
        naive.outcome,
        NaiveOutcome::Completed,
        "outcome of the naive marker drain on a device that flushes posts in ERROR (saw {:?})",
        naive.seen
    );
    // Everything before the markers completed before them, so qp.drain finds nothing left.
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Exactly(0))?;
    let mut seen = naive.seen;
    seen.extend(&d.completions);
    ctx.expect_each_once(&seen, &expected.must(naive.accepted, FLUSHED))?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}

fn naive_marker_drain_hangs<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let (pair, mr, expected, n) = naive_fixture(ctx)?;
    let naive = naive_drain::<P>(&pair.a, &pair.cq_a, Instant::now() + NAIVE_WAIT)?;
    ensure!(
        naive.outcome != NaiveOutcome::Completed,
        "the naive marker drain completed, so the device flushes posts in ERROR; it should \
         report POST_IN_ERROR_FLUSHED (saw {:?})",
        naive.seen
    );
    // Where ib_drain_qp would hang for ever, qp.drain finishes the job: the ULP's WRs and the
    // markers the device accepted are each seen exactly once; a refused marker never.
    let d = ctx.drain_and_collect(&pair.a, &[&pair.cq_a])?;
    expect_first_report(&d.report, Outstanding::Between(0, n + naive.accepted.len()))?;
    let mut seen = naive.seen;
    seen.extend(&d.completions);
    ctx.expect_each_once(&seen, &expected.must(naive.accepted, FLUSHED))
        .map_err(|e| match e {
            CaseError::Failed(m) => {
                CaseError::Failed(format!("after the naive drain {:?}: {m}", naive.outcome))
            }
            other => other,
        })?;
    expect_terminal(ctx, &pair.a, &[&pair.cq_a], slot(&mr, 0))
}
