//! The supervisor's thread: watches the device, the monitor and the service's links, and makes
//! the decisions the module docs list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, info_span, warn};

use super::{
    FailureAction, GiveUp, Link, LossCause, Service, Shared, StopReason, SupervisorConfig,
    SupervisorEvent, SupervisorReport, SupervisorState,
};
use crate::device::{Device, DeviceInfo};
use crate::error::{Error, ErrorKind};
use crate::event::{DeviceEvent, EventStream, MonitorEvent};
use crate::held::HeldObjects;
use crate::identity::DeviceIdentity;
use crate::provider::Provider;
use crate::supervisor::DeviceSelector;

/// How long a monitor's removal of the supervised device waits for the device's own stream to
/// say how it was lost.
const LOSS_CAUSE_GRACE: Duration = Duration::from_millis(200);

/// The shortest time between two looks for a lost device, whatever the reconnect delay: a look
/// lists the devices (which opens every one of them on a real provider), and a zero delay would
/// otherwise make every look due at once, the thread spinning for the whole return window.
const MIN_LOOK_INTERVAL: Duration = Duration::from_millis(100);

/// Where the service is, with what each phase holds.
enum Phase<P: Provider> {
    /// Nothing runs and nothing is scheduled: before the first start, and for a moment between
    /// a stop and the next decision.
    Idle,
    /// The device is absent (never seen yet, or lost); give up at `give_up_at`, ask what is
    /// held of it at `check_held_at`; `held` is what was reported last. The monitor's news is a
    /// hint, the listing the truth: the supervisor also looks for the device itself at
    /// `look_at`, its `looks`-th look (backing off as restarts do), so that a return whose
    /// announcement it missed, or whose start failed while the device settled (it was announced
    /// once and never will be again), still restarts the service.
    Waiting {
        give_up_at: Option<Instant>,
        check_held_at: Option<Instant>,
        held: HeldObjects,
        look_at: Option<Instant>,
        looks: u32,
    },
    /// The service runs on `device`, whose events arrive on `events`.
    Running {
        /// The supervisor's own handle, held while the service runs and dropped at its stop.
        _device: P::Device,
        events: EventStream<DeviceEvent>,
        identity: DeviceIdentity,
    },
    /// Stopped after a connection failure or a failed start; the next attempt is at `retry_at`.
    Backoff {
        retry_at: Instant,
        attempt: u32,
        outage_since: Instant,
    },
    /// The thread ends.
    Done,
}

pub(crate) struct Driver<P: Provider, S> {
    provider: Arc<P>,
    selector: DeviceSelector,
    /// The identity followed, once known (never changes except by an adopted replacement).
    pinned: Option<DeviceIdentity>,
    service: S,
    config: SupervisorConfig,
    monitor: EventStream<MonitorEvent>,
    shared: Arc<Shared>,
    phase: Phase<P>,
    /// Number of starts so far; links of older starts are ignored.
    generation: u64,
}

impl<P: Provider, S: Service<P>> Driver<P, S> {
    pub(crate) fn new(
        provider: Arc<P>,
        selector: DeviceSelector,
        service: S,
        config: SupervisorConfig,
        monitor: EventStream<MonitorEvent>,
        shared: Arc<Shared>,
    ) -> Self {
        let pinned = match &selector {
            DeviceSelector::Identity(identity) => Some(identity.clone()),
            DeviceSelector::Name(_) => None,
        };
        Driver {
            provider,
            selector,
            pinned,
            service,
            config,
            monitor,
            shared,
            phase: Phase::Idle,
            generation: 0,
        }
    }

    /// The thread's body: returns the service once shut down or given up.
    pub(crate) fn run(mut self) -> S {
        let span = info_span!("supervisor", device = %self.selector.name());
        let _entered = span.enter();
        self.try_start(None);
        loop {
            if self.shared.lock().shutdown {
                self.shut_down();
                break;
            }
            if matches!(self.phase, Phase::Done) {
                break;
            }
            let seen = self.shared.wakeup.generation();
            self.step();
            if matches!(self.phase, Phase::Done) {
                break;
            }
            if self.shared.lock().shutdown {
                continue;
            }
            let until = self.next_timer();
            self.config.clock.wait(&self.shared.wakeup, seen, until);
        }
        // Readers get every decision, then the end of the stream instead of waiting for more.
        self.shared
            .events
            .close(ErrorKind::Destroyed, "the supervisor has finished");
        self.service
    }

    /// Handles everything that is waiting: device events first (they say *how* the device was
    /// lost: a reset's DeviceFatal comes before the monitor's removal), then monitor events,
    /// link reports and timers.
    fn step(&mut self) {
        self.drain_device_events();
        loop {
            match self.monitor.try_recv() {
                Ok(Some(event)) => self.on_monitor(event),
                Ok(None) => break,
                Err(e) if e.kind() == ErrorKind::Overflow => {
                    warn!(error = %e, "monitor events were dropped");
                }
                Err(e) => {
                    // The provider is gone: nothing will ever come back.
                    warn!(error = %e, "the device monitor ended");
                    break;
                }
            }
            if matches!(self.phase, Phase::Done) {
                return;
            }
        }
        self.take_link_reports();
        self.fire_timers();
    }

    fn drain_device_events(&mut self) {
        loop {
            let Phase::Running { events, .. } = &self.phase else {
                return;
            };
            match events.try_recv() {
                Ok(Some(event)) => self.on_device_event(event),
                Ok(None) => return,
                Err(e) if e.kind() == ErrorKind::Overflow => {
                    warn!(error = %e, "device events were dropped");
                }
                Err(e) => {
                    // The stream ended without a fatal/removed event we saw: the device is gone.
                    self.lose_device(if e.kind() == ErrorKind::DeviceLost {
                        LossCause::Removed
                    } else {
                        LossCause::Vanished
                    });
                    return;
                }
            }
        }
    }

    /// Handles the device's events until its stream ends (or the device is otherwise lost),
    /// waiting until `deadline` at most.
    fn await_device_stream_end(&mut self, deadline: Instant) {
        loop {
            let Phase::Running { events, .. } = &self.phase else {
                return;
            };
            match events.recv(deadline) {
                Ok(event) => self.on_device_event(event),
                Err(e) if e.kind() == ErrorKind::Overflow => {
                    warn!(error = %e, "device events were dropped");
                }
                // Timed out, or the stream ended: the caller decides the cause.
                Err(_) => return,
            }
        }
    }

    fn on_device_event(&mut self, event: DeviceEvent) {
        match &event {
            DeviceEvent::DeviceFatal => self.lose_device(LossCause::Fatal),
            DeviceEvent::DeviceRemoved => self.lose_device(LossCause::Removed),
            e if e.is_failure() => {
                if self.service.on_failure(&event) == FailureAction::Restart {
                    self.connection_lost(event.to_string());
                } else {
                    info!(event = %event, "failure left to the service");
                }
            }
            _ => info!(event = %event, "device event"),
        }
    }

    fn take_link_reports(&mut self) {
        let reports = std::mem::take(&mut self.shared.lock().reports);
        for (generation, reason) in reports {
            if generation == self.generation && matches!(self.phase, Phase::Running { .. }) {
                self.connection_lost(reason);
            } else {
                info!(generation, reason = %reason, "stale connection report ignored");
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.config.clock.now();
        match self.phase {
            Phase::Waiting {
                give_up_at: Some(at),
                ..
            } if now >= at => {
                self.check_held();
                self.give_up(GiveUp::WindowExpired)
            }
            Phase::Waiting {
                check_held_at: Some(at),
                ..
            } if now >= at => self.check_held(),
            Phase::Waiting {
                look_at: Some(at), ..
            } if now >= at => self.look(),
            Phase::Backoff {
                retry_at,
                attempt,
                outage_since,
            } if now >= retry_at => self.try_start(Some((attempt, outage_since))),
            _ => {}
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting {
                give_up_at,
                check_held_at,
                look_at,
                ..
            } => [give_up_at, check_held_at, look_at]
                .into_iter()
                .flatten()
                .min(),
            Phase::Backoff { retry_at, .. } => Some(retry_at),
            _ => None,
        }
    }

    fn on_monitor(&mut self, event: MonitorEvent) {
        match event {
            MonitorEvent::Removed(identity) => {
                if let Phase::Running { identity: ours, .. } = &self.phase
                    && *ours == identity
                {
                    // The device's own stream says how it was lost (a reset's DeviceFatal);
                    // removal otherwise. It ends right after the device goes, but it and the
                    // monitor are read apart (two fds on hardware, two relay threads through a
                    // plugin), so the removal may be read first: give the stream a moment.
                    self.await_device_stream_end(Instant::now() + LOSS_CAUSE_GRACE);
                    self.lose_device(LossCause::Removed);
                } else if let Phase::Backoff { .. } = self.phase
                    && self.follows(&identity)
                {
                    // Lost while stopped between attempts: wait for it instead.
                    self.report(SupervisorEvent::DeviceLost {
                        device: identity,
                        cause: LossCause::Removed,
                    });
                    self.wait_for_device();
                }
            }
            MonitorEvent::Added(info) => {
                let identity = info.identity.clone();
                if self.follows(&identity) {
                    match &self.phase {
                        Phase::Running { identity: ours, .. } if *ours == identity => {}
                        Phase::Running { .. } => {
                            // A new incarnation while we hold the old one: the old one is dead.
                            self.lose_device(LossCause::Vanished);
                            self.returned(identity);
                        }
                        Phase::Waiting { .. } | Phase::Backoff { .. } | Phase::Idle => {
                            self.returned(identity)
                        }
                        Phase::Done => {}
                    }
                } else if matches!(self.phase, Phase::Waiting { .. })
                    && identity.name == self.selector.name()
                {
                    match self.pinned.clone() {
                        None => self.try_start(None),
                        Some(expected) => self.foreign(expected, info),
                    }
                }
            }
        }
    }

    /// When the followed device is absent but another device holds its name (found at spawn, or
    /// when the wait begins), reports it once and asks the service, as for one that is added.
    fn report_foreign_present(&mut self) {
        let Some(expected) = self.pinned.clone() else {
            return;
        };
        let Ok(devices) = self.provider.devices() else {
            return;
        };
        if let Some(info) = devices
            .into_iter()
            .find(|d| d.identity.name == expected.name && !expected.is_same_device(&d.identity))
        {
            self.foreign(expected, info);
        }
    }

    /// A different device under the followed one's name: report it, and adopt it if the service
    /// accepts it.
    fn foreign(&mut self, expected: DeviceIdentity, info: DeviceInfo) {
        let adopted = self.service.accept_replacement(&expected, &info);
        self.report(SupervisorEvent::ForeignDevice {
            expected,
            found: info.identity.clone(),
            adopted,
        });
        if adopted {
            self.pinned = Some(info.identity);
            self.try_start(None);
        }
    }

    /// Whether `identity` is the device this supervisor follows.
    fn follows(&self, identity: &DeviceIdentity) -> bool {
        self.pinned
            .as_ref()
            .is_some_and(|p| p.is_same_device(identity))
    }

    /// While waiting: looks for the device itself. A followed device found there is back (its
    /// announcement was missed, or a start on it failed): reported as a return, as the
    /// monitor's would be, then started on.
    fn look(&mut self) {
        if self.pinned.is_some()
            && let Some(identity) = self.find_device()
        {
            self.returned(identity);
        } else {
            self.try_start(None);
        }
    }

    fn returned(&mut self, identity: DeviceIdentity) {
        self.report(SupervisorEvent::DeviceReturned { device: identity });
        self.try_start(None);
    }

    /// Stops the running service after the device was lost, releases the device and waits.
    fn lose_device(&mut self, cause: LossCause) {
        let Phase::Running { identity, .. } = &self.phase else {
            return;
        };
        self.report(SupervisorEvent::DeviceLost {
            device: identity.clone(),
            cause,
        });
        self.stop(StopReason::DeviceLost(cause));
        self.wait_for_device();
    }

    fn connection_lost(&mut self, reason: String) {
        self.report(SupervisorEvent::ConnectionLost {
            reason: reason.clone(),
        });
        self.stop(StopReason::ConnectionLost(reason));
        let now = self.config.clock.now();
        self.schedule_restart(0, now);
    }

    /// Calls [`Service::stop`] if the service runs, then drops the device handle and its event
    /// stream, so that a removal waiting for the process's objects can finish.
    fn stop(&mut self, reason: StopReason) {
        if let Phase::Running { .. } = self.phase {
            self.service.stop(&reason, self.stop_deadline());
            // Dropping the phase drops the device handle and its stream.
            self.phase = Phase::Idle;
            self.report(SupervisorEvent::Stopped { reason });
        }
    }

    /// The drain deadline for [`Service::stop`]: real time, and never past the end of time.
    fn stop_deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.config.stop_deadline)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    }

    /// After a start could not be made or failed because the device seemed gone: wait for its
    /// return if it is really absent, else (a start that failed on a present device, e.g. a
    /// connection request withdrawn under it) retry after the reconnect delay — a present device
    /// is never announced again, so waiting for it would wait for nothing.
    fn retry_or_wait(&mut self, retry: Option<(u32, Instant)>) {
        if self.find_device().is_some() {
            self.retry_later(retry);
        } else {
            self.wait_for_device();
        }
    }

    /// Schedules the attempt after `retry` (the first of a new outage if this was no retry).
    fn retry_later(&mut self, retry: Option<(u32, Instant)>) {
        let now = self.config.clock.now();
        let (attempt, since) = retry.map_or((0, now), |(a, s)| (a + 1, s));
        self.schedule_restart(attempt, since);
    }

    /// Waits for the device, within the return window from now (unless already waiting: a
    /// failed attempt to start on a returning device does not extend the window).
    /// Already waiting (a look that did not find it, a start on a returned device that
    /// failed), it schedules its next look for the device.
    fn wait_for_device(&mut self) {
        let now = self.config.clock.now();
        let look_after = |looks| {
            now.checked_add(
                self.config
                    .reconnect_delay_for(looks)
                    .max(MIN_LOOK_INTERVAL),
            )
        };
        if let Phase::Waiting { look_at, looks, .. } = &mut self.phase {
            *looks = looks.saturating_add(1);
            *look_at = look_after(*looks);
            return;
        }
        let give_up_at = self.config.return_window.and_then(|w| now.checked_add(w));
        self.phase = Phase::Waiting {
            give_up_at,
            check_held_at: None,
            held: HeldObjects::NONE,
            look_at: look_after(0),
            looks: 0,
        };
        self.set_state(SupervisorState::WaitingForDevice);
        let device = self
            .pinned
            .as_ref()
            .map_or_else(|| self.selector.name().to_string(), |p| p.to_string());
        self.report(SupervisorEvent::WaitingForDevice { device, give_up_at });
        self.check_held();
    }

    /// While waiting: asks the provider what the process holds of the device, reports it if it
    /// changed (see [`SupervisorEvent::DeviceHeld`]), and sets the next check.
    fn check_held(&mut self) {
        let Phase::Waiting { held: last, .. } = self.phase else {
            return;
        };
        let name = self
            .pinned
            .as_ref()
            .map_or_else(|| self.selector.name().to_string(), |p| p.name.clone());
        let held = match self.provider.held_objects(&name) {
            Ok(held) => held,
            Err(e) => {
                // A provider that does not count its objects (or stopped answering): nothing
                // to report, nothing to check again — a check left due would be due forever.
                info!(error = %e, "what the process holds of the device is not known");
                if let Phase::Waiting { check_held_at, .. } = &mut self.phase {
                    *check_held_at = None;
                }
                return;
            }
        };
        let now = self.config.clock.now();
        let next = now.checked_add(self.config.held_check_interval);
        if let Phase::Waiting {
            check_held_at,
            held: reported,
            ..
        } = &mut self.phase
        {
            *check_held_at = next;
            *reported = held;
        }
        let giving_up =
            matches!(self.phase, Phase::Waiting { give_up_at: Some(at), .. } if now >= at);
        if held != last || (giving_up && !held.is_empty()) {
            let device = self
                .pinned
                .as_ref()
                .map_or_else(|| name.clone(), |p| p.to_string());
            self.report(SupervisorEvent::DeviceHeld { device, held });
        }
    }

    fn schedule_restart(&mut self, attempt: u32, outage_since: Instant) {
        let now = self.config.clock.now();
        if let Some(loss) = self.config.loss_timeout
            && now.saturating_duration_since(outage_since) >= loss
        {
            self.give_up(GiveUp::LossTimeout);
            return;
        }
        // The last attempt is made at the loss timeout itself, not one whole delay after it.
        let mut delay = self.config.reconnect_delay_for(attempt);
        if let Some(loss) = self.config.loss_timeout
            && let Some(end) = outage_since.checked_add(loss)
        {
            delay = delay.min(end.saturating_duration_since(now));
        }
        let Some(retry_at) = now.checked_add(delay) else {
            // A delay past the end of time: never retry, wait for the device's return instead.
            self.wait_for_device();
            return;
        };
        self.phase = Phase::Backoff {
            retry_at,
            attempt,
            outage_since,
        };
        self.set_state(SupervisorState::Reconnecting);
        self.report(SupervisorEvent::RestartScheduled { attempt, delay });
    }

    /// The device to start on now, if it is present: the followed identity, or the selector's
    /// name before the first start.
    fn find_device(&self) -> Option<DeviceIdentity> {
        let devices = match self.provider.devices() {
            Ok(devices) => devices,
            Err(e) => {
                warn!(error = %e, "cannot list devices");
                return None;
            }
        };
        devices
            .into_iter()
            .map(|d| d.identity)
            .find(|d| self.is_target(d))
    }

    /// Whether `identity` is the device to run on: the followed identity once known, the
    /// selector's name before the first start.
    fn is_target(&self, identity: &DeviceIdentity) -> bool {
        match &self.pinned {
            Some(p) => p.is_same_device(identity),
            None => identity.name == self.selector.name(),
        }
    }

    /// Starts the service if the device is present; `retry` is the restart attempt and the
    /// start of the outage when this is a scheduled retry.
    fn try_start(&mut self, retry: Option<(u32, Instant)>) {
        if matches!(self.phase, Phase::Running { .. } | Phase::Done) {
            return;
        }
        let Some(identity) = self.find_device() else {
            let was_waiting = matches!(self.phase, Phase::Waiting { .. });
            self.wait_for_device();
            if !was_waiting {
                self.report_foreign_present();
            }
            return;
        };
        let opened = self.provider.open(&identity.name).and_then(|device| {
            // The name may have moved to another device between the listing and the open.
            let found = device.info().identity.clone();
            if !self.is_target(&found) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{} is now another device", identity.name),
                ));
            }
            let events = device.events()?;
            events.notify(&self.shared.wakeup);
            Ok((device, events, found))
        });
        let (device, events, identity) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                info!(error = %e, "the device went away before it could be started on");
                self.retry_or_wait(retry);
                return;
            }
        };
        // Follow the newest incarnation (same stable fields, current index), so reports name it.
        self.pinned = Some(identity.clone());
        self.generation += 1;
        let link = Link {
            shared: Arc::clone(&self.shared),
            generation: self.generation,
        };
        match self.service.start(&device, &link) {
            Ok(()) => {
                self.phase = Phase::Running {
                    _device: device,
                    events,
                    identity: identity.clone(),
                };
                self.set_state(SupervisorState::Running(identity.clone()));
                self.report(SupervisorEvent::Started {
                    device: identity,
                    generation: self.generation,
                });
            }
            Err(e) => {
                self.report(SupervisorEvent::StartFailed {
                    device: identity,
                    kind: e.kind(),
                    message: e.message().to_string(),
                });
                self.service
                    .stop(&StopReason::StartFailed, self.stop_deadline());
                drop((device, events));
                self.report(SupervisorEvent::Stopped {
                    reason: StopReason::StartFailed,
                });
                if matches!(e.kind(), ErrorKind::DeviceLost | ErrorKind::NotFound) {
                    self.retry_or_wait(retry);
                } else {
                    self.retry_later(retry);
                }
            }
        }
    }

    fn give_up(&mut self, reason: GiveUp) {
        self.stop(StopReason::Shutdown);
        self.phase = Phase::Done;
        self.set_state(SupervisorState::GaveUp(reason));
        self.report(SupervisorEvent::GaveUp { reason });
    }

    fn shut_down(&mut self) {
        self.stop(StopReason::Shutdown);
        self.phase = Phase::Done;
        self.set_state(SupervisorState::ShutDown);
        self.report(SupervisorEvent::ShutDown);
    }

    fn set_state(&self, state: SupervisorState) {
        self.shared.lock().state = Some(state);
    }

    fn report(&self, event: SupervisorEvent) {
        match &event {
            SupervisorEvent::GaveUp { .. }
            | SupervisorEvent::DeviceHeld { .. }
            | SupervisorEvent::StartFailed { .. }
            | SupervisorEvent::DeviceLost { .. }
            | SupervisorEvent::ForeignDevice { .. } => warn!(event = %event, "supervisor"),
            _ => info!(event = %event, "supervisor"),
        }
        self.shared.events.publish(SupervisorReport {
            at: self.config.clock.now(),
            event,
        });
    }
}
