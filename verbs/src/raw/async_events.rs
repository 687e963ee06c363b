//! The verbs async event channel of a device context (`ibv_get_async_event`), read without
//! blocking and acknowledged at once.

use std::ffi::c_int;
use std::ptr::NonNull;

use rdma_mummy_sys::{
    ibv_ack_async_event, ibv_async_event, ibv_context, ibv_cq, ibv_get_async_event, ibv_qp,
};

/// What an async event is about, copied out before the event is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncElement {
    /// A QP, by number.
    Qp(u32),
    /// A CQ, by the address of its `ibv_cq` (the key [`Cq::key`](crate::objects::Cq::key) returns).
    Cq(usize),
    /// A port, from 1.
    Port(u8),
    /// A shared receive queue or work queue (not used by anyverbs), or the device itself.
    Other,
}

/// One async event: its `ibv_event_type` number and what it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAsyncEvent {
    /// `ibv_event_type` as a number (an event newer than the bindings is kept, not misread).
    pub event_type: u32,
    /// What the event is about.
    pub element: AsyncElement,
}

/// `struct ibv_async_event` with its type as a plain `u32`. rdma-mummy-sys declares that field as
/// a Rust enum, and reading an event type it does not list (a newer kernel's) into one would be
/// undefined behaviour. Same size, alignment and field offsets, checked below.
#[repr(C)]
struct AsyncEventSlot {
    element: usize,
    event_type: u32,
}

const _: () = {
    assert!(std::mem::size_of::<AsyncEventSlot>() == std::mem::size_of::<ibv_async_event>());
    assert!(std::mem::align_of::<AsyncEventSlot>() == std::mem::align_of::<ibv_async_event>());
    assert!(
        std::mem::offset_of!(AsyncEventSlot, event_type)
            == std::mem::offset_of!(ibv_async_event, event_type)
    );
};

// The event types whose element is a QP, a CQ or a port (verbs.h).
const CQ_ERR: u32 = 0;
const QP_EVENTS: [u32; 7] = [1, 2, 3, 4, 5, 6, 7]; // QP_FATAL, QP_REQ_ERR, QP_ACCESS_ERR, COMM_EST, SQ_DRAINED, PATH_MIG, PATH_MIG_ERR
const QP_LAST_WQE_REACHED: u32 = 16;
const PORT_EVENTS: [u32; 7] = [9, 10, 11, 12, 13, 17, 18]; // PORT_ACTIVE, PORT_ERR, LID/PKEY/SM change, CLIENT_REREGISTER, GID_CHANGE
const DEVICE_SPEED_CHANGE: u32 = 20;

/// Sets the context's async fd non-blocking, so [`next`] returns at once when nothing waits.
///
/// # Safety
/// `context` must be a live device context.
pub unsafe fn set_nonblocking(context: NonNull<ibv_context>) -> std::io::Result<c_int> {
    // SAFETY: the context is live (the caller's contract); async_fd is a plain field.
    let fd = unsafe { context.as_ref().async_fd };
    // SAFETY: fcntl on an fd the context owns; F_GETFL/F_SETFL touch only its status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads the next async event of `context`, copies what it says and acknowledges it; `Ok(None)`
/// when none is waiting (the fd must be non-blocking: [`set_nonblocking`]).
///
/// Acknowledging at once matters: `ibv_destroy_qp` and `ibv_destroy_cq` wait until every event
/// about their object has been acknowledged.
///
/// # Safety
/// `context` must be a live device context whose async fd is non-blocking.
pub unsafe fn next(context: NonNull<ibv_context>) -> std::io::Result<Option<RawAsyncEvent>> {
    let mut slot = AsyncEventSlot {
        element: 0,
        event_type: 0,
    };
    // SAFETY: `slot` has the layout of ibv_async_event (checked above) and lives for the call;
    // the context is live (the caller's contract).
    let rc =
        unsafe { ibv_get_async_event(context.as_ptr(), (&mut slot as *mut AsyncEventSlot).cast()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return match err.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
            _ => Err(err),
        };
    }
    let t = slot.event_type;
    let element = if QP_EVENTS.contains(&t) || t == QP_LAST_WQE_REACHED {
        let qp = slot.element as *const ibv_qp;
        if qp.is_null() {
            AsyncElement::Other
        } else {
            // SAFETY: for these types the element is the `ibv_qp *` of a QP of this process,
            // which cannot be destroyed before the event is acknowledged (ibv_destroy_qp waits
            // for it), and the event is not yet acknowledged.
            AsyncElement::Qp(unsafe { (*qp).qp_num })
        }
    } else if t == CQ_ERR {
        AsyncElement::Cq(slot.element as *const ibv_cq as usize)
    } else if PORT_EVENTS.contains(&t) || t == DEVICE_SPEED_CHANGE {
        // The element is a C int port number, stored in the union's first bytes.
        let bytes = slot.element.to_ne_bytes();
        let port = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        u8::try_from(port).map_or(AsyncElement::Other, AsyncElement::Port)
    } else {
        AsyncElement::Other
    };
    let event = RawAsyncEvent {
        event_type: t,
        element,
    };
    // SAFETY: `slot` is the event ibv_get_async_event filled and it is acknowledged once; the
    // bindings' type is only a pointer target here, and ibv_ack_async_event reads the type as
    // the C enum (an int) it is.
    unsafe { ibv_ack_async_event((&mut slot as *mut AsyncEventSlot).cast()) };
    Ok(Some(event))
}
