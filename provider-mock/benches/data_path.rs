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
//!
//! - `floor/locks_unbatched`: the unbatched baseline plus the uncontended `Mutex` lock/unlock
//!   pairs a round through the kit and the simulator takes, and nothing else: two per post (the
//!   QP's ledger, the simulator), three per poll (the CQ's router, the simulator, the QP's
//!   ledger). No thread-safe provider on this design gets below it; the mock's unbatched ratio
//!   reads against it.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use anyverbs::{Completion, MemoryRegion};
use anyverbs_provider_mock::MockProvider;

#[path = "common/bed.rs"]
mod bed;

use bed::{BATCH, Bed, MSG};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// ----- the mock -----

/// Times `n` messages per iteration through the mock.
fn bench_mock(b: &mut criterion::Bencher<'_>, pair: &Bed<MockProvider>, n: usize) {
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
    /// each), then poll both completion queues in batches of up to `out.len()`. With `locks`,
    /// each call also takes and releases the locks the mock's call takes.
    fn round(&mut self, n: usize, out: &mut [Cqe], locks: Option<&[Mutex<()>; 3]>) {
        let sync = |k: usize| {
            if let Some(locks) = locks {
                for m in &locks[..k] {
                    drop(black_box(m.lock().expect("uncontended")));
                }
            }
        };
        // post_recv
        sync(2);
        for i in 0..n {
            self.rq.push_back(Wr {
                wr_id: i as u64,
                buf: i,
            });
        }
        // post_send
        sync(2);
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
                sync(3);
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
                sync(3);
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

/// Times `n` messages per iteration through the baseline, taking `locks` as the mock does.
fn bench_baseline(b: &mut criterion::Bencher<'_>, n: usize, locks: Option<&[Mutex<()>; 3]>) {
    let mut base = Baseline::new();
    let mut out = [Cqe::default(); BATCH];
    b.iter(|| black_box(&mut base).round(black_box(n), black_box(&mut out), locks));
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

    let pair = Bed::new(MockProvider::new());
    group.throughput(Throughput::Elements(1));
    group.bench_function("mock/unbatched", |b| bench_mock(b, &pair, 1));
    group.bench_function("baseline/vecdeque_unbatched", |b| {
        bench_baseline(b, 1, None)
    });
    let locks = [Mutex::new(()), Mutex::new(()), Mutex::new(())];
    group.bench_function("floor/locks_unbatched", |b| {
        bench_baseline(b, 1, Some(&locks))
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("mock/batched_16", |b| bench_mock(b, &pair, BATCH));
    group.bench_function("baseline/vecdeque_batched_16", |b| {
        bench_baseline(b, BATCH, None)
    });

    group.finish();
}

criterion_group!(benches, send_recv_64b);
criterion_main!(benches);
