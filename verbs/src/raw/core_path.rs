//! The data path in the core's own types, with nothing built but the verbs WR structs: the
//! core's [`Sge`](anyverbs::Sge) has the layout of `struct ibv_sge` (checked below), so a WR's
//! scatter list is handed to the driver where it lies, and completions are written straight
//! into the caller's [`Completion`]s. What a provider posts and polls on every message.

use std::mem::{MaybeUninit, offset_of, size_of};
use std::ptr::{self, NonNull};

use anyverbs::{Completion, Error, ErrorKind, PostError, RecvWr, SendFlags, SendOp, SendWr};
use anyverbs::{WcFlags, WcOpcode, WcStatus};
use rdma_mummy_sys::{
    ibv_cq, ibv_post_recv, ibv_post_send, ibv_qp, ibv_recv_wr, ibv_send_flags, ibv_send_wr,
    ibv_sge, ibv_wc, ibv_wr_opcode,
};
use smallvec::SmallVec;

// The core's SGE is a `struct ibv_sge`: address, length, key, in that order and size.
const _: () = {
    assert!(size_of::<anyverbs::Sge>() == size_of::<ibv_sge>());
    assert!(offset_of!(anyverbs::Sge, addr) == offset_of!(ibv_sge, addr));
    assert!(offset_of!(anyverbs::Sge, length) == offset_of!(ibv_sge, length));
    assert!(offset_of!(anyverbs::Sge, lkey) == offset_of!(ibv_sge, lkey));
    assert!(std::mem::align_of::<anyverbs::Sge>() == std::mem::align_of::<ibv_sge>());
};

/// WRs of one post kept on the stack.
const ON_STACK: usize = 8;

/// `IBV_WC_WITH_IMM` in `wc_flags`.
const WC_WITH_IMM: u32 = 1 << 1;

/// How many completions one `ibv_poll_cq` call asks for at most.
const POLL_CHUNK: usize = 16;

/// The scatter list of a WR, as the driver reads it (it never writes through it).
fn sg_list(sgl: &[anyverbs::Sge]) -> (*mut ibv_sge, i32) {
    if sgl.is_empty() {
        (ptr::null_mut(), 0)
    } else {
        (sgl.as_ptr().cast::<ibv_sge>().cast_mut(), sgl.len() as i32)
    }
}

fn send_flags(f: SendFlags) -> u32 {
    let mut bits = 0;
    if f.contains(SendFlags::SIGNALED) {
        bits |= ibv_send_flags::IBV_SEND_SIGNALED.0;
    }
    if f.contains(SendFlags::INLINE) {
        bits |= ibv_send_flags::IBV_SEND_INLINE.0;
    }
    if f.contains(SendFlags::FENCE) {
        bits |= ibv_send_flags::IBV_SEND_FENCE.0;
    }
    if f.contains(SendFlags::SOLICITED) {
        bits |= ibv_send_flags::IBV_SEND_SOLICITED.0;
    }
    bits
}

fn send_wr(wr: &SendWr<'_>) -> ibv_send_wr {
    // SAFETY: ibv_send_wr is a plain C struct of integers, pointers and unions of them, for which
    // all-zero bytes are a valid value (what C code gets from `= {0}`).
    let mut w: ibv_send_wr = unsafe { MaybeUninit::zeroed().assume_init() };
    w.wr_id = wr.wr_id;
    (w.sg_list, w.num_sge) = sg_list(wr.sgl());
    w.send_flags = send_flags(wr.flags);
    match wr.op() {
        SendOp::Send => w.opcode = ibv_wr_opcode::IBV_WR_SEND,
        SendOp::SendWithImm(imm) => {
            w.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
            w.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        }
        SendOp::Write(r) => {
            w.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
            w.wr.rdma.remote_addr = r.addr;
            w.wr.rdma.rkey = r.rkey;
        }
        SendOp::WriteWithImm(r, imm) => {
            w.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
            w.wr.rdma.remote_addr = r.addr;
            w.wr.rdma.rkey = r.rkey;
            w.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        }
        SendOp::Read(r) => {
            w.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
            w.wr.rdma.remote_addr = r.addr;
            w.wr.rdma.rkey = r.rkey;
        }
        SendOp::CompareSwap {
            remote,
            compare,
            swap,
        } => {
            w.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_CMP_AND_SWP;
            w.wr.atomic.remote_addr = remote.addr;
            w.wr.atomic.rkey = remote.rkey;
            w.wr.atomic.compare_add = compare;
            w.wr.atomic.swap = swap;
        }
        SendOp::FetchAdd { remote, add } => {
            w.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
            w.wr.atomic.remote_addr = remote.addr;
            w.wr.atomic.rkey = remote.rkey;
            w.wr.atomic.compare_add = add;
        }
    }
    w
}

/// Posts the core's send WRs to `qp` as one `ibv_post_send` call; a failure says how many at
/// the front were posted (see [`super::data_path`] for a driver that does not say).
///
/// # Safety
/// `qp` must be a live QP. Every SGE of a WR without `INLINE` must lie in memory registered with
/// its `lkey` that stays valid, and that nothing else writes (for sends and writes) or reads
/// (for reads and atomics), until the WR's completion has been polled or its QP destroyed; the
/// SGEs of an `INLINE` WR must be readable for the call.
pub unsafe fn post_send(qp: NonNull<ibv_qp>, wrs: &[SendWr<'_>]) -> Result<(), PostError> {
    if wrs.is_empty() {
        return Ok(());
    }
    let mut raw: SmallVec<[ibv_send_wr; ON_STACK]> = wrs.iter().map(send_wr).collect();
    // SAFETY: `qp` is live; the list is valid WRs whose SGE pointers point into `wrs`, alive
    // until the call returns (the driver copies WRs and inline data during the call and keeps no
    // pointer to them); the addressed memory is the caller's contract.
    super::data_path::post_list("ibv_post_send", &mut raw, |list, bad| unsafe {
        ibv_post_send(qp.as_ptr(), list, bad)
    })
}

/// Posts the core's receive WRs to `qp` as one `ibv_post_recv` call.
///
/// # Safety
/// `qp` must be a live QP, and every SGE must lie in memory registered with its `lkey`, with
/// local write access, that stays valid and that nothing else touches until the WR's
/// completion has been polled or its QP destroyed.
pub unsafe fn post_recv(qp: NonNull<ibv_qp>, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
    if wrs.is_empty() {
        return Ok(());
    }
    let mut raw: SmallVec<[ibv_recv_wr; ON_STACK]> = wrs
        .iter()
        .map(|wr| {
            let (sg_list, num_sge) = sg_list(wr.sgl());
            ibv_recv_wr {
                wr_id: wr.wr_id,
                next: ptr::null_mut(),
                sg_list,
                num_sge,
            }
        })
        .collect();
    // SAFETY: as in `post_send`.
    super::data_path::post_list("ibv_post_recv", &mut raw, |list, bad| unsafe {
        ibv_post_recv(qp.as_ptr(), list, bad)
    })
}

/// The core's status for an `ibv_wc_status`.
pub fn status(n: u32) -> WcStatus {
    match n {
        0 => WcStatus::Success,
        1 => WcStatus::LocalLengthError,
        2 => WcStatus::LocalQpOperationError,
        4 | 8 => WcStatus::LocalProtectionError,
        5 => WcStatus::WrFlushError,
        9 | 15 => WcStatus::RemoteInvalidRequest,
        10 => WcStatus::RemoteAccessError,
        11 | 16 => WcStatus::RemoteOperationError,
        12 | 20 => WcStatus::TransportRetryExceeded,
        13 => WcStatus::RnrRetryExceeded,
        19 => WcStatus::Fatal,
        _ => WcStatus::General,
    }
}

/// The core's opcode for an `ibv_wc_opcode` (meaningful on success only).
pub fn opcode(n: u32) -> WcOpcode {
    match n {
        1 => WcOpcode::RdmaWrite,
        2 => WcOpcode::RdmaRead,
        3 => WcOpcode::CompareSwap,
        4 => WcOpcode::FetchAdd,
        128 => WcOpcode::Recv,
        129 => WcOpcode::RecvRdmaWithImm,
        _ => WcOpcode::Send,
    }
}

fn completion(wc: &ibv_wc) -> Completion {
    let with_imm = wc.wc_flags & WC_WITH_IMM != 0;
    // SAFETY: both members of the union are a u32, so reading either is sound; with
    // IBV_WC_WITH_IMM set the member is the immediate data, in network order.
    let imm = u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data });
    Completion {
        wr_id: wc.wr_id,
        status: status(wc.status),
        opcode: opcode(wc.opcode),
        byte_len: wc.byte_len,
        imm_data: if with_imm { imm } else { 0 },
        flags: if with_imm {
            WcFlags::WITH_IMM
        } else {
            WcFlags::empty()
        },
        qp_num: wc.qp_num,
        vendor_err: wc.vendor_err,
    }
}

/// Polls up to `out.len()` completions of `cq` into `out` with `ibv_poll_cq`; returns how many.
/// Nothing polled is dropped: the driver is never asked for more than `out` holds.
///
/// # Safety
/// `cq` must be a live CQ, polled by no other thread at the same time.
pub unsafe fn poll_cq(cq: NonNull<ibv_cq>, out: &mut [Completion]) -> Result<usize, Error> {
    let mut total = 0;
    let mut wcs: [MaybeUninit<ibv_wc>; POLL_CHUNK] = [const { MaybeUninit::uninit() }; POLL_CHUNK];
    while total < out.len() {
        let want = (out.len() - total).min(POLL_CHUNK);
        // SAFETY: `cq` is live and polled by this thread only (the caller's contract); `wcs`
        // has room for `want` entries, which is all ibv_poll_cq writes.
        let n = unsafe {
            rdma_mummy_sys::ibv_poll_cq(cq.as_ptr(), want as i32, wcs.as_mut_ptr().cast())
        };
        if n < 0 {
            return Err(Error::new(
                ErrorKind::DeviceLost,
                format!("ibv_poll_cq failed ({n}): the CQ is unusable"),
            ));
        }
        let n = (n as usize).min(want);
        for (slot, wc) in out[total..total + n].iter_mut().zip(&wcs[..n]) {
            // SAFETY: ibv_poll_cq initialised the first `n` entries.
            *slot = completion(unsafe { wc.assume_init_ref() });
        }
        total += n;
        if n < want {
            break;
        }
    }
    Ok(total)
}
