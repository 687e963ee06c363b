//! [`KitQp`]: a queue pair built on the kit — admission through the ledger, state tracking,
//! handle lifetime — over a provider's [`RawQp`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use smallvec::SmallVec;

use super::cq::{CqCore, KitCq};
use super::life::DeviceLife;
use super::pd::PdUser;
use super::raw::RawQp;
use super::{QpBook, SharedBook, lock};
use crate::DrainReport;
use crate::cm::{ConnParams, Connection};
use crate::drain::{DrainPhase, DrainProfile, Ledger, Token, WorkQueue};
use crate::error::{Error, ErrorKind, PostError, Result};
use crate::qp::{QpInit, QueuePair};
use crate::state::QpState;
use crate::wr::{RecvWr, SendWr};

/// WRs of one batch the kit rewrites on the stack; longer batches take one allocation.
const INLINE_BATCH: usize = 16;

/// A queue pair built on the kit: a provider's [`RawQp`] below, the ULP's [`QueuePair`] above.
///
/// The kit admits every WR into the QP's [`Ledger`] and posts it under its
/// [`Token`] (a WR the device refuses is withdrawn, one posted in ERROR is doomed: it is
/// never taken for an unsignaled success), tracks whether the QP is in ERROR (from its own
/// transitions and from the error completions it resolves), keeps the queue depths the ULP asked
/// for, drains with the device's [`DrainProfile`] (see [`drain`](QueuePair::drain)), and owns
/// the handle's lifetime: after [`destroy`](QueuePair::destroy) every call fails with
/// `Destroyed`, after the device is lost with `DeviceLost`.
pub struct KitQp<Q: RawQp> {
    // Declared first: dropped (destroyed in the device) before the CQs it uses.
    pub(crate) raw: Q,
    pub(crate) qp_num: u32,
    /// What [`QueuePair::granted`] reports.
    granted: QpInit,
    pub(crate) book: SharedBook,
    /// Signalled when a drain ends (for a second caller waiting for it).
    pub(crate) drain_ended: Condvar,
    pub(crate) send_cq: Arc<CqCore<Q::Cq>>,
    pub(crate) recv_cq: Arc<CqCore<Q::Cq>>,
    pub(crate) profile: &'static DrainProfile,
    pub(crate) life: DeviceLife,
    destroyed: AtomicBool,
    /// Set by the provider through [`DeviceLife::qp_entered_error`].
    device_error: Arc<AtomicBool>,
    /// Read-held by `connect` and `wait_connected` for their duration; `destroy` write-locks it
    /// once before destroying the device QP.
    connecting: RwLock<()>,
    /// The QP's hold on its [`KitPd`](super::KitPd), if it was created through one: released
    /// once the device QP is destroyed.
    pd: Option<PdUser>,
    /// Whether the device QP was destroyed; held by `destroy` throughout, so that a second
    /// `destroy` waits for the first and retries the device's destroy if that failed.
    device_destroyed: Mutex<bool>,
}

impl<Q: RawQp> std::fmt::Debug for KitQp<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitQp")
            .field("qp_num", &self.qp_num)
            .field("drain_profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

/// The queue sizes to create the device's QP with for a ULP that asked for `init`: one more
/// slot per work queue, for the drain's marker.
pub fn device_init(init: &QpInit) -> QpInit {
    QpInit {
        max_send_wr: init.max_send_wr.saturating_add(1),
        max_recv_wr: init.max_recv_wr.saturating_add(1),
        ..*init
    }
}

impl<Q: RawQp> KitQp<Q> {
    /// Wraps the device's QP, created (with [`device_init`]) on the devices CQs `send_cq` and
    /// `recv_cq` for a ULP that asked for `init`; `profile` is the device's drain profile
    /// ([`profile_for`](crate::drain::profile_for)). Attaches the QP to its CQs, which reserve a
    /// completion slot per queue for the drain's markers.
    pub fn new(
        raw: Q,
        send_cq: &KitCq<Q::Cq>,
        recv_cq: &KitCq<Q::Cq>,
        init: &QpInit,
        profile: &'static DrainProfile,
        life: DeviceLife,
    ) -> Result<KitQp<Q>> {
        send_cq.check()?;
        recv_cq.check()?;
        let qp_num = raw.qp_num();
        let device = raw.granted();
        let wanted = device_init(init);
        if device.max_send_wr < wanted.max_send_wr
            || device.max_recv_wr < wanted.max_recv_wr
            || device.max_send_sge < wanted.max_send_sge
            || device.max_recv_sge < wanted.max_recv_sge
            || device.max_inline_data < wanted.max_inline_data
        {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "the device granted QP {qp_num} less than it was asked for: {device:?}, \
                     asked {wanted:?}"
                ),
            ));
        }
        // The WRs are the ULP's (the kit holds the queues to them); the rest is the device's.
        let granted = QpInit {
            max_send_wr: init.max_send_wr,
            max_recv_wr: init.max_recv_wr,
            ..device
        };
        let book: SharedBook = Arc::new(Mutex::new(QpBook {
            ledger: Ledger::new(qp_num, init.max_send_wr, init.max_recv_wr),
            in_error: false,
            resetting: None,
            drain_waiters: 0,
        }));
        let same = Arc::ptr_eq(&send_cq.core, &recv_cq.core);
        if same {
            send_cq.core.attach(qp_num, &book, 2)?;
        } else {
            send_cq.core.attach(qp_num, &book, 1)?;
            if let Err(e) = recv_cq.core.attach(qp_num, &book, 1) {
                send_cq.core.detach(qp_num, &book, 1);
                return Err(e);
            }
        }
        let device_error = Arc::new(AtomicBool::new(false));
        life.register(qp_num, &device_error);
        Ok(KitQp {
            raw,
            qp_num,
            granted,
            book,
            drain_ended: Condvar::new(),
            send_cq: Arc::clone(&send_cq.core),
            recv_cq: Arc::clone(&recv_cq.core),
            profile,
            life,
            destroyed: AtomicBool::new(false),
            device_error,
            connecting: RwLock::new(()),
            pd: None,
            device_destroyed: Mutex::new(false),
        })
    }

    /// The QP counted among `pd`'s users until it is destroyed.
    pub(crate) fn held_by(mut self, pd: PdUser) -> Self {
        self.pd = Some(pd);
        self
    }

    /// The device's QP.
    pub fn raw(&self) -> &Q {
        &self.raw
    }

    /// Runs `f` on the device QP while holding off [`destroy`](QueuePair::destroy), for the
    /// calls that reach the device QP from outside the kit — a listener accepting a connection
    /// onto it. Fails with `Destroyed` (or `DeviceLost`) if it is too late. `f` must not
    /// destroy this QP: the destroy would wait for `f` to return.
    pub fn with_device_qp<T>(&self, f: impl FnOnce(&Q) -> Result<T>) -> Result<T> {
        let _alive = self.connection_guard()?;
        f(&self.raw)
    }

    /// The drain profile the QP drains with.
    pub fn drain_profile(&self) -> &'static DrainProfile {
        self.profile
    }

    /// `DeviceLost` once the device is lost (whatever else happened to the handle), else
    /// `Destroyed` once the handle was destroyed.
    pub(crate) fn check(&self) -> Result<()> {
        self.life.check()?;
        if self.destroyed.load(Ordering::Acquire) {
            return Err(Error::destroyed("queue pair"));
        }
        Ok(())
    }

    /// Holds off `destroy` for a connection call: `Destroyed` (or `DeviceLost`) if it is too
    /// late.
    pub(crate) fn connection_guard(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        let guard = self.connecting.read().unwrap_or_else(|e| e.into_inner());
        self.check()?;
        Ok(guard)
    }

    /// The CQ of `queue`.
    pub(crate) fn cq(&self, queue: WorkQueue) -> &CqCore<Q::Cq> {
        match queue {
            WorkQueue::Send => &self.send_cq,
            WorkQueue::Recv => &self.recv_cq,
        }
    }

    /// Moves every completion the device produced for this QP so far aside for the ULP,
    /// resolved while the ledger still knows the WRs (before a reset forgets them, before the
    /// QP is detached). Errors (an overflowed CQ, a lost device) are the CQ's to report.
    pub(crate) fn pump_both(&self) {
        let _ = self.send_cq.pump();
        if !Arc::ptr_eq(&self.send_cq, &self.recv_cq) {
            let _ = self.recv_cq.pump();
        }
    }

    /// Stops routing the CQs' completions to this QP, and the provider's news of it.
    fn detach(&self) {
        self.life.unregister(self.qp_num, &self.device_error);
        if Arc::ptr_eq(&self.send_cq, &self.recv_cq) {
            self.send_cq.detach(self.qp_num, &self.book, 2);
        } else {
            self.send_cq.detach(self.qp_num, &self.book, 1);
            self.recv_cq.detach(self.qp_num, &self.book, 1);
        }
    }

    /// Takes the provider's news that the device moved the QP to ERROR
    /// ([`DeviceLife::qp_entered_error`]), and believes it only if the device's state says
    /// ERROR: an event thread may report it late, after the ULP reset the QP and brought it
    /// back, and dooming the WRs of a healthy QP would turn an unsignaled send that ran into a
    /// flush at the next drain. True if the QP is in ERROR.
    #[cold]
    fn confirm_device_error(&self, book: &mut QpBook) -> bool {
        // Taken before the device is asked: news that arrives meanwhile is looked at next time.
        self.device_error.store(false, Ordering::Release);
        if matches!(self.raw.state(), Ok(QpState::Error)) {
            book.in_error = true;
        }
        book.in_error
    }

    /// Admits `wrs` to the ledger, posts what was admitted through `post` under their tokens,
    /// and withdraws what the device refused.
    fn post_through_ledger<W: Copy>(
        &self,
        wrs: &[W],
        admit: impl Fn(&mut Ledger, &W) -> Result<Token>,
        retoken: impl Fn(W, Token) -> W,
        post: impl FnOnce(&[W]) -> std::result::Result<(), PostError>,
    ) -> std::result::Result<(), PostError> {
        self.check().map_err(|e| PostError::new(0, e))?;
        let mut book = lock(&self.book);
        // Again under the lock that `destroy` takes: no post reaches a destroyed device QP.
        self.check().map_err(|e| PostError::new(0, e))?;
        // Whether the QP is in ERROR is read before the post: a WR is doomed only when it
        // certainly went to a QP in ERROR (a WR that may have run must be waited for).
        let in_error = book.in_error
            || (self.device_error.load(Ordering::Acquire) && self.confirm_device_error(&mut book));
        if let [wr] = wrs {
            // One WR, the common case: rewritten on the stack, no batch to build.
            let token = admit(&mut book.ledger, wr).map_err(|e| PostError::new(0, e))?;
            let retokened = retoken(*wr, token);
            return match post(std::slice::from_ref(&retokened)) {
                Ok(()) => {
                    if in_error {
                        book.ledger.doom(token);
                    }
                    Ok(())
                }
                Err(e) => {
                    book.ledger.withdraw(token);
                    Err(PostError::new(0, e.error))
                }
            };
        }
        let mut batch: SmallVec<[W; INLINE_BATCH]> = SmallVec::new();
        let mut tokens: SmallVec<[Token; INLINE_BATCH]> = SmallVec::new();
        let mut refused = None;
        for (i, wr) in wrs.iter().enumerate() {
            match admit(&mut book.ledger, wr) {
                Ok(token) => {
                    batch.push(retoken(*wr, token));
                    tokens.push(token);
                }
                Err(e) => {
                    refused = Some(PostError::new(i, e));
                    break;
                }
            }
        }
        if batch.is_empty() {
            return refused.map_or(Ok(()), Err);
        }
        let posted = match post(&batch) {
            Ok(()) => tokens.len(),
            Err(e) => {
                let accepted = e.accepted.min(tokens.len());
                for &t in &tokens[accepted..] {
                    book.ledger.withdraw(t);
                }
                refused = Some(PostError::new(accepted, e.error));
                accepted
            }
        };
        if in_error {
            for &t in &tokens[..posted] {
                book.ledger.doom(t);
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

impl<Q: RawQp> QueuePair for KitQp<Q> {
    fn qp_num(&self) -> u32 {
        self.qp_num
    }

    fn granted(&self) -> QpInit {
        self.granted
    }

    fn state(&self) -> Result<QpState> {
        let _book = lock(&self.book);
        self.check()?;
        self.raw.state()
    }

    fn modify(&self, to: QpState) -> Result<()> {
        self.check()?;
        let mark = {
            let mut book = lock(&self.book);
            self.check()?;
            if book.ledger.phase() != DrainPhase::Open && to != QpState::Error {
                return Err(Error::invalid_state(
                    "the QP was drained: it can only be destroyed (or moved to ERROR)",
                ));
            }
            self.raw.modify(to)?;
            if to == QpState::Error {
                book.in_error = true;
            }
            if to != QpState::Reset {
                return Ok(());
            }
            // The QP is out of ERROR now, before the lock is released: another thread may bring
            // it back to INIT and post at once, and its WRs are not doomed.
            book.in_error = false;
            self.device_error.store(false, Ordering::Release);
            let mark = book.ledger.mark();
            book.resetting = Some(mark);
            mark
        };
        // RESET discards the device's queues without completions; what the device completed
        // before is delivered, resolved while the ledger still knows it (its error completions
        // are stale: `resetting`). Then the WRs posted before the RESET are forgotten — only
        // those: another thread may have brought the QP back to INIT and posted since.
        self.pump_both();
        let mut book = lock(&self.book);
        book.ledger.discard_before(mark);
        if book.resetting == Some(mark) {
            book.resetting = None;
        }
        Ok(())
    }

    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        let caps = self.life.caps();
        self.post_through_ledger(
            wrs,
            // What every device refuses (an atomic without `Caps::ATOMICS`, a malformed atomic)
            // is refused here, before the ledger or the device sees it.
            |ledger, wr| {
                wr.check_for(caps)?;
                ledger.admit_send(wr)
            },
            |wr, token| SendWr {
                wr_id: token.wr_id(),
                ..wr
            },
            |batch| self.raw.post_send(batch),
        )
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        self.post_through_ledger(
            wrs,
            |ledger, wr| ledger.admit_recv(wr),
            |wr, token| RecvWr {
                wr_id: token.wr_id(),
                ..wr
            },
            |batch| self.raw.post_recv(batch),
        )
    }

    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()> {
        // Not under the QP's lock, like `wait_connected`: a provider may resolve the address
        // and route before it returns, and the CQs' pollers need that lock meanwhile. Under the
        // connection lock instead, which `destroy` takes before destroying the device QP.
        let _alive = self.connection_guard()?;
        self.raw.connect(remote, params)
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        let _alive = self.connection_guard()?;
        self.raw.wait_connected(deadline)
    }

    fn disconnect(&self, deadline: Instant) -> Result<crate::qp::DisconnectReport> {
        self.disconnect_by(deadline)
    }

    fn drain(&self, deadline: Instant) -> Result<DrainReport> {
        self.drain_by_profile(deadline)
    }

    fn destroy(&self) -> Result<()> {
        let first = {
            // Nothing may call into the device QP once it is destroyed: a drain that is running
            // is let finish (it ends by its deadline), and posts, transitions and drains check
            // the flag under this lock.
            let mut book = lock(&self.book);
            while book.ledger.phase() == DrainPhase::Draining {
                book.drain_waiters += 1;
                book = match self.drain_ended.wait(book) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
                book.drain_waiters -= 1;
            }
            !self.destroyed.swap(true, Ordering::AcqRel)
        };
        // A second destroy waits for the first, and tries the device again if it failed there.
        let mut device_destroyed = lock(&self.device_destroyed);
        if *device_destroyed {
            return Ok(());
        }
        if first {
            // A connect or a connection wait in progress ends first (by its deadline): the
            // device QP is not destroyed under it.
            drop(self.connecting.write().unwrap_or_else(|e| e.into_inner()));
            // What the device completed stays pollable; then the QP's number routes nowhere.
            self.pump_both();
            self.detach();
        }
        self.raw.destroy()?;
        *device_destroyed = true;
        if let Some(pd) = &self.pd {
            pd.release();
        }
        Ok(())
    }
}

impl<Q: RawQp> Drop for KitQp<Q> {
    fn drop(&mut self) {
        if !self.destroyed.load(Ordering::Acquire) {
            self.pump_both();
            self.detach();
        }
    }
}
