//! [`Collect`]: the sink the loader hands a plugin for a variable-length result. Each item is
//! converted and checked while it is still borrowed (what it points to is valid only during the
//! callback); a plugin that calls the sink with a null or misaligned item, or more often than
//! the result may have entries, gets that recorded rather than trusted.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::abi;
use crate::error::{Error, ErrorKind, Result};

/// Collects up to `limit` items converted by `convert`, and counts the calls beyond.
pub(super) struct Collect<T, U, F: FnMut(&T) -> Result<U>> {
    convert: F,
    limit: usize,
    /// The converted items, in the order the plugin gave them.
    pub(super) items: Vec<Result<U>>,
    /// Calls with a null item.
    pub(super) null_items: usize,
    /// Calls with an item at an address not aligned for its type (not read).
    pub(super) misaligned_items: usize,
    /// Calls beyond `limit`.
    pub(super) beyond_limit: usize,
    _item: std::marker::PhantomData<fn(&T)>,
}

/// The sink's callback: `ctx` is the `Collect` of the call.
unsafe extern "C" fn put<T, U, F: FnMut(&T) -> Result<U>>(ctx: *mut c_void, item: *const T) {
    // SAFETY: `ctx` is the `Collect` the loader passed with this callback, alive and not
    // otherwise used during the call (the ABI: a sink is called only during the call it was
    // passed to).
    let state = unsafe { &mut *ctx.cast::<Collect<T, U, F>>() };
    if item.is_null() {
        state.null_items += 1;
        return;
    }
    if !item.is_aligned() {
        state.misaligned_items += 1;
        return;
    }
    if state.items.len() >= state.limit {
        state.beyond_limit += 1;
        return;
    }
    // SAFETY: a non-null, aligned item is valid for the callback, as the ABI requires.
    let item = unsafe { &*item };
    // Unwinding out of an `extern "C"` function aborts: a conversion that panics (it should
    // not) is dropped instead.
    let converted = catch_unwind(AssertUnwindSafe(|| (state.convert)(item))).unwrap_or_else(|_| {
        Err(Error::new(
            ErrorKind::Other,
            "converting an item of the plugin's result panicked (a bug in anyverbs)",
        ))
    });
    state.items.push(converted);
}

impl<T, U, F: FnMut(&T) -> Result<U>> Collect<T, U, F> {
    /// A sink for at most `limit` items.
    pub(super) fn new(limit: usize, convert: F) -> Self {
        Collect {
            convert,
            limit,
            items: Vec::new(),
            null_items: 0,
            misaligned_items: 0,
            beyond_limit: 0,
            _item: std::marker::PhantomData,
        }
    }

    /// The sink to pass to the plugin; valid while `self` is neither moved nor dropped.
    pub(super) fn sink(&mut self) -> abi::Sink<T> {
        abi::Sink {
            ctx: (self as *mut Self).cast(),
            put: put::<T, U, F>,
        }
    }
}
