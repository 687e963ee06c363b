//! The naive marker drain.

use super::*;

/// `wr_id` of the naive drain's send marker.
pub(super) const SEND_MARKER: u64 = 0x4d41_524b_0000_0001;
/// `wr_id` of the naive drain's receive marker.
pub(super) const RECV_MARKER: u64 = 0x4d41_524b_0000_0002;

/// How the naive marker drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NaiveOutcome {
    /// Both markers completed.
    Completed,
    /// A marker post was refused synchronously.
    PostRefused(ErrorKind),
    /// A marker never completed before the deadline.
    TimedOut,
}

/// What the naive marker drain did.
#[derive(Debug)]
pub(super) struct NaiveDrain {
    pub(super) outcome: NaiveOutcome,
    /// The markers the device accepted.
    pub(super) accepted: Vec<u64>,
    /// Every completion it polled while waiting (the ULP's too).
    pub(super) seen: Vec<Completion>,
}

/// The naive marker drain, as Linux's `ib_drain_qp` does it, over the public API: move `qp` to
/// ERROR, post a zero-length send marker and a receive marker, and wait on `cq` for both
/// markers' completions until `deadline` (where the kernel would wait for ever).
pub(super) fn naive_drain<P: Provider>(
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
pub(super) const NAIVE_WAIT: Duration = Duration::from_millis(200);

/// A pair with receives (and, where sends stall, sends) outstanding on `a`, for the naive
/// drain cases; returns the pair, its region and the expectation for the ULP's WRs.
pub(super) fn naive_fixture<P: Provider>(
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

pub(super) fn naive_marker_drain_completes<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn naive_marker_drain_hangs<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
