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

/// The bytes an ABI `Bytes` borrows, if there are at most `max` of them: the length is checked
/// before anything is read, so an absurd one is an error, not a read of wild memory or an
/// allocation that aborts the process. `what` names the value in the error.
///
/// # Safety
/// If `b.len <= max` and `b.ptr` is not null, `b.ptr` must point to `b.len` readable bytes that
/// outlive `'a`.
pub(crate) unsafe fn bounded_slice<'a>(
    b: abi::Bytes,
    what: &str,
    max: usize,
    kind: ErrorKind,
) -> Result<&'a [u8]> {
    if b.len > max {
        return Err(Error::new(
            kind,
            format!("{what}: {} bytes, more than the {max} allowed", b.len),
        ));
    }
    if b.len > 0 && b.ptr.is_null() {
        return Err(Error::new(
            kind,
            format!("{what}: a null pointer with a length of {}", b.len),
        ));
    }
    // SAFETY: at most `max` bytes at a non-null pointer (checked), readable as the caller
    // guarantees.
    Ok(unsafe { array(b.ptr, b.len) })
}

/// A name from ABI bytes: 1 to `max` bytes (checked before they are read) of UTF-8 without
/// control characters, so that it prints as one line and names one thing. `what` names it in
/// the error.
///
/// # Safety
/// As for [`bounded_slice`].
pub(crate) unsafe fn name(
    b: abi::Bytes,
    what: &str,
    max: usize,
    kind: ErrorKind,
) -> Result<String> {
    // SAFETY: forwarded to the caller.
    let text = unsafe { text(b, what, max, kind)? };
    if text.is_empty() {
        return Err(Error::new(kind, format!("{what}: empty")));
    }
    if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::new(
            kind,
            format!(
                "{what} {:?}: control character {c:?} at byte {at}",
                text.escape_debug().to_string()
            ),
        ));
    }
    Ok(text.to_string())
}

/// UTF-8 text from ABI bytes, at most `max` bytes (checked before they are read).
///
/// # Safety
/// As for [`bounded_slice`].
pub(crate) unsafe fn text<'a>(
    b: abi::Bytes,
    what: &str,
    max: usize,
    kind: ErrorKind,
) -> Result<&'a str> {
    // SAFETY: forwarded to the caller.
    let bytes = unsafe { bounded_slice(b, what, max, kind)? };
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            kind,
            format!("{what}: not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// Longest name a caller may pass in (a device name to open or inject into): generous, since the
/// provider answers `NotFound` for a name no device has, but bounded, since a C caller's length
/// may be anything.
pub(crate) const NAME_ARGUMENT_MAX: usize = 4096;

/// A device name from ABI bytes: see [`name`], with [`abi::DEVICE_NAME_MAX`].
///
/// # Safety
/// As for [`bounded_slice`].
pub(crate) unsafe fn device_name(b: abi::Bytes, kind: ErrorKind) -> Result<String> {
    // SAFETY: forwarded to the caller.
    unsafe { name(b, "device name", abi::DEVICE_NAME_MAX, kind) }
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
    fn names_are_bounded_before_they_are_read() {
        let kind = ErrorKind::Other;
        let ok = abi::Bytes::new(b"mlx5_0");
        // SAFETY: `ok` borrows a live literal.
        assert_eq!(unsafe { device_name(ok, kind) }.unwrap(), "mlx5_0");
        // An absurd length at a pointer to 3 bytes: refused without reading.
        let absurd = abi::Bytes {
            ptr: b"abc".as_ptr(),
            len: 1 << 40,
        };
        // SAFETY: refused by its length before the pointer is used.
        let e = unsafe { device_name(absurd, kind) }.unwrap_err();
        assert!(e.message().contains("1099511627776 bytes"), "{e}");
        let long = [b'x'; abi::DEVICE_NAME_MAX + 1];
        // SAFETY: `long` is live.
        let e = unsafe { device_name(abi::Bytes::new(&long), kind) }.unwrap_err();
        assert!(e.message().contains("more than the 63"), "{e}");
        let null = abi::Bytes {
            ptr: std::ptr::null(),
            len: 3,
        };
        // SAFETY: a null pointer is refused before it is read.
        assert!(unsafe { device_name(null, kind) }.is_err());
        for (bad, says) in [
            (&b""[..], "empty"),
            (b"rxe\0x", "control character"),
            (b"a\nb", "control character"),
            (b"\xff\xfe", "not UTF-8"),
        ] {
            // SAFETY: `bad` is a live literal.
            let e = unsafe { device_name(abi::Bytes::new(bad), kind) }.unwrap_err();
            assert!(e.message().contains(says), "{bad:?}: {e}");
            assert_eq!(e.kind(), kind);
        }
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
}
