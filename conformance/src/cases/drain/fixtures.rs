//! Fixtures and checks shared by the cases.

use super::*;

/// First `wr_id` of the receives a case posts.
pub(super) const RECV: u64 = 1000;
/// First `wr_id` of the sends a case posts.
pub(super) const SEND: u64 = 2000;

/// Connection parameters under which a SEND to a peer without receives retries for ever (an RNR
/// retry count of 7 means "infinite"), where the transport retries at all.
pub(super) fn stalling_params() -> ConnParams {
    ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    }
}

/// Whether sends to a peer without receives stay outstanding (RNR retries) rather than
/// terminating the connection.
pub(super) fn sends_stall<P: Provider>(ctx: &Ctx<'_, P>) -> bool {
    ctx.info().caps.contains(Caps::RNR_RETRY)
}

/// A 64-byte slot of `mr` for `wr_id` (slots repeat every 32 ids; nothing is ever received into
/// them, so sharing is harmless).
pub(super) fn slot<M: MemoryRegion>(mr: &M, wr_id: u64) -> Sge {
    mr.sge((wr_id % 32) as usize * 64, 64)
}

/// A region big enough for [`slot`].
pub(super) const SLOTS_LEN: usize = 32 * 64;

/// Posts one receive per id of `ids` on `qp`, in one batch.
pub(super) fn post_recvs<Q: QueuePair, M: MemoryRegion>(
    qp: &Q,
    mr: &M,
    ids: Range<u64>,
) -> CaseResult {
    let wrs: Vec<RecvWr> = ids.map(|id| RecvWr::single(id, slot(mr, id))).collect();
    qp.post_recv(&wrs)?;
    Ok(())
}

/// Where sends stall on RNR, posts a 64-byte SEND per id of `ids` on `qp` (whose peer must have
/// no receives and whose connection must use [`stalling_params`]), every other one unsignaled
/// if `mix_unsignaled`; returns the ids posted — none where the transport does not retry on
/// RNR.
pub(super) fn post_stalled_sends<P: Provider>(
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
pub(super) struct Busy<P: Provider> {
    pub(super) pair: Pair<P>,
    pub(super) mr: P::Mr,
    pub(super) recvs: Range<u64>,
    pub(super) sends: Vec<u64>,
}

impl<P: Provider> Busy<P> {
    /// `recvs` receives and (where sends stall) `sends` sends on `a`, every other send
    /// unsignaled if `mix_unsignaled`, with CQs of `cq_depth`.
    pub(super) fn new(
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
    pub(super) fn drain_all_flushed(
        &self,
        ctx: &Ctx<'_, P>,
        deadline: Instant,
    ) -> Result<Drained, CaseError> {
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
    pub(super) fn expect_terminal(&self, ctx: &Ctx<'_, P>) -> CaseResult {
        expect_terminal(ctx, &self.pair.a, &[&self.pair.cq_a], slot(&self.mr, 0))
    }
}

/// How many WRs were outstanding when a drain started, for checking its report.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outstanding {
    /// Exactly these many, all certainly not yet completed.
    Exactly(usize),
    /// Somewhere in this range: some may have completed (and been polled, or not) before the
    /// drain started.
    Between(usize, usize),
}

/// Checks the report of the first drain of a QP (clause 6): a real strategy, totals that match
/// what was outstanding, and a fallback only with something synthesized when something was
/// certainly outstanding.
pub(super) fn expect_first_report(report: &DrainReport, outstanding: Outstanding) -> CaseResult {
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
pub(super) fn expect_terminal<P: Provider>(
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
pub(super) const NO_OP_DRAIN: Duration = Duration::from_millis(250);

/// Drains a drained QP: Ok, AlreadyDrained, nothing accounted, no fallback, at once.
pub(super) fn expect_already_drained<Q: QueuePair>(qp: &Q, deadline: Instant) -> CaseResult {
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
