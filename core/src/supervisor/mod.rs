//! The recovery supervisor: runs a ULP on a device, tears it down when the device is lost, and
//! restarts it only when the *same* device comes back.
//!
//! An RDMA device reset is not a suspend: every MR, queue and completion channel handed out is
//! gone. Whether the device reset or was unplugged and plugged back in, a ULP does the same
//! thing — drop everything and restart from scratch — so one code path serves both. The only
//! decision is whether to restart automatically, and that is what the supervisor makes:
//!
//! | what happens | what the supervisor does |
//! |---|---|
//! | device fatal or removed ([`DeviceEvent::is_device_lost`], the device's stream ends, or the monitor reports it removed) | [`Service::stop`] with a short drain deadline, drops its own device handle, then waits for the device |
//! | a device is added that [`is_same_device`](DeviceIdentity::is_same_device) as the lost one | restarts at once ([`Service::start`] on the new handle) |
//! | a *different* device is added under the same name | no restart: reports [`SupervisorEvent::ForeignDevice`] and asks [`Service::accept_replacement`] |
//! | the device does not return within [`SupervisorConfig::return_window`] (10 minutes by default) | gives up ([`GiveUp::WindowExpired`]) |
//! | a connection fails ([`Service::on_failure`] says so, or the ULP calls [`Link::connection_lost`]) | stop, then start again after [`SupervisorConfig::reconnect_delay`], backing off, until [`SupervisorConfig::loss_timeout`] ([`GiveUp::LossTimeout`]) |
//! | the device comes back while a reconnect is pending | restarts at once, not at the next tick |
//!
//! The defaults follow the kernel's NVMe-oF host: a 10 s reconnect delay and a 600 s controller
//! loss timeout. Every decision is published as a [`SupervisorEvent`] with its reason
//! ([`Supervisor::events`]) and logged through `tracing` inside a `supervisor` span.
//!
//! Why identity and not names: the kernel reuses device names (`rxe0` on another netdev is still
//! `rxe0`, with other GUIDs) and gives a re-added device a new index, so a supervisor that
//! matched by name would restart a storage target on the wrong card. See
//! [`DeviceIdentity::is_same_device`].
//!
//! Time is injectable ([`Clock`], [`ManualClock`]), so the 10-minute window is tested without
//! waiting 10 minutes.
//!
//! ## A peer that vanishes says nothing
//!
//! The supervisor acts on what it is told: the device's events and the service's
//! [`Link::connection_lost`] reports. A peer that goes away cleanly is reported (its CM sends a
//! DREQ or closes the stream when it destroys its QP: [`DeviceEvent::Disconnected`]), but with
//! RC a peer that vanishes silently — power loss, a pulled cable, a hung host — produces no
//! event at all. The local side learns of it only
//!
//! - when a WR it posted fails after the transport's retries: a SEND, WRITE or READ that gets no
//!   ACK completes with [`WcStatus::TransportRetryExceeded`](crate::WcStatus) after roughly
//!   [`retry_count`](crate::ConnParams::retry_count) times the local ACK timeout (about 6.9 s
//!   on rxe with the rdma_cm defaults), and the QP goes to ERROR. On rxe no event comes with it
//!   (measured): the error completion is all there is. Or
//! - when the connection manager reports a disconnect, which a dead peer never sends.
//!
//! Receives never time out: a QP that only waits for the peer — a server waiting for requests,
//! a client waiting for the reply to a request the peer's adapter already acknowledged — waits
//! forever. The remedy is the ULP's: give every request a deadline, and keep an idle connection
//! busy with a keepalive (a periodic no-op message, as UCX's `UCX_KEEPALIVE_INTERVAL` checks
//! its endpoints and NVMe-oF hosts send Keep Alive commands within the controller's keep-alive
//! timeout), so that a WR is always outstanding to fail. When a deadline passes or a keepalive
//! fails, call [`Link::connection_lost`]: the supervisor stops the service (whose drain
//! accounts for what is outstanding) and restarts it after the reconnect delay. The echo
//! example's client does this with its echo timeout.
//!
//! ## Writing a service
//!
//! A [`Service`] builds everything it needs in [`start`](Service::start) (PDs, MRs, CQs, QPs,
//! connections, worker threads) and drops all of it in [`stop`](Service::stop). The supervisor
//! calls them on its own thread, `stop` after every `start` (also a failed one), never two
//! `start`s in a row. After a device loss every call on the old handles fails at once with
//! [`ErrorKind::DeviceLost`], so `stop` never blocks on a dead
//! device; releasing promptly matters, because drivers that cannot disassociate (rxe, siw)
//! finish the removal — and can bring the device back — only once the process has closed every
//! object of it.

mod clock;
mod driver;

pub use clock::{Clock, ManualClock, SystemClock};

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::device::DeviceInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{DeviceEvent, EventHub, EventStream, Wakeup};
use crate::held::HeldObjects;
use crate::identity::DeviceIdentity;
use crate::provider::Provider;

/// Which device a supervised service runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The device with this identity ([`DeviceIdentity::is_same_device`]).
    Identity(DeviceIdentity),
    /// The device of this name present at the first start; from then on the supervisor holds on
    /// to that device's identity, never to the name.
    Name(String),
}

impl DeviceSelector {
    fn name(&self) -> &str {
        match self {
            DeviceSelector::Identity(identity) => &identity.name,
            DeviceSelector::Name(name) => name,
        }
    }
}

/// The supervisor's policy.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// How long to wait for a lost device to come back before giving up; `None` waits forever
    /// (so does a duration too large to add to an `Instant`). Default: 10 minutes.
    pub return_window: Option<Duration>,
    /// The drain deadline handed to [`Service::stop`], from the moment it is called (real time).
    /// Default: 1 s.
    pub stop_deadline: Duration,
    /// Delay before the first restart after a connection failure or a failed start. Default:
    /// 10 s, the kernel's NVMe-oF `reconnect_delay`. It also paces the supervisor's own looks
    /// for a lost device while it waits: the provider's monitor announces a return once, and a
    /// return whose news was lost (or whose start failed while the device settled) is found by
    /// a look instead. Looks are never less than 100 ms apart, however short the delay.
    pub reconnect_delay: Duration,
    /// Longest delay between restarts, and between looks for a lost device: the delay doubles
    /// after each failed attempt up to this. Default: 10 s (a fixed delay, as the kernel's).
    pub max_reconnect_delay: Duration,
    /// How long after a connection failure to keep trying before giving up; `None` tries
    /// forever (so does a duration too large to add to an `Instant`). The clock restarts at
    /// every successful start, as the kernel's NVMe-oF `ctrl_loss_tmo` does. Default: 600 s.
    pub loss_timeout: Option<Duration>,
    /// While waiting for a lost device, how often to ask the provider what the process still
    /// holds of it ([`Provider::held_objects`]): a reset device returns only once everything of
    /// its old incarnation is released, so what is held is why it does not come back. Each
    /// change is reported as [`SupervisorEvent::DeviceHeld`]. Default: 10 s.
    pub held_check_interval: Duration,
    /// The clock of the timers above. Default: [`SystemClock`].
    pub clock: Arc<dyn Clock>,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            return_window: Some(Duration::from_secs(600)),
            stop_deadline: Duration::from_secs(1),
            reconnect_delay: Duration::from_secs(10),
            max_reconnect_delay: Duration::from_secs(10),
            loss_timeout: Some(Duration::from_secs(600)),
            held_check_interval: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for SupervisorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorConfig")
            .field("return_window", &self.return_window)
            .field("stop_deadline", &self.stop_deadline)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("loss_timeout", &self.loss_timeout)
            .field("held_check_interval", &self.held_check_interval)
            .finish_non_exhaustive()
    }
}

impl SupervisorConfig {
    /// The delay before restart attempt `attempt` (0 for the first) after a connection failure.
    pub fn reconnect_delay_for(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.reconnect_delay
            .saturating_mul(factor)
            .min(self.max_reconnect_delay.max(self.reconnect_delay))
    }
}

/// How a device was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossCause {
    /// [`DeviceEvent::DeviceFatal`]: the device hit a fatal error (a reset).
    Fatal,
    /// [`DeviceEvent::DeviceRemoved`], or the monitor reported the device removed.
    Removed,
    /// A call failed with [`ErrorKind::DeviceLost`] or the device
    /// vanished before anything announced it.
    Vanished,
}

impl fmt::Display for LossCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossCause::Fatal => "fatal error",
            LossCause::Removed => "removed",
            LossCause::Vanished => "vanished",
        })
    }
}

/// Why [`Service::stop`] is called.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The device is gone: every handle of it is dead.
    DeviceLost(LossCause),
    /// A connection failed; the service starts again after the reconnect delay.
    ConnectionLost(String),
    /// [`Service::start`] failed; whatever it built must go.
    StartFailed,
    /// [`Supervisor::shutdown`].
    Shutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::DeviceLost(cause) => write!(f, "device lost ({cause})"),
            StopReason::ConnectionLost(why) => write!(f, "connection lost: {why}"),
            StopReason::StartFailed => f.write_str("start failed"),
            StopReason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// Why the supervisor gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUp {
    /// The device did not come back within [`SupervisorConfig::return_window`].
    WindowExpired,
    /// Connections kept failing for [`SupervisorConfig::loss_timeout`].
    LossTimeout,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUp::WindowExpired => "the device did not come back within the window",
            GiveUp::LossTimeout => "connections kept failing past the loss timeout",
        })
    }
}

/// What the supervisor does about a QP or CQ failure ([`Service::on_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureAction {
    /// Nothing: the QP is not the service's, or the service recovers it itself (a server
    /// dropping one client's connection).
    Ignore,
    /// Stop the service and start it again after the reconnect delay.
    Restart,
}

/// A ULP run by a [`Supervisor`].
///
/// The supervisor restarts the service for what it hears of: device events, QP and CQ failures
/// ([`on_failure`](Self::on_failure)) and the service's own reports
/// ([`Link::connection_lost`]). A peer that vanishes silently is none of these: with RC it
/// produces no event, and the service learns of it only when a WR it posted fails after the
/// transport's retries — so a service that can sit idle needs its own request deadlines or
/// keepalive (see [the module docs](self#a-peer-that-vanishes-says-nothing)).
pub trait Service<P: Provider>: Send + 'static {
    /// Builds the service's resources and connections on `device`. `link` reports connection
    /// failures the service detects itself (a completion with transport-retry-exceeded, a peer
    /// that stopped answering); keep a clone in worker threads. Every wait in here needs a
    /// deadline: the supervisor handles nothing else (a device loss, a shutdown) until `start`
    /// returns.
    ///
    /// On error, the supervisor calls [`stop`](Self::stop) (to drop whatever was built), then
    /// retries after the reconnect delay — or, if the error is
    /// [`DeviceLost`](crate::ErrorKind::DeviceLost) or
    /// [`NotFound`](crate::ErrorKind::NotFound) and the device is indeed absent, waits for it to
    /// come back.
    fn start(&mut self, device: &P::Device, link: &Link) -> Result<()>;

    /// Drains what can be drained by `deadline` and drops everything [`start`](Self::start)
    /// built, joining its threads. Must not block past `deadline` by much: on a lost device every
    /// call fails at once, so this is quick.
    fn stop(&mut self, reason: &StopReason, deadline: Instant);

    /// A QP or a CQ on the device failed ([`DeviceEvent::is_failure`]: QP fatal, request or
    /// access error, disconnected, CQ error): say whether the whole service must restart.
    /// Return [`FailureAction::Ignore`] for QPs and CQs that are not the service's — other
    /// services may run on the same device.
    ///
    /// Not every failure comes here: a peer that vanishes silently (power loss, a pulled cable)
    /// produces no event. The service notices only when a WR it posted fails after the
    /// transport's retries (a completion with transport-retry-exceeded, roughly `retry_count`
    /// times the ACK timeout later; about 6.9 s on rxe with the defaults), or never, if it only
    /// waits for receives. Give requests a deadline and idle connections a keepalive, and
    /// report what they find through [`Link::connection_lost`] (see
    /// [the module docs](self#a-peer-that-vanishes-says-nothing)).
    fn on_failure(&mut self, event: &DeviceEvent) -> FailureAction;

    /// A different device appeared under the name of the lost one. Return true to adopt it
    /// (restart on it and follow its identity from then on). The default refuses: a swapped
    /// card needs an operator's decision.
    fn accept_replacement(&mut self, lost: &DeviceIdentity, candidate: &DeviceInfo) -> bool {
        let _ = (lost, candidate);
        false
    }
}

/// Lets a running service report a connection failure to its supervisor. Cheap to clone; a
/// report from a previous start (an old worker thread finishing late) is ignored.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
    generation: u64,
}

impl Link {
    /// Reports that the service's connection failed: the supervisor stops the service and starts
    /// it again after the reconnect delay.
    ///
    /// This is how a failure no event reports reaches the supervisor: an error completion, a
    /// request whose reply did not come by its deadline, an unanswered keepalive — the only
    /// ways a ULP learns of a peer that vanished silently (see
    /// [the module docs](self#a-peer-that-vanishes-says-nothing)).
    pub fn connection_lost(&self, reason: impl Into<String>) {
        if self.generation == 0 {
            return; // detached: nobody listens
        }
        self.shared
            .lock()
            .reports
            .push((self.generation, reason.into()));
        self.shared.wakeup.notify();
    }

    /// A link to no supervisor, whose reports go nowhere: for calling [`Service::start`]
    /// directly, in a service's own tests and benchmarks.
    pub fn detached() -> Link {
        Link {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                wakeup: Wakeup::new(),
                events: EventHub::new(),
            }),
            generation: 0,
        }
    }

    /// Which start this link belongs to (1 for the first; 0 for a [detached](Self::detached)
    /// link).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("generation", &self.generation)
            .finish()
    }
}

/// A decision of the supervisor, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// [`Service::start`] succeeded on `device`; `generation` counts starts.
    Started {
        /// The device it runs on.
        device: DeviceIdentity,
        /// 1 for the first start, then one more per restart.
        generation: u64,
    },
    /// [`Service::start`] failed.
    StartFailed {
        /// The device it was started on.
        device: DeviceIdentity,
        /// The error's kind.
        kind: ErrorKind,
        /// The error's message.
        message: String,
    },
    /// The device was lost.
    DeviceLost {
        /// The device.
        device: DeviceIdentity,
        /// How.
        cause: LossCause,
    },
    /// A connection of the service failed.
    ConnectionLost {
        /// What reported it: the QP event, or the service's own words.
        reason: String,
    },
    /// [`Service::stop`] returned and the supervisor released its device handle.
    Stopped {
        /// Why it was stopped.
        reason: StopReason,
    },
    /// Waiting for the device to be present.
    WaitingForDevice {
        /// The device waited for: its identity once known, else the selector's name.
        device: String,
        /// When the supervisor gives up (on its clock); `None` waits forever.
        give_up_at: Option<Instant>,
    },
    /// While waiting for the device: what the process still holds of it (of every incarnation:
    /// the lost one's objects keep a reset device from coming back, as the kernel waits for a
    /// process to close every object of a device it unregisters). Reported when waiting
    /// begins, when the counts change, and before giving up, whenever anything is held; and
    /// once more with nothing held when everything was released after all. Only from providers
    /// that count their objects ([`Provider::held_objects`]).
    DeviceHeld {
        /// The device waited for.
        device: String,
        /// What is held of it.
        held: HeldObjects,
    },
    /// The lost device is back: restarting at once.
    DeviceReturned {
        /// The returning device (same stable fields, new index).
        device: DeviceIdentity,
    },
    /// A device appeared under the lost one's name, but it is not the same device.
    ForeignDevice {
        /// The device waited for.
        expected: DeviceIdentity,
        /// The one that appeared.
        found: DeviceIdentity,
        /// Whether [`Service::accept_replacement`] adopted it.
        adopted: bool,
    },
    /// The next restart attempt is scheduled.
    RestartScheduled {
        /// 0 for the first attempt after the failure.
        attempt: u32,
        /// When it will be made, from now.
        delay: Duration,
    },
    /// The supervisor gave up; the service stays stopped and the supervisor's thread ends.
    GaveUp {
        /// Why.
        reason: GiveUp,
    },
    /// [`Supervisor::shutdown`] finished.
    ShutDown,
}

impl fmt::Display for SupervisorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorEvent::Started { device, generation } => {
                write!(f, "started on {device} (start {generation})")
            }
            SupervisorEvent::StartFailed {
                device,
                kind,
                message,
            } => write!(f, "start on {device} failed: {kind}: {message}"),
            SupervisorEvent::DeviceLost { device, cause } => {
                write!(f, "device {device} lost: {cause}")
            }
            SupervisorEvent::ConnectionLost { reason } => write!(f, "connection lost: {reason}"),
            SupervisorEvent::Stopped { reason } => write!(f, "stopped: {reason}"),
            SupervisorEvent::WaitingForDevice { device, give_up_at } => match give_up_at {
                Some(_) => write!(f, "waiting for {device} within the return window"),
                None => write!(f, "waiting for {device}, forever"),
            },
            SupervisorEvent::DeviceHeld { device, held } if held.is_empty() => write!(
                f,
                "the process no longer holds any object of {device}: it can come back"
            ),
            SupervisorEvent::DeviceHeld { device, held } => write!(
                f,
                "{device} cannot come back while the process holds {held} of it (Service::stop \
                 must release every object)"
            ),
            SupervisorEvent::DeviceReturned { device } => {
                write!(f, "the same device came back as {device}: restarting")
            }
            SupervisorEvent::ForeignDevice {
                expected,
                found,
                adopted,
            } => write!(
                f,
                "{found} appeared under the name of {expected} but is a different device; {}",
                if *adopted {
                    "adopted by the service"
                } else {
                    "not restarting"
                }
            ),
            SupervisorEvent::RestartScheduled { attempt, delay } => {
                write!(f, "restart attempt {attempt} in {delay:?}")
            }
            SupervisorEvent::GaveUp { reason } => write!(f, "gave up: {reason}"),
            SupervisorEvent::ShutDown => f.write_str("shut down"),
        }
    }
}

/// A [`SupervisorEvent`] and when it happened, on the supervisor's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorReport {
    /// When, on [`SupervisorConfig::clock`].
    pub at: Instant,
    /// What.
    pub event: SupervisorEvent,
}

/// Where the supervised service is now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorState {
    /// Running on this device.
    Running(DeviceIdentity),
    /// Waiting for the device to be present.
    WaitingForDevice,
    /// Stopped after a failure; a restart is scheduled.
    Reconnecting,
    /// Gave up; the thread has ended.
    GaveUp(GiveUp),
    /// Shut down; the thread has ended.
    ShutDown,
}

/// What the supervisor's thread and its handle share.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    wakeup: Arc<Wakeup>,
    events: EventHub<SupervisorReport>,
}

#[derive(Default)]
pub(crate) struct Inner {
    /// Connection failures reported through a [`Link`], with the start they belong to.
    reports: Vec<(u64, String)>,
    shutdown: bool,
    state: Option<SupervisorState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs a [`Service`] on a device on its own thread and restarts it as the module docs describe.
///
/// Dropping the supervisor shuts the service down without waiting for it; call
/// [`shutdown`](Self::shutdown) to wait and get the service back.
pub struct Supervisor<S> {
    shared: Arc<Shared>,
    events: EventStream<SupervisorReport>,
    thread: Option<JoinHandle<S>>,
}

impl<S: Send + 'static> Supervisor<S> {
    /// Starts supervising: subscribes to the provider's monitor, starts `service` on the
    /// selected device if it is present (else waits for it, within the return window), and
    /// returns. Fails only if the monitor cannot be subscribed or the thread cannot be spawned.
    pub fn spawn<P>(
        provider: Arc<P>,
        selector: DeviceSelector,
        service: S,
        config: SupervisorConfig,
    ) -> Result<Supervisor<S>>
    where
        P: Provider,
        S: Service<P>,
    {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            wakeup: Wakeup::new(),
            events: EventHub::new(),
        });
        let events = shared.events.subscribe()?;
        let monitor = provider.monitor()?;
        monitor.notify(&shared.wakeup);
        let driver = driver::Driver::new(
            provider,
            selector,
            service,
            config,
            monitor,
            Arc::clone(&shared),
        );
        let thread = std::thread::Builder::new()
            .name("anyverbs-supervisor".into())
            .spawn(move || driver.run())
            .map_err(|e| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!("cannot spawn the supervisor thread: {e}"),
                )
            })?;
        Ok(Supervisor {
            shared,
            events,
            thread: Some(thread),
        })
    }

    /// Every decision since [`spawn`](Self::spawn), in order.
    pub fn events(&self) -> &EventStream<SupervisorReport> {
        &self.events
    }

    /// Another stream of decisions, from now on.
    pub fn subscribe(&self) -> Result<EventStream<SupervisorReport>> {
        self.shared.events.subscribe()
    }

    /// Where the service is now (`None` before the thread has made its first decision).
    pub fn state(&self) -> Option<SupervisorState> {
        self.shared.lock().state.clone()
    }

    /// Whether the supervisor's thread has ended (it gave up, or was shut down).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the service ([`StopReason::Shutdown`]), ends the thread and returns the service.
    /// Fails with [`ErrorKind::TimedOut`] if the thread has not ended by `deadline` (it then
    /// finishes on its own), and with [`ErrorKind::Other`] if the thread panicked (in a call
    /// of the service, or a bug of the supervisor).
    pub fn shutdown(mut self, deadline: Instant) -> Result<S> {
        self.shared.lock().shutdown = true;
        self.shared.wakeup.notify();
        let thread = self
            .thread
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Other, "the supervisor thread is gone"))?;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(Error::timed_out(
                    "the supervised service did not stop before the deadline",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        thread.join().map_err(|_| {
            Error::new(
                ErrorKind::Other,
                "the supervisor thread panicked (in the service or in the supervisor)",
            )
        })
    }
}

impl<S> Drop for Supervisor<S> {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wakeup.notify();
    }
}

impl<S> fmt::Debug for Supervisor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("state", &self.shared.lock().state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_kernel_nvme_of_ones() {
        let c = SupervisorConfig::default();
        assert_eq!(c.return_window, Some(Duration::from_secs(600)));
        assert_eq!(c.reconnect_delay, Duration::from_secs(10));
        assert_eq!(c.loss_timeout, Some(Duration::from_secs(600)));
        // A fixed delay, as the kernel's.
        assert_eq!(c.reconnect_delay_for(0), Duration::from_secs(10));
        assert_eq!(c.reconnect_delay_for(5), Duration::from_secs(10));
    }

    #[test]
    fn the_delay_doubles_up_to_the_maximum() {
        let c = SupervisorConfig {
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_millis(750),
            ..SupervisorConfig::default()
        };
        let delays: Vec<u128> = (0..6)
            .map(|a| c.reconnect_delay_for(a).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 750, 750, 750]);
        // No overflow however many attempts there were.
        assert_eq!(c.reconnect_delay_for(u32::MAX), Duration::from_millis(750));
    }
}
