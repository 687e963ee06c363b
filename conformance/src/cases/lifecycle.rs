//! Device lifecycle: what a ULP relies on when a device resets, is unplugged, comes back, or
//! one of its ports or QPs fails.
//!
//! - After a reset or an unplug every handle of the device is dead: every call fails with
//!   `DeviceLost` at once (none waits for its deadline), calls already blocked wake up, and only
//!   `destroy` succeeds — what the kernel does after disassociation.
//! - Each fault is announced on the device's event stream (`DeviceFatal`, `DeviceRemoved`,
//!   `PortDown`/`PortActive`, `QpFatal`, `Disconnected`), which an event loop can also watch
//!   through its file descriptor; devices coming and going are announced on the provider's
//!   monitor, whose identities tell a returning device from a stranger under the same name.
//! - A fault touches only what it names: a killed QP leaves every other QP alone.
//! - A stalled device (hung firmware that reports nothing) completes nothing, and a drain still
//!   returns by its deadline accounting for every WR.
//!
//! Every case injects faults with [`Provider::inject`] and so needs [`Caps::FAULT_INJECTION`];
//! devices that cannot inject report the cases as not run.

use std::fmt;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, DeviceEvent, ErrorKind,
    EventStream, Fault, Listener, MemoryRegion, MonitorEvent, PortState, PostError,
    ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, WcStatus,
};

use crate::case::{Case, CaseError, CaseResult, Needs};
use crate::ctx::{Ctx, Expected, FLUSHED, Pair};
use crate::{ensure, ensure_eq};

/// Every case of the group injects faults.
const FAULTS: Needs = Needs::caps(Caps::FAULT_INJECTION);

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "lifecycle::every_handle_dead_after_reset",
            description: "After a reset, every call on every handle of the device (device, PD, \
                          MR, CQ, QP, listener) fails with DeviceLost within 100 ms — none waits \
                          for its deadline — accessors keep their values, and destroy succeeds \
                          on every handle, twice.",
            needs: FAULTS,
            run: every_handle_dead_after_reset::<P>,
        },
        Case {
            name: "lifecycle::every_handle_dead_after_unplug",
            description: "After an unplug, every call on every handle of the device fails with \
                          DeviceLost within 100 ms, accessors keep their values, and destroy \
                          succeeds on every handle, twice.",
            needs: FAULTS,
            run: every_handle_dead_after_unplug::<P>,
        },
        Case {
            name: "lifecycle::blocked_calls_wake_on_unplug",
            description: "Threads blocked in cq.wait, listener.next_request and \
                          qp.wait_connected with a deadline seconds away return DeviceLost \
                          within 500 ms of an unplug.",
            needs: FAULTS,
            run: blocked_calls_wake_on_unplug::<P>,
        },
        Case {
            name: "lifecycle::reset_events",
            description: "A reset reports DeviceFatal, then the device's event stream ends with \
                          DeviceLost; the monitor reports the device removed, and added back — \
                          the same device by the identity rule, with a new index — only once \
                          down_for has passed and every object of the old device was released; \
                          the new device opens and works.",
            needs: FAULTS,
            run: reset_events::<P>,
        },
        Case {
            name: "lifecycle::unplug_events",
            description: "An unplug reports DeviceRemoved, then the stream ends with DeviceLost; \
                          the monitor reports the device removed, the device is no longer listed \
                          or opened (NotFound), and nothing is added back without a replug.",
            needs: FAULTS,
            run: unplug_events::<P>,
        },
        Case {
            name: "lifecycle::replug_returns_the_same_device",
            description: "An unplugged device that is plugged back is added on the monitor once \
                          every object of its previous life was released — not before — as the \
                          same device by the identity rule, with a new index, and opens.",
            needs: FAULTS,
            run: replug_returns_the_same_device::<P>,
        },
        Case {
            name: "lifecycle::replug_other_is_a_different_device",
            description: "A different device plugged in under the unplugged one's name is added \
                          with that name but is not the same device by the identity rule (other \
                          GUIDs), and opening the name gives the new identity.",
            needs: FAULTS,
            run: replug_other_is_a_different_device::<P>,
        },
        Case {
            name: "lifecycle::flap_port_events",
            description: "A port flap reports PortDown, ports() says Down meanwhile, then \
                          PortActive no earlier than down_for, and the device keeps working.",
            needs: FAULTS,
            run: flap_port_events::<P>,
        },
        Case {
            name: "lifecycle::kill_qp_touches_nothing_else",
            description: "Killing one QP reports QpFatal for it, moves it to ERROR and flushes \
                          its receives once each; another connected pair on the device still \
                          passes data both ways and no event names it.",
            needs: FAULTS,
            run: kill_qp_touches_nothing_else::<P>,
        },
        Case {
            name: "lifecycle::lose_peer_events",
            description: "When a QP's peer stops answering, a SEND completes with \
                          transport-retry-exceeded, the QP reports Disconnected and is in ERROR, \
                          and the message never reaches the peer.",
            needs: FAULTS,
            run: lose_peer_events::<P>,
        },
        Case {
            name: "lifecycle::event_fd_readable",
            description: "The event stream's file descriptor is readable exactly while an event \
                          (or the end of the stream) is waiting, as an event loop needs.",
            needs: FAULTS,
            run: event_fd_readable::<P>,
        },
        Case {
            name: "lifecycle::stall_completes_nothing_until_resume",
            description: "A stalled device accepts posts but completes nothing and reports \
                          nothing; once resumed, the SEND and its receive complete with the \
                          data.",
            needs: FAULTS,
            run: stall_completes_nothing_until_resume::<P>,
        },
        Case {
            name: "lifecycle::drain_on_stalled_device",
            description: "On a stalled device, drain with a 300 ms deadline returns by the \
                          deadline with a fallback and accounts for every WR exactly once; after \
                          a resume, the drained QP's SEND never reaches its peer.",
            needs: FAULTS,
            run: drain_on_stalled_device::<P>,
        },
    ]
}

// ----- timing -----

/// Longest a call on a dead handle may take: it must fail at once, never wait for its
/// deadline.
pub(crate) const AT_ONCE: Duration = Duration::from_millis(100);

/// Longest a blocked call may take to return after its device is lost.
const WAKE: Duration = Duration::from_millis(500);

/// How long a case watches for something that must not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(200);

/// How long a reset device stays away at least, in the cases.
pub(crate) const DOWN_FOR: Duration = Duration::from_millis(30);

// ----- helpers shared with the recovery cases -----

/// Injects `fault` into the device under test.
pub(crate) fn inject<P: Provider>(ctx: &Ctx<'_, P>, fault: &Fault) -> CaseResult {
    ctx.provider()
        .inject(ctx.device_name(), fault)
        .map_err(|e| {
            CaseError::Failed(format!(
                "injecting \"{fault}\" into {} failed: {e}",
                ctx.device_name()
            ))
        })
}

/// Events as text, for failure messages.
fn list<E: fmt::Display>(events: &[E]) -> String {
    if events.is_empty() {
        return "none".into();
    }
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads `events` until one satisfies `want`, by `deadline`; returns it and the events read
/// before it. Fails, saying what was read, if the stream fails or the deadline passes first.
pub(crate) fn await_event<E: fmt::Display>(
    events: &EventStream<E>,
    what: &str,
    want: impl Fn(&E) -> bool,
    deadline: Instant,
) -> Result<(E, Vec<E>), CaseError> {
    let mut before = Vec::new();
    loop {
        match events.recv(deadline) {
            Ok(e) if want(&e) => return Ok((e, before)),
            Ok(e) => before.push(e),
            Err(err) => {
                return Err(CaseError::Failed(format!(
                    "expected {what}; instead the stream returned {err} (events read before: {})",
                    list(&before)
                )));
            }
        }
    }
}

/// Watches `events` for `quiet` and fails if one satisfying `bad` arrives; returns the others.
pub(crate) fn expect_no_event<E: fmt::Display>(
    events: &EventStream<E>,
    quiet: Duration,
    what: &str,
    bad: impl Fn(&E) -> bool,
) -> Result<Vec<E>, CaseError> {
    let until = Instant::now() + quiet;
    let mut seen = Vec::new();
    loop {
        match events.recv(until) {
            Ok(e) if bad(&e) => {
                return Err(CaseError::Failed(format!(
                    "expected {what} within {quiet:?}; got \"{e}\" (after: {})",
                    list(&seen)
                )));
            }
            Ok(e) => seen.push(e),
            Err(err) if err.kind() == ErrorKind::TimedOut => return Ok(seen),
            Err(err) => {
                return Err(CaseError::Failed(format!(
                    "watching for {what}, the stream failed: {err}"
                )));
            }
        }
    }
}

/// Checks that a stream whose last event was read ends: it fails with `DeviceLost` at once.
fn expect_stream_ended<E: fmt::Display>(
    events: &EventStream<E>,
    after: &str,
    deadline: Instant,
) -> CaseResult {
    let start = Instant::now();
    let got = events.recv(deadline);
    let took = start.elapsed();
    match got {
        Err(e) if e.kind() == ErrorKind::DeviceLost => {}
        Err(e) => {
            return Err(CaseError::Failed(format!(
                "after {after} the event stream must end with DeviceLost; it failed with {e}"
            )));
        }
        Ok(e) => {
            return Err(CaseError::Failed(format!(
                "after {after} the event stream must end; it delivered \"{e}\""
            )));
        }
    }
    ensure!(
        took < AT_ONCE,
        "after {after} the ended event stream took {took:?} to say so; it must not block"
    );
    Ok(())
}

/// Checks that `call` fails with `DeviceLost` within [`AT_ONCE`].
fn expect_lost<T>(what: &str, call: impl FnOnce() -> anyverbs::Result<T>) -> CaseResult {
    let start = Instant::now();
    let result = call();
    let took = start.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::DeviceLost => {}
        Err(e) => {
            return Err(CaseError::Failed(format!(
                "{what} on a lost device: expected DeviceLost, got {e}"
            )));
        }
        Ok(_) => {
            return Err(CaseError::Failed(format!(
                "{what} on a lost device: expected DeviceLost, but it succeeded"
            )));
        }
    }
    ensure!(
        took < AT_ONCE,
        "{what} on a lost device took {took:?} to fail; a dead handle must fail at once (within \
         {AT_ONCE:?}), never wait for its deadline"
    );
    Ok(())
}

/// Checks that a post fails with `DeviceLost` within [`AT_ONCE`], accepting nothing.
fn expect_post_lost(what: &str, call: impl FnOnce() -> Result<(), PostError>) -> CaseResult {
    let start = Instant::now();
    let result = call();
    let took = start.elapsed();
    match result {
        Err(e) if e.kind() == ErrorKind::DeviceLost && e.accepted == 0 => {}
        Err(e) => {
            return Err(CaseError::Failed(format!(
                "{what} on a lost device: expected DeviceLost accepting nothing, got {e} ({} \
                 accepted)",
                e.accepted
            )));
        }
        Ok(()) => {
            return Err(CaseError::Failed(format!(
                "{what} on a lost device: expected DeviceLost, but it was posted"
            )));
        }
    }
    ensure!(
        took < AT_ONCE,
        "{what} on a lost device took {took:?} to fail; it must fail at once"
    );
    Ok(())
}

/// Checks that `destroy` succeeds at once on a lost device, and again (a no-op) the second time.
fn expect_destroyed(what: &str, destroy: impl Fn() -> anyverbs::Result<()>) -> CaseResult {
    for time in ["", " a second time"] {
        let start = Instant::now();
        let result = destroy();
        let took = start.elapsed();
        if let Err(e) = result {
            return Err(CaseError::Failed(format!(
                "destroying {what}{time} after the device was lost: expected Ok (only destroy \
                 succeeds on a dead handle), got {e}"
            )));
        }
        ensure!(
            took < AT_ONCE,
            "destroying {what}{time} after the device was lost took {took:?}"
        );
    }
    Ok(())
}

/// The one event that says the device is gone after `fault`.
/// After `fault` (a reset or an unplug) of the device `old`: its stream's last event is the loss
/// event (DeviceFatal for a reset, DeviceRemoved otherwise) with no other loss event before it,
/// the stream then ends, `events()` fails with DeviceLost, and the monitor reports `old`
/// removed.
fn expect_loss<P: Provider>(
    ctx: &Ctx<'_, P>,
    device: &P::Device,
    events: &EventStream<DeviceEvent>,
    monitor: &EventStream<MonitorEvent>,
    fault: &Fault,
    old: &anyverbs::DeviceIdentity,
) -> CaseResult {
    let last = loss_event(fault);
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

fn loss_event(fault: &Fault) -> DeviceEvent {
    match fault {
        Fault::Reset { .. } => DeviceEvent::DeviceFatal,
        _ => DeviceEvent::DeviceRemoved,
    }
}

/// Sends one 64-byte message from `from` to `to` (each with its CQ) and checks that it arrives.
pub(crate) fn exchange<P: Provider>(
    ctx: &Ctx<'_, P>,
    pd: &P::Pd,
    (from, from_cq): (&P::Qp, &P::Cq),
    (to, to_cq): (&P::Qp, &P::Cq),
    tag: u8,
) -> CaseResult {
    let src = ctx.mr_filled(pd, 64, tag)?;
    let dst = ctx.mr_filled(pd, 64, 0)?;
    let recv_id = 100 + u64::from(tag);
    let send_id = 200 + u64::from(tag);
    to.post_recv(&[RecvWr::new(recv_id, &[dst.sge(0, 64)])])?;
    from.post_send(&[SendWr::send(send_id, &[src.sge(0, 64)])])?;
    ctx.expect_status(&ctx.completion(to_cq)?, recv_id, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(from_cq)?, send_id, WcStatus::Success)?;
    ensure_eq!(
        ctx.contents(&dst)?,
        vec![tag; 64],
        "bytes received from QP {}",
        from.qp_num()
    );
    Ok(())
}

// ----- the cases -----

fn every_handle_dead_after_reset<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    every_handle_dead(ctx, Fault::Reset { down_for: DOWN_FOR })
}

fn every_handle_dead_after_unplug<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    every_handle_dead(ctx, Fault::Unplug)
}

/// Builds one handle of every kind (and a connect in progress), injects `fault`, waits for the
/// loss event, then calls everything.
fn every_handle_dead<P: Provider>(ctx: &Ctx<'_, P>, fault: Fault) -> CaseResult {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let mr = ctx.mr_filled(&pd, 64, 7)?;
    let cq = device.create_cq(16)?;
    let init = QpInit::default();
    let params = ConnParams::default();
    let a = pd.create_qp(&cq, &cq, &init)?;
    let b = pd.create_qp(&cq, &cq, &init)?;
    let (listener, _) = ctx.connect(&device, &a, &b, &params)?;
    // A connect in progress: its request taken from the listener, neither accepted nor
    // rejected; and a fresh QP to accept it onto.
    let pending = pd.create_qp(&cq, &cq, &init)?;
    pending.connect(listener.local_addr(), &params)?;
    let request = listener.next_request(ctx.deadline())?;
    let spare = pd.create_qp(&cq, &cq, &init)?;
    a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])])?;
    let events = device.events()?;
    let before = (
        device.info().identity.clone(),
        a.qp_num(),
        mr.lkey(),
        mr.rkey(),
        cq.cq_num(),
        listener.local_addr(),
    );

    inject(ctx, &fault)?;
    let lost = loss_event(&fault);
    await_event(
        &events,
        &format!("{lost} after {fault}"),
        |e| *e == lost,
        ctx.deadline(),
    )?;

    let far = ctx.deadline();
    let mut buf = [0u8; 8];
    let mut wc = [Completion::default(); 4];
    // The device.
    expect_lost("device.ports()", || device.ports())?;
    expect_lost("device.alloc_pd()", || device.alloc_pd())?;
    expect_lost("device.create_cq(16)", || device.create_cq(16))?;
    expect_lost("device.listen()", || device.listen(addr))?;
    expect_lost("device.events()", || device.events())?;
    // The PD and the MR.
    expect_lost("pd.register()", || pd.register(64, Access::LOCAL_WRITE))?;
    expect_lost("pd.create_qp()", || pd.create_qp(&cq, &cq, &init))?;
    // The region's memory is the host's: what it held before the loss stays readable.
    mr.read(0, &mut buf).map_err(|e| {
        CaseError::Failed(format!(
            "mr.read() after {fault} failed ({e}); the region's memory is the host's and must \
             stay readable"
        ))
    })?;
    ensure!(
        buf == [7; 8],
        "mr.read() after {fault} returned {buf:?}, not the bytes written before the loss"
    );
    mr.write(0, &[1, 2, 3])
        .map_err(|e| CaseError::Failed(format!("mr.write() after {fault} failed ({e})")))?;
    // The CQ: wait must not sit out its deadline.
    expect_lost("cq.poll()", || cq.poll(&mut wc))?;
    expect_lost("cq.wait() with a deadline seconds away", || {
        cq.wait(&mut wc, far)
    })?;
    // The QPs.
    expect_lost("qp.state()", || a.state())?;
    expect_lost("qp.modify(ERROR)", || a.modify(QpState::Error))?;
    expect_post_lost("qp.post_send()", || {
        a.post_send(&[SendWr::send(2, &[mr.sge(0, 64)])])
    })?;
    expect_post_lost("qp.post_recv()", || {
        a.post_recv(&[RecvWr::new(3, &[mr.sge(0, 64)])])
    })?;
    expect_lost("qp.connect()", || {
        spare.connect(listener.local_addr(), &params)
    })?;
    expect_lost("qp.wait_connected() with a deadline seconds away", || {
        pending.wait_connected(far)
    })?;
    expect_lost("qp.drain() with a deadline seconds away", || a.drain(far))?;
    // The listener.
    expect_lost(
        "listener.next_request() with a deadline seconds away",
        || listener.next_request(far),
    )?;
    expect_lost("listener.accept()", || {
        listener.accept(&request, &spare, &params)
    })?;
    expect_lost("listener.reject()", || listener.reject(&request, b"no"))?;

    // What was fixed at creation stays readable.
    let after = (
        device.info().identity.clone(),
        a.qp_num(),
        mr.lkey(),
        mr.rkey(),
        cq.cq_num(),
        listener.local_addr(),
    );
    ensure_eq!(
        after,
        before,
        "identity, QP number, keys, CQ number and listener address after the device was lost"
    );

    // Only destroy succeeds, in dependency order (so that Busy cannot be an excuse).
    for (what, qp) in [
        ("connected QP a", &a),
        ("connected QP b", &b),
        ("the QP whose connect was pending", &pending),
        ("the never-connected QP", &spare),
    ] {
        expect_destroyed(what, || qp.destroy())?;
    }
    expect_destroyed("the MR", || mr.destroy())?;
    expect_destroyed("the CQ", || cq.destroy())?;
    expect_destroyed("the PD", || pd.destroy())?;
    drop(listener);
    drop(device);
    Ok(())
}

fn blocked_calls_wake_on_unplug<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(16)?;
    // `listener` gets no request, so next_request blocks; `other` gets one it never answers, so
    // the connecting QP's wait_connected blocks.
    let listener = device.listen(addr)?;
    let other = device.listen(addr)?;
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    qp.connect(other.local_addr(), &ConnParams::default())?;
    let far = ctx.deadline();

    type Woke = (anyverbs::Result<String>, Instant);
    let (results, lost_at, early) = thread::scope(|s| {
        let waiters: Vec<(&str, thread::ScopedJoinHandle<'_, Woke>)> = vec![
            (
                "cq.wait",
                s.spawn(|| {
                    let mut wc = [Completion::default(); 4];
                    let r = cq.wait(&mut wc, far).map(|n| format!("{n} completions"));
                    (r, Instant::now())
                }),
            ),
            (
                "listener.next_request",
                s.spawn(|| {
                    let r = listener
                        .next_request(far)
                        .map(|r| format!("a connect request from {}", r.peer));
                    (r, Instant::now())
                }),
            ),
            (
                "qp.wait_connected",
                s.spawn(|| {
                    let r = qp
                        .wait_connected(far)
                        .map(|c| format!("connected to QP {}", c.peer_qp_num));
                    (r, Instant::now())
                }),
            ),
        ];
        // Give the threads time to block.
        thread::sleep(Duration::from_millis(50));
        let early: Vec<&str> = waiters
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(what, _)| *what)
            .collect();
        let lost_at = Instant::now();
        let injected = inject(ctx, &Fault::Unplug);
        let results: Vec<(&str, std::thread::Result<Woke>)> = waiters
            .into_iter()
            .map(|(what, h)| (what, h.join()))
            .collect();
        injected.map(|()| (results, lost_at, early))
    })?;
    ensure!(
        early.is_empty(),
        "{early:?} returned before the device was lost, with nothing to return for"
    );
    for (what, joined) in results {
        let Ok((result, returned)) = joined else {
            return Err(CaseError::Failed(format!(
                "the thread blocked in {what} panicked"
            )));
        };
        match result {
            Err(e) if e.kind() == ErrorKind::DeviceLost => {}
            Err(e) => {
                return Err(CaseError::Failed(format!(
                    "{what}, blocked when the device was unplugged, returned {e}; expected \
                     DeviceLost"
                )));
            }
            Ok(what_came) => {
                return Err(CaseError::Failed(format!(
                    "{what}, blocked when the device was unplugged, returned {what_came}; \
                     expected DeviceLost"
                )));
            }
        }
        let took = returned.saturating_duration_since(lost_at);
        ensure!(
            took < WAKE,
            "{what}, blocked when the device was unplugged, returned DeviceLost only {took:?} \
             later; it must wake promptly (within {WAKE:?}), not at its deadline"
        );
    }
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

fn reset_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn unplug_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn replug_returns_the_same_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn replug_other_is_a_different_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

fn flap_port_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
    let Some(port) = device
        .ports()?
        .iter()
        .find(|p| p.state == PortState::Active)
        .map(|p| p.number)
    else {
        return Err(CaseError::NotRun("the device has no active port".into()));
    };

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

fn kill_qp_touches_nothing_else<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

    exchange(
        ctx,
        &bystander.pd,
        (&bystander.a, &bystander.cq_a),
        (&bystander.b, &bystander.cq_b),
        1,
    )?;
    exchange(
        ctx,
        &bystander.pd,
        (&bystander.b, &bystander.cq_b),
        (&bystander.a, &bystander.cq_a),
        2,
    )?;
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

fn lose_peer_events<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

#[cfg(unix)]
fn event_fd_readable<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let fd = events.fd()?;
    let wait = ctx.timeout().min(Duration::from_secs(2));
    ensure!(
        !readable(fd, Duration::ZERO)?,
        "the event fd is readable with no event waiting"
    );
    let qp_num = pair.a.qp_num();
    inject(ctx, &Fault::KillQp { qp_num })?;
    ensure!(
        readable(fd, wait)?,
        "the event fd did not become readable within {wait:?} of a QP fatal error"
    );
    let got = events.try_recv()?;
    ensure_eq!(
        got,
        Some(DeviceEvent::QpFatal { qp_num }),
        "the event waiting when the fd was readable"
    );
    // Events are asynchronous (a device's arrive through the kernel, a plugin's through a
    // relay): read what else the kill caused until the stream has been quiet for a while.
    loop {
        match events.recv(Instant::now() + EVENTS_QUIET) {
            Ok(e) => ensure!(
                !e.is_device_lost(),
                "killing a QP reported {e:?} on the device"
            ),
            Err(e) if e.kind() == ErrorKind::TimedOut => break,
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(
        !readable(fd, Duration::ZERO)?,
        "the event fd stays readable after every event was read"
    );
    inject(ctx, &Fault::Unplug)?;
    ensure!(
        readable(fd, wait)?,
        "the event fd did not become readable within {wait:?} of an unplug"
    );
    // A QP event of the kill may still arrive first; the device's removal must follow.
    let mut got = events.try_recv()?;
    while let Some(e) = &got
        && e.is_qp_failure()
    {
        got = events.recv(Instant::now() + wait).map(Some)?;
    }
    ensure_eq!(
        got,
        Some(DeviceEvent::DeviceRemoved),
        "the event waiting after the unplug"
    );
    match events.try_recv() {
        Err(e) if e.kind() == ErrorKind::DeviceLost => {}
        other => {
            return Err(CaseError::Failed(format!(
                "after DeviceRemoved, try_recv must fail with DeviceLost; got {other:?}"
            )));
        }
    }
    ensure!(
        readable(fd, Duration::ZERO)?,
        "the event fd is not readable once the stream has ended: an event loop would never \
         learn of the end"
    );
    Ok(())
}

#[cfg(not(unix))]
fn event_fd_readable<P: Provider>(_ctx: &Ctx<'_, P>) -> CaseResult {
    Err(CaseError::NotRun(
        "event stream file descriptors exist on Unix only".into(),
    ))
}

/// How long a stream must stay quiet before a case takes it that a fault's events have all
/// arrived (events are asynchronous: a real device's come through the kernel, a plugin's through
/// a relay thread).
#[cfg(unix)]
const EVENTS_QUIET: Duration = Duration::from_millis(200);

/// Asks `poll(2)`, as an event loop would, whether `fd` becomes readable within `wait`.
#[cfg(unix)]
fn readable(fd: std::os::fd::BorrowedFd<'_>, wait: Duration) -> Result<bool, CaseError> {
    use std::os::fd::AsRawFd;
    let until = Instant::now() + wait;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = until.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `pfd` is one initialised pollfd that lives across the call, the count says
        // one, and its fd is open for the call's duration: it is borrowed from a live stream.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CaseError::Failed(format!(
                "poll on the event fd failed: {err}"
            )));
        }
        return Ok(n == 1 && pfd.revents & libc::POLLIN != 0);
    }
}

fn stall_completes_nothing_until_resume<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let src = ctx.mr_filled(&pair.pd, 64, 0x5a)?;
    let dst = ctx.mr_filled(&pair.pd, 64, 0)?;

    inject(ctx, &Fault::Stall)?;
    pair.b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 64)])])?;
    pair.a.post_send(&[SendWr::send(2, &[src.sge(0, 64)])])?;
    ctx.expect_quiet(&pair.cq_a, QUIET / 2)
        .map_err(|e| stalled_but(e, "the sender's CQ"))?;
    ctx.expect_quiet(&pair.cq_b, Duration::ZERO)
        .map_err(|e| stalled_but(e, "the receiver's CQ"))?;
    ensure_eq!(
        events.try_recv()?,
        None,
        "events of a stalled device (a hung device says nothing)"
    );

    inject(ctx, &Fault::Resume)?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 1, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    ensure_eq!(
        ctx.contents(&dst)?,
        vec![0x5a; 64],
        "bytes received after the resume"
    );
    exchange(
        ctx,
        &pair.pd,
        (&pair.b, &pair.cq_b),
        (&pair.a, &pair.cq_a),
        3,
    )?;
    Ok(())
}

/// Rewords a failure of `expect_quiet` on a stalled device.
fn stalled_but(e: CaseError, cq: &str) -> CaseError {
    match e {
        CaseError::Failed(m) => CaseError::Failed(format!(
            "a stalled device must complete nothing, but {cq} produced: {m}"
        )),
        other => other,
    }
}

fn drain_on_stalled_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const BUDGET: Duration = Duration::from_millis(300);
    const SENT: u8 = 0xa5;
    const UNTOUCHED: u8 = 0x3c;
    let pair: Pair<P> = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 512, SENT)?;
    let landing = ctx.mr_filled(&pair.pd, 64, UNTOUCHED)?;
    // A receive at the peer that the drained QP's SEND would fill, were it ever executed.
    pair.b
        .post_recv(&[RecvWr::new(50, &[landing.sge(0, 64)])])?;

    inject(ctx, &Fault::Stall)?;
    let recvs: Vec<RecvWr> = (1..=4u64)
        .map(|id| RecvWr::single(id, mr.sge(64 * id as usize, 64)))
        .collect();
    pair.a.post_recv(&recvs)?;
    pair.a.post_send(&[SendWr::send(10, &[mr.sge(0, 64)])])?;
    let deadline = Instant::now() + BUDGET;
    let drained = ctx.drain_and_collect_by(&pair.a, &[&pair.cq_a], deadline)?;
    ensure!(
        drained.report.fallback.is_some(),
        "a stalled device completes nothing, so the drain can only finish by falling back at \
         its deadline; its report shows no fallback: {}",
        drained.report
    );
    ctx.expect_each_once(
        &drained.completions,
        &Expected::new()
            .must([1, 2, 3, 4, 10], FLUSHED)
            .on_qp(pair.a.qp_num()),
    )?;
    ensure_eq!(
        drained.report.accounted(),
        5,
        "WRs the drain report accounts for ({})",
        drained.report
    );

    inject(ctx, &Fault::Resume)?;
    ctx.expect_quiet(&pair.cq_a, QUIET / 4)
        .map_err(|e| match e {
            CaseError::Failed(m) => CaseError::Failed(format!(
                "after the resume the drained QP completed more: {m}"
            )),
            other => other,
        })?;
    // The peer may see its receive flushed (on iWARP the drained end tears the connection
    // down), but never filled by the SEND the drain accounted for.
    let at_peer = ctx.poll_all(&pair.cq_b)?;
    let filled: Vec<&Completion> = at_peer
        .iter()
        .filter(|c| c.status == WcStatus::Success)
        .collect();
    ensure!(
        filled.is_empty(),
        "after the resume the peer received the drained QP's SEND (the drain must stop the \
         hardware QP before it synthesizes): {filled:?}"
    );
    ensure_eq!(
        ctx.contents(&landing)?,
        vec![UNTOUCHED; 64],
        "the peer's receive buffer after the resume"
    );
    Ok(())
}
