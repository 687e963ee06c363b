//! The verbs plumbing that `provider-ib` and `provider-iwarp` share: rdma-core's verbs and
//! connection manager, reached through [sideway] and [rdma-mummy-sys], with what a provider
//! needs around them — device identity, event threads, a device monitor and fault injection for
//! software devices. It does not implement the core traits; the providers do, on top of it.
//!
//! ## Design choices
//!
//! - **rdma-core is loaded at run time.** rdma-mummy-sys `dlopen`s `libibverbs.so.1` and
//!   `librdmacm.so.1` on first use, so nothing built on this crate has a link-time dependency on
//!   rdma-core: it starts and loads where rdma-core is missing, and every call then fails with
//!   `EOPNOTSUPP`; where the kernel has no RDMA, `ENOSYS`. Both read as "RDMA is not available
//!   here: …" ([`error::unavailable`]), and discovery then finds no device — never a panic
//!   or a load failure. (The `ibverbs` crate, 0.9.2, links libibverbs, cannot move a QP to
//!   ERROR or SQD, and has no async events and no connection manager in a release.)
//! - **sideway where it fits, raw calls where it does not.** sideway owns the objects (device
//!   list, context, PD, MR, completion channel, CQ, QP, state moves). The calls it lacks or
//!   wraps in a way a provider cannot use are made on rdma-mummy-sys in [`raw`]: posting (sideway
//!   drops `bad_wr`), polling (its basic poller drops what is not iterated), async events (no
//!   wrapper), device and port queries (its conversions panic on values they do not know), and
//!   the whole connection manager (no reject, no private data, no connection parameters, a
//!   process-global map of device contexts that is never cleared). Nothing here calls sideway's
//!   `Identifier::get_device_context`, so no context of a removed device stays open: the
//!   lifecycle tests show the kernel's delete completing once the process releases its objects.
//! - **State is tracked, not queried.** libibverbs' cached QP state never sees the kernel's own
//!   moves, and siw's `ibv_query_qp` always answers RESET: [`objects::Qp`] records the moves it
//!   made and what the provider tells it.
//! - **Every wait has a deadline**, including netlink requests (the kernel's delete blocks until
//!   the device is released) and the event threads (which look at their stop flag every 100 ms).
//! - **Transports differ as data, not forks:** the extended CQ verbs where the device answers
//!   them and the basic ones where it refuses (siw), RTR and RTS applied by the application on
//!   InfiniBand/RoCE only — decided by what the device answers and reports, never by its name.
//!
//! ## Modules
//!
//! - [`device`]: discovery, identity, opening; [`context`]: an open device, its limits.
//! - [`objects`]: PD, MR, completion channel, CQ, RC QP; post and poll.
//! - [`cm`]: the connection manager by IP address.
//! - [`events`]: the async event thread and the removal watch, publishing the core's
//!   [`DeviceEvent`](anyverbs::DeviceEvent)s.
//! - [`monitor`]: devices added and removed, with identities.
//! - [`fault`]: unplug, replug, reset and port flap for rxe and siw, restored even when the
//!   injecting process dies.
//! - [`provider`]: the core's provider kit on all of the above — what the real providers are,
//!   given their transport's rules as data.
//! - [`netlink`], [`uevent`], [`netdev`]: the Linux interfaces those use.
//! - [`raw`]: the calls made directly on rdma-mummy-sys; [`error`]: errno to
//!   [`ErrorKind`](anyverbs::ErrorKind); [`wait`]: waiting on an fd with a deadline.
//!
//! The tests that need a device run in the test bed (`testbed/run`, QEMU with rxe0 and siw0);
//! elsewhere they say they were skipped.
//!
//! [sideway]: https://crates.io/crates/sideway
//! [rdma-mummy-sys]: https://crates.io/crates/rdma-mummy-sys

#![deny(unsafe_code)]
// Unsafe code is allowed only in the modules below that call rdma-core (through the raw
// bindings and sideway's raw handles) or Linux (sockets, ioctls, poll, eventfd, epoll);
// `monitor` has none, and `fault` one block (the restorer process's setup between fork and
// exec).

#[allow(unsafe_code)]
pub mod cm;
#[allow(unsafe_code)]
pub mod context;
#[allow(unsafe_code)]
pub mod device;
pub mod error;
#[allow(unsafe_code)]
pub mod events;
pub mod fault;
pub mod monitor;
#[allow(unsafe_code)]
pub mod netdev;
#[allow(unsafe_code)]
pub mod netlink;
#[allow(unsafe_code)]
pub mod objects;
#[allow(unsafe_code)]
pub mod provider;
#[allow(unsafe_code)]
pub mod raw;
#[allow(unsafe_code)]
pub mod uevent;
#[allow(unsafe_code)]
pub mod wait;
