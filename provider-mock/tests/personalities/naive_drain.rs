//! 1. The naive drain.

use super::*;

/// Posts the naive algorithm's marker on each queue (`which`: first or second) and checks, over
/// one window, what became of each. Returns the markers accepted and still pending.
pub(super) fn naive_markers(
    row: &Row,
    p: &Pair,
    book: &mut Book,
    base: u64,
    fates: PerQueue<Fate>,
    which: &str,
) -> Vec<(WorkQueue, u64)> {
    let mut watch = Watch::new();
    let mut posted = Vec::new();
    for (i, queue) in WorkQueue::BOTH.into_iter().enumerate() {
        let id = base + i as u64;
        let fate = fates.get(queue);
        let what = format!("the {which} {queue:?} marker (wr {id})");
        let (r, act) = book.act(&p.cq_a, || post_marker(&p.a, queue, id));
        if accepted(row.device, &what, r, fate) {
            book.expect(id, Due::Once, marker_opcode(queue));
            watch.add(what, id, fate, act);
            posted.push((queue, id));
        } else {
            book.expect(id, Due::Never, marker_opcode(queue));
        }
    }
    watch.verify(book, &p.cq_a);
    posted.retain(|(_, id)| book.arrival(*id).is_none());
    posted
}

pub(super) fn naive_marker_drain(row: &Row) {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    let flushes = |f: Fate| matches!(f, Flushed | FlushedLate);
    assert_eq!(
        p.dev.info().caps.contains(Caps::POST_IN_ERROR_FLUSHED),
        flushes(row.first_marker.send) && flushes(row.first_marker.recv),
        "{dev}: POST_IN_ERROR_FLUSHED must describe what the device does with posts in ERROR"
    );

    // Receives outstanding, then ERROR: what the move flushes, and when.
    let recvs = post_receives(&p, &mut book);
    let (r, act) = book.act(&p.cq_a, || p.a.modify(QpState::Error));
    r.unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let mut watch = Watch::new();
    for id in recvs {
        let what = format!("receive {id}, outstanding at the move to ERROR");
        watch.add(what, id, row.error_flushes, act);
    }
    watch.verify(&mut book, &p.cq_a);

    // The naive algorithm: a marker on each queue, wait for each.
    let pending = naive_markers(row, &p, &mut book, MARKER_BASE, row.first_marker, "first");

    // What rxe needs (and what helps nobody else): ERROR once more.
    let (r, act) = book.act(&p.cq_a, || p.a.modify(QpState::Error));
    r.unwrap_or_else(|e| panic!("{dev}: modify to ERROR again: {e}"));
    let mut watch = Watch::new();
    for (queue, id) in pending {
        let fate = if row.re_error_completes.get(queue) {
            // Flushed as the move to ERROR flushes: at once, or late.
            row.error_flushes
        } else {
            Never
        };
        let what = format!("the first {queue:?} marker (wr {id}) after ERROR again");
        watch.add(what, id, fate, act);
    }
    watch.verify(&mut book, &p.cq_a);

    // A second marker on each queue (the X722 loses only the first).
    naive_markers(
        row,
        &p,
        &mut book,
        MARKER_BASE + 10,
        row.second_marker,
        "second",
    );

    // anyverbs' drain accounts for whatever the naive one left.
    let pending = book.pending();
    let report =
        p.a.drain(Instant::now() + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain after the naive one: {e}"));
    assert_eq!(report.strategy, row.strategy_in_error, "{dev}: {report}");
    assert_eq!(report.accounted(), pending, "{dev}: {report}");
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{dev}: {report}");
    book.finish(&p.cq_a);
}

#[test]
pub(super) fn naive_marker_drain_per_personality() {
    for_each_device(naive_marker_drain);
}
