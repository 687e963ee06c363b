//! Connection setup by address, shaped after the RDMA connection manager.
//!
//! The active side calls [`QueuePair::connect`] with the peer's address and then
//! [`QueuePair::wait_connected`]; the passive side [`Device::listen`](crate::Device::listen)s,
//! takes each [`ConnectRequest`] from [`Listener::next_request`] and accepts it onto a QP of its
//! own or rejects it. Both sides can pass private data, as NVMe-oF and iSER do. Connecting is
//! asynchronous, as in `rdma_cm`, so one thread can drive both ends.
//!
//! ## Receives go in before `connect` and `accept`
//!
//! The peer may send as soon as it sees the connection up, and on iWARP a SEND that finds no
//! receive posted terminates the connection (iWARP has no RNR retry; InfiniBand retries for a
//! while, then fails the SEND). So post the receives first, on both sides: on the fresh QP,
//! before [`QueuePair::connect`] or [`Listener::accept`]. An InfiniBand QP in RESET refuses
//! receives, though; it must first move to INIT, which [`ready_for_receives`] does for every
//! device (it does nothing on iWARP, whose IDLE takes receives):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use anyverbs::cm::ready_for_receives;
//! use anyverbs::{
//!     Access, CompletionQueue, ConnParams, Device, Listener, MemoryRegion, ProtectionDomain,
//!     Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, StateModel,
//! };
//! use anyverbs_provider_mock::MockProvider;
//!
//! let provider = MockProvider::new();
//! for name in ["mock0", "mockiw0"] { // InfiniBand, then iWARP
//!     let device = provider.open(name)?;
//!     let model = device.info().state_model;
//!     let pd = device.alloc_pd()?;
//!     let cq = device.create_cq(16)?;
//!     let (client, server) = (
//!         pd.create_qp(&cq, &cq, &QpInit::default())?,
//!         pd.create_qp(&cq, &cq, &QpInit::default())?,
//!     );
//!     let mr = pd.register(64, Access::LOCAL_WRITE)?;
//!     // The server's receive goes in before it accepts.
//!     ready_for_receives(&server, model)?;
//!     let ready = if model == StateModel::InfiniBand { QpState::Init } else { QpState::Idle };
//!     assert_eq!(server.state()?, ready);
//!     server.post_recv(&[RecvWr::new(1, &[mr.sge(32, 32)])])?;
//!
//!     let addr = device.ports()?[0].addresses[0];
//!     let listener = device.listen((addr, 0).into())?;
//!     client.connect(listener.local_addr(), &ConnParams::default())?;
//!     let deadline = Instant::now() + Duration::from_secs(5);
//!     let request = listener.next_request(deadline)?;
//!     listener.accept(&request, &server, &ConnParams::default())?;
//!     client.wait_connected(deadline)?;
//!     // The client sends at once; the receive is there to take it.
//!     client.post_send(&[SendWr::send(2, &[mr.sge(0, 32)])])?;
//!     let mut wc = [anyverbs::Completion::default(); 2];
//!     let mut got = 0;
//!     while got < 2 {
//!         got += cq.wait(&mut wc[got..], deadline)?;
//!     }
//!     assert!(wc.iter().all(|c| c.status == anyverbs::WcStatus::Success));
//!     client.drain(deadline)?;
//!     server.drain(deadline)?;
//! }
//! # Ok::<(), anyverbs::Error>(())
//! ```

use std::net::SocketAddr;
use std::time::Instant;

use crate::error::Result;
use crate::provider::Provider;
use crate::qp::QueuePair;
use crate::state::StateModel;

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
    ///
    /// Post `qp`'s receives before accepting: the requester may send as soon as it is
    /// connected, and on iWARP a SEND that finds no receive terminates the connection. On
    /// InfiniBand a fresh QP must first leave RESET, which refuses receives:
    /// [`ready_for_receives`] does what each device needs (see the [module docs](self)).
    fn accept(&self, request: &ConnectRequest, qp: &P::Qp, params: &ConnParams) -> Result<()>;

    /// Rejects `request`; the requester sees
    /// [`ErrorKind::ConnectionRefused`](crate::ErrorKind::ConnectionRefused).
    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()>;
}

/// Makes a fresh QP ready to take receives before it is connected, on any device: call it on
/// the new QP, post the receives, then [`connect`](QueuePair::connect) or
/// [`accept`](Listener::accept) (see the [module docs](self) for why receives go first).
///
/// `model` is the device's [`DeviceInfo::state_model`](crate::DeviceInfo::state_model). When the
/// model's initial state refuses receives (InfiniBand's RESET), the QP is moved to the first state
/// of its connect path (INIT), which the connection manager continues from (librdmacm's
/// `rdma_create_qp` does the same to the QPs it creates); otherwise (iWARP's IDLE) nothing is
/// done. Calling it again on a QP in INIT is harmless (INIT to INIT is legal).
/// It uses only [`QueuePair::modify`], so it works on every provider, a plugin's included.
///
/// # Errors
///
/// What [`QueuePair::modify`] returns: [`InvalidState`](crate::ErrorKind::InvalidState) for a QP
/// that has left its initial state for one INIT cannot be reached from (it is connected, or in
/// ERROR), [`DeviceLost`](crate::ErrorKind::DeviceLost) on a lost device.
pub fn ready_for_receives<Q: QueuePair + ?Sized>(qp: &Q, model: StateModel) -> Result<()> {
    if !model.can_post_recv(model.initial())
        && let Some(&first) = model.connect_path().first()
    {
        qp.modify(first)?;
    }
    Ok(())
}
