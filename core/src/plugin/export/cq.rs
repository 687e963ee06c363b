//! The plugin side of [`CompletionQueue`]: polls and waits, straight into the caller's buffer,
//! checked as the ABI requires of a caller that may be C, with every error path cold and out of
//! line.

use super::*;
use crate::cq::CompletionQueue;
use crate::wr::Completion;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn cq_free<P: Provider>(cq: *mut abi::RawCq) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Cq, _>(cq, tag::CQ) }
}

pub(super) unsafe extern "C" fn cq_destroy<P: Provider>(
    cq: *const abi::RawCq,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Cq, _>(cq, tag::CQ, "CQ")?.destroy()) }
}

pub(super) unsafe extern "C" fn cq_arm<P: Provider>(
    cq: *const abi::RawCq,
    solicited_only: u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let cq = object::<P::Cq, _>(cq, tag::CQ, "CQ")?;
            let solicited_only = match solicited_only {
                0 => false,
                1 => true,
                other => {
                    return Err(Error::invalid_argument(format!(
                        "solicited_only is {other}, not 0 or 1"
                    )));
                }
            };
            cq.arm(solicited_only)
        })
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
