//! Queue pairs: creation and destruction, state changes, and the flushes ERROR brings.

use std::collections::VecDeque;
use std::time::Instant;

use anyverbs::drain::WorkQueue;
use anyverbs::{Cause, Completion, ConnParams, QpInit, QpState, StateModel, WcOpcode};

use super::{Conn, Delayed, DeviceRecv, QpRec, Refusal, State, flush_completion, size_check};
use crate::config::Personality;
use crate::error::{MockError, MockResult};

impl State {
    // ----- queue pairs -----

    pub(crate) fn create_qp(
        &mut self,
        pd: u32,
        send_cq: u32,
        recv_cq: u32,
        init: &QpInit,
    ) -> MockResult<u32> {
        let device = self.live_pd(pd)?.device;
        let inc = self.inc(device);
        let limits = inc.info.limits;
        let personality = self.slots[inc.slot].config.personality;
        for cq in [send_cq, recv_cq] {
            let cq_device = self.live_cq(cq)?.device;
            self.check_live(cq_device)?;
            if cq_device != device {
                return Err(MockError::BadArgument(
                    "the CQ belongs to another device".into(),
                ));
            }
        }
        let max_wr = u64::from(limits.max_qp_wr);
        size_check("max_send_wr", u64::from(init.max_send_wr), max_wr)?;
        size_check("max_recv_wr", u64::from(init.max_recv_wr), max_wr)?;
        let max_sge = u64::from(limits.max_sge);
        size_check("max_send_sge", u64::from(init.max_send_sge), max_sge)?;
        size_check("max_recv_sge", u64::from(init.max_recv_sge), max_sge)?;
        if init.max_inline_data > limits.max_inline_data {
            return Err(MockError::BadSize {
                what: "max_inline_data",
                got: u64::from(init.max_inline_data),
                min: 0,
                max: u64::from(limits.max_inline_data),
            });
        }
        if self.inc(device).live.qps >= limits.max_qp {
            return Err(MockError::TableFull("queue pair"));
        }
        let model = personality.state_model();
        let qpn = self
            .qps
            .insert_with(|_| QpRec {
                device,
                pd,
                send_cq,
                recv_cq,
                init: anyverbs::kit::device_init(init),
                model,
                personality,
                state: model.initial(),
                sq: VecDeque::new(),
                rq: VecDeque::new(),
                parked: Vec::new(),
                lose_next: [false; 2],
                peer: None,
                conn: Conn::Idle,
                params: ConnParams::default(),
                read_credits: 0,
                local_addr: None,
                unsignaled_done: 0,
                max_msg_size: limits.max_msg_size,
                peer_lost: false,
                disconnect_reported: false,
                held: Vec::new(),
            })
            .ok_or(MockError::TableFull("queue pair"))?;
        self.inc_mut(device).live.qps += 1;
        self.pds.get_mut(&pd).expect("live").qps += 1;
        self.cqs.get_mut(&send_cq).expect("live").users += 1;
        self.cqs.get_mut(&recv_cq).expect("live").users += 1;
        Ok(qpn)
    }

    pub(super) fn qp(&self, qpn: u32) -> MockResult<&QpRec> {
        self.qps
            .get(&qpn)
            .ok_or_else(|| MockError::Destroyed("queue pair"))
    }

    pub(super) fn qp_mut(&mut self, qpn: u32) -> MockResult<&mut QpRec> {
        self.qps
            .get_mut(&qpn)
            .ok_or_else(|| MockError::Destroyed("queue pair"))
    }

    pub(crate) fn qp_state(&self, qpn: u32) -> MockResult<QpState> {
        Ok(self.qp(qpn)?.state)
    }

    pub(crate) fn destroy_qp(&mut self, qpn: u32) {
        let Some(q) = self.qps.remove(&qpn) else {
            return;
        };
        self.stalled.remove(&qpn);
        self.delayed.retain(|d| d.completion.qp_num != qpn);
        self.inc_mut(q.device).live.qps -= 1;
        if let Conn::Connecting { request } = q.conn {
            self.requests.remove(&request);
        }
        self.cq_lost_user(q.send_cq);
        self.cq_lost_user(q.recv_cq);
        if let Some(p) = self.pds.get_mut(&q.pd) {
            p.qps -= 1;
        }
        // The connection goes down with the QP. On iWARP it is a TCP stream: destroying one end
        // tears it down and the peer's QP goes to ERROR. On InfiniBand destroying the QP's CM ID
        // sends a DREQ, and the peer's CM reports it (a dead device sends nothing). A cut
        // connection tells the peer nothing.
        if q.peer_lost {
            return;
        }
        if let Some(peer) = q.peer
            && (q.model == StateModel::Iwarp || q.personality != Personality::Dead)
        {
            self.hang_up(qpn, peer, q.model);
        }
    }

    /// Withdraws a connection request the QP has pending; the listener never sees it.
    pub(super) fn abandon_connect(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn)
            && let Conn::Connecting { request } = q.conn
        {
            q.conn = Conn::Refused(Refusal::Abandoned);
            self.requests.remove(&request);
        }
    }

    /// Moves a QP to ERROR and flushes both queues.
    pub(super) fn enter_error(&mut self, qpn: u32) {
        self.abandon_connect(qpn);
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        if q.state != QpState::Error {
            q.lose_next = [true; 2];
        }
        q.state = QpState::Error;
        // What a real device's async event (QP_FATAL, a request or access error, an iWARP
        // disconnect) tells its provider; harmless when the kit asked for the ERROR itself.
        self.incarnations[&q.device].life.qp_entered_error(qpn);
        self.stalled.remove(&qpn);
        self.flush(qpn);
        // On iWARP the connection goes down with the QP (as siw's RDMA_CM_EVENT_DISCONNECTED,
        // the end that did not close hears of it).
        let q = self.qps.get_mut(&qpn).expect("present");
        if q.model == StateModel::Iwarp
            && !q.peer_lost
            && let Some(peer) = q.peer.take()
        {
            self.hang_up(qpn, peer, StateModel::Iwarp);
        }
    }

    /// Completes every outstanding WR of a QP with a flush error, sends first, then receives:
    /// at once, or after the flush delay on devices that flush asynchronously. A dead device
    /// (the personality, or a lost incarnation) flushes nothing; a stalled one holds the flushes
    /// until it resumes. On rxe this also flushes the receives posted while in ERROR.
    pub(super) fn flush(&mut self, qpn: u32) {
        let q = self.qps.get_mut(&qpn).expect("present");
        let inc = &self.incarnations[&q.device];
        if q.personality == Personality::Dead || inc.lost.is_some() {
            return;
        }
        let stalled = inc.stalled;
        q.unsignaled_done = 0;
        let mut flushes: Vec<(WorkQueue, Completion)> =
            q.sq.drain(..)
                .map(|e| {
                    let c = flush_completion(e.wr.wr_id, qpn, e.wr.op.completion_opcode());
                    (WorkQueue::Send, c)
                })
                .collect();
        flushes.extend(q.rq.drain(..).map(|r| {
            (
                WorkQueue::Recv,
                flush_completion(r.wr_id, qpn, WcOpcode::Recv),
            )
        }));
        if q.personality == Personality::Rxe {
            let (recvs, rest): (Vec<_>, Vec<_>) = q
                .parked
                .drain(..)
                .partition(|(queue, _)| *queue == WorkQueue::Recv);
            q.parked = rest;
            flushes.extend(
                recvs
                    .into_iter()
                    .map(|(_, id)| (WorkQueue::Recv, flush_completion(id, qpn, WcOpcode::Recv))),
            );
        }
        if stalled {
            q.held.extend(flushes);
            return;
        }
        if q.personality.flushes_asynchronously() {
            // One due time for the whole flush (a clock read per WR cost more than the rest of
            // the flush together).
            let (due, device) = (Instant::now() + self.flush_delay, q.device);
            let (scq, rcq) = (q.send_cq, q.recv_cq);
            self.delayed
                .extend(flushes.into_iter().map(|(queue, completion)| Delayed {
                    due,
                    device,
                    cq: match queue {
                        WorkQueue::Send => scq,
                        WorkQueue::Recv => rcq,
                    },
                    queue,
                    completion,
                }));
            return;
        }
        // Synchronous flush: sends first, then receives, each to its CQ.
        let (scq, rcq) = (q.send_cq, q.recv_cq);
        let (sends, recvs): (Vec<_>, Vec<_>) = flushes
            .into_iter()
            .partition(|(queue, _)| *queue == WorkQueue::Send);
        self.push_cqes(scq, sends.into_iter().map(|(_, c)| c));
        self.push_cqes(rcq, recvs.into_iter().map(|(_, c)| c));
    }

    fn cq_of(q: &QpRec, queue: WorkQueue) -> u32 {
        match queue {
            WorkQueue::Send => q.send_cq,
            WorkQueue::Recv => q.recv_cq,
        }
    }

    /// Delivers a flush completion now, or after the flush delay where the device flushes
    /// asynchronously; a stalled device holds it until it resumes, a lost one drops it.
    pub(super) fn emit(&mut self, qpn: u32, queue: WorkQueue, c: Completion) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let inc = &self.incarnations[&q.device];
        if inc.lost.is_some() {
            return;
        }
        if inc.stalled {
            q.held.push((queue, c));
            return;
        }
        let cq = Self::cq_of(q, queue);
        if q.personality.flushes_asynchronously() {
            self.delayed.push(Delayed {
                due: Instant::now() + self.flush_delay,
                device: q.device,
                cq,
                queue,
                completion: c,
            });
        } else {
            self.push_cqe(cq, c);
        }
    }

    /// What the device does with a WR posted while the QP is in ERROR; `wr_id` is the
    /// provider's token.
    pub(super) fn post_in_error(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        wr_id: u64,
        opcode: WcOpcode,
    ) -> MockResult<()> {
        let q = self.qps.get_mut(&qpn).expect("present");
        let i = match queue {
            WorkQueue::Send => 0,
            WorkQueue::Recv => 1,
        };
        match q.personality {
            Personality::Cxgb4 => Err(MockError::PostRefusedInError { errno: "EINVAL" }),
            Personality::Erdma => Err(MockError::PostRefusedInError { errno: "EIO" }),
            Personality::Siw => {
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Rxe if queue == WorkQueue::Recv => {
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Rxe => {
                // A send posted in ERROR completes at once on rxe, though its flushes on the
                // move to ERROR take a while; completions of one queue stay in order.
                let (cq, device) = (q.send_cq, q.device);
                let c = flush_completion(wr_id, qpn, opcode);
                if !self.working(device) {
                    self.emit(qpn, queue, c);
                    return Ok(());
                }
                match self
                    .delayed
                    .iter()
                    .rev()
                    .find(|d| d.completion.qp_num == qpn && d.queue == queue)
                {
                    Some(last) => {
                        let due = last.due;
                        self.delayed.push(Delayed {
                            due,
                            device,
                            cq,
                            queue,
                            completion: c,
                        });
                    }
                    None => self.push_cqe(cq, c),
                }
                Ok(())
            }
            Personality::LostMarker if q.lose_next[i] => {
                q.lose_next[i] = false;
                q.parked.push((queue, wr_id));
                Ok(())
            }
            Personality::Dead => {
                // Accepted; the device never looks at it again.
                q.parked.push((queue, wr_id));
                Ok(())
            }
            _ => {
                self.emit(qpn, queue, flush_completion(wr_id, qpn, opcode));
                Ok(())
            }
        }
    }

    /// Whether a delayed completion is held back by its stalled device.
    pub(super) fn held_by_stall(&self, d: &Delayed) -> bool {
        self.stalled_devices > 0 && self.inc(d.device).stalled
    }

    /// Whether a delayed completion is due: its time came and its device is not stalled.
    fn is_due(&self, d: &Delayed, now: Instant) -> bool {
        d.due <= now && !self.held_by_stall(d)
    }

    /// Delivers the delayed completions that are due; true if any were.
    pub(super) fn fire_delayed(&mut self, now: Instant) -> bool {
        if !self.delayed.iter().any(|d| self.is_due(d, now)) {
            return false;
        }
        let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|d| self.is_due(d, now));
        self.delayed = later;
        // Deliver in order, a run of completions for one CQ at a time (one lookup of the CQ per
        // run, as the synchronous flush does).
        let mut due = due.into_iter().peekable();
        while let Some(first) = due.next() {
            let cq = first.cq;
            let rest = std::iter::from_fn(|| due.next_if(|d| d.cq == cq).map(|d| d.completion));
            self.push_cqes(cq, std::iter::once(first.completion).chain(rest));
        }
        true
    }

    pub(crate) fn modify(&mut self, qpn: u32, to: QpState) -> MockResult<()> {
        let q = self.qp(qpn)?;
        let (model, from) = (q.model, q.state);
        model
            .check(from, to, Cause::Modify)
            .map_err(MockError::Transition)?;
        match to {
            QpState::ReadyToReceive if q.peer.is_none() => {
                return Err(MockError::WrongState(
                    "RTR needs the remote QP: connect through the connection manager".into(),
                ));
            }
            QpState::Error => self.enter_error(qpn),
            QpState::Reset => {
                // Verbs: RESET empties both queues without completions.
                self.abandon_connect(qpn);
                self.delayed.retain(|d| d.completion.qp_num != qpn);
                let q = self.qp_mut(qpn)?;
                q.sq.clear();
                q.rq.clear();
                q.parked.clear();
                q.held.clear();
                q.unsignaled_done = 0;
                q.state = QpState::Reset;
                q.conn = Conn::Idle;
                q.peer_lost = false;
                q.disconnect_reported = false;
                let peer = q.peer.take();
                self.stalled.remove(&qpn);
                if let Some(p) = peer.and_then(|p| self.qps.get_mut(&p))
                    && p.peer == Some(qpn)
                {
                    p.peer = None;
                }
            }
            QpState::Closing if !self.qp(qpn)?.sq.is_empty() => {
                // The provider refuses what siw would turn into QP_FATAL and lost sends.
                return Err(MockError::ClosingWithSends(self.qp(qpn)?.sq.len()));
            }
            QpState::Closing | QpState::Terminate => {
                let q = self.qp_mut(qpn)?;
                q.state = to;
                let recvs: Vec<DeviceRecv> = q.rq.drain(..).collect();
                let (rcq, peer, cut) = (q.recv_cq, q.peer.take(), q.peer_lost);
                let working = self.working(self.qp(qpn)?.device);
                for r in recvs {
                    let c = flush_completion(r.wr_id, qpn, WcOpcode::Recv);
                    if working {
                        self.push_cqe(rcq, c);
                    } else {
                        self.emit(qpn, WorkQueue::Recv, c);
                    }
                }
                if let Some(peer) = peer.filter(|_| !cut) {
                    self.hang_up(qpn, peer, StateModel::Iwarp);
                }
            }
            _ => {
                self.qp_mut(qpn)?.state = to;
                if to == QpState::ReadyToSend {
                    self.run_sq(qpn, None);
                }
            }
        }
        Ok(())
    }
}
