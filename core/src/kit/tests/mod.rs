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
use crate::event::DeviceEvent;
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
    /// How many times the kit called `wake`.
    wakes: usize,
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
        lock(&self.1).wakes += 1;
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
    /// `destroy` fails this many more times (a driver refusing, then relenting).
    destroy_fails: usize,
    /// `enter_error` fails this many more times (a device that refuses the move).
    enter_error_fails: usize,
    /// How many times the kit called `enter_error`.
    enter_error_calls: usize,
    /// Runs inside the next `enter_error`, before the device moves the QP (a slow device, a
    /// thread descheduled there).
    enter_error_hook: Option<Hook>,
    /// Calls the kit made into the device QP after destroying it (a use after free on a real
    /// device).
    after_destroy: Vec<&'static str>,
    /// Every `disconnect` the kit asked for: orderly or not, and the sends on the device then.
    disconnects: Vec<(bool, usize)>,
    /// Runs at the start of the next `disconnect`, before the device looks at its send queue
    /// (another thread's post racing the close).
    disconnect_hook: Option<Hook>,
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
                destroy_fails: 0,
                enter_error_fails: 0,
                enter_error_calls: 0,
                enter_error_hook: None,
                after_destroy: Vec::new(),
                disconnects: Vec::new(),
                disconnect_hook: None,
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
    fn granted(&self) -> QpInit {
        // Generous, as mlx5 is with inline data.
        QpInit {
            max_send_wr: 1 << 16,
            max_recv_wr: 1 << 16,
            max_send_sge: 8,
            max_recv_sge: 8,
            max_inline_data: 512,
        }
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
        let hook = {
            let mut st = lock(&self.st);
            st.enter_error_calls += 1;
            st.enter_error_hook.take()
        };
        if let Some(hook) = hook {
            hook();
        }
        {
            let mut st = lock(&self.st);
            if st.enter_error_fails > 0 {
                st.enter_error_fails -= 1;
                return Err(Error::new(
                    ErrorKind::Other,
                    "toy: the device refused ERROR",
                ));
            }
        }
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
    fn disconnect(&self, orderly: bool) -> Result<QpState> {
        self.called(if orderly {
            "disconnect orderly"
        } else {
            "disconnect abrupt"
        });
        let hook = lock(&self.st).disconnect_hook.take();
        if let Some(hook) = hook {
            hook();
        }
        let mut st = lock(&self.st);
        let sends = st.sq.len();
        st.disconnects.push((orderly, sends));
        if orderly && !st.sq.is_empty() {
            // As siw would be hurt by CLOSING with sends on the device: refused.
            return Err(Error::invalid_state("toy: sends on the device"));
        }
        if orderly {
            // From ERROR there is nothing left to close in order.
            if st.state != QpState::Error {
                st.state = QpState::Closing;
            }
        } else {
            st.state = QpState::Error;
            self.flush_all(&mut st);
        }
        Ok(st.state)
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
        let mut st = lock(&self.st);
        if st.destroy_fails > 0 {
            st.destroy_fails -= 1;
            return Err(Error::new(ErrorKind::Busy, "toy: the device refused"));
        }
        st.destroyed = true;
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

mod atomics;
mod disconnect;
mod drain;
mod error_state;
mod events;
mod lifetimes;
mod pd;
mod resolution;
mod wakes;
