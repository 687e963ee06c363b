//! 3. Posts in ERROR by the ULP are accounted for.

use super::*;

pub(super) fn posts_in_error(row: &Row) {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    p.a.modify(QpState::Error)
        .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let mut in_error = 0;
    for (i, signaled) in [true, false, true, false].into_iter().enumerate() {
        let id = SEND_BASE + i as u64;
        let what = format!("send {id} posted in ERROR");
        let r = p.a.post_send(&[send_wr(&p, id, signaled)]);
        let due = if accepted(dev, &what, r, row.first_marker.send) {
            in_error += 1;
            send_due(signaled)
        } else {
            Due::Never
        };
        book.expect(id, due, WcOpcode::Send);
    }
    for id in RECV_BASE + 10..RECV_BASE + 13 {
        let what = format!("receive {id} posted in ERROR");
        let r = p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])]);
        let due = if accepted(dev, &what, r, row.first_marker.recv) {
            in_error += 1;
            Due::Once
        } else {
            Due::Never
        };
        book.expect(id, due, WcOpcode::Recv);
    }
    let pending = book.pending();
    let t = Instant::now();
    let report =
        p.a.drain(t + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain: {e}"));
    let wall = t.elapsed();
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{dev}: {report}");
    if row.drops_posts_in_error {
        assert!(
            report.synthesized >= in_error,
            "{dev}: the provider settles the {in_error} WRs the device dropped: {report}"
        );
    }
    check_timing(dev, &report, wall);
    book.finish(&p.cq_a);
}

#[test]
pub(super) fn posts_in_error_by_the_ulp_are_accounted() {
    for_each_device(posts_in_error);
}
