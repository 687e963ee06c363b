//! Waiting for a lost device, and giving up after the return window.

use std::time::{Duration, Instant};

use anyverbs::supervisor::{GiveUp, LossCause, ManualClock, SupervisorState};
use anyverbs::{DeviceSelector, Fault, Provider, SupervisorEvent};

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
