//! Every mock personality against the real device it imitates, and anyverbs' drain on each.
//!
//! # One body, a table of expectations
//!
//! In the style of `object_store`'s shared integration tests, each test here is ONE body that
//! runs unchanged on every device of the default fabric. What differs between devices is data:
//! the [`Row`] of [`ROWS`] for the device says what the real counterpart of its [`Personality`]
//! does — what a move to ERROR flushes and when, what becomes of a WR posted in ERROR (flushed at
//! once, flushed late, refused with an errno, or accepted and never completed), whether another
//! move to ERROR completes what is left, which strategy its provider must drain with, and whether
//! that drain has to fall back at its deadline. A body asks "what does the row say?", never
//! "which device is this?": adding a personality is adding a row, and a personality that drifts
//! from its real counterpart, or a drain that is wrong on it, fails the row it contradicts.
//!
//! [`for_each_device`] runs a body on every row at once, each in a thread named after the device
//! and on a fabric of its own, and fails with every failing device's message.
//!
//! The ULP's side of the bookkeeping is a [`Book`]: every `wr_id` the ULP posted with what it may
//! see of it ([`Due`]), and every completion polled, with when it was polled. Each test ends by
//! checking the book: every receive and signaled send exactly once, every unsignaled send at most
//! once and never successful, every refused WR never, nothing else, and nothing after the drain.
//!
//! The tests, each on all nine devices:
//!
//! - `naive_marker_drain_per_personality`: the Linux `ib_drain_qp` algorithm through the public
//!   API (ERROR, a zero-length marker per queue, wait), then ERROR again, then a second marker
//!   per queue; each outcome as the row says. Then anyverbs' drain settles whatever is left.
//! - `drain_plan_and_report_per_personality`: a drain from RTS and from ERROR with receives (and,
//!   with RNR, stalled sends) outstanding; strategy, fallback, totals and timing of the report.
//! - `posts_in_error_by_the_ulp_are_accounted`: sends and receives the ULP posts in ERROR.
//! - `late_device_completions_never_reach_the_ulp`: a drain whose deadline has passed, right
//!   after the move to ERROR, before asynchronous flushes arrive; they never arrive after it.
//! - `concurrent_drains_and_racing_posts`: two drains at once and a thread posting receives.
//!
//! `iwarp_closing_with_sends_outstanding_is_refused` is not here: no iWARP personality can keep a
//! send outstanding through the public API (iWARP has no RNR, a SEND without a receive
//! terminates the connection, and the dead device follows the InfiniBand model).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::drain::WorkQueue;
use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, DrainReport, DrainStrategy,
    ErrorKind, Fallback, Listener, MemoryRegion, PostError, ProtectionDomain, Provider, QpInit,
    QpState, QueuePair, RecvWr, RemoteAddr, SendFlags, SendOp, SendWr, Sge, WcOpcode, WcStatus,
};
use anyverbs_provider_mock::{
    FabricConfig, MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
    Personality,
};

// ----- the table -----

/// What becomes of a WR when the device deals with it in ERROR: one that was outstanding when the
/// QP moved to ERROR, or one posted while it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Completes with a flush error before the call that flushed it returns.
    Flushed,
    /// Completes with a flush error, but only after the device's flush delay (never at once).
    FlushedLate,
    /// The post fails synchronously with `InvalidState`; the error names this errno.
    Refused(&'static str),
    /// Accepted, and never completes.
    Never,
}

/// One value per work queue.
#[derive(Debug, Clone, Copy)]
struct PerQueue<T> {
    send: T,
    recv: T,
}

impl<T: Copy> PerQueue<T> {
    fn get(&self, queue: WorkQueue) -> T {
        match queue {
            WorkQueue::Send => self.send,
            WorkQueue::Recv => self.recv,
        }
    }
}

/// The same value on both queues.
const fn both<T: Copy>(v: T) -> PerQueue<T> {
    PerQueue { send: v, recv: v }
}

/// What the tests expect of one device of the default fabric.
struct Row {
    /// The device's name on the default fabric.
    device: &'static str,
    /// The personality the default fabric gives it.
    personality: Personality,
    /// Receives outstanding when the QP is moved to ERROR.
    error_flushes: Fate,
    /// The first zero-length marker posted on each queue while the QP is in ERROR.
    first_marker: PerQueue<Fate>,
    /// Whether another move to ERROR completes a first marker that was left pending.
    re_error_completes: PerQueue<bool>,
    /// A second marker posted on each queue, after that repeated move to ERROR.
    second_marker: PerQueue<Fate>,
    /// The strategy a drain reports when it starts from RTS.
    strategy: DrainStrategy,
    /// The strategy a drain reports when the QP is already in ERROR.
    strategy_in_error: DrainStrategy,
    /// What a drain with WRs outstanding must fall back on.
    fallback: Option<Fallback>,
    /// Whether the provider knows the device drops posts in ERROR and settles them itself.
    drops_posts_in_error: bool,
}

use DrainStrategy::{ErrorThenMarker, FlushMarker, MarkerThenError, WaitForFlush};
use Fate::{Flushed, FlushedLate, Never, Refused};

/// One row per personality: the behaviour of the real device it imitates.
const ROWS: [Row; 9] = [
    // mlx5: ERROR flushes at once, and so are WRs posted in ERROR: the Linux algorithm works.
    Row {
        device: "mock0",
        personality: Personality::Ib,
        error_flushes: Flushed,
        first_marker: both(Flushed),
        re_error_completes: both(false),
        second_marker: both(Flushed),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // rxe: a send posted in ERROR is flushed, a receive waits for the next move to ERROR.
    Row {
        device: "mockrxe0",
        personality: Personality::Rxe,
        error_flushes: FlushedLate,
        first_marker: PerQueue {
            send: Flushed,
            recv: Never,
        },
        re_error_completes: PerQueue {
            send: false,
            recv: true,
        },
        second_marker: PerQueue {
            send: Flushed,
            recv: Never,
        },
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // Kernel siw: like an HCA.
    Row {
        device: "mockiw0",
        personality: Personality::IwarpKernel,
        error_flushes: Flushed,
        first_marker: both(Flushed),
        re_error_completes: both(false),
        second_marker: both(Flushed),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // User-space siw: posts in ERROR are accepted and never complete, whatever one does.
    Row {
        device: "mocksiw0",
        personality: Personality::Siw,
        error_flushes: Flushed,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(Never),
        strategy: WaitForFlush,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: true,
    },
    // Chelsio: posts in ERROR fail with EINVAL.
    Row {
        device: "mockcxgb0",
        personality: Personality::Cxgb4,
        error_flushes: Flushed,
        first_marker: both(Refused("EINVAL")),
        re_error_completes: both(false),
        second_marker: both(Refused("EINVAL")),
        strategy: FlushMarker,
        strategy_in_error: FlushMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // erdma: posts in ERROR fail with EIO; the marker must go in before ERROR.
    Row {
        device: "mockerdma0",
        personality: Personality::Erdma,
        error_flushes: Flushed,
        first_marker: both(Refused("EIO")),
        re_error_completes: both(false),
        second_marker: both(Refused("EIO")),
        strategy: MarkerThenError,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: false,
    },
    // irdma: everything is flushed, by a worker, later.
    Row {
        device: "mockirdma0",
        personality: Personality::Irdma,
        error_flushes: FlushedLate,
        first_marker: both(FlushedLate),
        re_error_completes: both(false),
        second_marker: both(FlushedLate),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: None,
        drops_posts_in_error: false,
    },
    // X722: the first post in ERROR on each queue is lost; later ones are flushed late.
    Row {
        device: "mocklost0",
        personality: Personality::LostMarker,
        error_flushes: FlushedLate,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(FlushedLate),
        strategy: WaitForFlush,
        strategy_in_error: WaitForFlush,
        fallback: None,
        drops_posts_in_error: false,
    },
    // A device in fatal error nobody reported: nothing ever completes.
    Row {
        device: "mockdead0",
        personality: Personality::Dead,
        error_flushes: Never,
        first_marker: both(Never),
        re_error_completes: both(false),
        second_marker: both(Never),
        strategy: ErrorThenMarker,
        strategy_in_error: ErrorThenMarker,
        fallback: Some(Fallback::DeadlinePassed),
        drops_posts_in_error: false,
    },
];

// ----- budgets -----

/// How long the naive algorithm waits for a marker before calling it lost.
const NAIVE_WINDOW: Duration = Duration::from_millis(100);
/// The deadline every drain gets (the dead device uses all of it).
const DRAIN_BUDGET: Duration = Duration::from_millis(500);
/// How long the CQ must stay quiet after a drain returned.
const QUIET: Duration = Duration::from_millis(20);
/// A drain that need not wait for the deadline returns well before this.
const PROMPT: Duration = Duration::from_millis(100);
/// Receives posted before anything else happens, from `wr_id` [`RECV_BASE`].
const RECVS: u64 = 3;
const RECV_BASE: u64 = 100;
const SEND_BASE: u64 = 200;
const MARKER_BASE: u64 = 1000;
const RACE_BASE: u64 = 10_000;

/// How long asynchronously flushing devices take to flush.
fn flush_delay() -> Duration {
    FabricConfig::default().flush_delay
}

// ----- the driver -----

/// Runs `body` on every row at once, each in a thread named after the device, and fails with the
/// message of every device that failed. Checks first that the table matches the default fabric.
fn for_each_device(body: impl Fn(&Row) + Sync) {
    check_table();
    let failures: Vec<String> = thread::scope(|s| {
        let body = &body;
        let handles: Vec<_> = ROWS
            .iter()
            .map(|row| {
                thread::Builder::new()
                    .name(row.device.to_string())
                    .spawn_scoped(s, move || body(row))
                    .expect("spawn a device thread")
            })
            .collect();
        handles
            .into_iter()
            .zip(&ROWS)
            .filter_map(|(h, row)| {
                h.join()
                    .err()
                    .map(|p| format!("{}: {}", row.device, panic_text(&*p)))
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} device(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every personality has exactly one row, on the device the default fabric gives it.
fn check_table() {
    let config = FabricConfig::default();
    for p in Personality::ALL {
        assert_eq!(
            ROWS.iter().filter(|r| r.personality == p).count(),
            1,
            "one row per personality: {p:?}"
        );
    }
    for row in &ROWS {
        let d = config
            .devices
            .iter()
            .find(|d| d.name == row.device)
            .unwrap_or_else(|| panic!("{}: not on the default fabric", row.device));
        assert_eq!(d.personality, row.personality, "{}", row.device);
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// Joins a scoped thread, passing its panic on unchanged.
fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

// ----- fixtures -----

/// Two QPs connected through the connection manager on one device; `a` is the QP under test.
/// Fields drop in order: QPs before the MR and CQs, those before the PD.
struct Pair {
    a: MockQp,
    _b: MockQp,
    _listener: MockListener,
    mr: MockMr,
    cq_a: MockCq,
    _cq_b: MockCq,
    _pd: MockPd,
    dev: MockDevice,
}

impl Pair {
    /// A connected pair on `row`'s device, on a fabric of its own.
    fn new(row: &Row, params: &ConnParams, init: &QpInit, cq_depth: u32) -> Pair {
        let dev_name = row.device;
        let fail = |what: &str, e: anyverbs::Error| -> ! { panic!("{dev_name}: {what}: {e}") };
        let soon = || Instant::now() + Duration::from_secs(5);
        let provider = MockProvider::new();
        let dev = provider.open(dev_name).unwrap_or_else(|e| fail("open", e));
        let pd = dev.alloc_pd().unwrap_or_else(|e| fail("alloc_pd", e));
        let cq_a = dev
            .create_cq(cq_depth)
            .unwrap_or_else(|e| fail("create_cq", e));
        let cq_b = dev
            .create_cq(cq_depth)
            .unwrap_or_else(|e| fail("create_cq", e));
        let a = pd
            .create_qp(&cq_a, &cq_a, init)
            .unwrap_or_else(|e| fail("create_qp", e));
        let b = pd
            .create_qp(&cq_b, &cq_b, init)
            .unwrap_or_else(|e| fail("create_qp", e));
        let mr = pd
            .register(64 * 1024, Access::LOCAL_WRITE)
            .unwrap_or_else(|e| fail("register", e));
        let ip = dev.ports().unwrap_or_else(|e| fail("ports", e))[0].addresses[0];
        let listener = dev
            .listen(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| fail("listen", e));
        a.connect(listener.local_addr(), params)
            .unwrap_or_else(|e| fail("connect", e));
        let request = listener
            .next_request(soon())
            .unwrap_or_else(|e| fail("next_request", e));
        listener
            .accept(&request, &b, params)
            .unwrap_or_else(|e| fail("accept", e));
        a.wait_connected(soon())
            .unwrap_or_else(|e| fail("wait_connected", e));
        assert_eq!(a.state().unwrap(), QpState::ReadyToSend, "{dev_name}");
        Pair {
            a,
            _b: b,
            _listener: listener,
            mr,
            cq_a,
            _cq_b: cq_b,
            _pd: pd,
            dev,
        }
    }

    /// A connected pair with default sizes and connection parameters.
    fn default_on(row: &Row) -> Pair {
        Pair::new(row, &ConnParams::default(), &QpInit::default(), 1024)
    }

    /// A 64-byte receive buffer, number `i`.
    fn recv_sge(&self, i: u64) -> Sge {
        self.mr.sge((i as usize % 512) * 64, 64)
    }

    /// 8 bytes to send.
    fn send_sge(&self) -> Sge {
        self.mr.sge(63 * 1024, 8)
    }
}

/// A zero-length marker on `queue`, as the naive drain posts it: a zero-length RDMA WRITE on the
/// send queue (it touches no remote memory), a receive without SGEs on the receive queue.
fn post_marker(qp: &MockQp, queue: WorkQueue, id: u64) -> Result<(), PostError> {
    match queue {
        WorkQueue::Send => qp.post_send(&[SendWr::new(
            id,
            SendOp::Write(RemoteAddr { addr: 0, rkey: 0 }),
            &[],
        )]),
        WorkQueue::Recv => qp.post_recv(&[RecvWr::new(id, &[])]),
    }
}

/// The opcode a completion of a marker on `queue` carries.
fn marker_opcode(queue: WorkQueue) -> WcOpcode {
    match queue {
        WorkQueue::Send => WcOpcode::RdmaWrite,
        WorkQueue::Recv => WcOpcode::Recv,
    }
}

/// Posts [`RECVS`] receives on `a` (in its current state, which must take them) and books them.
fn post_receives(p: &Pair, book: &mut Book) -> Vec<u64> {
    let ids: Vec<u64> = (RECV_BASE..RECV_BASE + RECVS).collect();
    for &id in &ids {
        p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])])
            .unwrap_or_else(|e| panic!("{}: post receive {id}: {e}", book.device));
        book.expect(id, Due::Once, WcOpcode::Recv);
    }
    ids
}

/// A SEND of 8 bytes, signaled or not.
fn send_wr(p: &Pair, id: u64, signaled: bool) -> SendWr<'static> {
    let wr = SendWr::single(id, SendOp::Send, p.send_sge());
    if signaled {
        wr
    } else {
        wr.with_flags(SendFlags::empty())
    }
}

/// What the ULP may see of an accepted send.
fn send_due(signaled: bool) -> Due {
    if signaled { Due::Once } else { Due::AtMostOnce }
}

/// Checks a post's synchronous outcome against `fate`; true if the WR was accepted.
fn accepted(dev: &str, what: &str, r: Result<(), PostError>, fate: Fate) -> bool {
    match (fate, r) {
        (Refused(errno), Err(e)) => {
            assert_eq!(
                e.accepted, 0,
                "{dev}: {what}: a one-WR post accepted nothing"
            );
            assert_eq!(e.kind(), ErrorKind::InvalidState, "{dev}: {what}: {e}");
            let text = error_chain(&e);
            assert!(
                text.contains(errno),
                "{dev}: {what}: the refusal should name {errno}: {text}"
            );
            false
        }
        (Refused(errno), Ok(())) => {
            panic!("{dev}: {what} was accepted; the real device refuses posts in ERROR ({errno})")
        }
        (_, Ok(())) => true,
        (fate, Err(e)) => panic!("{dev}: {what} was refused ({e}); expected {fate:?}"),
    }
}

/// An error and all its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}

// ----- the ULP's book -----

/// What the ULP may see of one of its WRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Exactly one completion (receives, signaled sends).
    Once,
    /// At most one completion, never a success (unsignaled sends).
    AtMostOnce,
    /// None: the post was refused.
    Never,
}

/// A moment of a test: taken before a call, and after polling the CQ right after it.
#[derive(Debug, Clone, Copy)]
struct Act {
    before: Instant,
    /// How many completions the book held after that poll: earlier ones arrived "at once".
    seen: usize,
}

/// The ULP's record of one QP: what it posted, and every completion it polled, in order.
struct Book {
    device: &'static str,
    qpn: u32,
    due: BTreeMap<u64, (Due, WcOpcode)>,
    seen: Vec<(Completion, Instant)>,
}

impl Book {
    fn new(device: &'static str, qp: &MockQp) -> Book {
        Book {
            device,
            qpn: qp.qp_num(),
            due: BTreeMap::new(),
            seen: Vec::new(),
        }
    }

    /// Books a WR the ULP posted (or tried to).
    fn expect(&mut self, id: u64, due: Due, opcode: WcOpcode) {
        let old = self.due.insert(id, (due, opcode));
        assert!(old.is_none(), "{}: wr_id {id} booked twice", self.device);
    }

    /// Polls everything `cq` holds now.
    fn poll(&mut self, cq: &MockCq) {
        let mut buf = [Completion::default(); 64];
        loop {
            let n = cq
                .poll(&mut buf)
                .unwrap_or_else(|e| panic!("{}: poll: {e}", self.device));
            let at = Instant::now();
            self.seen.extend(buf[..n].iter().map(|c| (*c, at)));
            if n < buf.len() {
                return;
            }
        }
    }

    /// Runs `f`, then polls at once; returns what `f` returned and when that happened.
    fn act<R>(&mut self, cq: &MockCq, f: impl FnOnce() -> R) -> (R, Act) {
        let before = Instant::now();
        let r = f();
        self.poll(cq);
        let act = Act {
            before,
            seen: self.seen.len(),
        };
        (r, act)
    }

    /// Collects completions until `done` holds or `deadline` passes.
    fn collect_until(&mut self, cq: &MockCq, deadline: Instant, done: impl Fn(&Book) -> bool) {
        let mut buf = [Completion::default(); 64];
        loop {
            self.poll(cq);
            if done(self) {
                return;
            }
            match cq.wait(&mut buf, deadline) {
                Ok(n) => {
                    let at = Instant::now();
                    self.seen.extend(buf[..n].iter().map(|c| (*c, at)));
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => return,
                Err(e) => panic!("{}: wait: {e}", self.device),
            }
        }
    }

    /// The first completion of `id`: its position in the book, and when it was polled.
    fn arrival(&self, id: u64) -> Option<(usize, &Completion, Instant)> {
        self.seen
            .iter()
            .enumerate()
            .find(|(_, (c, _))| c.wr_id == id)
            .map(|(i, (c, at))| (i, c, *at))
    }

    /// Accepted WRs the ULP has not seen complete.
    fn pending(&self) -> usize {
        self.due
            .iter()
            .filter(|(id, (due, _))| *due != Due::Never && self.arrival(**id).is_none())
            .count()
    }

    /// Checks every completion polled so far against the book: each for this QP, a flush error
    /// (nothing in these tests moves data; an unsignaled send never reports success) with the
    /// opcode of its WR, and each `wr_id` seen as often as it is due.
    fn check(&self) {
        let dev = self.device;
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for (c, _) in &self.seen {
            let Some(&(due, opcode)) = self.due.get(&c.wr_id) else {
                panic!(
                    "{dev}: a completion for wr_id {} the ULP never posted: {c:?}",
                    c.wr_id
                );
            };
            assert_eq!(c.qp_num, self.qpn, "{dev}: {c:?}");
            assert_eq!(
                c.status,
                WcStatus::WrFlushError,
                "{dev}: wr {} ({due:?}) completed with {}; only flushes are possible here",
                c.wr_id,
                c.status
            );
            assert_eq!(
                c.opcode, opcode,
                "{dev}: wr {}: a flush carries its WR's opcode",
                c.wr_id
            );
            *counts.entry(c.wr_id).or_default() += 1;
        }
        for (id, (due, _)) in &self.due {
            let n = counts.get(id).copied().unwrap_or(0);
            let ok = match due {
                Due::Once => n == 1,
                Due::AtMostOnce => n <= 1,
                Due::Never => n == 0,
            };
            assert!(ok, "{dev}: wr {id} is due {due:?} but was seen {n} time(s)");
        }
    }

    /// After a drain returned: polls what the CQ holds and checks the book (everything is there
    /// already), then waits [`QUIET`] and checks that nothing more ever comes.
    fn finish(&mut self, cq: &MockCq) {
        self.poll(cq);
        self.check();
        let n = self.seen.len();
        thread::sleep(QUIET);
        self.poll(cq);
        assert!(
            self.seen.len() == n,
            "{}: completions after the drain returned: {:?}",
            self.device,
            &self.seen[n..]
        );
    }
}

/// WRs whose fate the naive algorithm watches for, all acted on within one window.
struct Watch {
    items: Vec<Watched>,
}

struct Watched {
    what: String,
    id: u64,
    fate: Fate,
    act: Act,
}

impl Watch {
    fn new() -> Watch {
        Watch { items: Vec::new() }
    }

    fn add(&mut self, what: String, id: u64, fate: Fate, act: Act) {
        self.items.push(Watched {
            what,
            id,
            fate,
            act,
        });
    }

    /// Waits, at most [`NAIVE_WINDOW`] from the first act, for what is due to arrive (the whole
    /// window when something must never arrive), then checks each WR against its fate.
    fn verify(self, book: &mut Book, cq: &MockCq) {
        let Some(start) = self.items.iter().map(|w| w.act.before).min() else {
            return;
        };
        let must_arrive: Vec<u64> = self
            .items
            .iter()
            .filter(|w| matches!(w.fate, Flushed | FlushedLate))
            .map(|w| w.id)
            .collect();
        let wait_out = self.items.iter().any(|w| w.fate == Never);
        book.collect_until(cq, start + NAIVE_WINDOW, |b| {
            !wait_out && must_arrive.iter().all(|id| b.arrival(*id).is_some())
        });
        for w in &self.items {
            check_fate(book, w);
        }
    }
}

/// Checks what became of one watched WR.
fn check_fate(book: &Book, w: &Watched) {
    let (dev, what) = (book.device, &w.what);
    let arrival = book.arrival(w.id);
    match w.fate {
        Flushed => {
            let (i, c, _) = arrival.unwrap_or_else(|| {
                panic!("{dev}: {what} should be flushed at once; nothing in {NAIVE_WINDOW:?}")
            });
            assert_eq!(c.status, WcStatus::WrFlushError, "{dev}: {what}");
            assert!(
                i < w.act.seen,
                "{dev}: {what} was flushed, but not by the time the call returned"
            );
        }
        FlushedLate => {
            let (i, c, at) = arrival.unwrap_or_else(|| {
                panic!("{dev}: {what} should be flushed late; nothing in {NAIVE_WINDOW:?}")
            });
            assert_eq!(c.status, WcStatus::WrFlushError, "{dev}: {what}");
            assert!(
                i >= w.act.seen,
                "{dev}: {what} was there at once; the device flushes asynchronously"
            );
            assert!(
                at - w.act.before >= flush_delay(),
                "{dev}: {what} arrived after {:?}, before the flush delay",
                at - w.act.before
            );
        }
        Never => {
            if let Some((_, c, _)) = arrival {
                panic!("{dev}: {what} completed ({c:?}); on the real device it never does");
            }
        }
        Refused(_) => unreachable!("refused WRs are checked at the post"),
    }
}

// ----- 1. the naive drain -----

/// Posts the naive algorithm's marker on each queue (`which`: first or second) and checks, over
/// one window, what became of each. Returns the markers accepted and still pending.
fn naive_markers(
    row: &Row,
    p: &Pair,
    book: &mut Book,
    base: u64,
    fates: PerQueue<Fate>,
    which: &str,
) -> Vec<(WorkQueue, u64)> {
    let mut watch = Watch::new();
    let mut posted = Vec::new();
    for (i, queue) in WorkQueue::BOTH.into_iter().enumerate() {
        let id = base + i as u64;
        let fate = fates.get(queue);
        let what = format!("the {which} {queue:?} marker (wr {id})");
        let (r, act) = book.act(&p.cq_a, || post_marker(&p.a, queue, id));
        if accepted(row.device, &what, r, fate) {
            book.expect(id, Due::Once, marker_opcode(queue));
            watch.add(what, id, fate, act);
            posted.push((queue, id));
        } else {
            book.expect(id, Due::Never, marker_opcode(queue));
        }
    }
    watch.verify(book, &p.cq_a);
    posted.retain(|(_, id)| book.arrival(*id).is_none());
    posted
}

fn naive_marker_drain(row: &Row) {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    let flushes = |f: Fate| matches!(f, Flushed | FlushedLate);
    assert_eq!(
        p.dev.info().caps.contains(Caps::POST_IN_ERROR_FLUSHED),
        flushes(row.first_marker.send) && flushes(row.first_marker.recv),
        "{dev}: POST_IN_ERROR_FLUSHED must describe what the device does with posts in ERROR"
    );

    // Receives outstanding, then ERROR: what the move flushes, and when.
    let recvs = post_receives(&p, &mut book);
    let (r, act) = book.act(&p.cq_a, || p.a.modify(QpState::Error));
    r.unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let mut watch = Watch::new();
    for id in recvs {
        let what = format!("receive {id}, outstanding at the move to ERROR");
        watch.add(what, id, row.error_flushes, act);
    }
    watch.verify(&mut book, &p.cq_a);

    // The naive algorithm: a marker on each queue, wait for each.
    let pending = naive_markers(row, &p, &mut book, MARKER_BASE, row.first_marker, "first");

    // What rxe needs (and what helps nobody else): ERROR once more.
    let (r, act) = book.act(&p.cq_a, || p.a.modify(QpState::Error));
    r.unwrap_or_else(|e| panic!("{dev}: modify to ERROR again: {e}"));
    let mut watch = Watch::new();
    for (queue, id) in pending {
        let fate = if row.re_error_completes.get(queue) {
            // Flushed as the move to ERROR flushes: at once, or late.
            row.error_flushes
        } else {
            Never
        };
        let what = format!("the first {queue:?} marker (wr {id}) after ERROR again");
        watch.add(what, id, fate, act);
    }
    watch.verify(&mut book, &p.cq_a);

    // A second marker on each queue (the X722 loses only the first).
    naive_markers(
        row,
        &p,
        &mut book,
        MARKER_BASE + 10,
        row.second_marker,
        "second",
    );

    // anyverbs' drain accounts for whatever the naive one left.
    let pending = book.pending();
    let report =
        p.a.drain(Instant::now() + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain after the naive one: {e}"));
    assert_eq!(report.strategy, row.strategy_in_error, "{dev}: {report}");
    assert_eq!(report.accounted(), pending, "{dev}: {report}");
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{dev}: {report}");
    book.finish(&p.cq_a);
}

#[test]
fn naive_marker_drain_per_personality() {
    for_each_device(naive_marker_drain);
}

// ----- 2. the plan and the report -----

/// Posts signaled and unsignaled SENDs on `a` that cannot execute (the peer has no receive:
/// RNR, retried forever; on a dead device nothing executes at all) and books them.
fn post_stalled_sends(p: &Pair, book: &mut Book) -> usize {
    let sends = [true, false, true, false];
    for (i, signaled) in sends.into_iter().enumerate() {
        let id = SEND_BASE + i as u64;
        p.a.post_send(&[send_wr(p, id, signaled)])
            .unwrap_or_else(|e| panic!("{}: post send {id}: {e}", book.device));
        book.expect(id, send_due(signaled), WcOpcode::Send);
    }
    sends.len()
}

/// Checks a report's timing: a drain that fell back used its whole budget (and no more); any
/// other returned promptly.
fn check_timing(dev: &str, report: &DrainReport, wall: Duration) {
    assert!(
        report.elapsed <= wall,
        "{dev}: {report}, but the call took {wall:?}"
    );
    if report.fallback.is_some() {
        assert!(
            report.elapsed >= DRAIN_BUDGET - Duration::from_millis(50)
                && report.elapsed < DRAIN_BUDGET + Duration::from_millis(100),
            "{dev}: a drain that falls back returns at its deadline: {report}"
        );
    } else {
        assert!(report.elapsed < PROMPT, "{dev}: {report}");
    }
}

/// Drains a QP with receives (and, where there is RNR, stalled sends) outstanding, from RTS or
/// from ERROR, and checks the report against the row.
fn drain_from(row: &Row, start: QpState) {
    let dev = row.device;
    let params = ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    };
    let p = Pair::new(row, &params, &QpInit::default(), 1024);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    if p.dev.info().caps.contains(Caps::RNR_RETRY) {
        post_stalled_sends(&p, &mut book);
    }
    book.poll(&p.cq_a);
    assert!(book.seen.is_empty(), "{dev}: {:?}", book.seen);
    if start == QpState::Error {
        p.a.modify(QpState::Error)
            .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
        book.poll(&p.cq_a);
    }
    let pending = book.pending();
    let t = Instant::now();
    let report =
        p.a.drain(t + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain from {start}: {e}"));
    let wall = t.elapsed();
    let ctx = format!("{dev}, drained from {start}: {report}");
    let strategy = if start == QpState::Error {
        row.strategy_in_error
    } else {
        row.strategy
    };
    assert_eq!(report.strategy, strategy, "{ctx}");
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{ctx}");
    if start == QpState::Error && row.error_flushes == FlushedLate {
        // Late flushes may land between the poll above and the start of the drain.
        assert!(report.accounted() <= pending, "{ctx}: {pending} pending");
    } else {
        assert_eq!(report.accounted(), pending, "{ctx}");
    }
    let synthesized = if fallback.is_some() {
        report.accounted()
    } else {
        0
    };
    assert_eq!(report.synthesized, synthesized, "{ctx}");
    check_timing(dev, &report, wall);
    book.finish(&p.cq_a);
}

#[test]
fn drain_plan_and_report_per_personality() {
    for_each_device(|row| {
        drain_from(row, QpState::ReadyToSend);
        drain_from(row, QpState::Error);
    });
}

// ----- 3. posts in ERROR -----

fn posts_in_error(row: &Row) {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    p.a.modify(QpState::Error)
        .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let mut in_error = 0;
    for (i, signaled) in [true, false, true, false].into_iter().enumerate() {
        let id = SEND_BASE + i as u64;
        let what = format!("send {id} posted in ERROR");
        let r = p.a.post_send(&[send_wr(&p, id, signaled)]);
        let due = if accepted(dev, &what, r, row.first_marker.send) {
            in_error += 1;
            send_due(signaled)
        } else {
            Due::Never
        };
        book.expect(id, due, WcOpcode::Send);
    }
    for id in RECV_BASE + 10..RECV_BASE + 13 {
        let what = format!("receive {id} posted in ERROR");
        let r = p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])]);
        let due = if accepted(dev, &what, r, row.first_marker.recv) {
            in_error += 1;
            Due::Once
        } else {
            Due::Never
        };
        book.expect(id, due, WcOpcode::Recv);
    }
    let pending = book.pending();
    let t = Instant::now();
    let report =
        p.a.drain(t + DRAIN_BUDGET)
            .unwrap_or_else(|e| panic!("{dev}: drain: {e}"));
    let wall = t.elapsed();
    let fallback = if pending > 0 { row.fallback } else { None };
    assert_eq!(report.fallback, fallback, "{dev}: {report}");
    if row.drops_posts_in_error {
        assert!(
            report.synthesized >= in_error,
            "{dev}: the provider settles the {in_error} WRs the device dropped: {report}"
        );
    }
    check_timing(dev, &report, wall);
    book.finish(&p.cq_a);
}

#[test]
fn posts_in_error_by_the_ulp_are_accounted() {
    for_each_device(posts_in_error);
}

// ----- 4. late completions -----

/// Moves to ERROR with receives outstanding and drains at once with a deadline already past.
/// Returns whether the drain returned before the device's flushes were due, so that the strict
/// expectations applied (a slow machine may let late flushes beat the drain).
fn drain_before_the_flushes(row: &Row) -> bool {
    let dev = row.device;
    let p = Pair::default_on(row);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    let before = Instant::now();
    p.a.modify(QpState::Error)
        .unwrap_or_else(|e| panic!("{dev}: modify to ERROR: {e}"));
    let report =
        p.a.drain(Instant::now())
            .unwrap_or_else(|e| panic!("{dev}: drain with a past deadline: {e}"));
    let in_time = before.elapsed() < flush_delay();
    let strict = row.error_flushes != FlushedLate || in_time;
    if strict {
        // What the device had not flushed when the deadline passed, the provider synthesized.
        let (fallback, synthesized) = match row.error_flushes {
            Flushed => (None, 0),
            _ => (Some(Fallback::DeadlinePassed), RECVS as usize),
        };
        assert_eq!(report.fallback, fallback, "{dev}: {report}");
        assert_eq!(report.synthesized, synthesized, "{dev}: {report}");
        assert_eq!(report.accounted(), synthesized, "{dev}: {report}");
    }
    // `finish` waits QUIET, ten times the flush delay: late flushes would be there by then.
    book.finish(&p.cq_a);
    strict
}

#[test]
fn late_device_completions_never_reach_the_ulp() {
    for_each_device(|row| {
        let strict = (0..5).any(|_| drain_before_the_flushes(row));
        assert!(
            strict,
            "{}: in 5 attempts no drain returned within the flush delay",
            row.device
        );
    });
}

// ----- 6. concurrency -----

/// Posts receives one at a time until one is refused because a drain started; returns the
/// `wr_id`s accepted and the refusal. A full queue is waited out (the drains will start).
fn post_until_refused(p: &Pair, dev: &str, deadline: Instant) -> (Vec<u64>, PostError) {
    let mut ids = Vec::new();
    let mut id = RACE_BASE;
    loop {
        match p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])]) {
            Ok(()) => {
                ids.push(id);
                id += 1;
                // Let the drains in: a poster that never lets go of the fabric fills the queue
                // before either starts, and nothing races.
                thread::yield_now();
            }
            Err(e) if e.kind() == ErrorKind::ResourceExhausted => {
                assert!(Instant::now() < deadline, "{dev}: no drain ever started");
                thread::yield_now();
            }
            Err(e) => return (ids, e),
        }
    }
}

fn concurrent_drains(row: &Row) {
    let dev = row.device;
    let init = QpInit {
        max_recv_wr: 1024,
        ..QpInit::default()
    };
    let p = Pair::new(row, &ConnParams::default(), &init, 2048);
    let mut book = Book::new(dev, &p.a);
    post_receives(&p, &mut book);
    let barrier = Barrier::new(3);
    let deadline = Instant::now() + DRAIN_BUDGET;
    let drain = || {
        barrier.wait();
        p.a.drain(deadline)
    };
    let (r1, r2, (raced, refusal)) = thread::scope(|s| {
        let d1 = s.spawn(drain);
        let d2 = s.spawn(drain);
        let poster = s.spawn(|| {
            barrier.wait();
            post_until_refused(&p, dev, deadline)
        });
        (join(d1), join(d2), join(poster))
    });
    assert_eq!(refusal.accepted, 0, "{dev}: {refusal}");
    assert_eq!(refusal.kind(), ErrorKind::InvalidState, "{dev}: {refusal}");
    for &id in &raced {
        book.expect(id, Due::Once, WcOpcode::Recv);
    }
    // Both succeed, even where the drain runs to its deadline: the engine keeps time back for
    // the fallback, so the waiting caller sees the other drain finish before the same deadline.
    let reports = [r1, r2].map(|r| r.unwrap_or_else(|e| panic!("{dev}: a racing drain: {e}")));
    let ran: Vec<&DrainReport> = reports
        .iter()
        .filter(|r| r.strategy != DrainStrategy::AlreadyDrained)
        .collect();
    assert_eq!(ran.len(), 1, "{dev}: one drain does the work: {reports:?}");
    let report = ran[0];
    assert_eq!(report.strategy, row.strategy, "{dev}: {report}");
    assert_eq!(report.fallback, row.fallback, "{dev}: {report}");
    assert_eq!(
        report.accounted(),
        RECVS as usize + raced.len(),
        "{dev}: {report}"
    );
    let again =
        p.a.drain(Instant::now() + PROMPT)
            .unwrap_or_else(|e| panic!("{dev}: a drain after the drain: {e}"));
    assert_eq!(again.strategy, DrainStrategy::AlreadyDrained, "{dev}");
    book.finish(&p.cq_a);
}

#[test]
fn concurrent_drains_and_racing_posts() {
    for_each_device(concurrent_drains);
}
