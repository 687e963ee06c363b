//! Connection failures: restarting only the failed service, backing off, giving up after the loss timeout, and restarting at once when the device returns.

use std::thread;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{
    DeviceSelector, FailureAction, StopReason, SupervisorConfig, SupervisorEvent,
};
use anyverbs::supervisor::{GiveUp, LossCause, ManualClock};
use anyverbs::{ErrorKind, Fault, Provider, QueuePair};

use super::probe::*;
use crate::case::{CaseError, CaseResult};
use crate::cases::lifecycle::{QUIET, inject};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

pub(super) fn qp_fatal_restarts_only_its_service<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn connection_loss_backs_off_then_gives_up<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn device_return_during_backoff_restarts_at_once<P: Provider>(
    ctx: &Ctx<'_, P>,
) -> CaseResult {
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
