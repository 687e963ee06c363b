//! The control path's values across the ABI, converted both ways: identities, device and port
//! information, connection setup, drain reports, events and faults.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::caps::{Caps, DeviceLimits};
use crate::cm::{
    ConnParams, ConnectRequest, Connection, MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA,
    MAX_REJECT_PRIVATE_DATA, Rejected,
};
use crate::device::{DeviceInfo, PortInfo};
use crate::drain::{DrainReport, Fallback};
use crate::event::{DeviceEvent, MonitorEvent};
use crate::fault::{Fault, Faults};
use crate::held::HeldObjects;
use crate::identity::{DeviceIdentity, Guid, PciAddress};
use crate::mr::Access;
use crate::qp::DisconnectReport;

/// A device identity in ABI form, borrowing the name.
pub(crate) fn identity(id: &DeviceIdentity) -> abi::Identity {
    let pci = id.pci_address;
    abi::Identity {
        name: bytes(id.name.as_bytes()),
        index: id.index,
        vendor_id: id.vendor_id,
        vendor_part_id: id.vendor_part_id,
        has_pci: u8::from(pci.is_some()),
        pci_bus: pci.map_or(0, |p| p.bus),
        pci_device: pci.map_or(0, |p| p.device),
        pci_function: pci.map_or(0, |p| p.function),
        pci_domain: pci.map_or(0, |p| p.domain),
        node_guid: id.node_guid.0,
        sys_image_guid: id.sys_image_guid.0,
    }
}

/// A device identity from ABI form.
///
/// # Safety
/// `id.name` must be valid as for [`slice`].
pub(crate) unsafe fn identity_from(id: &abi::Identity, kind: ErrorKind) -> Result<DeviceIdentity> {
    Ok(DeviceIdentity {
        // SAFETY: forwarded to the caller.
        name: unsafe { device_name(id.name, kind)? },
        index: id.index,
        node_guid: Guid(id.node_guid),
        sys_image_guid: Guid(id.sys_image_guid),
        pci_address: (id.has_pci != 0).then_some(PciAddress {
            domain: id.pci_domain,
            bus: id.pci_bus,
            device: id.pci_device,
            function: id.pci_function,
        }),
        vendor_id: id.vendor_id,
        vendor_part_id: id.vendor_part_id,
    })
}

/// Device information in ABI form, borrowing from `info`.
pub(crate) fn device_info(info: &DeviceInfo) -> abi::DeviceInfo {
    let l = &info.limits;
    abi::DeviceInfo {
        identity: identity(&info.identity),
        transport: transport_code(info.transport),
        state_model: state_model_code(info.state_model),
        caps: info.caps.bits(),
        faults: info.faults.bits(),
        limits: abi::Limits {
            max_qp: l.max_qp,
            max_qp_wr: l.max_qp_wr,
            max_sge: l.max_sge,
            max_cq: l.max_cq,
            max_cqe: l.max_cqe,
            max_mr: l.max_mr,
            max_mr_size: l.max_mr_size,
            max_pd: l.max_pd,
            max_inline_data: l.max_inline_data,
            max_msg_size: l.max_msg_size,
            max_responder_resources: l.max_responder_resources,
            max_initiator_depth: l.max_initiator_depth,
        },
    }
}

/// Device information from ABI form. Capability and fault bits this crate does not know are
/// dropped (a device claims less, never more).
///
/// # Safety
/// The identity's name must be valid as for [`slice`].
pub(crate) unsafe fn device_info_from(
    info: &abi::DeviceInfo,
    kind: ErrorKind,
) -> Result<DeviceInfo> {
    let l = &info.limits;
    Ok(DeviceInfo {
        // SAFETY: forwarded to the caller.
        identity: unsafe { identity_from(&info.identity, kind)? },
        transport: transport_from(info.transport, kind)?,
        state_model: state_model_from(info.state_model, kind)?,
        caps: Caps::from_bits_truncate(info.caps),
        faults: Faults::from_bits_truncate(info.faults),
        limits: DeviceLimits {
            max_qp: l.max_qp,
            max_qp_wr: l.max_qp_wr,
            max_sge: l.max_sge,
            max_cq: l.max_cq,
            max_cqe: l.max_cqe,
            max_mr: l.max_mr,
            max_mr_size: l.max_mr_size,
            max_pd: l.max_pd,
            max_inline_data: l.max_inline_data,
            max_msg_size: l.max_msg_size,
            max_responder_resources: l.max_responder_resources,
            max_initiator_depth: l.max_initiator_depth,
        },
    })
}

/// A port from ABI form.
///
/// # Safety
/// `port.addresses` must point to `port.address_count` readable addresses (or the count be 0).
pub(crate) unsafe fn port_from(port: &abi::PortInfo, kind: ErrorKind) -> Result<PortInfo> {
    if port.number == 0 {
        return Err(Error::new(kind, "port number 0: ports are numbered from 1"));
    }
    let (ptr, count) = (port.addresses, port.address_count);
    if count > abi::PORT_ADDRESSES_MAX {
        return Err(Error::new(
            kind,
            format!(
                "port {} addresses: {count}, more than the {} allowed",
                port.number,
                abi::PORT_ADDRESSES_MAX
            ),
        ));
    }
    // SAFETY: the caller guarantees the array's memory.
    let Some(addresses) = (unsafe { checked_array(ptr, count) }) else {
        return Err(Error::new(
            kind,
            format!(
                "port {} addresses: {count} at {ptr:p}, null or misaligned",
                port.number
            ),
        ));
    };
    Ok(PortInfo {
        number: port.number,
        state: port_state_from(port.state, kind)?,
        link_layer: link_layer_from(port.link_layer, kind)?,
        addresses: addresses
            .iter()
            .map(|a| sock_addr_from(a, kind).map(|s| s.ip()))
            .collect::<Result<Vec<IpAddr>>>()?,
    })
}

/// Access bits from the ABI; unknown bits are refused.
pub(crate) fn access_from(bits: u32) -> Result<Access> {
    Access::from_bits(bits).ok_or_else(|| unknown(ErrorKind::InvalidArgument, "access flags", bits))
}

/// Connection parameters in ABI form, borrowing the private data.
pub(crate) fn conn_params(p: &ConnParams) -> abi::ConnParams {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut set = 0;
    for (on, bit) in [
        (p.initiator_depth.is_some(), abi::CONN_SET_INITIATOR_DEPTH),
        (
            p.responder_resources.is_some(),
            abi::CONN_SET_RESPONDER_RESOURCES,
        ),
        (p.ack_timeout.is_some(), abi::CONN_SET_ACK_TIMEOUT),
        (p.min_rnr_timer.is_some(), abi::CONN_SET_MIN_RNR_TIMER),
    ] {
        if on {
            set |= bit;
        }
    }
    abi::ConnParams {
        private_data: bytes(&p.private_data),
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        set,
        initiator_depth: p.initiator_depth.unwrap_or(0),
        responder_resources: p.responder_resources.unwrap_or(0),
        ack_timeout_ns: p.ack_timeout.map_or(0, ns),
        min_rnr_timer_ns: p.min_rnr_timer.map_or(0, ns),
    }
}

/// Connection parameters from ABI form. Private data longer than [`abi::PRIVATE_DATA_MAX`] is
/// refused before it is read (the provider applies the CM's own, smaller limits).
///
/// # Safety
/// The private data must be valid as for [`bounded_slice`].
pub(crate) unsafe fn conn_params_from(p: &abi::ConnParams, kind: ErrorKind) -> Result<ConnParams> {
    let known = abi::CONN_SET_INITIATOR_DEPTH
        | abi::CONN_SET_RESPONDER_RESOURCES
        | abi::CONN_SET_ACK_TIMEOUT
        | abi::CONN_SET_MIN_RNR_TIMER;
    if p.set & !known != 0 {
        return Err(unknown(kind, "connection parameter bits", p.set));
    }
    let is = |bit: u32| p.set & bit != 0;
    Ok(ConnParams {
        // SAFETY: forwarded to the caller.
        private_data: unsafe { private_slice(p.private_data, kind) }?.to_vec(),
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        initiator_depth: is(abi::CONN_SET_INITIATOR_DEPTH).then_some(p.initiator_depth),
        responder_resources: is(abi::CONN_SET_RESPONDER_RESOURCES).then_some(p.responder_resources),
        ack_timeout: is(abi::CONN_SET_ACK_TIMEOUT).then(|| Duration::from_nanos(p.ack_timeout_ns)),
        min_rnr_timer: is(abi::CONN_SET_MIN_RNR_TIMER)
            .then(|| Duration::from_nanos(p.min_rnr_timer_ns)),
    })
}

/// Private data passed by pointer and length, at most [`abi::PRIVATE_DATA_MAX`] bytes.
///
/// # Safety
/// As for [`bounded_slice`].
pub(crate) unsafe fn private_slice<'a>(b: abi::Bytes, kind: ErrorKind) -> Result<&'a [u8]> {
    // SAFETY: forwarded to the caller.
    unsafe { bounded_slice(b, "private data", abi::PRIVATE_DATA_MAX, kind) }
}

/// Copies private data into a fixed ABI buffer; more than it holds is an error.
fn private_into(data: &[u8], out: &mut [u8; abi::PRIVATE_DATA_MAX]) -> Result<u32> {
    if data.len() > abi::PRIVATE_DATA_MAX {
        return Err(Error::new(
            ErrorKind::Other,
            format!(
                "{} bytes of private data do not fit the plugin ABI's {}",
                data.len(),
                abi::PRIVATE_DATA_MAX
            ),
        ));
    }
    out[..data.len()].copy_from_slice(data);
    Ok(data.len() as u32)
}

/// The private data of a fixed ABI buffer, at most `max` bytes (the CM's limit for the message
/// it came in).
fn private_from(
    len: u32,
    data: &[u8; abi::PRIVATE_DATA_MAX],
    max: usize,
    kind: ErrorKind,
) -> Result<Vec<u8>> {
    let len = len as usize;
    if len > max {
        return Err(Error::new(
            kind,
            format!("private data: {len} bytes, more than the {max} the CM carries there"),
        ));
    }
    Ok(data[..len].to_vec())
}

/// A connection request in ABI form.
pub(crate) fn connect_request(r: &ConnectRequest) -> Result<abi::ConnectRequest> {
    let mut out = abi::ConnectRequest {
        id: r.id,
        peer: sock_addr(r.peer),
        initiator_depth: r.initiator_depth,
        responder_resources: r.responder_resources,
        private_len: 0,
        private_data: [0; abi::PRIVATE_DATA_MAX],
    };
    out.private_len = private_into(&r.private_data, &mut out.private_data)?;
    Ok(out)
}

/// A connection request from ABI form.
pub(crate) fn connect_request_from(
    r: &abi::ConnectRequest,
    kind: ErrorKind,
) -> Result<ConnectRequest> {
    Ok(ConnectRequest {
        id: r.id,
        peer: sock_addr_from(&r.peer, kind)?,
        private_data: private_from(
            r.private_len,
            &r.private_data,
            MAX_CONNECT_PRIVATE_DATA,
            kind,
        )?,
        initiator_depth: r.initiator_depth,
        responder_resources: r.responder_resources,
    })
}

/// A connection in ABI form.
pub(crate) fn connection(c: &Connection) -> Result<abi::Connection> {
    let mut out = abi::Connection {
        peer: sock_addr(c.peer),
        peer_qp_num: c.peer_qp_num,
        initiator_depth: c.initiator_depth,
        responder_resources: c.responder_resources,
        private_len: 0,
        private_data: [0; abi::PRIVATE_DATA_MAX],
    };
    out.private_len = private_into(&c.private_data, &mut out.private_data)?;
    Ok(out)
}

/// A connection from ABI form.
pub(crate) fn connection_from(c: &abi::Connection, kind: ErrorKind) -> Result<Connection> {
    if c.peer_qp_num > abi::QP_NUM_MAX {
        return Err(unknown(kind, "peer QP number", c.peer_qp_num));
    }
    Ok(Connection {
        peer: sock_addr_from(&c.peer, kind)?,
        peer_qp_num: c.peer_qp_num,
        private_data: private_from(
            c.private_len,
            &c.private_data,
            MAX_ACCEPT_PRIVATE_DATA,
            kind,
        )?,
        initiator_depth: c.initiator_depth,
        responder_resources: c.responder_resources,
    })
}

/// A rejection in ABI form: its private data where a connection's goes (the ABI documents
/// that `qp_wait_connected` writes it there when it fails with `ConnectionRefused`).
pub(crate) fn rejection(r: &Rejected) -> Result<abi::Connection> {
    let mut out = abi::Connection {
        peer: sock_addr(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        peer_qp_num: 0,
        initiator_depth: 0,
        responder_resources: 0,
        private_len: 0,
        private_data: [0; abi::PRIVATE_DATA_MAX],
    };
    out.private_len = private_into(&r.private_data, &mut out.private_data)?;
    Ok(out)
}

/// A rejection from ABI form: at most [`MAX_REJECT_PRIVATE_DATA`] bytes of private data.
pub(crate) fn rejection_from(c: &abi::Connection) -> Result<Rejected> {
    Ok(Rejected {
        private_data: private_from(
            c.private_len,
            &c.private_data,
            MAX_REJECT_PRIVATE_DATA,
            ErrorKind::Other,
        )?,
    })
}

/// A drain report in ABI form.
pub(crate) fn drain_report(r: &DrainReport) -> abi::DrainReport {
    let (fallback, fallback_kind) = match r.fallback {
        None => (0, 0),
        Some(Fallback::DeadlinePassed) => (1, 0),
        Some(Fallback::StepFailed(kind)) => (2, abi::error_kind_code(kind)),
    };
    abi::DrainReport {
        strategy: strategy_code(r.strategy),
        fallback,
        fallback_kind,
        completed_by_device: r.completed_by_device as u64,
        synthesized: r.synthesized as u64,
        elapsed_ns: u64::try_from(r.elapsed.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A drain report from ABI form.
pub(crate) fn drain_report_from(r: &abi::DrainReport) -> Result<DrainReport> {
    let count = |n: u64| usize::try_from(n).map_err(|_| unknown(ErrorKind::Other, "WR count", n));
    let fallback = match r.fallback {
        0 => None,
        1 => Some(Fallback::DeadlinePassed),
        2 => Some(Fallback::StepFailed(
            abi::error_kind_from_code(r.fallback_kind)
                .ok_or_else(|| unknown(ErrorKind::Other, "error kind code", r.fallback_kind))?,
        )),
        other => return Err(unknown(ErrorKind::Other, "drain fallback", other)),
    };
    Ok(DrainReport {
        strategy: strategy_from(r.strategy, ErrorKind::Other)?,
        completed_by_device: count(r.completed_by_device)?,
        synthesized: count(r.synthesized)?,
        fallback,
        elapsed: Duration::from_nanos(r.elapsed_ns),
    })
}

/// A disconnect report in ABI form.
pub(crate) fn disconnect_report(r: &DisconnectReport) -> abi::DisconnectReport {
    abi::DisconnectReport {
        orderly: u32::from(r.orderly),
        sends_outstanding: r.sends_outstanding as u64,
        elapsed_ns: u64::try_from(r.elapsed.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A disconnect report from ABI form: `orderly` is 0 or 1, and the count fits this platform
/// (the caller checks it against the QP's queue).
pub(crate) fn disconnect_report_from(r: &abi::DisconnectReport) -> Result<DisconnectReport> {
    let orderly = match r.orderly {
        0 => false,
        1 => true,
        other => return Err(unknown(ErrorKind::Other, "disconnect kind", other)),
    };
    Ok(DisconnectReport {
        orderly,
        sends_outstanding: usize::try_from(r.sends_outstanding)
            .map_err(|_| unknown(ErrorKind::Other, "sends outstanding", r.sends_outstanding))?,
        elapsed: Duration::from_nanos(r.elapsed_ns),
    })
}

/// A device event in ABI form.
pub(crate) fn device_event(e: &DeviceEvent) -> abi::DeviceEvent {
    let (kind, port, number) = match *e {
        DeviceEvent::PortActive { port } => (1, port, 0),
        DeviceEvent::PortDown { port } => (2, port, 0),
        DeviceEvent::GidChange { port } => (3, port, 0),
        DeviceEvent::QpFatal { qp_num } => (4, 0, qp_num),
        DeviceEvent::QpRequestError { qp_num } => (5, 0, qp_num),
        DeviceEvent::QpAccessError { qp_num } => (6, 0, qp_num),
        DeviceEvent::LastWqeReached { qp_num } => (7, 0, qp_num),
        DeviceEvent::SqDrained { qp_num } => (8, 0, qp_num),
        DeviceEvent::Disconnected { qp_num } => (9, 0, qp_num),
        DeviceEvent::CqError { cq_num } => (10, 0, cq_num),
        DeviceEvent::DeviceFatal => (11, 0, 0),
        DeviceEvent::DeviceRemoved => (12, 0, 0),
        DeviceEvent::AddressChange { port } => (13, port, 0),
    };
    abi::DeviceEvent {
        kind,
        port,
        number,
        missed: 0,
    }
}

/// A device event from ABI form (kind 0, missed events, is handled by the caller).
pub(crate) fn device_event_from(e: &abi::DeviceEvent) -> Result<DeviceEvent> {
    let (port, qp_num) = (e.port, e.number);
    // Ports are numbered from 1, and an RC QP's number is 1 to 2^24 - 1.
    if matches!(e.kind, 1..=3 | 13) && port == 0 {
        return Err(Error::new(
            ErrorKind::Other,
            format!(
                "device event {}: port 0 (ports are numbered from 1)",
                e.kind
            ),
        ));
    }
    if matches!(e.kind, 4..=9) && !(1..=abi::QP_NUM_MAX).contains(&qp_num) {
        return Err(Error::new(
            ErrorKind::Other,
            format!(
                "device event {}: QP number {qp_num} (an RC QP's is 1 to {:#x})",
                e.kind,
                abi::QP_NUM_MAX
            ),
        ));
    }
    Ok(match e.kind {
        1 => DeviceEvent::PortActive { port },
        2 => DeviceEvent::PortDown { port },
        3 => DeviceEvent::GidChange { port },
        4 => DeviceEvent::QpFatal { qp_num },
        5 => DeviceEvent::QpRequestError { qp_num },
        6 => DeviceEvent::QpAccessError { qp_num },
        7 => DeviceEvent::LastWqeReached { qp_num },
        8 => DeviceEvent::SqDrained { qp_num },
        9 => DeviceEvent::Disconnected { qp_num },
        10 => DeviceEvent::CqError { cq_num: e.number },
        11 => DeviceEvent::DeviceFatal,
        12 => DeviceEvent::DeviceRemoved,
        13 => DeviceEvent::AddressChange { port },
        other => return Err(unknown(ErrorKind::Other, "device event", other)),
    })
}

/// A monitor event from ABI form (kind 0, missed events, is handled by the caller).
///
/// # Safety
/// The identity's name must be valid as for [`slice`].
pub(crate) unsafe fn monitor_event_from(e: &abi::MonitorEvent) -> Result<MonitorEvent> {
    match e.kind {
        // SAFETY: forwarded to the caller.
        1 => Ok(MonitorEvent::Added(unsafe {
            device_info_from(&e.info, ErrorKind::Other)?
        })),
        2 => Ok(MonitorEvent::Removed(unsafe {
            // SAFETY: forwarded to the caller.
            identity_from(&e.info.identity, ErrorKind::Other)?
        })),
        other => Err(unknown(ErrorKind::Other, "monitor event", other)),
    }
}

/// A fault in ABI form.
pub(crate) fn fault(f: &Fault) -> abi::Fault {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (kind, port, qp_num, down_for_ns) = match *f {
        Fault::Reset { down_for } => (1, 0, 0, ns(down_for)),
        Fault::Unplug => (2, 0, 0, 0),
        Fault::Replug => (3, 0, 0, 0),
        Fault::ReplugOther => (4, 0, 0, 0),
        Fault::FlapPort { port, down_for } => (5, port, 0, ns(down_for)),
        Fault::KillQp { qp_num } => (6, 0, qp_num, 0),
        Fault::LosePeer { qp_num } => (7, 0, qp_num, 0),
        Fault::Stall => (8, 0, 0, 0),
        Fault::Resume => (9, 0, 0, 0),
        Fault::ChangeAddress { port } => (10, port, 0, 0),
    };
    abi::Fault {
        kind,
        port,
        qp_num,
        down_for_ns,
    }
}

/// A fault from ABI form.
pub(crate) fn fault_from(f: &abi::Fault) -> Result<Fault> {
    let down_for = Duration::from_nanos(f.down_for_ns);
    Ok(match f.kind {
        1 => Fault::Reset { down_for },
        2 => Fault::Unplug,
        3 => Fault::Replug,
        4 => Fault::ReplugOther,
        5 => Fault::FlapPort {
            port: f.port,
            down_for,
        },
        6 => Fault::KillQp { qp_num: f.qp_num },
        7 => Fault::LosePeer { qp_num: f.qp_num },
        8 => Fault::Stall,
        9 => Fault::Resume,
        10 => Fault::ChangeAddress { port: f.port },
        other => return Err(unknown(ErrorKind::InvalidArgument, "fault", other)),
    })
}

/// Held-object counts in ABI form.
pub(crate) fn held_objects(h: &HeldObjects) -> abi::HeldObjects {
    abi::HeldObjects {
        devices: h.devices,
        pds: h.pds,
        mrs: h.mrs,
        cqs: h.cqs,
        qps: h.qps,
        listeners: h.listeners,
        channels: h.channels,
    }
}

/// Held-object counts from ABI form (any counts are possible).
pub(crate) fn held_objects_from(h: &abi::HeldObjects) -> HeldObjects {
    HeldObjects {
        devices: h.devices,
        pds: h.pds,
        mrs: h.mrs,
        cqs: h.cqs,
        qps: h.qps,
        listeners: h.listeners,
        channels: h.channels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_on_port_0_or_on_a_qp_number_no_rc_qp_has_is_refused() {
        for (kind, port, number) in [(1, 0, 0), (3, 0, 0), (4, 0, 0), (9, 0, 1 << 24)] {
            let e = abi::DeviceEvent {
                kind,
                port,
                number,
                missed: 0,
            };
            let err = device_event_from(&e).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Other, "{err}");
        }
        // A CQ number is the provider's own: any value.
        let cq = device_event(&DeviceEvent::CqError { cq_num: 0 });
        assert!(device_event_from(&cq).is_ok());
    }

    #[test]
    fn events_faults_and_reports_round_trip() {
        for e in [
            DeviceEvent::PortDown { port: 2 },
            DeviceEvent::QpFatal { qp_num: 9 },
            DeviceEvent::CqError { cq_num: 4 },
            DeviceEvent::DeviceRemoved,
            DeviceEvent::AddressChange { port: 1 },
        ] {
            assert_eq!(device_event_from(&device_event(&e)).unwrap(), e);
        }
        // An address change names its port, numbered from 1.
        let mut zero = device_event(&DeviceEvent::AddressChange { port: 1 });
        zero.port = 0;
        assert!(device_event_from(&zero).is_err());
        for f in [
            Fault::Reset {
                down_for: Duration::from_millis(30),
            },
            Fault::FlapPort {
                port: 1,
                down_for: Duration::from_millis(5),
            },
            Fault::KillQp { qp_num: 7 },
            Fault::Resume,
            Fault::ChangeAddress { port: 1 },
        ] {
            assert_eq!(fault_from(&fault(&f)).unwrap(), f);
        }
        let report = DrainReport {
            strategy: DrainStrategy::ErrorThenMarker,
            completed_by_device: 3,
            synthesized: 2,
            fallback: Some(Fallback::StepFailed(ErrorKind::InvalidState)),
            elapsed: Duration::from_micros(17),
        };
        assert_eq!(drain_report_from(&drain_report(&report)).unwrap(), report);
    }

    #[test]
    fn connection_parameters_round_trip_with_every_option_set_or_not() {
        let all = ConnParams {
            private_data: vec![1, 2, 3],
            retry_count: 3,
            rnr_retry_count: 5,
            initiator_depth: Some(0),
            responder_resources: Some(9),
            ack_timeout: Some(Duration::from_micros(300)),
            min_rnr_timer: Some(Duration::from_micros(640)),
        };
        for p in [ConnParams::default(), all] {
            let raw = conn_params(&p);
            // SAFETY: the private data is borrowed from `p`, alive for the call.
            let back = unsafe { conn_params_from(&raw, ErrorKind::InvalidArgument) }.unwrap();
            assert_eq!(back, p);
        }
        // A bit this version does not know is refused, not ignored.
        let mut raw = conn_params(&ConnParams::default());
        raw.set |= 1 << 9;
        // SAFETY: as above.
        let e = unsafe { conn_params_from(&raw, ErrorKind::InvalidArgument) }.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn private_data_too_long_for_the_abi_is_an_error_not_a_truncation() {
        let c = Connection {
            peer: "10.0.0.1:1".parse().unwrap(),
            peer_qp_num: 1,
            private_data: vec![0; abi::PRIVATE_DATA_MAX + 1],
            initiator_depth: 1,
            responder_resources: 1,
        };
        assert!(connection(&c).is_err());
    }
}
