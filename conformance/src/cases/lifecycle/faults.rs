//! Faults of one port, one QP or one connection: each is reported for what it names, and touches
//! nothing else; and a connection that ends because its peer was destroyed.

use std::time::{Duration, Instant};

use anyverbs::{
    ConnParams, Device, DeviceEvent, Fault, MemoryRegion, PortState, Provider, QpInit, QpState,
    QueuePair, RecvWr, SendWr, WcStatus,
};

use super::{QUIET, await_event, exchange_both_ways, expect_no_event, inject, list};
use crate::case::{CaseError, CaseResult};
use crate::ctx::{Ctx, Expected, FLUSHED};
use crate::{ensure, ensure_eq};

/// The number of an active port of `device`; the case is not run on a device without one.
fn active_port<P: Provider>(device: &P::Device) -> Result<u8, CaseError> {
    device
        .ports()?
        .iter()
        .find(|p| p.state == PortState::Active)
        .map(|p| p.number)
        .ok_or_else(|| CaseError::NotRun("the device has no active port".into()))
}

pub(super) fn flap_port_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const DOWN: Duration = Duration::from_millis(150);
    let device = ctx.open()?;
    let events = device.events()?;
    let port_state = |port: u8| -> Result<PortState, CaseError> {
        device
            .ports()?
            .iter()
            .find(|p| p.number == port)
            .map(|p| p.state)
            .ok_or_else(|| CaseError::Failed(format!("port {port} vanished from ports()")))
    };
    let port = active_port::<P>(&device)?;

    let injected = Instant::now();
    inject(
        ctx,
        &Fault::FlapPort {
            port,
            down_for: DOWN,
        },
    )?;
    let (_, before) = await_event(
        &events,
        &format!("PortDown for port {port}"),
        |e| *e == DeviceEvent::PortDown { port },
        ctx.deadline(),
    )?;
    let state = port_state(port)?;
    if injected.elapsed() < DOWN / 2 {
        ensure_eq!(
            state,
            PortState::Down,
            "state of port {port} in ports() after PortDown, while it is down"
        );
    }
    let (_, between) = await_event(
        &events,
        &format!("PortActive for port {port} after the flap"),
        |e| *e == DeviceEvent::PortActive { port },
        ctx.deadline(),
    )?;
    ensure!(
        injected.elapsed() >= DOWN,
        "port {port} came back {:?} after the flap, before its down_for ({DOWN:?})",
        injected.elapsed()
    );
    let unexpected: Vec<&DeviceEvent> = before
        .iter()
        .chain(&between)
        .filter(|e| e.is_device_lost() || e.is_qp_failure())
        .collect();
    ensure!(
        unexpected.is_empty(),
        "a port flap reported {}",
        list(&unexpected)
    );
    ensure_eq!(
        port_state(port)?,
        PortState::Active,
        "state of port {port} after PortActive"
    );
    device.alloc_pd()?;
    Ok(())
}

pub(super) fn address_change_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let port = active_port::<P>(&pair.device)?;
    inject(ctx, &Fault::ChangeAddress { port })?;
    let (_, before) = await_event(
        &events,
        &format!("AddressChange for port {port}"),
        |e| *e == DeviceEvent::AddressChange { port },
        ctx.deadline(),
    )?;
    let after = expect_no_event(&events, QUIET, "after an address change", |e| {
        e.is_device_lost() || e.is_qp_failure()
    })?;
    let unexpected: Vec<&DeviceEvent> = before
        .iter()
        .chain(&after)
        .filter(|e| e.is_device_lost() || e.is_qp_failure())
        .collect();
    ensure!(
        unexpected.is_empty(),
        "an address change reported {}",
        list(&unexpected)
    );
    // The connection made before the change still carries data, both ways.
    exchange_both_ways(ctx, &pair)?;
    Ok(())
}

pub(super) fn kill_qp_touches_nothing_else<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let victim = ctx.pair()?;
    let bystander = ctx.pair()?;
    let events = victim.device.events()?;
    let mr = ctx.mr_filled(&victim.pd, 64, 0)?;
    victim.a.post_recv(&[
        RecvWr::new(1, &[mr.sge(0, 32)]),
        RecvWr::new(2, &[mr.sge(32, 32)]),
    ])?;
    let killed = victim.a.qp_num();
    let untouched = [bystander.a.qp_num(), bystander.b.qp_num()];
    let names_bystander = |e: &DeviceEvent| e.qp_num().is_some_and(|n| untouched.contains(&n));

    inject(ctx, &Fault::KillQp { qp_num: killed })?;
    let (_, before) = await_event(
        &events,
        &format!("QpFatal for the killed QP {killed}"),
        |e| *e == DeviceEvent::QpFatal { qp_num: killed },
        ctx.deadline(),
    )?;
    ensure_eq!(
        victim.a.state()?,
        QpState::Error,
        "state of the killed QP after QpFatal"
    );
    let flushed = ctx.completions(&victim.cq_a, 2)?;
    ctx.expect_each_once(
        &flushed,
        &Expected::new().must([1, 2], FLUSHED).on_qp(killed),
    )?;

    exchange_both_ways(ctx, &bystander)?;
    ensure_eq!(
        bystander.a.state()?,
        QpState::ReadyToSend,
        "state of a QP of another pair after QP {killed} was killed"
    );
    let bad: Vec<&DeviceEvent> = before.iter().filter(|e| names_bystander(e)).collect();
    ensure!(
        bad.is_empty(),
        "killing QP {killed} reported events about another pair's QPs {untouched:?}: {}",
        list(&bad)
    );
    expect_no_event(
        &events,
        QUIET / 2,
        &format!("no event about another pair's QPs {untouched:?} or the device"),
        |e| names_bystander(e) || e.is_device_lost(),
    )?;
    ctx.expect_quiet(&bystander.cq_a, Duration::ZERO)?;
    ctx.expect_quiet(&bystander.cq_b, Duration::ZERO)?;
    Ok(())
}

pub(super) fn lose_peer_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    // Few retries, so the transport gives up quickly.
    let params = ConnParams {
        retry_count: 1,
        ..ConnParams::default()
    };
    let pair = ctx.pair_with(&QpInit::default(), &params, 64)?;
    let events = pair.device.events()?;
    let src = ctx.mr_filled(&pair.pd, 64, 9)?;
    let dst = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.b.post_recv(&[RecvWr::new(10, &[dst.sge(0, 64)])])?;
    let qp_num = pair.a.qp_num();

    inject(ctx, &Fault::LosePeer { qp_num })?;
    pair.a.post_send(&[SendWr::send(20, &[src.sge(0, 64)])])?;
    let sent = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&sent, 20, WcStatus::TransportRetryExceeded)?;
    let (_, before) = await_event(
        &events,
        &format!("Disconnected for QP {qp_num}, whose peer stopped answering"),
        |e| *e == DeviceEvent::Disconnected { qp_num },
        ctx.deadline(),
    )?;
    ensure!(
        !before.iter().any(DeviceEvent::is_device_lost),
        "losing a peer reported {}",
        list(&before)
    );
    ensure_eq!(
        pair.a.state()?,
        QpState::Error,
        "state of the QP whose peer was lost"
    );
    ctx.expect_quiet(&pair.cq_b, QUIET / 4)?;
    ensure_eq!(
        ctx.contents(&dst)?,
        vec![0; 64],
        "the lost peer's receive buffer"
    );
    Ok(())
}

pub(super) fn peer_destroy_is_reported_as_disconnected<P: Provider>(
    ctx: &Ctx<'_, P>,
) -> CaseResult {
    let pair = ctx.pair()?;
    let (gone, survivor) = (pair.a.qp_num(), pair.b.qp_num());
    // The survivor's device (the pair is on one device).
    let events = pair.device.events()?;
    let mr = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.b.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])])?;

    pair.a
        .drain(ctx.drain_deadline())
        .map_err(|e| CaseError::Failed(format!("draining QP {gone} failed: {e}")))?;
    pair.a.destroy()?;
    let (_, before) = await_event(
        &events,
        &format!("Disconnected for QP {survivor}, whose peer QP {gone} was destroyed"),
        |e| *e == DeviceEvent::Disconnected { qp_num: survivor },
        ctx.deadline(),
    )?;
    ensure!(
        !before.iter().any(DeviceEvent::is_device_lost),
        "destroying a QP reported {}",
        list(&before)
    );
    expect_no_event(
        &events,
        QUIET / 2,
        &format!("one Disconnected for QP {survivor}, not two"),
        |e| *e == DeviceEvent::Disconnected { qp_num: survivor },
    )?;
    // What a ULP does next: drain the survivor, which accounts for its receive.
    let drained = ctx.drain_and_collect(&pair.b, &[&pair.cq_b])?;
    ctx.expect_each_once(
        &drained.completions,
        &Expected::new().must([1], FLUSHED).on_qp(survivor),
    )
}
