//! Connections through the RDMA CM: the active side's steps (resolve the address and the route,
//! request, and on InfiniBand/RoCE move the QP to RTR and RTS and establish), the passive side's
//! accept, and disconnect.
//!
//! The active side's steps run on the device's CM event thread as each event arrives ([`Driver`]),
//! so a connection makes progress while its owner does something else — such as accepting it on
//! the same thread, as a loopback test does; [`wait`] only waits for the outcome.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyverbs::cm::{
    MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, Rejected, ack_timeout_code, rnr_timer_code,
};
use anyverbs::{ConnParams, Connection, Error, ErrorKind, QpState, Result};
use rdma_mummy_sys::ibv_qp_attr_mask;

use super::device::DeviceCore;
use super::hub::Route;
use super::qp::{QpShared, RawVerbsQp};
use crate::cm::{CmEvent, CmEventKind, CmId, ConnParam};
use crate::objects::QpState as VState;

/// How long address and route resolution may take each.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an iWARP accept waits for the connection (the MPA exchange runs in the kernel).
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a connection stands.
#[derive(Debug)]
enum Phase {
    ResolvingAddress,
    ResolvingRoute,
    Requested,
    /// Accepted on iWARP: the kernel finishes the MPA exchange, then reports it established.
    Accepting(Connection),
    Established(Connection),
    Failed(ErrorKind, String, Option<Vec<u8>>),
}

/// A QP's connection: its CM ID and how far it got.
pub(crate) struct Conn {
    id: CmId,
    phase: Phase,
    /// The peer (or the network) ended the established connection: the CM reported it
    /// disconnected.
    peer_closed: bool,
    remote: SocketAddr,
    params: ConnParams,
}

impl Conn {
    fn fail(&mut self, kind: ErrorKind, message: String) -> Error {
        self.phase = Phase::Failed(kind, message.clone(), None);
        Error::new(kind, message)
    }
}

fn failure(kind: ErrorKind, message: &str, rejected: &Option<Vec<u8>>) -> Error {
    let e = Error::new(kind, message.to_owned());
    match rejected {
        Some(data) => e.with_source(Rejected {
            private_data: data.clone(),
        }),
        None => e,
    }
}

/// A QP's connection slot, and the signal that it changed.
#[derive(Default)]
pub(crate) struct ConnCell {
    conn: Mutex<Option<Conn>>,
    changed: Condvar,
}

impl ConnCell {
    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the CM event thread drives a QP's connection with.
pub(crate) struct Driver {
    core: Weak<DeviceCore>,
    qp: Weak<QpShared>,
    num: u32,
    cell: Arc<ConnCell>,
}

impl Driver {
    /// Takes the connection one step further for `event`.
    pub(crate) fn on_event(&self, event: CmEvent) {
        let (Some(core), Some(qp)) = (self.core.upgrade(), self.qp.upgrade()) else {
            return;
        };
        let mut guard = self.cell.lock();
        if let Some(conn) = guard.as_mut()
            && let Err(e) = step(&core, &qp, self.num, conn, event)
            && !matches!(conn.phase, Phase::Failed(..))
        {
            conn.phase = Phase::Failed(e.kind(), e.message().to_owned(), None);
        }
        drop(guard);
        self.cell.changed.notify_all();
    }
}

impl RawVerbsQp {
    /// Ends the QP's connection: its ID is destroyed (on a connected InfiniBand ID the kernel
    /// sends a DREQ, which the peer reports as disconnected).
    pub(crate) fn end_connection(&self) {
        let conn = self.conn.lock().take();
        if let Some(conn) = conn {
            self.core.hub.unroute(conn.id.token());
        }
    }

    fn route(&self, id: &CmId) {
        self.core.hub.route(
            id.token(),
            Route::Conn {
                driver: Arc::new(Driver {
                    core: Arc::downgrade(&self.core),
                    qp: Arc::downgrade(&self.shared),
                    num: self.shared_num(),
                    cell: self.conn.clone(),
                }),
                qp_num: self.shared_num(),
            },
        );
    }
}

/// The credits a side uses: what the ULP asked for, else the device's most, never more than the
/// peer offers (`offered`, when known).
fn credits(asked: Option<u8>, device_max: u8, offered: Option<u8>) -> u8 {
    asked.unwrap_or_else(|| offered.map_or(device_max, |o| o.min(device_max)))
}

/// Moves `qp` to `state` with the CM's attributes for `id`, with the ULP's timers set on them.
fn move_with_cm(qp: &QpShared, id: &CmId, state: VState, params: &ConnParams) -> Result<()> {
    let (mut attr, mut mask) = id.qp_attr(state)?;
    if state == VState::Rtr
        && let Some(code) = params.min_rnr_timer.and_then(rnr_timer_code)
    {
        attr.min_rnr_timer = code;
        mask |= ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER.0 as i32;
    }
    if state == VState::Rts
        && let Some(code) = params.ack_timeout.and_then(ack_timeout_code)
    {
        attr.timeout = code;
        mask |= ibv_qp_attr_mask::IBV_QP_TIMEOUT.0 as i32;
    }
    let mut guard = qp.qp.write().unwrap_or_else(|e| e.into_inner());
    let q = guard
        .as_mut()
        .ok_or_else(|| Error::destroyed("queue pair"))?;
    q.to_state_with(state, &attr, mask)
}

/// Whether `qp` may start a connection: in its initial state or INIT, with none in progress.
pub(crate) fn check_unconnected(qp: &RawVerbsQp) -> Result<()> {
    let guard = qp.conn.lock();
    check_unconnected_locked(qp, &guard)
}

/// [`check_unconnected`] with the connection's lock held (`conn` is what it guards).
fn check_unconnected_locked(qp: &RawVerbsQp, conn: &Option<Conn>) -> Result<()> {
    if conn.is_some() {
        return Err(Error::invalid_state(
            "the QP already has a connection (in progress, made or failed): reset it first",
        ));
    }
    let state = qp.verbs_state()?;
    if !matches!(state, VState::Reset | VState::Init) {
        return Err(Error::invalid_state(format!(
            "QP {} is in {}: only a QP that was never connected can connect",
            qp.shared_num(),
            qp.core.state_of(state)
        )));
    }
    Ok(())
}

/// Starts connecting `qp` to `remote`: the address is resolved from the device's own address,
/// so the connection leaves through this device.
pub(crate) fn start(qp: &RawVerbsQp, remote: SocketAddr, params: &ConnParams) -> Result<()> {
    let core = &qp.core;
    core.check()?;
    params.check(&core.info.limits, MAX_CONNECT_PRIVATE_DATA)?;
    let source = SocketAddr::new(core.address()?, 0);
    // Checked and installed under one hold of the connection's lock: of two connects racing on
    // one QP, one starts and the other is refused.
    let mut guard = qp.conn.lock();
    check_unconnected_locked(qp, &guard)?;
    let id = core.hub.create_id()?;
    let token = id.token();
    // In place before the first event can arrive.
    *guard = Some(Conn {
        id,
        peer_closed: false,
        phase: Phase::ResolvingAddress,
        remote,
        params: params.clone(),
    });
    let conn = guard.as_mut().expect("just put there");
    qp.route(&conn.id);
    if let Err(e) = conn.id.resolve_addr(Some(source), remote, RESOLVE_TIMEOUT) {
        *guard = None;
        core.hub.unroute(token);
        return Err(e);
    }
    Ok(())
}

/// Waits until `qp`'s connection is established or refused, or `deadline` passes.
pub(crate) fn wait(qp: &RawVerbsQp, deadline: Instant) -> Result<Connection> {
    let mut guard = qp.conn.lock();
    loop {
        qp.core.check()?;
        let Some(conn) = guard.as_ref() else {
            return Err(Error::invalid_state(
                "the QP is not connecting: call connect first",
            ));
        };
        match &conn.phase {
            Phase::Established(c) => return Ok(c.clone()),
            Phase::Failed(kind, message, rejected) => {
                return Err(failure(*kind, message, rejected));
            }
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::timed_out(
                "the connection was not established by the deadline",
            ));
        }
        // Short slices: a device lost meanwhile is noticed between them.
        let slice = (deadline - now).min(crate::events::POLL_INTERVAL);
        guard = qp
            .conn
            .changed
            .wait_timeout(guard, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// What an event means for an active connection in `conn.phase`.
fn step(
    core: &DeviceCore,
    qp: &QpShared,
    qp_num: u32,
    conn: &mut Conn,
    event: CmEvent,
) -> Result<()> {
    match (event.kind, &conn.phase) {
        // An established connection stays what it was: its end is an event of the device
        // (reported by the hub), and the QP's state is the device's to change.
        (CmEventKind::Disconnected, Phase::Established(_)) => {
            conn.peer_closed = true;
            Ok(())
        }
        (_, Phase::Established(_)) => Ok(()),
        (CmEventKind::AddrResolved, Phase::ResolvingAddress) => {
            let here = &core.info.identity;
            match conn.id.device() {
                Some((name, guid, _)) if name == here.name && guid == here.node_guid.0 => {}
                other => {
                    let through = other.map_or("no device".to_owned(), |(n, _, _)| n);
                    return Err(conn.fail(
                        ErrorKind::Unreachable,
                        format!(
                            "{} is reached through {through}, not through {}",
                            conn.remote, here.name
                        ),
                    ));
                }
            }
            conn.id.resolve_route(RESOLVE_TIMEOUT)?;
            conn.phase = Phase::ResolvingRoute;
            Ok(())
        }
        (CmEventKind::RouteResolved, Phase::ResolvingRoute) => {
            move_with_cm(qp, &conn.id, VState::Init, &conn.params)?;
            let limits = &core.info.limits;
            let param = ConnParam {
                qp_num,
                responder_resources: credits(
                    conn.params.responder_resources,
                    limits.max_responder_resources,
                    None,
                ),
                initiator_depth: credits(
                    conn.params.initiator_depth,
                    limits.max_initiator_depth,
                    None,
                ),
                retry_count: conn.params.retry_count,
                rnr_retry_count: conn.params.rnr_retry_count,
            };
            conn.id.connect(&param, &conn.params.private_data)?;
            conn.phase = Phase::Requested;
            Ok(())
        }
        (CmEventKind::ConnectResponse, Phase::Requested) if core.flavor.app_moves_to_rts => {
            // INIT again first, as librdmacm does: before the connection existed, the CM's INIT
            // attributes granted the peer no remote access; now they carry the negotiated
            // rights (RDMA READ and atomics where responder resources were granted).
            move_with_cm(qp, &conn.id, VState::Init, &conn.params)?;
            move_with_cm(qp, &conn.id, VState::Rtr, &conn.params)?;
            move_with_cm(qp, &conn.id, VState::Rts, &conn.params)?;
            conn.id.establish()?;
            conn.phase = Phase::Established(connection(conn, &event));
            Ok(())
        }
        (CmEventKind::Established, Phase::Requested) => {
            // The kernel's CM moved the QP to RTS (iWARP).
            qp.record(VState::Rts);
            conn.phase = Phase::Established(connection(conn, &event));
            Ok(())
        }
        (CmEventKind::Established, Phase::Accepting(mine)) => {
            qp.record(VState::Rts);
            conn.phase = Phase::Established(mine.clone());
            Ok(())
        }
        (CmEventKind::Rejected, _) => {
            let message = format!("{} rejected the connection", conn.remote);
            conn.phase = Phase::Failed(
                ErrorKind::ConnectionRefused,
                message.clone(),
                Some(event.private_data.clone()),
            );
            Err(failure(
                ErrorKind::ConnectionRefused,
                &message,
                &Some(event.private_data),
            ))
        }
        (CmEventKind::DeviceRemoval, _) => Err(conn.fail(
            ErrorKind::DeviceLost,
            format!("{} was removed while connecting", core.info.identity.name),
        )),
        (
            CmEventKind::AddrError
            | CmEventKind::RouteError
            | CmEventKind::Unreachable
            | CmEventKind::ConnectError,
            _,
        ) => Err(conn.fail(
            ErrorKind::Unreachable,
            format!(
                "connecting to {}: {:?} (status {})",
                conn.remote, event.kind, event.status
            ),
        )),
        (CmEventKind::Disconnected, _) => Err(conn.fail(
            ErrorKind::ConnectionRefused,
            format!(
                "{} ended the connection while it was being set up",
                conn.remote
            ),
        )),
        // Nothing else moves an active connection forward.
        _ => Ok(()),
    }
}

/// What the active side learned: the peer's QP, private data and credits (the CM reports them
/// from the receiver's side already).
fn connection(conn: &Conn, event: &CmEvent) -> Connection {
    Connection {
        peer: conn.id.addresses().1.unwrap_or(conn.remote),
        peer_qp_num: event.peer.qp_num,
        private_data: event.private_data.clone(),
        initiator_depth: event.peer.initiator_depth,
        responder_resources: event.peer.responder_resources,
    }
}

/// What a listener knows of a request it hands to [`accept`].
pub(crate) struct Request {
    pub(crate) id: CmId,
    pub(crate) peer: SocketAddr,
    pub(crate) peer_qp_num: u32,
    pub(crate) private_data: Vec<u8>,
    /// The requester's initiator depth (the most this side may serve).
    pub(crate) initiator_depth: u8,
    /// The requester's responder resources (the most this side may have outstanding).
    pub(crate) responder_resources: u8,
}

/// Accepts `request` onto `qp`: the QP is moved with the CM's attributes (to RTS on
/// InfiniBand/RoCE; on iWARP the kernel does it once the MPA exchange is done), the CM answers
/// the requester, and the accept returns once the CM reports the connection established
/// (bounded).
pub(crate) fn accept(qp: &RawVerbsQp, request: Request, params: &ConnParams) -> Result<()> {
    let core: &Arc<DeviceCore> = &qp.core;
    core.check()?;
    params.check(&core.info.limits, MAX_ACCEPT_PRIVATE_DATA)?;
    let Request {
        id,
        peer,
        peer_qp_num,
        private_data,
        initiator_depth,
        responder_resources,
    } = request;
    let limits = &core.info.limits;
    let mine = Connection {
        peer,
        peer_qp_num,
        private_data,
        initiator_depth: credits(
            params.initiator_depth,
            limits.max_initiator_depth,
            Some(responder_resources),
        ),
        responder_resources: credits(
            params.responder_resources,
            limits.max_responder_resources,
            Some(initiator_depth),
        ),
    };
    let token = id.token();
    // Checked again and installed under one hold of the lock; in place (and routed) before
    // the CM can report on it.
    let mut guard = qp.conn.lock();
    check_unconnected_locked(qp, &guard)?;
    *guard = Some(Conn {
        id,
        peer_closed: false,
        phase: Phase::Requested,
        remote: peer,
        params: params.clone(),
    });
    let conn = guard.as_mut().expect("just put there");
    qp.route(&conn.id);
    let run = |conn: &Conn| -> Result<()> {
        move_with_cm(&qp.shared, &conn.id, VState::Init, params)?;
        if core.flavor.app_moves_to_rts {
            move_with_cm(&qp.shared, &conn.id, VState::Rtr, params)?;
            move_with_cm(&qp.shared, &conn.id, VState::Rts, params)?;
        }
        let param = ConnParam {
            qp_num: qp.shared_num(),
            responder_resources: mine.responder_resources,
            initiator_depth: mine.initiator_depth,
            retry_count: params.retry_count,
            rnr_retry_count: params.rnr_retry_count,
        };
        conn.id.accept(&param, &params.private_data)
    };
    if let Err(e) = run(conn) {
        *guard = None;
        core.hub.unroute(token);
        return Err(e);
    }
    // Established once the CM says so (the requester's RTU on InfiniBand/RoCE, the end of the
    // MPA exchange on iWARP): until then the kernel would not send a DREQ for a disconnect,
    // and the requester would never hear of it.
    conn.phase = Phase::Accepting(mine);
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        core.check()?;
        let conn = guard
            .as_mut()
            .expect("the connection stays while accepting");
        match &conn.phase {
            Phase::Established(_) => return Ok(()),
            Phase::Failed(kind, message, rejected) => {
                return Err(failure(*kind, message, rejected));
            }
            _ => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(conn.fail(
                ErrorKind::TimedOut,
                format!("the connection from {peer} was not established in time"),
            ));
        }
        let slice = (deadline - now).min(crate::events::POLL_INTERVAL);
        guard = qp
            .conn
            .changed
            .wait_timeout(guard, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Ends `qp`'s connection: on InfiniBand/RoCE the QP goes to ERROR (as librdmacm's own
/// disconnect does) and the CM sends a DREQ; on iWARP an orderly close is a graceful
/// disconnect, an abrupt one ERROR first.
pub(crate) fn disconnect(qp: &RawVerbsQp, orderly: bool) -> Result<QpState> {
    qp.core.check()?;
    let conn = qp.conn.lock();
    let Some(conn) = conn
        .as_ref()
        .filter(|c| matches!(c.phase, Phase::Established(_)))
    else {
        return Err(Error::invalid_state(
            "disconnect needs a QP that was connected",
        ));
    };
    if qp.core.flavor.app_moves_to_rts || !orderly {
        qp.with_qp(|q| q.to_state(VState::Error))?;
    }
    // Once the peer disconnected, the CM has answered it already; this side's request may be
    // refused, and there is nothing left to tell.
    if let Err(e) = conn.id.disconnect()
        && !conn.peer_closed
    {
        return Err(e);
    }
    Ok(qp.core.state_of(qp.verbs_state()?))
}
