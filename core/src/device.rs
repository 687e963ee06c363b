//! [`Device`]: an open RDMA device, its identity, capabilities and ports.

use std::net::{IpAddr, SocketAddr};

use crate::caps::{Caps, DeviceLimits};
use crate::error::{Error, Result};
use crate::event::{DeviceEvent, EventStream};
use crate::fault::Faults;
use crate::identity::DeviceIdentity;
use crate::provider::{Provider, Transport};
use crate::state::StateModel;

/// What a provider says about a device, before or after opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Identity; see [`DeviceIdentity::is_same_device`].
    pub identity: DeviceIdentity,
    /// The transport the device speaks.
    pub transport: Transport,
    /// The QP state machine of the device's QPs.
    pub state_model: StateModel,
    /// What the device can do.
    pub caps: Caps,
    /// The faults it can have injected, for tests ([`Provider::inject`]);
    /// empty on a device that cannot.
    pub faults: Faults,
    /// Its numeric limits.
    pub limits: DeviceLimits,
}

/// The link layer of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkLayer {
    /// Native InfiniBand.
    InfiniBand,
    /// Ethernet (RoCE, iWARP).
    Ethernet,
    /// No physical link (an in-process device).
    Virtual,
}

/// The state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortState {
    /// The link is down.
    Down,
    /// The link is up but not yet ready for traffic.
    Initializing,
    /// Ready for traffic.
    Active,
}

/// One port of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port number, from 1.
    pub number: u8,
    /// Link state.
    pub state: PortState,
    /// Link layer.
    pub link_layer: LinkLayer,
    /// IP addresses through which the connection manager reaches this port.
    pub addresses: Vec<IpAddr>,
}

/// An open RDMA device: allocates protection domains, completion queues and listeners, and
/// reports lifecycle events.
///
/// Once the device is lost (removed, or a fatal error such as a reset) every handle obtained
/// from it is dead: every call fails with [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost)
/// without blocking, and only `destroy` succeeds. Accessors of data fixed at creation
/// ([`info`](Self::info), `qp_num`, `lkey`, ...) keep returning it, and a memory region's
/// [`read`](crate::MemoryRegion::read) and [`write`](crate::MemoryRegion::write) keep working
/// (its memory is the host's). A device that comes back is a new device: open it again.
pub trait Device<P: Provider>: Send + Sync {
    /// What the provider reports about this device.
    fn info(&self) -> &DeviceInfo;

    /// The device's ports, as they are now.
    fn ports(&self) -> Result<Vec<PortInfo>>;

    /// Allocates a protection domain.
    fn alloc_pd(&self) -> Result<P::Pd>;

    /// Creates a completion queue holding at least `depth` completions (`depth` ≥ 1).
    fn create_cq(&self, depth: u32) -> Result<P::Cq>;

    /// Creates a completion channel, for CQs an event loop waits on through a file descriptor
    /// (see [`cq`](crate::cq)). The default fails with
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported): a provider without them.
    fn create_channel(&self) -> Result<P::Channel> {
        Err(Error::not_supported(
            "this provider has no completion channels",
        ))
    }

    /// Creates a completion queue as [`create_cq`](Self::create_cq) does, on `channel` if one
    /// is given (a channel of this device): arming the CQ
    /// ([`CompletionQueue::arm`](crate::CompletionQueue::arm)) then fires that channel. The
    /// default creates a CQ without a channel, and refuses one with
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported).
    fn create_cq_with(&self, depth: u32, channel: Option<&P::Channel>) -> Result<P::Cq> {
        match channel {
            None => self.create_cq(depth),
            Some(_) => Err(Error::not_supported(
                "this provider has no completion channels",
            )),
        }
    }

    /// Listens for connection requests at `addr`, which must be one of this device's addresses
    /// (see [`PortInfo::addresses`]); port 0 picks a free port.
    fn listen(&self, addr: SocketAddr) -> Result<P::Listener>;

    /// A stream of this device's events from now on (see [`event`](crate::event)). Each call
    /// subscribes a new stream; every stream gets every event. On a lost device, fails with
    /// [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost).
    fn events(&self) -> Result<EventStream<DeviceEvent>>;
}
