//! The test bed the `data_path` and `plugin` benchmarks share: two connected QPs on `mock0` of
//! any provider, the regions they move 64-byte messages between, and one checked round of
//! post + poll.

use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, MemoryRegion, ProtectionDomain, Provider,
    QpInit, QueuePair, RecvWr, SendOp, SendWr, WcOpcode, WcStatus,
};
use anyverbs_conformance::loopback;

/// Bytes per message.
pub const MSG: usize = 64;
/// Messages per iteration of the batched benchmarks.
pub const BATCH: usize = 16;
/// Polls of both CQs without progress after which a completion is declared lost.
const SPIN_LIMIT: u32 = 1_000_000;
/// Longest the connection set-up may take.
const SETUP: Duration = Duration::from_secs(5);

/// Two connected QPs on `mock0` of provider `P`, each with its own CQ, and the regions they send
/// from and receive into. Fields drop in order: QPs first, the provider last.
pub struct Bed<P: Provider> {
    pub a: P::Qp,
    pub b: P::Qp,
    _listener: P::Listener,
    pub src: P::Mr,
    pub dst: P::Mr,
    pub cq_a: P::Cq,
    pub cq_b: P::Cq,
    _pd: P::Pd,
    _device: P::Device,
    _provider: P,
}

impl<P: Provider> Bed<P> {
    pub fn new(provider: P) -> Bed<P> {
        let device = provider.open("mock0").expect("open mock0");
        let pair = loopback::<P>(
            &device,
            &QpInit::default(),
            &ConnParams::default(),
            256,
            Instant::now() + SETUP,
        )
        .expect("connect a loopback pair on mock0");
        let src = pair
            .pd
            .register(MSG * BATCH, Access::LOCAL_WRITE)
            .expect("register src");
        let pattern: Vec<u8> = (0..MSG * BATCH).map(|i| i as u8).collect();
        src.write(0, &pattern).expect("fill src");
        let dst = pair
            .pd
            .register(MSG * BATCH, Access::LOCAL_WRITE)
            .expect("register dst");
        Bed {
            a: pair.a,
            b: pair.b,
            _listener: pair.listener,
            src,
            dst,
            cq_a: pair.cq_a,
            cq_b: pair.cq_b,
            _pd: pair.pd,
            _device: device,
            _provider: provider,
        }
    }

    /// `n` receive WRs, each into its own 64-byte slot of `dst`, with `wr_id`s 0..n.
    pub fn recv_wrs(&self, n: usize) -> Vec<RecvWr<'static>> {
        (0..n)
            .map(|i| RecvWr::single(i as u64, self.dst.sge(i * MSG, MSG as u32)))
            .collect()
    }

    /// `n` signaled SENDs, each of its own 64-byte slot of `src`, with `wr_id`s 0..n.
    pub fn send_wrs(&self, n: usize) -> Vec<SendWr<'static>> {
        (0..n)
            .map(|i| SendWr::single(i as u64, SendOp::Send, self.src.sge(i * MSG, MSG as u32)))
            .collect()
    }

    /// Posts `recv` on `b` and `send` on `a` (same length), then polls both CQs in batches of
    /// up to `out.len()` until every send and receive completion has been seen and checked.
    pub fn round(&self, recv: &[RecvWr], send: &[SendWr], out: &mut [Completion]) {
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
