//! Posting work requests and polling completions: the two calls of the data path, with nothing
//! lost on a partial failure.

use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use anyverbs::{Error, ErrorKind, PostError};
use rdma_mummy_sys::{
    ibv_cq, ibv_post_recv, ibv_post_send, ibv_qp, ibv_recv_wr, ibv_send_flags, ibv_send_wr,
    ibv_sge, ibv_wc, ibv_wr_opcode,
};

use crate::error::{call_failed, errno_kind};

/// One scatter/gather element: `length` bytes at `addr` in the region of `lkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    /// Virtual address of the first byte.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Local key of the memory region the bytes lie in.
    pub lkey: u32,
}

/// What a send WR does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    /// SEND.
    Send,
    /// SEND with 32 bits of immediate data (host order here; big-endian on the wire).
    SendWithImm(u32),
    /// RDMA WRITE to `remote_addr` in the peer's region of `rkey`.
    Write {
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// RDMA WRITE with immediate data, which consumes a receive at the peer.
    WriteWithImm {
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Immediate data (host order).
        imm: u32,
    },
    /// RDMA READ from `remote_addr` in the peer's region of `rkey`.
    Read {
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// 64-bit compare and swap at `remote_addr` (8-byte aligned); the old value lands in the SGE.
    CompareSwap {
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Value compared with.
        compare: u64,
        /// Value written if equal.
        swap: u64,
    },
    /// 64-bit fetch and add at `remote_addr` (8-byte aligned); the old value lands in the SGE.
    FetchAdd {
        /// Remote virtual address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Value added.
        add: u64,
    },
}

/// The flags of a send WR (`IBV_SEND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendFlags {
    /// Produce a completion on success too (`IBV_SEND_SIGNALED`).
    pub signaled: bool,
    /// Copy the data into the WR at post time (`IBV_SEND_INLINE`); the SGEs' memory may be
    /// reused once the post returns.
    pub inline: bool,
    /// Wait for earlier RDMA READs and atomics before starting (`IBV_SEND_FENCE`).
    pub fence: bool,
    /// Ask the peer to wake a solicited-only waiter (`IBV_SEND_SOLICITED`).
    pub solicited: bool,
}

impl SendFlags {
    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.signaled {
            bits |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if self.inline {
            bits |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        if self.fence {
            bits |= ibv_send_flags::IBV_SEND_FENCE.0;
        }
        if self.solicited {
            bits |= ibv_send_flags::IBV_SEND_SOLICITED.0;
        }
        bits
    }
}

/// A send WR: an id that comes back in its completion, an operation, the local memory and flags.
#[derive(Debug, Clone, Copy)]
pub struct SendWr<'a> {
    /// Returned in the WR's completion (`wr_id`).
    pub wr_id: u64,
    /// The operation.
    pub op: SendOp,
    /// Local memory: the data sent or written, the buffer a READ or atomic fills.
    pub sges: &'a [Sge],
    /// Flags.
    pub flags: SendFlags,
}

/// A receive WR: an id that comes back in its completion and the memory a SEND lands in.
#[derive(Debug, Clone, Copy)]
pub struct RecvWr<'a> {
    /// Returned in the WR's completion (`wr_id`).
    pub wr_id: u64,
    /// Where the incoming message is written.
    pub sges: &'a [Sge],
}

/// A completion as the device reported it, copied out of `ibv_wc`.
///
/// For a completion with an error status only `wr_id`, `status`, `vendor_err` and `qp_num` are
/// meaningful: the opcode of a flushed completion is not (rxe reports 0, siw 128 for the same
/// flushed receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawCompletion {
    /// The `wr_id` of the WR.
    pub wr_id: u64,
    /// `ibv_wc_status`: 0 is success, 5 (`IBV_WC_WR_FLUSH_ERR`) a flush.
    pub status: u32,
    /// `ibv_wc_opcode` (meaningful only on success).
    pub opcode: u32,
    /// The vendor's own error code.
    pub vendor_err: u32,
    /// Bytes received (receives) or read.
    pub byte_len: u32,
    /// Immediate data in host order, when the completion carries it.
    pub imm_data: Option<u32>,
    /// The QP the WR was posted to: on a CQ shared by several QPs this says whose it is.
    pub qp_num: u32,
}

/// `IBV_WC_SUCCESS`.
pub const WC_SUCCESS: u32 = 0;
/// `IBV_WC_WR_FLUSH_ERR`: the WR was flushed because its QP is in ERROR.
pub const WC_FLUSH_ERR: u32 = 5;
/// `IBV_WC_WITH_IMM` in `wc_flags`.
const WC_WITH_IMM: u32 = 1 << 1;

fn fill_sges(sges: &[Sge], out: &mut Vec<ibv_sge>) -> Result<(), Error> {
    if i32::try_from(sges.len()).is_err() {
        return Err(Error::invalid_argument("too many SGEs in one WR"));
    }
    out.extend(sges.iter().map(|s| ibv_sge {
        addr: s.addr,
        length: s.length,
        lkey: s.lkey,
    }));
    Ok(())
}

/// The index in `base[..len]` of `bad`, the WR rdma-core says failed, or `None` when the pointer
/// is not one of ours (a provider that does not set it).
fn index_of<T>(base: *const T, len: usize, bad: *const T) -> Option<usize> {
    if bad.is_null() || len == 0 {
        return None;
    }
    let offset = (bad as usize).checked_sub(base as usize)?;
    let size = std::mem::size_of::<T>();
    (offset % size == 0 && offset / size < len).then_some(offset / size)
}

/// The error of a failed post of `len` WRs, `accepted` of which the driver says were posted.
///
/// A driver that fails without pointing `bad_wr` into the batch may still have queued WRs: rxe
/// writes every WR into its ring and only then rings a doorbell, which fails in INIT with
/// `EINVAL` and leaves `bad_wr` null — and the queued WRs flush when the QP moves to ERROR. So
/// the whole batch is reported as posted: each WR then completes or is flushed by a drain, and
/// none is lost. (Reporting none as posted could let a ULP reuse a buffer the device still
/// reads.)
fn post_failed(call: &str, errno: i32, len: usize, accepted: Option<usize>) -> PostError {
    match accepted {
        Some(accepted) => PostError::new(accepted, call_failed(call, errno)),
        None => PostError::new(
            len,
            Error::new(
                errno_kind(errno),
                format!(
                    "{call} failed ({}) and the driver did not say which WR: all {len} are \
                     treated as posted (each completes or is flushed by a drain)",
                    std::io::Error::from_raw_os_error(errno)
                ),
            ),
        ),
    }
}

/// The SGEs of every WR of a batch in one array (the WRs point into it), or the error of the
/// first WR that has too many.
fn collect_sges<'a>(lists: impl Iterator<Item = &'a [Sge]>) -> Result<Vec<ibv_sge>, PostError> {
    let mut sges = Vec::new();
    for (i, list) in lists.enumerate() {
        fill_sges(list, &mut sges).map_err(|e| PostError::new(i, e))?;
    }
    Ok(sges)
}

/// The `sg_list` pointer of a WR whose `n` SGEs start at `start` in the array at `base` of
/// `len` entries (every pointer into the array comes from that one `as_mut_ptr`, so none
/// invalidates another).
fn sg_list(base: *mut ibv_sge, len: usize, start: usize, n: usize) -> *mut ibv_sge {
    if n == 0 {
        return ptr::null_mut();
    }
    assert!(
        start + n <= len,
        "SGEs {start}..+{n} outside the batch's {len}"
    );
    // SAFETY: start + n <= len: the pointer stays inside the array.
    unsafe { base.add(start) }
}

/// A verbs WR struct that chains to the next through its `next` field.
pub(crate) trait Chained: Sized {
    fn set_next(&mut self, next: *mut Self);
}

impl Chained for ibv_send_wr {
    fn set_next(&mut self, next: *mut Self) {
        self.next = next;
    }
}

impl Chained for ibv_recv_wr {
    fn set_next(&mut self, next: *mut Self) {
        self.next = next;
    }
}

/// Links `raw` into a null-terminated list (only now: the vector does not move any more), posts
/// it with `post`, and says how many were posted if it failed.
pub(crate) fn post_list<W: Chained>(
    call: &str,
    raw: &mut [W],
    post: impl FnOnce(*mut W, &mut *mut W) -> libc::c_int,
) -> Result<(), PostError> {
    let base = raw.as_mut_ptr();
    let len = raw.len();
    // Everything goes through `base`, so the pointers stored in `next` and the one posted come
    // from the same borrow of `raw`.
    for i in 1..len {
        // SAFETY: i < len: both WRs are inside the slice, and `base` is its only borrow now.
        unsafe { (*base.add(i - 1)).set_next(base.add(i)) };
    }
    let mut bad: *mut W = ptr::null_mut();
    let rc = errno_of_post(post(base, &mut bad));
    if rc == 0 {
        Ok(())
    } else {
        Err(post_failed(call, rc, len, index_of(base, len, bad)))
    }
}

/// Posts `wrs` to the send queue of `qp` as one `ibv_post_send` call.
///
/// On failure the [`PostError`] says how many WRs at the front were posted (from `bad_wr`).
///
/// # Safety
/// `qp` must be a live QP. Every SGE of a WR without `inline` must lie in memory registered
/// with its `lkey` that stays valid, and that nothing else writes (for sends and writes) or
/// reads (for reads and atomics), until the WR's completion has been polled or its QP destroyed.
pub unsafe fn post_send(qp: NonNull<ibv_qp>, wrs: &[SendWr<'_>]) -> Result<(), PostError> {
    if wrs.is_empty() {
        return Ok(());
    }
    let mut sges = collect_sges(wrs.iter().map(|w| w.sges))?;
    let (sge_base, sge_len) = (sges.as_mut_ptr(), sges.len());
    let mut raw: Vec<ibv_send_wr> = Vec::with_capacity(wrs.len());
    let mut next_sge = 0;
    for wr in wrs {
        // SAFETY: ibv_send_wr is a plain C struct of integers, pointers and unions of them, for
        // which all-zero bytes are a valid value (what C code gets from `= {0}`).
        let mut w: ibv_send_wr = unsafe { MaybeUninit::zeroed().assume_init() };
        w.wr_id = wr.wr_id;
        w.num_sge = wr.sges.len() as i32;
        w.sg_list = sg_list(sge_base, sge_len, next_sge, wr.sges.len());
        next_sge += wr.sges.len();
        w.send_flags = wr.flags.bits();
        match wr.op {
            SendOp::Send => w.opcode = ibv_wr_opcode::IBV_WR_SEND,
            SendOp::SendWithImm(imm) => {
                w.opcode = ibv_wr_opcode::IBV_WR_SEND_WITH_IMM;
                w.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
            SendOp::Write { remote_addr, rkey } => {
                w.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                w.wr.rdma.remote_addr = remote_addr;
                w.wr.rdma.rkey = rkey;
            }
            SendOp::WriteWithImm {
                remote_addr,
                rkey,
                imm,
            } => {
                w.opcode = ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
                w.wr.rdma.remote_addr = remote_addr;
                w.wr.rdma.rkey = rkey;
                w.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
            }
            SendOp::Read { remote_addr, rkey } => {
                w.opcode = ibv_wr_opcode::IBV_WR_RDMA_READ;
                w.wr.rdma.remote_addr = remote_addr;
                w.wr.rdma.rkey = rkey;
            }
            SendOp::CompareSwap {
                remote_addr,
                rkey,
                compare,
                swap,
            } => {
                w.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_CMP_AND_SWP;
                w.wr.atomic.remote_addr = remote_addr;
                w.wr.atomic.rkey = rkey;
                w.wr.atomic.compare_add = compare;
                w.wr.atomic.swap = swap;
            }
            SendOp::FetchAdd {
                remote_addr,
                rkey,
                add,
            } => {
                w.opcode = ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                w.wr.atomic.remote_addr = remote_addr;
                w.wr.atomic.rkey = rkey;
                w.wr.atomic.compare_add = add;
            }
        }
        raw.push(w);
    }
    // SAFETY: `qp` is live (the caller's contract); the list post_list links is of valid WRs
    // whose SGE pointers point into `sges`, both alive until the call returns (the driver copies
    // WRs and inline data during the call and keeps no pointer to them); `bad` is a valid
    // out-pointer. The memory the SGEs address is the caller's contract.
    post_list("ibv_post_send", &mut raw, |list, bad| unsafe {
        ibv_post_send(qp.as_ptr(), list, bad)
    })
}

/// Posts `wrs` to the receive queue of `qp` as one `ibv_post_recv` call.
///
/// # Safety
/// `qp` must be a live QP, and every SGE must lie in memory registered with its `lkey`, with
/// local write access, that stays valid and that nothing else touches until the WR's
/// completion has been polled or its QP destroyed.
pub unsafe fn post_recv(qp: NonNull<ibv_qp>, wrs: &[RecvWr<'_>]) -> Result<(), PostError> {
    if wrs.is_empty() {
        return Ok(());
    }
    let mut sges = collect_sges(wrs.iter().map(|w| w.sges))?;
    let (sge_base, sge_len) = (sges.as_mut_ptr(), sges.len());
    let mut raw: Vec<ibv_recv_wr> = Vec::with_capacity(wrs.len());
    let mut next_sge = 0;
    for wr in wrs {
        raw.push(ibv_recv_wr {
            wr_id: wr.wr_id,
            next: ptr::null_mut(),
            sg_list: sg_list(sge_base, sge_len, next_sge, wr.sges.len()),
            num_sge: wr.sges.len() as i32,
        });
        next_sge += wr.sges.len();
    }
    // SAFETY: as in `post_send`: a live QP, a valid list with SGEs alive for the call, a valid
    // out-pointer; the addressed memory is the caller's contract.
    post_list("ibv_post_recv", &mut raw, |list, bad| unsafe {
        ibv_post_recv(qp.as_ptr(), list, bad)
    })
}

/// The errno of a post's return value. Posts return the errno itself, but not every driver keeps
/// to that: siw's returns -1 and leaves the errno in `errno` (seen in the test bed: a send in
/// INIT), and some return a negative errno.
fn errno_of_post(rc: i32) -> i32 {
    match rc {
        0 => 0,
        -1 => match crate::error::last_errno() {
            0 => libc::EIO,
            errno => errno,
        },
        rc if rc < 0 => -rc,
        rc => rc,
    }
}

/// How many completions one `ibv_poll_cq` call asks for.
const POLL_CHUNK: usize = 32;

/// Polls up to `max` completions of `cq` with `ibv_poll_cq` and appends them to `out`; returns
/// how many were appended. Nothing polled is dropped: the driver is never asked for more than
/// `out` receives.
///
/// # Safety
/// `cq` must be a live CQ (basic, or an extended one seen through `ibv_cq_ex_to_cq`), polled by
/// no other thread at the same time.
pub unsafe fn poll_cq(
    cq: NonNull<ibv_cq>,
    max: usize,
    out: &mut Vec<RawCompletion>,
) -> Result<usize, Error> {
    let mut total = 0;
    let mut wcs: [MaybeUninit<ibv_wc>; POLL_CHUNK] = [const { MaybeUninit::uninit() }; POLL_CHUNK];
    while total < max {
        let want = (max - total).min(POLL_CHUNK);
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
        for wc in &wcs[..n] {
            // SAFETY: ibv_poll_cq initialised the first `n` entries.
            let wc = unsafe { wc.assume_init_ref() };
            let with_imm = wc.wc_flags & WC_WITH_IMM != 0;
            out.push(RawCompletion {
                wr_id: wc.wr_id,
                status: wc.status,
                opcode: wc.opcode,
                vendor_err: wc.vendor_err,
                byte_len: wc.byte_len,
                // SAFETY: both members of the union are a u32; with IBV_WC_WITH_IMM set the
                // member is the immediate data, in network order.
                imm_data: with_imm
                    .then(|| u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data })),
                qp_num: wc.qp_num,
            });
        }
        total += n;
        if n < want {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_wr_is_found_only_inside_the_batch() {
        let v = [0u64; 4];
        let base = v.as_ptr();
        assert_eq!(index_of(base, 4, base), Some(0));
        assert_eq!(index_of(base, 4, base.wrapping_add(3)), Some(3));
        assert_eq!(index_of(base, 4, base.wrapping_add(4)), None);
        assert_eq!(index_of(base, 4, std::ptr::null()), None);
        assert_eq!(index_of(base, 4, (base as usize + 3) as *const u64), None);
    }

    #[test]
    fn a_post_failure_without_bad_wr_counts_the_whole_batch_as_posted() {
        let e = post_failed("ibv_post_send", libc::EINVAL, 4, None);
        assert_eq!(
            e.accepted, 4,
            "nothing may be taken for unposted that the device may use"
        );
        assert!(
            e.error.message().contains("did not say which WR"),
            "{}",
            e.error
        );
        let e = post_failed("ibv_post_send", libc::ENOMEM, 4, Some(3));
        assert_eq!((e.accepted, e.kind()), (3, ErrorKind::ResourceExhausted));
    }

    #[test]
    fn flags_map_to_the_verbs_bits() {
        let all = SendFlags {
            signaled: true,
            inline: true,
            fence: true,
            solicited: true,
        };
        assert_eq!(all.bits(), 1 | 2 | 4 | 8);
        assert_eq!(SendFlags::default().bits(), 0);
    }
}
