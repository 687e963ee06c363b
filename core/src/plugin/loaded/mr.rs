//! [`LoadedMr`]: a memory region of a loaded provider, behind [`MemoryRegion`].

use super::{Handle, call};
use crate::error::Result;
use crate::mr::{Access, MemoryRegion};
use crate::plugin::abi;

/// A memory region of a loaded provider. Its address, length and keys are kept on this side.
pub struct LoadedMr {
    pub(super) handle: Handle<abi::RawMr>,
    pub(super) addr: u64,
    pub(super) len: usize,
    pub(super) lkey: u32,
    pub(super) rkey: u32,
    pub(super) access: Access,
}

impl MemoryRegion for LoadedMr {
    fn addr(&self) -> u64 {
        self.addr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lkey(&self) -> u32 {
        self.lkey
    }

    fn rkey(&self) -> u32 {
        self.rkey
    }

    fn access(&self) -> Access {
        self.access
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_write(self.handle.ptr(), offset, src.as_ptr(), src.len())
        )
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_read(self.handle.ptr(), offset, dst.as_mut_ptr(), dst.len())
        )
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), mr_destroy(self.handle.ptr()))
    }
}

impl std::fmt::Debug for LoadedMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedMr")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}
