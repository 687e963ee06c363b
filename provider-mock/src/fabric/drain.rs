//! What the simulated device does for a drain: move a QP to ERROR, and stop a QP for good. The
//! drain itself is the provider kit's.

use anyverbs::{QpState, StateModel};

use super::State;
use crate::error::MockResult;

impl State {
    /// Moves the device's QP to ERROR (again, if it is there: on rxe that flushes the receives
    /// posted in ERROR), through INIT from RESET as the hardware requires.
    pub(crate) fn drain_enter_error(&mut self, qpn: u32) -> MockResult<()> {
        let q = self.qp_mut(qpn)?;
        if q.state == QpState::Reset {
            q.state = QpState::Init;
        }
        self.enter_error(qpn);
        Ok(())
    }

    /// Destroys the QP in the device, keeping its record: the device forgets every WR (no
    /// completion) and drops pending flushes. On iWARP the connection goes down with it, as when
    /// a QP is destroyed; on InfiniBand the connection is the CM's, which says goodbye when the
    /// QP is destroyed.
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
