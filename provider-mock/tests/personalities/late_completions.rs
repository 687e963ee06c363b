//! 4. Late completions never reach the ULP.

use super::*;

/// Moves to ERROR with receives outstanding and drains at once with a deadline already past.
/// Returns whether the drain returned before the device's flushes were due, so that the strict
/// expectations applied (a slow machine may let late flushes beat the drain).
pub(super) fn drain_before_the_flushes(row: &Row) -> bool {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    let before = Instant::now();
    p.a.modify(QpState::Error)
        .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let report =
        p.a.drain(Instant::now())
            .unwrap_or_else(|e| panic!("{dev}: drain with a past deadline: {e}"));
    let in_time = before.elapsed() < flush_delay();
    let strict = row.error_flushes != FlushedLate || in_time;
    if strict {
        // What the device had not flushed when the deadline passed, the provider synthesized.
        let (fallback, synthesized) = match row.error_flushes {
            Flushed => (None, 0),
            _ => (Some(Fallback::DeadlinePassed), RECVS as usize),
        };
        assert_eq!(report.fallback, fallback, "{dev}: {report}");
        assert_eq!(report.synthesized, synthesized, "{dev}: {report}");
        // Completions are resolved when polled: the flushes a synchronous device produced
        // before the drain were still unpolled, so the drain accounts for them as the device's.
        assert_eq!(report.accounted(), RECVS as usize, "{dev}: {report}");
    }
    // `finish` waits QUIET, ten times the flush delay: late flushes would be there by then.
    book.finish(&p.cq_a);
    strict
}

#[test]
pub(super) fn late_device_completions_never_reach_the_ulp() {
    for_each_device(|row| {
        let strict = (0..5).any(|_| drain_before_the_flushes(row));
        assert!(
            strict,
            "{}: in 5 attempts no drain returned within the flush delay",
            row.device
        );
    });
}
