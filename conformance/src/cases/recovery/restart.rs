//! Restarting on the same device, and refusing or adopting a different one.

use anyverbs::supervisor::{DeviceSelector, StopReason, SupervisorEvent};
use anyverbs::supervisor::{LossCause, SupervisorReport, SupervisorState};
use anyverbs::{DeviceIdentity, EventStream, Fault, Provider};

use super::probe::*;
use crate::case::{CaseError, CaseResult};
use crate::cases::lifecycle::{DOWN_FOR, QUIET, inject};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

pub(super) fn restarts_after_reset<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
    expect_device_lost(ctx, events, &old, reset_cause(ctx), &mut seen)?;
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
            vec![StopReason::DeviceLost(reset_cause(ctx))],
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

pub(super) fn restarts_after_replug<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
pub(super) fn swap_the_card<P: Provider>(
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

pub(super) fn refuses_a_foreign_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn adopts_an_accepted_replacement<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
