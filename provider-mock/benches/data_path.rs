//! Data-path cost of the mock provider: post + poll of small SENDs.
//!
//! Two RC QPs on `mock0` are connected through the connection manager (active side `a`,
//! passive side `b`), each with its own CQ. Every benchmark of the group `send_recv_64B` moves
//! 64-byte messages from a registered source region on `a` into a registered destination region
//! on `b`:
//!
//! - `mock/unbatched`: one iteration posts 1 receive WR on `b`, posts 1 signaled SEND on `a`,
//!   then polls `cq_a` and `cq_b` with the non-blocking `poll` until both the send and the
//!   receive completion have been seen.
//! - `mock/batched_16`: the same with 16 WRs per `post_recv` / `post_send` call and polling in
//!   batches of 16. Its throughput is 16 elements per iteration, so criterion's per-element
//!   figures compare directly with the unbatched case.
//!
//! Every completion is checked (status `Success`, opcode, `wr_id`, and byte count of the
//! receive); the bench panics otherwise, and also panics if a completion never arrives, rather
//! than quietly measure failures or spin forever.
//!
//! The baselines, measured in the same run, do the same work through plain std data structures
//! with no RDMA abstraction:
//!
//! - `baseline/vecdeque_unbatched`: post recv = push a destination buffer index onto a
//!   `VecDeque` (the receive queue); post send = push a source buffer index onto a `VecDeque`
//!   (the send queue); execute = pop both, copy the 64 bytes from the source buffer into the
//!   destination buffer, push one completion struct onto each side's completion `VecDeque`;
//!   poll = pop both completions and check them as the mock bench does.
//! - `baseline/vecdeque_batched_16`: the same for 16 messages per iteration.
//!
//! So the baseline copies the same bytes and does the same queue operations the mock does
//! conceptually (post recv, post send, copy, two completions, two polls); the difference is the
//! cost of the abstraction: validation, locking, key lookups, WR copies and the like.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, Device, MemoryRegion, ProtectionDomain, Provider, QpInit,
    QueuePair, RecvWr, SendWr, WcOpcode, WcStatus,
};
use anyverbs_provider_mock::{
    MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
};
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Bytes per message.
const MSG: usize = 64;
/// Messages per iteration of the batched benches.
const BATCH: usize = 16;
/// Polls of both CQs without progress after which a completion is declared lost.
const SPIN_LIMIT: u32 = 1_000_000;

// ----- the mock -----

/// Two connected QPs on `mock0`, each with its own CQ, and the regions they send from and
/// receive into. Fields drop in order: QPs first, the device last.
struct MockPair {
    a: MockQp,
    b: MockQp,
    _listener: MockListener,
    src: MockMr,
    dst: MockMr,
    cq_a: MockCq,
    cq_b: MockCq,
    _pd: MockPd,
    _device: MockDevice,
    _provider: MockProvider,
}

impl MockPair {
    fn new() -> MockPair {
        let deadline = Instant::now() + Duration::from_secs(5);
        let provider = MockProvider::new();
        let device = provider.open("mock0").expect("open mock0");
        let pd = device.alloc_pd().expect("alloc_pd");
        let cq_a = device.create_cq(256).expect("create_cq a");
        let cq_b = device.create_cq(256).expect("create_cq b");
        let init = QpInit::default();
        let (a, b, listener) =
            common::connected_pair(&device, &pd, (&cq_a, &cq_b), &init, deadline);

        let src = pd
            .register(MSG * BATCH, Access::LOCAL_WRITE)
            .expect("register src");
        let pattern: Vec<u8> = (0..MSG * BATCH).map(|i| i as u8).collect();
        src.write(0, &pattern).expect("fill src");
        let dst = pd
            .register(MSG * BATCH, Access::LOCAL_WRITE)
            .expect("register dst");
        MockPair {
            a,
            b,
            _listener: listener,
            src,
            dst,
            cq_a,
            cq_b,
            _pd: pd,
            _device: device,
            _provider: provider,
        }
    }

    /// `n` receive WRs, each into its own 64-byte slot of `dst`, with `wr_id`s 0..n.
    fn recv_wrs(&self, n: usize) -> Vec<RecvWr> {
        (0..n)
            .map(|i| RecvWr::new(i as u64, &[self.dst.sge(i * MSG, MSG as u32)]))
            .collect()
    }

    /// `n` signaled SENDs, each of its own 64-byte slot of `src`, with `wr_id`s 0..n.
    fn send_wrs(&self, n: usize) -> Vec<SendWr> {
        (0..n)
            .map(|i| SendWr::send(i as u64, &[self.src.sge(i * MSG, MSG as u32)]))
            .collect()
    }

    /// Posts `recv` on `b` and `send` on `a` (same length), then polls both CQs in batches of
    /// up to `out.len()` until every send and receive completion has been seen and checked.
    fn round(&self, recv: &[RecvWr], send: &[SendWr], out: &mut [Completion]) {
        let n = send.len();
        self.b.post_recv(recv).expect("post_recv on b");
        self.a.post_send(send).expect("post_send on a");
        let (mut got_a, mut got_b) = (0, 0);
        let mut spins = 0;
        while got_a < n || got_b < n {
            if got_a < n {
                let want = (n - got_a).min(out.len());
                let k = self.cq_a.poll(&mut out[..want]).expect("poll cq_a");
                for c in &out[..k] {
                    check(c, got_a as u64, WcOpcode::Send, "send");
                    got_a += 1;
                }
            }
            if got_b < n {
                let want = (n - got_b).min(out.len());
                let k = self.cq_b.poll(&mut out[..want]).expect("poll cq_b");
                for c in &out[..k] {
                    check(c, got_b as u64, WcOpcode::Recv, "recv");
                    assert_eq!(c.byte_len, MSG as u32, "recv byte_len: {c:?}");
                    got_b += 1;
                }
            }
            spins += 1;
            assert!(
                spins <= SPIN_LIMIT,
                "completions lost: after {n} SENDs, {got_a} send and {got_b} recv completions \
                 arrived in {SPIN_LIMIT} polls"
            );
        }
    }
}

/// Panics unless `c` is the successful completion of WR `wr_id` with `opcode`.
fn check(c: &Completion, wr_id: u64, opcode: WcOpcode, what: &str) {
    assert!(
        c.status == WcStatus::Success && c.opcode == opcode && c.wr_id == wr_id,
        "{what} completion: expected wr_id {wr_id}, {opcode:?}, success; got {c:?}"
    );
}

/// Times `n` messages per iteration through the mock.
fn bench_mock(b: &mut criterion::Bencher<'_>, pair: &MockPair, n: usize) {
    let recv = pair.recv_wrs(n);
    let send = pair.send_wrs(n);
    let mut out = [Completion::default(); BATCH];
    b.iter(|| pair.round(black_box(&recv), black_box(&send), black_box(&mut out)));
    // The data really moved: the last round left the source pattern in the destination.
    let (mut want, mut got) = (vec![0; n * MSG], vec![0; n * MSG]);
    pair.src.read(0, &mut want).expect("read src");
    pair.dst.read(0, &mut got).expect("read dst");
    assert_eq!(want, got, "destination differs from source");
}

// ----- the baseline -----

/// A completion, as plain data: the same fields as the mock's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cqe {
    wr_id: u64,
    ok: bool,
    is_recv: bool,
    byte_len: u32,
    imm_data: Option<u32>,
    qp_num: u32,
    vendor_err: u32,
}

/// A posted WR: its id and the index of its 64-byte buffer.
#[derive(Debug, Clone, Copy)]
struct Wr {
    wr_id: u64,
    buf: usize,
}

/// The same data path with plain std queues and buffers.
struct Baseline {
    src: Vec<[u8; MSG]>,
    dst: Vec<[u8; MSG]>,
    sq: VecDeque<Wr>,
    rq: VecDeque<Wr>,
    cq_a: VecDeque<Cqe>,
    cq_b: VecDeque<Cqe>,
}

impl Baseline {
    fn new() -> Baseline {
        let mut src = vec![[0; MSG]; BATCH];
        for (i, byte) in src.iter_mut().flatten().enumerate() {
            *byte = i as u8;
        }
        Baseline {
            src,
            dst: vec![[0; MSG]; BATCH],
            sq: VecDeque::with_capacity(64),
            rq: VecDeque::with_capacity(64),
            cq_a: VecDeque::with_capacity(256),
            cq_b: VecDeque::with_capacity(256),
        }
    }

    /// `n` messages: post `n` recvs, post `n` sends, execute them (copy + two completions
    /// each), then poll both completion queues in batches of up to `out.len()`.
    fn round(&mut self, n: usize, out: &mut [Cqe]) {
        // post_recv
        for i in 0..n {
            self.rq.push_back(Wr {
                wr_id: i as u64,
                buf: i,
            });
        }
        // post_send
        for i in 0..n {
            self.sq.push_back(Wr {
                wr_id: i as u64,
                buf: i,
            });
        }
        // execute: match each send to the next recv, copy, complete both sides
        while let Some(s) = self.sq.pop_front() {
            let r = self.rq.pop_front().expect("a recv is posted");
            self.dst[r.buf] = self.src[s.buf];
            self.cq_b.push_back(Cqe {
                wr_id: r.wr_id,
                ok: true,
                is_recv: true,
                byte_len: MSG as u32,
                qp_num: 2,
                ..Cqe::default()
            });
            self.cq_a.push_back(Cqe {
                wr_id: s.wr_id,
                ok: true,
                is_recv: false,
                byte_len: MSG as u32,
                qp_num: 1,
                ..Cqe::default()
            });
        }
        // poll
        let (mut got_a, mut got_b) = (0, 0);
        while got_a < n || got_b < n {
            if got_a < n {
                let k = pop_into(&mut self.cq_a, &mut out[..(n - got_a).min(BATCH)]);
                for c in &out[..k] {
                    assert!(
                        c.ok && !c.is_recv && c.wr_id == got_a as u64,
                        "send completion: {c:?}"
                    );
                    got_a += 1;
                }
            }
            if got_b < n {
                let k = pop_into(&mut self.cq_b, &mut out[..(n - got_b).min(BATCH)]);
                for c in &out[..k] {
                    assert!(
                        c.ok && c.is_recv && c.wr_id == got_b as u64 && c.byte_len == MSG as u32,
                        "recv completion: {c:?}"
                    );
                    got_b += 1;
                }
            }
        }
    }
}

/// Moves up to `out.len()` entries from the front of `q` into `out`; returns how many.
fn pop_into(q: &mut VecDeque<Cqe>, out: &mut [Cqe]) -> usize {
    let n = out.len().min(q.len());
    for (slot, c) in out.iter_mut().zip(q.drain(..n)) {
        *slot = c;
    }
    n
}

/// Times `n` messages per iteration through the baseline.
fn bench_baseline(b: &mut criterion::Bencher<'_>, n: usize) {
    let mut base = Baseline::new();
    let mut out = [Cqe::default(); BATCH];
    b.iter(|| black_box(&mut base).round(black_box(n), black_box(&mut out)));
    assert_eq!(
        base.src[..n],
        base.dst[..n],
        "destination differs from source"
    );
}

// ----- the group -----

fn send_recv_64b(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_recv_64B");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);

    let pair = MockPair::new();
    group.throughput(Throughput::Elements(1));
    group.bench_function("mock/unbatched", |b| bench_mock(b, &pair, 1));
    group.bench_function("baseline/vecdeque_unbatched", |b| bench_baseline(b, 1));

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("mock/batched_16", |b| bench_mock(b, &pair, BATCH));
    group.bench_function("baseline/vecdeque_batched_16", |b| bench_baseline(b, BATCH));

    group.finish();
}

criterion_group!(benches, send_recv_64b);
criterion_main!(benches);
