//! Event publishing: what the kit does with each event the provider reports, before the ULP
//! sees it.

use super::*;

/// A QP's fatal error, reported as an event: the ULP sees the event, and the kit already knows
/// the QP is in ERROR when the ULP reacts by draining it (a receive posted on a device that
/// drops posts in ERROR is not waited for).
#[test]
fn a_qp_error_event_marks_the_qp_in_error_before_the_ulp_sees_it() {
    for event in [
        DeviceEvent::QpFatal { qp_num: 7 },
        DeviceEvent::QpRequestError { qp_num: 7 },
        DeviceEvent::QpAccessError { qp_num: 7 },
    ] {
        let life = DeviceLife::new();
        let events = life.subscribe().unwrap();
        let c = cq(16, &life);
        let a = qp(7, InError::Drop, &c, &c, &life);
        lock(&a.raw().st).state = QpState::Error;
        life.report(event.clone());
        assert_eq!(events.try_recv().unwrap(), Some(event.clone()));
        let s = sge();
        a.post_recv(&[RecvWr::new(1, &s)]).unwrap();
        let report = a
            .drain_with(
                |_| DrainPlan::WaitForFlush,
                Instant::now() + Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(
            (report.synthesized, report.fallback),
            (1, None),
            "{event}: {report}"
        );
    }
}

/// A device's last event: every handle fails with `DeviceLost` at once, the streams end right
/// behind the event, a late subscriber is refused, and what comes after is not published.
#[test]
fn a_device_loss_event_loses_the_device_and_ends_the_streams_behind_it() {
    let life = DeviceLife::new();
    let events = life.subscribe().unwrap();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    life.report(DeviceEvent::PortDown { port: 1 });
    life.report(DeviceEvent::DeviceRemoved);
    life.report(DeviceEvent::DeviceFatal); // after the end: dropped
    life.report(DeviceEvent::QpFatal { qp_num: 7 }); // likewise
    assert!(life.is_lost());
    let s = sge();
    assert_eq!(
        a.post_recv(&[RecvWr::new(1, &s)]).unwrap_err().kind(),
        ErrorKind::DeviceLost
    );
    let mut out = [Completion::default(); 4];
    assert_eq!(
        c.1.poll(&mut out).unwrap_err().kind(),
        ErrorKind::DeviceLost
    );
    assert_eq!(
        events.try_recv().unwrap(),
        Some(DeviceEvent::PortDown { port: 1 })
    );
    assert_eq!(events.try_recv().unwrap(), Some(DeviceEvent::DeviceRemoved));
    let end = events.try_recv().unwrap_err();
    assert_eq!(end.kind(), ErrorKind::DeviceLost);
    assert!(end.to_string().contains("removed"), "{end}");
    assert_eq!(life.subscribe().unwrap_err().kind(), ErrorKind::DeviceLost);
}

/// A provider that learns of the loss without an event (a monitor's rescan) names the last
/// event and the reason itself; the first loss wins.
#[test]
fn the_first_loss_wins_and_names_the_errors() {
    let life = DeviceLife::new();
    let events = life.subscribe().unwrap();
    life.lose(DeviceEvent::DeviceFatal, "device toy0 had a fatal error");
    life.lose(DeviceEvent::DeviceRemoved, "device toy0 was removed");
    assert_eq!(events.try_recv().unwrap(), Some(DeviceEvent::DeviceFatal));
    let end = events.try_recv().unwrap_err();
    assert!(end.to_string().contains("fatal error"), "{end}");
    let e = life.check().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceLost);
    assert!(e.to_string().contains("fatal error"), "{e}");
}
