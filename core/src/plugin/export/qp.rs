//! The plugin side of [`QueuePair`]: its state, connection and drain, and posts, checked as the
//! ABI requires of a caller that may be C, with every error path cold and out of line.

use super::*;
use crate::error::PostError;
use crate::qp::QueuePair;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn qp_free<P: Provider>(qp: *mut abi::RawQp) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Qp, _>(qp, tag::QP) }
}

pub(super) unsafe extern "C" fn qp_state<P: Provider>(
    qp: *const abi::RawQp,
    state: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            put(state, convert::qp_state_code(qp.state()?))
        })
    }
}

pub(super) unsafe extern "C" fn qp_modify<P: Provider>(
    qp: *const abi::RawQp,
    state: u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            qp.modify(convert::qp_state_from(state, ErrorKind::InvalidArgument)?)
        })
    }
}

pub(super) unsafe extern "C" fn qp_connect<P: Provider>(
    qp: *const abi::RawQp,
    remote: *const abi::SockAddr,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let remote =
                convert::sock_addr_from(input(remote, "address")?, ErrorKind::InvalidArgument)?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            qp.connect(remote, &params)
        })
    }
}

pub(super) unsafe extern "C" fn qp_wait_connected<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::Connection,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let connection = match qp.wait_connected(convert::deadline_in(timeout_ns)) {
                Ok(c) => c,
                Err(e) => {
                    // A rejection's private data goes where a connection's would.
                    if let Some(r) = e.rejected() {
                        put(out, convert::rejection(r)?)?;
                    }
                    return Err(e);
                }
            };
            put(out, convert::connection(&connection)?)
        })
    }
}

pub(super) unsafe extern "C" fn qp_drain<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::DrainReport,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let report = qp.drain(convert::deadline_in(timeout_ns))?;
            put(out, convert::drain_report(&report))
        })
    }
}

pub(super) unsafe extern "C" fn qp_disconnect<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::DisconnectReport,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let report = qp.disconnect(convert::deadline_in(timeout_ns))?;
            put(out, convert::disconnect_report(&report))
        })
    }
}

pub(super) unsafe extern "C" fn qp_destroy<P: Provider>(
    qp: *const abi::RawQp,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Qp, _>(qp, tag::QP, "QP")?.destroy()) }
}

/// A WR in ABI form that crosses as the crate's own WR type.
trait AbiWr: Sized {
    /// The crate's own WR type, of the same layout.
    type Wr<'a>
    where
        Self: 'a;

    /// Whether this WR holds only values the crate's own type allows.
    fn is_valid(&self) -> bool;

    /// `wrs` as the crate's own WRs.
    ///
    /// # Safety
    /// Every WR of `wrs` must be [valid](Self::is_valid), and its scatter list readable for
    /// `'a`.
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>];

    /// The longest prefix of `wrs` whose WRs are [valid](Self::is_valid), as the crate's own
    /// WRs.
    ///
    /// # Safety
    /// The scatter lists of `wrs` must be readable for `'a`.
    unsafe fn valid_prefix<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !wr.is_valid())
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` WRs are valid (checked); their scatter lists as the caller
        // guarantees.
        unsafe { Self::cast(&wrs[..n]) }
    }

    /// Why this WR is not [valid](Self::is_valid).
    fn refusal(&self) -> Error;
}

impl AbiWr for abi::SendWr {
    type Wr<'a> = crate::wr::SendWr<'a>;

    #[inline(always)]
    fn is_valid(&self) -> bool {
        convert::send_wr_ok(self)
    }

    #[inline(always)]
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        // SAFETY: forwarded to the caller.
        unsafe { convert::valid_send_wrs(wrs) }
    }

    fn refusal(&self) -> Error {
        convert::send_wr_refusal(self)
    }
}

impl AbiWr for abi::RecvWr {
    type Wr<'a> = crate::wr::RecvWr<'a>;

    #[inline(always)]
    fn is_valid(&self) -> bool {
        convert::recv_wr_ok(self)
    }

    #[inline(always)]
    unsafe fn cast<'a>(wrs: &'a [Self]) -> &'a [Self::Wr<'a>] {
        // SAFETY: forwarded to the caller.
        unsafe { convert::valid_recv_wrs(wrs) }
    }

    fn refusal(&self) -> Error {
        convert::recv_wr_refusal(self)
    }
}

/// Posts a batch from the ABI, the WRs as they are: all of them, or those before the first
/// that breaks the ABI, which is then refused, so the count of accepted WRs stays exact.
///
/// # Safety
/// `qp` as the ABI documents; `wrs` null or `count` readable WRs whose scatter lists are
/// readable across the call; `accepted` and `err` null or writable.
#[inline(always)]
unsafe fn post_batch<Q: QueuePair, A: AbiWr>(
    qp: *const abi::RawQp,
    (wrs, count): (*const A, usize),
    fail: *mut abi::PostFailure,
    post: impl for<'a> FnOnce(&Q, &[A::Wr<'a>]) -> Result<(), PostError>,
) -> Status {
    // SAFETY: forwarded to the caller.
    let qp = match unsafe { object::<Q, _>(qp, tag::QP, "QP") } {
        Ok(qp) => qp,
        // SAFETY: forwarded to the caller.
        Err(e) => return unsafe { post_failed(fail, 0, e) },
    };
    // SAFETY: `count` readable WRs, as the caller guarantees.
    let Some(raw) = (unsafe { convert::checked_array(wrs, count) }) else {
        // SAFETY: forwarded to the caller.
        return unsafe { post_failed(fail, 0, bad_batch(wrs, count)) };
    };
    // A post of one WR is common: one check, no loop.
    let valid = match raw {
        [one] => one.is_valid(),
        _ => raw.iter().all(A::is_valid),
    };
    if !valid {
        // SAFETY: forwarded to the caller.
        return unsafe { post_valid_prefix(qp, raw, fail, post) };
    }
    // SAFETY: every WR is valid (checked), its scatter list readable across the call, as the
    // caller guarantees.
    match post(qp, unsafe { A::cast(raw) }) {
        Ok(()) => STATUS_OK,
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { post_failed(fail, e.accepted, e.error) },
    }
}

/// Posts the WRs of `raw` before the first that breaks the ABI, then refuses that one. When the
/// very first WR is refused, nothing is posted: the provider's answer to an empty post must not
/// replace the reason.
///
/// # Safety
/// As for [`post_batch`].
#[cold]
#[inline(never)]
unsafe fn post_valid_prefix<Q: QueuePair, A: AbiWr>(
    qp: &Q,
    raw: &[A],
    fail: *mut abi::PostFailure,
    post: impl for<'a> FnOnce(&Q, &[A::Wr<'a>]) -> Result<(), PostError>,
) -> Status {
    // SAFETY: the scatter lists are readable across the call, as the caller guarantees.
    let ok = unsafe { A::valid_prefix(raw) };
    let n = ok.len();
    if n > 0
        && let Err(e) = post(qp, ok)
    {
        // SAFETY: forwarded to the caller.
        return unsafe { post_failed(fail, e.accepted, e.error) };
    }
    match raw.get(n) {
        // SAFETY: forwarded to the caller.
        Some(bad) => unsafe { post_failed(fail, n, bad.refusal()) },
        // Only if called for a batch whose WRs are all valid: then all were posted.
        None => STATUS_OK,
    }
}

#[cold]
#[inline(never)]
fn bad_batch<A>(wrs: *const A, count: usize) -> Error {
    Error::invalid_argument(format!(
        "a post of {count} WRs from an array at {wrs:p} that is null, misaligned or too long"
    ))
}

pub(super) unsafe extern "C" fn qp_post_send<P: Provider>(
    qp: *const abi::RawQp,
    wrs: *const abi::SendWr,
    count: usize,
    fail: *mut abi::PostFailure,
) -> Status {
    // SAFETY: handle, `count` readable WRs at `wrs` with readable scatter lists, and `fail`
    // as the ABI documents.
    unsafe {
        guard_post(fail, || {
            post_batch::<P::Qp, _>(qp, (wrs, count), fail, |qp, b| qp.post_send(b))
        })
    }
}

pub(super) unsafe extern "C" fn qp_post_recv<P: Provider>(
    qp: *const abi::RawQp,
    wrs: *const abi::RecvWr,
    count: usize,
    fail: *mut abi::PostFailure,
) -> Status {
    // SAFETY: as for `qp_post_send`.
    unsafe {
        guard_post(fail, || {
            post_batch::<P::Qp, _>(qp, (wrs, count), fail, |qp, b| qp.post_recv(b))
        })
    }
}
