//! Device lifecycle: the incarnations of each configured device, how one is lost (reset, unplug)
//! and comes back, and port flaps. Injecting the faults of [`anyverbs::Fault`] is in `faults`.
//!
//! ## Slots and incarnations
//!
//! A *slot* is one configured device ([`DeviceConfig`]). It is present or absent; each time it
//! appears it is a new *incarnation*, with a new kernel index (indices are never reused: the
//! kernel renumbers on every re-add), its own [`DeviceInfo`] and its own event hub. Every object
//! records the incarnation it was created on, so a handle of a lost incarnation stays dead after
//! its slot came back.
//!
//! ## A lost incarnation
//!
//! Losing an incarnation ([`State::lose`]) marks it dead, cuts the connections of its QPs (their
//! peers on other devices stop hearing from them: their sends stall without ACK and fail with
//! transport-retry-exceeded, see `execute_head`), refuses the connection requests it was part
//! of, drops its delayed completions, publishes its last event and closes its hub. Nothing of it
//! executes or completes again; every call on its handles fails with `DeviceLost` (checked by
//! the handles through [`State::check_live`]), and only destroy and drop still work.
//!
//! ## Returns and timers
//!
//! A reset device, or a replugged one, comes back once its return time has passed *and* every
//! object of its earlier incarnations has been released, as the kernel's unregistration waits
//! for the process to close everything. Both conditions are checked on every progress step of the
//! fabric (every call, every release); time-bound changes (a return, a port coming back, a send
//! to a lost peer failing) also ask for a timer ([`State::wake_at`]): a short-lived thread that
//! sleeps until then and runs one progress step, so events arrive without anyone polling. Timer
//! threads hold only a `Weak` fabric and end at once when the fabric is dropped. While a
//! completion channel exists, the same timers also run the engine's time-bound changes (retries
//! running out, delayed flushes), so a ULP asleep on the channel's fd wakes (see `channels`).

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use anyverbs::kit::DeviceLife;
use anyverbs::{
    Caps, DeviceEvent, DeviceIdentity, DeviceInfo, EventStream, Guid, HeldObjects, LinkLayer,
    MonitorEvent, PortInfo, PortState, Transport,
};

use super::{Fabric, Refusal, State};
use crate::config::{DeviceConfig, FabricConfig, Personality};
use crate::error::{MockError, MockResult};

/// The objects of one mock device not yet released (destroyed, or dropped with nothing
/// depending on them), counted over every incarnation of the device: what
/// [`Provider::held_objects`](anyverbs::Provider::held_objects) reports, and what a reset or
/// unplugged device waits for before it comes back, as the kernel waits for a process to close
/// every verbs object of a device it unregisters. Also a test aid for leak tests, from
/// [`MockProvider::live_objects`](crate::MockProvider::live_objects).
pub type LiveObjects = HeldObjects;

/// How an incarnation was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    Reset,
    Unplugged,
}

impl Loss {
    fn reason(self) -> &'static str {
        match self {
            Loss::Reset => "was reset",
            Loss::Unplugged => "was unplugged",
        }
    }

    /// The event a device with `caps` reports last: a reset is `DeviceFatal` only on a device
    /// that reports fatal errors; on the others (rxe, siw) it is a removal.
    fn last_event(self, caps: Caps) -> DeviceEvent {
        match self {
            Loss::Reset if caps.contains(Caps::DEVICE_FATAL) => DeviceEvent::DeviceFatal,
            Loss::Reset | Loss::Unplugged => DeviceEvent::DeviceRemoved,
        }
    }
}

/// One life of a device: from its appearance to its loss (and, while objects of it remain, on).
pub(super) struct Incarnation {
    pub(super) slot: usize,
    pub(super) info: DeviceInfo,
    /// `None` while the incarnation is alive.
    pub(super) lost: Option<Loss>,
    /// [`Fault::Stall`](anyverbs::Fault::Stall): nothing executes or completes until
    /// [`Fault::Resume`](anyverbs::Fault::Resume).
    pub(super) stalled: bool,
    /// While port 1 is down ([`Fault::FlapPort`](anyverbs::Fault::FlapPort)): when it comes back.
    pub(super) port_down_until: Option<Instant>,
    /// When the timer armed for the port's return fires (one at a time, however often the
    /// flap is extended).
    pub(super) port_timer_at: Option<Instant>,
    /// Shared with the kit's handles of this incarnation: marked lost with it.
    pub(super) life: DeviceLife,
    /// Objects created on this incarnation and not yet released; the device limits count them.
    pub(super) live: LiveObjects,
}

impl Incarnation {
    fn new(slot: usize, info: DeviceInfo) -> Incarnation {
        // The kit refuses by these what the device cannot run (atomics without ATOMICS).
        let life = DeviceLife::with_caps(info.caps);
        Incarnation {
            slot,
            info,
            lost: None,
            stalled: false,
            port_down_until: None,
            port_timer_at: None,
            life,
            live: LiveObjects::default(),
        }
    }

    /// Alive and not stalled: the device executes WRs and produces completions.
    pub(super) fn working(&self) -> bool {
        self.lost.is_none() && !self.stalled
    }
}

/// When and as what an absent device comes back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Return {
    pub(super) not_before: Instant,
    pub(super) node_guid: Guid,
}

/// Whether a slot's device is there.
#[derive(Debug, Clone, Copy)]
pub(super) enum Presence {
    /// Present, as this incarnation.
    Present(u32),
    /// Reset: comes back on its own.
    Resetting(Return),
    /// Unplugged: absent until replugged.
    Unplugged,
    /// Replugged: comes back once its last incarnation's objects are released.
    Replugging(Return),
}

/// One configured device and its incarnations.
pub(super) struct Slot {
    pub(super) config: DeviceConfig,
    pub(super) presence: Presence,
    /// Every incarnation of the slot, oldest first.
    incarnations: Vec<u32>,
    /// How many times [`Fault::ReplugOther`](anyverbs::Fault::ReplugOther) brought another device under this name.
    pub(super) other_devices: u64,
}

impl Slot {
    /// The current incarnation, if the device is present.
    pub(super) fn present(&self) -> Option<u32> {
        match self.presence {
            Presence::Present(dev) => Some(dev),
            _ => None,
        }
    }
}

fn device_info(config: &DeviceConfig, index: u32, node_guid: Guid) -> DeviceInfo {
    DeviceInfo {
        identity: DeviceIdentity {
            name: config.name.clone(),
            index,
            node_guid,
            sys_image_guid: node_guid,
            pci_address: config.pci_address,
            vendor_id: 0x00_5054,
            vendor_part_id: 1,
        },
        transport: Transport::Mock,
        state_model: config.state_model(),
        caps: config.caps(),
        faults: config.faults,
        limits: config.limits,
    }
}

/// The devices of a new fabric: one slot per configured device, each present as its first
/// incarnation, whose index is the device's position in the configuration.
pub(super) fn initial_devices(config: &FabricConfig) -> (Vec<Slot>, Vec<Incarnation>) {
    let mut slots = Vec::with_capacity(config.devices.len());
    let mut incarnations = Vec::with_capacity(config.devices.len());
    for (i, d) in config.devices.iter().enumerate() {
        let index = i as u32;
        incarnations.push(Incarnation::new(i, device_info(d, index, d.node_guid)));
        slots.push(Slot {
            config: d.clone(),
            presence: Presence::Present(index),
            incarnations: vec![index],
            other_devices: 0,
        });
    }
    (slots, incarnations)
}

/// `now + d`, or a century from now when `d` is too large to add (a fault that lasts
/// "forever").
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tells timer threads that their fabric is gone, so they end at once.
#[derive(Default)]
pub(super) struct Shutdown {
    done: Mutex<bool>,
    cond: Condvar,
}

impl Shutdown {
    /// Ends every sleep, now and later.
    pub(super) fn signal(&self) {
        *lock(&self.done) = true;
        self.cond.notify_all();
    }

    /// Sleeps until `at`; false if the fabric went away first.
    fn sleep_until(&self, at: Instant) -> bool {
        let mut done = lock(&self.done);
        loop {
            if *done {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            done = match self.cond.wait_timeout(done, at - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Fabric {
    /// Starts one timer thread per instant: each sleeps until then and runs one progress step of
    /// the fabric. A thread that cannot be started only delays the change to the next call on
    /// the fabric.
    pub(super) fn arm_timers(&self, timers: Vec<Instant>) {
        for at in timers {
            let fabric: Weak<Fabric> = self.me.clone();
            let shutdown = Arc::clone(&self.shutdown);
            let _ = std::thread::Builder::new()
                .name("anyverbs-mock-timer".into())
                .spawn(move || {
                    if shutdown.sleep_until(at)
                        && let Some(fabric) = fabric.upgrade()
                    {
                        fabric.with(|st| st.progress_timer_ran(at));
                    }
                });
        }
    }
}

impl State {
    // ----- incarnations -----

    /// The incarnation `dev` of a live object: objects keep their incarnation from being
    /// forgotten, so it is always there.
    pub(super) fn inc(&self, dev: u32) -> &Incarnation {
        &self.incarnations[&dev]
    }

    /// [`inc`](Self::inc), mutable.
    pub(super) fn inc_mut(&mut self, dev: u32) -> &mut Incarnation {
        self.incarnations
            .get_mut(&dev)
            .expect("an incarnation with live objects is never forgotten")
    }

    /// `DeviceLost` unless the incarnation `dev` is alive. Every call on a handle checks this
    /// first.
    pub(crate) fn check_live(&self, dev: u32) -> MockResult<()> {
        match self.incarnations.get(&dev) {
            Some(inc) => match inc.lost {
                None => Ok(()),
                Some(loss) => Err(MockError::DeviceLost {
                    device: inc.info.identity.name.clone(),
                    reason: loss.reason(),
                }),
            },
            // Forgotten: lost, and every object of it released since (a handle destroyed on a
            // device that was then lost, called again).
            None => Err(MockError::DeviceLost {
                device: format!("with index {dev}"),
                reason: "is gone",
            }),
        }
    }

    /// The liveness of incarnation `dev`, for the kit's handles.
    pub(crate) fn life(&self, dev: u32) -> DeviceLife {
        self.inc(dev).life.clone()
    }

    /// The capabilities of incarnation `dev`.
    pub(crate) fn caps(&self, dev: u32) -> Caps {
        self.inc(dev).info.caps
    }

    /// The personality of incarnation `dev`.
    pub(crate) fn personality(&self, dev: u32) -> Personality {
        self.slots[self.inc(dev).slot].config.personality
    }

    /// Whether the device of `dev` executes WRs and produces completions now.
    pub(super) fn working(&self, dev: u32) -> bool {
        self.inc(dev).working()
    }

    /// Asks for a progress step at `at` even if nobody calls into the fabric then.
    pub(super) fn wake_at(&mut self, at: Instant) {
        self.timers.push(at);
    }

    /// The timers asked for since the last call.
    pub(super) fn take_timers(&mut self) -> Vec<Instant> {
        std::mem::take(&mut self.timers)
    }

    /// Reports `event` of incarnation `dev` through the kit, which publishes it (ignored once
    /// the device is lost).
    pub(super) fn publish(&self, dev: u32, event: DeviceEvent) {
        self.inc(dev).life.report(event);
    }

    pub(super) fn slot_of(&self, name: &str) -> MockResult<usize> {
        self.slots
            .iter()
            .position(|s| s.config.name == name)
            .ok_or_else(|| MockError::NoSuchDevice(name.to_string()))
    }

    /// The present devices, in configuration order.
    pub(crate) fn present_devices(&self) -> Vec<DeviceInfo> {
        self.slots
            .iter()
            .filter_map(|s| s.present())
            .map(|dev| self.inc(dev).info.clone())
            .collect()
    }

    /// Opens the current incarnation of `name`: its index and info.
    pub(crate) fn open_device(&mut self, name: &str) -> MockResult<(u32, DeviceInfo)> {
        let slot = self.slot_of(name)?;
        let dev = self.slots[slot]
            .present()
            .ok_or_else(|| MockError::NoSuchDevice(name.to_string()))?;
        let inc = self.inc_mut(dev);
        inc.live.devices += 1;
        Ok((dev, inc.info.clone()))
    }

    /// A device handle was dropped.
    pub(crate) fn close_device_handle(&mut self, dev: u32) {
        let live = &mut self.inc_mut(dev).live;
        live.devices = live.devices.saturating_sub(1);
    }

    /// The ports of a live incarnation (one, port 1).
    pub(crate) fn ports(&self, dev: u32, now: Instant) -> MockResult<Vec<PortInfo>> {
        self.check_live(dev)?;
        let inc = self.inc(dev);
        let state = match inc.port_down_until {
            Some(until) if now < until => PortState::Down,
            _ => PortState::Active,
        };
        Ok(vec![PortInfo {
            number: 1,
            state,
            link_layer: LinkLayer::Virtual,
            addresses: vec![self.slots[inc.slot].config.address],
        }])
    }

    /// A new stream of the events of incarnation `dev`.
    pub(crate) fn subscribe_device(&self, dev: u32) -> anyverbs::Result<EventStream<DeviceEvent>> {
        self.check_live(dev)?;
        self.inc(dev).life.subscribe()
    }

    /// A new stream of devices added and removed.
    pub(crate) fn subscribe_monitor(&self) -> anyverbs::Result<EventStream<MonitorEvent>> {
        self.monitor.subscribe()
    }

    /// The objects of every incarnation of `name` not yet released.
    pub(crate) fn live_objects(&self, name: &str) -> MockResult<LiveObjects> {
        let slot = self.slot_of(name)?;
        let mut total = LiveObjects::default();
        for &dev in &self.slots[slot].incarnations {
            total = total.plus(&self.inc(dev).live);
        }
        Ok(total)
    }

    // ----- loss and return -----

    /// Loses incarnation `dev`: see the module docs.
    pub(super) fn lose(&mut self, dev: u32, loss: Loss, now: Instant) {
        let inc = self.inc_mut(dev);
        if inc.lost.is_some() {
            return;
        }
        inc.lost = Some(loss);
        // Handles fail with `DeviceLost` from here on, and the device's last event goes out with
        // the end of its streams right behind it.
        inc.life.lose(
            loss.last_event(inc.info.caps),
            MockError::DeviceLost {
                device: inc.info.identity.name.clone(),
                reason: loss.reason(),
            }
            .to_string(),
        );
        if inc.stalled {
            inc.stalled = false;
            self.stalled_devices -= 1;
        }
        // A loop asleep on a completion channel's fd wakes, and learns of the loss.
        self.lose_channels(dev);
        // Connections: the peers on other devices stop hearing from this one (both ends are
        // marked, so destroying the dead end does not tear the survivor down either); requests
        // this device's QPs made are withdrawn.
        let dead_qps = self.qps_of(dev);
        self.requests.retain(|_, r| r.client_device != dev);
        let mut survivors = Vec::new();
        for &qpn in &dead_qps {
            self.stalled.remove(&qpn);
            let q = self.qps.get_mut(&qpn).expect("listed above");
            q.peer_lost = true;
            let Some(peer) = q.peer else {
                continue;
            };
            if let Some(p) = self.qps.get_mut(&peer)
                && p.device != dev
                && p.peer == Some(qpn)
            {
                p.peer_lost = true;
                survivors.push(peer);
            }
        }
        // Requests waiting at this device's listeners: their requesters find nobody there.
        let orphaned: Vec<(u64, SocketAddr)> = self
            .requests
            .iter()
            .filter(|(_, r)| {
                self.listeners
                    .get(&r.listener)
                    .is_some_and(|l| l.device == dev)
            })
            .map(|(id, r)| (*id, r.listener))
            .collect();
        for (id, listener) in orphaned {
            self.refuse(id, Refusal::Unreachable(listener));
        }
        // A dead device produces no completions at all.
        let cqs = &self.cqs;
        self.delayed.retain(|d| d.device != dev);
        self.pending_cq_errors
            .retain(|id| cqs.get(id).is_none_or(|c| c.device != dev));
        let inc = self.inc(dev);
        self.monitor
            .publish(MonitorEvent::Removed(inc.info.identity.clone()));
        // Survivors with sends outstanding start waiting for ACKs that never come.
        for qpn in survivors {
            self.cut_off(qpn, now);
        }
    }

    /// Retries the send queue of a QP whose connection was just cut, so its head starts waiting
    /// for the ACK that never comes, and makes sure it fails on time even if nobody calls.
    pub(super) fn cut_off(&mut self, qpn: u32, now: Instant) {
        self.run_sq(qpn, Some(now));
        if let Some(fail_at) = self
            .qps
            .get(&qpn)
            .and_then(|q| q.sq.front()?.stall?.fail_at)
        {
            self.wake_at(fail_at);
        }
    }

    /// Whether every object of every incarnation of `slot` has been released. Forgets the lost
    /// incarnations whose objects all are.
    fn released(&mut self, slot: usize) -> bool {
        let incarnations = &mut self.incarnations;
        self.slots[slot].incarnations.retain(|dev| {
            let forget = incarnations
                .get(dev)
                .is_none_or(|inc| inc.lost.is_some() && inc.live.total() == 0);
            if forget {
                incarnations.remove(dev);
            }
            !forget
        });
        self.slots[slot]
            .incarnations
            .iter()
            .all(|&dev| self.inc(dev).live.total() == 0)
    }

    /// The slot's device appears as a new incarnation with a new index.
    fn come_back(&mut self, slot: usize, node_guid: Guid) {
        let dev = self.next_index;
        self.next_index += 1;
        let info = device_info(&self.slots[slot].config, dev, node_guid);
        self.monitor.publish(MonitorEvent::Added(info.clone()));
        self.incarnations.insert(dev, Incarnation::new(slot, info));
        let s = &mut self.slots[slot];
        s.incarnations.push(dev);
        s.presence = Presence::Present(dev);
    }

    /// Runs the time- and release-bound changes that are due: devices coming back, ports coming
    /// up. True if anything changed. Cheap when nothing is pending.
    pub(super) fn lifecycle(&mut self, now: Instant) -> bool {
        if !self.lifecycle_pending {
            return false;
        }
        let (mut changed, mut pending) = (false, false);
        for slot in 0..self.slots.len() {
            match self.slots[slot].presence {
                Presence::Present(dev) => {
                    let inc = self.inc_mut(dev);
                    match inc.port_down_until {
                        Some(until) if now >= until => {
                            inc.port_down_until = None;
                            inc.port_timer_at = None;
                            inc.life.report(DeviceEvent::PortActive { port: 1 });
                            changed = true;
                        }
                        Some(until) => {
                            pending = true;
                            // The armed timer fired before an extended flap's end: re-arm.
                            if inc.port_timer_at.is_none_or(|at| now >= at) {
                                inc.port_timer_at = Some(until);
                                self.wake_at(until);
                            }
                        }
                        None => {}
                    }
                }
                Presence::Resetting(r) | Presence::Replugging(r) => {
                    if now >= r.not_before && self.released(slot) {
                        self.come_back(slot, r.node_guid);
                        changed = true;
                    } else {
                        pending = true;
                    }
                }
                Presence::Unplugged => {}
            }
        }
        self.lifecycle_pending = pending;
        changed
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyverbs::{Fault, MonitorEvent, Provider};

    use crate::MockProvider;

    /// Live timer threads of this process (Linux truncates thread names to 15 bytes). The only
    /// unit test that starts timers is the one below, so the count is not disturbed.
    fn timer_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.starts_with("anyverbs-mock-t"))
                    .count()
            })
            .unwrap_or(0)
    }

    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn timer_threads_end_after_their_step_and_when_the_provider_is_dropped() {
        let p = MockProvider::new();
        let monitor = p.monitor().unwrap();
        let short = Fault::Reset {
            down_for: Duration::from_millis(10),
        };
        p.inject("mock0", &short).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        assert!(matches!(
            monitor.recv(deadline),
            Ok(MonitorEvent::Removed(_))
        ));
        assert!(matches!(monitor.recv(deadline), Ok(MonitorEvent::Added(_))));
        eventually("the timer thread ends after the return", || {
            timer_threads() == 0
        });

        // Flapping a port that is down, over and over, arms one timer, not one per flap.
        for _ in 0..50 {
            let flap = Fault::FlapPort {
                port: 1,
                down_for: Duration::from_secs(3600),
            };
            p.inject("mockiw0", &flap).unwrap();
        }
        eventually("one timer for the flapping port", || timer_threads() == 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(timer_threads(), 1, "one timer for the flapping port");
        drop((p, monitor));
        eventually("the port's timer ends with the provider", || {
            timer_threads() == 0
        });
        let p = MockProvider::new();
        let monitor = p.monitor().unwrap();

        let hour = Duration::from_secs(3600);
        p.inject("mock0", &Fault::Reset { down_for: hour }).unwrap();
        let flap = Fault::FlapPort {
            port: 1,
            down_for: hour,
        };
        p.inject("mock1", &flap).unwrap();
        eventually("two timers wait", || timer_threads() == 2);
        let fabric = Arc::downgrade(&p.fabric);
        drop((p, monitor));
        assert!(
            fabric.upgrade().is_none(),
            "timers must not keep the fabric"
        );
        eventually("the timer threads end with the provider", || {
            timer_threads() == 0
        });
    }

    #[test]
    fn released_incarnations_are_forgotten_so_endless_returns_do_not_grow_the_fabric() {
        use anyverbs::{CompletionQueue, Device, ErrorKind};
        let p = MockProvider::new();
        let slots = p.devices().unwrap().len();
        // A handle destroyed on a device that is then lost and forgotten still answers, with
        // DeviceLost, and does not panic.
        let dev = p.open("mock0").unwrap();
        let cq = dev.create_cq(4).unwrap();
        cq.destroy().unwrap();
        drop(dev);
        for _ in 0..100 {
            let dev = p.open("mock0").unwrap();
            let pd = dev.alloc_pd().unwrap();
            p.inject("mock0", &Fault::Unplug).unwrap();
            p.inject("mock0", &Fault::Replug).unwrap();
            drop((pd, dev));
            // The return happens on the next call into the fabric once everything is released.
            assert_eq!(p.devices().unwrap().len(), slots);
        }
        assert_eq!(p.fabric.lock().incarnations.len(), slots);
        let mut out = [anyverbs::Completion::default(); 1];
        assert_eq!(cq.poll(&mut out).unwrap_err().kind(), ErrorKind::DeviceLost);
    }
}
