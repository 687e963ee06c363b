//! A mock memory region.

use std::sync::Arc;

use anyverbs::{Access, MemoryRegion, Result};

use crate::fabric::Fabric;

/// A mock memory region: zeroed memory owned by the fabric.
pub struct MockMr {
    fabric: Arc<Fabric>,
    /// The device incarnation it was registered on.
    dev: u32,
    lkey: u32,
    rkey: u32,
    addr: u64,
    len: usize,
    access: Access,
}

impl MockMr {
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        dev: u32,
        lkey: u32,
        rkey: u32,
        addr: u64,
        len: usize,
        access: Access,
    ) -> Self {
        MockMr {
            fabric,
            dev,
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

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        let mut st = self.fabric.lock();
        st.check_live(self.dev)?;
        Ok(st.mr_copy_in(self.lkey, offset, src)?)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let st = self.fabric.lock();
        st.check_live(self.dev)?;
        Ok(st.mr_copy_out(self.lkey, offset, dst)?)
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
