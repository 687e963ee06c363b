//! Fixtures.

use super::*;

/// How long a call on a lost device, or a wait woken by the loss, may take at most.
pub(super) const PROMPT: Duration = Duration::from_millis(100);

pub(super) fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

pub(super) fn shortly() -> Instant {
    Instant::now() + Duration::from_millis(50)
}

/// The devices QPs can be connected on (every default device).
pub(super) const DEVICES: [&str; 10] = [
    "mock0",
    "mock1",
    "mockiw0",
    "mockrxe0",
    "mockdead0",
    "mocksiw0",
    "mockcxgb0",
    "mockerdma0",
    "mockirdma0",
    "mocklost0",
];

pub(super) fn reset_now() -> Fault {
    Fault::Reset {
        down_for: Duration::ZERO,
    }
}

/// Two connected QPs with their CQs and memory; fields drop QPs first.
pub(super) struct Pair {
    pub(super) a: MockQp,
    pub(super) b: MockQp,
    pub(super) listener: MockListener,
    pub(super) cq_a: MockCq,
    pub(super) cq_b: MockCq,
    pub(super) mr_a: MockMr,
    pub(super) mr_b: MockMr,
    pub(super) pd_a: MockPd,
    pub(super) pd_b: MockPd,
    pub(super) dev_a: MockDevice,
    pub(super) dev_b: MockDevice,
}

pub(super) fn address(dev: &MockDevice) -> SocketAddr {
    SocketAddr::new(dev.ports().unwrap()[0].addresses[0], 0)
}

/// A provider whose devices can all have every fault injected, `mockrxe0` and `mocksiw0`
/// included (by default they can have only what the real rxe and siw can): for tests of how
/// each personality handles a fault the real device could not produce.
pub(super) fn injecting_everything() -> MockProvider {
    let mut config = anyverbs_provider_mock::FabricConfig::default();
    for d in &mut config.devices {
        d.faults = anyverbs::Faults::all();
    }
    MockProvider::with_config(config)
}

/// `a` on `device_a` connected (actively) to `b` on `device_b`.
pub(super) fn pair(p: &MockProvider, device_a: &str, device_b: &str) -> Pair {
    let dev_a = p.open(device_a).unwrap();
    let dev_b = p.open(device_b).unwrap();
    let (pd_a, pd_b) = (dev_a.alloc_pd().unwrap(), dev_b.alloc_pd().unwrap());
    let (cq_a, cq_b) = (dev_a.create_cq(64).unwrap(), dev_b.create_cq(64).unwrap());
    let a = pd_a.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
    let b = pd_b.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let mr_a = pd_a.register(4096, Access::LOCAL_WRITE).unwrap();
    let mr_b = pd_b.register(4096, Access::LOCAL_WRITE).unwrap();
    let listener = dev_b.listen(address(&dev_b)).unwrap();
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
        listener,
        cq_a,
        cq_b,
        mr_a,
        mr_b,
        pd_a,
        pd_b,
        dev_a,
        dev_b,
    }
}

/// Why opening `name` fails (it must).
pub(super) fn open_error(provider: &MockProvider, name: &str) -> ErrorKind {
    match provider.open(name) {
        Ok(_) => panic!("{name} opened"),
        Err(e) => e.kind(),
    }
}

/// Every completion in `cq` now, as (wr_id, status).
pub(super) fn drain_cq(cq: &MockCq) -> Vec<(u64, WcStatus)> {
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

/// Waits for `n` completions in `cq`.
pub(super) fn wait_for(cq: &MockCq, n: usize) -> Vec<(u64, WcStatus)> {
    let mut got = Vec::new();
    let mut wc = [Completion::default(); 64];
    while got.len() < n {
        let k = cq.wait(&mut wc, soon()).expect("wait");
        got.extend(wc[..k].iter().map(|c| (c.wr_id, c.status)));
    }
    got
}

/// Asserts that `call` fails with `DeviceLost` within [`PROMPT`].
#[track_caller]
pub(super) fn lost<T: std::fmt::Debug>(what: &str, call: impl FnOnce() -> anyverbs::Result<T>) {
    let start = Instant::now();
    let r = call();
    let took = start.elapsed();
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::DeviceLost, "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded on a lost device: {v:?}"),
    }
    assert!(took < PROMPT, "{what} took {took:?}");
}

/// What `b`'s side of a pair looked like before its device was lost.
pub(super) struct Before {
    pub(super) info: anyverbs::DeviceInfo,
    pub(super) address: SocketAddr,
    pub(super) cq_num: u32,
    pub(super) lkey: u32,
    pub(super) qp_num: u32,
}

pub(super) fn before(p: &Pair) -> Before {
    Before {
        info: p.dev_b.info().clone(),
        address: address(&p.dev_b),
        cq_num: p.cq_b.cq_num(),
        lkey: p.mr_b.lkey(),
        qp_num: p.b.qp_num(),
    }
}

/// Every call on every handle of `p.dev_b`'s side (b, its CQ, MR, PD, listener, device) fails
/// with `DeviceLost`; fixed data stays readable.
pub(super) fn assert_every_handle_lost(p: &Pair, was: &Before) {
    let mut wc = [Completion::default(); 4];
    let (dev, pd, cq, mr, qp, listener) = (&p.dev_b, &p.pd_b, &p.cq_b, &p.mr_b, &p.b, &p.listener);
    lost("ports", || dev.ports());
    lost("alloc_pd", || dev.alloc_pd().map(|_| ()));
    lost("create_cq", || dev.create_cq(4).map(|_| ()));
    lost("listen", || dev.listen(was.address).map(|_| ()));
    lost("events", || dev.events().map(|_| ()));
    lost("register", || {
        pd.register(64, Access::LOCAL_WRITE).map(|_| ())
    });
    lost("create_qp", || {
        pd.create_qp(cq, cq, &QpInit::default()).map(|_| ())
    });
    // The region's memory is the host's: it stays readable and writable.
    mr.write(0, b"x").expect("mr.write on a lost device");
    let mut byte = [0u8; 1];
    mr.read(0, &mut byte).expect("mr.read on a lost device");
    assert_eq!(&byte, b"x");
    lost("cq.poll", || cq.poll(&mut wc));
    lost("cq.wait", || cq.wait(&mut wc, soon()));
    lost("qp.state", || qp.state());
    lost("qp.modify", || qp.modify(QpState::Error));
    lost("qp.post_send", || {
        qp.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])])
            .map_err(anyverbs::Error::from)
    });
    lost("qp.post_recv", || {
        qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])])
            .map_err(anyverbs::Error::from)
    });
    lost("qp.connect", || {
        qp.connect(p.listener.local_addr(), &ConnParams::default())
    });
    lost("qp.wait_connected", || qp.wait_connected(soon()));
    lost("qp.drain", || qp.drain(soon()));
    let request = ConnectRequest {
        id: 1,
        peer: p.listener.local_addr(),
        private_data: Vec::new(),
        initiator_depth: 1,
        responder_resources: 1,
    };
    lost("listener.next_request", || listener.next_request(soon()));
    lost("listener.accept", || {
        listener.accept(&request, qp, &ConnParams::default())
    });
    lost("listener.reject", || listener.reject(&request, &[]));
    // Fixed data stays readable.
    assert_eq!(dev.info(), &was.info);
    assert_eq!(cq.cq_num(), was.cq_num);
    assert_eq!(cq.capacity(), 64);
    assert_eq!(mr.lkey(), was.lkey);
    assert_eq!(mr.len(), 4096);
    assert_eq!(qp.qp_num(), was.qp_num);
    assert_eq!(listener.local_addr().ip(), was.address.ip());
}

/// Destroys every handle of `b`'s side, children first: each succeeds.
pub(super) fn destroy_b_side(p: &Pair) {
    p.b.destroy().unwrap();
    p.cq_b.destroy().unwrap();
    p.mr_b.destroy().unwrap();
    p.pd_b.destroy().unwrap();
    // A second destroy is still a no-op.
    p.b.destroy().unwrap();
    p.cq_b.destroy().unwrap();
}
