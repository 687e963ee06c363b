//! [`LoadedCq`]: a completion queue of a loaded provider, behind [`CompletionQueue`]; one
//! indirect call per poll, inlined into the caller's generic code.

use std::time::Instant;

use super::slots::DataPathSlot;
use super::{Handle, call};
use crate::cq::{ChannelMembership, CompletionQueue};
use crate::error::{Error, Result};
use crate::plugin::abi::{self, ErrorBuf, Status};
use crate::plugin::convert;
use crate::wr::Completion;

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

/// A completion queue of a loaded provider.
pub struct LoadedCq {
    handle: Handle<abi::RawCq>,
    /// The plugin's `cq_poll` and `cq_wait`, also reachable through the handle: kept here too,
    /// so that a poll loads its function in one step.
    poll: PollFn,
    wait: WaitFn,
    info: abi::CqInfo,
    /// Its place on the channel it was created on, if any: left once it is destroyed (or
    /// dropped).
    channel: Option<ChannelMembership>,
}

impl LoadedCq {
    /// A CQ whose `info` was checked.
    pub(super) fn new(
        handle: Handle<abi::RawCq>,
        info: abi::CqInfo,
        channel: Option<ChannelMembership>,
    ) -> Self {
        let f = handle.f();
        LoadedCq {
            poll: f.cq_poll,
            wait: f.cq_wait,
            handle,
            info,
            channel,
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

    fn arm(&self, solicited_only: bool) -> Result<()> {
        call!(
            self.handle.f(),
            cq_arm(self.handle.ptr(), u32::from(solicited_only))
        )
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), cq_destroy(self.handle.ptr()))?;
        if let Some(membership) = &self.channel {
            membership.leave();
        }
        Ok(())
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
