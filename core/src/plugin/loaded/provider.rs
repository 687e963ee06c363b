//! [`LoadedProvider`]: a plugin's provider behind [`Provider`].

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::checks::{Check, DeviceListing};
use super::events::{self, Pumped};
use super::sink::Collect;
use super::{
    LoadedChannel, LoadedCq, LoadedDevice, LoadedListener, LoadedMr, LoadedPd, LoadedQp, Raw,
    Shared, call, slots,
};
use crate::device::DeviceInfo;
use crate::error::{ErrorKind, Result};
use crate::event::{EventStream, MonitorEvent};
use crate::fault::Fault;
use crate::held::HeldObjects;
use crate::plugin::abi::{self, ErrorBuf, Functions};
use crate::plugin::convert;
use crate::plugin::loader::{LoadError, Plugin};
use crate::plugin::status::status_error;
use crate::provider::{Provider, Transport};

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

/// Released where it is dropped, as a linked provider is: when this was the program's last hold
/// on the provider (no device or other handle of it left), the event relays — which watch that
/// hold and let go of the provider within one poll — are waited for, briefly, so that the
/// provider's own teardown (a real provider puts back the devices its faults took away) runs
/// before this drop returns, not on a relay thread a moment later, when the program may be
/// exiting.
impl Drop for LoadedProvider {
    fn drop(&mut self) {
        self._user = Arc::new(());
        if self.shared.users.strong_count() > 0 {
            return;
        }
        let deadline = std::time::Instant::now() + 20 * super::events::PUMP_POLL;
        while Arc::strong_count(&self.shared) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
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
    type Channel = LoadedChannel;
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
        events::pump(
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

// Here rather than in `loader`, so that the loader does not depend on this module.
impl Plugin {
    /// Makes a provider instance. Each call makes a new one.
    pub fn instantiate(&self) -> Result<LoadedProvider, LoadError> {
        let f = self.functions();
        let mut raw = std::ptr::null_mut();
        let mut err = ErrorBuf::ZERO;
        // A provider whose exported functions run in this program (a table linked in) must not
        // install the plugin's quiet panic hook over the program's own.
        crate::plugin::export::LOADER_IN_THIS_COPY
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `provider_new` is the plugin's, checked non-null at load; both pointers are to
        // live locals.
        let status = unsafe { (f.provider_new)(&mut raw, &mut err) };
        if status != abi::STATUS_OK {
            return Err(LoadError::InitFailed {
                path: self.path().to_path_buf(),
                error: status_error(status, err.bytes()),
            });
        }
        if raw.is_null() {
            return Err(LoadError::NullHandle {
                path: self.path().to_path_buf(),
            });
        }
        // SAFETY: `raw` is a fresh provider handle of this plugin.
        unsafe { LoadedProvider::new(*self, raw) }.map_err(|error| LoadError::Misbehaved {
            path: self.path().to_path_buf(),
            error,
        })
    }
}
