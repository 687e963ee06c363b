//! [`ProtectionDomain`]: the scope within which memory regions and queue pairs may be used
//! together.

use crate::error::Result;
use crate::mr::Access;
use crate::provider::Provider;
use crate::qp::QpInit;

/// A protection domain. MRs and QPs are created in one; a QP may only use MRs of its own PD.
pub trait ProtectionDomain<P: Provider>: Send + Sync {
    /// Allocates `len` bytes of zeroed memory and registers them with `access`.
    ///
    /// `REMOTE_WRITE` (and atomic) access requires `LOCAL_WRITE`, as in verbs.
    fn register(&self, len: usize, access: Access) -> Result<P::Mr>;

    /// Creates a reliable-connected QP whose send completions go to `send_cq` and receive
    /// completions to `recv_cq` (they may be the same CQ).
    fn create_qp(&self, send_cq: &P::Cq, recv_cq: &P::Cq, init: &QpInit) -> Result<P::Qp>;

    /// Destroys the PD; [`ErrorKind::Busy`](crate::ErrorKind::Busy) while MRs or QPs exist.
    fn destroy(&self) -> Result<()>;
}
