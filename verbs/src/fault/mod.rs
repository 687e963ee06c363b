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
//! it is sent by a child process forked for it ([`crate::netlink::delete_link_elsewhere`]),
//! watched by a thread of its own: [`FaultInjector::unplug`] returns once the loss is visible —
//! the device is off the kernel's list, and the CM has told every ID bound to it — within its
//! deadline, and the [`Injection`] it returns finishes the job once the process lets go. Whoever
//! injects restores: an [`Injection`] dropped before its replug puts the device back on its own
//! netdev — before its drop returns if the delete completed, else its restorer process does it
//! once the delete completes — so one failed case cannot break the ones after it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::{Error, ErrorKind};

use crate::device::{DeviceEntry, Transport};

mod restorer;

use restorer::Restorer;
pub use restorer::{register_owner, unregister_owner, wait_for_restore, wait_for_restores};

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
    /// Who injects, as [`wait_for_restore`] tells owners apart: the process id by default.
    owner: String,
    /// Where the device goes back: its netdev by default.
    home: String,
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
            home: netdev.clone(),
            netdev,
            owner: std::process::id().to_string(),
        })
    }

    /// The same injector, putting the device back on `netdev` rather than the one it is on now
    /// (the device's home, when it is on a spare netdev at the moment).
    pub fn with_home(mut self, netdev: impl Into<String>) -> FaultInjector {
        self.home = netdev.into();
        self
    }

    /// The same injector, injecting as `owner` (see [`wait_for_restore`]).
    pub fn with_owner(mut self, owner: impl Into<String>) -> FaultInjector {
        self.owner = owner.into();
        self
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
        let shared = Arc::new((
            Mutex::new(Shared {
                replug,
                abandoned: false,
                restorer: Some(Restorer::spawn(
                    &name,
                    self.link_type,
                    &self.home,
                    &self.owner,
                )),
                home_when_added: false,
                outcome: None,
                delete_failed: None,
                not_before: None,
            }),
            Condvar::new(),
        ));
        let (worker_shared, link_type, home) = (shared.clone(), self.link_type, self.home.clone());
        let thread = std::thread::Builder::new()
            .name("anyverbs-unplug".into())
            .spawn(move || {
                let started = Instant::now();
                let (state, changed) = &*worker_shared;
                let deleted = match delete_elsewhere(index, state, changed) {
                    Ok(deleted) => deleted,
                    Err(deleter) => {
                    // Given up while the delete waits for the device's objects: the restorer
                    // process puts the device home once the delete completes (it waits for the
                    // process `deleter` to end first), whatever becomes of this process
                    // meanwhile; this thread is done.
                    let mut st = lock(state);
                    if let Some(r) = st.restorer.take() {
                        r.send_home_after(Some(deleter));
                    }
                    st.outcome = Some(Err(format!(
                        "the delete of {name} did not complete here (given up, or over \
                         {DELETE_TIMEOUT:?}); the restorer process puts it back on {home} once \
                         it does"
                    )));
                    drop(st);
                    changed.notify_all();
                    return;
                    }
                };
                let deleted_after = started.elapsed();
                let outcome = match deleted {
                    Err(e) => {
                        let m = format!("rdma link delete {name} (index {index}) failed: {e}");
                        lock(state).delete_failed = Some(m.clone());
                        Err(m)
                    }
                    Ok(()) => {
                        // Back where it was asked to go, once asked (a replug may come after
                        // the delete completed), and home once the injection is given up.
                        let mut st = lock(state);
                        let netdev = loop {
                            let held = st.not_before.filter(|&t| !st.abandoned && Instant::now() < t);
                            if let (Some(until), false) = (held, st.replug == Replug::Later) {
                                st.outcome.get_or_insert(Ok((deleted_after, None)));
                                let nap = until
                                    .saturating_duration_since(Instant::now())
                                    .min(Duration::from_millis(100));
                                st = changed
                                    .wait_timeout(st, nap)
                                    .unwrap_or_else(|p| p.into_inner())
                                    .0;
                                continue;
                            }
                            match &st.replug {
                                Replug::OtherNetdev(n) => break n.clone(),
                                Replug::SameNetdev => break home.clone(),
                                Replug::Later if st.abandoned => break home.clone(),
                                Replug::Later => {
                                    // Recorded as deleted meanwhile, for `wait`.
                                    st.outcome.get_or_insert(Ok((deleted_after, None)));
                                    st = changed
                                        .wait_timeout(st, Duration::from_millis(100))
                                        .unwrap_or_else(|p| p.into_inner())
                                        .0;
                                }
                            }
                        };
                        st.outcome = None;
                        drop(st);
                        crate::netlink::add_link(&name, link_type, &netdev, Duration::from_secs(10))
                            .map(|()| (deleted_after, Some(netdev.clone())))
                            .map_err(|e| {
                                format!(
                                    "rdma link add {name} type {link_type} netdev {netdev} failed: {e}"
                                )
                            })
                    }
                };
                let mut st = lock(state);
                // Home again, or never gone (a failed delete): the restorer has nothing to do.
                let home_again = match &outcome {
                    Ok((_, back)) => back.as_deref() == Some(home.as_str()),
                    Err(_) => st.delete_failed.is_some(),
                };
                if home_again && let Some(r) = st.restorer.take() {
                    r.done();
                } else if st.home_when_added
                    && outcome.is_ok()
                    && let Some(r) = st.restorer.take()
                {
                    r.send_home();
                }
                st.outcome = Some(outcome);
                drop(st);
                changed.notify_all();
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
            if let Some(m) = lock(&injection.shared.0).delete_failed.clone() {
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
    /// The injection was given up (dropped): a device not yet put back goes home.
    abandoned: bool,
    /// The restorer, until the device is back on its own netdev.
    restorer: Option<Restorer>,
    /// Send the device home once it was added back elsewhere ([`Injection::go_home_later`]).
    home_when_added: bool,
    /// What the worker did: how long the delete took and where the device was added back.
    outcome: Option<Result<(Duration, Option<String>), String>>,
    /// Why the delete itself failed, if it did (then nothing was removed).
    delete_failed: Option<String>,
    /// The device is not added back before this ([`Injection::away_until`]), unless the
    /// injection is given up.
    not_before: Option<Instant>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// An unplug in progress: the kernel's delete waits for the process to let go.
pub struct Injection {
    injector: FaultInjector,
    shared: Arc<(Mutex<Shared>, Condvar)>,
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
        lock(&self.shared.0).outcome.is_some()
    }

    /// When the delete was asked for.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until the delete (and the replug asked for) completed, or `deadline`.
    pub fn wait(&mut self, deadline: Instant) -> Result<Unplugged, Error> {
        loop {
            let outcome = lock(&self.shared.0).outcome.clone();
            if let Some(outcome) = outcome {
                // Deleted, and still waiting for a replug: that is not done.
                let waiting = outcome.as_ref().is_ok_and(|(_, back)| back.is_none())
                    && !self.thread.as_ref().is_none_or(|t| t.is_finished());
                if waiting && lock(&self.shared.0).replug != Replug::Later {
                    // Held away (a reset's down_for) or being added back: bounded like the rest.
                    if Instant::now() >= deadline {
                        return Err(Error::timed_out(format!(
                            "{} was deleted but is not back yet",
                            self.injector.entry.identity.name
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
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
                && lock(&self.shared.0).outcome.is_none()
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

    /// Sends a device that was (or will be) added back on another netdev home: the move — a
    /// delete where it is, which waits until every process released the device's objects, then
    /// an add at home — is made by the restorer process, never by this one (a process that
    /// deleted a device it still held would wait for itself, uninterruptibly). It happens as
    /// soon as the device was added back elsewhere, now if it already was; a device going home
    /// anyway is left to it. A fresh provider waits (bounded) for the move
    /// ([`wait_for_restore`]).
    pub fn go_home_later(&self) {
        let mut st = lock(&self.shared.0);
        st.home_when_added = true;
        let elsewhere = matches!(&st.outcome, Some(Ok((_, Some(n)))) if *n != self.injector.home);
        if elsewhere && let Some(r) = st.restorer.take() {
            r.send_home();
        }
    }

    /// The name of the device it took away.
    pub fn device_name(&self) -> &str {
        &self.injector.entry.identity.name
    }

    /// Whether the injection is over here: the device is back home, the delete failed, or a
    /// delete given up was handed to the restorer process (the device may still be away: it is
    /// put back by that process, which a fresh provider waits for).
    pub fn is_settled(&self) -> bool {
        let st = lock(&self.shared.0);
        st.restorer.is_none() && st.outcome.is_some()
    }

    /// Keeps the device away until `until` at least (a reset's `down_for`): it is added back
    /// no earlier, wherever it goes, unless the injection is given up first. Set it before the
    /// [`replug`](Self::replug) it applies to.
    pub fn away_until(&self, until: Instant) {
        lock(&self.shared.0).not_before = Some(until);
        self.shared.1.notify_all();
    }

    /// Changes where the device goes back: at once if the delete already completed, else when
    /// it does. No effect once the device was put back.
    pub fn replug(&self, replug: Replug) {
        lock(&self.shared.0).replug = replug;
        self.shared.1.notify_all();
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        // Restore: a device not put back goes back on its own netdev. If the delete already
        // completed, that happens now (the worker adds it and ends; this waits for it, so the
        // device is back when the drop returns); if the delete still waits for the device's
        // objects, the worker hands the device to the restorer process, which adds it back
        // once the delete completes, and ends at once. Either way no thread of this process is
        // left behind (a provider loaded as a plugin may be unloaded right after).
        lock(&self.shared.0).abandoned = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes the device with kernel index `index` from a child process
/// ([`crate::netlink::delete_link_elsewhere`]: never from a thread of this one, which could then
/// never end) and waits for the outcome, at most [`DELETE_TIMEOUT`]. `Err` with the child's
/// process id if the injection was given up first (`abandoned`), the wait timed out, or the
/// child's status was lost: the child goes on alone.
fn delete_elsewhere(
    index: u32,
    state: &Mutex<Shared>,
    changed: &Condvar,
) -> Result<std::io::Result<()>, u32> {
    let mut child = match crate::netlink::delete_link_elsewhere(index) {
        Ok(child) => child,
        Err(e) => return Ok(Err(e)),
    };
    let deadline = Instant::now() + DELETE_TIMEOUT;
    let mut st = lock(state);
    loop {
        if let Some(outcome) = child.poll() {
            return Ok(outcome);
        }
        let pid = child.id();
        if st.abandoned || child.lost() {
            child.leave();
            return Err(pid);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "the delete of device index {index} did not complete within \
                 {DELETE_TIMEOUT:?}: something still holds the device; its restorer process \
                 puts it back once it does"
            );
            child.leave();
            return Err(pid);
        }
        st = changed
            .wait_timeout(st, Duration::from_millis(10))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::restorer::RESTORER;
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

    /// An injection whose delete completed and whose device is held away (a reset's long
    /// `down_for`), with a stand-in worker that holds until the injection is given up or the
    /// hold ends.
    fn held_injection(until: Instant) -> Injection {
        let shared = Arc::new((
            Mutex::new(Shared {
                replug: Replug::SameNetdev,
                abandoned: false,
                restorer: None,
                home_when_added: false,
                outcome: Some(Ok((Duration::ZERO, None))),
                delete_failed: None,
                not_before: Some(until),
            }),
            Condvar::new(),
        ));
        let worker = shared.clone();
        let thread = std::thread::spawn(move || {
            let (state, changed) = &*worker;
            let mut st = lock(state);
            while !st.abandoned && st.not_before.is_some_and(|t| Instant::now() < t) {
                st = changed
                    .wait_timeout(st, Duration::from_millis(20))
                    .unwrap()
                    .0;
            }
            st.outcome = Some(Ok((Duration::ZERO, Some("dummy0".into()))));
        });
        Injection {
            injector: FaultInjector {
                entry: entry(Transport::InfiniBand, 0xff_ffff, None),
                link_type: "rxe",
                netdev: "dummy0".into(),
                owner: "test".into(),
                home: "dummy0".into(),
            },
            shared,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    #[test]
    fn waiting_for_a_held_device_keeps_to_its_deadline() {
        // What a provider's drop (Faults::restore) does with a reset's injection: wait for it,
        // bounded. A long down_for must not make that wait unbounded.
        let mut injection = held_injection(Instant::now() + Duration::from_secs(3600));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = injection.wait(Instant::now() + Duration::from_millis(200));
            let _ = tx.send(r.is_err());
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "wait() ran past its deadline (or did not fail) while the device was held away"
        );
    }

    /// A delete given up before it completed (an unplug that timed out, a drop while the
    /// delete waits) is handed to the restorer while the device may still be listed on its home
    /// netdev — the child may not even have sent the delete yet. The restorer must not take
    /// that listing for "home" and end: the delete then completes and the device stays away.
    #[test]
    fn the_restorer_waits_for_the_deleting_process_before_it_looks() {
        use std::io::Write;
        let dir =
            std::env::temp_dir().join(format!("anyverbs-restorer-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rdma = dir.join("rdma");
        std::fs::write(
            &rdma,
            format!(
                "#!/bin/sh\nD={d}\ncase \"$1 $2\" in\n\
                 \"link show\") [ -e $D/listed ] && echo \"link x0/1 state ACTIVE netdev dummy0\" ;;\n\
                 \"link add\") touch $D/listed $D/added ;;\n\
                 \"link delete\") rm -f $D/listed ;;\n\
                 esac\nexit 0\n",
                d = dir.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rdma, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Listed at home: the delete has not been sent yet.
        std::fs::write(dir.join("listed"), "").unwrap();
        let marker = dir.join("marker");
        std::fs::write(&marker, "test").unwrap();
        let mut deleter = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("sleep 0.5; rm -f {}/listed", dir.display()))
            .spawn()
            .unwrap();
        let mut restorer = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(RESTORER)
            .arg("anyverbs-restore")
            .args(["x0", "rxe", "dummy0"])
            .arg(&rdma)
            .arg(&marker)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = restorer.stdin.take().unwrap();
        writeln!(pipe, "home {}", deleter.id()).unwrap();
        drop(pipe);
        let limit = Instant::now() + Duration::from_secs(20);
        while !dir.join("added").exists() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(20));
            let _ = deleter.try_wait();
        }
        let added = dir.join("added").exists();
        let _ = restorer.kill();
        let _ = restorer.wait();
        let _ = deleter.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            added,
            "the restorer ended on a listing made before the delete completed; the device stayed away"
        );
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
            owner: "test".into(),
            home: "dummy0".into(),
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
