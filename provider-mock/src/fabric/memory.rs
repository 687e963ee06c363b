//! A memory region's bytes as the simulated device reaches them: memory the fabric allocated,
//! or memory a caller registered ([`RawPd::register_memory`](anyverbs::kit::RawPd::register_memory)),
//! both through a raw pointer. The mock's only unsafe code.
//!
//! # Why it is sound
//!
//! - **Valid memory.** The fabric's own memory is an allocation this module owns and frees
//!   when the region's record goes. A caller's memory is valid for reads and writes, and stays
//!   in place, until the region is deregistered — the contract of `register_memory`, which the
//!   caller (or the kit, for a lent buffer) upholds — and the record, the only holder of the
//!   pointer on the device's side, is removed from the fabric's table when the region is
//!   deregistered ([`State::destroy_mr`](super::State::destroy_mr)), under the fabric's lock:
//!   no device access is in progress then, and none can start after it.
//! - **No data race on the device's side.** Every access here runs with the fabric's lock held
//!   (`&State` or `&mut State`), so the simulated device's own accesses never overlap. The
//!   program's direct accesses (through [`Memory::host_ptr`], or its own pointer to memory it
//!   registered) are kept out of the device's way by the aliasing contract of
//!   [`anyverbs::mr`] — the program's duty, as with `ibv_reg_mr`.
//! - **No references.** Bytes are moved with `ptr::copy` (a `memmove`) and never borrowed as
//!   slices: a Rust reference into the memory would assert more than this module knows (two
//!   registrations may overlap, and the program may hold pointers into it), and the program's
//!   pointers stay valid because nothing here retags the memory.
//! - **Bounds.** Every access checks its range against the region's length and panics on a
//!   range outside it (the fabric resolves every SGE and remote access against the region's
//!   bounds before it copies, so none is out of range).

#![allow(unsafe_code)]

use std::ptr::NonNull;

/// A region's memory, reached through a raw pointer.
pub(crate) struct Memory {
    ptr: NonNull<u8>,
    len: usize,
    /// The fabric's own allocation (a leaked `Box<[u8]>`, freed on drop), or a caller's.
    owned: bool,
}

// SAFETY: the bytes are reached only under the fabric's lock (see the module's documentation);
// the pointer itself is plain data.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

/// Where a region's memory is, for the program's direct access
/// ([`RawMr::host_ptr`](anyverbs::kit::RawMr::host_ptr)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostPtr(NonNull<u8>);

// SAFETY: a plain address; what may be done with it is the region's contracts'.
unsafe impl Send for HostPtr {}
// SAFETY: as above.
unsafe impl Sync for HostPtr {}

impl HostPtr {
    /// The address.
    pub(crate) fn get(self) -> NonNull<u8> {
        self.0
    }
}

impl Memory {
    /// `len` zeroed bytes the fabric allocates.
    pub(crate) fn alloc(len: usize) -> Memory {
        let buf: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        Memory {
            ptr: NonNull::from(Box::leak(buf)).cast::<u8>(),
            len,
            owned: true,
        }
    }

    /// The caller's `len` bytes at `ptr`.
    ///
    /// # Safety
    /// They are valid for reads and writes, and stay allocated and in place, until this
    /// `Memory` is dropped (its region deregistered); the program keeps out of the device's way
    /// (the contract of `register_memory`).
    pub(crate) unsafe fn caller(ptr: NonNull<u8>, len: usize) -> Memory {
        Memory {
            ptr,
            len,
            owned: false,
        }
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first byte's address, as the device sees it.
    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The first byte, for the program's direct access.
    pub(crate) fn host_ptr(&self) -> HostPtr {
        HostPtr(self.ptr)
    }

    /// The `n` bytes at `offset`, checked to lie in the region.
    fn at(&self, offset: usize, n: usize) -> *mut u8 {
        assert!(
            offset.checked_add(n).is_some_and(|end| end <= self.len),
            "{n} bytes at offset {offset} outside a region of {} bytes",
            self.len
        );
        // SAFETY: `offset` is within the region's allocation (or one past its end), checked
        // above.
        unsafe { self.ptr.as_ptr().add(offset) }
    }

    /// Copies the bytes at `offset` into `dst`.
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
        let src = self.at(offset, dst.len());
        // SAFETY: `src` is valid for `dst.len()` reads (in bounds, valid memory: see the
        // module's documentation); `dst` is a distinct, exclusive borrow; `copy` allows overlap.
        unsafe { std::ptr::copy(src, dst.as_mut_ptr(), dst.len()) }
    }

    /// Appends the `n` bytes at `offset` to `out`.
    pub(crate) fn extend_into(&self, offset: usize, n: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + n, 0);
        self.read(offset, &mut out[start..]);
    }

    /// Copies `src` into the region at `offset`.
    pub(crate) fn write(&mut self, offset: usize, src: &[u8]) {
        let dst = self.at(offset, src.len());
        // SAFETY: `dst` is valid for `src.len()` writes (in bounds, valid memory); `copy`
        // allows `src` to overlap it.
        unsafe { std::ptr::copy(src.as_ptr(), dst, src.len()) }
    }

    /// Copies `n` bytes at `from` of `src` into this region at `to` (`src` may be this region,
    /// or overlap it: a caller may register the same memory twice).
    pub(crate) fn copy_from(&mut self, to: usize, src: &Memory, from: usize, n: usize) {
        let (s, d) = (src.at(from, n), self.at(to, n));
        // SAFETY: both ranges are in bounds of valid memory; `copy` is a `memmove`.
        unsafe { std::ptr::copy(s, d, n) }
    }

    /// Copies `n` bytes at `from` to `to` within the region.
    pub(crate) fn copy_within(&mut self, from: usize, to: usize, n: usize) {
        let (s, d) = (self.at(from, n), self.at(to, n));
        // SAFETY: as in `copy_from`.
        unsafe { std::ptr::copy(s, d, n) }
    }

    /// Every byte, copied (for the differential test's snapshots).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read(0, &mut v);
        v
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if self.owned {
            let whole = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
            // SAFETY: made by `alloc` from a leaked `Box<[u8]>` of `len` bytes, freed only
            // here; the record holding it is gone, and the program's pointers to it are dead
            // (the region is deregistered: their contract ends there).
            drop(unsafe { Box::from_raw(whole) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Memory;

    #[test]
    fn copies_within_across_and_out() {
        let mut a = Memory::alloc(8);
        a.write(2, b"abc");
        a.copy_within(2, 3, 3); // overlapping
        let mut caller = [0u8; 4];
        let ptr = std::ptr::NonNull::new(caller.as_mut_ptr()).unwrap();
        {
            // SAFETY: `caller` outlives `b` and is not touched while it lives.
            let mut b = unsafe { Memory::caller(ptr, 4) };
            b.copy_from(0, &a, 2, 4);
            assert_eq!(b.to_vec(), b"aabc");
            let mut out = Vec::new();
            b.extend_into(1, 2, &mut out);
            assert_eq!(out, b"ab");
        }
        assert_eq!(&caller, b"aabc", "landed in the caller's memory");
        assert_eq!(a.to_vec(), b"\0\0aabc\0\0");
    }

    #[test]
    #[should_panic(expected = "outside a region")]
    fn refuses_out_of_bounds() {
        Memory::alloc(4).write(3, b"ab");
    }
}
