//! The supervisor and the lifecycle at their edges: a start refused on a present device, a client
//! reset mid-accept, huge windows and timeouts, a foreign device present at spawn, a reset
//! reported as fatal, an iWARP peer torn down by a killed QP, a CQ error that kills a service's
//! QPs, data received before a reset. Each section says what went wrong before its fix; each
//! test asserts the behaviour the docs promise. (The port-flap timer regression lives with the mock's timer unit test, which
//! needs a process without other timer threads.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{Clock, GiveUp, LossCause, ManualClock, SupervisorReport};
use anyverbs::supervisor::{
    DeviceSelector, FailureAction, Service, StopReason, Supervisor, SupervisorConfig,
    SupervisorEvent,
};
use anyverbs::{
    ConnParams, Device, DeviceEvent, Error, ErrorKind, EventStream, Fault, Listener, Provider,
    QpInit, QueuePair,
};
use anyverbs_provider_mock::{MockDevice, MockProvider};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// A service that holds nothing; its first `fails` starts fail with `kind`.
struct Flaky {
    fails: u32,
    kind: ErrorKind,
    starts: Arc<AtomicU32>,
}

impl Service<MockProvider> for Flaky {
    fn start(
        &mut self,
        _device: &MockDevice,
        _link: &anyverbs::supervisor::Link,
    ) -> anyverbs::Result<()> {
        if self.fails > 0 {
            self.fails -= 1;
            return Err(Error::new(self.kind, "the peer's connect request vanished"));
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn stop(&mut self, _reason: &StopReason, _deadline: Instant) {}
    fn on_failure(&mut self, _event: &DeviceEvent) -> FailureAction {
        FailureAction::Ignore
    }
}

fn manual(clock: &Arc<ManualClock>) -> SupervisorConfig {
    SupervisorConfig {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..SupervisorConfig::default()
    }
}

/// Every event the supervisor reports until `deadline` (real time).
fn collect_until(
    events: &EventStream<SupervisorReport>,
    deadline: Instant,
) -> Vec<SupervisorEvent> {
    let mut got = Vec::new();
    while let Ok(r) = events.recv(deadline) {
        got.push(r.event);
    }
    got
}

fn identity(p: &MockProvider, name: &str) -> anyverbs::DeviceIdentity {
    p.devices()
        .unwrap()
        .into_iter()
        .find(|d| d.identity.name == name)
        .unwrap()
        .identity
}

// ---------------------------------------------------------------------------------------------
// A. A start that fails with NotFound (or DeviceLost) while the device is present puts the
//    supervisor in WaitingForDevice for a device that will never be "added": it never retries
//    and gives up after the window, with the device there all along.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_not_found_start_on_a_present_device_is_retried() {
    let p = Arc::new(MockProvider::new());
    let clock = ManualClock::new();
    let starts = Arc::new(AtomicU32::new(0));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Flaky {
            fails: 1,
            kind: ErrorKind::NotFound,
            starts: Arc::clone(&starts),
        },
        manual(&clock),
    )
    .unwrap();
    // Let the first (failing) start happen.
    let first = collect_until(sup.events(), Instant::now() + Duration::from_millis(200));
    // Move past any reconnect delay (10 s) and the return window (600 s).
    for _ in 0..70 {
        clock.advance(Duration::from_secs(10));
        thread::sleep(Duration::from_millis(2));
    }
    let later = collect_until(sup.events(), Instant::now() + Duration::from_millis(200));
    assert!(
        starts.load(Ordering::SeqCst) == 1,
        "mock0 was present all along, yet the service was never restarted.\n first: {first:?}\n \
         later: {later:?}\n devices: {:?}",
        p.devices()
            .unwrap()
            .iter()
            .map(|d| &d.identity.name)
            .collect::<Vec<_>>()
    );
}

/// The realistic way to get NotFound from a start: a server accepts a connect request whose
/// client device was reset between `next_request` and `accept` (the mock withdraws the request,
/// and accept fails with NotFound).
struct Server {
    addr: SocketAddr,
    got_request: mpsc::Sender<()>,
    go: Arc<Mutex<mpsc::Receiver<()>>>,
    starts: Arc<AtomicU32>,
    held: Option<(
        anyverbs_provider_mock::MockListener,
        anyverbs_provider_mock::MockQp,
    )>,
    kinds: Arc<Mutex<Vec<ErrorKind>>>,
}

impl Service<MockProvider> for Server {
    fn start(
        &mut self,
        device: &MockDevice,
        _link: &anyverbs::supervisor::Link,
    ) -> anyverbs::Result<()> {
        if !self.kinds.lock().unwrap().is_empty() || self.starts.load(Ordering::SeqCst) > 0 {
            // A start after the failed accept: succeed without a client.
            self.starts.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let pd = device.alloc_pd()?;
        let cq = device.create_cq(8)?;
        let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
        let listener = device.listen(self.addr)?;
        let request = listener.next_request(soon())?;
        self.got_request.send(()).unwrap();
        self.go.lock().unwrap().recv().unwrap();
        let r = listener.accept(&request, &qp, &ConnParams::default());
        if let Err(e) = &r {
            self.kinds.lock().unwrap().push(e.kind());
        }
        r?;
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.held = Some((listener, qp));
        Ok(())
    }
    fn stop(&mut self, _reason: &StopReason, _deadline: Instant) {
        self.held = None;
    }
    fn on_failure(&mut self, _event: &DeviceEvent) -> FailureAction {
        FailureAction::Ignore
    }
}

#[test]
fn a_server_whose_client_resets_mid_accept_is_restarted() {
    let p = Arc::new(MockProvider::new());
    let clock = ManualClock::new();
    let server_dev = p.open("mock1").unwrap();
    let addr = SocketAddr::new(server_dev.ports().unwrap()[0].addresses[0], 7471);
    drop(server_dev);
    let (tx_req, rx_req) = mpsc::channel();
    let (tx_go, rx_go) = mpsc::channel();
    let starts = Arc::new(AtomicU32::new(0));
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock1")),
        Server {
            addr,
            got_request: tx_req,
            go: Arc::new(Mutex::new(rx_go)),
            starts: Arc::clone(&starts),
            held: None,
            kinds: Arc::clone(&kinds),
        },
        manual(&clock),
    )
    .unwrap();
    // The client on mock0 connects; once the server holds the request, mock0 resets.
    let client = p.open("mock0").unwrap();
    let pd = client.alloc_pd().unwrap();
    let cq = client.create_cq(8).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    thread::sleep(Duration::from_millis(50)); // the server listens
    qp.connect(addr, &ConnParams::default()).unwrap();
    rx_req.recv_timeout(Duration::from_secs(5)).unwrap();
    p.inject(
        "mock0",
        &Fault::Reset {
            down_for: Duration::ZERO,
        },
    )
    .unwrap();
    tx_go.send(()).unwrap();
    let first = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    for _ in 0..70 {
        clock.advance(Duration::from_secs(10));
        thread::sleep(Duration::from_millis(2));
    }
    let later = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    assert_eq!(
        starts.load(Ordering::SeqCst),
        1,
        "accept failed with {:?}; mock1 was present all along, yet the server was never \
         restarted.\n first: {first:?}\n later: {later:?}",
        kinds.lock().unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// B. Instant arithmetic overflow: a "very long" window or loss timeout panics the supervisor
//    thread (silently: no GaveUp/ShutDown, the service is never told).
// ---------------------------------------------------------------------------------------------

#[test]
fn a_huge_return_window_does_not_panic_the_supervisor() {
    let p = Arc::new(MockProvider::new());
    let starts = Arc::new(AtomicU32::new(0));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Flaky {
            fails: 0,
            kind: ErrorKind::Other,
            starts: Arc::clone(&starts),
        },
        SupervisorConfig {
            return_window: Some(Duration::MAX),
            ..SupervisorConfig::default()
        },
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    p.inject("mock0", &Fault::Unplug).unwrap();
    let seen = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    assert!(
        !sup.is_finished(),
        "the supervisor thread ended (panicked) after the unplug; events: {seen:?}; state: \
         {:?}; shutdown: {:?}",
        sup.state(),
        sup.shutdown(soon()).err()
    );
}

#[test]
fn a_huge_loss_timeout_does_not_panic_the_supervisor() {
    let p = Arc::new(MockProvider::new());
    let links: Arc<Mutex<Vec<anyverbs::supervisor::Link>>> = Arc::default();
    struct Keep(Arc<Mutex<Vec<anyverbs::supervisor::Link>>>);
    impl Service<MockProvider> for Keep {
        fn start(
            &mut self,
            _d: &MockDevice,
            link: &anyverbs::supervisor::Link,
        ) -> anyverbs::Result<()> {
            self.0.lock().unwrap().push(link.clone());
            Ok(())
        }
        fn stop(&mut self, _r: &StopReason, _d: Instant) {}
        fn on_failure(&mut self, _e: &DeviceEvent) -> FailureAction {
            FailureAction::Ignore
        }
    }
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Keep(Arc::clone(&links)),
        SupervisorConfig {
            loss_timeout: Some(Duration::MAX),
            ..SupervisorConfig::default()
        },
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    links.lock().unwrap()[0].connection_lost("peer gone");
    let seen = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    assert!(
        !sup.is_finished(),
        "the supervisor thread ended (panicked) on a connection loss; events: {seen:?}; \
         shutdown: {:?}",
        sup.shutdown(soon()).err()
    );
}

// ---------------------------------------------------------------------------------------------
// C. A different device under the followed name that is already there when the supervisor
//    starts is not reported (the issue: "A different device, even under the same name → no
//    auto-restart; report it").
// ---------------------------------------------------------------------------------------------

#[test]
fn a_foreign_device_present_at_spawn_is_reported() {
    let p = Arc::new(MockProvider::new());
    let original = identity(&p, "mock0");
    p.inject("mock0", &Fault::Unplug).unwrap();
    p.inject("mock0", &Fault::ReplugOther).unwrap();
    let now = identity(&p, "mock0");
    assert!(!now.is_same_device(&original));
    let starts = Arc::new(AtomicU32::new(0));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(original),
        Flaky {
            fails: 0,
            kind: ErrorKind::Other,
            starts: Arc::clone(&starts),
        },
        SupervisorConfig::default(),
    )
    .unwrap();
    let seen = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    assert_eq!(starts.load(Ordering::SeqCst), 0);
    assert!(
        seen.iter()
            .any(|e| matches!(e, SupervisorEvent::ForeignDevice { .. })),
        "a different device sits under the name; the supervisor reported only {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// D. A reset is reported as "removed" when the monitor's Removed is read before the device
//    stream's DeviceFatal (the step reads the device stream once, then loops over the monitor).
// ---------------------------------------------------------------------------------------------

#[test]
fn a_reset_is_always_reported_as_fatal() {
    let mut causes = Vec::new();
    for _ in 0..60 {
        let p = Arc::new(MockProvider::new());
        let starts = Arc::new(AtomicU32::new(0));
        let sup = Supervisor::spawn(
            Arc::clone(&p),
            DeviceSelector::Identity(identity(&p, "mock0")),
            Flaky {
                fails: 0,
                kind: ErrorKind::Other,
                starts,
            },
            SupervisorConfig::default(),
        )
        .unwrap();
        let _ = sup.events().recv(soon()); // Started
        // Keep the supervisor busy reading monitor events about another device.
        let stop = Arc::new(AtomicBool::new(false));
        let noise = {
            let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = p.inject("mock1", &Fault::Unplug);
                    let _ = p.inject("mock1", &Fault::Replug);
                }
            })
        };
        thread::sleep(Duration::from_millis(3));
        p.inject(
            "mock0",
            &Fault::Reset {
                down_for: Duration::from_secs(3600),
            },
        )
        .unwrap();
        let deadline = soon();
        let cause = loop {
            match sup.events().recv(deadline) {
                Ok(SupervisorReport {
                    event: SupervisorEvent::DeviceLost { cause, .. },
                    ..
                }) => break cause,
                Ok(_) => {}
                Err(e) => panic!("no DeviceLost: {e}"),
            }
        };
        stop.store(true, Ordering::Relaxed);
        noise.join().unwrap();
        causes.push(cause);
        if cause != LossCause::Fatal {
            break;
        }
    }
    assert!(
        causes.iter().all(|c| *c == LossCause::Fatal),
        "a reset was reported with causes {causes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sanity: the baseline the tests above compare with — a ConnectionRefused start is retried.
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_a_refused_start_is_retried() {
    let p = Arc::new(MockProvider::new());
    let clock = ManualClock::new();
    let starts = Arc::new(AtomicU32::new(0));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Flaky {
            fails: 1,
            kind: ErrorKind::ConnectionRefused,
            starts: Arc::clone(&starts),
        },
        manual(&clock),
    )
    .unwrap();
    let _ = collect_until(sup.events(), Instant::now() + Duration::from_millis(200));
    clock.advance(Duration::from_secs(10));
    let _ = collect_until(sup.events(), Instant::now() + Duration::from_millis(200));
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    let _ = GiveUp::WindowExpired;
}

// ---------------------------------------------------------------------------------------------
// E. On iWARP the connection goes down with a QP that enters ERROR (the mock moves the peer to
//    ERROR too, as siw does), but the peer's device reports nothing: siw delivers
//    RDMA_CM_EVENT_DISCONNECTED on both sides (softrdma.md), which DeviceEvent::Disconnected
//    stands for. A supervised service on the surviving side is never told.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_iwarp_peer_torn_down_by_a_killed_qp_reports_disconnected() {
    use anyverbs_provider_mock::{DeviceConfig, FabricConfig};
    let p = MockProvider::with_config(FabricConfig {
        devices: vec![DeviceConfig::iwarp("iw0", 1), DeviceConfig::iwarp("iw1", 2)],
        ..FabricConfig::default()
    });
    let (dev_a, dev_b) = (p.open("iw0").unwrap(), p.open("iw1").unwrap());
    let (pd_a, pd_b) = (dev_a.alloc_pd().unwrap(), dev_b.alloc_pd().unwrap());
    let (cq_a, cq_b) = (dev_a.create_cq(16).unwrap(), dev_b.create_cq(16).unwrap());
    let a = pd_a.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
    let b = pd_b.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    let addr = SocketAddr::new(dev_b.ports().unwrap()[0].addresses[0], 0);
    let listener = dev_b.listen(addr).unwrap();
    a.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let req = listener.next_request(soon()).unwrap();
    listener.accept(&req, &b, &ConnParams::default()).unwrap();
    a.wait_connected(soon()).unwrap();
    let events_b = dev_b.events().unwrap();

    p.inject("iw0", &Fault::KillQp { qp_num: a.qp_num() })
        .unwrap();
    assert_eq!(
        b.state().unwrap(),
        anyverbs::QpState::Error,
        "the peer went down with it"
    );
    let got = events_b.recv(Instant::now() + Duration::from_millis(300));
    assert_eq!(
        got.ok(),
        Some(DeviceEvent::Disconnected { qp_num: b.qp_num() }),
        "iw1's QP {} is in ERROR because its connection went down, but iw1 reported nothing",
        b.qp_num()
    );
}

// ---------------------------------------------------------------------------------------------
// F. A CQ error moves the CQ's QPs to ERROR (the mock publishes only CqError, no QpFatal), but
//    the supervisor only logs CqError: the service is never asked (on_failure takes only
//    QP events) and keeps "running" on dead QPs.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_cq_error_that_kills_the_services_qps_reaches_the_service() {
    use anyverbs::{Access, MemoryRegion, RecvWr, SendWr};
    use anyverbs_provider_mock::{MockCq, MockListener, MockMr, MockPd, MockQp};
    type Held = (MockQp, MockQp, MockListener, MockCq, MockCq, MockMr, MockPd);
    struct Tiny {
        held: Arc<Mutex<Option<Held>>>,
        asked: Arc<AtomicU32>,
    }
    impl Service<MockProvider> for Tiny {
        fn start(
            &mut self,
            d: &MockDevice,
            _l: &anyverbs::supervisor::Link,
        ) -> anyverbs::Result<()> {
            let pd = d.alloc_pd()?;
            let cq_a = d.create_cq(16)?;
            // Too small for four flushes: a depth of one, plus a slot for each of b's queues
            // (the drain's markers).
            let cq_b = d.create_cq(1)?;
            let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default())?;
            let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default())?;
            let addr = SocketAddr::new(d.ports()?[0].addresses[0], 0);
            let l = d.listen(addr)?;
            a.connect(l.local_addr(), &ConnParams::default())?;
            let r = l.next_request(soon())?;
            l.accept(&r, &b, &ConnParams::default())?;
            a.wait_connected(soon())?;
            let mr = pd.register(64, Access::LOCAL_WRITE)?;
            let recvs: Vec<RecvWr> = (1..=4).map(|i| RecvWr::single(i, mr.sge(0, 8))).collect();
            b.post_recv(&recvs).map_err(|e| e.error)?;
            *self.held.lock().unwrap() = Some((a, b, l, cq_a, cq_b, mr, pd));
            Ok(())
        }
        fn stop(&mut self, _r: &StopReason, _d: Instant) {
            *self.held.lock().unwrap() = None;
        }
        fn on_failure(&mut self, _e: &DeviceEvent) -> FailureAction {
            self.asked.fetch_add(1, Ordering::SeqCst);
            FailureAction::Restart
        }
    }
    let p = Arc::new(MockProvider::new());
    let held: Arc<Mutex<Option<Held>>> = Arc::default();
    let asked = Arc::new(AtomicU32::new(0));
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Tiny {
            held: Arc::clone(&held),
            asked: Arc::clone(&asked),
        },
        SupervisorConfig::default(),
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    // Four SENDs arrive at b, whose CQ's ring holds three: overflow, CqError, b in ERROR.
    {
        let g = held.lock().unwrap();
        let h = g.as_ref().unwrap();
        let sends: Vec<SendWr> = (10..14)
            .map(|i| SendWr::single(i, anyverbs::SendOp::Send, h.5.sge(16, 8)))
            .collect();
        h.0.post_send(&sends).unwrap();
    }
    let seen = collect_until(sup.events(), Instant::now() + Duration::from_millis(300));
    let state = held.lock().unwrap().as_ref().map(|h| h.1.state());
    assert!(
        asked.load(Ordering::SeqCst) > 0 || !seen.is_empty(),
        "the CQ error left the service's QP b in {state:?}; the supervisor neither asked the \
         service nor decided anything ({seen:?}); supervisor state {:?}",
        sup.state()
    );
}

// ---------------------------------------------------------------------------------------------
// G. A message whose receive completed successfully (and whose sender got Success) can no longer
//    be read once the device resets: MR memory is provider-owned and `read` fails with
//    DeviceLost. The drain docs say "the ULP owns the buffers of every outstanding WR again",
//    but it cannot reach them, nor the data of WRs that already completed.
// ---------------------------------------------------------------------------------------------

#[test]
fn data_received_before_a_reset_stays_readable() {
    use anyverbs::{Access, Completion, CompletionQueue, MemoryRegion, RecvWr, SendWr, WcStatus};
    let p = MockProvider::new();
    let (da, db) = (p.open("mock0").unwrap(), p.open("mock1").unwrap());
    let (pa, pb) = (da.alloc_pd().unwrap(), db.alloc_pd().unwrap());
    let (ca, cb) = (da.create_cq(8).unwrap(), db.create_cq(8).unwrap());
    let a = pa.create_qp(&ca, &ca, &QpInit::default()).unwrap();
    let b = pb.create_qp(&cb, &cb, &QpInit::default()).unwrap();
    let l = db
        .listen(SocketAddr::new(db.ports().unwrap()[0].addresses[0], 0))
        .unwrap();
    a.connect(l.local_addr(), &ConnParams::default()).unwrap();
    let r = l.next_request(soon()).unwrap();
    l.accept(&r, &b, &ConnParams::default()).unwrap();
    a.wait_connected(soon()).unwrap();
    let (src, dst) = (
        pa.register(8, Access::LOCAL_WRITE).unwrap(),
        pb.register(8, Access::LOCAL_WRITE).unwrap(),
    );
    src.write(0, b"precious").unwrap();
    b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 8)])]).unwrap();
    a.post_send(&[SendWr::send(2, &[src.sge(0, 8)])]).unwrap();
    let mut wc = [Completion::default(); 1];
    cb.wait(&mut wc, soon()).unwrap();
    assert_eq!(wc[0].status, WcStatus::Success);
    ca.wait(&mut wc, soon()).unwrap();
    assert_eq!(
        wc[0].status,
        WcStatus::Success,
        "the sender was told it arrived"
    );
    p.inject(
        "mock1",
        &Fault::Reset {
            down_for: Duration::ZERO,
        },
    )
    .unwrap();
    let mut got = [0u8; 8];
    let r = dst.read(0, &mut got);
    assert!(
        r.is_ok(),
        "the delivered message is unreadable after the reset: {r:?}"
    );
}

// --- Looks for a lost device with a tiny reconnect delay ------------------------------------
//
// While waiting, the supervisor looks for the device itself at `reconnect_delay_for(looks)`.
// With a zero reconnect delay every look was due at once: the thread spun, listing the devices
// (which opens every device on a real provider) as fast as it could for the whole return
// window, and forever on a manual clock that nobody advances. With 1 ms (and a 1 ms maximum) it
// listed them a thousand times a second.

/// A clock that counts the supervisor's waits (one per turn of its loop).
struct Counting<C> {
    inner: C,
    waits: AtomicU32,
}

impl<C: Clock> Clock for Counting<C> {
    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn wait(&self, wakeup: &Arc<anyverbs::Wakeup>, seen: u64, until: Option<Instant>) {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.inner.wait(wakeup, seen, until)
    }
}

/// Unplugs the device under a supervisor with `delay` as its reconnect delay and maximum, and
/// returns how often its loop turned during `watch` of real time spent waiting for the device.
fn turns_while_waiting<C: Clock>(clock: Arc<Counting<C>>, delay: Duration, watch: Duration) -> u32 {
    let p = Arc::new(MockProvider::new());
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Flaky {
            fails: 0,
            kind: ErrorKind::Other,
            starts: Arc::new(AtomicU32::new(0)),
        },
        SupervisorConfig {
            reconnect_delay: delay,
            max_reconnect_delay: delay,
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            ..SupervisorConfig::default()
        },
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    p.inject("mock0", &Fault::Unplug).unwrap();
    loop {
        match sup.events().recv(soon()) {
            Ok(r) if matches!(r.event, SupervisorEvent::WaitingForDevice { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("no WaitingForDevice after the unplug: {e}"),
        }
    }
    let before = clock.waits.load(Ordering::SeqCst);
    thread::sleep(watch);
    let turns = clock.waits.load(Ordering::SeqCst) - before;
    // The device still comes back, found by the monitor or by a look.
    p.inject("mock0", &Fault::Replug).unwrap();
    let seen = collect_until(sup.events(), Instant::now() + Duration::from_millis(500));
    assert!(
        seen.iter()
            .any(|e| matches!(e, SupervisorEvent::Started { .. })),
        "not restarted after the replug: {seen:?}"
    );
    sup.shutdown(soon()).unwrap();
    turns
}

#[test]
fn a_zero_reconnect_delay_does_not_spin_while_waiting() {
    let clock = Arc::new(Counting {
        inner: ManualClock::new(),
        waits: AtomicU32::new(0),
    });
    let turns = turns_while_waiting(clock, Duration::ZERO, Duration::from_millis(300));
    assert!(turns < 20, "the supervisor spun: {turns} turns in 300 ms");
}

#[test]
fn a_one_ms_reconnect_delay_looks_at_a_sane_pace() {
    let clock = Arc::new(Counting {
        inner: anyverbs::supervisor::SystemClock,
        waits: AtomicU32::new(0),
    });
    let turns = turns_while_waiting(clock, Duration::from_millis(1), Duration::from_millis(500));
    assert!(turns < 20, "{turns} looks in 500 ms");
}

// --- Looks and the other timers of the wait ---------------------------------------------------
//
// Looks every reconnect delay must not move the return window, report a foreign device again at
// every look, or stop the reports of what is held.

#[test]
fn looks_keep_the_window_and_report_foreign_and_held_once() {
    let p = Arc::new(MockProvider::new());
    let clock = ManualClock::new();
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        Flaky {
            fails: 0,
            kind: ErrorKind::Other,
            starts: Arc::new(AtomicU32::new(0)),
        },
        manual(&clock),
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    // The test holds the device: it cannot come back, and that is reported.
    let held = p.open("mock0").unwrap();
    p.inject("mock0", &Fault::Unplug).unwrap();
    let first = collect_until(sup.events(), Instant::now() + Duration::from_millis(200));
    let count = |evs: &[SupervisorEvent], f: fn(&SupervisorEvent) -> bool| {
        evs.iter().filter(|e| f(e)).count()
    };
    assert_eq!(
        count(&first, |e| matches!(e, SupervisorEvent::DeviceHeld { .. })),
        1,
        "{first:?}"
    );
    drop(held);
    p.inject("mock0", &Fault::ReplugOther).unwrap();
    let mut seen = Vec::new();
    // 59 looks (one each 10 s) and held checks, just short of the 600 s window.
    for _ in 0..59 {
        clock.advance(Duration::from_secs(10));
        seen.extend(collect_until(
            sup.events(),
            Instant::now() + Duration::from_millis(20),
        ));
    }
    clock.advance(Duration::from_secs(9));
    seen.extend(collect_until(
        sup.events(),
        Instant::now() + Duration::from_millis(100),
    ));
    assert_eq!(
        count(&seen, |e| matches!(
            e,
            SupervisorEvent::ForeignDevice { .. }
        )),
        1,
        "{seen:?}"
    );
    assert_eq!(
        count(&seen, |e| matches!(
            e,
            SupervisorEvent::Started { .. } | SupervisorEvent::GaveUp { .. }
        )),
        0,
        "{seen:?}"
    );
    // The device released, and the holding it gone: reported as changed, once.
    assert_eq!(
        count(&seen, |e| matches!(e, SupervisorEvent::DeviceHeld { .. })),
        1,
        "{seen:?}"
    );
    clock.advance(Duration::from_secs(1));
    let end = collect_until(sup.events(), soon());
    assert!(
        matches!(
            end.as_slice(),
            [SupervisorEvent::GaveUp {
                reason: GiveUp::WindowExpired
            }]
        ),
        "{end:?}"
    );
}

// --- A return found by a look is reported as one ----------------------------------------------
//
// When the monitor's announcement of the return was lost (here: dropped from a full monitor
// queue while the supervisor sat in the service's `accept_replacement`), a look finds the
// device and restarts the service. It said only `Started`, without the `DeviceReturned` that
// the docs, the conformance probe and the recovery bench expect before a restart on a
// returned device.

/// Holds nothing; blocks in its first `accept_replacement` until told to go on, and refuses.
struct SlowToRefuse {
    entered: mpsc::Sender<()>,
    go_on: Mutex<mpsc::Receiver<()>>,
}

impl Service<MockProvider> for SlowToRefuse {
    fn start(
        &mut self,
        _device: &MockDevice,
        _link: &anyverbs::supervisor::Link,
    ) -> anyverbs::Result<()> {
        Ok(())
    }
    fn stop(&mut self, _reason: &StopReason, _deadline: Instant) {}
    fn on_failure(&mut self, _event: &DeviceEvent) -> FailureAction {
        FailureAction::Ignore
    }
    fn accept_replacement(
        &mut self,
        _expected: &anyverbs::DeviceIdentity,
        _found: &anyverbs::DeviceInfo,
    ) -> bool {
        let _ = self.entered.send(());
        let _ = self
            .go_on
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(5));
        false
    }
}

#[test]
fn a_return_found_by_a_look_is_reported_as_a_return() {
    let p = Arc::new(MockProvider::new());
    let (entered_tx, entered) = mpsc::channel();
    let (go_on, go_on_rx) = mpsc::channel();
    let sup = Supervisor::spawn(
        Arc::clone(&p),
        DeviceSelector::Identity(identity(&p, "mock0")),
        SlowToRefuse {
            entered: entered_tx,
            go_on: Mutex::new(go_on_rx),
        },
        SupervisorConfig {
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_millis(100),
            ..SupervisorConfig::default()
        },
    )
    .unwrap();
    let _ = sup.events().recv(soon()); // Started
    p.inject("mock0", &Fault::Unplug).unwrap();
    p.inject("mock0", &Fault::ReplugOther).unwrap();
    entered
        .recv_timeout(Duration::from_secs(5))
        .expect("accept_replacement was not asked");
    // The real device comes back while the supervisor is busy, and its announcement is pushed
    // out of the monitor's queue.
    p.inject("mock0", &Fault::Unplug).unwrap();
    p.inject("mock0", &Fault::Replug).unwrap();
    for _ in 0..anyverbs::event::EVENT_QUEUE_CAPACITY {
        p.inject("mock1", &Fault::Unplug).unwrap();
        p.inject("mock1", &Fault::Replug).unwrap();
    }
    go_on.send(()).unwrap();
    let mut seen = Vec::new();
    let deadline = soon();
    while let Ok(r) = sup.events().recv(deadline) {
        let started = matches!(r.event, SupervisorEvent::Started { .. });
        seen.push(r.event);
        if started {
            break;
        }
    }
    let n = seen.len();
    assert!(
        n >= 2
            && matches!(seen[n - 1], SupervisorEvent::Started { generation: 2, .. })
            && matches!(seen[n - 2], SupervisorEvent::DeviceReturned { .. }),
        "{seen:?}"
    );
    sup.shutdown(soon()).unwrap();
}
