//! The plugin side of [`ProtectionDomain`]: registering memory and making QPs.

use super::*;
use crate::mr::MemoryRegion;
use crate::pd::ProtectionDomain;
use crate::qp::{QpInit, QueuePair};

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn pd_free<P: Provider>(pd: *mut abi::RawPd) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Pd, _>(pd, tag::PD) }
}

pub(super) unsafe extern "C" fn pd_register<P: Provider>(
    pd: *const abi::RawPd,
    len: usize,
    access: u32,
    out: *mut *mut abi::RawMr,
    info: *mut abi::MrInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let mr = pd.register(len, convert::access_from(access)?)?;
            put(info, mr_info(&mr))?;
            hand_out(out, tag::MR, mr)
        })
    }
}

pub(super) unsafe extern "C" fn pd_register_memory<P: Provider>(
    pd: *const abi::RawPd,
    addr: *mut u8,
    len: usize,
    access: u32,
    out: *mut *mut abi::RawMr,
    info: *mut abi::MrInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let access = convert::access_from(access)?;
            // SAFETY: the loader keeps the memory allocated and out of the device's way until
            // `mr_destroy` succeeds, as `pd_register_memory`'s contract (the ABI's) says: the
            // contract of `register_memory`.
            let mr = pd.register_memory(addr, len, access)?;
            put(info, mr_info(&mr))?;
            hand_out(out, tag::MR, mr)
        })
    }
}

/// What the loader learns of a new region.
fn mr_info(mr: &impl MemoryRegion) -> abi::MrInfo {
    abi::MrInfo {
        addr: mr.addr(),
        len: mr.len() as u64,
        lkey: mr.lkey(),
        rkey: mr.rkey(),
        access: mr.access().bits(),
        ptr: mr.as_ptr().map_or(0, |p| p as u64),
    }
}

pub(super) unsafe extern "C" fn pd_create_qp<P: Provider>(
    pd: *const abi::RawPd,
    send_cq: *const abi::RawCq,
    recv_cq: *const abi::RawCq,
    init: *const abi::QpInit,
    out: *mut *mut abi::RawQp,
    qp_num: *mut u32,
    granted: *mut abi::QpInit,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let send_cq = object::<P::Cq, _>(send_cq, tag::CQ, "send CQ")?;
            let recv_cq = object::<P::Cq, _>(recv_cq, tag::CQ, "receive CQ")?;
            let init = input(init, "QP init")?;
            let init = QpInit {
                max_send_wr: init.max_send_wr,
                max_recv_wr: init.max_recv_wr,
                max_send_sge: init.max_send_sge,
                max_recv_sge: init.max_recv_sge,
                max_inline_data: init.max_inline_data,
            };
            let qp = pd.create_qp(send_cq, recv_cq, &init)?;
            put(qp_num, qp.qp_num())?;
            let g = qp.granted();
            put(
                granted,
                abi::QpInit {
                    max_send_wr: g.max_send_wr,
                    max_recv_wr: g.max_recv_wr,
                    max_send_sge: g.max_send_sge,
                    max_recv_sge: g.max_recv_sge,
                    max_inline_data: g.max_inline_data,
                },
            )?;
            hand_out(out, tag::QP, qp)
        })
    }
}

pub(super) unsafe extern "C" fn pd_destroy<P: Provider>(
    pd: *const abi::RawPd,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Pd, _>(pd, tag::PD, "PD")?.destroy()) }
}
