//! One message through a connected pair on a real device — the receive posted, a 64-byte SEND
//! posted, both completions polled — three ways on the same device in one run, so that the
//! report is their ratios:
//!
//! - `raw_verbs`: `ibv_post_recv`, `ibv_post_send` and `ibv_poll_cq` called directly on the
//!   pair's own QPs and CQs, with WRs built once (what a C program does): the baseline;
//! - `provider`: the same QPs through the provider's raw objects (`RawQp`, `RawCq`: the core's
//!   WRs converted, the tracked state checked, no kit), to tell the provider's cost from the
//!   kit's;
//! - `anyverbs`: the same QPs through the provider (the kit's admission, tokens and resolution);
//! - `plugin`: a second pair, through the provider's plugin (`libanyverbs_provider_ib.so`,
//!   `ANYVERBS_BENCH_PLUGIN`) loaded as the CLI loads it.
//!
//! It needs a device: `ANYVERBS_BENCH_DEVICE=rxe0` (the test bed sets it, see
//! `scripts/bench-testbed`). Without one it says so and measures nothing. Criterion settings are
//! short on purpose: under emulation only the ratios of one run mean anything.

use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, CompletionQueue, ConnParams, MemoryRegion, ProtectionDomain, Provider, QpInit,
    QueuePair, RecvWr, SendFlags, SendOp, SendWr, Sge,
};
use anyverbs_conformance::ctx::{Loopback, loopback};
use criterion::{Criterion, criterion_group};

const SIZE: u32 = 64;

/// A pair on `device` of `provider`, with a region for the message.
struct Bed<P: Provider> {
    pair: Loopback<P>,
    mr: P::Mr,
}

fn bed<P: Provider>(provider: &P, device: &str) -> Bed<P> {
    let dev = provider.open(device).expect("open the device");
    let init = QpInit {
        max_send_wr: 16,
        max_recv_wr: 16,
        ..QpInit::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let pair = loopback::<P>(&dev, &init, &ConnParams::default(), 64, deadline).expect("connect");
    let mr = pair
        .pd
        .register(4096, Access::LOCAL_WRITE)
        .expect("register");
    Bed { pair, mr }
}

/// The message's SGEs in `bed`'s region: the send's, then the receive's.
fn sges<P: Provider>(bed: &Bed<P>) -> (Sge, Sge) {
    let send = Sge {
        addr: bed.mr.addr(),
        length: SIZE,
        lkey: bed.mr.lkey(),
    };
    let recv = Sge {
        addr: bed.mr.addr() + 2048,
        ..send
    };
    (send, recv)
}

/// One message through the provider's own calls.
fn one_through<P: Provider>(bed: &Bed<P>) {
    let (send, recv) = sges(bed);
    let p = &bed.pair;
    p.b.post_recv(&[RecvWr::single(1, recv)]).unwrap();
    p.a.post_send(&[SendWr::single(2, SendOp::Send, send).with_flags(SendFlags::SIGNALED)])
        .unwrap();
    let mut wc = [anyverbs::Completion::default(); 1];
    while p.cq_a.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success(), "{:?}", wc[0]);
    while p.cq_b.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success(), "{:?}", wc[0]);
}

/// One message through the provider's raw objects, below the kit.
fn one_below_kit(bed: &Bed<anyverbs_provider_ib::IbProvider>) {
    use anyverbs::kit::{RawCq, RawQp};
    let (send, recv) = sges(bed);
    let p = &bed.pair;
    p.b.raw().post_recv(&[RecvWr::single(1, recv)]).unwrap();
    p.a.raw()
        .post_send(&[SendWr::single(2, SendOp::Send, send).with_flags(SendFlags::SIGNALED)])
        .unwrap();
    let mut wc = [anyverbs::Completion::default(); 1];
    while p.cq_a.raw().poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success(), "{:?}", wc[0]);
    while p.cq_b.raw().poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success(), "{:?}", wc[0]);
}

/// The raw-verbs side: the same pair's QPs and CQs, called directly.
#[allow(unsafe_code)]
mod raw {
    use std::mem::MaybeUninit;

    use super::*;
    use rdma_mummy_sys::{
        ibv_cq, ibv_qp, ibv_recv_wr, ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc, ibv_wr_opcode,
    };

    pub struct Raw {
        qa: NonNull<ibv_qp>,
        qb: NonNull<ibv_qp>,
        ca: NonNull<ibv_cq>,
        cb: NonNull<ibv_cq>,
        send_sge: ibv_sge,
        recv_sge: ibv_sge,
    }

    impl Raw {
        /// The pointers of `bed`'s objects, valid while `bed` lives.
        pub fn of(bed: &Bed<anyverbs_provider_ib::IbProvider>) -> Raw {
            let p = &bed.pair;
            let qa = p.a.raw().with_verbs_qp(|q| q.as_ptr()).unwrap();
            let qb = p.b.raw().with_verbs_qp(|q| q.as_ptr()).unwrap();
            let ca = p.cq_a.raw().verbs_cq().unwrap().as_ptr();
            let cb = p.cq_b.raw().verbs_cq().unwrap().as_ptr();
            let send_sge = ibv_sge {
                addr: bed.mr.addr(),
                length: SIZE,
                lkey: bed.mr.lkey(),
            };
            let recv_sge = ibv_sge {
                addr: bed.mr.addr() + 2048,
                ..send_sge
            };
            Raw {
                qa,
                qb,
                ca,
                cb,
                send_sge,
                recv_sge,
            }
        }

        /// One message, as a C program sends it.
        pub fn one(&mut self) {
            // SAFETY: ibv_recv_wr and ibv_send_wr are plain C structs for which all-zero bytes
            // are valid; the QPs and CQs are live (the bed outlives this), the SGEs lie in a
            // registered region that outlives the WRs' completions (polled below), and nothing
            // else polls these CQs meanwhile.
            unsafe {
                let mut rwr: ibv_recv_wr = MaybeUninit::zeroed().assume_init();
                rwr.wr_id = 1;
                rwr.sg_list = &mut self.recv_sge;
                rwr.num_sge = 1;
                let mut bad_r = std::ptr::null_mut();
                assert_eq!(
                    rdma_mummy_sys::ibv_post_recv(self.qb.as_ptr(), &mut rwr, &mut bad_r),
                    0
                );
                let mut swr: ibv_send_wr = MaybeUninit::zeroed().assume_init();
                swr.wr_id = 2;
                swr.sg_list = &mut self.send_sge;
                swr.num_sge = 1;
                swr.opcode = ibv_wr_opcode::IBV_WR_SEND;
                swr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
                let mut bad_s = std::ptr::null_mut();
                assert_eq!(
                    rdma_mummy_sys::ibv_post_send(self.qa.as_ptr(), &mut swr, &mut bad_s),
                    0
                );
                let mut wc: MaybeUninit<ibv_wc> = MaybeUninit::uninit();
                while rdma_mummy_sys::ibv_poll_cq(self.ca.as_ptr(), 1, wc.as_mut_ptr()) == 0 {}
                assert_eq!(wc.assume_init_ref().status, 0);
                while rdma_mummy_sys::ibv_poll_cq(self.cb.as_ptr(), 1, wc.as_mut_ptr()) == 0 {}
                assert_eq!(wc.assume_init_ref().status, 0);
            }
        }
    }
}

fn data_path(c: &mut Criterion) {
    let Ok(device) = std::env::var("ANYVERBS_BENCH_DEVICE") else {
        eprintln!(
            "data_path: skipped, it needs a device (ANYVERBS_BENCH_DEVICE); it runs in the test \
             bed (scripts/bench-testbed)"
        );
        return;
    };
    let provider = anyverbs_provider_ib::provider();
    let linked = bed(&provider, &device);
    let mut raw = raw::Raw::of(&linked);
    let mut group = c.benchmark_group(format!("send_{SIZE}B_{device}"));
    group.bench_function("raw_verbs", |b| b.iter(|| raw.one()));
    group.bench_function("provider", |b| b.iter(|| one_below_kit(black_box(&linked))));
    group.bench_function("anyverbs", |b| b.iter(|| one_through(black_box(&linked))));
    if let Ok(path) = std::env::var("ANYVERBS_BENCH_PLUGIN") {
        let plugin = anyverbs::plugin::Plugin::load(&path).expect("load the plugin");
        let loaded = plugin.instantiate().expect("instantiate the plugin");
        let through = bed(&loaded, &device);
        group.bench_function("plugin", |b| b.iter(|| one_through(black_box(&through))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = data_path
}

criterion::criterion_main!(benches);
