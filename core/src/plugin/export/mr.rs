//! The plugin side of [`MemoryRegion`]: reads, writes and destruction.

use super::*;
use crate::mr::MemoryRegion;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn mr_free<P: Provider>(mr: *mut abi::RawMr) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Mr, _>(mr, tag::MR) }
}

pub(super) unsafe extern "C" fn mr_write<P: Provider>(
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

pub(super) unsafe extern "C" fn mr_read<P: Provider>(
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

pub(super) unsafe extern "C" fn mr_destroy<P: Provider>(
    mr: *const abi::RawMr,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Mr, _>(mr, tag::MR, "MR")?.destroy()) }
}
