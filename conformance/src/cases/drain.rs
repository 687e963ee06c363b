//! The basic clauses of the drain contract (the full cross-transport drain suite builds on
//! these).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyverbs::{
    ConnParams, DrainStrategy, ErrorKind, MemoryRegion, Provider, QpInit, QueuePair, RecvWr,
    SendFlags, SendWr, WcStatus,
};

use crate::case::{Case, CaseError, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "drain::accounts_for_every_wr",
            description: "After drain returns Ok, every posted WR (receives, and sends stalled \
                          behind an RNR) has exactly one completion, and nothing completes later.",
            needs: Needs::NOTHING,
            run: accounts_for_every_wr::<P>,
        },
        Case {
            name: "drain::terminal_and_idempotent",
            description: "A drained QP refuses posts with InvalidState, drains again at once, \
                          and can be destroyed.",
            needs: Needs::NOTHING,
            run: terminal_and_idempotent::<P>,
        },
        Case {
            name: "drain::fresh_qp",
            description: "Draining a QP that was never connected returns Ok with nothing \
                          flushed.",
            needs: Needs::NOTHING,
            run: fresh_qp::<P>,
        },
    ]
}

fn accounts_for_every_wr<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    // RNR retries forever, so the sends stay outstanding until the drain.
    let params = ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    };
    let pair = ctx.pair_with(&QpInit::default(), &params, 256)?;
    let mr = ctx.mr_filled(&pair.pd, 8192, 5)?;
    let recvs: Vec<RecvWr> = (0..8)
        .map(|i| RecvWr::new(1000 + i, &[mr.sge(i as usize * 64, 64)]))
        .collect();
    pair.a.post_recv(&recvs)?;
    // Where the transport retries on RNR, sends to b (which has no receives) stay outstanding
    // until the drain. Mix signaled and unsignaled: on a flush every WR completes, signaled or
    // not.
    let stalled_sends = ctx.info().caps.contains(anyverbs::Caps::RNR_RETRY);
    let send_ids: Vec<u64> = if stalled_sends {
        (2000..2008).collect()
    } else {
        Vec::new()
    };
    let sends: Vec<SendWr> = send_ids
        .iter()
        .map(|&id| {
            let i = (id - 2000) as usize;
            let wr = SendWr::send(id, &[mr.sge(4096 + i * 64, 64)]);
            if i.is_multiple_of(2) {
                wr
            } else {
                wr.with_flags(SendFlags::empty())
            }
        })
        .collect();
    pair.a.post_send(&sends)?;
    let expected = 8 + send_ids.len();
    let report = pair.a.drain(ctx.deadline())?;
    ensure_eq!(
        report.accounted(),
        expected,
        "WRs the drain report accounts for ({report:?})"
    );
    let mut seen: HashMap<u64, WcStatus> = HashMap::new();
    let mut buf = [anyverbs::Completion::default(); 32];
    loop {
        let n = anyverbs::CompletionQueue::poll(&pair.cq_a, &mut buf)?;
        if n == 0 {
            break;
        }
        for c in &buf[..n] {
            if seen.insert(c.wr_id, c.status).is_some() {
                return Err(CaseError::Failed(format!(
                    "wr_id {} completed twice",
                    c.wr_id
                )));
            }
        }
    }
    for &id in (1000..1008).collect::<Vec<u64>>().iter().chain(&send_ids) {
        match seen.get(&id) {
            Some(WcStatus::WrFlushError) => {}
            Some(s) => return Err(CaseError::Failed(format!("wr_id {id} completed with {s}"))),
            None => return Err(CaseError::Failed(format!("wr_id {id} never completed"))),
        }
    }
    ensure_eq!(seen.len(), expected, "completions after drain");
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(30))
}

fn terminal_and_idempotent<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 0)?;
    pair.a.drain(ctx.deadline())?;
    let e = pair.a.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])]).err();
    ensure_eq!(
        e.as_ref().map(|e| (e.accepted, e.kind())),
        Some((0, ErrorKind::InvalidState)),
        "post_send after drain"
    );
    let e = pair.a.post_recv(&[RecvWr::new(2, &[mr.sge(0, 8)])]).err();
    ensure_eq!(
        e.as_ref().map(|e| (e.accepted, e.kind())),
        Some((0, ErrorKind::InvalidState)),
        "post_recv after drain"
    );
    let start = Instant::now();
    let again = pair.a.drain(ctx.deadline())?;
    ensure_eq!(
        again.strategy,
        DrainStrategy::AlreadyDrained,
        "strategy of a second drain"
    );
    ensure!(
        start.elapsed() < Duration::from_secs(1),
        "a second drain took {:?}",
        start.elapsed()
    );
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    pair.a.destroy()?;
    Ok(())
}

fn fresh_qp<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let lone = ctx.lone_qp(8)?;
    let report = lone.qp.drain(ctx.deadline())?;
    ensure_eq!(report.accounted(), 0, "WRs flushed on a fresh QP");
    ctx.expect_quiet(&lone.cq, Duration::from_millis(10))
}
