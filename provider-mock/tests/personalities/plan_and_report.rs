//! 2. The plan and the report.

use super::*;

/// Posts signaled and unsignaled SENDs on `a` that cannot execute (the peer has no receive:
/// RNR, retried forever; on a dead device nothing executes at all) and books them.
pub(super) fn post_stalled_sends(p: &Pair, book: &mut Book) -> usize {
    let sends = [true, false, true, false];
    for (i, signaled) in sends.into_iter().enumerate() {
        let id = SEND_BASE + i as u64;
        p.a.post_send(&[send_wr(p, id, signaled)])
            .unwrap_or_else(|e| panic!("{}: post send {id}: {e}", book.device));
        book.expect(id, send_due(signaled), WcOpcode::Send);
    }
    sends.len()
}

/// Checks a report's timing: a drain that fell back used its whole budget (and no more); any
/// other returned promptly.
pub(super) fn check_timing(dev: &str, report: &DrainReport, wall: Duration) {
    assert!(
        report.elapsed <= wall,
        "{dev}: {report}, but the call took {wall:?}"
    );
    if report.fallback.is_some() {
        assert!(
            report.elapsed >= DRAIN_BUDGET - Duration::from_millis(50)
                && report.elapsed < DRAIN_BUDGET + Duration::from_millis(100),
            "{dev}: a drain that falls back returns at its deadline: {report}"
        );
    } else {
        assert!(report.elapsed < PROMPT, "{dev}: {report}");
    }
}

/// Drains a QP with receives (and, where there is RNR, stalled sends) outstanding, from RTS or
/// from ERROR, and checks the report against the row.
pub(super) fn drain_from(row: &Row, start: QpState) {
    let dev = row.device;
    let params = ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    };
    let p = Pair::new(row, &params, &QpInit::default(), 1024);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    if p.dev.info().caps.contains(Caps::RNR_RETRY) {
        post_stalled_sends(&p, &mut book);
    }
    book.poll(&p.cq_a);
    assert!(book.seen.is_empty(), "{dev}: {:?}", book.seen);
    if start == QpState::Error {
        p.a.modify(QpState::Error)
            .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
        book.poll(&p.cq_a);
    }
    let pending = book.pending();
    let t = Instant::now();
    let report =
        p.a.drain(t + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain from {start}: {e}"));
    let wall = t.elapsed();
    let ctx = format!("{dev}, drained from {start}: {report}");
    let strategy = if start == QpState::Error {
        row.strategy_in_error
    } else {
        row.strategy
    };
    assert_eq!(report.strategy, strategy, "{ctx}");
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{ctx}");
    if start == QpState::Error && row.error_flushes == FlushedLate {
        // Late flushes may land between the poll above and the start of the drain.
        assert!(report.accounted() <= pending, "{ctx}: {pending} pending");
    } else {
        assert_eq!(report.accounted(), pending, "{ctx}");
    }
    let synthesized = if fallback.is_some() {
        report.accounted()
    } else {
        0
    };
    assert_eq!(report.synthesized, synthesized, "{ctx}");
    check_timing(dev, &report, wall);
    book.finish(&p.cq_a);
}

#[test]
pub(super) fn drain_plan_and_report_per_personality() {
    for_each_device(|row| {
        drain_from(row, QpState::ReadyToSend);
        drain_from(row, QpState::Error);
    });
}
