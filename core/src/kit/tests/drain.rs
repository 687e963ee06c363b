//! Drains on the toy device: idle from completions, overflow, fallbacks, a panicking provider, a ULP polling meanwhile.

use std::sync::mpsc;

use super::*;

#[test]
fn what_a_drain_polled_for_other_qps_waits_for_the_ulp_in_order() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    b.post_recv(&[RecvWr::new(10, &s), RecvWr::new(11, &s)])
        .unwrap();
    a.post_recv(&[RecvWr::new(20, &s)]).unwrap();
    b.raw().receive();
    b.raw().receive();
    // A's drain polls the CQ past B's completions: they are held, not lost.
    a.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1)
            .iter()
            .map(|c| (c.0, c.1, c.3))
            .collect::<Vec<_>>(),
        [
            (10, WcStatus::Success, 8),
            (11, WcStatus::Success, 8),
            (20, WcStatus::WrFlushError, 7)
        ]
    );
}

#[test]
fn idle_is_decided_from_completions_when_posts_in_error_never_complete() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    q.raw().execute_sends(1); // succeeded silently: no completion
    q.modify(QpState::Error).unwrap();
    // Posted in ERROR on a device that drops it: doomed, never awaited.
    q.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(report.fallback, None, "{report}");
    assert_eq!(report.synthesized, 1, "{report}");
    assert!(report.elapsed < Duration::from_secs(1), "{report}");
    assert_eq!(
        poll_all(&c.1),
        [(2, WcStatus::WrFlushError, WcOpcode::Recv, 7)],
        "the unsignaled success stays silent; the doomed receive is flushed once"
    );
}

#[test]
fn an_overflowed_cq_fails_the_drain_with_overflow() {
    let life = DeviceLife::new();
    let raw = ToyCq::new(1);
    let k = KitCq::new(raw.clone(), 1, life.clone());
    let c = (raw, k);
    let q = qp(7, InError::Flush, &c, &c, &life);
    lock(&c.0.0.0).room = 1; // take the reserve back: the ring holds one
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    let e = q.drain(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
}

/// A ULP thread polling its CQ while a drain runs can be the one that resolves the drain's
/// marker; the drain, asleep in the device's wait, must still see it and return, not sleep
/// until its deadline.
#[test]
fn a_drain_whose_marker_a_polling_ulp_resolved_returns_promptly() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let (raw, kcq) = (c.0.clone(), Arc::new(c.1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The drain has pumped and is about to sleep in the device's wait: the device delivers
    // the flush and the marker, and the ULP's poller takes them first.
    lock(&raw.1).wait = Some({
        let (q, kcq, seen) = (Arc::clone(&q), Arc::clone(&kcq), Arc::clone(&seen));
        Box::new(move || {
            q.raw().release_parked();
            let mut out = [Completion::default(); 8];
            let n = kcq.poll(&mut out).unwrap();
            lock(&seen).extend(out[..n].iter().map(|c| (c.wr_id, c.status)));
        })
    });
    let report = q.drain(Instant::now() + Duration::from_secs(2)).unwrap();
    assert_eq!(*lock(&seen), [(1, WcStatus::WrFlushError)]);
    assert_eq!(report.fallback, None, "{report}");
    assert!(
        report.elapsed < Duration::from_millis(500),
        "the drain slept until its deadline: {report}"
    );
}

/// A drain that falls back stops the hardware and synthesizes flushes for what is outstanding.
/// A receive the device completed successfully before that, whose completion waits in a CQ
/// the drain had not polled yet (the receive CQ, while the drain waited on the send CQ), must
/// reach the ULP as the success it was, not as a synthesized flush with its data lost.
#[test]
fn a_fallback_delivers_what_the_device_completed_before_it_stopped() {
    let life = DeviceLife::new();
    let (s, r) = (cq(16, &life), cq(16, &life));
    let q = qp(7, InError::Park, &s, &r, &life);
    let sg = sge();
    q.post_recv(&[RecvWr::new(1, &sg)]).unwrap();
    q.post_send(&[SendWr::send(2, &sg)]).unwrap();
    q.raw().receive();
    // The send's marker never comes back: the drain falls back at its deadline.
    let report = q
        .drain(Instant::now() + Duration::from_millis(200))
        .unwrap();
    assert!(report.fallback.is_some(), "{report}");
    assert_eq!(
        poll_all(&r.1),
        [(1, WcStatus::Success, WcOpcode::Recv, 7)],
        "{report}"
    );
    assert_eq!(
        poll_all(&s.1),
        [(2, WcStatus::WrFlushError, WcOpcode::Send, 7)]
    );
    assert_eq!((report.completed_by_device, report.synthesized), (1, 1));
}

/// A provider that panics in the middle of a drain (a bug of its own) must not leave the QP
/// "draining" for ever: destroy, which waits for a running drain, would hang, and every later
/// drain would time out.
#[test]
fn a_drain_that_panicked_does_not_leave_the_qp_draining() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    lock(&q.raw().st).panic_on_stop = true;
    let drained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.drain(Instant::now() + Duration::from_millis(50))
    }));
    assert!(drained.is_err(), "the toy's stop panicked");
    lock(&q.raw().st).panic_on_stop = false;
    let report = q.drain(Instant::now() + Duration::from_millis(50)).unwrap();
    assert_eq!(report.accounted(), 1, "{report}");
    let (done, finished) = std::sync::mpsc::channel();
    let destroyer = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || {
            let _ = done.send(q.destroy());
        })
    };
    finished
        .recv_timeout(Duration::from_secs(2))
        .expect("destroy hung")
        .unwrap();
    destroyer.join().unwrap();
}

/// An unsignaled send the device ran and the remote refused: its error completion (generated
/// for unsignaled WRs too) waits in the CQ, and the device moved the QP to ERROR. A drain that
/// waits for the flush has nothing to await, but it must still resolve what the device
/// completed before it settles: the send is not a silent success, and its error is not dropped.
#[test]
fn a_wait_for_flush_drain_resolves_an_unsignaled_sends_error_before_it_settles() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    {
        let mut st = lock(&q.raw().st);
        let p = st.sq.pop_front().unwrap();
        st.state = QpState::Error;
        q.raw()
            .scq
            .push(q.raw().completion(p, WcStatus::RemoteAccessError));
    }
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(
        poll_all(&c.1)
            .iter()
            .map(|c| (c.0, c.1))
            .collect::<Vec<_>>(),
        [(1, WcStatus::RemoteAccessError)],
        "{report}"
    );
    assert_eq!(report.completed_by_device, 1, "{report}");
}

/// A second caller's drain waits for the first to end; when the first ends without finishing
/// (here its provider panicked), the second starts late, with little of its deadline left. Its
/// fallback reserve is a tenth of what is left when it starts, not of what was left when it
/// began waiting: otherwise the reserve swallows its whole wait, and a drain the device would
/// have finished in time falls back, stopping the hardware and reporting as flushed a send that
/// ran.
#[test]
fn a_drain_that_waited_for_another_reserves_from_when_it_starts() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    let (entered, first_began) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                q.drain_with(
                    |_| {
                        entered.send(()).unwrap();
                        std::thread::sleep(
                            (deadline - Duration::from_millis(9))
                                .saturating_duration_since(Instant::now()),
                        );
                        // The device runs the send; its completion arrives while the second
                        // drain waits on the CQ.
                        let p = lock(&q.raw().st).sq.pop_front().unwrap();
                        let done = q.raw().completion(p, WcStatus::Success);
                        let scq = q.raw().scq.clone();
                        lock(&q.raw().scq.1).wait = Some(Box::new(move || scq.push(done)));
                        panic!("the first drain's provider panics");
                    },
                    deadline,
                )
            }))
        });
        first_began.recv().unwrap();
        let report = q.drain_with(|_| DrainPlan::WaitForFlush, deadline).unwrap();
        assert!(first.join().unwrap().is_err(), "the first drain panicked");
        assert_eq!(report.fallback, None, "{report}");
        assert_eq!(
            (report.completed_by_device, report.synthesized),
            (1, 0),
            "{report}"
        );
        assert_eq!(
            poll_all(&c.1),
            [(1, WcStatus::Success, WcOpcode::Send, 7)],
            "{report}"
        );
    });
}

/// A QP with nothing outstanding drains by its move to ERROR alone: no marker reaches the
/// device, the report accounts for nothing, and the QP is drained for good.
#[test]
fn a_drain_with_nothing_outstanding_moves_the_qp_to_error_and_nothing_else() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let report = q.drain(soon()).unwrap();
    assert_eq!(
        (report.strategy, report.fallback, report.accounted()),
        (crate::DrainStrategy::ErrorThenMarker, None, 0),
        "{report}"
    );
    assert_eq!(lock(&q.raw().st).state, QpState::Error);
    // A marker posted in ERROR on this device would sit flushed in the CQ.
    assert!(lock(&c.0.0.0).entries.is_empty(), "a marker was posted");
    let s = sge();
    let refused = q.post_recv(&[RecvWr::new(1, &s)]).unwrap_err();
    assert_eq!(refused.error.kind(), ErrorKind::InvalidState, "{refused:?}");
    assert_eq!(
        q.drain(soon()).unwrap().strategy,
        crate::DrainStrategy::AlreadyDrained
    );
}

/// With nothing outstanding, a device that refuses the move to ERROR gets what any drain gets:
/// the QP is stopped, and the report says why.
#[test]
fn an_idle_drain_whose_move_to_error_fails_stops_the_qp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    lock(&q.raw().st).enter_error_fails = usize::MAX;
    let report = q.drain(soon()).unwrap();
    assert_eq!(
        report.fallback,
        Some(crate::Fallback::StepFailed(ErrorKind::Other)),
        "{report}"
    );
    assert!(lock(&q.raw().st).stopped, "the device QP was not stopped");
    assert_eq!(report.accounted(), 0, "{report}");
}

/// A drain that ended without finishing counted the WRs outstanding at its start; the drain
/// that finishes after them, with nothing left outstanding, reports them as the device's.
#[test]
fn an_idle_drain_after_an_interrupted_one_reports_what_the_first_found() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.drain_with(|_| panic!("the first drain's provider panics"), soon())
    }));
    assert!(first.is_err());
    q.raw().execute_sends(1);
    assert_eq!(poll_all(&c.1), [(1, WcStatus::Success, WcOpcode::Send, 7)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(
        (
            report.completed_by_device,
            report.synthesized,
            report.fallback
        ),
        (1, 0, None),
        "{report}"
    );
    assert_eq!(lock(&q.raw().st).state, QpState::Error);
}

/// Holds `q`'s device in its next `enter_error` (a slow device: a firmware command in flight)
/// until the returned sender sends or is dropped, or 5 s pass; the receiver hears when it got
/// there.
fn hold_enter_error(q: &KitQp<ToyQp>) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    lock(&q.raw().st).enter_error_hook = Some(Box::new(move || {
        let _ = entered_tx.send(());
        let _ = released.recv_timeout(Duration::from_secs(5));
    }));
    (entered, release)
}

/// A second caller's drain waits for the first by its own deadline, and fails with `TimedOut`
/// then: it does not wait for the device to finish moving an idle QP to ERROR.
#[test]
fn a_second_drain_returns_by_its_deadline_while_an_idle_drain_is_in_the_device() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let (entered, release) = hold_enter_error(&q);
    std::thread::scope(|s| {
        let first = s.spawn(|| q.drain(soon()));
        entered.recv().unwrap();
        let (done, second) = mpsc::channel();
        let q = &q;
        s.spawn(move || {
            let _ = done.send(q.drain(Instant::now() + Duration::from_millis(50)));
        });
        let second = second.recv_timeout(Duration::from_secs(2));
        drop(release);
        let second = second.expect("the second drain blocked past its deadline");
        assert_eq!(
            second.map(|r| r.strategy).unwrap_err().kind(),
            ErrorKind::TimedOut
        );
        let first = first.join().unwrap().unwrap();
        assert_eq!((first.fallback, first.accounted()), (None, 0), "{first}");
    });
}

/// A post that races a drain is refused at once ("fails synchronously with `InvalidState`"),
/// not held until the device has moved the QP to ERROR.
#[test]
fn a_post_racing_an_idle_drain_is_refused_without_waiting_for_the_device() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let (entered, release) = hold_enter_error(&q);
    std::thread::scope(|s| {
        let drain = s.spawn(|| q.drain(soon()));
        entered.recv().unwrap();
        let (done, posted) = mpsc::channel();
        let q = &q;
        s.spawn(move || {
            let sg = sge();
            let _ = done.send(q.post_recv(&[RecvWr::new(1, &sg)]).map_err(|e| e.kind()));
        });
        let posted = posted.recv_timeout(Duration::from_secs(2));
        drop(release);
        assert_eq!(
            posted.expect("the post waited for the device's move to ERROR"),
            Err(ErrorKind::InvalidState)
        );
        assert_eq!(drain.join().unwrap().unwrap().accounted(), 0);
    });
}

/// A late completion of a destroyed QP whose number an idle QP now has is routed to that QP's
/// ledger (and dropped there). While the idle QP's drain waits for the device to move it to
/// ERROR, a ULP polling the shared CQ must still get the other QPs' completions: the poll
/// holds the CQ's lock, and every other drain pumping that CQ waits for it.
#[test]
fn a_poll_of_a_shared_cq_does_not_wait_for_an_idle_drains_move_to_error() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let sg = sge();
    let late = {
        let old = qp(8, InError::Flush, &c, &c, &life);
        old.post_recv(&[RecvWr::new(1, &sg)]).unwrap();
        let late = {
            let st = lock(&old.raw().st);
            old.raw().completion(st.rq[0], WcStatus::WrFlushError)
        };
        old.destroy().unwrap();
        late
    };
    let b = qp(8, InError::Flush, &c, &c, &life);
    a.post_recv(&[RecvWr::new(2, &sg)]).unwrap();
    c.0.push(late);
    a.raw().receive();
    let (entered, release) = hold_enter_error(&b);
    std::thread::scope(|s| {
        let drain = s.spawn(|| b.drain(soon()));
        entered.recv().unwrap();
        let (done, polled) = mpsc::channel();
        let kcq = &c.1;
        s.spawn(move || {
            let _ = done.send(poll_all(kcq));
        });
        let polled = polled.recv_timeout(Duration::from_secs(2));
        drop(release);
        assert_eq!(
            polled.expect("the poll waited for another QP's move to ERROR"),
            [(2, WcStatus::Success, WcOpcode::Recv, 7)]
        );
        assert_eq!(drain.join().unwrap().unwrap().fallback, None);
    });
}

/// `drain_with`'s `plan_for` is the caller's code: one that looks at the QP (its state, say)
/// must not deadlock a drain because the QP happens to have nothing outstanding.
#[test]
fn a_plan_that_looks_at_the_qp_does_not_deadlock_an_idle_drain() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let (done, drained) = mpsc::channel();
    {
        let q = Arc::clone(&q);
        // Not scoped: a deadlocked drain is left behind rather than hanging the test.
        std::thread::spawn(move || {
            let report = q.drain_with(
                |s| {
                    assert_eq!(q.state().unwrap(), s);
                    DrainPlan::WaitForFlush
                },
                soon(),
            );
            let _ = done.send(report.map(|r| r.fallback));
        });
    }
    assert_eq!(
        drained
            .recv_timeout(Duration::from_secs(2))
            .expect("the drain deadlocked")
            .unwrap(),
        None
    );
}

/// A move to ERROR the device refuses (once) is a failed step of any drain: the QP is stopped,
/// the report says why, and the device is not asked again — whether or not the QP had anything
/// outstanding.
#[test]
fn a_refused_move_to_error_is_a_failed_step_for_an_idle_drain_too() {
    for busy in [true, false] {
        let life = DeviceLife::new();
        let c = cq(16, &life);
        let q = qp(7, InError::Flush, &c, &c, &life);
        if busy {
            let sg = sge();
            q.post_recv(&[RecvWr::new(1, &sg)]).unwrap();
        }
        lock(&q.raw().st).enter_error_fails = 1;
        let report = q.drain(soon()).unwrap();
        let st = lock(&q.raw().st);
        assert_eq!(
            (report.fallback, st.stopped, st.enter_error_calls),
            (Some(crate::Fallback::StepFailed(ErrorKind::Other)), true, 1),
            "busy: {busy}: {report}"
        );
        assert_eq!(report.synthesized, usize::from(busy), "{report}");
    }
}

/// A provider that panics while an idle QP's drain moves it to ERROR leaves the QP neither
/// draining nor unusable: the next drain finishes, and destroy does not hang.
#[test]
fn an_idle_drain_whose_move_to_error_panicked_does_not_leave_the_qp_draining() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    lock(&q.raw().st).enter_error_hook = Some(Box::new(|| panic!("the toy's ERROR panics")));
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.drain(soon())));
    assert!(first.is_err(), "the toy's enter_error panicked");
    let sg = sge();
    assert_eq!(
        q.post_recv(&[RecvWr::new(1, &sg)]).unwrap_err().kind(),
        ErrorKind::InvalidState,
        "posts stay refused after an interrupted drain"
    );
    let report = q.drain(soon()).unwrap();
    assert_eq!((report.fallback, report.accounted()), (None, 0), "{report}");
    let (done, destroyed) = mpsc::channel();
    {
        let q = Arc::clone(&q);
        std::thread::spawn(move || {
            let _ = done.send(q.destroy());
        });
    }
    destroyed
        .recv_timeout(Duration::from_secs(2))
        .expect("destroy hung")
        .unwrap();
}
