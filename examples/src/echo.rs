//! An echo service over anyverbs, written as the template for a ULP that runs under the
//! recovery [`Supervisor`](anyverbs::Supervisor).
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

// ----- the server -----

/// How an [`EchoServer`] is sized.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The port it listens on, at the first address of the device's first port.
    pub port: u16,
    /// The largest message it echoes, in bytes: the size of one receive buffer.
    pub max_message: u32,
    /// Receive buffers per connection: how many messages a client may have in flight.
    pub slots: u32,
    /// Connections served at once; further requests are rejected.
    pub max_connections: u32,
    /// Longest the server's threads block in one wait: how late they notice a stop.
    pub poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: ECHO_PORT,
            max_message: 256,
            slots: 8,
            max_connections: 16,
            poll_interval: Duration::from_millis(1),
        }
    }
}

/// What an [`EchoServer`] has done, across all its starts.
#[derive(Debug, Default)]
pub struct ServerStats {
    starts: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    echoed: AtomicU64,
}

impl ServerStats {
    /// How many times the server was started.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connect requests rejected (too many connections, or a malformed hello).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Connections the server drained and dropped because they failed or were replaced.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages echoed (posted back; a resent message counts again).
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }
}

/// The echo server, a [`Service`]: listens at the first address of its device's first port,
/// on [`ServerConfig::port`], and echoes every message back on the connection it came from.
///
/// Two threads per start, because each blocks on a different thing: the *acceptor* waits for
/// connect requests and sets connections up; the *echoer* waits for completions on the one CQ
/// all connections share and sends each message back.
pub struct EchoServer<P: Provider> {
    config: ServerConfig,
    stats: Arc<ServerStats>,
    /// What one start built; `None` while stopped.
    running: Option<RunningServer<P>>,
}

/// What one start of the server built.
struct RunningServer<P: Provider> {
    core: Arc<ServerCore<P>>,
    workers: Vec<Worker<()>>,
}

impl<P: Provider> EchoServer<P> {
    /// A server that starts as `config` says.
    pub fn new(config: ServerConfig) -> Self {
        EchoServer {
            config,
            stats: Arc::default(),
            running: None,
        }
    }

    /// What the server has done; shared, so it can be read while the supervisor owns the
    /// server.
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }
}

impl<P: Provider> fmt::Debug for EchoServer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoServer")
            .field("config", &self.config)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

/// The address a server on `device` listens at: the first address of the device's first port,
/// with `port`. A restarted server (same device, new incarnation) listens at the same address,
/// which is how its clients find it again.
pub fn server_address<P: Provider>(device: &P::Device, port: u16) -> Result<SocketAddr> {
    let ports = device.ports()?;
    let ip = ports
        .first()
        .and_then(|p| p.addresses.first())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} has no address for the connection manager",
                    device.info().identity.name
                ),
            )
        })?;
    Ok(SocketAddr::new(*ip, port))
}

impl<P: Provider> Service<P> for EchoServer<P> {
    fn start(&mut self, device: &P::Device, link: &Link) -> Result<()> {
        let addr = server_address::<P>(device, self.config.port)?;
        let config = self.config.clone();
        if config.max_message < SEQ_BYTES as u32 || config.slots == 0 || config.max_connections == 0
        {
            return Err(Error::invalid_argument(
                "the echo server needs room for a sequence number, a slot and a connection",
            ));
        }
        // Everything is built from scratch on the device the supervisor hands us: after a reset
        // nothing of the previous start exists any more (see the module docs).
        let pd = device.alloc_pd()?;
        // One CQ for every connection. It must hold every completion that can be outstanding
        // at once, or it overflows and takes every QP down with it: each slot of a connection is
        // either a posted receive or a posted echo, never both.
        let depth = config
            .max_connections
            .saturating_mul(config.slots)
            .saturating_add(config.max_connections);
        let cq = device.create_cq(depth)?;
        let listener = device.listen(addr)?;
        info!(%addr, device = %device.info().identity, "echo server listening");
        let core = Arc::new(ServerCore {
            conns: Mutex::default(),
            retired: Mutex::default(),
            listener,
            cq,
            pd,
            state_model: device.info().state_model,
            config,
            stop: AtomicBool::new(false),
            failed_qps: Mutex::default(),
            link: link.clone(),
            stats: Arc::clone(&self.stats),
        });
        // Kept in `self` before the threads are spawned: if a spawn fails, the supervisor calls
        // `stop`, which ends the thread that did start.
        let running = self.running.insert(RunningServer {
            core: Arc::clone(&core),
            workers: Vec::new(),
        });
        let acceptor = Arc::clone(&core);
        running
            .workers
            .push(Worker::spawn("echo-acceptor", move || {
                acceptor.accept_loop()
            })?);
        running
            .workers
            .push(Worker::spawn("echo-server", move || core.echo_loop())?);
        self.stats.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn stop(&mut self, reason: &StopReason, deadline: Instant) {
        let Some(running) = self.running.take() else {
            return;
        };
        debug!(%reason, "echo server stopping");
        // 1. Ask the threads to end and wait for them: they check the flag at least every
        //    poll_interval, and every call they make has a deadline.
        running.core.stop.store(true, Ordering::Release);
        for worker in running.workers {
            if worker.join(deadline).is_none() {
                // It did not end in time (or panicked). What it holds is released when it
                // ends; the rest goes now.
                warn!("an echo server thread did not end before the stop deadline");
            }
        }
        // 2. Drain every connection before anything is destroyed: after `drain` nothing
        //    completes and the device no longer writes into the receive buffers, so the MRs may
        //    go. On a lost device this fails at once with DeviceLost, which is fine: a dead
        //    device touches nothing either.
        let conns: Vec<ServerConn<P>> = lock(&running.core.conns)
            .drain()
            .map(|(_, conn)| conn)
            .chain(lock(&running.core.retired).drain(..))
            .collect();
        for conn in &conns {
            if let Err(e) = conn.qp.drain(deadline)
                && e.kind() != ErrorKind::DeviceLost
            {
                warn!(error = %e, qp = conn.qp.qp_num(), "drain failed; destroying anyway");
            }
        }
        // 3. Drop everything: QPs and MRs, then (with the last reference to the core) the
        //    listener, which frees the port for the next start, the CQ and the PD. Promptly, so
        //    that a removal waiting for the process's objects can finish.
        drop(conns);
        drop(running.core);
    }

    fn on_failure(&mut self, event: &DeviceEvent) -> FailureAction {
        // One client's connection failed (its peer vanished, the QP hit a fatal error). That is
        // the server's own business: drop that connection and keep serving the others. The
        // whole service restarts only for what breaks the server itself: an error of the CQ
        // every connection shares.
        let Some(running) = &self.running else {
            return FailureAction::Ignore;
        };
        match *event {
            DeviceEvent::CqError { cq_num } if cq_num == running.core.cq.cq_num() => {
                FailureAction::Restart
            }
            _ => {
                if let Some(qp_num) = event.qp_num() {
                    lock(&running.core.failed_qps).push(qp_num);
                }
                FailureAction::Ignore
            }
        }
    }
}

/// One client's connection: its QP and the buffers it receives into and echoes from.
struct ServerConn<P: Provider> {
    // Fields drop in order: the QP before the region it uses.
    qp: P::Qp,
    mr: P::Mr,
    /// The id the client sent in its hello, to recognise it when it reconnects.
    client_id: u64,
}

/// What one start of the server built, shared by its two threads.
struct ServerCore<P: Provider> {
    // Fields drop in order: connections (QPs, MRs) first, then the listener, the CQ, the PD.
    /// The live connections by QP number. A connection is in here from before it is accepted
    /// (its receives are posted, and a message may arrive at once) until it is dropped.
    conns: Mutex<HashMap<u32, ServerConn<P>>>,
    /// Connections the acceptor replaced (their client reconnected), drained, for the echoer to
    /// destroy.
    retired: Mutex<Vec<ServerConn<P>>>,
    listener: P::Listener,
    cq: P::Cq,
    pd: P::Pd,
    state_model: StateModel,
    config: ServerConfig,
    stop: AtomicBool,
    /// QPs the device reported failed ([`Service::on_failure`]), for the echoer to drop.
    failed_qps: Mutex<Vec<u32>>,
    link: Link,
    stats: Arc<ServerStats>,
}

/// The low bits of a server `wr_id` name the slot; this bit says the WR is an echo (a send).
const ECHO_BIT: u64 = 1 << 63;

impl<P: Provider> ServerCore<P> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// A thread's end: on DeviceLost, the supervisor has its own news of the loss (the device's
    /// event) and will call `stop`; anything else broke the server as a whole (its listener or
    /// its CQ), so ask the supervisor to restart it.
    fn fail(&self, what: &str, e: &Error) {
        if e.kind() != ErrorKind::DeviceLost && !self.stopping() {
            self.link
                .connection_lost(format!("echo server {what}: {e}"));
        }
    }

    // ----- the acceptor -----

    fn accept_loop(&self) {
        while !self.stopping() {
            let request = match self
                .listener
                .next_request(Instant::now() + self.config.poll_interval)
            {
                Ok(request) => request,
                Err(e) if e.kind() == ErrorKind::TimedOut => continue,
                Err(e) => return self.fail("listener", &e),
            };
            match self.accept(&request) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::DeviceLost => return,
                Err(e) => {
                    // This request failed, not the server.
                    debug!(error = %e, peer = %request.peer, "connect request refused");
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    let _ = self.listener.reject(&request, &[]);
                }
            }
        }
    }

    fn slot_offset(&self, slot: u64) -> usize {
        // `slot` < slots, which is a u32, so this fits.
        slot as usize * self.config.max_message as usize
    }

    fn accept(&self, request: &ConnectRequest) -> Result<()> {
        let client_id = request
            .private_data
            .get(..HELLO_BYTES)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| Error::invalid_argument("the connect request carries no client id"))?;
        // A client that connects again (after its own device reset, or because an echo was
        // late) has given up on its old connection. If the server still has that one — the
        // client's device died without a word, so nothing told the server — it is dead weight
        // whose peer is gone: drop it now, as iSCSI's session reinstatement does, instead of
        // waiting for a keep-alive to notice.
        let stale: Vec<ServerConn<P>> = {
            let mut conns = lock(&self.conns);
            let ids: Vec<u32> = conns
                .iter()
                .filter(|(_, c)| c.client_id == client_id)
                .map(|(qp_num, _)| *qp_num)
                .collect();
            ids.iter().filter_map(|id| conns.remove(id)).collect()
        };
        for conn in stale {
            self.retire(conn, "the client reconnected");
        }
        if lock(&self.conns).len() >= self.config.max_connections as usize {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                "the echo server is full",
            ));
        }
        let (slots, max) = (self.config.slots, self.config.max_message);
        let mr = self
            .pd
            .register(slots as usize * max as usize, Access::LOCAL_WRITE)?;
        let init = QpInit {
            max_send_wr: slots,
            max_recv_wr: slots,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let qp = self.pd.create_qp(&self.cq, &self.cq, &init)?;
        // Receives go in before the connection is accepted: the client may send as soon as it
        // sees the connection up, and on iWARP a SEND that finds no receive kills the
        // connection.
        ready_for_receives(&qp, self.state_model)?;
        let recvs: Vec<RecvWr> = (0..u64::from(slots))
            .map(|slot| RecvWr::single(slot, mr.sge(self.slot_offset(slot), max)))
            .collect();
        let qp_num = qp.qp_num();
        let conn: ServerConn<P> = ServerConn { qp, mr, client_id };
        if let Err(e) = conn.qp.post_recv(&recvs) {
            // Some receives may be posted: drain before the region goes.
            let _ = conn.qp.drain(Instant::now() + self.config.poll_interval);
            return Err(e.into());
        }
        // Into the table before the accept, so the echoer knows the QP when its first message
        // arrives.
        lock(&self.conns).insert(qp_num, conn);
        let accepted = {
            let conns = lock(&self.conns);
            match conns.get(&qp_num) {
                Some(conn) => self
                    .listener
                    .accept(request, &conn.qp, &ConnParams::default()),
                None => Err(Error::new(ErrorKind::Other, "the connection vanished")),
            }
        };
        if let Err(e) = accepted {
            if let Some(conn) = lock(&self.conns).remove(&qp_num) {
                self.retire(conn, "the accept failed");
            }
            return Err(e);
        }
        debug!(peer = %request.peer, client_id, qp = qp_num, "echo connection accepted");
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drains a connection taken out of the table and hands it to the echoer to destroy.
    fn retire(&self, conn: ServerConn<P>, why: &str) {
        self.drain(&conn, why);
        lock(&self.retired).push(conn);
    }

    /// Drains one connection taken out of the table (see the module docs: drain before
    /// destroy). A short deadline: the connection is already broken, and other clients wait.
    fn drain(&self, conn: &ServerConn<P>, why: &str) {
        let qp_num = conn.qp.qp_num();
        debug!(
            qp = qp_num,
            client_id = conn.client_id,
            why,
            "dropping an echo connection"
        );
        if let Err(e) = conn
            .qp
            .drain(Instant::now() + self.config.poll_interval * 10)
            && e.kind() != ErrorKind::DeviceLost
        {
            warn!(error = %e, qp = qp_num, "drain failed; destroying anyway");
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    // ----- the echoer -----

    fn echo_loop(&self) {
        let mut wc = vec![Completion::default(); 32];
        // Drained connections waiting to be destroyed (see `echo_turn`).
        let mut closing = Vec::new();
        while !self.stopping() {
            if let Err(e) = self.echo_turn(&mut wc, &mut closing) {
                return self.fail("CQ", &e);
            }
        }
    }

    /// One round: drop the connections that failed or were replaced, then wait for completions
    /// for at most `poll_interval` and echo. An error is a failure of the server as a whole;
    /// one connection's failure is handled here.
    fn echo_turn(&self, wc: &mut [Completion], closing: &mut Vec<ServerConn<P>>) -> Result<()> {
        let failed = std::mem::take(&mut *lock(&self.failed_qps));
        for qp_num in failed {
            let conn = lock(&self.conns).remove(&qp_num);
            if let Some(conn) = conn {
                self.drain(&conn, "the device reported the QP failed");
                closing.push(conn);
            }
        }
        closing.append(&mut lock(&self.retired));
        if !closing.is_empty() {
            // The drains put every flush completion of these QPs into the shared CQ. Consume
            // everything it holds before destroying them: as long as a QP exists, no new QP can
            // take its number, so a completion naming it is surely one of its flushes (and is
            // skipped, since it is no longer in the table).
            loop {
                let n = self.cq.poll(wc)?;
                if n == 0 {
                    break;
                }
                self.handle(&wc[..n], closing)?;
            }
            closing.clear();
        }
        let until = Instant::now() + self.config.poll_interval;
        match self.cq.wait(wc, until) {
            Ok(n) => self.handle(&wc[..n], closing),
            Err(e) if e.kind() == ErrorKind::TimedOut => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn handle(&self, completions: &[Completion], closing: &mut Vec<ServerConn<P>>) -> Result<()> {
        let mut conns = lock(&self.conns);
        for c in completions {
            let Some(conn) = conns.get(&c.qp_num) else {
                // A connection dropped earlier: its WRs were flushed.
                continue;
            };
            let posted = if !c.status.is_success() {
                // The connection is broken (flushed: the QP went to ERROR; retry exceeded: the
                // client vanished). Only this connection: drop it and carry on.
                Err(Error::new(ErrorKind::RemoteFailure, c.status.as_str()))
            } else {
                let slot = c.wr_id & !ECHO_BIT;
                let offset = self.slot_offset(slot);
                if c.wr_id & ECHO_BIT == 0 {
                    // A message arrived in `slot`: send it back from the same buffer. The slot
                    // is not given back to the receive queue until the echo has left.
                    let len = c.byte_len.min(self.config.max_message);
                    let sgl = if len == 0 {
                        Vec::new()
                    } else {
                        vec![conn.mr.sge(offset, len)]
                    };
                    let sent = conn.qp.post_send(&[SendWr::send(slot | ECHO_BIT, &sgl)]);
                    if sent.is_ok() {
                        self.stats.echoed.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.map_err(Error::from)
                } else {
                    // The echo left: receive into its buffer again.
                    conn.qp
                        .post_recv(&[RecvWr::new(
                            slot,
                            &[conn.mr.sge(offset, self.config.max_message)],
                        )])
                        .map_err(Error::from)
                }
            };
            match posted {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::DeviceLost => return Err(e),
                Err(e) => {
                    if let Some(conn) = conns.remove(&c.qp_num) {
                        self.drain(&conn, &e.to_string());
                        closing.push(conn);
                    }
                }
            }
        }
        Ok(())
    }
}

// ----- the client -----

/// How an [`EchoClient`] connects and paces itself.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's address ([`server_address`] of the server's device).
    pub server: SocketAddr,
    /// Identifies this client to the server across reconnections: a new connection with the
    /// same id replaces the old one, so two clients of one server need two ids.
    pub client_id: u64,
    /// Bytes per message: at least 8, for the sequence number, and at most the server's
    /// [`ServerConfig::max_message`] (a larger message fails the server's receive, and the
    /// connection with it, every time).
    pub message_size: u32,
    /// How long to wait for the connection to come up.
    pub connect_timeout: Duration,
    /// How long to wait for each echo before declaring the connection lost.
    pub echo_timeout: Duration,
    /// Longest the worker blocks in one wait: how late it notices a stop.
    pub poll_interval: Duration,
}

impl ClientConfig {
    /// A client of the server at `server`, with the defaults: 64-byte messages, a 1 s connect
    /// timeout and a 1 s echo timeout.
    pub fn new(server: SocketAddr) -> Self {
        ClientConfig {
            server,
            client_id: 1,
            message_size: 64,
            connect_timeout: Duration::from_secs(1),
            echo_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(5),
        }
    }
}

/// The echo client, a [`Service`]: sends numbered messages and checks their echoes, across
/// restarts.
pub struct EchoClient<P: Provider> {
    config: ClientConfig,
    log: Arc<EchoLog>,
    running: Option<RunningClient<P>>,
}

/// What one start of the client built.
struct RunningClient<P: Provider> {
    session: Arc<ClientSession<P>>,
    stop: Arc<AtomicBool>,
    /// `None` until the connection is up and the worker runs.
    worker: Option<Worker<()>>,
}

/// The client's resources on one device: one connection.
struct ClientSession<P: Provider> {
    // Fields drop in order: the QP before the region and CQ it uses, the PD last.
    qp: P::Qp,
    mr: P::Mr,
    cq: P::Cq,
    _pd: P::Pd,
}

/// Receive buffers the client keeps posted; it has one message in flight, so two are plenty.
const CLIENT_RECV_SLOTS: u32 = 2;
/// The `wr_id` of the client's sends; receives use their slot number.
const CLIENT_SEND_ID: u64 = u64::MAX;

impl<P: Provider> EchoClient<P> {
    /// A client that connects as `config` says and records echoes into `log`. Share the log
    /// with whoever checks the results; it outlives every restart.
    pub fn new(config: ClientConfig, log: Arc<EchoLog>) -> Self {
        EchoClient {
            config,
            log,
            running: None,
        }
    }

    fn region_len(&self) -> usize {
        self.config.message_size as usize * (1 + CLIENT_RECV_SLOTS as usize)
    }
}

impl<P: Provider> fmt::Debug for EchoClient<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoClient")
            .field("config", &self.config)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Provider> Service<P> for EchoClient<P> {
    fn start(&mut self, device: &P::Device, link: &Link) -> Result<()> {
        let config = self.config.clone();
        let size = config.message_size;
        if (size as usize) < SEQ_BYTES {
            return Err(Error::invalid_argument(
                "an echo message holds at least its 8-byte sequence number",
            ));
        }
        // Everything from scratch on this device (see the module docs).
        let pd = device.alloc_pd()?;
        let cq = device.create_cq(CLIENT_RECV_SLOTS + 2)?;
        // One region: the message being sent, then the receive slots.
        let mr = pd.register(self.region_len(), Access::LOCAL_WRITE)?;
        let init = QpInit {
            max_send_wr: 1,
            max_recv_wr: CLIENT_RECV_SLOTS,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        let qp = pd.create_qp(&cq, &cq, &init)?;
        // From here on a QP exists and receives will be posted: keep the session in `self`
        // before anything else can fail, so that the one teardown path — `stop`, which the
        // supervisor calls after a failed start too — drains it before it is destroyed.
        let session = Arc::new(ClientSession {
            qp,
            mr,
            cq,
            _pd: pd,
        });
        let stop = Arc::new(AtomicBool::new(false));
        self.running = Some(RunningClient {
            session: Arc::clone(&session),
            stop: Arc::clone(&stop),
            worker: None,
        });
        ready_for_receives(&session.qp, device.info().state_model)?;
        let recvs: Vec<RecvWr> = (0..CLIENT_RECV_SLOTS)
            .map(|slot| RecvWr::single(u64::from(slot), session.recv_sge(slot, size)))
            .collect();
        session.qp.post_recv(&recvs)?;
        // The hello carries our id, so the server can drop our previous connection if it still
        // has it.
        let params = ConnParams {
            private_data: config.client_id.to_le_bytes().to_vec(),
            ..ConnParams::default()
        };
        session.qp.connect(config.server, &params)?;
        // Refused (the server is not listening yet, e.g. it is restarting itself) or timed out:
        // the error goes back to the supervisor, which retries after its reconnect delay.
        let connection = session
            .qp
            .wait_connected(Instant::now() + config.connect_timeout)?;
        debug!(peer = %connection.peer, qp = session.qp.qp_num(), "echo client connected");
        let worker = ClientWorker {
            session,
            stop,
            log: Arc::clone(&self.log),
            link: link.clone(),
            config,
        };
        let worker = Worker::spawn("echo-client", move || worker.run())?;
        if let Some(running) = &mut self.running {
            running.worker = Some(worker);
        }
        Ok(())
    }

    fn stop(&mut self, reason: &StopReason, deadline: Instant) {
        let Some(running) = self.running.take() else {
            return;
        };
        debug!(%reason, "echo client stopping");
        // 1. End the worker: it lets go of its reference to the session when it ends.
        running.stop.store(true, Ordering::Release);
        if let Some(worker) = running.worker
            && worker.join(deadline).is_none()
        {
            warn!("the echo client's worker did not end before the stop deadline");
        }
        // 2. Drain, then destroy. The message in flight, if any, is accounted for by the
        //    drain; the client resends it after the restart because its echo is not in the log.
        if let Err(e) = running.session.qp.drain(deadline)
            && e.kind() != ErrorKind::DeviceLost
        {
            warn!(error = %e, "drain failed; destroying anyway");
        }
        // 3. Drop everything, promptly (the worker's reference is gone if it ended).
        drop(running.session);
    }

    fn on_failure(&mut self, event: &DeviceEvent) -> FailureAction {
        // The client's only connection failed (its QP, or the CQ under it): restart
        // (reconnect). Another service's QP or CQ on the same device is none of our business.
        let Some(running) = &self.running else {
            return FailureAction::Ignore;
        };
        let session = &running.session;
        let ours = match *event {
            DeviceEvent::CqError { cq_num } => cq_num == session.cq.cq_num(),
            _ => event.qp_num() == Some(session.qp.qp_num()),
        };
        if ours {
            FailureAction::Restart
        } else {
            FailureAction::Ignore
        }
    }
}

impl<P: Provider> ClientSession<P> {
    fn send_sge(&self, size: u32) -> anyverbs::Sge {
        self.mr.sge(0, size)
    }

    fn recv_sge(&self, slot: u32, size: u32) -> anyverbs::Sge {
        self.mr.sge((1 + slot as usize) * size as usize, size)
    }
}

/// The client's worker thread: one message in flight, each echo awaited with a deadline.
struct ClientWorker<P: Provider> {
    session: Arc<ClientSession<P>>,
    stop: Arc<AtomicBool>,
    log: Arc<EchoLog>,
    link: Link,
    config: ClientConfig,
}

/// How a client's exchange ended.
enum Outcome {
    /// `stop` asked.
    Stopped,
    /// The connection failed; the reason goes to the supervisor.
    Failed(String),
}

impl<P: Provider> ClientWorker<P> {
    fn run(self) {
        let mut wc = [Completion::default(); 4];
        self.log.begin_connection();
        loop {
            // Resend from the first message not yet echoed: after a restart that is the one
            // whose echo the failure swallowed (see the module docs).
            let seq = self.log.next();
            match self.exchange(seq, &mut wc) {
                Ok(()) => {}
                Err(Outcome::Stopped) => return,
                Err(Outcome::Failed(reason)) => {
                    // Any failure — an error completion, DeviceLost, a lost echo — ends this
                    // connection. The supervisor decides what comes next: reconnect after its
                    // delay, or wait for the device to come back. Then end, so that `stop` can
                    // release everything at once.
                    if !self.stop.load(Ordering::Acquire) {
                        self.link.connection_lost(reason);
                    }
                    return;
                }
            }
        }
    }

    /// Sends message `seq` and waits for its echo.
    fn exchange(&self, seq: u64, wc: &mut [Completion]) -> Result<(), Outcome> {
        let size = self.config.message_size;
        let s = &self.session;
        let failed = |what: &str, e: Error| Outcome::Failed(format!("{what}: {e}"));
        s.mr.write(0, &message(seq, size as usize))
            .map_err(|e| failed("writing the message", e))?;
        s.qp.post_send(&[SendWr::send(CLIENT_SEND_ID, &[s.send_sge(size)])])
            .map_err(|e| failed("sending", e.into()))?;
        let deadline = Instant::now() + self.config.echo_timeout;
        let (mut sent, mut echoed) = (false, false);
        // The send's completion and the echo may come in either order; both must come.
        while !(sent && echoed) {
            if self.stop.load(Ordering::Acquire) {
                return Err(Outcome::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Outcome::Failed(format!(
                    "no echo of message {seq} within {:?}",
                    self.config.echo_timeout
                )));
            }
            let n = match s.cq.wait(wc, deadline.min(now + self.config.poll_interval)) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::TimedOut => continue,
                Err(e) => return Err(failed("waiting for completions", e)),
            };
            for c in &wc[..n] {
                if !c.status.is_success() {
                    return Err(Outcome::Failed(format!(
                        "{} of message {seq}: {}",
                        if c.wr_id == CLIENT_SEND_ID {
                            "send"
                        } else {
                            "receive"
                        },
                        c.status
                    )));
                }
                if c.wr_id == CLIENT_SEND_ID {
                    sent = true;
                    continue;
                }
                // An echo: check it, record it, and give the slot back to the receive queue.
                let slot = u32::try_from(c.wr_id)
                    .ok()
                    .filter(|slot| *slot < CLIENT_RECV_SLOTS)
                    .ok_or_else(|| Outcome::Failed(format!("unknown wr_id {}", c.wr_id)))?;
                let mut data = vec![0; c.byte_len.min(size) as usize];
                s.mr.read((1 + slot as usize) * size as usize, &mut data)
                    .map_err(|e| failed("reading the echo", e))?;
                let got = parse(&data, size as usize);
                self.log.record(got, Instant::now());
                echoed |= got == Some(seq);
                s.qp.post_recv(&[RecvWr::new(c.wr_id, &[s.recv_sge(slot, size)])])
                    .map_err(|e| failed("reposting a receive", e.into()))?;
            }
        }
        Ok(())
    }
}

/// Message `seq` of `size` bytes: the sequence number, then a pattern derived from it, so a
/// corrupted or misplaced echo is noticed.
fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((SEQ_BYTES..size).map(|i| (seq as u8).wrapping_add(i as u8)));
    m
}

/// The sequence number of an echo, if it is exactly the message that number stands for.
fn parse(data: &[u8], size: usize) -> Option<u64> {
    let seq = u64::from_le_bytes(data.get(..SEQ_BYTES)?.try_into().ok()?);
    (data.len() == size && data == message(seq, size).as_slice()).then_some(seq)
}

// ----- the echo log -----

/// What the client saw: every echo, checked against exactly once and in order. Shared between
/// the client (across all its restarts) and whoever checks the results.
///
/// It keeps counters, not the list of echoes, so it does not grow however long it runs.
#[derive(Debug, Default)]
pub struct EchoLog {
    inner: Mutex<EchoSummary>,
    cond: Condvar,
}

/// A snapshot of an [`EchoLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoSummary {
    /// Messages echoed exactly once and in order: messages `0..echoed`. Also the number of
    /// the next message to send.
    pub echoed: u64,
    /// Echoes of a message already echoed.
    pub duplicates: u64,
    /// Echoes of a message later than the next expected one (one was skipped).
    pub out_of_order: u64,
    /// Echoes whose bytes were not a message the client sent.
    pub corrupted: u64,
    /// When the last good echo arrived.
    pub last_echo_at: Option<Instant>,
    /// Connections the client has made (its worker ran on each).
    pub connections: u64,
    /// When the first good echo on the latest connection arrived: with the time the service
    /// was started, how long a restart took until messages flowed again.
    pub first_echo_at: Option<Instant>,
}

impl EchoSummary {
    /// Whether every echo so far was the next expected message, intact.
    pub fn is_clean(&self) -> bool {
        self.duplicates == 0 && self.out_of_order == 0 && self.corrupted == 0
    }
}

impl fmt::Display for EchoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages echoed in order; {} duplicated, {} out of order, {} corrupted",
            self.echoed, self.duplicates, self.out_of_order, self.corrupted
        )
    }
}

impl EchoLog {
    /// An empty log.
    pub fn new() -> Arc<EchoLog> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, EchoSummary> {
        lock(&self.inner)
    }

    /// The first message not yet echoed.
    pub fn next(&self) -> u64 {
        self.lock().echoed
    }

    /// Records an echo of message `seq` (`None`: the bytes were no message of ours).
    fn record(&self, seq: Option<u64>, at: Instant) {
        let mut s = self.lock();
        match seq {
            None => s.corrupted += 1,
            Some(seq) if seq == s.echoed => {
                s.echoed += 1;
                s.last_echo_at = Some(at);
                s.first_echo_at.get_or_insert(at);
            }
            Some(seq) if seq < s.echoed => s.duplicates += 1,
            Some(_) => s.out_of_order += 1,
        }
        self.cond.notify_all();
    }

    /// A new connection is up: the next echo is its first.
    fn begin_connection(&self) {
        let mut s = self.lock();
        s.connections += 1;
        s.first_echo_at = None;
        self.cond.notify_all();
    }

    /// What the log holds now.
    pub fn summary(&self) -> EchoSummary {
        self.lock().clone()
    }

    /// Waits until at least `count` messages were echoed, or `deadline`
    /// ([`ErrorKind::TimedOut`]). Returns the summary then.
    pub fn wait_for(&self, count: u64, deadline: Instant) -> Result<EchoSummary> {
        self.wait_until(deadline, |s| s.echoed >= count)
            .map_err(|s| {
                Error::timed_out(format!(
                    "{} of {count} messages echoed by the deadline",
                    s.echoed
                ))
            })
    }

    /// Waits until `done` holds for the log, or `deadline`; on time-out, the error is the
    /// summary then.
    pub fn wait_until(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&EchoSummary) -> bool,
    ) -> Result<EchoSummary, EchoSummary> {
        let mut s = self.lock();
        loop {
            if done(&s) {
                return Ok(s.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(s.clone());
            }
            s = match self.cond.wait_timeout(s, deadline - now) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

// ----- helpers -----

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field updates: a panic inside one cannot leave the
    // data half-changed, so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker thread that can be joined with a deadline.
struct Worker<T> {
    handle: JoinHandle<T>,
    /// Disconnected when the thread ends, however it ends.
    done: Receiver<()>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(name: &str, body: impl FnOnce() -> T + Send + 'static) -> Result<Worker<T>> {
        let (tx, done) = sync_channel::<()>(0);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Dropped when the body returns or unwinds: that disconnects `done`.
                let _tx: SyncSender<()> = tx;
                body()
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!("cannot spawn the {name} thread: {e}"),
                )
            })?;
        Ok(Worker { handle, done })
    }

    /// The thread's result, if it ends by `deadline` without panicking. Otherwise it is left
    /// to finish on its own.
    fn join(self, deadline: Instant) -> Option<T> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.done.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            // Nobody ever sends: disconnected means the thread's body is over.
            _ => self.handle.join().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_back_to_their_number() {
        for seq in [0, 1, 255, 256, u64::MAX] {
            assert_eq!(parse(&message(seq, 64), 64), Some(seq));
        }
        let mut m = message(5, 64);
        m[40] ^= 1;
        assert_eq!(parse(&m, 64), None);
        assert_eq!(parse(&message(5, 64)[..32], 64), None);
    }

    #[test]
    fn the_log_counts_in_order_duplicates_and_gaps() {
        let log = EchoLog::new();
        let now = Instant::now();
        log.record(Some(0), now);
        log.record(Some(1), now);
        assert!(log.summary().is_clean());
        log.record(Some(1), now);
        log.record(Some(5), now);
        log.record(None, now);
        let s = log.summary();
        assert_eq!(
            (s.echoed, s.duplicates, s.out_of_order, s.corrupted),
            (2, 1, 1, 1)
        );
        assert!(!s.is_clean());
        assert_eq!(log.next(), 2);
    }

    #[test]
    fn waiting_for_echoes_has_a_deadline() {
        let log = EchoLog::new();
        let start = Instant::now();
        let e = log
            .wait_for(1, start + Duration::from_millis(10))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        log.record(Some(0), start);
        assert_eq!(log.wait_for(1, start).unwrap().echoed, 1);
    }

    #[test]
    fn a_worker_is_joined_by_its_deadline_or_left() {
        let w = Worker::spawn("quick", || 7).unwrap();
        assert_eq!(w.join(Instant::now() + Duration::from_secs(5)), Some(7));
        let w = Worker::spawn("slow", || std::thread::sleep(Duration::from_millis(200))).unwrap();
        assert_eq!(w.join(Instant::now() + Duration::from_millis(5)), None);
        let w = Worker::spawn("panics", || panic!("on purpose")).unwrap();
        assert_eq!(w.join(Instant::now() + Duration::from_secs(5)), None::<()>);
    }
}
