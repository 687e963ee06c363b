//! Completions resolved when polled: routing, tokens, refused batches, RESET.

use super::*;

#[test]
fn completions_are_resolved_when_polled_and_markers_never_reach_the_ulp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(100, &s), SendWr::send(101, &s)])
        .unwrap();
    q.post_recv(&[RecvWr::new(200, &s)]).unwrap();
    // The raw ring holds tokens, not the ULP's ids.
    q.raw().execute_sends(1);
    assert_ne!(lock(&c.0.0.0).entries[0].wr_id, 100);
    assert_eq!(
        poll_all(&c.1),
        [(100, WcStatus::Success, WcOpcode::Send, 7)]
    );
    let report = q.drain(soon()).unwrap();
    assert_eq!((report.completed_by_device, report.synthesized), (2, 0));
    assert_eq!(report.fallback, None);
    // The flushes, with the ULP's ids and meaningful opcodes; the markers swallowed.
    assert_eq!(
        poll_all(&c.1),
        [
            (101, WcStatus::WrFlushError, WcOpcode::Send, 7),
            (200, WcStatus::WrFlushError, WcOpcode::Recv, 7)
        ]
    );
    assert_eq!(c.1.unrouted(), 0);
}

#[test]
fn a_shared_cq_routes_each_completion_to_its_own_qp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    // Both QPs use the same ULP ids: only the token tells them apart.
    a.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    b.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    b.raw().receive();
    a.raw().receive();
    a.raw().receive();
    let got = poll_all(&c.1);
    assert_eq!(
        got.iter().map(|c| (c.0, c.3)).collect::<Vec<_>>(),
        [(1, 8), (1, 7), (2, 7)]
    );
}

#[test]
fn a_late_completion_under_a_reused_qp_number_resolves_nowhere() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    old.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // The old QP's device completion, captured before it is destroyed without a drain.
    let late = {
        let st = lock(&old.raw().st);
        old.raw().completion(st.rq[0], WcStatus::WrFlushError)
    };
    old.destroy().unwrap();
    // The kernel gives number 7 to a new QP with a receive of the same sequence outstanding.
    let new = qp(7, InError::Flush, &c, &c, &life);
    new.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    c.0.push(late);
    assert_eq!(poll_all(&c.1), [], "the old QP's flush is not the new QP's");
    new.raw().receive();
    assert_eq!(poll_all(&c.1), [(2, WcStatus::Success, WcOpcode::Recv, 7)]);
}

#[test]
fn a_refused_batch_loses_nothing_and_counts_exactly() {
    let life = DeviceLife::new();
    let c = cq(32, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    let wrs: Vec<RecvWr> = (0..10).map(|i| RecvWr::new(i, &s)).collect();
    let e = q.post_recv(&wrs).unwrap_err();
    assert_eq!((e.accepted, e.kind()), (8, ErrorKind::ResourceExhausted));
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 8, "{report}");
    let ids: Vec<u64> = poll_all(&c.1).iter().map(|c| c.0).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
}

#[test]
fn a_reset_delivers_what_completed_before_it_and_forgets_the_rest() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    q.raw().receive();
    q.modify(QpState::Reset).unwrap();
    assert_eq!(poll_all(&c.1), [(1, WcStatus::Success, WcOpcode::Recv, 7)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 0, "RESET discarded receive 2: {report}");
}

/// A thread moves the QP to RESET while another brings it back to INIT and posts a receive:
/// the receive posted after the RESET must not be forgotten with the ones the RESET discarded.
#[test]
fn a_receive_posted_after_a_racing_reset_is_not_forgotten() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // While the reset moves aside what completed before it, the other thread goes on.
    lock(&c.0.1).poll = Some({
        let q = Arc::clone(&q);
        Box::new(move || {
            q.modify(QpState::Init).unwrap();
            q.post_recv(&[RecvWr::new(2, &sge())]).unwrap();
        })
    });
    q.modify(QpState::Reset).unwrap();
    q.raw().receive();
    assert_eq!(poll_all(&c.1), [(2, WcStatus::Success, WcOpcode::Recv, 7)]);
}
