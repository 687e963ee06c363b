//! The plugin side of the ABI: a [`ProviderTable`] for any [`Provider`], made by
//! [`export_provider!`](crate::export_provider).
//!
//! Every function here checks its handles (non-null, and of the expected kind: each handle
//! carries a tag), catches panics, and turns every error into a status and a message. Handles
//! are boxes that the loader releases with the matching `*_free` function, which drops the
//! provider's object — and dropping a handle destroys it once nothing depends on it, as the
//! traits promise.
//!
//! One module per handle trait, each with that trait's functions, control path and data path
//! alike: `provider`, `device`, `pd`, `mr`, `cq`, `channel`, `qp`, `listener`, and `events` for
//! the event streams. The loader's side, `plugin/loaded/`, has the same files.

use std::ffi::CStr;
use std::panic::{AssertUnwindSafe, catch_unwind};

mod channel;
mod cq;
mod device;
mod events;
mod listener;
mod mr;
mod panics;
mod pd;
mod provider;
mod qp;

pub(crate) use panics::LOADER_IN_THIS_COPY;

use channel::*;
use cq::*;
use device::*;
use events::*;
use listener::*;
use mr::*;
use pd::*;
use provider::*;
use qp::*;

use super::abi::{self, ErrorBuf, ProviderTable, RawProvider, STATUS_OK, Status};
use super::convert;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::Provider;

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
    pub const CHANNEL: u64 = 0x616e_7976_6572_620a;
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

/// The error a caught panic becomes: its message and place, from the deferred report (see
/// [`panics`]), or from the payload where the hook did not defer.
fn panicked(payload: &(dyn std::any::Any + Send)) -> Error {
    let what = match panics::take() {
        Some(report) => report.summary(),
        None => {
            if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a non-string panic payload".to_string()
            }
        }
    };
    Error::new(ErrorKind::Other, format!("the provider panicked {what}"))
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
    let outcome =
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(&*payload)));
    match outcome {
        Ok(()) => STATUS_OK,
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { fail(err, &e) },
    }
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
        Err(payload) => unsafe { poll_failed(err, panicked_on_data_path(payload)) },
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
        Err(payload) => unsafe { post_failed(fail, 0, panicked_on_data_path(payload)) },
    }
}

/// The error of a panic on the data path.
#[cold]
#[inline(never)]
fn panicked_on_data_path(payload: Box<dyn std::any::Any + Send>) -> Error {
    panicked(&*payload)
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
        qp_disconnect: Some(qp_disconnect::<P>),
        qp_destroy: Some(qp_destroy::<P>),
        listener_free: Some(listener_free::<P>),
        listener_next_request: Some(listener_next_request::<P>),
        listener_accept: Some(listener_accept::<P>),
        listener_reject: Some(listener_reject::<P>),
        device_events_free: Some(device_events_free),
        device_events_recv: Some(device_events_recv),
        monitor_events_free: Some(monitor_events_free),
        monitor_events_recv: Some(monitor_events_recv),
        provider_held_objects: Some(provider_held_objects::<P>),
        device_create_channel: Some(device_create_channel::<P>),
        device_create_cq_on: Some(device_create_cq_on::<P>),
        cq_arm: Some(cq_arm::<P>),
        channel_free: Some(channel_free::<P>),
        channel_next: Some(channel_next::<P>),
        channel_destroy: Some(channel_destroy::<P>),
        pd_register_memory: Some(pd_register_memory::<P>),
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
    panics::install();
    // SAFETY: forwarded to the caller.
    unsafe { guard(err, || hand_out(out, tag::PROVIDER, new()?)) }
}
