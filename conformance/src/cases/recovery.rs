//! The recovery supervisor (`anyverbs::supervisor`) on the device under test: it restarts a
//! service when the *same* device comes back, refuses a different device under the same name
//! unless the service adopts it, gives up after the return window, restarts only the service
//! whose QP failed, backs off on connection loss and gives up after the loss timeout, and
//! restarts at once when the device returns during a backoff.
//!
//! Each case supervises a small test service, `Probe`: on every start it builds a PD, two CQs
//! and a connected pair of QPs on the device handle the supervisor gives it, and checks that one
//! SEND/RECV actually passes; it counts starts and stops, and lets the case send more messages
//! through whatever it runs now. The 10-minute window and the reconnect delays run on a
//! [`ManualClock`], so those cases take milliseconds of real time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{GiveUp, LossCause, ManualClock, SupervisorReport, SupervisorState};
use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, DeviceEvent, DeviceIdentity,
    DeviceInfo, DeviceSelector, Error, ErrorKind, EventStream, FailureAction, Fault, Link,
    MemoryRegion, ProtectionDomain, Provider, QpInit, QueuePair, RecvWr, SendWr, Service,
    StopReason, Supervisor, SupervisorConfig, SupervisorEvent, WcStatus,
};

use crate::case::{Case, CaseError, CaseResult, Needs};
use crate::cases::lifecycle::{DOWN_FOR, QUIET, inject};
use crate::ctx::{Ctx, Loopback, loopback};
use crate::{ensure, ensure_eq};

/// Cases that inject faults.
const FAULTS: Needs = Needs::caps(Caps::FAULT_INJECTION);

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "recovery::restarts_when_the_same_device_returns_after_reset",
            description: "A supervised service on a device that resets is stopped (DeviceLost, \
                          Stopped, WaitingForDevice) and restarted on the same device when it \
                          returns (DeviceReturned, Started generation 2, new index); data flows \
                          again, and shutdown stops it.",
            needs: FAULTS,
            run: restarts_after_reset::<P>,
        },
        Case {
            name: "recovery::restarts_when_the_same_device_is_replugged",
            description: "A supervised service on a device that is unplugged and plugged back \
                          is restarted on it (DeviceReturned, Started generation 2) and data \
                          flows again.",
            needs: FAULTS,
            run: restarts_after_replug::<P>,
        },
        Case {
            name: "recovery::refuses_a_different_device_under_the_same_name",
            description: "When a different device appears under the lost device's name, the \
                          supervisor (even one that selected the device by name) reports \
                          ForeignDevice, not adopted, and does not restart.",
            needs: FAULTS,
            run: refuses_a_foreign_device::<P>,
        },
        Case {
            name: "recovery::adopts_a_replacement_the_service_accepts",
            description: "When the service's accept_replacement agrees, a different device \
                          under the lost one's name is adopted: ForeignDevice adopted, Started on \
                          the new identity, and data flows.",
            needs: FAULTS,
            run: adopts_an_accepted_replacement::<P>,
        },
        Case {
            name: "recovery::gives_up_after_the_return_window",
            description: "With a manual clock, an unplugged device that never returns makes the \
                          supervisor give up (WindowExpired) once the 10-minute window has \
                          passed, and not a second before; its thread ends, all in well under 2 s \
                          of real time.",
            needs: FAULTS,
            run: gives_up_after_the_window::<P>,
        },
        Case {
            name: "recovery::qp_fatal_restarts_only_its_service",
            description: "Two services supervised on one device: killing a QP of the first \
                          restarts the first after its reconnect delay (ConnectionLost, \
                          RestartScheduled, Started generation 2), while the second reports \
                          nothing, keeps its QPs and still passes data.",
            needs: FAULTS,
            run: qp_fatal_restarts_only_its_service::<P>,
        },
        Case {
            name: "recovery::connection_loss_backs_off_then_gives_up",
            description: "After a reported connection loss, restarts that fail are retried after \
                          10, 20 and 40 s (doubling up to the maximum, never early), and the \
                          supervisor gives up (LossTimeout) once the loss timeout has passed.",
            needs: Needs::NOTHING,
            run: connection_loss_backs_off_then_gives_up::<P>,
        },
        Case {
            name: "recovery::device_return_during_backoff_restarts_at_once",
            description: "A device unplugged and plugged back while a reconnect is pending \
                          restarts the service as soon as it returns, without waiting for the \
                          reconnect delay.",
            needs: FAULTS,
            run: device_return_during_backoff_restarts_at_once::<P>,
        },
    ]
}

// ----- the test service -----

/// What a [`Probe`] did, shared with the case.
struct Log<P: Provider> {
    /// Successful starts: generation and the device's identity.
    starts: Vec<(u64, DeviceIdentity)>,
    /// Starts refused on purpose.
    refused: u32,
    /// Every stop, with its reason.
    stops: Vec<StopReason>,
    /// Every QP failure the supervisor asked about, with the answer.
    qp_failures: Vec<(DeviceEvent, FailureAction)>,
    /// What the service runs now.
    running: Option<Running<P>>,
}

type SharedLog<P> = Arc<Mutex<Log<P>>>;

fn new_log<P: Provider>() -> SharedLog<P> {
    Arc::new(Mutex::new(Log {
        starts: Vec::new(),
        refused: 0,
        stops: Vec::new(),
        qp_failures: Vec::new(),
        running: None,
    }))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The resources of one start. Fields drop in order: the MRs before the pair's PD.
struct Running<P: Provider> {
    src: P::Mr,
    dst: P::Mr,
    pair: Loopback<P>,
    link: Link,
    sent: u64,
}

impl<P: Provider> Running<P> {
    /// Sends one 64-byte message from `a` to `b` and checks that it arrives intact.
    fn ping(&mut self, deadline: Instant) -> anyverbs::Result<()> {
        self.sent += 1;
        let tag = self.sent;
        let msg: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(tag as u8))
            .collect();
        self.src.write(0, &msg)?;
        let (recv_id, send_id) = (2 * tag, 2 * tag + 1);
        self.pair
            .b
            .post_recv(&[RecvWr::new(recv_id, &[self.dst.sge(0, 64)])])
            .map_err(|e| e.error)?;
        self.pair
            .a
            .post_send(&[SendWr::send(send_id, &[self.src.sge(0, 64)])])
            .map_err(|e| e.error)?;
        for (cq, wr_id, side) in [
            (&self.pair.cq_b, recv_id, "receive"),
            (&self.pair.cq_a, send_id, "send"),
        ] {
            let mut wc = [Completion::default(); 1];
            cq.wait(&mut wc, deadline)?;
            if wc[0].wr_id != wr_id || wc[0].status != WcStatus::Success {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "the {side} of a ping completed as {:?}; expected wr_id {wr_id} with \
                         success",
                        wc[0]
                    ),
                ));
            }
        }
        let mut got = vec![0; 64];
        self.dst.read(0, &mut got)?;
        if got != msg {
            return Err(Error::new(
                ErrorKind::Other,
                "a ping arrived with other bytes than were sent",
            ));
        }
        Ok(())
    }

    fn owns(&self, qp_num: u32) -> bool {
        qp_num == self.pair.a.qp_num() || qp_num == self.pair.b.qp_num()
    }
}

/// The test service: a connected pair of QPs on the device, checked with one message per start.
struct Probe<P: Provider> {
    log: SharedLog<P>,
    /// Longest the connection and the first message of a start may take.
    timeout: Duration,
    /// Every start after the first fails with `ConnectionRefused`.
    refuse_restarts: bool,
    /// What `accept_replacement` answers.
    adopt_replacements: bool,
}

impl<P: Provider> Probe<P> {
    fn new(ctx: &Ctx<'_, P>, log: &SharedLog<P>) -> Probe<P> {
        Probe {
            log: Arc::clone(log),
            timeout: ctx.timeout(),
            refuse_restarts: false,
            adopt_replacements: false,
        }
    }
}

impl<P: Provider> Service<P> for Probe<P> {
    fn start(&mut self, device: &P::Device, link: &Link) -> anyverbs::Result<()> {
        if self.refuse_restarts && !lock(&self.log).starts.is_empty() {
            lock(&self.log).refused += 1;
            return Err(Error::new(
                ErrorKind::ConnectionRefused,
                "the peer refuses every reconnection (as the case wants)",
            ));
        }
        let deadline = Instant::now() + self.timeout;
        let pair = loopback::<P>(
            device,
            &QpInit::default(),
            &ConnParams::default(),
            64,
            deadline,
        )?;
        let src = pair.pd.register(64, Access::LOCAL_WRITE)?;
        let dst = pair.pd.register(64, Access::LOCAL_WRITE)?;
        let mut running = Running {
            src,
            dst,
            pair,
            link: link.clone(),
            sent: 0,
        };
        running.ping(deadline)?;
        let mut log = lock(&self.log);
        log.starts
            .push((link.generation(), device.info().identity.clone()));
        log.running = Some(running);
        Ok(())
    }

    fn stop(&mut self, reason: &StopReason, deadline: Instant) {
        let running = {
            let mut log = lock(&self.log);
            log.stops.push(reason.clone());
            log.running.take()
        };
        if let Some(running) = running {
            // Fails at once on a lost device; drains for real after a connection loss.
            let _ = running.pair.a.drain(deadline);
            let _ = running.pair.b.drain(deadline);
        }
    }

    fn on_failure(&mut self, event: &DeviceEvent) -> FailureAction {
        let mut log = lock(&self.log);
        let ours = event
            .qp_num()
            .is_some_and(|n| log.running.as_ref().is_some_and(|r| r.owns(n)));
        let action = if ours {
            FailureAction::Restart
        } else {
            FailureAction::Ignore
        };
        log.qp_failures.push((event.clone(), action));
        action
    }

    fn accept_replacement(&mut self, _lost: &DeviceIdentity, _candidate: &DeviceInfo) -> bool {
        self.adopt_replacements
    }
}

// ----- helpers -----

/// A configuration with a short stop deadline, on `clock` if given (else real time).
fn config(clock: Option<&Arc<ManualClock>>) -> SupervisorConfig {
    let base = SupervisorConfig {
        stop_deadline: Duration::from_millis(500),
        ..SupervisorConfig::default()
    };
    match clock {
        Some(clock) => SupervisorConfig {
            clock: Arc::clone(clock) as Arc<dyn anyverbs::supervisor::Clock>,
            ..base
        },
        None => base,
    }
}

fn supervise<P: Provider>(
    ctx: &Ctx<'_, P>,
    selector: DeviceSelector,
    probe: Probe<P>,
    config: SupervisorConfig,
) -> Result<Supervisor<Probe<P>>, CaseError> {
    Supervisor::spawn(ctx.shared_provider(), selector, probe, config)
        .map_err(|e| CaseError::Failed(format!("cannot spawn a supervisor: {e}")))
}

/// The supervisor's decisions read so far, for failure messages.
fn history(seen: &[SupervisorEvent]) -> String {
    if seen.is_empty() {
        return "none".into();
    }
    seen.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads the supervisor's next decision by `deadline`; it must satisfy `test`.
fn expect_next(
    events: &EventStream<SupervisorReport>,
    want: &str,
    test: impl Fn(&SupervisorEvent) -> bool,
    deadline: Instant,
    seen: &mut Vec<SupervisorEvent>,
) -> Result<SupervisorReport, CaseError> {
    match events.recv(deadline) {
        Ok(report) => {
            seen.push(report.event.clone());
            if test(&report.event) {
                Ok(report)
            } else {
                Err(CaseError::Failed(format!(
                    "expected {want} next; the supervisor reported \"{}\" instead (its decisions \
                     so far: {})",
                    report.event,
                    history(seen)
                )))
            }
        }
        Err(e) => Err(CaseError::Failed(format!(
            "expected {want}; no decision came ({e}); the supervisor's decisions so far: {}",
            history(seen)
        ))),
    }
}

/// Fails if the supervisor reports anything within `quiet`.
fn expect_silence(
    events: &EventStream<SupervisorReport>,
    quiet: Duration,
    why: &str,
    seen: &mut Vec<SupervisorEvent>,
) -> CaseResult {
    match events.recv(Instant::now() + quiet) {
        Ok(report) => {
            seen.push(report.event.clone());
            Err(CaseError::Failed(format!(
                "expected no decision within {quiet:?} ({why}); the supervisor reported \"{}\" \
                 (its decisions so far: {})",
                report.event,
                history(seen)
            )))
        }
        Err(e) if e.kind() == ErrorKind::TimedOut => Ok(()),
        Err(e) => Err(CaseError::Failed(format!(
            "the supervisor's event stream failed: {e}"
        ))),
    }
}

fn started(
    generation: u64,
    on: impl Fn(&DeviceIdentity) -> bool,
) -> impl Fn(&SupervisorEvent) -> bool {
    move |e| {
        matches!(e, SupervisorEvent::Started { device, generation: g }
            if *g == generation && on(device))
    }
}

/// Waits for the first start on the device under test.
fn expect_first_start(
    ctx: &Ctx<'_, impl Provider>,
    events: &EventStream<SupervisorReport>,
    seen: &mut Vec<SupervisorEvent>,
) -> Result<DeviceIdentity, CaseError> {
    let old = ctx.info().identity.clone();
    let report = expect_next(
        events,
        &format!("Started on {} (start 1)", ctx.device_name()),
        started(1, |d| d.is_same_device(&old)),
        ctx.deadline(),
        seen,
    )?;
    match report.event {
        SupervisorEvent::Started { device, .. } => Ok(device),
        _ => unreachable!("checked by expect_next"),
    }
}

/// Sends one message through what the service runs now.
fn ping_service<P: Provider>(ctx: &Ctx<'_, P>, log: &SharedLog<P>, who: &str) -> CaseResult {
    let mut log = lock(log);
    let Some(running) = log.running.as_mut() else {
        return Err(CaseError::Failed(format!(
            "{who} should be running, but it holds nothing"
        )));
    };
    running
        .ping(ctx.deadline())
        .map_err(|e| CaseError::Failed(format!("{who} cannot pass data: {e}")))
}

/// Waits (in real time, by `deadline`) until the supervisor's thread has ended.
fn expect_finished<S: Send + 'static>(sup: &Supervisor<S>, deadline: Instant) -> CaseResult {
    while !sup.is_finished() {
        ensure!(
            Instant::now() < deadline,
            "the supervisor gave up but its thread is still running"
        );
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The lost-device prelude: `cause` reported, the service stopped, the supervisor waiting.
fn expect_device_lost(
    ctx: &Ctx<'_, impl Provider>,
    events: &EventStream<SupervisorReport>,
    lost: &DeviceIdentity,
    cause: LossCause,
    seen: &mut Vec<SupervisorEvent>,
) -> Result<SupervisorReport, CaseError> {
    expect_next(
        events,
        &format!("DeviceLost ({cause})"),
        |e| {
            matches!(e, SupervisorEvent::DeviceLost { device, cause: c }
                if device == lost && *c == cause)
        },
        ctx.deadline(),
        seen,
    )?;
    expect_next(
        events,
        &format!("Stopped (device lost: {cause})"),
        |e| {
            matches!(e, SupervisorEvent::Stopped { reason: StopReason::DeviceLost(c) }
                if *c == cause)
        },
        ctx.deadline(),
        seen,
    )?;
    expect_next(
        events,
        "WaitingForDevice",
        |e| matches!(e, SupervisorEvent::WaitingForDevice { .. }),
        ctx.deadline(),
        seen,
    )
}

/// The return of the same device: DeviceReturned, then Started with `generation`, both on a
/// new incarnation of `old`. Returns the new identity.
fn expect_return(
    ctx: &Ctx<'_, impl Provider>,
    events: &EventStream<SupervisorReport>,
    old: &DeviceIdentity,
    generation: u64,
    seen: &mut Vec<SupervisorEvent>,
) -> Result<DeviceIdentity, CaseError> {
    let new_incarnation = |d: &DeviceIdentity| d.is_same_device(old) && d.index != old.index;
    let report = expect_next(
        events,
        "DeviceReturned (the same device, with a new index)",
        |e| matches!(e, SupervisorEvent::DeviceReturned { device } if new_incarnation(device)),
        ctx.deadline(),
        seen,
    )?;
    let SupervisorEvent::DeviceReturned { device: back } = report.event else {
        unreachable!("checked by expect_next")
    };
    expect_next(
        events,
        &format!("Started on the returned device (start {generation})"),
        started(generation, |d| *d == back),
        ctx.deadline(),
        seen,
    )?;
    Ok(back)
}

/// Checks where the supervisor says the service is.
fn expect_state<S: Send + 'static>(
    sup: &Supervisor<S>,
    want: &str,
    test: impl Fn(&SupervisorState) -> bool,
) -> CaseResult {
    let state = sup.state();
    ensure!(
        state.as_ref().is_some_and(test),
        "the supervisor's state is {state:?}; expected {want}"
    );
    Ok(())
}

// ----- the cases -----

fn restarts_after_reset<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let log = new_log::<P>();
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        Probe::new(ctx, &log),
        config(None),
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let old = expect_first_start(ctx, events, &mut seen)?;

    inject(ctx, &Fault::Reset { down_for: DOWN_FOR })?;
    expect_device_lost(ctx, events, &old, LossCause::Fatal, &mut seen)?;
    let back = expect_return(ctx, events, &old, 2, &mut seen)?;
    expect_state(&sup, &format!("Running on {back}"), |s| {
        *s == SupervisorState::Running(back.clone())
    })?;
    ping_service(ctx, &log, "the service restarted after the reset")?;
    {
        let log = lock(&log);
        ensure_eq!(log.starts.len(), 2, "successful starts");
        ensure_eq!(
            log.stops,
            vec![StopReason::DeviceLost(LossCause::Fatal)],
            "stops"
        );
    }

    let tail = sup
        .subscribe()
        .map_err(|e| CaseError::Failed(format!("cannot subscribe to the supervisor: {e}")))?;
    sup.shutdown(ctx.deadline())
        .map_err(|e| CaseError::Failed(format!("shutdown failed: {e}")))?;
    expect_next(
        &tail,
        "Stopped (shutdown)",
        |e| {
            matches!(
                e,
                SupervisorEvent::Stopped {
                    reason: StopReason::Shutdown
                }
            )
        },
        ctx.deadline(),
        &mut seen,
    )?;
    expect_next(
        &tail,
        "ShutDown",
        |e| matches!(e, SupervisorEvent::ShutDown),
        ctx.deadline(),
        &mut seen,
    )?;
    let log = lock(&log);
    ensure_eq!(log.stops.len(), 2, "stops after shutdown (one per start)");
    ensure!(
        log.running.is_none(),
        "the service holds resources after shutdown"
    );
    Ok(())
}

fn restarts_after_replug<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let log = new_log::<P>();
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        Probe::new(ctx, &log),
        config(None),
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let old = expect_first_start(ctx, events, &mut seen)?;

    inject(ctx, &Fault::Unplug)?;
    expect_device_lost(ctx, events, &old, LossCause::Removed, &mut seen)?;
    inject(ctx, &Fault::Replug)?;
    let back = expect_return(ctx, events, &old, 2, &mut seen)?;
    expect_state(&sup, &format!("Running on {back}"), |s| {
        *s == SupervisorState::Running(back.clone())
    })?;
    ping_service(ctx, &log, "the service restarted after the replug")?;
    ensure_eq!(lock(&log).starts.len(), 2, "successful starts");
    Ok(())
}

/// Unplugs the device under a running supervisor and plugs a different device in under its
/// name; returns the identity the supervisor reported finding, after checking ForeignDevice.
fn swap_the_card<P: Provider>(
    ctx: &Ctx<'_, P>,
    events: &EventStream<SupervisorReport>,
    adopted: bool,
    seen: &mut Vec<SupervisorEvent>,
) -> Result<DeviceIdentity, CaseError> {
    let old = expect_first_start(ctx, events, seen)?;
    inject(ctx, &Fault::Unplug)?;
    expect_device_lost(ctx, events, &old, LossCause::Removed, seen)?;
    inject(ctx, &Fault::ReplugOther)?;
    let report = expect_next(
        events,
        &format!(
            "ForeignDevice (a different device under {}, adopted: {adopted})",
            ctx.device_name()
        ),
        |e| {
            matches!(e, SupervisorEvent::ForeignDevice { expected, found, adopted: a }
                if *expected == old
                    && found.name == old.name
                    && !found.is_same_device(&old)
                    && *a == adopted)
        },
        ctx.deadline(),
        seen,
    )?;
    let SupervisorEvent::ForeignDevice { found, .. } = report.event else {
        unreachable!("checked by expect_next")
    };
    Ok(found)
}

fn refuses_a_foreign_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let log = new_log::<P>();
    // By name: the supervisor must follow the identity it found at the first start, never the
    // name.
    let sup = supervise(
        ctx,
        DeviceSelector::Name(ctx.device_name().to_string()),
        Probe::new(ctx, &log),
        config(None),
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    swap_the_card(ctx, events, false, &mut seen)?;
    expect_silence(
        events,
        QUIET,
        "a different device must not be started on",
        &mut seen,
    )?;
    expect_state(&sup, "WaitingForDevice", |s| {
        *s == SupervisorState::WaitingForDevice
    })?;
    ensure!(!sup.is_finished(), "the supervisor's thread ended");
    let log = lock(&log);
    ensure_eq!(
        log.starts.len(),
        1,
        "starts (the foreign device must not get one)"
    );
    ensure!(
        log.running.is_none(),
        "the service holds resources while the device is away"
    );
    Ok(())
}

fn adopts_an_accepted_replacement<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let log = new_log::<P>();
    let probe = Probe {
        adopt_replacements: true,
        ..Probe::new(ctx, &log)
    };
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        probe,
        config(None),
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let found = swap_the_card(ctx, events, true, &mut seen)?;
    expect_next(
        events,
        "Started on the adopted device (start 2)",
        started(2, |d| *d == found),
        ctx.deadline(),
        &mut seen,
    )?;
    expect_state(&sup, &format!("Running on {found}"), |s| {
        *s == SupervisorState::Running(found.clone())
    })?;
    ping_service(ctx, &log, "the service started on the adopted device")?;
    Ok(())
}

fn gives_up_after_the_window<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let real = Instant::now();
    let clock = ManualClock::new();
    let config = config(Some(&clock));
    let Some(window) = config.return_window else {
        return Err(CaseError::Failed(
            "the default return window is \"forever\"; the issue asks for 10 minutes".into(),
        ));
    };
    ensure_eq!(
        window,
        Duration::from_secs(600),
        "the default return window"
    );
    let log = new_log::<P>();
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        Probe::new(ctx, &log),
        config,
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let old = expect_first_start(ctx, events, &mut seen)?;

    inject(ctx, &Fault::Unplug)?;
    let waiting = expect_device_lost(ctx, events, &old, LossCause::Removed, &mut seen)?;
    let SupervisorEvent::WaitingForDevice { give_up_at, .. } = waiting.event else {
        unreachable!("checked by expect_device_lost")
    };
    ensure_eq!(
        give_up_at,
        Some(waiting.at + window),
        "when the supervisor says it will give up (on its clock)"
    );

    clock.advance(window - Duration::from_secs(1));
    expect_silence(
        events,
        QUIET / 2,
        "one second of the return window is left",
        &mut seen,
    )?;
    expect_state(&sup, "WaitingForDevice", |s| {
        *s == SupervisorState::WaitingForDevice
    })?;
    ensure!(
        !sup.is_finished(),
        "the supervisor's thread ended before the window passed"
    );

    clock.advance(Duration::from_secs(2));
    expect_next(
        events,
        "GaveUp (the window expired)",
        |e| {
            matches!(
                e,
                SupervisorEvent::GaveUp {
                    reason: GiveUp::WindowExpired
                }
            )
        },
        ctx.deadline(),
        &mut seen,
    )?;
    expect_finished(&sup, Instant::now() + Duration::from_secs(1))?;
    expect_state(&sup, "GaveUp(WindowExpired)", |s| {
        *s == SupervisorState::GaveUp(GiveUp::WindowExpired)
    })?;
    {
        let log = lock(&log);
        ensure_eq!(log.starts.len(), 1, "starts");
        ensure_eq!(log.stops.len(), 1, "stops");
    }
    let took = real.elapsed();
    ensure!(
        took < Duration::from_secs(2),
        "a 10-minute window on a manual clock took {took:?} of real time"
    );
    Ok(())
}

fn qp_fatal_restarts_only_its_service<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let clock = ManualClock::new();
    let selector = || DeviceSelector::Identity(ctx.info().identity.clone());
    let log_a = new_log::<P>();
    let log_b = new_log::<P>();
    let sup_a = supervise(
        ctx,
        selector(),
        Probe::new(ctx, &log_a),
        config(Some(&clock)),
    )?;
    let sup_b = supervise(
        ctx,
        selector(),
        Probe::new(ctx, &log_b),
        config(Some(&clock)),
    )?;
    let (events_a, events_b) = (sup_a.events(), sup_b.events());
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    expect_first_start(ctx, events_a, &mut seen_a)?;
    expect_first_start(ctx, events_b, &mut seen_b)?;
    let (killed, b_qps) = {
        let a = lock(&log_a);
        let b = lock(&log_b);
        let (Some(a), Some(b)) = (a.running.as_ref(), b.running.as_ref()) else {
            return Err(CaseError::Failed(
                "a service reported started holds nothing".into(),
            ));
        };
        (a.pair.a.qp_num(), [b.pair.a.qp_num(), b.pair.b.qp_num()])
    };

    inject(ctx, &Fault::KillQp { qp_num: killed })?;
    let lost = expect_next(
        events_a,
        &format!("ConnectionLost for the killed QP {killed}"),
        |e| matches!(e, SupervisorEvent::ConnectionLost { .. }),
        ctx.deadline(),
        &mut seen_a,
    )?;
    if let SupervisorEvent::ConnectionLost { reason } = &lost.event {
        ensure!(
            reason.contains(&killed.to_string()),
            "the ConnectionLost reason {reason:?} does not name the killed QP {killed}"
        );
    }
    expect_next(
        events_a,
        "Stopped (connection lost)",
        |e| {
            matches!(
                e,
                SupervisorEvent::Stopped {
                    reason: StopReason::ConnectionLost(_)
                }
            )
        },
        ctx.deadline(),
        &mut seen_a,
    )?;
    let delay = SupervisorConfig::default().reconnect_delay;
    expect_next(
        events_a,
        &format!("RestartScheduled (attempt 0 in {delay:?})"),
        |e| matches!(e, SupervisorEvent::RestartScheduled { attempt: 0, delay: d } if *d == delay),
        ctx.deadline(),
        &mut seen_a,
    )?;
    expect_silence(
        events_a,
        QUIET / 4,
        "the reconnect delay has not passed on the supervisor's clock",
        &mut seen_a,
    )?;
    clock.advance(delay);
    expect_next(
        events_a,
        "Started (start 2) once the reconnect delay passed",
        started(2, |d| *d == ctx.info().identity),
        ctx.deadline(),
        &mut seen_a,
    )?;
    ping_service(ctx, &log_a, "the restarted service")?;

    // The other service: asked about the failure, declined it, and was left alone.
    let deadline = ctx.deadline();
    loop {
        let asked = lock(&log_b)
            .qp_failures
            .iter()
            .any(|(e, _)| e.qp_num() == Some(killed));
        if asked {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the second supervisor never passed QP {killed}'s failure to its service"
        );
        thread::sleep(Duration::from_millis(1));
    }
    expect_silence(
        events_b,
        Duration::ZERO,
        "a QP of another service failed",
        &mut seen_b,
    )?;
    {
        let log = lock(&log_b);
        ensure_eq!(log.starts.len(), 1, "starts of the untouched service");
        ensure!(
            log.stops.is_empty(),
            "the untouched service was stopped: {:?}",
            log.stops
        );
        ensure!(
            log.qp_failures
                .iter()
                .all(|(_, action)| *action == FailureAction::Ignore),
            "the untouched service was asked to restart for {:?}",
            log.qp_failures
        );
        let Some(running) = log.running.as_ref() else {
            return Err(CaseError::Failed(
                "the untouched service no longer holds its QPs".into(),
            ));
        };
        ensure_eq!(
            [running.pair.a.qp_num(), running.pair.b.qp_num()],
            b_qps,
            "QPs of the untouched service"
        );
    }
    ping_service(ctx, &log_b, "the untouched service")?;
    ensure_eq!(
        lock(&log_a).starts.len(),
        2,
        "starts of the restarted service"
    );
    Ok(())
}

fn connection_loss_backs_off_then_gives_up<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const DELAY: Duration = Duration::from_secs(10);
    const MAX_DELAY: Duration = Duration::from_secs(40);
    const LOSS: Duration = Duration::from_secs(60);
    let real = Instant::now();
    let clock = ManualClock::new();
    let config = SupervisorConfig {
        reconnect_delay: DELAY,
        max_reconnect_delay: MAX_DELAY,
        loss_timeout: Some(LOSS),
        ..config(Some(&clock))
    };
    let log = new_log::<P>();
    let probe = Probe {
        refuse_restarts: true,
        ..Probe::new(ctx, &log)
    };
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        probe,
        config,
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    expect_first_start(ctx, events, &mut seen)?;
    let link = lock(&log)
        .running
        .as_ref()
        .map(|r| r.link.clone())
        .ok_or_else(|| CaseError::Failed("the started service holds nothing".into()))?;
    link.connection_lost("the case says the peer went away");
    let lost = expect_next(
        events,
        "ConnectionLost",
        |e| {
            matches!(e, SupervisorEvent::ConnectionLost { reason }
                if reason.contains("peer went away"))
        },
        ctx.deadline(),
        &mut seen,
    )?;
    expect_next(
        events,
        "Stopped (connection lost)",
        |e| {
            matches!(
                e,
                SupervisorEvent::Stopped {
                    reason: StopReason::ConnectionLost(_)
                }
            )
        },
        ctx.deadline(),
        &mut seen,
    )?;
    // 10 s, then 20 s, then the 40 s maximum cut to the 30 s left of the loss timeout: the last
    // attempt is made at the loss timeout itself, and fails.
    let delays = [DELAY, DELAY * 2, LOSS - DELAY * 3];
    for (attempt, delay) in (0u32..).zip(delays) {
        expect_next(
            events,
            &format!("RestartScheduled (attempt {attempt} in {delay:?})"),
            |e| {
                matches!(e, SupervisorEvent::RestartScheduled { attempt: a, delay: d }
                    if *a == attempt && *d == delay)
            },
            ctx.deadline(),
            &mut seen,
        )?;
        clock.advance(delay - Duration::from_secs(1));
        expect_silence(
            events,
            QUIET / 4,
            "one second of the reconnect delay is left",
            &mut seen,
        )?;
        clock.advance(Duration::from_secs(1));
        expect_next(
            events,
            &format!("StartFailed (ConnectionRefused) at attempt {attempt}"),
            |e| {
                matches!(
                    e,
                    SupervisorEvent::StartFailed {
                        kind: ErrorKind::ConnectionRefused,
                        ..
                    }
                )
            },
            ctx.deadline(),
            &mut seen,
        )?;
        expect_next(
            events,
            "Stopped (start failed)",
            |e| {
                matches!(
                    e,
                    SupervisorEvent::Stopped {
                        reason: StopReason::StartFailed
                    }
                )
            },
            ctx.deadline(),
            &mut seen,
        )?;
    }
    let gave_up = expect_next(
        events,
        "GaveUp (the loss timeout passed)",
        |e| {
            matches!(
                e,
                SupervisorEvent::GaveUp {
                    reason: GiveUp::LossTimeout
                }
            )
        },
        ctx.deadline(),
        &mut seen,
    )?;
    let outage = gave_up.at.saturating_duration_since(lost.at);
    ensure!(
        outage == LOSS,
        "the supervisor gave up {outage:?} (on its clock) after the connection loss, not at the \
         loss timeout ({LOSS:?})"
    );
    expect_finished(&sup, Instant::now() + Duration::from_secs(1))?;
    let log = lock(&log);
    ensure_eq!(log.starts.len(), 1, "successful starts");
    ensure_eq!(log.refused, 3, "refused restarts");
    ensure_eq!(log.stops.len(), 4, "stops (one per start, failed ones too)");
    let took = real.elapsed();
    ensure!(
        took < Duration::from_secs(2),
        "70 s of backoff on a manual clock took {took:?} of real time"
    );
    Ok(())
}

fn device_return_during_backoff_restarts_at_once<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let clock = ManualClock::new();
    let log = new_log::<P>();
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        Probe::new(ctx, &log),
        config(Some(&clock)),
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let old = expect_first_start(ctx, events, &mut seen)?;
    let link = lock(&log)
        .running
        .as_ref()
        .map(|r| r.link.clone())
        .ok_or_else(|| CaseError::Failed("the started service holds nothing".into()))?;
    link.connection_lost("the case says the peer went away");
    for (want, test) in [
        (
            "ConnectionLost",
            (|e: &SupervisorEvent| matches!(e, SupervisorEvent::ConnectionLost { .. }))
                as fn(&SupervisorEvent) -> bool,
        ),
        ("Stopped (connection lost)", |e| {
            matches!(
                e,
                SupervisorEvent::Stopped {
                    reason: StopReason::ConnectionLost(_)
                }
            )
        }),
        ("RestartScheduled (attempt 0)", |e| {
            matches!(e, SupervisorEvent::RestartScheduled { attempt: 0, .. })
        }),
    ] {
        expect_next(events, want, test, ctx.deadline(), &mut seen)?;
    }

    inject(ctx, &Fault::Unplug)?;
    expect_next(
        events,
        "DeviceLost (removed) while a reconnect is pending",
        |e| {
            matches!(e, SupervisorEvent::DeviceLost { device, cause: LossCause::Removed }
                if *device == old)
        },
        ctx.deadline(),
        &mut seen,
    )?;
    expect_next(
        events,
        "WaitingForDevice",
        |e| matches!(e, SupervisorEvent::WaitingForDevice { .. }),
        ctx.deadline(),
        &mut seen,
    )?;
    inject(ctx, &Fault::Replug)?;
    expect_return(ctx, events, &old, 2, &mut seen)?;
    ensure_eq!(
        clock.elapsed(),
        Duration::ZERO,
        "time the case moved the supervisor's clock"
    );
    ping_service(ctx, &log, "the service restarted on the returned device")?;
    Ok(())
}
