//! The RDMA connection manager by IP address: listen, connect, accept, reject, private data,
//! disconnect, and the events that say how each went.
//!
//! The QPs are the application's own ([`Qp`](crate::objects::Qp)), created on its own device context,
//! not by librdmacm; the CM is told their numbers, and computes the attributes for each state
//! move ([`CmId::qp_attr`]). On InfiniBand/RoCE the application moves its QP to INIT, RTR and
//! RTS with them; on iWARP only to INIT — the kernel's iw_cm moves it to RTS when the MPA
//! exchange completes (and applying RTR or RTS attributes by hand fails).
//!
//! Every event is copied and acknowledged inside [`CmChannel::next_event`], so destroying an ID
//! (which waits for its unacknowledged events) never blocks, and the private data is owned.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyverbs::{Error, ErrorKind};
use rdma_mummy_sys::{rdma_cm_id, rdma_event_channel};

use crate::error::{call_failed, errno_kind};
use crate::objects::QpState;
use crate::raw::cm as raw;
pub use crate::raw::cm::ConnParam;

/// What a CM event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmEventKind {
    /// The destination address resolved to a device.
    AddrResolved,
    /// The address could not be resolved.
    AddrError,
    /// A route to the destination was found.
    RouteResolved,
    /// No route.
    RouteError,
    /// A peer asks to connect (on a listener; the event carries the new ID).
    ConnectRequest,
    /// The peer accepted (InfiniBand/RoCE active side): move to RTR and RTS, then establish.
    ConnectResponse,
    /// The connection failed while being set up.
    ConnectError,
    /// The peer did not answer.
    Unreachable,
    /// The peer rejected the request (the status is the reason; private data may come with it).
    Rejected,
    /// The connection is up.
    Established,
    /// The connection is gone.
    Disconnected,
    /// The device the ID is bound to is being removed: release everything on it.
    DeviceRemoval,
    /// The address the ID is bound to moved to another device.
    AddrChange,
    /// The ID left time-wait (InfiniBand); its QP number may be reused.
    TimewaitExit,
    /// An event type this crate does not know (kept, never misread).
    Other(u32),
}

impl CmEventKind {
    fn from_raw(n: u32) -> CmEventKind {
        match n {
            0 => CmEventKind::AddrResolved,
            1 => CmEventKind::AddrError,
            2 => CmEventKind::RouteResolved,
            3 => CmEventKind::RouteError,
            4 => CmEventKind::ConnectRequest,
            5 => CmEventKind::ConnectResponse,
            6 => CmEventKind::ConnectError,
            7 => CmEventKind::Unreachable,
            8 => CmEventKind::Rejected,
            9 => CmEventKind::Established,
            10 => CmEventKind::Disconnected,
            11 => CmEventKind::DeviceRemoval,
            14 => CmEventKind::AddrChange,
            15 => CmEventKind::TimewaitExit,
            other => CmEventKind::Other(other),
        }
    }
}

/// A CM event, owned: acknowledged before it was returned.
#[derive(Debug)]
pub struct CmEvent {
    /// What happened.
    pub kind: CmEventKind,
    /// The event's status: 0, a negative errno, or for [`CmEventKind::Rejected`] the reject
    /// reason the transport reported.
    pub status: i32,
    /// The token of the ID it is about ([`CmId::token`]); for a connect request, the new ID's.
    pub token: u64,
    /// For a connect request: the new ID, owned by the receiver, to accept or reject.
    pub new_id: Option<CmId>,
    /// For a connect request: the token of the listening ID it arrived on.
    pub listener: Option<u64>,
    /// The peer's private data (connect request, response, established, rejected). On
    /// InfiniBand/RoCE the CM delivers a fixed-size zero-padded block, not the length sent.
    pub private_data: Vec<u8>,
    /// The peer's connection parameters (connect request and response).
    pub peer: ConnParam,
}

/// An event channel: the IDs created on it report their events here. One reader at a time.
pub struct CmChannel {
    raw: NonNull<rdma_event_channel>,
    next_token: AtomicU64,
    reader: Mutex<()>,
    /// Events [`CmChannel::expect`] read while it waited for another ID's: returned first by
    /// [`CmChannel::next_event`] and searched by `expect`, never dropped (a dropped connect
    /// request rejects its peer; a dropped DEVICE_REMOVAL leaves its ID holding the device).
    held: Mutex<std::collections::VecDeque<CmEvent>>,
}

// SAFETY: the channel pointer is used from any thread through librdmacm, which locks
// internally; reading events is serialised by `reader`.
unsafe impl Send for CmChannel {}
// SAFETY: as above.
unsafe impl Sync for CmChannel {}

impl std::fmt::Debug for CmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmChannel").field("fd", &self.fd()).finish()
    }
}

impl Drop for CmChannel {
    fn drop(&mut self) {
        // SAFETY: every ID holds an Arc of its channel, so none is left; not used afterwards.
        unsafe { raw::destroy_channel(self.raw) };
    }
}

/// How often the janitor looks for devices that went away.
pub const JANITOR_INTERVAL: Duration = Duration::from_millis(200);

/// How many looks in a row, after a removal, the janitor has librdmacm forget removed devices
/// (one second's worth).
const JANITOR_REPEATS: u32 = 5;

/// Starts, once per process, the thread that keeps librdmacm from holding removed devices open:
/// it lists the kernel's devices every [`JANITOR_INTERVAL`] (RDMA netlink: cheap, opens nothing)
/// and, when one has gone, has librdmacm forget it ([`raw::forget_removed_devices`]). Without it
/// a process that ever used the CM on a device would keep that device's `rdma link delete`
/// waiting forever, whatever it released.
fn start_janitor() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("anyverbs-cm-janitor".into())
            .spawn(|| {
                let listed = || -> Option<Vec<u32>> {
                    crate::netlink::list_devices(Duration::from_secs(1))
                        .ok()
                        .map(|l| l.into_iter().map(|d| d.index).collect())
                };
                let mut last = listed().unwrap_or_default();
                // After a removal, librdmacm is asked again for a while: the device leaves the
                // kernel's netlink list a moment before libibverbs' sysfs view of it goes, and a
                // look in between would find it still there.
                let mut again = 0;
                loop {
                    std::thread::sleep(JANITOR_INTERVAL);
                    let Some(now) = listed() else { continue };
                    if last.iter().any(|i| !now.contains(i)) {
                        again = JANITOR_REPEATS;
                    }
                    if again > 0 {
                        forget_removed_devices();
                        again -= 1;
                    }
                    last = now;
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "could not start the CM janitor: removed devices may stay open");
        }
    });
}

/// Has librdmacm close its context on every device that is gone; see
/// [`raw::forget_removed_devices`]. Called by the removal watch once it let go of its device, and
/// every [`JANITOR_INTERVAL`] after a device disappears.
pub fn forget_removed_devices() {
    // rdma_get_devices lists the devices through libibverbs, which allocates a device it sees
    // for the first time (one re-added after a reset) in the calling thread's arena: done on
    // the device-list thread like every other listing (see crate::device's on_lister).
    if let Err(e) = crate::device::on_lister(raw::forget_removed_devices) {
        tracing::warn!(%e, "could not have librdmacm forget removed devices");
    }
}

impl CmChannel {
    /// A new channel (its fd non-blocking and close-on-exec).
    pub fn new() -> Result<Arc<CmChannel>, Error> {
        start_janitor();
        // librdmacm's first init lists the devices on this thread: the device-list thread
        // lists them first, so their structs are its (see crate::device's on_lister).
        let _ = crate::device::availability();
        let raw = raw::create_channel()
            .map_err(|errno| call_failed("rdma_create_event_channel", errno))?;
        Ok(Arc::new(CmChannel {
            raw,
            next_token: AtomicU64::new(1),
            reader: Mutex::new(()),
            held: Mutex::new(std::collections::VecDeque::new()),
        }))
    }

    /// The fd, readable while an event waits.
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live as long as self.
        unsafe { raw::channel_fd(self.raw) }
    }

    fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// A new reliable-connected ID on this channel.
    pub fn create_id(self: &Arc<Self>) -> Result<CmId, Error> {
        let token = self.token();
        // SAFETY: the channel is live and outlives the ID (the ID holds an Arc of it).
        let raw = unsafe { raw::create_id(self.raw, token) }
            .map_err(|errno| call_failed("rdma_create_id", errno))?;
        Ok(CmId {
            raw,
            token,
            channel: self.clone(),
        })
    }

    /// The next event, waiting until `deadline`; `Ok(None)` when it passed.
    pub fn next_event(self: &Arc<Self>, deadline: Instant) -> Result<Option<CmEvent>, Error> {
        if let Some(e) = self.held().pop_front() {
            return Ok(Some(e));
        }
        self.read_event(deadline)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<CmEvent>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next event from librdmacm itself (not from those `expect` held).
    fn read_event(self: &Arc<Self>, deadline: Instant) -> Result<Option<CmEvent>, Error> {
        let _reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut rewait = crate::wait::Rewait::new();
        loop {
            // SAFETY: the channel is live; `reader` makes this the only reader.
            match unsafe { raw::next_event(self.raw) } {
                Ok(Some(e)) => return Ok(Some(self.own(e))),
                Ok(None) => {}
                Err(errno) => return Err(call_failed("rdma_get_cm_event", errno)),
            }
            if !rewait.wait(self.fd(), deadline)? {
                return Ok(None);
            }
        }
    }

    fn own(self: &Arc<Self>, e: raw::RawCmEvent) -> CmEvent {
        let kind = CmEventKind::from_raw(e.event);
        let listener = (e.event == raw::EVENT_CONNECT_REQUEST).then_some(e.token);
        let (token, new_id) = if e.event == raw::EVENT_CONNECT_REQUEST {
            // A connect request's ID is new and inherited the listener's context: give it a
            // token of its own and an owner.
            let token = self.token();
            // SAFETY: the new ID is live and nobody else uses it yet.
            unsafe { raw::set_token(e.id, token) };
            (
                token,
                Some(CmId {
                    raw: e.id,
                    token,
                    channel: self.clone(),
                }),
            )
        } else {
            // The token was read before the event was acknowledged: from then on the ID's owner
            // (any thread: CmId is Send + Sync) may have destroyed it, and reading it here
            // would be a use after free.
            (e.token, None)
        };
        CmEvent {
            kind,
            status: e.status,
            token,
            new_id,
            listener,
            private_data: e.private_data,
            peer: e.peer,
        }
    }

    /// Waits for the next event about `id`, which must be `wanted`; any other kind about it is
    /// an error naming what came instead. Events about other IDs of the channel are held, in
    /// order, for the next [`next_event`](CmChannel::next_event) or `expect` about them —
    /// never dropped. A connect request counts as about `id` when `wanted` is
    /// [`CmEventKind::ConnectRequest`] (its token is the new ID's, not the listener's).
    pub fn expect(
        self: &Arc<Self>,
        id: &CmId,
        wanted: CmEventKind,
        deadline: Instant,
    ) -> Result<CmEvent, Error> {
        let about = |e: &CmEvent| {
            e.token == id.token
                || (wanted == CmEventKind::ConnectRequest && e.kind == CmEventKind::ConnectRequest)
        };
        let judge = |e: CmEvent| {
            if e.kind == wanted {
                Ok(e)
            } else {
                Err(unexpected(wanted, &e))
            }
        };
        {
            let mut held = self.held();
            if let Some(at) = held.iter().position(about) {
                let e = held.remove(at).expect("the position is in the queue");
                return judge(e);
            }
        }
        loop {
            match self.read_event(deadline)? {
                None => {
                    return Err(Error::timed_out(format!(
                        "no {wanted:?} event for CM ID {} in time",
                        id.token
                    )));
                }
                Some(e) if about(&e) => return judge(e),
                Some(e) => self.held().push_back(e),
            }
        }
    }
}

fn unexpected(wanted: CmEventKind, e: &CmEvent) -> Error {
    let kind = match e.kind {
        CmEventKind::Rejected => ErrorKind::ConnectionRefused,
        CmEventKind::Unreachable | CmEventKind::AddrError | CmEventKind::RouteError => {
            ErrorKind::Unreachable
        }
        CmEventKind::DeviceRemoval => ErrorKind::DeviceLost,
        CmEventKind::ConnectError => ErrorKind::RemoteFailure,
        _ if e.status < 0 => errno_kind(-e.status),
        _ => ErrorKind::Other,
    };
    Error::new(
        kind,
        format!(
            "expected {wanted:?}, got {:?} (status {})",
            e.kind, e.status
        ),
    )
}

/// A CM ID (`rdma_cm_id`), destroyed when dropped.
pub struct CmId {
    raw: NonNull<rdma_cm_id>,
    token: u64,
    channel: Arc<CmChannel>,
}

// SAFETY: librdmacm's calls on an ID are safe from any thread (it locks internally); the ID is
// owned by this value alone.
unsafe impl Send for CmId {}
// SAFETY: as above.
unsafe impl Sync for CmId {}

impl std::fmt::Debug for CmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmId").field("token", &self.token).finish()
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the ID is owned by self and not used afterwards; its events were acknowledged
        // when read, so rdma_destroy_id does not wait.
        let _ = unsafe { raw::destroy_id(self.raw) };
    }
}

fn ms(timeout: Duration) -> i32 {
    timeout.as_millis().clamp(1, i32::MAX as u128) as i32
}

impl CmId {
    /// The token events carry for this ID.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The channel its events arrive on.
    pub fn channel(&self) -> &Arc<CmChannel> {
        &self.channel
    }

    /// Binds to a local address (port 0: any free port). Binding to a device's IP address binds
    /// the ID to that device.
    pub fn bind(&self, addr: SocketAddr) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::bind(self.raw, addr) }
            .map_err(|errno| call_failed(&format!("rdma_bind_addr({addr})"), errno))
    }

    /// Listens (after [`bind`](CmId::bind)).
    pub fn listen(&self, backlog: i32) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::listen(self.raw, backlog) }.map_err(|errno| call_failed("rdma_listen", errno))
    }

    /// Starts resolving `dst` (from `src`, or any local address); `AddrResolved` follows.
    pub fn resolve_addr(
        &self,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        timeout: Duration,
    ) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::resolve_addr(self.raw, src, dst, ms(timeout)) }
            .map_err(|errno| call_failed(&format!("rdma_resolve_addr({dst})"), errno))
    }

    /// Starts resolving the route; `RouteResolved` follows.
    pub fn resolve_route(&self, timeout: Duration) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::resolve_route(self.raw, ms(timeout)) }
            .map_err(|errno| call_failed("rdma_resolve_route", errno))
    }

    /// Sends a connection request for the QP `param.qp_num` with `private_data`.
    pub fn connect(&self, param: &ConnParam, private_data: &[u8]) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::connect(self.raw, param, private_data) }
            .map_err(|errno| call_failed("rdma_connect", errno))
    }

    /// Accepts a connection request (this ID came with it) for the QP `param.qp_num`.
    pub fn accept(&self, param: &ConnParam, private_data: &[u8]) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::accept(self.raw, param, private_data) }
            .map_err(|errno| call_failed("rdma_accept", errno))
    }

    /// Rejects a connection request (this ID came with it), with `private_data` for the peer.
    pub fn reject(&self, private_data: &[u8]) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::reject(self.raw, private_data) }
            .map_err(|errno| call_failed("rdma_reject", errno))
    }

    /// Completes an InfiniBand/RoCE connection on the active side, after `ConnectResponse` and
    /// the moves to RTR and RTS.
    pub fn establish(&self) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::establish(self.raw) }.map_err(|errno| call_failed("rdma_establish", errno))
    }

    /// Disconnects; both sides get `Disconnected`.
    pub fn disconnect(&self) -> Result<(), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::disconnect(self.raw) }.map_err(|errno| call_failed("rdma_disconnect", errno))
    }

    /// The attributes and mask that move this connection's QP to `state`
    /// (`rdma_init_qp_attr`), for [`Qp::to_state_with`](crate::objects::Qp::to_state_with).
    pub fn qp_attr(&self, state: QpState) -> Result<(rdma_mummy_sys::ibv_qp_attr, i32), Error> {
        // SAFETY: the ID is live.
        unsafe { raw::init_qp_attr(self.raw, state.number()) }
            .map_err(|errno| call_failed(&format!("rdma_init_qp_attr({state:?})"), errno))
    }

    /// The device the ID is bound to — name, node GUID (host order) and port — once it is.
    pub fn device(&self) -> Option<(String, u64, u8)> {
        // SAFETY: the ID is live.
        unsafe { raw::bound_device(self.raw) }
    }

    /// The local and peer addresses.
    pub fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        // SAFETY: the ID is live.
        unsafe { raw::addresses(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_event_types_are_kept_not_misread() {
        assert_eq!(CmEventKind::from_raw(11), CmEventKind::DeviceRemoval);
        assert_eq!(CmEventKind::from_raw(99), CmEventKind::Other(99));
    }

    #[test]
    fn an_unexpected_reject_is_connection_refused() {
        let e = CmEvent {
            kind: CmEventKind::Rejected,
            status: 28,
            token: 1,
            new_id: None,
            listener: None,
            private_data: Vec::new(),
            peer: ConnParam::default(),
        };
        assert_eq!(
            unexpected(CmEventKind::Established, &e).kind(),
            ErrorKind::ConnectionRefused
        );
    }
}
