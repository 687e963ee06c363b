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
//! - **A device simulator behind the provider kit.** The mock writes only the device: [`sim`]
//!   holds its raw objects — rings of WRs under the kit's tokens, rings of raw completions, PDs,
//!   regions — and [`MockQp`], [`MockCq`], [`MockPd`] and [`MockMr`] are the core's
//!   [`KitQp`](anyverbs::kit::KitQp), [`KitCq`](anyverbs::kit::KitCq),
//!   [`KitPd`](anyverbs::kit::KitPd) and [`KitMr`](anyverbs::kit::KitMr) over them. Admission
//!   through the
//!   [`Ledger`](anyverbs::drain::Ledger), resolution at poll time, the drain and the handle
//!   lifetimes are the kit's, the very code a provider for real hardware runs; the drain plan is
//!   the one of the driver the device's personality reproduces, from the core's table of drain
//!   profiles ([`Personality::drain_profile`]).
//!
//! As on hardware, a send's slot in the queue is free again once its completion has been
//! polled (rdma-core's providers reclaim ring space in `poll_cq`), and a CQ's ring holds the
//! depth the ULP asked for plus one slot per work queue attached to it, for the drain's markers:
//! that many completions overflow it.
//!
//! Differences from hardware, on purpose: inline SGEs must still name a registered region (the
//! mock never dereferences raw addresses), and invalid local SGEs are refused synchronously at
//! post time instead of completing with a local protection error.
//!
//! ## Lifecycle and fault injection
//!
//! [`Provider::inject`] implements every [`Fault`], and injection is safe while other threads
//! post and poll. Each device lists what it can have injected in
//! [`DeviceInfo::faults`](anyverbs::DeviceInfo::faults) ([`Personality::faults`]): everything,
//! except `mockrxe0` and `mocksiw0`, which can have only what the real rxe and siw can in the
//! test bed (a reset, an unplug and replug on the same or another netdev, a port flap — not an
//! address change, which the kernel's CM raises only for a bonding failover); a fault a device
//! does not list fails with `NotSupported`. Those two do not report fatal errors either (no
//! [`Caps::DEVICE_FATAL`](anyverbs::Caps::DEVICE_FATAL)): their reset ends with
//! `DeviceRemoved`, as a delete and re-add of the real ones does.
//!
//! - **Incarnations.** Each configured device is present or absent; each time it appears it is a
//!   new device with a new kernel index (never reused; the initial devices are numbered in
//!   configuration order) and its own [`DeviceInfo`]. [`Provider::devices`] lists the present
//!   ones, [`Provider::open`] opens the current one (`NotFound` while absent), and every handle
//!   belongs to the incarnation it was made on.
//! - **A lost device** (`Reset`, `Unplug`) publishes `DeviceFatal` (a reset, on a device with
//!   `DEVICE_FATAL`) or `DeviceRemoved` as its last [`DeviceEvent`](anyverbs::DeviceEvent), and the monitor reports it `Removed`. Every
//!   call on its handles fails at once with `DeviceLost`, and waits already blocked in it wake
//!   with `DeviceLost`; `destroy` and drop still work (keeping their usual order: a PD with MRs
//!   or QPs is still `Busy`), and accessors of fixed data (`info`, `qp_num`, `lkey`, `cq_num`,
//!   `capacity`, `local_addr`) keep answering. It executes and completes nothing more. QPs on
//!   other devices connected to it get no more ACKs: their sends fail with
//!   transport-retry-exceeded after the ACK timeout, the QP goes to ERROR, and `Disconnected`
//!   is published on their device (an idle QP notices at its next send); requests waiting at
//!   its listeners fail with `Unreachable`.
//! - **Coming back.** A reset device comes back with the same identity (same GUIDs and PCI
//!   address, a new index) once `down_for` has passed *and* every object of its earlier
//!   incarnations — device handles, PDs, MRs, CQs, QPs, listeners — has been released, as the
//!   kernel's unregistration waits for the process; `Replug` likewise, as soon as the objects are
//!   released. `ReplugOther` brings a different device (other node and system-image GUIDs)
//!   under the same name; a later `Replug` always restores the configured identity. The monitor
//!   reports each return as `Added`. [`MockProvider::live_objects`] shows what a return waits
//!   for, and serves leak tests.
//! - **Port flap.** `PortDown` now, [`PortState::Down`](anyverbs::PortState::Down) from
//!   `ports()`, then `PortActive` after `down_for`. The data path keeps working meanwhile: the
//!   port state is reported, not enforced.
//! - **`KillQp`** moves one QP to ERROR exactly as a move to ERROR does (flushes per
//!   personality; on iWARP the connection goes down with it) and publishes `QpFatal`.
//! - **`LosePeer`** cuts the QP's connection silently at both ends: sends outstanding and posted
//!   later on either QP get no ACK, fail with transport-retry-exceeded after the ACK timeout, the
//!   QP goes to ERROR (its other WRs flushed) and `Disconnected` is published for it. The peer is
//!   not told and stays as it is until it sends.
//! - **`Stall`** makes the device silently execute and complete nothing (flushes included; peers
//!   sending to it get no ACKs); `Resume` delivers what it held back and goes on. Drains on a
//!   stalled device fall back at their deadline, like on the dead personality.
//! - Injecting into an absent device allows only `Replug` and `ReplugOther` (`InvalidState`
//!   otherwise, and for `Replug` on a present, resetting or already replugged device); an
//!   unknown device name, QP number or port is `NotFound` or `InvalidArgument`.
//!
//! A connection that ends with one of its QPs is reported to the other end: its device publishes
//! `Disconnected` for the peer's QP, once. On InfiniBand that happens when a connected QP is
//! destroyed: its CM ID sends a DREQ, which the kernel's CM reports as
//! `RDMA_CM_EVENT_DISCONNECTED` without changing any QP state, so the peer stays as it was until
//! its ULP drains it; moving a QP to ERROR (a drain, `KillQp`) sends nothing. On iWARP the
//! connection is a TCP stream that goes down when a QP is destroyed, closed (CLOSING) or moved to
//! ERROR, and the peer's QP goes to ERROR with it. Nothing is sent over a connection that was
//! already cut (`LosePeer`, a lost device), nor by a dead device (`Personality::Dead`).
//!
//! The mock still has no progress thread: devices that come back, ports that come up and sends
//! to lost peers that fail are handled on every call into the fabric, and a short-lived timer
//! thread per pending change makes sure they also happen (and their events arrive) when nobody
//! calls. Timer threads end after their one step, or at once when the provider is dropped.

#![deny(unsafe_code)]

mod config;
mod device;
mod error;
mod fabric;
mod listener;

pub mod expectations;
pub mod sim;

use std::sync::Arc;
use std::time::Instant;

use anyverbs::{DeviceInfo, EventStream, Fault, MonitorEvent, Provider, Result, Transport};

pub use config::{DEFAULT_LIMITS, DeviceConfig, FabricConfig, Personality};
pub use device::MockDevice;
pub use error::MockError;
pub use fabric::lifecycle::LiveObjects;
pub use listener::MockListener;

/// A mock protection domain: the kit's PD over a simulated one.
pub type MockPd = anyverbs::kit::KitPd<sim::SimPd>;
/// A mock memory region: the kit's region over zeroed memory the simulated device owns.
pub type MockMr = anyverbs::kit::KitMr<sim::SimMr>;
/// A mock completion queue: the kit's CQ over a simulated ring.
pub type MockCq = anyverbs::kit::KitCq<sim::SimCq>;
/// A mock reliable-connected queue pair: the kit's QP over a simulated one.
pub type MockQp = anyverbs::kit::KitQp<sim::SimQp>;
/// A mock completion channel: the kit's channel over a simulated one, whose fd is one end of a
/// socket pair.
pub type MockChannel = anyverbs::kit::KitChannel<sim::SimChannel>;

use fabric::Fabric;

// The mock as a run-time plugin: `libanyverbs_provider_mock.so`, each instance a fresh fabric
// with the default devices.
anyverbs::export_provider!(MockProvider, || Ok(MockProvider::new()));

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
            fabric: Fabric::new(config),
        }
    }

    /// The objects of the device named `name` not yet released, over all its incarnations: a
    /// test aid for leak tests (after dropping everything, [`LiveObjects::total`] is 0), and
    /// what a reset or unplugged device waits for before it comes back.
    /// [`ErrorKind::NotFound`](anyverbs::ErrorKind::NotFound) for a name the fabric was not
    /// configured with.
    pub fn live_objects(&self, name: &str) -> Result<LiveObjects> {
        Ok(self.fabric.lock().live_objects(name)?)
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
            .field("devices", &self.fabric.config.devices.len())
            .finish()
    }
}

impl Provider for MockProvider {
    type Device = MockDevice;
    type Pd = MockPd;
    type Mr = MockMr;
    type Cq = MockCq;
    type Channel = MockChannel;
    type Qp = MockQp;
    type Listener = MockListener;

    fn name(&self) -> &str {
        "mock"
    }

    fn transport(&self) -> Transport {
        Transport::Mock
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        Ok(self.fabric.with(|st| st.present_devices()))
    }

    fn open(&self, name: &str) -> Result<MockDevice> {
        let (dev, info) = self.fabric.with(|st| st.open_device(name))?;
        Ok(MockDevice::new(Arc::clone(&self.fabric), dev, info))
    }

    fn monitor(&self) -> Result<EventStream<MonitorEvent>> {
        self.fabric.lock().subscribe_monitor()
    }

    /// Injects `fault` into the device named `name`; every [`Fault`] is supported (see
    /// "Lifecycle and fault injection" in the crate docs). Safe while other threads post and
    /// poll.
    fn inject(&self, name: &str, fault: &Fault) -> Result<()> {
        Ok(self
            .fabric
            .with(|st| st.inject(name, fault, Instant::now()))?)
    }

    /// The objects of every incarnation of the device not yet released (see
    /// [`MockProvider::live_objects`]).
    fn held_objects(&self, name: &str) -> Result<anyverbs::HeldObjects> {
        self.live_objects(name)
    }
}
