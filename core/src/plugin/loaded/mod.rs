//! [`LoadedProvider`]: a plugin's provider behind the core traits, one indirect call per
//! operation.
//!
//! The loader trusts nothing a plugin returns: every handle is checked (not null, not already
//! held), every value against the ABI's limits and against what was asked ([`checks`]), and
//! every error message is bounded by what the plugin wrote and made printable ([`slots`]). A
//! refused value is an error of kind [`ErrorKind::Other`](crate::error::ErrorKind::Other) whose
//! source is a [`PluginFault`] naming the plugin, the call and the field.
//!
//! One module per handle trait, with the same names as the plugin side's in `plugin/export/`:
//! `provider`, `device`, `pd`, `mr`, `cq`, `channel`, `qp`, `listener`, and `events` (relaying a
//! plugin's event streams).

mod channel;
mod checks;
mod cq;
mod device;
mod events;
mod listener;
mod mr;
mod pd;
mod provider;
mod qp;
mod sink;
mod slots;

pub use channel::LoadedChannel;
pub use checks::{DeviceListing, PluginFault};
pub use cq::LoadedCq;
pub use device::LoadedDevice;
pub use listener::LoadedListener;
pub use mr::LoadedMr;
pub use pd::LoadedPd;
pub use provider::LoadedProvider;
pub use qp::LoadedQp;

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use super::abi::{self, Functions};
use super::loader::Plugin;
use crate::error::{Error, Result};
use crate::provider::Transport;
use checks::Check;

/// Calls a plugin function with a zeroed error slot and turns its status into a `Result`.
macro_rules! call {
    ($f:expr, $name:ident($($arg:expr),*)) => {{
        let mut err = $crate::plugin::loaded::slots::ErrorSlot::new();
        // SAFETY: every argument is a handle of this plugin that is alive, or a pointer to a
        // live local or borrowed value, as the ABI documents for this function.
        let status = unsafe { ($f.$name)($($arg,)* err.ptr()) };
        err.result(status)
    }};
}
pub(crate) use call;

/// A plugin's handle. The plugin's objects are `Send + Sync` (the core traits require it), so
/// the pointer to one may be used from any thread.
struct Raw<T>(NonNull<T>);

// SAFETY: see the type's documentation: the object behind the pointer is `Send + Sync`.
unsafe impl<T> Send for Raw<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Raw<T> {}

impl<T> Raw<T> {
    #[inline]
    fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

/// What every handle of one provider instance shares.
struct Shared {
    plugin: Plugin,
    f: &'static Functions,
    raw: Raw<abi::RawProvider>,
    name: String,
    transport: Transport,
    /// Addresses of the plugin handles held now, to refuse a handle the plugin hands out twice.
    live: Mutex<HashSet<usize>>,
    /// Alive while the program holds the provider or any handle of it (each holds a strong
    /// reference); event relays hold only this weak one, and end their streams when it dies,
    /// as a linked provider's streams end when the provider and its handles are gone.
    users: Weak<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: the provider handle is released once, after every handle that refers to
        // this `Shared` is gone.
        unsafe { (self.f.provider_free)(self.raw.ptr()) };
    }
}

impl Shared {
    /// The checks of what `call` returned, naming this plugin in their errors.
    fn check(&self, call: &'static str) -> Check<'_> {
        Check::new(self.plugin.path(), call)
    }

    /// Takes ownership of a handle the plugin just returned from `call`: refuses null and a
    /// handle that is already held (a provider bug that would otherwise free one object twice).
    fn adopt<T>(
        self: &Arc<Self>,
        call: &'static str,
        raw: *mut T,
        free: unsafe extern "C" fn(*mut T),
    ) -> Result<Handle<T>> {
        let Some(ptr) = NonNull::new(raw) else {
            return Err(self
                .check(call)
                .fault("handle", "null, though the call reported success"));
        };
        if !self.live_set().insert(ptr.as_ptr() as usize) {
            return Err(self.check(call).fault(
                "handle",
                format!(
                    "{ptr:p}, which already stands for a live object (a handle handed out twice); \
                     it was not used"
                ),
            ));
        }
        Ok(Handle {
            shared: Arc::clone(self),
            raw: Raw(ptr),
            free,
            user: self.users.upgrade(),
        })
    }

    fn live_set(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle owned by the loader, released through the plugin's `free` when dropped.
struct Handle<T> {
    shared: Arc<Shared>,
    raw: Raw<T>,
    free: unsafe extern "C" fn(*mut T),
    /// Keeps the program's hold on the provider (see [`Shared::users`]); `None` for the
    /// handles of event relays.
    user: Option<Arc<()>>,
}

impl<T> Handle<T> {
    #[inline]
    fn ptr(&self) -> *mut T {
        self.raw.ptr()
    }

    fn f(&self) -> &'static Functions {
        self.shared.f
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        self.shared.live_set().remove(&(self.ptr() as usize));
        // SAFETY: the handle is released once, here, after its last use.
        unsafe { (self.free)(self.ptr()) };
    }
}

/// Checks that a handle passed in belongs to the same provider instance.
fn same_provider<T>(mine: &Arc<Shared>, theirs: &Handle<T>, what: &str) -> Result<()> {
    if Arc::ptr_eq(mine, &theirs.shared) {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "the {what} belongs to another provider instance ({})",
            theirs.shared.name
        )))
    }
}
