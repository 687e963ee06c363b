//! A mock listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyverbs::{ConnParams, ConnectRequest, Listener, QueuePair, Result};

use crate::fabric::Fabric;
use crate::{MockProvider, MockQp};

/// A mock listening endpoint.
pub struct MockListener {
    fabric: Arc<Fabric>,
    /// The device incarnation it listens on.
    dev: u32,
    addr: SocketAddr,
}

impl std::fmt::Debug for MockListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockListener")
            .field("device_index", &self.dev)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockListener {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, addr: SocketAddr) -> Self {
        MockListener { fabric, dev, addr }
    }
}

impl Listener<MockProvider> for MockListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest> {
        Ok(self
            .fabric
            .wait_live(self.dev, deadline, "a connection request", |st| {
                st.next_request(self.addr)
            })?)
    }

    fn accept(&self, request: &ConnectRequest, qp: &MockQp, params: &ConnParams) -> Result<()> {
        if !Arc::ptr_eq(&self.fabric, qp.raw().fabric()) {
            return Err(anyverbs::Error::invalid_argument(
                "the QP belongs to another mock fabric",
            ));
        }
        qp.with_device_qp(|raw| {
            Ok(self.fabric.with_live(self.dev, |st| {
                st.check_live(raw.dev())?;
                st.accept(self.addr, request.id, qp.qp_num(), params)
            })?)
        })
    }

    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()> {
        Ok(self.fabric.with_live(self.dev, |st| {
            st.reject(self.addr, request.id, private_data)
        })?)
    }
}

impl Drop for MockListener {
    fn drop(&mut self) {
        self.fabric.with(|st| st.close_listener(self.addr));
    }
}
