//! Work requests (what a ULP posts) and completions (what it polls).
//!
//! All plain data: no pointers to Rust objects, no lifetimes, so they cross a C ABI unchanged in
//! meaning. A scatter/gather list holds up to [`INLINE_SGES`] entries without allocating.

use std::fmt;

use bitflags::bitflags;
use smallvec::SmallVec;

/// How many SGEs a [`SgList`] holds before it allocates.
pub const INLINE_SGES: usize = 4;

/// A scatter/gather list.
pub type SgList = SmallVec<[Sge; INLINE_SGES]>;

/// One scatter/gather entry: `length` bytes at virtual address `addr` inside the memory region
/// whose local key is `lkey`.
///
/// `#[repr(C)]`: the plugin ABI passes scatter lists as arrays of `Sge` without copying.
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
}

impl SendOp {
    /// The completion opcode this operation produces on the requester.
    pub const fn completion_opcode(self) -> WcOpcode {
        match self {
            SendOp::Send | SendOp::SendWithImm(_) => WcOpcode::Send,
            SendOp::Write(_) | SendOp::WriteWithImm(..) => WcOpcode::RdmaWrite,
            SendOp::Read(_) => WcOpcode::RdmaRead,
        }
    }
}

bitflags! {
    /// Flags of a send WR.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SendFlags: u32 {
        /// Produce a completion on success too (errors always produce one).
        const SIGNALED = 1 << 0;
        /// Wait for earlier RDMA READs to finish before starting.
        const FENCE = 1 << 1;
        /// Ask the peer to raise a solicited event.
        const SOLICITED = 1 << 2;
        /// Copy the data into the WR at post time. On hardware the lkeys are then not checked;
        /// the mock still requires the SGEs to name a registered region.
        const INLINE = 1 << 3;
    }
}

/// A send-queue work request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWr {
    /// The ULP's identifier, returned in the completion.
    pub wr_id: u64,
    /// What to do.
    pub op: SendOp,
    /// Local memory: source of SEND/WRITE, destination of READ.
    pub sgl: SgList,
    /// Flags.
    pub flags: SendFlags,
}

impl SendWr {
    /// A signaled SEND of `sgl`.
    pub fn send(wr_id: u64, sgl: &[Sge]) -> Self {
        Self::new(wr_id, SendOp::Send, sgl)
    }

    /// A signaled WR of any operation.
    pub fn new(wr_id: u64, op: SendOp, sgl: &[Sge]) -> Self {
        SendWr {
            wr_id,
            op,
            sgl: SgList::from_slice(sgl),
            flags: SendFlags::SIGNALED,
        }
    }

    /// The same WR with other flags.
    pub fn with_flags(mut self, flags: SendFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Total bytes described by the scatter list.
    pub fn total_length(&self) -> u64 {
        self.sgl.iter().map(|s| u64::from(s.length)).sum()
    }
}

/// A receive-queue work request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWr {
    /// The ULP's identifier, returned in the completion.
    pub wr_id: u64,
    /// Where incoming data lands.
    pub sgl: SgList,
}

impl RecvWr {
    /// A receive into `sgl`.
    pub fn new(wr_id: u64, sgl: &[Sge]) -> Self {
        RecvWr {
            wr_id,
            sgl: SgList::from_slice(sgl),
        }
    }

    /// Total bytes the scatter list can take.
    pub fn total_length(&self) -> u64 {
        self.sgl.iter().map(|s| u64::from(s.length)).sum()
    }
}

/// The status of a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WcStatus {
    /// The WR completed successfully.
    #[default]
    Success,
    /// The WR was flushed because the QP is in ERROR; it did nothing.
    WrFlushError,
    /// A receive buffer was too small for the incoming message, or a length was wrong.
    LocalLengthError,
    /// A QP-level consistency error on the local side.
    LocalQpOperationError,
    /// A local SGE refers to memory the WR may not use (bad lkey, bounds, PD, access).
    LocalProtectionError,
    /// The remote side refused access to its memory (bad rkey, bounds, access flags).
    RemoteAccessError,
    /// The remote side could not complete the operation.
    RemoteOperationError,
    /// The remote side considered the request invalid (e.g. its receive buffer was too small).
    RemoteInvalidRequest,
    /// The peer had no receive posted, for more retries than allowed.
    RnrRetryExceeded,
    /// The peer did not answer, for more retries than allowed (peer gone or in error).
    TransportRetryExceeded,
    /// The device hit a fatal error.
    Fatal,
    /// A provider-specific error that fits none of the above.
    General,
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

/// What a completion completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WcOpcode {
    /// A SEND (with or without immediate).
    #[default]
    Send,
    /// An RDMA WRITE (with or without immediate), on the requester.
    RdmaWrite,
    /// An RDMA READ.
    RdmaRead,
    /// A receive consumed by a SEND.
    Recv,
    /// A receive consumed by an RDMA WRITE with immediate.
    RecvRdmaWithImm,
}

/// One completion, as written by `CompletionQueue::poll` into the caller's buffer.
///
/// For a flushed WR ([`WcStatus::WrFlushError`]) only `wr_id`, `status`, `opcode` and `qp_num`
/// are meaningful. Devices leave the opcode of a flushed WR undefined (rxe reports SEND for a
/// flushed receive); providers that keep a [`Ledger`](crate::drain::Ledger) fill in the opcode of
/// the WR that was posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Completion {
    /// The `wr_id` of the WR this completes.
    pub wr_id: u64,
    /// Outcome.
    pub status: WcStatus,
    /// Operation.
    pub opcode: WcOpcode,
    /// Bytes transferred. Meaningful for receives (the incoming message's length, immediate
    /// data not counted) and RDMA READ; for SEND and RDMA WRITE verbs leaves it undefined
    /// (the mock reports the length), so portable code must not rely on it there.
    pub byte_len: u32,
    /// Immediate data, for receives consumed by an operation that carried it.
    pub imm_data: Option<u32>,
    /// Number of the QP the WR was posted to.
    pub qp_num: u32,
    /// Provider-specific detail of an error status; 0 when there is none.
    pub vendor_err: u32,
}
