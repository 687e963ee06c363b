//! Work requests (what a ULP posts) and completions (what it polls).
//!
//! [`SendWr`], [`RecvWr`], [`Completion`] and [`Sge`] have a fixed `#[repr(C)]` layout, so they
//! cross the plugin ABI without being converted: a WR borrows its scatter list (as `ibv_send_wr` points to its `ibv_sge` array), and
//! a [`Completion`] is written by a loaded plugin straight into the caller's buffer. [`Sge`] has
//! the layout of `struct ibv_sge`. [`SgList`] is an owned scatter list for code that keeps one.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use bitflags::bitflags;
use smallvec::SmallVec;

use crate::caps::Caps;
use crate::error::{Error, Result};

/// How many SGEs a [`SgList`] holds before it allocates.
pub const INLINE_SGES: usize = 4;

/// An owned scatter/gather list, for code that keeps one (a WR only borrows its list).
pub type SgList = SmallVec<[Sge; INLINE_SGES]>;

/// One scatter/gather entry: `length` bytes at virtual address `addr` inside the memory region
/// whose local key is `lkey`. The layout of `struct ibv_sge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct Sge {
    /// Start address, inside the region (`MemoryRegion::addr() + offset`).
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Local key of the region.
    pub lkey: u32,
}

/// Total bytes of a scatter list.
fn total_length(sgl: &[Sge]) -> u64 {
    sgl.iter().map(|s| u64::from(s.length)).sum()
}

/// Where an RDMA operation lands on the remote side: an address inside a remote region and that
/// region's remote key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RemoteAddr {
    /// Remote virtual address.
    pub addr: u64,
    /// Remote key of the remote region.
    pub rkey: u32,
}

/// The operation of a send-queue work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOp {
    /// SEND: consumes one receive WR at the peer.
    Send,
    /// SEND with 32 bits of immediate data, delivered in the peer's receive completion.
    SendWithImm(u32),
    /// RDMA WRITE into remote memory; the peer sees no completion.
    Write(RemoteAddr),
    /// RDMA WRITE plus immediate data; consumes one receive WR at the peer.
    WriteWithImm(RemoteAddr, u32),
    /// RDMA READ from remote memory into the local scatter list.
    Read(RemoteAddr),
    /// Atomic compare-and-swap (`IBV_WR_ATOMIC_CMP_AND_SWP`) of the 64-bit value at `remote`:
    /// if it equals `compare` it becomes `swap`. The value found there before is written to the
    /// local scatter list either way, which must be exactly one SGE of 8 bytes
    /// ([`ATOMIC_LEN`]); `remote.addr` must be 8-byte aligned, and the remote region registered
    /// with [`Access::REMOTE_ATOMIC`](crate::Access::REMOTE_ATOMIC). Needs
    /// [`Caps::ATOMICS`]; values are in host byte order.
    CompareSwap {
        /// The 64-bit target.
        remote: RemoteAddr,
        /// The value the target must hold for the swap to happen.
        compare: u64,
        /// The value the target takes if it held `compare`.
        swap: u64,
    },
    /// Atomic fetch-and-add (`IBV_WR_ATOMIC_FETCH_AND_ADD`): adds `add` to the 64-bit value at
    /// `remote` (wrapping at 2^64) and writes the value found there before to the local scatter
    /// list. The rules of [`CompareSwap`](Self::CompareSwap) apply.
    FetchAdd {
        /// The 64-bit target.
        remote: RemoteAddr,
        /// What is added to it.
        add: u64,
    },
}

/// The length of an atomic operation's operand and of its local scatter list: 8 bytes. The
/// remote address of an atomic must be aligned to it.
pub const ATOMIC_LEN: u32 = 8;

impl SendOp {
    /// The completion opcode this operation produces on the requester.
    pub const fn completion_opcode(self) -> WcOpcode {
        match self {
            SendOp::Send | SendOp::SendWithImm(_) => WcOpcode::Send,
            SendOp::Write(_) | SendOp::WriteWithImm(..) => WcOpcode::RdmaWrite,
            SendOp::Read(_) => WcOpcode::RdmaRead,
            SendOp::CompareSwap { .. } => WcOpcode::CompareSwap,
            SendOp::FetchAdd { .. } => WcOpcode::FetchAdd,
        }
    }

    /// Whether this is an atomic operation ([`CompareSwap`](Self::CompareSwap) or
    /// [`FetchAdd`](Self::FetchAdd)).
    pub const fn is_atomic(self) -> bool {
        matches!(self, SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. })
    }

    /// Whether the device writes the local scatter list (RDMA READ and the atomics): its
    /// region needs [`Access::LOCAL_WRITE`](crate::Access::LOCAL_WRITE).
    pub const fn writes_local(self) -> bool {
        matches!(
            self,
            SendOp::Read(_) | SendOp::CompareSwap { .. } | SendOp::FetchAdd { .. }
        )
    }
}

/// How a [`SendWr`] stores its [`SendOp`]: the operation's code, operands beside it. The values
/// are the plugin ABI's opcodes; 0 is not an operation, so a zeroed WR is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(crate) enum OpCode {
    Send = 1,
    SendWithImm = 2,
    Write = 3,
    WriteWithImm = 4,
    Read = 5,
    CompareSwap = 6,
    FetchAdd = 7,
}

impl OpCode {
    /// The codes that are an [`OpCode`]: the plugin ABI checks a WR's against these before it
    /// treats the WR as a [`SendWr`].
    pub(crate) const CODES: std::ops::RangeInclusive<u32> =
        OpCode::Send as u32..=OpCode::FetchAdd as u32;
}

bitflags! {
    /// Flags of a send WR.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct SendFlags: u32 {
        /// Produce a completion on success too (errors always produce one).
        const SIGNALED = 1 << 0;
        /// Wait for earlier RDMA READs and atomics to finish before starting.
        const FENCE = 1 << 1;
        /// Ask the peer to raise a solicited event.
        const SOLICITED = 1 << 2;
        /// Copy the data into the WR at post time. On hardware the lkeys are then not checked;
        /// the mock still requires the SGEs to name a registered region.
        const INLINE = 1 << 3;
    }
}

/// A WR's scatter list: borrowed (a pointer and a count, with the lifetime of the slice), or a
/// single SGE held in the WR itself (a null pointer and a count of 1), so that a WR of one
/// buffer needs nothing to outlive it.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct SgRef<'a> {
    ptr: *const Sge,
    len: usize,
    one: Sge,
    _borrow: PhantomData<&'a [Sge]>,
}

impl<'a> SgRef<'a> {
    const fn borrowed(sgl: &'a [Sge]) -> Self {
        SgRef {
            ptr: sgl.as_ptr(),
            len: sgl.len(),
            one: Sge {
                addr: 0,
                length: 0,
                lkey: 0,
            },
            _borrow: PhantomData,
        }
    }

    const fn single(sge: Sge) -> Self {
        SgRef {
            ptr: std::ptr::null(),
            len: 1,
            one: sge,
            _borrow: PhantomData,
        }
    }

    // The scatter list's borrowed form is shared with the plugin ABI, which lays WRs out in C.
    #[allow(unsafe_code)]
    fn get(&self) -> &[Sge] {
        if self.len == 0 {
            &[]
        } else if self.ptr.is_null() {
            // Built by `single`, or checked by the plugin ABI: a null pointer comes with a
            // count of exactly 1.
            std::slice::from_ref(&self.one)
        } else {
            // SAFETY: built from a `&'a [Sge]` (`borrowed`), or by the plugin ABI from a WR
            // whose pointer it checked to be aligned and which its caller guarantees points to
            // `len` readable SGEs for the call, the lifetime of the WR it hands out.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// The plugin ABI reads a WR's scatter list as pointer, count and inline SGE, in this order
/// (see `plugin::abi`), and a cleared completion buffer as default completions.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(SgRef<'static>, ptr) == 0);
    assert!(offset_of!(SgRef<'static>, len) == size_of::<usize>());
    assert!(offset_of!(SgRef<'static>, one) == 2 * size_of::<usize>());
    assert!(WcStatus::Success as u32 == 0 && WcOpcode::Send as u32 == 0);
    assert!(WcFlags::empty().bits() == 0);
};

// SAFETY: an `SgRef` is a shared borrow of `[Sge]` or an `Sge` (plain data), both `Send` and
// `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for SgRef<'_> {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for SgRef<'_> {}

/// A send-queue work request. It borrows its scatter list, which need only live until the post
/// returns: posting copies what the device needs, as verbs does. A WR of a single SGE
/// ([`single`](Self::single)) holds it and borrows nothing.
///
/// `#[repr(C)]`, with the layout of the plugin ABI's send WR: a batch crosses into a plugin as
/// it is.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct SendWr<'a> {
    /// The ULP's identifier, returned in the completion.
    pub wr_id: u64,
    pub(crate) sgl: SgRef<'a>,
    pub(crate) remote_addr: u64,
    pub(crate) rkey: u32,
    pub(crate) imm_data: u32,
    pub(crate) opcode: OpCode,
    /// Flags.
    pub flags: SendFlags,
    /// The compare value of a compare-and-swap, the addend of a fetch-and-add (as verbs'
    /// `wr.atomic.compare_add`).
    pub(crate) compare_add: u64,
    /// The swap value of a compare-and-swap.
    pub(crate) swap: u64,
}

impl<'a> SendWr<'a> {
    /// A signaled SEND of `sgl`.
    pub const fn send(wr_id: u64, sgl: &'a [Sge]) -> Self {
        Self::new(wr_id, SendOp::Send, sgl)
    }

    /// A signaled WR of any operation; `sgl` is the local memory: source of SEND and WRITE,
    /// destination of READ.
    pub const fn new(wr_id: u64, op: SendOp, sgl: &'a [Sge]) -> Self {
        Self::with_sgl(wr_id, op, SgRef::borrowed(sgl))
    }

    /// A signaled WR of any operation on the one SGE `sge`, which the WR holds.
    pub const fn single(wr_id: u64, op: SendOp, sge: Sge) -> SendWr<'static> {
        SendWr::with_sgl(wr_id, op, SgRef::single(sge))
    }

    /// A signaled atomic compare-and-swap ([`SendOp::CompareSwap`]) of the 64-bit value at
    /// `remote`; the value found there lands in `local`, an SGE of 8 bytes.
    pub const fn compare_swap(
        wr_id: u64,
        local: Sge,
        remote: RemoteAddr,
        compare: u64,
        swap: u64,
    ) -> SendWr<'static> {
        SendWr::single(
            wr_id,
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            },
            local,
        )
    }

    /// A signaled atomic fetch-and-add ([`SendOp::FetchAdd`]) of `add` to the 64-bit value at
    /// `remote`; the value found there lands in `local`, an SGE of 8 bytes.
    pub const fn fetch_add(
        wr_id: u64,
        local: Sge,
        remote: RemoteAddr,
        add: u64,
    ) -> SendWr<'static> {
        SendWr::single(wr_id, SendOp::FetchAdd { remote, add }, local)
    }

    const fn with_sgl(wr_id: u64, op: SendOp, sgl: SgRef<'a>) -> Self {
        let none = RemoteAddr { addr: 0, rkey: 0 };
        let (opcode, remote, imm_data, compare_add, swap) = match op {
            SendOp::Send => (OpCode::Send, none, 0, 0, 0),
            SendOp::SendWithImm(imm) => (OpCode::SendWithImm, none, imm, 0, 0),
            SendOp::Write(r) => (OpCode::Write, r, 0, 0, 0),
            SendOp::WriteWithImm(r, imm) => (OpCode::WriteWithImm, r, imm, 0, 0),
            SendOp::Read(r) => (OpCode::Read, r, 0, 0, 0),
            SendOp::CompareSwap {
                remote,
                compare,
                swap,
            } => (OpCode::CompareSwap, remote, 0, compare, swap),
            SendOp::FetchAdd { remote, add } => (OpCode::FetchAdd, remote, 0, add, 0),
        };
        SendWr {
            wr_id,
            sgl,
            remote_addr: remote.addr,
            rkey: remote.rkey,
            imm_data,
            opcode,
            flags: SendFlags::SIGNALED,
            compare_add,
            swap,
        }
    }

    /// The same WR with other flags.
    pub const fn with_flags(mut self, flags: SendFlags) -> Self {
        self.flags = flags;
        self
    }

    /// What to do.
    pub const fn op(&self) -> SendOp {
        let remote = RemoteAddr {
            addr: self.remote_addr,
            rkey: self.rkey,
        };
        match self.opcode {
            OpCode::Send => SendOp::Send,
            OpCode::SendWithImm => SendOp::SendWithImm(self.imm_data),
            OpCode::Write => SendOp::Write(remote),
            OpCode::WriteWithImm => SendOp::WriteWithImm(remote, self.imm_data),
            OpCode::Read => SendOp::Read(remote),
            OpCode::CompareSwap => SendOp::CompareSwap {
                remote,
                compare: self.compare_add,
                swap: self.swap,
            },
            OpCode::FetchAdd => SendOp::FetchAdd {
                remote,
                add: self.compare_add,
            },
        }
    }

    /// Whether this is an atomic WR ([`SendOp::is_atomic`]), without decoding it.
    #[inline]
    pub const fn is_atomic(&self) -> bool {
        matches!(self.opcode, OpCode::CompareSwap | OpCode::FetchAdd)
    }

    /// Checks what can be checked of the WR before it is posted to a device with `caps`, as
    /// every device must: an atomic on a device without [`Caps::ATOMICS`] fails with
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported); an atomic whose local
    /// scatter list is not one SGE of [`ATOMIC_LEN`] bytes, or whose remote address is not
    /// aligned to 8 bytes, with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument);
    /// so does a READ or an atomic with [`SendFlags::INLINE`] (they write their local memory).
    /// Other WRs pass. The provider kit calls it for every WR it posts, so a provider on the kit
    /// refuses these without checking them itself.
    #[inline]
    pub fn check_for(&self, caps: Caps) -> Result<()> {
        if self.is_atomic() {
            self.check_atomic(caps)
        } else if self.opcode == OpCode::Read && self.flags.contains(SendFlags::INLINE) {
            Err(Self::inline_into_local())
        } else {
            Ok(())
        }
    }

    /// A READ or an atomic writes its local memory: there is nothing to copy into the WR.
    #[cold]
    fn inline_into_local() -> Error {
        Error::invalid_argument(
            "an RDMA READ or an atomic cannot be inline: it writes its local memory",
        )
    }

    #[cold]
    #[inline(never)]
    fn check_atomic(&self, caps: Caps) -> Result<()> {
        if !caps.contains(Caps::ATOMICS) {
            return Err(Error::not_supported(
                "the device does not support atomic operations (Caps::ATOMICS)",
            ));
        }
        if self.flags.contains(SendFlags::INLINE) {
            return Err(Self::inline_into_local());
        }
        match self.sgl() {
            [sge] if sge.length == ATOMIC_LEN => {}
            sgl => {
                return Err(Error::invalid_argument(format!(
                    "an atomic WR needs exactly one local SGE of {ATOMIC_LEN} bytes, not {} SGEs \
                     of {} bytes",
                    sgl.len(),
                    total_length(sgl)
                )));
            }
        }
        if !self.remote_addr.is_multiple_of(u64::from(ATOMIC_LEN)) {
            return Err(Error::invalid_argument(format!(
                "the remote address {:#x} of an atomic WR is not 8-byte aligned",
                self.remote_addr
            )));
        }
        Ok(())
    }

    /// The completion opcode this WR produces on the requester.
    pub const fn completion_opcode(&self) -> WcOpcode {
        self.op().completion_opcode()
    }

    /// Local memory: source of SEND and WRITE, destination of READ and of an atomic's original
    /// value.
    pub fn sgl(&self) -> &[Sge] {
        self.sgl.get()
    }

    /// Total bytes described by the scatter list.
    pub fn total_length(&self) -> u64 {
        total_length(self.sgl())
    }
}

impl fmt::Debug for SendWr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendWr")
            .field("wr_id", &self.wr_id)
            .field("op", &self.op())
            .field("sgl", &self.sgl())
            .field("flags", &self.flags)
            .finish()
    }
}

impl PartialEq for SendWr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.wr_id == other.wr_id
            && self.op() == other.op()
            && self.sgl() == other.sgl()
            && self.flags == other.flags
    }
}

impl Eq for SendWr<'_> {}

impl Hash for SendWr<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.wr_id, self.op(), self.sgl(), self.flags).hash(state);
    }
}

/// A receive-queue work request. It borrows its scatter list, which need only live until the
/// post returns; a WR of a single SGE ([`single`](Self::single)) holds it.
///
/// `#[repr(C)]`, with the layout of the plugin ABI's receive WR.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct RecvWr<'a> {
    /// The ULP's identifier, returned in the completion.
    pub wr_id: u64,
    pub(crate) sgl: SgRef<'a>,
}

impl<'a> RecvWr<'a> {
    /// A receive into `sgl`.
    pub const fn new(wr_id: u64, sgl: &'a [Sge]) -> Self {
        RecvWr {
            wr_id,
            sgl: SgRef::borrowed(sgl),
        }
    }

    /// A receive into the one SGE `sge`, which the WR holds.
    pub const fn single(wr_id: u64, sge: Sge) -> RecvWr<'static> {
        RecvWr {
            wr_id,
            sgl: SgRef::single(sge),
        }
    }

    /// Where incoming data lands.
    pub fn sgl(&self) -> &[Sge] {
        self.sgl.get()
    }

    /// Total bytes the scatter list can take.
    pub fn total_length(&self) -> u64 {
        total_length(self.sgl())
    }
}

impl fmt::Debug for RecvWr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvWr")
            .field("wr_id", &self.wr_id)
            .field("sgl", &self.sgl())
            .finish()
    }
}

impl PartialEq for RecvWr<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.wr_id == other.wr_id && self.sgl() == other.sgl()
    }
}

impl Eq for RecvWr<'_> {}

impl Hash for RecvWr<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.wr_id, self.sgl()).hash(state);
    }
}

/// The status of a completion. The values are the plugin ABI's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
#[repr(u32)]
pub enum WcStatus {
    /// The WR completed successfully.
    #[default]
    Success = 0,
    /// The WR was flushed because the QP is in ERROR; it did nothing.
    WrFlushError = 1,
    /// A receive buffer was too small for the incoming message, or a length was wrong.
    LocalLengthError = 2,
    /// A QP-level consistency error on the local side.
    LocalQpOperationError = 3,
    /// A local SGE refers to memory the WR may not use (bad lkey, bounds, PD, access).
    LocalProtectionError = 4,
    /// The remote side refused access to its memory (bad rkey, bounds, access flags).
    RemoteAccessError = 5,
    /// The remote side could not complete the operation.
    RemoteOperationError = 6,
    /// The remote side considered the request invalid (e.g. its receive buffer was too small).
    RemoteInvalidRequest = 7,
    /// The peer had no receive posted, for more retries than allowed.
    RnrRetryExceeded = 8,
    /// The peer did not answer, for more retries than allowed (peer gone or in error).
    TransportRetryExceeded = 9,
    /// The device hit a fatal error.
    Fatal = 10,
    /// A provider-specific error that fits none of the above.
    General = 11,
}

impl WcStatus {
    /// True only for [`WcStatus::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, WcStatus::Success)
    }

    /// A short name for logs and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            WcStatus::Success => "success",
            WcStatus::WrFlushError => "flushed",
            WcStatus::LocalLengthError => "local length error",
            WcStatus::LocalQpOperationError => "local QP operation error",
            WcStatus::LocalProtectionError => "local protection error",
            WcStatus::RemoteAccessError => "remote access error",
            WcStatus::RemoteOperationError => "remote operation error",
            WcStatus::RemoteInvalidRequest => "remote invalid request",
            WcStatus::RnrRetryExceeded => "RNR retry exceeded",
            WcStatus::TransportRetryExceeded => "transport retry exceeded",
            WcStatus::Fatal => "fatal error",
            WcStatus::General => "general error",
        }
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a completion completes. The values are the plugin ABI's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum WcOpcode {
    /// A SEND (with or without immediate).
    #[default]
    Send = 0,
    /// An RDMA WRITE (with or without immediate), on the requester.
    RdmaWrite = 1,
    /// An RDMA READ.
    RdmaRead = 2,
    /// A receive consumed by a SEND.
    Recv = 3,
    /// A receive consumed by an RDMA WRITE with immediate.
    RecvRdmaWithImm = 4,
    /// An atomic compare-and-swap, on the requester.
    CompareSwap = 5,
    /// An atomic fetch-and-add, on the requester.
    FetchAdd = 6,
}

bitflags! {
    /// Flags of a completion (`ibv_wc_flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    #[repr(transparent)]
    pub struct WcFlags: u32 {
        /// [`Completion::imm_data`] holds immediate data.
        const WITH_IMM = 1 << 0;
    }
}

/// One completion, as written by `CompletionQueue::poll` into the caller's buffer.
///
/// For a flushed WR ([`WcStatus::WrFlushError`]) only `wr_id`, `status`, `opcode` and `qp_num`
/// are meaningful. Devices leave the opcode of a flushed WR undefined (rxe reports SEND for a
/// flushed receive); providers that keep a [`Ledger`](crate::drain::Ledger) fill in the opcode of
/// the WR that was posted.
///
/// `#[repr(C)]`, with the layout of the plugin ABI's completion: a loaded plugin polls straight
/// into the caller's buffer. All zeros is a valid completion (the default).
///
/// Two completions are equal when their meaningful fields are: `imm_data` counts only with
/// [`WcFlags::WITH_IMM`] (verbs leaves it undefined otherwise).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Completion {
    /// The `wr_id` of the WR this completes.
    pub wr_id: u64,
    /// Outcome.
    pub status: WcStatus,
    /// Operation.
    pub opcode: WcOpcode,
    /// Bytes transferred. Meaningful for receives (the incoming message's length, immediate
    /// data not counted), RDMA READ and the atomics (8); for SEND and RDMA WRITE verbs leaves it undefined
    /// (the mock reports the length), so portable code must not rely on it there.
    pub byte_len: u32,
    /// Immediate data, meaningful only with [`WcFlags::WITH_IMM`]; [`imm`](Self::imm) reads
    /// both.
    pub imm_data: u32,
    /// Flags.
    pub flags: WcFlags,
    /// Number of the QP the WR was posted to.
    pub qp_num: u32,
    /// Provider-specific detail of an error status; 0 when there is none.
    pub vendor_err: u32,
}

impl PartialEq for Completion {
    fn eq(&self, other: &Self) -> bool {
        (
            self.wr_id,
            self.status,
            self.opcode,
            self.byte_len,
            self.imm(),
            self.flags,
        ) == (
            other.wr_id,
            other.status,
            other.opcode,
            other.byte_len,
            other.imm(),
            other.flags,
        ) && (self.qp_num, self.vendor_err) == (other.qp_num, other.vendor_err)
    }
}

impl Eq for Completion {}

impl Hash for Completion {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (
            self.wr_id,
            self.status,
            self.opcode,
            self.byte_len,
            self.imm(),
            self.flags,
        )
            .hash(state);
        (self.qp_num, self.vendor_err).hash(state);
    }
}

impl Completion {
    /// The immediate data, for receives consumed by an operation that carried it.
    pub const fn imm(&self) -> Option<u32> {
        if self.flags.contains(WcFlags::WITH_IMM) {
            Some(self.imm_data)
        } else {
            None
        }
    }

    /// Sets (or with `None` clears) the immediate data and its flag.
    pub fn set_imm(&mut self, imm: Option<u32>) {
        self.flags.set(WcFlags::WITH_IMM, imm.is_some());
        self.imm_data = imm.unwrap_or(0);
    }
}
