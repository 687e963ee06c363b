//! Completion channels: what an event loop relies on when it waits for completions through a
//! file descriptor instead of a blocked thread.
//!
//! - An armed CQ fires its channel once for the next completion: the channel's fd becomes
//!   readable and `next` names the CQ; a `poll(2)` loop that arms, polls again and sleeps on
//!   the fd runs a ping-pong without ever calling a blocking `cq.wait`.
//! - One channel serves many CQs and names the one that fired.
//! - An unarmed CQ fires nothing; a completion that arrived before the arm is found by the poll
//!   that follows the arm (the arm-then-poll rule that closes the race).
//! - A completion that only time produces (an RNR retry running out) wakes a loop asleep on the
//!   fd with nobody calling the provider.
//! - Destroying a channel that CQs use is `Busy`; after the device is lost the fd is readable
//!   and `next` fails with `DeviceLost`.
//!
//! A provider without completion channels ([`Device::create_channel`] fails with
//! `NotSupported`) reports every case as not run. Every wakeup is treated as a hint, as a ULP
//! must: a CQ named by `next` may have nothing to poll.

use std::time::{Duration, Instant};

use anyverbs::{
    Caps, Completion, CompletionChannel, CompletionQueue, ConnParams, Device, ErrorKind, Fault,
    Faults, MemoryRegion, ProtectionDomain, Provider, QpInit, QueuePair, RecvWr, SendFlags, SendWr,
    WcOpcode, WcStatus,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "channel::fd_wakes_a_poll_loop",
            description: "An armed CQ's channel fd becomes readable after a completion and next \
                          names the CQ; a plain poll(2) loop that arms, polls again and sleeps \
                          on the fd runs a ping-pong of 8 messages between two QPs without a \
                          blocking cq.wait.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(fd_wakes_a_poll_loop::<P>),
        },
        Case {
            name: "channel::one_channel_two_cqs",
            description: "One channel serves two CQs: a completion on either fires the channel \
                          once, and next names that CQ and no other.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(one_channel_two_cqs::<P>),
        },
        Case {
            name: "channel::arm_then_poll",
            description: "A completion on an unarmed CQ fires nothing (the fd stays unreadable, \
                          next says none); after arming, the poll that follows finds the \
                          completion that arrived before the arm; a solicited-only arm fires for \
                          a SEND marked SOLICITED.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(arm_then_poll::<P>),
        },
        Case {
            name: "channel::time_wakes_a_sleeping_loop",
            description: "A SEND whose RNR retries run out (on a device without RNR retries: a \
                          receive flushed by a move to ERROR, which some devices deliver later) \
                          completes in error with nobody calling the provider: a loop asleep in \
                          poll(2) on the armed CQ's channel wakes, and next names the CQ.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(time_wakes_a_sleeping_loop::<P>),
        },
        Case {
            name: "channel::destroy_busy_while_cqs_use_it",
            description: "Destroying a channel with a CQ on it is Busy and changes nothing; \
                          arming a CQ created without a channel is InvalidState; once its CQ is \
                          destroyed the channel destroys, twice, and then fails with Destroyed.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(destroy_busy_while_cqs_use_it::<P>),
        },
        Case {
            name: "channel::device_loss_wakes_the_fd",
            description: "After an unplug, a channel's fd becomes readable, next and arm fail \
                          with DeviceLost, and the CQ and the channel destroy.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(device_loss_wakes_the_fd::<P>),
        },
    ]
}

/// A channel of `device`; a provider without them does not run the case.
fn channel<P: Provider>(device: &P::Device) -> Result<P::Channel, CaseError> {
    match device.create_channel() {
        Ok(ch) => Ok(ch),
        Err(e) if e.kind() == ErrorKind::NotSupported => Err(CaseError::NotRun(format!(
            "the provider has no completion channels: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Two connected QPs whose CQs are on one channel. Fields drop in order: QPs before CQs before
/// the channel and the PD.
struct OnChannel<P: Provider> {
    a: P::Qp,
    b: P::Qp,
    _listener: P::Listener,
    cq_a: P::Cq,
    cq_b: P::Cq,
    channel: P::Channel,
    pd: P::Pd,
    _device: P::Device,
}

fn on_channel<P: Provider>(
    ctx: &Ctx<'_, P>,
    params: &ConnParams,
) -> Result<OnChannel<P>, CaseError> {
    let device = ctx.open()?;
    let channel = channel::<P>(&device)?;
    let pd = device.alloc_pd()?;
    let cq_a = device.create_cq_with(64, Some(&channel))?;
    let cq_b = device.create_cq_with(64, Some(&channel))?;
    let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default())?;
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default())?;
    let (listener, _) = ctx.connect(&device, &a, &b, params)?;
    Ok(OnChannel {
        a,
        b,
        _listener: listener,
        cq_a,
        cq_b,
        channel,
        pd,
        _device: device,
    })
}

/// Asks `poll(2)`, as an event loop would, whether the channel's fd becomes readable within
/// `wait` (an error condition counts: it wakes a loop as well).
#[cfg(unix)]
fn readable<C: CompletionChannel>(channel: &C, wait: Duration) -> Result<bool, CaseError> {
    crate::ctx::fd_readable(channel.fd(), wait)
}

#[cfg(not(unix))]
fn readable<C: CompletionChannel>(_channel: &C, _wait: Duration) -> Result<bool, CaseError> {
    Err(CaseError::NotRun(
        "completion channel file descriptors exist on Unix only".into(),
    ))
}

/// Every notification waiting on the channel.
fn notifications<C: CompletionChannel>(channel: &C) -> Result<Vec<u32>, CaseError> {
    let mut got = Vec::new();
    while let Some(cq) = channel.next()? {
        got.push(cq);
        ensure!(got.len() <= 64, "the channel keeps reporting CQs: {got:?}");
    }
    Ok(got)
}

/// Sleeps in poll(2) until the channel fires, reads its notifications, and returns them;
/// fails if nothing fires within `wait`.
fn sleep_until_fired<C: CompletionChannel>(
    channel: &C,
    wait: Duration,
    what: &str,
) -> Result<Vec<u32>, CaseError> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        ensure!(
            readable(channel, left)?,
            "the channel's fd did not become readable within {wait:?} of {what}"
        );
        let got = notifications(channel)?;
        if !got.is_empty() {
            return Ok(got);
        }
        // A readable fd with nothing to read is allowed (a hint); sleep again.
        ensure!(
            Instant::now() < until,
            "the channel's fd was readable, but next never named a CQ within {wait:?} of {what}"
        );
    }
}

/// Everything `cq` holds now.
fn poll_all<C: CompletionQueue>(cq: &C) -> Result<Vec<Completion>, CaseError> {
    let mut out = Vec::new();
    let mut wc = [Completion::default(); 16];
    loop {
        let n = cq.poll(&mut wc)?;
        out.extend_from_slice(&wc[..n]);
        if n < wc.len() {
            return Ok(out);
        }
    }
}

/// Poll until empty, arm, poll again: what arrived before the arm is returned, not lost.
fn arm_and_poll<C: CompletionQueue>(cq: &C) -> Result<Vec<Completion>, CaseError> {
    let mut got = poll_all(cq)?;
    cq.arm(false)?;
    got.extend(poll_all(cq)?);
    Ok(got)
}

/// How long a quiet CQ is watched before a case takes it that nothing fires.
const QUIET: Duration = Duration::from_millis(100);

fn fd_wakes_a_poll_loop<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const ROUNDS: u64 = 8;
    let f = on_channel(ctx, &ConnParams::default())?;
    let mr = ctx.mr_filled(&f.pd, 4096, 0)?;
    let wait = ctx.timeout().min(Duration::from_secs(5));
    ensure!(
        !readable(&f.channel, Duration::ZERO)?,
        "the channel's fd is readable before anything was armed or completed"
    );
    // The first message: b's CQ armed alone, and named when the message lands.
    f.b.post_recv(&[RecvWr::new(1_000, &[mr.sge(2048, 64)])])?;
    f.a.post_recv(&[RecvWr::new(2_000, &[mr.sge(3072, 64)])])?;
    ensure!(
        arm_and_poll(&f.cq_b)?.is_empty(),
        "b's CQ held completions before anything was sent"
    );
    mr.write(0, &0u64.to_le_bytes())?;
    f.a.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])])?;
    let fired = sleep_until_fired(&f.channel, wait, "the first message")?;
    ensure!(
        fired.iter().all(|&n| n == f.cq_b.cq_num()),
        "only b's CQ (number {}) was armed, but the channel named {fired:?}",
        f.cq_b.cq_num()
    );
    // The ping-pong, driven from poll(2) alone: b answers each ping, a sends the next ping on
    // each answer. Every wakeup re-arms the CQs it named, then polls them again.
    let mut pings_seen = 0u64;
    let mut pongs_seen = 0u64;
    let mut a_pending = arm_and_poll(&f.cq_a)?;
    let mut b_pending = arm_and_poll(&f.cq_b)?;
    let until = Instant::now() + wait * 2;
    while pongs_seen < ROUNDS {
        for c in std::mem::take(&mut b_pending) {
            ensure!(c.status.is_success(), "b completed {c:?}");
            if c.opcode == WcOpcode::Recv {
                ensure_eq!(c.wr_id, 1_000 + pings_seen, "b's receive, in order");
                pings_seen += 1;
                let slot = 2048 + 64 * (pings_seen as usize % 8);
                f.b.post_recv(&[RecvWr::new(1_000 + pings_seen, &[mr.sge(slot, 64)])])?;
                f.b.post_send(&[SendWr::send(10_000 + pings_seen, &[mr.sge(8, 8)])])?;
            }
        }
        for c in std::mem::take(&mut a_pending) {
            ensure!(c.status.is_success(), "a completed {c:?}");
            if c.opcode == WcOpcode::Recv {
                ensure_eq!(c.wr_id, 2_000 + pongs_seen, "a's receive, in order");
                pongs_seen += 1;
                if pongs_seen < ROUNDS {
                    let slot = 3072 + 64 * (pongs_seen as usize % 8);
                    f.a.post_recv(&[RecvWr::new(2_000 + pongs_seen, &[mr.sge(slot, 64)])])?;
                    f.a.post_send(&[SendWr::send(1 + pongs_seen, &[mr.sge(0, 8)])])?;
                }
            }
        }
        if pongs_seen >= ROUNDS {
            break;
        }
        ensure!(
            Instant::now() < until,
            "the ping-pong stalled after {pings_seen} pings and {pongs_seen} answers"
        );
        let left = until.saturating_duration_since(Instant::now());
        if !readable(&f.channel, left)? {
            continue;
        }
        for cq_num in notifications(&f.channel)? {
            if cq_num == f.cq_a.cq_num() {
                a_pending.extend(arm_and_poll(&f.cq_a)?);
            } else if cq_num == f.cq_b.cq_num() {
                b_pending.extend(arm_and_poll(&f.cq_b)?);
            } else {
                return Err(CaseError::Failed(format!(
                    "the channel named CQ {cq_num}, which is neither of its CQs ({} and {})",
                    f.cq_a.cq_num(),
                    f.cq_b.cq_num()
                )));
            }
        }
    }
    ensure_eq!(pings_seen, ROUNDS, "pings b received");
    Ok(())
}

fn one_channel_two_cqs<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = on_channel(ctx, &ConnParams::default())?;
    let mr = ctx.mr_filled(&f.pd, 256, 7)?;
    let wait = ctx.timeout().min(Duration::from_secs(5));
    f.a.post_recv(&[RecvWr::new(1, &[mr.sge(128, 64)])])?;
    f.b.post_recv(&[RecvWr::new(2, &[mr.sge(192, 64)])])?;
    for (cq_num, send) in [(f.cq_b.cq_num(), &f.a), (f.cq_a.cq_num(), &f.b)] {
        // Each round: both armed, one message; its receive fires the receiver's CQ, the send
        // fires the sender's.
        ensure!(arm_and_poll(&f.cq_a)?.is_empty(), "a's CQ held completions");
        ensure!(arm_and_poll(&f.cq_b)?.is_empty(), "b's CQ held completions");
        let sender = if cq_num == f.cq_b.cq_num() {
            f.cq_a.cq_num()
        } else {
            f.cq_b.cq_num()
        };
        send.post_send(&[SendWr::send(10, &[mr.sge(0, 8)])])?;
        let mut fired = sleep_until_fired(&f.channel, wait, "a message")?;
        // The two completions need not land at once: wait a little for the second.
        let until = Instant::now() + wait;
        while !(fired.contains(&cq_num) && fired.contains(&sender)) && Instant::now() < until {
            if readable(&f.channel, until.saturating_duration_since(Instant::now()))? {
                fired.extend(notifications(&f.channel)?);
            }
        }
        ensure!(
            fired.contains(&cq_num) && fired.contains(&sender),
            "a message completed on CQs {cq_num} (receive) and {sender} (send), but the \
             channel named {fired:?}"
        );
        ensure!(
            fired.iter().all(|n| *n == cq_num || *n == sender),
            "the channel named a CQ that is not on it: {fired:?}"
        );
        let mut counts = [0; 2];
        for n in &fired {
            counts[usize::from(*n == sender)] += 1;
        }
        ensure!(
            counts == [1, 1],
            "one arm fires once, but the channel named {fired:?}"
        );
        let got = poll_all(&f.cq_a)?.len() + poll_all(&f.cq_b)?.len();
        ensure_eq!(got, 2, "completions of one message");
    }
    Ok(())
}

fn arm_then_poll<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = on_channel(ctx, &ConnParams::default())?;
    let mr = ctx.mr_filled(&f.pd, 256, 7)?;
    let wait = ctx.timeout().min(Duration::from_secs(5));
    // Unarmed: a completion lands (b's receive) and nothing fires.
    f.b.post_recv(&[RecvWr::new(1, &[mr.sge(128, 64)])])?;
    f.a.post_send(&[SendWr::send(2, &[mr.sge(0, 8)])])?;
    let sent = ctx.completion(&f.cq_a)?;
    ctx.expect_status(&sent, 2, WcStatus::Success)?;
    ensure!(
        !readable(&f.channel, QUIET)?,
        "the channel's fd became readable though no CQ was armed"
    );
    ensure_eq!(f.channel.next()?, None, "next, with no CQ armed");
    // Arm, then poll: the receive that completed before the arm is found.
    f.cq_b.arm(false)?;
    let got = poll_all(&f.cq_b)?;
    ensure!(
        got.len() == 1 && got[0].wr_id == 1 && got[0].status.is_success(),
        "the poll after the arm must find the receive that completed before it; got {got:?}"
    );
    // Whether that arm fires for what was already there differs between devices; read it off.
    let _ = readable(&f.channel, QUIET)?;
    notifications(&f.channel)?;
    // A solicited-only arm: an ordinary SEND's receive need not fire it (not checked: devices
    // differ), a SOLICITED one must.
    f.b.post_recv(&[RecvWr::new(3, &[mr.sge(128, 64)])])?;
    ensure!(arm_and_poll(&f.cq_b)?.is_empty(), "b's CQ held completions");
    f.cq_b.arm(true)?;
    let sge = [mr.sge(0, 8)];
    let mut solicited = SendWr::send(4, &sge);
    solicited.flags = SendFlags::SIGNALED | SendFlags::SOLICITED;
    f.a.post_send(&[solicited])?;
    let fired = sleep_until_fired(&f.channel, wait, "a solicited message")?;
    ensure!(
        fired.contains(&f.cq_b.cq_num()),
        "a solicited-only arm did not fire for a SOLICITED message: the channel named {fired:?}"
    );
    let got = poll_all(&f.cq_b)?;
    ensure!(
        got.iter().any(|c| c.wr_id == 3),
        "the solicited message's receive was not in the CQ that fired: {got:?}"
    );
    ctx.completion(&f.cq_a)?;
    Ok(())
}

fn time_wakes_a_sleeping_loop<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let params = ConnParams {
        rnr_retry_count: 1,
        ..ConnParams::default()
    };
    let f = on_channel(ctx, &params)?;
    let mr = ctx.mr_filled(&f.pd, 64, 0)?;
    if !ctx.info().caps.contains(Caps::RNR_RETRY) {
        return flush_wakes_a_sleeping_loop(ctx, &f, &mr);
    }
    ensure!(arm_and_poll(&f.cq_a)?.is_empty(), "a's CQ held completions");
    // b posts no receive: the SEND is refused (RNR) until its retries run out. Nothing calls
    // the provider after the post but the loop's reads of the channel.
    f.a.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])])?;
    let wait = ctx.timeout();
    let fired = sleep_until_fired(&f.channel, wait, "a SEND whose RNR retries run out")?;
    ensure!(
        fired.contains(&f.cq_a.cq_num()),
        "the channel named {fired:?}, not the sender's CQ {}",
        f.cq_a.cq_num()
    );
    let got = poll_all(&f.cq_a)?;
    ensure!(
        got.iter()
            .any(|c| c.wr_id == 1 && c.status == WcStatus::RnrRetryExceeded),
        "the wakeup found {got:?}, not the SEND failed with RNR retry exceeded"
    );
    Ok(())
}

/// [`time_wakes_a_sleeping_loop`] on a device without RNR retries: a receive flushed by a move
/// to ERROR (rxe, irdma and the like flush asynchronously, after the call returned).
fn flush_wakes_a_sleeping_loop<P: Provider>(
    ctx: &Ctx<'_, P>,
    f: &OnChannel<P>,
    mr: &P::Mr,
) -> CaseResult {
    f.a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])])?;
    ensure!(arm_and_poll(&f.cq_a)?.is_empty(), "a's CQ held completions");
    f.a.modify(anyverbs::QpState::Error)?;
    let fired = sleep_until_fired(&f.channel, ctx.timeout(), "a move to ERROR")?;
    ensure!(
        fired.contains(&f.cq_a.cq_num()),
        "the channel named {fired:?}, not the flushed QP's CQ {}",
        f.cq_a.cq_num()
    );
    // The wakeup is a hint: the flush may be a moment behind what fired the channel.
    let got = ctx.completion(&f.cq_a)?;
    ctx.expect_status(&got, 1, WcStatus::WrFlushError)
}

fn destroy_busy_while_cqs_use_it<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let channel = channel::<P>(&device)?;
    let cq = device.create_cq_with(16, Some(&channel))?;
    match channel.destroy() {
        Err(e) if e.kind() == ErrorKind::Busy => {}
        other => {
            return Err(CaseError::Failed(format!(
                "destroying a channel with a CQ on it must be Busy; got {other:?}"
            )));
        }
    }
    // Nothing changed: the CQ arms, the channel reads.
    cq.arm(false)?;
    ensure_eq!(channel.next()?, None, "next, with nothing completed");
    let plain = device.create_cq(16)?;
    match plain.arm(false) {
        Err(e) if e.kind() == ErrorKind::InvalidState => {}
        other => {
            return Err(CaseError::Failed(format!(
                "arming a CQ created without a channel must be InvalidState; got {other:?}"
            )));
        }
    }
    cq.destroy()?;
    channel.destroy()?;
    channel.destroy()?;
    match channel.next() {
        Err(e) if e.kind() == ErrorKind::Destroyed => {}
        other => {
            return Err(CaseError::Failed(format!(
                "next on a destroyed channel must fail with Destroyed; got {other:?}"
            )));
        }
    }
    Ok(())
}

fn device_loss_wakes_the_fd<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let channel = channel::<P>(&device)?;
    let cq = device.create_cq_with(16, Some(&channel))?;
    cq.arm(false)?;
    ensure!(
        !readable(&channel, Duration::ZERO)?,
        "the channel's fd is readable before anything happened"
    );
    super::lifecycle::inject(ctx, &Fault::Unplug)?;
    let wait = ctx.timeout().min(Duration::from_secs(2));
    ensure!(
        readable(&channel, wait)?,
        "the channel's fd did not become readable within {wait:?} of an unplug: a loop asleep \
         on it would never learn of the loss"
    );
    for (what, result) in [("next", channel.next().map(|_| ())), ("arm", cq.arm(false))] {
        match result {
            Err(e) if e.kind() == ErrorKind::DeviceLost => {}
            other => {
                return Err(CaseError::Failed(format!(
                    "{what} after an unplug must fail with DeviceLost; got {other:?}"
                )));
            }
        }
    }
    cq.destroy()?;
    channel.destroy()?;
    Ok(())
}
