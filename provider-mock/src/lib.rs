//! # anyverbs-provider-mock: an in-process RC transport that behaves like hardware
//!
//! The mock lets ULP code and the conformance suite run without a NIC. It is a real transport,
//! not a stub: data moves between registered memory regions, remote keys are checked against
//! bounds and access rights, receives are matched to SENDs in order, a SEND to a peer with no
//! receive posted is retried (RNR) and fails with RNR-retry-exceeded when the retries run out, a
//! peer that stops answering makes the requester fail with transport-retry-exceeded, and a CQ
//! that overflows says so.
//!
//! ## Design choices
//!
//! - **A fabric per provider.** [`MockProvider::new`] builds an isolated fabric of devices
//!   ([`FabricConfig`]); QPs on the same or on different devices of one fabric connect through
//!   the usual listen/connect API. Independent providers never see each other, so tests can run
//!   in parallel.
//! - **Deterministic progress.** No progress thread and no sleeps in the data path: a WR
//!   executes inside the `post_send` that posted it when it can; a WR that must wait (RNR, no
//!   ACK) is retried on every later post, poll or wait, and fails once its retry deadline passes
//!   (see `fabric`).
//! - **Exact state machines.** Each device follows the InfiniBand or the iWARP state model of
//!   [`anyverbs::StateModel`]; posting where the state does not allow it fails synchronously.
//! - **Its own error type.** [`MockError`] keeps the detail and maps to an
//!   [`anyverbs::ErrorKind`]; it travels as the source of the [`anyverbs::Error`].
//! - **Personalities.** Each device has a [`Personality`] that reproduces what one real device
//!   does where devices disagree — WRs posted in ERROR flushed, refused, delayed or never
//!   completed; flushes synchronous or asynchronous; or a device that silently died — and
//!   reports the capabilities that describe it. The default fabric has one device per
//!   personality (see [`FabricConfig`]).
//! - **Provider and device, apart.** Each QP has the device's half (rings holding WRs under the
//!   provider's tokens) and the provider's half, an [`anyverbs::drain::Ledger`]. `drain` runs
//!   [`anyverbs::drain::engine::run`] with the plan of the device's personality
//!   ([`Personality::drain_plan`]), exactly as a real provider for that hardware must.
//!
//! Differences from hardware, on purpose: inline SGEs must still name a registered region (the
//! mock never dereferences raw addresses), and invalid local SGEs are refused synchronously at
//! post time instead of completing with a local protection error.

mod config;
mod cq;
mod device;
mod error;
mod fabric;
mod listener;
mod mr;
mod pd;
mod qp;

use std::sync::Arc;

use anyverbs::{DeviceInfo, Provider, Result, Transport};

pub use config::{DEFAULT_LIMITS, DeviceConfig, FabricConfig, Personality};
pub use cq::MockCq;
pub use device::MockDevice;
pub use error::MockError;
pub use listener::MockListener;
pub use mr::MockMr;
pub use pd::MockPd;
pub use qp::MockQp;

use fabric::Fabric;

/// The mock provider: one isolated fabric of mock devices.
#[derive(Clone)]
pub struct MockProvider {
    fabric: Arc<Fabric>,
}

impl MockProvider {
    /// A fabric with the default devices: `mock0` and `mock1` (InfiniBand HCAs), `mockiw0`
    /// (iWARP), and one device per other [`Personality`] (see [`FabricConfig::default`]).
    pub fn new() -> Self {
        Self::with_config(FabricConfig::default())
    }

    /// A fabric laid out by `config`.
    pub fn with_config(config: FabricConfig) -> Self {
        MockProvider {
            fabric: Arc::new(Fabric::new(config)),
        }
    }
}

impl Default for MockProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("devices", &self.fabric.infos.len())
            .finish()
    }
}

impl Provider for MockProvider {
    type Device = MockDevice;
    type Pd = MockPd;
    type Mr = MockMr;
    type Cq = MockCq;
    type Qp = MockQp;
    type Listener = MockListener;

    fn name(&self) -> &str {
        "mock"
    }

    fn transport(&self) -> Transport {
        Transport::Mock
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        Ok(self.fabric.infos.clone())
    }

    fn open(&self, name: &str) -> Result<MockDevice> {
        let index = self
            .fabric
            .infos
            .iter()
            .position(|d| d.identity.name == name)
            .ok_or_else(|| MockError::NoSuchDevice(name.to_string()))?;
        Ok(MockDevice::new(Arc::clone(&self.fabric), index))
    }
}
