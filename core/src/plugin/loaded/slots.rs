//! Where a plugin writes why a call failed, and the error that becomes.
//!
//! Nothing the loader hands back may hold a byte the plugin did not write: a plugin that sets
//! an error's length without writing its bytes must not show the program's own memory in a
//! message (and from there in logs and reports). So every buffer a plugin may write a message
//! into is initialised memory:
//!
//! - on the control path, a zeroed [`ErrorSlot`] on the stack (clearing 484 bytes costs nothing
//!   next to a control call);
//! - on the data path, where clearing 484 bytes on every post and poll would cost more than the
//!   call, one zeroed record per thread ([`DataPathSlot`]), cleared again after each failure is
//!   read. A plugin that writes message bytes on a call that succeeds leaves them there, so a
//!   later failing call of a plugin on that thread that sets a length without bytes shows them:
//!   bytes some plugin wrote, never the program's.
//!
//! The message itself is bounded by [`abi::ERROR_MESSAGE_MAX`], cut at its first NUL, and made
//! printable ([`printable`](crate::plugin::status::printable)): invalid UTF-8 is replaced, control characters other than newline
//! and tab are escaped, so a message cannot rewrite a terminal or break an XML report.

use std::cell::UnsafeCell;

use crate::error::{Error, PostError, Result};
use crate::plugin::abi::{self, ErrorBuf, STATUS_OK, Status};
use crate::plugin::status::status_error;

/// The error buffer of a control-path call: zeroed, on the caller's stack.
pub(crate) struct ErrorSlot(ErrorBuf);

impl ErrorSlot {
    /// An empty, zeroed buffer.
    pub(crate) fn new() -> Self {
        ErrorSlot(ErrorBuf::ZERO)
    }

    /// The buffer to pass to the plugin.
    pub(crate) fn ptr(&mut self) -> *mut ErrorBuf {
        &mut self.0
    }

    /// The result of a call that returned `status`.
    pub(crate) fn result(&self, status: Status) -> Result<()> {
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(status_error(status, self.0.bytes()))
        }
    }
}

thread_local! {
    /// The data path's error record of this thread: all zero but while a failing call writes
    /// it (see the module documentation).
    static DATA_PATH: UnsafeCell<abi::PostFailure> =
        const { UnsafeCell::new(abi::PostFailure::ZERO) };
}

/// The error record of a data-path call (a post, a poll): this thread's, with nothing accepted
/// and no message.
///
/// The record is only ever touched through raw pointers, by this thread and by the plugin
/// function this thread is calling, one call at a time: the data path's functions take no
/// callbacks, so no call of it can start while another is running on the same thread.
pub(crate) struct DataPathSlot(*mut abi::PostFailure);

impl DataPathSlot {
    /// This thread's record, reset for a post: nothing accepted, no message.
    #[inline]
    pub(crate) fn for_post() -> Self {
        let slot = Self::for_poll();
        // SAFETY: as in `for_poll`.
        unsafe { (&raw mut (*slot.0).accepted).write(0) };
        slot
    }

    /// This thread's record, reset for a poll, which uses only its message.
    #[inline]
    pub(crate) fn for_poll() -> Self {
        let p = DATA_PATH.with(UnsafeCell::get);
        // SAFETY: `p` is this thread's record, initialised memory that lives as long as the
        // thread, and no other reference to it exists (see the type's documentation).
        unsafe { (&raw mut (*p).error.len).write(0) };
        DataPathSlot(p)
    }

    /// The record, for a post.
    #[inline]
    pub(crate) fn failure(&self) -> *mut abi::PostFailure {
        self.0
    }

    /// Its error buffer, for a poll.
    #[inline]
    pub(crate) fn error_buf(&self) -> *mut ErrorBuf {
        // SAFETY: a field of the record, which is valid (see `take`).
        unsafe { &raw mut (*self.0).error }
    }

    /// The error of a call that failed with `status`; the record is cleared for the next one.
    #[cold]
    #[inline(never)]
    pub(crate) fn error(self, status: Status) -> Error {
        self.read(status).1
    }

    /// The error of a post of `len` WRs that failed with `status`, with the plugin's count of
    /// WRs posted checked against the batch; the record is cleared for the next call.
    #[cold]
    #[inline(never)]
    pub(crate) fn post_error(self, status: Status, len: usize) -> PostError {
        let (accepted, e) = self.read(status);
        PostError::new(accepted.min(len), e)
    }

    /// The count and the error the plugin left, then every byte cleared.
    fn read(self, status: Status) -> (usize, Error) {
        // SAFETY: the record is initialised memory of this thread, and the plugin's call has
        // returned, so nothing else touches it while this reference lives.
        let record = unsafe { &mut *self.0 };
        let found = (record.accepted, status_error(status, record.error.bytes()));
        *record = abi::PostFailure::ZERO;
        found
    }
}
