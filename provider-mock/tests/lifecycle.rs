//! Device lifecycle and fault injection on the mock: every handle of a lost device fails with
//! `DeviceLost` without blocking, events and monitor reports for every fault, devices that come
//! back (as themselves or as another device) only once everything of their previous life is
//! released, QP-level faults that touch nothing else, and injection racing the data path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, ConnectRequest, Device, DeviceEvent,
    ErrorKind, EventStream, Fault, Listener, MemoryRegion, MonitorEvent, PortState,
    ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, WcStatus,
};
use anyverbs_provider_mock::{
    LiveObjects, MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
};

/// How long a call on a lost device, or a wait woken by the loss, may take at most.
const PROMPT: Duration = Duration::from_millis(100);

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn shortly() -> Instant {
    Instant::now() + Duration::from_millis(50)
}

/// The devices QPs can be connected on (every default device).
const DEVICES: [&str; 10] = [
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

fn reset_now() -> Fault {
    Fault::Reset {
        down_for: Duration::ZERO,
    }
}

/// Two connected QPs with their CQs and memory; fields drop QPs first.
struct Pair {
    a: MockQp,
    b: MockQp,
    listener: MockListener,
    cq_a: MockCq,
    cq_b: MockCq,
    mr_a: MockMr,
    mr_b: MockMr,
    pd_a: MockPd,
    pd_b: MockPd,
    dev_a: MockDevice,
    dev_b: MockDevice,
}

fn address(dev: &MockDevice) -> SocketAddr {
    SocketAddr::new(dev.ports().unwrap()[0].addresses[0], 0)
}

/// `a` on `device_a` connected (actively) to `b` on `device_b`.
fn pair(p: &MockProvider, device_a: &str, device_b: &str) -> Pair {
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
fn open_error(provider: &MockProvider, name: &str) -> ErrorKind {
    match provider.open(name) {
        Ok(_) => panic!("{name} opened"),
        Err(e) => e.kind(),
    }
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

/// Waits for `n` completions in `cq`.
fn wait_for(cq: &MockCq, n: usize) -> Vec<(u64, WcStatus)> {
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
fn lost<T: std::fmt::Debug>(what: &str, call: impl FnOnce() -> anyverbs::Result<T>) {
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
struct Before {
    info: anyverbs::DeviceInfo,
    address: SocketAddr,
    cq_num: u32,
    lkey: u32,
    qp_num: u32,
}

fn before(p: &Pair) -> Before {
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
fn assert_every_handle_lost(p: &Pair, was: &Before) {
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
fn destroy_b_side(p: &Pair) {
    p.b.destroy().unwrap();
    p.cq_b.destroy().unwrap();
    p.mr_b.destroy().unwrap();
    p.pd_b.destroy().unwrap();
    // A second destroy is still a no-op.
    p.b.destroy().unwrap();
    p.cq_b.destroy().unwrap();
}

fn every_handle_fails_after(fault: Fault) {
    for device in DEVICES {
        let provider = MockProvider::new();
        let p = pair(&provider, device, device);
        let was = before(&p);
        p.b.post_recv(&[RecvWr::new(7, &[p.mr_b.sge(0, 64)])])
            .unwrap();
        provider.inject(device, &fault).unwrap();
        assert_every_handle_lost(&p, &was);
        assert_eq!(
            open_error(&provider, device),
            ErrorKind::NotFound,
            "{device} is absent until everything is released"
        );
        destroy_b_side(&p);
    }
}

#[test]
fn every_handle_fails_with_device_lost_after_reset() {
    every_handle_fails_after(reset_now());
}

#[test]
fn every_handle_fails_with_device_lost_after_unplug() {
    every_handle_fails_after(Fault::Unplug);
}

/// Runs `wait` on a thread; injects `fault` once it has blocked; it must return `DeviceLost`
/// within [`PROMPT`].
fn wakes_with_device_lost<T: std::fmt::Debug + Send + 'static>(
    provider: &MockProvider,
    device: &str,
    fault: Fault,
    wait: impl FnOnce() -> anyverbs::Result<T> + Send + 'static,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = wait();
        tx.send(Instant::now()).unwrap();
        r
    });
    thread::sleep(Duration::from_millis(30));
    assert!(rx.try_recv().is_err(), "the wait did not block");
    let injected = Instant::now();
    provider.inject(device, &fault).unwrap();
    let woke = rx.recv_timeout(Duration::from_secs(5)).expect("woke");
    let r = waiter.join().unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::DeviceLost);
    let took = woke.saturating_duration_since(injected);
    assert!(took < PROMPT, "woke {took:?} after the fault");
}

#[test]
fn blocked_waits_wake_with_device_lost() {
    for fault in [reset_now(), Fault::Unplug] {
        // cq.wait
        let provider = MockProvider::new();
        let p = Arc::new(pair(&provider, "mock0", "mock0"));
        let q = Arc::clone(&p);
        wakes_with_device_lost(&provider, "mock0", fault.clone(), move || {
            q.cq_b.wait(&mut [Completion::default(); 1], soon())
        });

        // listener.next_request
        let provider = MockProvider::new();
        let dev = provider.open("mock1").unwrap();
        let listener = Arc::new(dev.listen(address(&dev)).unwrap());
        let l = Arc::clone(&listener);
        wakes_with_device_lost(&provider, "mock1", fault.clone(), move || {
            l.next_request(soon())
        });

        // qp.wait_connected: the listener never answers.
        let provider = MockProvider::new();
        let server = provider.open("mock1").unwrap();
        let listener = server.listen(address(&server)).unwrap();
        let dev = provider.open("mock0").unwrap();
        let pd = dev.alloc_pd().unwrap();
        let cq = dev.create_cq(4).unwrap();
        let qp = Arc::new(pd.create_qp(&cq, &cq, &QpInit::default()).unwrap());
        qp.connect(listener.local_addr(), &ConnParams::default())
            .unwrap();
        let q = Arc::clone(&qp);
        wakes_with_device_lost(&provider, "mock0", fault.clone(), move || {
            q.wait_connected(soon())
        });

        // qp.drain on the dead personality: waits for a marker that never completes.
        let provider = MockProvider::new();
        let p = Arc::new(pair(&provider, "mockdead0", "mockdead0"));
        p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
            .unwrap();
        let q = Arc::clone(&p);
        wakes_with_device_lost(&provider, "mockdead0", fault, move || q.b.drain(soon()));
    }
}

#[test]
fn device_events_end_with_the_loss() {
    for (fault, last) in [
        (reset_now(), DeviceEvent::DeviceFatal),
        (Fault::Unplug, DeviceEvent::DeviceRemoved),
    ] {
        let provider = MockProvider::new();
        let dev = provider.open("mock0").unwrap();
        let (e1, e2) = (dev.events().unwrap(), dev.events().unwrap());
        provider.inject("mock0", &fault).unwrap();
        for events in [&e1, &e2] {
            assert_eq!(events.recv(soon()).unwrap(), last);
            assert_eq!(
                events.recv(soon()).unwrap_err().kind(),
                ErrorKind::DeviceLost
            );
        }
    }
}

/// The next monitor event, which must come before the deadline.
fn next(monitor: &EventStream<MonitorEvent>) -> MonitorEvent {
    monitor.recv(soon()).expect("a monitor event")
}

#[test]
fn a_reset_device_comes_back_as_itself_with_a_new_index() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let before = provider.open("mock0").unwrap().info().clone();
    let start = Instant::now();
    provider
        .inject(
            "mock0",
            &Fault::Reset {
                down_for: Duration::from_millis(30),
            },
        )
        .unwrap();
    assert!(
        !provider
            .devices()
            .unwrap()
            .iter()
            .any(|d| d.identity.name == "mock0")
    );
    let MonitorEvent::Removed(gone) = next(&monitor) else {
        panic!("expected Removed first");
    };
    assert_eq!(gone, before.identity);
    // Nobody touches the fabric: the return comes on its own, after down_for.
    let MonitorEvent::Added(back) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(back.identity.is_same_device(&before.identity));
    assert_eq!(back.identity.name, "mock0");
    assert_eq!(back.identity.pci_address, before.identity.pci_address);
    let initial = provider.devices().unwrap().len() as u32;
    assert!(back.identity.index >= initial, "indices are never reused");
    assert_ne!(back.identity.index, before.identity.index);
    let listed = provider.devices().unwrap();
    assert!(listed.contains(&back));
    let dev = provider.open("mock0").unwrap();
    assert_eq!(dev.info(), &back);
    dev.alloc_pd().unwrap();
    // Reset again: yet another index.
    drop(dev);
    provider.inject("mock0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(again) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(again.identity.index > back.identity.index);
}

#[test]
fn a_reset_device_returns_only_once_every_object_is_released() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let dev = provider.open("mock1").unwrap();
    let pd = dev.alloc_pd().unwrap();
    drop(dev);
    assert_eq!(
        provider.live_objects("mock1").unwrap(),
        LiveObjects {
            pds: 1,
            ..LiveObjects::default()
        }
    );
    provider.inject("mock1", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let e = monitor.recv(Instant::now() + PROMPT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "back although a PD is held");
    assert_eq!(open_error(&provider, "mock1"), ErrorKind::NotFound);
    drop(pd);
    let start = Instant::now();
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
    assert!(start.elapsed() < PROMPT);
    assert_eq!(provider.live_objects("mock1").unwrap().total(), 0);
    provider.open("mock1").unwrap();
}

#[test]
fn an_open_device_handle_also_holds_the_return() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let dev = provider.open("mockiw0").unwrap();
    provider.inject("mockiw0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    drop(dev);
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
}

#[test]
fn unplug_stays_away_until_replugged() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let before = provider.open("mock0").unwrap().info().clone();
    provider.inject("mock0", &Fault::Unplug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    assert_eq!(open_error(&provider, "mock0"), ErrorKind::NotFound);
    // Only replugging applies to an absent device.
    for fault in [
        Fault::Unplug,
        reset_now(),
        Fault::Stall,
        Fault::KillQp { qp_num: 2 },
    ] {
        let e = provider.inject("mock0", &fault).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{fault}");
    }
    provider.inject("mock0", &Fault::Replug).unwrap();
    let MonitorEvent::Added(back) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(back.identity.is_same_device(&before.identity));
    assert_ne!(back.identity.index, before.identity.index);
    // Replugging a present device is refused.
    let e = provider.inject("mock0", &Fault::Replug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[test]
fn replug_waits_for_the_objects_of_the_unplugged_device() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let p = pair(&provider, "mock0", "mock0");
    provider.inject("mock0", &Fault::Unplug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    provider.inject("mock0", &Fault::Replug).unwrap();
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    let e = provider.inject("mock0", &Fault::Replug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "already replugged");
    assert!(provider.live_objects("mock0").unwrap().total() > 0);
    drop(p);
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
}

#[test]
fn replug_other_is_a_different_device_and_replug_restores_the_original() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let original = provider.open("mockrxe0").unwrap().info().clone();
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::ReplugOther).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(other) = next(&monitor) else {
        panic!("expected Added");
    };
    assert_eq!(other.identity.name, "mockrxe0");
    assert!(!other.identity.is_same_device(&original.identity));
    assert_ne!(other.identity.node_guid, original.identity.node_guid);
    assert_ne!(
        other.identity.sys_image_guid,
        original.identity.sys_image_guid
    );
    // A reset keeps the identity of the device that is there.
    provider.inject("mockrxe0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(reset) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(reset.identity.is_same_device(&other.identity));
    // Another ReplugOther gives yet another device; Replug restores the configured one.
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::ReplugOther).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(third) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(!third.identity.is_same_device(&other.identity));
    assert!(!third.identity.is_same_device(&original.identity));
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::Replug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(restored) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(restored.identity.is_same_device(&original.identity));
}

#[test]
fn unknown_devices_and_bad_arguments_are_refused() {
    let provider = MockProvider::new();
    let e = provider.inject("nosuch0", &Fault::Unplug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        provider.live_objects("nosuch0").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let e = provider
        .inject(
            "mock0",
            &Fault::FlapPort {
                port: 2,
                down_for: Duration::ZERO,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    for fault in [Fault::KillQp { qp_num: 99 }, Fault::LosePeer { qp_num: 99 }] {
        let e = provider.inject("mock0", &fault).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{fault}");
    }
    // A QP of another device is not found either.
    let p = pair(&provider, "mock1", "mock1");
    let e = provider
        .inject(
            "mock0",
            &Fault::KillQp {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A QP that is not connected has no peer to lose.
    let qp = p
        .pd_a
        .create_qp(&p.cq_a, &p.cq_a, &QpInit::default())
        .unwrap();
    let e = provider
        .inject(
            "mock1",
            &Fault::LosePeer {
                qp_num: qp.qp_num(),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[test]
fn every_mock_device_can_inject_faults() {
    let provider = MockProvider::new();
    for info in provider.devices().unwrap() {
        assert!(
            info.caps.contains(anyverbs::Caps::FAULT_INJECTION),
            "{}",
            info.identity.name
        );
    }
}

#[test]
fn a_port_flap_goes_down_and_comes_back_on_its_own() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock0");
    let events = p.dev_a.events().unwrap();
    let down_for = Duration::from_millis(40);
    let start = Instant::now();
    provider
        .inject("mock0", &Fault::FlapPort { port: 1, down_for })
        .unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortDown { port: 1 }
    );
    assert_eq!(p.dev_a.ports().unwrap()[0].state, PortState::Down);
    // The data path keeps working while the port is down (documented simplification).
    p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
        .unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    assert_eq!(wait_for(&p.cq_b, 1), vec![(1, WcStatus::Success)]);
    // Nobody calls into the fabric: PortActive must arrive on its own.
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortActive { port: 1 }
    );
    assert!(start.elapsed() >= down_for);
    assert_eq!(p.dev_a.ports().unwrap()[0].state, PortState::Active);
}

#[test]
fn kill_qp_fails_that_qp_and_nothing_else() {
    for device in ["mock0", "mockrxe0", "mocksiw0"] {
        let provider = MockProvider::new();
        let victim = pair(&provider, device, device);
        let other = pair(&provider, device, device);
        let events = victim.dev_a.events().unwrap();
        for p in [&victim, &other] {
            p.a.post_recv(&[RecvWr::new(10, &[p.mr_a.sge(0, 8)])])
                .unwrap();
            p.b.post_recv(&[RecvWr::new(20, &[p.mr_b.sge(0, 8)])])
                .unwrap();
        }
        let qp_num = victim.a.qp_num();
        provider.inject(device, &Fault::KillQp { qp_num }).unwrap();
        assert_eq!(
            events.recv(soon()).unwrap(),
            DeviceEvent::QpFatal { qp_num }
        );
        assert_eq!(victim.a.state().unwrap(), QpState::Error);
        assert_eq!(
            wait_for(&victim.cq_a, 1),
            vec![(10, WcStatus::WrFlushError)]
        );
        // Nothing else: the other pair moves data, the events name no other QP.
        for qp in [&other.a, &other.b] {
            assert_eq!(qp.state().unwrap(), QpState::ReadyToSend);
        }
        other
            .a
            .post_send(&[SendWr::send(1, &[other.mr_a.sge(0, 8)])])
            .unwrap();
        assert_eq!(wait_for(&other.cq_b, 1), vec![(20, WcStatus::Success)]);
        thread::sleep(Duration::from_millis(10));
        assert!(drain_cq(&other.cq_a).iter().all(|c| c.0 == 1));
        // On iWARP the connection goes down with the killed QP, and its own peer hears of it,
        // as siw's RDMA_CM_EVENT_DISCONNECTED; nothing names the other pair.
        if victim.dev_a.info().state_model == anyverbs::StateModel::Iwarp {
            assert_eq!(
                events.try_recv().unwrap(),
                Some(DeviceEvent::Disconnected {
                    qp_num: victim.b.qp_num()
                })
            );
        }
        assert_eq!(events.try_recv().unwrap(), None);
        // The victim is drained and destroyed as usual.
        victim.a.drain(soon()).unwrap();
    }
}

#[test]
fn lose_peer_fails_sends_with_retry_exceeded_and_disconnects() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_a.events().unwrap();
    let peer_events = p.dev_b.events().unwrap();
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider
        .inject(
            "mock0",
            &Fault::LosePeer {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    // Nobody polls: the send fails after the retries and the event arrives on its own.
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::Disconnected {
            qp_num: p.a.qp_num()
        }
    );
    assert_eq!(p.a.state().unwrap(), QpState::Error);
    let got = wait_for(&p.cq_a, 2);
    assert_eq!(
        got,
        vec![
            (2, WcStatus::TransportRetryExceeded),
            (1, WcStatus::WrFlushError)
        ]
    );
    // The peer is left as it is; it hears nothing.
    assert_eq!(p.b.state().unwrap(), QpState::ReadyToSend);
    assert_eq!(drain_cq(&p.cq_b), vec![]);
    assert_eq!(peer_events.try_recv().unwrap(), None);
    // Exactly one Disconnected.
    thread::sleep(Duration::from_millis(10));
    assert_eq!(events.try_recv().unwrap(), None);
}

#[test]
fn the_survivors_of_a_lost_device_see_their_peer_stop_answering() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_a.events().unwrap();
    // One send in flight (RNR: the peer has no receive), one posted after the loss.
    p.a.post_send(&[SendWr::send(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("mock1", &Fault::Unplug).unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::Disconnected {
            qp_num: p.a.qp_num()
        }
    );
    assert_eq!(
        wait_for(&p.cq_a, 2),
        vec![
            (1, WcStatus::TransportRetryExceeded),
            (2, WcStatus::WrFlushError)
        ]
    );
    // Tearing down the dead end does not touch the survivor either (iWARP would otherwise).
    p.b.destroy().unwrap();
    assert_eq!(events.try_recv().unwrap(), None);
}

#[test]
fn an_iwarp_survivor_is_not_torn_down_by_the_dead_end() {
    let provider = MockProvider::with_config(anyverbs_provider_mock::FabricConfig {
        devices: vec![
            anyverbs_provider_mock::DeviceConfig::iwarp("iw0", 1),
            anyverbs_provider_mock::DeviceConfig::iwarp("iw1", 2),
        ],
        ..anyverbs_provider_mock::FabricConfig::default()
    });
    let p = pair(&provider, "iw0", "iw1");
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("iw1", &reset_now()).unwrap();
    p.b.destroy().unwrap();
    assert_eq!(p.a.state().unwrap(), QpState::ReadyToSend);
    assert_eq!(drain_cq(&p.cq_a), vec![]);
}

#[test]
fn a_request_to_a_lost_listener_is_unreachable() {
    let provider = MockProvider::new();
    let server = provider.open("mock1").unwrap();
    let listener = server.listen(address(&server)).unwrap();
    let dev = provider.open("mock0").unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(4).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    provider.inject("mock1", &Fault::Unplug).unwrap();
    let e = qp.wait_connected(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable);
    // An absent device cannot be reached at all.
    let qp2 = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let e = qp2
        .connect(listener.local_addr(), &ConnParams::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable);
}

#[test]
fn stall_holds_everything_until_resume() {
    for device in ["mock0", "mockrxe0", "mockiw0", "mockirdma0"] {
        let provider = MockProvider::new();
        let p = pair(&provider, device, device);
        let spare = p
            .pd_a
            .create_qp(&p.cq_a, &p.cq_a, &QpInit::default())
            .unwrap();
        if spare.state().unwrap() == QpState::Reset {
            spare.modify(QpState::Init).unwrap(); // RESET takes no receives
        }
        spare
            .post_recv(&[RecvWr::new(30, &[p.mr_a.sge(64, 8)])])
            .unwrap();
        provider.inject(device, &Fault::Stall).unwrap();
        p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
            .unwrap();
        p.mr_a.write(0, b"stalled!").unwrap();
        p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
            .unwrap();
        // A flush is held too.
        spare.modify(QpState::Error).unwrap();
        let mut wc = [Completion::default(); 4];
        for cq in [&p.cq_a, &p.cq_b] {
            let e = cq.wait(&mut wc, shortly()).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::TimedOut,
                "{device}: completed while stalled"
            );
        }
        provider.inject(device, &Fault::Resume).unwrap();
        assert_eq!(wait_for(&p.cq_b, 1), vec![(1, WcStatus::Success)]);
        let mut got = wait_for(&p.cq_a, 2);
        got.sort_by_key(|c| c.0);
        assert_eq!(
            got,
            vec![(2, WcStatus::Success), (30, WcStatus::WrFlushError)]
        );
        let mut data = [0u8; 8];
        p.mr_b.read(0, &mut data).unwrap();
        assert_eq!(&data, b"stalled!");
    }
}

#[test]
fn a_stalled_device_still_drains_by_the_deadline() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock0");
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("mock0", &Fault::Stall).unwrap();
    let report =
        p.a.drain(Instant::now() + Duration::from_millis(100))
            .unwrap();
    assert_eq!(report.synthesized, 1);
    assert_eq!(drain_cq(&p.cq_a), vec![(1, WcStatus::WrFlushError)]);
    // Resuming delivers nothing more for the drained QP.
    provider.inject("mock0", &Fault::Resume).unwrap();
    thread::sleep(Duration::from_millis(10));
    assert_eq!(drain_cq(&p.cq_a), vec![]);
}

#[test]
fn cq_overflow_reports_a_cq_error() {
    let provider = MockProvider::new();
    let dev = provider.open("mock0").unwrap();
    let events = dev.events().unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(1).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    qp.modify(QpState::Init).unwrap();
    qp.post_recv(&[
        RecvWr::new(1, &[mr.sge(0, 8)]),
        RecvWr::new(2, &[mr.sge(8, 8)]),
    ])
    .unwrap();
    qp.modify(QpState::Error).unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::CqError {
            cq_num: cq.cq_num()
        }
    );
    assert_eq!(events.try_recv().unwrap(), None, "reported once");
}

#[test]
fn live_objects_count_every_kind_and_return_to_zero() {
    let provider = MockProvider::new();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
    let p = pair(&provider, "mock0", "mock0");
    assert_eq!(
        provider.live_objects("mock0").unwrap(),
        LiveObjects {
            devices: 2,
            pds: 2,
            mrs: 2,
            cqs: 2,
            qps: 2,
            listeners: 1,
        }
    );
    // Objects of a lost incarnation still count until released.
    provider.inject("mock0", &reset_now()).unwrap();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 11);
    drop(p);
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
    // ... and the device is back.
    provider.open("mock0").unwrap();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
}

#[test]
fn injection_races_posting_and_polling_threads() {
    let provider = MockProvider::new();
    let p = Arc::new(pair(&provider, "mock0", "mock1"));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
            thread::spawn(move || {
                let mut wc = [Completion::default(); 16];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Errors are expected (the faults); panics and hangs are not.
                    if t == 0 {
                        let _ = p.b.post_recv(&[RecvWr::new(i, &[p.mr_b.sge(0, 8)])]);
                        let _ = p.a.post_send(&[SendWr::send(i, &[p.mr_a.sge(0, 8)])]);
                        let _ = p.cq_a.poll(&mut wc);
                    } else {
                        let _ = p
                            .cq_b
                            .wait(&mut wc, Instant::now() + Duration::from_millis(2));
                        let _ = p.a.state();
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let faults = [
        ("mock1", Fault::Stall),
        ("mock1", Fault::Resume),
        (
            "mock0",
            Fault::FlapPort {
                port: 1,
                down_for: Duration::from_millis(1),
            },
        ),
        ("mock0", Fault::Stall),
        ("mock0", Fault::Resume),
        (
            "mock1",
            Fault::LosePeer {
                qp_num: p.b.qp_num(),
            },
        ),
        ("mock0", reset_now()),
        ("mock1", Fault::Unplug),
    ];
    for (device, fault) in faults {
        thread::sleep(Duration::from_millis(5));
        provider.inject(device, &fault).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no panic");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(p);
    for device in ["mock0", "mock1"] {
        assert_eq!(provider.live_objects(device).unwrap().total(), 0);
    }
    provider.inject("mock1", &Fault::Replug).unwrap();
    assert!(provider.open("mock0").is_ok() && provider.open("mock1").is_ok());
}
