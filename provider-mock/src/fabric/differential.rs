//! The express path ([`State::execute_express`]) against the general one: random scenarios run
//! twice on fresh fabrics, once with the express path and once without, and every observable —
//! each call's result, every queue, ring, region, state, pending error and event — compared
//! after every step.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, ConnParams, DeviceEvent, EventStream, Fault, QpInit, QpState, RecvWr, RemoteAddr,
    SendFlags, SendOp, SendWr, Sge,
};

use super::memory::Memory;
use super::{Fabric, State};
use crate::config::FabricConfig;

/// A deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A region: one of the QP's own PD (0..3: read-write, local write, no access), or any.
#[derive(Debug, Clone, Copy)]
enum RegionSpec {
    Own(usize),
    Any(usize),
}

/// An SGE named by region and offset (addresses differ between fabrics).
#[derive(Debug, Clone, Copy)]
struct SgeSpec {
    region: RegionSpec,
    offset: i64,
    length: u32,
}

#[derive(Debug, Clone)]
enum SendKind {
    Send,
    SendImm(u32),
    Write(usize, i64),
    WriteImm(usize, i64, u32),
    Read(usize, i64),
    CompareSwap(usize, i64, u64, u64),
    FetchAdd(usize, i64, u64),
}

#[derive(Debug, Clone)]
enum Op {
    PostRecv {
        qp: usize,
        sgl: Vec<SgeSpec>,
    },
    PostSend {
        qp: usize,
        kind: SendKind,
        sgl: Vec<SgeSpec>,
        flags: SendFlags,
        /// WRs in the batch (the same WR, ids apart).
        count: usize,
    },
    Modify {
        qp: usize,
        to: QpState,
    },
    Poll {
        cq: usize,
        n: usize,
    },
    Inject {
        device: usize,
        fault: FaultSpec,
    },
    DestroyMr {
        region: usize,
    },
    Fill {
        region: usize,
        offset: usize,
        byte: u8,
        len: usize,
    },
    EnterError {
        qp: usize,
    },
    StopQp {
        qp: usize,
    },
    DestroyQp {
        qp: usize,
    },
    Progress,
    /// Both QPs to RESET, and connected again.
    Reconnect,
    /// Several of the above in turn (a receive, then a send from the other end).
    Batch(Vec<Op>),
}

#[derive(Debug, Clone, Copy)]
enum FaultSpec {
    Stall,
    Resume,
    LosePeer(usize),
    KillQp(usize),
    Flap,
    Reset,
}

/// How a scenario's fabric is laid out.
#[derive(Debug, Clone)]
struct Setup {
    devices: [&'static str; 2],
    /// Both QPs in one PD (when on one device).
    shared_pd: bool,
    /// For each QP, the indexes of its send and receive CQs in the CQ list.
    cq_of: [[usize; 2]; 2],
    /// Depth of each CQ; CQ `i` is on the device of QP `i % 2`.
    cq_depth: Vec<u32>,
    rnr_retry_count: u8,
    flush_delay: Duration,
    max_send_wr: u32,
}

const PAIRS: &[[&str; 2]] = &[
    ["mock0", "mock1"],
    ["mock0", "mock0"],
    ["mock0", "mockrxe0"],
    ["mockrxe0", "mockrxe0"],
    ["mockdead0", "mock0"],
    ["mockiw0", "mockiw0"],
    ["mockiw0", "mocksiw0"],
    ["mocksiw0", "mocksiw0"],
    ["mockcxgb0", "mockcxgb0"],
    ["mockerdma0", "mockerdma0"],
    ["mockirdma0", "mockirdma0"],
    ["mocklost0", "mocklost0"],
];

/// Region size; regions per PD: read-write (local and remote), local write only, no access.
const REGION: usize = 48;

fn setup(rng: &mut Rng, wild: bool) -> Setup {
    let devices = rng.pick(PAIRS);
    let n_cqs = rng.pick(&[1usize, 2, 4]);
    // CQs alternate between the two devices: with one device, any CQ fits any QP.
    let one_device = devices[0] == devices[1];
    let mut cq_of = [[0; 2]; 2];
    for (qp, cqs) in cq_of.iter_mut().enumerate() {
        for cq in cqs.iter_mut() {
            *cq = match n_cqs {
                1 if one_device => 0,
                1 | 2 => qp,
                _ if one_device => rng.below(4),
                _ => qp + 2 * rng.below(2),
            };
        }
    }
    let n_cqs = if n_cqs == 1 && !one_device { 2 } else { n_cqs };
    Setup {
        devices,
        shared_pd: one_device && rng.chance(50),
        cq_of,
        cq_depth: (0..n_cqs)
            .map(|_| {
                if wild {
                    rng.pick(&[1u32, 2, 3, 5, 64, 64])
                } else {
                    64
                }
            })
            .collect(),
        rnr_retry_count: rng.pick(&[0u8, 1, 7, 7]),
        flush_delay: if rng.chance(50) {
            Duration::ZERO
        } else {
            Duration::from_secs(3600)
        },
        max_send_wr: rng.pick(&[1u32, 2, 8]),
    }
}

/// Regions: 3 per PD, PDs: one per QP (or one shared) plus one more on each device.
const N_REGIONS: usize = 12;

fn sge_spec(rng: &mut Rng, wild: bool) -> SgeSpec {
    let region = if !wild || rng.chance(80) {
        // Mostly the read-write region, for both ends: source and destination overlap.
        RegionSpec::Own(rng.pick(&[0usize, 0, 0, 1, 2]))
    } else {
        RegionSpec::Any(rng.below(N_REGIONS))
    };
    if !wild || rng.chance(85) {
        let offset = rng.pick(&[0i64, 0, 4, 8, 16, 24, 40]);
        let room = REGION as u32 - offset as u32;
        let length = rng.pick(&[0u32, 1, 8, 16, 24, room, room]).min(room);
        return SgeSpec {
            region,
            offset,
            length,
        };
    }
    let offset = rng.pick(&[0i64, 1, 8, 40, 47, 48, -1]);
    let length = rng.pick(&[0u32, 1, 8, 47, 48, 49]);
    SgeSpec {
        region,
        offset,
        length,
    }
}

fn sgl(rng: &mut Rng, wild: bool) -> Vec<SgeSpec> {
    let n = if wild {
        rng.pick(&[0usize, 1, 1, 1, 1, 1, 2])
    } else {
        rng.pick(&[1usize, 1, 1, 1, 1, 1, 1, 2])
    };
    (0..n).map(|_| sge_spec(rng, wild)).collect()
}

fn send_op(rng: &mut Rng, qp: usize, wild: bool) -> Op {
    let kind = match rng.below(11) {
        0..=4 => SendKind::Send,
        5..=7 => SendKind::SendImm(rng.next() as u32),
        8 => SendKind::Write(remote(rng, qp), rng.pick(&[0, 8, 40])),
        9 if rng.chance(50) => SendKind::WriteImm(remote(rng, qp), rng.pick(&[0, 8]), 7),
        // Atomics, mostly aligned (a misaligned one is refused at post), comparing against
        // what a fresh region holds or not.
        10 if rng.chance(50) => SendKind::CompareSwap(
            remote(rng, qp),
            rng.pick(&[0, 8, 40, 4]),
            rng.pick(&[0, 1]),
            rng.next(),
        ),
        10 => SendKind::FetchAdd(remote(rng, qp), rng.pick(&[0, 8, 40, 4]), rng.next()),
        _ => SendKind::Read(remote(rng, qp), rng.pick(&[0, 8, 40])),
    };
    let mut flags = SendFlags::empty();
    if rng.chance(70) {
        flags |= SendFlags::SIGNALED;
    }
    if rng.chance(if wild { 10 } else { 3 }) {
        flags |= SendFlags::INLINE;
    }
    Op::PostSend {
        qp,
        kind,
        sgl: sgl(rng, wild),
        flags,
        count: rng.pick(&[1usize, 1, 1, 3]),
    }
}

/// The target of an RDMA operation of QP `qp`: mostly the peer's read-write region.
fn remote(rng: &mut Rng, qp: usize) -> usize {
    if rng.chance(75) {
        (1 - qp) * 3
    } else {
        rng.below(N_REGIONS)
    }
}

fn op(rng: &mut Rng, wild: bool) -> Op {
    let qp = rng.below(2);
    let roll = if wild { rng.below(100) } else { rng.below(70) };
    if roll < if wild { 30 } else { 45 } {
        // A receive, then a send into it from the other end.
        let recv = Op::PostRecv {
            qp: 1 - qp,
            sgl: if rng.chance(50) {
                vec![SgeSpec {
                    region: RegionSpec::Own(0),
                    offset: rng.pick(&[0, 0, 8]),
                    length: 40,
                }]
            } else {
                sgl(rng, wild)
            },
        };
        return Op::Batch(vec![recv, send_op(rng, qp, wild)]);
    }
    let roll = if wild {
        rng.below(100)
    } else if rng.chance(4) {
        98
    } else {
        rng.below(70)
    };
    match roll {
        0..=24 => Op::PostRecv {
            qp,
            sgl: sgl(rng, wild),
        },
        25..=54 => send_op(rng, qp, wild),
        55..=69 => Op::Poll {
            cq: rng.below(4),
            n: rng.pick(&[1usize, 2, 8]),
        },
        70..=74 => Op::Modify {
            qp,
            to: rng.pick(&[
                QpState::ReadyToSend,
                QpState::ReadyToSend,
                QpState::SendQueueDrained,
                QpState::SendQueueDrained,
                QpState::Error,
                QpState::Reset,
                QpState::Init,
                QpState::ReadyToReceive,
                QpState::SendQueueError,
                QpState::Closing,
            ]),
        },
        75..=80 => Op::Inject {
            device: rng.below(2),
            fault: match rng.below(12) {
                0..=2 => FaultSpec::Stall,
                3..=6 => FaultSpec::Resume,
                7 => FaultSpec::LosePeer(qp),
                8 => FaultSpec::KillQp(qp),
                9 | 10 => FaultSpec::Flap,
                _ => FaultSpec::Reset,
            },
        },
        81..=84 => Op::DestroyMr {
            region: rng.below(N_REGIONS),
        },
        85..=90 => Op::Fill {
            region: rng.below(N_REGIONS),
            offset: rng.below(REGION),
            byte: rng.next() as u8,
            len: rng.below(REGION),
        },
        91 => Op::EnterError { qp },
        92 => Op::Reconnect,
        93 => Op::StopQp { qp },
        94 => Op::DestroyQp { qp },
        95..=97 => Op::Progress,
        _ => Op::Reconnect,
    }
}

/// One fabric running a scenario.
struct World {
    fabric: Arc<Fabric>,
    names: [&'static str; 2],
    qps: [u32; 2],
    cqs: Vec<u32>,
    /// lkey, rkey, base address, length of every region ever registered.
    regions: Vec<(u32, u32, u64, usize)>,
    events: Vec<EventStream<DeviceEvent>>,
    trace: Vec<String>,
    listener: SocketAddr,
    params: ConnParams,
    shared_pd: bool,
    /// Every other region is registered over "caller" memory, kept here: deregistered when the
    /// world goes (see `Drop`), before the memory is freed.
    caller_memory: Vec<(u32, Memory)>,
}

impl Drop for World {
    fn drop(&mut self) {
        let mut st = self.fabric.lock();
        for (lkey, _) in &self.caller_memory {
            st.destroy_mr(*lkey);
        }
    }
}

impl World {
    #[allow(unsafe_code)]
    fn new(s: &Setup, express: bool) -> World {
        let config = FabricConfig {
            rnr_timer: Duration::from_secs(3600),
            ack_timeout: Duration::from_secs(3600),
            flush_delay: s.flush_delay,
            ..FabricConfig::default()
        };
        let fabric = Fabric::new(config);
        let mut st = fabric.lock();
        st.express = express;
        let devs = s.devices.map(|n| st.open_device(n).unwrap().0);
        let events = if devs[0] == devs[1] {
            vec![st.subscribe_device(devs[0]).unwrap()]
        } else {
            devs.iter()
                .map(|&d| st.subscribe_device(d).unwrap())
                .collect()
        };
        let one_device = devs[0] == devs[1];
        let cqs: Vec<u32> = s
            .cq_depth
            .iter()
            .enumerate()
            .map(|(i, &d)| st.create_cq(devs[i % 2], d, None).unwrap())
            .collect();
        let pd0 = st.alloc_pd(devs[0]).unwrap();
        let pd1 = if s.shared_pd {
            pd0
        } else {
            st.alloc_pd(devs[1]).unwrap()
        };
        let other0 = st.alloc_pd(devs[0]).unwrap();
        let other1 = st.alloc_pd(devs[1]).unwrap();
        let mut regions = Vec::new();
        let mut caller_memory = Vec::new();
        for pd in [pd0, pd1, other0, other1] {
            for access in [
                Access::LOCAL_WRITE
                    | Access::REMOTE_WRITE
                    | Access::REMOTE_READ
                    | Access::REMOTE_ATOMIC,
                Access::LOCAL_WRITE,
                Access::empty(),
            ] {
                let (lkey, rkey, addr, _) = if regions.len() % 2 == 1 {
                    let mem = Memory::alloc(REGION);
                    // SAFETY: `mem` stays allocated until the world's `Drop` deregistered the
                    // region, and nothing but the fabric touches it.
                    let caller = unsafe { Memory::caller(mem.host_ptr().get(), REGION) };
                    let made = st.register_memory(pd, caller, access).unwrap();
                    caller_memory.push((made.0, mem));
                    made
                } else {
                    st.register(pd, REGION, access).unwrap()
                };
                regions.push((lkey, rkey, addr, REGION));
            }
        }
        assert_eq!(regions.len(), N_REGIONS);
        for (i, r) in regions.iter().enumerate() {
            let bytes: Vec<u8> = (0..REGION).map(|b| (i * 64 + b) as u8).collect();
            st.mr_copy_in(r.0, 0, &bytes).unwrap();
        }
        let init = QpInit {
            max_send_wr: s.max_send_wr,
            max_recv_wr: 4,
            max_send_sge: 2,
            max_recv_sge: 2,
            max_inline_data: 64,
        };
        let qps = [0, 1].map(|i| {
            let cq = |j: usize| {
                let c = s.cq_of[i][j];
                // On two devices a CQ must be on the QP's device.
                let c = if one_device || c % 2 == i { c } else { i };
                cqs[c]
            };
            st.create_qp([pd0, pd1][i], cq(0), cq(1), &init).unwrap()
        });
        let params = ConnParams {
            rnr_retry_count: s.rnr_retry_count,
            ..ConnParams::default()
        };
        let addr = st.slots[st.inc(devs[1]).slot].config.address;
        let listener = st.listen(devs[1], SocketAddr::new(addr, 0)).unwrap();
        drop(st);
        let w = World {
            fabric: Arc::clone(&fabric),
            names: s.devices,
            qps,
            cqs,
            regions,
            events,
            trace: Vec::new(),
            listener,
            params,
            shared_pd: s.shared_pd,
            caller_memory,
        };
        w.connect(&mut fabric.lock()).unwrap();
        w
    }

    /// Connects the two QPs (fresh ones: in RESET or INIT).
    fn connect(&self, st: &mut State) -> Result<(), String> {
        let e = |e: crate::error::MockError| format!("{:?}", anyverbs::Error::from(e).kind());
        st.connect(self.qps[0], self.listener, &self.params)
            .map_err(e)?;
        let req = st
            .next_request(self.listener)
            .ok_or("no request")?
            .map_err(e)?;
        st.accept(self.listener, req.id, self.qps[1], &self.params)
            .map_err(e)
    }

    fn sge(&self, qp: usize, s: &SgeSpec) -> Sge {
        let region = match s.region {
            // With one PD the two QPs share its regions: a SEND may land on its own source.
            RegionSpec::Own(k) if self.shared_pd => k,
            RegionSpec::Own(k) => qp * 3 + k,
            RegionSpec::Any(i) => i,
        };
        let (lkey, _, base, _) = self.regions[region];
        Sge {
            addr: base.wrapping_add_signed(s.offset),
            length: s.length,
            lkey,
        }
    }

    fn remote(&self, region: usize, offset: i64) -> RemoteAddr {
        let (_, rkey, base, _) = self.regions[region];
        RemoteAddr {
            addr: base.wrapping_add_signed(offset),
            rkey,
        }
    }

    /// An address as (region, offset) by its key, so that two fabrics compare.
    fn rel(&self, key: u32, addr: u64) -> String {
        match self.regions.iter().position(|r| r.0 == key || r.1 == key) {
            Some(i) => format!("r{i}{:+}", addr.wrapping_sub(self.regions[i].2) as i64),
            None => format!("?{key:#x}"),
        }
    }

    fn sgl_str(&self, sgl: &[Sge]) -> String {
        sgl.iter()
            .map(|s| format!("{}/{}", self.rel(s.lkey, s.addr), s.length))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn op_str(&self, op: &SendOp) -> String {
        match *op {
            SendOp::Write(ra) => format!("Write({})", self.rel(ra.rkey, ra.addr)),
            SendOp::WriteWithImm(ra, i) => format!("WriteImm({},{i})", self.rel(ra.rkey, ra.addr)),
            SendOp::Read(ra) => format!("Read({})", self.rel(ra.rkey, ra.addr)),
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            } => format!(
                "CompareSwap({},{compare},{swap})",
                self.rel(remote.rkey, remote.addr)
            ),
            SendOp::FetchAdd { remote, add } => {
                format!("FetchAdd({},{add})", self.rel(remote.rkey, remote.addr))
            }
            op => format!("{op:?}"),
        }
    }

    fn run(&mut self, i: usize, op: &Op) {
        let now = Instant::now();
        let fabric = Arc::clone(&self.fabric);
        let mut st = fabric.lock();
        let result = match op {
            Op::PostRecv { qp, sgl } => {
                let sgl: Vec<Sge> = sgl.iter().map(|s| self.sge(*qp, s)).collect();
                let wr = RecvWr::new(1000 + i as u64, &sgl);
                st.post_recv(self.qps[*qp], &[wr])
                    .map_err(|e| format!("post {} {:?}", e.accepted, e.error.kind()))
            }
            Op::PostSend {
                qp,
                kind,
                sgl,
                flags,
                count,
            } => {
                let sgl: Vec<Sge> = sgl.iter().map(|s| self.sge(*qp, s)).collect();
                let op = match *kind {
                    SendKind::Send => SendOp::Send,
                    SendKind::SendImm(imm) => SendOp::SendWithImm(imm),
                    SendKind::Write(r, o) => SendOp::Write(self.remote(r, o)),
                    SendKind::WriteImm(r, o, imm) => SendOp::WriteWithImm(self.remote(r, o), imm),
                    SendKind::Read(r, o) => SendOp::Read(self.remote(r, o)),
                    SendKind::CompareSwap(r, o, compare, swap) => SendOp::CompareSwap {
                        remote: self.remote(r, o),
                        compare,
                        swap,
                    },
                    SendKind::FetchAdd(r, o, add) => SendOp::FetchAdd {
                        remote: self.remote(r, o),
                        add,
                    },
                };
                let wrs: Vec<SendWr> = (0..*count)
                    .map(|k| SendWr::new((2000 + i * 10 + k) as u64, op, &sgl).with_flags(*flags))
                    .collect();
                let caps = st.caps(st.qp(self.qps[*qp]).map_or(0, |q| q.device));
                st.post_send(self.qps[*qp], &wrs, caps)
                    .map_err(|e| format!("post {} {:?}", e.accepted, e.error.kind()))
            }
            Op::Modify { qp, to } => st
                .modify(self.qps[*qp], *to)
                .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind())),
            Op::Poll { cq, n } => {
                let mut out = vec![anyverbs::Completion::default(); *n];
                match self.cqs.get(*cq) {
                    Some(&id) => st
                        .poll(id, &mut out)
                        .map(|got| self.trace.push(format!("polled {:?}", &out[..got])))
                        .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind())),
                    None => Ok(()),
                }
            }
            Op::Inject { device, fault } => {
                let fault = match *fault {
                    FaultSpec::Stall => Fault::Stall,
                    FaultSpec::Resume => Fault::Resume,
                    FaultSpec::LosePeer(q) => Fault::LosePeer {
                        qp_num: self.qps[q],
                    },
                    FaultSpec::KillQp(q) => Fault::KillQp {
                        qp_num: self.qps[q],
                    },
                    FaultSpec::Flap => Fault::FlapPort {
                        port: 1,
                        down_for: Duration::from_secs(3600),
                    },
                    FaultSpec::Reset => Fault::Reset {
                        down_for: Duration::from_secs(3600),
                    },
                };
                st.inject(self.names[*device], &fault, now)
                    .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind()))
            }
            Op::DestroyMr { region } => {
                st.destroy_mr(self.regions[*region].0);
                Ok(())
            }
            Op::Fill {
                region,
                offset,
                byte,
                len,
            } => st
                .mr_copy_in(self.regions[*region].0, *offset, &vec![*byte; *len])
                .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind())),
            Op::EnterError { qp } => st
                .drain_enter_error(self.qps[*qp])
                .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind())),
            Op::StopQp { qp } => st
                .stop_device_qp(self.qps[*qp])
                .map_err(|e| format!("{:?}", anyverbs::Error::from(e).kind())),
            Op::DestroyQp { qp } => {
                st.destroy_qp(self.qps[*qp]);
                Ok(())
            }
            Op::Progress => {
                st.progress(now);
                Ok(())
            }
            Op::Reconnect => {
                let results: Vec<String> = self
                    .qps
                    .iter()
                    .map(|&q| format!("{:?}", st.modify(q, QpState::Reset).is_ok()))
                    .collect();
                let r = self.connect(&mut st);
                Ok(()).map(|()| self.trace.push(format!("reset {results:?} connect {r:?}")))
            }
            Op::Batch(ops) => {
                drop(st);
                for o in ops {
                    self.run(i, o);
                }
                return;
            }
        };
        st.step();
        let _ = st.take_timers();
        let snapshot = self.snapshot(&st);
        drop(st);
        let mut events = String::new();
        for s in &self.events {
            while let Ok(Some(e)) = s.try_recv() {
                let _ = write!(events, "{e:?} ");
            }
        }
        self.trace.push(format!(
            "#{i} {op:?} -> {result:?}\nevents {events}\n{snapshot}"
        ));
    }

    fn snapshot(&self, st: &State) -> String {
        let mut s = String::new();
        for (n, q) in st.qps.iter() {
            let _ = writeln!(
                s,
                "qp {n:#x} {:?} peer {:?} lost {} reported {} unsignaled {} lose_next {:?} \
                 parked {:?} held {:?}",
                q.state,
                q.peer,
                q.peer_lost,
                q.disconnect_reported,
                q.unsignaled_done,
                q.lose_next,
                q.parked,
                q.held,
            );
            for e in &q.sq {
                let _ = writeln!(
                    s,
                    "  sq {} {} [{}] {:?} inline {:?} stall {:?}",
                    e.wr.wr_id,
                    self.op_str(&e.wr.op),
                    self.sgl_str(&e.wr.sgl),
                    e.wr.flags,
                    e.inline,
                    e.stall
                        .map(|t| (t.kind == super::StallKind::Rnr, t.fail_at.is_some())),
                );
            }
            for r in &q.rq {
                let _ = writeln!(s, "  rq {} [{}]", r.wr_id, self.sgl_str(&r.sgl));
            }
        }
        for (n, cq) in st.cqs.iter() {
            let _ = writeln!(
                s,
                "cq {n:#x} overflowed {} wake {} dropped {} users {} {:?}",
                cq.overflowed, cq.wake_pending, cq.dropped, cq.users, cq.entries
            );
        }
        for (n, mr) in st.mrs.iter() {
            let _ = writeln!(s, "mr {n:#x} {:?}", mr.mem.to_vec());
        }
        let _ = writeln!(
            s,
            "pending {:?} stalled {:?}",
            st.pending_cq_errors, st.stalled
        );
        for d in &st.delayed {
            let _ = writeln!(
                s,
                "delayed dev {} cq {:#x} {:?} {:?}",
                d.device, d.cq, d.queue, d.completion
            );
        }
        let mut incs: Vec<_> = st.incarnations.iter().collect();
        incs.sort_by_key(|(k, _)| **k);
        for (k, inc) in incs {
            let _ = writeln!(
                s,
                "dev {k} lost {:?} stalled {} port_down {}",
                inc.lost,
                inc.stalled,
                inc.port_down_until.is_some()
            );
        }
        s
    }
}

/// Runs scenario `seed` with and without the express path; panics at the first difference.
fn compare(seed: u64, steps: usize) -> usize {
    let mut rng = Rng::new(seed);
    let wild = rng.chance(40);
    let s = setup(&mut rng, wild);
    let ops: Vec<Op> = (0..steps).map(|_| op(&mut rng, wild)).collect();
    let mut express = World::new(&s, true);
    let mut general = World::new(&s, false);
    for (i, op) in ops.iter().enumerate() {
        express.run(i, op);
        general.run(i, op);
        if express.trace != general.trace {
            let at = express
                .trace
                .iter()
                .zip(&general.trace)
                .position(|(a, b)| a != b)
                .unwrap_or(express.trace.len().min(general.trace.len()));
            panic!(
                "seed {seed}: {s:?}\nthe express path differs at step {i}\n\
                 --- history ---\n{}\n--- express ---\n{}\n--- general ---\n{}",
                general.trace[..at].join("\n"),
                express.trace[at..].join("\n"),
                general.trace[at..].join("\n"),
            );
        }
    }
    express.fabric.lock().express_taken
}

/// A difference panics with the seed and both traces; `EXPRESS_FIRST_SEED=n EXPRESS_SEEDS=1`
/// runs that seed alone.
#[test]
fn the_express_path_does_what_the_general_path_does() {
    let seeds: u64 = std::env::var("EXPRESS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let first: u64 = std::env::var("EXPRESS_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut taken = 0;
    let mut scenarios = 0;
    for seed in first..first + seeds {
        let t = compare(seed, 60);
        taken += t;
        scenarios += usize::from(t > 0);
    }
    eprintln!("express path: {taken} WRs in {scenarios} of {seeds} scenarios");
    assert!(scenarios > 0, "no scenario took the express path");
}
