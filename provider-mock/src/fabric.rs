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
//! While a completion channel exists, a ULP may sleep in `poll(2)` on its fd without calling
//! the fabric, so each progress step also arms a timer for the next time-bound change (a retry
//! deadline, a delayed completion's due time): see [`channels`].
//!
//! Device lifecycle (incarnations, loss and return, injected faults) lives in [`lifecycle`];
//! the engine consults it where a device may not work: a lost or stalled device executes and
//! completes nothing, and a QP whose connection was cut gets no ACKs.
//!
//! This module holds the fabric, its lock and the records of every object; the [`State`]'s
//! operations are split by concept: [`resources`] (PDs, MRs, CQs), [`qp`] (QPs, their states
//! and flushes), [`engine`] (posting and executing WRs), [`express`] (the common SEND in one
//! pass), [`drain`] (the drain's primitives) and [`cm`] (the connection manager); a region's
//! bytes — the fabric's memory or a caller's — are reached only through [`memory`]. QPs, regions
//! and CQs are kept in [`table`]s indexed by the numbers the device hands out.

pub(crate) mod channels;
mod cm;
#[cfg(test)]
mod differential;
mod drain;
mod engine;
mod express;
mod faults;
pub(crate) mod lifecycle;
pub(crate) mod memory;
mod qp;
mod resources;
mod table;

use std::collections::{BTreeSet, VecDeque};

/// The fabric's other tables, keyed by numbers the mock hands out itself (or by addresses): a
/// fast non-cryptographic hash; SipHash was close to half of a data-path round.
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyverbs::drain::WorkQueue;
use anyverbs::{
    Access, Completion, ConnParams, Connection, EventHub, MonitorEvent, QpInit, QpState, SendFlags,
    SendOp, Sge, StateModel, WcOpcode, WcStatus,
};

use crate::config::{FabricConfig, Personality};
use crate::error::{MockError, MockResult};
use lifecycle::{Incarnation, Shutdown, Slot};
use table::{KEY_SLOT_BITS, QPN_SLOT_BITS, Table};

/// The largest QP number: they are 24 bits (0 and 1, InfiniBand's SMI and GSI, are never
/// handed out: numbers start at 2^16).
const MAX_QPN: u32 = 0x00ff_ffff;
/// The largest lkey: rkeys are lkeys with the top bit set, so the two never collide.
const MAX_LKEY: u32 = 0x7fff_ffff;

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
                channels: HashMap::default(),
                next_channel: 1,
                progress_at: None,
                pds: HashMap::default(),
                mrs: Table::new(MAX_LKEY),
                rkeys: HashMap::default(),
                cqs: Table::new(u32::MAX),
                qps: Table::new(MAX_QPN),
                listeners: HashMap::default(),
                requests: HashMap::default(),
                stalled: BTreeSet::new(),
                next_pd: 1,
                pending_cq_errors: Vec::new(),
                next_request: 1,
                next_port: *EPHEMERAL_PORTS.start(),
                delayed: Vec::new(),
                waiters: 0,
                payload: Vec::new(),
                rnr_timer: config.rnr_timer,
                ack_timeout: config.ack_timeout,
                flush_delay: config.flush_delay,
                #[cfg(test)]
                express: true,
                #[cfg(test)]
                express_taken: 0,
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
        st.step();
        st.schedule_progress();
        if st.waiters > 0 {
            self.cond.notify_all();
        }
        if st.timers.is_empty() {
            return out;
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
            st.schedule_progress();
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
}

struct MrRec {
    device: u32,
    pd: u32,
    /// The region's bytes: the fabric's own, or a caller's.
    mem: memory::Memory,
    addr: u64,
    access: Access,
    rkey: u32,
}

/// A CQ's ring: raw completions, with the provider's tokens as `wr_id`s.
struct CqRec {
    device: u32,
    /// The depth the ULP asked for.
    capacity: u32,
    /// Extra slots the provider reserved (the drain's markers): the ring holds
    /// `capacity + reserved`.
    reserved: u32,
    entries: VecDeque<Completion>,
    overflowed: bool,
    /// A wake the provider asked for that no wait has consumed yet.
    wake_pending: bool,
    users: u32,
    dropped: bool,
    /// The completion channel it was created on (the mock's number), and its core to fire.
    channel: Option<(u32, Arc<channels::ChannelCore>)>,
    /// Armed ([`State::arm_cq`]): the next completion that qualifies fires the channel.
    armed: Option<channels::Arm>,
}

/// Why a connection attempt failed.
#[derive(Clone)]
enum Refusal {
    NotListening(SocketAddr),
    /// With the reject's private data, as the requester receives it.
    Rejected(Vec<u8>),
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

/// A WR's scatter list as the simulated device holds it: one SGE in place (the common case,
/// which keeps queue entries small), more on the heap.
type DeviceSgl = smallvec::SmallVec<[Sge; 1]>;

/// A send WR as the simulated device holds it: its own copy (a posted WR only borrows its
/// scatter list), under the provider's token.
struct DeviceSend {
    wr_id: u64,
    op: SendOp,
    sgl: DeviceSgl,
    flags: SendFlags,
}

/// A posted send WR decoded once, under the provider's token `wr_id`.
#[derive(Clone, Copy)]
struct DeviceSendRef<'a> {
    wr_id: u64,
    op: SendOp,
    sgl: &'a [Sge],
    flags: SendFlags,
}

impl DeviceSend {
    fn new(wr: &DeviceSendRef<'_>) -> Self {
        DeviceSend {
            wr_id: wr.wr_id,
            op: wr.op,
            sgl: DeviceSgl::from_slice(wr.sgl),
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
    sgl: DeviceSgl,
}

impl DeviceRecv {
    fn new(wr_id: u64, sgl: &[Sge]) -> Self {
        DeviceRecv {
            wr_id,
            sgl: DeviceSgl::from_slice(sgl),
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

/// A QP as the simulated device sees it. Its WRs carry the provider's tokens as `wr_id`s; what
/// they mean is the kit's business.
struct QpRec {
    device: u32,
    pd: u32,
    send_cq: u32,
    recv_cq: u32,
    /// The device's queue sizes: the ULP's, plus one slot per queue for the drain's marker
    /// ([`anyverbs::kit::device_init`]).
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
    peer: Option<u32>,
    conn: Conn,
    /// The parameters this side connected or accepted with (its timers are used from here).
    params: ConnParams,
    /// RDMA READs this QP may have outstanding as the requester, once connected: the smaller
    /// of its initiator depth and the peer's responder resources (0 fails its READs).
    read_credits: u8,
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
    /// The requester's initiator depth and responder resources.
    initiator_depth: u8,
    responder_resources: u8,
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
    /// Completion channels, by the mock's own numbers.
    channels: HashMap<u32, channels::ChannelRec>,
    next_channel: u32,
    /// When the progress timer armed for a channel's sake fires (see [`channels`]).
    progress_at: Option<Instant>,
    pds: HashMap<u32, PdRec>,
    mrs: Table<MrRec, KEY_SLOT_BITS>,
    rkeys: HashMap<u32, u32>,
    cqs: Table<CqRec, KEY_SLOT_BITS>,
    qps: Table<QpRec, QPN_SLOT_BITS>,
    listeners: HashMap<SocketAddr, ListenerRec>,
    requests: HashMap<u64, RequestRec>,
    /// QPs whose send-queue head is waiting for a retry.
    stalled: BTreeSet<u32>,
    next_pd: u32,
    /// CQs that overflowed since the last progress step: their QPs go to ERROR.
    pending_cq_errors: Vec<u32>,
    next_request: u64,
    next_port: u16,
    /// Completions the devices deliver later, in the order they were produced.
    delayed: Vec<Delayed>,
    waiters: usize,
    /// The buffer a SEND's or WRITE's payload passes through (reused: no allocation per
    /// message).
    payload: Vec<u8>,
    rnr_timer: Duration,
    ack_timeout: Duration,
    flush_delay: Duration,
    /// Whether [`State::run_sq`] tries the express path (tests compare it with the general one).
    #[cfg(test)]
    express: bool,
    /// How many WRs the express path executed.
    #[cfg(test)]
    express_taken: usize,
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
