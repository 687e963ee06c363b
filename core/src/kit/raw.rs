//! The primitives a provider writes: its device's raw queues, as the kit drives them.
//!
//! Everything here works in the device's terms. A raw WR's `wr_id` is the kit's
//! [`Token`](crate::drain::Token), never the ULP's, and a raw completion carries that token back:
//! the kit, not the provider, turns it into the ULP's completion when the CQ is polled.

use std::net::SocketAddr;
use std::time::Instant;

use crate::cm::{ConnParams, Connection};
use crate::error::{PostError, Result};
use crate::state::QpState;
use crate::wr::{Completion, RecvWr, SendWr};

/// A completion queue of the device, as the kit polls it.
///
/// The kit calls these from several threads at once (a ULP polling, a drain pumping), under its
/// own lock for `poll`; none of them may block past a deadline it is given.
pub trait RawCq: Send + Sync + 'static {
    /// The CQ's number.
    fn cq_num(&self) -> u32;

    /// Moves up to `out.len()` completions from the device's ring into `out`, oldest first, and
    /// returns how many; never blocks. Their `wr_id` is the token the kit posted with. A CQ that
    /// overflowed fails with [`ErrorKind::Overflow`](crate::ErrorKind::Overflow) from then on; a
    /// lost device fails with [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost). A poll
    /// that moved completions and then hit an error returns `Ok` with their number and reports
    /// the error on the next call: completions moved out and then dropped with an `Err` are
    /// lost.
    fn poll(&self, out: &mut [Completion]) -> Result<usize>;

    /// Blocks until the CQ may hold a completion, a [`wake`](Self::wake) arrives, or `deadline`
    /// passes (`Ok(false)`). Arming the device's notification and reading its source (a
    /// completion channel) is the provider's business; it must not miss a completion that arrived
    /// before the call, and it may return early. Once the device is lost it fails with
    /// [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost) — a wait already blocked included,
    /// which the provider wakes when it learns of the loss (marking the
    /// [`DeviceLife`](super::DeviceLife) lost wakes nobody by itself).
    ///
    /// On a CQ created on the ULP's [`RawChannel`], the device's notification is the ULP's (a
    /// verbs CQ has one channel): the wait must neither [`arm`](Self::arm) the CQ nor read that
    /// channel, and must work the same whether the ULP armed it or not (a verbs provider waits
    /// on its private channel only for CQs it created on it, and polls the others with a
    /// backoff).
    fn wait(&self, deadline: Instant) -> Result<bool>;

    /// Arms the CQ for the ULP (`ibv_req_notify_cq`): the next completion that enters the
    /// device's ring fires the CQ's channel once; with `solicited_only`, only a solicited
    /// receive or an error completion does. Called only on a CQ created on a channel. The
    /// default fails with [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported), for a
    /// provider without channels.
    fn arm(&self, solicited_only: bool) -> Result<()> {
        let _ = solicited_only;
        Err(crate::Error::not_supported(
            "this provider has no completion channels",
        ))
    }

    /// Makes the current [`wait`](Self::wait), or the next one if none is running, return now.
    /// The kit calls it when it put completions aside for the ULP while a ULP was waiting.
    fn wake(&self);

    /// Makes room in the device's ring for `extra` completions beyond the depth the ULP asked
    /// for: one per work queue that uses the CQ, for the drain's markers (the kit calls it with
    /// the new total whenever a QP attaches). A device that cannot resize its CQs creates them
    /// with room to spare and answers `Ok` while that room lasts.
    fn reserve(&self, extra: u32) -> Result<()>;

    /// Destroys the CQ in the device now. Fails with [`ErrorKind::Busy`](crate::ErrorKind::Busy)
    /// while QPs use it, changing nothing. Dropping the raw CQ afterwards must be harmless.
    fn destroy(&self) -> Result<()>;
}

/// A completion channel of the device (`ibv_comp_channel`), as the kit reads it for the ULP.
///
/// The provider creates its CQs on it when the ULP asks
/// ([`Device::create_cq_with`](crate::Device::create_cq_with)) and wraps it in a
/// [`KitChannel`](super::KitChannel), which checks handle state and liveness, refuses to
/// destroy it while CQs use it, and drops notifications of CQs no longer on it.
pub trait RawChannel: Send + Sync + 'static {
    /// The channel's file descriptor, readable while [`next`](Self::next) has a notification
    /// (and once the device is lost); it stays open as long as the raw channel lives.
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_>;

    /// The number of a CQ that fired, without blocking, acknowledged (`ibv_get_cq_event` on
    /// the non-blocking fd, then `ibv_ack_cq_events`); `Ok(None)` when none did. A lost device
    /// fails with [`ErrorKind::DeviceLost`](crate::ErrorKind::DeviceLost).
    fn next(&self) -> Result<Option<u32>>;

    /// Destroys the channel in the device. The kit calls it only with no CQ of it left; a
    /// device that still counts one fails with [`ErrorKind::Busy`](crate::ErrorKind::Busy).
    /// Dropping the raw channel afterwards must be harmless.
    fn destroy(&self) -> Result<()>;
}

/// A queue pair of the device, as the kit drives it.
///
/// The provider creates it with one more slot per work queue than the ULP asked for (see
/// [`device_init`](super::device_init)): the kit posts the drain's markers there.
pub trait RawQp: Send + Sync + 'static {
    /// The raw CQ type of the same device.
    type Cq: RawCq;

    /// The QP number.
    fn qp_num(&self) -> u32;

    /// The sizes the device granted when it created the QP — at least the
    /// [`device_init`](super::device_init) it was asked for — as verbs writes them back into
    /// `ibv_qp_init_attr.cap`: mlx5, for one, grants more inline data than asked.
    fn granted(&self) -> crate::QpInit;

    /// The QP's current state, as the device reports it. It must read ERROR by the time the
    /// provider reports that the device moved the QP there
    /// ([`DeviceLife::qp_entered_error`](super::DeviceLife::qp_entered_error)): the kit checks
    /// the report against it. A device whose query does not say (siw answers RESET) needs the
    /// provider to track the state itself and record ERROR before it reports.
    fn state(&self) -> Result<QpState>;

    /// Moves the QP to `to` (a transition the ULP asked for; the kit has checked nothing about
    /// it but the drain).
    fn modify(&self, to: QpState) -> Result<()>;

    /// Moves the QP to ERROR for a drain: again if it is there already (the repetition is what
    /// flushes receives posted in ERROR on rxe), and through INIT from RESET where the device
    /// needs that.
    fn enter_error(&self) -> Result<()>;

    /// Posts send WRs whose `wr_id`s are the kit's tokens. Like `ibv_post_send`, a failure says
    /// how many WRs at the front of the batch were posted; a zero-length RDMA WRITE with no SGEs
    /// is the drain's send marker.
    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError>;

    /// Posts receive WRs whose `wr_id`s are the kit's tokens; a receive without SGEs is the
    /// drain's receive marker.
    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError>;

    /// Starts connecting to `remote` through the connection manager.
    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()>;

    /// Waits until the connection is established or refused, or `deadline` passes.
    fn wait_connected(&self, deadline: Instant) -> Result<Connection>;

    /// Ends the connection through the connection manager: in order (`orderly`: iWARP's
    /// CLOSING, which the kit asks for only once no send is outstanding; InfiniBand's DREQ)
    /// or abruptly (ERROR); returns the state the QP was left in. Refusing an orderly close
    /// ([`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState), say because a send is
    /// still on the device) makes the kit close abruptly. A QP that was never connected is
    /// `InvalidState`.
    fn disconnect(&self, orderly: bool) -> Result<QpState>;

    /// Stops the QP in the device for good (destroys the hardware QP, keeping this handle):
    /// afterwards the device touches none of its buffers and produces no completion for it.
    fn stop(&self) -> Result<()>;

    /// Destroys the QP in the device. Dropping the raw QP afterwards must be harmless.
    fn destroy(&self) -> Result<()>;
}

/// A protection domain of the device, as the kit drives it.
///
/// The kit calls [`destroy`](Self::destroy) at most once: when the ULP destroys the PD with no
/// MR or QP of it left, or when the ULP's handle and every MR and QP of it are gone. Dropping
/// the raw PD must not release the device's PD again.
pub trait RawPd: Send + Sync + 'static {
    /// The device's memory regions.
    type Mr: RawMr;
    /// The device's queue pairs.
    type Qp: RawQp;

    /// Allocates `len` bytes of zeroed memory and registers them with `access` (the rules of
    /// [`ProtectionDomain::register`](crate::ProtectionDomain::register) are the device's to
    /// check).
    fn register(&self, len: usize, access: crate::Access) -> Result<Self::Mr>;

    /// Registers `len` bytes of the caller's memory at `addr` with `access` (`ibv_reg_mr`): the
    /// device reads and writes that memory itself, under the fabric's or hardware's own rules.
    /// The region's [`RawMr::host_ptr`] must be `addr`, its length `len`. The kit checked that
    /// `addr` is not null and that the range fits the address space; the access rules are the
    /// device's to check, as for [`register`](Self::register). The kit builds
    /// [`ProtectionDomain::register_buffer`](crate::ProtectionDomain::register_buffer) on this.
    ///
    /// # Safety
    /// As [`ProtectionDomain::register_memory`](crate::ProtectionDomain::register_memory): the
    /// memory stays valid, allocated and in place until the region is deregistered, and the
    /// caller keeps out of the device's way.
    #[allow(unsafe_code)]
    unsafe fn register_memory(
        &self,
        addr: *mut u8,
        len: usize,
        access: crate::Access,
    ) -> Result<Self::Mr>;

    /// Creates the device's RC QP on `send_cq` and `recv_cq` for a ULP that asked for `init`,
    /// with one more slot per work queue ([`device_init`](super::device_init)).
    fn create_qp(
        &self,
        send_cq: &<Self::Qp as RawQp>::Cq,
        recv_cq: &<Self::Qp as RawQp>::Cq,
        init: &crate::QpInit,
    ) -> Result<Self::Qp>;

    /// Releases the device's PD.
    fn destroy(&self) -> Result<()>;
}

/// A memory region of the device, as the kit drives it.
///
/// The kit checks handle state and bounds before it calls `read` and `write`, and never calls
/// [`destroy`](Self::destroy) while a `read` or `write` is running or after a `destroy` that
/// succeeded (the ULP destroys the region, and may try again after a failure, or drops it). A
/// region whose deregistration fails when its handle is dropped stays in the device, and so
/// does its PD: the kit never releases the PD under it.
/// Dropping the raw MR must not deregister it again.
pub trait RawMr: Send + Sync + 'static {
    /// The address of the region's first byte, as the device sees it.
    fn addr(&self) -> u64;

    /// The region's length in bytes.
    fn len(&self) -> usize;

    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The local key.
    fn lkey(&self) -> u32;

    /// The remote key.
    fn rkey(&self) -> u32;

    /// The access rights it was registered with.
    fn access(&self) -> crate::Access;

    /// Copies `src` into the region at `offset` (in bounds: the kit checked). Works on a lost
    /// device: the region's memory is the host's.
    fn write(&self, offset: usize, src: &[u8]) -> Result<()>;

    /// Copies the region's bytes at `offset` into `dst` (in bounds: the kit checked). Works on a
    /// lost device.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// The region's memory in the program's address space, valid for reads and writes of
    /// [`len`](Self::len) bytes while the region is registered; `None` where the program cannot
    /// reach it. For a region of [`RawPd::register_memory`], the address it was given. The kit
    /// hands it to the ULP ([`MemoryRegion::as_ptr`](crate::MemoryRegion::as_ptr)), whose
    /// unsafe code relies on it.
    fn host_ptr(&self) -> Option<std::ptr::NonNull<u8>>;

    /// Deregisters the region. Once it returned `Ok` the device never reads or writes the
    /// region's memory again — a WR still posted with its keys fails instead, as after
    /// `ibv_dereg_mr` — because the kit then hands a lent buffer back to the program, and a
    /// caller's memory is the caller's again.
    fn destroy(&self) -> Result<()>;
}
