//! The mock's own error type. It keeps the detail; [`anyverbs::Error`] gets the kind.

use std::net::{IpAddr, SocketAddr};

use anyverbs::{ErrorKind, QpState};
use thiserror::Error;

/// Everything that can go wrong in the mock, with the detail a person needs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MockError {
    /// No device of that name on the fabric, or it is absent (unplugged, resetting).
    #[error("no mock device named {0:?}")]
    NoSuchDevice(String),
    /// The device the handle belongs to was reset or unplugged: every handle of it is dead.
    #[error("device {device} {reason}: its handles are dead, only destroy works")]
    DeviceLost {
        /// The device's name.
        device: String,
        /// What happened to it, e.g. `was reset`.
        reason: &'static str,
    },
    /// No QP of that number on the device (fault injection).
    #[error("device {device} has no queue pair {qp_num}")]
    NoSuchQp {
        /// The device's name.
        device: String,
        /// The QP number asked for.
        qp_num: u32,
    },
    /// The handle was destroyed.
    #[error("the {0} was destroyed")]
    Destroyed(&'static str),
    /// Destroying an object others still use.
    #[error("the {what} is still used by {users}")]
    InUse {
        /// The object.
        what: &'static str,
        /// Who uses it.
        users: String,
    },
    /// A size or count outside what is allowed.
    #[error("{what} must be between {min} and {max}, got {got}")]
    BadSize {
        /// What was sized.
        what: &'static str,
        /// The value given.
        got: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A malformed WR or argument.
    #[error("{0}")]
    BadArgument(String),
    /// A queue is full.
    #[error("the {queue} queue is full ({depth} WRs outstanding)")]
    QueueFull {
        /// Which queue.
        queue: &'static str,
        /// Its depth.
        depth: u32,
    },
    /// A table of the device is full.
    #[error("the device has no room for another {0}")]
    TableFull(&'static str),
    /// Posting in a state that does not allow it.
    #[error("cannot post to the {queue} queue of a QP in state {state}")]
    PostState {
        /// Which queue.
        queue: &'static str,
        /// The QP's state.
        state: QpState,
    },
    /// The device refuses WRs posted while the QP is in ERROR (cxgb4: EINVAL, erdma: EIO).
    #[error("the device refuses work requests while the QP is in ERROR ({errno})")]
    PostRefusedInError {
        /// The errno the real provider returns.
        errno: &'static str,
    },
    /// Moving an iWARP QP to CLOSING with sends outstanding.
    #[error(
        "{0} send WR(s) outstanding: an iWARP QP may enter CLOSING only with an empty send queue \
         (siw raises QP_FATAL and loses them); drain or wait for the completions first"
    )]
    ClosingWithSends(usize),
    /// A transition the state machine forbids.
    #[error(transparent)]
    Transition(anyverbs::Error),
    /// A call that needs a state the QP is not in.
    #[error("{0}")]
    WrongState(String),
    /// The operation is not supported by this device.
    #[error("{0} is not supported by this device")]
    Unsupported(&'static str),
    /// The device cannot have this kind of fault injected (see its
    /// [`DeviceInfo::faults`](anyverbs::DeviceInfo::faults)).
    #[error("{device} cannot have this fault injected: {fault} (it can: {can})")]
    CannotInject {
        /// The device.
        device: String,
        /// The fault asked for.
        fault: String,
        /// The faults it can have injected.
        can: String,
    },
    /// No listener at that address.
    #[error("nobody listens at {0}")]
    NotListening(SocketAddr),
    /// The peer rejected the connection, with this private data.
    #[error("the peer rejected the connection")]
    Rejected(Vec<u8>),
    /// No device on the fabric owns that address.
    #[error("no mock device has address {0}")]
    NoRoute(IpAddr),
    /// Somebody already listens there.
    #[error("{0} is already in use")]
    AddressInUse(SocketAddr),
    /// No such connection request.
    #[error("no pending connection request {0}")]
    NoSuchRequest(u64),
    /// A deadline passed.
    #[error("timed out waiting for {0}")]
    TimedOut(&'static str),
    /// The CQ overflowed.
    #[error("the completion queue overflowed; completions were lost")]
    CqOverflow,
}

impl MockError {
    /// The kind generic code matches on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MockError::NoSuchDevice(_)
            | MockError::NoSuchRequest(_)
            | MockError::NoSuchQp { .. } => ErrorKind::NotFound,
            MockError::DeviceLost { .. } => ErrorKind::DeviceLost,
            MockError::Destroyed(_) => ErrorKind::Destroyed,
            MockError::InUse { .. } => ErrorKind::Busy,
            MockError::BadSize { .. } | MockError::BadArgument(_) => ErrorKind::InvalidArgument,
            MockError::QueueFull { .. } | MockError::TableFull(_) => ErrorKind::ResourceExhausted,
            MockError::PostState { .. }
            | MockError::PostRefusedInError { .. }
            | MockError::ClosingWithSends(_)
            | MockError::WrongState(_) => ErrorKind::InvalidState,
            MockError::Transition(e) => e.kind(),
            MockError::Unsupported(_) | MockError::CannotInject { .. } => ErrorKind::NotSupported,
            MockError::NotListening(_) | MockError::Rejected(_) => ErrorKind::ConnectionRefused,
            MockError::NoRoute(_) => ErrorKind::Unreachable,
            MockError::AddressInUse(_) => ErrorKind::AddressInUse,
            MockError::TimedOut(_) => ErrorKind::TimedOut,
            MockError::CqOverflow => ErrorKind::Overflow,
        }
    }
}

impl From<MockError> for anyverbs::Error {
    fn from(e: MockError) -> Self {
        match e {
            // Already an anyverbs error: pass it on unchanged.
            MockError::Transition(inner) => inner,
            // The rejection itself is the source, where `Error::rejected` finds it.
            MockError::Rejected(private_data) => anyverbs::Rejected { private_data }.into_error(),
            e => anyverbs::Error::new(e.kind(), e.to_string()).with_source(e),
        }
    }
}

/// Results inside the mock.
pub type MockResult<T> = Result<T, MockError>;
