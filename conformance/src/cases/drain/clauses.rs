//! The drain contract's clauses 1, 2, 3 and 5: every WR exactly once, by the deadline, and
//! nothing after.

use super::*;

// Clause 2: every WR exactly once.

pub(super) fn accounts_for_every_wr<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    // Signaled and unsignaled alike: a WR that never executed completes with a flush error.
    let busy = Busy::new(ctx, 256, 8, 8, true)?;
    busy.drain_all_flushed(ctx, ctx.drain_deadline())?;
    busy.expect_terminal(ctx)
}

pub(super) fn unsignaled_successes_not_repeated<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

// Clauses 1 and 5: the deadline.

pub(super) fn returns_by_short_deadline<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let busy = Busy::new(ctx, 64, 8, 4, false)?;
    // `drain_and_collect_by` fails the case if the drain returns later than the deadline plus
    // a little slack.
    busy.drain_all_flushed(ctx, Instant::now() + Duration::from_millis(300))?;
    busy.expect_terminal(ctx)
}

// Clause 3: terminal.

pub(super) fn qp_is_terminal_after_drain<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
