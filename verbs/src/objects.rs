//! The verbs objects a provider builds on: protection domain, memory region, completion channel,
//! completion queue and RC queue pair — sideway's objects, owned so that a child keeps its parent
//! alive (a QP its CQs and PD, everything its device context), with the calls sideway lacks.
//!
//! Destruction order is therefore always legal: nothing can be destroyed while a child still
//! uses it, so the destroy calls sideway makes in `Drop` (which assert success) cannot fail with
//! `EBUSY`. A device context closes when its last object is dropped, which is what lets the
//! kernel finish deleting a removed device.

use std::alloc::Layout;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyverbs::{Error, ErrorKind, PostError};
use rdma_mummy_sys::{ibv_comp_channel, ibv_cq, ibv_qp};
use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::completion::{
    CompletionChannel as SwChannel, CompletionQueue as _, GenericCompletionQueue,
};
use sideway::ibverbs::device_context::DeviceContext;
use sideway::ibverbs::memory_region::MemoryRegion as SwMr;
use sideway::ibverbs::protection_domain::ProtectionDomain as SwPd;
use sideway::ibverbs::queue_pair::{
    GenericQueuePair, QueuePair as _, QueuePairAttribute, QueuePairAttributeMask, QueuePairState,
    QueuePairType,
};

use crate::error::{call_failed, io_failed, last_errno, sideway_failed};
use crate::raw::data_path::{self, RawCompletion, RecvWr, SendWr};

/// A protection domain.
#[derive(Clone)]
pub struct Pd {
    pub(crate) inner: Arc<SwPd>,
}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pd").finish_non_exhaustive()
    }
}

impl Pd {
    /// Allocates a protection domain on `context`.
    pub fn alloc(context: &Arc<DeviceContext>) -> Result<Pd, Error> {
        let inner = context
            .alloc_pd()
            .map_err(|e| sideway_failed("ibv_alloc_pd", &e))?;
        Ok(Pd { inner })
    }
}

/// Access rights of a memory region (`IBV_ACCESS_*`). Local read is always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    /// The device may write the region for this process (receives, READ results).
    pub local_write: bool,
    /// A peer may RDMA WRITE into the region.
    pub remote_write: bool,
    /// A peer may RDMA READ from the region.
    pub remote_read: bool,
    /// A peer may run atomics on the region.
    pub remote_atomic: bool,
}

impl Access {
    /// Every right.
    pub const ALL: Access = Access {
        local_write: true,
        remote_write: true,
        remote_read: true,
        remote_atomic: true,
    };

    pub(crate) fn flags(self) -> AccessFlags {
        let mut flags = AccessFlags::none();
        if self.local_write {
            flags |= AccessFlags::LocalWrite;
        }
        if self.remote_write {
            flags |= AccessFlags::RemoteWrite;
        }
        if self.remote_read {
            flags |= AccessFlags::RemoteRead;
        }
        if self.remote_atomic {
            flags |= AccessFlags::RemoteAtomic;
        }
        flags
    }
}

/// Page-aligned, zeroed memory owned by a [`Mr`].
struct Buffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `Mr::alloc` with exactly this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A memory region over memory it allocated and owns: nothing outside can free or move it while
/// the device may use it.
///
/// The device reads and writes the memory by DMA, outside Rust's memory model; the process
/// touches it only by copying ([`read`](Mr::read), [`write`](Mr::write)), never through a
/// reference, so no Rust reference ever aliases memory the device writes. Writing takes
/// `&mut self`, so two threads of the process can never write, or write and read, the bytes at
/// once.
pub struct Mr {
    // Field order matters: the registration is dropped (ibv_dereg_mr) before the memory is freed.
    inner: Arc<SwMr>,
    /// The memory, when the region owns it ([`Mr::alloc`]); `None` for the caller's memory
    /// ([`Mr::register`]).
    _buffer: Option<Buffer>,
    /// The first byte.
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
    _pd: Pd,
}

impl std::fmt::Debug for Mr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mr")
            .field("addr", &self.addr())
            .field("len", &self.len)
            .field("lkey", &self.lkey())
            .field("rkey", &self.rkey())
            .finish()
    }
}

// SAFETY: the buffer is owned memory reached only through copies; sideway's MR is Send + Sync.
unsafe impl Send for Mr {}
// SAFETY: shared references only read (copy out); writing takes `&mut self`, so the process never
// races itself on the bytes. The device's DMA is outside the Rust memory model.
unsafe impl Sync for Mr {}

impl Mr {
    /// Allocates `len` zeroed bytes (page-aligned) and registers them with `access`.
    pub fn alloc(pd: &Pd, len: usize, access: Access) -> Result<Mr, Error> {
        if len == 0 {
            return Err(Error::invalid_argument(
                "a memory region needs at least one byte",
            ));
        }
        let layout = Layout::from_size_align(len, 4096).map_err(|_| {
            Error::invalid_argument(format!("a region of {len} bytes is too large"))
        })?;
        // SAFETY: the layout's size is non-zero.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or_else(|| {
            Error::new(ErrorKind::ResourceExhausted, "out of memory for a region")
        })?;
        let buffer = Buffer { ptr, layout };
        // SAFETY: `buffer` is valid for `len` bytes and lives as long as the registration: both
        // are fields of the Mr, and the registration is dropped first.
        let inner = unsafe { pd.inner.reg_mr(ptr.as_ptr() as usize, len, access.flags()) }
            .map_err(|e| sideway_failed("ibv_reg_mr", &e))?;
        Ok(Mr {
            inner,
            _buffer: Some(buffer),
            ptr,
            len,
            access,
            _pd: pd.clone(),
        })
    }

    /// Registers `len` bytes of the caller's memory at `addr` with `access` (`ibv_reg_mr`).
    ///
    /// # Safety
    /// The memory must stay valid, allocated and in place until the region is dropped, and the
    /// caller must not touch it through references while the device may read or write it.
    pub unsafe fn register(
        pd: &Pd,
        addr: NonNull<u8>,
        len: usize,
        access: Access,
    ) -> Result<Mr, Error> {
        if len == 0 {
            return Err(Error::invalid_argument(
                "a memory region needs at least one byte",
            ));
        }
        // SAFETY: the caller guarantees the memory for the life of the registration.
        let inner = unsafe { pd.inner.reg_mr(addr.as_ptr() as usize, len, access.flags()) }
            .map_err(|e| sideway_failed("ibv_reg_mr", &e))?;
        Ok(Mr {
            inner,
            _buffer: None,
            ptr: addr,
            len,
            access,
            _pd: pd.clone(),
        })
    }

    /// The virtual address of the first byte (what SGEs and peers use).
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The first byte, in this process's address space.
    pub fn host_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The local key.
    pub fn lkey(&self) -> u32 {
        self.inner.lkey()
    }

    /// The remote key.
    pub fn rkey(&self) -> u32 {
        self.inner.rkey()
    }

    /// The access rights it was registered with.
    pub fn access(&self) -> Access {
        self.access
    }

    /// An SGE for `len` bytes at `offset`, checked against the region's bounds.
    pub fn sge(&self, offset: usize, len: u32) -> Result<data_path::Sge, Error> {
        self.check(offset, len as usize)?;
        Ok(data_path::Sge {
            addr: self.addr() + offset as u64,
            length: len,
            lkey: self.lkey(),
        })
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::invalid_argument(format!(
                "bytes {offset}..+{len} lie outside the region of {} bytes",
                self.len
            ))),
        }
    }

    /// Copies `out.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Error> {
        self.check(offset, out.len())?;
        // SAFETY: bounds checked above; the buffer is live; `out` cannot overlap it (it is a
        // Rust reference, and no reference to the buffer is ever handed out).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), Error> {
        self.check(offset, data.len())?;
        // SAFETY: as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
        Ok(())
    }
}

/// A completion channel: a file descriptor that becomes readable when an armed CQ of it gets a
/// completion (`ibv_create_comp_channel`). Every event read is acknowledged at once, so
/// destroying a CQ never waits for an unacknowledged event.
#[derive(Clone)]
pub struct CompletionChannel {
    inner: Arc<SwChannel>,
}

impl std::fmt::Debug for CompletionChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionChannel")
            .field("fd", &self.fd())
            .finish()
    }
}

impl CompletionChannel {
    /// Creates a channel on `context`, its fd non-blocking.
    pub fn create(context: &Arc<DeviceContext>) -> Result<CompletionChannel, Error> {
        let inner = context
            .create_comp_channel()
            .map_err(|e| sideway_failed("ibv_create_comp_channel", &e))?;
        inner
            .set_nonblocking(true)
            .map_err(|e| io_failed("fcntl(O_NONBLOCK) on a completion channel", e))?;
        Ok(CompletionChannel { inner })
    }

    fn raw(&self) -> NonNull<ibv_comp_channel> {
        // SAFETY: the channel is owned by `inner`, alive as long as self.
        unsafe { self.inner.comp_channel() }
    }

    /// The file descriptor, readable while an event waits.
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live; fd is a plain field.
        unsafe { self.raw().as_ref().fd }
    }

    /// The file descriptor, borrowed.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open as long as the channel, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.fd()) }
    }

    /// Takes the next event — the key of the CQ that fired — waiting until `deadline`;
    /// `Ok(None)` when the deadline passed. The CQ is disarmed until [`Cq::arm`] again.
    pub fn next_event(&self, deadline: Instant) -> Result<Option<usize>, Error> {
        let mut rewait = crate::wait::Rewait::new();
        loop {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: the channel is live and its fd non-blocking; valid out-pointers.
            let rc =
                unsafe { rdma_mummy_sys::ibv_get_cq_event(self.raw().as_ptr(), &mut cq, &mut ctx) };
            if rc == 0 && !cq.is_null() {
                // SAFETY: the CQ the event names is live until the event is acknowledged
                // (ibv_destroy_cq waits for it); acknowledged once, here.
                unsafe { rdma_mummy_sys::ibv_ack_cq_events(cq, 1) };
                return Ok(Some(cq as usize));
            }
            let errno = last_errno();
            if errno != libc::EAGAIN && errno != libc::EINTR {
                return Err(call_failed("ibv_get_cq_event", errno));
            }
            if !rewait.wait(self.fd(), deadline)? {
                return Ok(None);
            }
        }
    }
}

/// Which CQ verbs the device accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqKind {
    /// `ibv_create_cq_ex` (where the device has the extended verbs).
    Extended,
    /// `ibv_create_cq` (the device refused the extended call: siw answers `EOPNOTSUPP`).
    Basic,
}

/// A completion queue.
pub struct Cq {
    inner: GenericCompletionQueue,
    kind: CqKind,
    capacity: u32,
    channel: Option<CompletionChannel>,
    /// One poller at a time: `ibv_poll_cq` on one CQ from two threads at once is not safe on
    /// every driver.
    poller: Mutex<()>,
}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cq")
            .field("kind", &self.kind)
            .field("capacity", &self.capacity)
            .field("key", &self.key())
            .finish()
    }
}

impl Cq {
    /// Creates a CQ of at least `depth` entries, with the extended verbs where the device answers
    /// them and the basic ones where it refuses (decided by its answer, never its name).
    pub fn create(
        context: &Arc<DeviceContext>,
        depth: u32,
        channel: Option<&CompletionChannel>,
    ) -> Result<Cq, Error> {
        if depth == 0 {
            return Err(Error::invalid_argument("a CQ needs at least one entry"));
        }
        let mut builder = context.create_cq_builder();
        builder.setup_cqe(depth);
        if let Some(channel) = channel {
            builder.setup_comp_channel(&channel.inner, 0);
        }
        let (inner, kind) = match builder.build_ex() {
            Ok(cq) => (GenericCompletionQueue::from(cq), CqKind::Extended),
            Err(e) => match crate::error::errno_of(&e) {
                libc::EOPNOTSUPP | libc::ENOSYS | libc::EPROTONOSUPPORT => {
                    let cq = builder
                        .build()
                        .map_err(|e| sideway_failed("ibv_create_cq", &e))?;
                    (GenericCompletionQueue::from(cq), CqKind::Basic)
                }
                errno => return Err(call_failed("ibv_create_cq_ex", errno)),
            },
        };
        // SAFETY: the CQ is live (owned by `inner`); `cqe` is the capacity the driver granted.
        let capacity = unsafe { inner.cq().as_ref().cqe }.max(0) as u32;
        Ok(Cq {
            inner,
            kind,
            capacity,
            channel: channel.cloned(),
            poller: Mutex::new(()),
        })
    }

    fn raw(&self) -> NonNull<ibv_cq> {
        // SAFETY: owned by `inner` (for an extended CQ, ibv_cq_ex begins with the ibv_cq fields:
        // rdma-core's ibv_cq_ex_to_cq is this cast).
        unsafe { self.inner.cq() }
    }

    /// The `ibv_cq` itself, for code that calls rdma-core directly (a benchmark's raw-verbs
    /// baseline). Valid while this `Cq` lives; poll it from one thread at a time, and not while
    /// [`poll`](Cq::poll) runs.
    pub fn as_ptr(&self) -> NonNull<ibv_cq> {
        self.raw()
    }

    /// Which verbs created it.
    pub fn kind(&self) -> CqKind {
        self.kind
    }

    /// The entries the driver granted (at least the depth asked for).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The CQ's key: the address of its `ibv_cq`, as async events and completion channels name
    /// it.
    pub fn key(&self) -> usize {
        self.raw().as_ptr() as usize
    }

    /// Polls up to `max` completions into `out`; returns how many.
    pub fn poll(&self, max: usize, out: &mut Vec<RawCompletion>) -> Result<usize, Error> {
        let _one_poller = self.poller.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the CQ is live, and the lock means no other thread polls it now.
        unsafe { data_path::poll_cq(self.raw(), max, out) }
    }

    /// Arms the CQ (`ibv_req_notify_cq`): its channel fires at the next completion (with
    /// `solicited_only`, the next solicited or failed one). Arm, then poll again before waiting:
    /// a completion that arrived before the arm does not fire the channel.
    pub fn arm(&self, solicited_only: bool) -> Result<(), Error> {
        if self.channel.is_none() {
            return Err(Error::invalid_state("the CQ has no completion channel"));
        }
        // SAFETY: the CQ is live.
        let rc = unsafe {
            rdma_mummy_sys::ibv_req_notify_cq(self.raw().as_ptr(), solicited_only as i32)
        };
        if rc != 0 {
            // The errno itself, or -1 with it in errno, as posts do.
            let errno = if rc < 0 { last_errno() } else { rc };
            return Err(call_failed("ibv_req_notify_cq", errno));
        }
        Ok(())
    }
}

/// What a QP can hold: asked for at creation, and what the driver granted (at least as much).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpCaps {
    /// Send WRs outstanding at once.
    pub max_send_wr: u32,
    /// Receive WRs outstanding at once.
    pub max_recv_wr: u32,
    /// SGEs per send WR.
    pub max_send_sge: u32,
    /// SGEs per receive WR.
    pub max_recv_sge: u32,
    /// Bytes a send may carry inline.
    pub max_inline_data: u32,
}

/// A QP state, as `ibv_qp_state` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// RESET.
    Reset,
    /// INIT.
    Init,
    /// RTR (InfiniBand/RoCE only).
    Rtr,
    /// RTS.
    Rts,
    /// SQD (on iWARP: CLOSING).
    Sqd,
    /// SQE.
    Sqe,
    /// ERROR.
    Error,
}

impl QpState {
    fn sideway(self) -> QueuePairState {
        match self {
            QpState::Reset => QueuePairState::Reset,
            QpState::Init => QueuePairState::Init,
            QpState::Rtr => QueuePairState::ReadyToReceive,
            QpState::Rts => QueuePairState::ReadyToSend,
            QpState::Sqd => QueuePairState::SendQueueDrain,
            QpState::Sqe => QueuePairState::SendQueueError,
            QpState::Error => QueuePairState::Error,
        }
    }

    /// The `ibv_qp_state` number.
    pub fn number(self) -> u32 {
        self.sideway() as u32
    }
}

/// An RC queue pair.
///
/// Its state is tracked here, from the moves this process made and succeeded — libibverbs'
/// cached state never sees the kernel's own moves (the CM moving an iWARP QP to RTS, a transport
/// error moving any QP to ERROR), and siw's `ibv_query_qp` always answers RESET. What the kernel
/// did on its own arrives as events; the provider above records it with
/// [`Qp::record_state`].
pub struct Qp {
    inner: GenericQueuePair,
    qp_num: u32,
    caps: QpCaps,
    state: QpState,
    send_cq: usize,
    recv_cq: usize,
    _cqs: (Arc<Cq>, Arc<Cq>),
}

impl std::fmt::Debug for Qp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qp")
            .field("qp_num", &self.qp_num)
            .field("state", &self.state)
            .field("caps", &self.caps)
            .finish()
    }
}

impl Qp {
    /// Creates an RC QP on `pd` with `send_cq` and `recv_cq` (which may be the same CQ) and at
    /// least `caps`; [`caps`](Qp::caps) says what was granted.
    pub fn create_rc(
        pd: &Pd,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        caps: QpCaps,
    ) -> Result<Qp, Error> {
        let mut builder = pd.inner.create_qp_builder();
        builder
            .setup_qp_type(QueuePairType::ReliableConnection)
            .setup_max_send_wr(caps.max_send_wr)
            .setup_max_recv_wr(caps.max_recv_wr)
            .setup_max_send_sge(caps.max_send_sge)
            .setup_max_recv_sge(caps.max_recv_sge)
            .setup_max_inline_data(caps.max_inline_data)
            .setup_send_cq(send_cq.inner.clone())
            .setup_recv_cq(recv_cq.inner.clone());
        let inner = GenericQueuePair::from(
            builder
                .build()
                .map_err(|e| sideway_failed("ibv_create_qp", &e))?,
        );
        let qp_num = inner.qp_number();
        let granted = inner
            .query(QueuePairAttributeMask::Capabilities)
            .map(|(_, init)| QpCaps {
                max_send_wr: init.max_send_wr(),
                max_recv_wr: init.max_recv_wr(),
                max_send_sge: init.max_send_sge(),
                max_recv_sge: init.max_recv_sge(),
                max_inline_data: init.max_inline_data(),
            })
            .ok()
            .filter(|g| g.max_send_wr >= caps.max_send_wr && g.max_recv_wr >= caps.max_recv_wr)
            .unwrap_or(caps);
        Ok(Qp {
            inner,
            qp_num,
            caps: granted,
            state: QpState::Reset,
            send_cq: send_cq.key(),
            recv_cq: recv_cq.key(),
            _cqs: (send_cq.clone(), recv_cq.clone()),
        })
    }

    fn raw(&self) -> NonNull<ibv_qp> {
        // SAFETY: the QP is owned by `inner` and alive as long as self.
        unsafe { self.inner.qp() }
    }

    /// The QP number.
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// The `ibv_qp` itself, for code that calls rdma-core directly (a benchmark's raw-verbs
    /// baseline). Valid while this `Qp` lives; state moves made through it are not tracked.
    pub fn as_ptr(&self) -> NonNull<ibv_qp> {
        self.raw()
    }

    /// What the driver granted (`ibv_query_qp`'s capabilities; what was asked where the driver
    /// does not answer).
    pub fn caps(&self) -> QpCaps {
        self.caps
    }

    /// The state, as tracked by this process.
    pub fn state(&self) -> QpState {
        self.state
    }

    /// The state the kernel reports (`ibv_query_qp`), recorded as the tracked one. siw answers
    /// RESET whatever the state is: use [`state`](Qp::state) on devices whose query does not say.
    pub fn query_state(&mut self) -> Result<QpState, Error> {
        let (attr, _) = self
            .inner
            .query(QueuePairAttributeMask::State)
            .map_err(|e| sideway_failed(&format!("ibv_query_qp(QP {})", self.qp_num), &e))?;
        let state = match attr.state() {
            QueuePairState::Reset => QpState::Reset,
            QueuePairState::Init => QpState::Init,
            QueuePairState::ReadyToReceive => QpState::Rtr,
            QueuePairState::ReadyToSend => QpState::Rts,
            QueuePairState::SendQueueDrain => QpState::Sqd,
            QueuePairState::SendQueueError => QpState::Sqe,
            _ => QpState::Error,
        };
        self.state = state;
        Ok(state)
    }

    /// Records a state the kernel moved the QP to on its own (an iWARP connect to RTS, a fatal
    /// error to ERROR).
    pub fn record_state(&mut self, state: QpState) {
        self.state = state;
    }

    /// The keys of its send and receive CQs.
    pub fn cq_keys(&self) -> (usize, usize) {
        (self.send_cq, self.recv_cq)
    }

    /// Moves the QP to INIT on `port` with the remote `access` rights its peer may use.
    pub fn to_init(&mut self, port: u8, access: crate::objects::Access) -> Result<(), Error> {
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(port)
            .setup_access_flags(access.flags());
        self.modify(&attr, QpState::Init)
    }

    /// Moves the QP to a state that needs no further attributes: RTS from SQD, SQD, ERROR,
    /// RESET.
    pub fn to_state(&mut self, state: QpState) -> Result<(), Error> {
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(state.sideway());
        self.modify(&attr, state)
    }

    /// Moves the QP to `state` with the attributes the CM computed for its connection
    /// (`rdma_init_qp_attr`): INIT on either transport, RTR and RTS on InfiniBand/RoCE only.
    pub fn to_state_with(
        &mut self,
        state: QpState,
        attr: &rdma_mummy_sys::ibv_qp_attr,
        mask: i32,
    ) -> Result<(), Error> {
        let attr = QueuePairAttribute::from(attr, mask);
        self.modify(&attr, state)
    }

    fn modify(&mut self, attr: &QueuePairAttribute, state: QpState) -> Result<(), Error> {
        self.inner.modify(attr).map_err(|e| {
            sideway_failed(
                &format!("ibv_modify_qp(QP {} to {state:?})", self.qp_num),
                &e,
            )
        })?;
        self.state = state;
        Ok(())
    }

    /// Posts send WRs as one batch; on failure says how many were posted.
    ///
    /// # Safety
    /// The memory every non-inline SGE addresses must be registered with its lkey and stay
    /// valid, and untouched by anything else, until the WR's completion is polled or the QP is
    /// destroyed (the device reads or writes it meanwhile).
    pub unsafe fn post_send(&self, wrs: &[SendWr<'_>]) -> Result<(), PostError> {
        // SAFETY: the QP is live; the memory is the caller's contract.
        unsafe { data_path::post_send(self.raw(), wrs) }
    }

    /// Posts receive WRs as one batch; on failure says how many were posted.
    ///
    /// # Safety
    /// As for [`post_send`](Qp::post_send): the memory is written by the device until the
    /// WR completes.
    pub unsafe fn post_recv(&self, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
        // SAFETY: the QP is live; the memory is the caller's contract.
        unsafe { data_path::post_recv(self.raw(), wrs) }
    }
}
