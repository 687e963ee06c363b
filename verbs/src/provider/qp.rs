//! RC queue pairs: state, the data path, and stopping.

use std::sync::{Arc, RwLock};

use anyverbs::kit::{RawQp, device_init};
use anyverbs::state::Cause;
use anyverbs::{
    Caps, ConnParams, Connection, Error, ErrorKind, PostError, QpInit, QpState, RecvWr, Result,
    SendFlags, SendWr,
};

use super::connect::ConnCell;
use super::cq::RawVerbsCq;
use super::device::DeviceCore;
use super::held::{Held, Kind};
use crate::objects::{Pd, Qp, QpCaps, QpState as VState};
use crate::raw::core_path;

/// What the device's event threads reach of a QP: its verbs object and its tracked state.
pub(crate) struct QpShared {
    /// `None` once the device's QP was destroyed ([`RawQp::stop`]).
    pub(crate) qp: RwLock<Option<Qp>>,
}

impl QpShared {
    /// Records a state the device moved the QP to on its own.
    pub(crate) fn record(&self, state: VState) {
        if let Some(qp) = self.qp.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
            qp.record_state(state);
        }
    }
}

/// An RC queue pair of the device (`ibv_qp`), with the connection the CM made for it.
pub struct RawVerbsQp {
    pub(crate) core: Arc<DeviceCore>,
    pub(crate) shared: Arc<QpShared>,
    num: u32,
    granted: QpInit,
    pub(crate) conn: Arc<ConnCell>,
    _held: Held,
}

impl std::fmt::Debug for RawVerbsQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVerbsQp")
            .field("qp_num", &self.num)
            .finish_non_exhaustive()
    }
}

fn stopped() -> Error {
    Error::destroyed("queue pair")
}

impl RawVerbsQp {
    pub(crate) fn create(
        core: &Arc<DeviceCore>,
        pd: &Pd,
        send_cq: &RawVerbsCq,
        recv_cq: &RawVerbsCq,
        init: &QpInit,
    ) -> Result<RawVerbsQp> {
        if init.max_send_wr == 0 || init.max_recv_wr == 0 {
            return Err(Error::invalid_argument(format!(
                "a QP needs room for at least one WR per queue (asked for {} send, {} receive)",
                init.max_send_wr, init.max_recv_wr
            )));
        }
        let want = device_init(init);
        let caps = QpCaps {
            max_send_wr: want.max_send_wr,
            max_recv_wr: want.max_recv_wr,
            max_send_sge: want.max_send_sge,
            max_recv_sge: want.max_recv_sge,
            max_inline_data: want.max_inline_data,
        };
        let limits = &core.info.limits;
        if caps.max_send_wr > limits.max_qp_wr || caps.max_recv_wr > limits.max_qp_wr {
            return Err(Error::invalid_argument(format!(
                "{} send and {} receive WRs (one each for the drain's marker); the device allows \
                 {} per queue",
                caps.max_send_wr, caps.max_recv_wr, limits.max_qp_wr
            )));
        }
        if caps.max_send_sge > limits.max_sge || caps.max_recv_sge > limits.max_sge {
            return Err(Error::invalid_argument(format!(
                "{} send and {} receive SGEs per WR; the device allows {}",
                caps.max_send_sge, caps.max_recv_sge, limits.max_sge
            )));
        }
        if caps.max_inline_data > limits.max_inline_data {
            return Err(Error::invalid_argument(format!(
                "{} bytes of inline data; the device allows {}",
                caps.max_inline_data, limits.max_inline_data
            )));
        }
        let mut qp = Qp::create_rc(pd, &send_cq.cq()?, &recv_cq.cq()?, caps)?;
        // iWARP has no RESET a ULP sees: its QPs start in IDLE, verbs' INIT.
        if core.flavor.state_model.initial() != QpState::Reset {
            qp.to_init(1, super::pd::access(remote_access(core.info.caps)))?;
        }
        let g = qp.caps();
        let granted = QpInit {
            max_send_wr: g.max_send_wr,
            max_recv_wr: g.max_recv_wr,
            max_send_sge: g.max_send_sge,
            max_recv_sge: g.max_recv_sge,
            max_inline_data: g.max_inline_data,
        };
        let num = qp.qp_num();
        let shared = Arc::new(QpShared {
            qp: RwLock::new(Some(qp)),
        });
        core.qps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(num, Arc::downgrade(&shared));
        Ok(RawVerbsQp {
            core: core.clone(),
            shared,
            num,
            granted,
            conn: Arc::default(),
            _held: core.held.another(Kind::Qp),
        })
    }

    /// Runs `f` on the verbs QP itself, for measurements against raw verbs on the same QP
    /// (the provider's benchmarks). WRs posted through it bypass the kit, which never learns of
    /// them (a drain does not account for them): whoever posts them polls every one of their
    /// completions from [`RawVerbsCq::verbs_cq`] before the QP is used through the kit again.
    /// `Destroyed` once the device's QP is gone.
    pub fn with_verbs_qp<T>(&self, f: impl FnOnce(&Qp) -> T) -> Result<T> {
        let guard = self.shared.qp.read().unwrap_or_else(|e| e.into_inner());
        Ok(f(guard.as_ref().ok_or_else(stopped)?))
    }

    /// The QP number.
    pub(crate) fn shared_num(&self) -> u32 {
        self.num
    }

    /// Runs `f` on the verbs QP for a state change.
    pub(crate) fn with_qp<T>(&self, f: impl FnOnce(&mut Qp) -> Result<T>) -> Result<T> {
        let mut qp = self.shared.qp.write().unwrap_or_else(|e| e.into_inner());
        f(qp.as_mut().ok_or_else(stopped)?)
    }

    /// The tracked verbs state (or the kernel's, where the flavor says its query tells). A QP
    /// whose device QP was stopped (destroyed by a drain's fallback) is in ERROR for good.
    pub(crate) fn verbs_state(&self) -> Result<VState> {
        if self
            .shared
            .qp
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Ok(VState::Error);
        }
        self.with_qp(|qp| {
            if self.core.flavor.query_tells_state {
                qp.query_state()
            } else {
                Ok(qp.state())
            }
        })
    }

    fn current(&self) -> Result<QpState> {
        Ok(self.core.state_of(self.verbs_state()?))
    }

    /// Refuses, before the driver sees them, posts the QP's tracked state does not allow: some
    /// drivers queue such WRs and only then fail the doorbell (rxe in RESET and INIT), leaving
    /// WRs in the ring that would run after a later move to RTS. The kernel moves a QP on its
    /// own only to states that take posts (ERROR, SQE), so the tracked state is never too
    /// permissive.
    fn check_postable(&self, qp: &Qp, send: bool) -> std::result::Result<(), PostError> {
        let model = self.core.flavor.state_model;
        let state = self.core.state_of(qp.state());
        let allowed = if send {
            model.can_post_send(state)
        } else {
            model.can_post_recv(state)
        };
        if allowed {
            return Ok(());
        }
        let what = if send { "a send" } else { "a receive" };
        Err(PostError::new(
            0,
            Error::invalid_state(format!("{what} cannot be posted to a QP in {state}")),
        ))
    }

    /// Why a post the device refused was refused: a state that does not allow it is
    /// `InvalidState`, whatever errno the driver chose.
    fn refine(&self, e: PostError, send: bool) -> PostError {
        if e.error.kind() != ErrorKind::InvalidArgument {
            return e;
        }
        let model = self.core.flavor.state_model;
        match self.current() {
            Ok(s) if send && !model.can_post_send(s) => PostError::new(
                e.accepted,
                Error::invalid_state(format!("a send cannot be posted to a QP in {s}")),
            ),
            Ok(s) if !send && !model.can_post_recv(s) => PostError::new(
                e.accepted,
                Error::invalid_state(format!("a receive cannot be posted to a QP in {s}")),
            ),
            _ => e,
        }
    }
}

/// The remote rights a QP grants its peer: everything the device can do.
pub(crate) fn remote_access(caps: Caps) -> anyverbs::Access {
    let mut a = anyverbs::Access::REMOTE_WRITE | anyverbs::Access::REMOTE_READ;
    if caps.contains(Caps::ATOMICS) {
        a |= anyverbs::Access::REMOTE_ATOMIC;
    }
    a
}

impl RawQp for RawVerbsQp {
    type Cq = RawVerbsCq;

    fn qp_num(&self) -> u32 {
        self.num
    }

    fn granted(&self) -> QpInit {
        self.granted
    }

    fn state(&self) -> Result<QpState> {
        self.current()
    }

    fn modify(&self, to: QpState) -> Result<()> {
        let model = self.core.flavor.state_model;
        let from = self.current()?;
        model.check(from, to, Cause::Modify)?;
        let target = self.core.verbs_state(to);
        match target {
            VState::Init => {
                let access = super::pd::access(remote_access(self.core.info.caps));
                self.with_qp(|qp| qp.to_init(1, access))
            }
            VState::Rtr | VState::Rts if !matches!(from, QpState::SendQueueDrained) => {
                Err(Error::invalid_state(format!(
                    "{to} needs the remote QP: connect through the connection manager"
                )))
            }
            VState::Reset => {
                self.with_qp(|qp| qp.to_state(VState::Reset))?;
                // The connection is over; a new one starts from scratch.
                self.end_connection();
                Ok(())
            }
            other => self.with_qp(|qp| qp.to_state(other)),
        }
    }

    fn enter_error(&self) -> Result<()> {
        let mut guard = self.shared.qp.write().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(qp) => qp.to_state(VState::Error),
            // Stopped: there is no device QP left to flush anything.
            None => Ok(()),
        }
    }

    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        // An inline SGE is read by the CPU at post time: it must lie in a region of the process
        // that stays registered for the whole post (regions leave the table, under the write
        // lock, before they are deregistered and freed).
        let inline = wrs.iter().any(|w| w.flags.contains(SendFlags::INLINE));
        let regions = inline.then(|| self.core.regions.read().unwrap_or_else(|e| e.into_inner()));
        if let Some(regions) = &regions {
            for w in wrs {
                if !w.flags.contains(SendFlags::INLINE) {
                    continue;
                }
                for s in w.sgl() {
                    let inside = regions.get(&s.lkey).is_some_and(|&(addr, len)| {
                        s.addr >= addr
                            && (s.addr - addr)
                                .checked_add(u64::from(s.length))
                                .is_some_and(|end| end <= len as u64)
                    });
                    if !inside {
                        // Nothing of the batch was posted yet: none of it was accepted.
                        return Err(PostError::new(
                            0,
                            Error::invalid_argument(format!(
                                "an inline SGE ({} bytes at {:#x}, lkey {:#x}) does not lie in a \
                                 region of this device",
                                s.length, s.addr, s.lkey
                            )),
                        ));
                    }
                }
            }
        }
        let guard = self.shared.qp.read().unwrap_or_else(|e| e.into_inner());
        let Some(qp) = guard.as_ref() else {
            return Err(PostError::new(0, stopped()));
        };
        self.check_postable(qp, true)?;
        // SAFETY: the QP is live (the read lock keeps it from being destroyed). Every SGE the
        // device reads or writes by DMA is checked by the device against the region its lkey
        // names (bounds and rights); such memory stays valid while it is registered, and the
        // device stops using it once deregistered. Inline SGEs, which the CPU reads, were
        // checked above to lie in a registered region that cannot be deregistered before the
        // post returns (the table's read lock is held).
        let posted = unsafe { core_path::post_send(qp.as_ptr(), wrs) };
        drop(regions);
        // The QP's lock is let go before a refused post is explained (that reads the state).
        drop(guard);
        posted.map_err(|e| self.refine(e, true))
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        let guard = self.shared.qp.read().unwrap_or_else(|e| e.into_inner());
        let Some(qp) = guard.as_ref() else {
            return Err(PostError::new(0, stopped()));
        };
        self.check_postable(qp, false)?;
        // SAFETY: the QP is live (read lock); the device checks every SGE against the region
        // its lkey names, as for sends.
        let posted = unsafe { core_path::post_recv(qp.as_ptr(), wrs) };
        drop(guard);
        posted.map_err(|e| self.refine(e, false))
    }

    fn connect(&self, remote: std::net::SocketAddr, params: &ConnParams) -> Result<()> {
        super::connect::start(self, remote, params)
    }

    fn wait_connected(&self, deadline: std::time::Instant) -> Result<Connection> {
        super::connect::wait(self, deadline)
    }

    fn disconnect(&self, orderly: bool) -> Result<QpState> {
        super::connect::disconnect(self, orderly)
    }

    fn stop(&self) -> Result<()> {
        let qp = self
            .shared
            .qp
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(qp);
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        self.stop()?;
        self.end_connection();
        self.core
            .qps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.num);
        Ok(())
    }
}

impl Drop for RawVerbsQp {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}
