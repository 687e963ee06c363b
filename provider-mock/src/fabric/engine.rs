//! Posting work requests and executing them: the engine that moves data (see the parent
//! module's progress model).

use std::time::Instant;

use anyverbs::drain::WorkQueue;
use anyverbs::{
    ATOMIC_LEN, Access, Caps, Completion, DeviceEvent, PostError, QpState, RecvWr, SendFlags,
    SendOp, SendWr, StateModel, WcOpcode, WcStatus,
};

use super::{
    DeviceRecv, DeviceSend, DeviceSendRef, QpRec, RNR_RETRY_FOREVER, SendEntry, Stall, StallKind,
    State, total_length,
};
use crate::config::Personality;
use crate::error::{MockError, MockResult};

impl State {
    /// Checks a send WR at post time; returns its inline data, if any.
    fn validate_send(
        &self,
        q: &QpRec,
        caps: anyverbs::Caps,
        wr: &DeviceSendRef<'_>,
    ) -> MockResult<Option<Vec<u8>>> {
        let DeviceSendRef { sgl, op, flags, .. } = *wr;
        if sgl.len() > q.init.max_send_sge as usize {
            return Err(MockError::BadArgument(format!(
                "{} SGEs in a WR; the QP allows {}",
                sgl.len(),
                q.init.max_send_sge
            )));
        }
        let imm = matches!(op, SendOp::SendWithImm(_) | SendOp::WriteWithImm(..));
        if imm && !caps.contains(Caps::IMMEDIATE_DATA) {
            return Err(MockError::Unsupported("immediate data"));
        }
        if op.is_atomic() {
            // The device's own check, as rxe's post makes it; the kit makes the same one before
            // the WR gets here (`SendWr::check_for`).
            Self::validate_atomic(caps, op, sgl)?;
        }
        let total = total_length(sgl);
        if total > u64::from(q.max_msg_size) {
            return Err(MockError::BadArgument(format!(
                "a {total}-byte message; the device allows {}",
                q.max_msg_size
            )));
        }
        let writes_local = op.writes_local();
        if flags.contains(SendFlags::INLINE) {
            if writes_local {
                return Err(MockError::BadArgument(
                    "an RDMA READ or an atomic cannot be inline".into(),
                ));
            }
            if total > u64::from(q.init.max_inline_data) {
                return Err(MockError::BadArgument(format!(
                    "{total} bytes of inline data; the QP allows {}",
                    q.init.max_inline_data
                )));
            }
        }
        for (i, sge) in sgl.iter().enumerate() {
            self.resolve_local(q.pd, sge, writes_local)
                .map_err(|m| MockError::BadArgument(format!("SGE {i}: {m}")))?;
        }
        if flags.contains(SendFlags::INLINE) {
            return Ok(Some(
                self.gather(q.pd, sgl).map_err(MockError::BadArgument)?,
            ));
        }
        Ok(None)
    }

    /// Checks an atomic WR at post time: the device has atomics, the local list is one SGE of
    /// 8 bytes, the remote address is 8-byte aligned.
    fn validate_atomic(caps: Caps, op: SendOp, sgl: &[anyverbs::Sge]) -> MockResult<()> {
        if !caps.contains(Caps::ATOMICS) {
            return Err(MockError::Unsupported("atomic operations"));
        }
        if !matches!(sgl, [sge] if sge.length == ATOMIC_LEN) {
            return Err(MockError::BadArgument(format!(
                "an atomic WR needs exactly one local SGE of {ATOMIC_LEN} bytes, not {} SGEs of \
                 {} bytes",
                sgl.len(),
                total_length(sgl)
            )));
        }
        let remote = match op {
            SendOp::CompareSwap { remote, .. } | SendOp::FetchAdd { remote, .. } => remote,
            _ => return Ok(()),
        };
        if !remote.addr.is_multiple_of(u64::from(ATOMIC_LEN)) {
            return Err(MockError::BadArgument(format!(
                "the remote address {:#x} of an atomic WR is not 8-byte aligned",
                remote.addr
            )));
        }
        Ok(())
    }

    /// Posts send WRs (their `wr_id`s are the provider's tokens) and executes what can run.
    pub(crate) fn post_send(
        &mut self,
        qpn: u32,
        wrs: &[SendWr],
        caps: anyverbs::Caps,
    ) -> Result<(), PostError> {
        let mut result = Ok(());
        for (i, wr) in wrs.iter().enumerate() {
            if let Err(e) = self.device_post_send(qpn, wr.wr_id, wr, caps) {
                result = Err(PostError::new(i, e.into()));
                break;
            }
        }
        self.run_sq(qpn, None);
        result
    }

    /// The device's post of `wr` under the provider's token `wr_id`.
    pub(super) fn device_post_send(
        &mut self,
        qpn: u32,
        wr_id: u64,
        wr: &SendWr,
        caps: anyverbs::Caps,
    ) -> MockResult<()> {
        let q = self.qp(qpn)?;
        if !q.model.can_post_send(q.state) {
            return Err(MockError::PostState {
                queue: "send",
                state: q.state,
            });
        }
        // Decoded once: each accessor of a posted WR decodes it.
        let wr = DeviceSendRef {
            wr_id,
            op: wr.op(),
            sgl: wr.sgl(),
            flags: wr.flags,
        };
        let inline = self.validate_send(q, caps, &wr)?;
        if q.state == QpState::Error {
            let opcode = wr.op.completion_opcode();
            return self.post_in_error(qpn, WorkQueue::Send, wr_id, opcode);
        }
        if q.sq.len() + q.unsignaled_done as usize >= q.init.max_send_wr as usize {
            return Err(MockError::QueueFull {
                queue: "send",
                depth: q.init.max_send_wr,
            });
        }
        self.qp_mut(qpn)?.sq.push_back(SendEntry {
            wr: DeviceSend::new(&wr),
            inline,
            stall: None,
        });
        Ok(())
    }

    /// Posts receive WRs (their `wr_id`s are the provider's tokens).
    pub(crate) fn post_recv(&mut self, qpn: u32, wrs: &[RecvWr]) -> Result<(), PostError> {
        let mut result = Ok(());
        for (i, wr) in wrs.iter().enumerate() {
            if let Err(e) = self.device_post_recv(qpn, wr.wr_id, wr) {
                result = Err(PostError::new(i, e.into()));
                break;
            }
        }
        // A peer stalled on RNR may go on now.
        if let Some(peer) = self.qps.get(&qpn).and_then(|q| q.peer)
            && self.stalled.contains(&peer)
        {
            self.run_sq(peer, None);
        }
        result
    }

    /// The device's post of `wr` under the provider's token `wr_id`.
    pub(super) fn device_post_recv(&mut self, qpn: u32, wr_id: u64, wr: &RecvWr) -> MockResult<()> {
        let q = self.qp(qpn)?;
        if !q.model.can_post_recv(q.state) {
            return Err(MockError::PostState {
                queue: "receive",
                state: q.state,
            });
        }
        let sgl = wr.sgl();
        if sgl.len() > q.init.max_recv_sge as usize {
            return Err(MockError::BadArgument(format!(
                "{} SGEs in a WR; the QP allows {}",
                sgl.len(),
                q.init.max_recv_sge
            )));
        }
        for (i, sge) in sgl.iter().enumerate() {
            self.resolve_local(q.pd, sge, true)
                .map_err(|m| MockError::BadArgument(format!("SGE {i}: {m}")))?;
        }
        if q.state == QpState::Error {
            return self.post_in_error(qpn, WorkQueue::Recv, wr_id, WcOpcode::Recv);
        }
        if q.rq.len() >= q.init.max_recv_wr as usize {
            return Err(MockError::QueueFull {
                queue: "receive",
                depth: q.init.max_recv_wr,
            });
        }
        self.qp_mut(qpn)?.rq.push_back(DeviceRecv::new(wr_id, sgl));
        Ok(())
    }

    // ----- the engine -----

    /// [`progress`](Self::progress) now, reading the clock only when something waits for a
    /// time (a stalled WR, a delayed completion, a device return or port recovery) or a CQ
    /// error is pending.
    pub(crate) fn step(&mut self) -> bool {
        if self.stalled.is_empty()
            && self.delayed.is_empty()
            && !self.lifecycle_pending
            && self.pending_cq_errors.is_empty()
        {
            return false;
        }
        self.progress(Instant::now())
    }

    /// Retries every stalled send queue; true if anything changed.
    pub(crate) fn progress(&mut self, now: Instant) -> bool {
        let lifecycle = self.lifecycle(now);
        let fired = self.fire_delayed(now) || lifecycle;
        let failed = self.fail_overflowed_cqs() || fired;
        if self.stalled.is_empty() {
            return failed;
        }
        let before: Vec<u32> = self.stalled.iter().copied().collect();
        let mut changed = failed;
        for qpn in before {
            let len = self.qps.get(&qpn).map_or(0, |q| q.sq.len());
            self.run_sq(qpn, Some(now));
            changed |= self.qps.get(&qpn).map_or(0, |q| q.sq.len()) != len;
        }
        changed
    }

    /// The earliest retry deadline of a stalled WR or due time of a delayed completion.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.stalled
            .iter()
            .filter_map(|q| self.qps.get(q))
            .filter(|q| self.working(q.device))
            .filter_map(|q| q.sq.front()?.stall?.fail_at)
            .chain(
                self.delayed
                    .iter()
                    .filter(|d| !self.held_by_stall(d))
                    .map(|d| d.due),
            )
            .min()
    }

    /// Executes send WRs from the head of the queue while they can execute. `now` is the time
    /// of the step if the caller has read it; otherwise the clock is read only if a WR stalls
    /// (reading it costs as much as executing a WR).
    pub(super) fn run_sq(&mut self, qpn: u32, now: Option<Instant>) {
        loop {
            if self.execute_express(qpn) {
                #[cfg(test)]
                {
                    self.express_taken += 1;
                }
                continue;
            }
            let Some(q) = self.qps.get(&qpn) else {
                self.stalled.remove(&qpn);
                return;
            };
            if q.personality == Personality::Dead {
                // Nothing ever executes on a dead device.
                return;
            }
            let inc = self.inc(q.device);
            if !inc.working() {
                // Nothing executes on a lost device; a stalled one is retried (from `progress`)
                // until it resumes.
                if inc.stalled && !q.sq.is_empty() {
                    self.stalled.insert(qpn);
                } else {
                    self.stalled.remove(&qpn);
                }
                return;
            }
            // In SQD the WR in progress (a head already stalled on a retry) still finishes or
            // fails; WRs that have not started wait for the return to RTS.
            let in_progress = q.sq.front().is_some_and(|e| e.stall.is_some());
            let may_run = q.state == QpState::ReadyToSend
                || (q.state == QpState::SendQueueDrained && in_progress);
            if !may_run || q.sq.is_empty() {
                self.stalled.remove(&qpn);
                return;
            }
            if !self.execute_head(qpn, now) {
                self.stalled.insert(qpn);
                return;
            }
        }
    }

    /// Marks the head WR stalled (keeping the first stall's deadline); fails it if the deadline
    /// passed. Returns false (the head did not complete) unless it failed.
    pub(super) fn stall(&mut self, qpn: u32, kind: StallKind, now: Option<Instant>) -> bool {
        let now = now.unwrap_or_else(Instant::now);
        // The ACK timeout is the requester's; how long an RNR makes it wait is the responder's
        // minimum RNR timer. Either falls back to the fabric's when the connection set none.
        // iWARP has neither (its TCP stream retransmits on its own): its connections' timers
        // were checked and are ignored, as `ConnParams` documents.
        let q = &self.qps[&qpn];
        let own_timers = q.model == StateModel::InfiniBand;
        let ack_timeout = q
            .params
            .ack_timeout
            .filter(|_| own_timers)
            .unwrap_or(self.ack_timeout);
        let rnr_timer = q
            .peer
            .and_then(|p| self.qps.get(&p))
            .and_then(|p| p.params.min_rnr_timer)
            .filter(|_| own_timers)
            .unwrap_or(self.rnr_timer);
        let q = self.qps.get_mut(&qpn).expect("present");
        let params = (q.params.retry_count, q.params.rnr_retry_count);
        let head = q.sq.front_mut().expect("non-empty");
        let stall = match head.stall {
            Some(s) if s.kind == kind => s,
            _ => {
                let fail_at = match kind {
                    StallKind::Rnr if params.1 >= RNR_RETRY_FOREVER => None,
                    StallKind::Rnr => Some(now + rnr_timer * u32::from(params.1)),
                    StallKind::NoAck => Some(now + ack_timeout * (u32::from(params.0) + 1)),
                };
                let s = Stall { kind, fail_at };
                head.stall = Some(s);
                // Nobody may be calling when a cut connection fails: make sure it fails on time
                // (and reports it) anyway.
                if q.peer_lost
                    && let Some(t) = fail_at
                {
                    self.timers.push(t);
                }
                s
            }
        };
        match stall.fail_at {
            Some(t) if now >= t => {
                let status = match kind {
                    StallKind::Rnr => WcStatus::RnrRetryExceeded,
                    StallKind::NoAck => WcStatus::TransportRetryExceeded,
                };
                self.fail_head(qpn, status);
                if kind == StallKind::NoAck {
                    self.report_disconnect(qpn);
                }
                true
            }
            _ => false,
        }
    }

    /// Publishes `Disconnected` once for a QP whose cut connection just failed it.
    fn report_disconnect(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn)
            && q.peer_lost
            && !q.disconnect_reported
        {
            q.disconnect_reported = true;
            let device = q.device;
            self.publish(device, DeviceEvent::Disconnected { qp_num: qpn });
        }
    }

    /// Completes the head WR with an error status and moves the QP to ERROR.
    fn fail_head(&mut self, qpn: u32, status: WcStatus) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let Some(e) = q.sq.pop_front() else {
            debug_assert!(false, "fail_head on an empty send queue");
            return;
        };
        let cq = q.send_cq;
        self.push_cqe(
            cq,
            Completion {
                wr_id: e.wr.wr_id,
                status,
                opcode: e.wr.op.completion_opcode(),
                qp_num: qpn,
                ..Completion::default()
            },
        );
        self.enter_error(qpn);
    }

    /// Completes the head WR successfully.
    fn complete_head(&mut self, qpn: u32, byte_len: u32) {
        let Some(q) = self.qps.get_mut(&qpn) else {
            return;
        };
        let Some(e) = q.sq.pop_front() else {
            debug_assert!(false, "complete_head on an empty send queue");
            return;
        };
        if !e.wr.flags.contains(SendFlags::SIGNALED) {
            q.unsignaled_done += 1;
        } else {
            q.unsignaled_done = 0;
            let cq = q.send_cq;
            self.push_cqe(
                cq,
                Completion {
                    wr_id: e.wr.wr_id,
                    status: WcStatus::Success,
                    opcode: e.wr.op.completion_opcode(),
                    byte_len,
                    qp_num: qpn,
                    ..Completion::default()
                },
            );
        }
    }

    /// A responder-side error: the responder's QP goes to ERROR.
    fn responder_error(&mut self, peer: u32) {
        if self
            .qps
            .get(&peer)
            .is_some_and(|q| q.state != QpState::Error)
        {
            self.enter_error(peer);
        }
    }

    /// Tries to execute the head WR. True if it completed (in success or error).
    pub(super) fn execute_head(&mut self, qpn: u32, now: Option<Instant>) -> bool {
        // The payload goes through the fabric's buffer: no allocation per message.
        let mut data = std::mem::take(&mut self.payload);
        data.clear();
        let done = self.execute_head_through(qpn, now, &mut data);
        self.payload = data;
        done
    }

    /// [`execute_head`](Self::execute_head), gathering the payload into `data`.
    fn execute_head_through(&mut self, qpn: u32, now: Option<Instant>, data: &mut Vec<u8>) -> bool {
        let q = &self.qps[&qpn];
        let head = q.sq.front().expect("non-empty");
        let (op, pd, model) = (head.wr.op, q.pd, q.model);
        // A cut connection, or a peer on a lost or stalled device: no ACK comes back.
        let peer = q
            .peer
            .filter(|_| !q.peer_lost)
            .and_then(|p| Some((p, self.qps.get(&p)?)))
            .filter(|(_, pq)| {
                pq.peer == Some(qpn)
                    && self.inc(pq.device).working()
                    && matches!(
                        pq.state,
                        QpState::ReadyToReceive
                            | QpState::ReadyToSend
                            | QpState::SendQueueDrained
                            | QpState::SendQueueError
                    )
            })
            .map(|(p, pq)| (p, pq.pd, pq.rq.is_empty()));
        let Some((peer, peer_pd, peer_rq_empty)) = peer else {
            return self.stall(qpn, StallKind::NoAck, now);
        };
        let needs_recv = matches!(
            op,
            SendOp::Send | SendOp::SendWithImm(_) | SendOp::WriteWithImm(..)
        );
        if needs_recv && peer_rq_empty {
            if model == StateModel::Iwarp {
                // iWARP has no RNR: the responder sends a TERMINATE ("untagged buffer not
                // available", RFC 5041) and the connection and both QPs go to ERROR.
                self.fail_head(qpn, WcStatus::RemoteOperationError);
                self.responder_error(peer);
                return true;
            }
            return self.stall(qpn, StallKind::Rnr, now);
        }
        if (matches!(op, SendOp::Read(_)) || op.is_atomic()) && q.read_credits == 0 {
            // No READ credits on this connection (an initiator depth or responder resources of
            // 0), which READs and atomics need: the responder refuses it as an invalid request,
            // and both QPs go to ERROR.
            self.fail_head(qpn, WcStatus::RemoteInvalidRequest);
            self.responder_error(peer);
            return true;
        }
        let total = head.wr.total_length();
        let sent_len = total as u32;
        let gathered = match (&head.inline, op) {
            (_, op) if op.writes_local() => Ok(()),
            (Some(inline), _) => {
                data.extend_from_slice(inline);
                Ok(())
            }
            (None, _) => self.gather_into(pd, &head.wr.sgl, data),
        };
        if gathered.is_err() {
            // The region was deregistered after the post.
            self.fail_head(qpn, WcStatus::LocalProtectionError);
            return true;
        }
        let data: &[u8] = data;
        match op {
            SendOp::Send | SendOp::SendWithImm(_) => {
                let imm = match op {
                    SendOp::SendWithImm(i) => Some(i),
                    _ => None,
                };
                self.deliver_recv(qpn, peer, Some(data), sent_len, imm);
                true
            }
            SendOp::Write(ra) | SendOp::WriteWithImm(ra, _) => {
                if !data.is_empty() {
                    match self.resolve_remote(
                        peer_pd,
                        ra.addr,
                        ra.rkey,
                        data.len() as u64,
                        Access::REMOTE_WRITE,
                    ) {
                        Some((lkey, off)) => {
                            let mr = self.mrs.get_mut(&lkey).expect("resolved");
                            mr.mem.write(off, data);
                        }
                        None => {
                            self.fail_head(qpn, WcStatus::RemoteAccessError);
                            self.responder_error(peer);
                            return true;
                        }
                    }
                }
                match op {
                    SendOp::WriteWithImm(_, imm) => {
                        self.deliver_recv(qpn, peer, None, sent_len, Some(imm))
                    }
                    _ => self.complete_head(qpn, data.len() as u32),
                }
                true
            }
            SendOp::Read(_) if total == 0 => {
                // A zero-length READ touches no remote memory, so the rkey is not checked.
                self.complete_head(qpn, 0);
                true
            }
            SendOp::Read(ra) => {
                let Some((lkey, off)) =
                    self.resolve_remote(peer_pd, ra.addr, ra.rkey, total, Access::REMOTE_READ)
                else {
                    self.fail_head(qpn, WcStatus::RemoteAccessError);
                    self.responder_error(peer);
                    return true;
                };
                let mut remote = Vec::with_capacity(total as usize);
                self.mrs[&lkey]
                    .mem
                    .extend_into(off, total as usize, &mut remote);
                let local = self.qps[&qpn].sq.front().expect("non-empty").wr.sgl.clone();
                if self.scatter(pd, &local, &remote).is_err() {
                    self.fail_head(qpn, WcStatus::LocalProtectionError);
                    return true;
                }
                self.complete_head(qpn, sent_len);
                true
            }
            SendOp::CompareSwap { remote, .. } | SendOp::FetchAdd { remote, .. } => {
                self.execute_atomic(qpn, peer, peer_pd, op, remote)
            }
        }
    }

    /// Executes the atomic at the head of `qpn`'s send queue on its responder `peer`: under the
    /// fabric's one lock, so atomic with respect to every other atomic. The post checked the
    /// local SGE (one of 8 bytes) and the alignment; the responder checks the rkey, bounds and
    /// [`Access::REMOTE_ATOMIC`].
    fn execute_atomic(
        &mut self,
        qpn: u32,
        peer: u32,
        peer_pd: u32,
        op: SendOp,
        remote: anyverbs::RemoteAddr,
    ) -> bool {
        let len = u64::from(ATOMIC_LEN);
        let Some((lkey, off)) = self.resolve_remote(
            peer_pd,
            remote.addr,
            remote.rkey,
            len,
            Access::REMOTE_ATOMIC,
        ) else {
            self.fail_head(qpn, WcStatus::RemoteAccessError);
            self.responder_error(peer);
            return true;
        };
        let q = &self.qps[&qpn];
        let local = q.sq.front().expect("non-empty").wr.sgl.clone();
        // The region of the result may have been deregistered since the post: the requester
        // fails before the responder's memory changes.
        if local
            .iter()
            .any(|sge| self.resolve_local(q.pd, sge, true).is_err())
        {
            self.fail_head(qpn, WcStatus::LocalProtectionError);
            return true;
        }
        let target = &mut self.mrs.get_mut(&lkey).expect("resolved").mem;
        let mut bytes = [0; 8];
        target.read(off, &mut bytes);
        let old = u64::from_ne_bytes(bytes);
        let new = match op {
            SendOp::CompareSwap { compare, swap, .. } if old == compare => swap,
            SendOp::FetchAdd { add, .. } => old.wrapping_add(add),
            _ => old,
        };
        target.write(off, &new.to_ne_bytes());
        let pd = self.qps[&qpn].pd;
        self.scatter(pd, &local, &old.to_ne_bytes())
            .expect("the local SGE was resolved above");
        self.complete_head(qpn, ATOMIC_LEN);
        true
    }

    /// Consumes the peer's next receive for an incoming message of `sent_len` bytes: a SEND
    /// whose `payload` lands in its buffers, or a WRITE with immediate (`payload` `None`: the
    /// data went to the RDMA target).
    fn deliver_recv(
        &mut self,
        qpn: u32,
        peer: u32,
        payload: Option<&[u8]>,
        sent_len: u32,
        imm: Option<u32>,
    ) {
        let pq = self.qps.get_mut(&peer).expect("present");
        let recv = pq.rq.pop_front().expect("checked non-empty");
        let (peer_pd, peer_rcq) = (pq.pd, pq.recv_cq);
        let mut recv_completion = Completion {
            wr_id: recv.wr_id,
            status: WcStatus::Success,
            opcode: if payload.is_some() {
                WcOpcode::Recv
            } else {
                WcOpcode::RecvRdmaWithImm
            },
            byte_len: sent_len,
            qp_num: peer,
            ..Completion::default()
        };
        recv_completion.set_imm(imm);
        if let Some(data) = payload {
            let failure = if data.len() as u64 > recv.total_length() {
                Some((WcStatus::LocalLengthError, WcStatus::RemoteInvalidRequest))
            } else if self.scatter(peer_pd, &recv.sgl, data).is_err() {
                Some((
                    WcStatus::LocalProtectionError,
                    WcStatus::RemoteOperationError,
                ))
            } else {
                None
            };
            if let Some((responder_status, requester_status)) = failure {
                // The responder's receive completes in error first; then the requester's WR
                // fails (on iWARP that tears the connection down and flushes the peer too); then
                // the responder's QP goes to ERROR if it is not there yet.
                recv_completion.status = responder_status;
                recv_completion.byte_len = 0;
                self.push_cqe(peer_rcq, recv_completion);
                self.fail_head(qpn, requester_status);
                self.responder_error(peer);
                return;
            }
        }
        self.push_cqe(peer_rcq, recv_completion);
        // The message asked the responder for a solicited event: a solicited-only arm fires.
        if self.qps[&qpn]
            .sq
            .front()
            .is_some_and(|e| e.wr.flags.contains(SendFlags::SOLICITED))
        {
            self.solicited_event(peer_rcq);
        }
        self.complete_head(qpn, sent_len);
    }
}
