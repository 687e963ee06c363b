//! The kit against a scripted device: a few lines of raw rings whose behaviour each test picks,
//! so that what the kit does is checked without the mock's simulation in between.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::cm::{ConnParams, Connection};
use crate::drain::profiles::profile_named;
use crate::drain::{DrainPlan, WorkQueue};
use crate::error::{Error, ErrorKind, PostError, Result};
use crate::state::QpState;
use crate::wr::{Completion, RecvWr, SendFlags, SendWr, Sge, WcOpcode, WcStatus};
use crate::{CompletionQueue, QpInit, QueuePair};

/// What the scripted device does with a WR posted while its QP is in ERROR.
#[derive(Clone, Copy, PartialEq)]
enum InError {
    /// Flushes it at once (kernel siw, irdma, InfiniBand).
    Flush,
    /// Accepts it and never completes it (user-space siw).
    Drop,
    /// Holds it, and every flush of a move to ERROR, until the test calls
    /// [`ToyQp::release_parked`]: a device that flushes asynchronously.
    Park,
}

/// Code a test runs inside the toy device at a chosen moment (a thread "descheduled" there).
type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Ring {
    entries: VecDeque<Completion>,
    room: usize,
    overflowed: bool,
    wake: bool,
}

#[derive(Default)]
struct CqHooks {
    /// Runs at the start of the next `wait`, before it looks at the ring.
    wait: Option<Hook>,
    /// Runs at the start of the next `poll`.
    poll: Option<Hook>,
    /// How many times `destroy` was called, and how long each call takes.
    destroys: usize,
    destroy_takes: Duration,
    /// Calls the kit made into the device CQ after destroying it (a use after free on a real
    /// device).
    after_destroy: Vec<&'static str>,
}

impl ToyCq {
    /// Notes a call of the kit into the device CQ; one after `destroy` is a bug of the kit.
    fn called(&self, what: &'static str) {
        let mut h = lock(&self.1);
        if h.destroys > 0 {
            h.after_destroy.push(what);
        }
    }
}

#[derive(Clone, Default)]
struct ToyCq(Arc<(Mutex<Ring>, Condvar)>, Arc<Mutex<CqHooks>>);

impl ToyCq {
    fn new(depth: usize) -> ToyCq {
        let cq = ToyCq::default();
        lock(&cq.0.0).room = depth;
        cq
    }

    /// The device produces `c`.
    fn push(&self, c: Completion) {
        let mut r = lock(&self.0.0);
        if r.entries.len() >= r.room {
            r.overflowed = true;
        } else {
            r.entries.push_back(c);
        }
        self.0.1.notify_all();
    }
}

impl RawCq for ToyCq {
    fn cq_num(&self) -> u32 {
        1
    }
    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        self.called("poll");
        let hook = lock(&self.1).poll.take();
        if let Some(hook) = hook {
            hook();
        }
        let mut r = lock(&self.0.0);
        if r.overflowed {
            return Err(Error::new(ErrorKind::Overflow, "toy CQ overflowed"));
        }
        let n = out.len().min(r.entries.len());
        for (slot, c) in out.iter_mut().zip(r.entries.drain(..n)) {
            *slot = c;
        }
        Ok(n)
    }
    fn wait(&self, deadline: Instant) -> Result<bool> {
        self.called("wait");
        let hook = lock(&self.1).wait.take();
        if let Some(hook) = hook {
            hook();
        }
        let mut r = lock(&self.0.0);
        loop {
            if !r.entries.is_empty() || r.overflowed || std::mem::take(&mut r.wake) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            r = self.0.1.wait_timeout(r, deadline - now).unwrap().0;
        }
    }
    fn wake(&self) {
        lock(&self.0.0).wake = true;
        self.0.1.notify_all();
    }
    fn reserve(&self, extra: u32) -> Result<()> {
        let mut r = lock(&self.0.0);
        r.room = r.room.max(extra as usize) + 1; // generous: never the bottleneck here
        Ok(())
    }
    fn destroy(&self) -> Result<()> {
        let takes = {
            let mut h = lock(&self.1);
            h.destroys += 1;
            h.destroy_takes
        };
        std::thread::sleep(takes);
        Ok(())
    }
}

/// A posted WR as the scripted device keeps it.
#[derive(Clone, Copy)]
struct Posted {
    token: u64,
    signaled: bool,
    opcode: WcOpcode,
}

struct ToyQpState {
    state: QpState,
    sq: VecDeque<Posted>,
    rq: VecDeque<Posted>,
    stopped: bool,
    /// Flushes an asynchronous device ([`InError::Park`]) has not delivered yet.
    parked: Vec<(WorkQueue, Completion)>,
    destroyed: bool,
    /// `stop` panics (a provider bug).
    panic_on_stop: bool,
    /// Calls the kit made into the device QP after destroying it (a use after free on a real
    /// device).
    after_destroy: Vec<&'static str>,
}

struct ToyQp {
    num: u32,
    in_error: InError,
    scq: ToyCq,
    rcq: ToyCq,
    st: Mutex<ToyQpState>,
}

impl ToyQp {
    fn new(num: u32, in_error: InError, scq: &ToyCq, rcq: &ToyCq) -> ToyQp {
        ToyQp {
            num,
            in_error,
            scq: scq.clone(),
            rcq: rcq.clone(),
            st: Mutex::new(ToyQpState {
                state: QpState::ReadyToSend,
                sq: VecDeque::new(),
                rq: VecDeque::new(),
                stopped: false,
                parked: Vec::new(),
                destroyed: false,
                panic_on_stop: false,
                after_destroy: Vec::new(),
            }),
        }
    }

    fn completion(&self, p: Posted, status: WcStatus) -> Completion {
        Completion {
            wr_id: p.token,
            status,
            // Devices fill in garbage for flushed WRs.
            opcode: if status == WcStatus::Success {
                p.opcode
            } else {
                WcOpcode::Send
            },
            qp_num: self.num,
            ..Completion::default()
        }
    }

    /// The device executes the oldest `n` sends successfully.
    fn execute_sends(&self, n: usize) {
        let mut st = lock(&self.st);
        for _ in 0..n {
            let p = st.sq.pop_front().expect("a send to execute");
            if p.signaled {
                self.scq.push(self.completion(p, WcStatus::Success));
            }
        }
    }

    /// The device delivers a message into the oldest receive.
    fn receive(&self) {
        let p = lock(&self.st).rq.pop_front().expect("a receive");
        self.rcq.push(self.completion(p, WcStatus::Success));
    }

    fn flush_all(&self, st: &mut ToyQpState) {
        let sends: Vec<Posted> = st.sq.drain(..).collect();
        let recvs: Vec<Posted> = st.rq.drain(..).collect();
        for p in sends {
            self.flush(st, WorkQueue::Send, p);
        }
        for p in recvs {
            self.flush(st, WorkQueue::Recv, p);
        }
    }

    /// The device flushes `p`: now, or later on an asynchronous device.
    fn flush(&self, st: &mut ToyQpState, queue: WorkQueue, p: Posted) {
        let c = self.completion(p, WcStatus::WrFlushError);
        if self.in_error == InError::Park {
            st.parked.push((queue, c));
            return;
        }
        match queue {
            WorkQueue::Send => self.scq.push(c),
            WorkQueue::Recv => self.rcq.push(c),
        }
    }

    /// The asynchronous device delivers the flushes it held back.
    fn release_parked(&self) {
        let parked = std::mem::take(&mut lock(&self.st).parked);
        for (queue, c) in parked {
            match queue {
                WorkQueue::Send => self.scq.push(c),
                WorkQueue::Recv => self.rcq.push(c),
            }
        }
    }

    /// Notes a call of the kit into the device QP; one after `destroy` is a bug of the kit.
    fn called(&self, what: &'static str) {
        let mut st = lock(&self.st);
        if st.destroyed {
            st.after_destroy.push(what);
        }
    }

    fn post(&self, queue: WorkQueue, posted: impl Iterator<Item = Posted>) {
        let mut st = lock(&self.st);
        for p in posted {
            if st.state == QpState::Error {
                if self.in_error != InError::Drop {
                    self.flush(&mut st, queue, p);
                }
                continue;
            }
            match queue {
                WorkQueue::Send => st.sq.push_back(p),
                WorkQueue::Recv => st.rq.push_back(p),
            }
        }
    }
}

impl RawQp for ToyQp {
    type Cq = ToyCq;
    fn qp_num(&self) -> u32 {
        self.num
    }
    fn state(&self) -> Result<QpState> {
        self.called("state");
        Ok(lock(&self.st).state)
    }
    fn modify(&self, to: QpState) -> Result<()> {
        self.called("modify");
        let mut st = lock(&self.st);
        st.state = to;
        match to {
            QpState::Error => self.flush_all(&mut st),
            QpState::Reset => {
                st.sq.clear();
                st.rq.clear();
            }
            _ => {}
        }
        Ok(())
    }
    fn enter_error(&self) -> Result<()> {
        self.modify(QpState::Error)
    }
    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        self.called("post_send");
        self.post(
            WorkQueue::Send,
            wrs.iter().map(|w| Posted {
                token: w.wr_id,
                signaled: w.flags.contains(SendFlags::SIGNALED),
                opcode: w.completion_opcode(),
            }),
        );
        Ok(())
    }
    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        self.called("post_recv");
        if lock(&self.st).rq.len() + wrs.len() > 8 {
            // The device's ring holds 8: the WRs that fit are posted.
            let fit = 8 - lock(&self.st).rq.len();
            self.post_recv(&wrs[..fit])?;
            return Err(PostError::new(
                fit,
                Error::new(ErrorKind::ResourceExhausted, "toy receive ring full"),
            ));
        }
        self.post(
            WorkQueue::Recv,
            wrs.iter().map(|w| Posted {
                token: w.wr_id,
                signaled: true,
                opcode: WcOpcode::Recv,
            }),
        );
        Ok(())
    }
    fn connect(&self, _: SocketAddr, _: &ConnParams) -> Result<()> {
        Err(Error::not_supported("toy"))
    }
    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        // Nobody ever answers: waits out its deadline (a short one in tests), then looks.
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        self.called("wait_connected");
        Err(Error::timed_out("toy: nobody answered"))
    }
    fn stop(&self) -> Result<()> {
        self.called("stop");
        let mut st = lock(&self.st);
        assert!(!st.panic_on_stop, "the toy's stop panics");
        st.stopped = true;
        st.sq.clear();
        st.rq.clear();
        st.parked.clear();
        Ok(())
    }
    fn destroy(&self) -> Result<()> {
        self.called("destroy");
        lock(&self.st).destroyed = true;
        Ok(())
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn cq(depth: u32, life: &DeviceLife) -> (ToyCq, KitCq<ToyCq>) {
    let raw = ToyCq::new(depth as usize);
    (raw.clone(), KitCq::new(raw, depth, life.clone()))
}

fn qp(
    num: u32,
    in_error: InError,
    (rs, ks): &(ToyCq, KitCq<ToyCq>),
    (rr, kr): &(ToyCq, KitCq<ToyCq>),
    life: &DeviceLife,
) -> KitQp<ToyQp> {
    let raw = ToyQp::new(num, in_error, rs, rr);
    let profile = profile_named("mlx5").expect("a built-in profile");
    KitQp::new(raw, ks, kr, &QpInit::default(), profile, life.clone()).unwrap()
}

fn poll_all(cq: &KitCq<ToyCq>) -> Vec<(u64, WcStatus, WcOpcode, u32)> {
    let mut out = [Completion::default(); 64];
    let n = cq.poll(&mut out).unwrap();
    out[..n]
        .iter()
        .map(|c| (c.wr_id, c.status, c.opcode, c.qp_num))
        .collect()
}

fn sge() -> [Sge; 1] {
    [Sge {
        addr: 0,
        length: 8,
        lkey: 1,
    }]
}

#[test]
fn completions_are_resolved_when_polled_and_markers_never_reach_the_ulp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(100, &s), SendWr::send(101, &s)])
        .unwrap();
    q.post_recv(&[RecvWr::new(200, &s)]).unwrap();
    // The raw ring holds tokens, not the ULP's ids.
    q.raw().execute_sends(1);
    assert_ne!(lock(&c.0.0.0).entries[0].wr_id, 100);
    assert_eq!(
        poll_all(&c.1),
        [(100, WcStatus::Success, WcOpcode::Send, 7)]
    );
    let report = q.drain(soon()).unwrap();
    assert_eq!((report.completed_by_device, report.synthesized), (2, 0));
    assert_eq!(report.fallback, None);
    // The flushes, with the ULP's ids and meaningful opcodes; the markers swallowed.
    assert_eq!(
        poll_all(&c.1),
        [
            (101, WcStatus::WrFlushError, WcOpcode::Send, 7),
            (200, WcStatus::WrFlushError, WcOpcode::Recv, 7)
        ]
    );
    assert_eq!(c.1.unrouted(), 0);
}

#[test]
fn a_shared_cq_routes_each_completion_to_its_own_qp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    // Both QPs use the same ULP ids: only the token tells them apart.
    a.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    b.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    b.raw().receive();
    a.raw().receive();
    a.raw().receive();
    let got = poll_all(&c.1);
    assert_eq!(
        got.iter().map(|c| (c.0, c.3)).collect::<Vec<_>>(),
        [(1, 8), (1, 7), (2, 7)]
    );
}

#[test]
fn a_late_completion_under_a_reused_qp_number_resolves_nowhere() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    old.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // The old QP's device completion, captured before it is destroyed without a drain.
    let late = {
        let st = lock(&old.raw().st);
        old.raw().completion(st.rq[0], WcStatus::WrFlushError)
    };
    old.destroy().unwrap();
    // The kernel gives number 7 to a new QP with a receive of the same sequence outstanding.
    let new = qp(7, InError::Flush, &c, &c, &life);
    new.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    c.0.push(late);
    assert_eq!(poll_all(&c.1), [], "the old QP's flush is not the new QP's");
    new.raw().receive();
    assert_eq!(poll_all(&c.1), [(2, WcStatus::Success, WcOpcode::Recv, 7)]);
}

#[test]
fn what_a_drain_polled_for_other_qps_waits_for_the_ulp_in_order() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    b.post_recv(&[RecvWr::new(10, &s), RecvWr::new(11, &s)])
        .unwrap();
    a.post_recv(&[RecvWr::new(20, &s)]).unwrap();
    b.raw().receive();
    b.raw().receive();
    // A's drain polls the CQ past B's completions: they are held, not lost.
    a.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1)
            .iter()
            .map(|c| (c.0, c.1, c.3))
            .collect::<Vec<_>>(),
        [
            (10, WcStatus::Success, 8),
            (11, WcStatus::Success, 8),
            (20, WcStatus::WrFlushError, 7)
        ]
    );
}

#[test]
fn idle_is_decided_from_completions_when_posts_in_error_never_complete() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    q.raw().execute_sends(1); // succeeded silently: no completion
    q.modify(QpState::Error).unwrap();
    // Posted in ERROR on a device that drops it: doomed, never awaited.
    q.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(report.fallback, None, "{report}");
    assert_eq!(report.synthesized, 1, "{report}");
    assert!(report.elapsed < Duration::from_secs(1), "{report}");
    assert_eq!(
        poll_all(&c.1),
        [(2, WcStatus::WrFlushError, WcOpcode::Recv, 7)],
        "the unsignaled success stays silent; the doomed receive is flushed once"
    );
}

#[test]
fn an_error_completion_tells_the_kit_the_qp_is_in_error() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // The device moves the QP to ERROR on its own; the kit learns it from the flush it polls.
    {
        let mut st = lock(&q.raw().st);
        st.state = QpState::Error;
        q.raw().flush_all(&mut st);
    }
    assert_eq!(poll_all(&c.1)[0].1, WcStatus::WrFlushError);
    q.post_recv(&[RecvWr::new(2, &s)]).unwrap(); // dropped by the device: doomed
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (1, None), "{report}");
}

#[test]
fn a_refused_batch_loses_nothing_and_counts_exactly() {
    let life = DeviceLife::new();
    let c = cq(32, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    let wrs: Vec<RecvWr> = (0..10).map(|i| RecvWr::new(i, &s)).collect();
    let e = q.post_recv(&wrs).unwrap_err();
    assert_eq!((e.accepted, e.kind()), (8, ErrorKind::ResourceExhausted));
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 8, "{report}");
    let ids: Vec<u64> = poll_all(&c.1).iter().map(|c| c.0).collect();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
}

#[test]
fn an_overflowed_cq_fails_the_drain_with_overflow() {
    let life = DeviceLife::new();
    let raw = ToyCq::new(1);
    let k = KitCq::new(raw.clone(), 1, life.clone());
    let c = (raw, k);
    let q = qp(7, InError::Flush, &c, &c, &life);
    lock(&c.0.0.0).room = 1; // take the reserve back: the ring holds one
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    let e = q.drain(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
}

#[test]
fn a_lost_device_fails_every_call_even_with_completions_held() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Flush, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    b.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    b.raw().receive();
    a.drain(soon()).unwrap(); // holds B's completion
    life.lose("device toy0 was removed");
    let mut out = [Completion::default(); 4];
    let e = c.1.poll(&mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceLost);
    assert!(e.to_string().contains("toy0"), "{e}");
    assert_eq!(
        b.post_recv(&[RecvWr::new(2, &s)]).unwrap_err().kind(),
        ErrorKind::DeviceLost
    );
    assert_eq!(b.drain(soon()).unwrap_err().kind(), ErrorKind::DeviceLost);
}

#[test]
fn a_waiting_ulp_wakes_when_a_drain_puts_completions_aside() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Drop, &c, &c, &life));
    let s = sge();
    q.post_recv(&[RecvWr::new(5, &s)]).unwrap();
    let kcq = Arc::new(c.1);
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = [Completion::default(); 4];
            let n = kcq.wait(&mut out, soon()).unwrap();
            (out[0].wr_id, n, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    // Nothing reaches the device's ring: the drain synthesizes the flush into the kit's.
    q.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    let (wr_id, n, waited) = waiter.join().unwrap();
    assert_eq!((wr_id, n), (5, 1));
    assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
}

#[test]
fn a_reset_delivers_what_completed_before_it_and_forgets_the_rest() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    q.raw().receive();
    q.modify(QpState::Reset).unwrap();
    assert_eq!(poll_all(&c.1), [(1, WcStatus::Success, WcOpcode::Recv, 7)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 0, "RESET discarded receive 2: {report}");
}

#[test]
fn after_a_drain_only_error_is_accepted_and_posts_are_refused() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    q.drain(soon()).unwrap();
    assert_eq!(
        q.modify(QpState::ReadyToSend).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    q.modify(QpState::Error).unwrap();
    let s = sge();
    let e = q.post_send(&[SendWr::send(1, &s)]).unwrap_err();
    assert_eq!((e.accepted, e.kind()), (0, ErrorKind::InvalidState));
    q.destroy().unwrap();
    assert_eq!(q.state().unwrap_err().kind(), ErrorKind::Destroyed);
}

// ----- review findings -----

/// A ULP thread polling its CQ while a drain runs can be the one that resolves the drain's
/// marker; the drain, asleep in the device's wait, must still see it and return, not sleep
/// until its deadline.
#[test]
fn a_drain_whose_marker_a_polling_ulp_resolved_returns_promptly() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let (raw, kcq) = (c.0.clone(), Arc::new(c.1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    // The drain has pumped and is about to sleep in the device's wait: the device delivers
    // the flush and the marker, and the ULP's poller takes them first.
    lock(&raw.1).wait = Some({
        let (q, kcq, seen) = (Arc::clone(&q), Arc::clone(&kcq), Arc::clone(&seen));
        Box::new(move || {
            q.raw().release_parked();
            let mut out = [Completion::default(); 8];
            let n = kcq.poll(&mut out).unwrap();
            lock(&seen).extend(out[..n].iter().map(|c| (c.wr_id, c.status)));
        })
    });
    let report = q.drain(Instant::now() + Duration::from_secs(2)).unwrap();
    assert_eq!(*lock(&seen), [(1, WcStatus::WrFlushError)]);
    assert_eq!(report.fallback, None, "{report}");
    assert!(
        report.elapsed < Duration::from_millis(500),
        "the drain slept until its deadline: {report}"
    );
}

/// A drain that puts completions aside wakes the ULP waiting on the CQ; the drain's own wait
/// on the device must not swallow that wake and leave the ULP asleep until its deadline while
/// its completion sits in the kit.
#[test]
fn a_drain_does_not_swallow_the_wake_meant_for_a_waiting_ulp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Park, &c, &c, &life);
    let b = qp(8, InError::Flush, &c, &c, &life);
    let s = sge();
    a.post_send(&[SendWr::send(1, &s)]).unwrap();
    b.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    let (raw, kcq) = (c.0.clone(), Arc::new(c.1));
    let (arrived, in_wait) = std::sync::mpsc::channel();
    // The ULP is descheduled between its poll and its wait in the device.
    lock(&raw.1).wait = Some(Box::new(move || {
        arrived.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }));
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut out = [Completion::default(); 4];
            let n = kcq
                .wait(&mut out, Instant::now() + Duration::from_secs(5))
                .unwrap();
            (
                out[..n].iter().map(|c| c.wr_id).collect::<Vec<_>>(),
                start.elapsed(),
            )
        })
    };
    in_wait.recv().unwrap();
    b.raw().receive();
    // A's marker is never delivered: the drain waits (and pumps B's completion aside).
    let report = a
        .drain(Instant::now() + Duration::from_millis(1500))
        .unwrap();
    let (ids, waited) = waiter.join().unwrap();
    assert!(
        waited < Duration::from_secs(1),
        "the ULP slept {waited:?} with its completion held by the kit ({report}, got {ids:?})"
    );
    assert_eq!(ids, [2]);
}

/// Two ULP threads wait on one CQ; a drain delivers two completions at once. Each waiter must
/// get one: the second must not sleep until its deadline while the other one's share of the
/// delivery sits in the kit.
#[test]
fn every_waiter_wakes_when_a_drain_delivers_several_completions() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s), RecvWr::new(2, &s)])
        .unwrap();
    let kcq = Arc::new(c.1);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let kcq = Arc::clone(&kcq);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut out = [Completion::default(); 1];
                let n = kcq.wait(&mut out, Instant::now() + Duration::from_secs(5));
                (n.map(|_| out[0].wr_id), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    q.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    let mut ids = Vec::new();
    for w in waiters {
        let (id, waited) = w.join().unwrap();
        assert!(
            waited < Duration::from_secs(1),
            "a waiter slept {waited:?} with a completion held"
        );
        ids.push(id.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
}

/// A late flush of a destroyed QP, routed by a reused QP number to a healthy new QP, must not
/// make the kit believe the new QP is in ERROR: its posts would be doomed, its unsignaled
/// sends never retired (their slots lost) and reported flushed at the drain though they
/// succeeded.
#[test]
fn a_stale_error_completion_does_not_doom_a_healthy_qp() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    old.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let late = {
        let st = lock(&old.raw().st);
        old.raw().completion(st.rq[0], WcStatus::WrFlushError)
    };
    old.destroy().unwrap();
    let new = qp(7, InError::Flush, &c, &c, &life);
    c.0.push(late);
    assert_eq!(poll_all(&c.1), []);
    new.post_send(&[
        SendWr::send(10, &s).with_flags(SendFlags::empty()),
        SendWr::send(11, &s),
    ])
    .unwrap();
    new.raw().execute_sends(2);
    assert_eq!(poll_all(&c.1), [(11, WcStatus::Success, WcOpcode::Send, 7)]);
    let report = new.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1),
        [],
        "send 10 succeeded (send 11 behind it did): {report}"
    );
    assert_eq!(report.accounted(), 0, "{report}");
}

/// Two threads destroying one CQ: the device's CQ is destroyed once (a second
/// `ibv_destroy_cq` on a real device is a double free).
#[test]
fn a_cq_destroyed_by_two_threads_is_destroyed_in_the_device_once() {
    let life = DeviceLife::new();
    let (raw, kcq) = cq(16, &life);
    lock(&raw.1).destroy_takes = Duration::from_millis(100);
    let kcq = Arc::new(kcq);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let kcq = Arc::clone(&kcq);
            std::thread::spawn(move || kcq.destroy())
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(lock(&raw.1).destroys, 1);
}

/// A QP destroyed while another thread drains it: the kit must not call into the device QP
/// after destroying it (on a real device that is a use after free), and what the drain
/// reports must hold.
#[test]
fn destroy_during_a_drain_never_calls_the_device_qp_after_destroying_it() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    let drainer = {
        let q = Arc::clone(&q);
        // The marker never comes: the drain falls back at its deadline.
        std::thread::spawn(move || q.drain(Instant::now() + Duration::from_millis(300)))
    };
    std::thread::sleep(Duration::from_millis(50));
    q.destroy().unwrap();
    let drained = drainer.join().unwrap();
    assert_eq!(
        lock(&q.raw().st).after_destroy,
        Vec::<&str>::new(),
        "drain: {drained:?}"
    );
    if let Ok(report) = drained {
        assert_eq!(report.accounted(), 1, "{report}");
        assert_eq!(
            poll_all(&c.1),
            [(1, WcStatus::WrFlushError, WcOpcode::Send, 7)]
        );
    }
}

/// A thread moves the QP to RESET while another brings it back to INIT and posts a receive:
/// the receive posted after the RESET must not be forgotten with the ones the RESET discarded.
#[test]
fn a_receive_posted_after_a_racing_reset_is_not_forgotten() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let s = sge();
    q.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    // While the reset moves aside what completed before it, the other thread goes on.
    lock(&c.0.1).poll = Some({
        let q = Arc::clone(&q);
        Box::new(move || {
            q.modify(QpState::Init).unwrap();
            q.post_recv(&[RecvWr::new(2, &sge())]).unwrap();
        })
    });
    q.modify(QpState::Reset).unwrap();
    q.raw().receive();
    assert_eq!(poll_all(&c.1), [(2, WcStatus::Success, WcOpcode::Recv, 7)]);
}

/// A drain that falls back stops the hardware and synthesizes flushes for what is outstanding.
/// A receive the device completed successfully before that, whose completion waits in a CQ
/// the drain had not polled yet (the receive CQ, while the drain waited on the send CQ), must
/// reach the ULP as the success it was, not as a synthesized flush with its data lost.
#[test]
fn a_fallback_delivers_what_the_device_completed_before_it_stopped() {
    let life = DeviceLife::new();
    let (s, r) = (cq(16, &life), cq(16, &life));
    let q = qp(7, InError::Park, &s, &r, &life);
    let sg = sge();
    q.post_recv(&[RecvWr::new(1, &sg)]).unwrap();
    q.post_send(&[SendWr::send(2, &sg)]).unwrap();
    q.raw().receive();
    // The send's marker never comes back: the drain falls back at its deadline.
    let report = q
        .drain(Instant::now() + Duration::from_millis(200))
        .unwrap();
    assert!(report.fallback.is_some(), "{report}");
    assert_eq!(
        poll_all(&r.1),
        [(1, WcStatus::Success, WcOpcode::Recv, 7)],
        "{report}"
    );
    assert_eq!(
        poll_all(&s.1),
        [(2, WcStatus::WrFlushError, WcOpcode::Send, 7)]
    );
    assert_eq!((report.completed_by_device, report.synthesized), (1, 1));
}

/// A provider that panics in the middle of a drain (a bug of its own) must not leave the QP
/// "draining" for ever: destroy, which waits for a running drain, would hang, and every later
/// drain would time out.
#[test]
fn a_drain_that_panicked_does_not_leave_the_qp_draining() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Park, &c, &c, &life));
    let s = sge();
    q.post_send(&[SendWr::send(1, &s)]).unwrap();
    lock(&q.raw().st).panic_on_stop = true;
    let drained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.drain(Instant::now() + Duration::from_millis(50))
    }));
    assert!(drained.is_err(), "the toy's stop panicked");
    lock(&q.raw().st).panic_on_stop = false;
    let report = q.drain(Instant::now() + Duration::from_millis(50)).unwrap();
    assert_eq!(report.accounted(), 1, "{report}");
    let (done, finished) = std::sync::mpsc::channel();
    let destroyer = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || {
            let _ = done.send(q.destroy());
        })
    };
    finished
        .recv_timeout(Duration::from_secs(2))
        .expect("destroy hung")
        .unwrap();
    destroyer.join().unwrap();
}

/// A CQ destroyed while a ULP thread waits on it: the kit must not call into the device CQ
/// after destroying it — it either refuses (`Busy`: the CQ is in use) or the waiter stops.
#[test]
fn a_cq_destroyed_while_a_thread_waits_on_it_is_not_used_after_destroy() {
    let life = DeviceLife::new();
    let (raw, kcq) = cq(16, &life);
    let kcq = Arc::new(kcq);
    let waiter = {
        let kcq = Arc::clone(&kcq);
        std::thread::spawn(move || {
            let mut out = [Completion::default(); 4];
            kcq.wait(&mut out, Instant::now() + Duration::from_millis(300))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let destroyed = kcq.destroy();
    let waited = waiter.join().unwrap();
    assert_eq!(
        lock(&raw.1).after_destroy,
        Vec::<&str>::new(),
        "destroy: {destroyed:?}, wait: {waited:?}"
    );
    if let Err(e) = destroyed {
        assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
        kcq.destroy().unwrap();
    }
}

#[test]
fn the_provider_telling_of_a_device_error_dooms_later_posts_of_that_qp_only() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let a = qp(7, InError::Drop, &c, &c, &life);
    let b = qp(8, InError::Drop, &c, &c, &life);
    let s = sge();
    // The device kills QP 7 (an IBV_EVENT_QP_FATAL); the provider says so.
    lock(&a.raw().st).state = QpState::Error;
    life.qp_entered_error(7);
    life.qp_entered_error(99); // a number nobody has: ignored
    a.post_recv(&[RecvWr::new(1, &s)]).unwrap();
    let report = a.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!((report.synthesized, report.fallback), (1, None), "{report}");
    // QP 8 was not told anything: its receive is waited for (and here completes).
    b.post_recv(&[RecvWr::new(2, &s)]).unwrap();
    b.raw().receive();
    let report = b.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(
        (report.synthesized, report.completed_by_device),
        (0, 1),
        "{report}"
    );
    // A new QP under a destroyed one's number does not inherit the old QP's news.
    a.destroy().unwrap();
    drop(a);
    let again = qp(7, InError::Drop, &c, &c, &life);
    again.post_recv(&[RecvWr::new(3, &s)]).unwrap();
    again.raw().receive();
    assert_eq!(
        poll_all(&c.1).last().map(|c| (c.0, c.1)),
        Some((3, WcStatus::Success))
    );
}

/// A QP destroyed while another thread waits for its connection: `destroy` lets the wait end
/// (by its deadline) before it destroys the device QP, which the wait still uses.
#[test]
fn destroy_waits_for_a_connection_wait_in_progress() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let waiter = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || q.wait_connected(Instant::now() + Duration::from_millis(200)))
    };
    std::thread::sleep(Duration::from_millis(50));
    q.destroy().unwrap();
    let waited = waiter.join().unwrap();
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::TimedOut);
    assert_eq!(
        lock(&q.raw().st).after_destroy,
        Vec::<&str>::new(),
        "the kit called into the device QP after destroying it"
    );
    assert_eq!(
        q.wait_connected(soon()).unwrap_err().kind(),
        ErrorKind::Destroyed
    );
}

// ----- second review -----

/// An unsignaled send the device ran and the remote refused: its error completion (generated
/// for unsignaled WRs too) waits in the CQ, and the device moved the QP to ERROR. A drain that
/// waits for the flush has nothing to await, but it must still resolve what the device
/// completed before it settles: the send is not a silent success, and its error is not dropped.
#[test]
fn a_wait_for_flush_drain_resolves_an_unsignaled_sends_error_before_it_settles() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Drop, &c, &c, &life);
    let s = sge();
    q.post_send(&[SendWr::send(1, &s).with_flags(SendFlags::empty())])
        .unwrap();
    {
        let mut st = lock(&q.raw().st);
        let p = st.sq.pop_front().unwrap();
        st.state = QpState::Error;
        q.raw()
            .scq
            .push(q.raw().completion(p, WcStatus::RemoteAccessError));
    }
    let report = q.drain_with(|_| DrainPlan::WaitForFlush, soon()).unwrap();
    assert_eq!(
        poll_all(&c.1)
            .iter()
            .map(|c| (c.0, c.1))
            .collect::<Vec<_>>(),
        [(1, WcStatus::RemoteAccessError)],
        "{report}"
    );
    assert_eq!(report.completed_by_device, 1, "{report}");
}

/// A QP in ERROR is reset; while the reset moves aside what completed before it, another
/// thread brings the QP back to INIT and posts. Those WRs go to a QP that is not in ERROR: they
/// must not be doomed (an unsignaled send that ran would never be retired, and the drain would
/// report it flushed).
#[test]
fn a_send_posted_after_a_racing_reset_of_a_qp_in_error_is_not_doomed() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = Arc::new(qp(7, InError::Flush, &c, &c, &life));
    let s = sge();
    q.modify(QpState::Error).unwrap();
    lock(&c.0.1).poll = Some({
        let q = Arc::clone(&q);
        Box::new(move || {
            q.modify(QpState::Init).unwrap();
            q.post_send(&[SendWr::send(10, &sge()).with_flags(SendFlags::empty())])
                .unwrap();
        })
    });
    q.modify(QpState::Reset).unwrap();
    q.modify(QpState::ReadyToSend).unwrap();
    q.post_send(&[SendWr::send(11, &s)]).unwrap();
    q.raw().execute_sends(2);
    assert_eq!(poll_all(&c.1), [(11, WcStatus::Success, WcOpcode::Send, 7)]);
    let report = q.drain(soon()).unwrap();
    assert_eq!(
        poll_all(&c.1),
        [],
        "send 10 succeeded (send 11 behind it did): {report}"
    );
}

/// A drain that falls back stops the device QP, and the kernel may give its number to a new
/// QP on the same CQ while the old handle lives. Once both are destroyed the CQ is in use by
/// nobody: destroying it must not answer `Busy` for ever.
#[test]
fn a_cq_is_not_busy_for_ever_after_a_stopped_qps_number_is_reused() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let old = qp(7, InError::Drop, &c, &c, &life);
    old.post_recv(&[RecvWr::new(1, &sge())]).unwrap();
    old.drain_with(|_| DrainPlan::Synthesize, soon()).unwrap();
    // The device QP is stopped (destroyed in the device): number 7 is free again.
    let new = qp(7, InError::Drop, &c, &c, &life);
    old.destroy().unwrap();
    drop(old);
    new.destroy().unwrap();
    drop(new);
    c.1.destroy().unwrap();
}
