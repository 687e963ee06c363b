//! Conversions between the crate's types and their [`abi`](super::abi) forms, both ways, and the
//! checks that let the data path's types cross without conversion.
//!
//! Decoding checks every enum code and bit set: an unknown value becomes an [`Error`] of the
//! caller's chosen kind (InvalidArgument on the plugin side, where the loader sent it; Other on
//! the loader side, where a provider broke the ABI), never undefined behaviour. WRs and
//! completions are not converted: [`send_wr_ok`], [`recv_wr_ok`] and [`check_completions`]
//! check the fields a peer could get wrong, and [`valid_send_wrs`] and [`valid_recv_wrs`] hand
//! out the same memory as the crate's own types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use super::abi;
use crate::caps::{Caps, DeviceLimits};
use crate::cm::{ConnParams, ConnectRequest, Connection};
use crate::device::{DeviceInfo, LinkLayer, PortInfo, PortState};
use crate::drain::{DrainReport, DrainStrategy, Fallback};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{DeviceEvent, MonitorEvent};
use crate::fault::Fault;
use crate::identity::{DeviceIdentity, Guid, PciAddress};
use crate::mr::Access;
use crate::provider::Transport;
use crate::state::{QpState, StateModel};
use crate::wr::{OpCode, RecvWr, SendFlags, SendWr, Sge, WcFlags, WcOpcode, WcStatus};

/// The error for a value the ABI does not define. Cold: the data path's conversions inline
/// their checks and call this only for a value that is wrong.
#[cold]
#[inline(never)]
pub(crate) fn unknown(kind: ErrorKind, what: &str, value: impl std::fmt::Display) -> Error {
    Error::new(
        kind,
        format!("unknown {what} {value} across the plugin ABI (a newer or broken peer)"),
    )
}

/// Defines a pair of functions mapping a fieldless enum to ABI codes and back. Both are
/// `#[inline]`: the data path converts a status and an opcode per completion.
macro_rules! codes {
    ($to:ident, $from:ident, $what:literal, $ty:ty { $($variant:path = $code:literal,)* }) => {
        #[inline]
        pub(crate) fn $to(value: $ty) -> u32 {
            match value {
                $($variant => $code,)*
            }
        }

        #[inline]
        pub(crate) fn $from(code: u32, kind: ErrorKind) -> Result<$ty> {
            match code {
                $($code => Ok($variant),)*
                other => Err(unknown(kind, $what, other)),
            }
        }
    };
}

codes!(transport_code, transport_from, "transport code", Transport {
    Transport::InfiniBand = 1,
    Transport::Iwarp = 2,
    Transport::Mock = 3,
});

codes!(state_model_code, state_model_from, "state model code", StateModel {
    StateModel::InfiniBand = 1,
    StateModel::Iwarp = 2,
});

codes!(port_state_code, port_state_from, "port state code", PortState {
    PortState::Down = 1,
    PortState::Initializing = 2,
    PortState::Active = 3,
});

codes!(link_layer_code, link_layer_from, "link layer code", LinkLayer {
    LinkLayer::InfiniBand = 1,
    LinkLayer::Ethernet = 2,
    LinkLayer::Virtual = 3,
});

codes!(qp_state_code, qp_state_from, "QP state code", QpState {
    QpState::Reset = 1,
    QpState::Init = 2,
    QpState::ReadyToReceive = 3,
    QpState::ReadyToSend = 4,
    QpState::SendQueueDrained = 5,
    QpState::SendQueueError = 6,
    QpState::Error = 7,
    QpState::Idle = 8,
    QpState::Closing = 9,
    QpState::Terminate = 10,
});

codes!(strategy_code, strategy_from, "drain strategy", DrainStrategy {
    DrainStrategy::AlreadyDrained = 1,
    DrainStrategy::WaitForFlush = 2,
    DrainStrategy::ErrorThenMarker = 3,
    DrainStrategy::MarkerThenError = 4,
    DrainStrategy::FlushMarker = 5,
    DrainStrategy::Synthesized = 6,
});

/// Nanoseconds from now until `deadline` (0 if it passed), for a call across the ABI.
pub(crate) fn timeout_ns(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)
}

/// The deadline `timeout_ns` from now; a timeout too long to represent is as good as forever.
pub(crate) fn deadline_in(timeout_ns: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_nanos(timeout_ns))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Borrows `s` as ABI bytes.
pub(crate) fn bytes(s: &[u8]) -> abi::Bytes {
    abi::Bytes::new(s)
}

/// The array an ABI pointer and count borrow; a null pointer or a zero count is empty.
///
/// # Safety
/// `ptr` must point to `len` readable values that outlive `'a` (or `len` must be 0, or `ptr`
/// null).
#[inline]
pub(crate) unsafe fn array<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 || ptr.is_null() {
        &[]
    } else {
        // SAFETY: the caller guarantees `len` readable values at `ptr` for `'a`.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// Whether `ptr` and `len` can be a slice: non-null, aligned, and `len` values fitting in
/// `isize::MAX` bytes (what `slice::from_raw_parts` requires besides readable memory).
#[inline(always)]
fn array_ok<T>(ptr: *const T, len: usize) -> bool {
    !ptr.is_null()
        && ptr.is_aligned()
        && len <= isize::MAX as usize / std::mem::size_of::<T>().max(1)
}

/// The array an ABI pointer and count borrow, checked: empty for a count of 0, `None` for a
/// pointer and count no slice can have (see [`array_ok`]), as a peer that broke the ABI gives.
///
/// # Safety
/// A pointer that passes the check must point to `len` readable values that outlive `'a`.
#[inline(always)]
pub(crate) unsafe fn checked_array<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        Some(&[])
    } else if array_ok(ptr, len) {
        // SAFETY: non-null, aligned and short enough (checked), and readable for `'a`, as the
        // caller guarantees.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    } else {
        None
    }
}

/// The slice an ABI `Bytes` borrows.
///
/// # Safety
/// As for [`array`], with `b.ptr` and `b.len`.
pub(crate) unsafe fn slice<'a>(b: abi::Bytes) -> &'a [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { array(b.ptr, b.len) }
}

/// An owned string from ABI bytes; `what` names it in the error for invalid UTF-8.
///
/// # Safety
/// As for [`slice`].
pub(crate) unsafe fn string(b: abi::Bytes, what: &str, kind: ErrorKind) -> Result<String> {
    // SAFETY: forwarded to the caller.
    let s = unsafe { slice(b) };
    String::from_utf8(s.to_vec())
        .map_err(|_| Error::new(kind, format!("{what} is not UTF-8 across the plugin ABI")))
}

/// A socket address in ABI form.
pub(crate) fn sock_addr(addr: SocketAddr) -> abi::SockAddr {
    let mut out = abi::SockAddr {
        port: addr.port(),
        ..abi::SockAddr::default()
    };
    match addr {
        SocketAddr::V4(a) => {
            out.family = 4;
            out.addr[..4].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.family = 6;
            out.addr = a.ip().octets();
            out.flowinfo = a.flowinfo();
            out.scope_id = a.scope_id();
        }
    }
    out
}

/// A socket address from ABI form.
pub(crate) fn sock_addr_from(a: &abi::SockAddr, kind: ErrorKind) -> Result<SocketAddr> {
    match a.family {
        4 => {
            let ip = Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, a.port)))
        }
        6 => Ok(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.addr),
            a.port,
            a.flowinfo,
            a.scope_id,
        ))),
        other => Err(unknown(kind, "address family", other)),
    }
}

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
        name: unsafe { string(id.name, "a device name", kind)? },
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
        },
    }
}

/// Device information from ABI form. Capability bits this crate does not know are dropped (a
/// device claims less, never more).
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
        },
    })
}

/// A port from ABI form.
///
/// # Safety
/// `port.addresses` must point to `port.address_count` readable addresses (or the count be 0).
pub(crate) unsafe fn port_from(port: &abi::PortInfo, kind: ErrorKind) -> Result<PortInfo> {
    let (ptr, count) = (port.addresses, port.address_count);
    // SAFETY: the caller guarantees the array's memory.
    let Some(addresses) = (unsafe { checked_array(ptr, count) }) else {
        return Err(Error::new(
            kind,
            format!("port addresses: {count} at {ptr:p}, null, misaligned or too many"),
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

/// Whether the scatter list of a WR from the ABI is one [`SgRef`](crate::wr) may hold: a null
/// pointer is empty (count 0) or the WR's own SGE (count 1); any other pointer and count must
/// be able to be a slice.
#[inline(always)]
fn sgl_ok(sgl: *const Sge, count: usize) -> bool {
    if sgl.is_null() {
        count <= 1
    } else {
        array_ok(sgl, count)
    }
}

/// The error for a scatter list [`sgl_ok`] refuses.
fn sgl_refusal(sgl: *const Sge, count: usize) -> Error {
    Error::invalid_argument(format!(
        "a WR's scatter list of {count} SGEs at {sgl:p} is null, misaligned or too long (a \
         null list is empty or the WR's own SGE)"
    ))
}

/// Whether a send WR from the ABI holds only values [`SendWr`] allows.
#[inline(always)]
pub(crate) fn send_wr_ok(wr: &abi::SendWr) -> bool {
    OpCode::CODES.contains(&wr.opcode)
        && wr.flags & !SendFlags::all().bits() == 0
        && sgl_ok(wr.sgl, wr.sge_count)
}

/// Whether a receive WR from the ABI holds only values [`RecvWr`] allows.
#[inline(always)]
pub(crate) fn recv_wr_ok(wr: &abi::RecvWr) -> bool {
    sgl_ok(wr.sgl, wr.sge_count)
}

/// Why [`send_wr_ok`] refused `wr`.
#[cold]
#[inline(never)]
pub(crate) fn send_wr_refusal(wr: &abi::SendWr) -> Error {
    if !OpCode::CODES.contains(&wr.opcode) {
        unknown(ErrorKind::InvalidArgument, "send opcode", wr.opcode)
    } else if SendFlags::from_bits(wr.flags).is_none() {
        unknown(ErrorKind::InvalidArgument, "send flags", wr.flags)
    } else {
        sgl_refusal(wr.sgl, wr.sge_count)
    }
}

/// Why [`recv_wr_ok`] refused `wr`.
#[cold]
#[inline(never)]
pub(crate) fn recv_wr_refusal(wr: &abi::RecvWr) -> Error {
    sgl_refusal(wr.sgl, wr.sge_count)
}

/// Send WRs from the ABI that all pass [`send_wr_ok`], as the crate's own type, without
/// copying.
///
/// # Safety
/// Every WR must pass [`send_wr_ok`], and its non-null `sgl` point to `sge_count` readable
/// SGEs that outlive `'a`.
#[inline(always)]
pub(crate) unsafe fn valid_send_wrs<'a>(wrs: &'a [abi::SendWr]) -> &'a [SendWr<'a>] {
    debug_assert!(wrs.iter().all(send_wr_ok));
    // SAFETY: `abi::SendWr` and `SendWr` have the same layout (asserted in `abi`), and every
    // WR holds values `SendWr` allows, as the caller guarantees: an opcode in `OpCode::CODES`
    // (the discriminants of `OpCode`), flags within `SendFlags`, and a scatter list `SgRef`
    // may hold, readable for `'a`.
    unsafe { std::slice::from_raw_parts(wrs.as_ptr().cast::<SendWr<'a>>(), wrs.len()) }
}

/// Receive WRs from the ABI that all pass [`recv_wr_ok`]; as [`valid_send_wrs`].
///
/// # Safety
/// As for [`valid_send_wrs`], with [`recv_wr_ok`].
#[inline(always)]
pub(crate) unsafe fn valid_recv_wrs<'a>(wrs: &'a [abi::RecvWr]) -> &'a [RecvWr<'a>] {
    debug_assert!(wrs.iter().all(recv_wr_ok));
    // SAFETY: `abi::RecvWr` and `RecvWr` have the same layout (asserted in `abi`), and every
    // WR has a scatter list `SgRef` may hold, readable for `'a`, as the caller guarantees.
    unsafe { std::slice::from_raw_parts(wrs.as_ptr().cast::<RecvWr<'a>>(), wrs.len()) }
}

/// The send WRs of a post in ABI form: the same memory.
#[inline]
pub(crate) fn send_wrs_abi(wrs: &[SendWr<'_>]) -> *const abi::SendWr {
    wrs.as_ptr().cast()
}

/// The receive WRs of a post in ABI form: the same memory.
#[inline]
pub(crate) fn recv_wrs_abi(wrs: &[RecvWr<'_>]) -> *const abi::RecvWr {
    wrs.as_ptr().cast()
}

/// The largest [`WcStatus`] code.
const LAST_WC_STATUS: u32 = WcStatus::General as u32;
/// The largest [`WcOpcode`] code.
const LAST_WC_OPCODE: u32 = WcOpcode::RecvRdmaWithImm as u32;

/// Makes the `n` completions a plugin just wrote at `out` valid [`Completion`]s, in place.
///
/// A completion was already taken off the provider's CQ: dropping it would lose its WR for
/// good. A status or opcode this ABI does not define (a provider of a newer minor, or a broken
/// one) becomes a `General` error completion that keeps its `wr_id`, so the program can still
/// reclaim the WR's buffers.
///
/// # Safety
/// `out` must be valid for reads and writes of `n` completions.
#[inline(always)]
pub(crate) unsafe fn check_completions(out: *mut abi::Completion, n: usize) {
    for i in 0..n {
        // SAFETY: `i < n`, as the caller guarantees; read and written as `abi::Completion`,
        // whose fields take any value.
        let wc = unsafe { &mut *out.add(i) };
        if wc.status > LAST_WC_STATUS || wc.opcode > LAST_WC_OPCODE {
            undefined_completion(wc);
        }
        // Flags this ABI does not define (a newer minor's) mean nothing to this program.
        wc.flags &= WcFlags::all().bits();
    }
}

#[cold]
#[inline(never)]
fn undefined_completion(wc: &mut abi::Completion) {
    tracing::warn!(
        wr_id = wc.wr_id,
        status = wc.status,
        opcode = wc.opcode,
        "a plugin returned a completion with a status or opcode the ABI does not define; \
         reported as a general error"
    );
    wc.status = WcStatus::General as u32;
    if wc.opcode > LAST_WC_OPCODE {
        wc.opcode = WcOpcode::default() as u32;
    }
}

/// Access bits from the ABI; unknown bits are refused.
pub(crate) fn access_from(bits: u32) -> Result<Access> {
    Access::from_bits(bits).ok_or_else(|| unknown(ErrorKind::InvalidArgument, "access flags", bits))
}

/// Connection parameters in ABI form, borrowing the private data.
pub(crate) fn conn_params(p: &ConnParams) -> abi::ConnParams {
    abi::ConnParams {
        private_data: bytes(&p.private_data),
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
    }
}

/// Connection parameters from ABI form.
///
/// # Safety
/// The private data must be valid as for [`slice`].
pub(crate) unsafe fn conn_params_from(p: &abi::ConnParams) -> ConnParams {
    ConnParams {
        // SAFETY: forwarded to the caller.
        private_data: unsafe { slice(p.private_data) }.to_vec(),
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
    }
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

/// The private data of a fixed ABI buffer.
fn private_from(len: u32, data: &[u8; abi::PRIVATE_DATA_MAX], kind: ErrorKind) -> Result<Vec<u8>> {
    data.get(..len as usize)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| unknown(kind, "private data length", len))
}

/// A connection request in ABI form.
pub(crate) fn connect_request(r: &ConnectRequest) -> Result<abi::ConnectRequest> {
    let mut out = abi::ConnectRequest {
        id: r.id,
        peer: sock_addr(r.peer),
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
        private_data: private_from(r.private_len, &r.private_data, kind)?,
    })
}

/// A connection in ABI form.
pub(crate) fn connection(c: &Connection) -> Result<abi::Connection> {
    let mut out = abi::Connection {
        peer: sock_addr(c.peer),
        peer_qp_num: c.peer_qp_num,
        private_len: 0,
        private_data: [0; abi::PRIVATE_DATA_MAX],
    };
    out.private_len = private_into(&c.private_data, &mut out.private_data)?;
    Ok(out)
}

/// A connection from ABI form.
pub(crate) fn connection_from(c: &abi::Connection) -> Result<Connection> {
    Ok(Connection {
        peer: sock_addr_from(&c.peer, ErrorKind::Other)?,
        peer_qp_num: c.peer_qp_num,
        private_data: private_from(c.private_len, &c.private_data, ErrorKind::Other)?,
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
        other => return Err(unknown(ErrorKind::InvalidArgument, "fault", other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest valid prefix of `wrs`, as the plugin side's post takes it.
    ///
    /// # Safety
    /// As for [`valid_send_wrs`].
    unsafe fn send_wrs<'a>(wrs: &'a [abi::SendWr]) -> &'a [SendWr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !send_wr_ok(wr))
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` pass `send_wr_ok`; scatter lists as the caller guarantees.
        unsafe { valid_send_wrs(&wrs[..n]) }
    }

    /// As [`send_wrs`], for receives.
    ///
    /// # Safety
    /// As for [`valid_recv_wrs`].
    unsafe fn recv_wrs<'a>(wrs: &'a [abi::RecvWr]) -> &'a [RecvWr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !recv_wr_ok(wr))
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` pass `recv_wr_ok`; scatter lists as the caller guarantees.
        unsafe { valid_recv_wrs(&wrs[..n]) }
    }

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["10.0.0.1:4420", "[fe80::1%3]:4791", "[::1]:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            assert_eq!(
                sock_addr_from(&sock_addr(addr), ErrorKind::Other).unwrap(),
                addr
            );
        }
        let bad = abi::SockAddr {
            family: 9,
            ..Default::default()
        };
        assert_eq!(
            sock_addr_from(&bad, ErrorKind::Other).unwrap_err().kind(),
            ErrorKind::Other
        );
    }

    #[test]
    fn send_wrs_cross_as_they_are_and_the_first_bad_one_ends_the_batch() {
        use crate::wr::{RemoteAddr, SendOp};
        let sge = [Sge {
            addr: 0x1000,
            length: 64,
            lkey: 7,
        }];
        let remote = RemoteAddr { addr: 9, rkey: 3 };
        let wrs: Vec<SendWr> = [
            SendOp::Send,
            SendOp::SendWithImm(5),
            SendOp::Write(remote),
            SendOp::WriteWithImm(remote, 6),
            SendOp::Read(remote),
        ]
        .into_iter()
        .map(|op| SendWr::new(42, op, &sge).with_flags(SendFlags::SIGNALED | SendFlags::FENCE))
        .collect();
        // SAFETY: the ABI form is the WRs' own memory, which (with `sge`) lives across the call.
        let raw = unsafe { std::slice::from_raw_parts(send_wrs_abi(&wrs), wrs.len()) };
        // SAFETY: as above.
        let back = unsafe { send_wrs(raw) };
        assert_eq!(back, &wrs[..]);
        assert_eq!(back[3].op(), SendOp::WriteWithImm(remote, 6));
        assert_eq!(back[0].sgl(), &sge);

        for (field, value, what) in [
            ("opcode", 0, "send opcode 0"),
            ("opcode", 77, "send opcode 77"),
            ("flags", 1 << 9, "send flags 512"),
        ] {
            let mut raw = raw.to_vec();
            match field {
                "opcode" => raw[2].opcode = value,
                _ => raw[2].flags = value,
            }
            // SAFETY: as above.
            let ok = unsafe { send_wrs(&raw) };
            assert_eq!(ok.len(), 2);
            let err = send_wr_refusal(&raw[2]);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.message().contains(what), "{err}");
        }
        let mut raw = raw.to_vec();
        (raw[1].sgl, raw[1].sge_count) = (std::ptr::null(), 2);
        // SAFETY: as above; the null list of two is refused before it is read.
        let ok = unsafe { send_wrs(&raw) };
        assert_eq!(ok.len(), 1);
        assert!(send_wr_refusal(&raw[1]).message().contains("null"));
        // A null list of one is the WR's own SGE; of none, empty.
        raw[1].sge_count = 1;
        raw[1].sge = Sge {
            addr: 5,
            length: 6,
            lkey: 7,
        };
        raw[2].sge_count = 0;
        raw[2].sgl = std::ptr::null();
        // SAFETY: as above.
        let ok = unsafe { send_wrs(&raw) };
        assert_eq!(ok.len(), raw.len());
        assert_eq!(ok[1].sgl(), &[raw[1].sge]);
        assert_eq!(ok[2].sgl(), &[]);
        // A WR of one SGE holds it, and crosses with it.
        let one = [SendWr::single(9, SendOp::Read(remote), sge[0])];
        // SAFETY: as above.
        let raw = unsafe { std::slice::from_raw_parts(send_wrs_abi(&one), 1) };
        assert!(raw[0].sgl.is_null());
        // SAFETY: as above.
        let back = unsafe { send_wrs(raw) };
        assert_eq!(
            (back[0].sgl(), back[0].op()),
            (&sge[..], SendOp::Read(remote))
        );
    }

    #[test]
    fn recv_wrs_cross_as_they_are_and_a_misaligned_list_is_refused() {
        let sges = [Sge::default(); 2];
        let wrs = [
            RecvWr::new(1, &sges),
            RecvWr::new(2, &sges[1..]),
            RecvWr::single(3, sges[0]),
        ];
        // SAFETY: the ABI form is the WRs' own memory, which lives across the call.
        let mut raw = unsafe { std::slice::from_raw_parts(recv_wrs_abi(&wrs), 3) }.to_vec();
        // SAFETY: as above.
        let back = unsafe { recv_wrs(&raw) };
        assert_eq!(back, &wrs[..]);
        raw[1].sgl = raw[1].sgl.cast::<u8>().wrapping_add(1).cast();
        // SAFETY: as above; the misaligned list is refused before it is read.
        let ok = unsafe { recv_wrs(&raw) };
        assert_eq!(ok.len(), 1);
        assert_eq!(recv_wr_refusal(&raw[1]).kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn completions_with_undefined_codes_become_general_errors_in_place() {
        let mut wc = crate::wr::Completion {
            wr_id: 3,
            status: WcStatus::RnrRetryExceeded,
            opcode: WcOpcode::RecvRdmaWithImm,
            byte_len: 10,
            qp_num: 12,
            vendor_err: 0x81,
            ..Default::default()
        };
        wc.set_imm(Some(0xfeed));
        let good = abi::Completion {
            wr_id: 3,
            status: 8,
            opcode: 4,
            byte_len: 10,
            imm_data: 0xfeed,
            flags: 1,
            qp_num: 12,
            vendor_err: 0x81,
        };
        let mut raw = [good, good, good];
        raw[1].status = 200;
        raw[2].opcode = 77;
        // SAFETY: three completions, readable and writable.
        unsafe { check_completions(raw.as_mut_ptr(), 3) };
        // SAFETY: `check_completions` made all three valid, and the layouts are the same.
        let back: &[crate::wr::Completion] =
            unsafe { std::slice::from_raw_parts(raw.as_ptr().cast(), 3) };
        assert_eq!(back[0], wc);
        assert_eq!(back[0].imm(), Some(0xfeed));
        assert_eq!((back[1].wr_id, back[1].status), (3, WcStatus::General));
        assert_eq!(back[1].opcode, WcOpcode::RecvRdmaWithImm);
        assert_eq!(
            (back[2].status, back[2].opcode),
            (WcStatus::General, WcOpcode::Send)
        );
    }

    #[test]
    fn events_faults_and_reports_round_trip() {
        for e in [
            DeviceEvent::PortDown { port: 2 },
            DeviceEvent::QpFatal { qp_num: 9 },
            DeviceEvent::CqError { cq_num: 4 },
            DeviceEvent::DeviceRemoved,
        ] {
            assert_eq!(device_event_from(&device_event(&e)).unwrap(), e);
        }
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
    fn private_data_too_long_for_the_abi_is_an_error_not_a_truncation() {
        let c = Connection {
            peer: "10.0.0.1:1".parse().unwrap(),
            peer_qp_num: 1,
            private_data: vec![0; abi::PRIVATE_DATA_MAX + 1],
        };
        assert!(connection(&c).is_err());
    }
}
