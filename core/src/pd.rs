//! [`ProtectionDomain`]: the scope within which memory regions and queue pairs may be used
//! together.

use crate::error::Result;
use crate::mr::Access;
use crate::provider::Provider;
use crate::qp::QpInit;

/// A protection domain. MRs and QPs are created in one; a QP may only use MRs of its own PD.
pub trait ProtectionDomain<P: Provider>: Send + Sync {
    /// Allocates `len` bytes of zeroed memory and registers them with `access`.
    ///
    /// `REMOTE_WRITE` (and atomic) access requires `LOCAL_WRITE`, as in verbs.
    fn register(&self, len: usize, access: Access) -> Result<P::Mr>;

    /// Registers `len` bytes of the caller's memory at `addr` with `access`, as `ibv_reg_mr`
    /// does: the device reads and writes that memory itself, no copy
    /// ([zero-copy memory](crate::mr#zero-copy-memory)). The region's
    /// [`addr`](crate::MemoryRegion::addr) and [`as_ptr`](crate::MemoryRegion::as_ptr) are
    /// `addr`. A null `addr`, or a range that passes the end of the address space, is
    /// `InvalidArgument`; the access rules are [`register`](Self::register)'s.
    ///
    /// Where the program owns the memory as a buffer, [`register_buffer`](Self::register_buffer)
    /// does the same safely.
    ///
    /// # Safety
    /// - The `len` bytes at `addr` must be valid for reads and writes, and stay allocated and
    ///   in place (not freed, not moved, not unmapped) until the region is deregistered:
    ///   [`destroy`](crate::MemoryRegion::destroy) returned `Ok`, or the region was dropped
    ///   (dropping deregisters it; if deregistering fails then — a device refuses only while
    ///   something is bound to the region — the memory stays the device's for good: where that
    ///   matters, call `destroy` and check it).
    /// - Until then the memory is the region's: touch it only through the region or under the
    ///   [aliasing contract](crate::mr#the-aliasing-contract) — no write while a WR that reads it
    ///   may still run, no access at all while one that writes it may (a receive, an RDMA
    ///   READ's destination, an atomic's result, a peer's RDMA WRITE or atomic the access
    ///   rights allow), and no Rust reference to it held across the region's
    ///   [`read`](crate::MemoryRegion::read) and [`write`](crate::MemoryRegion::write) or the
    ///   device's access. Data races with the device are the caller's to avoid.
    #[allow(unsafe_code)]
    unsafe fn register_memory(&self, addr: *mut u8, len: usize, access: Access) -> Result<P::Mr>;

    /// Registers `buf` with `access`, lending it to the region: the device reads and writes it
    /// directly, no copy, and [`take_buffer`](crate::MemoryRegion::take_buffer) hands it back
    /// (with the data in it) once the region is deregistered. Safe: the region owns the buffer
    /// while it is registered, so nothing can free or move it under the device; dropping the
    /// region frees it once deregistered (and leaks it if deregistering fails, rather than free
    /// memory the device may still write). On failure the buffer is freed.
    fn register_buffer(&self, buf: Box<[u8]>, access: Access) -> Result<P::Mr>;

    /// Creates a reliable-connected QP whose send completions go to `send_cq` and receive
    /// completions to `recv_cq` (they may be the same CQ).
    fn create_qp(&self, send_cq: &P::Cq, recv_cq: &P::Cq, init: &QpInit) -> Result<P::Qp>;

    /// Destroys the PD; [`ErrorKind::Busy`](crate::ErrorKind::Busy) while MRs or QPs exist.
    fn destroy(&self) -> Result<()>;
}
