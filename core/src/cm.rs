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
use std::time::{Duration, Instant};

use crate::caps::DeviceLimits;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::qp::QueuePair;
use crate::state::StateModel;

/// Most bytes of private data a connect request may carry (InfiniBand CM REQ limit).
pub const MAX_CONNECT_PRIVATE_DATA: usize = 56;

/// Most bytes of private data an accept may carry (InfiniBand CM REP limit).
pub const MAX_ACCEPT_PRIVATE_DATA: usize = 196;

/// Most bytes of private data a reject may carry (InfiniBand CM REJ limit).
pub const MAX_REJECT_PRIVATE_DATA: usize = 148;

/// Why a connection was refused when the peer rejected it: the source of the
/// [`ConnectionRefused`](crate::ErrorKind::ConnectionRefused) error
/// [`QueuePair::wait_connected`] returns then ([`Error::rejected`] finds it). NVMe-oF and iSER
/// put their reject reason here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The private data the peer passed to [`Listener::reject`] (zero-padded to the CM's fixed
    /// size on InfiniBand/RoCE, as all private data).
    pub private_data: Vec<u8>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the peer rejected the connection ({} bytes of private data)",
            self.private_data.len()
        )
    }
}

impl std::error::Error for Rejected {}

impl Rejected {
    /// The [`ConnectionRefused`](crate::ErrorKind::ConnectionRefused) error of a rejected
    /// connection, carrying `self` as its source.
    pub fn into_error(self) -> Error {
        Error::new(
            crate::ErrorKind::ConnectionRefused,
            "the peer rejected the connection",
        )
        .with_source(self)
    }
}

/// Parameters of a connection, as in `struct rdma_conn_param` plus the CM's options
/// (`rdma_set_option`).
///
/// Every option left `None` takes the default a program on librdmacm gets when it passes none:
/// the device's maxima for the READ credits ([`DeviceLimits`]), the
/// transport's timers. A value beyond the device's limits or the protocol's range fails
/// `connect` and `accept` with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
/// ([`check`](Self::check)).
///
/// ## READ credits
///
/// An RDMA READ (and an atomic) needs credits at both ends: the requester may have at most its
/// *initiator depth* of them outstanding, and the responder serves at most its *responder
/// resources* at once. As in the InfiniBand CM, the passive side's choice wins: a requester's
/// effective initiator depth is the responder resources the accepting side chose, and its
/// effective responder resources the initiator depth the accepting side chose, which is why a
/// [`ConnectRequest`] shows the requester's values. A side with no credits (0) for the
/// direction a READ or an atomic goes makes it fail (on the mock, with
/// [`WcStatus::RemoteInvalidRequest`](crate::WcStatus::RemoteInvalidRequest), the QP going to
/// ERROR); real devices differ — rxe holds the WR forever — so give READs credits. Accept
/// within what the request shows ([`ConnectRequest::initiator_depth`] and
/// [`ConnectRequest::responder_resources`]): the mock takes the smaller of the two sides'
/// values, but the CM on hardware passes an acceptor's values through as they are, and an
/// acceptor that issues more READs than the requester serves gets them refused.
///
/// ## Timers
///
/// `ack_timeout` is how long the requester waits for an acknowledgement before it retries
/// (`retry_count` times, then [`WcStatus::TransportRetryExceeded`](crate::WcStatus)): the
/// remedy for a peer that vanished silently, which with the CM's defaults rxe notices only after
/// 6.9 s. `min_rnr_timer` is how long *senders to this side* wait before retrying a SEND that
/// found no receive. Verbs encodes both in 5 bits: the ACK timeout as 4.096 µs × 2^n
/// ([`ack_timeout_code`]), the RNR timer as one of 32 steps from 10 µs to 655.36 ms
/// ([`rnr_timer_code`]); a real provider rounds up to the next step, the mock uses the duration
/// as it is. librdmacm has no option for the RNR timer of a user-space QP: a real provider sets
/// it on the QP once the connection is established, so the first messages may meet the CM's
/// own (the longest step, 655.36 ms, on Linux). Neither exists on iWARP, whose TCP stream retransmits on its own: its providers
/// check and then ignore them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    /// Private data for the peer, at most [`MAX_CONNECT_PRIVATE_DATA`] bytes in a connect and
    /// [`MAX_ACCEPT_PRIVATE_DATA`] in an accept. On InfiniBand and RoCE the CM carries it in a
    /// fixed-size field, so the peer receives it zero-padded to that size and cannot learn the
    /// length the sender used: put the length in the data if it matters. iWARP's MPA carries
    /// the exact length.
    pub private_data: Vec<u8>,
    /// Transport retries before [`WcStatus::TransportRetryExceeded`](crate::WcStatus) (0..=7).
    pub retry_count: u8,
    /// RNR retries before [`WcStatus::RnrRetryExceeded`](crate::WcStatus) (0..=7; 7 retries
    /// forever).
    pub rnr_retry_count: u8,
    /// RDMA READs and atomics this side may have outstanding as the requester
    /// (`initiator_depth`); `None`: the device's
    /// [`max_initiator_depth`](crate::DeviceLimits::max_initiator_depth).
    pub initiator_depth: Option<u8>,
    /// RDMA READs and atomics of the peer this side serves at once (`responder_resources`);
    /// `None`: the device's
    /// [`max_responder_resources`](crate::DeviceLimits::max_responder_resources).
    pub responder_resources: Option<u8>,
    /// How long to wait for an acknowledgement before a retry (`RDMA_OPTION_ID_ACK_TIMEOUT`);
    /// [`MIN_ACK_TIMEOUT`] to [`MAX_ACK_TIMEOUT`]. `None`: the transport's default.
    pub ack_timeout: Option<Duration>,
    /// How long a peer whose SEND found no receive here waits before it retries (the QP's
    /// `min_rnr_timer`); 10 µs to 655.36 ms. `None`: the transport's default.
    pub min_rnr_timer: Option<Duration>,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            private_data: Vec::new(),
            retry_count: 7,
            rnr_retry_count: 7,
            initiator_depth: None,
            responder_resources: None,
            ack_timeout: None,
            min_rnr_timer: None,
        }
    }
}

/// The shortest ACK timeout verbs can express: 8.192 µs (code 1; code 0 means "wait forever").
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_nanos(4096 << 1);

/// The longest ACK timeout verbs can express: 4.096 µs × 2^31 (code 31).
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_nanos(4096 << 31);

/// The RNR timer steps of InfiniBand (IBTA table 45), in microseconds, by code; code 0 is the
/// longest, 655.36 ms.
const RNR_TIMER_STEPS_US: [u32; 32] = [
    655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1_280, 1_920, 2_560, 3_840,
    5_120, 7_680, 10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880, 163_840,
    245_760, 327_680, 491_520,
];

/// The verbs code of an ACK timeout (`ibv_qp_attr.timeout`: 4.096 µs × 2^code): the smallest
/// code whose timeout is at least `timeout`, or `None` outside
/// [`MIN_ACK_TIMEOUT`]..=[`MAX_ACK_TIMEOUT`].
pub fn ack_timeout_code(timeout: Duration) -> Option<u8> {
    if !(MIN_ACK_TIMEOUT..=MAX_ACK_TIMEOUT).contains(&timeout) {
        return None;
    }
    (1..=31u8).find(|&code| Duration::from_nanos(4096 << code) >= timeout)
}

/// The verbs code of a minimum RNR timer (`ibv_qp_attr.min_rnr_timer`): the code of the
/// shortest step that is at least `timer`, or `None` outside 10 µs..=655.36 ms.
pub fn rnr_timer_code(timer: Duration) -> Option<u8> {
    let us = |code: usize| Duration::from_micros(u64::from(RNR_TIMER_STEPS_US[code]));
    (1..32)
        .chain([0])
        .find(|&code| us(code) >= timer && timer >= us(1))
        .map(|code| code as u8)
}

impl ConnParams {
    /// Checks the parameters against the protocol's ranges, the device's `limits` and the
    /// `max_private_data` bytes the message carries ([`MAX_CONNECT_PRIVATE_DATA`] for a
    /// connect, [`MAX_ACCEPT_PRIVATE_DATA`] for an accept); a provider calls it before it
    /// connects or accepts.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument), naming the field.
    pub fn check(&self, limits: &DeviceLimits, max_private_data: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid_argument(msg));
        if self.private_data.len() > max_private_data {
            return bad(format!(
                "{} bytes of private data; at most {max_private_data} fit",
                self.private_data.len()
            ));
        }
        if self.retry_count > 7 || self.rnr_retry_count > 7 {
            return bad(format!(
                "retry counts are 3-bit values (0..=7): retry_count {}, rnr_retry_count {}",
                self.retry_count, self.rnr_retry_count
            ));
        }
        if let Some(d) = self.initiator_depth
            && d > limits.max_initiator_depth
        {
            return bad(format!(
                "initiator depth {d}: the device allows at most {}",
                limits.max_initiator_depth
            ));
        }
        if let Some(r) = self.responder_resources
            && r > limits.max_responder_resources
        {
            return bad(format!(
                "responder resources {r}: the device allows at most {}",
                limits.max_responder_resources
            ));
        }
        if let Some(t) = self.ack_timeout
            && ack_timeout_code(t).is_none()
        {
            return bad(format!(
                "ACK timeout {t:?}: verbs expresses {MIN_ACK_TIMEOUT:?} to {MAX_ACK_TIMEOUT:?}"
            ));
        }
        if let Some(t) = self.min_rnr_timer
            && rnr_timer_code(t).is_none()
        {
            return bad(format!(
                "minimum RNR timer {t:?}: verbs expresses 10µs to 655.36ms"
            ));
        }
        Ok(())
    }

    /// The initiator depth these parameters ask for on a device with `limits`.
    pub fn initiator_depth_on(&self, limits: &DeviceLimits) -> u8 {
        self.initiator_depth.unwrap_or(limits.max_initiator_depth)
    }

    /// The responder resources these parameters ask for on a device with `limits`.
    pub fn responder_resources_on(&self, limits: &DeviceLimits) -> u8 {
        self.responder_resources
            .unwrap_or(limits.max_responder_resources)
    }
}

/// An incoming connection request, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Identifies the request to [`Listener::accept`] and [`Listener::reject`].
    pub id: u64,
    /// The requester's address.
    pub peer: SocketAddr,
    /// The requester's private data (zero-padded to the CM's fixed size on InfiniBand/RoCE).
    pub private_data: Vec<u8>,
    /// The READs the requester may have outstanding: accept with
    /// [`ConnParams::responder_resources`] at most this, as librdmacm asks.
    pub initiator_depth: u8,
    /// The READs the requester serves at once: accept with [`ConnParams::initiator_depth`] at
    /// most this.
    pub responder_resources: u8,
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
    /// This side's initiator depth, as the accepting side set it (its responder resources).
    pub initiator_depth: u8,
    /// This side's responder resources, as the accepting side set them (its initiator depth).
    pub responder_resources: u8,
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

    /// Rejects `request` with at most [`MAX_REJECT_PRIVATE_DATA`] bytes of private data (more
    /// is [`InvalidArgument`](crate::ErrorKind::InvalidArgument)); the requester's
    /// [`wait_connected`](crate::QueuePair::wait_connected) fails with
    /// [`ErrorKind::ConnectionRefused`](crate::ErrorKind::ConnectionRefused) whose
    /// [`Error::rejected`] carries the data.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_timeouts_round_up_to_the_next_code() {
        assert_eq!(ack_timeout_code(Duration::from_nanos(8192)), Some(1));
        assert_eq!(ack_timeout_code(Duration::from_nanos(8193)), Some(2));
        // 4.096 µs × 2^14 = 67.1 ms.
        assert_eq!(ack_timeout_code(Duration::from_millis(67)), Some(14));
        assert_eq!(ack_timeout_code(MAX_ACK_TIMEOUT), Some(31));
        assert_eq!(ack_timeout_code(Duration::from_nanos(4096)), None);
        assert_eq!(
            ack_timeout_code(MAX_ACK_TIMEOUT + Duration::from_nanos(1)),
            None
        );
        assert_eq!(ack_timeout_code(Duration::ZERO), None);
    }

    #[test]
    fn rnr_timers_round_up_to_the_next_step() {
        assert_eq!(rnr_timer_code(Duration::from_micros(10)), Some(1));
        assert_eq!(rnr_timer_code(Duration::from_micros(11)), Some(2));
        // Step 12 of the IBTA table: 640 µs.
        assert_eq!(rnr_timer_code(Duration::from_micros(640)), Some(12));
        assert_eq!(rnr_timer_code(Duration::from_micros(491_521)), Some(0));
        assert_eq!(rnr_timer_code(Duration::from_micros(655_360)), Some(0));
        assert_eq!(rnr_timer_code(Duration::from_micros(655_361)), None);
        assert_eq!(rnr_timer_code(Duration::from_micros(9)), None);
    }

    #[test]
    fn check_names_the_field_out_of_range() {
        let limits = DeviceLimits {
            max_qp: 1,
            max_qp_wr: 1,
            max_sge: 1,
            max_cq: 1,
            max_cqe: 1,
            max_mr: 1,
            max_mr_size: 1,
            max_pd: 1,
            max_inline_data: 0,
            max_msg_size: 1,
            max_responder_resources: 4,
            max_initiator_depth: 2,
        };
        let ok = ConnParams::default();
        ok.check(&limits, 56).unwrap();
        assert_eq!(ok.initiator_depth_on(&limits), 2);
        assert_eq!(ok.responder_resources_on(&limits), 4);
        let cases: [(ConnParams, &str); 6] = [
            (
                ConnParams {
                    private_data: vec![0; 57],
                    ..ConnParams::default()
                },
                "private data",
            ),
            (
                ConnParams {
                    rnr_retry_count: 8,
                    ..ConnParams::default()
                },
                "retry counts",
            ),
            (
                ConnParams {
                    initiator_depth: Some(3),
                    ..ConnParams::default()
                },
                "initiator depth 3",
            ),
            (
                ConnParams {
                    responder_resources: Some(5),
                    ..ConnParams::default()
                },
                "responder resources 5",
            ),
            (
                ConnParams {
                    ack_timeout: Some(Duration::from_nanos(1)),
                    ..ConnParams::default()
                },
                "ACK timeout",
            ),
            (
                ConnParams {
                    min_rnr_timer: Some(Duration::from_secs(1)),
                    ..ConnParams::default()
                },
                "RNR timer",
            ),
        ];
        for (params, says) in cases {
            let e = params.check(&limits, 56).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(says), "{e} does not say {says}");
        }
    }
}
