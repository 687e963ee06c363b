use super::*;

#[test]
fn messages_parse_back_to_their_number() {
    for seq in [0, 1, 255, 256, u64::MAX] {
        assert_eq!(parse(&message(seq, 64), 64), Some(seq));
    }
    let mut m = message(5, 64);
    m[40] ^= 1;
    assert_eq!(parse(&m, 64), None);
    assert_eq!(parse(&message(5, 64)[..32], 64), None);
}

#[test]
fn the_log_counts_in_order_duplicates_and_gaps() {
    let log = EchoLog::new();
    let now = Instant::now();
    log.record(Some(0), now);
    log.record(Some(1), now);
    assert!(log.summary().is_clean());
    log.record(Some(1), now);
    log.record(Some(5), now);
    log.record(None, now);
    let s = log.summary();
    assert_eq!(
        (s.echoed, s.duplicates, s.out_of_order, s.corrupted),
        (2, 1, 1, 1)
    );
    assert!(!s.is_clean());
    assert_eq!(log.next(), 2);
}

#[test]
fn waiting_for_echoes_has_a_deadline() {
    let log = EchoLog::new();
    let start = Instant::now();
    let e = log
        .wait_for(1, start + Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    log.record(Some(0), start);
    assert_eq!(log.wait_for(1, start).unwrap().echoed, 1);
}

#[test]
fn a_worker_is_joined_by_its_deadline_or_left() {
    let w = Worker::spawn("quick", || 7).unwrap();
    assert_eq!(w.join(Instant::now() + Duration::from_secs(5)), Some(7));
    let w = Worker::spawn("slow", || std::thread::sleep(Duration::from_millis(200))).unwrap();
    assert_eq!(w.join(Instant::now() + Duration::from_millis(5)), None);
    let w = Worker::spawn("panics", || panic!("on purpose")).unwrap();
    assert_eq!(w.join(Instant::now() + Duration::from_secs(5)), None::<()>);
}
