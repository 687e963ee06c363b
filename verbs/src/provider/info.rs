//! What a device reports about itself — its [`DeviceInfo`], ports and capabilities — and the
//! device monitor's changes as the core's [`MonitorEvent`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::drain::{DrainPlan, DrainProfile};
use anyverbs::{Caps, DeviceInfo, Error, EventHub, EventStream, MonitorEvent, Result};

use super::Flavor;
use crate::context::{Context, DeviceAttributes};
use crate::device::DeviceEntry;
use crate::monitor::{DeviceChange, Monitor};
use crate::objects::{Cq, Qp, QpCaps};

/// The capabilities of a device of `flavor` with these attributes, drain profile and inline
/// capacity.
pub(crate) fn caps(
    flavor: &Flavor,
    entry: &DeviceEntry,
    attrs: &DeviceAttributes,
    profile: &DrainProfile,
    max_inline: u32,
) -> Caps {
    let mut caps = flavor.caps | Caps::RDMA_READ | Caps::RDMA_WRITE | Caps::ZERO_LENGTH;
    if max_inline > 0 {
        caps |= Caps::INLINE_DATA;
    }
    if attrs.atomics && flavor.caps.contains(Caps::ATOMICS) {
        caps |= Caps::ATOMICS;
    } else {
        caps.remove(Caps::ATOMICS);
    }
    // Posts in ERROR are flushed by the device itself only where the drain needs no more than
    // a marker posted in ERROR.
    if matches!(
        profile.plan,
        DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: false
        }
    ) {
        caps |= Caps::POST_IN_ERROR_FLUSHED;
    }
    // Drivers of PCI functions disassociate on a fatal error (mlx5, ...); software devices
    // (rxe, siw) cannot: their reset is a removal and a return.
    if entry.identity.pci_address.is_some() {
        caps |= Caps::DEVICE_FATAL;
    }
    caps
}

/// The most inline data an RC QP of the device is granted: verbs says it only per QP, so a
/// scratch QP is made once per device (by name and node GUID) and the answer kept.
pub(crate) fn max_inline(context: &Context) -> u32 {
    static KNOWN: OnceLock<Mutex<HashMap<(String, u64), u32>>> = OnceLock::new();
    let identity = &context.entry().identity;
    let key = (identity.name.clone(), identity.node_guid.0);
    let known = KNOWN.get_or_init(Mutex::default);
    if let Some(&n) = known.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return n;
    }
    let probe = || -> std::result::Result<u32, Error> {
        let pd = context.alloc_pd()?;
        let cq = Arc::new(Cq::create(context.sideway(), 2, None)?);
        for ask in [1024, 512, 256, 128, 64, 32] {
            let caps = QpCaps {
                max_send_wr: 1,
                max_recv_wr: 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: ask,
            };
            if let Ok(qp) = Qp::create_rc(&pd, &cq, &cq, caps) {
                return Ok(qp.caps().max_inline_data.max(ask));
            }
        }
        Ok(0)
    };
    let n = probe().unwrap_or(0);
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, n);
    n
}

/// The [`DeviceInfo`] of `entry`'s device, opened briefly.
pub(crate) fn describe(
    flavor: &'static Flavor,
    entry: &DeviceEntry,
    faults: &super::inject::Faults,
) -> Result<DeviceInfo> {
    let context = Context::open(&entry.identity.name)?;
    info_of(flavor, &context, faults)
}

/// The [`DeviceInfo`] of an open device.
pub(crate) fn info_of(
    flavor: &'static Flavor,
    context: &Context,
    faults: &super::inject::Faults,
) -> Result<DeviceInfo> {
    let entry = context.entry();
    let attrs = context.attributes()?;
    let port = context.port(1)?;
    let inline = max_inline(context);
    let profile = entry.drain_profile();
    Ok(DeviceInfo {
        identity: entry.identity.clone(),
        transport: flavor.transport,
        state_model: flavor.state_model,
        caps: caps(flavor, entry, &attrs, profile, inline),
        faults: faults.available_for(entry),
        limits: attrs.limits(&port, inline),
    })
}

/// The [`DeviceInfo`] of a device that just appeared. Opening it can fail for a moment after
/// the kernel added it (its verbs device file is created after it is listed): it is tried
/// again for a while, and `None` means it went away again (its removal follows) or never
/// opened.
fn describe_new(
    flavor: &'static Flavor,
    entry: &DeviceEntry,
    faults: &super::inject::Faults,
    stop: &AtomicBool,
) -> Option<DeviceInfo> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match describe(flavor, entry, faults) {
            Ok(info) if info.identity.is_same_device(&entry.identity) => return Some(info),
            Ok(_) => return None,
            Err(e) if Instant::now() >= deadline || stop.load(Ordering::Relaxed) => {
                tracing::warn!(%e, device = %entry.identity.name, "a device that appeared cannot be opened");
                return None;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The device monitor's changes, as the core's events, for every subscriber of a provider:
/// devices of other transports are left out; an added device is described as
/// [`Provider::devices`](anyverbs::Provider::devices) describes it.
pub(crate) struct MonitorForwarder {
    hub: Arc<EventHub<MonitorEvent>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MonitorForwarder {
    pub(crate) fn start(
        flavor: &'static Flavor,
        faults: super::inject::Faults,
    ) -> Result<MonitorForwarder> {
        let monitor = Monitor::start()?;
        let changes = monitor.subscribe()?;
        let hub = Arc::new(EventHub::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (hub2, stop2) = (hub.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("anyverbs-monitor-events".into())
            .spawn(move || {
                let _monitor = monitor;
                while !stop2.load(Ordering::Relaxed) {
                    let change = match changes.recv(Instant::now() + Duration::from_millis(100)) {
                        Ok(change) => change,
                        Err(e) if e.kind() == anyverbs::ErrorKind::TimedOut => continue,
                        Err(e) => {
                            hub2.close(e.kind(), e.message().to_owned());
                            return;
                        }
                    };
                    let event = match change {
                        DeviceChange::Added(entry) if entry.transport == flavor.takes => {
                            match describe_new(flavor, &entry, &faults, &stop2) {
                                Some(info) => MonitorEvent::Added(info),
                                // Gone again already: its removal follows.
                                None => continue,
                            }
                        }
                        DeviceChange::Removed(entry) if entry.transport == flavor.takes => {
                            MonitorEvent::Removed(entry.identity)
                        }
                        _ => continue,
                    };
                    hub2.publish(event);
                }
            })
            .map_err(|e| crate::error::io_failed("spawning the monitor's forwarder", e))?;
        Ok(MonitorForwarder {
            hub,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn subscribe(&self) -> Result<EventStream<MonitorEvent>> {
        self.hub.subscribe()
    }
}

impl Drop for MonitorForwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
