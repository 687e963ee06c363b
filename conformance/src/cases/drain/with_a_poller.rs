//! A drain while another thread of the ULP keeps polling the QP's CQ.

use std::sync::atomic::AtomicBool;

use super::*;

/// How many times the race is run: each round gives the poller another chance to take a
/// completion between the drain's look and its wait.
const ROUNDS: usize = 5;

/// Receives posted on `a`, then `a` drained while a second thread polls `a`'s CQ the whole
/// time, a few rounds over. The poller may take any completion before the drain sees it — the
/// drain's own marker's included, on providers that resolve completions when they are polled —
/// so a drain that waits only for what it polls itself sleeps until its deadline and falls back
/// with nothing left to synthesize. Every receive must be seen exactly once, by the poller or
/// after the drain.
pub(super) fn while_the_ulp_polls<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    for round in 0..ROUNDS {
        let completed =
            one_round(ctx, if round % 2 == 0 { 1 } else { 8 }).map_err(|e| match e {
                CaseError::Failed(m) => CaseError::Failed(format!("round {round}: {m}")),
                other => other,
            })?;
        if !completed {
            // A device that completes nothing (a dead one) gives the poller nothing to take:
            // more rounds would only wait out more deadlines.
            break;
        }
    }
    Ok(())
}

/// One round with `recvs` receives outstanding; whether the device completed them all (nothing
/// had to be synthesized).
fn one_round<P: Provider>(ctx: &Ctx<'_, P>, recvs: u64) -> Result<bool, CaseError> {
    let p = ctx.pair()?;
    let mr = ctx.mr_filled(&p.pd, SLOTS_LEN, 0)?;
    post_recvs(&p.a, &mr, RECV..RECV + recvs)?;
    let stop = AtomicBool::new(false);
    let (report, mut seen) = thread::scope(|s| {
        let poller = s.spawn(|| -> Result<Vec<Completion>, CaseError> {
            let mut seen = Vec::new();
            let mut buf = [Completion::default(); 8];
            while !stop.load(Ordering::Acquire) {
                let n = p.cq_a.poll(&mut buf)?;
                seen.extend_from_slice(&buf[..n]);
            }
            Ok(seen)
        });
        // Let the poller run before the drain starts, as a ULP's completion loop would.
        thread::sleep(Duration::from_millis(5));
        let deadline = ctx.drain_deadline();
        let budget = deadline.saturating_duration_since(Instant::now());
        let report = p.a.drain(deadline).map(|r| (r, budget));
        stop.store(true, Ordering::Release);
        let seen = poller
            .join()
            .map_err(|_| CaseError::Failed("the polling thread panicked".into()))?;
        Ok::<_, CaseError>((report, seen?))
    })?;
    let (report, budget) = report.map_err(|e| CaseError::Failed(format!("drain failed: {e}")))?;
    seen.extend(ctx.poll_all(&p.cq_a)?);
    // A device that completed everything (nothing had to be synthesized) leaves the drain no
    // reason to use up its deadline: if it did, it waited for what the poller had taken.
    ensure!(
        report.synthesized > 0 || report.elapsed < budget / 2,
        "the drain took {:?} of its {budget:?} though the device completed everything: it \
         waited for completions the polling thread had already taken ({report})",
        report.elapsed
    );
    ensure!(
        report.accounted() <= recvs as usize,
        "the drain accounts for {} WRs; {recvs} were posted ({report})",
        report.accounted()
    );
    ctx.expect_each_once(
        &seen,
        &Expected::new()
            .on_qp(p.a.qp_num())
            .must(RECV..RECV + recvs, FLUSHED),
    )?;
    expect_terminal(ctx, &p.a, &[&p.cq_a], slot(&mr, 0))?;
    Ok(report.synthesized == 0)
}
