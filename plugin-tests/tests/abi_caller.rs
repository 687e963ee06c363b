//! The plugin side against a caller that breaks the ABI: a program written in C (or a broken
//! loader) calling the mock's exported table directly. WRs cross without being copied, so every
//! value the caller could get wrong is checked before the WRs are used as the crate's own:
//! such a caller gets a typed error and, in the failure record, an exact count of accepted WRs,
//! never undefined behaviour, and the WRs it had refused are never posted.

use std::ffi::c_void;
use std::time::Duration;

use anyverbs::plugin::abi::{
    Bytes, Completion, CqInfo, DeviceInfo, ErrorBuf, PollResult, PostFailure, QpInit, RawCq,
    RawDevice, RawPd, RawProvider, RawQp, RecvWr, STATUS_OK, SendWr, Sge, Sink, Status,
    error_kind_code,
};
use anyverbs::plugin::export::{self, c_str};
use anyverbs::{ErrorKind, WcStatus};
use anyverbs_provider_mock::MockProvider;

unsafe extern "C" fn new(out: *mut *mut RawProvider, err: *mut ErrorBuf) -> Status {
    // SAFETY: the test passes pointers valid for a write.
    unsafe { export::provider_new::<MockProvider>(out, err, || Ok(MockProvider::new())) }
}

/// The ABI's code of INIT (as a C caller writes it).
const QP_STATE_INIT: u32 = 2;
/// The ABI's code of ERROR.
const QP_STATE_ERROR: u32 = 7;

unsafe extern "C" fn ignore_info(_ctx: *mut c_void, _info: *const DeviceInfo) {}

/// The `InvalidArgument` status.
fn invalid() -> Status {
    error_kind_code(ErrorKind::InvalidArgument)
}

/// A QP of the mock in INIT, reached through the raw table only, with its CQ.
struct RawQpBed {
    t: anyverbs::plugin::abi::ProviderTable,
    provider: *mut RawProvider,
    device: *mut RawDevice,
    pd: *mut RawPd,
    cq: *mut RawCq,
    qp: *mut RawQp,
}

impl RawQpBed {
    fn new() -> Self {
        let t = export::table::<MockProvider>(c_str("mock\0"), c_str("0\0"), new);
        let mut err = ErrorBuf::default();
        let (mut provider, mut device, mut pd, mut cq, mut qp) = (
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        let name = b"mock0";
        let sink = Sink {
            ctx: std::ptr::null_mut(),
            put: ignore_info,
        };
        let mut info = CqInfo::default();
        let init = QpInit {
            max_send_wr: 8,
            max_recv_wr: 8,
            max_send_sge: 2,
            max_recv_sge: 2,
            max_inline_data: 0,
        };
        let mut qp_num = 0;
        // SAFETY: each call gets live handles from the calls before it and pointers to locals.
        unsafe {
            assert_eq!(
                (t.provider_new.unwrap())(&mut provider, &mut err),
                STATUS_OK
            );
            let bytes = Bytes {
                ptr: name.as_ptr(),
                len: name.len(),
            };
            let f = t.provider_open.unwrap();
            assert_eq!(f(provider, bytes, &mut device, sink, &mut err), STATUS_OK);
            assert_eq!(
                (t.device_alloc_pd.unwrap())(device, &mut pd, &mut err),
                STATUS_OK
            );
            let f = t.device_create_cq.unwrap();
            assert_eq!(f(device, 16, &mut cq, &mut info, &mut err), STATUS_OK);
            let f = t.pd_create_qp.unwrap();
            let mut granted = QpInit::default();
            let status = f(
                pd,
                cq,
                cq,
                &init,
                &mut qp,
                &mut qp_num,
                &mut granted,
                &mut err,
            );
            assert_eq!(status, STATUS_OK, "{}", err.text());
            // A C caller learns the sizes granted, as `ibv_create_qp` writes back `cap`.
            assert_eq!(granted.max_send_sge, init.max_send_sge);
            assert_eq!(granted.max_send_wr, init.max_send_wr);
            let status = (t.qp_modify.unwrap())(qp, QP_STATE_INIT, &mut err);
            assert_eq!(status, STATUS_OK, "{}", err.text());
        }
        RawQpBed {
            t,
            provider,
            device,
            pd,
            cq,
            qp,
        }
    }

    /// Posts `wrs` as receives: the status, the failure record's count of accepted WRs
    /// (`usize::MAX` if not written) and its message.
    fn post_recv(&self, wrs: *const RecvWr, count: usize) -> (Status, usize, String) {
        let mut fail = untouched();
        // SAFETY: a live QP; `wrs` as the test chose it; the failure record is a local.
        let status = unsafe { (self.t.qp_post_recv.unwrap())(self.qp, wrs, count, &mut fail) };
        (status, fail.accepted, fail.error.text())
    }

    /// Posts `wrs` as sends, as [`post_recv`](Self::post_recv).
    fn post_send(&self, wrs: *const SendWr, count: usize) -> (Status, usize, String) {
        let mut fail = untouched();
        // SAFETY: as for `post_recv`.
        let status = unsafe { (self.t.qp_post_send.unwrap())(self.qp, wrs, count, &mut fail) };
        (status, fail.accepted, fail.error.text())
    }

    /// Polls into `out` (room for `capacity`): the count or negated status, and the message.
    fn poll(&self, out: *mut Completion, capacity: usize) -> (PollResult, String) {
        let mut err = ErrorBuf::default();
        // SAFETY: a live CQ; `out` as the test chose it.
        let result = unsafe { (self.t.cq_poll.unwrap())(self.cq, out, capacity, &mut err) };
        (result, err.text())
    }
}

/// A failure record as a caller sets it up, to see what a post writes into it.
fn untouched() -> PostFailure {
    PostFailure {
        accepted: usize::MAX,
        error: ErrorBuf::default(),
    }
}

impl Drop for RawQpBed {
    fn drop(&mut self) {
        // SAFETY: each handle is released once, dependents first.
        unsafe {
            (self.t.qp_free.unwrap())(self.qp);
            (self.t.cq_free.unwrap())(self.cq);
            (self.t.pd_free.unwrap())(self.pd);
            (self.t.device_free.unwrap())(self.device);
            (self.t.provider_free.unwrap())(self.provider);
        }
    }
}

fn recv(wr_id: u64, sgl: *const Sge, sge_count: usize) -> RecvWr {
    RecvWr {
        wr_id,
        sgl,
        sge_count,
        sge: Sge::default(),
    }
}

#[test]
fn bad_wrs_from_the_caller_are_refused_with_an_exact_count_and_never_posted() {
    let bed = RawQpBed::new();
    let null = std::ptr::null();
    let sges = [Sge::default(); 2];
    let misaligned = sges.as_ptr().cast::<u8>().wrapping_add(4).cast::<Sge>();

    // Receives in INIT: the second of three has a null list of two SGEs, so the first is
    // posted and the rest refused.
    let batch = [recv(1, null, 0), recv(2, null, 2), recv(3, null, 0)];
    let (status, accepted, message) = bed.post_recv(batch.as_ptr(), batch.len());
    assert_eq!((status, accepted), (invalid(), 1), "{message}");
    assert!(
        message.contains("null, misaligned or too long"),
        "{message}"
    );

    // A misaligned list is refused before it is read; so is the first WR of a batch, with
    // nothing posted at all.
    let batch = [recv(4, misaligned, 1), recv(5, null, 0)];
    let (status, accepted, message) = bed.post_recv(batch.as_ptr(), batch.len());
    assert_eq!((status, accepted), (invalid(), 0), "{message}");

    // A null or misaligned array of WRs with a count.
    let (status, accepted, message) = bed.post_recv(std::ptr::null(), 3);
    assert_eq!((status, accepted), (invalid(), 0), "{message}");
    assert!(message.contains("null, misaligned"), "{message}");
    let batch = [recv(6, null, 0), recv(7, null, 0)];
    let shifted = batch.as_ptr().cast::<u8>().wrapping_add(4).cast::<RecvWr>();
    let (status, accepted, message) = bed.post_recv(shifted, 1);
    assert_eq!((status, accepted), (invalid(), 0), "{message}");

    // Sends with an opcode or flags no ABI version defines: refused before the QP's state is
    // even looked at.
    for (opcode, flags, what) in [
        (8, 1, "send opcode 8"),
        (77, 1, "send opcode 77"),
        (1, 1 << 20, "send flags"),
    ] {
        let wr = SendWr {
            wr_id: 9,
            sgl: null,
            sge_count: 0,
            sge: Sge::default(),
            remote_addr: 0,
            rkey: 0,
            imm_data: 0,
            opcode,
            flags,
            compare_add: 0,
            swap: 0,
        };
        let (status, accepted, message) = bed.post_send(&wr, 1);
        assert_eq!((status, accepted), (invalid(), 0), "{message}");
        assert!(message.contains(what), "{message}");
    }

    // A post that fails with no failure record still says why in its status, and posts
    // nothing it refused.
    // SAFETY: a live QP; the batch is a local; no failure record.
    let status = unsafe {
        (bed.t.qp_post_recv.unwrap())(bed.qp, [recv(8, null, 2)].as_ptr(), 1, std::ptr::null_mut())
    };
    assert_eq!(status, invalid());

    // A completion buffer that is misaligned or null: refused with the negated status, nothing
    // polled. The buffer's contents are no concern of the caller's (it may be uninitialised):
    // here it holds codes no ABI version defines. No room at all is an empty poll.
    let junk = Completion {
        status: u32::MAX,
        opcode: u32::MAX,
        flags: u32::MAX,
        ..Completion::default()
    };
    let mut room = [junk; 4];
    let bad_out = room
        .as_mut_ptr()
        .cast::<u8>()
        .wrapping_add(1)
        .cast::<Completion>();
    let refused = -(invalid() as PollResult);
    let (result, message) = bed.poll(bad_out, 2);
    assert_eq!(result, refused, "{message}");
    assert!(message.contains("null or misaligned"), "{message}");
    let (result, message) = bed.poll(std::ptr::null_mut(), 4);
    assert_eq!(result, refused, "{message}");
    let (result, message) = bed.poll(std::ptr::null_mut(), 0);
    assert_eq!(result, 0, "{message}");

    // Only the one accepted receive was ever posted: moving the QP to ERROR flushes exactly it.
    let mut err = ErrorBuf::default();
    // SAFETY: a live QP and a local buffer.
    let status = unsafe { (bed.t.qp_modify.unwrap())(bed.qp, QP_STATE_ERROR, &mut err) };
    assert_eq!(status, STATUS_OK, "{}", err.text());
    let mut flushed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let (n, message) = bed.poll(room.as_mut_ptr(), room.len());
        let n = usize::try_from(n).unwrap_or_else(|_| panic!("poll failed: {message}"));
        flushed.extend(room[..n].iter().map(|c| (c.wr_id, c.status)));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(flushed, [(1, WcStatus::WrFlushError as u32)]);

    // A batch posted whole is the status alone: the failure record is left as the caller set
    // it, as `ibv_post_send` leaves `bad_wr` (ERROR takes receives, to be flushed).
    let batch = [recv(10, null, 0), recv(11, null, 0)];
    let (status, accepted, message) = bed.post_recv(batch.as_ptr(), batch.len());
    assert_eq!(
        (status, accepted, message.as_str()),
        (STATUS_OK, usize::MAX, "")
    );
}
