//! librdmacm calls on raw `rdma_cm_id`s and event channels, and the copy of a CM event taken
//! before it is acknowledged. The safe owners are [`crate::cm`]'s `CmChannel` and `CmId`.

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ptr::{self, NonNull};

use rdma_mummy_sys::{
    ibv_qp_attr, rdma_accept, rdma_ack_cm_event, rdma_bind_addr, rdma_cm_event, rdma_cm_id,
    rdma_conn_param, rdma_connect, rdma_create_event_channel, rdma_create_id,
    rdma_destroy_event_channel, rdma_destroy_id, rdma_disconnect, rdma_establish,
    rdma_event_channel, rdma_get_cm_event, rdma_init_qp_attr, rdma_listen, rdma_port_space,
    rdma_reject, rdma_resolve_addr, rdma_resolve_route,
};

use crate::error::last_errno;

/// A socket address in the C form librdmacm takes.
pub struct RawSockAddr {
    storage: libc::sockaddr_storage,
}

impl RawSockAddr {
    /// The C form of `addr`.
    pub fn new(addr: SocketAddr) -> RawSockAddr {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (unspecified) value.
        let mut storage: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr_*.
                unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above.
                unsafe { ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            }
        }
        RawSockAddr { storage }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

/// Reads a `struct sockaddr` librdmacm filled in (IPv4 or IPv6 only).
///
/// # Safety
/// `sa` must point to a readable sockaddr_storage-sized buffer.
unsafe fn read_sockaddr(sa: *const libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: readable, per the contract; the family field is at the start of every sockaddr.
    let family = unsafe { (*sa).ss_family } as c_int;
    match family {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

/// Creates an event channel whose fd is non-blocking and close-on-exec.
pub fn create_channel() -> Result<NonNull<rdma_event_channel>, i32> {
    // SAFETY: no arguments; returns a new channel or null with errno set.
    let channel = NonNull::new(unsafe { rdma_create_event_channel() }).ok_or_else(last_errno)?;
    // SAFETY: the channel was just created and is live; fd is a plain field.
    let fd = unsafe { channel.as_ref().fd };
    // SAFETY: fcntl on the channel's own fd changes only its flags.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        fl >= 0
            && libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
            && libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) == 0
    };
    if !ok {
        let errno = last_errno();
        // SAFETY: the channel is ours and has no IDs yet.
        unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
        return Err(errno);
    }
    Ok(channel)
}

/// The channel's file descriptor (readable while an event waits).
///
/// # Safety
/// `channel` must be live.
pub unsafe fn channel_fd(channel: NonNull<rdma_event_channel>) -> c_int {
    // SAFETY: live per the contract; a plain field.
    unsafe { channel.as_ref().fd }
}

/// Destroys an event channel.
///
/// # Safety
/// `channel` must be live, with no IDs left on it, and not used afterwards.
pub unsafe fn destroy_channel(channel: NonNull<rdma_event_channel>) {
    // SAFETY: the contract.
    unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
}

/// Creates a reliable-connected (`RDMA_PS_TCP`) ID on `channel`, carrying `token` as its context.
///
/// # Safety
/// `channel` must be live and outlive the ID.
pub unsafe fn create_id(
    channel: NonNull<rdma_event_channel>,
    token: u64,
) -> Result<NonNull<rdma_cm_id>, i32> {
    let mut id: *mut rdma_cm_id = ptr::null_mut();
    // SAFETY: the channel is live; `id` is a valid out-pointer; the context is an integer token
    // that is never dereferenced.
    let rc = unsafe {
        rdma_create_id(
            channel.as_ptr(),
            &mut id,
            token as usize as *mut c_void,
            rdma_port_space::RDMA_PS_TCP,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    NonNull::new(id).ok_or(libc::EIO)
}

/// Sets the token of an ID (a new ID from a connect request inherits the listener's).
///
/// # Safety
/// `id` must be live and not used by another thread at the same time.
pub unsafe fn set_token(id: NonNull<rdma_cm_id>, token: u64) {
    // SAFETY: the contract; `context` is the application's field.
    unsafe { (*id.as_ptr()).context = token as usize as *mut c_void };
}

/// The token of an ID.
///
/// # Safety
/// `id` must be live.
pub unsafe fn token(id: NonNull<rdma_cm_id>) -> u64 {
    // SAFETY: the contract; reading the application's field.
    unsafe { id.as_ref().context as usize as u64 }
}

/// Destroys an ID. Blocks until every event about it is acknowledged, which [`next_event`] does
/// before it returns, so it does not block here.
///
/// # Safety
/// `id` must be live and not used afterwards.
pub unsafe fn destroy_id(id: NonNull<rdma_cm_id>) -> Result<(), i32> {
    // SAFETY: the contract.
    if unsafe { rdma_destroy_id(id.as_ptr()) } != 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

macro_rules! check {
    ($call:expr) => {
        if $call != 0 {
            Err(last_errno())
        } else {
            Ok(())
        }
    };
}

/// `rdma_bind_addr`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn bind(id: NonNull<rdma_cm_id>, addr: SocketAddr) -> Result<(), i32> {
    let mut sa = RawSockAddr::new(addr);
    // SAFETY: live ID; the address buffer lives for the call (librdmacm copies it).
    check!(unsafe { rdma_bind_addr(id.as_ptr(), sa.as_mut_ptr().cast()) })
}

/// `rdma_resolve_addr` from `src` (or any local address) to `dst`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn resolve_addr(
    id: NonNull<rdma_cm_id>,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout_ms: i32,
) -> Result<(), i32> {
    let mut src = src.map(RawSockAddr::new);
    let mut dst = RawSockAddr::new(dst);
    let src_ptr = src.as_mut().map_or(ptr::null_mut(), |s| s.as_mut_ptr());
    // SAFETY: live ID; both address buffers live for the call (librdmacm copies them).
    check!(unsafe {
        rdma_resolve_addr(
            id.as_ptr(),
            src_ptr.cast(),
            dst.as_mut_ptr().cast(),
            timeout_ms,
        )
    })
}

/// `rdma_resolve_route`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn resolve_route(id: NonNull<rdma_cm_id>, timeout_ms: i32) -> Result<(), i32> {
    // SAFETY: live ID.
    check!(unsafe { rdma_resolve_route(id.as_ptr(), timeout_ms) })
}

/// `rdma_listen`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn listen(id: NonNull<rdma_cm_id>, backlog: i32) -> Result<(), i32> {
    // SAFETY: live ID.
    check!(unsafe { rdma_listen(id.as_ptr(), backlog) })
}

/// The connection parameters of a connect or accept, as plain values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnParam {
    /// The QP's number (the QP is the application's, not created by librdmacm).
    pub qp_num: u32,
    /// RDMA READs and atomics the peer may have outstanding at us.
    pub responder_resources: u8,
    /// RDMA READs and atomics we may have outstanding at the peer.
    pub initiator_depth: u8,
    /// Transport retries (0..=7).
    pub retry_count: u8,
    /// RNR retries (0..=7; 7 means forever).
    pub rnr_retry_count: u8,
}

fn conn_param(p: &ConnParam, data: &[u8]) -> rdma_conn_param {
    rdma_conn_param {
        private_data: if data.is_empty() {
            ptr::null()
        } else {
            data.as_ptr().cast()
        },
        private_data_len: data.len() as u8,
        responder_resources: p.responder_resources,
        initiator_depth: p.initiator_depth,
        flow_control: 0,
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        srq: 0,
        qp_num: p.qp_num,
    }
}

/// Calls `call` (`rdma_connect` or `rdma_accept`) with the parameters `p` and `private_data` (at
/// most 255 bytes here; the transport's own limit is smaller and enforced by librdmacm).
///
/// # Safety
/// `id` must be live and `call` one of librdmacm's calls that take an ID and parameters.
unsafe fn with_param(
    id: NonNull<rdma_cm_id>,
    p: &ConnParam,
    private_data: &[u8],
    call: unsafe extern "C" fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int,
) -> Result<(), i32> {
    if private_data.len() > u8::MAX as usize {
        return Err(libc::EINVAL);
    }
    let mut param = conn_param(p, private_data);
    // SAFETY: live ID; `param` and the private data it points to live for the call (librdmacm
    // copies them into the kernel request).
    check!(unsafe { call(id.as_ptr(), &mut param) })
}

/// `rdma_connect` with `private_data`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn connect(
    id: NonNull<rdma_cm_id>,
    p: &ConnParam,
    private_data: &[u8],
) -> Result<(), i32> {
    // SAFETY: the caller's contract; rdma_connect takes an ID and parameters.
    unsafe { with_param(id, p, private_data, rdma_connect) }
}

/// `rdma_accept` with `private_data`.
///
/// # Safety
/// `id` must be a live ID from a connect request.
pub unsafe fn accept(
    id: NonNull<rdma_cm_id>,
    p: &ConnParam,
    private_data: &[u8],
) -> Result<(), i32> {
    // SAFETY: the caller's contract; rdma_accept takes an ID and parameters.
    unsafe { with_param(id, p, private_data, rdma_accept) }
}

/// `rdma_reject` with `private_data`.
///
/// # Safety
/// `id` must be a live ID from a connect request.
pub unsafe fn reject(id: NonNull<rdma_cm_id>, private_data: &[u8]) -> Result<(), i32> {
    if private_data.len() > u8::MAX as usize {
        return Err(libc::EINVAL);
    }
    let data = if private_data.is_empty() {
        ptr::null()
    } else {
        private_data.as_ptr().cast()
    };
    // SAFETY: live ID; the data lives for the call.
    check!(unsafe { rdma_reject(id.as_ptr(), data, private_data.len() as u8) })
}

/// `rdma_establish` (InfiniBand/RoCE active side, after CONNECT_RESPONSE and the moves to RTR
/// and RTS).
///
/// # Safety
/// `id` must be live.
pub unsafe fn establish(id: NonNull<rdma_cm_id>) -> Result<(), i32> {
    // SAFETY: live ID.
    check!(unsafe { rdma_establish(id.as_ptr()) })
}

/// `rdma_disconnect`.
///
/// # Safety
/// `id` must be live.
pub unsafe fn disconnect(id: NonNull<rdma_cm_id>) -> Result<(), i32> {
    // SAFETY: live ID.
    check!(unsafe { rdma_disconnect(id.as_ptr()) })
}

/// `rdma_init_qp_attr`: the attributes and mask that move a QP of this connection to `state`
/// (an `ibv_qp_state` number).
///
/// # Safety
/// `id` must be live.
pub unsafe fn init_qp_attr(
    id: NonNull<rdma_cm_id>,
    state: u32,
) -> Result<(ibv_qp_attr, c_int), i32> {
    // SAFETY: ibv_qp_attr is plain old data; all-zero is valid.
    let mut attr: ibv_qp_attr = unsafe { MaybeUninit::zeroed().assume_init() };
    attr.qp_state = state;
    let mut mask: c_int = 0;
    // SAFETY: live ID; valid out-pointers.
    check!(unsafe { rdma_init_qp_attr(id.as_ptr(), &mut attr, &mut mask) })?;
    Ok((attr, mask))
}

/// Which device and port an ID is bound to: the verbs context librdmacm opened for it (not the
/// application's) and the port, or `None` before it is bound to a device.
///
/// # Safety
/// `id` must be live.
pub unsafe fn bound_device(id: NonNull<rdma_cm_id>) -> Option<(String, u64, u8)> {
    // SAFETY: live ID; plain fields.
    let (verbs, port) = unsafe { (id.as_ref().verbs, id.as_ref().port_num) };
    if verbs.is_null() {
        return None;
    }
    // SAFETY: librdmacm keeps the context open while an ID is bound to it; `device` is set for
    // the context's lifetime; name and GUID are read from the device struct.
    unsafe {
        let device = (*verbs).device;
        if device.is_null() {
            return None;
        }
        let name = rdma_mummy_sys::ibv_get_device_name(device);
        let name = if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        };
        let guid = u64::from_be(rdma_mummy_sys::ibv_get_device_guid(device));
        Some((name, guid, port))
    }
}

/// The local and peer addresses of an ID.
///
/// # Safety
/// `id` must be live.
pub unsafe fn addresses(id: NonNull<rdma_cm_id>) -> (Option<SocketAddr>, Option<SocketAddr>) {
    // SAFETY: live ID; route.addr holds two sockaddr_storage-sized unions the library fills.
    unsafe {
        let addr = &id.as_ref().route.addr;
        let src = read_sockaddr(
            (&addr.src_addr_union as *const _ as *const libc::sockaddr_storage).cast(),
        );
        let dst = read_sockaddr(
            (&addr.dst_addr_union as *const _ as *const libc::sockaddr_storage).cast(),
        );
        (src, dst)
    }
}

/// A CM event copied out of `rdma_cm_event` before it was acknowledged.
#[derive(Debug)]
pub struct RawCmEvent {
    /// `rdma_cm_event_type` as a number.
    pub event: u32,
    /// The event's status (an errno, negative; or a reject reason for REJECTED).
    pub status: i32,
    /// The ID the event is about (for CONNECT_REQUEST: a new ID, owned by the receiver now).
    /// Once the event is acknowledged another thread may destroy an existing ID at any moment,
    /// so nothing may be read through this pointer except for a CONNECT_REQUEST's new ID.
    pub id: NonNull<rdma_cm_id>,
    /// The ID's token (its `context`), read before the acknowledgement: afterwards the ID may
    /// already be destroyed. For a CONNECT_REQUEST it is the listener's (the new ID inherits it).
    pub token: u64,
    /// The listener a CONNECT_REQUEST arrived on.
    pub listen_id: Option<NonNull<rdma_cm_id>>,
    /// The private data the peer sent (connect request, response, established, reject).
    pub private_data: Vec<u8>,
    /// The peer's connection parameters (connect request and response).
    pub peer: ConnParam,
}

/// `RDMA_CM_EVENT_CONNECT_REQUEST`.
pub const EVENT_CONNECT_REQUEST: u32 = 4;

/// Takes the next event of `channel` (non-blocking: `Ok(None)` when none waits), copies it and
/// acknowledges it.
///
/// # Safety
/// `channel` must be live and read by no other thread at the same time.
pub unsafe fn next_event(channel: NonNull<rdma_event_channel>) -> Result<Option<RawCmEvent>, i32> {
    let mut event: *mut rdma_cm_event = ptr::null_mut();
    // SAFETY: live channel; valid out-pointer.
    if unsafe { rdma_get_cm_event(channel.as_ptr(), &mut event) } != 0 {
        let errno = last_errno();
        return if errno == libc::EAGAIN || errno == libc::EINTR {
            Ok(None)
        } else {
            Err(errno)
        };
    }
    let Some(event) = NonNull::new(event) else {
        return Err(libc::EIO);
    };
    // SAFETY: the event is valid until acknowledged, which happens below after the copy; the
    // private data pointer and length belong to it; its ID is live until then too.
    let copied = unsafe {
        let e = event.as_ref();
        let conn = &e.param.conn;
        let private_data = if conn.private_data.is_null() || conn.private_data_len == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(
                conn.private_data.cast::<u8>(),
                conn.private_data_len as usize,
            )
            .to_vec()
        };
        Copied {
            event: e.event,
            status: e.status,
            id: NonNull::new(e.id),
            listen_id: NonNull::new(e.listen_id),
            // The ID cannot be destroyed while this event is unacknowledged (rdma_destroy_id
            // waits for it), so its context is read now, not after the ack.
            token: if e.id.is_null() {
                0
            } else {
                (*e.id).context as usize as u64
            },
            private_data,
            peer: ConnParam {
                qp_num: conn.qp_num,
                responder_resources: conn.responder_resources,
                initiator_depth: conn.initiator_depth,
                retry_count: conn.retry_count,
                rnr_retry_count: conn.rnr_retry_count,
            },
        }
    };
    // SAFETY: acknowledged once, after the copy; nothing refers to it afterwards.
    unsafe { rdma_ack_cm_event(event.as_ptr()) };
    match copied.id {
        Some(id) => Ok(Some(RawCmEvent {
            event: copied.event,
            status: copied.status,
            id,
            token: copied.token,
            listen_id: copied.listen_id,
            private_data: copied.private_data,
            peer: copied.peer,
        })),
        None => Err(libc::EIO),
    }
}

/// What [`next_event`] copies before the acknowledgement, with a possibly null ID.
struct Copied {
    event: u32,
    status: i32,
    id: Option<NonNull<rdma_cm_id>>,
    token: u64,
    listen_id: Option<NonNull<rdma_cm_id>>,
    private_data: Vec<u8>,
    peer: ConnParam,
}

/// Makes librdmacm compare its device list with the kernel's and close its own context on every
/// device that is gone (`rdma_get_devices` + `rdma_free_devices`).
///
/// librdmacm opens a verbs context on a device the first time an ID binds to it and closes it
/// only once the device has disappeared from `ibv_get_device_list` *and* no ID uses it — a
/// comparison it makes only inside a few calls. Until then its context keeps a removed rxe or
/// siw device from finishing its delete, even after the application released everything. A
/// side effect: `rdma_get_devices` opens a context on every device present; each is closed by
/// the next call after that device goes.
pub fn forget_removed_devices() {
    // SAFETY: no arguments besides an optional out-count; the list is returned to librdmacm
    // at once and not used otherwise.
    unsafe {
        let list = rdma_mummy_sys::rdma_get_devices(ptr::null_mut());
        if !list.is_null() {
            rdma_mummy_sys::rdma_free_devices(list);
        }
    }
}
