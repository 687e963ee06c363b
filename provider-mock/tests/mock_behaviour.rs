//! Behaviour specific to the mock that the provider-agnostic conformance suite does not cover:
//! CQ overflow, connections across devices, RNR resolved by a late receive, concurrent use, and
//! direct access to the mock's own regions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Listener, MemoryRegion,
    Provider, QpInit, QpState, QueuePair, RecvWr, SendOp, SendWr, WcStatus,
};
use anyverbs_provider_mock::{MockCq, MockDevice, MockPd, MockProvider, MockQp};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

struct End {
    qp: MockQp,
    cq: MockCq,
    pd: MockPd,
    dev: MockDevice,
}

fn end(provider: &MockProvider, device: &str, cq_depth: u32) -> End {
    let dev = provider.open(device).unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(cq_depth).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    End { qp, cq, pd, dev }
}

/// Connects `a` (active) to `b` (passive, listening on its device).
fn connect(a: &End, b: &End, params: &ConnParams) {
    let addr = b.dev.ports().unwrap()[0].addresses[0];
    let listener = b.dev.listen(SocketAddr::new(addr, 0)).unwrap();
    a.qp.connect(listener.local_addr(), params).unwrap();
    let req = listener.next_request(soon()).unwrap();
    listener.accept(&req, &b.qp, params).unwrap();
    a.qp.wait_connected(soon()).unwrap();
}

#[test]
fn qps_on_different_devices_connect_and_move_data() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock1", 16);
    connect(&a, &b, &ConnParams::default());
    let src = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let dst = b.pd.register(64, Access::LOCAL_WRITE).unwrap();
    src.write(0, b"across devices").unwrap();
    b.qp.post_recv(&[RecvWr::new(1, &[dst.sge(0, 64)])])
        .unwrap();
    a.qp.post_send(&[SendWr::send(2, &[src.sge(0, 14)])])
        .unwrap();
    let mut wc = [Completion::default(); 1];
    assert_eq!(b.cq.wait(&mut wc, soon()).unwrap(), 1);
    assert_eq!(
        (wc[0].wr_id, wc[0].status, wc[0].byte_len),
        (1, WcStatus::Success, 14)
    );
    let mut got = [0u8; 14];
    dst.read(0, &mut got).unwrap();
    assert_eq!(&got, b"across devices");
}

#[test]
fn infiniband_and_iwarp_devices_cannot_reach_each_other() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mockiw0", 16);
    let addr = b.dev.ports().unwrap()[0].addresses[0];
    let listener = b.dev.listen(SocketAddr::new(addr, 0)).unwrap();
    let e =
        a.qp.connect(listener.local_addr(), &ConnParams::default())
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable);
}

#[test]
fn providers_are_isolated_fabrics() {
    let (p1, p2) = (MockProvider::new(), MockProvider::new());
    let b = end(&p1, "mock0", 16);
    let a = end(&p2, "mock0", 16);
    let addr = b.dev.ports().unwrap()[0].addresses[0];
    let listener = b.dev.listen(SocketAddr::new(addr, 0)).unwrap();
    a.qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    // The other fabric never sees the request.
    let e = listener
        .next_request(Instant::now() + Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let e = a.qp.wait_connected(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn cq_overflow_is_reported_not_hidden() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 4);
    let mr = a.pd.register(1024, Access::LOCAL_WRITE).unwrap();
    a.qp.modify(QpState::Init).unwrap(); // RESET takes no receives and cannot go to ERROR
    let recvs: Vec<RecvWr> = (0..8)
        .map(|i| RecvWr::single(i, mr.sge(i as usize * 64, 64)))
        .collect();
    a.qp.post_recv(&recvs).unwrap();
    // Eight flush completions into a CQ of four.
    a.qp.modify(QpState::Error).unwrap();
    let mut wc = [Completion::default(); 16];
    let e = a.cq.poll(&mut wc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
    let e = a.cq.wait(&mut wc, soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow);
}

#[test]
fn rnr_wait_ends_when_the_peer_posts_a_receive() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock0", 16);
    connect(&a, &b, &ConnParams::default()); // rnr_retry_count 7: retry forever
    let mr = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let dst = b.pd.register(64, Access::LOCAL_WRITE).unwrap();
    a.qp.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])]).unwrap();
    let mut wc = [Completion::default(); 1];
    let e =
        a.cq.wait(&mut wc, Instant::now() + Duration::from_millis(30))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "the send waits on RNR");
    b.qp.post_recv(&[RecvWr::new(2, &[dst.sge(0, 64)])])
        .unwrap();
    assert_eq!(a.cq.wait(&mut wc, soon()).unwrap(), 1);
    assert_eq!((wc[0].wr_id, wc[0].status), (1, WcStatus::Success));
}

#[test]
fn rnr_retry_deadline_wakes_a_waiter_on_time() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock0", 16);
    let params = ConnParams {
        rnr_retry_count: 3,
        ..ConnParams::default()
    };
    connect(&a, &b, &params);
    let mr = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let start = Instant::now();
    a.qp.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])]).unwrap();
    let mut wc = [Completion::default(); 1];
    // Nobody posts or polls meanwhile: the wait itself must wake at the retry deadline.
    assert_eq!(a.cq.wait(&mut wc, soon()).unwrap(), 1);
    assert_eq!(wc[0].status, WcStatus::RnrRetryExceeded);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "3 retries of a 1 ms RNR timer took {:?}",
        start.elapsed()
    );
}

#[test]
fn concurrent_senders_and_pollers_lose_nothing() {
    const PER_THREAD: u64 = 500;
    let p = MockProvider::new();
    let a = Arc::new(end(&p, "mock0", 4096));
    let b = Arc::new(end(&p, "mock0", 4096));
    connect(&a, &b, &ConnParams::default());
    let src = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let dst = b.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let (sge_src, sge_dst) = (src.sge(0, 8), dst.sge(0, 64));
    let receiver = {
        let b = Arc::clone(&b);
        thread::spawn(move || {
            let mut ids = Vec::new();
            let mut wc = [Completion::default(); 32];
            let mut posted = 0;
            while ids.len() < 2 * PER_THREAD as usize {
                while posted < 2 * PER_THREAD && posted - (ids.len() as u64) < 32 {
                    b.qp.post_recv(&[RecvWr::new(posted, &[sge_dst])]).unwrap();
                    posted += 1;
                }
                let n = b.cq.wait(&mut wc, soon()).unwrap();
                for c in &wc[..n] {
                    assert_eq!(c.status, WcStatus::Success);
                    ids.push(c.wr_id);
                }
            }
            ids
        })
    };
    // As on hardware, a send's slot is free again once its completion is polled: the send CQ
    // is polled while the senders post.
    let send_poller = {
        let a = Arc::clone(&a);
        thread::spawn(move || {
            let mut send_ids = Vec::new();
            let mut wc = [Completion::default(); 64];
            while send_ids.len() < 2 * PER_THREAD as usize {
                let n = a.cq.wait(&mut wc, soon()).unwrap();
                send_ids.extend(wc[..n].iter().map(|c| c.wr_id));
            }
            send_ids
        })
    };
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let a = Arc::clone(&a);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let wr = SendWr::single(t * 1_000_000 + i, SendOp::Send, sge_src);
                    loop {
                        match a.qp.post_send(std::slice::from_ref(&wr)) {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                                thread::yield_now()
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let recv_ids = receiver.join().unwrap();
    assert_eq!(recv_ids, (0..2 * PER_THREAD).collect::<Vec<_>>());
    let send_ids = send_poller.join().unwrap();
    // Each thread's sends complete in its own posting order.
    for t in 0..2 {
        let mine: Vec<u64> = send_ids
            .iter()
            .copied()
            .filter(|id| id / 1_000_000 == t)
            .collect();
        assert_eq!(
            mine,
            (0..PER_THREAD)
                .map(|i| t * 1_000_000 + i)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn drain_fails_when_a_flush_is_lost_to_cq_overflow() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 2);
    let mr = a.pd.register(1024, Access::LOCAL_WRITE).unwrap();
    a.qp.modify(QpState::Init).unwrap();
    let recvs: Vec<RecvWr> = (0..4)
        .map(|i| RecvWr::single(i, mr.sge(i as usize * 64, 64)))
        .collect();
    a.qp.post_recv(&recvs).unwrap();
    let e = a.qp.drain(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
}

#[test]
fn overflow_moves_every_qp_on_the_cq_to_error() {
    let p = MockProvider::new();
    let dev = p.open("mock0").unwrap();
    let pd = dev.alloc_pd().unwrap();
    let small = dev.create_cq(1).unwrap();
    let other = dev.create_cq(16).unwrap();
    let q1 = pd.create_qp(&small, &small, &QpInit::default()).unwrap();
    let q2 = pd.create_qp(&other, &small, &QpInit::default()).unwrap();
    let mr = pd.register(256, Access::LOCAL_WRITE).unwrap();
    for q in [&q1, &q2] {
        q.modify(QpState::Init).unwrap();
        q.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])]).unwrap();
    }
    q1.modify(QpState::Error).unwrap(); // one flush fills the CQ
    q2.modify(QpState::Init).unwrap(); // any call is a progress step
    // The ring holds the CQ's depth plus a slot per attached queue for the drain's markers
    // (three here): four more flushes overflow it.
    let more: Vec<RecvWr> = (2..6).map(|i| RecvWr::single(i, mr.sge(64, 64))).collect();
    q1.post_recv(&more).unwrap();
    let mut wc = [Completion::default(); 4];
    assert_eq!(small.poll(&mut wc).unwrap_err().kind(), ErrorKind::Overflow);
    assert_eq!(
        q2.state().unwrap(),
        QpState::Error,
        "a CQ error fails its QPs"
    );
}

#[test]
fn numbers_are_never_reused_while_live() {
    let p = MockProvider::new();
    let dev = p.open("mock0").unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(16).unwrap();
    let keep = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let q = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        assert!(q.qp_num() >= 2 && q.qp_num() != keep.qp_num());
        seen.insert(q.qp_num());
    }
    assert_eq!(seen.len(), 2000, "fresh numbers while older ones are freed");
    assert_eq!(keep.state().unwrap(), QpState::Reset);
}

#[test]
fn a_connecting_qp_moved_to_error_withdraws_its_request() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock0", 16);
    let addr = b.dev.ports().unwrap()[0].addresses[0];
    let listener = b.dev.listen(SocketAddr::new(addr, 0)).unwrap();
    a.qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    a.qp.modify(QpState::Reset).unwrap();
    let e = listener
        .next_request(Instant::now() + Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::TimedOut,
        "the withdrawn request is gone"
    );
    let e = a.qp.wait_connected(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    // The server QP was never touched and can take another connection.
    let c = end(&p, "mock0", 16);
    c.qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let req = listener.next_request(soon()).unwrap();
    listener
        .accept(&req, &b.qp, &ConnParams::default())
        .unwrap();
    c.qp.wait_connected(soon()).unwrap();
}

#[test]
fn unsignaled_sends_hold_their_slots_until_a_signaled_one_completes() {
    let p = MockProvider::new();
    let dev = p.open("mock0").unwrap();
    let pd = dev.alloc_pd().unwrap();
    let (cq_a, cq_b) = (dev.create_cq(64).unwrap(), dev.create_cq(64).unwrap());
    let init = QpInit {
        max_send_wr: 4,
        ..QpInit::default()
    };
    let a = End {
        qp: pd.create_qp(&cq_a, &cq_a, &init).unwrap(),
        cq: cq_a,
        pd: dev.alloc_pd().unwrap(),
        dev: p.open("mock0").unwrap(),
    };
    let b_qp = pd.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let listener = dev
        .listen(SocketAddr::new(dev.ports().unwrap()[0].addresses[0], 0))
        .unwrap();
    a.qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let req = listener.next_request(soon()).unwrap();
    listener
        .accept(&req, &b_qp, &ConnParams::default())
        .unwrap();
    a.qp.wait_connected(soon()).unwrap();
    let mr = pd.register(1024, Access::LOCAL_WRITE).unwrap();
    let recvs: Vec<RecvWr> = (0..16)
        .map(|i| RecvWr::single(i, mr.sge(512, 64)))
        .collect();
    b_qp.post_recv(&recvs).unwrap();
    let unsignaled = |id| {
        SendWr::single(id, SendOp::Send, mr.sge(0, 8)).with_flags(anyverbs::SendFlags::empty())
    };
    for id in 0..4 {
        a.qp.post_send(&[unsignaled(id)]).unwrap();
    }
    let e = a.qp.post_send(&[unsignaled(4)]).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::ResourceExhausted,
        "never-signaled sends fill the queue"
    );
    // As on hardware, a ULP that never signals can never post again; drain still works.
    a.qp.drain(soon()).unwrap();
}

#[test]
fn a_wr_in_progress_finishes_in_sqd() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock0", 16);
    let params = ConnParams {
        rnr_retry_count: 2,
        ..ConnParams::default()
    };
    connect(&a, &b, &params);
    let mr = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    a.qp.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])]).unwrap(); // stalls on RNR
    a.qp.modify(QpState::SendQueueDrained).unwrap();
    let start = Instant::now();
    let mut wc = [Completion::default(); 1];
    assert_eq!(a.cq.wait(&mut wc, soon()).unwrap(), 1);
    assert_eq!(wc[0].status, WcStatus::RnrRetryExceeded);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_raw_poll_with_no_room_takes_nothing() {
    use anyverbs::kit::RawCq;
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let mr = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    a.qp.modify(QpState::Init).unwrap();
    a.qp.post_recv(&[RecvWr::single(7, mr.sge(0, 8))]).unwrap();
    a.qp.modify(QpState::Error).unwrap(); // one flush in the ring
    // The device's poll of an empty buffer (RawCq, which KitCq::raw hands out) moves nothing:
    // the completion stays in the ring for the next poll.
    assert_eq!(a.cq.raw().poll(&mut []).unwrap(), 0);
    let mut wc = [Completion::default(); 4];
    assert_eq!(a.cq.poll(&mut wc).unwrap(), 1, "the flush was lost");
    assert_eq!((wc[0].wr_id, wc[0].status), (7, WcStatus::WrFlushError));
}

#[test]
fn a_device_holds_as_many_regions_as_its_limit_says() {
    use anyverbs_provider_mock::{DEFAULT_LIMITS, DeviceConfig, FabricConfig};
    let mut device = DeviceConfig::infiniband("big0", 1);
    device.limits = anyverbs::DeviceLimits {
        max_mr: 70_000,
        ..DEFAULT_LIMITS
    };
    let p = MockProvider::with_config(FabricConfig {
        devices: vec![device],
        ..FabricConfig::default()
    });
    let dev = p.open("big0").unwrap();
    assert_eq!(dev.info().limits.max_mr, 70_000);
    let pd = dev.alloc_pd().unwrap();
    let mrs: Vec<_> = (0..70_000)
        .map(|i| {
            pd.register(1, Access::LOCAL_WRITE)
                .unwrap_or_else(|e| panic!("region {i} of the 70000 the device allows: {e}"))
        })
        .collect();
    let e = pd.register(1, Access::LOCAL_WRITE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    drop(mrs);
}

/// The mock allocates its regions in host memory whose address never moves: a ULP may reach a
/// region it did not register itself directly, and what it writes there is what `read` returns
/// and what a SEND sends; the address is the region's, and it is refused once destroyed.
#[test]
#[allow(unsafe_code)]
fn the_mocks_own_regions_can_be_reached_directly() {
    let p = MockProvider::new();
    let a = end(&p, "mock0", 16);
    let b = end(&p, "mock1", 16);
    connect(&a, &b, &ConnParams::default());
    let src = a.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let dst = b.pd.register(64, Access::LOCAL_WRITE).unwrap();
    assert_eq!(src.as_ptr().unwrap() as u64, src.addr());
    // SAFETY: no WR uses the region yet, and nothing else touches it while the slice lives.
    unsafe { src.slice_mut(8, 6) }
        .unwrap()
        .copy_from_slice(b"direct");
    let mut copied = [0; 6];
    src.read(8, &mut copied).unwrap();
    assert_eq!(&copied, b"direct");
    b.qp.post_recv(&[RecvWr::new(1, &[dst.sge(0, 64)])])
        .unwrap();
    a.qp.post_send(&[SendWr::send(2, &[src.sge(8, 6)])])
        .unwrap();
    let mut wc = [Completion::default(); 1];
    assert_eq!(b.cq.wait(&mut wc, soon()).unwrap(), 1);
    assert_eq!(wc[0].status, WcStatus::Success);
    // SAFETY: the receive completed; nothing writes the region any more.
    assert_eq!(unsafe { dst.slice(0, 6) }.unwrap(), b"direct");
    dst.destroy().unwrap();
    assert_eq!(dst.as_ptr().unwrap_err().kind(), ErrorKind::Destroyed);
}
