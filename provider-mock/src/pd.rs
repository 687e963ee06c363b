//! A mock protection domain.

use std::sync::Arc;

use anyverbs::kit::RawCq;
use anyverbs::{Access, ProtectionDomain, QpInit, Result};

use crate::fabric::Fabric;
use crate::sim::SimQp;
use crate::{MockCq, MockMr, MockProvider, MockQp};

/// A mock protection domain.
pub struct MockPd {
    fabric: Arc<Fabric>,
    /// The device incarnation it was allocated on.
    dev: u32,
    id: u32,
}

impl std::fmt::Debug for MockPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPd")
            .field("device_index", &self.dev)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MockPd {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, id: u32) -> Self {
        MockPd { fabric, dev, id }
    }
}

impl ProtectionDomain<MockProvider> for MockPd {
    fn register(&self, len: usize, access: Access) -> Result<MockMr> {
        let (lkey, rkey, addr) = self
            .fabric
            .with_live(self.dev, |st| st.register(self.id, len, access))?;
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
        if !Arc::ptr_eq(&self.fabric, send_cq.raw().fabric())
            || !Arc::ptr_eq(&self.fabric, recv_cq.raw().fabric())
        {
            return Err(anyverbs::Error::invalid_argument(
                "the CQ belongs to another mock fabric",
            ));
        }
        let (qpn, caps, personality, life) = self.fabric.with_live(self.dev, |st| {
            let qpn = st.create_qp(
                self.id,
                send_cq.raw().cq_num(),
                recv_cq.raw().cq_num(),
                init,
            )?;
            Ok((
                qpn,
                st.caps(self.dev),
                st.personality(self.dev),
                st.life(self.dev),
            ))
        })?;
        let raw = SimQp::new(Arc::clone(&self.fabric), self.dev, life.clone(), qpn, caps);
        MockQp::new(
            raw,
            send_cq,
            recv_cq,
            init,
            personality.drain_profile(),
            life,
        )
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
