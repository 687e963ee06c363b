//! What a case gets to work with: the provider, the device under test, and helpers that build
//! the usual fixtures (a connected pair of QPs, registered memory), wait with deadlines, drain a
//! QP and collect what it completed, and check that every `wr_id` was seen exactly once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::cm::ready_for_receives;
use anyverbs::{
    Access, CompletionQueue, ConnParams, Connection, Device, DeviceInfo, DrainReport, Error,
    ErrorKind, Listener, MemoryRegion, ProtectionDomain, Provider, QpInit, QueuePair, WcStatus,
};
use anyverbs::{Completion, StateModel};

use crate::case::{CaseError, CaseResult};

/// The context of one case run.
pub struct Ctx<'a, P: Provider> {
    provider: Arc<P>,
    device: &'a str,
    info: DeviceInfo,
    timeout: Duration,
}

/// Two QPs on the device under test, connected to each other through the connection manager.
///
/// `a` connected (active side), `b` accepted (passive side). Each has its own CQ used for both
/// its queues. Fields drop in order, QPs before CQs before the PD.
pub struct Pair<P: Provider> {
    /// Active side.
    pub a: P::Qp,
    /// Passive side.
    pub b: P::Qp,
    /// The listener `b` was accepted from.
    pub listener: P::Listener,
    /// CQ of `a` (send and receive).
    pub cq_a: P::Cq,
    /// CQ of `b` (send and receive).
    pub cq_b: P::Cq,
    /// The PD of both QPs.
    pub pd: P::Pd,
    /// What `a` learned when it connected.
    pub connection: Connection,
    /// The open device.
    pub device: P::Device,
}

/// Two QPs of one device connected to each other, built on a device handle the caller keeps
/// (see [`loopback`]): a [`Pair`] without the device. Fields drop in order, QPs before CQs
/// before the PD.
pub struct Loopback<P: Provider> {
    /// Active side.
    pub a: P::Qp,
    /// Passive side.
    pub b: P::Qp,
    /// The listener `b` was accepted from.
    pub listener: P::Listener,
    /// CQ of `a` (send and receive).
    pub cq_a: P::Cq,
    /// CQ of `b` (send and receive).
    pub cq_b: P::Cq,
    /// The PD of both QPs.
    pub pd: P::Pd,
    /// What `a` learned when it connected.
    pub connection: Connection,
}

/// The first address of `device` the connection manager can reach, with port 0 (any port), or
/// `None` if it has none.
pub fn device_address<P: Provider>(device: &P::Device) -> anyverbs::Result<Option<SocketAddr>> {
    Ok(device
        .ports()?
        .iter()
        .flat_map(|p| p.addresses.iter())
        .next()
        .map(|ip| SocketAddr::new(*ip, 0)))
}

/// Connects two fresh QPs of `device` to each other through the connection manager, waiting
/// until `deadline` at most: what [`Ctx::pair_with`] builds, on a device handle the caller
/// already holds and without a [`Ctx`] — for code that runs outside a case's thread, such as a
/// service under a supervisor. Both QPs are made ready for receives before they are connected
/// ([`ready_for_receives`]), as a ULP does. Errors keep their kind (a lost device is
/// [`ErrorKind::DeviceLost`]); a device without an address is [`ErrorKind::NotSupported`].
pub fn loopback<P: Provider>(
    device: &P::Device,
    init: &QpInit,
    params: &ConnParams,
    cq_depth: u32,
    deadline: Instant,
) -> anyverbs::Result<Loopback<P>> {
    let addr = device_address::<P>(device)?.ok_or_else(|| {
        Error::new(
            ErrorKind::NotSupported,
            "the device has no address for the connection manager",
        )
    })?;
    let pd = device.alloc_pd()?;
    let cq_a = device.create_cq(cq_depth)?;
    let cq_b = device.create_cq(cq_depth)?;
    let a = pd.create_qp(&cq_a, &cq_a, init)?;
    let b = pd.create_qp(&cq_b, &cq_b, init)?;
    let model = device.info().state_model;
    ready_for_receives(&a, model)?;
    ready_for_receives(&b, model)?;
    let listener = device.listen(addr)?;
    a.connect(listener.local_addr(), params)?;
    let request = listener.next_request(deadline)?;
    listener.accept(&request, &b, params)?;
    let connection = a.wait_connected(deadline)?;
    Ok(Loopback {
        a,
        b,
        listener,
        cq_a,
        cq_b,
        pd,
        connection,
    })
}

/// One unconnected QP on the device under test, with its own PD and CQ. Fields drop in order.
pub struct LoneQp<P: Provider> {
    /// The QP, in its initial state.
    pub qp: P::Qp,
    /// Its CQ (send and receive).
    pub cq: P::Cq,
    /// Its PD.
    pub pd: P::Pd,
    /// The open device.
    pub device: P::Device,
}

impl<'a, P: Provider> Ctx<'a, P> {
    /// A context for running cases against `device` of `provider`, each wait bounded by
    /// `timeout`. Give every case a provider of its own: lifecycle cases reset and unplug the
    /// device.
    pub fn new(
        provider: Arc<P>,
        device: &'a str,
        info: DeviceInfo,
        timeout: Duration,
    ) -> Ctx<'a, P> {
        Ctx {
            provider,
            device,
            info,
            timeout,
        }
    }

    /// The provider under test.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// The provider under test, shared: for what must hold on to it, such as a
    /// [`Supervisor`](anyverbs::supervisor::Supervisor).
    pub fn shared_provider(&self) -> Arc<P> {
        Arc::clone(&self.provider)
    }

    /// The longest any single wait in a case may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Name of the device under test.
    pub fn device_name(&self) -> &str {
        self.device
    }

    /// What the provider reported about the device when the run started.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The device's QP state model.
    pub fn state_model(&self) -> StateModel {
        self.info.state_model
    }

    /// A deadline `timeout` from now: the longest any single wait in a case may take.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The deadline to give a drain: [`DRAIN_BUDGET`] (1 s) from now, or `timeout` if that is
    /// shorter.
    ///
    /// Shorter than [`deadline`](Self::deadline) on purpose: a drain on a device that never
    /// flushes (a dead device, a lost marker) returns only at its deadline, after stopping the
    /// hardware QP and synthesizing the completions, so every drain a case makes costs up to its
    /// whole budget there. A second is far more than any device that does flush needs.
    pub fn drain_deadline(&self) -> Instant {
        Instant::now() + self.timeout.min(DRAIN_BUDGET)
    }

    /// Opens the device under test.
    pub fn open(&self) -> Result<P::Device, CaseError> {
        Ok(self.provider.open(self.device)?)
    }

    /// The first address of the device the connection manager can reach, or not-run.
    pub fn address(&self, device: &P::Device) -> Result<SocketAddr, CaseError> {
        device_address::<P>(device)?.ok_or_else(|| {
            CaseError::NotRun("the device has no address for the connection manager".into())
        })
    }

    /// One unconnected QP with default sizes and a CQ of `cq_depth`.
    pub fn lone_qp(&self, cq_depth: u32) -> Result<LoneQp<P>, CaseError> {
        let device = self.open()?;
        let pd = device.alloc_pd()?;
        let cq = device.create_cq(cq_depth)?;
        let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
        Ok(LoneQp { qp, cq, pd, device })
    }

    /// A connected pair of QPs with default sizes.
    pub fn pair(&self) -> Result<Pair<P>, CaseError> {
        self.pair_with(&QpInit::default(), &ConnParams::default(), 256)
    }

    /// A connected pair of QPs with the given sizes, connection parameters and CQ depth.
    pub fn pair_with(
        &self,
        init: &QpInit,
        params: &ConnParams,
        cq_depth: u32,
    ) -> Result<Pair<P>, CaseError> {
        let device = self.open()?;
        let pd = device.alloc_pd()?;
        let cq_a = device.create_cq(cq_depth)?;
        let cq_b = device.create_cq(cq_depth)?;
        let a = pd.create_qp(&cq_a, &cq_a, init)?;
        let b = pd.create_qp(&cq_b, &cq_b, init)?;
        let (listener, connection) = self.connect(&device, &a, &b, params)?;
        Ok(Pair {
            a,
            b,
            listener,
            cq_a,
            cq_b,
            pd,
            connection,
            device,
        })
    }

    /// Connects two QPs of `device` through the connection manager: `active` connects to a
    /// fresh listener on the device's address, and `passive` is accepted from it. Both are made
    /// ready for receives first ([`ready_for_receives`]), as a ULP does before it connects, so a
    /// case may also post receives on them before calling this. Returns the listener (keep it as
    /// long as the connection) and what `active` learned.
    pub fn connect(
        &self,
        device: &P::Device,
        active: &P::Qp,
        passive: &P::Qp,
        params: &ConnParams,
    ) -> Result<(P::Listener, Connection), CaseError> {
        ready_for_receives(active, self.state_model())?;
        ready_for_receives(passive, self.state_model())?;
        let listener = device.listen(self.address(device)?)?;
        active.connect(listener.local_addr(), params)?;
        let request = listener.next_request(self.deadline())?;
        listener.accept(&request, passive, params)?;
        let connection = active.wait_connected(self.deadline())?;
        Ok((listener, connection))
    }

    /// Registers `len` bytes with `access` in `pd`.
    pub fn mr(&self, pd: &P::Pd, len: usize, access: Access) -> Result<P::Mr, CaseError> {
        Ok(pd.register(len, access)?)
    }

    /// A region with every access right, filled with `fill`.
    pub fn mr_filled(&self, pd: &P::Pd, len: usize, fill: u8) -> Result<P::Mr, CaseError> {
        let mr = pd.register(
            len,
            Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
        )?;
        mr.write(0, &vec![fill; len])?;
        Ok(mr)
    }

    /// Reads the whole region.
    pub fn contents(&self, mr: &P::Mr) -> Result<Vec<u8>, CaseError> {
        let mut buf = vec![0; mr.len()];
        mr.read(0, &mut buf)?;
        Ok(buf)
    }

    /// Waits for exactly `n` completions on `cq`, failing if they do not all arrive in time.
    pub fn completions(&self, cq: &P::Cq, n: usize) -> Result<Vec<Completion>, CaseError> {
        let deadline = self.deadline();
        let mut got = Vec::with_capacity(n);
        let mut buf = [Completion::default(); 16];
        while got.len() < n {
            let want = (n - got.len()).min(buf.len());
            match cq.wait(&mut buf[..want], deadline) {
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(CaseError::Failed(format!(
                        "expected {n} completions, got {} before the deadline: {got:?}",
                        got.len()
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(got)
    }

    /// Waits for one completion on `cq`.
    pub fn completion(&self, cq: &P::Cq) -> Result<Completion, CaseError> {
        Ok(self.completions(cq, 1)?[0])
    }

    /// Fails if any completion appears on `cq` within `quiet`.
    pub fn expect_quiet(&self, cq: &P::Cq, quiet: Duration) -> CaseResult {
        let until = Instant::now() + quiet;
        let mut buf = [Completion::default(); 4];
        loop {
            let n = cq.poll(&mut buf)?;
            if n > 0 {
                return Err(CaseError::Failed(format!(
                    "unexpected completions: {:?}",
                    &buf[..n]
                )));
            }
            if Instant::now() >= until {
                return Ok(());
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// Checks that a completion is for `wr_id` with `status`.
    pub fn expect_status(&self, c: &Completion, wr_id: u64, status: WcStatus) -> CaseResult {
        if c.wr_id != wr_id || c.status != status {
            return Err(CaseError::Failed(format!(
                "expected wr_id {wr_id} with status {status}, got wr_id {} with {}",
                c.wr_id, c.status
            )));
        }
        Ok(())
    }

    /// Drains both QPs of a pair, each with a [`drain_deadline`](Self::drain_deadline).
    pub fn drain_pair(&self, pair: &Pair<P>) -> CaseResult {
        pair.a.drain(self.drain_deadline())?;
        pair.b.drain(self.drain_deadline())?;
        Ok(())
    }

    /// Everything `cq` holds right now: polls until it comes back empty, without waiting for
    /// more.
    pub fn poll_all(&self, cq: &P::Cq) -> Result<Vec<Completion>, CaseError> {
        let mut got = Vec::new();
        poll_into(cq, &mut got, self.deadline())?;
        Ok(got)
    }

    /// Drains `qp` with a [`drain_deadline`](Self::drain_deadline) and collects every
    /// completion from its CQs; see [`drain_and_collect_by`](Self::drain_and_collect_by).
    pub fn drain_and_collect(&self, qp: &P::Qp, cqs: &[&P::Cq]) -> Result<Drained, CaseError> {
        self.drain_and_collect_by(qp, cqs, self.drain_deadline())
    }

    /// Drains `qp` by `deadline`, then collects every completion its CQs `cqs` hold, and checks
    /// the clauses of the drain contract that hold for any drain that returned `Ok`:
    ///
    /// - it returned by `deadline` (give or take [`DRAIN_SLACK`]; clauses 1 and 5);
    /// - its report's `elapsed` is no longer than the wall time measured around the call
    ///   (clause 6);
    /// - once each CQ has been polled empty, no completion of `qp` appears on any of them for
    ///   [`QUIET_AFTER_DRAIN`]: everything was in the CQs when the drain returned (clauses 2
    ///   and 3).
    ///
    /// Completions of other QPs sharing the CQs are collected too (they are the caller's to
    /// judge; tell them apart by `qp_num`), including any that arrive in the quiet window. The
    /// caller checks the `wr_id`s with [`expect_each_once`](Self::expect_each_once) and the
    /// report's totals; completions it polled before the drain belong in that check too.
    pub fn drain_and_collect_by(
        &self,
        qp: &P::Qp,
        cqs: &[&P::Cq],
        deadline: Instant,
    ) -> Result<Drained, CaseError> {
        let start = Instant::now();
        let report = qp
            .drain(deadline)
            .map_err(|e| CaseError::Failed(format!("drain failed: {e}")))?;
        let returned = Instant::now();
        let wall = returned - start;
        if returned > deadline + DRAIN_SLACK {
            return Err(CaseError::Failed(format!(
                "drain returned {:?} after its deadline ({report})",
                returned - deadline
            )));
        }
        if report.elapsed > wall {
            return Err(CaseError::Failed(format!(
                "the drain report says it took {:?}, but the call took {wall:?}",
                report.elapsed
            )));
        }
        let mut completions = Vec::new();
        for cq in cqs {
            poll_into(*cq, &mut completions, self.deadline())?;
        }
        let qp_num = qp.qp_num();
        let until = Instant::now() + QUIET_AFTER_DRAIN;
        let mut late = Vec::new();
        loop {
            for cq in cqs {
                poll_into(*cq, &mut late, self.deadline())?;
            }
            if Instant::now() >= until {
                break;
            }
            thread::sleep(Duration::from_micros(500));
        }
        let of_qp: Vec<&Completion> = late.iter().filter(|c| c.qp_num == qp_num).collect();
        if !of_qp.is_empty() {
            return Err(CaseError::Failed(format!(
                "completions of QP {qp_num} appeared after its drain returned and its CQs were \
                 polled empty ({report}): {of_qp:?}"
            )));
        }
        completions.extend(late);
        Ok(Drained {
            report,
            wall,
            returned,
            completions,
        })
    }

    /// Checks a set of completions against what a case expects of each `wr_id`: every
    /// [`must`](Expected::must) id exactly once, every [`may`](Expected::may) id at most once,
    /// each with one of the statuses allowed for it, no id twice and no other id at all (and,
    /// with [`Expected::on_qp`], each on the right QP). The failure lists every discrepancy.
    pub fn expect_each_once(&self, completions: &[Completion], expected: &Expected) -> CaseResult {
        expected.check(completions)
    }
}

/// The longest drain budget [`Ctx::drain_deadline`] gives.
pub const DRAIN_BUDGET: Duration = Duration::from_secs(1);

/// How long after its deadline a drain may return before the suite says it blocked past it:
/// scheduling, and the stop-and-synthesize work a fallback does once the deadline has passed.
pub const DRAIN_SLACK: Duration = Duration::from_millis(150);

/// How long [`Ctx::drain_and_collect`] watches the CQs for late completions after a drain.
pub const QUIET_AFTER_DRAIN: Duration = Duration::from_millis(40);

/// A flush error: what a WR that never executed completes with.
pub const FLUSHED: &[WcStatus] = &[WcStatus::WrFlushError];

/// Success: what a WR that executed completes with.
pub const SUCCEEDED: &[WcStatus] = &[WcStatus::Success];

/// Success or a flush error: for a WR that may or may not have executed before the QP left RTS.
pub const SUCCEEDED_OR_FLUSHED: &[WcStatus] = &[WcStatus::Success, WcStatus::WrFlushError];

/// Polls `cq` into `out` until it comes back empty; fails if it is still producing at
/// `deadline`.
fn poll_into<C: CompletionQueue>(
    cq: &C,
    out: &mut Vec<Completion>,
    deadline: Instant,
) -> CaseResult {
    let mut buf = [Completion::default(); 32];
    loop {
        let n = cq.poll(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buf[..n]);
        if Instant::now() >= deadline {
            return Err(CaseError::Failed(format!(
                "the CQ never ran dry ({} completions polled)",
                out.len()
            )));
        }
    }
}

/// What [`Ctx::drain_and_collect`] saw: the drain's report, how long the call took, and every
/// completion its CQs held afterwards.
#[derive(Debug, Clone)]
pub struct Drained {
    /// What the drain reported.
    pub report: DrainReport,
    /// The wall time of the `drain` call, measured by the suite.
    pub wall: Duration,
    /// When the `drain` call returned.
    pub returned: Instant,
    /// Every completion polled from the CQs after the drain, in the order polled (CQ by CQ).
    pub completions: Vec<Completion>,
}

/// What a case expects to see of each `wr_id`, for [`Ctx::expect_each_once`].
///
/// ```
/// use anyverbs::{Completion, WcStatus};
/// use anyverbs_conformance::ctx::{Expected, FLUSHED, SUCCEEDED_OR_FLUSHED};
///
/// let expected = Expected::new()
///     .must([1, 2], FLUSHED) // exactly once each, flushed
///     .may([3], FLUSHED) // an unsignaled send: at most once, and never a success
///     .must([4], SUCCEEDED_OR_FLUSHED);
/// let c = |wr_id, status| Completion { wr_id, status, ..Completion::default() };
/// let flushed = WcStatus::WrFlushError;
/// assert!(expected.check(&[c(1, flushed), c(4, WcStatus::Success), c(2, flushed)]).is_ok());
/// assert!(expected.check(&[c(1, flushed), c(2, flushed)]).is_err()); // 4 is missing
/// assert!(expected.check(&[c(1, flushed), c(1, flushed), c(2, flushed)]).is_err()); // 1 twice
/// ```
#[derive(Debug, Clone, Default)]
pub struct Expected {
    qp_num: Option<u32>,
    rules: BTreeMap<u64, Rule>,
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    required: bool,
    statuses: &'static [WcStatus],
}

impl Expected {
    /// Expects nothing at all: any completion fails the check.
    pub fn new() -> Expected {
        Expected::default()
    }

    /// Each of `ids` must be seen exactly once, with one of `statuses`.
    ///
    /// # Panics
    ///
    /// If an id was already listed (a bug in the case).
    pub fn must(self, ids: impl IntoIterator<Item = u64>, statuses: &'static [WcStatus]) -> Self {
        self.rule(ids, true, statuses)
    }

    /// Each of `ids` may be seen at most once, and then with one of `statuses`.
    ///
    /// # Panics
    ///
    /// If an id was already listed (a bug in the case).
    pub fn may(self, ids: impl IntoIterator<Item = u64>, statuses: &'static [WcStatus]) -> Self {
        self.rule(ids, false, statuses)
    }

    /// Every completion must carry QP number `qp_num`.
    pub fn on_qp(mut self, qp_num: u32) -> Self {
        self.qp_num = Some(qp_num);
        self
    }

    fn rule(
        mut self,
        ids: impl IntoIterator<Item = u64>,
        required: bool,
        statuses: &'static [WcStatus],
    ) -> Self {
        for id in ids {
            let old = self.rules.insert(id, Rule { required, statuses });
            assert!(old.is_none(), "wr_id {id} listed twice in an Expected");
        }
        self
    }

    /// How many ids must be seen.
    pub fn required(&self) -> usize {
        self.rules.values().filter(|r| r.required).count()
    }

    /// Checks `completions`; see [`Ctx::expect_each_once`].
    pub fn check(&self, completions: &[Completion]) -> CaseResult {
        const SHOWN: usize = 12;
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        let mut problems: Vec<String> = Vec::new();
        for c in completions {
            let times = seen.entry(c.wr_id).or_insert(0);
            *times += 1;
            match self.rules.get(&c.wr_id) {
                None => {
                    problems.push(format!(
                        "unexpected wr_id {} ({}, QP {})",
                        c.wr_id, c.status, c.qp_num
                    ));
                    continue;
                }
                Some(rule) => {
                    if *times == 2 {
                        problems.push(format!("wr_id {} seen more than once", c.wr_id));
                    }
                    if !rule.statuses.contains(&c.status) {
                        problems.push(format!(
                            "wr_id {} completed with {}; expected one of {:?}",
                            c.wr_id, c.status, rule.statuses
                        ));
                    }
                }
            }
            if let Some(qp_num) = self.qp_num
                && c.qp_num != qp_num
            {
                problems.push(format!(
                    "wr_id {} carries QP number {}; expected {qp_num}",
                    c.wr_id, c.qp_num
                ));
            }
        }
        let missing: Vec<u64> = self
            .rules
            .iter()
            .filter(|(id, r)| r.required && !seen.contains_key(id))
            .map(|(id, _)| *id)
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} wr_ids never completed: {:?}{}",
                missing.len(),
                &missing[..missing.len().min(SHOWN)],
                if missing.len() > SHOWN { " ..." } else { "" }
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let mut msg = format!(
            "{} completions do not account for each wr_id exactly once: ",
            completions.len()
        );
        msg.push_str(&problems[..problems.len().min(SHOWN)].join("; "));
        if problems.len() > SHOWN {
            let _ = write!(msg, "; and {} more", problems.len() - SHOWN);
        }
        Err(CaseError::Failed(msg))
    }
}

/// Asks `poll(2)`, as an event loop would, whether `fd` becomes readable within `wait`; an
/// error condition or a hang-up counts, as it wakes a loop as well.
#[cfg(unix)]
#[allow(unsafe_code)] // one poll(2) call, on a borrowed (so open) descriptor
pub(crate) fn fd_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    wait: Duration,
) -> Result<bool, CaseError> {
    use std::os::fd::AsRawFd;
    let until = Instant::now() + wait;
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = until.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `pfd` is one initialised pollfd that lives across the call, the count says
        // one, and its fd is open for the call's duration: it is borrowed.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CaseError::Failed(format!(
                "poll(2) on fd {} failed: {err}",
                fd.as_raw_fd()
            )));
        }
        return Ok(n == 1 && pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0);
    }
}
