//! A mock queue pair, and how the provider drains it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyverbs::drain::{self, DrainStart, DrainTarget, WaitFor, WorkQueue};
use anyverbs::{
    Caps, ConnParams, Connection, DrainReport, PostError, QpState, QueuePair, RecvWr, Result,
    SendWr,
};

use crate::config::Personality;
use crate::error::{MockError, MockResult};
use crate::fabric::{Fabric, State};

/// A mock reliable-connected queue pair.
pub struct MockQp {
    fabric: Arc<Fabric>,
    /// The device incarnation it was created on.
    dev: u32,
    qpn: u32,
    caps: Caps,
    personality: Personality,
}

impl std::fmt::Debug for MockQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockQp")
            .field("device_index", &self.dev)
            .field("qp_num", &self.qpn)
            .field("personality", &self.personality)
            .finish_non_exhaustive()
    }
}

impl MockQp {
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        dev: u32,
        qpn: u32,
        caps: Caps,
        personality: Personality,
    ) -> Self {
        MockQp {
            fabric,
            dev,
            qpn,
            caps,
            personality,
        }
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub(crate) fn dev(&self) -> u32 {
        self.dev
    }

    /// The QP's state, checking that its device is alive.
    fn live_state(&self) -> Result<QpState> {
        let st = self.fabric.lock();
        st.check_live(self.dev)?;
        Ok(st.qp_state(self.qpn)?)
    }
}

impl QueuePair for MockQp {
    fn qp_num(&self) -> u32 {
        self.qpn
    }

    fn state(&self) -> Result<QpState> {
        self.live_state()
    }

    fn modify(&self, to: QpState) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.modify(self.qpn, to))?)
    }

    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.fabric.with(|st| {
            st.check_live(self.dev)
                .map_err(|e| PostError::new(0, e.into()))?;
            st.post_send(self.qpn, wrs, self.caps)
        })
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.fabric.with(|st| {
            st.check_live(self.dev)
                .map_err(|e| PostError::new(0, e.into()))?;
            st.post_recv(self.qpn, wrs)
        })
    }

    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.connect(self.qpn, remote, params))?)
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        Ok(self
            .fabric
            .wait_live(self.dev, deadline, "the connection", |st| {
                st.connection(self.qpn)
            })?)
    }

    /// Drains with the plan of the device's [`Personality`], through
    /// [`anyverbs::drain::engine::run`].
    fn drain(&self, deadline: Instant) -> Result<DrainReport> {
        let start = Instant::now();
        let qpn = self.qpn;
        let started = self.fabric.wait_live(
            self.dev,
            deadline,
            "another drain of this QP to finish",
            |st| match st.begin_drain(qpn) {
                Ok(DrainStart::Start) => Some(Ok(true)),
                Ok(DrainStart::Done) => Some(Ok(false)),
                Ok(DrainStart::InProgress) => None,
                Err(e) => Some(Err(e)),
            },
        )?;
        if !started {
            return Ok(DrainReport::already_drained(start.elapsed()));
        }
        let plan = match self.live_state() {
            Ok(state) => self.personality.drain_plan(state),
            Err(e) => {
                self.fabric.with(|st| st.interrupt_drain(qpn));
                return Err(e);
            }
        };
        let fallback = match drain::engine::run(&Drainer(self), plan, deadline) {
            Ok(fallback) => fallback,
            Err(e) => {
                self.fabric.with(|st| st.interrupt_drain(qpn));
                return Err(e);
            }
        };
        let (at_start, synthesized, lost) = self.fabric.with_live(self.dev, |st| {
            let (at_start, synthesized) = st.finish_drain(qpn)?;
            // Any completion of this QP lost to overflow, before or during the drain, breaks
            // "every WR completes exactly once".
            let lost = st.lost_completions(qpn);
            Ok::<_, MockError>((at_start, synthesized, lost))
        })?;
        if lost > 0 {
            return Err(MockError::DrainOverflow { lost }.into());
        }
        Ok(DrainReport {
            strategy: plan.strategy(),
            completed_by_device: at_start.saturating_sub(synthesized),
            synthesized,
            fallback,
            elapsed: start.elapsed(),
        })
    }

    fn destroy(&self) -> Result<()> {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
        Ok(())
    }
}

/// The provider's drain primitives on the simulated device (private: only `drain` uses them).
struct Drainer<'a>(&'a MockQp);

impl DrainTarget for Drainer<'_> {
    fn enter_error(&self) -> Result<()> {
        Ok(self.live(|st, qpn| st.drain_enter_error(qpn))?)
    }

    fn post_marker(&self, queue: WorkQueue) -> Result<bool> {
        Ok(self.live(|st, qpn| st.drain_post_marker(qpn, queue, self.0.caps))?)
    }

    fn arm_flush_marker(&self, queue: WorkQueue) -> Result<bool> {
        Ok(self.live(|st, qpn| st.drain_arm_flush_marker(qpn, queue))?)
    }

    fn wait(&self, what: WaitFor, deadline: Instant) -> Result<bool> {
        let r = self
            .0
            .fabric
            .wait_live(self.0.dev, deadline, "the drain", |st| {
                match st.drain_condition(self.0.qpn, what) {
                    Ok(true) => Some(Ok(())),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                }
            });
        match r {
            Ok(()) => Ok(true),
            Err(MockError::TimedOut(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn settle(&self, queue: WorkQueue) -> Result<()> {
        Ok(self.live(|st, qpn| st.drain_settle(qpn, queue))?)
    }

    fn stop_hardware(&self) -> Result<()> {
        Ok(self.live(|st, qpn| st.stop_device_qp(qpn))?)
    }

    fn synthesize_rest(&self) -> Result<()> {
        Ok(self.live(|st, qpn| st.drain_synthesize(qpn))?)
    }
}

impl Drainer<'_> {
    /// Runs one drain step on the QP, failing with `DeviceLost` once its device is lost.
    fn live<T>(&self, f: impl FnOnce(&mut State, u32) -> MockResult<T>) -> MockResult<T> {
        self.0.fabric.with_live(self.0.dev, |st| f(st, self.0.qpn))
    }
}

impl Drop for MockQp {
    fn drop(&mut self) {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyverbs::{
        Access, Device, DrainPlan, Fallback, MemoryRegion, ProtectionDomain, Provider, QpInit,
        QpState, QueuePair, RecvWr, drain,
    };

    use super::Drainer;
    use crate::MockProvider;

    /// The rxe fact behind `repeat_error_for_recv`: a receive marker posted in ERROR completes
    /// only after another move to ERROR, so without the repetition the drain falls back.
    #[test]
    fn rxe_receive_marker_needs_the_repeated_error() {
        for (repeat, expected) in [(true, None), (false, Some(Fallback::DeadlinePassed))] {
            let p = MockProvider::new();
            let dev = p.open("mockrxe0").unwrap();
            let pd = dev.alloc_pd().unwrap();
            let cq = dev.create_cq(16).unwrap();
            let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
            let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
            qp.modify(QpState::Init).unwrap();
            qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 8)])]).unwrap();
            qp.fabric.with(|st| st.begin_drain(qp.qpn)).unwrap();
            let plan = DrainPlan::ErrorThenMarker {
                repeat_error_for_recv: repeat,
            };
            let deadline = std::time::Instant::now() + Duration::from_millis(100);
            let fallback = drain::engine::run(&Drainer(&qp), plan, deadline).unwrap();
            assert_eq!(fallback, expected, "repeat_error_for_recv: {repeat}");
        }
    }
}
