//! The device monitor: devices added and removed, each carrying its identity.
//!
//! How it learns: the kernel's uevents for the `infiniband` class (a netlink socket, no udev
//! needed) wake it at once; on every wakeup, and every [`RESCAN_INTERVAL`] besides, it lists the
//! devices through the kernel's RDMA netlink interface — which opens no device — and compares
//! the list with the last one by index, name and node GUID. The rescan matters for removal: the
//! kernel takes a device off its list as soon as its removal starts, but sends the `remove`
//! uevent only at the end, after every process let go of it. Lost uevents (a full socket) only
//! delay a change to the next rescan.
//!
//! An added device is opened once, briefly, to read its identity; a removed one is reported
//! with the identity it had when it was last seen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::{Error, EventHub, EventStream};

use crate::device::DeviceEntry;
use crate::netlink::RdmaDevice;

/// How often the monitor lists the devices when no uevent woke it.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// A change the monitor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChange {
    /// A device appeared (or came back: compare identities with
    /// [`DeviceIdentity::is_same_device`](anyverbs::DeviceIdentity::is_same_device)).
    Added(DeviceEntry),
    /// A device went away; the entry is as it was last seen.
    Removed(DeviceEntry),
}

/// The running monitor. Stops when dropped.
pub struct Monitor {
    hub: Arc<EventHub<DeviceChange>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn same(a: &RdmaDevice, b: &RdmaDevice) -> bool {
    a.index == b.index && a.name == b.name && a.node_guid == b.node_guid
}

impl Monitor {
    /// Starts watching. The devices present now are not reported; subscribe, then call
    /// [`crate::device::devices`] for them.
    pub fn start() -> Result<Monitor, Error> {
        let socket = crate::uevent::UeventSocket::open()
            .map_err(|e| crate::error::io_failed("opening the uevent socket", e))?;
        let links = crate::netlink::list_devices(Duration::from_secs(2)).unwrap_or_default();
        let mut known: Vec<(RdmaDevice, Option<DeviceEntry>)> = Vec::new();
        let entries = crate::device::devices().unwrap_or_default();
        for link in links {
            let entry = entries
                .iter()
                .find(|e| e.identity.name == link.name && e.identity.node_guid.0 == link.node_guid)
                .cloned();
            known.push((link, entry));
        }
        let hub = Arc::new(EventHub::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (hub2, stop2) = (hub.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("anyverbs-monitor".into())
            .spawn(move || run(socket, known, hub2, stop2))
            .map_err(|e| crate::error::io_failed("spawning the device monitor", e))?;
        Ok(Monitor {
            hub,
            stop,
            thread: Some(thread),
        })
    }

    /// A stream of the changes from now on.
    pub fn subscribe(&self) -> Result<EventStream<DeviceChange>, Error> {
        self.hub.subscribe()
    }
}

fn run(
    socket: crate::uevent::UeventSocket,
    mut known: Vec<(RdmaDevice, Option<DeviceEntry>)>,
    hub: Arc<EventHub<DeviceChange>>,
    stop: Arc<AtomicBool>,
) {
    let mut next_rescan = Instant::now() + RESCAN_INTERVAL;
    while !stop.load(Ordering::Relaxed) {
        let wake = next_rescan.min(Instant::now() + Duration::from_millis(100));
        let woke_by_uevent = match socket.recv(wake) {
            Ok(Some(event)) => {
                tracing::debug!(?event, "infiniband uevent");
                true
            }
            Ok(None) => false,
            Err(e) if crate::uevent::is_overflow(&e) => true,
            Err(e) => {
                tracing::warn!(%e, "uevent socket failed; rescanning only");
                std::thread::sleep(Duration::from_millis(100));
                false
            }
        };
        if !woke_by_uevent && Instant::now() < next_rescan {
            continue;
        }
        next_rescan = Instant::now() + RESCAN_INTERVAL;
        let Ok(links) = crate::netlink::list_devices(Duration::from_secs(2)) else {
            continue;
        };
        // Removed: known before, not listed now.
        let mut kept = Vec::new();
        for (link, entry) in known.drain(..) {
            if links.iter().any(|l| same(l, &link)) {
                kept.push((link, entry));
            } else if let Some(entry) = entry {
                hub.publish(DeviceChange::Removed(entry));
            }
        }
        known = kept;
        // Added: listed now, not known. Opened once to read the identity; a device that is
        // already going away again is retried at the next rescan.
        for link in links {
            if known.iter().any(|(k, _)| same(k, &link)) {
                continue;
            }
            match crate::device::open(&link.name) {
                Ok((entry, _context)) if entry.identity.node_guid.0 == link.node_guid => {
                    hub.publish(DeviceChange::Added(entry.clone()));
                    known.push((link, Some(entry)));
                }
                _ => {}
            }
        }
    }
}
