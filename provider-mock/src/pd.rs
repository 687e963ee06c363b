//! A mock protection domain.

use std::sync::Arc;

use anyverbs::{Access, ProtectionDomain, QpInit, Result};

use crate::fabric::Fabric;
use crate::{MockCq, MockMr, MockProvider, MockQp};

/// A mock protection domain.
pub struct MockPd {
    fabric: Arc<Fabric>,
    device: usize,
    id: u32,
}

impl MockPd {
    pub(crate) fn new(fabric: Arc<Fabric>, device: usize, id: u32) -> Self {
        MockPd { fabric, device, id }
    }
}

impl ProtectionDomain<MockProvider> for MockPd {
    fn register(&self, len: usize, access: Access) -> Result<MockMr> {
        let limits = self.fabric.infos[self.device].limits;
        let (lkey, rkey, addr) = self
            .fabric
            .with(|st| st.register(self.id, len, access, limits.max_mr_size, limits.max_mr))?;
        Ok(MockMr::new(
            Arc::clone(&self.fabric),
            lkey,
            rkey,
            addr,
            len,
            access,
        ))
    }

    fn create_qp(&self, send_cq: &MockCq, recv_cq: &MockCq, init: &QpInit) -> Result<MockQp> {
        let info = &self.fabric.infos[self.device];
        let personality = self.fabric.config.devices[self.device].personality;
        if !Arc::ptr_eq(&self.fabric, send_cq.fabric())
            || !Arc::ptr_eq(&self.fabric, recv_cq.fabric())
        {
            return Err(anyverbs::Error::invalid_argument(
                "the CQ belongs to another mock fabric",
            ));
        }
        let qpn = self.fabric.with(|st| {
            st.create_qp(
                self.id,
                send_cq.id(),
                recv_cq.id(),
                init,
                personality,
                &info.limits,
            )
        })?;
        Ok(MockQp::new(
            Arc::clone(&self.fabric),
            qpn,
            info.caps,
            personality,
        ))
    }

    fn destroy(&self) -> Result<()> {
        Ok(self.fabric.with(|st| st.destroy_pd(self.id))?)
    }
}

impl Drop for MockPd {
    fn drop(&mut self) {
        self.fabric.with(|st| st.drop_pd(self.id));
    }
}
