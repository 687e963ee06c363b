//! A connection that goes down with one of its QPs, as the surviving end's connection manager
//! reports it: `DeviceEvent::Disconnected` for the survivor, exactly once, and only when the
//! gone end's side could still say so (its connection was not already cut, its device works).
//!
//! On InfiniBand, destroying a connected QP destroys its CM ID, which sends a DREQ; the peer's
//! CM reports `RDMA_CM_EVENT_DISCONNECTED` and leaves its QP in the state it was in (the kernel's
//! CM and librdmacm change no QP state on a DREQ). Moving a QP to ERROR sends nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, DeviceEvent, EventStream, Fault,
    Listener, MemoryRegion, Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, WcStatus,
};
use anyverbs_provider_mock::{
    MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// How long a test watches a stream for an event that must not come.
const QUIET: Duration = Duration::from_millis(50);

/// `a` on `device_a` connected (actively) to `b` on `device_b`; fields drop QPs first.
struct Pair {
    a: MockQp,
    b: MockQp,
    _listener: MockListener,
    cq_a: MockCq,
    cq_b: MockCq,
    mr: MockMr,
    _mr_b: MockMr,
    _pd_a: MockPd,
    pd_b: MockPd,
    dev_a: MockDevice,
    dev_b: MockDevice,
}

fn pair_with(p: &MockProvider, device_a: &str, device_b: &str, params: &ConnParams) -> Pair {
    let dev_a = p.open(device_a).unwrap();
    let dev_b = p.open(device_b).unwrap();
    let (pd_a, pd_b) = (dev_a.alloc_pd().unwrap(), dev_b.alloc_pd().unwrap());
    let (cq_a, cq_b) = (dev_a.create_cq(64).unwrap(), dev_b.create_cq(64).unwrap());
    let a = pd_a.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
    let b = pd_b.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let mr = pd_a.register(4096, Access::LOCAL_WRITE).unwrap();
    let mr_b = pd_b.register(4096, Access::LOCAL_WRITE).unwrap();
    let addr = SocketAddr::new(dev_b.ports().unwrap()[0].addresses[0], 0);
    let listener = dev_b.listen(addr).unwrap();
    a.connect(listener.local_addr(), params).unwrap();
    let request = listener.next_request(soon()).unwrap();
    listener.accept(&request, &b, params).unwrap();
    a.wait_connected(soon()).unwrap();
    Pair {
        a,
        b,
        _listener: listener,
        cq_a,
        cq_b,
        mr,
        _mr_b: mr_b,
        _pd_a: pd_a,
        pd_b,
        dev_a,
        dev_b,
    }
}

fn pair(p: &MockProvider, device_a: &str, device_b: &str) -> Pair {
    pair_with(p, device_a, device_b, &ConnParams::default())
}

/// Every event `events` delivers within [`QUIET`].
fn quiet_events(events: &EventStream<DeviceEvent>) -> Vec<DeviceEvent> {
    let until = Instant::now() + QUIET;
    let mut got = Vec::new();
    while let Ok(e) = events.recv(until) {
        got.push(e);
    }
    got
}

/// Every completion in `cq` now, as (wr_id, status).
fn drain_cq(cq: &MockCq) -> Vec<(u64, WcStatus)> {
    let mut got = Vec::new();
    let mut wc = [Completion::default(); 64];
    loop {
        let n = cq.poll(&mut wc).expect("poll");
        if n == 0 {
            return got;
        }
        got.extend(wc[..n].iter().map(|c| (c.wr_id, c.status)));
    }
}

#[test]
fn an_infiniband_peer_destroyed_is_reported_once_and_leaves_the_survivor_as_it_was() {
    let provider = MockProvider::new();
    let p = pair_with(
        &provider,
        "mock0",
        "mock1",
        &ConnParams {
            retry_count: 0,
            ..ConnParams::default()
        },
    );
    let events = p.dev_b.events().unwrap();
    let mr_b = p.pd_b.register(64, Access::LOCAL_WRITE).unwrap();
    p.b.post_recv(&[RecvWr::new(1, &[mr_b.sge(0, 64)])])
        .unwrap();
    p.a.drain(soon()).unwrap();
    assert_eq!(
        quiet_events(&events),
        vec![],
        "a QP moved to ERROR (here by its drain) sends nothing on InfiniBand"
    );
    p.a.destroy().unwrap();
    assert_eq!(
        quiet_events(&events),
        vec![DeviceEvent::Disconnected {
            qp_num: p.b.qp_num()
        }],
        "the DREQ of the destroyed end, reported once"
    );
    // The DREQ changes no QP state: the survivor is still in RTS, its receive still posted.
    assert_eq!(p.b.state().unwrap(), QpState::ReadyToSend);
    assert_eq!(drain_cq(&p.cq_b), vec![]);
    // It learns nothing more: a send finds nobody, fails after the retries, and the QP goes to
    // ERROR without a second Disconnected.
    p.b.post_send(&[SendWr::send(2, &[mr_b.sge(0, 8)])])
        .unwrap();
    let mut wc = [Completion::default(); 4];
    let n = p.cq_b.wait(&mut wc, soon()).unwrap();
    assert_eq!(
        (wc[0].wr_id, wc[0].status),
        (2, WcStatus::TransportRetryExceeded)
    );
    let mut got: Vec<(u64, WcStatus)> = wc[1..n].iter().map(|c| (c.wr_id, c.status)).collect();
    got.extend(drain_cq(&p.cq_b));
    assert_eq!(got, vec![(1, WcStatus::WrFlushError)]);
    assert_eq!(p.b.state().unwrap(), QpState::Error);
    assert_eq!(quiet_events(&events), vec![]);
}

#[test]
fn an_infiniband_peer_destroyed_on_the_same_device_is_reported_for_the_survivor_only() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock0");
    let events = p.dev_a.events().unwrap();
    p.b.destroy().unwrap();
    assert_eq!(
        quiet_events(&events),
        vec![DeviceEvent::Disconnected {
            qp_num: p.a.qp_num()
        }]
    );
    p.a.destroy().unwrap();
    assert_eq!(quiet_events(&events), vec![], "nobody is left to tell");
}

#[test]
fn an_infiniband_qp_killed_or_moved_to_error_sends_nothing() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_b.events().unwrap();
    p.a.modify(QpState::Error).unwrap();
    provider
        .inject(
            "mock0",
            &Fault::KillQp {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap();
    assert_eq!(quiet_events(&events), vec![]);
    assert_eq!(p.b.state().unwrap(), QpState::ReadyToSend);
}

#[test]
fn a_cut_connection_sends_no_dreq() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_b.events().unwrap();
    provider
        .inject(
            "mock0",
            &Fault::LosePeer {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap();
    p.a.destroy().unwrap();
    assert_eq!(quiet_events(&events), vec![]);
}

#[test]
fn the_dead_end_of_a_lost_device_sends_no_dreq() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_b.events().unwrap();
    provider.inject("mock0", &Fault::Unplug).unwrap();
    p.a.destroy().unwrap();
    assert_eq!(quiet_events(&events), vec![]);
    assert_eq!(p.b.state().unwrap(), QpState::ReadyToSend);
}

#[test]
fn a_dead_device_sends_no_dreq() {
    let provider = MockProvider::new();
    // mockdead0: an InfiniBand device that died without telling anyone.
    let p = pair(&provider, "mockdead0", "mock0");
    let events = p.dev_b.events().unwrap();
    p.a.destroy().unwrap();
    assert_eq!(quiet_events(&events), vec![]);
}

#[test]
fn a_drain_that_stopped_the_hardware_qp_still_leaves_the_dreq_to_destroy() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_b.events().unwrap();
    p.a.post_recv(&[RecvWr::new(1, &[p.mr.sge(0, 64)])])
        .unwrap();
    // A stalled device flushes nothing: the drain falls back and stops the hardware QP.
    provider.inject("mock0", &Fault::Stall).unwrap();
    let report =
        p.a.drain(Instant::now() + Duration::from_millis(20))
            .unwrap();
    assert!(report.fallback.is_some(), "{report}");
    assert_eq!(drain_cq(&p.cq_a), vec![(1, WcStatus::WrFlushError)]);
    provider.inject("mock0", &Fault::Resume).unwrap();
    assert_eq!(quiet_events(&events), vec![], "stopping a QP sends nothing");
    p.a.destroy().unwrap();
    assert_eq!(
        quiet_events(&events),
        vec![DeviceEvent::Disconnected {
            qp_num: p.b.qp_num()
        }]
    );
}

// ----- iWARP: the connection is a TCP stream; its close is IW_CM_EVENT_CLOSE at the peer,
// which the RDMA CM reports as RDMA_CM_EVENT_DISCONNECTED, and the peer's QP goes to ERROR. -----

/// Checks that `b` was torn down with its connection: in ERROR, its receive 1 flushed, and one
/// `Disconnected` for it on `events`.
#[track_caller]
fn torn_down(p: &Pair, events: &EventStream<DeviceEvent>) {
    assert_eq!(
        quiet_events(events),
        vec![DeviceEvent::Disconnected {
            qp_num: p.b.qp_num()
        }]
    );
    assert_eq!(p.b.state().unwrap(), QpState::Error);
    assert_eq!(drain_cq(&p.cq_b), vec![(1, WcStatus::WrFlushError)]);
}

/// `pair` on `device_a` and `device_b`, with a receive (wr_id 1) posted at `b`.
fn pair_with_receive(p: &MockProvider, device_a: &str, device_b: &str) -> Pair {
    let pair = pair(p, device_a, device_b);
    let mr_b = pair.pd_b.register(64, Access::LOCAL_WRITE).unwrap();
    pair.b
        .post_recv(&[RecvWr::new(1, &[mr_b.sge(0, 64)])])
        .unwrap();
    pair
}

#[test]
fn an_iwarp_peer_destroyed_without_a_drain_tears_the_survivor_down_and_says_so() {
    let provider = MockProvider::new();
    let p = pair_with_receive(&provider, "mockiw0", "mockiw0");
    let events = p.dev_b.events().unwrap();
    p.a.destroy().unwrap();
    torn_down(&p, &events);
}

#[test]
fn an_iwarp_peer_drained_and_destroyed_is_reported_once() {
    let provider = MockProvider::new();
    let p = pair_with_receive(&provider, "mockiw0", "mockiw0");
    let events = p.dev_b.events().unwrap();
    p.a.drain(soon()).unwrap();
    p.a.destroy().unwrap();
    torn_down(&p, &events);
}

#[test]
fn an_iwarp_close_is_reported_to_the_peer() {
    let provider = MockProvider::new();
    let p = pair_with_receive(&provider, "mockiw0", "mockiw0");
    let events = p.dev_b.events().unwrap();
    p.a.modify(QpState::Closing).unwrap();
    torn_down(&p, &events);
    p.a.destroy().unwrap();
    assert_eq!(quiet_events(&events), vec![]);
}
