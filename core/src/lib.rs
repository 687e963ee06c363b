//! # anyverbs: one RDMA verbs API for every transport
//!
//! anyverbs lets the authors of RDMA upper-layer protocols (NVMe-oF, iSER, NFS/RDMA, data movers)
//! write one code path that runs on InfiniBand/RoCE, iWARP and an in-process mock, and that
//! survives what real NICs do.
//!
//! ## Design choices
//!
//! - **Static dispatch first.** [`Provider`] bundles the handle types of one transport as
//!   associated types ([`Provider::Device`], [`Provider::Qp`], ...), so generic ULP code is
//!   monomorphised per provider. A provider loaded at run time through the C ABI
//!   ([`plugin`]) is simply one more implementation of the same traits: [`LoadedProvider`](crate::plugin::LoadedProvider).
//! - **Providers are plugins, too.** One line, [`export_provider!`], turns any provider into a
//!   shared object with a versioned C ABI; [`Plugin::find`](crate::plugin::Plugin::find) and [`Plugin::load`](crate::plugin::Plugin::load) open one and
//!   say exactly what is wrong with a bad one ([`LoadError`](crate::plugin::LoadError)).
//! - **One provider half for every provider.** A provider writes only its device's primitives
//!   ([`kit::RawQp`], [`kit::RawCq`]); the [`kit`] turns them into the ULP's
//!   [`QueuePair`] and [`CompletionQueue`]: WRs through the drain [`Ledger`](drain::Ledger),
//!   completions resolved when polled, the drain with the driver's
//!   [profile](drain::profiles), state tracking and handle lifetimes. The mock is a device
//!   simulator behind the same kit, so the conformance suite judges the code real providers run.
//! - **A surface a C vtable can carry.** No method is generic; arguments and results are plain
//!   data ([`SendWr`], [`Completion`], [`DeviceInfo`], ...) or handles of the same provider;
//!   completion buffers belong to the caller ([`CompletionQueue::poll`]).
//! - **Transport differences are data.** [`Caps`] and [`StateModel`] describe how a device
//!   behaves (connects only through the CM, flushes posts in ERROR, ...); generic code branches on
//!   them, never on a provider's name.
//! - **One state model for two transports.** [`QpState`] has every InfiniBand and iWARP state;
//!   [`StateModel`] says which apply and which transitions are legal, and who may make them.
//! - **Errors generic code can act on.** Every call returns [`Error`], whose [`ErrorKind`] says
//!   what happened (device lost, timed out, busy, ...); the provider's own error is kept as the
//!   source. A batch post that fails says how many WRs were accepted ([`PostError`]), so nothing
//!   is ever lost silently.
//! - **Waiting without a thread.** A CQ created on a [`CompletionChannel`] and
//!   [armed](CompletionQueue::arm) wakes an event loop through a file descriptor, as verbs'
//!   completion channels do (see [`cq`]).
//! - **Every wait has a deadline.** [`CompletionQueue::wait`], [`Listener::next_request`],
//!   [`QueuePair::wait_connected`] and [`QueuePair::drain`] take an [`Instant`](std::time::Instant).
//! - **Drain is a contract, not a hope.** See [`drain`](mod@drain): deadline-bound, returns a
//!   [`DrainReport`], and accounts for every WR exactly once.
//! - **Identity, not names.** A device is recognised by its stable fields only
//!   ([`DeviceIdentity::is_same_device`]); the kernel reuses names and renumbers indexes.
//! - **A reset is a hot-remove.** A device that resets or is removed is gone: its
//!   [`event`](mod@event) stream says so, every handle of it fails with
//!   [`ErrorKind::DeviceLost`] without blocking, and a device that comes back is a new device.
//!   The [`supervisor`] turns that into one code path for ULPs: stop, release, and restart only
//!   when the same device returns, within a window.
//!
//! ## Handles and their lifetime
//!
//! Handles are destroyed explicitly with `destroy(&self)`. Destroying an object that others still
//! depend on (a PD with MRs or QPs, a CQ used by a QP) fails with [`ErrorKind::Busy`] and changes
//! nothing; any other call on a destroyed handle fails with [`ErrorKind::Destroyed`]. Dropping a
//! handle destroys it once nothing depends on it any more.
//!
//! ## Example
//!
//! Generic ULP code is written once against the traits and runs on every provider; here on the
//! in-process mock, on an InfiniBand and an iWARP device:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use anyverbs::cm::ready_for_receives;
//! use anyverbs::{
//!     Access, Completion, CompletionQueue, ConnParams, Device, Listener, MemoryRegion,
//!     ProtectionDomain, Provider, QpInit, QueuePair, RecvWr, Result, SendWr, WcStatus,
//! };
//!
//! /// Connects two QPs of `device` through the connection manager, sends `msg` from one to the
//! /// other, and returns what arrived.
//! fn send_one<P: Provider>(provider: &P, device: &str, msg: &[u8]) -> Result<Vec<u8>> {
//!     let deadline = Instant::now() + Duration::from_secs(5);
//!     let dev = provider.open(device)?;
//!     let pd = dev.alloc_pd()?;
//!     let cq = dev.create_cq(16)?;
//!     let client = pd.create_qp(&cq, &cq, &QpInit::default())?;
//!     let server = pd.create_qp(&cq, &cq, &QpInit::default())?;
//!     let mr = pd.register(8192, Access::LOCAL_WRITE)?;
//!     mr.write(0, msg)?;
//!
//!     // The server's receive goes in before it accepts (see the `cm` module).
//!     ready_for_receives(&server, dev.info().state_model)?;
//!     server.post_recv(&[RecvWr::new(1, &[mr.sge(4096, 4096)])])?;
//!     let addr = dev.ports()?[0].addresses[0];
//!     let listener = dev.listen((addr, 0).into())?;
//!     client.connect(listener.local_addr(), &ConnParams::default())?;
//!     let request = listener.next_request(deadline)?;
//!     listener.accept(&request, &server, &ConnParams::default())?;
//!     client.wait_connected(deadline)?;
//!
//!     client.post_send(&[SendWr::send(2, &[mr.sge(0, msg.len() as u32)])])?;
//!     let mut wc = [Completion::default(); 2];
//!     let mut n = 0;
//!     while n < 2 {
//!         n += cq.wait(&mut wc[n..], deadline)?; // the send's and the receive's
//!     }
//!     assert!(wc.iter().all(|c| c.status == WcStatus::Success));
//!     let received = wc.iter().find(|c| c.wr_id == 1).expect("the receive completed");
//!     let mut data = vec![0; received.byte_len as usize];
//!     mr.read(4096, &mut data)?;
//!
//!     // Nothing completes after a drain: the QPs are safe to destroy (here, when dropped).
//!     client.drain(deadline)?;
//!     server.drain(deadline)?;
//!     Ok(data)
//! }
//!
//! let provider = anyverbs_provider_mock::MockProvider::new();
//! assert_eq!(send_one(&provider, "mock0", b"hello")?, b"hello"); // InfiniBand
//! assert_eq!(send_one(&provider, "mockiw0", b"hello")?, b"hello"); // iWARP
//! # Ok::<(), anyverbs::Error>(())
//! ```

#![deny(unsafe_code)]

pub mod caps;
pub mod cm;
pub mod cq;
pub mod device;
pub mod drain;
pub mod error;
pub mod event;
pub mod fault;
pub mod held;
pub mod identity;
pub mod kit;
// A buffer lent to a device: the raw pointer behind `register_buffer`.
#[allow(unsafe_code)]
mod lent;
pub mod mr;
pub mod pd;
// The C ABI, its export macro and the loader are the only unsafe code of the crate.
#[allow(unsafe_code)]
pub mod plugin;
pub mod provider;
pub mod qp;
pub mod state;
pub mod supervisor;
pub mod wr;

pub use caps::{Caps, DeviceLimits};
pub use cm::{
    ConnParams, ConnectRequest, Connection, Listener, MAX_ACCEPT_PRIVATE_DATA,
    MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, Rejected, ready_for_receives,
};
pub use cq::{CompletionChannel, CompletionQueue};
pub use device::{Device, DeviceInfo, LinkLayer, PortInfo, PortState};
pub use drain::{DrainPlan, DrainReport, DrainStrategy, Fallback};
pub use error::{Error, ErrorKind, PostError, Result};
pub use event::{DeviceEvent, EventHub, EventStream, MonitorEvent, Wakeup};
pub use fault::{Fault, Faults};
pub use held::HeldObjects;
pub use identity::{DeviceIdentity, Guid, PciAddress};
pub use mr::{Access, MemoryRegion};
pub use pd::ProtectionDomain;
pub use provider::{Provider, Transport};
pub use qp::{DisconnectReport, QpInit, QueuePair};
pub use state::{Cause, QpState, StateModel};
pub use wr::{
    ATOMIC_LEN, Completion, INLINE_SGES, RecvWr, RemoteAddr, SendFlags, SendOp, SendWr, SgList,
    Sge, WcFlags, WcOpcode, WcStatus,
};
