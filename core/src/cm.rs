//! Connection setup by address, shaped after the RDMA connection manager.
//!
//! The active side calls [`QueuePair::connect`](crate::QueuePair::connect) with the peer's
//! address and then [`QueuePair::wait_connected`](crate::QueuePair::wait_connected); the passive
//! side [`Device::listen`](crate::Device::listen)s, takes each [`ConnectRequest`] from
//! [`Listener::next_request`] and accepts it onto a QP of its own or rejects it. Both sides can
//! pass private data, as NVMe-oF and iSER do. Connecting is asynchronous, as in `rdma_cm`, so
//! one thread can drive both ends.

use std::net::SocketAddr;
use std::time::Instant;

use crate::error::Result;
use crate::provider::Provider;

/// Most bytes of private data a connect request may carry (InfiniBand CM REQ limit).
pub const MAX_CONNECT_PRIVATE_DATA: usize = 56;

/// Most bytes of private data an accept or reject may carry (InfiniBand CM REP limit).
pub const MAX_ACCEPT_PRIVATE_DATA: usize = 196;

/// Parameters of a connection, as in `struct rdma_conn_param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Private data for the peer.
    pub private_data: Vec<u8>,
    /// Transport retries before [`WcStatus::TransportRetryExceeded`](crate::WcStatus) (0..=7).
    pub retry_count: u8,
    /// RNR retries before [`WcStatus::RnrRetryExceeded`](crate::WcStatus) (0..=7; 7 retries
    /// forever).
    pub rnr_retry_count: u8,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            private_data: Vec::new(),
            retry_count: 7,
            rnr_retry_count: 7,
        }
    }
}

/// An incoming connection request, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Identifies the request to [`Listener::accept`] and [`Listener::reject`].
    pub id: u64,
    /// The requester's address.
    pub peer: SocketAddr,
    /// The requester's private data.
    pub private_data: Vec<u8>,
}

/// What the active side learns once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's QP number.
    pub peer_qp_num: u32,
    /// Private data the peer passed when accepting.
    pub private_data: Vec<u8>,
}

/// A listening endpoint. Dropping it stops listening; pending requests are rejected.
pub trait Listener<P: Provider>: Send + Sync {
    /// The address it listens on (with the port chosen if 0 was asked for).
    fn local_addr(&self) -> SocketAddr;

    /// The next connection request, waiting until `deadline`
    /// ([`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut)).
    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest>;

    /// Accepts `request` onto `qp`, a fresh QP of this device; the QP becomes ready to send and
    /// the requester's [`wait_connected`](crate::QueuePair::wait_connected) returns.
    fn accept(&self, request: &ConnectRequest, qp: &P::Qp, params: &ConnParams) -> Result<()>;

    /// Rejects `request`; the requester sees
    /// [`ErrorKind::ConnectionRefused`](crate::ErrorKind::ConnectionRefused).
    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()>;
}
