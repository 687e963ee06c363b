//! Fault injection for software devices (rxe, siw), through the kernel's RDMA netlink interface
//! (`rdma link add|delete`) and the netdev's flags: what the conformance suite and the test bed
//! use to make a real device vanish, come back, or lose its link.
//!
//! | fault | how | needs |
//! | --- | --- | --- |
//! | unplug | `RDMA_NLDEV_CMD_DELLINK` | `CAP_NET_ADMIN`, a software device |
//! | replug on the same netdev | DELLINK, then NEWLINK on the device's netdev: same GUIDs, new index | same |
//! | replug on another netdev | DELLINK, then NEWLINK of the same name on another netdev: other GUIDs | same, and a spare netdev |
//! | reset | unplug and replug on the same netdev | same |
//! | port flap | the netdev down, then up (`SIOCSIFFLAGS`) | `CAP_NET_ADMIN`, a netdev |
//!
//! The kernel's delete blocks until every process has released every object of the device, so
//! it runs on a thread of its own: [`FaultInjector::unplug`] returns once the loss is visible —
//! the device is off the kernel's list, and the CM has told every ID bound to it — within its
//! deadline, and the [`Injection`] it returns finishes the job once the process lets go. Whoever
//! injects restores: an [`Injection`] dropped before its replug puts the device back on its own
//! netdev as soon as the delete completes, so one failed case cannot break the ones after it.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::{Error, ErrorKind};

use crate::device::{DeviceEntry, Transport};

/// How long the delete may wait for the process to let go before it is given up.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

/// The faults this module injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The device is deleted.
    Unplug,
    /// Deleted, then added again on the same netdev (same identity, new index).
    ReplugSame,
    /// Deleted, then added under the same name on another netdev (another identity).
    ReplugOther,
    /// Deleted and added again on the same netdev as soon as the process let go.
    Reset,
    /// The netdev goes down, then up.
    PortFlap,
}

/// All of them.
pub const ALL_FAULTS: [FaultKind; 5] = [
    FaultKind::Unplug,
    FaultKind::ReplugSame,
    FaultKind::ReplugOther,
    FaultKind::Reset,
    FaultKind::PortFlap,
];

/// Where the device goes back after an unplug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replug {
    /// Not until the [`Injection`] is dropped (then on its own netdev).
    Later,
    /// On its own netdev, as soon as the delete completes.
    SameNetdev,
    /// Under the same name on this netdev, as soon as the delete completes.
    OtherNetdev(String),
}

/// The `rdma link` type of a software device, from what it reports: rxe reports vendor
/// 0xffffff and siw 0x626d74, and neither has a PCI function.
pub fn link_type(entry: &DeviceEntry) -> Option<&'static str> {
    if entry.identity.pci_address.is_some() {
        return None;
    }
    match (entry.transport, entry.identity.vendor_id) {
        (Transport::InfiniBand, 0xff_ffff) => Some("rxe"),
        (Transport::Iwarp, 0x62_6d74) => Some("siw"),
        _ => None,
    }
}

/// Whether this process may change RDMA links and netdevs (`CAP_NET_ADMIN` in its effective
/// set).
pub fn privileged() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(|l| l[7..].trim().to_owned())
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Injects faults into one software device.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    entry: DeviceEntry,
    link_type: &'static str,
    netdev: String,
}

impl FaultInjector {
    /// An injector for `entry`, or why there can be none: not a software device, no netdev, no
    /// privilege.
    pub fn for_device(entry: &DeviceEntry) -> Result<FaultInjector, Error> {
        let link_type = link_type(entry).ok_or_else(|| {
            Error::not_supported(format!(
                "{} is not a software device (rxe or siw): faults are injected only into those",
                entry.identity.name
            ))
        })?;
        let netdev = entry.netdev.clone().ok_or_else(|| {
            Error::not_supported(format!("{} has no netdev", entry.identity.name))
        })?;
        if !privileged() {
            return Err(Error::not_supported(
                "injecting faults needs CAP_NET_ADMIN (run as root)",
            ));
        }
        Ok(FaultInjector {
            entry: entry.clone(),
            link_type,
            netdev,
        })
    }

    /// Whether `kind` can be injected; replugging elsewhere also needs `spare`, a netdev that
    /// exists.
    pub fn available(&self, kind: FaultKind, spare: Option<&str>) -> Result<(), String> {
        match kind {
            FaultKind::ReplugOther => match spare {
                Some(n) if std::path::Path::new("/sys/class/net").join(n).exists() => Ok(()),
                Some(n) => Err(format!("the spare netdev {n} does not exist")),
                None => Err("no spare netdev to replug on".into()),
            },
            _ => Ok(()),
        }
    }

    /// The device as it was when the injector was made.
    pub fn entry(&self) -> &DeviceEntry {
        &self.entry
    }

    /// Deletes the device. Returns once the kernel has taken it off its list (the loss is
    /// visible to everyone) or fails at `deadline`; the delete itself completes when the
    /// process has released everything, then `replug` runs.
    pub fn unplug(&self, replug: Replug, deadline: Instant) -> Result<Injection, Error> {
        let name = self.entry.identity.name.clone();
        let index = self.entry.identity.index;
        // Only the device this injector was made for, and only while the kernel lists it. A
        // device whose delete is already under way is off the list, and a second DELLINK on it
        // would block behind the first and then report success for a loss it did not cause
        // (its restore then races the first one's); one re-added since has a new index.
        if let Ok(listed) = crate::netlink::list_devices(Duration::from_secs(2))
            && !listed.iter().any(|d| {
                d.index == index && d.name == name && d.node_guid == self.entry.identity.node_guid.0
            })
        {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{name} (index {index}) is not on the kernel's device list: its delete is already under way, or it was added again since this injector was made (make one from its new entry)"
                ),
            ));
        }
        let shared = Arc::new(Mutex::new(Shared {
            replug,
            outcome: None,
            delete_failed: None,
        }));
        let (worker_shared, link_type, home) =
            (shared.clone(), self.link_type, self.netdev.clone());
        let thread = std::thread::Builder::new()
            .name("anyverbs-unplug".into())
            .spawn(move || {
                let started = Instant::now();
                let deleted = crate::netlink::delete_link(index, DELETE_TIMEOUT);
                let deleted_after = started.elapsed();
                let replug = lock(&worker_shared).replug.clone();
                let outcome = match deleted {
                    Err(e) => {
                        let m = format!("rdma link delete {name} (index {index}) failed: {e}");
                        lock(&worker_shared).delete_failed = Some(m.clone());
                        Err(m)
                    }
                    Ok(()) => {
                        let netdev = match &replug {
                            Replug::OtherNetdev(n) => Some(n.clone()),
                            Replug::SameNetdev => Some(home.clone()),
                            Replug::Later => None,
                        };
                        match netdev {
                            None => Ok((deleted_after, None)),
                            Some(n) => crate::netlink::add_link(
                                &name,
                                link_type,
                                &n,
                                Duration::from_secs(10),
                            )
                            .map(|()| (deleted_after, Some(n.clone())))
                            .map_err(|e| {
                                format!(
                                    "rdma link add {name} type {link_type} netdev {n} failed: {e}"
                                )
                            }),
                        }
                    }
                };
                lock(&worker_shared).outcome = Some(outcome);
            })
            .map_err(|e| crate::error::io_failed("spawning the unplug thread", e))?;
        let injection = Injection {
            injector: self.clone(),
            shared,
            thread: Some(thread),
            started: Instant::now(),
        };
        // The loss is visible once the kernel no longer lists the device.
        loop {
            let listed = crate::netlink::list_devices(Duration::from_secs(1))
                .map(|l| l.iter().any(|d| d.index == index))
                .unwrap_or(true);
            // A delete that failed (a stale index: the device was re-added since the injector
            // was made; a device already being deleted; no privilege) removed nothing: say so
            // now, not as an Injection whose loss was never there.
            if let Some(m) = lock(&injection.shared).delete_failed.clone() {
                return Err(Error::new(ErrorKind::Other, m));
            }
            if !listed || injection.finished() {
                return Ok(injection);
            }
            if Instant::now() >= deadline {
                return Err(Error::timed_out(format!(
                    "{} was still listed by the kernel when the deadline passed",
                    self.entry.identity.name
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Takes the netdev down for `down`, then up again — up again even if something fails on
    /// the way.
    pub fn port_flap(&self, down: Duration) -> Result<(), Error> {
        crate::netdev::set_up(&self.netdev, false)?;
        std::thread::sleep(down);
        crate::netdev::set_up(&self.netdev, true)
    }
}

struct Shared {
    replug: Replug,
    /// What the worker did: how long the delete took and where the device was added back.
    outcome: Option<Result<(Duration, Option<String>), String>>,
    /// Why the delete itself failed, if it did (then nothing was removed).
    delete_failed: Option<String>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// An unplug in progress: the kernel's delete waits for the process to let go.
pub struct Injection {
    injector: FaultInjector,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("device", &self.injector.entry.identity.name)
            .finish()
    }
}

/// What an unplug ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplugged {
    /// How long the kernel's delete took from the moment it was asked for.
    pub delete_took: Duration,
    /// The netdev the device was added back on, if it was.
    pub replugged_on: Option<String>,
}

impl Injection {
    fn finished(&self) -> bool {
        lock(&self.shared).outcome.is_some()
    }

    /// When the delete was asked for.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until the delete (and the replug asked for) completed, or `deadline`.
    pub fn wait(&mut self, deadline: Instant) -> Result<Unplugged, Error> {
        loop {
            if let Some(outcome) = lock(&self.shared).outcome.clone() {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                return outcome
                    .map(|(delete_took, replugged_on)| Unplugged {
                        delete_took,
                        replugged_on,
                    })
                    .map_err(|m| Error::new(ErrorKind::Other, m));
            }
            if self.thread.as_ref().is_some_and(|t| t.is_finished())
                && lock(&self.shared).outcome.is_none()
            {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "the unplug worker of {} ended without an outcome (it panicked)",
                        self.injector.entry.identity.name
                    ),
                ));
            }
            if Instant::now() >= deadline {
                return Err(Error::timed_out(format!(
                    "the delete of {} has not completed: something still holds the device",
                    self.injector.entry.identity.name
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Changes where the device goes back (effective if the delete has not completed yet).
    pub fn replug(&self, replug: Replug) {
        lock(&self.shared).replug = replug;
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        // Restore: a device not put back goes back on its own netdev once the delete completes.
        let mut shared = lock(&self.shared);
        if shared.outcome.is_none() && shared.replug == Replug::Later {
            shared.replug = Replug::SameNetdev;
            return; // the worker re-adds it when the delete completes
        }
        let done_without_replug = matches!(&shared.outcome, Some(Ok((_, None))));
        drop(shared);
        if done_without_replug {
            let name = &self.injector.entry.identity.name;
            let present = crate::netlink::list_devices(Duration::from_secs(2))
                .map(|l| l.iter().any(|d| &d.name == name))
                .unwrap_or(false);
            if !present {
                let _ = crate::netlink::add_link(
                    name,
                    self.injector.link_type,
                    &self.injector.netdev,
                    Duration::from_secs(10),
                );
            }
        }
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyverbs::{DeviceIdentity, Guid, PciAddress};

    fn entry(transport: Transport, vendor_id: u32, pci: Option<PciAddress>) -> DeviceEntry {
        DeviceEntry {
            identity: DeviceIdentity {
                name: "x0".into(),
                index: 1,
                node_guid: Guid(1),
                sys_image_guid: Guid(1),
                pci_address: pci,
                vendor_id,
                vendor_part_id: 0,
            },
            transport,
            netdev: Some("dummy0".into()),
            kernel_driver: None,
            sysfs_path: "/nonexistent".into(),
        }
    }

    #[test]
    fn only_rxe_and_siw_are_software_devices() {
        assert_eq!(
            link_type(&entry(Transport::InfiniBand, 0xff_ffff, None)),
            Some("rxe")
        );
        assert_eq!(
            link_type(&entry(Transport::Iwarp, 0x62_6d74, None)),
            Some("siw")
        );
        assert_eq!(link_type(&entry(Transport::InfiniBand, 0x02c9, None)), None);
        let pci = "0000:3b:00.1".parse().ok();
        assert_eq!(
            link_type(&entry(Transport::InfiniBand, 0xff_ffff, pci)),
            None
        );
        let e = FaultInjector::for_device(&entry(Transport::InfiniBand, 0x02c9, None)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSupported);
    }

    /// An injector whose device is no longer at its index (re-added since: every add takes a
    /// new index) deletes nothing. Its unplug must fail, not return an injection as if the loss
    /// had been observed.
    #[test]
    fn an_unplug_whose_delete_fails_is_an_error() {
        let mut stale = entry(Transport::InfiniBand, 0xff_ffff, None);
        stale.identity.index = u32::MAX - 1;
        let injector = FaultInjector {
            entry: stale,
            link_type: "rxe",
            netdev: "dummy0".into(),
        };
        let asked = Instant::now();
        let e = injector
            .unplug(Replug::Later, asked + Duration::from_secs(5))
            .expect_err("a delete of an index no device has must fail the unplug");
        assert!(
            e.message()
                .contains("rdma link delete x0 (index 4294967294) failed"),
            "{e}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(4),
            "failed at once, not at the deadline"
        );
    }
}
