//! The engine's common case in one pass: a SEND of one SGE into a peer that has a receive of
//! one SGE posted, on working devices. [`State::run_sq`] tries it before the general path
//! ([`State::execute_head`]), which handles everything else: stalls, errors, inline data, RDMA
//! operations, longer scatter lists. For the WRs it takes, this does exactly what the general
//! path does — the same checks, the same bytes, the same completions in the same order — with
//! each record looked up once and no copy through the fabric's payload buffer.
//!
//! A change to how the general path executes a SEND must be made here too, or this must refuse
//! the case: the differential test (`differential.rs`) runs random scenarios with this path and
//! without it and compares everything the two leave behind.

use anyverbs::{Completion, QpState, SendFlags, SendOp, WcOpcode, WcStatus};

use super::resources::local_offset;
use super::table::{KEY_SLOT_BITS, Table};
use super::{CqRec, State};
use crate::config::Personality;

impl State {
    /// Executes the head of QP `qpn`'s send queue if it is the common case; false, having done
    /// nothing, if it is not.
    pub(super) fn execute_express(&mut self, qpn: u32) -> bool {
        #[cfg(test)]
        if !self.express {
            return false;
        }
        let State {
            qps,
            mrs,
            incarnations,
            cqs,
            pending_cq_errors,
            ..
        } = self;
        let working = |dev: u32| incarnations.get(&dev).is_some_and(|i| i.working());
        // The requester: running, connected, its head a SEND of one SGE not yet started.
        let Some(peer) = qps.get(&qpn).and_then(|q| q.peer) else {
            return false;
        };
        let [Some(q), Some(pq)] = qps.get_pair_mut(&qpn, &peer) else {
            return false;
        };
        let Some(head) = q.sq.front() else {
            return false;
        };
        let imm = match head.wr.op {
            SendOp::Send => None,
            SendOp::SendWithImm(imm) => Some(imm),
            _ => return false,
        };
        let (&[src], None, None) = (&head.wr.sgl[..], &head.inline, head.stall) else {
            return false;
        };
        if q.state != QpState::ReadyToSend
            || q.personality == Personality::Dead
            || q.peer_lost
            || !working(q.device)
        {
            return false;
        }
        // The responder: connected to it, on a working device, in a state that receives, with a
        // receive of one SGE that the message fits.
        let receives = matches!(
            pq.state,
            QpState::ReadyToReceive
                | QpState::ReadyToSend
                | QpState::SendQueueDrained
                | QpState::SendQueueError
        );
        if pq.peer != Some(qpn) || !receives || (pq.device != q.device && !working(pq.device)) {
            return false;
        }
        let Some(&[dst]) = pq.rq.front().map(|r| &r.sgl[..]) else {
            return false;
        };
        if src.length > dst.length || !copy(mrs, (q.pd, &src), (pq.pd, &dst)) {
            return false;
        }
        // The responder's receive completes, then the requester's send.
        let recv = pq.rq.pop_front().expect("looked at above");
        let mut received = Completion {
            wr_id: recv.wr_id,
            status: WcStatus::Success,
            opcode: WcOpcode::Recv,
            byte_len: src.length,
            qp_num: peer,
            ..Completion::default()
        };
        received.set_imm(imm);
        push(cqs, pending_cq_errors, pq.recv_cq, received);
        let sent = q.sq.pop_front().expect("looked at above");
        if sent.wr.flags.contains(SendFlags::SOLICITED)
            && let Some(cq) = cqs.get_mut(&pq.recv_cq)
        {
            cq.fire(pq.recv_cq, true);
        }
        if !sent.wr.flags.contains(SendFlags::SIGNALED) {
            q.unsignaled_done += 1;
        } else {
            q.unsignaled_done = 0;
            let completion = Completion {
                wr_id: sent.wr.wr_id,
                status: WcStatus::Success,
                opcode: WcOpcode::Send,
                byte_len: src.length,
                qp_num: qpn,
                ..Completion::default()
            };
            push(cqs, pending_cq_errors, q.send_cq, completion);
        }
        true
    }
}

/// Copies the bytes of SGE `src` (of PD `src_pd`) into SGE `dst` (of PD `dst_pd`, which needs
/// local write access), if both are valid; false, having copied nothing, if either is not.
fn copy(
    mrs: &mut Table<super::MrRec, KEY_SLOT_BITS>,
    (src_pd, src): (u32, &anyverbs::Sge),
    (dst_pd, dst): (u32, &anyverbs::Sge),
) -> bool {
    let n = src.length as usize;
    if src.lkey == dst.lkey {
        let Some(mr) = mrs.get_mut(&src.lkey) else {
            return false;
        };
        let (Ok(from), Ok(to)) = (
            local_offset(mr, src_pd, src, false),
            local_offset(mr, dst_pd, dst, true),
        ) else {
            return false;
        };
        mr.mem.copy_within(from, to, n);
        return true;
    }
    let [Some(from_mr), Some(to_mr)] = mrs.get_pair_mut(&src.lkey, &dst.lkey) else {
        return false;
    };
    let (Ok(from), Ok(to)) = (
        local_offset(from_mr, src_pd, src, false),
        local_offset(to_mr, dst_pd, dst, true),
    ) else {
        return false;
    };
    to_mr.mem.copy_from(to, &from_mr.mem, from, n);
    true
}

/// [`State::push_cqe`] on the table itself.
#[inline]
fn push(cqs: &mut Table<CqRec, KEY_SLOT_BITS>, pending: &mut Vec<u32>, id: u32, c: Completion) {
    if let Some(cq) = cqs.get_mut(&id) {
        cq.push(id, c, pending);
    }
}
