//! Drain at its edges: an unsignaled send posted in ERROR, a CQ overflow before the drain, an
//! erdma drain after CLOSING, the rxe receive marker that needs a second move to ERROR.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Fault, Listener,
    MemoryRegion, Provider, QpInit, QpState, QueuePair, RecvWr, SendFlags, SendOp, SendWr,
    WcStatus,
};
use anyverbs_provider_mock::{
    FabricConfig, MockCq, MockDevice, MockListener, MockPd, MockProvider, MockQp,
};

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(500)
}

fn poll_all(cq: &MockCq) -> Vec<(u64, WcStatus)> {
    let mut got = Vec::new();
    let mut buf = [Completion::default(); 64];
    loop {
        let n = cq.poll(&mut buf).expect("poll");
        if n == 0 {
            return got;
        }
        got.extend(buf[..n].iter().map(|c| (c.wr_id, c.status)));
    }
}

/// Fields drop in order: QPs before CQs before the PD.
struct Pair {
    a: MockQp,
    b: MockQp,
    _listener: MockListener,
    cq_a: MockCq,
    cq_b: MockCq,
    pd: MockPd,
    _device: MockDevice,
}

fn pair(p: &MockProvider, device: &str) -> Pair {
    let d = p.open(device).unwrap();
    let pd = d.alloc_pd().unwrap();
    let (cq_a, cq_b) = (d.create_cq(64).unwrap(), d.create_cq(64).unwrap());
    let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let addr = SocketAddr::new(d.ports().unwrap()[0].addresses[0], 0);
    let listener = d.listen(addr).unwrap();
    a.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let request = listener.next_request(soon()).unwrap();
    listener
        .accept(&request, &b, &ConnParams::default())
        .unwrap();
    a.wait_connected(soon()).unwrap();
    Pair {
        a,
        b,
        _listener: listener,
        cq_a,
        cq_b,
        pd,
        _device: d,
    }
}

/// The X722 loses the first WR posted in ERROR. An unsignaled send lost that way never ran, so
/// the drain must give it a flush completion instead of retiring it as a silent success —
/// alone, and with a signaled WR behind it whose flush used to retire it.
#[test]
fn an_unsignaled_send_posted_in_error_is_never_a_silent_success() {
    for with_signaled_behind in [false, true] {
        let p = MockProvider::new();
        let x = pair(&p, "mocklost0");
        let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
        x.a.modify(QpState::Error).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        poll_all(&x.cq_a);
        let mut wrs =
            vec![SendWr::single(111, SendOp::Send, mr.sge(0, 8)).with_flags(SendFlags::empty())];
        if with_signaled_behind {
            wrs.push(SendWr::single(222, SendOp::Send, mr.sge(0, 8)));
        }
        x.a.post_send(&wrs).unwrap();
        let report = x.a.drain(soon()).unwrap();
        let got = poll_all(&x.cq_a);
        assert!(
            got.contains(&(111, WcStatus::WrFlushError)),
            "with a signaled WR behind: {with_signaled_behind}; {report}; got {got:?}"
        );
    }
}

/// Completions lost to CQ overflow before the drain was called break "every WR completes
/// exactly once": the drain must say so.
#[test]
fn overflow_before_the_drain_is_reported() {
    let p = MockProvider::new();
    let d = p.open("mock0").unwrap();
    let pd = d.alloc_pd().unwrap();
    let cq = d.create_cq(2).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    qp.modify(QpState::Init).unwrap();
    let recvs: Vec<RecvWr> = (0..4).map(|i| RecvWr::single(i, mr.sge(0, 8))).collect();
    qp.post_recv(&recvs).unwrap();
    qp.modify(QpState::Error).unwrap(); // four flushes into a CQ of two
    let e = qp.drain(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
}

/// erdma drains with a marker only in RTS; after a graceful CLOSING no send can be posted, so
/// the drain must not fall back and must not report a send that succeeded as flushed.
#[test]
fn erdma_drain_after_closing_needs_no_fallback() {
    let p = MockProvider::new();
    let x = pair(&p, "mockerdma0");
    let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
    x.b.post_recv(&[RecvWr::new(9, &[mr.sge(0, 8)])]).unwrap();
    x.a.post_send(&[SendWr::send(5, &[mr.sge(0, 8)]).with_flags(SendFlags::empty())])
        .unwrap();
    assert_eq!(poll_all(&x.cq_b), [(9, WcStatus::Success)]);
    x.a.modify(QpState::Closing).unwrap();
    let report = x.a.drain(soon()).unwrap();
    assert_eq!(report.fallback, None, "{report}");
    assert_eq!(
        poll_all(&x.cq_a),
        [],
        "the unsignaled send succeeded: {report}"
    );
}

/// The rxe fact behind `repeat_error_for_recv`: a receive marker posted in ERROR completes only
/// after another move to ERROR, so without the repetition the drain falls back.
#[test]
fn rxe_receive_marker_needs_the_repeated_error() {
    use anyverbs::{DrainPlan, Fallback};
    for (repeat, expected) in [(true, None), (false, Some(Fallback::DeadlinePassed))] {
        let p = MockProvider::new();
        let dev = p.open("mockrxe0").unwrap();
        let pd = dev.alloc_pd().unwrap();
        let cq = dev.create_cq(16).unwrap();
        let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
        qp.modify(QpState::Init).unwrap();
        qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])]).unwrap();
        let plan = DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: repeat,
        };
        let deadline = Instant::now() + Duration::from_millis(100);
        let report = qp.drain_with(|_| plan, deadline).unwrap();
        assert_eq!(report.fallback, expected, "repeat_error_for_recv: {repeat}");
        assert_eq!(poll_all(&cq), [(1, WcStatus::WrFlushError)]);
    }
}

/// A ULP with a thread that keeps polling its CQ (the usual completion loop) while it drains a
/// QP on a device that flushes asynchronously: the poller, not the drain, takes the marker's
/// completion from the ring. The drain must notice and return, not sleep until its deadline.
#[test]
fn a_drain_returns_promptly_while_the_ulp_keeps_polling() {
    for device in ["mockrxe0", "mockirdma0"] {
        for round in 0..5 {
            let p = MockProvider::new();
            let x = pair(&p, device);
            let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
            x.a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])]).unwrap();
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (report, seen) = std::thread::scope(|s| {
                let poller = s.spawn(|| {
                    let mut seen = Vec::new();
                    let mut buf = [Completion::default(); 16];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let n = x.cq_a.poll(&mut buf).unwrap();
                        seen.extend(buf[..n].iter().map(|c| (c.wr_id, c.status)));
                    }
                    seen
                });
                std::thread::sleep(Duration::from_millis(5));
                let report = x.a.drain(Instant::now() + Duration::from_secs(2)).unwrap();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                (report, poller.join().unwrap())
            });
            let mut seen = seen;
            seen.extend(poll_all(&x.cq_a));
            assert_eq!(seen, [(1, WcStatus::WrFlushError)], "{device}: {report}");
            assert_eq!(report.fallback, None, "{device}: {report}");
            assert!(
                report.elapsed < Duration::from_millis(500),
                "{device}, round {round}: the drain slept until its deadline: {report}"
            );
        }
    }
}

/// An unsignaled send still waiting for its ACK when the drain starts never ran: ERROR flushes
/// it. On a device that flushes asynchronously and is drained without a marker (the X722's
/// WaitForFlush), the drain must not take it for a silent success before its flush arrives.
///
/// The kit once settled such a send as a silent success (its flush, 2 ms later, dropped as
/// stale); it now posts a signaled marker behind it before ERROR.
#[test]
fn an_unsignaled_send_the_device_had_not_run_is_not_a_silent_success() {
    for device in ["mockiw0", "mocklost0"] {
        let p = MockProvider::with_config(FabricConfig {
            // The send waits for its ACK through the whole test.
            ack_timeout: Duration::from_secs(10),
            ..FabricConfig::default()
        });
        let x = pair(&p, device);
        let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
        p.inject(
            device,
            &Fault::LosePeer {
                qp_num: x.a.qp_num(),
            },
        )
        .unwrap();
        x.a.post_send(&[SendWr::send(111, &[mr.sge(0, 8)]).with_flags(SendFlags::empty())])
            .unwrap();
        let report = x.a.drain(soon()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let got = poll_all(&x.cq_a);
        assert_eq!(
            got,
            [(111, WcStatus::WrFlushError)],
            "{device}: the send never ran; {report}"
        );
    }
}

/// A receive that completed successfully sits in its own CQ, which the ULP has not polled; the
/// device then hangs (a silent stall) with a send outstanding, and the drain falls back at its
/// deadline. The receive's data arrived: the ULP must get its success, not a synthesized flush.
#[test]
fn a_fallback_keeps_a_success_waiting_in_the_other_cq() {
    let p = MockProvider::new();
    let d = p.open("mock0").unwrap();
    let pd = d.alloc_pd().unwrap();
    let (send_cq, recv_cq, cq_b) = (
        d.create_cq(16).unwrap(),
        d.create_cq(16).unwrap(),
        d.create_cq(16).unwrap(),
    );
    let a = pd
        .create_qp(&send_cq, &recv_cq, &QpInit::default())
        .unwrap();
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let addr = SocketAddr::new(d.ports().unwrap()[0].addresses[0], 0);
    let listener = d.listen(addr).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    a.modify(QpState::Init).unwrap();
    a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])]).unwrap();
    a.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let request = listener.next_request(soon()).unwrap();
    listener
        .accept(&request, &b, &ConnParams::default())
        .unwrap();
    a.wait_connected(soon()).unwrap();
    b.post_send(&[SendWr::send(9, &[mr.sge(8, 8)])]).unwrap();
    assert_eq!(poll_all(&cq_b), [(9, WcStatus::Success)]);
    p.inject("mock0", &Fault::Stall).unwrap();
    a.post_send(&[SendWr::send(2, &[mr.sge(16, 8)])]).unwrap();
    let report = a
        .drain(Instant::now() + Duration::from_millis(200))
        .unwrap();
    assert!(report.fallback.is_some(), "{report}");
    assert_eq!(poll_all(&recv_cq), [(1, WcStatus::Success)], "{report}");
    assert_eq!(
        poll_all(&send_cq),
        [(2, WcStatus::WrFlushError)],
        "{report}"
    );
}

/// A QP the device moved to ERROR on its own (a fatal error), on devices that drop what is
/// posted in ERROR: a receive posted before anyone polled the error is never completed by the
/// device, and the drain must know that at once instead of waiting for it until its deadline.
#[test]
fn a_qp_the_device_killed_drains_without_waiting_for_what_it_drops() {
    use anyverbs::Fault;
    // Real siw kills a QP on its own (CLOSING with sends outstanding) but cannot have one
    // killed on demand: let the mock's siw do what the real one cannot.
    let mut config = anyverbs_provider_mock::FabricConfig::default();
    for d in &mut config.devices {
        d.faults = anyverbs::Faults::all();
    }
    for device in ["mocksiw0", "mocklost0"] {
        let p = MockProvider::with_config(config.clone());
        let x = pair(&p, device);
        let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
        p.inject(
            device,
            &Fault::KillQp {
                qp_num: x.a.qp_num(),
            },
        )
        .unwrap();
        x.a.post_recv(&[RecvWr::new(7, &[mr.sge(0, 8)])]).unwrap();
        let report = x.a.drain(soon()).unwrap();
        assert_eq!(report.fallback, None, "{device}: {report}");
        assert!(
            report.elapsed < Duration::from_millis(200),
            "{device}: {report}"
        );
        assert_eq!(
            poll_all(&x.cq_a),
            [(7, WcStatus::WrFlushError)],
            "{device}: {report}"
        );
    }
}
