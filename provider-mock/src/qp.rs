//! A mock queue pair.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyverbs::{
    Caps, ConnParams, Connection, DrainReport, PostError, QpState, QueuePair, RecvWr, Result,
    SendWr,
};

use crate::fabric::Fabric;

/// A mock reliable-connected queue pair.
pub struct MockQp {
    fabric: Arc<Fabric>,
    qpn: u32,
    caps: Caps,
}

impl MockQp {
    pub(crate) fn new(fabric: Arc<Fabric>, qpn: u32, caps: Caps) -> Self {
        MockQp { fabric, qpn, caps }
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }
}

impl QueuePair for MockQp {
    fn qp_num(&self) -> u32 {
        self.qpn
    }

    fn state(&self) -> Result<QpState> {
        Ok(self.fabric.lock().qp_state(self.qpn)?)
    }

    fn modify(&self, to: QpState) -> Result<()> {
        Ok(self.fabric.with(|st| st.modify(self.qpn, to))?)
    }

    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.fabric
            .with(|st| st.post_send(self.qpn, wrs, self.caps))
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.fabric.with(|st| st.post_recv(self.qpn, wrs))
    }

    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()> {
        let fabric = &self.fabric;
        Ok(fabric.with(|st| st.connect(self.qpn, remote, params, &fabric.config))?)
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        Ok(self
            .fabric
            .wait_until(deadline, "the connection", |st| st.connection(self.qpn))?)
    }

    fn drain(&self, _deadline: Instant) -> Result<DrainReport> {
        // The mock never has to wait: its flushes are synchronous (see the crate docs).
        let start = Instant::now();
        Ok(self.fabric.with(|st| st.drain(self.qpn, start))?)
    }

    fn destroy(&self) -> Result<()> {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
        Ok(())
    }
}

impl Drop for MockQp {
    fn drop(&mut self) {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
    }
}
