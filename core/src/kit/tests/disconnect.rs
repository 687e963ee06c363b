//! Disconnect: on a device whose orderly close needs quiet sends (iWARP), the kit waits for
//! them by completions, closes in order once they are quiet, and abruptly — never in order with
//! sends on the device — past the deadline or when no completion can tell.

use std::thread;

use super::*;
use crate::caps::Caps;

fn iwarp() -> DeviceLife {
    DeviceLife::with_caps(Caps::CLOSE_NEEDS_QUIET_SENDS)
}

#[test]
fn sends_that_complete_during_the_wait_make_the_close_orderly() {
    let life = iwarp();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s), SendWr::send(2, &s)])
        .unwrap();
    let device = Arc::clone(&q);
    let runs = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        device.raw().execute_sends(2);
    });
    let report = q.disconnect(soon()).unwrap();
    runs.join().unwrap();
    assert!(report.orderly, "{report}");
    assert_eq!(
        report.sends_outstanding, 0,
        "both completed before the close"
    );
    assert_eq!(lock(&q.raw().st).disconnects, [(true, 0)]);
    assert_eq!(q.raw().state().unwrap(), QpState::Closing);
    // The completions the wait put aside are the ULP's, once each.
    let got: Vec<_> = poll_all(&c.1).iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(got, [(1, WcStatus::Success), (2, WcStatus::Success)]);
}

#[test]
fn sends_still_outstanding_at_the_deadline_close_abruptly_and_flush() {
    let life = iwarp();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let start = Instant::now();
    let report = q
        .disconnect(Instant::now() + Duration::from_millis(30))
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!report.orderly, "{report}");
    assert_eq!(report.sends_outstanding, 1);
    // Never CLOSING with a send on the device.
    assert_eq!(lock(&q.raw().st).disconnects, [(false, 1)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 1);
    assert_eq!(
        poll_all(&c.1),
        [(1, WcStatus::WrFlushError, WcOpcode::Send, 7)]
    );
}

#[test]
fn an_unsignaled_send_no_completion_can_vouch_for_closes_abruptly_at_once() {
    let life = iwarp();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    q.raw().execute_sends(1); // ran, silently
    let start = Instant::now();
    let report = q.disconnect(soon()).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "it waited for nothing"
    );
    assert!(!report.orderly, "{report}");
    assert_eq!(lock(&q.raw().st).disconnects, [(false, 0)]);
}

#[test]
fn a_device_that_refuses_the_orderly_close_gets_an_abrupt_one() {
    // InfiniBand needs no quiet sends: the kit asks for an orderly close at once, which this
    // device refuses with a send on it; the kit then closes abruptly.
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let report = q.disconnect(soon()).unwrap();
    assert!(!report.orderly, "{report}");
    assert_eq!(lock(&q.raw().st).disconnects, [(true, 1), (false, 1)]);
}

#[test]
fn a_destroyed_qp_is_not_disconnected() {
    let life = iwarp();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    q.destroy().unwrap();
    let e = q.disconnect(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed);
}

#[test]
fn a_send_posted_while_the_close_is_decided_never_meets_an_orderly_close() {
    // The wait finds the send queue quiet; another thread posts before the device closes.
    // The post must not reach the device between the kit's verdict and the close: CLOSING
    // with a send on the device is what the wait exists to prevent (and a device refusing it
    // must not turn into a failed disconnect).
    let life = iwarp();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let poster = Arc::clone(&q);
    let posted = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&posted);
    lock(&q.raw().st).disconnect_hook = Some(Box::new(move || {
        let t = thread::spawn(move || {
            let s = sge();
            // Refused or flushed once the QP is closed: either way it never met CLOSING.
            let _ = poster.post_send(&[SendWr::send(1, &s)]);
        });
        // Time for the post to reach the device, unless the kit holds it off.
        thread::sleep(Duration::from_millis(50));
        *lock(&slot) = Some(t);
    }));
    let report = q.disconnect(soon());
    lock(&posted).take().unwrap().join().unwrap();
    let report = report.unwrap();
    assert!(report.orderly, "{report}");
    assert_eq!(lock(&q.raw().st).disconnects, [(true, 0)]);
}

#[test]
fn a_drained_qp_left_in_error_is_not_reported_closed_in_order() {
    let life = iwarp();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    q.drain(soon()).unwrap();
    let report = q.disconnect(soon()).unwrap();
    assert!(!report.orderly, "{report}");
}
