//! A loaded provider's completion queue and queue pair: the data path, one indirect call per
//! post or poll, inlined into the caller's generic code.

use std::time::Instant;

use super::slots::DataPathSlot;
use super::{Handle, call};
use crate::cm::{ConnParams, Connection};
use crate::cq::CompletionQueue;
use crate::drain::DrainReport;
use crate::error::{Error, ErrorKind, PostError, Result};
use crate::plugin::abi::{self, ErrorBuf, STATUS_OK, Status};
use crate::plugin::convert;
use crate::qp::{QpInit, QueuePair};
use crate::state::QpState;
use crate::wr::{Completion, RecvWr, SendWr};

/// The type of `cq_poll`.
type PollFn = unsafe extern "C" fn(
    *const abi::RawCq,
    *mut abi::Completion,
    usize,
    *mut ErrorBuf,
) -> abi::PollResult;
/// The type of `cq_wait`.
type WaitFn = unsafe extern "C" fn(
    *const abi::RawCq,
    *mut abi::Completion,
    usize,
    u64,
    *mut ErrorBuf,
) -> abi::PollResult;
/// The type of `qp_post_send` and `qp_post_recv`, for WRs of ABI form `A`.
type PostFn<A> =
    unsafe extern "C" fn(*const abi::RawQp, *const A, usize, *mut abi::PostFailure) -> Status;

/// A completion queue of a loaded provider.
pub struct LoadedCq {
    handle: Handle<abi::RawCq>,
    /// The plugin's `cq_poll` and `cq_wait`, also reachable through the handle: kept here too,
    /// so that a poll loads its function in one step.
    poll: PollFn,
    wait: WaitFn,
    info: abi::CqInfo,
}

impl LoadedCq {
    /// A CQ whose `info` was checked.
    pub(super) fn new(handle: Handle<abi::RawCq>, info: abi::CqInfo) -> Self {
        let f = handle.f();
        LoadedCq {
            poll: f.cq_poll,
            wait: f.cq_wait,
            handle,
            info,
        }
    }

    pub(super) fn handle(&self) -> &Handle<abi::RawCq> {
        &self.handle
    }

    /// Polls, or with a timeout waits, straight into `out`.
    #[inline]
    fn poll_with(&self, out: &mut [Completion], timeout_ns: Option<u64>) -> Result<usize> {
        let capacity = out.len();
        let buf = out.as_mut_ptr().cast::<abi::Completion>();
        // The plugin writes `abi::Completion`s, the layout of `Completion` (asserted in `abi`),
        // into the caller's buffer, which holds valid completions before the call; the ones it
        // wrote are checked below before the buffer is used as `Completion`s again.
        let slot = DataPathSlot::for_poll();
        let handle = self.handle.ptr();
        // SAFETY: this plugin's poll functions, a live CQ handle, `out`'s memory for
        // `capacity` completions, and this thread's error record.
        let result = unsafe {
            match timeout_ns {
                None => (self.poll)(handle, buf, capacity, slot.error_buf()),
                Some(t) => (self.wait)(handle, buf, capacity, t, slot.error_buf()),
            }
        };
        let n = result as usize;
        if result < 0 || n > capacity {
            // SAFETY: `buf` is `out`'s memory, `capacity` completions, not otherwise used until
            // this returns.
            return Err(unsafe { self.failed_poll(slot, result, buf, capacity) });
        }
        // SAFETY: `buf` is `out`'s memory, `n <= out.len()` completions, not otherwise used
        // until this returns.
        unsafe { convert::check_completions(buf, n) };
        Ok(n)
    }

    /// The error of a poll that failed (`result < 0`) or overfilled the buffer. A plugin that
    /// broke the ABI may have written anything into it, so the whole buffer is made valid first
    /// (a plugin that succeeds is trusted to have written only the completions it counts).
    ///
    /// # Safety
    /// `buf` must be valid for reads and writes of `capacity` completions.
    #[cold]
    #[inline(never)]
    unsafe fn failed_poll(
        &self,
        slot: DataPathSlot,
        result: abi::PollResult,
        buf: *mut abi::Completion,
        capacity: usize,
    ) -> Error {
        // SAFETY: forwarded to the caller.
        unsafe { convert::check_completions(buf, capacity) };
        if result >= 0 {
            return self.handle.shared.check("cq_poll").fault(
                "count",
                format!("{result} completions, for room for {capacity}"),
            );
        }
        // A status beyond `Status` is unknown all the same.
        let status = Status::try_from(result.unsigned_abs()).unwrap_or(Status::MAX);
        slot.error(status)
    }
}

impl CompletionQueue for LoadedCq {
    fn cq_num(&self) -> u32 {
        self.info.cq_num
    }

    fn capacity(&self) -> u32 {
        self.info.capacity
    }

    #[inline]
    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        self.poll_with(out, None)
    }

    #[inline]
    fn wait(&self, out: &mut [Completion], deadline: Instant) -> Result<usize> {
        self.poll_with(out, Some(convert::timeout_ns(deadline)))
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), cq_destroy(self.handle.ptr()))
    }
}

/// A queue pair of a loaded provider.
pub struct LoadedQp {
    handle: Handle<abi::RawQp>,
    /// The plugin's `qp_post_send` and `qp_post_recv`, kept as [`LoadedCq`] keeps its polls.
    post_send: PostFn<abi::SendWr>,
    post_recv: PostFn<abi::RecvWr>,
    qp_num: u32,
    /// The sizes asked for, which bound what a drain may account for.
    init: QpInit,
}

impl LoadedQp {
    /// A QP whose number was checked, made with `init`.
    pub(super) fn new(handle: Handle<abi::RawQp>, qp_num: u32, init: QpInit) -> Self {
        let f = handle.f();
        LoadedQp {
            post_send: f.qp_post_send,
            post_recv: f.qp_post_recv,
            handle,
            qp_num,
            init,
        }
    }

    pub(super) fn handle(&self) -> &Handle<abi::RawQp> {
        &self.handle
    }

    /// Posts a batch through `entry` (`qp_post_send` or `qp_post_recv`), the WRs as they are.
    #[inline]
    fn post<A>(&self, wrs: *const A, len: usize, entry: PostFn<A>) -> Result<(), PostError> {
        let slot = DataPathSlot::for_post();
        // SAFETY: `entry` is this plugin's post function for WRs of this ABI form; a live QP
        // handle; `wrs` is the caller's batch of `len` WRs, whose layout is the ABI's (asserted
        // in `abi`), and it and the scatter lists it points to live across the call; the
        // failure record is this thread's.
        let status = unsafe { entry(self.handle.ptr(), wrs, len, slot.failure()) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(slot.post_error(status, len))
        }
    }
}

impl QueuePair for LoadedQp {
    fn qp_num(&self) -> u32 {
        self.qp_num
    }

    fn state(&self) -> Result<QpState> {
        let mut code = 0;
        call!(self.handle.f(), qp_state(self.handle.ptr(), &mut code))?;
        convert::qp_state_from(code, ErrorKind::Other)
            .map_err(|e| self.handle.shared.check("qp_state").refused("state", e))
    }

    fn modify(&self, to: QpState) -> Result<()> {
        call!(
            self.handle.f(),
            qp_modify(self.handle.ptr(), convert::qp_state_code(to))
        )
    }

    #[inline]
    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.post(convert::send_wrs_abi(wrs), wrs.len(), self.post_send)
    }

    #[inline]
    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.post(convert::recv_wrs_abi(wrs), wrs.len(), self.post_recv)
    }

    fn connect(&self, remote: std::net::SocketAddr, params: &ConnParams) -> Result<()> {
        let remote = convert::sock_addr(remote);
        let params = convert::conn_params(params);
        call!(
            self.handle.f(),
            qp_connect(self.handle.ptr(), &remote, &params)
        )
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        // Zeroed, not uninitialised: a plugin that reports success without writing it must
        // give a wrong value at worst, never undefined behaviour.
        let mut out = std::mem::MaybeUninit::<abi::Connection>::zeroed();
        call!(
            self.handle.f(),
            qp_wait_connected(
                self.handle.ptr(),
                convert::timeout_ns(deadline),
                out.as_mut_ptr()
            )
        )?;
        // SAFETY: all-zero bytes are a valid `abi::Connection` (integers and byte arrays only),
        // and the plugin may only have written a connection over them.
        convert::connection_from(unsafe { out.assume_init_ref() }, ErrorKind::Other).map_err(|e| {
            self.handle
                .shared
                .check("qp_wait_connected")
                .refused("connection", e)
        })
    }

    fn drain(&self, deadline: Instant) -> Result<DrainReport> {
        let mut out = abi::DrainReport::default();
        call!(
            self.handle.f(),
            qp_drain(self.handle.ptr(), convert::timeout_ns(deadline), &mut out)
        )?;
        let check = self.handle.shared.check("qp_drain");
        let report =
            convert::drain_report_from(&out).map_err(|e| check.refused("drain report", e))?;
        check.drain_report(report, &self.init)
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), qp_destroy(self.handle.ptr()))
    }
}

impl std::fmt::Debug for LoadedCq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCq")
            .field("cq_num", &self.info.cq_num)
            .field("capacity", &self.info.capacity)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoadedQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedQp")
            .field("qp_num", &self.qp_num)
            .field("init", &self.init)
            .finish_non_exhaustive()
    }
}
