//! A mock completion queue.

use std::sync::Arc;
use std::time::Instant;

use anyverbs::{Completion, CompletionQueue, Result};

use crate::fabric::Fabric;

/// A mock completion queue.
pub struct MockCq {
    fabric: Arc<Fabric>,
    /// The device incarnation it was created on.
    dev: u32,
    id: u32,
    capacity: u32,
}

impl std::fmt::Debug for MockCq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockCq")
            .field("device_index", &self.dev)
            .field("cq_num", &self.id)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MockCq {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, id: u32, capacity: u32) -> Self {
        MockCq {
            fabric,
            dev,
            id,
            capacity,
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }
}

impl CompletionQueue for MockCq {
    fn cq_num(&self) -> u32 {
        self.id
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.poll(self.id, out))?)
    }

    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize> {
        if out.is_empty() {
            return Err(anyverbs::Error::invalid_argument(
                "wait needs room for at least one completion",
            ));
        }
        Ok(self
            .fabric
            .wait_live(self.dev, deadline, "a completion", |st| {
                match st.poll(self.id, out) {
                    Ok(0) => None,
                    other => Some(other),
                }
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
