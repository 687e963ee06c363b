//! Device lifecycle events: what a device tells its users, and what the process-wide monitor
//! tells about devices coming and going.
//!
//! - [`DeviceEvent`]: one stream per open device ([`Device::events`](crate::Device::events)),
//!   the counterpart of the verbs async events (`ibv_get_async_event`) plus the connection
//!   manager's `RDMA_CM_EVENT_DEVICE_REMOVAL` and `DISCONNECTED`.
//! - [`MonitorEvent`]: one stream per provider ([`Provider::monitor`](crate::Provider::monitor)),
//!   devices added and removed, each carrying the device's identity, so a returning device can be
//!   recognised by [`DeviceIdentity::is_same_device`].
//!
//! Both arrive through an [`EventStream`], usable from blocking code
//! ([`EventStream::recv`] with a deadline) and from an event loop (the stream's file descriptor
//! is readable while an event is waiting). Providers publish through an [`EventHub`], which
//! broadcasts to every stream subscribed to it.
//!
//! ## After a device is lost
//!
//! A device that is removed or hits a fatal error publishes [`DeviceEvent::DeviceFatal`] or
//! [`DeviceEvent::DeviceRemoved`] as its last event and closes its hub: a stream returns the
//! events still queued, then fails at once with
//! [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost). Every handle of the device is dead
//! from then on: every call fails with `DeviceLost` without blocking, and only `destroy`
//! succeeds. Outstanding WRs never complete (a dead device produces no flush completions; `poll`
//! and `drain` fail with `DeviceLost`), and the device no longer touches their buffers.

mod channel;

pub(crate) use channel::Next;
pub use channel::{EVENT_QUEUE_CAPACITY, EventHub, EventStream, Wakeup};

use std::fmt;

use crate::device::DeviceInfo;
use crate::identity::DeviceIdentity;

/// An event of one device, as the verbs async event channel and the connection manager report
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// A port became active (`IBV_EVENT_PORT_ACTIVE`).
    PortActive {
        /// Port number, from 1.
        port: u8,
    },
    /// A port went down (`IBV_EVENT_PORT_ERR`).
    PortDown {
        /// Port number, from 1.
        port: u8,
    },
    /// The GID table of a port changed (`IBV_EVENT_GID_CHANGE`).
    GidChange {
        /// Port number, from 1.
        port: u8,
    },
    /// The hardware address behind a port's network interface changed under its connections:
    /// the connection manager's `RDMA_CM_EVENT_ADDR_CHANGE`, which the kernel raises on a
    /// bonding failover that changes the bond's MAC (not on an IP address change) and reports on
    /// every connection and listener bound through it; reported here once per port.
    /// Connections keep running; a ULP that chose a path may want to choose again.
    AddressChange {
        /// Port number, from 1.
        port: u8,
    },
    /// A QP hit an error that is not tied to one WR and went to ERROR (`IBV_EVENT_QP_FATAL`).
    QpFatal {
        /// The QP's number.
        qp_num: u32,
    },
    /// The peer reported a request it could not handle; the QP went to ERROR
    /// (`IBV_EVENT_QP_REQ_ERR`).
    QpRequestError {
        /// The QP's number.
        qp_num: u32,
    },
    /// The peer reported an access violation; the QP went to ERROR
    /// (`IBV_EVENT_QP_ACCESS_ERR`).
    QpAccessError {
        /// The QP's number.
        qp_num: u32,
    },
    /// The last WQE of a QP attached to a shared receive queue was consumed
    /// (`IBV_EVENT_QP_LAST_WQE_REACHED`).
    LastWqeReached {
        /// The QP's number.
        qp_num: u32,
    },
    /// A QP moved to SQD has no send WR in progress any more (`IBV_EVENT_SQ_DRAINED`).
    SqDrained {
        /// The QP's number.
        qp_num: u32,
    },
    /// The connection of a QP is gone: the peer disconnected, destroyed its QP or stopped
    /// answering (`RDMA_CM_EVENT_DISCONNECTED`). Drain the QP and replace it. Where the
    /// transport failed the QP (a peer that stopped answering; any teardown on iWARP, whose
    /// connection is a TCP stream) it is in ERROR; on InfiniBand a peer that destroyed its end
    /// sends a DREQ, which leaves the QP in the state it was in (the CM changes no QP state
    /// for it) and its receives posted until the drain flushes them.
    Disconnected {
        /// The QP's number.
        qp_num: u32,
    },
    /// A CQ overran or failed; its QPs went to ERROR (`IBV_EVENT_CQ_ERR`).
    CqError {
        /// The CQ's number ([`CompletionQueue::cq_num`](crate::CompletionQueue::cq_num)).
        cq_num: u32,
    },
    /// The device hit a fatal error, e.g. it is resetting (`IBV_EVENT_DEVICE_FATAL`). Every
    /// handle of the device is dead; the last event of the stream.
    DeviceFatal,
    /// The device was removed (`RDMA_CM_EVENT_DEVICE_REMOVAL`; drivers that cannot
    /// disassociate, such as rxe and siw, report removal only this way). Every handle of the
    /// device is dead; the last event of the stream.
    DeviceRemoved,
}

impl DeviceEvent {
    /// Whether the event kills the device: [`DeviceFatal`](Self::DeviceFatal) or
    /// [`DeviceRemoved`](Self::DeviceRemoved).
    pub fn is_device_lost(&self) -> bool {
        matches!(self, DeviceEvent::DeviceFatal | DeviceEvent::DeviceRemoved)
    }

    /// The QP the event is about, if it is about one.
    pub fn qp_num(&self) -> Option<u32> {
        match *self {
            DeviceEvent::QpFatal { qp_num }
            | DeviceEvent::QpRequestError { qp_num }
            | DeviceEvent::QpAccessError { qp_num }
            | DeviceEvent::LastWqeReached { qp_num }
            | DeviceEvent::SqDrained { qp_num }
            | DeviceEvent::Disconnected { qp_num } => Some(qp_num),
            _ => None,
        }
    }

    /// Whether the event says a QP's connection failed: fatal, request or access error, or
    /// disconnected. The QP must be drained (which flushes whatever is still outstanding) and
    /// replaced.
    pub fn is_qp_failure(&self) -> bool {
        matches!(
            self,
            DeviceEvent::QpFatal { .. }
                | DeviceEvent::QpRequestError { .. }
                | DeviceEvent::QpAccessError { .. }
                | DeviceEvent::Disconnected { .. }
        )
    }
}

impl DeviceEvent {
    /// Whether the event says a QP or a CQ failed: a [QP failure](Self::is_qp_failure), or
    /// [`CqError`](Self::CqError) (a CQ error moves every QP using the CQ to ERROR).
    pub fn is_failure(&self) -> bool {
        self.is_qp_failure() || matches!(self, DeviceEvent::CqError { .. })
    }
}

impl fmt::Display for DeviceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceEvent::PortActive { port } => write!(f, "port {port} active"),
            DeviceEvent::PortDown { port } => write!(f, "port {port} down"),
            DeviceEvent::GidChange { port } => write!(f, "GID change on port {port}"),
            DeviceEvent::AddressChange { port } => write!(f, "address change on port {port}"),
            DeviceEvent::QpFatal { qp_num } => write!(f, "QP {qp_num} fatal"),
            DeviceEvent::QpRequestError { qp_num } => write!(f, "QP {qp_num} request error"),
            DeviceEvent::QpAccessError { qp_num } => write!(f, "QP {qp_num} access error"),
            DeviceEvent::LastWqeReached { qp_num } => write!(f, "QP {qp_num} last WQE reached"),
            DeviceEvent::SqDrained { qp_num } => write!(f, "QP {qp_num} send queue drained"),
            DeviceEvent::Disconnected { qp_num } => write!(f, "QP {qp_num} disconnected"),
            DeviceEvent::CqError { cq_num } => write!(f, "CQ {cq_num} error"),
            DeviceEvent::DeviceFatal => f.write_str("device fatal"),
            DeviceEvent::DeviceRemoved => f.write_str("device removed"),
        }
    }
}

/// A device coming or going, as the process-wide monitor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MonitorEvent {
    /// A device appeared (or came back: compare identities with
    /// [`DeviceIdentity::is_same_device`]; its index is new).
    Added(DeviceInfo),
    /// A device went away (removed, or reset: a reset device comes back as a new device).
    Removed(DeviceIdentity),
}

impl MonitorEvent {
    /// The identity of the device the event is about.
    pub fn identity(&self) -> &DeviceIdentity {
        match self {
            MonitorEvent::Added(info) => &info.identity,
            MonitorEvent::Removed(identity) => identity,
        }
    }
}

impl fmt::Display for MonitorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorEvent::Added(info) => write!(f, "added {}", info.identity),
            MonitorEvent::Removed(identity) => write!(f, "removed {identity}"),
        }
    }
}
