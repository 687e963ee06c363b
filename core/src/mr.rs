//! [`MemoryRegion`]: registered memory and its access rights.

use bitflags::bitflags;

use crate::error::Result;
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

/// A registered memory region, owned by the provider.
///
/// The memory is reached through copies ([`read`](Self::read), [`write`](Self::write)) rather
/// than slices, because the device (or a peer) may write into it at any time.
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

    /// Deregisters the region and frees its memory.
    fn destroy(&self) -> Result<()>;

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
