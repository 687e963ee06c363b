//! An open mock device.

use std::net::SocketAddr;
use std::sync::Arc;

use anyverbs::{Device, DeviceInfo, LinkLayer, PortInfo, PortState, Result};

use crate::fabric::Fabric;
use crate::{MockCq, MockListener, MockPd, MockProvider};

/// An open mock device.
pub struct MockDevice {
    fabric: Arc<Fabric>,
    index: usize,
}

impl MockDevice {
    pub(crate) fn new(fabric: Arc<Fabric>, index: usize) -> Self {
        MockDevice { fabric, index }
    }
}

impl Device<MockProvider> for MockDevice {
    fn info(&self) -> &DeviceInfo {
        &self.fabric.infos[self.index]
    }

    fn ports(&self) -> Result<Vec<PortInfo>> {
        Ok(vec![PortInfo {
            number: 1,
            state: PortState::Active,
            link_layer: LinkLayer::Virtual,
            addresses: vec![self.fabric.config.devices[self.index].address],
        }])
    }

    fn alloc_pd(&self) -> Result<MockPd> {
        let max = self.info().limits.max_pd;
        let id = self.fabric.with(|st| st.alloc_pd(self.index, max))?;
        Ok(MockPd::new(Arc::clone(&self.fabric), self.index, id))
    }

    fn create_cq(&self, depth: u32) -> Result<MockCq> {
        let limits = self.info().limits;
        let id = self
            .fabric
            .with(|st| st.create_cq(self.index, depth, limits.max_cq, limits.max_cqe))?;
        Ok(MockCq::new(Arc::clone(&self.fabric), id))
    }

    fn listen(&self, addr: SocketAddr) -> Result<MockListener> {
        let fabric = &self.fabric;
        let bound = fabric.with(|st| st.listen(self.index, addr, &fabric.config))?;
        Ok(MockListener::new(Arc::clone(fabric), bound))
    }
}
