//! The data path's plain data across the ABI: WRs and completions, with the layouts of the
//! crate's own types (asserted here), so that they cross as they are.

use super::Sge;

/// A send work request: the layout of [`SendWr`](crate::SendWr), which crosses as it is. The
/// SGEs are [`Sge`] itself (the layout of `struct ibv_sge`).
///
/// The scatter list is `sge_count` SGEs at `sgl`, except that a null `sgl` is an empty list
/// when `sge_count` is 0 and the one SGE `sge` (in the WR itself) when it is 1.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SendWr {
    /// The ULP's identifier.
    pub wr_id: u64,
    /// The scatter/gather list, or null (see the type's documentation).
    pub sgl: *const Sge,
    /// Its length.
    pub sge_count: usize,
    /// The one SGE of a list whose `sgl` is null and `sge_count` 1; otherwise unused.
    pub sge: Sge,
    /// Remote address of WRITE, READ and the atomics.
    pub remote_addr: u64,
    /// Remote key of WRITE, READ and the atomics.
    pub rkey: u32,
    /// Immediate data of the `with immediate` operations.
    pub imm_data: u32,
    /// Operation: 1 SEND, 2 SEND with immediate, 3 WRITE, 4 WRITE with immediate, 5 READ,
    /// 6 atomic compare-and-swap, 7 atomic fetch-and-add; anything else is refused.
    pub opcode: u32,
    /// [`SendFlags`](crate::SendFlags) bits; an unknown bit is refused.
    pub flags: u32,
    /// The compare value of a compare-and-swap, the addend of a fetch-and-add (verbs'
    /// `wr.atomic.compare_add`); 0 otherwise.
    pub compare_add: u64,
    /// The swap value of a compare-and-swap; 0 otherwise.
    pub swap: u64,
}

/// A receive work request: the layout of [`RecvWr`](crate::RecvWr); its scatter list is given
/// as a [`SendWr`]'s.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RecvWr {
    /// The ULP's identifier.
    pub wr_id: u64,
    /// The scatter/gather list, or null.
    pub sgl: *const Sge,
    /// Its length.
    pub sge_count: usize,
    /// The one SGE of a list whose `sgl` is null and `sge_count` 1; otherwise unused.
    pub sge: Sge,
}

/// A completion: the layout of [`Completion`](crate::Completion), which the plugin writes
/// straight into the caller's buffer. All zeros is a valid completion.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Completion {
    /// The WR's identifier.
    pub wr_id: u64,
    /// [`WcStatus`](crate::WcStatus) code: its discriminant, 0 success to 11 general error.
    pub status: u32,
    /// [`WcOpcode`](crate::WcOpcode) code: its discriminant, 0 SEND, 1 WRITE, 2 READ,
    /// 3 receive, 4 receive of a WRITE with immediate, 5 compare-and-swap, 6 fetch-and-add.
    pub opcode: u32,
    /// Bytes transferred.
    pub byte_len: u32,
    /// Immediate data.
    pub imm_data: u32,
    /// [`WcFlags`](crate::WcFlags) bits (1: `imm_data` is present).
    pub flags: u32,
    /// QP number.
    pub qp_num: u32,
    /// Vendor error.
    pub vendor_err: u32,
}

impl Completion {
    /// All zeros: a valid completion (success, SEND, no flags).
    pub const ZERO: Completion = Completion {
        wr_id: 0,
        status: 0,
        opcode: 0,
        byte_len: 0,
        imm_data: 0,
        flags: 0,
        qp_num: 0,
        vendor_err: 0,
    };
}

/// The data path's types cross the ABI as they are, so their layouts must be the ABI's, field
/// by field; a change to either breaks the build here.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    type CoreSend = crate::wr::SendWr<'static>;
    type CoreRecv = crate::wr::RecvWr<'static>;
    type CoreWc = crate::wr::Completion;
    assert!(size_of::<SendWr>() == size_of::<CoreSend>());
    assert!(align_of::<SendWr>() == align_of::<CoreSend>());
    assert!(offset_of!(SendWr, wr_id) == offset_of!(CoreSend, wr_id));
    assert!(offset_of!(SendWr, sgl) == offset_of!(CoreSend, sgl));
    assert!(offset_of!(SendWr, sge_count) == offset_of!(CoreSend, sgl) + size_of::<usize>());
    assert!(offset_of!(SendWr, sge) == offset_of!(CoreSend, sgl) + 2 * size_of::<usize>());
    assert!(size_of::<crate::wr::SgRef<'static>>() == 2 * size_of::<usize>() + size_of::<Sge>());
    assert!(offset_of!(SendWr, remote_addr) == offset_of!(CoreSend, remote_addr));
    assert!(offset_of!(SendWr, rkey) == offset_of!(CoreSend, rkey));
    assert!(offset_of!(SendWr, imm_data) == offset_of!(CoreSend, imm_data));
    assert!(offset_of!(SendWr, opcode) == offset_of!(CoreSend, opcode));
    assert!(offset_of!(SendWr, flags) == offset_of!(CoreSend, flags));
    assert!(offset_of!(SendWr, compare_add) == offset_of!(CoreSend, compare_add));
    assert!(offset_of!(SendWr, swap) == offset_of!(CoreSend, swap));
    assert!(size_of::<RecvWr>() == size_of::<CoreRecv>());
    assert!(align_of::<RecvWr>() == align_of::<CoreRecv>());
    assert!(offset_of!(RecvWr, wr_id) == offset_of!(CoreRecv, wr_id));
    assert!(offset_of!(RecvWr, sgl) == offset_of!(CoreRecv, sgl));
    assert!(offset_of!(RecvWr, sge_count) == offset_of!(CoreRecv, sgl) + size_of::<usize>());
    assert!(offset_of!(RecvWr, sge) == offset_of!(CoreRecv, sgl) + 2 * size_of::<usize>());
    assert!(size_of::<Completion>() == size_of::<CoreWc>());
    assert!(align_of::<Completion>() == align_of::<CoreWc>());
    assert!(offset_of!(Completion, wr_id) == offset_of!(CoreWc, wr_id));
    assert!(offset_of!(Completion, status) == offset_of!(CoreWc, status));
    assert!(offset_of!(Completion, opcode) == offset_of!(CoreWc, opcode));
    assert!(offset_of!(Completion, byte_len) == offset_of!(CoreWc, byte_len));
    assert!(offset_of!(Completion, imm_data) == offset_of!(CoreWc, imm_data));
    assert!(offset_of!(Completion, flags) == offset_of!(CoreWc, flags));
    assert!(offset_of!(Completion, qp_num) == offset_of!(CoreWc, qp_num));
    assert!(offset_of!(Completion, vendor_err) == offset_of!(CoreWc, vendor_err));
};
