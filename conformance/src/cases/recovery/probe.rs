//! The test service every recovery case supervises ([`Probe`]), what it logs, and the helpers
//! that read the supervisor's decisions.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{
    DeviceSelector, FailureAction, Link, Service, StopReason, Supervisor, SupervisorConfig,
    SupervisorEvent,
};
use anyverbs::supervisor::{LossCause, ManualClock, SupervisorReport, SupervisorState};
use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, DeviceEvent, DeviceIdentity,
    DeviceInfo, Error, ErrorKind, EventStream, MemoryRegion, ProtectionDomain, Provider, QpInit,
    QueuePair, RecvWr, SendWr, WcStatus,
};

use crate::case::{CaseError, CaseResult};
use crate::ctx::{Ctx, Loopback, loopback};
use crate::ensure;

// ----- the test service -----

/// What a [`Probe`] did, shared with the case.
pub(super) struct Log<P: Provider> {
    /// Successful starts: generation and the device's identity.
    pub(super) starts: Vec<(u64, DeviceIdentity)>,
    /// Starts refused on purpose.
    pub(super) refused: u32,
    /// Every stop, with its reason.
    pub(super) stops: Vec<StopReason>,
    /// Every QP failure the supervisor asked about, with the answer.
    pub(super) qp_failures: Vec<(DeviceEvent, FailureAction)>,
    /// What the service runs now.
    pub(super) running: Option<Running<P>>,
    /// What a [`Probe`] that keeps its objects on stop (`keep_on_stop`) kept.
    pub(super) kept: Vec<Running<P>>,
}

pub(super) type SharedLog<P> = Arc<Mutex<Log<P>>>;

pub(super) fn new_log<P: Provider>() -> SharedLog<P> {
    Arc::new(Mutex::new(Log {
        starts: Vec::new(),
        refused: 0,
        stops: Vec::new(),
        qp_failures: Vec::new(),
        running: None,
        kept: Vec::new(),
    }))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The resources of one start. Fields drop in order: the MRs before the pair's PD.
pub(super) struct Running<P: Provider> {
    pub(super) src: P::Mr,
    pub(super) dst: P::Mr,
    pub(super) pair: Loopback<P>,
    pub(super) link: Link,
    pub(super) sent: u64,
}

impl<P: Provider> Running<P> {
    /// Sends one 64-byte message from `a` to `b` and checks that it arrives intact.
    pub(super) fn ping(&mut self, deadline: Instant) -> anyverbs::Result<()> {
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

    pub(super) fn owns(&self, qp_num: u32) -> bool {
        qp_num == self.pair.a.qp_num() || qp_num == self.pair.b.qp_num()
    }
}

/// The test service: a connected pair of QPs on the device, checked with one message per start.
pub(super) struct Probe<P: Provider> {
    pub(super) log: SharedLog<P>,
    /// Longest the connection and the first message of a start may take.
    pub(super) timeout: Duration,
    /// Every start after the first fails with `ConnectionRefused`.
    pub(super) refuse_restarts: bool,
    /// What `accept_replacement` answers.
    pub(super) adopt_replacements: bool,
    /// `stop` keeps every object of the start in the log instead of releasing it, as a ULP
    /// that leaks them would.
    pub(super) keep_on_stop: bool,
}

impl<P: Provider> Probe<P> {
    pub(super) fn new(ctx: &Ctx<'_, P>, log: &SharedLog<P>) -> Probe<P> {
        Probe {
            log: Arc::clone(log),
            timeout: ctx.timeout(),
            refuse_restarts: false,
            adopt_replacements: false,
            keep_on_stop: false,
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
            if self.keep_on_stop {
                lock(&self.log).kept.push(running);
            }
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
pub(super) fn config(clock: Option<&Arc<ManualClock>>) -> SupervisorConfig {
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

pub(super) fn supervise<P: Provider>(
    ctx: &Ctx<'_, P>,
    selector: DeviceSelector,
    probe: Probe<P>,
    config: SupervisorConfig,
) -> Result<Supervisor<Probe<P>>, CaseError> {
    Supervisor::spawn(ctx.shared_provider(), selector, probe, config)
        .map_err(|e| CaseError::Failed(format!("cannot spawn a supervisor: {e}")))
}

/// The supervisor's decisions read so far, for failure messages.
pub(super) fn history(seen: &[SupervisorEvent]) -> String {
    if seen.is_empty() {
        return "none".into();
    }
    seen.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads the supervisor's next decision by `deadline`; it must satisfy `test`.
pub(super) fn expect_next(
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
pub(super) fn expect_silence(
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

pub(super) fn started(
    generation: u64,
    on: impl Fn(&DeviceIdentity) -> bool,
) -> impl Fn(&SupervisorEvent) -> bool {
    move |e| {
        matches!(e, SupervisorEvent::Started { device, generation: g }
            if *g == generation && on(device))
    }
}

/// Waits for the first start on the device under test.
pub(super) fn expect_first_start(
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
pub(super) fn ping_service<P: Provider>(
    ctx: &Ctx<'_, P>,
    log: &SharedLog<P>,
    who: &str,
) -> CaseResult {
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
pub(super) fn expect_finished<S: Send + 'static>(
    sup: &Supervisor<S>,
    deadline: Instant,
) -> CaseResult {
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
/// What the supervisor reports as the cause of a reset of the device under test: a fatal error
/// where the device reports one ([`Caps::DEVICE_FATAL`](anyverbs::Caps::DEVICE_FATAL)), a
/// removal where a reset is a delete and re-add (rxe, siw).
pub(super) fn reset_cause<P: Provider>(ctx: &Ctx<'_, P>) -> LossCause {
    if ctx.info().caps.contains(anyverbs::Caps::DEVICE_FATAL) {
        LossCause::Fatal
    } else {
        LossCause::Removed
    }
}

pub(super) fn expect_device_lost(
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
pub(super) fn expect_return(
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
pub(super) fn expect_state<S: Send + 'static>(
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
