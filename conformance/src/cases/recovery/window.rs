//! Waiting for a lost device, and giving up after the return window.

use std::time::{Duration, Instant};

use anyverbs::supervisor::{DeviceSelector, SupervisorEvent};
use anyverbs::supervisor::{GiveUp, LossCause, ManualClock, SupervisorState};
use anyverbs::{ErrorKind, Fault, HeldObjects, Provider};

use super::probe::*;
use crate::case::{CaseError, CaseResult};
use crate::cases::lifecycle::{QUIET, inject};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

pub(super) fn gives_up_after_the_window<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn reports_what_keeps_the_device_away<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let name = ctx.device_name();
    match ctx.provider().held_objects(name) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotSupported => {
            return Err(CaseError::NotRun(format!(
                "the provider does not count the objects held of a device: {e}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let clock = ManualClock::new();
    let config = config(Some(&clock));
    let (window, interval) = (
        config.return_window.unwrap_or(Duration::from_secs(600)),
        config.held_check_interval,
    );
    let log = new_log::<P>();
    let mut probe = Probe::new(ctx, &log);
    probe.keep_on_stop = true;
    let sup = supervise(
        ctx,
        DeviceSelector::Identity(ctx.info().identity.clone()),
        probe,
        config,
    )?;
    let events = sup.events();
    let mut seen = Vec::new();
    let old = expect_first_start(ctx, events, &mut seen)?;

    // A reset device comes back only once every object of its old incarnation is released;
    // the service keeps them all.
    inject(
        ctx,
        &Fault::Reset {
            down_for: Duration::ZERO,
        },
    )?;
    expect_device_lost(ctx, events, &old, reset_cause(ctx), &mut seen)?;
    let want = HeldObjects {
        qps: 2,
        cqs: 2,
        mrs: 2,
        pds: 1,
        listeners: 1,
        devices: 0,
        channels: 0,
    };
    let is_held = |e: &SupervisorEvent| {
        matches!(e, SupervisorEvent::DeviceHeld { device, held }
            if *held == want && device.contains(name))
    };
    let what = format!("DeviceHeld ({want} of {name})");
    expect_next(events, &what, is_held, ctx.deadline(), &mut seen)?;

    // Checked again at each interval, reported only on a change.
    clock.advance(interval);
    expect_silence(events, QUIET / 2, "nothing held changed", &mut seen)?;

    // Right before giving up, what is still held is said again.
    clock.advance(window);
    expect_next(events, &what, is_held, ctx.deadline(), &mut seen)?;
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

    // Released, nothing of the device is held any more.
    let kept = std::mem::take(&mut lock(&log).kept);
    ensure_eq!(kept.len(), 1, "starts whose objects the service kept");
    drop(kept);
    let held = ctx.provider().held_objects(name)?;
    ensure!(
        held.is_empty(),
        "after the service released everything, the provider still counts {held} of {name}"
    );
    Ok(())
}
