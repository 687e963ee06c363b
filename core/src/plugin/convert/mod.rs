//! Conversions between the crate's types and their [`abi`](super::abi) forms, both ways, and the
//! checks that let the data path's types cross without conversion.
//!
//! Decoding checks every enum code, bit set and length: an unknown value becomes an [`Error`] of
//! the caller's chosen kind (InvalidArgument on the plugin side, where the loader sent it; Other
//! on the loader side, where a provider broke the ABI), never undefined behaviour. Control-path
//! values are converted ([`control`]); WRs and completions are not ([`data_path`]): their checks
//! let the same memory be used as the crate's own types.

mod control;
mod data_path;

pub(crate) use control::*;
pub(crate) use data_path::*;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use super::abi;
use crate::device::{LinkLayer, PortState};
use crate::drain::DrainStrategy;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::Transport;
use crate::state::{QpState, StateModel};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
