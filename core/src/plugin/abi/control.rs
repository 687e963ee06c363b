//! The control path's plain data across the ABI: addresses, identities, device and port
//! information, sizes, connection setup, drain reports, events, faults and held objects.

use super::Bytes;

/// An IPv4 or IPv6 socket address (an IP address alone has port 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SockAddr {
    /// 4 or 6.
    pub family: u8,
    /// Port, in host order.
    pub port: u16,
    /// IPv6 flow information.
    pub flowinfo: u32,
    /// IPv6 scope id.
    pub scope_id: u32,
    /// The address: IPv4 in the first 4 bytes, IPv6 in all 16.
    pub addr: [u8; 16],
}

/// A device's identity (see [`DeviceIdentity`](crate::DeviceIdentity)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Device name.
    pub name: Bytes,
    /// Kernel index.
    pub index: u32,
    /// Vendor id.
    pub vendor_id: u32,
    /// Vendor part id.
    pub vendor_part_id: u32,
    /// 1 if `pci_*` hold a PCI address.
    pub has_pci: u8,
    /// PCI bus.
    pub pci_bus: u8,
    /// PCI device.
    pub pci_device: u8,
    /// PCI function.
    pub pci_function: u8,
    /// PCI domain.
    pub pci_domain: u32,
    /// Node GUID.
    pub node_guid: u64,
    /// System-image GUID.
    pub sys_image_guid: u64,
}

/// A device's numeric limits (see [`DeviceLimits`](crate::DeviceLimits)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct Limits {
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_mr_size: u64,
    pub max_pd: u32,
    pub max_inline_data: u32,
    pub max_msg_size: u32,
    pub max_responder_resources: u8,
    pub max_initiator_depth: u8,
}

/// What a provider says about a device (see [`DeviceInfo`](crate::DeviceInfo)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfo {
    /// Identity.
    pub identity: Identity,
    /// [`Transport`](crate::Transport) code: 1 InfiniBand, 2 iWARP, 3 mock.
    pub transport: u32,
    /// [`StateModel`](crate::StateModel) code: 1 InfiniBand, 2 iWARP.
    pub state_model: u32,
    /// [`Caps`](crate::Caps) bits.
    pub caps: u64,
    /// [`Faults`](crate::Faults) bits.
    pub faults: u32,
    /// Limits.
    pub limits: Limits,
}

/// A port (see [`PortInfo`](crate::PortInfo)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    /// Port number.
    pub number: u8,
    /// [`PortState`](crate::PortState) code: 1 down, 2 initializing, 3 active.
    pub state: u32,
    /// [`LinkLayer`](crate::LinkLayer) code: 1 InfiniBand, 2 Ethernet, 3 virtual.
    pub link_layer: u32,
    /// The port's IP addresses (port 0).
    pub addresses: *const SockAddr,
    /// How many.
    pub address_count: usize,
}

/// QP sizes (see [`QpInit`](crate::QpInit)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct QpInit {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// What a new memory region looks like.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MrInfo {
    /// Address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// Local key.
    pub lkey: u32,
    /// Remote key.
    pub rkey: u32,
    /// [`Access`](crate::Access) bits.
    pub access: u32,
    /// The region's memory in the program's address space, for direct access
    /// ([`MemoryRegion::as_ptr`](crate::MemoryRegion::as_ptr)): `len` bytes there, valid for
    /// reads and writes until the region is destroyed; 0 where the program cannot reach it.
    /// For `pd_register_memory`, the address registered.
    pub ptr: u64,
}

/// What a new completion queue looks like.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CqInfo {
    /// CQ number.
    pub cq_num: u32,
    /// Capacity.
    pub capacity: u32,
}

/// Connection parameters (see [`ConnParams`](crate::ConnParams)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnParams {
    /// Private data.
    pub private_data: Bytes,
    /// Transport retries.
    pub retry_count: u8,
    /// RNR retries.
    pub rnr_retry_count: u8,
    /// Which options below are set: [`CONN_SET_INITIATOR_DEPTH`],
    /// [`CONN_SET_RESPONDER_RESOURCES`], [`CONN_SET_ACK_TIMEOUT`], [`CONN_SET_MIN_RNR_TIMER`];
    /// an option not set is `None` (its value is not read). Other bits are refused.
    pub set: u32,
    /// Initiator depth.
    pub initiator_depth: u8,
    /// Responder resources.
    pub responder_resources: u8,
    /// ACK timeout, in nanoseconds.
    pub ack_timeout_ns: u64,
    /// Minimum RNR timer, in nanoseconds.
    pub min_rnr_timer_ns: u64,
}

/// [`ConnParams::set`]: `initiator_depth` is set.
pub const CONN_SET_INITIATOR_DEPTH: u32 = 1 << 0;
/// [`ConnParams::set`]: `responder_resources` is set.
pub const CONN_SET_RESPONDER_RESOURCES: u32 = 1 << 1;
/// [`ConnParams::set`]: `ack_timeout_ns` is set.
pub const CONN_SET_ACK_TIMEOUT: u32 = 1 << 2;
/// [`ConnParams::set`]: `min_rnr_timer_ns` is set.
pub const CONN_SET_MIN_RNR_TIMER: u32 = 1 << 3;

/// Most private data bytes the ABI's fixed-size results carry (more than any CM message holds).
pub const PRIVATE_DATA_MAX: usize = 256;

/// A connection request (see [`ConnectRequest`](crate::ConnectRequest)), returned by
/// `listener_next_request` and passed back to accept or reject.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest {
    /// Request id.
    pub id: u64,
    /// The requester.
    pub peer: SockAddr,
    /// The requester's initiator depth.
    pub initiator_depth: u8,
    /// The requester's responder resources.
    pub responder_resources: u8,
    /// Bytes of `private_data` in use.
    pub private_len: u32,
    /// Private data.
    pub private_data: [u8; PRIVATE_DATA_MAX],
}

/// An established connection (see [`Connection`](crate::Connection)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The peer.
    pub peer: SockAddr,
    /// The peer's QP number.
    pub peer_qp_num: u32,
    /// This side's initiator depth.
    pub initiator_depth: u8,
    /// This side's responder resources.
    pub responder_resources: u8,
    /// Bytes of `private_data` in use.
    pub private_len: u32,
    /// Private data.
    pub private_data: [u8; PRIVATE_DATA_MAX],
}

/// What a drain did (see [`DrainReport`](crate::DrainReport)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainReport {
    /// [`DrainStrategy`](crate::DrainStrategy) code.
    pub strategy: u32,
    /// 0 no fallback, 1 deadline passed, 2 a step failed.
    pub fallback: u32,
    /// The error kind code of a failed step.
    pub fallback_kind: u32,
    /// WRs the device completed.
    pub completed_by_device: u64,
    /// WRs synthesized.
    pub synthesized: u64,
    /// Nanoseconds the drain took.
    pub elapsed_ns: u64,
}

/// What a disconnect did (see [`DisconnectReport`](crate::DisconnectReport)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DisconnectReport {
    /// 1 for an orderly close, 0 for an abrupt one; anything else is refused.
    pub orderly: u32,
    /// Sends outstanding at the close.
    pub sends_outstanding: u64,
    /// How long it took, in nanoseconds.
    pub elapsed_ns: u64,
}

/// A device event (see [`DeviceEvent`](crate::DeviceEvent)); `kind` 0 means `missed` events
/// were dropped.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceEvent {
    /// Event code (see `convert`); 0 for missed events.
    pub kind: u32,
    /// Port of port events.
    pub port: u8,
    /// QP number of QP events, CQ number of CQ events.
    pub number: u32,
    /// Events dropped, when `kind` is 0.
    pub missed: u64,
}

/// A monitor event (see [`MonitorEvent`](crate::MonitorEvent)), handed to a sink; `kind` 0 means
/// `missed` events were dropped.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MonitorEvent {
    /// 0 missed, 1 added (`info`), 2 removed (`info.identity`).
    pub kind: u32,
    /// The device added, or (identity only) removed.
    pub info: DeviceInfo,
    /// Events dropped, when `kind` is 0.
    pub missed: u64,
}

/// A fault to inject (see [`Fault`](crate::Fault)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Fault {
    /// Fault code (see `convert`).
    pub kind: u32,
    /// Port of a port flap.
    pub port: u8,
    /// QP number of QP faults.
    pub qp_num: u32,
    /// Down time of a reset or port flap, in nanoseconds.
    pub down_for_ns: u64,
}

/// What a process still holds of a device (see [`HeldObjects`](crate::HeldObjects)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct HeldObjects {
    pub devices: u32,
    pub pds: u32,
    pub mrs: u32,
    pub cqs: u32,
    pub qps: u32,
    pub listeners: u32,
    pub channels: u32,
}
