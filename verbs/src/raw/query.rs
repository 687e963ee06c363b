//! `ibv_query_device` and `ibv_query_port` read into the C structs and copied out as numbers.
//! sideway's attribute types convert several fields through `From` impls that panic on a value
//! they do not list (an MTU, link layer, port state or atomic capability newer than it), and a
//! device's answer must never panic the process.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use rdma_mummy_sys::{ibv_context, ibv_device_attr, ibv_port_attr};

/// `ibv_query_device`.
///
/// # Safety
/// `context` must be a live device context.
pub unsafe fn device(context: NonNull<ibv_context>) -> Result<ibv_device_attr, i32> {
    let mut attr = MaybeUninit::<ibv_device_attr>::zeroed();
    // SAFETY: live context; `attr` is a valid out-buffer of the right type.
    let rc = unsafe { rdma_mummy_sys::ibv_query_device(context.as_ptr(), attr.as_mut_ptr()) };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: zero-initialised plain old data, filled by the call that returned 0.
    Ok(unsafe { attr.assume_init() })
}

/// `ibv_query_port` of `port` (from 1).
///
/// # Safety
/// `context` must be a live device context.
pub unsafe fn port(context: NonNull<ibv_context>, port: u8) -> Result<ibv_port_attr, i32> {
    let mut attr = MaybeUninit::<ibv_port_attr>::zeroed();
    // SAFETY: live context; `attr` is a valid out-buffer of the right type.
    let rc = unsafe { rdma_mummy_sys::ibv_query_port(context.as_ptr(), port, attr.as_mut_ptr()) };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: zero-initialised plain old data, filled by the call that returned 0.
    Ok(unsafe { attr.assume_init() })
}
