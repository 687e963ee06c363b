//! [`LoadedProvider`]: a plugin's provider behind the core traits, one indirect call per
//! operation.

use std::collections::HashSet;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::abi::{self, ErrorBuf, Functions, STATUS_OK, Status};
use super::convert;
use super::loader::Plugin;
use crate::cm::{ConnParams, ConnectRequest, Connection, Listener};
use crate::cq::CompletionQueue;
use crate::device::{Device, DeviceInfo, PortInfo};
use crate::drain::DrainReport;
use crate::error::{Error, ErrorKind, PostError, Result};
use crate::event::{DeviceEvent, EventHub, EventStream, MonitorEvent};
use crate::fault::Fault;
use crate::mr::{Access, MemoryRegion};
use crate::pd::ProtectionDomain;
use crate::provider::{Provider, Transport};
use crate::qp::{QpInit, QueuePair};
use crate::state::QpState;
use crate::wr::{Completion, RecvWr, SendWr};

/// The error of a failed call: its kind from the status, its text from the plugin.
pub(crate) fn status_error(status: Status, text: String) -> Error {
    let text = if text.trim().is_empty() {
        "the provider gave no message".to_string()
    } else {
        text
    };
    match abi::error_kind_from_code(status) {
        Some(kind) => Error::new(kind, text),
        None => Error::new(
            ErrorKind::Other,
            format!("the provider returned an unknown status {status}: {text}"),
        ),
    }
}

/// An error buffer the plugin fills only on failure; its message bytes are never initialised
/// by the loader (clearing 480 bytes on every post and poll would cost more than the call).
struct ErrorSlot(MaybeUninit<ErrorBuf>);

impl ErrorSlot {
    #[inline]
    fn new() -> Self {
        let mut slot = MaybeUninit::<ErrorBuf>::uninit();
        // SAFETY: writes the `len` field of the uninitialised buffer in place; `message` stays
        // uninitialised and is only read up to `len`, which the plugin sets with the bytes.
        unsafe { (&raw mut (*slot.as_mut_ptr()).len).write(0) };
        ErrorSlot(slot)
    }

    #[inline]
    fn ptr(&mut self) -> *mut ErrorBuf {
        self.0.as_mut_ptr()
    }

    /// The result of a call that returned `status`.
    #[inline]
    fn result(&self, status: Status) -> Result<()> {
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(self.error(status))
        }
    }

    /// The error of a call that failed with `status`.
    fn error(&self, status: Status) -> Error {
        // SAFETY: the slot's `len` is initialised (`new`), and the plugin wrote as many message
        // bytes as it says.
        unsafe { buffered_error(self.0.as_ptr(), status) }
    }
}

/// The error of a call that failed with `status`, with the message the plugin left in `buf`.
///
/// # Safety
/// `buf`'s `len` must be initialised, and that many bytes of its message too (the ABI's rule for
/// `ErrorBuf`: the plugin writes the bytes before the length).
#[cold]
#[inline(never)]
unsafe fn buffered_error(buf: *const ErrorBuf, status: Status) -> Error {
    // SAFETY: `len` is initialised, as the caller guarantees.
    let len = (unsafe { (&raw const (*buf).len).read() } as usize).min(abi::ERROR_MESSAGE_MAX);
    // SAFETY: the first `len` message bytes are initialised, as the caller guarantees.
    let bytes =
        unsafe { std::slice::from_raw_parts((&raw const (*buf).message).cast::<u8>(), len) };
    status_error(status, String::from_utf8_lossy(bytes).into_owned())
}

/// The record a failed post fills: initialised by the loader only as far as a plugin that fails
/// without writing it must find it (nothing accepted, no message).
struct FailureSlot(MaybeUninit<abi::PostFailure>);

impl FailureSlot {
    #[inline]
    fn new() -> Self {
        let mut slot = MaybeUninit::<abi::PostFailure>::uninit();
        let p = slot.as_mut_ptr();
        // SAFETY: writes two fields of the uninitialised record in place; the message bytes
        // stay uninitialised and are only read up to `len`.
        unsafe {
            (&raw mut (*p).accepted).write(0);
            (&raw mut (*p).error.len).write(0);
        }
        FailureSlot(slot)
    }

    #[inline]
    fn ptr(&mut self) -> *mut abi::PostFailure {
        self.0.as_mut_ptr()
    }

    /// The error of a post of `len` WRs that failed with `status`: the message, and the
    /// plugin's count of WRs posted, checked against the batch.
    #[cold]
    #[inline(never)]
    fn error(&self, status: Status, len: usize) -> PostError {
        let p = self.0.as_ptr();
        // SAFETY: `accepted` and the error's `len` are initialised (`new`), and the plugin wrote
        // as many message bytes as it says.
        let (accepted, e) = unsafe {
            (
                (&raw const (*p).accepted).read(),
                buffered_error(&raw const (*p).error, status),
            )
        };
        PostError::new(accepted.min(len), e)
    }
}

/// A plugin's handle. The plugin's objects are `Send + Sync` (the core traits require it), so
/// the pointer to one may be used from any thread.
struct Raw<T>(NonNull<T>);

// SAFETY: see the type's documentation: the object behind the pointer is `Send + Sync`.
unsafe impl<T> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Raw<T> {}

impl<T> Raw<T> {
    #[inline]
    fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

/// What every handle of one provider instance shares.
struct Shared {
    plugin: Plugin,
    f: &'static Functions,
    raw: Raw<abi::RawProvider>,
    name: String,
    transport: Transport,
    /// Addresses of the plugin handles held now, to refuse a handle the plugin hands out twice.
    live: Mutex<HashSet<usize>>,
    /// Alive while the program holds the provider or any handle of it (each holds a strong
    /// reference); event relays hold only this weak one, and end their streams when it dies,
    /// as a linked provider's streams end when the provider and its handles are gone.
    users: Weak<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the provider handle is released once, after every handle that refers to
        // this `Shared` is gone.
        unsafe { (self.f.provider_free)(self.raw.ptr()) };
    }
}

impl Shared {
    /// Takes ownership of a handle the plugin just returned: refuses null and a handle that
    /// is already held (a provider bug that would otherwise free one object twice).
    fn adopt<T>(
        self: &Arc<Self>,
        raw: *mut T,
        free: unsafe extern "C" fn(*mut T),
        what: &str,
    ) -> Result<Handle<T>> {
        let Some(ptr) = NonNull::new(raw) else {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "provider {} reported success but returned a null {what} handle",
                    self.name
                ),
            ));
        };
        if !self.live_set().insert(ptr.as_ptr() as usize) {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "provider {} returned {what} handle {ptr:p}, which already stands for a \
                     live object (unknown handle); it was not used",
                    self.name
                ),
            ));
        }
        Ok(Handle {
            shared: Arc::clone(self),
            raw: Raw(ptr),
            free,
            user: self.users.upgrade(),
        })
    }

    fn live_set(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle owned by the loader, released through the plugin's `free` when dropped.
struct Handle<T> {
    shared: Arc<Shared>,
    raw: Raw<T>,
    free: unsafe extern "C" fn(*mut T),
    /// Keeps the program's hold on the provider (see [`Shared::users`]); `None` for the
    /// handles of event relays.
    user: Option<Arc<()>>,
}

impl<T> Handle<T> {
    #[inline]
    fn ptr(&self) -> *mut T {
        self.raw.ptr()
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        self.shared.live_set().remove(&(self.ptr() as usize));
        // SAFETY: the handle is released once, here, after its last use.
        unsafe { (self.free)(self.ptr()) };
    }
}

/// Calls a plugin function with an error slot and turns its status into a `Result`.
macro_rules! call {
    ($f:expr, $name:ident($($arg:expr),*)) => {{
        let mut err = ErrorSlot::new();
        // SAFETY: every argument is a handle of this plugin that is alive, or a pointer to a
        // live local or borrowed value, as the ABI documents for this function.
        let status = unsafe { ($f.$name)($($arg,)* err.ptr()) };
        err.result(status)
    }};
}

/// A sink that converts each item into an owned value while it is still borrowed (what an item
/// points to is valid only during the callback).
struct Converting<T, U> {
    convert: fn(&T) -> Result<U>,
    items: Vec<Result<U>>,
}

unsafe extern "C" fn convert_item<T, U>(ctx: *mut c_void, item: *const T) {
    // SAFETY: `ctx` is the `Converting` of the call, alive for it; `item` is valid for the
    // callback and read only here.
    unsafe {
        let state = &mut *ctx.cast::<Converting<T, U>>();
        let converted = (state.convert)(&*item);
        state.items.push(converted);
    }
}

impl<T, U> Converting<T, U> {
    fn new(convert: fn(&T) -> Result<U>) -> Self {
        Converting {
            convert,
            items: Vec::new(),
        }
    }

    fn sink(&mut self) -> abi::Sink<T> {
        abi::Sink {
            ctx: (self as *mut Self).cast(),
            put: convert_item::<T, U>,
        }
    }

    fn into_items(self) -> Result<Vec<U>> {
        self.items.into_iter().collect()
    }
}

fn device_info_item(info: &abi::DeviceInfo) -> Result<DeviceInfo> {
    // SAFETY: called from a sink callback, while the name the info borrows is valid.
    unsafe { convert::device_info_from(info, ErrorKind::Other) }
}

fn port_item(port: &abi::PortInfo) -> Result<PortInfo> {
    // SAFETY: called from a sink callback, while the addresses the port borrows are valid.
    unsafe { convert::port_from(port, ErrorKind::Other) }
}

fn monitor_item(event: &abi::MonitorEvent) -> Result<Pumped<MonitorEvent>> {
    if event.kind == 0 {
        return Ok(Pumped::Missed(event.missed));
    }
    // SAFETY: called from a sink callback, while the strings the event borrows are valid.
    unsafe { convert::monitor_event_from(event) }.map(Pumped::Event)
}

fn name_item(name: &abi::Bytes) -> Result<String> {
    // SAFETY: called from a sink callback, while the bytes are valid.
    unsafe { convert::string(*name, "a provider name", ErrorKind::Other) }
}

/// A provider loaded from a [`Plugin`]: implements [`Provider`] like a linked one.
///
/// Each handle keeps the provider instance alive; a handle of one instance passed to another
/// (both are `LoadedProvider`s, so the types allow it) is refused with
/// [`ErrorKind::InvalidArgument`].
#[derive(Clone)]
pub struct LoadedProvider {
    shared: Arc<Shared>,
    /// The program's hold on the provider (see [`Shared::users`]); held, never read.
    _user: Arc<()>,
}

impl std::fmt::Debug for LoadedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProvider")
            .field("name", &self.shared.name)
            .field("plugin", &self.shared.plugin)
            .finish()
    }
}

impl LoadedProvider {
    /// Wraps a fresh provider handle.
    ///
    /// # Safety
    /// `raw` must be a non-null provider handle just made by `plugin`'s `provider_new`.
    pub(crate) unsafe fn new(plugin: Plugin, raw: *mut abi::RawProvider) -> LoadedProvider {
        let f = plugin.functions();
        let mut names = Converting::new(name_item);
        // SAFETY: `raw` is a live provider handle; the sink outlives the call.
        unsafe { (f.provider_name)(raw, names.sink()) };
        let name = names
            .into_items()
            .ok()
            .and_then(|n| n.into_iter().next())
            .unwrap_or_else(|| plugin.name().to_string());
        // SAFETY: as above.
        let transport =
            convert::transport_from(unsafe { (f.provider_transport)(raw) }, ErrorKind::Other)
                .unwrap_or(Transport::Mock);
        let user = Arc::new(());
        LoadedProvider {
            _user: Arc::clone(&user),
            shared: Arc::new(Shared {
                plugin,
                f,
                // SAFETY: the caller guarantees `raw` is non-null.
                raw: Raw(unsafe { NonNull::new_unchecked(raw) }),
                name,
                transport,
                live: Mutex::new(HashSet::new()),
                users: Arc::downgrade(&user),
            }),
        }
    }

    /// The plugin this provider came from.
    pub fn plugin(&self) -> Plugin {
        self.shared.plugin
    }

    fn f(&self) -> &'static Functions {
        self.shared.f
    }
}

impl Provider for LoadedProvider {
    type Device = LoadedDevice;
    type Pd = LoadedPd;
    type Mr = LoadedMr;
    type Cq = LoadedCq;
    type Qp = LoadedQp;
    type Listener = LoadedListener;

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn transport(&self) -> Transport {
        self.shared.transport
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let mut items = Converting::new(device_info_item);
        call!(
            self.f(),
            provider_devices(self.shared.raw.ptr(), items.sink())
        )?;
        items.into_items()
    }

    fn open(&self, name: &str) -> Result<LoadedDevice> {
        let mut raw = std::ptr::null_mut();
        let mut info = Converting::new(device_info_item);
        call!(
            self.f(),
            provider_open(
                self.shared.raw.ptr(),
                convert::bytes(name.as_bytes()),
                &mut raw,
                info.sink()
            )
        )?;
        let handle = self.shared.adopt(raw, self.f().device_free, "device")?;
        let info = info.into_items()?.into_iter().next().ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                format!(
                    "provider {} opened {name} but described no device",
                    self.shared.name
                ),
            )
        })?;
        Ok(LoadedDevice { handle, info })
    }

    fn monitor(&self) -> Result<EventStream<MonitorEvent>> {
        let mut raw = std::ptr::null_mut();
        call!(self.f(), provider_monitor(self.shared.raw.ptr(), &mut raw))?;
        let handle = self
            .shared
            .adopt(raw, self.f().monitor_events_free, "monitor stream")?;
        pump(
            handle,
            |_| false,
            |h, timeout_ns| {
                let mut items = Converting::new(monitor_item);
                call!(
                    h.shared.f,
                    monitor_events_recv(h.ptr(), timeout_ns, items.sink())
                )?;
                items.into_items()?.into_iter().next().ok_or_else(|| {
                    Error::new(ErrorKind::Other, "the provider's monitor returned no event")
                })
            },
        )
    }

    fn inject(&self, name: &str, fault: &Fault) -> Result<()> {
        let raw = convert::fault(fault);
        call!(
            self.f(),
            provider_inject(self.shared.raw.ptr(), convert::bytes(name.as_bytes()), &raw)
        )
    }
}

/// What the event pump relays.
enum Pumped<E> {
    Event(E),
    Missed(u64),
}

/// How long the pump waits in the plugin before it checks whether anyone still listens.
const PUMP_POLL: Duration = Duration::from_millis(50);

/// Relays a plugin's event stream into a stream of this program: a thread waits in the plugin
/// and publishes what it gets, so the stream offers everything a provider's own does
/// (deadlines, the readiness fd, wakeups, missed-event notices). The thread ends, and releases
/// the plugin's stream, when the stream ends, its reader drops it, or the program lets go of
/// the provider and every handle of it (the stream then ends with `Destroyed`, as a linked
/// provider's does).
///
/// `is_last` says which events end a stream (a device's loss): the relay publishes such an event
/// and the end in one step, as the provider's own stream does, so no reader ever sees the event
/// without the end right behind it.
fn pump<S: 'static, E>(
    mut stream: Handle<S>,
    is_last: fn(&E) -> bool,
    recv: impl Fn(&Handle<S>, u64) -> Result<Pumped<E>> + Send + 'static,
) -> Result<EventStream<E>>
where
    E: Clone + Send + 'static,
{
    let hub = EventHub::new();
    let reader = hub.subscribe()?;
    let timeout_ns = PUMP_POLL.as_nanos() as u64;
    // The relay must not keep the provider in use: it watches the program's hold instead.
    stream.user = None;
    let users = stream.shared.users.clone();
    let run = move || {
        while hub.subscribers() > 0 {
            if users.strong_count() == 0 {
                hub.close(ErrorKind::Destroyed, "the event source is gone");
                break;
            }
            match recv(&stream, timeout_ns) {
                Ok(Pumped::Event(e)) if is_last(&e) => {
                    // The provider's stream ends right after this event; take its message if it
                    // is already there.
                    let message = match recv(&stream, 0) {
                        Err(end) if end.kind() == ErrorKind::DeviceLost => {
                            end.message().to_string()
                        }
                        _ => "the device was lost".to_string(),
                    };
                    hub.publish_and_close(e, ErrorKind::DeviceLost, message);
                    break;
                }
                Ok(Pumped::Event(e)) => hub.publish(e),
                Ok(Pumped::Missed(n)) => hub.publish_missed(n),
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                // A provider that reports dropped events as an error: the stream goes on.
                Err(e) if e.kind() == ErrorKind::Overflow => hub.publish_missed(1),
                Err(e) => {
                    hub.close(e.kind(), e.message());
                    break;
                }
            }
        }
        drop(stream);
    };
    std::thread::Builder::new()
        .name("anyverbs-plugin-events".into())
        .spawn(run)
        .map_err(|e| {
            Error::new(
                ErrorKind::ResourceExhausted,
                format!("cannot start the thread that relays a plugin's events: {e}"),
            )
        })?;
    Ok(reader)
}

/// A device opened through a plugin.
pub struct LoadedDevice {
    handle: Handle<abi::RawDevice>,
    info: DeviceInfo,
}

impl LoadedDevice {
    fn f(&self) -> &'static Functions {
        self.handle.shared.f
    }
}

impl Device<LoadedProvider> for LoadedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn ports(&self) -> Result<Vec<PortInfo>> {
        let mut items = Converting::new(port_item);
        call!(self.f(), device_ports(self.handle.ptr(), items.sink()))?;
        items.into_items()
    }

    fn alloc_pd(&self) -> Result<LoadedPd> {
        let mut raw = std::ptr::null_mut();
        call!(self.f(), device_alloc_pd(self.handle.ptr(), &mut raw))?;
        Ok(LoadedPd {
            handle: self.handle.shared.adopt(raw, self.f().pd_free, "PD")?,
        })
    }

    fn create_cq(&self, depth: u32) -> Result<LoadedCq> {
        let mut raw = std::ptr::null_mut();
        let mut info = abi::CqInfo::default();
        call!(
            self.f(),
            device_create_cq(self.handle.ptr(), depth, &mut raw, &mut info)
        )?;
        Ok(LoadedCq {
            handle: self.handle.shared.adopt(raw, self.f().cq_free, "CQ")?,
            poll: self.f().cq_poll,
            wait: self.f().cq_wait,
            info,
        })
    }

    fn listen(&self, addr: SocketAddr) -> Result<LoadedListener> {
        let mut raw = std::ptr::null_mut();
        let mut local = abi::SockAddr::default();
        let addr = convert::sock_addr(addr);
        call!(
            self.f(),
            device_listen(self.handle.ptr(), &addr, &mut raw, &mut local)
        )?;
        let handle = self
            .handle
            .shared
            .adopt(raw, self.f().listener_free, "listener")?;
        let local = convert::sock_addr_from(&local, ErrorKind::Other)?;
        Ok(LoadedListener { handle, local })
    }

    fn events(&self) -> Result<EventStream<DeviceEvent>> {
        let mut raw = std::ptr::null_mut();
        call!(self.f(), device_events(self.handle.ptr(), &mut raw))?;
        let handle = self
            .handle
            .shared
            .adopt(raw, self.f().device_events_free, "event stream")?;
        pump(handle, DeviceEvent::is_device_lost, |h, timeout_ns| {
            let mut event = abi::DeviceEvent::default();
            call!(
                h.shared.f,
                device_events_recv(h.ptr(), timeout_ns, &mut event)
            )?;
            if event.kind == 0 {
                Ok(Pumped::Missed(event.missed))
            } else {
                convert::device_event_from(&event).map(Pumped::Event)
            }
        })
    }
}

/// Checks that a handle passed in belongs to the same provider instance.
fn same_provider<T>(mine: &Arc<Shared>, theirs: &Handle<T>, what: &str) -> Result<()> {
    if Arc::ptr_eq(mine, &theirs.shared) {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "the {what} belongs to another provider instance ({})",
            theirs.shared.name
        )))
    }
}

/// A protection domain of a loaded provider.
pub struct LoadedPd {
    handle: Handle<abi::RawPd>,
}

impl ProtectionDomain<LoadedProvider> for LoadedPd {
    fn register(&self, len: usize, access: Access) -> Result<LoadedMr> {
        let mut raw = std::ptr::null_mut();
        let mut info = abi::MrInfo::default();
        let f = self.handle.shared.f;
        call!(
            f,
            pd_register(self.handle.ptr(), len, access.bits(), &mut raw, &mut info)
        )?;
        let handle = self.handle.shared.adopt(raw, f.mr_free, "MR")?;
        let access = Access::from_bits(info.access)
            .ok_or_else(|| convert::unknown(ErrorKind::Other, "access flags", info.access))?;
        let len = usize::try_from(info.len)
            .map_err(|_| convert::unknown(ErrorKind::Other, "region length", info.len))?;
        Ok(LoadedMr {
            handle,
            addr: info.addr,
            len,
            lkey: info.lkey,
            rkey: info.rkey,
            access,
        })
    }

    fn create_qp(&self, send_cq: &LoadedCq, recv_cq: &LoadedCq, init: &QpInit) -> Result<LoadedQp> {
        let shared = &self.handle.shared;
        same_provider(shared, &send_cq.handle, "send CQ")?;
        same_provider(shared, &recv_cq.handle, "receive CQ")?;
        let raw_init = abi::QpInit {
            max_send_wr: init.max_send_wr,
            max_recv_wr: init.max_recv_wr,
            max_send_sge: init.max_send_sge,
            max_recv_sge: init.max_recv_sge,
            max_inline_data: init.max_inline_data,
        };
        let mut raw = std::ptr::null_mut();
        let mut qp_num = 0;
        call!(
            shared.f,
            pd_create_qp(
                self.handle.ptr(),
                send_cq.handle.ptr(),
                recv_cq.handle.ptr(),
                &raw_init,
                &mut raw,
                &mut qp_num
            )
        )?;
        Ok(LoadedQp {
            handle: shared.adopt(raw, shared.f.qp_free, "QP")?,
            post_send: shared.f.qp_post_send,
            post_recv: shared.f.qp_post_recv,
            qp_num,
        })
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.shared.f, pd_destroy(self.handle.ptr()))
    }
}

/// A memory region of a loaded provider. Its address, length and keys are kept on this side.
pub struct LoadedMr {
    handle: Handle<abi::RawMr>,
    addr: u64,
    len: usize,
    lkey: u32,
    rkey: u32,
    access: Access,
}

impl MemoryRegion for LoadedMr {
    fn addr(&self) -> u64 {
        self.addr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lkey(&self) -> u32 {
        self.lkey
    }

    fn rkey(&self) -> u32 {
        self.rkey
    }

    fn access(&self) -> Access {
        self.access
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        call!(
            self.handle.shared.f,
            mr_write(self.handle.ptr(), offset, src.as_ptr(), src.len())
        )
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        call!(
            self.handle.shared.f,
            mr_read(self.handle.ptr(), offset, dst.as_mut_ptr(), dst.len())
        )
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.shared.f, mr_destroy(self.handle.ptr()))
    }
}

/// A completion queue of a loaded provider.
pub struct LoadedCq {
    handle: Handle<abi::RawCq>,
    /// The plugin's `cq_poll` and `cq_wait`, also reachable through the handle: kept here too,
    /// so that a poll loads its function in one step.
    poll: PollFn,
    wait: WaitFn,
    info: abi::CqInfo,
}

/// The type of `cq_poll`.
type PollFn = unsafe extern "C" fn(
    *const abi::RawCq,
    *mut abi::Completion,
    usize,
    *mut ErrorBuf,
) -> abi::PollResult;
/// The type of `cq_wait`.
type WaitFn = unsafe extern "C" fn(
    *const abi::RawCq,
    *mut abi::Completion,
    usize,
    u64,
    *mut ErrorBuf,
) -> abi::PollResult;
/// The type of `qp_post_send` and `qp_post_recv`, for WRs of ABI form `A`.
type PostFn<A> =
    unsafe extern "C" fn(*const abi::RawQp, *const A, usize, *mut abi::PostFailure) -> Status;

impl LoadedCq {
    /// Polls, or with a timeout waits, straight into `out`.
    #[inline]
    fn poll_with(&self, out: &mut [Completion], timeout_ns: Option<u64>) -> Result<usize> {
        let capacity = out.len();
        let buf = out.as_mut_ptr().cast::<abi::Completion>();
        // The plugin writes `abi::Completion`s, the layout of `Completion` (asserted in `abi`),
        // into the caller's buffer, which holds valid completions before the call; the ones it
        // wrote are checked below before the buffer is used as `Completion`s again.
        let mut err = ErrorSlot::new();
        let handle = self.handle.ptr();
        // SAFETY: this plugin's poll functions, a live CQ handle, `out`'s memory for
        // `capacity` completions, and a pointer to a local.
        let result = unsafe {
            match timeout_ns {
                None => (self.poll)(handle, buf, capacity, err.ptr()),
                Some(t) => (self.wait)(handle, buf, capacity, t, err.ptr()),
            }
        };
        let n = result as usize;
        if result < 0 || n > capacity {
            // SAFETY: `buf` is `out`'s memory, `capacity` completions, not otherwise used until
            // this returns.
            return Err(unsafe { self.failed_poll(&err, result, buf, capacity) });
        }
        // SAFETY: `buf` is `out`'s memory, `n <= out.len()` completions, not otherwise used
        // until this returns.
        unsafe { convert::check_completions(buf, n) };
        Ok(n)
    }

    /// The error of a poll that failed (`result < 0`) or overfilled the buffer. A plugin that
    /// broke the ABI may have written anything into it, so the whole buffer is made valid first
    /// (a plugin that succeeds is trusted to have written only the completions it counts).
    ///
    /// # Safety
    /// `buf` must be valid for reads and writes of `capacity` completions.
    #[cold]
    #[inline(never)]
    unsafe fn failed_poll(
        &self,
        err: &ErrorSlot,
        result: abi::PollResult,
        buf: *mut abi::Completion,
        capacity: usize,
    ) -> Error {
        // SAFETY: forwarded to the caller.
        unsafe { convert::check_completions(buf, capacity) };
        if result >= 0 {
            return self.overfull(result.unsigned_abs(), capacity);
        }
        // A status beyond `Status` is unknown all the same.
        let status = Status::try_from(result.unsigned_abs()).unwrap_or(Status::MAX);
        err.error(status)
    }

    fn overfull(&self, n: usize, capacity: usize) -> Error {
        Error::new(
            ErrorKind::Other,
            format!(
                "provider {} reported {n} completions for room for {capacity}",
                self.handle.shared.name
            ),
        )
    }
}

impl CompletionQueue for LoadedCq {
    fn cq_num(&self) -> u32 {
        self.info.cq_num
    }

    fn capacity(&self) -> u32 {
        self.info.capacity
    }

    #[inline]
    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        self.poll_with(out, None)
    }

    #[inline]
    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize> {
        self.poll_with(out, Some(convert::timeout_ns(deadline)))
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.shared.f, cq_destroy(self.handle.ptr()))
    }
}

/// A queue pair of a loaded provider.
pub struct LoadedQp {
    handle: Handle<abi::RawQp>,
    /// The plugin's `qp_post_send` and `qp_post_recv`, kept as [`LoadedCq`] keeps its polls.
    post_send: PostFn<abi::SendWr>,
    post_recv: PostFn<abi::RecvWr>,
    qp_num: u32,
}

impl LoadedQp {
    /// Posts a batch through `entry` (`qp_post_send` or `qp_post_recv`), the WRs as they are.
    #[inline]
    fn post<A>(&self, wrs: *const A, len: usize, entry: PostFn<A>) -> Result<(), PostError> {
        let mut failure = FailureSlot::new();
        // SAFETY: `entry` is this plugin's post function for WRs of this ABI form; a live QP
        // handle; `wrs` is the caller's batch of `len` WRs, whose layout is the ABI's (asserted
        // in `abi`), and it and the scatter lists it points to live across the call; the
        // failure record is a local.
        let status = unsafe { entry(self.handle.ptr(), wrs, len, failure.ptr()) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(failure.error(status, len))
        }
    }
}

impl QueuePair for LoadedQp {
    fn qp_num(&self) -> u32 {
        self.qp_num
    }

    fn state(&self) -> Result<QpState> {
        let mut code = 0;
        call!(self.handle.shared.f, qp_state(self.handle.ptr(), &mut code))?;
        convert::qp_state_from(code, ErrorKind::Other)
    }

    fn modify(&self, to: QpState) -> Result<()> {
        call!(
            self.handle.shared.f,
            qp_modify(self.handle.ptr(), convert::qp_state_code(to))
        )
    }

    #[inline]
    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.post(convert::send_wrs_abi(wrs), wrs.len(), self.post_send)
    }

    #[inline]
    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.post(convert::recv_wrs_abi(wrs), wrs.len(), self.post_recv)
    }

    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()> {
        let remote = convert::sock_addr(remote);
        let params = convert::conn_params(params);
        call!(
            self.handle.shared.f,
            qp_connect(self.handle.ptr(), &remote, &params)
        )
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        // Zeroed, not uninitialised: a plugin that reports success without writing it must
        // give a wrong value at worst, never undefined behaviour.
        let mut out = MaybeUninit::<abi::Connection>::zeroed();
        call!(
            self.handle.shared.f,
            qp_wait_connected(
                self.handle.ptr(),
                convert::timeout_ns(deadline),
                out.as_mut_ptr()
            )
        )?;
        // SAFETY: all-zero bytes are a valid `abi::Connection` (integers and byte arrays only),
        // and the plugin may only have written a connection over them.
        convert::connection_from(unsafe { out.assume_init_ref() })
    }

    fn drain(&self, deadline: Instant) -> Result<DrainReport> {
        let mut out = abi::DrainReport::default();
        call!(
            self.handle.shared.f,
            qp_drain(self.handle.ptr(), convert::timeout_ns(deadline), &mut out)
        )?;
        convert::drain_report_from(&out)
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.shared.f, qp_destroy(self.handle.ptr()))
    }
}

/// A listener of a loaded provider.
pub struct LoadedListener {
    handle: Handle<abi::RawListener>,
    local: SocketAddr,
}

impl Listener<LoadedProvider> for LoadedListener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest> {
        // Zeroed for the same reason as in `wait_connected`.
        let mut out = MaybeUninit::<abi::ConnectRequest>::zeroed();
        call!(
            self.handle.shared.f,
            listener_next_request(
                self.handle.ptr(),
                convert::timeout_ns(deadline),
                out.as_mut_ptr()
            )
        )?;
        // SAFETY: all-zero bytes are a valid `abi::ConnectRequest` (integers and byte arrays
        // only), and the plugin may only have written a request over them.
        convert::connect_request_from(unsafe { out.assume_init_ref() }, ErrorKind::Other)
    }

    fn accept(&self, request: &ConnectRequest, qp: &LoadedQp, params: &ConnParams) -> Result<()> {
        same_provider(&self.handle.shared, &qp.handle, "QP")?;
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        let params = convert::conn_params(params);
        call!(
            self.handle.shared.f,
            listener_accept(self.handle.ptr(), &request, qp.handle.ptr(), &params)
        )
    }

    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()> {
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        call!(
            self.handle.shared.f,
            listener_reject(self.handle.ptr(), &request, convert::bytes(private_data))
        )
    }
}
