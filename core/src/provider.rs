//! [`Provider`]: one transport implementation, and the bundle of handle types it hands out.

use std::fmt;

use crate::cm::Listener;
use crate::cq::{CompletionChannel, CompletionQueue};
use crate::device::{Device, DeviceInfo};
use crate::error::{Error, Result};
use crate::event::{EventStream, MonitorEvent};
use crate::fault::Fault;
use crate::held::HeldObjects;
use crate::mr::MemoryRegion;
use crate::pd::ProtectionDomain;
use crate::qp::QueuePair;

/// The transport a provider (or one of its devices) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// InfiniBand, and RoCE (InfiniBand transport over Ethernet).
    InfiniBand,
    /// iWARP (RDMA over TCP); QPs connect only through the connection manager.
    Iwarp,
    /// The in-process software transport of `anyverbs-provider-mock`; each mock device emulates
    /// the state model of InfiniBand or iWARP.
    Mock,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::InfiniBand => "infiniband",
            Transport::Iwarp => "iwarp",
            Transport::Mock => "mock",
        })
    }
}

/// A transport implementation: lists devices and opens them.
///
/// The associated types are the handles the provider hands out, so generic ULP code
/// (`fn serve<P: Provider>(dev: &P::Device)`) is statically dispatched; a provider loaded at run
/// time is just another implementation of this trait.
///
/// Every method of every handle trait takes only plain data and handles of the same provider,
/// and no method is generic, so the whole surface can be carried by a C function table.
///
/// Handles are destroyed explicitly with `destroy(&self)`, which fails with
/// [`ErrorKind::Busy`](crate::ErrorKind::Busy) while dependants exist (MRs or QPs on a PD, QPs
/// on a CQ) and is a no-op the second time; any other call on a destroyed handle fails with
/// [`ErrorKind::Destroyed`](crate::ErrorKind::Destroyed). Dropping a handle destroys it as soon
/// as it has no dependants left.
pub trait Provider: Send + Sync + Sized + 'static {
    /// An open device.
    type Device: Device<Self>;
    /// A protection domain.
    type Pd: ProtectionDomain<Self>;
    /// A registered memory region.
    type Mr: MemoryRegion;
    /// A completion queue.
    type Cq: CompletionQueue;
    /// A completion channel: how an event loop waits for completions (see [`cq`](crate::cq)).
    type Channel: CompletionChannel;
    /// A reliable-connected queue pair.
    type Qp: QueuePair;
    /// A listening endpoint of the connection manager.
    type Listener: Listener<Self>;

    /// Short name of the provider, e.g. `mock`, `ib`, `iwarp`.
    fn name(&self) -> &str;

    /// The transport this provider speaks.
    fn transport(&self) -> Transport;

    /// The devices present now.
    fn devices(&self) -> Result<Vec<DeviceInfo>>;

    /// Opens the device named `name`; [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) if
    /// there is none.
    fn open(&self, name: &str) -> Result<Self::Device>;

    /// A stream of devices added and removed, from now on (see [`event`](crate::event)).
    /// Subscribe before listing or opening devices, so that nothing happens unseen in between.
    fn monitor(&self) -> Result<EventStream<MonitorEvent>>;

    /// Injects `fault` into the device named `name`, for tests. A device lists the faults it
    /// can have injected in [`DeviceInfo::faults`](crate::DeviceInfo::faults); any other fails
    /// with [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported), as the default does for
    /// every fault.
    fn inject(&self, name: &str, fault: &Fault) -> Result<()> {
        let _ = fault;
        Err(Error::not_supported(format!(
            "provider {} cannot inject faults into {name}",
            self.name()
        )))
    }

    /// The objects of the device named `name` — of every incarnation of it this provider
    /// opened — that are not released yet. A reset or removed device comes back only once they
    /// all are (the kernel waits for a process to close every object of a device it
    /// unregisters); the [`supervisor`](crate::supervisor) reports them while it waits for the
    /// device. [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) for a name the provider
    /// never knew. The default fails with
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported): a provider that does not
    /// count its objects.
    fn held_objects(&self, name: &str) -> Result<HeldObjects> {
        Err(Error::not_supported(format!(
            "provider {} does not count the objects held of {name}",
            self.name()
        )))
    }
}
