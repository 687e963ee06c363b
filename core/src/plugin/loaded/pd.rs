//! [`LoadedPd`]: a protection domain of a loaded provider, behind [`ProtectionDomain`].

use std::ptr::NonNull;

use super::{Handle, LoadedCq, LoadedMr, LoadedProvider, LoadedQp, call, same_provider};
use crate::error::Result;
use crate::lent::{Lent, LentBuffer};
use crate::mr::{Access, check_memory};
use crate::pd::ProtectionDomain;
use crate::plugin::abi;
use crate::qp::QpInit;

/// A protection domain of a loaded provider.
pub struct LoadedPd {
    pub(super) handle: Handle<abi::RawPd>,
}

impl ProtectionDomain<LoadedProvider> for LoadedPd {
    fn register(&self, len: usize, access: Access) -> Result<LoadedMr> {
        let mut raw = std::ptr::null_mut();
        let mut info = abi::MrInfo::default();
        let f = self.handle.f();
        call!(
            f,
            pd_register(self.handle.ptr(), len, access.bits(), &mut raw, &mut info)
        )?;
        let shared = &self.handle.shared;
        // Adopted first, so that a refused region is released.
        let handle = shared.adopt("pd_register", raw, f.mr_free)?;
        shared.check("pd_register").region(&info, len, access)?;
        // The plugin's memory, at the address it exposed (as an integer, across the ABI).
        let ptr = NonNull::new(std::ptr::with_exposed_provenance_mut(info.ptr as usize));
        Ok(LoadedMr::new(handle, &info, (len, access), ptr, Lent::None))
    }

    #[allow(unsafe_code)]
    unsafe fn register_memory(
        &self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<LoadedMr> {
        // SAFETY: the caller upholds `register_memory`'s contract.
        unsafe { self.register_lent(addr, len, access, Lent::None) }
    }

    #[allow(unsafe_code)]
    fn register_buffer(&self, buf: Box<[u8]>, access: Access) -> Result<LoadedMr> {
        let lent = LentBuffer::new(buf);
        let (addr, len) = (lent.as_ptr(), lent.len());
        // SAFETY: the region owns the buffer from here on (`Lent::Held`), allocated by the
        // program's allocator: nothing frees or moves it until `mr_destroy` succeeded — then
        // `take_buffer` hands it back or the drop frees it — and it is leaked if that never
        // happens; the program reaches it only through the region, under its contracts. A
        // refused registration (the plugin's error, or a region the loader refuses, which it
        // then deregisters) hands it to the drop of the region made here, or frees it below.
        unsafe { self.register_lent(addr, len, access, Lent::Held(lent)) }
    }

    fn create_qp(&self, send_cq: &LoadedCq, recv_cq: &LoadedCq, init: &QpInit) -> Result<LoadedQp> {
        let shared = &self.handle.shared;
        same_provider(shared, send_cq.handle(), "send CQ")?;
        same_provider(shared, recv_cq.handle(), "receive CQ")?;
        let raw_init = abi::QpInit {
            max_send_wr: init.max_send_wr,
            max_recv_wr: init.max_recv_wr,
            max_send_sge: init.max_send_sge,
            max_recv_sge: init.max_recv_sge,
            max_inline_data: init.max_inline_data,
        };
        let mut raw = std::ptr::null_mut();
        let mut qp_num = 0;
        let mut granted = abi::QpInit::default();
        call!(
            shared.f,
            pd_create_qp(
                self.handle.ptr(),
                send_cq.handle().ptr(),
                recv_cq.handle().ptr(),
                &raw_init,
                &mut raw,
                &mut qp_num,
                &mut granted
            )
        )?;
        // Adopted first, so that a refused QP is released.
        let handle = shared.adopt("pd_create_qp", raw, shared.f.qp_free)?;
        let check = shared.check("pd_create_qp");
        let qp_num = check.qp_num(qp_num)?;
        let granted = check.granted(&granted, init)?;
        Ok(LoadedQp::new(handle, qp_num, *init, granted))
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), pd_destroy(self.handle.ptr()))
    }
}

impl LoadedPd {
    /// Registers the program's memory through `pd_register_memory`; the region holds `lent`,
    /// the buffer the memory is, if it is one (freed if the plugin refuses the registration).
    ///
    /// # Safety
    /// As [`ProtectionDomain::register_memory`].
    #[allow(unsafe_code)]
    unsafe fn register_lent(
        &self,
        addr: *mut u8,
        len: usize,
        access: Access,
        lent: Lent,
    ) -> Result<LoadedMr> {
        let refused = |mut lent: Lent, e| {
            // SAFETY: no region of the plugin holds the memory: the loader refused it before
            // the call, or the plugin failed the call, which leaves nothing behind (the ABI).
            unsafe { lent.release(true) };
            Err(e)
        };
        if let Err(e) = check_memory(addr, len) {
            return refused(lent, e);
        }
        let mut raw = std::ptr::null_mut();
        let mut info = abi::MrInfo::default();
        let f = self.handle.f();
        let registered = call!(
            f,
            pd_register_memory(
                self.handle.ptr(),
                addr,
                len,
                access.bits(),
                &mut raw,
                &mut info
            )
        );
        if let Err(e) = registered {
            return refused(lent, e);
        }
        let shared = &self.handle.shared;
        // Adopted first, so that a refused region is released (deregistered).
        let handle = match shared.adopt("pd_register_memory", raw, f.mr_free) {
            Ok(handle) => handle,
            // A null or duplicate handle: nothing the loader can deregister; the plugin may
            // hold the memory, so a lent buffer is leaked.
            Err(e) => {
                let mut lent = lent;
                // SAFETY: not deregistered: a lent buffer is leaked, not freed.
                unsafe { lent.release(false) };
                return Err(e);
            }
        };
        // The program's memory: reached through the program's own pointer.
        let mr = LoadedMr::new(handle, &info, (len, access), NonNull::new(addr), lent);
        shared
            .check("pd_register_memory")
            .caller_region(&info, addr, len, access)?;
        Ok(mr)
    }
}

impl std::fmt::Debug for LoadedPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPd")
            .field("handle", &self.handle.ptr())
            .finish_non_exhaustive()
    }
}
