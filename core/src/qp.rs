//! [`QueuePair`]: a reliable-connected queue pair.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cm::{ConnParams, Connection};
use crate::drain::DrainReport;
use crate::error::{PostError, Result};
use crate::state::QpState;
use crate::wr::{RecvWr, SendWr};

/// Sizes and options of a new QP (`struct ibv_qp_init_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QpInit {
    /// Most send WRs outstanding at once (≥ 1).
    pub max_send_wr: u32,
    /// Most receive WRs outstanding at once (≥ 1).
    pub max_recv_wr: u32,
    /// Most SGEs in one send WR.
    pub max_send_sge: u32,
    /// Most SGEs in one receive WR.
    pub max_recv_sge: u32,
    /// Most bytes of inline data in one send WR.
    pub max_inline_data: u32,
}

impl Default for QpInit {
    fn default() -> Self {
        QpInit {
            max_send_wr: 64,
            max_recv_wr: 64,
            max_send_sge: 4,
            max_recv_sge: 4,
            max_inline_data: 0,
        }
    }
}

/// What [`QueuePair::disconnect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DisconnectReport {
    /// Whether the close was orderly: on iWARP, CLOSING (a TCP FIN) with no send outstanding;
    /// on InfiniBand every disconnect is (the CM's DREQ). An abrupt close moved the QP to ERROR
    /// (iWARP: a TERMINATE, the stream reset), flushing what was outstanding.
    pub orderly: bool,
    /// Sends outstanding when the QP was closed: they complete with flush errors, which a
    /// [`drain`](QueuePair::drain) collects.
    pub sends_outstanding: usize,
    /// How long it took, the wait for quiet sends included.
    pub elapsed: Duration,
}

impl fmt::Display for DisconnectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} disconnect with {} send(s) outstanding in {:?}",
            if self.orderly { "orderly" } else { "abrupt" },
            self.sends_outstanding,
            self.elapsed
        )
    }
}

/// A reliable-connected queue pair.
pub trait QueuePair: Send + Sync {
    /// The QP number, unique on its device.
    fn qp_num(&self) -> u32;

    /// The sizes of the QP as created: the WRs it holds as asked for, and the SGEs and inline
    /// bytes the device granted, which may be more than asked (verbs writes them back into
    /// `ibv_qp_init_attr.cap`; mlx5 rounds inline data up). A send with
    /// [`SendFlags::INLINE`](crate::SendFlags::INLINE) may carry up to `max_inline_data`
    /// bytes; its SGEs must still lie in registered regions the caller owns, so that a safe
    /// post reads only memory the caller gave the device.
    fn granted(&self) -> QpInit;

    /// The current state, as the provider tracks it (some devices, e.g. siw, cannot report it).
    fn state(&self) -> Result<QpState>;

    /// Moves the QP to `to`. Transitions the state model forbids, or that only the connection
    /// manager or the device may make, fail with
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState); so does moving an iWARP QP
    /// to CLOSING while sends are outstanding (siw turns that into QP_FATAL and lost WRs), and
    /// anything but ERROR once a drain has started. Moving to RESET discards both queues
    /// without completions, as in verbs.
    fn modify(&self, to: QpState) -> Result<()>;

    /// Posts send WRs in order. On error, the [`PostError`] says how many were posted.
    ///
    /// A WR holds its slot of the queue (`max_send_wr`) until its completion has been polled —
    /// for an unsignaled send, until a later send's completion has — as on hardware, where a
    /// provider reclaims ring space when it polls the CQ. A full queue fails with
    /// [`ErrorKind::ResourceExhausted`](crate::ErrorKind::ResourceExhausted).
    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError>;

    /// Posts receive WRs in order. On error, the [`PostError`] says how many were posted. A
    /// receive holds its slot until its completion has been polled.
    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError>;

    /// Starts connecting to a listener at `remote` (active side). Returns once the request is
    /// sent; [`wait_connected`](Self::wait_connected) tells the outcome.
    ///
    /// Post the QP's receives before connecting: the peer may send as soon as it accepts, and on
    /// iWARP a SEND that finds no receive terminates the connection. On InfiniBand a fresh QP
    /// must first leave RESET, which refuses receives:
    /// [`cm::ready_for_receives`](crate::cm::ready_for_receives) does what each device needs.
    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()>;

    /// Waits until the connection started by [`connect`](Self::connect) is established
    /// (the QP is then ready to send), refused
    /// ([`ErrorKind::ConnectionRefused`](crate::ErrorKind::ConnectionRefused)), or `deadline`
    /// passes.
    fn wait_connected(&self, deadline: Instant) -> Result<Connection>;

    /// Ends the connection, as the CM's `rdma_disconnect` does, and tells the peer (its device
    /// reports [`DeviceEvent::Disconnected`](crate::DeviceEvent::Disconnected)); apart from
    /// [`drain`](Self::drain) and [`destroy`](Self::destroy), which disconnects too.
    ///
    /// On a device with [`Caps::CLOSE_NEEDS_QUIET_SENDS`](crate::Caps::CLOSE_NEEDS_QUIET_SENDS)
    /// (iWARP) it first waits, until `deadline`, for every send to complete, then closes in
    /// order (CLOSING); with sends still outstanding at the deadline — or an unsignaled send
    /// whose fate no completion told — it closes abruptly (ERROR), never CLOSING with sends
    /// outstanding. On InfiniBand it does not wait: the QP moves to ERROR, as librdmacm moves
    /// it, and what was outstanding is flushed. Either way drain the QP afterwards to collect
    /// every WR.
    ///
    /// # Errors
    ///
    /// [`InvalidState`](crate::ErrorKind::InvalidState) for a QP that was never connected,
    /// [`DeviceLost`](crate::ErrorKind::DeviceLost) on a lost device.
    fn disconnect(&self, deadline: Instant) -> Result<DisconnectReport>;

    /// Makes sure every WR posted so far has completed and nothing will complete later; see
    /// [the contract](crate::drain). Never blocks past `deadline`: if the device has not
    /// finished by then, the provider stops the hardware QP and synthesizes the missing flush
    /// completions ([`DrainReport::fallback`](crate::DrainReport::fallback)).
    fn drain(&self, deadline: Instant) -> Result<DrainReport>;

    /// Destroys the QP. Destroying a QP that was not drained is allowed (verbs allows it), but
    /// the WRs still outstanding then never complete and their buffers may still be in use by
    /// the device until it notices: drain first, which is how nothing is lost.
    ///
    /// It does not cancel calls in progress on other threads: it waits for a running
    /// [`drain`](Self::drain) and a [`wait_connected`](Self::wait_connected) to end, each by its
    /// own deadline (a QP's provider must not destroy the device QP under them), so a destroy
    /// meant to abandon a connection attempt returns only when that wait times out; while it
    /// waits, new connection calls on the QP wait too. Calls started after it fail with
    /// `Destroyed`.
    fn destroy(&self) -> Result<()>;
}
