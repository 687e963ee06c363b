//! [`MemoryRegion`]: registered memory and its access rights.
//!
//! # Zero-copy memory
//!
//! A region's memory comes from one of three places:
//! - the provider allocates it ([`ProtectionDomain::register`](crate::ProtectionDomain::register));
//! - the program lends a buffer it owns to the region, and gets it back once the region is
//!   deregistered ([`ProtectionDomain::register_buffer`](crate::ProtectionDomain::register_buffer),
//!   [`MemoryRegion::take_buffer`]): safe;
//! - the caller registers memory of its own ([`ProtectionDomain::register_memory`](crate::ProtectionDomain::register_memory)),
//!   as `ibv_reg_mr` does: `unsafe`, since the caller must keep it alive and out of the device's
//!   way.
//!
//! Every region can be reached by copies ([`MemoryRegion::read`], [`MemoryRegion::write`]),
//! which are always safe; a region in host memory also directly
//! ([`MemoryRegion::as_ptr`], [`MemoryRegion::slice`], [`MemoryRegion::slice_mut`]).
//!
//! ## The aliasing contract
//!
//! The device reads and writes a region's memory on its own, without Rust's borrow rules
//! knowing. Whoever touches the memory directly — through a slice or pointer from the region, or
//! through the caller's own pointer to memory it registered — must keep out of the device's way,
//! as with `ibv_reg_mr`:
//! - while a WR that **reads** the memory may still run (a send's or RDMA WRITE's source, a
//!   peer's RDMA READ with [`Access::REMOTE_READ`]), nobody may write it;
//! - while a WR that **writes** it may still run (a receive, an RDMA READ's destination, an
//!   atomic's result; a peer's RDMA WRITE with [`Access::REMOTE_WRITE`] or atomic with
//!   [`Access::REMOTE_ATOMIC`]), nobody may read or write it;
//! - a WR "may still run" until its completion was polled, or its QP was drained
//!   ([`QueuePair::drain`](crate::QueuePair::drain) returned: nothing touches the memory for that
//!   QP afterwards), or the region was deregistered (`destroy` returned `Ok`: the device
//!   never touches the memory again). Remote access rights granted to a connected peer count as
//!   a WR that may always run.
//!
//! A slice from [`slice`](MemoryRegion::slice) or [`slice_mut`](MemoryRegion::slice_mut) is a
//! Rust reference: for as long as it lives, the rules of references hold against the device,
//! against other slices, and against [`read`](MemoryRegion::read) and
//! [`write`](MemoryRegion::write) (a `&mut` slice excludes every other access; a `&` slice
//! excludes writes). Breaking them is a data race, undefined behaviour; the copying methods never
//! race with the device in a way that is undefined behaviour for the program (they may read
//! bytes the device is writing, which is the ULP's bug but not unsound).

use bitflags::bitflags;

use crate::error::{Error, Result};
use crate::wr::{RemoteAddr, Sge};

bitflags! {
    /// Access rights of a memory region (`IBV_ACCESS_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Access: u32 {
        /// The local device may write it (receives, RDMA READ destinations).
        const LOCAL_WRITE = 1 << 0;
        /// Peers may RDMA WRITE into it. Requires `LOCAL_WRITE`.
        const REMOTE_WRITE = 1 << 1;
        /// Peers may RDMA READ from it.
        const REMOTE_READ = 1 << 2;
        /// Peers may perform atomic operations on it: compare-and-swap and fetch-and-add
        /// ([`SendOp::CompareSwap`](crate::SendOp::CompareSwap),
        /// [`SendOp::FetchAdd`](crate::SendOp::FetchAdd), on devices with
        /// [`Caps::ATOMICS`](crate::Caps::ATOMICS)). Requires `LOCAL_WRITE`.
        const REMOTE_ATOMIC = 1 << 3;
    }
}

/// A registered memory region.
///
/// The memory is reached through copies ([`read`](Self::read), [`write`](Self::write)), which
/// are safe however the device uses it, or directly ([`as_ptr`](Self::as_ptr),
/// [`slice`](Self::slice), [`slice_mut`](Self::slice_mut)) under the [aliasing
/// contract](self#the-aliasing-contract), for zero-copy use.
pub trait MemoryRegion: Send + Sync {
    /// Virtual address of the first byte, as used in [`Sge::addr`] and [`RemoteAddr::addr`].
    fn addr(&self) -> u64;

    /// Length in bytes.
    fn len(&self) -> usize;

    /// True for a zero-length region.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Local key, for SGEs.
    fn lkey(&self) -> u32;

    /// Remote key, for peers' RDMA operations.
    fn rkey(&self) -> u32;

    /// Access rights it was registered with.
    fn access(&self) -> Access;

    /// Copies `src` into the region at `offset`. The region's memory is host memory, so this
    /// and [`read`](Self::read) keep working after the device is lost — the one exception to
    /// "every call fails with `DeviceLost`": data that arrived before the loss is not lost with
    /// the device.
    fn write(&self, offset: usize, src: &[u8]) -> Result<()>;

    /// Copies from the region at `offset` into `dst`.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Deregisters the region and frees its memory (memory the provider allocated). Once it
    /// returned `Ok` the device never touches the memory again: a caller's memory
    /// ([`register_memory`](crate::ProtectionDomain::register_memory)) is the caller's again,
    /// and a buffer lent to the region
    /// ([`register_buffer`](crate::ProtectionDomain::register_buffer)) stays in the handle until
    /// [`take_buffer`](Self::take_buffer) hands it back or the handle is dropped. A WR still
    /// posted that uses the region's keys fails (a protection or access error), as in verbs.
    fn destroy(&self) -> Result<()>;

    /// Deregisters the region if it still is (as [`destroy`](Self::destroy)) and hands back the
    /// buffer it was registered with by
    /// [`register_buffer`](crate::ProtectionDomain::register_buffer), with what the device and
    /// the program wrote into it. The buffer comes back only once deregistration succeeded: the
    /// device cannot touch it any more, whatever WRs are still posted.
    ///
    /// Fails with [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a region
    /// that was not registered from a buffer, [`ErrorKind::Destroyed`](crate::ErrorKind::Destroyed)
    /// if the buffer was taken already, and as `destroy` does if deregistering fails — then the
    /// region stays registered and keeps the buffer.
    fn take_buffer(&self) -> Result<Box<[u8]>>;

    /// The region's memory in the program's address space: `len()` bytes there, valid for
    /// reads and writes until the region is deregistered. For a caller's memory, the pointer it
    /// registered; for a lent buffer, the buffer's.
    ///
    /// Obtaining it is safe; using it is bound by the [aliasing
    /// contract](self#the-aliasing-contract). Fails with
    /// [`ErrorKind::Destroyed`](crate::ErrorKind::Destroyed) once the region is destroyed, and
    /// with [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported) where the provider's
    /// memory is not host memory the program may reach.
    ///
    /// Implementations must return a pointer valid as described: [`slice`](Self::slice) and
    /// [`slice_mut`](Self::slice_mut) (and the ULP's unsafe code) rely on it.
    fn as_ptr(&self) -> Result<*mut u8>;

    /// The `len` bytes at `offset` of the region, borrowed directly: no copy. Out of bounds is
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument); otherwise fails as
    /// [`as_ptr`](Self::as_ptr).
    ///
    /// # Safety
    /// While the slice lives, nothing may write those bytes: no WR that writes them may run
    /// (a receive, an RDMA READ's destination, an atomic's result, or a peer's RDMA WRITE or
    /// atomic while the region grants [`Access::REMOTE_WRITE`] or [`Access::REMOTE_ATOMIC`] to
    /// a connected peer), no `&mut` slice of them may live, and neither
    /// [`write`](Self::write) nor the caller's own pointers may write them; and the region must
    /// not be destroyed (see the [aliasing contract](self#the-aliasing-contract)).
    #[allow(unsafe_code)]
    unsafe fn slice(&self, offset: usize, len: usize) -> Result<&[u8]> {
        check_range(self.len(), offset, len)?;
        let base = self.as_ptr()?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: `as_ptr` points to `self.len()` bytes valid for reads while the region is
        // registered (its implementations' duty), and `offset + len` lies within them (checked
        // above). The caller keeps the region registered and the bytes unwritten for the
        // slice's lifetime, bounded by the borrow of `self`.
        Ok(unsafe { std::slice::from_raw_parts(base.add(offset), len) })
    }

    /// The `len` bytes at `offset` of the region, borrowed mutably and directly: no copy. Out of
    /// bounds is [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument); otherwise
    /// fails as [`as_ptr`](Self::as_ptr).
    ///
    /// # Safety
    /// While the slice lives, nothing else may read or write those bytes: no WR that reads or
    /// writes them may run (a send's or RDMA WRITE's source, a receive, an RDMA READ's
    /// destination, an atomic's result, or a peer's access the region's rights allow a
    /// connected peer), no other slice of them may live, and neither [`read`](Self::read) nor
    /// [`write`](Self::write) nor the caller's own pointers may touch them; and the region must
    /// not be destroyed (see the [aliasing contract](self#the-aliasing-contract)).
    #[allow(unsafe_code)]
    #[allow(clippy::mut_from_ref)] // The region hands out its memory, guarded by the contract.
    unsafe fn slice_mut(&self, offset: usize, len: usize) -> Result<&mut [u8]> {
        check_range(self.len(), offset, len)?;
        let base = self.as_ptr()?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as for `slice`, and valid for writes too; the caller guarantees that nothing
        // else reads or writes the bytes while the slice lives, so it is unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) })
    }

    /// An SGE covering `length` bytes at `offset`. Bounds are checked when it is posted.
    fn sge(&self, offset: usize, length: u32) -> Sge {
        Sge {
            addr: self.addr().wrapping_add(offset as u64),
            length,
            lkey: self.lkey(),
        }
    }

    /// The remote address of `offset`, to hand to a peer.
    fn remote(&self, offset: usize) -> RemoteAddr {
        RemoteAddr {
            addr: self.addr().wrapping_add(offset as u64),
            rkey: self.rkey(),
        }
    }
}

/// `InvalidArgument` unless `n` bytes at `offset` lie in a region of `len` bytes.
pub(crate) fn check_range(len: usize, offset: usize, n: usize) -> Result<()> {
    match offset.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => Err(Error::invalid_argument(format!(
            "{n} bytes at offset {offset} do not fit in a region of {len} bytes"
        ))),
    }
}

/// `InvalidArgument` unless `len` bytes at `addr` can be memory a program registers: a non-null
/// address, a length a Rust slice may have, and no wrap past the end of the address space.
pub(crate) fn check_memory(addr: *mut u8, len: usize) -> Result<()> {
    if addr.is_null() {
        return Err(Error::invalid_argument(
            "cannot register memory at a null address",
        ));
    }
    if len > isize::MAX as usize || (addr as usize).checked_add(len).is_none() {
        return Err(Error::invalid_argument(format!(
            "{len} bytes at {addr:p} do not fit in the address space"
        )));
    }
    Ok(())
}
