//! The plugin side of [`CompletionChannel`]: its notifications; the channel is made by
//! `device_create_channel` (in `device`), and its fd handed out there.

use super::*;
use crate::cq::CompletionChannel;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn channel_free<P: Provider>(ch: *mut abi::RawChannel) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Channel, _>(ch, tag::CHANNEL) }
}

pub(super) unsafe extern "C" fn channel_next<P: Provider>(
    ch: *const abi::RawChannel,
    fired: *mut u32,
    cq_num: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let ch = object::<P::Channel, _>(ch, tag::CHANNEL, "completion channel")?;
            let next = ch.next()?;
            put(fired, u32::from(next.is_some()))?;
            put(cq_num, next.unwrap_or(0))
        })
    }
}

pub(super) unsafe extern "C" fn channel_destroy<P: Provider>(
    ch: *const abi::RawChannel,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            object::<P::Channel, _>(ch, tag::CHANNEL, "completion channel")?.destroy()
        })
    }
}
