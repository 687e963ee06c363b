//! Protection domains and memory regions.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use anyverbs::kit::{RawMr, RawPd};
use anyverbs::{Access, Error, QpInit, Result};

use super::cq::RawVerbsCq;
use super::device::DeviceCore;
use super::held::{Held, Kind};
use super::qp::RawVerbsQp;
use crate::objects::{self, Mr, Pd};

/// The verbs access flags for the core's.
pub(crate) fn access(a: Access) -> objects::Access {
    objects::Access {
        local_write: a.contains(Access::LOCAL_WRITE),
        remote_write: a.contains(Access::REMOTE_WRITE),
        remote_read: a.contains(Access::REMOTE_READ),
        remote_atomic: a.contains(Access::REMOTE_ATOMIC),
    }
}

/// A protection domain of the device (`ibv_pd`). The device's PD is released once this and
/// every region and QP made on it are gone (they hold it).
pub struct RawVerbsPd {
    core: Arc<DeviceCore>,
    pd: Pd,
    _held: Held,
}

impl std::fmt::Debug for RawVerbsPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVerbsPd").finish_non_exhaustive()
    }
}

impl RawVerbsPd {
    pub(crate) fn alloc(core: &Arc<DeviceCore>) -> Result<RawVerbsPd> {
        Ok(RawVerbsPd {
            pd: core.context.alloc_pd()?,
            _held: core.held.another(Kind::Pd),
            core: core.clone(),
        })
    }

    fn region(&self, mr: Mr, access: Access) -> RawVerbsMr {
        self.core
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mr.lkey(), (mr.addr(), mr.len()));
        RawVerbsMr {
            core: self.core.clone(),
            addr: mr.addr(),
            len: mr.len(),
            lkey: mr.lkey(),
            rkey: mr.rkey(),
            ptr: mr.host_ptr(),
            access,
            mr: Mutex::new(Some(mr)),
            _held: self.core.held.another(Kind::Mr),
        }
    }
}

impl RawPd for RawVerbsPd {
    type Mr = RawVerbsMr;
    type Qp = RawVerbsQp;

    fn register(&self, len: usize, a: Access) -> Result<RawVerbsMr> {
        self.core.check()?;
        let mr = Mr::alloc(&self.pd, len, access(a))?;
        Ok(self.region(mr, a))
    }

    #[allow(unsafe_code)]
    unsafe fn register_memory(&self, addr: *mut u8, len: usize, a: Access) -> Result<RawVerbsMr> {
        self.core.check()?;
        let addr = NonNull::new(addr).ok_or_else(|| Error::invalid_argument("a null address"))?;
        // SAFETY: the caller's contract (RawPd::register_memory): the memory stays valid and in
        // place until the region is deregistered, which `RawVerbsMr::destroy` does.
        let mr = unsafe { Mr::register(&self.pd, addr, len, access(a))? };
        Ok(self.region(mr, a))
    }

    fn create_qp(
        &self,
        send_cq: &RawVerbsCq,
        recv_cq: &RawVerbsCq,
        init: &QpInit,
    ) -> Result<RawVerbsQp> {
        self.core.check()?;
        if !Arc::ptr_eq(send_cq.core(), &self.core) || !Arc::ptr_eq(recv_cq.core(), &self.core) {
            return Err(Error::invalid_argument(
                "the CQs belong to another device handle than the PD",
            ));
        }
        RawVerbsQp::create(&self.core, &self.pd, send_cq, recv_cq, init)
    }

    fn destroy(&self) -> Result<()> {
        // The device's PD is released with the last reference to it (see the type's docs).
        Ok(())
    }
}

/// A memory region of the device (`ibv_mr`), over memory it owns or the caller's.
pub struct RawVerbsMr {
    core: Arc<DeviceCore>,
    addr: u64,
    len: usize,
    lkey: u32,
    rkey: u32,
    ptr: NonNull<u8>,
    access: Access,
    /// The registration; `None` once deregistered. Reads and writes of the process copy under
    /// this lock, so two of them never race each other on the bytes.
    mr: Mutex<Option<Mr>>,
    _held: Held,
}

// SAFETY: `ptr` is the region's memory, reached only through copies under the `mr` lock (or by
// the ULP through `host_ptr`, under the aliasing contract of the core's `mr` docs); the rest is
// plain data and `Mr`, which is Send + Sync.
#[allow(unsafe_code)]
unsafe impl Send for RawVerbsMr {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for RawVerbsMr {}

impl std::fmt::Debug for RawVerbsMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVerbsMr")
            .field("addr", &self.addr)
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .finish_non_exhaustive()
    }
}

impl RawMr for RawVerbsMr {
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
        let mut mr = self.mr.lock().unwrap_or_else(|e| e.into_inner());
        mr.as_mut()
            .ok_or_else(|| Error::destroyed("memory region"))?
            .write(offset, src)
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mr = self.mr.lock().unwrap_or_else(|e| e.into_inner());
        mr.as_ref()
            .ok_or_else(|| Error::destroyed("memory region"))?
            .read(offset, dst)
    }

    fn host_ptr(&self) -> Option<NonNull<u8>> {
        Some(self.ptr)
    }

    fn destroy(&self) -> Result<()> {
        // Out of the inline check first (a post reading it holds the read lock), then
        // deregistered (ibv_dereg_mr), then — for memory the region owns — freed.
        let mut mr = self.mr.lock().unwrap_or_else(|e| e.into_inner());
        if mr.is_some() {
            // Only while registered: after that the lkey may belong to a newer region.
            self.core
                .regions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.lkey);
        }
        drop(mr.take());
        Ok(())
    }
}

impl Drop for RawVerbsMr {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}
