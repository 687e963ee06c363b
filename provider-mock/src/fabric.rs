//! The fabric: every object of every mock device, behind one lock, and the engine that moves data.
//!
//! ## Progress model
//!
//! There is no progress thread and no sleep in the data path. A send WR executes while its
//! `post_send` call holds the lock, if it can: the data is copied into the peer's memory and both
//! completions are queued before `post_send` returns. A WR that cannot execute yet (the peer has
//! no receive posted: RNR; the peer does not answer: no ACK) stays at the head of its send queue
//! with a retry deadline and blocks the WRs behind it, as on a real RC QP. Stalled WRs are retried
//! whenever anything happens on the fabric: a post, a poll, a wait that wakes at the next retry
//! deadline. A retry deadline that has passed fails the WR with RNR-retry-exceeded or
//! transport-retry-exceeded and moves the QP to ERROR.
//!
//! Device lifecycle (incarnations, loss and return, injected faults) lives in [`lifecycle`];
//! the engine consults it where a device may not work: a lost or stalled device executes and
//! completes nothing, and a QP whose connection was cut gets no ACKs.

pub(crate) mod lifecycle;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyverbs::drain::{DrainPhase, DrainStart, Ledger, Token, WaitFor, WorkQueue};
use anyverbs::{
    Access, Cause, Completion, ConnParams, ConnectRequest, Connection, DeviceEvent, EventHub,
    MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MonitorEvent, PostError, QpInit, QpState,
    RecvWr, RemoteAddr, SendFlags, SendOp, SendWr, SgList, Sge, StateModel, WcOpcode, WcStatus,
};

use crate::config::{FabricConfig, Personality};
use crate::error::{MockError, MockResult};
use lifecycle::{Incarnation, Shutdown, Slot};

/// Ports handed out to `listen(.., 0)` and to the active side of connections.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 40000..=65000;

/// `rnr_retry_count` that means "retry forever".
const RNR_RETRY_FOREVER: u8 = 7;

/// The fabric shared by every handle of one `MockProvider`.
pub(crate) struct Fabric {
    pub(crate) config: FabricConfig,
    state: Mutex<State>,
    cond: Condvar,
    /// The fabric itself, for timer threads (which must not keep it alive).
    me: Weak<Fabric>,
    /// Ends the timer threads when the fabric is dropped.
    shutdown: Arc<Shutdown>,
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.shutdown.signal();
    }
}

impl Fabric {
    pub(crate) fn new(config: FabricConfig) -> Arc<Fabric> {
        let (slots, incarnations) = lifecycle::initial_devices(&config);
        let next_index = incarnations.len() as u32;
        Arc::new_cyclic(|me| Fabric {
            state: Mutex::new(State {
                slots,
                incarnations: incarnations
                    .into_iter()
                    .map(|i| (i.info.identity.index, i))
                    .collect(),
                next_index,
                monitor: EventHub::new(),
                lifecycle_pending: false,
                stalled_devices: 0,
                timers: Vec::new(),
                pds: HashMap::new(),
                mrs: HashMap::new(),
                rkeys: HashMap::new(),
                cqs: HashMap::new(),
                qps: HashMap::new(),
                listeners: HashMap::new(),
                requests: HashMap::new(),
                stalled: BTreeSet::new(),
                next_pd: 1,
                next_cq: 1,
                next_lkey: 1,
                next_qpn: 1,
                pending_cq_errors: Vec::new(),
                next_request: 1,
                next_port: *EPHEMERAL_PORTS.start(),
                delayed: Vec::new(),
                waiters: 0,
                rnr_timer: config.rnr_timer,
                ack_timeout: config.ack_timeout,
                flush_delay: config.flush_delay,
            }),
            config,
            cond: Condvar::new(),
            me: me.clone(),
            shutdown: Arc::default(),
        })
    }

    /// Takes the lock. A panic while holding it (a bug) does not make every later call panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` under the lock, retries stalled WRs, and wakes waiters if anything may have
    /// changed.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st);
        st.progress(Instant::now());
        if st.waiters > 0 {
            self.cond.notify_all();
        }
        let timers = st.take_timers();
        drop(st);
        self.arm_timers(timers);
        out
    }

    /// [`with`](Self::with) for a call on a handle of incarnation `dev`: fails with
    /// `DeviceLost` once the device is lost.
    pub(crate) fn with_live<T>(
        &self,
        dev: u32,
        f: impl FnOnce(&mut State) -> MockResult<T>,
    ) -> MockResult<T> {
        self.with(|st| {
            st.check_live(dev)?;
            f(st)
        })
    }

    /// [`wait_until`](Self::wait_until) for a call on a handle of incarnation `dev`: fails with
    /// `DeviceLost` as soon as the device is lost, also while waiting.
    pub(crate) fn wait_live<T>(
        &self,
        dev: u32,
        deadline: Instant,
        what: &'static str,
        mut f: impl FnMut(&mut State) -> Option<MockResult<T>>,
    ) -> MockResult<T> {
        self.wait_until(deadline, what, |st| match st.check_live(dev) {
            Ok(()) => f(st),
            Err(e) => Some(Err(e)),
        })
    }

    /// Waits until `f` returns `Some`, or `deadline` passes. Wakes on every change of the fabric
    /// and at the next retry deadline of a stalled WR, so retries fail on time.
    pub(crate) fn wait_until<T>(
        &self,
        deadline: Instant,
        what: &'static str,
        mut f: impl FnMut(&mut State) -> Option<MockResult<T>>,
    ) -> MockResult<T> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if st.progress(now) && st.waiters > 0 {
                self.cond.notify_all();
            }
            // Rare (a timer a fault's progress step asked for): arm it before waiting.
            self.arm_timers(st.take_timers());
            if let Some(r) = f(&mut st) {
                if st.waiters > 0 {
                    self.cond.notify_all();
                }
                let timers = st.take_timers();
                drop(st);
                self.arm_timers(timers);
                return r;
            }
            if now >= deadline {
                return Err(MockError::TimedOut(what));
            }
            let wake = st.next_timer().map_or(deadline, |t| t.min(deadline));
            st.waiters += 1;
            let timeout = wake
                .saturating_duration_since(now)
                .max(Duration::from_micros(1));
            st = match self.cond.wait_timeout(st, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            st.waiters -= 1;
        }
    }
}

/// `device` fields below name the incarnation the object was created on.
struct PdRec {
    device: u32,
    mrs: u32,
    qps: u32,
    dropped: bool,
}

struct MrRec {
    device: u32,
    pd: u32,
    buf: Vec<u8>,
    addr: u64,
    access: Access,
    rkey: u32,
}

struct CqRec {
    device: u32,
    capacity: u32,
    entries: VecDeque<Completion>,
    overflowed: bool,
    users: u32,
    dropped: bool,
}

/// Why a connection attempt failed.
#[derive(Clone, Copy)]
enum Refusal {
    NotListening(SocketAddr),
    Rejected,
    /// The QP left its fresh state (ERROR, RESET) while connecting.
    Abandoned,
    /// The listener's device was lost before the request was answered.
    Unreachable(SocketAddr),
}

enum Conn {
    Idle,
    Connecting { request: u64 },
    Established(Connection),
    Refused(Refusal),
}

/// Why the head of a send queue cannot execute yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StallKind {
    /// The peer has no receive posted.
    Rnr,
    /// The peer does not answer.
    NoAck,
}

#[derive(Clone, Copy)]
struct Stall {
    kind: StallKind,
    /// When the WR fails if still stalled; `None` retries forever.
    fail_at: Option<Instant>,
}

/// Total bytes of a scatter list.
fn total_length(sgl: &[Sge]) -> u64 {
    sgl.iter().map(|s| u64::from(s.length)).sum()
}

/// A send WR as the simulated device holds it: its own copy (a posted WR only borrows its
/// scatter list), under the provider's token.
struct DeviceSend {
    wr_id: u64,
    op: SendOp,
    sgl: SgList,
    flags: SendFlags,
}

impl DeviceSend {
    fn new(wr_id: u64, wr: &SendWr) -> Self {
        DeviceSend {
            wr_id,
            op: wr.op(),
            sgl: SgList::from_slice(wr.sgl()),
            flags: wr.flags,
        }
    }

    fn total_length(&self) -> u64 {
        total_length(&self.sgl)
    }
}

/// A receive WR as the simulated device holds it, under the provider's token.
struct DeviceRecv {
    wr_id: u64,
    sgl: SgList,
}

impl DeviceRecv {
    fn new(wr_id: u64, wr: &RecvWr) -> Self {
        DeviceRecv {
            wr_id,
            sgl: SgList::from_slice(wr.sgl()),
        }
    }

    fn total_length(&self) -> u64 {
        total_length(&self.sgl)
    }
}

struct SendEntry {
    wr: DeviceSend,
    /// Data copied at post time for `SendFlags::INLINE`.
    inline: Option<Vec<u8>>,
    stall: Option<Stall>,
}

/// A completion the device delivers later (asynchronous flushes).
struct Delayed {
    due: Instant,
    /// The incarnation that delivers it.
    device: u32,
    cq: u32,
    queue: WorkQueue,
    completion: Completion,
}

/// A QP as the provider and the simulated device see it. The device's half works with the
/// ledger's tokens as `wr_id`s; the provider's half is the ledger.
struct QpRec {
    device: u32,
    pd: u32,
    send_cq: u32,
    recv_cq: u32,
    /// The device's queue sizes: the ULP's, plus one slot per queue for the drain's marker.
    init: QpInit,
    model: StateModel,
    personality: Personality,
    state: QpState,
    sq: VecDeque<SendEntry>,
    rq: VecDeque<DeviceRecv>,
    /// WRs the device accepted in ERROR and has not processed: never on user-space siw and for
    /// the X722's lost marker, until the next move to ERROR for receives on rxe.
    parked: Vec<(WorkQueue, u64)>,
    /// [`Personality::LostMarker`]: the next WR posted in ERROR on each queue is lost.
    lose_next: [bool; 2],
    /// The provider's record of what it posted for the ULP.
    ledger: Ledger,
    /// Completions of this QP lost to CQ overflow.
    lost: u64,
    peer: Option<u32>,
    conn: Conn,
    params: ConnParams,
    local_addr: Option<SocketAddr>,
    /// The device's largest message.
    max_msg_size: u32,
    /// Unsignaled send WRs that completed successfully since the last signaled completion.
    /// As on hardware, they keep their send-queue slot until a later signaled WR completes.
    unsignaled_done: u32,
    /// The connection was cut (the peer's device was lost, or `Fault::LosePeer`): no ACK ever
    /// comes back, and the peer hears nothing from this QP.
    peer_lost: bool,
    /// `DeviceEvent::Disconnected` was published for this QP.
    disconnect_reported: bool,
    /// Completions (under the provider's tokens) a stalled device owes, delivered on resume.
    held: Vec<(WorkQueue, Completion)>,
}

struct ListenerRec {
    device: u32,
    queue: VecDeque<u64>,
}

struct RequestRec {
    listener: SocketAddr,
    client: u32,
    /// The incarnation of the requesting QP.
    client_device: u32,
    client_addr: SocketAddr,
    private_data: Vec<u8>,
}

/// Everything on the fabric.
pub(crate) struct State {
    /// One per configured device.
    slots: Vec<Slot>,
    /// The incarnations of every device that are present or still have objects, by kernel
    /// index. A lost incarnation is forgotten once its last object is released (nothing can name
    /// it any more), so a fabric that resets forever does not grow.
    incarnations: HashMap<u32, Incarnation>,
    /// The kernel index of the next incarnation: indexes are never reused.
    next_index: u32,
    /// Devices added and removed.
    monitor: EventHub<MonitorEvent>,
    /// Whether a device return or port recovery is pending (see [`State::lifecycle`]).
    lifecycle_pending: bool,
    /// How many live incarnations are stalled (`Fault::Stall`).
    stalled_devices: usize,
    /// Progress steps asked for at these instants, not yet armed.
    timers: Vec<Instant>,
    pds: HashMap<u32, PdRec>,
    mrs: HashMap<u32, MrRec>,
    rkeys: HashMap<u32, u32>,
    cqs: HashMap<u32, CqRec>,
    qps: HashMap<u32, QpRec>,
    listeners: HashMap<SocketAddr, ListenerRec>,
    requests: HashMap<u64, RequestRec>,
    /// QPs whose send-queue head is waiting for a retry.
    stalled: BTreeSet<u32>,
    next_pd: u32,
    next_cq: u32,
    next_lkey: u32,
    next_qpn: u32,
    /// CQs that overflowed since the last progress step: their QPs go to ERROR.
    pending_cq_errors: Vec<u32>,
    next_request: u64,
    next_port: u16,
    /// Completions the devices deliver later, in the order they were produced.
    delayed: Vec<Delayed>,
    waiters: usize,
    rnr_timer: Duration,
    ack_timeout: Duration,
    flush_delay: Duration,
}

/// The next number from `counter` in `min..=max` (`min` ≥ 1) that `live` does not use. The
/// tables are bounded by the device limits, far below the range, so a free number always exists.
fn next_free<V>(counter: &mut u32, min: u32, max: u32, live: &HashMap<u32, V>) -> u32 {
    loop {
        let n = (*counter).clamp(min, max);
        *counter = if n >= max { min } else { n + 1 };
        if !live.contains_key(&n) {
            return n;
        }
    }
}

fn size_check(what: &'static str, got: u64, max: u64) -> MockResult<()> {
    if got == 0 || got > max {
        return Err(MockError::BadSize {
            what,
            got,
            min: 1,
            max,
        });
    }
    Ok(())
}

/// The range of `n` bytes at `offset` in a region of `len` bytes, if it fits.
fn byte_range(len: usize, offset: usize, n: usize) -> MockResult<std::ops::Range<usize>> {
    match offset.checked_add(n) {
        Some(end) if end <= len => Ok(offset..end),
        _ => Err(MockError::BadArgument(format!(
            "{n} bytes at offset {offset} do not fit in a region of {len} bytes"
        ))),
    }
}

fn flush_completion(wr_id: u64, qp_num: u32, opcode: WcOpcode) -> Completion {
    Completion {
        wr_id,
        status: WcStatus::WrFlushError,
        opcode,
        qp_num,
        ..Completion::default()
    }
}

impl State {
    fn alloc_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= *EPHEMERAL_PORTS.end() {
            *EPHEMERAL_PORTS.start()
        } else {
            p + 1
        };
        p
    }

    // ----- protection domains -----

    pub(crate) fn alloc_pd(&mut self, device: u32) -> MockResult<u32> {
        let inc = self.inc(device);
        if inc.live.pds >= inc.info.limits.max_pd {
            return Err(MockError::TableFull("protection domain"));
        }
        let id = next_free(&mut self.next_pd, 1, u32::MAX, &self.pds);
        self.inc_mut(device).live.pds += 1;
        self.pds.insert(
            id,
            PdRec {
                device,
                mrs: 0,
                qps: 0,
                dropped: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn destroy_pd(&mut self, id: u32) -> MockResult<()> {
        let Some(pd) = self.pds.get(&id) else {
            return Ok(());
        };
        if pd.mrs > 0 || pd.qps > 0 {
            return Err(MockError::InUse {
                what: "protection domain",
                users: format!("{} memory regions and {} queue pairs", pd.mrs, pd.qps),
            });
        }
        let device = pd.device;
        self.pds.remove(&id);
        self.inc_mut(device).live.pds -= 1;
        Ok(())
    }

    pub(crate) fn drop_pd(&mut self, id: u32) {
        if self.destroy_pd(id).is_err()
            && let Some(pd) = self.pds.get_mut(&id)
        {
            pd.dropped = true;
        }
    }

    fn pd_lost_user(&mut self, id: u32) {
        if let Some(pd) = self.pds.get(&id)
            && pd.dropped
            && pd.mrs == 0
            && pd.qps == 0
        {
            let _ = self.destroy_pd(id);
        }
    }

    fn live_pd(&self, id: u32) -> MockResult<&PdRec> {
        self.pds
            .get(&id)
            .filter(|p| !p.dropped)
            .ok_or(MockError::Destroyed("protection domain"))
    }

    // ----- memory regions -----

    pub(crate) fn register(
        &mut self,
        pd: u32,
        len: usize,
        access: Access,
    ) -> MockResult<(u32, u32, u64)> {
        let device = self.live_pd(pd)?.device;
        let limits = self.inc(device).info.limits;
        size_check("memory region length", len as u64, limits.max_mr_size)?;
        if access.intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(MockError::BadArgument(
                "remote write or atomic access requires local write access".into(),
            ));
        }
        if self.inc(device).live.mrs >= limits.max_mr {
            return Err(MockError::TableFull("memory region"));
        }
        // lkeys stay below 2^31 so that rkeys (lkey with the top bit set) never collide.
        let lkey = next_free(&mut self.next_lkey, 1, 0x7fff_ffff, &self.mrs);
        let rkey = lkey ^ 0x8000_0000;
        let buf = vec![0u8; len];
        let addr = buf.as_ptr() as u64;
        self.mrs.insert(
            lkey,
            MrRec {
                device,
                pd,
                buf,
                addr,
                access,
                rkey,
            },
        );
        self.rkeys.insert(rkey, lkey);
        self.inc_mut(device).live.mrs += 1;
        if let Some(p) = self.pds.get_mut(&pd) {
            p.mrs += 1;
        }
        Ok((lkey, rkey, addr))
    }

    pub(crate) fn destroy_mr(&mut self, lkey: u32) {
        if let Some(mr) = self.mrs.remove(&lkey) {
            self.rkeys.remove(&mr.rkey);
            self.inc_mut(mr.device).live.mrs -= 1;
            if let Some(p) = self.pds.get_mut(&mr.pd) {
                p.mrs -= 1;
            }
            self.pd_lost_user(mr.pd);
        }
    }

    pub(crate) fn mr_copy_in(&mut self, lkey: u32, offset: usize, src: &[u8]) -> MockResult<()> {
        let mr = self
            .mrs
            .get_mut(&lkey)
            .ok_or(MockError::Destroyed("memory region"))?;
        let range = byte_range(mr.buf.len(), offset, src.len())?;
        mr.buf[range].copy_from_slice(src);
        Ok(())
    }

    pub(crate) fn mr_copy_out(&self, lkey: u32, offset: usize, dst: &mut [u8]) -> MockResult<()> {
        let mr = self
            .mrs
            .get(&lkey)
            .ok_or(MockError::Destroyed("memory region"))?;
        dst.copy_from_slice(&mr.buf[byte_range(mr.buf.len(), offset, dst.len())?]);
        Ok(())
    }

    /// Finds the region and offset of a local SGE, checking key, PD, bounds and write access.
    fn resolve_local(&self, pd: u32, sge: &Sge, need_write: bool) -> Result<(u32, usize), String> {
        let mr = self
            .mrs
            .get(&sge.lkey)
            .ok_or_else(|| format!("unknown lkey {:#x}", sge.lkey))?;
        if mr.pd != pd {
            return Err(format!(
                "lkey {:#x} belongs to a region of another protection domain",
                sge.lkey
            ));
        }
        let len = mr.buf.len() as u64;
        let start = sge.addr.wrapping_sub(mr.addr);
        let fits = sge.addr >= mr.addr
            && start
                .checked_add(u64::from(sge.length))
                .is_some_and(|end| end <= len);
        if !fits {
            return Err(format!(
                "{} bytes at {:#x} are outside the region [{:#x}, {:#x})",
                sge.length,
                sge.addr,
                mr.addr,
                mr.addr + len
            ));
        }
        if need_write && !mr.access.contains(Access::LOCAL_WRITE) {
            return Err(format!(
                "lkey {:#x} was registered without local write access",
                sge.lkey
            ));
        }
        Ok((sge.lkey, start as usize))
    }

    fn gather(&self, pd: u32, sgl: &[Sge]) -> Result<Vec<u8>, String> {
        let total = total_length(sgl);
        let mut data = Vec::with_capacity(total as usize);
        for sge in sgl {
            let (lkey, off) = self.resolve_local(pd, sge, false)?;
            data.extend_from_slice(&self.mrs[&lkey].buf[off..off + sge.length as usize]);
        }
        Ok(data)
    }

    fn scatter(&mut self, pd: u32, sgl: &[Sge], data: &[u8]) -> Result<(), String> {
        let mut targets = Vec::with_capacity(sgl.len());
        for sge in sgl {
            targets.push((self.resolve_local(pd, sge, true)?, sge.length as usize));
        }
        let mut rest = data;
        for ((lkey, off), len) in targets {
            if rest.is_empty() {
                break;
            }
            let n = len.min(rest.len());
            let mr = self.mrs.get_mut(&lkey).expect("resolved above");
            mr.buf[off..off + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Finds the region of a remote access, checking key, PD, bounds and access rights.
    fn resolve_remote(
        &self,
        pd: u32,
        addr: u64,
        rkey: u32,
        len: u64,
        need: Access,
    ) -> Option<(u32, usize)> {
        let lkey = *self.rkeys.get(&rkey)?;
        let mr = &self.mrs[&lkey];
        let start = addr.checked_sub(mr.addr)?;
        let ok = mr.pd == pd
            && mr.access.contains(need)
            && start
                .checked_add(len)
                .is_some_and(|end| end <= mr.buf.len() as u64);
        ok.then_some((lkey, start as usize))
    }

    // ----- completion queues -----

    pub(crate) fn create_cq(&mut self, device: u32, depth: u32) -> MockResult<u32> {
        let inc = self.inc(device);
        let limits = inc.info.limits;
        size_check("CQ depth", u64::from(depth), u64::from(limits.max_cqe))?;
        if inc.live.cqs >= limits.max_cq {
            return Err(MockError::TableFull("completion queue"));
        }
        let id = next_free(&mut self.next_cq, 1, u32::MAX, &self.cqs);
        self.inc_mut(device).live.cqs += 1;
        self.cqs.insert(
            id,
            CqRec {
                device,
                capacity: depth,
                entries: VecDeque::with_capacity(depth as usize),
                overflowed: false,
                users: 0,
                dropped: false,
            },
        );
        Ok(id)
    }

    pub(crate) fn destroy_cq(&mut self, id: u32) -> MockResult<()> {
        let Some(cq) = self.cqs.get(&id) else {
            return Ok(());
        };
        if cq.users > 0 {
            return Err(MockError::InUse {
                what: "completion queue",
                users: format!("{} queue(s) of live QPs", cq.users),
            });
        }
        let device = cq.device;
        self.cqs.remove(&id);
        self.inc_mut(device).live.cqs -= 1;
        Ok(())
    }

    pub(crate) fn drop_cq(&mut self, id: u32) {
        if self.destroy_cq(id).is_err()
            && let Some(cq) = self.cqs.get_mut(&id)
        {
            cq.dropped = true;
        }
    }

    fn cq_lost_user(&mut self, id: u32) {
        let reap = match self.cqs.get_mut(&id) {
            Some(cq) => {
                cq.users -= 1;
                cq.dropped && cq.users == 0
            }
            None => false,
        };
        if reap {
            let _ = self.destroy_cq(id);
        }
    }

    fn live_cq(&self, id: u32) -> MockResult<&CqRec> {
        self.cqs
            .get(&id)
            .filter(|c| !c.dropped)
            .ok_or(MockError::Destroyed("completion queue"))
    }

    /// Delivers a completion the device produced: the QP's ledger turns it into the ULP's
    /// completion, or swallows it (a drain marker; anything for a WR no longer outstanding).
    /// Swallowed completions never occupy the CQ: the provider reserves their slots.
    fn push_cqe(&mut self, id: u32, c: Completion) {
        let Some(q) = self.qps.get_mut(&c.qp_num) else {
            return;
        };
        if let Some(ulp) = q.ledger.resolve(&c) {
            self.push_resolved(id, ulp);
        }
    }

    /// Queues a completion for the ULP. A full CQ overflows: the completion is lost, the CQ
    /// reports `Overflow` from then on, and (at the next progress step) every QP using it goes
    /// to ERROR, as a CQ error event does on hardware.
    fn push_resolved(&mut self, id: u32, c: Completion) {
        self.push_resolved_all(id, std::iter::once(c));
    }

    /// Completions of a QP lost to CQ overflow since it was created.
    pub(crate) fn lost_completions(&self, qpn: u32) -> u64 {
        self.qps.get(&qpn).map_or(0, |q| q.lost)
    }

    /// Moves every QP that uses an overflowed CQ to ERROR, then reports the CQ error.
    fn fail_overflowed_cqs(&mut self) -> bool {
        if self.pending_cq_errors.is_empty() {
            return false;
        }
        let cqs = std::mem::take(&mut self.pending_cq_errors);
        let victims: Vec<u32> = self
            .qps
            .iter()
            .filter(|(_, q)| {
                q.state != QpState::Error && (cqs.contains(&q.send_cq) || cqs.contains(&q.recv_cq))
            })
            .map(|(n, _)| *n)
            .collect();
        for qpn in victims {
            self.enter_error(qpn);
        }
        for cq_num in cqs {
            if let Some(cq) = self.cqs.get(&cq_num) {
                self.publish(cq.device, DeviceEvent::CqError { cq_num });
            }
        }
        true
    }

    /// Moves up to `out.len()` completions into `out`; `None` if there were none.
    pub(crate) fn poll(&mut self, cq: u32, out: &mut [Completion]) -> MockResult<usize> {
        let cq = self
            .cqs
            .get_mut(&cq)
            .filter(|c| !c.dropped)
            .ok_or(MockError::Destroyed("completion queue"))?;
        if cq.overflowed {
            return Err(MockError::CqOverflow);
        }
        let n = out.len().min(cq.entries.len());
        for (slot, c) in out.iter_mut().zip(cq.entries.drain(..n)) {
            *slot = c;
        }
        Ok(n)
    }

    // ----- queue pairs -----

    pub(crate) fn create_qp(
        &mut self,
        pd: u32,
        send_cq: u32,
        recv_cq: u32,
        init: &QpInit,
    ) -> MockResult<u32> {
        let device = self.live_pd(pd)?.device;
        let inc = self.inc(device);
        let limits = inc.info.limits;
        let personality = self.slots[inc.slot].config.personality;
        for cq in [send_cq, recv_cq] {
            let cq_device = self.live_cq(cq)?.device;
            self.check_live(cq_device)?;
            if cq_device != device {
                return Err(MockError::BadArgument(
                    "the CQ belongs to another device".into(),
                ));
            }
        }
        let max_wr = u64::from(limits.max_qp_wr);
        size_check("max_send_wr", u64::from(init.max_send_wr), max_wr)?;
        size_check("max_recv_wr", u64::from(init.max_recv_wr), max_wr)?;
        let max_sge = u64::from(limits.max_sge);
        size_check("max_send_sge", u64::from(init.max_send_sge), max_sge)?;
        size_check("max_recv_sge", u64::from(init.max_recv_sge), max_sge)?;
        if init.max_inline_data > limits.max_inline_data {
            return Err(MockError::BadSize {
                what: "max_inline_data",
                got: u64::from(init.max_inline_data),
                min: 0,
                max: u64::from(limits.max_inline_data),
            });
        }
        if self.inc(device).live.qps >= limits.max_qp {
            return Err(MockError::TableFull("queue pair"));
        }
        // QP numbers are 24 bits; 0 and 1 are special in InfiniBand (SMI, GSI).
        let qpn = next_free(&mut self.next_qpn, 2, 0x00ff_ffff, &self.qps);
        self.inc_mut(device).live.qps += 1;
        self.pds.get_mut(&pd).expect("live").qps += 1;
        self.cqs.get_mut(&send_cq).expect("live").users += 1;
        self.cqs.get_mut(&recv_cq).expect("live").users += 1;
        let model = personality.state_model();
        self.qps.insert(
            qpn,
            QpRec {
                device,
                pd,
                send_cq,
                recv_cq,
                init: QpInit {
                    max_send_wr: init.max_send_wr + 1,
                    max_recv_wr: init.max_recv_wr + 1,
                    ..*init
                },
                model,
                personality,
                state: model.initial(),
                sq: VecDeque::new(),
                rq: VecDeque::new(),
                parked: Vec::new(),
                lose_next: [false; 2],
                ledger: Ledger::new(qpn, init.max_send_wr, init.max_recv_wr),
                lost: 0,
                peer: None,
                conn: Conn::Idle,
                params: ConnParams::default(),
                local_addr: None,
                unsignaled_done: 0,
                max_msg_size: limits.max_msg_size,
                peer_lost: false,
                disconnect_reported: false,
                held: Vec::new(),
            },
        );
        Ok(qpn)
    }

    fn qp(&self, qpn: u32) -> MockResult<&QpRec> {
        self.qps.get(&qpn).ok_or(MockError::Destroyed("queue pair"))
    }

    fn qp_mut(&mut self, qpn: u32) -> MockResult<&mut QpRec> {
        self.qps
            .get_mut(&qpn)
            .ok_or(MockError::Destroyed("queue pair"))
    }

    pub(crate) fn qp_state(&self, qpn: u32) -> MockResult<QpState> {
        Ok(self.qp(qpn)?.state)
    }

    pub(crate) fn destroy_qp(&mut self, qpn: u32) {
        let Some(q) = self.qps.remove(&qpn) else {
            return;
        };
        self.stalled.remove(&qpn);
        self.delayed.retain(|d| d.completion.qp_num != qpn);
        self.inc_mut(q.device).live.qps -= 1;
        if let Conn::Connecting { request } = q.conn {
            self.requests.remove(&request);
        }
        self.cq_lost_user(q.send_cq);
        self.cq_lost_user(q.recv_cq);
        if let Some(p) = self.pds.get_mut(&q.pd) {
            p.qps -= 1;
        }
        self.pd_lost_user(q.pd);
        // On iWARP the connection is a TCP stream: destroying one end tears it down and the
        // peer's QP goes to ERROR. On InfiniBand the peer notices only when it sends. A cut
        // connection tells the peer nothing.
        if q.model == StateModel::Iwarp
            && !q.peer_lost
            && let Some(peer) = q.peer
        {
            self.enter_error(peer);
        }
    }

    /// Withdraws a connection request the QP has pending; the listener never sees it.
    fn abandon_connect(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn)
            && let Conn::Connecting { request } = q.conn
        {
            q.conn = Conn::Refused(Refusal::Abandoned);
            self.requests.remove(&request);
        }
    }

    /// Moves a QP to ERROR and flushes both queues.
    fn enter_error(&mut self, qpn: u32) {
        self.abandon_connect(qpn);
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        if q.state != QpState::Error {
            q.lose_next = [true; 2];
        }
        q.state = QpState::Error;
        self.stalled.remove(&qpn);
        self.flush(qpn);
        let q = self.qps.get_mut(&qpn).expect("present");
        if q.model == StateModel::Iwarp
            && !q.peer_lost
            && let Some(peer) = q.peer.take()
        {
            let peer_device = self.qps.get_mut(&peer).and_then(|p| {
                p.peer = None;
                (!std::mem::replace(&mut p.disconnect_reported, true)).then_some(p.device)
            });
            self.enter_error(peer);
            // As siw's RDMA_CM_EVENT_DISCONNECTED: the end that did not close hears of it.
            if let Some(dev) = peer_device {
                self.publish(dev, DeviceEvent::Disconnected { qp_num: peer });
            }
        }
    }

    /// Completes every outstanding WR of a QP with a flush error, sends first, then receives:
    /// at once, or after the flush delay on devices that flush asynchronously. A dead device
    /// (the personality, or a lost incarnation) flushes nothing; a stalled one holds the flushes
    /// until it resumes. On rxe this also flushes the receives posted while in ERROR.
    fn flush(&mut self, qpn: u32) {
        let q = self.qps.get_mut(&qpn).expect("present");
        let inc = &self.incarnations[&q.device];
        if q.personality == Personality::Dead || inc.lost.is_some() {
            return;
        }
        let stalled = inc.stalled;
        q.unsignaled_done = 0;
        let mut flushes: Vec<(WorkQueue, Completion)> =
            q.sq.drain(..)
                .map(|e| {
                    let c = flush_completion(e.wr.wr_id, qpn, e.wr.op.completion_opcode());
                    (WorkQueue::Send, c)
                })
                .collect();
        flushes.extend(q.rq.drain(..).map(|r| {
            (
                WorkQueue::Recv,
                flush_completion(r.wr_id, qpn, WcOpcode::Recv),
            )
        }));
        if q.personality == Personality::Rxe {
            let (recvs, rest): (Vec<_>, Vec<_>) = q
                .parked
                .drain(..)
                .partition(|(queue, _)| *queue == WorkQueue::Recv);
            q.parked = rest;
            flushes.extend(
                recvs
                    .into_iter()
                    .map(|(_, id)| (WorkQueue::Recv, flush_completion(id, qpn, WcOpcode::Recv))),
            );
        }
        if stalled {
            q.held.extend(flushes);
            return;
        }
        if q.personality.flushes_asynchronously() {
            for (queue, c) in flushes {
                self.emit(qpn, queue, c);
            }
            return;
        }
        // Synchronous flush: resolve through the ledger while the QP is at hand, then deliver
        // to each CQ in one go.
        let (scq, rcq) = (q.send_cq, q.recv_cq);
        let (mut to_send_cq, mut to_recv_cq) = (Vec::new(), Vec::new());
        for (queue, c) in flushes {
            if let Some(ulp) = q.ledger.resolve(&c) {
                match queue {
                    WorkQueue::Send => to_send_cq.push(ulp),
                    WorkQueue::Recv => to_recv_cq.push(ulp),
                }
            }
        }
        self.push_resolved_all(scq, to_send_cq);
        self.push_resolved_all(rcq, to_recv_cq);
    }

    /// [`push_resolved`](Self::push_resolved) for many completions, in order.
    fn push_resolved_all(&mut self, id: u32, completions: impl IntoIterator<Item = Completion>) {
        let Some(cq) = self.cqs.get_mut(&id) else {
            return;
        };
        for c in completions {
            if cq.entries.len() >= cq.capacity as usize {
                if !cq.overflowed {
                    self.pending_cq_errors.push(id);
                }
                cq.overflowed = true;
                if let Some(q) = self.qps.get_mut(&c.qp_num) {
                    q.lost += 1;
                }
            } else {
                cq.entries.push_back(c);
            }
        }
    }

    /// Delivers a flush completion now, or after the flush delay where the device flushes
    /// asynchronously; a stalled device holds it until it resumes, a lost one drops it.
    fn emit(&mut self, qpn: u32, queue: WorkQueue, c: Completion) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let inc = &self.incarnations[&q.device];
        if inc.lost.is_some() {
            return;
        }
        if inc.stalled {
            q.held.push((queue, c));
            return;
        }
        let cq = Self::cq_of(q, queue);
        if q.personality.flushes_asynchronously() {
            self.delayed.push(Delayed {
                due: Instant::now() + self.flush_delay,
                device: q.device,
                cq,
                queue,
                completion: c,
            });
        } else {
            self.push_cqe(cq, c);
        }
    }

    /// What the device does with a WR posted while the QP is in ERROR; `wr_id` is the
    /// provider's token.
    fn post_in_error(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        wr_id: u64,
        opcode: WcOpcode,
    ) -> MockResult<()> {
        let q = self.qps.get_mut(&qpn).expect("present");
        let i = match queue {
            WorkQueue::Send => 0,
            WorkQueue::Recv => 1,
        };
        match q.personality {
            Personality::Cxgb4 => Err(MockError::PostRefusedInError { errno: "EINVAL" }),
            Personality::Erdma => Err(MockError::PostRefusedInError { errno: "EIO" }),
            Personality::Siw => {
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Rxe if queue == WorkQueue::Recv => {
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Rxe => {
                // A send posted in ERROR completes at once on rxe, though its flushes on the
                // move to ERROR take a while; completions of one queue stay in order.
                let (cq, device) = (q.send_cq, q.device);
                let c = flush_completion(wr_id, qpn, opcode);
                if !self.working(device) {
                    self.emit(qpn, queue, c);
                    return Ok(());
                }
                match self
                    .delayed
                    .iter()
                    .rev()
                    .find(|d| d.completion.qp_num == qpn && d.queue == queue)
                {
                    Some(last) => {
                        let due = last.due;
                        self.delayed.push(Delayed {
                            due,
                            device,
                            cq,
                            queue,
                            completion: c,
                        });
                    }
                    None => self.push_cqe(cq, c),
                }
                Ok(())
            }
            Personality::LostMarker if q.lose_next[i] => {
                q.lose_next[i] = false;
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Dead => {
                // Accepted; the device never looks at it again.
                q.parked.push((queue, wr_id));
                Ok(())
            }
            _ => {
                self.emit(qpn, queue, flush_completion(wr_id, qpn, opcode));
                Ok(())
            }
        }
    }

    /// WRs on `queue` the device has not finished with and still will (parked ones aside):
    /// its ring and its pending asynchronous flushes.
    fn busy(&self, qpn: u32, queue: WorkQueue) -> usize {
        let Some(q) = self.qps.get(&qpn) else {
            return 0;
        };
        let ring = match queue {
            WorkQueue::Send => q.sq.len(),
            WorkQueue::Recv => q.rq.len(),
        };
        ring + q.held.iter().filter(|(held, _)| *held == queue).count()
            + self
                .delayed
                .iter()
                .filter(|d| d.completion.qp_num == qpn && d.queue == queue)
                .count()
    }

    /// Whether a delayed completion is held back by its stalled device.
    fn held_by_stall(&self, d: &Delayed) -> bool {
        self.stalled_devices > 0 && self.inc(d.device).stalled
    }

    /// Whether a delayed completion is due: its time came and its device is not stalled.
    fn is_due(&self, d: &Delayed, now: Instant) -> bool {
        d.due <= now && !self.held_by_stall(d)
    }

    /// Delivers the delayed completions that are due; true if any were.
    fn fire_delayed(&mut self, now: Instant) -> bool {
        if !self.delayed.iter().any(|d| self.is_due(d, now)) {
            return false;
        }
        let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|d| self.is_due(d, now));
        self.delayed = later;
        for d in due {
            self.push_cqe(d.cq, d.completion);
        }
        true
    }

    pub(crate) fn modify(&mut self, qpn: u32, to: QpState) -> MockResult<()> {
        let q = self.qp(qpn)?;
        let (model, from) = (q.model, q.state);
        if q.ledger.phase() != DrainPhase::Open && to != QpState::Error {
            return Err(MockError::Drained);
        }
        model
            .check(from, to, Cause::Modify)
            .map_err(MockError::Transition)?;
        match to {
            QpState::ReadyToReceive if q.peer.is_none() => {
                return Err(MockError::WrongState(
                    "RTR needs the remote QP: connect through the connection manager".into(),
                ));
            }
            QpState::Error => self.enter_error(qpn),
            QpState::Reset => {
                // Verbs: RESET empties both queues without completions.
                self.abandon_connect(qpn);
                self.delayed.retain(|d| d.completion.qp_num != qpn);
                let q = self.qp_mut(qpn)?;
                q.sq.clear();
                q.rq.clear();
                q.parked.clear();
                q.held.clear();
                q.ledger.discard_all();
                q.unsignaled_done = 0;
                q.state = QpState::Reset;
                q.conn = Conn::Idle;
                q.peer_lost = false;
                q.disconnect_reported = false;
                let peer = q.peer.take();
                self.stalled.remove(&qpn);
                if let Some(p) = peer.and_then(|p| self.qps.get_mut(&p))
                    && p.peer == Some(qpn)
                {
                    p.peer = None;
                }
            }
            QpState::Closing if !self.qp(qpn)?.sq.is_empty() => {
                // The provider refuses what siw would turn into QP_FATAL and lost sends.
                return Err(MockError::ClosingWithSends(self.qp(qpn)?.sq.len()));
            }
            QpState::Closing | QpState::Terminate => {
                let q = self.qp_mut(qpn)?;
                q.state = to;
                let recvs: Vec<DeviceRecv> = q.rq.drain(..).collect();
                let (rcq, peer, cut) = (q.recv_cq, q.peer.take(), q.peer_lost);
                let working = self.working(self.qp(qpn)?.device);
                for r in recvs {
                    let c = flush_completion(r.wr_id, qpn, WcOpcode::Recv);
                    if working {
                        self.push_cqe(rcq, c);
                    } else {
                        self.emit(qpn, WorkQueue::Recv, c);
                    }
                }
                if let Some(peer) = peer.filter(|_| !cut) {
                    if let Some(p) = self.qps.get_mut(&peer) {
                        p.peer = None;
                    }
                    self.enter_error(peer);
                }
            }
            _ => {
                self.qp_mut(qpn)?.state = to;
                if to == QpState::ReadyToSend {
                    self.run_sq(qpn, Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Checks a send WR at post time; returns its inline data, if any.
    fn validate_send(
        &self,
        q: &QpRec,
        caps: anyverbs::Caps,
        wr: &SendWr,
    ) -> MockResult<Option<Vec<u8>>> {
        if wr.sgl().len() > q.init.max_send_sge as usize {
            return Err(MockError::BadArgument(format!(
                "{} SGEs in a WR; the QP allows {}",
                wr.sgl().len(),
                q.init.max_send_sge
            )));
        }
        let imm = matches!(wr.op(), SendOp::SendWithImm(_) | SendOp::WriteWithImm(..));
        if imm && !caps.contains(anyverbs::Caps::IMMEDIATE_DATA) {
            return Err(MockError::Unsupported("immediate data"));
        }
        if wr.total_length() > u64::from(q.max_msg_size) {
            return Err(MockError::BadArgument(format!(
                "a {}-byte message; the device allows {}",
                wr.total_length(),
                q.max_msg_size
            )));
        }
        let is_read = matches!(wr.op(), SendOp::Read(_));
        if wr.flags.contains(SendFlags::INLINE) {
            if is_read {
                return Err(MockError::BadArgument(
                    "an RDMA READ cannot be inline".into(),
                ));
            }
            if wr.total_length() > u64::from(q.init.max_inline_data) {
                return Err(MockError::BadArgument(format!(
                    "{} bytes of inline data; the QP allows {}",
                    wr.total_length(),
                    q.init.max_inline_data
                )));
            }
        }
        for (i, sge) in wr.sgl().iter().enumerate() {
            self.resolve_local(q.pd, sge, is_read)
                .map_err(|m| MockError::BadArgument(format!("SGE {i}: {m}")))?;
        }
        if wr.flags.contains(SendFlags::INLINE) {
            return Ok(Some(
                self.gather(q.pd, wr.sgl())
                    .map_err(MockError::BadArgument)?,
            ));
        }
        Ok(None)
    }

    /// Posts send WRs for the ULP: each is admitted to the ledger, then posted to the device
    /// under its token.
    pub(crate) fn post_send(
        &mut self,
        qpn: u32,
        wrs: &[SendWr],
        caps: anyverbs::Caps,
    ) -> Result<(), PostError> {
        let mut result = Ok(());
        for (i, wr) in wrs.iter().enumerate() {
            if let Err(e) = self.admit_and_post_send(qpn, wr, caps) {
                result = Err(PostError::new(i, e));
                break;
            }
        }
        if self.qps.contains_key(&qpn) {
            self.run_sq(qpn, Instant::now());
        }
        result
    }

    fn admit_and_post_send(
        &mut self,
        qpn: u32,
        wr: &SendWr,
        caps: anyverbs::Caps,
    ) -> anyverbs::Result<()> {
        self.through_ledger(
            qpn,
            |ledger| ledger.admit_send(wr),
            |st, token| st.device_post_send(qpn, token.wr_id(), wr, caps),
        )
    }

    /// Admits one WR to the QP's ledger and posts it to the device under its token: a WR the
    /// device refuses is withdrawn, one posted in ERROR is doomed (it can never succeed, so it
    /// is never retired silently).
    fn through_ledger(
        &mut self,
        qpn: u32,
        admit: impl FnOnce(&mut Ledger) -> anyverbs::Result<Token>,
        post: impl FnOnce(&mut Self, Token) -> MockResult<()>,
    ) -> anyverbs::Result<()> {
        let q = self.qp_mut(qpn)?;
        let in_error = q.state == QpState::Error;
        let token = admit(&mut q.ledger)?;
        match post(self, token) {
            Ok(()) => {
                if in_error {
                    self.qp_mut(qpn)?.ledger.doom(token);
                }
                Ok(())
            }
            Err(e) => {
                self.qp_mut(qpn)?.ledger.withdraw(token);
                Err(e.into())
            }
        }
    }

    /// The device's post of `wr` under the provider's token `wr_id`.
    fn device_post_send(
        &mut self,
        qpn: u32,
        wr_id: u64,
        wr: &SendWr,
        caps: anyverbs::Caps,
    ) -> MockResult<()> {
        let q = self.qp(qpn)?;
        if !q.model.can_post_send(q.state) {
            return Err(MockError::PostState {
                queue: "send",
                state: q.state,
            });
        }
        let inline = self.validate_send(q, caps, wr)?;
        if q.state == QpState::Error {
            let opcode = wr.completion_opcode();
            return self.post_in_error(qpn, WorkQueue::Send, wr_id, opcode);
        }
        if q.sq.len() + q.unsignaled_done as usize >= q.init.max_send_wr as usize {
            return Err(MockError::QueueFull {
                queue: "send",
                depth: q.init.max_send_wr,
            });
        }
        self.qp_mut(qpn)?.sq.push_back(SendEntry {
            wr: DeviceSend::new(wr_id, wr),
            inline,
            stall: None,
        });
        Ok(())
    }

    pub(crate) fn post_recv(&mut self, qpn: u32, wrs: &[RecvWr]) -> Result<(), PostError> {
        let mut result = Ok(());
        for (i, wr) in wrs.iter().enumerate() {
            if let Err(e) = self.admit_and_post_recv(qpn, wr) {
                result = Err(PostError::new(i, e));
                break;
            }
        }
        // A peer stalled on RNR may go on now.
        if let Some(peer) = self.qps.get(&qpn).and_then(|q| q.peer)
            && self.stalled.contains(&peer)
        {
            self.run_sq(peer, Instant::now());
        }
        result
    }

    fn admit_and_post_recv(&mut self, qpn: u32, wr: &RecvWr) -> anyverbs::Result<()> {
        self.through_ledger(
            qpn,
            |ledger| ledger.admit_recv(wr),
            |st, token| st.device_post_recv(qpn, token.wr_id(), wr),
        )
    }

    /// The device's post of `wr` under the provider's token `wr_id`.
    fn device_post_recv(&mut self, qpn: u32, wr_id: u64, wr: &RecvWr) -> MockResult<()> {
        let q = self.qp(qpn)?;
        if !q.model.can_post_recv(q.state) {
            return Err(MockError::PostState {
                queue: "receive",
                state: q.state,
            });
        }
        if wr.sgl().len() > q.init.max_recv_sge as usize {
            return Err(MockError::BadArgument(format!(
                "{} SGEs in a WR; the QP allows {}",
                wr.sgl().len(),
                q.init.max_recv_sge
            )));
        }
        for (i, sge) in wr.sgl().iter().enumerate() {
            self.resolve_local(q.pd, sge, true)
                .map_err(|m| MockError::BadArgument(format!("SGE {i}: {m}")))?;
        }
        if q.state == QpState::Error {
            return self.post_in_error(qpn, WorkQueue::Recv, wr_id, WcOpcode::Recv);
        }
        if q.rq.len() >= q.init.max_recv_wr as usize {
            return Err(MockError::QueueFull {
                queue: "receive",
                depth: q.init.max_recv_wr,
            });
        }
        self.qp_mut(qpn)?.rq.push_back(DeviceRecv::new(wr_id, wr));
        Ok(())
    }

    // ----- the engine -----

    /// Retries every stalled send queue; true if anything changed.
    pub(crate) fn progress(&mut self, now: Instant) -> bool {
        let lifecycle = self.lifecycle(now);
        let fired = self.fire_delayed(now) || lifecycle;
        let failed = self.fail_overflowed_cqs() || fired;
        if self.stalled.is_empty() {
            return failed;
        }
        let before: Vec<u32> = self.stalled.iter().copied().collect();
        let mut changed = failed;
        for qpn in before {
            let len = self.qps.get(&qpn).map_or(0, |q| q.sq.len());
            self.run_sq(qpn, now);
            changed |= self.qps.get(&qpn).map_or(0, |q| q.sq.len()) != len;
        }
        changed
    }

    /// The earliest retry deadline of a stalled WR or due time of a delayed completion.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.stalled
            .iter()
            .filter_map(|q| self.qps.get(q))
            .filter(|q| self.working(q.device))
            .filter_map(|q| q.sq.front()?.stall?.fail_at)
            .chain(
                self.delayed
                    .iter()
                    .filter(|d| !self.held_by_stall(d))
                    .map(|d| d.due),
            )
            .min()
    }

    /// Executes send WRs from the head of the queue while they can execute.
    fn run_sq(&mut self, qpn: u32, now: Instant) {
        loop {
            let Some(q) = self.qps.get(&qpn) else {
                self.stalled.remove(&qpn);
                return;
            };
            if q.personality == Personality::Dead {
                // Nothing ever executes on a dead device.
                return;
            }
            let inc = self.inc(q.device);
            if !inc.working() {
                // Nothing executes on a lost device; a stalled one is retried (from `progress`)
                // until it resumes.
                if inc.stalled && !q.sq.is_empty() {
                    self.stalled.insert(qpn);
                } else {
                    self.stalled.remove(&qpn);
                }
                return;
            }
            // In SQD the WR in progress (a head already stalled on a retry) still finishes or
            // fails; WRs that have not started wait for the return to RTS.
            let in_progress = q.sq.front().is_some_and(|e| e.stall.is_some());
            let may_run = q.state == QpState::ReadyToSend
                || (q.state == QpState::SendQueueDrained && in_progress);
            if !may_run || q.sq.is_empty() {
                self.stalled.remove(&qpn);
                return;
            }
            if !self.execute_head(qpn, now) {
                self.stalled.insert(qpn);
                return;
            }
        }
    }

    /// Marks the head WR stalled (keeping the first stall's deadline); fails it if the deadline
    /// passed. Returns false (the head did not complete) unless it failed.
    fn stall(&mut self, qpn: u32, kind: StallKind, now: Instant) -> bool {
        let (rnr_timer, ack_timeout) = (self.rnr_timer, self.ack_timeout);
        let q = self.qps.get_mut(&qpn).expect("present");
        let params = q.params.clone();
        let head = q.sq.front_mut().expect("non-empty");
        let stall = match head.stall {
            Some(s) if s.kind == kind => s,
            _ => {
                let fail_at = match kind {
                    StallKind::Rnr if params.rnr_retry_count >= RNR_RETRY_FOREVER => None,
                    StallKind::Rnr => Some(now + rnr_timer * u32::from(params.rnr_retry_count)),
                    StallKind::NoAck => {
                        Some(now + ack_timeout * (u32::from(params.retry_count) + 1))
                    }
                };
                let s = Stall { kind, fail_at };
                head.stall = Some(s);
                // Nobody may be calling when a cut connection fails: make sure it fails on time
                // (and reports it) anyway.
                if q.peer_lost
                    && let Some(t) = fail_at
                {
                    self.timers.push(t);
                }
                s
            }
        };
        match stall.fail_at {
            Some(t) if now >= t => {
                let status = match kind {
                    StallKind::Rnr => WcStatus::RnrRetryExceeded,
                    StallKind::NoAck => WcStatus::TransportRetryExceeded,
                };
                self.fail_head(qpn, status);
                if kind == StallKind::NoAck {
                    self.report_disconnect(qpn);
                }
                true
            }
            _ => false,
        }
    }

    /// Publishes `Disconnected` once for a QP whose cut connection just failed it.
    fn report_disconnect(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn)
            && q.peer_lost
            && !q.disconnect_reported
        {
            q.disconnect_reported = true;
            let device = q.device;
            self.publish(device, DeviceEvent::Disconnected { qp_num: qpn });
        }
    }

    /// Completes the head WR with an error status and moves the QP to ERROR.
    fn fail_head(&mut self, qpn: u32, status: WcStatus) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let Some(e) = q.sq.pop_front() else {
            debug_assert!(false, "fail_head on an empty send queue");
            return;
        };
        let cq = q.send_cq;
        self.push_cqe(
            cq,
            Completion {
                wr_id: e.wr.wr_id,
                status,
                opcode: e.wr.op.completion_opcode(),
                qp_num: qpn,
                ..Completion::default()
            },
        );
        self.enter_error(qpn);
    }

    /// Completes the head WR successfully.
    fn complete_head(&mut self, qpn: u32, byte_len: u32) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let Some(e) = q.sq.pop_front() else {
            debug_assert!(false, "complete_head on an empty send queue");
            return;
        };
        if !e.wr.flags.contains(SendFlags::SIGNALED) {
            q.unsignaled_done += 1;
        } else {
            q.unsignaled_done = 0;
            let cq = q.send_cq;
            self.push_cqe(
                cq,
                Completion {
                    wr_id: e.wr.wr_id,
                    status: WcStatus::Success,
                    opcode: e.wr.op.completion_opcode(),
                    byte_len,
                    qp_num: qpn,
                    ..Completion::default()
                },
            );
        }
    }

    /// A responder-side error: the responder's QP goes to ERROR.
    fn responder_error(&mut self, peer: u32) {
        if self
            .qps
            .get(&peer)
            .is_some_and(|q| q.state != QpState::Error)
        {
            self.enter_error(peer);
        }
    }

    /// Tries to execute the head WR. True if it completed (in success or error).
    fn execute_head(&mut self, qpn: u32, now: Instant) -> bool {
        let q = &self.qps[&qpn];
        let head = q.sq.front().expect("non-empty");
        let (op, pd) = (head.wr.op, q.pd);
        // A cut connection, or a peer on a lost or stalled device: no ACK comes back.
        let peer = q.peer.filter(|p| {
            !q.peer_lost
                && self.qps.get(p).is_some_and(|pq| {
                    pq.peer == Some(qpn)
                        && self.inc(pq.device).working()
                        && matches!(
                            pq.state,
                            QpState::ReadyToReceive
                                | QpState::ReadyToSend
                                | QpState::SendQueueDrained
                                | QpState::SendQueueError
                        )
                })
        });
        let Some(peer) = peer else {
            return self.stall(qpn, StallKind::NoAck, now);
        };
        let needs_recv = matches!(
            op,
            SendOp::Send | SendOp::SendWithImm(_) | SendOp::WriteWithImm(..)
        );
        if needs_recv && self.qps[&peer].rq.is_empty() {
            if self.qps[&qpn].model == StateModel::Iwarp {
                // iWARP has no RNR: the responder sends a TERMINATE ("untagged buffer not
                // available", RFC 5041) and the connection and both QPs go to ERROR.
                self.fail_head(qpn, WcStatus::RemoteOperationError);
                self.responder_error(peer);
                return true;
            }
            return self.stall(qpn, StallKind::Rnr, now);
        }
        let head = &self.qps[&qpn].sq.front().expect("non-empty");
        let local = head.wr.sgl.clone();
        let payload = match (&head.inline, op) {
            (_, SendOp::Read(_)) => None,
            (Some(data), _) => Some(Ok(data.clone())),
            (None, _) => Some(self.gather(pd, &local)),
        };
        let data = match payload {
            Some(Ok(d)) => d,
            Some(Err(_)) => {
                // The region was deregistered after the post.
                self.fail_head(qpn, WcStatus::LocalProtectionError);
                return true;
            }
            None => Vec::new(),
        };
        let peer_pd = self.qps[&peer].pd;
        match op {
            SendOp::Send | SendOp::SendWithImm(_) => {
                let imm = match op {
                    SendOp::SendWithImm(i) => Some(i),
                    _ => None,
                };
                self.deliver_recv(qpn, peer, &data, imm, WcOpcode::Recv, true);
                true
            }
            SendOp::Write(ra) | SendOp::WriteWithImm(ra, _) => {
                if !data.is_empty() {
                    match self.resolve_remote(
                        peer_pd,
                        ra.addr,
                        ra.rkey,
                        data.len() as u64,
                        Access::REMOTE_WRITE,
                    ) {
                        Some((lkey, off)) => {
                            let mr = self.mrs.get_mut(&lkey).expect("resolved");
                            mr.buf[off..off + data.len()].copy_from_slice(&data);
                        }
                        None => {
                            self.fail_head(qpn, WcStatus::RemoteAccessError);
                            self.responder_error(peer);
                            return true;
                        }
                    }
                }
                match op {
                    SendOp::WriteWithImm(_, imm) => self.deliver_recv(
                        qpn,
                        peer,
                        &[],
                        Some(imm),
                        WcOpcode::RecvRdmaWithImm,
                        false,
                    ),
                    _ => self.complete_head(qpn, data.len() as u32),
                }
                true
            }
            SendOp::Read(_) if local.iter().all(|s| s.length == 0) => {
                // A zero-length READ touches no remote memory, so the rkey is not checked.
                self.complete_head(qpn, 0);
                true
            }
            SendOp::Read(ra) => {
                let len = total_length(&local);
                let Some((lkey, off)) =
                    self.resolve_remote(peer_pd, ra.addr, ra.rkey, len, Access::REMOTE_READ)
                else {
                    self.fail_head(qpn, WcStatus::RemoteAccessError);
                    self.responder_error(peer);
                    return true;
                };
                let remote = self.mrs[&lkey].buf[off..off + len as usize].to_vec();
                if self.scatter(pd, &local, &remote).is_err() {
                    self.fail_head(qpn, WcStatus::LocalProtectionError);
                    return true;
                }
                self.complete_head(qpn, len as u32);
                true
            }
        }
    }

    /// Consumes the peer's next receive for an incoming SEND (`data` lands in its buffers) or
    /// WRITE with immediate (`carries_data` false: the data went to the RDMA target).
    fn deliver_recv(
        &mut self,
        qpn: u32,
        peer: u32,
        data: &[u8],
        imm: Option<u32>,
        opcode: WcOpcode,
        carries_data: bool,
    ) {
        let pq = self.qps.get_mut(&peer).expect("present");
        let recv = pq.rq.pop_front().expect("checked non-empty");
        let (peer_pd, peer_rcq) = (pq.pd, pq.recv_cq);
        let sent_len = self.qps[&qpn]
            .sq
            .front()
            .map_or(0, |e| e.wr.total_length() as u32);
        let mut recv_completion = Completion {
            wr_id: recv.wr_id,
            status: WcStatus::Success,
            opcode,
            byte_len: sent_len,
            qp_num: peer,
            ..Completion::default()
        };
        recv_completion.set_imm(imm);
        if carries_data {
            let failure = if data.len() as u64 > recv.total_length() {
                Some((WcStatus::LocalLengthError, WcStatus::RemoteInvalidRequest))
            } else if self.scatter(peer_pd, &recv.sgl, data).is_err() {
                Some((
                    WcStatus::LocalProtectionError,
                    WcStatus::RemoteOperationError,
                ))
            } else {
                None
            };
            if let Some((responder_status, requester_status)) = failure {
                // The responder's receive completes in error first; then the requester's WR
                // fails (on iWARP that tears the connection down and flushes the peer too); then
                // the responder's QP goes to ERROR if it is not there yet.
                recv_completion.status = responder_status;
                recv_completion.byte_len = 0;
                self.push_cqe(peer_rcq, recv_completion);
                self.fail_head(qpn, requester_status);
                self.responder_error(peer);
                return;
            }
        }
        self.push_cqe(peer_rcq, recv_completion);
        self.complete_head(qpn, sent_len);
    }

    // ----- drain: the provider's primitives (see `MockQp::drain`) -----

    pub(crate) fn begin_drain(&mut self, qpn: u32) -> MockResult<DrainStart> {
        Ok(self.qp_mut(qpn)?.ledger.begin_drain())
    }

    pub(crate) fn interrupt_drain(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.ledger.interrupt_drain();
        }
    }

    /// Ends the drain; returns the WRs outstanding when it started and how many were
    /// synthesized.
    pub(crate) fn finish_drain(&mut self, qpn: u32) -> MockResult<(usize, usize)> {
        Ok(self.qp_mut(qpn)?.ledger.finish_drain())
    }

    /// Moves the device's QP to ERROR, through INIT from RESET as the hardware requires.
    pub(crate) fn drain_enter_error(&mut self, qpn: u32) -> MockResult<()> {
        let q = self.qp_mut(qpn)?;
        if q.state == QpState::Reset {
            q.state = QpState::Init;
        }
        self.enter_error(qpn);
        Ok(())
    }

    /// Arms a marker on `queue` and posts it to the device: a signaled zero-length RDMA WRITE
    /// (it touches no remote memory) or a receive without SGEs.
    pub(crate) fn drain_post_marker(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        caps: anyverbs::Caps,
    ) -> MockResult<bool> {
        let Some(token) = self.qp_mut(qpn)?.ledger.arm_marker(queue) else {
            return Ok(false);
        };
        match queue {
            WorkQueue::Send => {
                let marker = SendWr::new(
                    token.wr_id(),
                    SendOp::Write(RemoteAddr { addr: 0, rkey: 0 }),
                    &[],
                );
                self.device_post_send(qpn, token.wr_id(), &marker, caps)?;
                self.run_sq(qpn, Instant::now());
            }
            WorkQueue::Recv => {
                self.device_post_recv(qpn, token.wr_id(), &RecvWr::new(token.wr_id(), &[]))?;
            }
        }
        Ok(true)
    }

    /// Arms a marker that lives only in the provider.
    pub(crate) fn drain_arm_flush_marker(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
    ) -> MockResult<bool> {
        Ok(self.qp_mut(qpn)?.ledger.arm_marker(queue).is_some())
    }

    /// Whether what the drain waits for holds.
    pub(crate) fn drain_condition(&self, qpn: u32, what: WaitFor) -> MockResult<bool> {
        let q = self.qp(qpn)?;
        Ok(match what {
            WaitFor::Marker(queue) => !q.ledger.marker_pending(queue),
            WaitFor::DeviceIdle(queue) => self.busy(qpn, queue) == 0,
        })
    }

    fn cq_of(q: &QpRec, queue: WorkQueue) -> u32 {
        match queue {
            WorkQueue::Send => q.send_cq,
            WorkQueue::Recv => q.recv_cq,
        }
    }

    /// Runs `f` on the QP's ledger and delivers the completions it writes to `queue`'s CQ.
    fn deliver_from_ledger(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        f: impl FnOnce(&mut Ledger, &mut Vec<Completion>) -> usize,
    ) -> MockResult<()> {
        let q = self.qp_mut(qpn)?;
        let mut out = Vec::new();
        f(&mut q.ledger, &mut out);
        let cq = Self::cq_of(q, queue);
        self.push_resolved_all(cq, out);
        Ok(())
    }

    /// Settles `queue` in the ledger and delivers what it synthesized.
    pub(crate) fn drain_settle(&mut self, qpn: u32, queue: WorkQueue) -> MockResult<()> {
        self.deliver_from_ledger(qpn, queue, |l, out| l.settle(queue, out))
    }

    /// Synthesizes and delivers a flush for everything still outstanding.
    pub(crate) fn drain_synthesize(&mut self, qpn: u32) -> MockResult<()> {
        for queue in WorkQueue::BOTH {
            self.deliver_from_ledger(qpn, queue, |l, out| l.synthesize(queue, out))?;
        }
        Ok(())
    }

    /// Destroys the QP in the device, keeping the provider's record: the device forgets every
    /// WR (no completion), drops pending flushes, and the connection goes down as it does when
    /// a QP is destroyed.
    pub(crate) fn stop_device_qp(&mut self, qpn: u32) -> MockResult<()> {
        self.qp(qpn)?;
        self.abandon_connect(qpn);
        self.delayed.retain(|d| d.completion.qp_num != qpn);
        self.stalled.remove(&qpn);
        let q = self.qp_mut(qpn)?;
        q.state = QpState::Error;
        q.sq.clear();
        q.rq.clear();
        q.parked.clear();
        q.held.clear();
        q.unsignaled_done = 0;
        let (model, peer) = (q.model, q.peer.take().filter(|_| !q.peer_lost));
        // On iWARP the connection is a TCP stream and goes down with the QP; on InfiniBand the
        // peer notices only when it sends.
        if let Some(peer) = peer
            && model == StateModel::Iwarp
        {
            if let Some(p) = self.qps.get_mut(&peer) {
                p.peer = None;
            }
            self.enter_error(peer);
        }
        Ok(())
    }

    // ----- connection manager -----

    /// The present device that owns `ip`.
    fn device_of_ip(&self, ip: IpAddr) -> Option<u32> {
        self.slots
            .iter()
            .find(|s| s.config.address == ip)
            .and_then(|s| s.present())
    }

    pub(crate) fn listen(&mut self, device: u32, addr: SocketAddr) -> MockResult<SocketAddr> {
        let config = &self.slots[self.inc(device).slot].config;
        let own = config.address;
        if !addr.ip().is_unspecified() && addr.ip() != own {
            return Err(MockError::BadArgument(format!(
                "{} is not an address of device {}",
                addr.ip(),
                config.name
            )));
        }
        let mut bound = SocketAddr::new(own, addr.port());
        if bound.port() == 0 {
            loop {
                bound.set_port(self.alloc_port());
                if !self.listeners.contains_key(&bound) {
                    break;
                }
            }
        }
        if self.listeners.contains_key(&bound) {
            return Err(MockError::AddressInUse(bound));
        }
        self.listeners.insert(
            bound,
            ListenerRec {
                device,
                queue: VecDeque::new(),
            },
        );
        self.inc_mut(device).live.listeners += 1;
        Ok(bound)
    }

    pub(crate) fn close_listener(&mut self, addr: SocketAddr) {
        if let Some(l) = self.listeners.remove(&addr) {
            self.inc_mut(l.device).live.listeners -= 1;
            for id in l.queue {
                self.refuse(id, Refusal::Rejected);
            }
        }
    }

    fn refuse(&mut self, request: u64, why: Refusal) {
        if let Some(r) = self.requests.remove(&request)
            && let Some(q) = self.qps.get_mut(&r.client)
        {
            q.conn = Conn::Refused(why);
        }
    }

    pub(crate) fn connect(
        &mut self,
        qpn: u32,
        remote: SocketAddr,
        params: &ConnParams,
    ) -> MockResult<()> {
        check_params(params, MAX_CONNECT_PRIVATE_DATA)?;
        let q = self.qp(qpn)?;
        if !matches!(q.conn, Conn::Idle) || !is_fresh(q) {
            return Err(MockError::WrongState(format!(
                "connect needs a fresh, unconnected QP; this one is in {}",
                q.state
            )));
        }
        // An InfiniBand device cannot reach an iWARP one: they share no wire protocol. An absent
        // device cannot be reached at all.
        let device = q.device;
        let own = &self.slots[self.inc(device).slot].config;
        let (own_model, own_address) = (own.state_model(), own.address);
        match self.device_of_ip(remote.ip()) {
            Some(d) if self.inc(d).info.state_model == own_model => {}
            _ => return Err(MockError::NoRoute(remote.ip())),
        }
        let local = SocketAddr::new(own_address, self.alloc_port());
        let conn = if self.listeners.contains_key(&remote) {
            let id = self.next_request;
            self.next_request += 1;
            self.requests.insert(
                id,
                RequestRec {
                    listener: remote,
                    client: qpn,
                    client_device: device,
                    client_addr: local,
                    private_data: params.private_data.clone(),
                },
            );
            self.listeners
                .get_mut(&remote)
                .expect("checked")
                .queue
                .push_back(id);
            Conn::Connecting { request: id }
        } else {
            // As with rdma_cm, the refusal arrives asynchronously.
            Conn::Refused(Refusal::NotListening(remote))
        };
        let q = self.qp_mut(qpn)?;
        q.conn = conn;
        q.params = params.clone();
        q.local_addr = Some(local);
        Ok(())
    }

    pub(crate) fn next_request(
        &mut self,
        listener: SocketAddr,
    ) -> Option<MockResult<ConnectRequest>> {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return Some(Err(MockError::Destroyed("listener")));
        };
        while let Some(id) = l.queue.pop_front() {
            if let Some(r) = self.requests.get(&id) {
                return Some(Ok(ConnectRequest {
                    id,
                    peer: r.client_addr,
                    private_data: r.private_data.clone(),
                }));
            }
        }
        None
    }

    pub(crate) fn accept(
        &mut self,
        listener: SocketAddr,
        request: u64,
        server: u32,
        params: &ConnParams,
    ) -> MockResult<()> {
        check_params(params, MAX_ACCEPT_PRIVATE_DATA)?;
        let l = self
            .listeners
            .get(&listener)
            .ok_or(MockError::Destroyed("listener"))?;
        let r = self
            .requests
            .get(&request)
            .filter(|r| r.listener == listener)
            .ok_or(MockError::NoSuchRequest(request))?;
        let s = self.qp(server)?;
        if s.device != l.device {
            return Err(MockError::BadArgument(
                "the QP belongs to another device than the listener".into(),
            ));
        }
        if !matches!(s.conn, Conn::Idle) || !is_fresh(s) {
            return Err(MockError::WrongState(format!(
                "accept needs a fresh, unconnected QP; this one is in {}",
                s.state
            )));
        }
        let client = r.client;
        let client_addr = r.client_addr;
        let client_private = r.private_data.clone();
        let client_waits = self
            .qps
            .get(&client)
            .is_some_and(|c| matches!(c.conn, Conn::Connecting { request: id } if id == request));
        if !client_waits {
            self.requests.remove(&request);
            return Err(MockError::BadArgument(format!(
                "the requester of request {request} went away"
            )));
        }
        // Check both connect paths before changing anything, so a refused accept leaves both
        // QPs as they were.
        for qpn in [server, client] {
            let q = &self.qps[&qpn];
            let mut state = q.state;
            for &next in q.model.connect_path() {
                if state != next {
                    q.model
                        .check(state, next, Cause::Connection)
                        .map_err(MockError::Transition)?;
                    state = next;
                }
            }
        }
        self.requests.remove(&request);
        for (qpn, peer) in [(server, client), (client, server)] {
            let q = self.qps.get_mut(&qpn).expect("checked above");
            q.state = QpState::ReadyToSend;
            q.peer = Some(peer);
        }
        let s = self.qps.get_mut(&server).expect("present");
        s.params = params.clone();
        s.local_addr = Some(listener);
        s.conn = Conn::Established(Connection {
            peer: client_addr,
            peer_qp_num: client,
            private_data: client_private,
        });
        let c = self.qps.get_mut(&client).expect("present");
        c.conn = Conn::Established(Connection {
            peer: listener,
            peer_qp_num: server,
            private_data: params.private_data.clone(),
        });
        Ok(())
    }

    pub(crate) fn reject(&mut self, listener: SocketAddr, request: u64) -> MockResult<()> {
        match self.requests.get(&request) {
            Some(r) if r.listener == listener => {
                self.refuse(request, Refusal::Rejected);
                Ok(())
            }
            _ => Err(MockError::NoSuchRequest(request)),
        }
    }

    pub(crate) fn connection(&mut self, qpn: u32) -> Option<MockResult<Connection>> {
        let q = match self.qp(qpn) {
            Ok(q) => q,
            Err(e) => return Some(Err(e)),
        };
        match &q.conn {
            Conn::Idle => Some(Err(MockError::WrongState(
                "connect was not called on this QP".into(),
            ))),
            Conn::Connecting { .. } => None,
            Conn::Established(c) => Some(Ok(c.clone())),
            Conn::Refused(Refusal::NotListening(a)) => Some(Err(MockError::NotListening(*a))),
            Conn::Refused(Refusal::Rejected) => Some(Err(MockError::Rejected)),
            Conn::Refused(Refusal::Abandoned) => Some(Err(MockError::WrongState(
                "the connection attempt was abandoned: the QP was moved to ERROR or RESET".into(),
            ))),
            Conn::Refused(Refusal::Unreachable(a)) => Some(Err(MockError::NoRoute(a.ip()))),
        }
    }
}

fn check_params(params: &ConnParams, max_private: usize) -> MockResult<()> {
    if params.private_data.len() > max_private {
        return Err(MockError::BadArgument(format!(
            "{} bytes of private data; at most {max_private} fit",
            params.private_data.len()
        )));
    }
    if params.retry_count > 7 || params.rnr_retry_count > 7 {
        return Err(MockError::BadArgument(
            "retry counts are 3-bit values (0..=7)".into(),
        ));
    }
    Ok(())
}

/// Whether a QP is still in its initial state (or INIT on InfiniBand) and may be connected.
fn is_fresh(q: &QpRec) -> bool {
    q.state == q.model.initial() || q.state == QpState::Init
}
