//! The plugin side of the ABI: a [`ProviderTable`] for any [`Provider`], made by
//! [`export_provider!`](crate::export_provider).
//!
//! Every function here checks its handles (non-null, and of the expected kind: each handle
//! carries a tag), catches panics, and turns every error into a status and a message. Handles
//! are boxes that the loader releases with the matching `*_free` function, which drops the
//! provider's object — and dropping a handle destroys it once nothing depends on it, as the
//! traits promise.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use smallvec::SmallVec;

use super::abi::{self, ErrorBuf, ProviderTable, RawProvider, STATUS_OK, Status};
use super::convert;
use crate::cm::Listener;
use crate::cq::CompletionQueue;
use crate::device::Device;
use crate::error::{Error, ErrorKind, PostError, Result};
use crate::event::{DeviceEvent, EventStream, MonitorEvent, Next};
use crate::mr::MemoryRegion;
use crate::pd::ProtectionDomain;
use crate::provider::Provider;
use crate::qp::{QpInit, QueuePair};
use crate::wr::Completion;

/// A `&'static CStr` from a NUL-terminated literal, for the table's names. Fails to compile
/// (in a const) if the literal has no NUL at its end or one inside.
pub const fn c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a plugin name must end with one NUL and contain no other"),
    }
}

/// A handle as the plugin hands it out: the provider's object behind a tag saying what it is.
/// The tag catches a handle of the wrong kind, or one already released, before it is used.
///
/// `#[repr(C)]` puts the tag first, so it can be read through a pointer to any handle before
/// the handle's kind is known.
#[repr(C)]
struct Handle<T> {
    tag: u64,
    value: T,
}

/// Tags of the handle kinds: "anyverbs" in ASCII, with the low byte naming the kind.
mod tag {
    pub const PROVIDER: u64 = 0x616e_7976_6572_6201;
    pub const DEVICE: u64 = 0x616e_7976_6572_6202;
    pub const PD: u64 = 0x616e_7976_6572_6203;
    pub const MR: u64 = 0x616e_7976_6572_6204;
    pub const CQ: u64 = 0x616e_7976_6572_6205;
    pub const QP: u64 = 0x616e_7976_6572_6206;
    pub const LISTENER: u64 = 0x616e_7976_6572_6207;
    pub const DEVICE_EVENTS: u64 = 0x616e_7976_6572_6208;
    pub const MONITOR_EVENTS: u64 = 0x616e_7976_6572_6209;
    /// Written into a handle as it is released.
    pub const RELEASED: u64 = 0;
}

/// Boxes `value` as a handle with `tag` and stores the pointer in `out`.
///
/// # Safety
/// `out` must be valid for a write (checked for null).
unsafe fn hand_out<T, R>(out: *mut *mut R, tag: u64, value: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid_argument("null result pointer"));
    }
    let handle = Box::into_raw(Box::new(Handle { tag, value }));
    // SAFETY: `out` is non-null and the caller guarantees it is writable.
    unsafe { *out = handle.cast() };
    Ok(())
}

/// The object behind a handle.
///
/// # Safety
/// `raw` must be null or a pointer this module handed out (and not yet released, which the tag
/// check catches on a best-effort basis only: a released box may have been reused).
#[inline]
unsafe fn object<'a, T, R>(raw: *const R, tag: u64, what: &str) -> Result<&'a T> {
    if raw.is_null() {
        return Err(bad_handle(raw.cast(), what));
    }
    // SAFETY: the caller guarantees that `raw` came from `hand_out`, as a handle of some kind;
    // every kind starts with its `u64` tag (`#[repr(C)]`), which is read before the handle is
    // taken to be of kind `T`.
    if unsafe { raw.cast::<u64>().read() } != tag {
        return Err(bad_handle(raw.cast(), what));
    }
    // SAFETY: the tag says the handle is a `Handle<T>`.
    Ok(unsafe { &(*raw.cast::<Handle<T>>()).value })
}

/// The error for a null handle or one of the wrong kind; out of line, as every call checks its
/// handle and hardly any fails.
#[cold]
#[inline(never)]
fn bad_handle(raw: *const u8, what: &str) -> Error {
    if raw.is_null() {
        Error::invalid_argument(format!("null {what} handle"))
    } else {
        Error::invalid_argument(format!(
            "unknown {what} handle {raw:p} (of another kind, or released)"
        ))
    }
}

/// Releases a handle: drops the provider's object. Panics in the object's `Drop` are caught.
///
/// # Safety
/// As for [`object`]; the handle must not be used afterwards.
unsafe fn release<T, R>(raw: *mut R, tag: u64) {
    if raw.is_null() {
        return;
    }
    let handle = raw.cast::<Handle<T>>();
    // SAFETY: the caller guarantees that `raw` came from `hand_out` as a `Handle<T>`.
    if unsafe { (*handle).tag } != tag {
        return;
    }
    // SAFETY: as above; the tag is cleared before the box is freed so that a second release of
    // the same pointer (while the memory is not reused) is refused.
    unsafe { (*handle).tag = tag::RELEASED };
    // SAFETY: the box was made by `hand_out` and is released exactly once (the tag check).
    let boxed = unsafe { Box::from_raw(handle) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

/// The message of an error for the ABI: the message, and each source's that says something
/// the text does not already say (a provider error converted into [`Error`] usually keeps
/// itself as the source with the same text, which would otherwise be said twice).
fn describe(e: &Error) -> String {
    let mut text = e.message().to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Writes `e` into the caller's buffer and returns its status.
///
/// # Safety
/// `err` must be null or valid for a write.
unsafe fn fail(err: *mut ErrorBuf, e: &Error) -> Status {
    if !err.is_null() {
        // SAFETY: the caller guarantees `err` is writable (its message bytes may be
        // uninitialised; `write_error` writes through raw pointers only).
        unsafe { abi::write_error(err, &describe(e)) };
    }
    abi::error_kind_code(e.kind())
}

/// Runs `f` with panics caught, and turns its outcome into a status.
///
/// # Safety
/// `err` must be null or valid for a write.
unsafe fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<()>) -> Status {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(Error::new(
            ErrorKind::Other,
            format!("the provider panicked: {}", panic_message(&*payload)),
        ))
    });
    match outcome {
        Ok(()) => STATUS_OK,
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { fail(err, &e) },
    }
}

/// Stores `value` through `out` if it is not null.
///
/// # Safety
/// `out` must be null or valid for a write.
unsafe fn put<T>(out: *mut T, value: T) -> Result<()> {
    if out.is_null() {
        return Err(Error::invalid_argument("null result pointer"));
    }
    // SAFETY: non-null, and the caller guarantees it is writable.
    unsafe { out.write(value) };
    Ok(())
}

/// A borrowed input struct.
///
/// # Safety
/// `p` must be null or point to a readable `T` that outlives `'a`.
unsafe fn input<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: forwarded to the caller.
    unsafe { p.as_ref() }.ok_or_else(|| Error::invalid_argument(format!("null {what}")))
}

/// Builds the table of `P`. `new` is the plugin's constructor, made by
/// [`export_provider!`](crate::export_provider) around the expression given to it.
pub const fn table<P: Provider>(
    name: &'static CStr,
    version: &'static CStr,
    new: unsafe extern "C" fn(*mut *mut RawProvider, *mut ErrorBuf) -> Status,
) -> ProviderTable {
    ProviderTable {
        header: abi::TableHeader {
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            table_size: size_of::<ProviderTable>() as u32,
        },
        name: name.as_ptr(),
        version: version.as_ptr(),
        provider_new: Some(new),
        provider_free: Some(provider_free::<P>),
        provider_name: Some(provider_name::<P>),
        provider_transport: Some(provider_transport::<P>),
        provider_devices: Some(provider_devices::<P>),
        provider_open: Some(provider_open::<P>),
        provider_monitor: Some(provider_monitor::<P>),
        provider_inject: Some(provider_inject::<P>),
        device_free: Some(device_free::<P>),
        device_ports: Some(device_ports::<P>),
        device_alloc_pd: Some(device_alloc_pd::<P>),
        device_create_cq: Some(device_create_cq::<P>),
        device_listen: Some(device_listen::<P>),
        device_events: Some(device_events::<P>),
        pd_free: Some(pd_free::<P>),
        pd_register: Some(pd_register::<P>),
        pd_create_qp: Some(pd_create_qp::<P>),
        pd_destroy: Some(pd_destroy::<P>),
        mr_free: Some(mr_free::<P>),
        mr_write: Some(mr_write::<P>),
        mr_read: Some(mr_read::<P>),
        mr_destroy: Some(mr_destroy::<P>),
        cq_free: Some(cq_free::<P>),
        cq_poll: Some(cq_poll::<P>),
        cq_wait: Some(cq_wait::<P>),
        cq_destroy: Some(cq_destroy::<P>),
        qp_free: Some(qp_free::<P>),
        qp_state: Some(qp_state::<P>),
        qp_modify: Some(qp_modify::<P>),
        qp_post_send: Some(qp_post_send::<P>),
        qp_post_recv: Some(qp_post_recv::<P>),
        qp_connect: Some(qp_connect::<P>),
        qp_wait_connected: Some(qp_wait_connected::<P>),
        qp_drain: Some(qp_drain::<P>),
        qp_destroy: Some(qp_destroy::<P>),
        listener_free: Some(listener_free::<P>),
        listener_next_request: Some(listener_next_request::<P>),
        listener_accept: Some(listener_accept::<P>),
        listener_reject: Some(listener_reject::<P>),
        device_events_free: Some(device_events_free),
        device_events_recv: Some(device_events_recv),
        monitor_events_free: Some(monitor_events_free),
        monitor_events_recv: Some(monitor_events_recv),
    }
}

/// The body of a plugin's `provider_new`: runs `new` with panics caught and hands out the
/// provider.
///
/// # Safety
/// `out` and `err` must be null or valid for a write.
pub unsafe fn provider_new<P: Provider>(
    out: *mut *mut RawProvider,
    err: *mut ErrorBuf,
    new: impl FnOnce() -> Result<P>,
) -> Status {
    // SAFETY: forwarded to the caller.
    unsafe { guard(err, || hand_out(out, tag::PROVIDER, new()?)) }
}

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

unsafe extern "C" fn provider_free<P: Provider>(p: *mut RawProvider) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P, _>(p, tag::PROVIDER) }
}

unsafe extern "C" fn provider_name<P: Provider>(
    p: *const RawProvider,
    sink: abi::Sink<abi::Bytes>,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a provider handle from `provider_new`.
        if let Ok(p) = unsafe { object::<P, _>(p, tag::PROVIDER, "provider") } {
            let name = convert::bytes(p.name().as_bytes());
            // SAFETY: the sink is the loader's, and `name` lives across the call.
            unsafe { (sink.put)(sink.ctx, &name) };
        }
    }));
}

unsafe extern "C" fn provider_transport<P: Provider>(p: *const RawProvider) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a provider handle from `provider_new`.
        unsafe { object::<P, _>(p, tag::PROVIDER, "provider") }
            .map_or(0, |p| convert::transport_code(p.transport()))
    }))
    .unwrap_or(0)
}

unsafe extern "C" fn provider_devices<P: Provider>(
    p: *const RawProvider,
    sink: abi::Sink<abi::DeviceInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            for info in p.devices()? {
                let raw = convert::device_info(&info);
                (sink.put)(sink.ctx, &raw);
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn provider_open<P: Provider>(
    p: *const RawProvider,
    name: abi::Bytes,
    out: *mut *mut abi::RawDevice,
    info: abi::Sink<abi::DeviceInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, name, sink and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            let name = convert::text(
                name,
                "device name",
                convert::NAME_ARGUMENT_MAX,
                ErrorKind::InvalidArgument,
            )?;
            let device = p.open(name)?;
            let raw = convert::device_info(device.info());
            (info.put)(info.ctx, &raw);
            hand_out(out, tag::DEVICE, device)
        })
    }
}

unsafe extern "C" fn provider_monitor<P: Provider>(
    p: *const RawProvider,
    out: *mut *mut abi::RawMonitorEvents,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            hand_out(out, tag::MONITOR_EVENTS, p.monitor()?)
        })
    }
}

unsafe extern "C" fn provider_inject<P: Provider>(
    p: *const RawProvider,
    name: abi::Bytes,
    fault: *const abi::Fault,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, name and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            let name = convert::text(
                name,
                "device name",
                convert::NAME_ARGUMENT_MAX,
                ErrorKind::InvalidArgument,
            )?;
            let fault = convert::fault_from(input(fault, "fault")?)?;
            p.inject(name, &fault)
        })
    }
}

unsafe extern "C" fn device_free<P: Provider>(d: *mut abi::RawDevice) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Device, _>(d, tag::DEVICE) }
}

unsafe extern "C" fn device_ports<P: Provider>(
    d: *const abi::RawDevice,
    sink: abi::Sink<abi::PortInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            for port in d.ports()? {
                let addresses: SmallVec<[abi::SockAddr; 4]> = port
                    .addresses
                    .iter()
                    .map(|ip| convert::sock_addr(std::net::SocketAddr::new(*ip, 0)))
                    .collect();
                let raw = abi::PortInfo {
                    number: port.number,
                    state: convert::port_state_code(port.state),
                    link_layer: convert::link_layer_code(port.link_layer),
                    addresses: addresses.as_ptr(),
                    address_count: addresses.len(),
                };
                (sink.put)(sink.ctx, &raw);
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn device_alloc_pd<P: Provider>(
    d: *const abi::RawDevice,
    out: *mut *mut abi::RawPd,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            hand_out(out, tag::PD, d.alloc_pd()?)
        })
    }
}

unsafe extern "C" fn device_create_cq<P: Provider>(
    d: *const abi::RawDevice,
    depth: u32,
    out: *mut *mut abi::RawCq,
    info: *mut abi::CqInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let cq = d.create_cq(depth)?;
            put(
                info,
                abi::CqInfo {
                    cq_num: cq.cq_num(),
                    capacity: cq.capacity(),
                },
            )?;
            hand_out(out, tag::CQ, cq)
        })
    }
}

unsafe extern "C" fn device_listen<P: Provider>(
    d: *const abi::RawDevice,
    addr: *const abi::SockAddr,
    out: *mut *mut abi::RawListener,
    local: *mut abi::SockAddr,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let addr =
                convert::sock_addr_from(input(addr, "address")?, ErrorKind::InvalidArgument)?;
            let listener = d.listen(addr)?;
            put(local, convert::sock_addr(listener.local_addr()))?;
            hand_out(out, tag::LISTENER, listener)
        })
    }
}

unsafe extern "C" fn device_events<P: Provider>(
    d: *const abi::RawDevice,
    out: *mut *mut abi::RawDeviceEvents,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            hand_out(out, tag::DEVICE_EVENTS, d.events()?)
        })
    }
}

unsafe extern "C" fn pd_free<P: Provider>(pd: *mut abi::RawPd) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Pd, _>(pd, tag::PD) }
}

unsafe extern "C" fn pd_register<P: Provider>(
    pd: *const abi::RawPd,
    len: usize,
    access: u32,
    out: *mut *mut abi::RawMr,
    info: *mut abi::MrInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let mr = pd.register(len, convert::access_from(access)?)?;
            put(
                info,
                abi::MrInfo {
                    addr: mr.addr(),
                    len: mr.len() as u64,
                    lkey: mr.lkey(),
                    rkey: mr.rkey(),
                    access: mr.access().bits(),
                },
            )?;
            hand_out(out, tag::MR, mr)
        })
    }
}

unsafe extern "C" fn pd_create_qp<P: Provider>(
    pd: *const abi::RawPd,
    send_cq: *const abi::RawCq,
    recv_cq: *const abi::RawCq,
    init: *const abi::QpInit,
    out: *mut *mut abi::RawQp,
    qp_num: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let send_cq = object::<P::Cq, _>(send_cq, tag::CQ, "send CQ")?;
            let recv_cq = object::<P::Cq, _>(recv_cq, tag::CQ, "receive CQ")?;
            let init = input(init, "QP init")?;
            let init = QpInit {
                max_send_wr: init.max_send_wr,
                max_recv_wr: init.max_recv_wr,
                max_send_sge: init.max_send_sge,
                max_recv_sge: init.max_recv_sge,
                max_inline_data: init.max_inline_data,
            };
            let qp = pd.create_qp(send_cq, recv_cq, &init)?;
            put(qp_num, qp.qp_num())?;
            hand_out(out, tag::QP, qp)
        })
    }
}

unsafe extern "C" fn pd_destroy<P: Provider>(pd: *const abi::RawPd, err: *mut ErrorBuf) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Pd, _>(pd, tag::PD, "PD")?.destroy()) }
}

unsafe extern "C" fn mr_free<P: Provider>(mr: *mut abi::RawMr) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Mr, _>(mr, tag::MR) }
}

unsafe extern "C" fn mr_write<P: Provider>(
    mr: *const abi::RawMr,
    offset: usize,
    src: *const u8,
    len: usize,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, buffer, and `src` readable for `len` bytes, as the ABI documents.
    unsafe {
        guard(err, || {
            let mr = object::<P::Mr, _>(mr, tag::MR, "MR")?;
            mr.write(offset, convert::slice(abi::Bytes { ptr: src, len }))
        })
    }
}

unsafe extern "C" fn mr_read<P: Provider>(
    mr: *const abi::RawMr,
    offset: usize,
    dst: *mut u8,
    len: usize,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, buffer, and `dst` writable for `len` bytes, as the ABI documents.
    unsafe {
        guard(err, || {
            let mr = object::<P::Mr, _>(mr, tag::MR, "MR")?;
            let dst = if len == 0 || dst.is_null() {
                &mut [][..]
            } else {
                std::slice::from_raw_parts_mut(dst, len)
            };
            mr.read(offset, dst)
        })
    }
}

unsafe extern "C" fn mr_destroy<P: Provider>(mr: *const abi::RawMr, err: *mut ErrorBuf) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Mr, _>(mr, tag::MR, "MR")?.destroy()) }
}

unsafe extern "C" fn cq_free<P: Provider>(cq: *mut abi::RawCq) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Cq, _>(cq, tag::CQ) }
}

/// The data path (polls and posts) runs with panics caught like every call, but its closures
/// return the ABI's result itself and every error leaves through a cold, out-of-line function:
/// the happy path then moves no `Error` around, which would cost a post or poll more than the
/// crossing does.
///
/// # Safety
/// `err` must be null or valid for a write.
#[inline]
unsafe fn guard_poll(err: *mut ErrorBuf, f: impl FnOnce() -> abi::PollResult) -> abi::PollResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        // SAFETY: forwarded to the caller.
        Err(payload) => unsafe { poll_failed(err, panicked(payload)) },
    }
}

/// As [`guard_poll`], for a post.
///
/// # Safety
/// `fail` must be null or valid for a write.
#[inline]
unsafe fn guard_post(fail: *mut abi::PostFailure, f: impl FnOnce() -> Status) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        // SAFETY: forwarded to the caller. After a panic nothing is known about the batch, so
        // none is reported accepted, which is what the caller must then assume for the WRs it
        // still owns.
        Err(payload) => unsafe { post_failed(fail, 0, panicked(payload)) },
    }
}

/// The error of a panic on the data path.
#[cold]
#[inline(never)]
fn panicked(payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("the provider panicked: {}", panic_message(&*payload)),
    )
}

/// The result of a poll that failed with `e`; the message goes into the caller's buffer.
///
/// # Safety
/// `err` must be null or valid for a write.
#[cold]
#[inline(never)]
unsafe fn poll_failed(err: *mut ErrorBuf, e: Error) -> abi::PollResult {
    // SAFETY: forwarded to the caller.
    let status = unsafe { fail(err, &e) };
    -(status as abi::PollResult)
}

/// The status of a post that failed with `e` after accepting `n` WRs, which goes into the
/// caller's `fail` with the message (unless it is null).
///
/// # Safety
/// `fail` must be null or valid for a write (its message bytes may be uninitialised).
#[cold]
#[inline(never)]
unsafe fn post_failed(failure: *mut abi::PostFailure, n: usize, e: Error) -> Status {
    if failure.is_null() {
        return abi::error_kind_code(e.kind());
    }
    // SAFETY: non-null and writable, as the caller guarantees; written through raw pointers,
    // as the message bytes may be uninitialised.
    unsafe {
        (&raw mut (*failure).accepted).write(n);
        fail(&raw mut (*failure).error, &e)
    }
}

/// The most completions one poll through the ABI returns: the plugin clears that much of the
/// caller's buffer first.
const POLL_MAX: usize = 64;

/// Polls (or, with a deadline, waits) straight into the caller's buffer.
///
/// The buffer may be uninitialised (as a C caller's `struct … wc[16]` is), so its first
/// `min(capacity, POLL_MAX)` entries are cleared first, all zeros being a valid completion,
/// before the provider sees them as `&mut [Completion]`. Clearing costs a store or two per
/// entry; a loader's buffer is valid already, but the plugin cannot know whose it is.
///
/// # Safety
/// `cq` as the ABI documents; `out` must be writable for `capacity` completions (the ABI's rule
/// for `cq_poll`); `err` null or writable.
#[inline(always)]
unsafe fn poll_into<C: CompletionQueue>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    deadline: Option<std::time::Instant>,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: forwarded to the caller.
    let cq = match unsafe { object::<C, _>(cq, tag::CQ, "CQ") } {
        Ok(cq) => cq,
        // SAFETY: forwarded to the caller.
        Err(e) => return unsafe { poll_failed(err, e) },
    };
    if capacity > 0 && (out.is_null() || !out.is_aligned()) {
        // SAFETY: forwarded to the caller.
        return unsafe { poll_failed(err, bad_poll_buffer(out)) };
    }
    let want = capacity.min(POLL_MAX);
    if want > 0 {
        // Polling for the one completion awaited is common: three stores, and a call to
        // `memset` only for the rest of a larger buffer.
        // SAFETY: the caller guarantees `capacity >= 1` writable completions at `out`
        // (non-null and aligned, as checked).
        unsafe { out.write(abi::Completion::ZERO) };
        if want > 1 {
            // SAFETY: as above, for the `want - 1` completions after the first.
            unsafe { clear_completions(out.add(1), want - 1) };
        }
    }
    let wc: &mut [Completion] = if want == 0 {
        &mut []
    } else {
        // SAFETY: `abi::Completion` and `Completion` have the same layout (asserted in `abi`),
        // all zeros is a valid `Completion` (asserted in `wr`), and the `want` entries just
        // cleared stay borrowed for this call only.
        unsafe { std::slice::from_raw_parts_mut(out.cast::<Completion>(), want) }
    };
    let polled = match deadline {
        None => cq.poll(wc),
        Some(deadline) => cq.wait(wc, deadline),
    };
    match polled {
        // `want <= POLL_MAX`, far below `isize::MAX`.
        Ok(n) if n <= want => n as abi::PollResult,
        // SAFETY: forwarded to the caller.
        Ok(n) => unsafe { poll_failed(err, overfull(n, want)) },
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { poll_failed(err, e) },
    }
}

/// Zeroes `n` completions at `out`; out of line, so that a poll for one completion keeps no
/// register for the call.
///
/// # Safety
/// `out` must be writable for `n` completions.
#[inline(never)]
unsafe fn clear_completions(out: *mut abi::Completion, n: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { out.write_bytes(0, n) }
}

#[cold]
#[inline(never)]
fn bad_poll_buffer(out: *mut abi::Completion) -> Error {
    Error::invalid_argument(format!(
        "the completion buffer {out:p} is null or misaligned"
    ))
}

#[cold]
#[inline(never)]
fn overfull(n: usize, capacity: usize) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("the provider's CQ reported {n} completions for room for {capacity}"),
    )
}

unsafe extern "C" fn cq_poll<P: Provider>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: handle, buffers and pointers as the ABI documents.
    unsafe { guard_poll(err, || poll_into::<P::Cq>(cq, out, capacity, None, err)) }
}

unsafe extern "C" fn cq_wait<P: Provider>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    timeout_ns: u64,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: handle, buffers and pointers as the ABI documents.
    unsafe {
        guard_poll(err, || {
            let deadline = convert::deadline_in(timeout_ns);
            poll_into::<P::Cq>(cq, out, capacity, Some(deadline), err)
        })
    }
}

unsafe extern "C" fn cq_destroy<P: Provider>(cq: *const abi::RawCq, err: *mut ErrorBuf) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Cq, _>(cq, tag::CQ, "CQ")?.destroy()) }
}

unsafe extern "C" fn qp_free<P: Provider>(qp: *mut abi::RawQp) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Qp, _>(qp, tag::QP) }
}

unsafe extern "C" fn qp_state<P: Provider>(
    qp: *const abi::RawQp,
    state: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            put(state, convert::qp_state_code(qp.state()?))
        })
    }
}

unsafe extern "C" fn qp_modify<P: Provider>(
    qp: *const abi::RawQp,
    state: u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            qp.modify(convert::qp_state_from(state, ErrorKind::InvalidArgument)?)
        })
    }
}

/// A WR in ABI form that crosses as the crate's own WR type.
trait AbiWr: Sized {
    /// The crate's own WR type, of the same layout.
    type Wr<'a>
    where
        Self: 'a;

    /// Whether this WR holds only values the crate's own type allows.
    fn is_valid(&self) -> bool;

    /// `wrs` as the crate's own WRs.
    ///
    /// # Safety
    /// Every WR of `wrs` must be [valid](Self::is_valid), and its scatter list readable for
    /// `'a`.
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>];

    /// The longest prefix of `wrs` whose WRs are [valid](Self::is_valid), as the crate's own
    /// WRs.
    ///
    /// # Safety
    /// The scatter lists of `wrs` must be readable for `'a`.
    unsafe fn valid_prefix<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !wr.is_valid())
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` WRs are valid (checked); their scatter lists as the caller
        // guarantees.
        unsafe { Self::cast(&wrs[..n]) }
    }

    /// Why this WR is not [valid](Self::is_valid).
    fn refusal(&self) -> Error;
}

impl AbiWr for abi::SendWr {
    type Wr<'a> = crate::wr::SendWr<'a>;

    #[inline(always)]
    fn is_valid(&self) -> bool {
        convert::send_wr_ok(self)
    }

    #[inline(always)]
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        // SAFETY: forwarded to the caller.
        unsafe { convert::valid_send_wrs(wrs) }
    }

    fn refusal(&self) -> Error {
        convert::send_wr_refusal(self)
    }
}

impl AbiWr for abi::RecvWr {
    type Wr<'a> = crate::wr::RecvWr<'a>;

    #[inline(always)]
    fn is_valid(&self) -> bool {
        convert::recv_wr_ok(self)
    }

    #[inline(always)]
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        // SAFETY: forwarded to the caller.
        unsafe { convert::valid_recv_wrs(wrs) }
    }

    fn refusal(&self) -> Error {
        convert::recv_wr_refusal(self)
    }
}

/// Posts a batch from the ABI, the WRs as they are: all of them, or those before the first
/// that breaks the ABI, which is then refused, so the count of accepted WRs stays exact.
///
/// # Safety
/// `qp` as the ABI documents; `wrs` null or `count` readable WRs whose scatter lists are
/// readable across the call; `accepted` and `err` null or writable.
#[inline(always)]
unsafe fn post_batch<Q: QueuePair, A: AbiWr>(
    qp: *const abi::RawQp,
    (wrs, count): (*const A, usize),
    fail: *mut abi::PostFailure,
    post: impl for<'a> FnOnce(&Q, &[A::Wr<'a>]) -> Result<(), PostError>,
) -> Status {
    // SAFETY: forwarded to the caller.
    let qp = match unsafe { object::<Q, _>(qp, tag::QP, "QP") } {
        Ok(qp) => qp,
        // SAFETY: forwarded to the caller.
        Err(e) => return unsafe { post_failed(fail, 0, e) },
    };
    // SAFETY: `count` readable WRs, as the caller guarantees.
    let Some(raw) = (unsafe { convert::checked_array(wrs, count) }) else {
        // SAFETY: forwarded to the caller.
        return unsafe { post_failed(fail, 0, bad_batch(wrs, count)) };
    };
    // A post of one WR is common: one check, no loop.
    let valid = match raw {
        [one] => one.is_valid(),
        _ => raw.iter().all(A::is_valid),
    };
    if !valid {
        // SAFETY: forwarded to the caller.
        return unsafe { post_valid_prefix(qp, raw, fail, post) };
    }
    // SAFETY: every WR is valid (checked), its scatter list readable across the call, as the
    // caller guarantees.
    match post(qp, unsafe { A::cast(raw) }) {
        Ok(()) => STATUS_OK,
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { post_failed(fail, e.accepted, e.error) },
    }
}

/// Posts the WRs of `raw` before the first that breaks the ABI, then refuses that one. When the
/// very first WR is refused, nothing is posted: the provider's answer to an empty post must not
/// replace the reason.
///
/// # Safety
/// As for [`post_batch`].
#[cold]
#[inline(never)]
unsafe fn post_valid_prefix<Q: QueuePair, A: AbiWr>(
    qp: &Q,
    raw: &[A],
    fail: *mut abi::PostFailure,
    post: impl for<'a> FnOnce(&Q, &[A::Wr<'a>]) -> Result<(), PostError>,
) -> Status {
    // SAFETY: the scatter lists are readable across the call, as the caller guarantees.
    let ok = unsafe { A::valid_prefix(raw) };
    let n = ok.len();
    if n > 0
        && let Err(e) = post(qp, ok)
    {
        // SAFETY: forwarded to the caller.
        return unsafe { post_failed(fail, e.accepted, e.error) };
    }
    match raw.get(n) {
        // SAFETY: forwarded to the caller.
        Some(bad) => unsafe { post_failed(fail, n, bad.refusal()) },
        // Only if called for a batch whose WRs are all valid: then all were posted.
        None => STATUS_OK,
    }
}

#[cold]
#[inline(never)]
fn bad_batch<A>(wrs: *const A, count: usize) -> Error {
    Error::invalid_argument(format!(
        "a post of {count} WRs from an array at {wrs:p} that is null, misaligned or too long"
    ))
}

unsafe extern "C" fn qp_post_send<P: Provider>(
    qp: *const abi::RawQp,
    wrs: *const abi::SendWr,
    count: usize,
    fail: *mut abi::PostFailure,
) -> Status {
    // SAFETY: handle, `count` readable WRs at `wrs` with readable scatter lists, and `fail`
    // as the ABI documents.
    unsafe {
        guard_post(fail, || {
            post_batch::<P::Qp, _>(qp, (wrs, count), fail, |qp, b| qp.post_send(b))
        })
    }
}

unsafe extern "C" fn qp_post_recv<P: Provider>(
    qp: *const abi::RawQp,
    wrs: *const abi::RecvWr,
    count: usize,
    fail: *mut abi::PostFailure,
) -> Status {
    // SAFETY: as for `qp_post_send`.
    unsafe {
        guard_post(fail, || {
            post_batch::<P::Qp, _>(qp, (wrs, count), fail, |qp, b| qp.post_recv(b))
        })
    }
}

unsafe extern "C" fn qp_connect<P: Provider>(
    qp: *const abi::RawQp,
    remote: *const abi::SockAddr,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let remote =
                convert::sock_addr_from(input(remote, "address")?, ErrorKind::InvalidArgument)?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            qp.connect(remote, &params)
        })
    }
}

unsafe extern "C" fn qp_wait_connected<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::Connection,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let connection = qp.wait_connected(convert::deadline_in(timeout_ns))?;
            put(out, convert::connection(&connection)?)
        })
    }
}

unsafe extern "C" fn qp_drain<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::DrainReport,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let report = qp.drain(convert::deadline_in(timeout_ns))?;
            put(out, convert::drain_report(&report))
        })
    }
}

unsafe extern "C" fn qp_destroy<P: Provider>(qp: *const abi::RawQp, err: *mut ErrorBuf) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Qp, _>(qp, tag::QP, "QP")?.destroy()) }
}

unsafe extern "C" fn listener_free<P: Provider>(l: *mut abi::RawListener) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Listener, _>(l, tag::LISTENER) }
}

unsafe extern "C" fn listener_next_request<P: Provider>(
    l: *const abi::RawListener,
    timeout_ns: u64,
    out: *mut abi::ConnectRequest,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = l.next_request(convert::deadline_in(timeout_ns))?;
            put(out, convert::connect_request(&request)?)
        })
    }
}

unsafe extern "C" fn listener_accept<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    qp: *const abi::RawQp,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            l.accept(&request, qp, &params)
        })
    }
}

unsafe extern "C" fn listener_reject<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    private_data: abi::Bytes,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            l.reject(
                &request,
                convert::private_slice(private_data, ErrorKind::InvalidArgument)?,
            )
        })
    }
}

unsafe extern "C" fn device_events_free(s: *mut abi::RawDeviceEvents) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<EventStream<DeviceEvent>, _>(s, tag::DEVICE_EVENTS) }
}

unsafe extern "C" fn device_events_recv(
    s: *const abi::RawDeviceEvents,
    timeout_ns: u64,
    out: *mut abi::DeviceEvent,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let s = object::<EventStream<DeviceEvent>, _>(s, tag::DEVICE_EVENTS, "event stream")?;
            let raw = match s.recv_next(convert::deadline_in(timeout_ns))? {
                Next::Event(e) => convert::device_event(&e),
                Next::Missed(n) => abi::DeviceEvent {
                    missed: n,
                    ..abi::DeviceEvent::default()
                },
            };
            put(out, raw)
        })
    }
}

unsafe extern "C" fn monitor_events_free(s: *mut abi::RawMonitorEvents) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<EventStream<MonitorEvent>, _>(s, tag::MONITOR_EVENTS) }
}

unsafe extern "C" fn monitor_events_recv(
    s: *const abi::RawMonitorEvents,
    timeout_ns: u64,
    sink: abi::Sink<abi::MonitorEvent>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let s = object::<EventStream<MonitorEvent>, _>(s, tag::MONITOR_EVENTS, "monitor")?;
            let next = s.recv_next(convert::deadline_in(timeout_ns))?;
            let raw = match &next {
                Next::Event(MonitorEvent::Added(info)) => abi::MonitorEvent {
                    kind: 1,
                    info: convert::device_info(info),
                    missed: 0,
                },
                Next::Event(MonitorEvent::Removed(identity)) => abi::MonitorEvent {
                    kind: 2,
                    info: blank_info(convert::identity(identity)),
                    missed: 0,
                },
                Next::Missed(n) => abi::MonitorEvent {
                    kind: 0,
                    info: blank_info(abi::Identity {
                        name: convert::bytes(&[]),
                        index: 0,
                        vendor_id: 0,
                        vendor_part_id: 0,
                        has_pci: 0,
                        pci_bus: 0,
                        pci_device: 0,
                        pci_function: 0,
                        pci_domain: 0,
                        node_guid: 0,
                        sys_image_guid: 0,
                    }),
                    missed: *n,
                },
            };
            (sink.put)(sink.ctx, &raw);
            Ok(())
        })
    }
}

/// Device information holding only an identity (for a removal, where nothing else is known).
fn blank_info(identity: abi::Identity) -> abi::DeviceInfo {
    abi::DeviceInfo {
        identity,
        transport: 0,
        state_model: 0,
        caps: 0,
        limits: abi::Limits::default(),
    }
}
