//! An open mock device.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyverbs::{Device, DeviceEvent, DeviceInfo, EventStream, PortInfo, Result};

use crate::fabric::Fabric;
use crate::sim::{SimChannel, SimCq, SimPd};
use crate::{MockChannel, MockCq, MockListener, MockPd, MockProvider};

/// An open mock device: one incarnation of a configured device. Once that incarnation is lost
/// (reset, unplugged) every call fails with `DeviceLost`, also after the device came back as a
/// new incarnation; [`info`](Device::info) keeps returning what it was.
pub struct MockDevice {
    fabric: Arc<Fabric>,
    /// The incarnation (its kernel index).
    dev: u32,
    info: DeviceInfo,
}

impl std::fmt::Debug for MockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockDevice")
            .field("name", &self.info.identity.name)
            .field("index", &self.dev)
            .finish_non_exhaustive()
    }
}

impl MockDevice {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, info: DeviceInfo) -> Self {
        MockDevice { fabric, dev, info }
    }
}

impl Device<MockProvider> for MockDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn ports(&self) -> Result<Vec<PortInfo>> {
        Ok(self.fabric.lock().ports(self.dev, Instant::now())?)
    }

    fn alloc_pd(&self) -> Result<MockPd> {
        let (id, life, personality) = self.fabric.with_live(self.dev, |st| {
            Ok((
                st.alloc_pd(self.dev)?,
                st.life(self.dev),
                st.personality(self.dev),
            ))
        })?;
        Ok(MockPd::new(
            SimPd::new(Arc::clone(&self.fabric), self.dev, id),
            life,
            personality.drain_profile(),
        ))
    }

    fn create_cq(&self, depth: u32) -> Result<MockCq> {
        self.create_cq_with(depth, None)
    }

    fn create_channel(&self) -> Result<MockChannel> {
        let (id, core, life) = self.fabric.with_live(self.dev, |st| {
            let (id, core) = st.create_channel(self.dev)?;
            Ok((id, core, st.life(self.dev)))
        })?;
        let raw = SimChannel::new(Arc::clone(&self.fabric), life.clone(), id, core);
        Ok(MockChannel::new(raw, life))
    }

    fn create_cq_with(&self, depth: u32, channel: Option<&MockChannel>) -> Result<MockCq> {
        if let Some(ch) = channel
            && !Arc::ptr_eq(&self.fabric, ch.raw().fabric())
        {
            return Err(anyverbs::Error::invalid_argument(
                "the completion channel belongs to another mock fabric",
            ));
        }
        let on = channel.map(|ch| ch.raw().id());
        let id = self
            .fabric
            .with_live(self.dev, |st| st.create_cq(self.dev, depth, on))?;
        let life = self.fabric.lock().life(self.dev);
        let raw = SimCq::new(Arc::clone(&self.fabric), self.dev, life.clone(), id);
        match channel {
            None => Ok(MockCq::new(raw, depth, life)),
            Some(ch) => MockCq::with_channel(raw, depth, life, ch),
        }
    }

    fn listen(&self, addr: SocketAddr) -> Result<MockListener> {
        let bound = self
            .fabric
            .with_live(self.dev, |st| st.listen(self.dev, addr))?;
        Ok(MockListener::new(Arc::clone(&self.fabric), self.dev, bound))
    }

    fn events(&self) -> Result<EventStream<DeviceEvent>> {
        self.fabric.lock().subscribe_device(self.dev)
    }
}

impl Drop for MockDevice {
    fn drop(&mut self) {
        self.fabric.with(|st| st.close_device_handle(self.dev));
    }
}
