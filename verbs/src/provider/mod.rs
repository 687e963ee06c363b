//! The core's traits on rdma-core: the provider half `provider-ib` and `provider-iwarp` share,
//! with the transport's rules passed in as data ([`Flavor`]).
//!
//! A real provider writes only its device's primitives; the core's provider kit
//! ([`anyverbs::kit`]) does the rest — admission through the ledger, completions resolved when
//! polled, drain by the driver's profile, handle lifetimes, event publishing. This module is
//! those primitives on the verbs objects of [`crate::objects`]:
//!
//! - [`RawVerbsPd`], [`RawVerbsMr`], [`RawVerbsCq`], [`RawVerbsChannel`], [`RawVerbsQp`]: the
//!   kit's raw traits on `ibv_pd`, `ibv_mr`, `ibv_cq`, `ibv_comp_channel` and an RC `ibv_qp`.
//!   QP state is tracked here (libibverbs' cached state never sees the kernel's moves; siw's
//!   query answers RESET), and asked of the kernel where the flavor says its query is right.
//! - [`VerbsDevice`]: an open device, its ports, its CQs, channels and listeners, and its two
//!   event sources — the verbs async event thread and the connection manager's events (one CM
//!   event channel per open device, read by one thread that routes each event to the QP or
//!   listener it is about) — plus a removal watch (a CM ID bound to the device's address, which
//!   is how rxe and siw report removal). Every event reaches the kit's [`DeviceLife`], which
//!   marks what it implies and publishes it.
//! - [`VerbsProvider`]: discovery (devices of the flavor's transport only), the device monitor,
//!   fault injection for software devices ([`crate::fault`]) and the objects still held per
//!   device name.
//!
//! Connection setup is the RDMA CM's by IP address: an active QP resolves the address and
//! route from its device's own address, so the connection leaves through the device it was
//! created on; on InfiniBand/RoCE the provider applies the CM's INIT, RTR and RTS attributes to
//! its own QP (with [`ConnParams::ack_timeout`](anyverbs::ConnParams::ack_timeout) and
//! [`ConnParams::min_rnr_timer`](anyverbs::ConnParams::min_rnr_timer) set on them), on iWARP only
//! INIT — the kernel's iw_cm moves it to RTS. Peers need not be anyverbs: plain librdmacm
//! programs (`rping`, `rdma_server`) connect to it and it to them.
//!
//! [`DeviceLife`]: anyverbs::kit::DeviceLife

pub(crate) mod connect;
mod cq;
mod device;
mod held;
mod hub;
mod info;
mod inject;
mod listener;
mod pd;
mod qp;

use std::sync::{Arc, Mutex};

use anyverbs::kit::{KitChannel, KitCq, KitMr, KitPd, KitQp};
use anyverbs::{
    Caps, DeviceInfo, Error, EventStream, Fault, HeldObjects, MonitorEvent, Provider, Result,
    StateModel, Transport,
};

pub use cq::{RawVerbsChannel, RawVerbsCq};
pub use device::VerbsDevice;
pub use listener::VerbsListener;
pub use pd::{RawVerbsMr, RawVerbsPd};
pub use qp::RawVerbsQp;

/// A protection domain: the kit's over `ibv_pd`.
pub type VerbsPd = KitPd<RawVerbsPd>;
/// A memory region: the kit's over `ibv_mr`.
pub type VerbsMr = KitMr<RawVerbsMr>;
/// A completion queue: the kit's over `ibv_cq`.
pub type VerbsCq = KitCq<RawVerbsCq>;
/// A completion channel: the kit's over `ibv_comp_channel`.
pub type VerbsChannel = KitChannel<RawVerbsChannel>;
/// An RC queue pair: the kit's over `ibv_qp`.
pub type VerbsQp = KitQp<RawVerbsQp>;

/// A transport's rules, as data: what makes `provider-ib` and `provider-iwarp` differ.
#[derive(Debug)]
pub struct Flavor {
    /// The provider's name (`ib`, `iwarp`).
    pub name: &'static str,
    /// The transport it reports.
    pub transport: Transport,
    /// The verbs transport of the devices it takes; devices of other transports are not listed.
    pub takes: crate::device::Transport,
    /// The QP state model of its devices.
    pub state_model: StateModel,
    /// Capabilities of the transport itself, added to what each device reports.
    pub caps: Caps,
    /// Whether the application moves its QPs to RTR and RTS with the CM's attributes
    /// (InfiniBand/RoCE), or the kernel's CM moves them past INIT itself (iWARP).
    pub app_moves_to_rts: bool,
    /// Whether `ibv_query_qp` tells the QP's real state (rxe, mlx5: yes; siw: no, it answers
    /// RESET).
    pub query_tells_state: bool,
}

/// The provider on rdma-core for one [`Flavor`]: the devices of its transport on this machine.
///
/// Cheap to clone; clones share the device monitor, the faults in progress and the counts of
/// objects held.
#[derive(Clone)]
pub struct VerbsProvider {
    flavor: &'static Flavor,
    shared: Arc<ProviderShared>,
}

struct ProviderShared {
    held: held::HeldBook,
    monitor: Mutex<Option<info::MonitorForwarder>>,
    faults: inject::Faults,
}

impl Drop for ProviderShared {
    fn drop(&mut self) {
        self.faults.restore(&self.held);
    }
}

impl std::fmt::Debug for VerbsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsProvider")
            .field("flavor", &self.flavor.name)
            .finish_non_exhaustive()
    }
}

impl VerbsProvider {
    /// The provider for `flavor`. Never fails: on a machine without RDMA it lists no device,
    /// and [`availability`](crate::device::availability) says why.
    pub fn new(flavor: &'static Flavor) -> VerbsProvider {
        VerbsProvider {
            flavor,
            shared: Arc::new(ProviderShared {
                held: held::HeldBook::default(),
                monitor: Mutex::new(None),
                faults: inject::Faults::default(),
            }),
        }
    }

    /// The flavor it was made with.
    pub fn flavor(&self) -> &'static Flavor {
        self.flavor
    }

    /// The entries of this flavor's devices, as discovery found them.
    fn entries(&self) -> Result<Vec<crate::device::DeviceEntry>> {
        // A device an earlier provider (a finished test, a process that ended) took away is put
        // back first: what it left must not look like the device's absence.
        crate::fault::wait_for_restores(
            &self.shared.faults.owner,
            std::time::Instant::now() + inject::RESTORE_WAIT,
        );
        Ok(crate::device::devices()?
            .into_iter()
            .filter(|e| e.transport == self.flavor.takes)
            .collect())
    }

    fn entry(&self, name: &str) -> Result<crate::device::DeviceEntry> {
        crate::device::availability()?;
        self.entries()?
            .into_iter()
            .find(|e| e.identity.name == name)
            .ok_or_else(|| {
                Error::new(
                    anyverbs::ErrorKind::NotFound,
                    format!("no {} device called {name:?}", self.flavor.transport),
                )
            })
    }
}

impl Provider for VerbsProvider {
    type Device = VerbsDevice;
    type Pd = VerbsPd;
    type Mr = VerbsMr;
    type Cq = VerbsCq;
    type Channel = VerbsChannel;
    type Qp = VerbsQp;
    type Listener = VerbsListener;

    fn name(&self) -> &str {
        self.flavor.name
    }

    fn transport(&self) -> Transport {
        self.flavor.transport
    }

    /// The devices of the flavor's transport; empty on a machine without RDMA.
    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|entry| info::describe(self.flavor, entry, &self.shared.faults).ok())
            .collect())
    }

    fn open(&self, name: &str) -> Result<VerbsDevice> {
        let entry = self.entry(name)?;
        VerbsDevice::open(self.flavor, entry, &self.shared.held, &self.shared.faults)
    }

    fn monitor(&self) -> Result<EventStream<MonitorEvent>> {
        let mut monitor = self
            .shared
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if monitor.is_none() {
            *monitor = Some(info::MonitorForwarder::start(
                self.flavor,
                self.shared.faults.clone(),
            )?);
        }
        monitor.as_ref().expect("started above").subscribe()
    }

    /// Injects `fault` into a software device (rxe, siw) through the kernel's RDMA netlink
    /// interface and the netdev's flags; see [`crate::fault`]. What a device can have is in its
    /// [`DeviceInfo::faults`].
    fn inject(&self, name: &str, fault: &Fault) -> Result<()> {
        self.shared.faults.inject(self.flavor, self, name, fault)
    }

    fn held_objects(&self, name: &str) -> Result<HeldObjects> {
        Ok(self.shared.held.of(name))
    }
}
