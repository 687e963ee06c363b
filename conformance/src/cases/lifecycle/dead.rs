//! After a reset or an unplug every handle of the device is dead: every call fails with
//! `DeviceLost` at once, calls already blocked wake up, and only `destroy` succeeds.

use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Fault, Listener,
    MemoryRegion, PostError, ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr,
    SendWr,
};

use super::{AT_ONCE, DOWN_FOR, await_event, expect_lost, inject, loss_event};
use crate::case::{CaseError, CaseResult};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

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

/// Longest a blocked call may take to return after its device is lost.
const WAKE: Duration = Duration::from_millis(500);

/// The losses the `every_handle_dead_after_*` cases inject, by row.
pub(super) const LOSSES: [Fault; 2] = [Fault::Reset { down_for: DOWN_FOR }, Fault::Unplug];

/// Row `row` of [`LOSSES`]: [`every_handle_dead`] after that loss.
pub(super) fn every_handle_dead_row<P: Provider>(ctx: &Ctx<'_, P>, row: usize) -> CaseResult {
    every_handle_dead(ctx, LOSSES[row].clone())
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
    let lost = loss_event(&fault, ctx.info().caps);
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

pub(super) fn blocked_calls_wake_on_unplug<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
