//! From the errno rdma-core reports to the core's [`ErrorKind`], and the one message every caller
//! sees when this machine has no RDMA at all.
//!
//! rdma-core is reached through `rdma-mummy-sys`, which loads `libibverbs.so.1` and
//! `librdmacm.so.1` at run time. Two failures therefore mean "no RDMA here" rather than "this
//! call failed": `ENOSYS` (rdma-core is installed but the kernel has no RDMA, so
//! `ibv_get_device_list` cannot open the uverbs ABI) and `EOPNOTSUPP` from the loader stubs
//! (rdma-core is not installed, or a symbol is missing). [`unavailable`] turns either into
//! [`ErrorKind::NotSupported`] with the message `RDMA is not available here: <cause>`.

use std::io;

use anyverbs::{Error, ErrorKind};

/// The message prefix of every "no RDMA on this machine" error.
pub const UNAVAILABLE: &str = "RDMA is not available here";

/// The core's kind for an errno returned by a verbs or CM call.
///
/// The mapping follows what the kernel and rdma-core mean by each errno on these calls:
/// `EINVAL` is a bad argument (or, for a post, a WR the QP's state refuses; the caller that knows
/// the state refines it), `ENOMEM`/`ENOSPC`/`EAGAIN` a full queue or table, `ENODEV`/`EIO`/`ENXIO`
/// a device that went away, and so on. Anything unknown is [`ErrorKind::Other`].
pub fn errno_kind(errno: i32) -> ErrorKind {
    match errno {
        libc::EINVAL | libc::EFAULT | libc::ERANGE | libc::E2BIG | libc::EMSGSIZE => {
            ErrorKind::InvalidArgument
        }
        libc::ENOMEM
        | libc::ENOSPC
        | libc::EAGAIN
        | libc::ENOBUFS
        | libc::EMFILE
        | libc::ENFILE => ErrorKind::ResourceExhausted,
        libc::ENOSYS | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            ErrorKind::NotSupported
        }
        libc::ENOENT | libc::ESRCH => ErrorKind::NotFound,
        libc::EBUSY => ErrorKind::Busy,
        libc::ENODEV | libc::EIO | libc::ENXIO | libc::ESHUTDOWN => ErrorKind::DeviceLost,
        libc::ETIMEDOUT => ErrorKind::TimedOut,
        libc::ECONNREFUSED | libc::ECONNRESET | libc::ECONNABORTED => ErrorKind::ConnectionRefused,
        libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL | libc::ENETDOWN => {
            ErrorKind::Unreachable
        }
        libc::EADDRINUSE => ErrorKind::AddressInUse,
        libc::ENOTCONN
        | libc::EISCONN
        | libc::EALREADY
        | libc::EINPROGRESS
        | libc::EPERM
        | libc::EACCES => ErrorKind::InvalidState,
        _ => ErrorKind::Other,
    }
}

/// Whether an errno means "this machine has no RDMA" rather than "this call failed".
pub fn means_unavailable(errno: i32) -> bool {
    matches!(errno, libc::ENOSYS | libc::EOPNOTSUPP)
}

/// The error of a verbs or CM call that failed with `errno`, saying which call.
pub fn call_failed(call: &str, errno: i32) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    Error::new(errno_kind(errno), format!("{call} failed: {source}")).with_source(source)
}

/// The error of a call that failed with the `io::Error` `source`, saying which call.
pub fn io_failed(call: &str, source: io::Error) -> Error {
    match source.raw_os_error() {
        Some(errno) => call_failed(call, errno),
        None => {
            Error::new(ErrorKind::Other, format!("{call} failed: {source}")).with_source(source)
        }
    }
}

/// `RDMA is not available here: <cause>`, as [`ErrorKind::NotSupported`].
pub fn unavailable(cause: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::NotSupported, format!("{UNAVAILABLE}: {cause}"))
}

/// Why the machine has no RDMA, in words, for an errno that [`means_unavailable`].
pub fn unavailable_cause(errno: i32) -> String {
    match errno {
        libc::ENOSYS => "the kernel has no RDMA support (ibv_get_device_list: ENOSYS; is ib_uverbs loaded?)"
            .to_string(),
        libc::EOPNOTSUPP => {
            "rdma-core is not installed (libibverbs.so.1 or librdmacm.so.1 could not be loaded: EOPNOTSUPP)"
                .to_string()
        }
        other => format!("{}", io::Error::from_raw_os_error(other)),
    }
}

/// The errno a sideway error carries. sideway wraps the `io::Error` of the failed call in an
/// error kind marked `#[error(transparent)]`, which hides it from `source()`, so the chain is
/// walked for an `io::Error` and, failing that, each level's text for the `(os error N)` that an
/// `io::Error` prints. `EIO` when there is none.
pub fn errno_of(e: &(dyn std::error::Error + 'static)) -> i32 {
    let mut level: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = level {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(errno) = io.raw_os_error()
        {
            return errno;
        }
        let text = err.to_string();
        if let Some(start) = text.rfind("(os error ") {
            let digits: String = text[start + 10..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(errno) = digits.parse() {
                return errno;
            }
        }
        level = err.source();
    }
    libc::EIO
}

/// The error of a sideway call `call` that failed with `e`.
pub fn sideway_failed(call: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    call_failed(call, errno_of(e))
}

/// The errno of the calling thread's last failed libc call.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_device_is_device_lost_and_a_full_queue_is_exhausted() {
        assert_eq!(errno_kind(libc::ENODEV), ErrorKind::DeviceLost);
        assert_eq!(errno_kind(libc::EIO), ErrorKind::DeviceLost);
        assert_eq!(errno_kind(libc::ENOMEM), ErrorKind::ResourceExhausted);
        assert_eq!(errno_kind(libc::EINVAL), ErrorKind::InvalidArgument);
        assert_eq!(errno_kind(libc::ENOTCONN), ErrorKind::InvalidState);
        assert_eq!(errno_kind(libc::ECONNREFUSED), ErrorKind::ConnectionRefused);
        assert_eq!(errno_kind(libc::EADDRINUSE), ErrorKind::AddressInUse);
        assert_eq!(errno_kind(12345), ErrorKind::Other);
    }

    #[test]
    fn no_rdma_reads_as_unavailable_with_its_cause() {
        assert!(means_unavailable(libc::ENOSYS) && means_unavailable(libc::EOPNOTSUPP));
        assert!(!means_unavailable(libc::EINVAL));
        let e = unavailable(unavailable_cause(libc::ENOSYS));
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert!(
            e.message()
                .starts_with("RDMA is not available here: the kernel has no RDMA")
        );
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
        impl std::error::Error for Wrapper {}
        let hidden = Wrapper(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(
            errno_of(&hidden),
            libc::ENOSYS,
            "found in the text of a transparent wrapper"
        );
        assert_eq!(
            errno_of(&io::Error::from_raw_os_error(libc::EBUSY)),
            libc::EBUSY
        );
        let e = call_failed("ibv_post_send", libc::ENOMEM);
        assert!(e.message().contains("ibv_post_send failed"), "{e}");
    }
}
