//! A mock memory region.

use std::sync::Arc;

use anyverbs::{Access, MemoryRegion, Result};

use crate::fabric::Fabric;

/// A mock memory region: zeroed memory owned by the fabric.
pub struct MockMr {
    fabric: Arc<Fabric>,
    lkey: u32,
    rkey: u32,
    addr: u64,
    len: usize,
    access: Access,
}

impl std::fmt::Debug for MockMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockMr")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl MockMr {
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        lkey: u32,
        rkey: u32,
        addr: u64,
        len: usize,
        access: Access,
    ) -> Self {
        MockMr {
            fabric,
            lkey,
            rkey,
            addr,
            len,
            access,
        }
    }
}

impl MemoryRegion for MockMr {
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

    /// Works on a lost device too: the region's memory is the host's.
    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        Ok(self.fabric.lock().mr_copy_in(self.lkey, offset, src)?)
    }

    /// Works on a lost device too: what arrived before the loss stays readable.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        Ok(self.fabric.lock().mr_copy_out(self.lkey, offset, dst)?)
    }

    fn destroy(&self) -> Result<()> {
        self.fabric.with(|st| st.destroy_mr(self.lkey));
        Ok(())
    }
}

impl Drop for MockMr {
    fn drop(&mut self) {
        self.fabric.with(|st| st.destroy_mr(self.lkey));
    }
}
