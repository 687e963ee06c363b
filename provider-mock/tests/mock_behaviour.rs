//! Behaviour specific to the mock that the provider-agnostic conformance suite does not cover:
//! CQ overflow, connections across devices, RNR resolved by a late receive, and concurrent use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Listener, MemoryRegion,
    ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, WcStatus,
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
        .map(|i| RecvWr::new(i, &[mr.sge(i as usize * 64, 64)]))
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
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let a = Arc::clone(&a);
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let wr = SendWr::send(t * 1_000_000 + i, &[sge_src]);
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
    let mut send_ids = Vec::new();
    let mut wc = [Completion::default(); 64];
    while send_ids.len() < 2 * PER_THREAD as usize {
        let n = a.cq.wait(&mut wc, soon()).unwrap();
        send_ids.extend(wc[..n].iter().map(|c| c.wr_id));
    }
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
