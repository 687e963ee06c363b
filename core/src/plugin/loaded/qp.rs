//! [`LoadedQp`]: a queue pair of a loaded provider, behind [`QueuePair`]; one indirect call
//! per post, inlined into the caller's generic code.

use std::time::Instant;

use super::slots::DataPathSlot;
use super::{Handle, call};
use crate::cm::{ConnParams, Connection};
use crate::drain::DrainReport;
use crate::error::{ErrorKind, PostError, Result};
use crate::plugin::abi::{self, STATUS_OK, Status};
use crate::plugin::convert;
use crate::qp::{DisconnectReport, QpInit, QueuePair};
use crate::state::QpState;
use crate::wr::{RecvWr, SendWr};

/// The type of `qp_post_send` and `qp_post_recv`, for WRs of ABI form `A`.
type PostFn<A> =
    unsafe extern "C" fn(*const abi::RawQp, *const A, usize, *mut abi::PostFailure) -> Status;

/// A queue pair of a loaded provider.
pub struct LoadedQp {
    handle: Handle<abi::RawQp>,
    /// The plugin's `qp_post_send` and `qp_post_recv`, kept as [`LoadedCq`](super::LoadedCq)
    /// keeps its polls.
    post_send: PostFn<abi::SendWr>,
    post_recv: PostFn<abi::RecvWr>,
    qp_num: u32,
    /// The sizes asked for, which bound what a drain may account for.
    init: QpInit,
    /// The sizes the plugin says it granted (checked to be at least `init`).
    granted: QpInit,
}

impl LoadedQp {
    /// A QP whose number and granted sizes were checked, made with `init`.
    pub(super) fn new(
        handle: Handle<abi::RawQp>,
        qp_num: u32,
        init: QpInit,
        granted: QpInit,
    ) -> Self {
        let f = handle.f();
        LoadedQp {
            post_send: f.qp_post_send,
            post_recv: f.qp_post_recv,
            handle,
            qp_num,
            init,
            granted,
        }
    }

    pub(super) fn handle(&self) -> &Handle<abi::RawQp> {
        &self.handle
    }

    /// Posts a batch through `entry` (`qp_post_send` or `qp_post_recv`), the WRs as they are.
    #[inline]
    fn post<A>(&self, wrs: *const A, len: usize, entry: PostFn<A>) -> Result<(), PostError> {
        let slot = DataPathSlot::for_post();
        // SAFETY: `entry` is this plugin's post function for WRs of this ABI form; a live QP
        // handle; `wrs` is the caller's batch of `len` WRs, whose layout is the ABI's (asserted
        // in `abi`), and it and the scatter lists it points to live across the call; the
        // failure record is this thread's.
        let status = unsafe { entry(self.handle.ptr(), wrs, len, slot.failure()) };
        if status == STATUS_OK {
            Ok(())
        } else {
            Err(slot.post_error(status, len))
        }
    }
}

impl QueuePair for LoadedQp {
    fn qp_num(&self) -> u32 {
        self.qp_num
    }

    fn granted(&self) -> QpInit {
        self.granted
    }

    fn state(&self) -> Result<QpState> {
        let mut code = 0;
        call!(self.handle.f(), qp_state(self.handle.ptr(), &mut code))?;
        convert::qp_state_from(code, ErrorKind::Other)
            .map_err(|e| self.handle.shared.check("qp_state").refused("state", e))
    }

    fn modify(&self, to: QpState) -> Result<()> {
        call!(
            self.handle.f(),
            qp_modify(self.handle.ptr(), convert::qp_state_code(to))
        )
    }

    #[inline]
    fn post_send(&self, wrs: &[SendWr]) -> Result<(), PostError> {
        self.post(convert::send_wrs_abi(wrs), wrs.len(), self.post_send)
    }

    #[inline]
    fn post_recv(&self, wrs: &[RecvWr]) -> Result<(), PostError> {
        self.post(convert::recv_wrs_abi(wrs), wrs.len(), self.post_recv)
    }

    fn connect(&self, remote: std::net::SocketAddr, params: &ConnParams) -> Result<()> {
        let remote = convert::sock_addr(remote);
        let params = convert::conn_params(params);
        call!(
            self.handle.f(),
            qp_connect(self.handle.ptr(), &remote, &params)
        )
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        // A length no plugin may write: whether the record was written at all (a rejection
        // with no private data writes 0).
        const UNWRITTEN: u32 = u32::MAX;
        // SAFETY: all-zero bytes are a valid `abi::Connection` (integers and byte arrays only).
        let mut out: abi::Connection =
            unsafe { std::mem::MaybeUninit::<abi::Connection>::zeroed().assume_init() };
        out.private_len = UNWRITTEN;
        let waited = call!(
            self.handle.f(),
            qp_wait_connected(self.handle.ptr(), convert::timeout_ns(deadline), &mut out)
        );
        let check = || self.handle.shared.check("qp_wait_connected");
        if let Err(e) = waited {
            // A refusal carries the rejection's record where the peer rejected.
            if e.kind() != ErrorKind::ConnectionRefused || out.private_len == UNWRITTEN {
                return Err(e);
            }
            let rejected =
                convert::rejection_from(&out).map_err(|f| check().refused("rejection", f))?;
            return Err(rejected.into_error());
        }
        // A plugin that reports success without writing the connection leaves `UNWRITTEN`,
        // which the length check refuses.
        convert::connection_from(&out, ErrorKind::Other)
            .map_err(|e| check().refused("connection", e))
    }

    fn drain(&self, deadline: Instant) -> Result<DrainReport> {
        let mut out = abi::DrainReport::default();
        call!(
            self.handle.f(),
            qp_drain(self.handle.ptr(), convert::timeout_ns(deadline), &mut out)
        )?;
        let check = self.handle.shared.check("qp_drain");
        let report =
            convert::drain_report_from(&out).map_err(|e| check.refused("drain report", e))?;
        check.drain_report(report, &self.init)
    }

    fn disconnect(&self, deadline: Instant) -> Result<DisconnectReport> {
        let mut out = abi::DisconnectReport::default();
        call!(
            self.handle.f(),
            qp_disconnect(self.handle.ptr(), convert::timeout_ns(deadline), &mut out)
        )?;
        let check = self.handle.shared.check("qp_disconnect");
        let report = convert::disconnect_report_from(&out)
            .map_err(|e| check.refused("disconnect report", e))?;
        check.disconnect_report(report, &self.init)
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), qp_destroy(self.handle.ptr()))
    }
}

impl std::fmt::Debug for LoadedQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedQp")
            .field("qp_num", &self.qp_num)
            .field("init", &self.init)
            .finish_non_exhaustive()
    }
}
