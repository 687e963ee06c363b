//! The client: sends numbered messages one at a time, waits for each echo with a deadline, and
//! asks its supervisor for a restart when its connection fails, resending what was not echoed.

use super::*;

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
