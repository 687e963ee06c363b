//! Faults for software devices, as the core's [`Fault`]s: through [`crate::fault`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyverbs::{Error, ErrorKind, Fault, Faults as FaultSet, Result};

use super::{Flavor, VerbsProvider};
use crate::device::DeviceEntry;
use crate::fault::{FaultInjector, Injection, Replug};

/// The environment variable naming each software device's spare netdev, for
/// [`Fault::ReplugOther`]: `rxe0=dummy2,siw0=dummy3`.
pub const SPARE_NETDEVS: &str = "ANYVERBS_SPARE_NETDEVS";

/// How long an unplug may take to become visible.
const UNPLUG_VISIBLE: Duration = Duration::from_secs(10);

/// The faults in progress and where devices may be replugged; shared by a provider's clones.
#[derive(Clone)]
pub(crate) struct Faults {
    /// Who this provider injects as: devices it took away itself are not waited for.
    pub(crate) owner: String,
    /// Unplugged devices waiting for a replug, by name.
    unplugged: Arc<Mutex<HashMap<String, Injection>>>,
    /// Deletes under way whose device goes back once they complete.
    returning: Arc<Mutex<Vec<Injection>>>,
    /// Each device's own netdev, as it was when this provider first injected into it: where
    /// [`Fault::Replug`] puts it back, even from a spare netdev.
    homes: Arc<Mutex<HashMap<String, String>>>,
}

impl Default for Faults {
    fn default() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let owner = format!(
            "{}:{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        crate::fault::register_owner(&owner);
        Faults {
            owner,
            unplugged: Arc::default(),
            returning: Arc::default(),
            homes: Arc::default(),
        }
    }
}

/// How long a provider waits for a device an earlier provider or process took away to be put
/// back before it looks at the devices.
pub(crate) const RESTORE_WAIT: Duration = Duration::from_secs(15);

/// The spare netdev configured for `device`, if it exists.
fn spare_for(device: &str) -> Option<String> {
    std::env::var(SPARE_NETDEVS)
        .ok()?
        .split(',')
        .find_map(|pair| {
            let (d, n) = pair.split_once('=')?;
            (d.trim() == device).then(|| n.trim().to_owned())
        })
        .filter(|n| std::path::Path::new("/sys/class/net").join(n).exists())
}

impl Faults {
    /// What `entry`'s device can have injected: nothing unless it is a software device and this
    /// process may change RDMA links; a replug elsewhere only with a spare netdev.
    pub(crate) fn available_for(&self, entry: &DeviceEntry) -> FaultSet {
        if FaultInjector::for_device(entry).is_err() {
            return FaultSet::empty();
        }
        let mut faults = FaultSet::RESET | FaultSet::UNPLUG | FaultSet::FLAP_PORT;
        if spare_for(&entry.identity.name).is_some() {
            faults |= FaultSet::REPLUG_OTHER;
        }
        faults
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Injection>> {
        self.unplugged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn returning(&self, injection: Injection) {
        let mut returning = self.returning.lock().unwrap_or_else(|e| e.into_inner());
        // Those that are over are let go (a long-lived provider resets many times).
        returning.retain(|i| !i.is_settled());
        returning.push(injection);
    }

    /// Puts back every device this provider took away, on its own netdev: an unplugged device
    /// is replugged when its delete completes, one on a spare netdev is sent home by its
    /// restorer process. Whoever injects restores, so one case cannot leave the device away
    /// for the next; a fresh provider waits (bounded) while a device is being put back
    /// ([`crate::fault::wait_for_restores`]).
    ///
    /// Nothing is waited for but a device whose delete already completed being added back. A
    /// delete still under way (the ULP still holds objects of the device) runs in a child
    /// process ([`crate::netlink::delete_link_elsewhere`]), so this process may end whenever it
    /// likes; the device's restorer process adds it back once the delete completes.
    pub(crate) fn restore(&self, held: &super::held::HeldBook) {
        let unplugged: Vec<(String, Injection)> = self.lock().drain().collect();
        for (_, i) in &unplugged {
            i.replug(Replug::SameNetdev);
        }
        let returning =
            std::mem::take(&mut *self.returning.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, injection) in unplugged.into_iter().chain(
            returning
                .into_iter()
                .map(|i| (i.device_name().to_owned(), i)),
        ) {
            // A reset's down_for ends with the provider: the device goes back now.
            injection.away_until(Instant::now());
            if !injection.is_settled() {
                tracing::info!(
                    device = %name,
                    held = ?held.of(&name),
                    "a device taken away by a fault goes back once its delete completes"
                );
            }
            injection.go_home_later();
            // Its drop puts the device back now if its delete completed, else leaves that to
            // the restorer process; no thread of the injection outlives it.
            drop(injection);
        }
        crate::fault::unregister_owner(&self.owner);
    }

    pub(crate) fn inject(
        &self,
        flavor: &'static Flavor,
        provider: &VerbsProvider,
        name: &str,
        fault: &Fault,
    ) -> Result<()> {
        let _ = flavor;
        match fault {
            Fault::Replug | Fault::ReplugOther => {
                let mut unplugged = self.lock();
                let Some(injection) = unplugged.remove(name) else {
                    return Err(Error::invalid_state(format!(
                        "{name} was not unplugged by this provider"
                    )));
                };
                let to = match fault {
                    Fault::Replug => Replug::SameNetdev,
                    _ => Replug::OtherNetdev(spare_for(name).ok_or_else(|| {
                        Error::not_supported(format!(
                            "no spare netdev for {name} (set {SPARE_NETDEVS})"
                        ))
                    })?),
                };
                injection.replug(to);
                // The worker adds it back once the delete completes; the injection is kept
                // until then (dropping it early would put it back on its own netdev).
                drop(unplugged);
                self.returning(injection);
                Ok(())
            }
            _ => {
                let entry = provider.entry(name)?;
                let mut injector =
                    FaultInjector::for_device(&entry)?.with_owner(self.owner.clone());
                if let Some(netdev) = &entry.netdev {
                    let home = self
                        .homes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name.to_owned())
                        .or_insert_with(|| netdev.clone())
                        .clone();
                    injector = injector.with_home(home);
                }
                let missing = |what: &str| {
                    Err(Error::not_supported(format!(
                        "{name} cannot have {what} injected"
                    )))
                };
                match fault {
                    Fault::Reset { down_for } => {
                        // Away for `down_for` at least (a reset takes its time), then back on
                        // its own netdev once the delete completed. A `down_for` past the end
                        // of time keeps it away until the provider is dropped.
                        let started = Instant::now();
                        let injection = injector.unplug(Replug::Later, started + UNPLUG_VISIBLE)?;
                        let far = started + Duration::from_secs(86_400 * 365);
                        injection.away_until(started.checked_add(*down_for).unwrap_or(far));
                        injection.replug(Replug::SameNetdev);
                        self.returning(injection);
                        Ok(())
                    }
                    Fault::Unplug => {
                        let injection =
                            injector.unplug(Replug::Later, Instant::now() + UNPLUG_VISIBLE)?;
                        self.lock().insert(name.to_owned(), injection);
                        Ok(())
                    }
                    Fault::FlapPort { port, down_for } => {
                        if *port != 1 {
                            return Err(Error::new(
                                ErrorKind::InvalidArgument,
                                format!("{name} has no port {port} with a netdev"),
                            ));
                        }
                        let down = *down_for;
                        std::thread::spawn(move || {
                            if let Err(e) = injector.port_flap(down) {
                                tracing::warn!(%e, "port flap failed");
                            }
                        });
                        Ok(())
                    }
                    Fault::ChangeAddress { .. } => missing("an address change"),
                    Fault::KillQp { .. } => missing("a QP's fatal error"),
                    Fault::LosePeer { .. } => missing("a lost peer"),
                    Fault::Stall | Fault::Resume => missing("a stall"),
                    _ => missing("this fault"),
                }
            }
        }
    }
}
