//! A mock completion queue.

use std::sync::Arc;
use std::time::Instant;

use anyverbs::{Completion, CompletionQueue, Result};

use crate::fabric::Fabric;

/// A mock completion queue.
pub struct MockCq {
    fabric: Arc<Fabric>,
    id: u32,
}

impl MockCq {
    pub(crate) fn new(fabric: Arc<Fabric>, id: u32) -> Self {
        MockCq { fabric, id }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }
}

impl CompletionQueue for MockCq {
    fn capacity(&self) -> u32 {
        self.fabric.lock().cq_capacity(self.id)
    }

    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        Ok(self.fabric.with(|st| st.poll(self.id, out))?)
    }

    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize> {
        if out.is_empty() {
            return Err(anyverbs::Error::invalid_argument(
                "wait needs room for at least one completion",
            ));
        }
        Ok(self
            .fabric
            .wait_until(deadline, "a completion", |st| match st.poll(self.id, out) {
                Ok(0) => None,
                other => Some(other),
            })?)
    }

    fn destroy(&self) -> Result<()> {
        Ok(self.fabric.with(|st| st.destroy_cq(self.id))?)
    }
}

impl Drop for MockCq {
    fn drop(&mut self) {
        self.fabric.with(|st| st.drop_cq(self.id));
    }
}
