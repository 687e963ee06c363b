//! The simulated device's raw objects: what the provider kit drives.
//!
//! The mock is a device simulator behind [`anyverbs::kit`]. A [`SimQp`] posts WRs whose `wr_id`s
//! are the kit's tokens into simulated rings; a [`SimCq`] is a simulated ring of raw
//! completions that the kit polls and resolves, exactly as it polls a real CQ; a [`SimPd`] and
//! a [`SimMr`] are the device's PD and regions, whose handle lifetimes the kit keeps. Nothing
//! here knows what a token means, which WRs are markers, or when a drain is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyverbs::kit::{DeviceLife, RawChannel, RawCq, RawMr, RawPd, RawQp};
use anyverbs::{
    Access, Caps, Completion, ConnParams, Connection, PostError, QpInit, QpState, RecvWr, Result,
    SendWr,
};

use crate::error::MockError;
use crate::fabric::Fabric;
use crate::fabric::channels::ChannelCore;
use crate::fabric::memory::{HostPtr, Memory};

/// A completion queue of a simulated device: its ring of raw completions.
pub struct SimCq {
    fabric: Arc<Fabric>,
    /// The device incarnation it was created on.
    dev: u32,
    /// The incarnation's liveness: checked on the data path instead of looking the incarnation
    /// up (both change together, under the fabric's lock).
    life: DeviceLife,
    id: u32,
}

impl std::fmt::Debug for SimCq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCq")
            .field("device_index", &self.dev)
            .field("cq_num", &self.id)
            .finish_non_exhaustive()
    }
}

impl SimCq {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, life: DeviceLife, id: u32) -> Self {
        SimCq {
            fabric,
            dev,
            life,
            id,
        }
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }
}

impl RawCq for SimCq {
    fn cq_num(&self) -> u32 {
        self.id
    }

    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        self.fabric.with(|st| {
            self.life.check()?;
            Ok(st.poll(self.id, out)?)
        })
    }

    fn wait(&self, deadline: Instant) -> Result<bool> {
        let waited = self
            .fabric
            .wait_live(self.dev, deadline, "a completion", |st| {
                st.cq_ready(self.id)
            });
        match waited {
            Ok(()) => Ok(true),
            Err(MockError::TimedOut(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn wake(&self) {
        self.fabric.with(|st| st.wake_cq(self.id));
    }

    fn arm(&self, solicited_only: bool) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.arm_cq(self.id, solicited_only))?)
    }

    fn reserve(&self, extra: u32) -> Result<()> {
        Ok(self.fabric.with(|st| st.reserve_cq(self.id, extra))?)
    }

    fn destroy(&self) -> Result<()> {
        Ok(self.fabric.with(|st| st.destroy_cq(self.id))?)
    }
}

impl Drop for SimCq {
    fn drop(&mut self) {
        self.fabric.with(|st| st.drop_cq(self.id));
    }
}

/// A completion channel of a simulated device: its queue of CQs that fired and the socket whose
/// readable end a ULP watches.
pub struct SimChannel {
    fabric: Arc<Fabric>,
    life: DeviceLife,
    id: u32,
    core: Arc<ChannelCore>,
}

impl std::fmt::Debug for SimChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimChannel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SimChannel {
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        life: DeviceLife,
        id: u32,
        core: Arc<ChannelCore>,
    ) -> Self {
        SimChannel {
            fabric,
            life,
            id,
            core,
        }
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

impl RawChannel for SimChannel {
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.core.fd()
    }

    fn next(&self) -> Result<Option<u32>> {
        // The channel's own lock only: reading it never waits for the fabric.
        self.life.check()?;
        Ok(self.core.next())
    }

    fn destroy(&self) -> Result<()> {
        Ok(self.fabric.with(|st| st.destroy_channel(self.id))?)
    }
}

impl Drop for SimChannel {
    fn drop(&mut self) {
        self.fabric.with(|st| st.drop_channel(self.id));
    }
}

/// A reliable-connected queue pair of a simulated device: its rings, its state and its
/// connection.
pub struct SimQp {
    fabric: Arc<Fabric>,
    /// The device incarnation it was created on.
    dev: u32,
    /// The incarnation's liveness, as [`SimCq`]'s.
    life: DeviceLife,
    qpn: u32,
    caps: Caps,
    /// The sizes the simulated device granted: exactly what it was asked for (the ULP's sizes
    /// and the kit's slot per queue for the drain's markers).
    granted: QpInit,
}

impl std::fmt::Debug for SimQp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimQp")
            .field("device_index", &self.dev)
            .field("qp_num", &self.qpn)
            .finish_non_exhaustive()
    }
}

impl SimQp {
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        dev: u32,
        life: DeviceLife,
        qpn: u32,
        caps: Caps,
        granted: QpInit,
    ) -> Self {
        SimQp {
            fabric,
            dev,
            life,
            qpn,
            caps,
            granted,
        }
    }

    pub(crate) fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub(crate) fn dev(&self) -> u32 {
        self.dev
    }
}

impl RawQp for SimQp {
    type Cq = SimCq;

    fn qp_num(&self) -> u32 {
        self.qpn
    }

    fn granted(&self) -> QpInit {
        self.granted
    }

    fn state(&self) -> Result<QpState> {
        let st = self.fabric.lock();
        st.check_live(self.dev)?;
        Ok(st.qp_state(self.qpn)?)
    }

    fn modify(&self, to: QpState) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.modify(self.qpn, to))?)
    }

    fn enter_error(&self) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.drain_enter_error(self.qpn))?)
    }

    fn post_send(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        self.fabric.with(|st| {
            self.life.check().map_err(|e| PostError::new(0, e))?;
            st.post_send(self.qpn, wrs, self.caps)
        })
    }

    fn post_recv(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        self.fabric.with(|st| {
            self.life.check().map_err(|e| PostError::new(0, e))?;
            st.post_recv(self.qpn, wrs)
        })
    }

    fn connect(&self, remote: SocketAddr, params: &ConnParams) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.connect(self.qpn, remote, params))?)
    }

    fn wait_connected(&self, deadline: Instant) -> Result<Connection> {
        Ok(self
            .fabric
            .wait_live(self.dev, deadline, "the connection", |st| {
                st.connection(self.qpn)
            })?)
    }

    fn disconnect(&self, orderly: bool) -> Result<QpState> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.disconnect(self.qpn, orderly))?)
    }

    fn stop(&self) -> Result<()> {
        Ok(self
            .fabric
            .with_live(self.dev, |st| st.stop_device_qp(self.qpn))?)
    }

    fn destroy(&self) -> Result<()> {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
        Ok(())
    }
}

impl Drop for SimQp {
    fn drop(&mut self) {
        self.fabric.with(|st| st.destroy_qp(self.qpn));
    }
}

/// A protection domain of a simulated device.
pub struct SimPd {
    fabric: Arc<Fabric>,
    /// The device incarnation it was allocated on.
    dev: u32,
    id: u32,
}

impl std::fmt::Debug for SimPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPd")
            .field("device_index", &self.dev)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SimPd {
    pub(crate) fn new(fabric: Arc<Fabric>, dev: u32, id: u32) -> Self {
        SimPd { fabric, dev, id }
    }

    /// The handle of a region the fabric registered: its keys, address and host memory as
    /// the fabric returned them, with the length and access asked for.
    fn region(
        &self,
        (lkey, rkey, addr, host): (u32, u32, u64, HostPtr),
        len: usize,
        access: Access,
    ) -> SimMr {
        SimMr {
            fabric: Arc::clone(&self.fabric),
            lkey,
            rkey,
            addr,
            len,
            access,
            host,
        }
    }
}

impl RawPd for SimPd {
    type Mr = SimMr;
    type Qp = SimQp;

    fn register(&self, len: usize, access: Access) -> Result<SimMr> {
        let keys = self
            .fabric
            .with_live(self.dev, |st| st.register(self.id, len, access))?;
        Ok(self.region(keys, len, access))
    }

    #[allow(unsafe_code)]
    unsafe fn register_memory(&self, addr: *mut u8, len: usize, access: Access) -> Result<SimMr> {
        let ptr = std::ptr::NonNull::new(addr)
            .ok_or_else(|| anyverbs::Error::invalid_argument("a null address"))?;
        // SAFETY: the caller's contract (`register_memory`'s) is `Memory::caller`'s: the memory
        // stays valid until the region is deregistered, which drops the record holding it.
        let mem = unsafe { Memory::caller(ptr, len) };
        let keys = self
            .fabric
            .with_live(self.dev, |st| st.register_memory(self.id, mem, access))?;
        Ok(self.region(keys, len, access))
    }

    fn create_qp(&self, send_cq: &SimCq, recv_cq: &SimCq, init: &QpInit) -> Result<SimQp> {
        if !Arc::ptr_eq(&self.fabric, send_cq.fabric())
            || !Arc::ptr_eq(&self.fabric, recv_cq.fabric())
        {
            return Err(anyverbs::Error::invalid_argument(
                "the CQ belongs to another mock fabric",
            ));
        }
        let (qpn, caps, life) = self.fabric.with_live(self.dev, |st| {
            let qpn = st.create_qp(self.id, send_cq.cq_num(), recv_cq.cq_num(), init)?;
            Ok((qpn, st.caps(self.dev), st.life(self.dev)))
        })?;
        Ok(SimQp::new(
            Arc::clone(&self.fabric),
            self.dev,
            life,
            qpn,
            caps,
            anyverbs::kit::device_init(init),
        ))
    }

    fn destroy(&self) -> Result<()> {
        Ok(self.fabric.with(|st| st.destroy_pd(self.id))?)
    }
}

/// A memory region of a simulated device: zeroed memory the fabric owns, or a caller's
/// memory; either way host memory the program may reach directly.
pub struct SimMr {
    fabric: Arc<Fabric>,
    lkey: u32,
    rkey: u32,
    addr: u64,
    len: usize,
    access: Access,
    host: HostPtr,
}

impl std::fmt::Debug for SimMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMr")
            .field("lkey", &self.lkey)
            .finish_non_exhaustive()
    }
}

impl RawMr for SimMr {
    fn addr(&self) -> u64 {
        self.addr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lkey(&self) -> u32 {
        self.lkey
    }

    fn rkey(&self) -> u32 {
        self.rkey
    }

    fn access(&self) -> Access {
        self.access
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        Ok(self.fabric.lock().mr_copy_in(self.lkey, offset, src)?)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        Ok(self.fabric.lock().mr_copy_out(self.lkey, offset, dst)?)
    }

    fn host_ptr(&self) -> Option<std::ptr::NonNull<u8>> {
        Some(self.host.get())
    }

    fn destroy(&self) -> Result<()> {
        self.fabric.with(|st| st.destroy_mr(self.lkey));
        Ok(())
    }
}
