//! A hostile review's regression tests for the verbs provider on a real device (rxe0 in the test
//! bed). They run where `ANYVERBS_TEST_DEVICES` names rxe0 (pass without running elsewhere,
//! unless `ANYVERBS_REQUIRE_DEVICES=1`). Build on the host, run in the guest:
//!
//! ```sh
//! cargo test -p anyverbs-provider-ib --test hostile --no-run   # prints the binary
//! testbed/run --timeout 600 --out /tmp/hostile --bin target/debug/deps/hostile-<hash> \
//!   --env ANYVERBS_TEST_DEVICES=rxe0 --env ANYVERBS_SPARE_NETDEVS=rxe0=dummy2 \
//!   -- hostile-<hash> --test-threads=1
//! ```

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, DeviceEvent, ErrorKind, Listener,
    MemoryRegion, Provider, QpInit, QpState, QueuePair, RecvWr, SendFlags, SendWr, Sge,
};
use anyverbs_provider_ib::IbProvider;

type P = IbProvider;

const DEV: &str = "rxe0";
const ADDR: &str = "10.11.12.13";

fn on_device(test: &str) -> bool {
    let names = std::env::var("ANYVERBS_TEST_DEVICES").unwrap_or_default();
    if names.split([' ', ',']).any(|n| n == DEV) {
        return true;
    }
    if std::env::var("ANYVERBS_REQUIRE_DEVICES").is_ok_and(|v| v == "1") {
        panic!("{test}: ANYVERBS_REQUIRE_DEVICES=1 but ANYVERBS_TEST_DEVICES does not name {DEV}");
    }
    eprintln!("{test}: skipped, it needs {DEV} (run it in the test bed)");
    false
}

fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(ADDR.parse().unwrap(), port)
}

#[allow(dead_code)]
struct Pair {
    a: <P as Provider>::Qp,
    b: <P as Provider>::Qp,
    _listener: <P as Provider>::Listener,
    cq_a: <P as Provider>::Cq,
    cq_b: <P as Provider>::Cq,
    pd: <P as Provider>::Pd,
    device: <P as Provider>::Device,
}

fn pair(provider: &P, port: u16) -> Pair {
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq_a = device.create_cq(64).unwrap();
    let cq_b = device.create_cq(64).unwrap();
    let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
    a.modify(QpState::Init).unwrap();
    b.modify(QpState::Init).unwrap();
    let listener = device.listen(addr(port)).unwrap();
    a.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let req = listener.next_request(within(10)).unwrap();
    listener.accept(&req, &b, &ConnParams::default()).unwrap();
    a.wait_connected(within(10)).unwrap();
    Pair {
        a,
        b,
        _listener: listener,
        cq_a,
        cq_b,
        pd,
        device,
    }
}

impl Pair {
    fn a_cq(&self) -> &<P as Provider>::Cq {
        &self.cq_a
    }
}

fn wait_n(cq: &<P as Provider>::Cq, n: usize, secs: u64) -> Vec<Completion> {
    let deadline = within(secs);
    let mut got = Vec::new();
    let mut buf = [Completion::default(); 8];
    while got.len() < n {
        match cq.wait(&mut buf, deadline) {
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => panic!("waiting for {n} completions, got {got:?}: {e}"),
        }
    }
    got
}

/// A peer process, killed if a failed test leaves it running (it would hold the device, and a
/// later test's delete of it would wait for it).
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(cmd: &str, args: &[&str]) -> Peer {
    Peer(
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd}: {e}")),
    )
}

fn wait_child(peer: &mut Peer, secs: u64) -> Option<std::process::ExitStatus> {
    let child = &mut peer.0;
    let deadline = within(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verbs_fds() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("/dev/infiniband"))
        .collect()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// After its peer disconnected, a QP that *was* connected must still be disconnectable: the
/// trait promises `InvalidState` only "for a QP that was never connected", and a ULP's ordinary
/// reaction to `Disconnected` is its own `disconnect` (librdmacm: `rdma_disconnect` on
/// `RDMA_CM_EVENT_DISCONNECTED`), which on InfiniBand moves the QP to ERROR so its receives flush.
#[test]
fn disconnect_after_the_peer_disconnected_is_not_invalid_state() {
    if !on_device("disconnect_after_the_peer_disconnected_is_not_invalid_state") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let p = pair(&provider, 7601);
    // Let the passive side's CM see the RTU first (see
    // `disconnect_right_after_accept_reaches_the_peer`).
    std::thread::sleep(Duration::from_millis(500));
    let events = p.device.events().unwrap();
    p.b.disconnect(within(5)).unwrap();
    let deadline = within(10);
    let mut seen = Vec::new();
    loop {
        let e = events.recv(deadline).unwrap_or_else(|e| {
            panic!(
                "no Disconnected for a (QP {}): {e}; saw {seen:?}",
                p.a.qp_num()
            )
        });
        seen.push(e.clone());
        if e == (DeviceEvent::Disconnected {
            qp_num: p.a.qp_num(),
        }) {
            break;
        }
    }
    // The event is published before the CM thread updates the connection: let it.
    std::thread::sleep(Duration::from_millis(300));
    let r = p.a.disconnect(within(5));
    assert!(
        r.is_ok(),
        "the survivor's disconnect after the peer's: {:?} (state {:?})",
        r.err(),
        p.a.state()
    );
    assert_eq!(p.a.state().unwrap(), QpState::Error);
}

/// Same root cause, seen from `wait_connected`: once established, a later peer disconnect turns
/// the outcome into "ended the connection while it was being set up".
#[test]
fn wait_connected_after_the_peer_disconnected_still_reports_the_connection() {
    if !on_device("wait_connected_after_the_peer_disconnected_still_reports_the_connection") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let p = pair(&provider, 7602);
    std::thread::sleep(Duration::from_millis(500));
    let events = p.device.events().unwrap();
    p.b.disconnect(within(5)).unwrap();
    let deadline = within(10);
    while events.recv(deadline).unwrap()
        != (DeviceEvent::Disconnected {
            qp_num: p.a.qp_num(),
        })
    {}
    std::thread::sleep(Duration::from_millis(300));
    let r = p.a.wait_connected(within(1));
    assert!(
        r.is_ok(),
        "wait_connected of an established QP: {:?}",
        r.err()
    );
}

/// An anyverbs client against librdmacm's `rdma_server` (16-byte SEND each way).
#[test]
fn anyverbs_client_talks_to_rdma_server() {
    if !on_device("anyverbs_client_talks_to_rdma_server") {
        return;
    }
    let mut server = spawn("rdma_server", &["-s", ADDR, "-p", "7603"]);
    std::thread::sleep(Duration::from_millis(1500));
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.modify(QpState::Init).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    mr.write(0, b"anyverbs-to-srv!").unwrap();
    qp.post_recv(&[RecvWr::new(1, &[mr.sge(32, 16)])]).unwrap();
    // Subscribed before anything can happen: rdma_server disconnects as soon as it has sent.
    let events = device.events().unwrap();
    qp.connect(addr(7603), &ConnParams::default()).unwrap();
    let c = qp.wait_connected(within(10));
    assert!(c.is_ok(), "connecting to rdma_server: {:?}", c.err());
    qp.post_send(&[SendWr::send(2, &[mr.sge(0, 16)])]).unwrap();
    let got = wait_n(&cq, 2, 10);
    assert!(got.iter().all(|c| c.status.is_success()), "{got:?}");
    // rdma_server disconnects and waits for the answer: the ULP answers with its own
    // disconnect, as a librdmacm program does on RDMA_CM_EVENT_DISCONNECTED.
    let deadline = within(10);
    while events.recv(deadline).unwrap()
        != (DeviceEvent::Disconnected {
            qp_num: qp.qp_num(),
        })
    {}
    let d = qp.disconnect(within(5));
    assert!(
        d.is_ok(),
        "answering rdma_server's disconnect: {:?}",
        d.err()
    );
    let status = wait_child(&mut server, 10);
    assert!(
        status.is_some_and(|s| s.success()),
        "rdma_server: {status:?}"
    );
}

/// librdmacm's `rdma_client` against an anyverbs listener.
#[test]
fn rdma_client_talks_to_an_anyverbs_server() {
    if !on_device("rdma_client_talks_to_an_anyverbs_server") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.modify(QpState::Init).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    mr.write(0, b"anyverbs-to-cli!").unwrap();
    qp.post_recv(&[RecvWr::new(1, &[mr.sge(32, 16)])]).unwrap();
    let listener = device.listen(addr(7604)).unwrap();
    // Subscribed before anything can happen: rdma_client disconnects as soon as it has what
    // it waits for.
    let events = device.events().unwrap();
    let mut client = spawn("rdma_client", &["-s", ADDR, "-p", "7604"]);
    let req = listener.next_request(within(10)).unwrap();
    listener.accept(&req, &qp, &ConnParams::default()).unwrap();
    let got = wait_n(&cq, 1, 10);
    assert!(got[0].status.is_success(), "{got:?}");
    qp.post_send(&[SendWr::send(2, &[mr.sge(0, 16)])]).unwrap();
    let got = wait_n(&cq, 1, 10);
    assert!(got[0].status.is_success(), "{got:?}");
    let deadline = within(10);
    while events.recv(deadline).unwrap()
        != (DeviceEvent::Disconnected {
            qp_num: qp.qp_num(),
        })
    {}
    let d = qp.disconnect(within(5));
    assert!(
        d.is_ok(),
        "answering rdma_client's disconnect: {:?}",
        d.err()
    );
    let status = wait_child(&mut client, 10);
    assert!(
        status.is_some_and(|s| s.success()),
        "rdma_client: {status:?}"
    );
}

/// A listener of rxe0 on the unspecified address must not hand out requests that arrived through
/// another device (here: siw0, from `rping` over iWARP) — or, if it does, accepting one onto a QP
/// of rxe0 must work.
#[test]
fn wildcard_listener_hands_out_only_its_devices_requests() {
    if !on_device("wildcard_listener_hands_out_only_its_devices_requests") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    // A wildcard listener would take every device's requests, which rxe0's QPs cannot accept
    // (a request through siw0, say): it is refused, with the reason.
    let e = device
        .listen("0.0.0.0:7605".parse().unwrap())
        .expect_err("a wildcard listener");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

/// Inline SGEs the CPU would read outside registered memory are refused before any post (the
/// soundness property), and a refused inline post leaves the QP usable.
#[test]
fn inline_outside_registered_memory_is_refused() {
    if !on_device("inline_outside_registered_memory_is_refused") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let p = pair(&provider, 7606);
    let mr = p.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let gone = p.pd.register(64, Access::LOCAL_WRITE).unwrap();
    let gone_sge = gone.sge(0, 16);
    gone.destroy().unwrap();
    let stack = [7u8; 64];
    let bad = [
        Sge {
            addr: mr.addr() + 60,
            length: 16,
            lkey: mr.lkey(),
        },
        Sge {
            addr: mr.addr() - 8,
            length: 16,
            lkey: mr.lkey(),
        },
        Sge {
            addr: 0x10,
            length: 16,
            lkey: mr.lkey(),
        },
        Sge {
            addr: stack.as_ptr() as u64,
            length: 16,
            lkey: 0xdead_beef,
        },
        Sge {
            addr: u64::MAX - 4,
            length: 16,
            lkey: mr.lkey(),
        },
        gone_sge,
    ];
    for (i, s) in bad.iter().enumerate() {
        let e =
            p.a.post_send(&[SendWr::send(10 + i as u64, std::slice::from_ref(s))
                .with_flags(SendFlags::SIGNALED | SendFlags::INLINE)])
                .unwrap_err();
        assert_eq!(e.accepted, 0);
        assert_eq!(
            e.error.kind(),
            ErrorKind::InvalidArgument,
            "SGE {i}: {}",
            e.error
        );
    }
    // A batch whose second WR is bad: exactly the WRs `accepted` counts were posted, and they
    // (and only they) complete; the QP stays usable.
    let dst = p.pd.register(64, Access::LOCAL_WRITE).unwrap();
    p.b.post_recv(&[
        RecvWr::new(1, &[dst.sge(0, 32)]),
        RecvWr::new(2, &[dst.sge(32, 32)]),
    ])
    .unwrap();
    let good = [mr.sge(0, 16)];
    let e =
        p.a.post_send(&[
            SendWr::send(20, &good).with_flags(SendFlags::SIGNALED | SendFlags::INLINE),
            SendWr::send(21, &bad[0..1]).with_flags(SendFlags::SIGNALED | SendFlags::INLINE),
        ])
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidArgument, "{}", e.error);
    p.a.post_send(&[SendWr::send(22, &good)]).unwrap();
    let mut expected: Vec<u64> = (20..20 + e.accepted as u64).collect();
    expected.push(22);
    let deadline = within(5);
    let mut got = Vec::new();
    let mut buf = [Completion::default(); 8];
    while got.len() < expected.len() {
        match p.a_cq().wait(&mut buf, deadline) {
            Ok(k) => got.extend(buf[..k].iter().map(|c| (c.wr_id, c.status))),
            Err(err) => panic!(
                "the batch's post said {} WR(s) accepted; expected completions of {expected:?}, \
                 got {got:?}: {err}",
                e.accepted
            ),
        }
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), expected);
}

/// Opening and dropping a device handle (with a connection on it) many times leaks no thread and
/// no /dev/infiniband fd.
#[test]
fn opening_and_dropping_devices_leaks_no_threads_or_fds() {
    if !on_device("opening_and_dropping_devices_leaks_no_threads_or_fds") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    drop(pair(&provider, 7607));
    std::thread::sleep(Duration::from_secs(1));
    let (t0, f0) = (threads(), verbs_fds());
    for i in 0..10 {
        drop(pair(&provider, 7610 + i));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (t1, f1) = (threads(), verbs_fds());
    assert!(t1 <= t0, "threads {t0} -> {t1}");
    assert!(f1.len() <= f0.len(), "fds {f0:?} -> {f1:?}");
}

/// A listener dropped with a request it never took: the requester learns it was refused
/// promptly instead of waiting out its deadline.
#[test]
fn listener_dropped_with_an_untaken_request_refuses_it() {
    if !on_device("listener_dropped_with_an_untaken_request_refuses_it") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.modify(QpState::Init).unwrap();
    let listener = device.listen(addr(7620)).unwrap();
    qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(listener);
    let t = Instant::now();
    let e = qp.wait_connected(within(20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// A connection to a port nobody listens on is refused, promptly.
#[test]
fn connect_to_a_port_without_listener_is_refused() {
    if !on_device("connect_to_a_port_without_listener_is_refused") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.modify(QpState::Init).unwrap();
    let t = Instant::now();
    qp.connect(addr(7621), &ConnParams::default()).unwrap();
    let e = qp.wait_connected(within(20)).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::Unreachable
        ),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// Accept twice, reject after accept: the request is answered once.
#[test]
fn a_request_is_answered_once() {
    if !on_device("a_request_is_answered_once") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let a = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let b = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let c = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    for q in [&a, &b, &c] {
        q.modify(QpState::Init).unwrap();
    }
    let listener = device.listen(addr(7622)).unwrap();
    a.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let req = listener.next_request(within(10)).unwrap();
    listener.accept(&req, &b, &ConnParams::default()).unwrap();
    let e = listener
        .accept(&req, &c, &ConnParams::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = listener.reject(&req, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    a.wait_connected(within(10)).unwrap();
    assert_eq!(c.state().unwrap(), QpState::Init);
}

/// Two threads connecting one QP at once: exactly one may start a connection.
#[test]
fn concurrent_connects_on_one_qp_start_one_connection() {
    if !on_device("concurrent_connects_on_one_qp_start_one_connection") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let listener = device.listen(addr(7623)).unwrap();
    let mut both = 0;
    for _ in 0..50 {
        let qp = Arc::new(pd.create_qp(&cq, &cq, &QpInit::default()).unwrap());
        qp.modify(QpState::Init).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let spawn = |qp: Arc<<P as Provider>::Qp>, barrier: Arc<Barrier>| {
            let remote = listener.local_addr();
            std::thread::spawn(move || {
                barrier.wait();
                qp.connect(remote, &ConnParams::default()).is_ok()
            })
        };
        let t1 = spawn(qp.clone(), barrier.clone());
        let t2 = spawn(qp.clone(), barrier.clone());
        let (r1, r2) = (t1.join().unwrap(), t2.join().unwrap());
        if r1 && r2 {
            both += 1;
        }
        while let Ok(req) = listener.next_request(Instant::now() + Duration::from_millis(300)) {
            let _ = listener.reject(&req, &[]);
        }
        qp.destroy().unwrap();
    }
    assert_eq!(
        both, 0,
        "both connects of one QP returned Ok in {both} of 50 tries"
    );
}

/// After an unplug, dropping everything closes every /dev/infiniband fd of the device and the
/// kernel's delete completes (a replug then succeeds).
#[test]
fn unplug_then_drop_closes_every_fd() {
    if !on_device("unplug_then_drop_closes_every_fd") {
        return;
    }
    let before = verbs_fds();
    let provider = anyverbs_provider_ib::provider();
    {
        let p = pair(&provider, 7630);
        let ch = p.device.create_channel().unwrap();
        let cq = p.device.create_cq_with(8, Some(&ch)).unwrap();
        let _mr = p.pd.register(4096, Access::LOCAL_WRITE).unwrap();
        let events = p.device.events().unwrap();
        provider.inject(DEV, &anyverbs::Fault::Unplug).unwrap();
        let deadline = within(10);
        while !events.recv(deadline).unwrap().is_device_lost() {}
        let e = p.a.post_recv(&[]).err();
        let _ = e;
        drop(cq);
        drop(ch);
        drop(p);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = verbs_fds();
    provider.inject(DEV, &anyverbs::Fault::Replug).unwrap();
    let deadline = within(20);
    while provider
        .devices()
        .unwrap()
        .iter()
        .all(|d| d.identity.name != DEV)
    {
        assert!(Instant::now() < deadline, "{DEV} did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        after.len() <= before.len(),
        "fds before {before:?}, after {after:?}"
    );
}

/// On InfiniBand the passive side's `accept` marks the connection established at once, before
/// the CM has the RTU; a `disconnect` then (the kernel's `ib_send_cm_dreq` refuses outside
/// ESTABLISHED, and rdma_disconnect ignores that) sends no DREQ, the peer is never told and its
/// QP stays in RTS.
#[test]
fn disconnect_right_after_accept_reaches_the_peer() {
    if !on_device("disconnect_right_after_accept_reaches_the_peer") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let mut missed = Vec::new();
    for i in 0..8 {
        let p = pair(&provider, 7640 + i);
        let events = p.device.events().unwrap();
        p.b.disconnect(within(5)).unwrap();
        let deadline = within(5);
        let told = loop {
            match events.recv(deadline) {
                Ok(e)
                    if e == (DeviceEvent::Disconnected {
                        qp_num: p.a.qp_num(),
                    }) =>
                {
                    break true;
                }
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        if !told {
            missed.push((i, p.a.state().ok()));
        }
    }
    assert!(
        missed.is_empty(),
        "the active side never learnt of the passive side's disconnect in {} of 8 tries \
         (try, its state): {missed:?}",
        missed.len()
    );
}

/// A device one provider unplugged makes another provider of the same process (another flavor,
/// another test's) wait `RESTORE_WAIT` (15 s) in every `devices()` and `open()`.
#[test]
fn another_providers_unplug_does_not_stall_devices() {
    if !on_device("another_providers_unplug_does_not_stall_devices") {
        return;
    }
    let p1 = anyverbs_provider_ib::provider();
    let p2 = anyverbs_provider_ib::provider();
    p1.inject(DEV, &anyverbs::Fault::Unplug).unwrap();
    let t = Instant::now();
    let listed = p2.devices();
    let took = t.elapsed();
    p1.inject(DEV, &anyverbs::Fault::Replug).unwrap();
    drop(p1);
    assert!(listed.is_ok(), "{listed:?}");
    assert!(took < Duration::from_secs(3), "p2.devices() took {took:?}");
}

/// Dropping the provider while a device it unplugged is still held by the ULP (devices do not
/// keep their provider alive) blocked the drop for 30 s: a process must not end with its own
/// delete pending, so the drop waited for it. The delete now runs in a child process.
#[test]
fn dropping_the_provider_before_its_devices_does_not_block() {
    if !on_device("dropping_the_provider_before_its_devices_does_not_block") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let device = provider.open(DEV).unwrap();
    let pd = device.alloc_pd().unwrap();
    provider.inject(DEV, &anyverbs::Fault::Unplug).unwrap();
    let t = Instant::now();
    drop(provider);
    let took = t.elapsed();
    drop(pd);
    drop(device);
    // Put the device back for the tests after this one.
    let again = anyverbs_provider_ib::provider();
    let deadline = within(30);
    while again
        .devices()
        .unwrap()
        .iter()
        .all(|d| d.identity.name != DEV)
    {
        assert!(Instant::now() < deadline, "{DEV} did not come back");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        took < Duration::from_secs(3),
        "drop(provider) took {took:?}"
    );
}

/// A reset keeps the device away for its `down_for` at least, as the core's `Fault::Reset`
/// promises (and as the mock does): the provider used to add it back as soon as the delete
/// completed, so a ULP's code path for a slow reset was never exercised on rxe.
#[test]
fn a_reset_keeps_the_device_away_for_down_for() {
    if !on_device("a_reset_keeps_the_device_away_for_down_for") {
        return;
    }
    let provider = anyverbs_provider_ib::provider();
    let index = |p: &P| {
        p.devices()
            .unwrap()
            .iter()
            .find(|d| d.identity.name == DEV)
            .map(|d| d.identity.index)
    };
    let before = index(&provider).expect("rxe0 is there");
    let down_for = Duration::from_secs(2);
    let t = Instant::now();
    provider
        .inject(DEV, &anyverbs::Fault::Reset { down_for })
        .unwrap();
    // Back means listed under a new index: the old one may linger in a listing for a moment.
    let deadline = within(30);
    while index(&provider).is_none_or(|i| i == before) {
        assert!(Instant::now() < deadline, "{DEV} never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    let away = t.elapsed();
    assert!(
        away >= down_for,
        "{DEV} came back after {away:?}, before its down_for of {down_for:?}"
    );
}
