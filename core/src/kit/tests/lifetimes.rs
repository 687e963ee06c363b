//! Handle lifetimes: a lost device, destroy racing drains, waits and other destroys.

use super::*;

#[test]
fn a_lost_device_fails_every_call_even_with_completions_held() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    b.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    b.raw().receive();
    a.drain(soon()).unwrap(); // holds B's completion
    life.lose(DeviceEvent::DeviceRemoved, "device toy0 was removed");
    let mut out = [Completion::default(); 4];
    let e = c.1.poll(&mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceLost);
    assert!(e.to_string().contains("toy0"), "{e}");
    assert_eq!(
        b.post_recv(&[RecvWr::new(2, &s)]).unwrap_err().kind(),
        ErrorKind::DeviceLost
    );
    assert_eq!(b.drain(soon()).unwrap_err().kind(), ErrorKind::DeviceLost);
}

/// Two threads destroying one CQ: the device's CQ is destroyed once (a second
/// `ibv_destroy_cq` on a real device is a double free).
#[test]
fn a_cq_destroyed_by_two_threads_is_destroyed_in_the_device_once() {
    let life = DeviceLife::new();
    let (raw, kcq) = cq(16, &life);
    lock(&raw.1).destroy_takes = Duration::from_millis(100);
    let kcq = Arc::new(kcq);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let kcq = Arc::clone(&kcq);
            std::thread::spawn(move || kcq.destroy())
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(lock(&raw.1).destroys, 1);
}

/// A QP destroyed while another thread drains it: the kit must not call into the device QP
/// after destroying it (on a real device that is a use after free), and what the drain
/// reports must hold.
#[test]
fn destroy_during_a_drain_never_calls_the_device_qp_after_destroying_it() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let drainer = {
        let q = Arc::clone(&q);
        // The marker never comes: the drain falls back at its deadline.
        std::thread::spawn(move || q.drain(Instant::now() + Duration::from_millis(300)))
    };
    std::thread::sleep(Duration::from_millis(50));
    q.destroy().unwrap();
    let drained = drainer.join().unwrap();
    assert_eq!(
        lock(&q.raw().st).after_destroy,
        Vec::<&str>::new(),
        "drain: {drained:?}"
    );
    if let Ok(report) = drained {
        assert_eq!(report.accounted(), 1, "{report}");
        assert_eq!(
            poll_all(&c.1),
            [(1, WcStatus::WrFlushError, WcOpcode::Send, 7)]
        );
    }
}

/// A CQ destroyed while a ULP thread waits on it: the kit must not call into the device CQ
/// after destroying it — it either refuses (`Busy`: the CQ is in use) or the waiter stops.
#[test]
fn a_cq_destroyed_while_a_thread_waits_on_it_is_not_used_after_destroy() {
    let life = DeviceLife::new();
    let (raw, kcq) = cq(16, &life);
    let kcq = Arc::new(kcq);
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let mut out = [Completion::default(); 4];
            kcq.wait(&mut out, Instant::now() + Duration::from_millis(300))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let destroyed = kcq.destroy();
    let waited = waiter.join().unwrap();
    assert_eq!(
        lock(&raw.1).after_destroy,
        Vec::<&str>::new(),
        "destroy: {destroyed:?}, wait: {waited:?}"
    );
    if let Err(e) = destroyed {
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        kcq.destroy().unwrap();
    }
}

/// A QP destroyed while another thread waits for its connection: `destroy` lets the wait end
/// (by its deadline) before it destroys the device QP, which the wait still uses.
#[test]
fn destroy_waits_for_a_connection_wait_in_progress() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let waiter = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || q.wait_connected(Instant::now() + Duration::from_millis(200)))
    };
    std::thread::sleep(Duration::from_millis(50));
    q.destroy().unwrap();
    let waited = waiter.join().unwrap();
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(
        lock(&q.raw().st).after_destroy,
        Vec::<&str>::new(),
        "the kit called into the device QP after destroying it"
    );
    assert_eq!(
        q.wait_connected(soon()).unwrap_err().kind(),
        ErrorKind::Destroyed
    );
}

// ----- second review -----

/// A drain that falls back stops the device QP, and the kernel may give its number to a new
/// QP on the same CQ while the old handle lives. Once both are destroyed the CQ is in use by
/// nobody: destroying it must not answer `Busy` for ever.
#[test]
fn a_cq_is_not_busy_for_ever_after_a_stopped_qps_number_is_reused() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Drop, &c, &c, &life);
    old.post_recv(&[RecvWr::new(1, &sge())]).unwrap();
    old.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    // The device QP is stopped (destroyed in the device): number 7 is free again.
    let new = qp(7, InError::Drop, &c, &c, &life);
    old.destroy().unwrap();
    drop(old);
    new.destroy().unwrap();
    drop(new);
    c.1.destroy().unwrap();
}
