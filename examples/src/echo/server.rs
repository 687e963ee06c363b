//! The server: listens at a fixed address of its device and echoes every message back on the
//! QP it came on; drains and drops a failed connection itself and keeps serving the others.

use super::*;

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
