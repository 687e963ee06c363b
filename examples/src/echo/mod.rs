//! An echo service over anyverbs, written as the template for a ULP that runs under the
//! recovery [`Supervisor`](anyverbs::supervisor::Supervisor).
//!
//! - [`EchoServer`] listens at a fixed address of its device and sends every message it
//!   receives back on the same QP. It survives its clients: a connection that fails is drained
//!   and dropped by the server itself, and never restarts the service.
//! - [`EchoClient`] connects to the server and sends messages numbered 0, 1, 2, ..., one at a
//!   time, waiting for each echo with a deadline. Any failure ends the connection and asks the
//!   supervisor for a restart; the restarted client resends from the first message not yet
//!   echoed, and records every echo in an [`EchoLog`], so a test can check that every message was
//!   echoed exactly once and in order.
//!
//! Both are [`Service`]s: `start` builds everything on the device it is given, `stop` drains and
//! drops all of it. What each step is for is written beside it; the short version:
//!
//! 1. **Build everything in `start`, nothing before.** An RDMA device reset is not a suspend:
//!    every PD, MR, CQ and QP of the old device is gone, so a ULP that kept any of them across
//!    a restart would hold dead handles. One code path — build from scratch — serves the first
//!    start, a reset and a hot-replug alike.
//! 2. **Drain before destroy.** [`QueuePair::drain`] is the only way to know that the device no
//!    longer touches a buffer and that nothing completes later; after it, freeing the MRs is
//!    safe. It is bounded by the deadline the supervisor hands to `stop`.
//! 3. **Release promptly on device loss.** On a lost device every call fails at once with
//!    [`ErrorKind::DeviceLost`], so `stop` is quick; and it must be, because drivers that cannot
//!    disassociate (rxe, siw) finish a removal — and can bring the device back — only once the
//!    process has closed every object of it. Worker threads hold no handle once they end.
//! 4. **Resend what was not acknowledged.** A message whose echo did not arrive before the
//!    failure may or may not have reached the server; the client cannot know, so it sends it
//!    again on the new connection. The server may therefore see a message twice: echo is
//!    idempotent, and a ULP whose requests are not must deduplicate them by sequence number.
//!    What the client sees is exactly once, in order.
//! 5. **Identity, not names.** Neither service names its device: the supervisor opens the device
//!    it follows by identity and hands it to `start`. The server's address comes from the
//!    device's ports, and clients find a restarted server at the same address.
//! 6. **Every wait has a deadline**, so `stop` always returns and a lost echo is noticed. The
//!    threads block in one wait each (the server's acceptor on its listener, its echoer on its
//!    CQ, the client on its CQ) for at most a poll interval, and check a stop flag in between.
//! 7. **Whose failure is it.** A failed client connection is the server's own business: it
//!    drains and drops that connection and keeps serving the others
//!    ([`on_failure`](Service::on_failure) returns [`FailureAction::Ignore`]). The
//!    client's only connection failing is the client's failure: the device's event makes the
//!    supervisor restart it ([`FailureAction::Restart`]), and what only the client can see — an
//!    error completion, an echo that never comes (the server died after taking the message, so
//!    no WR of the client's is left to fail) — it reports through
//!    [`Link::connection_lost`].
//! 8. **Recognise a reconnecting peer.** A client whose device reset leaves a connection on the
//!    server that nothing will ever fail (the dead device sends nothing). The client's hello
//!    carries its id, and the server drops the old connection when the same client connects
//!    again, as iSCSI's session reinstatement does.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::cm::ready_for_receives;
use anyverbs::supervisor::{FailureAction, Link, Service, StopReason};
use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, ConnectRequest, Device, DeviceEvent, Error,
    ErrorKind, Listener, MemoryRegion, ProtectionDomain, Provider, QpInit, QueuePair, RecvWr,
    Result, SendWr, StateModel,
};
use tracing::{debug, info, warn};

/// The port the server listens on by default: the classic echo port (RFC 862). The mock's
/// addresses are in-process, so no privilege is needed to use it.
pub const ECHO_PORT: u16 = 7;

/// Bytes at the start of every message that carry its sequence number (little-endian).
const SEQ_BYTES: usize = 8;

/// Bytes of the client's hello: its id, as the private data of the connect request.
const HELLO_BYTES: usize = 8;

mod client;
mod log;
mod server;
#[cfg(test)]
mod tests;
mod wire;
mod worker;

pub use client::*;
pub use log::*;
pub use server::*;
use wire::*;
use worker::*;
