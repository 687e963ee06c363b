//! How a mock fabric is laid out: its devices, their identity and behaviour, and its timers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyverbs::drain::{DrainProfile, profiles};
use anyverbs::{Caps, DeviceLimits, DrainPlan, Faults, Guid, PciAddress, QpState, StateModel};

/// How a mock device behaves where real devices disagree: what happens to WRs posted in ERROR,
/// whether and when a move to ERROR flushes, and whether the device works at all. Each one
/// reproduces a behaviour observed on real hardware (see the crate docs), reports the
/// capabilities that describe it, and is drained with the plan a real provider for that hardware
/// must use ([`Personality::drain_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Personality {
    /// An InfiniBand/RoCE HCA (mlx5): ERROR flushes at once, and so are WRs posted in ERROR.
    Ib,
    /// Soft-RoCE (rxe): the flushes of a move to ERROR arrive asynchronously
    /// ([`FabricConfig::flush_delay`]); a send posted in ERROR is flushed at once, but a receive
    /// posted in ERROR completes only when the QP is moved to ERROR again.
    Rxe,
    /// iWARP with kernel siw semantics: WRs posted in ERROR are flushed at once.
    IwarpKernel,
    /// User-space siw: WRs posted in ERROR are accepted and never complete, not even after
    /// another move to ERROR.
    Siw,
    /// Chelsio's user-space provider (cxgb4): a post in ERROR fails synchronously with EINVAL.
    Cxgb4,
    /// Alibaba erdma: a post in ERROR fails synchronously with EIO; the hardware ignores WRs
    /// after ERROR, so a marker must go in before the transition.
    Erdma,
    /// Intel irdma: WRs posted in ERROR are accepted and flushed later by the flush worker;
    /// flushes arrive asynchronously ([`FabricConfig::flush_delay`]).
    Irdma,
    /// A NIC seen to accept a marker posted in ERROR and never complete it (Intel X722): the
    /// first WR posted in ERROR on each queue is lost; flushes arrive asynchronously.
    LostMarker,
    /// A device in fatal error that nobody told the provider about (rxe and siw never raise
    /// DEVICE_FATAL): connections still come up, but no WR ever executes or flushes.
    Dead,
}

impl Personality {
    /// Every personality.
    pub const ALL: [Personality; 9] = [
        Personality::Ib,
        Personality::Rxe,
        Personality::IwarpKernel,
        Personality::Siw,
        Personality::Cxgb4,
        Personality::Erdma,
        Personality::Irdma,
        Personality::LostMarker,
        Personality::Dead,
    ];

    /// The QP state machine of the transport the personality belongs to.
    pub fn state_model(self) -> StateModel {
        match self {
            Personality::Ib | Personality::Rxe | Personality::Dead => StateModel::InfiniBand,
            _ => StateModel::Iwarp,
        }
    }

    /// The capabilities a device with this personality reports. Hardware reports fatal errors
    /// ([`Caps::DEVICE_FATAL`]); the software devices rxe and siw cannot (no disassociate), and
    /// neither does the dead device, which stands for a fatal error nobody reported.
    pub fn caps(self) -> Caps {
        let common = Caps::RDMA_READ | Caps::RDMA_WRITE | Caps::ZERO_LENGTH | Caps::INLINE_DATA;
        let common = match self {
            Personality::Rxe | Personality::Siw | Personality::Dead => common,
            _ => common | Caps::DEVICE_FATAL,
        };
        // Atomics as rxe and mlx5 have them (IBV_ATOMIC_HCA).
        let ib =
            common | Caps::IMMEDIATE_DATA | Caps::SQ_DRAIN_STATE | Caps::RNR_RETRY | Caps::ATOMICS;
        // Like siw: no immediate data, no atomics, no RNR retries (a SEND without a receive
        // terminates the connection), QPs connect only through the CM, and CLOSING needs the
        // send queue empty.
        let iwarp = common | Caps::CM_ONLY_CONNECT | Caps::CLOSE_NEEDS_QUIET_SENDS;
        match self {
            Personality::Ib => ib | Caps::POST_IN_ERROR_FLUSHED,
            Personality::Rxe | Personality::Dead => ib,
            Personality::IwarpKernel | Personality::Irdma => iwarp | Caps::POST_IN_ERROR_FLUSHED,
            Personality::Siw
            | Personality::Cxgb4
            | Personality::Erdma
            | Personality::LostMarker => iwarp,
        }
    }

    /// The faults a device with this personality can have injected by default
    /// ([`DeviceConfig::faults`]): every one, except on rxe and siw, which can have only what the
    /// real software devices can — deleted and re-added on the same netdev or another
    /// (`rdma link`) and their port flapped — and are reset by removing and re-adding them. (The
    /// CM's ADDR_CHANGE needs a bonding failover, which the test bed's plain interfaces do not
    /// have.)
    pub fn faults(self) -> Faults {
        match self {
            Personality::Rxe | Personality::Siw => {
                Faults::RESET | Faults::UNPLUG | Faults::REPLUG_OTHER | Faults::FLAP_PORT
            }
            _ => Faults::all(),
        }
    }

    /// The drain profile of the driver the personality reproduces, from the core's table
    /// ([`anyverbs::drain::profiles`]) — the same entry a real provider for that hardware finds.
    pub fn drain_profile(self) -> &'static DrainProfile {
        let name = match self {
            // The dead device looks like an HCA to the provider; its markers never complete
            // and the drain falls back at the deadline.
            Personality::Ib | Personality::Dead => "mlx5",
            Personality::Rxe => "rxe",
            // Kernel siw's flushing of posts in ERROR is irdma's, without the delay.
            Personality::IwarpKernel | Personality::Irdma => "irdma",
            Personality::Siw => "siw",
            Personality::Cxgb4 => "cxgb4",
            Personality::Erdma => "erdma",
            Personality::LostMarker => "x722",
        };
        profiles::profile_named(name).unwrap_or(&profiles::UNKNOWN_DRIVER)
    }

    /// How the provider drains a QP of such a device that is in `state`: its profile's plan.
    pub fn drain_plan(self, state: QpState) -> DrainPlan {
        self.drain_profile().plan_for(state)
    }

    /// Whether the device delivers the flushes of a move to ERROR (and of WRs posted in ERROR)
    /// after [`FabricConfig::flush_delay`] rather than at once.
    pub fn flushes_asynchronously(self) -> bool {
        matches!(
            self,
            Personality::Rxe | Personality::Irdma | Personality::LostMarker
        )
    }
}

/// One mock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Device name, as the kernel would show it.
    pub name: String,
    /// Node GUID (and, here, the system-image GUID).
    pub node_guid: Guid,
    /// PCI address, if the device pretends to be a PCI function.
    pub pci_address: Option<PciAddress>,
    /// How the device behaves; decides its state model and capabilities.
    pub personality: Personality,
    /// The faults it can have injected ([`Personality::faults`] unless changed): a fault it
    /// cannot fails [`Provider::inject`](anyverbs::Provider::inject) with `NotSupported`.
    pub faults: Faults,
    /// The device's IP address, through which the connection manager reaches it.
    pub address: IpAddr,
    /// Limits.
    pub limits: DeviceLimits,
}

impl DeviceConfig {
    /// Device number `n` with `personality`: InfiniBand devices get 10.0.0.`n`, iWARP ones
    /// 10.0.1.`n`, and GUIDs and PCI addresses that differ between the two.
    pub fn new(name: &str, personality: Personality, n: u8) -> Self {
        let (guid_base, bus, net) = match personality.state_model() {
            StateModel::InfiniBand => (0x5054_00ff_fe00_0000, 0x10, 0),
            StateModel::Iwarp => (0x5054_00ff_fe01_0000, 0x20, 1),
        };
        DeviceConfig {
            name: name.to_string(),
            node_guid: Guid(guid_base | u64::from(n)),
            pci_address: Some(PciAddress {
                domain: 0,
                bus: bus + n,
                device: 0,
                function: 0,
            }),
            personality,
            faults: personality.faults(),
            address: IpAddr::V4(Ipv4Addr::new(10, 0, net, n)),
            limits: DEFAULT_LIMITS,
        }
    }

    /// A device that behaves like an InfiniBand/RoCE HCA.
    pub fn infiniband(name: &str, n: u8) -> Self {
        DeviceConfig::new(name, Personality::Ib, n)
    }

    /// A device that behaves like an iWARP RNIC with kernel siw semantics.
    pub fn iwarp(name: &str, n: u8) -> Self {
        DeviceConfig::new(name, Personality::IwarpKernel, n)
    }

    /// The QP state machine of the device.
    pub fn state_model(&self) -> StateModel {
        self.personality.state_model()
    }

    /// The capabilities this configuration gives the device.
    pub fn caps(&self) -> Caps {
        self.personality.caps()
    }
}

/// The limits of a default mock device.
pub const DEFAULT_LIMITS: DeviceLimits = DeviceLimits {
    max_qp: 1024,
    max_qp_wr: 4096,
    max_sge: 16,
    max_cq: 1024,
    max_cqe: 65536,
    max_mr: 4096,
    max_mr_size: 1 << 30,
    max_pd: 256,
    max_inline_data: 256,
    max_msg_size: 1 << 30,
    max_responder_resources: 16,
    max_initiator_depth: 16,
};

/// A whole fabric: devices that can reach each other, and the wire's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricConfig {
    /// The devices, in index order.
    pub devices: Vec<DeviceConfig>,
    /// How long a requester waits between RNR retries (the responder's RNR timer).
    pub rnr_timer: Duration,
    /// How long a requester waits for an acknowledgement before a transport retry.
    pub ack_timeout: Duration,
    /// How long devices that flush asynchronously
    /// ([`Personality::flushes_asynchronously`]) take to deliver flush completions.
    pub flush_delay: Duration,
}

impl Default for FabricConfig {
    /// `mock0` and `mock1` (InfiniBand HCAs), `mockiw0` (iWARP, kernel siw semantics), and one
    /// device per other personality: `mockrxe0`, `mockdead0` (InfiniBand state model),
    /// `mocksiw0`, `mockcxgb0`, `mockerdma0`, `mockirdma0`, `mocklost0` (iWARP). 1 ms RNR and
    /// ACK timers, 2 ms asynchronous flushes (rxe really takes about 1 ms).
    fn default() -> Self {
        use Personality::*;
        FabricConfig {
            devices: vec![
                DeviceConfig::new("mock0", Ib, 1),
                DeviceConfig::new("mock1", Ib, 2),
                DeviceConfig::new("mockiw0", IwarpKernel, 1),
                DeviceConfig::new("mockrxe0", Rxe, 3),
                DeviceConfig::new("mockdead0", Dead, 4),
                DeviceConfig::new("mocksiw0", Siw, 2),
                DeviceConfig::new("mockcxgb0", Cxgb4, 3),
                DeviceConfig::new("mockerdma0", Erdma, 4),
                DeviceConfig::new("mockirdma0", Irdma, 5),
                DeviceConfig::new("mocklost0", LostMarker, 6),
            ],
            rnr_timer: Duration::from_millis(1),
            ack_timeout: Duration::from_millis(1),
            flush_delay: Duration::from_millis(2),
        }
    }
}
