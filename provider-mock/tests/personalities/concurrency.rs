//! 6. Concurrency: drains racing posts and each other.

use super::*;

/// Posts receives one at a time until one is refused because a drain started; returns the
/// `wr_id`s accepted and the refusal. A full queue is waited out (the drains will start).
pub(super) fn post_until_refused(p: &Pair, dev: &str, deadline: Instant) -> (Vec<u64>, PostError) {
    let mut ids = Vec::new();
    let mut id = RACE_BASE;
    loop {
        match p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])]) {
            Ok(()) => {
                ids.push(id);
                id += 1;
                // Let the drains in: a poster that never lets go of the fabric fills the queue
                // before either starts, and nothing races.
                thread::yield_now();
            }
            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                assert!(Instant::now() < deadline, "{dev}: no drain ever started");
                thread::yield_now();
            }
            Err(e) => return (ids, e),
        }
    }
}

pub(super) fn concurrent_drains(row: &Row) {
    let dev = row.device;
    let init = QpInit {
        max_recv_wr: 1024,
        ..QpInit::default()
    };
    let p = Pair::new(row, &ConnParams::default(), &init, 2048);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    let barrier = Barrier::new(3);
    let deadline = Instant::now() + DRAIN_BUDGET;
    let drain = || {
        barrier.wait();
        p.a.drain(deadline)
    };
    let (r1, r2, (raced, refusal)) = thread::scope(|s| {
        let d1 = s.spawn(drain);
        let d2 = s.spawn(drain);
        let poster = s.spawn(|| {
            barrier.wait();
            post_until_refused(&p, dev, deadline)
        });
        (join(d1), join(d2), join(poster))
    });
    assert_eq!(refusal.accepted, 0, "{dev}: {refusal}");
    assert_eq!(refusal.kind(), ErrorKind::InvalidState, "{dev}: {refusal}");
    for &id in &raced {
        book.expect(id, Due::Once, WcOpcode::Recv);
    }
    // Both succeed, even where the drain runs to its deadline: the engine keeps time back for
    // the fallback, so the waiting caller sees the other drain finish before the same deadline.
    let reports = [r1, r2].map(|r| r.unwrap_or_else(|e| panic!("{dev}: a racing drain: {e}")));
    let ran: Vec<&DrainReport> = reports
        .iter()
        .filter(|r| r.strategy != DrainStrategy::AlreadyDrained)
        .collect();
    assert_eq!(ran.len(), 1, "{dev}: one drain does the work: {reports:?}");
    let report = ran[0];
    assert_eq!(report.strategy, row.strategy, "{dev}: {report}");
    assert_eq!(report.fallback, row.fallback, "{dev}: {report}");
    assert_eq!(
        report.accounted(),
        RECVS as usize + raced.len(),
        "{dev}: {report}"
    );
    let again =
        p.a.drain(Instant::now() + PROMPT)
            .unwrap_or_else(|e| panic!("{dev}: a drain after the drain: {e}"));
    assert_eq!(again.strategy, DrainStrategy::AlreadyDrained, "{dev}");
    book.finish(&p.cq_a);
}

#[test]
pub(super) fn concurrent_drains_and_racing_posts() {
    for_each_device(concurrent_drains);
}
