//! Runs the `drain` benchmark's routines a given number of times, for counting instructions
//! with callgrind: deterministic, where the bench's times on a shared VM move by ±0.2× between
//! runs (each iteration builds a fresh fixture).
//!
//! ```sh
//! cargo build --release -p anyverbs-provider-mock --example drain_rounds
//! valgrind --tool=callgrind --toggle-collect='*timed_drain*' \
//!     target/release/examples/drain_rounds mockrxe0 drain 64 300
//! valgrind --tool=callgrind --toggle-collect='*timed_modify*' \
//!     target/release/examples/drain_rounds mockrxe0 modify 64 300
//! ```
//!
//! Arguments: the device; `drain` (drain the QP, then poll what it delivered) or `modify` (the
//! bare work: move the QP to ERROR, then poll the flushes); receives outstanding (at most 1024);
//! iterations. Only the timed routine is counted (`--toggle-collect`), not the fixture: each
//! iteration connects a fresh pair of QPs and posts the receives, as the bench does. Divide by
//! the iterations for one routine; a drain's count over the bare work's is the bench's ratio in
//! instructions.

use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, Device, MemoryRegion, Provider, QpInit, QpState,
    QueuePair, RecvWr,
};
use anyverbs_provider_mock::{FabricConfig, MockCq, MockProvider, MockQp};

#[path = "../benches/common/mod.rs"]
mod common;

/// Receives outstanding at most.
const MAX_N: usize = 1024;
/// Bytes per receive buffer.
const SLOT: usize = 16;

/// Drains `qp` and polls what the drain left in `cq`.
#[inline(never)]
fn timed_drain(qp: &MockQp, cq: &MockCq, deadline: Instant, out: &mut [Completion]) {
    std::hint::black_box(qp.drain(deadline).expect("drain"));
    while cq.poll(out).expect("poll") > 0 {}
}

/// Moves `qp` to ERROR and polls the flushes from `cq`.
#[inline(never)]
fn timed_modify(qp: &MockQp, cq: &MockCq, out: &mut [Completion]) {
    qp.modify(QpState::Error).expect("modify to ERROR");
    while cq.poll(out).expect("poll") > 0 {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: drain_rounds DEVICE drain|modify RECEIVES ITERATIONS";
    let [_, device, routine, receives, count] = &args[..] else {
        panic!("{usage}");
    };
    let drain = match routine.as_str() {
        "drain" => true,
        "modify" => false,
        _ => panic!("{usage}"),
    };
    let n: usize = receives.parse().expect(usage);
    assert!(n <= MAX_N, "at most {MAX_N} receives");
    let count: usize = count.parse().expect(usage);
    // Asynchronous flushes (rxe's) fall due at once, as in the bench.
    let provider = MockProvider::with_config(FabricConfig {
        flush_delay: Duration::ZERO,
        ..FabricConfig::default()
    });
    let device = provider.open(device).expect("open the device");
    let pd = device.alloc_pd().expect("alloc_pd");
    let cq_a = device.create_cq(MAX_N as u32 + 76).expect("create_cq a");
    let cq_b = device.create_cq(MAX_N as u32 + 76).expect("create_cq b");
    let init = QpInit {
        max_send_wr: 16,
        max_recv_wr: MAX_N as u32,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mr = pd
        .register(MAX_N * SLOT, Access::LOCAL_WRITE)
        .expect("register");
    let wrs: Vec<RecvWr> = (0..n)
        .map(|i| RecvWr::single(i as u64, mr.sge(i * SLOT, SLOT as u32)))
        .collect();
    let mut out = [Completion::default(); 64];
    for _ in 0..count {
        let (a, _b, _listener) =
            common::connected_pair(&device, &pd, (&cq_a, &cq_b), &init, deadline);
        if n > 0 {
            a.post_recv(&wrs).expect("post_recv");
        }
        if drain {
            timed_drain(&a, &cq_a, deadline, &mut out);
        } else {
            timed_modify(&a, &cq_a, &mut out);
        }
    }
}
