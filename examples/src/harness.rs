//! An echo server and client, each under its own [`Supervisor`], and the faults to throw at
//! them: the machinery behind the demo, the soak test and the benchmark.
//!
//! Generic over the provider: anything that can [`inject`](Provider::inject) device resets and
//! hot-replugs (the mock, or a real provider through a test bed) can run it.
//!
//! Recovery is observed, never slept on: every wait reads the supervisors' decisions
//! ([`Supervisor::events`]) and the client's [`EchoLog`], each with a deadline.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{DeviceSelector, Supervisor, SupervisorConfig, SupervisorEvent};
use anyverbs::supervisor::{SupervisorReport, SystemClock};
use anyverbs::{Error, ErrorKind, Fault, Provider, Result};

use crate::echo::{
    ClientConfig, EchoClient, EchoLog, EchoServer, EchoSummary, ServerConfig, ServerStats,
    server_address,
};

/// Which side of the echo pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The [`EchoServer`].
    Server,
    /// The [`EchoClient`].
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// One disruption of the pair: what [`EchoPair::disrupt`] injects, and waits to recover from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disruption {
    /// [`Fault::Reset`] of the side's device: fatal, then back with the same identity.
    Reset(Role),
    /// [`Fault::Unplug`] of the side's device, then, once its supervisor has stopped the
    /// service, [`Fault::Replug`].
    Replug(Role),
}

impl Disruption {
    /// The side whose device is hit.
    pub fn role(self) -> Role {
        match self {
            Disruption::Reset(role) | Disruption::Replug(role) => role,
        }
    }

    /// How many faults it injects.
    pub fn faults(self) -> u32 {
        match self {
            Disruption::Reset(_) => 1,
            Disruption::Replug(_) => 2,
        }
    }
}

impl fmt::Display for Disruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disruption::Reset(role) => write!(f, "reset of the {role}'s device"),
            Disruption::Replug(role) => write!(f, "unplug and replug of the {role}'s device"),
        }
    }
}

/// How an [`EchoPair`] is laid out.
#[derive(Debug, Clone)]
pub struct PairConfig {
    /// The server's device (by name at the first start; by identity from then on).
    pub server_device: String,
    /// The client's device.
    pub client_device: String,
    /// The server's settings.
    pub server: ServerConfig,
    /// The client's settings; its `server` address is filled in by [`EchoPair::spawn`].
    pub client: ClientConfig,
    /// Both supervisors' policy.
    pub supervisor: SupervisorConfig,
    /// How long a [`Disruption::Reset`] keeps the device away at least.
    pub reset_down_for: Duration,
    /// Messages that must be echoed after a disruption before it counts as recovered from.
    pub progress: u64,
}

impl PairConfig {
    /// A pair on the mock's `mock0` (server) and `mock1` (client), tuned to recover in
    /// milliseconds: 5 ms reconnect delay (doubling up to 20 ms), a 100 ms stop deadline, a
    /// 200 ms echo timeout, a 1 ms reset.
    pub fn fast() -> Self {
        let mut client = ClientConfig::new(([0, 0, 0, 0], 0).into());
        client.echo_timeout = Duration::from_millis(200);
        client.poll_interval = Duration::from_millis(1);
        PairConfig {
            server_device: "mock0".into(),
            client_device: "mock1".into(),
            server: ServerConfig::default(),
            client,
            supervisor: SupervisorConfig {
                return_window: Some(Duration::from_secs(30)),
                stop_deadline: Duration::from_millis(100),
                reconnect_delay: Duration::from_millis(5),
                max_reconnect_delay: Duration::from_millis(20),
                loss_timeout: Some(Duration::from_secs(30)),
                held_check_interval: Duration::from_millis(100),
                clock: Arc::new(SystemClock),
            },
            reset_down_for: Duration::from_millis(1),
            progress: 2,
        }
    }
}

/// Sees every decision of both supervisors, as they are read.
pub type Observer = Box<dyn FnMut(Role, &SupervisorReport) + Send>;

/// One service under its supervisor, with the last start seen on its event stream.
pub struct Supervised<S> {
    role: Role,
    device: String,
    supervisor: Supervisor<S>,
    generation: u64,
}

impl<S: Send + 'static> Supervised<S> {
    /// The generation of the last [`SupervisorEvent::Started`] read.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The device it runs on, by name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor<S> {
        &self.supervisor
    }

    /// Reads decisions until one satisfies `want`, or `deadline`; every decision read goes to
    /// `observe` first. A supervisor that gives up fails the wait at once.
    fn wait_for(
        &mut self,
        what: &str,
        deadline: Instant,
        observe: &mut Observer,
        mut want: impl FnMut(&SupervisorEvent) -> bool,
    ) -> Result<SupervisorReport> {
        loop {
            let report = self.supervisor.events().recv(deadline).map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("the {} was waiting for {what}: {e}", self.role),
                )
            })?;
            observe(self.role, &report);
            if let SupervisorEvent::Started { generation, .. } = report.event {
                self.generation = generation;
            }
            if let SupervisorEvent::GaveUp { reason } = &report.event {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("the {}'s supervisor gave up: {reason}", self.role),
                ));
            }
            if want(&report.event) {
                return Ok(report);
            }
        }
    }

    /// Waits until the service has started after start number `after`; returns the generation
    /// of that start.
    pub fn wait_started_after(
        &mut self,
        after: u64,
        deadline: Instant,
        observe: &mut Observer,
    ) -> Result<u64> {
        if self.generation <= after {
            self.wait_for(
                "a restart",
                deadline,
                observe,
                |e| matches!(e, SupervisorEvent::Started { generation, .. } if *generation > after),
            )?;
        }
        Ok(self.generation)
    }

    /// Reads whatever decisions are waiting, without blocking.
    pub fn poll(&mut self, observe: &mut Observer) -> Result<()> {
        while let Some(report) = self.supervisor.events().try_recv()? {
            if let SupervisorEvent::Started { generation, .. } = report.event {
                self.generation = generation;
            }
            observe(self.role, &report);
        }
        Ok(())
    }
}

/// What one [`EchoPair::disrupt`] took.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// From the first injection until messages flowed again.
    pub took: Duration,
    /// The log after recovery.
    pub summary: EchoSummary,
}

/// An echo server and client on two devices, each under its own supervisor.
pub struct EchoPair<P: Provider> {
    provider: Arc<P>,
    config: PairConfig,
    /// The server and its supervisor.
    pub server: Supervised<EchoServer<P>>,
    /// The client and its supervisor.
    pub client: Supervised<EchoClient<P>>,
    log: Arc<EchoLog>,
    server_stats: Arc<ServerStats>,
    observe: Observer,
}

impl<P: Provider> EchoPair<P> {
    /// Starts the server on `config.server_device` and the client on `config.client_device`,
    /// each under a supervisor, and waits (by `deadline`) until both have started and the
    /// first messages were echoed. Every supervisor decision goes to `observe`.
    pub fn spawn(
        provider: Arc<P>,
        mut config: PairConfig,
        observe: Observer,
        deadline: Instant,
    ) -> Result<EchoPair<P>> {
        // The server's address, from its device's first port. The handle is dropped at once:
        // from here on only the supervisor holds the device.
        config.client.server = {
            let device = provider.open(&config.server_device)?;
            server_address::<P>(&device, config.server.port)?
        };
        let server = EchoServer::new(config.server.clone());
        let server_stats = server.stats();
        let log = EchoLog::new();
        let client = EchoClient::new(config.client.clone(), Arc::clone(&log));
        let server = Supervised {
            role: Role::Server,
            device: config.server_device.clone(),
            supervisor: Supervisor::spawn(
                Arc::clone(&provider),
                DeviceSelector::Name(config.server_device.clone()),
                server,
                config.supervisor.clone(),
            )?,
            generation: 0,
        };
        let client = Supervised {
            role: Role::Client,
            device: config.client_device.clone(),
            supervisor: Supervisor::spawn(
                Arc::clone(&provider),
                DeviceSelector::Name(config.client_device.clone()),
                client,
                config.supervisor.clone(),
            )?,
            generation: 0,
        };
        let mut pair = EchoPair {
            provider,
            config,
            server,
            client,
            log,
            server_stats,
            observe,
        };
        pair.server
            .wait_started_after(0, deadline, &mut pair.observe)?;
        pair.client
            .wait_started_after(0, deadline, &mut pair.observe)?;
        pair.log.wait_for(pair.config.progress, deadline)?;
        Ok(pair)
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<P> {
        &self.provider
    }

    /// The client's log of echoes.
    pub fn log(&self) -> &Arc<EchoLog> {
        &self.log
    }

    /// The server's counters.
    pub fn server_stats(&self) -> &Arc<ServerStats> {
        &self.server_stats
    }

    /// The name of `role`'s device.
    pub fn device(&self, role: Role) -> &str {
        match role {
            Role::Server => &self.config.server_device,
            Role::Client => &self.config.client_device,
        }
    }

    /// The generation of the last start of `role` read (see [`Supervised::generation`]).
    pub fn generation(&self, role: Role) -> u64 {
        match role {
            Role::Server => self.server.generation,
            Role::Client => self.client.generation,
        }
    }

    /// Reads `role`'s decisions until one satisfies `want`, or `deadline` (`what` names it in
    /// the error); every decision read goes to the observer. A supervisor that gives up fails
    /// the wait at once.
    pub fn wait_for(
        &mut self,
        role: Role,
        what: &str,
        deadline: Instant,
        want: impl FnMut(&SupervisorEvent) -> bool,
    ) -> Result<SupervisorReport> {
        match role {
            Role::Server => self
                .server
                .wait_for(what, deadline, &mut self.observe, want),
            Role::Client => self
                .client
                .wait_for(what, deadline, &mut self.observe, want),
        }
    }

    /// Waits until `role`'s service has started after start number `after`; returns the
    /// generation of that start.
    pub fn wait_started_after(&mut self, role: Role, after: u64, deadline: Instant) -> Result<u64> {
        match role {
            Role::Server => self
                .server
                .wait_started_after(after, deadline, &mut self.observe),
            Role::Client => self
                .client
                .wait_started_after(after, deadline, &mut self.observe),
        }
    }

    /// Reads the decisions waiting on both supervisors, without blocking.
    pub fn poll_events(&mut self) -> Result<()> {
        self.server.poll(&mut self.observe)?;
        self.client.poll(&mut self.observe)
    }

    /// Injects `disruption` and waits (by `deadline`) until the pair has recovered: the hit
    /// side's supervisor restarted it, the client reconnected, and `progress` more messages
    /// were echoed. Fails if any echo was duplicated, out of order or corrupted.
    pub fn disrupt(&mut self, disruption: Disruption, deadline: Instant) -> Result<Recovery> {
        let started = Instant::now();
        let role = disruption.role();
        let before = self.log.next();
        let (server_gen, client_gen) = (self.server.generation, self.client.generation);
        let device = self.device(role).to_string();
        match disruption {
            Disruption::Reset(_) => {
                let down_for = self.config.reset_down_for;
                self.provider.inject(&device, &Fault::Reset { down_for })?;
            }
            Disruption::Replug(_) => {
                self.provider.inject(&device, &Fault::Unplug)?;
                // Plug it back only once the supervisor has stopped the service and let go of the
                // old device, so that the device is really absent for a while.
                let waiting =
                    |e: &SupervisorEvent| matches!(e, SupervisorEvent::WaitingForDevice { .. });
                match role {
                    Role::Server => self.server.wait_for(
                        "the device's loss",
                        deadline,
                        &mut self.observe,
                        waiting,
                    )?,
                    Role::Client => self.client.wait_for(
                        "the device's loss",
                        deadline,
                        &mut self.observe,
                        waiting,
                    )?,
                };
                self.provider.inject(&device, &Fault::Replug)?;
            }
        }
        // The hit side restarts on the returning device. When the server was hit the client
        // restarts too: its connection's other end is gone.
        if role == Role::Server {
            self.server
                .wait_started_after(server_gen, deadline, &mut self.observe)?;
        }
        self.client
            .wait_started_after(client_gen, deadline, &mut self.observe)?;
        let summary = self.log.wait_for(before + self.config.progress, deadline)?;
        if !summary.is_clean() {
            return Err(Error::new(
                ErrorKind::Other,
                format!("after the {disruption}: {summary}"),
            ));
        }
        Ok(Recovery {
            took: started.elapsed(),
            summary,
        })
    }

    /// Shuts both services down (the client first, so that the server does not see it fail),
    /// by `deadline`, and returns the client's final log.
    pub fn shutdown(self, deadline: Instant) -> Result<EchoSummary> {
        let client = self.client.supervisor.shutdown(deadline);
        let server = self.server.supervisor.shutdown(deadline);
        client.map_err(|e| Error::new(e.kind(), format!("client: {e}")))?;
        server.map_err(|e| Error::new(e.kind(), format!("server: {e}")))?;
        Ok(self.log.summary())
    }
}
