//! What the kit knows of ERROR: error completions, the provider's word, RESET, a drained QP.

use super::*;

#[test]
fn an_error_completion_tells_the_kit_the_qp_is_in_error() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // The device moves the QP to ERROR on its own; the kit learns it from the flush it polls.
    {
        let mut st = lock(&q.raw().st);
        st.state = QpState::Error;
        q.raw().flush_all(&mut st);
    }
    assert_eq!(poll_all(&c.1)[0].1, WcStatus::WrFlushError);
    q.post_recv(&[RecvWr::new(2, &s)]).unwrap(); // dropped by the device: doomed
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (1, None), "{report}");
}

/// A late flush of a destroyed QP, routed by a reused QP number to a healthy new QP, must not
/// make the kit believe the new QP is in ERROR: its posts would be doomed, its unsignaled
/// sends never retired (their slots lost) and reported flushed at the drain though they
/// succeeded.
#[test]
fn a_stale_error_completion_does_not_doom_a_healthy_qp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    old.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let late = {
        let st = lock(&old.raw().st);
        old.raw().completion(st.rq[0], WcStatus::WrFlushError)
    };
    old.destroy().unwrap();
    let new = qp(7, InError::Flush, &c, &c, &life);
    c.0.push(late);
    assert_eq!(poll_all(&c.1), []);
    new.post_send(&[
        SendWr::send(10, &s).with_flags(SendFlags::empty()),
        SendWr::send(11, &s),
    ])
    .unwrap();
    new.raw().execute_sends(2);
    assert_eq!(poll_all(&c.1), [(11, WcStatus::Success, WcOpcode::Send, 7)]);
    let report = new.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1),
        [],
        "send 10 succeeded (send 11 behind it did): {report}"
    );
    assert_eq!(report.accounted(), 0, "{report}");
}

#[test]
fn the_provider_telling_of_a_device_error_dooms_later_posts_of_that_qp_only() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Drop, &c, &c, &life);
    let b = qp(8, InError::Drop, &c, &c, &life);
    let s = sge();
    // The device kills QP 7 (an IBV_EVENT_QP_FATAL); the provider says so.
    lock(&a.raw().st).state = QpState::Error;
    life.qp_entered_error(7);
    life.qp_entered_error(99); // a number nobody has: ignored
    a.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let report = a.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (1, None), "{report}");
    // QP 8 was not told anything: its receive is waited for (and here completes).
    b.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    b.raw().receive();
    let report = b.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(
        (report.synthesized, report.completed_by_device),
        (0, 1),
        "{report}"
    );
    // A new QP under a destroyed one's number does not inherit the old QP's news.
    a.destroy().unwrap();
    drop(a);
    let again = qp(7, InError::Drop, &c, &c, &life);
    again.post_recv(&[RecvWr::new(3, &s)]).unwrap();
    again.raw().receive();
    assert_eq!(
        poll_all(&c.1).last().map(|c| (c.0, c.1)),
        Some((3, WcStatus::Success))
    );
}

/// A QP in ERROR is reset; while the reset moves aside what completed before it, another
/// thread brings the QP back to INIT and posts. Those WRs go to a QP that is not in ERROR: they
/// must not be doomed (an unsignaled send that ran would never be retired, and the drain would
/// report it flushed).
#[test]
fn a_send_posted_after_a_racing_reset_of_a_qp_in_error_is_not_doomed() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let s = sge();
    q.modify(QpState::Error).unwrap();
    lock(&c.0.1).poll = Some({
        let q = Arc::clone(&q);
        Box::new(move || {
            q.modify(QpState::Init).unwrap();
            q.post_send(&[SendWr::send(10, &sge()).with_flags(SendFlags::empty())])
                .unwrap();
        })
    });
    q.modify(QpState::Reset).unwrap();
    q.modify(QpState::ReadyToSend).unwrap();
    q.post_send(&[SendWr::send(11, &s)]).unwrap();
    q.raw().execute_sends(2);
    assert_eq!(poll_all(&c.1), [(11, WcStatus::Success, WcOpcode::Send, 7)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1),
        [],
        "send 10 succeeded (send 11 behind it did): {report}"
    );
}

#[test]
fn after_a_drain_only_error_is_accepted_and_posts_are_refused() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    q.drain(soon()).unwrap();
    assert_eq!(
        q.modify(QpState::ReadyToSend).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    q.modify(QpState::Error).unwrap();
    let s = sge();
    let e = q.post_send(&[SendWr::send(1, &s)]).unwrap_err();
    assert_eq!((e.accepted, e.kind()), (0, ErrorKind::InvalidState));
    q.destroy().unwrap();
    assert_eq!(q.state().unwrap_err().kind(), ErrorKind::Destroyed);
}

// ----- review findings -----

/// The provider's report that the device moved the QP to ERROR comes late — from an event
/// thread, after the ULP already reset the QP and brought it back. Believed blindly, it would
/// doom the next WRs: an unsignaled send that ran would be reported flushed by the drain, a
/// success the ULP takes for a failure. The kit believes it only if the device's state agrees.
#[test]
fn a_late_report_of_a_device_error_after_a_reset_dooms_nothing() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    // The device killed the QP; the ULP reset it and brought it back before the provider's
    // event thread got to the QP_FATAL.
    a.modify(QpState::Reset).unwrap();
    lock(&a.raw().st).state = QpState::ReadyToSend;
    life.qp_entered_error(7);
    a.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    a.post_send(&[SendWr::send(2, &s)]).unwrap();
    a.raw().execute_sends(2);
    let report = a.drain(soon()).unwrap();
    assert_eq!(report.synthesized, 0, "{report}");
    assert_eq!(
        poll_all(&c.1)
            .into_iter()
            .map(|c| (c.0, c.1))
            .collect::<Vec<_>>(),
        [(2, WcStatus::Success)],
        "the unsignaled send that ran is not reported flushed"
    );
}

/// A report that is true — the device's state says ERROR — still dooms what is posted after it.
#[test]
fn a_report_of_a_device_error_the_device_confirms_dooms_later_posts() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    lock(&a.raw().st).state = QpState::Error;
    life.qp_entered_error(7);
    // The first post takes the news, the second relies on what the kit made of it.
    for id in [1, 2] {
        a.post_send(&[SendWr::send(id, &s).with_flags(SendFlags::empty())])
            .unwrap();
    }
    let report = a.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (2, None), "{report}");
    assert_eq!(
        poll_all(&c.1)
            .into_iter()
            .map(|c| (c.0, c.1))
            .collect::<Vec<_>>(),
        [(1, WcStatus::WrFlushError), (2, WcStatus::WrFlushError)]
    );
}

/// The other side of a reset's stale errors (`resetting`): while a RESET moves aside what
/// completed before it, another thread brings the QP back and posts, and the device fails that
/// new WR (moving the QP to ERROR). Its error completion is not stale — the WR came after the
/// reset — so it tells the kit the QP is in ERROR, and the next post is doomed. A WR posted
/// before the reset whose error arrives in the same poll stays stale.
#[test]
fn an_error_of_a_wr_posted_during_a_reset_still_tells_the_kit_of_error() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Drop, &c, &c, &life));
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let before = {
        let st = lock(&q.raw().st);
        q.raw().completion(st.rq[0], WcStatus::WrFlushError)
    };
    lock(&c.0.1).poll = Some({
        let q = Arc::clone(&q);
        Box::new(move || {
            // The device had failed receive 1 before the RESET: its error is stale.
            q.raw().scq.push(before);
            q.modify(QpState::Init).unwrap();
            q.post_recv(&[RecvWr::new(2, &sge())]).unwrap();
            // The device fails receive 2 and moves the QP to ERROR on its own.
            let mut st = lock(&q.raw().st);
            st.state = QpState::Error;
            q.raw().flush_all(&mut st);
        })
    });
    q.modify(QpState::Reset).unwrap();
    // Both are delivered: what completed before the RESET, and the new receive's flush.
    assert_eq!(
        poll_all(&c.1),
        [
            (1, WcStatus::WrFlushError, WcOpcode::Recv, 7),
            (2, WcStatus::WrFlushError, WcOpcode::Recv, 7)
        ]
    );
    // The kit knows the QP is in ERROR: receive 3, which the device drops, is doomed.
    q.post_recv(&[RecvWr::new(3, &s)]).unwrap();
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (1, None), "{report}");
}
