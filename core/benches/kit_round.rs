//! The kit's own cost on the data path: one message's round — a receive posted, a signaled
//! SEND posted, both completions polled — on a null device that completes every WR the moment
//! it is posted, two ways in one run:
//!
//! - `device`: the device's raw QP and CQ called directly, WRs carrying their final `wr_id`s
//!   (what a provider without the kit would cost): the baseline;
//! - `kit`: the same device through [`KitQp`] and [`KitCq`] — admission into the ledger,
//!   tokens, state checks, resolution at poll time.
//!
//! The null device costs next to nothing, so the ratio here is the kit's worst case; the
//! difference of the two is the kit's time per round, which is what a real device's round
//! (`provider-ib/benches/data_path.rs`) carries on top of its own.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyverbs::drain::profiles::profile_named;
use anyverbs::kit::{DeviceLife, KitCq, KitQp, RawCq, RawQp};
use anyverbs::{
    Completion, CompletionQueue, ConnParams, Connection, Error, PostError, QpInit, QpState,
    QueuePair, RecvWr, Result, SendFlags, SendOp, SendWr, Sge, WcOpcode, WcStatus,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// A CQ of the null device: a ring its QP pushes completions into.
#[derive(Clone, Default)]
struct Ring(Arc<Mutex<VecDeque<Completion>>>);

impl RawCq for Ring {
    fn cq_num(&self) -> u32 {
        1
    }
    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let mut ring = self.0.lock().unwrap();
        let n = out.len().min(ring.len());
        for (slot, c) in out.iter_mut().zip(ring.drain(..n)) {
            *slot = c;
        }
        Ok(n)
    }
    fn wait(&self, _deadline: Instant) -> Result<bool> {
        Ok(!self.0.lock().unwrap().is_empty())
    }
    fn wake(&self) {}
    fn reserve(&self, _extra: u32) -> Result<()> {
        Ok(())
    }
    fn destroy(&self) -> Result<()> {
        Ok(())
    }
}

/// A QP of the null device, connected to itself: a SEND completes on the send CQ and consumes
/// the oldest receive, which completes on the receive CQ.
struct Loop {
    send_cq: Ring,
    recv_cq: Ring,
    recvs: Mutex<VecDeque<u64>>,
}

const QP_NUM: u32 = 7;

fn completion(wr_id: u64, opcode: WcOpcode, byte_len: u32) -> Completion {
    Completion {
        wr_id,
        status: WcStatus::Success,
        opcode,
        byte_len,
        qp_num: QP_NUM,
        ..Completion::default()
    }
}

impl RawQp for Loop {
    type Cq = Ring;
    fn qp_num(&self) -> u32 {
        QP_NUM
    }
    fn granted(&self) -> QpInit {
        QpInit {
            max_send_wr: 1024,
            max_recv_wr: 1024,
            ..QpInit::default()
        }
    }
    fn state(&self) -> Result<QpState> {
        Ok(QpState::ReadyToSend)
    }
    fn modify(&self, _to: QpState) -> Result<()> {
        Ok(())
    }
    fn enter_error(&self) -> Result<()> {
        Ok(())
    }
    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        for wr in wrs {
            let len = wr.sgl().iter().map(|s| s.length).sum();
            if let Some(r) = self.recvs.lock().unwrap().pop_front() {
                let c = completion(r, WcOpcode::Recv, len);
                self.recv_cq.0.lock().unwrap().push_back(c);
            }
            if wr.flags.contains(SendFlags::SIGNALED) {
                let c = completion(wr.wr_id, WcOpcode::Send, len);
                self.send_cq.0.lock().unwrap().push_back(c);
            }
        }
        Ok(())
    }
    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        self.recvs
            .lock()
            .unwrap()
            .extend(wrs.iter().map(|w| w.wr_id));
        Ok(())
    }
    fn connect(&self, _: SocketAddr, _: &ConnParams) -> Result<()> {
        Err(Error::not_supported("null device"))
    }
    fn wait_connected(&self, _: Instant) -> Result<Connection> {
        Err(Error::not_supported("null device"))
    }
    fn disconnect(&self, _: bool) -> Result<QpState> {
        Err(Error::invalid_state("never connected"))
    }
    fn stop(&self) -> Result<()> {
        Ok(())
    }
    fn destroy(&self) -> Result<()> {
        Ok(())
    }
}

fn raw_loop() -> (Loop, Ring, Ring) {
    let (send_cq, recv_cq) = (Ring::default(), Ring::default());
    let qp = Loop {
        send_cq: send_cq.clone(),
        recv_cq: recv_cq.clone(),
        recvs: Mutex::default(),
    };
    (qp, send_cq, recv_cq)
}

const SGE: Sge = Sge {
    addr: 0x1000,
    length: 64,
    lkey: 1,
};

/// One round on the device itself.
fn device_round(qp: &Loop, scq: &Ring, rcq: &Ring) {
    qp.post_recv(&[RecvWr::single(1, SGE)]).unwrap();
    qp.post_send(&[SendWr::single(2, SendOp::Send, SGE).with_flags(SendFlags::SIGNALED)])
        .unwrap();
    let mut wc = [Completion::default(); 1];
    while scq.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success());
    while rcq.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success());
}

/// One round through the kit.
fn kit_round(qp: &KitQp<Loop>, scq: &KitCq<Ring>, rcq: &KitCq<Ring>) {
    qp.post_recv(&[RecvWr::single(1, SGE)]).unwrap();
    qp.post_send(&[SendWr::single(2, SendOp::Send, SGE).with_flags(SendFlags::SIGNALED)])
        .unwrap();
    let mut wc = [Completion::default(); 1];
    while scq.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success() && wc[0].wr_id == 2);
    while rcq.poll(&mut wc).unwrap() == 0 {}
    assert!(wc[0].status.is_success() && wc[0].wr_id == 1);
}

fn rounds(c: &mut Criterion) {
    let mut group = c.benchmark_group("kit_round");
    let (qp, scq, rcq) = raw_loop();
    group.bench_function("device", |b| {
        b.iter(|| device_round(black_box(&qp), &scq, &rcq))
    });

    let life = DeviceLife::new();
    let (raw, scq, rcq) = raw_loop();
    let scq = KitCq::new(scq, 64, life.clone());
    let rcq = KitCq::new(rcq, 64, life.clone());
    let init = QpInit {
        max_send_wr: 16,
        max_recv_wr: 16,
        ..QpInit::default()
    };
    let profile = profile_named("mlx5").expect("the mlx5 profile");
    let qp = KitQp::new(raw, &scq, &rcq, &init, profile, life).expect("a kit QP");
    group.bench_function("kit", |b| b.iter(|| kit_round(black_box(&qp), &scq, &rcq)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = rounds
}
criterion_main!(benches);
