//! Errors: one [`Error`] type for every call, with an [`ErrorKind`] that generic code can match.
//!
//! Providers keep their own detailed error types (the embedded-hal pattern) and convert them into
//! [`Error`], choosing the [`ErrorKind`] and keeping their own error as the [`source`] so that
//! nothing the provider knew is lost.
//!
//! [`source`]: std::error::Error::source

use std::borrow::Cow;
use std::fmt;

/// Shorthand for results whose error is an anyverbs [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in terms a ULP can react to without knowing the provider.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is malformed or out of range: too many SGEs, an unknown lkey, a zero-sized
    /// queue, an SGE outside its region, a region of another protection domain.
    InvalidArgument,
    /// The object is in a state that does not allow the call, e.g. posting a send to a QP in
    /// RESET or INIT, or a QP state transition that the transport's state machine forbids.
    InvalidState,
    /// The provider or device does not support the operation.
    NotSupported,
    /// No such device, address or object.
    NotFound,
    /// A queue or table is full: more WRs posted than the queue holds, no more QPs, ...
    ResourceExhausted,
    /// The object is still in use, e.g. destroying a PD that still has MRs or QPs, or a CQ that
    /// a QP still uses. Nothing was destroyed.
    Busy,
    /// The handle was destroyed; only `destroy` (which is then a no-op) may still be called.
    Destroyed,
    /// The device was removed or hit a fatal error: every handle on it is dead.
    DeviceLost,
    /// A deadline passed before the operation could finish.
    TimedOut,
    /// A connection request was rejected, or nobody listens at the address.
    ConnectionRefused,
    /// The address belongs to no reachable device.
    Unreachable,
    /// The address is already in use by another listener.
    AddressInUse,
    /// A completion queue overflowed: completions were lost and the CQ is unusable.
    Overflow,
    /// The remote side failed the operation or went away.
    RemoteFailure,
    /// The provider broke its own contract (a bug), or an error that fits no other kind.
    Other,
}

impl ErrorKind {
    /// A short, stable, lower-case name for logs and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::InvalidState => "invalid state",
            ErrorKind::NotSupported => "not supported",
            ErrorKind::NotFound => "not found",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Busy => "busy",
            ErrorKind::Destroyed => "destroyed",
            ErrorKind::DeviceLost => "device lost",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::AddressInUse => "address in use",
            ErrorKind::Overflow => "overflow",
            ErrorKind::RemoteFailure => "remote failure",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every anyverbs call: a [`kind`](Error::kind), a human-readable message, and,
/// where a provider had one, its own error as the source.
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message saying what happened.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the provider's own error as the source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What went wrong, for code that reacts to errors.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The peer's rejection, if this error is a connection the peer rejected (see
    /// [`Listener::reject`](crate::Listener::reject)): its private data says why.
    pub fn rejected(&self) -> Option<&crate::cm::Rejected> {
        self.source
            .as_deref()
            .and_then(|s| s.downcast_ref::<crate::cm::Rejected>())
    }

    /// Shorthand for [`ErrorKind::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Shorthand for [`ErrorKind::InvalidState`].
    pub fn invalid_state(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }

    /// Shorthand for [`ErrorKind::NotSupported`].
    pub fn not_supported(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotSupported, message)
    }

    /// Shorthand for [`ErrorKind::Destroyed`], naming the kind of object.
    pub fn destroyed(what: &'static str) -> Self {
        Self::new(ErrorKind::Destroyed, format!("the {what} was destroyed"))
    }

    /// Shorthand for [`ErrorKind::TimedOut`].
    pub fn timed_out(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::TimedOut, message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind, kind.as_str())
    }
}

/// The error of a batch post: how many WRs of the batch were accepted before the one that failed,
/// and why that one failed.
///
/// Like `ibv_post_send`'s `bad_wr`, this loses nothing: WRs `[..accepted]` were posted and will
/// each produce a completion (or be accounted for by `drain`); WR `accepted` and every later one
/// were not posted and will never complete.
#[derive(Debug)]
pub struct PostError {
    /// How many WRs at the front of the batch were posted.
    pub accepted: usize,
    /// Why WR number `accepted` was refused.
    pub error: Error,
}

impl PostError {
    /// A post error after `accepted` WRs were posted.
    pub fn new(accepted: usize, error: Error) -> Self {
        PostError { accepted, error }
    }

    /// The kind of the underlying error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "work request {} refused ({} posted before it): {}",
            self.accepted, self.accepted, self.error
        )
    }
}

impl std::error::Error for PostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<PostError> for Error {
    fn from(e: PostError) -> Self {
        let accepted = e.accepted;
        let kind = e.error.kind();
        Error::new(
            kind,
            format!("work request {accepted} refused ({accepted} posted before it)"),
        )
        .with_source(e.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug)]
    struct ProviderDetail;
    impl fmt::Display for ProviderDetail {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("ibv_post_send: EINVAL")
        }
    }
    impl std::error::Error for ProviderDetail {}

    #[test]
    fn provider_detail_survives_as_source() {
        let e = Error::invalid_argument("too many SGEs").with_source(ProviderDetail);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.to_string(), "invalid argument: too many SGEs");
        assert_eq!(e.source().unwrap().to_string(), "ibv_post_send: EINVAL");
    }

    #[test]
    fn post_error_keeps_kind_and_count_when_converted() {
        let pe = PostError::new(
            3,
            Error::new(ErrorKind::ResourceExhausted, "send queue full"),
        );
        let e: Error = pe.into();
        assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
        assert!(e.to_string().contains("work request 3"));
        assert!(e.source().unwrap().to_string().contains("send queue full"));
    }
}
