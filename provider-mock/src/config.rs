//! How a mock fabric is laid out: its devices, their identity and behaviour, and its timers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyverbs::{Caps, DeviceLimits, Guid, PciAddress, StateModel};

/// One mock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Device name, as the kernel would show it.
    pub name: String,
    /// Node GUID (and, here, the system-image GUID).
    pub node_guid: Guid,
    /// PCI address, if the device pretends to be a PCI function.
    pub pci_address: Option<PciAddress>,
    /// Which QP state machine the device's QPs follow.
    pub state_model: StateModel,
    /// The device's IP address, through which the connection manager reaches it.
    pub address: IpAddr,
    /// Limits.
    pub limits: DeviceLimits,
}

impl DeviceConfig {
    /// A device that behaves like an InfiniBand/RoCE HCA.
    pub fn infiniband(name: &str, n: u8) -> Self {
        DeviceConfig {
            name: name.to_string(),
            node_guid: Guid(0x5054_00ff_fe00_0000 | u64::from(n)),
            pci_address: Some(PciAddress {
                domain: 0,
                bus: 0x10 + n,
                device: 0,
                function: 0,
            }),
            state_model: StateModel::InfiniBand,
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
            limits: DEFAULT_LIMITS,
        }
    }

    /// A device that behaves like an iWARP RNIC (kernel siw / irdma semantics).
    pub fn iwarp(name: &str, n: u8) -> Self {
        DeviceConfig {
            node_guid: Guid(0x5054_00ff_fe01_0000 | u64::from(n)),
            pci_address: Some(PciAddress {
                domain: 0,
                bus: 0x20 + n,
                device: 0,
                function: 0,
            }),
            state_model: StateModel::Iwarp,
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, n)),
            ..DeviceConfig::infiniband(name, n)
        }
    }

    /// The capabilities this configuration gives the device.
    pub fn caps(&self) -> Caps {
        let common = Caps::POST_IN_ERROR_FLUSHED
            | Caps::RDMA_READ
            | Caps::RDMA_WRITE
            | Caps::ZERO_LENGTH
            | Caps::INLINE_DATA;
        match self.state_model {
            StateModel::InfiniBand => {
                common | Caps::IMMEDIATE_DATA | Caps::SQ_DRAIN_STATE | Caps::RNR_RETRY
            }
            // Like siw: no immediate data, no RNR retries (a SEND without a receive terminates
            // the connection), and QPs connect only through the CM.
            StateModel::Iwarp => common | Caps::CM_ONLY_CONNECT,
        }
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
}

impl Default for FabricConfig {
    /// `mock0` and `mock1` (InfiniBand) and `mockiw0` (iWARP), with 1 ms RNR and ACK timers.
    fn default() -> Self {
        FabricConfig {
            devices: vec![
                DeviceConfig::infiniband("mock0", 1),
                DeviceConfig::infiniband("mock1", 2),
                DeviceConfig::iwarp("mockiw0", 1),
            ],
            rnr_timer: Duration::from_millis(1),
            ack_timeout: Duration::from_millis(1),
        }
    }
}
