//! [`LoadedPd`]: a protection domain of a loaded provider, behind [`ProtectionDomain`].

use super::{Handle, LoadedCq, LoadedMr, LoadedProvider, LoadedQp, call, same_provider};
use crate::error::Result;
use crate::mr::Access;
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
        Ok(LoadedMr {
            handle,
            addr: info.addr,
            len,
            lkey: info.lkey,
            rkey: info.rkey,
            access,
        })
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

impl std::fmt::Debug for LoadedPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPd")
            .field("handle", &self.handle.ptr())
            .finish_non_exhaustive()
    }
}
