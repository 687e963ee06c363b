//! The drain's primitives, for the provider's `DrainTarget` (see `MockQp::drain`).

use std::time::Instant;

use anyverbs::drain::{DrainStart, Ledger, WaitFor, WorkQueue};
use anyverbs::{Completion, QpState, RecvWr, RemoteAddr, SendOp, SendWr, StateModel};

use super::{QpRec, State};
use crate::error::MockResult;

impl State {
    // ----- drain: the provider's primitives (see `MockQp::drain`) -----

    pub(crate) fn begin_drain(&mut self, qpn: u32) -> MockResult<DrainStart> {
        Ok(self.qp_mut(qpn)?.ledger.begin_drain())
    }

    pub(crate) fn interrupt_drain(&mut self, qpn: u32) {
        if let Some(q) = self.qps.get_mut(&qpn) {
            q.ledger.interrupt_drain();
        }
    }

    /// Ends the drain; returns the WRs outstanding when it started and how many were
    /// synthesized.
    pub(crate) fn finish_drain(&mut self, qpn: u32) -> MockResult<(usize, usize)> {
        Ok(self.qp_mut(qpn)?.ledger.finish_drain())
    }

    /// Moves the device's QP to ERROR, through INIT from RESET as the hardware requires.
    pub(crate) fn drain_enter_error(&mut self, qpn: u32) -> MockResult<()> {
        let q = self.qp_mut(qpn)?;
        if q.state == QpState::Reset {
            q.state = QpState::Init;
        }
        self.enter_error(qpn);
        Ok(())
    }

    /// Arms a marker on `queue` and posts it to the device: a signaled zero-length RDMA WRITE
    /// (it touches no remote memory) or a receive without SGEs.
    pub(crate) fn drain_post_marker(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        caps: anyverbs::Caps,
    ) -> MockResult<bool> {
        let Some(token) = self.qp_mut(qpn)?.ledger.arm_marker(queue) else {
            return Ok(false);
        };
        match queue {
            WorkQueue::Send => {
                let marker = SendWr::new(
                    token.wr_id(),
                    SendOp::Write(RemoteAddr { addr: 0, rkey: 0 }),
                    &[],
                );
                self.device_post_send(qpn, token.wr_id(), &marker, caps)?;
                self.run_sq(qpn, Instant::now());
            }
            WorkQueue::Recv => {
                self.device_post_recv(qpn, token.wr_id(), &RecvWr::new(token.wr_id(), &[]))?;
            }
        }
        Ok(true)
    }

    /// Arms a marker that lives only in the provider.
    pub(crate) fn drain_arm_flush_marker(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
    ) -> MockResult<bool> {
        Ok(self.qp_mut(qpn)?.ledger.arm_marker(queue).is_some())
    }

    /// Whether what the drain waits for holds.
    pub(crate) fn drain_condition(&self, qpn: u32, what: WaitFor) -> MockResult<bool> {
        let q = self.qp(qpn)?;
        Ok(match what {
            WaitFor::Marker(queue) => !q.ledger.marker_pending(queue),
            WaitFor::DeviceIdle(queue) => self.busy(qpn, queue) == 0,
        })
    }

    pub(super) fn cq_of(q: &QpRec, queue: WorkQueue) -> u32 {
        match queue {
            WorkQueue::Send => q.send_cq,
            WorkQueue::Recv => q.recv_cq,
        }
    }

    /// Runs `f` on the QP's ledger and delivers the completions it writes to `queue`'s CQ.
    fn deliver_from_ledger(
        &mut self,
        qpn: u32,
        queue: WorkQueue,
        f: impl FnOnce(&mut Ledger, &mut Vec<Completion>) -> usize,
    ) -> MockResult<()> {
        let q = self.qp_mut(qpn)?;
        let mut out = Vec::new();
        f(&mut q.ledger, &mut out);
        let cq = Self::cq_of(q, queue);
        self.push_resolved_all(cq, out);
        Ok(())
    }

    /// Settles `queue` in the ledger and delivers what it synthesized.
    pub(crate) fn drain_settle(&mut self, qpn: u32, queue: WorkQueue) -> MockResult<()> {
        self.deliver_from_ledger(qpn, queue, |l, out| l.settle(queue, out))
    }

    /// Synthesizes and delivers a flush for everything still outstanding.
    pub(crate) fn drain_synthesize(&mut self, qpn: u32) -> MockResult<()> {
        for queue in WorkQueue::BOTH {
            self.deliver_from_ledger(qpn, queue, |l, out| l.synthesize(queue, out))?;
        }
        Ok(())
    }

    /// Destroys the QP in the device, keeping the provider's record: the device forgets every
    /// WR (no completion) and drops pending flushes. On iWARP the connection goes down with it,
    /// as when a QP is destroyed; on InfiniBand the connection is the CM's, which says goodbye
    /// when the QP is destroyed.
    pub(crate) fn stop_device_qp(&mut self, qpn: u32) -> MockResult<()> {
        self.qp(qpn)?;
        self.abandon_connect(qpn);
        self.delayed.retain(|d| d.completion.qp_num != qpn);
        self.stalled.remove(&qpn);
        let q = self.qp_mut(qpn)?;
        q.state = QpState::Error;
        q.sq.clear();
        q.rq.clear();
        q.parked.clear();
        q.held.clear();
        q.unsignaled_done = 0;
        // On iWARP the connection is a TCP stream and goes down with the QP. On InfiniBand it
        // outlives the hardware QP: the CM sends its DREQ when the QP is destroyed.
        if q.model == StateModel::Iwarp
            && let Some(peer) = q.peer.take().filter(|_| !q.peer_lost)
        {
            if let Some(p) = self.qps.get_mut(&peer) {
                p.peer = None;
            }
            self.enter_error(peer);
        }
        Ok(())
    }
}
