//! Devices going and coming back: the loss events, the monitor's removals and additions, and
//! the identities that tell a returning device from a stranger under the same name.

use std::time::Instant;

use anyverbs::{Device, DeviceEvent, ErrorKind, EventStream, Fault, MonitorEvent, Provider};

use super::{
    DOWN_FOR, QUIET, await_event, expect_lost, expect_no_event, expect_stream_ended, inject, list,
    loss_event,
};
use crate::case::{CaseError, CaseResult};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// After `fault` (a reset or an unplug) of the device `old`: its stream's last event is the loss
/// event (DeviceFatal for a reset on a device with DEVICE_FATAL, DeviceRemoved otherwise) with no other loss event before it,
/// the stream then ends, `events()` fails with DeviceLost, and the monitor reports `old`
/// removed.
pub(super) fn expect_loss<P: Provider>(
    ctx: &Ctx<'_, P>,
    device: &P::Device,
    events: &EventStream<DeviceEvent>,
    monitor: &EventStream<MonitorEvent>,
    fault: &Fault,
    old: &anyverbs::DeviceIdentity,
) -> CaseResult {
    let last = loss_event(fault, ctx.info().caps);
    let what = format!("the {fault}");
    let (_, before) = await_event(
        events,
        &format!("{last} after {what}"),
        |e| *e == last,
        ctx.deadline(),
    )?;
    ensure!(
        !before.iter().any(DeviceEvent::is_device_lost),
        "{what} reported {} before {last}",
        list(&before)
    );
    expect_stream_ended(events, &format!("{last}"), ctx.deadline())?;
    expect_lost(&format!("device.events() after {what}"), || device.events())?;
    let name = ctx.device_name();
    let (removed, _) = await_event(
        monitor,
        &format!("the monitor reporting {name} removed after {what}"),
        |e| removed_named(e, name),
        ctx.deadline(),
    )?;
    ensure_eq!(
        removed.identity(),
        old,
        "identity the monitor reports removed"
    );
    Ok(())
}

/// Whether a monitor event is about a device named `name` being added.
fn added_named(e: &MonitorEvent, name: &str) -> bool {
    matches!(e, MonitorEvent::Added(info) if info.identity.name == name)
}

/// Whether a monitor event is about a device named `name` being removed.
fn removed_named(e: &MonitorEvent, name: &str) -> bool {
    matches!(e, MonitorEvent::Removed(identity) if identity.name == name)
}

/// Waits for the monitor to report a device named `name` added, and returns its info.
fn await_added(
    monitor: &EventStream<MonitorEvent>,
    name: &str,
    what: &str,
    deadline: Instant,
) -> Result<anyverbs::DeviceInfo, CaseError> {
    let (added, _) = await_event(monitor, what, |e| added_named(e, name), deadline)?;
    match added {
        MonitorEvent::Added(info) => Ok(info),
        other => Err(CaseError::Failed(format!("expected {what}, got {other:?}"))),
    }
}

pub(super) fn reset_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let name = ctx.device_name();
    let monitor = ctx.provider().monitor()?;
    let device = ctx.open()?;
    let old = device.info().identity.clone();
    let events = device.events()?;
    // An object of the old device, held past down_for: the device must not return before it is
    // released, as the kernel's unregistration waits for every user.
    let pd = device.alloc_pd()?;

    let injected = Instant::now();
    inject(ctx, &Fault::Reset { down_for: DOWN_FOR })?;
    expect_loss(
        ctx,
        &device,
        &events,
        &monitor,
        &Fault::Reset { down_for: DOWN_FOR },
        &old,
    )?;

    let held = expect_no_event(
        &monitor,
        (DOWN_FOR * 4).saturating_sub(injected.elapsed()),
        &format!("{name} not to come back while a PD of its old life is held"),
        |e| added_named(e, name),
    )?;
    ensure!(
        held.is_empty(),
        "unexpected monitor events: {}",
        list(&held)
    );
    drop(pd);
    drop(events);
    drop(device);

    let info = await_added(
        &monitor,
        name,
        &format!("the monitor reporting {name} added back once the old objects were released"),
        ctx.deadline(),
    )?;
    let back = info.identity;
    ensure!(
        injected.elapsed() >= DOWN_FOR,
        "the device came back {:?} after the reset, before down_for ({DOWN_FOR:?})",
        injected.elapsed()
    );
    expect_same_device_back(ctx, &old, &back, "the reset")
}

/// The device `back` that returned after `what` is `old` by the identity rule, with a new index;
/// the provider lists it (and only it) under the name, and it opens and works.
fn expect_same_device_back<P: Provider>(
    ctx: &Ctx<'_, P>,
    old: &anyverbs::DeviceIdentity,
    back: &anyverbs::DeviceIdentity,
    what: &str,
) -> CaseResult {
    let name = ctx.device_name();
    ensure!(
        old.is_same_device(back),
        "the device back after {what} is not the same device by the identity rule: before \
         {old}, after {back}"
    );
    ensure!(
        back.index != old.index,
        "the device came back after {what} with its old index {}; a re-added device gets a new \
         one ({back})",
        old.index
    );
    let listed = ctx.provider().devices()?;
    let listed: Vec<_> = listed.iter().filter(|d| d.identity.name == name).collect();
    ensure!(
        listed.len() == 1 && listed[0].identity == *back,
        "after {what} the provider lists {listed:?} for {name}; expected just {back}"
    );
    let reopened = ctx.open()?;
    ensure!(
        reopened.info().identity == *back,
        "the device opened after {what} is {}; the monitor announced {back}",
        reopened.info().identity
    );
    reopened.alloc_pd()?;
    reopened.events()?;
    Ok(())
}

pub(super) fn unplug_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let name = ctx.device_name();
    let monitor = ctx.provider().monitor()?;
    let device = ctx.open()?;
    let old = device.info().identity.clone();
    let events = device.events()?;

    inject(ctx, &Fault::Unplug)?;
    expect_loss(ctx, &device, &events, &monitor, &Fault::Unplug, &old)?;
    drop(events);
    drop(device);

    let listed = ctx.provider().devices()?;
    ensure!(
        !listed.iter().any(|d| d.identity.name == name),
        "the unplugged {name} is still listed: {listed:?}"
    );
    match ctx.provider().open(name) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(CaseError::Failed(format!(
                "opening the unplugged {name}: expected NotFound, got {e}"
            )));
        }
        Ok(_) => {
            return Err(CaseError::Failed(format!(
                "opening the unplugged {name} succeeded"
            )));
        }
    }
    expect_no_event(
        &monitor,
        QUIET,
        &format!("{name} to stay away without a replug"),
        |e| added_named(e, name),
    )?;
    Ok(())
}

pub(super) fn replug_returns_the_same_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let name = ctx.device_name();
    let monitor = ctx.provider().monitor()?;
    let device = ctx.open()?;
    let old = device.info().identity.clone();
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(4)?;

    inject(ctx, &Fault::Unplug)?;
    await_event(
        &monitor,
        &format!("the monitor reporting {name} removed"),
        |e| removed_named(e, name),
        ctx.deadline(),
    )?;
    // Plugged back while objects of its previous life are still held: it may return only once
    // they are released.
    inject(ctx, &Fault::Replug)?;
    expect_no_event(
        &monitor,
        QUIET / 2,
        &format!("{name} not to come back while a PD and a CQ of its previous life are held"),
        |e| added_named(e, name),
    )?;
    drop(cq);
    drop(pd);
    drop(device);

    let back = await_added(
        &monitor,
        name,
        &format!("the monitor reporting {name} added after the replug and the release"),
        ctx.deadline(),
    )?
    .identity;
    expect_same_device_back(ctx, &old, &back, "the replug")
}

pub(super) fn replug_other_is_a_different_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let name = ctx.device_name();
    let monitor = ctx.provider().monitor()?;
    let device = ctx.open()?;
    let old = device.info().identity.clone();

    inject(ctx, &Fault::Unplug)?;
    await_event(
        &monitor,
        &format!("the monitor reporting {name} removed"),
        |e| removed_named(e, name),
        ctx.deadline(),
    )?;
    drop(device);
    inject(ctx, &Fault::ReplugOther)?;
    let other = await_added(
        &monitor,
        name,
        &format!("the monitor reporting a device added under the name {name}"),
        ctx.deadline(),
    )?
    .identity;
    ensure!(
        !old.is_same_device(&other),
        "a different device plugged in under {name} counts as the same device by the identity \
         rule: before {old}, after {other}"
    );
    ensure!(
        other.node_guid != old.node_guid,
        "a different device plugged in under {name} has the old node GUID {}",
        old.node_guid
    );
    let opened = ctx.open()?;
    ensure_eq!(
        &opened.info().identity,
        &other,
        "identity of the device opened under {name}"
    );
    Ok(())
}
