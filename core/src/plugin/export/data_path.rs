//! The plugin side of the data path: posts and polls, checked as the ABI requires of a caller
//! that may be C, with every error path cold and out of line.

use super::*;
use crate::cq::CompletionQueue;
use crate::error::PostError;
use crate::qp::QueuePair;
use crate::wr::Completion;

/// The data path (polls and posts) runs with panics caught like every call, but its closures
/// return the ABI's result itself and every error leaves through a cold, out-of-line function:
/// the happy path then moves no `Error` around, which would cost a post or poll more than the
/// crossing does.
///
/// # Safety
/// `err` must be null or valid for a write.
#[inline]
unsafe fn guard_poll(err: *mut ErrorBuf, f: impl FnOnce() -> abi::PollResult) -> abi::PollResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        // SAFETY: forwarded to the caller.
        Err(payload) => unsafe { poll_failed(err, panicked_on_data_path(payload)) },
    }
}

/// As [`guard_poll`], for a post.
///
/// # Safety
/// `fail` must be null or valid for a write.
#[inline]
unsafe fn guard_post(fail: *mut abi::PostFailure, f: impl FnOnce() -> Status) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(status) => status,
        // SAFETY: forwarded to the caller. After a panic nothing is known about the batch, so
        // none is reported accepted, which is what the caller must then assume for the WRs it
        // still owns.
        Err(payload) => unsafe { post_failed(fail, 0, panicked_on_data_path(payload)) },
    }
}

/// The error of a panic on the data path.
#[cold]
#[inline(never)]
fn panicked_on_data_path(payload: Box<dyn std::any::Any + Send>) -> Error {
    panicked(&*payload)
}

/// The result of a poll that failed with `e`; the message goes into the caller's buffer.
///
/// # Safety
/// `err` must be null or valid for a write.
#[cold]
#[inline(never)]
unsafe fn poll_failed(err: *mut ErrorBuf, e: Error) -> abi::PollResult {
    // SAFETY: forwarded to the caller.
    let status = unsafe { fail(err, &e) };
    -(status as abi::PollResult)
}

/// The status of a post that failed with `e` after accepting `n` WRs, which goes into the
/// caller's `fail` with the message (unless it is null).
///
/// # Safety
/// `fail` must be null or valid for a write (its message bytes may be uninitialised).
#[cold]
#[inline(never)]
unsafe fn post_failed(failure: *mut abi::PostFailure, n: usize, e: Error) -> Status {
    if failure.is_null() {
        return abi::error_kind_code(e.kind());
    }
    // SAFETY: non-null and writable, as the caller guarantees; written through raw pointers,
    // as the message bytes may be uninitialised.
    unsafe {
        (&raw mut (*failure).accepted).write(n);
        fail(&raw mut (*failure).error, &e)
    }
}

/// The most completions one poll through the ABI returns: the plugin clears that much of the
/// caller's buffer first.
const POLL_MAX: usize = 64;

/// Polls (or, with a deadline, waits) straight into the caller's buffer.
///
/// The buffer may be uninitialised (as a C caller's `struct … wc[16]` is), so its first
/// `min(capacity, POLL_MAX)` entries are cleared first, all zeros being a valid completion,
/// before the provider sees them as `&mut [Completion]`. Clearing costs a store or two per
/// entry; a loader's buffer is valid already, but the plugin cannot know whose it is.
///
/// # Safety
/// `cq` as the ABI documents; `out` must be writable for `capacity` completions (the ABI's rule
/// for `cq_poll`); `err` null or writable.
#[inline(always)]
unsafe fn poll_into<C: CompletionQueue>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    deadline: Option<std::time::Instant>,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: forwarded to the caller.
    let cq = match unsafe { object::<C, _>(cq, tag::CQ, "CQ") } {
        Ok(cq) => cq,
        // SAFETY: forwarded to the caller.
        Err(e) => return unsafe { poll_failed(err, e) },
    };
    if capacity > 0 && (out.is_null() || !out.is_aligned()) {
        // SAFETY: forwarded to the caller.
        return unsafe { poll_failed(err, bad_poll_buffer(out)) };
    }
    let want = capacity.min(POLL_MAX);
    if want > 0 {
        // Polling for the one completion awaited is common: three stores, and a call to
        // `memset` only for the rest of a larger buffer.
        // SAFETY: the caller guarantees `capacity >= 1` writable completions at `out`
        // (non-null and aligned, as checked).
        unsafe { out.write(abi::Completion::ZERO) };
        if want > 1 {
            // SAFETY: as above, for the `want - 1` completions after the first.
            unsafe { clear_completions(out.add(1), want - 1) };
        }
    }
    let wc: &mut [Completion] = if want == 0 {
        &mut []
    } else {
        // SAFETY: `abi::Completion` and `Completion` have the same layout (asserted in `abi`),
        // all zeros is a valid `Completion` (asserted in `wr`), and the `want` entries just
        // cleared stay borrowed for this call only.
        unsafe { std::slice::from_raw_parts_mut(out.cast::<Completion>(), want) }
    };
    let polled = match deadline {
        None => cq.poll(wc),
        Some(deadline) => cq.wait(wc, deadline),
    };
    match polled {
        // `want <= POLL_MAX`, far below `isize::MAX`.
        Ok(n) if n <= want => n as abi::PollResult,
        // SAFETY: forwarded to the caller.
        Ok(n) => unsafe { poll_failed(err, overfull(n, want)) },
        // SAFETY: forwarded to the caller.
        Err(e) => unsafe { poll_failed(err, e) },
    }
}

/// Zeroes `n` completions at `out`; out of line, so that a poll for one completion keeps no
/// register for the call.
///
/// # Safety
/// `out` must be writable for `n` completions.
#[inline(never)]
unsafe fn clear_completions(out: *mut abi::Completion, n: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { out.write_bytes(0, n) }
}

#[cold]
#[inline(never)]
fn bad_poll_buffer(out: *mut abi::Completion) -> Error {
    Error::invalid_argument(format!(
        "the completion buffer {out:p} is null or misaligned"
    ))
}

#[cold]
#[inline(never)]
fn overfull(n: usize, capacity: usize) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("the provider's CQ reported {n} completions for room for {capacity}"),
    )
}

pub(super) unsafe extern "C" fn cq_poll<P: Provider>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: handle, buffers and pointers as the ABI documents.
    unsafe { guard_poll(err, || poll_into::<P::Cq>(cq, out, capacity, None, err)) }
}

pub(super) unsafe extern "C" fn cq_wait<P: Provider>(
    cq: *const abi::RawCq,
    out: *mut abi::Completion,
    capacity: usize,
    timeout_ns: u64,
    err: *mut ErrorBuf,
) -> abi::PollResult {
    // SAFETY: handle, buffers and pointers as the ABI documents.
    unsafe {
        guard_poll(err, || {
            let deadline = convert::deadline_in(timeout_ns);
            poll_into::<P::Cq>(cq, out, capacity, Some(deadline), err)
        })
    }
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
