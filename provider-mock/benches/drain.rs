//! Drain latency of the mock provider, per drain strategy, with 0, 64 and 1024 receive WRs
//! outstanding, beside the cost of polling the same number of completions.
//!
//! Every iteration gets a fresh fixture, built untimed (`iter_batched_ref` with
//! `BatchSize::PerIteration`): a new `MockProvider`, the device under test opened, a PD, two CQs
//! of [`CQ_DEPTH`] entries, two RC QPs (`max_recv_wr` = [`MAX_N`]) connected through the
//! connection manager (active side `a`, passive side `b`, as `conformance`'s `pair_with` does),
//! and `n` receive WRs posted on `a`, each with one [`SLOT`]-byte SGE of a registered region,
//! `wr_id`s 0..n. The fixture is dropped untimed too.
//!
//! The group `drain/<n>` holds, for each `n`:
//!
//! - `floor`: the `n` flush completions already sit in `a`'s CQ (setup moved `a` to ERROR on
//!   `mock0`, which flushes at once); the timed routine polls them all. This is the least a
//!   drain can cost: it must at least deliver them.
//! - one function per drain strategy, each on the mock device that drains with it
//!   (`Personality::drain_plan`): the timed routine is `a.drain(deadline)` followed by polling
//!   the `n` flush completions it left in the CQ.
//! - beside each, its bare work (`modify_error` on `mock0`, `modify_error_<device>` on the
//!   others), not a drain: the timed routine moves `a` (`n` receives posted) to ERROR with
//!   `modify`, which makes the device flush them into the CQ (at once, or after the call where
//!   the device flushes asynchronously, as rxe's completer does), and polls them. The strategy
//!   pays this too; its ratio to it is what the drain itself (ledger, markers, waits, settling)
//!   adds on that device.
//!   - `error_then_marker`: `mock0` (InfiniBand HCA): ERROR, then a receive marker, which is
//!     flushed at once.
//!   - `error_then_marker_rxe`: `mockrxe0` (soft-RoCE): the same, but the receive marker
//!     posted in ERROR is parked until the QP is moved to ERROR once more.
//!   - `wait_for_flush`: `mocksiw0` (user-space siw): ERROR, then wait until the device's queues
//!     are empty and settle the ledger.
//!   - `flush_marker`: `mockcxgb0` (Chelsio): ERROR, then a provider-side marker per busy queue.
//!   - `marker_then_error`: `mockerdma0` (erdma): a receive marker while the QP still runs, then
//!     ERROR.
//!
//! The fabrics are built with `FabricConfig::flush_delay` zero, so the asynchronous flushes of
//! `mockrxe0` fall due at once and the bench measures the drain rather than the timer. Not
//! measured: `mockirdma0` and `mocklost0` (ErrorThenMarker / WaitForFlush, already covered
//! above; with a zero delay they add nothing), and `mockdead0`, which never flushes and whose
//! drain returns only at its deadline.
//!
//! Both routines poll in batches of [`POLL_BATCH`] until a poll comes back empty; the final
//! empty poll is part of both. The bench panics, rather than report a number, if the drain
//! fails, falls back, names another strategy or accounts for another number of WRs than `n`, or
//! if the completions polled are not exactly `n` flushed receives with `wr_id`s 0..n in order
//! on `a`. Read the results as ratios of the same group: a strategy to its bare work, and both
//! to `floor`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, Device, DrainPlan, DrainStrategy, MemoryRegion, Provider,
    QpInit, QpState, QueuePair, RecvWr, WcOpcode, WcStatus,
};
use anyverbs_provider_mock::{
    FabricConfig, MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
};
mod common;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// Numbers of receive WRs outstanding when the drain starts.
const NS: [usize; 3] = [0, 64, 1024];
/// The most WRs outstanding: the receive queue depth.
const MAX_N: usize = 1024;
/// CQ depth: every flush completion fits, with room to spare.
const CQ_DEPTH: u32 = 1100;
/// Completions per `poll` call.
const POLL_BATCH: usize = 64;
/// Bytes per receive buffer.
const SLOT: usize = 16;
/// How long a drain may take before the mock falls back (none of the devices here comes close).
const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// One measured drain strategy: the bench function, its bare work's, the device that drains
/// with it, and what the drain must report.
struct Strategy {
    name: &'static str,
    bare: &'static str,
    device: &'static str,
    plan: DrainPlan,
    reports: DrainStrategy,
}

const STRATEGIES: [Strategy; 5] = [
    Strategy {
        name: "error_then_marker",
        bare: "modify_error",
        device: "mock0",
        plan: DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: false,
        },
        reports: DrainStrategy::ErrorThenMarker,
    },
    Strategy {
        name: "error_then_marker_rxe",
        bare: "modify_error_rxe",
        device: "mockrxe0",
        plan: DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: true,
        },
        reports: DrainStrategy::ErrorThenMarker,
    },
    Strategy {
        name: "wait_for_flush",
        bare: "modify_error_siw",
        device: "mocksiw0",
        plan: DrainPlan::WaitForFlush,
        reports: DrainStrategy::WaitForFlush,
    },
    Strategy {
        name: "flush_marker",
        bare: "modify_error_cxgb",
        device: "mockcxgb0",
        plan: DrainPlan::FlushMarker,
        reports: DrainStrategy::FlushMarker,
    },
    Strategy {
        name: "marker_then_error",
        bare: "modify_error_erdma",
        device: "mockerdma0",
        plan: DrainPlan::MarkerThenError,
        reports: DrainStrategy::MarkerThenError,
    },
];

/// The device the `floor` fixtures are flushed on.
const FLOOR_DEVICE: &str = "mock0";

/// Two connected QPs on one device of a fresh mock fabric, `n` receives posted on `a`. Fields
/// drop in order: QPs first, the provider last.
struct Fixture {
    a: MockQp,
    _b: MockQp,
    _listener: MockListener,
    _mr: MockMr,
    cq_a: MockCq,
    _cq_b: MockCq,
    _pd: MockPd,
    _device: MockDevice,
    _provider: MockProvider,
    n: usize,
    deadline: Instant,
}

impl Fixture {
    fn new(device_name: &str, n: usize) -> Fixture {
        assert!(n <= MAX_N, "at most {MAX_N} WRs outstanding");
        let deadline = Instant::now() + DRAIN_BUDGET;
        // Asynchronous flushes (rxe's) fall due at once: the bench measures the drain, not the
        // flush timer.
        let provider = MockProvider::with_config(FabricConfig {
            flush_delay: Duration::ZERO,
            ..FabricConfig::default()
        });
        let device = provider.open(device_name).expect("open the device");
        let pd = device.alloc_pd().expect("alloc_pd");
        let cq_a = device.create_cq(CQ_DEPTH).expect("create_cq a");
        let cq_b = device.create_cq(CQ_DEPTH).expect("create_cq b");
        let init = QpInit {
            max_send_wr: 16,
            max_recv_wr: MAX_N as u32,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let (a, b, listener) =
            common::connected_pair(&device, &pd, (&cq_a, &cq_b), &init, deadline);

        let mr = pd
            .register(MAX_N * SLOT, Access::LOCAL_WRITE)
            .expect("register");
        let wrs: Vec<RecvWr> = (0..n)
            .map(|i| RecvWr::single(i as u64, mr.sge(i * SLOT, SLOT as u32)))
            .collect();
        if n > 0 {
            a.post_recv(&wrs).expect("post_recv on a");
        }
        Fixture {
            a,
            _b: b,
            _listener: listener,
            _mr: mr,
            cq_a,
            _cq_b: cq_b,
            _pd: pd,
            _device: device,
            _provider: provider,
            n,
            deadline,
        }
    }

    /// A fixture for `floor`: the `n` receives flushed into `cq_a` already.
    fn flushed(n: usize) -> Fixture {
        let f = Fixture::new(FLOOR_DEVICE, n);
        f.a.modify(QpState::Error).expect("modify a to ERROR");
        f
    }

    /// Polls `cq_a` in batches of `out.len()` until a poll comes back empty; panics unless it
    /// yielded exactly the `n` flushed receives of `a`, `wr_id`s 0..n in order.
    fn collect(&self, out: &mut [Completion]) {
        let qp_num = self.a.qp_num();
        let mut got = 0;
        loop {
            let k = self.cq_a.poll(out).expect("poll cq_a");
            if k == 0 {
                break;
            }
            for c in &out[..k] {
                assert!(
                    c.status == WcStatus::WrFlushError
                        && c.opcode == WcOpcode::Recv
                        && c.wr_id == got as u64
                        && c.qp_num == qp_num,
                    "completion {got}: expected a flushed receive of QP {qp_num}; got {c:?}"
                );
                got += 1;
            }
        }
        assert_eq!(got, self.n, "flush completions polled");
    }

    /// Moves `a` to ERROR, which flushes its receives into `cq_a`, and polls them.
    fn error_and_collect(&self, out: &mut [Completion]) {
        self.a.modify(QpState::Error).expect("modify a to ERROR");
        self.collect(out);
    }

    /// Drains `a` and polls what the drain delivered; panics unless the drain ran `expected`
    /// without falling back and accounted for exactly the `n` receives.
    fn drain_and_collect(&self, expected: DrainStrategy, out: &mut [Completion]) {
        let report = self.a.drain(self.deadline).expect("drain");
        assert!(
            report.strategy == expected
                && report.fallback.is_none()
                && report.accounted() == self.n,
            "expected {expected} accounting for {} WRs; got {report}",
            self.n
        );
        self.collect(out);
    }
}

/// Panics unless the default fabric drains `device` with `plan`, so the names of the bench
/// functions say what is measured.
fn check_plan(s: &Strategy) {
    let config = FabricConfig::default();
    let device = config
        .devices
        .iter()
        .find(|d| d.name == s.device)
        .unwrap_or_else(|| panic!("the default fabric has no {}", s.device));
    assert_eq!(
        device.personality.drain_plan(QpState::ReadyToSend),
        s.plan,
        "{} drains {} with another plan",
        s.name,
        s.device
    );
}

fn drain(c: &mut Criterion) {
    for s in &STRATEGIES {
        check_plan(s);
    }
    let mut out = [Completion::default(); POLL_BATCH];
    for n in NS {
        let mut group = c.benchmark_group(format!("drain/{n}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));

        group.bench_function("floor", |b| {
            b.iter_batched_ref(
                || Fixture::flushed(n),
                |f| f.collect(black_box(&mut out)),
                BatchSize::PerIteration,
            )
        });
        for s in &STRATEGIES {
            group.bench_function(s.bare, |b| {
                b.iter_batched_ref(
                    || Fixture::new(s.device, n),
                    |f| f.error_and_collect(black_box(&mut out)),
                    BatchSize::PerIteration,
                )
            });
            group.bench_function(s.name, |b| {
                b.iter_batched_ref(
                    || Fixture::new(s.device, n),
                    |f| f.drain_and_collect(s.reports, black_box(&mut out)),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, drain);
criterion_main!(benches);
