//! A stalled device (hung firmware that reports nothing) completes nothing, and a drain still
//! returns by its deadline accounting for every WR.

use std::time::{Duration, Instant};

use anyverbs::{
    Completion, Device, Fault, MemoryRegion, Provider, QueuePair, RecvWr, SendWr, WcStatus,
};

use super::{QUIET, exchange, inject};
use crate::case::{CaseError, CaseResult};
use crate::ctx::{Ctx, Expected, FLUSHED, Pair};
use crate::{ensure, ensure_eq};

pub(super) fn stall_completes_nothing_until_resume<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let src = ctx.mr_filled(&pair.pd, 64, 0x5a)?;
    let dst = ctx.mr_filled(&pair.pd, 64, 0)?;

    inject(ctx, &Fault::Stall)?;
    pair.b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 64)])])?;
    pair.a.post_send(&[SendWr::send(2, &[src.sge(0, 64)])])?;
    ctx.expect_quiet(&pair.cq_a, QUIET / 2)
        .map_err(|e| stalled_but(e, "the sender's CQ"))?;
    ctx.expect_quiet(&pair.cq_b, Duration::ZERO)
        .map_err(|e| stalled_but(e, "the receiver's CQ"))?;
    ensure_eq!(
        events.try_recv()?,
        None,
        "events of a stalled device (a hung device says nothing)"
    );

    inject(ctx, &Fault::Resume)?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 1, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    ensure_eq!(
        ctx.contents(&dst)?,
        vec![0x5a; 64],
        "bytes received after the resume"
    );
    exchange(
        ctx,
        &pair.pd,
        (&pair.b, &pair.cq_b),
        (&pair.a, &pair.cq_a),
        3,
    )?;
    Ok(())
}

/// Rewords a failure of `expect_quiet` on a stalled device.
fn stalled_but(e: CaseError, cq: &str) -> CaseError {
    match e {
        CaseError::Failed(m) => CaseError::Failed(format!(
            "a stalled device must complete nothing, but {cq} produced: {m}"
        )),
        other => other,
    }
}

pub(super) fn drain_on_stalled_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const BUDGET: Duration = Duration::from_millis(300);
    const SENT: u8 = 0xa5;
    const UNTOUCHED: u8 = 0x3c;
    let pair: Pair<P> = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 512, SENT)?;
    let landing = ctx.mr_filled(&pair.pd, 64, UNTOUCHED)?;
    // A receive at the peer that the drained QP's SEND would fill, were it ever executed.
    pair.b
        .post_recv(&[RecvWr::new(50, &[landing.sge(0, 64)])])?;

    inject(ctx, &Fault::Stall)?;
    let recvs: Vec<RecvWr> = (1..=4u64)
        .map(|id| RecvWr::single(id, mr.sge(64 * id as usize, 64)))
        .collect();
    pair.a.post_recv(&recvs)?;
    pair.a.post_send(&[SendWr::send(10, &[mr.sge(0, 64)])])?;
    let deadline = Instant::now() + BUDGET;
    let drained = ctx.drain_and_collect_by(&pair.a, &[&pair.cq_a], deadline)?;
    ensure!(
        drained.report.fallback.is_some(),
        "a stalled device completes nothing, so the drain can only finish by falling back at \
         its deadline; its report shows no fallback: {}",
        drained.report
    );
    ctx.expect_each_once(
        &drained.completions,
        &Expected::new()
            .must([1, 2, 3, 4, 10], FLUSHED)
            .on_qp(pair.a.qp_num()),
    )?;
    ensure_eq!(
        drained.report.accounted(),
        5,
        "WRs the drain report accounts for ({})",
        drained.report
    );

    inject(ctx, &Fault::Resume)?;
    ctx.expect_quiet(&pair.cq_a, QUIET / 4)
        .map_err(|e| match e {
            CaseError::Failed(m) => CaseError::Failed(format!(
                "after the resume the drained QP completed more: {m}"
            )),
            other => other,
        })?;
    // The peer may see its receive flushed (on iWARP the drained end tears the connection
    // down), but never filled by the SEND the drain accounted for.
    let at_peer = ctx.poll_all(&pair.cq_b)?;
    let filled: Vec<&Completion> = at_peer
        .iter()
        .filter(|c| c.status == WcStatus::Success)
        .collect();
    ensure!(
        filled.is_empty(),
        "after the resume the peer received the drained QP's SEND (the drain must stop the \
         hardware QP before it synthesizes): {filled:?}"
    );
    ensure_eq!(
        ctx.contents(&landing)?,
        vec![UNTOUCHED; 64],
        "the peer's receive buffer after the resume"
    );
    Ok(())
}
