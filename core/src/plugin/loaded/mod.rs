//! [`LoadedProvider`]: a plugin's provider behind the core traits, one indirect call per
//! operation.
//!
//! The loader trusts nothing a plugin returns: every handle is checked (not null, not already
//! held), every value against the ABI's limits and against what was asked ([`checks`]), and
//! every error message is bounded by what the plugin wrote and made printable ([`slots`]). A
//! refused value is an error of kind [`ErrorKind::Other`] whose source is a [`PluginFault`]
//! naming the plugin, the call and the field.

mod checks;
mod device;
mod queue;
mod relay;
mod sink;
mod slots;

pub use checks::{DeviceListing, PluginFault};
pub use device::{LoadedDevice, LoadedListener, LoadedMr, LoadedPd};
pub use queue::{LoadedCq, LoadedQp};
pub(crate) use slots::{printable, status_error};

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use super::abi::{self, Functions};
use super::convert;
use super::loader::Plugin;
use crate::device::DeviceInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{EventStream, MonitorEvent};
use crate::fault::Fault;
use crate::held::HeldObjects;
use crate::provider::{Provider, Transport};
use checks::Check;
use relay::Pumped;
use sink::Collect;

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

/// A provider loaded from a [`Plugin`]: implements [`Provider`] like a linked one.
///
/// Each handle keeps the provider instance alive; a handle of one instance passed to another
/// (both are `LoadedProvider`s, so the types allow it) is refused with
/// [`ErrorKind::InvalidArgument`].
#[derive(Clone)]
pub struct LoadedProvider {
    shared: Arc<Shared>,
    /// The program's hold on the provider (see [`Shared::users`]); held, never read.
    _user: Arc<()>,
}

impl std::fmt::Debug for LoadedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProvider")
            .field("name", &self.shared.name)
            .field("plugin", &self.shared.plugin)
            .finish()
    }
}

impl LoadedProvider {
    /// Wraps a fresh provider handle, checking the name and transport it reports; on an error
    /// the handle is released.
    ///
    /// # Safety
    /// `raw` must be a non-null provider handle just made by `plugin`'s `provider_new`.
    pub(crate) unsafe fn new(plugin: Plugin, raw: *mut abi::RawProvider) -> Result<LoadedProvider> {
        let f = plugin.functions();
        // Released by `Shared`'s drop from here on, whatever happens below.
        let user = Arc::new(());
        let mut shared = Shared {
            plugin,
            f,
            // SAFETY: the caller guarantees `raw` is non-null.
            raw: Raw(unsafe { NonNull::new_unchecked(raw) }),
            name: String::new(),
            transport: Transport::Mock,
            live: Mutex::new(HashSet::new()),
            users: Arc::downgrade(&user),
        };
        let check = Check::new(plugin.path(), "provider_name");
        let mut names = Collect::new(1, |name: &abi::Bytes| {
            // SAFETY: called from the sink, while the bytes are valid.
            unsafe {
                convert::name(
                    *name,
                    "provider name",
                    abi::PROVIDER_NAME_MAX,
                    ErrorKind::Other,
                )
            }
            .map_err(|e| check.refused("provider name", e))
        });
        // SAFETY: `raw` is a live provider handle; the sink outlives the call.
        unsafe { (f.provider_name)(raw, names.sink()) };
        shared.name = check.one(names, "provider name")?;
        // SAFETY: as above.
        let code = unsafe { (f.provider_transport)(raw) };
        shared.transport = convert::transport_from(code, ErrorKind::Other)
            .map_err(|e| Check::new(plugin.path(), "provider_transport").refused("transport", e))?;
        Ok(LoadedProvider {
            _user: Arc::clone(&user),
            shared: Arc::new(shared),
        })
    }

    /// The plugin this provider came from.
    pub fn plugin(&self) -> Plugin {
        self.shared.plugin
    }

    /// The devices present now, as [`Provider::devices`] lists them, together with every entry
    /// of the plugin's listing that was refused (a bad name, an unknown code, a name listed
    /// twice, more than [`abi::DEVICES_MAX`] entries), each as an error naming the entry.
    /// [`Provider::devices`] returns the good entries alone, and logs the refused ones.
    pub fn device_listing(&self) -> Result<DeviceListing> {
        let check = self.shared.check("provider_devices");
        let mut items = Collect::new(abi::DEVICES_MAX, |info: &abi::DeviceInfo| {
            // SAFETY: called from the sink, while the strings the info borrows are valid.
            unsafe { convert::device_info_from(info, ErrorKind::Other) }
                .map_err(|e| check.refused("device", e))
        });
        call!(
            self.f(),
            provider_devices(self.shared.raw.ptr(), items.sink())
        )?;
        Ok(check.listing(items))
    }

    fn f(&self) -> &'static Functions {
        self.shared.f
    }
}

impl Provider for LoadedProvider {
    type Device = LoadedDevice;
    type Pd = LoadedPd;
    type Mr = LoadedMr;
    type Cq = LoadedCq;
    type Qp = LoadedQp;
    type Listener = LoadedListener;

    fn name(&self) -> &str {
        &self.shared.name
    }

    fn transport(&self) -> Transport {
        self.shared.transport
    }

    /// The good entries of the plugin's listing; each refused one is logged (see
    /// [`LoadedProvider::device_listing`]). Fails only if the call fails, or if every entry was
    /// refused.
    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.device_listing()?.into_devices()
    }

    fn open(&self, name: &str) -> Result<LoadedDevice> {
        let mut raw = std::ptr::null_mut();
        let check = self.shared.check("provider_open");
        let mut info = Collect::new(1, |info: &abi::DeviceInfo| {
            // SAFETY: called from the sink, while the strings the info borrows are valid.
            unsafe { convert::device_info_from(info, ErrorKind::Other) }
                .map_err(|e| check.refused("device", e))
        });
        call!(
            self.f(),
            provider_open(
                self.shared.raw.ptr(),
                convert::bytes(name.as_bytes()),
                &mut raw,
                info.sink()
            )
        )?;
        let handle = self
            .shared
            .adopt("provider_open", raw, self.f().device_free)?;
        let info = check.one(info, "device")?;
        if info.identity.name != name {
            return Err(check.fault(
                "device name",
                format!("{:?}, though {name:?} was opened", info.identity.name),
            ));
        }
        Ok(LoadedDevice::new(handle, info))
    }

    fn monitor(&self) -> Result<EventStream<MonitorEvent>> {
        let mut raw = std::ptr::null_mut();
        call!(self.f(), provider_monitor(self.shared.raw.ptr(), &mut raw))?;
        let handle = self
            .shared
            .adopt("provider_monitor", raw, self.f().monitor_events_free)?;
        relay::pump(
            handle,
            |_| false,
            |h, timeout_ns| {
                let check = h.shared.check("monitor_events_recv");
                let mut items = Collect::new(1, |event: &abi::MonitorEvent| {
                    if event.kind == 0 {
                        return Ok(Pumped::Missed(event.missed));
                    }
                    // SAFETY: called from the sink, while the strings the event borrows are
                    // valid.
                    Ok(match unsafe { convert::monitor_event_from(event) } {
                        Ok(e) => Pumped::Event(e),
                        Err(e) => Pumped::Refused(check.refused("event", e)),
                    })
                });
                call!(
                    h.f(),
                    monitor_events_recv(h.ptr(), timeout_ns, items.sink())
                )?;
                check.one(items, "event")
            },
        )
    }

    fn inject(&self, name: &str, fault: &Fault) -> Result<()> {
        let raw = convert::fault(fault);
        call!(
            self.f(),
            provider_inject(self.shared.raw.ptr(), convert::bytes(name.as_bytes()), &raw)
        )
    }

    fn held_objects(&self, name: &str) -> Result<HeldObjects> {
        let held_objects = self.f().provider_held_objects;
        let mut out = abi::HeldObjects::default();
        let mut err = slots::ErrorSlot::new();
        // SAFETY: the plugin's function, a live provider handle, a name borrowed for the call,
        // and pointers to live locals.
        let status = unsafe {
            held_objects(
                self.shared.raw.ptr(),
                convert::bytes(name.as_bytes()),
                &mut out,
                err.ptr(),
            )
        };
        err.result(status)?;
        Ok(convert::held_objects_from(&out))
    }
}
