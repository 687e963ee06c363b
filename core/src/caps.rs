//! Capabilities and limits: transport differences as data, not as forks in ULP code.

use bitflags::bitflags;

bitflags! {
    /// What a device can do, or how it behaves where transports differ.
    ///
    /// A ULP (and the conformance suite) branches on these, never on the provider's name. The
    /// default is none.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Caps: u64 {
        /// QPs connect only through the connection manager; hand-driven INIT→RTR→RTS is
        /// impossible (iWARP).
        const CM_ONLY_CONNECT = 1 << 0;
        /// WRs posted while the QP is in ERROR are accepted and completed with a flush error
        /// (InfiniBand, kernel siw, irdma). Without it a post in ERROR may fail synchronously
        /// (cxgb4, erdma) or be accepted and never complete on its own (user-space siw, rxe
        /// receives, X722): only `QueuePair::drain` then accounts for it.
        const POST_IN_ERROR_FLUSHED = 1 << 1;
        /// Shared receive queues.
        const SRQ = 1 << 2;
        /// SEND with immediate and RDMA WRITE with immediate.
        const IMMEDIATE_DATA = 1 << 3;
        /// RDMA READ.
        const RDMA_READ = 1 << 4;
        /// RDMA WRITE.
        const RDMA_WRITE = 1 << 5;
        /// The QP state machine has a send-queue-drained state (SQD on InfiniBand; CLOSING on
        /// iWARP is its counterpart but also closes the connection).
        const SQ_DRAIN_STATE = 1 << 6;
        // Bit 7 was FAULT_INJECTION until ABI 4.0; which faults a device can have injected is
        // now `DeviceInfo::faults`. Not reused.
        /// Zero-length SENDs and RDMA WRITEs are allowed.
        const ZERO_LENGTH = 1 << 8;
        /// Inline data in send WRs.
        const INLINE_DATA = 1 << 9;
        /// A SEND that finds no receive posted is retried (receiver-not-ready) until the RNR
        /// retry count runs out (InfiniBand). Without it (iWARP) the responder terminates the
        /// connection at once and both QPs go to ERROR.
        const RNR_RETRY = 1 << 10;
        /// The atomic operations, compare-and-swap and fetch-and-add
        /// ([`SendOp::CompareSwap`](crate::SendOp::CompareSwap),
        /// [`SendOp::FetchAdd`](crate::SendOp::FetchAdd)): InfiniBand and RoCE have them, iWARP
        /// does not. They are atomic with respect to other atomics of the same device only
        /// (verbs' `IBV_ATOMIC_HCA`), not to the CPU's or other devices' accesses to the same
        /// memory. Without it, posting an atomic fails with
        /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported).
        const ATOMICS = 1 << 11;
        /// The device reports a fatal error, a reset included, as
        /// [`DeviceEvent::DeviceFatal`](crate::DeviceEvent::DeviceFatal) (drivers that support
        /// disassociation, such as mlx5). Without it (rxe, siw) no fatal event ever comes: a
        /// reset is a removal and a return, reported as
        /// [`DeviceRemoved`](crate::DeviceEvent::DeviceRemoved).
        const DEVICE_FATAL = 1 << 12;
        /// An orderly disconnect needs every send completed first (iWARP: CLOSING with sends
        /// outstanding is fatal — siw raises QP_FATAL and loses them).
        /// [`QueuePair::disconnect`](crate::QueuePair::disconnect) waits for the sends until its
        /// deadline, and closes abruptly past it.
        const CLOSE_NEEDS_QUIET_SENDS = 1 << 13;
    }
}

/// Numeric limits of a device, as `ibv_query_device` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceLimits {
    /// Most QPs the device can hold at once.
    pub max_qp: u32,
    /// Most outstanding WRs on one send or receive queue.
    pub max_qp_wr: u32,
    /// Most scatter/gather entries in one WR.
    pub max_sge: u32,
    /// Most CQs.
    pub max_cq: u32,
    /// Most entries in one CQ.
    pub max_cqe: u32,
    /// Most memory regions.
    pub max_mr: u32,
    /// Largest memory region, in bytes.
    pub max_mr_size: u64,
    /// Most protection domains.
    pub max_pd: u32,
    /// Most bytes of inline data in one send WR.
    pub max_inline_data: u32,
    /// Largest message, in bytes.
    pub max_msg_size: u32,
    /// Most RDMA READs (and atomics) a QP may have outstanding as the responder
    /// (`max_qp_rd_atom`): the most [`ConnParams::responder_resources`](crate::ConnParams)
    /// may ask for.
    pub max_responder_resources: u8,
    /// Most RDMA READs (and atomics) a QP may have outstanding as the initiator
    /// (`max_qp_init_rd_atom`): the most [`ConnParams::initiator_depth`](crate::ConnParams)
    /// may ask for.
    pub max_initiator_depth: u8,
}
