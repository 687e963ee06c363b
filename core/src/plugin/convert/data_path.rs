//! The data path's values across the ABI: WRs and completions cross as they are, so these
//! functions check the fields a peer could get wrong before the memory is used as the crate's
//! own types ([`send_wr_ok`], [`recv_wr_ok`], [`check_completions`]), and hand out that same
//! memory ([`valid_send_wrs`], [`valid_recv_wrs`]).

use super::{abi, array_ok, unknown};
use crate::error::{Error, ErrorKind};
use crate::wr::{OpCode, RecvWr, SendFlags, SendWr, Sge, WcFlags, WcOpcode, WcStatus};

/// Whether the scatter list of a WR from the ABI is one [`SgRef`](crate::wr) may hold: a null
/// pointer is empty (count 0) or the WR's own SGE (count 1); any other pointer and count must
/// be able to be a slice.
#[inline(always)]
fn sgl_ok(sgl: *const Sge, count: usize) -> bool {
    if sgl.is_null() {
        count <= 1
    } else {
        array_ok(sgl, count)
    }
}

/// The error for a scatter list [`sgl_ok`] refuses.
fn sgl_refusal(sgl: *const Sge, count: usize) -> Error {
    Error::invalid_argument(format!(
        "a WR's scatter list of {count} SGEs at {sgl:p} is null, misaligned or too long (a \
         null list is empty or the WR's own SGE)"
    ))
}

/// Whether a send WR from the ABI holds only values [`SendWr`] allows.
#[inline(always)]
pub(crate) fn send_wr_ok(wr: &abi::SendWr) -> bool {
    OpCode::CODES.contains(&wr.opcode)
        && wr.flags & !SendFlags::all().bits() == 0
        && sgl_ok(wr.sgl, wr.sge_count)
}

/// Whether a receive WR from the ABI holds only values [`RecvWr`] allows.
#[inline(always)]
pub(crate) fn recv_wr_ok(wr: &abi::RecvWr) -> bool {
    sgl_ok(wr.sgl, wr.sge_count)
}

/// Why [`send_wr_ok`] refused `wr`.
#[cold]
#[inline(never)]
pub(crate) fn send_wr_refusal(wr: &abi::SendWr) -> Error {
    if !OpCode::CODES.contains(&wr.opcode) {
        unknown(ErrorKind::InvalidArgument, "send opcode", wr.opcode)
    } else if SendFlags::from_bits(wr.flags).is_none() {
        unknown(ErrorKind::InvalidArgument, "send flags", wr.flags)
    } else {
        sgl_refusal(wr.sgl, wr.sge_count)
    }
}

/// Why [`recv_wr_ok`] refused `wr`.
#[cold]
#[inline(never)]
pub(crate) fn recv_wr_refusal(wr: &abi::RecvWr) -> Error {
    sgl_refusal(wr.sgl, wr.sge_count)
}

/// Send WRs from the ABI that all pass [`send_wr_ok`], as the crate's own type, without
/// copying.
///
/// # Safety
/// Every WR must pass [`send_wr_ok`], and its non-null `sgl` point to `sge_count` readable
/// SGEs that outlive `'a`.
#[inline(always)]
pub(crate) unsafe fn valid_send_wrs<'a>(wrs: &'a [abi::SendWr]) -> &'a [SendWr<'a>] {
    debug_assert!(wrs.iter().all(send_wr_ok));
    // SAFETY: `abi::SendWr` and `SendWr` have the same layout (asserted in `abi`), and every
    // WR holds values `SendWr` allows, as the caller guarantees: an opcode in `OpCode::CODES`
    // (the discriminants of `OpCode`), flags within `SendFlags`, and a scatter list `SgRef`
    // may hold, readable for `'a`.
    unsafe { std::slice::from_raw_parts(wrs.as_ptr().cast::<SendWr<'a>>(), wrs.len()) }
}

/// Receive WRs from the ABI that all pass [`recv_wr_ok`]; as [`valid_send_wrs`].
///
/// # Safety
/// As for [`valid_send_wrs`], with [`recv_wr_ok`].
#[inline(always)]
pub(crate) unsafe fn valid_recv_wrs<'a>(wrs: &'a [abi::RecvWr]) -> &'a [RecvWr<'a>] {
    debug_assert!(wrs.iter().all(recv_wr_ok));
    // SAFETY: `abi::RecvWr` and `RecvWr` have the same layout (asserted in `abi`), and every
    // WR has a scatter list `SgRef` may hold, readable for `'a`, as the caller guarantees.
    unsafe { std::slice::from_raw_parts(wrs.as_ptr().cast::<RecvWr<'a>>(), wrs.len()) }
}

/// The send WRs of a post in ABI form: the same memory.
#[inline]
pub(crate) fn send_wrs_abi(wrs: &[SendWr<'_>]) -> *const abi::SendWr {
    wrs.as_ptr().cast()
}

/// The receive WRs of a post in ABI form: the same memory.
#[inline]
pub(crate) fn recv_wrs_abi(wrs: &[RecvWr<'_>]) -> *const abi::RecvWr {
    wrs.as_ptr().cast()
}

/// The largest [`WcStatus`] code.
const LAST_WC_STATUS: u32 = WcStatus::General as u32;
/// The largest [`WcOpcode`] code.
const LAST_WC_OPCODE: u32 = WcOpcode::FetchAdd as u32;

/// Makes the `n` completions a plugin just wrote at `out` valid [`Completion`]s, in place.
///
/// A completion was already taken off the provider's CQ: dropping it would lose its WR for
/// good. A status or opcode this ABI does not define (a provider of a newer minor, or a broken
/// one) becomes a `General` error completion that keeps its `wr_id`, so the program can still
/// reclaim the WR's buffers.
///
/// # Safety
/// `out` must be valid for reads and writes of `n` completions.
#[inline(always)]
pub(crate) unsafe fn check_completions(out: *mut abi::Completion, n: usize) {
    for i in 0..n {
        // SAFETY: `i < n`, as the caller guarantees; read and written as `abi::Completion`,
        // whose fields take any value.
        let wc = unsafe { &mut *out.add(i) };
        if wc.status > LAST_WC_STATUS || wc.opcode > LAST_WC_OPCODE {
            undefined_completion(wc);
        }
        // Flags this ABI does not define (a newer minor's) mean nothing to this program.
        wc.flags &= WcFlags::all().bits();
    }
}

#[cold]
#[inline(never)]
fn undefined_completion(wc: &mut abi::Completion) {
    tracing::warn!(
        wr_id = wc.wr_id,
        status = wc.status,
        opcode = wc.opcode,
        "a plugin returned a completion with a status or opcode the ABI does not define; \
         reported as a general error"
    );
    wc.status = WcStatus::General as u32;
    if wc.opcode > LAST_WC_OPCODE {
        wc.opcode = WcOpcode::default() as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest valid prefix of `wrs`, as the plugin side's post takes it.
    ///
    /// # Safety
    /// As for [`valid_send_wrs`].
    unsafe fn send_wrs<'a>(wrs: &'a [abi::SendWr]) -> &'a [SendWr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !send_wr_ok(wr))
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` pass `send_wr_ok`; scatter lists as the caller guarantees.
        unsafe { valid_send_wrs(&wrs[..n]) }
    }

    /// As [`send_wrs`], for receives.
    ///
    /// # Safety
    /// As for [`valid_recv_wrs`].
    unsafe fn recv_wrs<'a>(wrs: &'a [abi::RecvWr]) -> &'a [RecvWr<'a>] {
        let n = wrs
            .iter()
            .position(|wr| !recv_wr_ok(wr))
            .unwrap_or(wrs.len());
        // SAFETY: the first `n` pass `recv_wr_ok`; scatter lists as the caller guarantees.
        unsafe { valid_recv_wrs(&wrs[..n]) }
    }

    #[test]
    fn send_wrs_cross_as_they_are_and_the_first_bad_one_ends_the_batch() {
        use crate::wr::{RemoteAddr, SendOp};
        let sge = [Sge {
            addr: 0x1000,
            length: 64,
            lkey: 7,
        }];
        let remote = RemoteAddr { addr: 9, rkey: 3 };
        let wrs: Vec<SendWr> = [
            SendOp::Send,
            SendOp::SendWithImm(5),
            SendOp::Write(remote),
            SendOp::WriteWithImm(remote, 6),
            SendOp::Read(remote),
            SendOp::CompareSwap {
                remote,
                compare: 11,
                swap: 12,
            },
            SendOp::FetchAdd { remote, add: 13 },
        ]
        .into_iter()
        .map(|op| SendWr::new(42, op, &sge).with_flags(SendFlags::SIGNALED | SendFlags::FENCE))
        .collect();
        // SAFETY: the ABI form is the WRs' own memory, which (with `sge`) lives across the call.
        let raw = unsafe { std::slice::from_raw_parts(send_wrs_abi(&wrs), wrs.len()) };
        // SAFETY: as above.
        let back = unsafe { send_wrs(raw) };
        assert_eq!(back, &wrs[..]);
        assert_eq!(back[3].op(), SendOp::WriteWithImm(remote, 6));
        assert_eq!(
            (raw[5].opcode, raw[5].compare_add, raw[5].swap),
            (6, 11, 12)
        );
        assert_eq!((raw[6].opcode, raw[6].compare_add), (7, 13));
        assert_eq!(back[6].op(), SendOp::FetchAdd { remote, add: 13 });
        assert_eq!(back[0].sgl(), &sge);

        for (field, value, what) in [
            ("opcode", 0, "send opcode 0"),
            ("opcode", 8, "send opcode 8"),
            ("opcode", 77, "send opcode 77"),
            ("flags", 1 << 9, "send flags 512"),
        ] {
            let mut raw = raw.to_vec();
            match field {
                "opcode" => raw[2].opcode = value,
                _ => raw[2].flags = value,
            }
            // SAFETY: as above.
            let ok = unsafe { send_wrs(&raw) };
            assert_eq!(ok.len(), 2);
            let err = send_wr_refusal(&raw[2]);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.message().contains(what), "{err}");
        }
        let mut raw = raw.to_vec();
        (raw[1].sgl, raw[1].sge_count) = (std::ptr::null(), 2);
        // SAFETY: as above; the null list of two is refused before it is read.
        let ok = unsafe { send_wrs(&raw) };
        assert_eq!(ok.len(), 1);
        assert!(send_wr_refusal(&raw[1]).message().contains("null"));
        // A null list of one is the WR's own SGE; of none, empty.
        raw[1].sge_count = 1;
        raw[1].sge = Sge {
            addr: 5,
            length: 6,
            lkey: 7,
        };
        raw[2].sge_count = 0;
        raw[2].sgl = std::ptr::null();
        // SAFETY: as above.
        let ok = unsafe { send_wrs(&raw) };
        assert_eq!(ok.len(), raw.len());
        assert_eq!(ok[1].sgl(), &[raw[1].sge]);
        assert_eq!(ok[2].sgl(), &[]);
        // A WR of one SGE holds it, and crosses with it.
        let one = [SendWr::single(9, SendOp::Read(remote), sge[0])];
        // SAFETY: as above.
        let raw = unsafe { std::slice::from_raw_parts(send_wrs_abi(&one), 1) };
        assert!(raw[0].sgl.is_null());
        // SAFETY: as above.
        let back = unsafe { send_wrs(raw) };
        assert_eq!(
            (back[0].sgl(), back[0].op()),
            (&sge[..], SendOp::Read(remote))
        );
    }

    #[test]
    fn recv_wrs_cross_as_they_are_and_a_misaligned_list_is_refused() {
        let sges = [Sge::default(); 2];
        let wrs = [
            RecvWr::new(1, &sges),
            RecvWr::new(2, &sges[1..]),
            RecvWr::single(3, sges[0]),
        ];
        // SAFETY: the ABI form is the WRs' own memory, which lives across the call.
        let mut raw = unsafe { std::slice::from_raw_parts(recv_wrs_abi(&wrs), 3) }.to_vec();
        // SAFETY: as above.
        let back = unsafe { recv_wrs(&raw) };
        assert_eq!(back, &wrs[..]);
        raw[1].sgl = raw[1].sgl.cast::<u8>().wrapping_add(1).cast();
        // SAFETY: as above; the misaligned list is refused before it is read.
        let ok = unsafe { recv_wrs(&raw) };
        assert_eq!(ok.len(), 1);
        assert_eq!(recv_wr_refusal(&raw[1]).kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn completions_with_undefined_codes_become_general_errors_in_place() {
        let mut wc = crate::wr::Completion {
            wr_id: 3,
            status: WcStatus::RnrRetryExceeded,
            opcode: WcOpcode::RecvRdmaWithImm,
            byte_len: 10,
            qp_num: 12,
            vendor_err: 0x81,
            ..Default::default()
        };
        wc.set_imm(Some(0xfeed));
        let good = abi::Completion {
            wr_id: 3,
            status: 8,
            opcode: 4,
            byte_len: 10,
            imm_data: 0xfeed,
            flags: 1,
            qp_num: 12,
            vendor_err: 0x81,
        };
        let mut raw = [good; 5];
        raw[1].status = 200;
        raw[2].opcode = 77;
        // The last opcode this ABI defines (fetch-and-add) passes; the one past it does not.
        raw[3].opcode = 6;
        raw[4].opcode = 7;
        // SAFETY: five completions, readable and writable.
        unsafe { check_completions(raw.as_mut_ptr(), 5) };
        // SAFETY: `check_completions` made all five valid, and the layouts are the same.
        let back: &[crate::wr::Completion] =
            unsafe { std::slice::from_raw_parts(raw.as_ptr().cast(), 5) };
        assert_eq!(back[0], wc);
        assert_eq!(back[0].imm(), Some(0xfeed));
        assert_eq!((back[1].wr_id, back[1].status), (3, WcStatus::General));
        assert_eq!(back[1].opcode, WcOpcode::RecvRdmaWithImm);
        assert_eq!(
            (back[2].status, back[2].opcode),
            (WcStatus::General, WcOpcode::Send)
        );
        assert_eq!(
            (back[3].status, back[3].opcode),
            (WcStatus::RnrRetryExceeded, WcOpcode::FetchAdd)
        );
        assert_eq!(
            (back[4].status, back[4].opcode),
            (WcStatus::General, WcOpcode::Send)
        );
    }
}
