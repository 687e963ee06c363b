//! What a case gets to work with: the provider, the device under test, and helpers that build
//! the usual fixtures (a connected pair of QPs, registered memory) and wait with deadlines.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, CompletionQueue, ConnParams, Connection, Device, DeviceInfo, Listener, MemoryRegion,
    ProtectionDomain, Provider, QpInit, QueuePair, WcStatus,
};
use anyverbs::{Completion, StateModel};

use crate::case::{CaseError, CaseResult};

/// The context of one case run.
pub struct Ctx<'a, P: Provider> {
    provider: &'a P,
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
    /// `timeout`.
    pub fn new(
        provider: &'a P,
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
        self.provider
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

    /// Opens the device under test.
    pub fn open(&self) -> Result<P::Device, CaseError> {
        Ok(self.provider.open(self.device)?)
    }

    /// The first address of the device the connection manager can reach, or not-run.
    pub fn address(&self, device: &P::Device) -> Result<SocketAddr, CaseError> {
        device
            .ports()?
            .iter()
            .flat_map(|p| p.addresses.iter())
            .next()
            .map(|ip| SocketAddr::new(*ip, 0))
            .ok_or_else(|| {
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
        let addr = self.address(&device)?;
        let pd = device.alloc_pd()?;
        let cq_a = device.create_cq(cq_depth)?;
        let cq_b = device.create_cq(cq_depth)?;
        let a = pd.create_qp(&cq_a, &cq_a, init)?;
        let b = pd.create_qp(&cq_b, &cq_b, init)?;
        let listener = device.listen(addr)?;
        a.connect(listener.local_addr(), params)?;
        let request = listener.next_request(self.deadline())?;
        listener.accept(&request, &b, params)?;
        let connection = a.wait_connected(self.deadline())?;
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
                Err(e) if e.kind() == anyverbs::ErrorKind::TimedOut => {
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

    /// Drains both QPs of a pair, then checks that nothing more completes.
    pub fn drain_pair(&self, pair: &Pair<P>) -> CaseResult {
        pair.a.drain(self.deadline())?;
        pair.b.drain(self.deadline())?;
        Ok(())
    }
}
