//! The provider kit: the provider half every provider needs, written once.
//!
//! A provider supplies its device's primitives — post raw WRs, poll raw completions, modify the
//! hardware QP, arm and read its notification source, allocate PDs and register memory — as a
//! [`RawQp`], a [`RawCq`], a [`RawPd`] and a [`RawMr`]; the kit supplies everything above them
//! as [`KitQp`], [`KitCq`], [`KitPd`] and [`KitMr`], which implement the ULP's
//! [`QueuePair`](crate::QueuePair), [`CompletionQueue`](crate::CompletionQueue),
//! [`ProtectionDomain`](crate::ProtectionDomain) and [`MemoryRegion`](crate::MemoryRegion):
//!
//! - **Admission and queue depths.** Every WR enters the QP's
//!   [`Ledger`] and is posted under a [token](crate::drain::Token) in
//!   its `wr_id`; a WR the device refuses is withdrawn, so `PostError::accepted` stays exact.
//!   The ULP gets the depths it asked for; the device's queues have one more slot each, for the
//!   drain's marker ([`device_init`]). A send WR the device cannot run by its capabilities (an
//!   atomic without [`Caps::ATOMICS`](crate::Caps::ATOMICS): `NotSupported`), or that no device
//!   accepts (a malformed atomic: `InvalidArgument`), is refused before it is admitted
//!   ([`SendWr::check_for`](crate::SendWr::check_for), with the capabilities the provider gave
//!   its [`DeviceLife`]).
//! - **Resolution at poll time.** A raw completion is resolved when the CQ is polled, as on
//!   hardware: routed by QP number to its QP's ledger and matched by its token (generation,
//!   queue, sequence), never by its position in the CQ. Markers are swallowed; late completions
//!   of destroyed QPs — even under a reused QP number — are dropped.
//! - **Drain.** [`QueuePair::drain`](crate::QueuePair::drain) runs the device's
//!   [`DrainProfile`](crate::drain::DrainProfile) through
//!   [`engine::run`](crate::drain::engine::run). A drain polls its QP's CQs itself and holds
//!   what it polled for the ULP, in order; it decides that a queue is done from completions
//!   alone, never from the device's internals.
//! - **State and lifetime.** The kit knows when a QP is in ERROR (its own transitions, the error
//!   completions it resolves), refuses everything but ERROR after a drain, forgets the queues
//!   on RESET, and fails every call on a destroyed handle with `Destroyed` and on a lost device
//!   with `DeviceLost` ([`DeviceLife`]). A PD is `Busy` while regions or QPs of it are left, and
//!   lives on in the device until the last of them goes if its handle is dropped first; a
//!   region's reads and writes are bounds-checked, and work on a lost device.
//! - **Zero-copy memory.** The provider registers the caller's memory
//!   ([`RawPd::register_memory`]); the kit builds
//!   [`register_buffer`](crate::ProtectionDomain::register_buffer) on it once for every
//!   provider, and hands a lent buffer back (or frees it) only once [`RawMr::destroy`]
//!   succeeded, after which the device never touches the memory.
//! - **Events.** The provider's event threads [report](DeviceLife::report) every event of the
//!   device to its [`DeviceLife`], which does what the event implies (a QP's fatal error marks
//!   it in ERROR; a removal or fatal error loses the device) before it publishes the event, and
//!   ends the streams right behind a device's last event. The provider's
//!   [`Device::events`](crate::Device::events) is [`DeviceLife::subscribe`].
//!
//! - **Completion channels.** A provider that has them supplies a [`RawChannel`] and
//!   [`RawCq::arm`]; the kit's [`KitChannel`] and [`KitCq::with_channel`] keep the channel's
//!   CQs (`Busy` while any is left; notifications of CQs no longer on it dropped). A wakeup may
//!   find nothing for the ULP: the kit swallows the drain's markers that fired it.
//!
//! What stays the provider's: the connection manager — resolving addresses, listeners, the
//! connection's own state machine — which is a device primitive (librdmacm's, on rdma-core)
//! reached through [`RawQp::connect`] and [`RawQp::wait_connected`], with the kit holding off
//! [`destroy`](crate::QueuePair::destroy) while they run (and, for a listener's accept,
//! [`KitQp::with_device_qp`]); and the device itself — opening it, its limits, its ports —
//! which the kit sees only through [`DeviceLife`].
//!
//! The in-process mock (`anyverbs-provider-mock`) is a device simulator behind this kit, so the
//! conformance suite judges, on every mock personality, the provider half that the real
//! providers run.
//!
//! # Writing a provider on the kit
//!
//! The primitives of a (very small) device whose QPs never execute anything but flush their
//! queues on ERROR — all a provider writes — and a drain the kit runs on them:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//!
//! use anyverbs::drain::profiles::profile_named;
//! use anyverbs::kit::{DeviceLife, KitCq, KitQp, RawCq, RawQp};
//! use anyverbs::{
//!     Completion, CompletionQueue, ConnParams, Connection, Error, PostError, QpInit, QpState,
//!     QueuePair, RecvWr, Result, SendWr, WcStatus,
//! };
//!
//! /// The device's CQ: a ring of raw completions (their `wr_id`s are the kit's tokens).
//! #[derive(Clone, Default)]
//! struct Ring(Arc<Mutex<VecDeque<Completion>>>);
//!
//! impl RawCq for Ring {
//!     fn cq_num(&self) -> u32 { 1 }
//!     fn poll(&self, out: &mut [Completion]) -> Result<usize> {
//!         let mut ring = self.0.lock().unwrap();
//!         let n = out.len().min(ring.len());
//!         for (slot, c) in out.iter_mut().zip(ring.drain(..n)) {
//!             *slot = c;
//!         }
//!         Ok(n)
//!     }
//!     // A real device arms its CQ and waits on its completion channel (and on a wake).
//!     fn wait(&self, deadline: Instant) -> Result<bool> {
//!         std::thread::sleep(deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(1)));
//!         Ok(!self.0.lock().unwrap().is_empty())
//!     }
//!     fn wake(&self) {}
//!     fn reserve(&self, _extra: u32) -> Result<()> { Ok(()) }
//!     fn destroy(&self) -> Result<()> { Ok(()) }
//! }
//!
//! /// The device's QP: the receives it holds, flushed to the CQ on ERROR (and at once when
//! /// posted in ERROR, as InfiniBand devices do).
//! struct Queue { cq: Ring, recvs: Mutex<Vec<u64>>, error: AtomicBool }
//!
//! impl RawQp for Queue {
//!     type Cq = Ring;
//!     fn qp_num(&self) -> u32 { 7 }
//!     fn granted(&self) -> QpInit { QpInit { max_send_wr: 1024, max_recv_wr: 1024, ..QpInit::default() } }
//!     fn state(&self) -> Result<QpState> { Ok(QpState::Init) }
//!     fn modify(&self, to: QpState) -> Result<()> {
//!         if to == QpState::Error { self.enter_error()?; }
//!         Ok(())
//!     }
//!     fn enter_error(&self) -> Result<()> {
//!         self.error.store(true, Ordering::SeqCst);
//!         let tokens: Vec<u64> = self.recvs.lock().unwrap().drain(..).collect();
//!         self.cq.0.lock().unwrap().extend(tokens.into_iter().map(|token| Completion {
//!             wr_id: token,
//!             status: WcStatus::WrFlushError,
//!             qp_num: 7,
//!             ..Completion::default()
//!         }));
//!         Ok(())
//!     }
//!     fn post_send(&self, _: &[SendWr]) -> std::result::Result<(), PostError> {
//!         Err(PostError::new(0, Error::not_supported("this device only receives")))
//!     }
//!     fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
//!         self.recvs.lock().unwrap().extend(wrs.iter().map(|wr| wr.wr_id));
//!         if self.error.load(Ordering::SeqCst) {
//!             self.enter_error().expect("flushing the ring cannot fail");
//!         }
//!         Ok(())
//!     }
//!     fn connect(&self, _: SocketAddr, _: &ConnParams) -> Result<()> {
//!         Err(Error::not_supported("no connection manager"))
//!     }
//!     fn wait_connected(&self, _: Instant) -> Result<Connection> {
//!         Err(Error::not_supported("no connection manager"))
//!     }
//!     fn disconnect(&self, _: bool) -> Result<QpState> {
//!         Err(Error::invalid_state("never connected"))
//!     }
//!     fn stop(&self) -> Result<()> { self.recvs.lock().unwrap().clear(); Ok(()) }
//!     fn destroy(&self) -> Result<()> { Ok(()) }
//! }
//!
//! // What the provider's `create_cq` and `create_qp` return.
//! let life = DeviceLife::new();
//! let ring = Ring::default();
//! let cq = KitCq::new(ring.clone(), 16, life.clone());
//! let raw = Queue { cq: ring, recvs: Mutex::default(), error: AtomicBool::new(false) };
//! let profile = profile_named("mlx5").unwrap(); // by kernel driver or vendor id: `profile_for`
//! let qp = KitQp::new(raw, &cq, &cq, &QpInit::default(), profile, life)?;
//!
//! // The ULP's side: its own wr_ids, a drain, every receive flushed exactly once.
//! qp.post_recv(&[RecvWr::new(41, &[]), RecvWr::new(42, &[])])?;
//! let report = qp.drain(Instant::now() + Duration::from_secs(1))?;
//! assert_eq!((report.accounted(), report.fallback), (2, None));
//! let mut wc = [Completion::default(); 4];
//! let n = cq.poll(&mut wc)?;
//! let ids: Vec<u64> = wc[..n].iter().map(|c| c.wr_id).collect();
//! assert_eq!(ids, [41, 42]); // the marker the drain posted never reaches the ULP
//! # Ok::<(), anyverbs::Error>(())
//! ```

mod cq;
mod disconnect;
mod drain;
mod life;
mod pd;
mod qp;
pub mod raw;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::drain::Ledger;

pub use cq::{KitChannel, KitCq};
pub use life::DeviceLife;
pub use pd::{KitMr, KitPd};
pub use qp::{KitQp, device_init};
pub use raw::{RawChannel, RawCq, RawMr, RawPd, RawQp};

/// What the kit knows about one QP, shared by the QP and the routers of its CQs.
pub(crate) struct QpBook {
    pub(crate) ledger: Ledger,
    /// The QP is in ERROR as far as the kit knows: WRs posted now are doomed.
    pub(crate) in_error: bool,
    /// Set while a RESET moves aside what the device completed before it: the
    /// [`mark`](Ledger::mark) taken at the RESET. Error completions of WRs posted before it
    /// are stale: they do not put the reset QP in ERROR.
    pub(crate) resetting: Option<[u64; 2]>,
    /// Callers waiting for another caller's drain of the QP to end.
    pub(crate) drain_waiters: usize,
}

pub(crate) type SharedBook = Arc<Mutex<QpBook>>;

/// Takes a lock; a panic while holding it (a bug) does not make every later call panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
