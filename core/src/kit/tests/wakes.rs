//! Waiting ULPs woken when a drain puts completions aside for them.

use super::*;

#[test]
fn a_waiting_ulp_wakes_when_a_drain_puts_completions_aside() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Drop, &c, &c, &life));
    let s = sge();
    q.post_recv(&[RecvWr::new(5, &s)]).unwrap();
    let kcq = Arc::new(c.1);
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = [Completion::default(); 4];
            let n = kcq.wait(&mut out, soon()).unwrap();
            (out[0].wr_id, n, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    // Nothing reaches the device's ring: the drain synthesizes the flush into the kit's.
    q.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    let (wr_id, n, waited) = waiter.join().unwrap();
    assert_eq!((wr_id, n), (5, 1));
    assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
}

/// A drain that puts completions aside wakes the ULP waiting on the CQ; the drain's own wait
/// on the device must not swallow that wake and leave the ULP asleep until its deadline while
/// its completion sits in the kit.
#[test]
fn a_drain_does_not_swallow_the_wake_meant_for_a_waiting_ulp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Park, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    a.post_send(&[SendWr::send(1, &s)]).unwrap();
    b.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    let (raw, kcq) = (c.0.clone(), Arc::new(c.1));
    let (arrived, in_wait) = std::sync::mpsc::channel();
    // The ULP is descheduled between its poll and its wait in the device.
    lock(&raw.1).wait = Some(Box::new(move || {
        arrived.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }));
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = [Completion::default(); 4];
            let n = kcq
                .wait(&mut out, Instant::now() + Duration::from_secs(5))
                .unwrap();
            (
                out[..n].iter().map(|c| c.wr_id).collect::<Vec<_>>(),
                start.elapsed(),
            )
        })
    };
    in_wait.recv().unwrap();
    b.raw().receive();
    // A's marker is never delivered: the drain waits (and pumps B's completion aside).
    let report = a
        .drain(Instant::now() + Duration::from_millis(1500))
        .unwrap();
    let (ids, waited) = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(1),
        "the ULP slept {waited:?} with its completion held by the kit ({report}, got {ids:?})"
    );
    assert_eq!(ids, [2]);
}

/// Two ULP threads wait on one CQ; a drain delivers two completions at once. Each waiter must
/// get one: the second must not sleep until its deadline while the other one's share of the
/// delivery sits in the kit.
#[test]
fn every_waiter_wakes_when_a_drain_delivers_several_completions() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    let kcq = Arc::new(c.1);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let kcq = Arc::clone(&kcq);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut out = [Completion::default(); 1];
                let n = kcq.wait(&mut out, Instant::now() + Duration::from_secs(5));
                (n.map(|_| out[0].wr_id), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    q.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    let mut ids = Vec::new();
    for w in waiters {
        let (id, waited) = w.join().unwrap();
        assert!(
            waited < Duration::from_secs(1),
            "a waiter slept {waited:?} with a completion held"
        );
        ids.push(id.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

/// A ULP thread polls the CQ while a drain waits on it, and its poll takes what the drain waits
/// for (the flush, and the marker, which the poll swallows). The poll wakes the drain's wait on
/// the CQ, which would otherwise sleep out its slice before it looks again — per QP, when a
/// target tears down thousands.
#[test]
fn a_ulp_poll_that_takes_a_draining_qps_completions_wakes_the_drain() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    a.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let (raw, kcq) = (c.0.clone(), Arc::new(c.1));
    let (polled_tx, polled) = std::sync::mpsc::channel();
    // In the drain's wait, the device delivers the flushes, and the ULP polls them away.
    lock(&raw.1).wait = Some({
        let (a, kcq) = (Arc::clone(&a), Arc::clone(&kcq));
        Box::new(move || {
            a.raw().release_parked();
            let mut out = [Completion::default(); 4];
            let n = kcq.poll(&mut out).unwrap();
            polled_tx
                .send(
                    out[..n]
                        .iter()
                        .map(|c| (c.wr_id, c.status))
                        .collect::<Vec<_>>(),
                )
                .unwrap();
        })
    });
    let report = a.drain(soon()).unwrap();
    assert_eq!(
        polled.recv().unwrap(),
        [(1, WcStatus::WrFlushError)],
        "the ULP gets the flush; the marker is swallowed"
    );
    assert_eq!(report.completed_by_device, 1, "{report}");
    assert!(
        lock(&raw.1).wakes >= 1,
        "the ULP's poll woke the drain's wait on the CQ"
    );
}
