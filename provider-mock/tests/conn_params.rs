//! The CM's parameters on the mock: READ credits of 0 fail READs and atomics, and each
//! connection's own ACK timeout and minimum RNR timer set how long a stalled send waits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, Fault, Listener, MemoryRegion,
    Provider, QpInit, QueuePair, SendOp, SendWr, WcStatus,
};
use anyverbs_provider_mock::{
    FabricConfig, MockCq, MockDevice, MockListener, MockProvider, MockQp,
};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Fields drop in order: QPs before CQs.
struct Pair {
    a: MockQp,
    _b: MockQp,
    _listener: MockListener,
    cq: MockCq,
    pd: anyverbs_provider_mock::MockPd,
    _device: MockDevice,
}

fn pair(p: &MockProvider, client: &ConnParams, server: &ConnParams) -> Pair {
    pair_on(p, "mock0", client, server)
}

fn pair_on(p: &MockProvider, device: &str, client: &ConnParams, server: &ConnParams) -> Pair {
    let d = p.open(device).unwrap();
    let pd = d.alloc_pd().unwrap();
    let cq = d.create_cq(64).unwrap();
    let a = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let b = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let addr = SocketAddr::new(d.ports().unwrap()[0].addresses[0], 0);
    let listener = d.listen(addr).unwrap();
    a.connect(listener.local_addr(), client).unwrap();
    let request = listener.next_request(soon()).unwrap();
    listener.accept(&request, &b, server).unwrap();
    a.wait_connected(soon()).unwrap();
    Pair {
        a,
        _b: b,
        _listener: listener,
        cq,
        pd,
        _device: d,
    }
}

fn one(cq: &MockCq) -> Completion {
    let mut c = [Completion::default()];
    assert_eq!(cq.wait(&mut c, soon()).unwrap(), 1);
    c[0]
}

#[test]
fn a_read_on_a_connection_without_credits_fails_as_an_invalid_request() {
    let p = MockProvider::new();
    // The acceptor serves no READs: the requester's initiator depth becomes 0.
    let x = pair(
        &p,
        &ConnParams::default(),
        &ConnParams {
            responder_resources: Some(0),
            ..ConnParams::default()
        },
    );
    let access = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC;
    let mr = x.pd.register(64, access).unwrap();
    x.a.post_send(&[SendWr::new(1, SendOp::Read(mr.remote(0)), &[mr.sge(32, 8)])])
        .unwrap();
    let c = one(&x.cq);
    assert_eq!((c.wr_id, c.status), (1, WcStatus::RemoteInvalidRequest));

    // An atomic needs the same credits.
    let y = pair(
        &p,
        &ConnParams {
            initiator_depth: Some(0),
            ..ConnParams::default()
        },
        &ConnParams::default(),
    );
    let mr = y.pd.register(64, access).unwrap();
    y.a.post_send(&[SendWr::fetch_add(2, mr.sge(0, 8), mr.remote(8), 1)])
        .unwrap();
    let c = one(&y.cq);
    assert_eq!((c.wr_id, c.status), (2, WcStatus::RemoteInvalidRequest));
    let mut value = [0; 8];
    mr.read(8, &mut value).unwrap();
    assert_eq!(value, [0; 8], "the refused atomic changed memory");
}

#[test]
fn a_connections_own_ack_timeout_bounds_how_long_a_silent_peer_takes_to_notice() {
    // The fabric's ACK timer is an hour: only the connection's own can fail the send in time.
    let p = MockProvider::with_config(FabricConfig {
        ack_timeout: Duration::from_secs(3600),
        ..FabricConfig::default()
    });
    let x = pair(
        &p,
        &ConnParams {
            retry_count: 1,
            ack_timeout: Some(Duration::from_millis(5)),
            ..ConnParams::default()
        },
        &ConnParams::default(),
    );
    let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
    p.inject(
        "mock0",
        &Fault::LosePeer {
            qp_num: x.a.qp_num(),
        },
    )
    .unwrap();
    let start = Instant::now();
    x.a.post_send(&[SendWr::send(3, &[mr.sge(0, 8)])]).unwrap();
    let c = one(&x.cq);
    assert_eq!((c.wr_id, c.status), (3, WcStatus::TransportRetryExceeded));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_responders_minimum_rnr_timer_paces_the_requesters_retries() {
    // The fabric's RNR timer is an hour; the responder asks for 2 ms, and the requester
    // retries once: its SEND fails with RNR retry exceeded within moments.
    let p = MockProvider::with_config(FabricConfig {
        rnr_timer: Duration::from_secs(3600),
        ..FabricConfig::default()
    });
    let x = pair(
        &p,
        &ConnParams {
            rnr_retry_count: 1,
            ..ConnParams::default()
        },
        &ConnParams {
            min_rnr_timer: Some(Duration::from_millis(2)),
            ..ConnParams::default()
        },
    );
    let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let start = Instant::now();
    x.a.post_send(&[SendWr::send(4, &[mr.sge(0, 8)])]).unwrap();
    let c = one(&x.cq);
    assert_eq!((c.wr_id, c.status), (4, WcStatus::RnrRetryExceeded));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn iwarp_checks_the_timers_but_keeps_its_own() {
    // iWARP has no ACK timeout or RNR timer (TCP retransmits on its own): a provider checks
    // them and ignores them (ConnParams' docs). An hour-long ACK timeout set on the connection
    // must not keep a send to a silent peer waiting; the fabric's own timer still applies.
    let p = MockProvider::new();
    let x = pair_on(
        &p,
        "mockiw0",
        &ConnParams {
            retry_count: 1,
            ack_timeout: Some(Duration::from_secs(3600)),
            ..ConnParams::default()
        },
        &ConnParams::default(),
    );
    let mr = x.pd.register(64, Access::LOCAL_WRITE).unwrap();
    p.inject(
        "mockiw0",
        &Fault::LosePeer {
            qp_num: x.a.qp_num(),
        },
    )
    .unwrap();
    x.a.post_send(&[SendWr::send(4, &[mr.sge(0, 8)])]).unwrap();
    let c = one(&x.cq);
    assert_eq!((c.wr_id, c.status), (4, WcStatus::TransportRetryExceeded));
}
