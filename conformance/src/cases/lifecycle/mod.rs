//! Device lifecycle: what a ULP relies on when a device resets, is unplugged, comes back, or
//! one of its ports or QPs fails.
//!
//! - After a reset or an unplug every handle of the device is dead: every call fails with
//!   `DeviceLost` at once (none waits for its deadline), calls already blocked wake up, and only
//!   `destroy` succeeds — what the kernel does after disassociation.
//! - Each fault is announced on the device's event stream (`DeviceFatal`, `DeviceRemoved`,
//!   `PortDown`/`PortActive`, `AddressChange`, `QpFatal`, `Disconnected`), which an event loop can also watch
//!   through its file descriptor; devices coming and going are announced on the provider's
//!   monitor, whose identities tell a returning device from a stranger under the same name.
//! - A fault touches only what it names: a killed QP leaves every other QP alone.
//! - A stalled device (hung firmware that reports nothing) completes nothing, and a drain still
//!   returns by its deadline accounting for every WR.
//!
//! - A connected QP that is destroyed ends its connection, and the peer's device says so
//!   (`Disconnected`): a ULP learns of it without sending.
//!
//! Every case but that last one injects faults with [`Provider::inject`]: each needs the faults
//! it injects in the device's [`DeviceInfo::faults`](anyverbs::DeviceInfo::faults), and a device
//! that cannot have them injected reports the case as not run. A reset is reported as
//! `DeviceFatal` on a device with [`Caps::DEVICE_FATAL`] and as `DeviceRemoved` on one without
//! (rxe and siw, which are reset by deleting and re-adding them): the cases accept what the
//! device says a reset is.

use std::fmt;
use std::time::{Duration, Instant};

use anyverbs::{
    Caps, DeviceEvent, ErrorKind, EventStream, Fault, Faults, MemoryRegion, Provider, QueuePair,
    RecvWr, SendWr, WcStatus,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

mod dead;
mod event_fd;
mod faults;
mod presence;
mod stall;

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "lifecycle::every_handle_dead_after_reset",
            description: "After a reset, every call on every handle of the device (device, PD, \
                          MR, CQ, QP, listener) fails with DeviceLost within 100 ms — none waits \
                          for its deadline — accessors keep their values, and destroy succeeds \
                          on every handle, twice.",
            needs: Needs::faults(Faults::RESET),
            run: CaseFn::Row(dead::every_handle_dead_row::<P>, 0),
        },
        Case {
            name: "lifecycle::every_handle_dead_after_unplug",
            description: "After an unplug, every call on every handle of the device fails with \
                          DeviceLost within 100 ms, accessors keep their values, and destroy \
                          succeeds on every handle, twice.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Row(dead::every_handle_dead_row::<P>, 1),
        },
        Case {
            name: "lifecycle::blocked_calls_wake_on_unplug",
            description: "Threads blocked in cq.wait, listener.next_request and \
                          qp.wait_connected with a deadline seconds away return DeviceLost \
                          within 500 ms of an unplug.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(dead::blocked_calls_wake_on_unplug::<P>),
        },
        Case {
            name: "lifecycle::reset_events",
            description: "A reset reports DeviceFatal (DeviceRemoved on a device without \
                          DEVICE_FATAL), then the device's event stream ends with \
                          DeviceLost; the monitor reports the device removed, and added back — \
                          the same device by the identity rule, with a new index — only once \
                          down_for has passed and every object of the old device was released; \
                          the new device opens and works.",
            needs: Needs::faults(Faults::RESET),
            run: CaseFn::Plain(presence::reset_events::<P>),
        },
        Case {
            name: "lifecycle::unplug_events",
            description: "An unplug reports DeviceRemoved, then the stream ends with DeviceLost; \
                          the monitor reports the device removed, the device is no longer listed \
                          or opened (NotFound), and nothing is added back without a replug.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(presence::unplug_events::<P>),
        },
        Case {
            name: "lifecycle::replug_returns_the_same_device",
            description: "An unplugged device that is plugged back is added on the monitor once \
                          every object of its previous life was released — not before — as the \
                          same device by the identity rule, with a new index, and opens.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(presence::replug_returns_the_same_device::<P>),
        },
        Case {
            name: "lifecycle::replug_other_is_a_different_device",
            description: "A different device plugged in under the unplugged one's name is added \
                          with that name but is not the same device by the identity rule (other \
                          GUIDs), and opening the name gives the new identity.",
            needs: Needs::faults(Faults::UNPLUG.union(Faults::REPLUG_OTHER)),
            run: CaseFn::Plain(presence::replug_other_is_a_different_device::<P>),
        },
        Case {
            name: "lifecycle::flap_port_events",
            description: "A port flap reports PortDown, ports() says Down meanwhile, then \
                          PortActive no earlier than down_for, and the device keeps working.",
            needs: Needs::faults(Faults::FLAP_PORT),
            run: CaseFn::Plain(faults::flap_port_events::<P>),
        },
        Case {
            name: "lifecycle::address_change_events",
            description: "A change of a port's address (a bonding failover, an ip address \
                          change) reports AddressChange for that port and nothing that kills a \
                          QP or the device; a connection made before it still carries data both \
                          ways.",
            needs: Needs::faults(Faults::CHANGE_ADDRESS),
            run: CaseFn::Plain(faults::address_change_events::<P>),
        },
        Case {
            name: "lifecycle::kill_qp_touches_nothing_else",
            description: "Killing one QP reports QpFatal for it, moves it to ERROR and flushes \
                          its receives once each; another connected pair on the device still \
                          passes data both ways and no event names it.",
            needs: Needs::faults(Faults::KILL_QP),
            run: CaseFn::Plain(faults::kill_qp_touches_nothing_else::<P>),
        },
        Case {
            name: "lifecycle::lose_peer_events",
            description: "When a QP's peer stops answering, a SEND completes with \
                          transport-retry-exceeded, the QP reports Disconnected and is in ERROR, \
                          and the message never reaches the peer.",
            needs: Needs::faults(Faults::LOSE_PEER),
            run: CaseFn::Plain(faults::lose_peer_events::<P>),
        },
        Case {
            name: "lifecycle::peer_destroy_is_reported_as_disconnected",
            description: "When one QP of a connected pair is drained and destroyed, the other's \
                          device reports Disconnected for the survivor (InfiniBand: the CM's \
                          DREQ; iWARP: the stream's close) within the case timeout, once; the \
                          survivor then drains with its receive flushed.",
            // Nothing is injected: destroying a QP is what any ULP does.
            needs: Needs::NOTHING,
            run: CaseFn::Plain(faults::peer_destroy_is_reported_as_disconnected::<P>),
        },
        Case {
            name: "lifecycle::event_fd_readable",
            description: "The event stream's file descriptor is readable exactly while an event \
                          (or the end of the stream) is waiting, as an event loop needs.",
            needs: Needs::faults(Faults::KILL_QP.union(Faults::UNPLUG)),
            run: CaseFn::Plain(event_fd::event_fd_readable::<P>),
        },
        Case {
            name: "lifecycle::stall_completes_nothing_until_resume",
            description: "A stalled device accepts posts but completes nothing and reports \
                          nothing; once resumed, the SEND and its receive complete with the \
                          data.",
            needs: Needs::faults(Faults::STALL),
            run: CaseFn::Plain(stall::stall_completes_nothing_until_resume::<P>),
        },
        Case {
            name: "lifecycle::drain_on_stalled_device",
            description: "On a stalled device, drain with a 300 ms deadline returns by the \
                          deadline with a fallback and accounts for every WR exactly once; after \
                          a resume, the drained QP's SEND never reaches its peer.",
            needs: Needs::faults(Faults::STALL),
            run: CaseFn::Plain(stall::drain_on_stalled_device::<P>),
        },
    ]
}

// ----- timing -----

/// Longest a call on a dead handle may take: it must fail at once, never wait for its
/// deadline.
pub(crate) const AT_ONCE: Duration = Duration::from_millis(100);

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
pub(crate) fn list<E: fmt::Display>(events: &[E]) -> String {
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
pub(crate) fn expect_stream_ended<E: fmt::Display>(
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
pub(crate) fn expect_lost<T>(what: &str, call: impl FnOnce() -> anyverbs::Result<T>) -> CaseResult {
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

/// The one event that says the device is gone after `fault`, on a device with `caps`: a reset
/// is `DeviceFatal` where the device reports fatal errors, a removal where it does not.
pub(crate) fn loss_event(fault: &Fault, caps: Caps) -> DeviceEvent {
    match fault {
        Fault::Reset { .. } if caps.contains(Caps::DEVICE_FATAL) => DeviceEvent::DeviceFatal,
        _ => DeviceEvent::DeviceRemoved,
    }
}

/// One message each way on a connected pair (tags 1 and 2): the connection carries data.
pub(crate) fn exchange_both_ways<P: Provider>(
    ctx: &Ctx<'_, P>,
    pair: &crate::ctx::Pair<P>,
) -> CaseResult {
    exchange(
        ctx,
        &pair.pd,
        (&pair.a, &pair.cq_a),
        (&pair.b, &pair.cq_b),
        1,
    )?;
    exchange(
        ctx,
        &pair.pd,
        (&pair.b, &pair.cq_b),
        (&pair.a, &pair.cq_a),
        2,
    )
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
