//! bad_input cases: every bad input is refused with a typed error, and loses nothing.
//!
//! Each case makes one bad call and checks two things:
//!
//! 1. the call fails with the right [`ErrorKind`] (or, where real hardware can only notice the
//!    problem while executing the WR, the WR completes with the right [`WcStatus`]);
//! 2. nothing is lost: the objects involved still work afterwards, the WRs of a batch in front of
//!    a refused one are posted and complete, and the refused WR and those behind it never
//!    complete. Every WR has its own `wr_id`; at the end every QP is drained and every CQ emptied,
//!    and the case checks that each `wr_id` completed at most once and no refused one at all.

use std::time::Duration;

use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Listener,
    MemoryRegion, PostError, ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr,
    RemoteAddr, SendOp, SendWr, SgList, Sge, StateModel, WcOpcode, WcStatus,
};

use crate::case::{Case, CaseError, CaseResult, Needs};
use crate::ctx::{Ctx, Pair};
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    let rdma_write = Needs::caps(Caps::RDMA_WRITE);
    let rdma_read = Needs::caps(Caps::RDMA_READ);
    vec![
        case(
            "bad_input::too_many_sges_send",
            "A send WR with more SGEs than the QP's max_send_sge is refused with InvalidArgument; \
             the WR before it completes, it and the one after never do, and the QP keeps working.",
            Needs::NOTHING,
            too_many_sges_send::<P>,
        ),
        case(
            "bad_input::too_many_sges_recv",
            "A receive WR with more SGEs than the QP's max_recv_sge is refused with \
             InvalidArgument; the WR before it completes, it and the one after never do, and the \
             QP keeps working.",
            Needs::NOTHING,
            too_many_sges_recv::<P>,
        ),
        case(
            "bad_input::send_sge_unknown_lkey",
            "A send WR whose SGE has an unknown lkey is refused with InvalidArgument (or completes \
             with a local protection error) and loses nothing.",
            Needs::NOTHING,
            send_sge_unknown_lkey::<P>,
        ),
        case(
            "bad_input::send_sge_offset_past_end",
            "A send WR whose SGE starts past the end of its region is refused with \
             InvalidArgument (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            send_sge_offset_past_end::<P>,
        ),
        case(
            "bad_input::send_sge_length_overrun",
            "A send WR whose SGE runs over the end of its region is refused with InvalidArgument \
             (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            send_sge_length_overrun::<P>,
        ),
        case(
            "bad_input::send_sge_other_pd",
            "A send WR whose SGE names a region of another protection domain is refused with \
             InvalidArgument (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            send_sge_other_pd::<P>,
        ),
        case(
            "bad_input::recv_sge_unknown_lkey",
            "A receive WR whose SGE has an unknown lkey is refused with InvalidArgument (or \
             completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            recv_sge_unknown_lkey::<P>,
        ),
        case(
            "bad_input::recv_sge_offset_past_end",
            "A receive WR whose SGE starts past the end of its region is refused with \
             InvalidArgument (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            recv_sge_offset_past_end::<P>,
        ),
        case(
            "bad_input::recv_sge_length_overrun",
            "A receive WR whose SGE runs over the end of its region is refused with \
             InvalidArgument (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            recv_sge_length_overrun::<P>,
        ),
        case(
            "bad_input::recv_sge_other_pd",
            "A receive WR whose SGE names a region of another protection domain is refused with \
             InvalidArgument (or completes with a local protection error) and loses nothing.",
            Needs::NOTHING,
            recv_sge_other_pd::<P>,
        ),
        case(
            "bad_input::rdma_write_bad_rkey",
            "An RDMA WRITE with an rkey the peer does not know completes with a remote access \
             error, after the WRITE before it succeeded, and writes nothing.",
            rdma_write,
            rdma_write_bad_rkey::<P>,
        ),
        case(
            "bad_input::rdma_write_out_of_bounds",
            "An RDMA WRITE running past the end of the remote region completes with a remote \
             access error, after the WRITE before it succeeded, and writes nothing.",
            rdma_write,
            rdma_write_out_of_bounds::<P>,
        ),
        case(
            "bad_input::rdma_read_bad_rkey",
            "An RDMA READ with an rkey the peer does not know completes with a remote access \
             error, after the READ before it succeeded, and reads nothing.",
            rdma_read,
            rdma_read_bad_rkey::<P>,
        ),
        case(
            "bad_input::rdma_read_out_of_bounds",
            "An RDMA READ running past the end of the remote region completes with a remote \
             access error, after the READ before it succeeded, and reads nothing.",
            rdma_read,
            rdma_read_out_of_bounds::<P>,
        ),
        case(
            "bad_input::recv_queue_overflow",
            "Posting more receives than max_recv_wr is refused with ResourceExhausted after \
             exactly max_recv_wr were posted, and those all complete.",
            Needs::NOTHING,
            recv_queue_overflow::<P>,
        ),
        case(
            "bad_input::send_queue_overflow",
            "Posting more sends than max_send_wr to a QP whose peer answers RNR is refused with \
             ResourceExhausted after exactly max_send_wr were posted, and those all complete in \
             order once the peer posts receives.",
            // Stalling the sends needs RNR flow control, which only InfiniBand has: on iWARP a
            // SEND that finds no receive posted terminates the connection.
            Needs::model(StateModel::InfiniBand),
            send_queue_overflow::<P>,
        ),
        case(
            "bad_input::post_send_before_connect",
            "Posting a send to a QP that was never connected (RESET or IDLE) is refused with \
             InvalidState, and the QP can still be connected and used.",
            Needs::NOTHING,
            post_send_before_connect::<P>,
        ),
        case(
            "bad_input::post_recv_in_reset",
            "Posting a receive to an InfiniBand QP in RESET is refused with InvalidState, and the \
             QP can still be connected and used.",
            // Only the InfiniBand initial state forbids receives (StateModel::can_post_recv): on
            // iWARP, receives posted in IDLE are legal.
            Needs::model(StateModel::InfiniBand),
            post_recv_in_reset::<P>,
        ),
        case(
            "bad_input::post_send_in_init",
            "Posting a send to an InfiniBand QP in INIT is refused with InvalidState, while a \
             receive is accepted, and the QP can still be connected and used.",
            Needs::model(StateModel::InfiniBand),
            post_send_in_init::<P>,
        ),
        case(
            "bad_input::post_after_destroy",
            "Every call on a destroyed QP but destroy fails with Destroyed, destroying it again \
             is a no-op, and its PD, CQ and listener keep working.",
            Needs::NOTHING,
            post_after_destroy::<P>,
        ),
        case(
            "bad_input::destroy_pd_with_mrs",
            "Destroying a PD that still has memory regions fails with Busy and changes nothing; \
             once they are gone it succeeds.",
            Needs::NOTHING,
            destroy_pd_with_mrs::<P>,
        ),
        case(
            "bad_input::destroy_pd_with_qps",
            "Destroying a PD that still has queue pairs fails with Busy and changes nothing; \
             once they are gone it succeeds.",
            Needs::NOTHING,
            destroy_pd_with_qps::<P>,
        ),
        case(
            "bad_input::destroy_cq_in_use",
            "Destroying a CQ that a QP uses fails with Busy, the CQ still delivers completions, \
             and once the QP is gone it can be destroyed.",
            Needs::NOTHING,
            destroy_cq_in_use::<P>,
        ),
        case(
            "bad_input::zero_depth_cq",
            "Creating a CQ of depth 0 fails with InvalidArgument, and the device still creates \
             CQs.",
            Needs::NOTHING,
            zero_depth_cq::<P>,
        ),
        case(
            "bad_input::zero_sized_qp",
            "Creating a QP with max_send_wr 0 or max_recv_wr 0 fails with InvalidArgument and \
             leaves its PD and CQ as they were.",
            Needs::NOTHING,
            zero_sized_qp::<P>,
        ),
        case(
            "bad_input::open_unknown_device",
            "Opening a device name the provider does not have fails with NotFound, and the \
             device under test still opens.",
            Needs::NOTHING,
            open_unknown_device::<P>,
        ),
        case(
            "bad_input::connect_refused",
            "Connecting to an address of the device where nobody listens fails with \
             ConnectionRefused, and the QP, its CQ and PD can then be destroyed cleanly.",
            Needs::NOTHING,
            connect_refused::<P>,
        ),
    ]
}

fn case<P: Provider>(
    name: &'static str,
    description: &'static str,
    needs: Needs,
    run: fn(&Ctx<'_, P>) -> CaseResult,
) -> Case<P> {
    Case {
        name,
        description,
        needs,
        run,
    }
}

// ----- fixtures and bookkeeping -----

/// Bytes of one message; registered buffers are cut into slots of this size.
const MSG: u32 = 64;
/// `MSG` as a length.
const SLOT: usize = MSG as usize;
/// Slots in each buffer.
const SLOTS: usize = 32;
/// How long "nothing completes" is watched for.
const QUIET: Duration = Duration::from_millis(50);

/// The byte every byte of source slot `slot` is filled with.
fn pattern(slot: usize) -> u8 {
    0x40 + slot as u8
}

/// A connected pair plus a source buffer (slot `i` filled with `pattern(i)`) and a zeroed
/// destination buffer, both in the pair's PD. The buffers drop before the pair (and its PD).
struct Fx<P: Provider> {
    src: P::Mr,
    dst: P::Mr,
    pair: Pair<P>,
}

fn fixture<P: Provider>(
    ctx: &Ctx<'_, P>,
    init: &QpInit,
    params: &ConnParams,
) -> Result<Fx<P>, CaseError> {
    let pair = ctx.pair_with(init, params, 256)?;
    let (src, dst) = buffers(ctx, &pair.pd)?;
    Ok(Fx { src, dst, pair })
}

fn buffers<P: Provider>(ctx: &Ctx<'_, P>, pd: &P::Pd) -> Result<(P::Mr, P::Mr), CaseError> {
    let src = ctx.mr(pd, SLOTS * SLOT, Access::LOCAL_WRITE)?;
    for s in 0..SLOTS {
        src.write(s * SLOT, &[pattern(s); SLOT])?;
    }
    let dst = ctx.mr(pd, SLOTS * SLOT, Access::LOCAL_WRITE)?;
    Ok((src, dst))
}

/// Two QPs on the device under test that are NOT connected yet, with a listener to connect them
/// through and the same buffers as [`Fx`]. Fields drop in order: MRs, QPs, listener, CQs, PD.
struct Loose<P: Provider> {
    src: P::Mr,
    dst: P::Mr,
    a: P::Qp,
    b: P::Qp,
    listener: P::Listener,
    cq_a: P::Cq,
    cq_b: P::Cq,
    _pd: P::Pd,
    _device: P::Device,
}

fn loose<P: Provider>(ctx: &Ctx<'_, P>) -> Result<Loose<P>, CaseError> {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let cq_a = device.create_cq(256)?;
    let cq_b = device.create_cq(256)?;
    let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default())?;
    let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default())?;
    let listener = device.listen(addr)?;
    let (src, dst) = buffers(ctx, &pd)?;
    Ok(Loose {
        src,
        dst,
        a,
        b,
        listener,
        cq_a,
        cq_b,
        _pd: pd,
        _device: device,
    })
}

/// Connects `active` to `listener` and accepts the request onto `passive`.
fn connect<P: Provider>(
    ctx: &Ctx<'_, P>,
    active: &P::Qp,
    passive: &P::Qp,
    listener: &P::Listener,
) -> CaseResult {
    let params = ConnParams::default();
    active.connect(listener.local_addr(), &params)?;
    let request = listener.next_request(ctx.deadline())?;
    listener.accept(&request, passive, &params)?;
    active.wait_connected(ctx.deadline())?;
    Ok(())
}

/// A signaled SEND of source slot `slot`.
fn send_wr(wr_id: u64, src: &impl MemoryRegion, slot: usize) -> SendWr<'static> {
    SendWr::single(wr_id, SendOp::Send, src.sge(slot * SLOT, MSG))
}

/// A receive into destination slot `slot`.
fn recv_wr(wr_id: u64, dst: &impl MemoryRegion, slot: usize) -> RecvWr<'static> {
    RecvWr::single(wr_id, dst.sge(slot * SLOT, MSG))
}

/// Slot `slot` of `mr` cut into `n` contiguous SGEs (one SGE if `n` exceeds the slot's bytes).
fn split_slot(mr: &impl MemoryRegion, slot: usize, n: u32) -> SgList {
    if n == 0 || n > MSG {
        return SgList::from_slice(&[mr.sge(slot * SLOT, MSG)]);
    }
    let piece = MSG / n;
    (0..n)
        .map(|i| {
            let len = if i + 1 == n { MSG - piece * i } else { piece };
            mr.sge(slot * SLOT + (piece * i) as usize, len)
        })
        .collect()
}

/// Checks that a batch post was refused with `kind` after `accepted` WRs.
fn refused(r: Result<(), PostError>, kind: ErrorKind, accepted: usize, what: &str) -> CaseResult {
    match r {
        Ok(()) => Err(CaseError::Failed(format!(
            "{what}: the whole batch was accepted; expected {kind} after {accepted} WRs"
        ))),
        Err(e) => {
            ensure_eq!(e.kind(), kind, "{what}: error kind ({e})");
            ensure_eq!(e.accepted, accepted, "{what}: PostError::accepted ({e})");
            Ok(())
        }
    }
}

/// Checks that a call failed with `kind`.
fn fails_with<T>(r: anyverbs::Result<T>, kind: ErrorKind, what: &str) -> CaseResult {
    match r {
        Ok(_) => Err(CaseError::Failed(format!(
            "{what}: succeeded; expected {kind}"
        ))),
        Err(e) => {
            ensure_eq!(e.kind(), kind, "{what}: error kind ({e})");
            Ok(())
        }
    }
}

/// Checks completions, in order, against `(wr_id, status)` pairs.
fn statuses(got: &[Completion], want: &[(u64, WcStatus)]) -> CaseResult {
    ensure_eq!(got.len(), want.len(), "number of completions ({got:?})");
    for (c, &(id, status)) in got.iter().zip(want) {
        ensure!(
            c.wr_id == id && c.status == status,
            "expected wr_id {id} with status {status}, in order; got wr_id {} with {} \
             (all: {got:?})",
            c.wr_id,
            c.status
        );
    }
    Ok(())
}

/// Every completion a case has seen, for exactly-once accounting.
#[derive(Default)]
struct Books {
    seen: Vec<Completion>,
}

impl Books {
    /// Waits for exactly `n` completions on `cq` and records them.
    fn wait<P: Provider>(
        &mut self,
        ctx: &Ctx<'_, P>,
        cq: &P::Cq,
        n: usize,
    ) -> Result<Vec<Completion>, CaseError> {
        let got = ctx.completions(cq, n)?;
        self.seen.extend_from_slice(&got);
        Ok(got)
    }

    /// Waits for the successful completions of the send WRs `ids`, in order.
    fn sends<P: Provider>(&mut self, ctx: &Ctx<'_, P>, cq: &P::Cq, ids: &[u64]) -> CaseResult {
        let got = self.wait(ctx, cq, ids.len())?;
        let want: Vec<(u64, WcStatus)> = ids.iter().map(|&id| (id, WcStatus::Success)).collect();
        statuses(&got, &want)
    }

    /// Waits for the successful completions of receives, in order, each `(wr_id, dst slot,
    /// src slot)`, and checks that the data of that source slot landed in that destination slot.
    fn recvs<P: Provider>(
        &mut self,
        ctx: &Ctx<'_, P>,
        cq: &P::Cq,
        dst: &P::Mr,
        want: &[(u64, usize, usize)],
    ) -> CaseResult {
        let got = self.wait(ctx, cq, want.len())?;
        for (c, &(id, dslot, sslot)) in got.iter().zip(want) {
            ensure!(
                c.wr_id == id && c.status == WcStatus::Success && c.opcode == WcOpcode::Recv,
                "expected receive wr_id {id} to complete successfully, in order; got {c:?} \
                 (all: {got:?})"
            );
            ensure_eq!(c.byte_len, MSG, "byte_len of receive {id}");
            let mut buf = [0u8; SLOT];
            dst.read(dslot * SLOT, &mut buf)?;
            ensure!(
                buf.iter().all(|&b| b == pattern(sslot)),
                "receive {id}: the data of source slot {sslot} did not land in slot {dslot}: \
                 {buf:?}"
            );
        }
        Ok(())
    }

    /// Drains `qps`, empties `cqs` (recording everything), then checks that every `wr_id`
    /// completed at most once and none of `refused` completed at all.
    fn finish<P: Provider>(
        &mut self,
        ctx: &Ctx<'_, P>,
        qps: &[&P::Qp],
        cqs: &[&P::Cq],
        refused: &[u64],
    ) -> CaseResult {
        for qp in qps {
            qp.drain(ctx.deadline())?;
        }
        let mut buf = [Completion::default(); 16];
        for cq in cqs {
            loop {
                let n = cq.poll(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.seen.extend_from_slice(&buf[..n]);
            }
        }
        let mut ids: Vec<u64> = self.seen.iter().map(|c| c.wr_id).collect();
        ids.sort_unstable();
        for w in ids.windows(2) {
            ensure!(
                w[0] != w[1],
                "wr_id {} completed more than once: {:?}",
                w[0],
                self.seen
            );
        }
        for id in refused {
            ensure!(
                !ids.contains(id),
                "wr_id {id} was never posted (refused, or behind a refused WR) but completed: {:?}",
                self.seen
            );
        }
        Ok(())
    }
}

/// Drains both QPs of a pair and checks the books (see [`Books::finish`]).
fn finish_pair<P: Provider>(
    books: &mut Books,
    ctx: &Ctx<'_, P>,
    p: &Pair<P>,
    refused: &[u64],
) -> CaseResult {
    books.finish(ctx, &[&p.a, &p.b], &[&p.cq_a, &p.cq_b], refused)
}

// ----- too many SGEs -----

/// Every QP gets the device's max_sge, and the bad WR one more: a provider may round the QP's
/// SGE limits up, but never past what the device supports.
fn max_sge_init<P: Provider>(ctx: &Ctx<'_, P>) -> Result<(QpInit, u32), CaseError> {
    let max = ctx.info().limits.max_sge;
    if max == 0 || max > 1 << 16 {
        return Err(CaseError::NotRun(format!(
            "the device reports max_sge {max}; cannot build a WR with more"
        )));
    }
    let init = QpInit {
        max_send_sge: max,
        max_recv_sge: max,
        ..QpInit::default()
    };
    Ok((init, max))
}

/// `n` one-byte SGEs inside `mr`.
fn tiny_sges(mr: &impl MemoryRegion, n: u32) -> SgList {
    (0..n as usize).map(|k| mr.sge(k % mr.len(), 1)).collect()
}

fn too_many_sges_send<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let (init, max) = max_sge_init(ctx)?;
    let fx = fixture(ctx, &init, &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    p.b.post_recv(&[recv_wr(200, &fx.dst, 0), recv_wr(201, &fx.dst, 1)])?;
    let too_many = tiny_sges(&fx.src, max + 1);
    let wrs = [
        send_wr(100, &fx.src, 0),
        SendWr::send(101, &too_many),
        send_wr(102, &fx.src, 2),
    ];
    refused(
        p.a.post_send(&wrs),
        ErrorKind::InvalidArgument,
        1,
        "a send WR with max_sge + 1 SGEs",
    )?;
    books.sends(ctx, &p.cq_a, &[100])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
    // The same QP still works, with exactly max_sge SGEs.
    p.a.post_send(&[SendWr::send(103, &split_slot(&fx.src, 3, max))])?;
    books.sends(ctx, &p.cq_a, &[103])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(201, 1, 3)])?;
    finish_pair(&mut books, ctx, p, &[101, 102])
}

fn too_many_sges_recv<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let (init, max) = max_sge_init(ctx)?;
    let fx = fixture(ctx, &init, &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    let too_many = tiny_sges(&fx.dst, max + 1);
    let wrs = [
        recv_wr(200, &fx.dst, 0),
        RecvWr::new(201, &too_many),
        recv_wr(202, &fx.dst, 2),
    ];
    refused(
        p.b.post_recv(&wrs),
        ErrorKind::InvalidArgument,
        1,
        "a receive WR with max_sge + 1 SGEs",
    )?;
    p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
    books.sends(ctx, &p.cq_a, &[100])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
    // The same QP still works, with exactly max_sge SGEs.
    p.b.post_recv(&[RecvWr::new(203, &split_slot(&fx.dst, 3, max))])?;
    p.a.post_send(&[send_wr(101, &fx.src, 1)])?;
    books.sends(ctx, &p.cq_a, &[101])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(203, 3, 1)])?;
    finish_pair(&mut books, ctx, p, &[201, 202])
}

// ----- bad local SGEs -----

/// What is wrong with a local SGE.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The lkey names no region.
    UnknownLkey,
    /// The SGE starts past the end of its region.
    OffsetPastEnd,
    /// The SGE starts inside its region and runs over its end.
    LengthOverrun,
    /// The region belongs to another protection domain.
    OtherPd,
}

/// A bad SGE, and what must outlive the post that uses it (MR before PD, in drop order).
struct BadSge<P: Provider> {
    sge: Sge,
    _mr: Option<P::Mr>,
    _pd: Option<P::Pd>,
}

/// A bad SGE of `fault`, otherwise like slot `slot` of `home` (a region of the pair's PD).
fn bad_sge<P: Provider>(
    ctx: &Ctx<'_, P>,
    pair: &Pair<P>,
    home: &P::Mr,
    slot: usize,
    fault: Fault,
) -> Result<BadSge<P>, CaseError> {
    let plain = |sge| BadSge {
        sge,
        _mr: None,
        _pd: None,
    };
    Ok(match fault {
        Fault::UnknownLkey => {
            // The key of a region that no longer exists. While it existed it differed from the
            // key of every live region, and nothing is registered between here and the post.
            let gone = ctx.mr(&pair.pd, SLOT, Access::LOCAL_WRITE)?;
            let lkey = gone.lkey();
            gone.destroy()?;
            drop(gone);
            plain(Sge {
                addr: home.addr().wrapping_add((slot * SLOT) as u64),
                length: MSG,
                lkey,
            })
        }
        Fault::OffsetPastEnd => plain(home.sge(home.len() + SLOT, MSG)),
        Fault::LengthOverrun => plain(home.sge(home.len() - SLOT / 2, MSG)),
        Fault::OtherPd => {
            let pd = pair.device.alloc_pd()?;
            let mr = ctx.mr(&pd, 2 * SLOT, Access::LOCAL_WRITE)?;
            mr.write(0, &[pattern(slot); SLOT])?;
            BadSge {
                sge: mr.sge(0, MSG),
                _mr: Some(mr),
                _pd: Some(pd),
            }
        }
    })
}

fn send_sge_unknown_lkey<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    send_sge_fault(ctx, Fault::UnknownLkey)
}
fn send_sge_offset_past_end<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    send_sge_fault(ctx, Fault::OffsetPastEnd)
}
fn send_sge_length_overrun<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    send_sge_fault(ctx, Fault::LengthOverrun)
}
fn send_sge_other_pd<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    send_sge_fault(ctx, Fault::OtherPd)
}
fn recv_sge_unknown_lkey<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    recv_sge_fault(ctx, Fault::UnknownLkey)
}
fn recv_sge_offset_past_end<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    recv_sge_fault(ctx, Fault::OffsetPastEnd)
}
fn recv_sge_length_overrun<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    recv_sge_fault(ctx, Fault::LengthOverrun)
}
fn recv_sge_other_pd<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    recv_sge_fault(ctx, Fault::OtherPd)
}

/// A batch of three SENDs whose middle one has a bad SGE.
///
/// Two outcomes are correct. A provider that validates SGEs at post time (the mock) refuses the
/// batch at index 1 with InvalidArgument; the first SEND then completes and the QP keeps
/// working. Real NICs cannot validate lkeys at post time: they accept the batch, complete the
/// bad WR with a local protection error and move the QP to ERROR, which flushes the WR behind
/// it; then the QP cannot be used again, and the case checks the wr_ids of those completions.
fn send_sge_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Fault) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    p.b.post_recv(&[recv_wr(200, &fx.dst, 0), recv_wr(201, &fx.dst, 1)])?;
    let bad = bad_sge(ctx, p, &fx.src, 1, fault)?;
    let wrs = [
        send_wr(100, &fx.src, 0),
        SendWr::single(101, SendOp::Send, bad.sge),
        send_wr(102, &fx.src, 2),
    ];
    let what = format!("a send WR with a bad SGE ({fault:?})");
    match p.a.post_send(&wrs) {
        Err(e) => {
            refused(Err(e), ErrorKind::InvalidArgument, 1, &what)?;
            books.sends(ctx, &p.cq_a, &[100])?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
            // The same QP still works end to end.
            p.a.post_send(&[send_wr(103, &fx.src, 3)])?;
            books.sends(ctx, &p.cq_a, &[103])?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(201, 1, 3)])?;
            finish_pair(&mut books, ctx, p, &[101, 102])
        }
        Ok(()) => {
            // Accepted, as real NICs do: the error shows in the bad WR's completion.
            let got = books.wait(ctx, &p.cq_a, 3)?;
            statuses(
                &got,
                &[
                    (100, WcStatus::Success),
                    (101, WcStatus::LocalProtectionError),
                    (102, WcStatus::WrFlushError),
                ],
            )?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
            finish_pair(&mut books, ctx, p, &[])
        }
    }
}

/// A batch of three receives whose middle one has a bad SGE.
///
/// As for sends (see [`send_sge_fault`]), a provider may refuse the batch at index 1 with
/// InvalidArgument (the mock), or accept it and complete the bad receive with a local protection
/// error when a SEND lands on it (real NICs), flushing the receive behind it; the sender's WR
/// then fails too.
fn recv_sge_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Fault) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    let bad = bad_sge(ctx, p, &fx.dst, 1, fault)?;
    let wrs = [
        recv_wr(200, &fx.dst, 0),
        RecvWr::single(201, bad.sge),
        recv_wr(202, &fx.dst, 2),
    ];
    let what = format!("a receive WR with a bad SGE ({fault:?})");
    match p.b.post_recv(&wrs) {
        Err(e) => {
            refused(Err(e), ErrorKind::InvalidArgument, 1, &what)?;
            p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
            books.sends(ctx, &p.cq_a, &[100])?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
            // The same QP still works end to end.
            p.b.post_recv(&[recv_wr(203, &fx.dst, 3)])?;
            p.a.post_send(&[send_wr(101, &fx.src, 1)])?;
            books.sends(ctx, &p.cq_a, &[101])?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(203, 3, 1)])?;
            finish_pair(&mut books, ctx, p, &[201, 202])
        }
        Ok(()) => {
            // Accepted, as real NICs do: the error shows when a SEND lands on the bad receive.
            p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
            books.sends(ctx, &p.cq_a, &[100])?;
            books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
            p.a.post_send(&[send_wr(101, &fx.src, 1)])?;
            let got = books.wait(ctx, &p.cq_b, 2)?;
            statuses(
                &got,
                &[
                    (201, WcStatus::LocalProtectionError),
                    (202, WcStatus::WrFlushError),
                ],
            )?;
            let sent = books.wait(ctx, &p.cq_a, 1)?;
            ensure!(
                sent[0].wr_id == 101 && !sent[0].status.is_success(),
                "the SEND that hit the bad receive must fail; got {:?}",
                sent[0]
            );
            finish_pair(&mut books, ctx, p, &[])
        }
    }
}

// ----- remote access errors -----

/// What is wrong with an RDMA WR's remote address.
#[derive(Debug, Clone, Copy)]
enum Remote {
    /// The rkey names no region of the peer.
    BadRkey,
    /// The address is inside the region, but address + length runs past its end.
    OutOfBounds,
}

/// The bad remote address of `fault`, otherwise like slot 1 of `target`.
fn bad_remote<P: Provider>(
    ctx: &Ctx<'_, P>,
    pd: &P::Pd,
    target: &P::Mr,
    fault: Remote,
) -> Result<RemoteAddr, CaseError> {
    Ok(match fault {
        Remote::BadRkey => {
            // The rkey of a region that no longer exists (and, while it did, differed from the
            // rkey of every live region).
            let gone = ctx.mr_filled(pd, SLOT, 0)?;
            let rkey = gone.rkey();
            gone.destroy()?;
            RemoteAddr {
                addr: target.addr().wrapping_add(SLOT as u64),
                rkey,
            }
        }
        Remote::OutOfBounds => target.remote(target.len() - SLOT / 2),
    })
}

fn rdma_write_bad_rkey<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    rdma_write_fault(ctx, Remote::BadRkey)
}
fn rdma_write_out_of_bounds<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    rdma_write_fault(ctx, Remote::OutOfBounds)
}
fn rdma_read_bad_rkey<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    rdma_read_fault(ctx, Remote::BadRkey)
}
fn rdma_read_out_of_bounds<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    rdma_read_fault(ctx, Remote::OutOfBounds)
}

/// Three RDMA WRITEs, the middle one to a bad remote address.
///
/// Only the responder can tell that an rkey or a remote range is bad, so the post succeeds on
/// every provider and the error always arrives as a remote access error completion of that WR;
/// the QP then moves to ERROR and the WRITE behind it is flushed.
fn rdma_write_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Remote) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    let target = ctx.mr_filled(&p.pd, 4 * SLOT, 0)?;
    let bad = bad_remote(ctx, &p.pd, &target, fault)?;
    let write = |id, op, slot: usize| SendWr::single(id, op, fx.src.sge(slot * SLOT, MSG));
    let wrs = [
        write(100, SendOp::Write(target.remote(0)), 0),
        write(101, SendOp::Write(bad), 1),
        write(102, SendOp::Write(target.remote(2 * SLOT)), 2),
    ];
    p.a.post_send(&wrs)?;
    let got = books.wait(ctx, &p.cq_a, 3)?;
    statuses(
        &got,
        &[
            (100, WcStatus::Success),
            (101, WcStatus::RemoteAccessError),
            (102, WcStatus::WrFlushError),
        ],
    )?;
    ensure_eq!(got[0].opcode, WcOpcode::RdmaWrite, "opcode of WRITE 100");
    let mem = ctx.contents(&target)?;
    ensure!(
        mem[..SLOT].iter().all(|&b| b == pattern(0)),
        "the successful WRITE 100 did not land: {:?}",
        &mem[..SLOT]
    );
    ensure!(
        mem[SLOT..].iter().all(|&b| b == 0),
        "the failed WRITE 101 ({fault:?}) or the flushed WRITE 102 wrote into the target: {:?}",
        &mem[SLOT..]
    );
    finish_pair(&mut books, ctx, p, &[])
}

/// Three RDMA READs, the middle one from a bad remote address; see [`rdma_write_fault`].
fn rdma_read_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Remote) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    let source = ctx.mr_filled(&p.pd, 4 * SLOT, 0)?;
    for s in 0..4 {
        source.write(s * SLOT, &[pattern(10 + s); SLOT])?;
    }
    let bad = bad_remote(ctx, &p.pd, &source, fault)?;
    let read = |id, from, slot: usize| {
        SendWr::single(id, SendOp::Read(from), fx.dst.sge(slot * SLOT, MSG))
    };
    let wrs = [
        read(100, source.remote(0), 0),
        read(101, bad, 1),
        read(102, source.remote(2 * SLOT), 2),
    ];
    p.a.post_send(&wrs)?;
    let got = books.wait(ctx, &p.cq_a, 3)?;
    statuses(
        &got,
        &[
            (100, WcStatus::Success),
            (101, WcStatus::RemoteAccessError),
            (102, WcStatus::WrFlushError),
        ],
    )?;
    ensure_eq!(got[0].opcode, WcOpcode::RdmaRead, "opcode of READ 100");
    ensure_eq!(got[0].byte_len, MSG, "byte_len of READ 100");
    let mem = ctx.contents(&fx.dst)?;
    ensure!(
        mem[..SLOT].iter().all(|&b| b == pattern(10)),
        "the successful READ 100 did not land: {:?}",
        &mem[..SLOT]
    );
    ensure!(
        mem[SLOT..3 * SLOT].iter().all(|&b| b == 0),
        "the failed READ 101 ({fault:?}) or the flushed READ 102 wrote local memory: {:?}",
        &mem[SLOT..3 * SLOT]
    );
    finish_pair(&mut books, ctx, p, &[])
}

// ----- queue overflow -----

fn recv_queue_overflow<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let init = QpInit {
        max_recv_wr: 4,
        ..QpInit::default()
    };
    let fx = fixture(ctx, &init, &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    let wrs: Vec<RecvWr> = (0..5)
        .map(|i| recv_wr(200 + i as u64, &fx.dst, i))
        .collect();
    refused(
        p.b.post_recv(&wrs),
        ErrorKind::ResourceExhausted,
        4,
        "5 receives on a receive queue of 4",
    )?;
    p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
    books.sends(ctx, &p.cq_a, &[100])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
    // One receive completed (and was polled), so there is room for exactly one more.
    p.b.post_recv(&[recv_wr(205, &fx.dst, 5)])?;
    refused(
        p.b.post_recv(&[recv_wr(206, &fx.dst, 6)]),
        ErrorKind::ResourceExhausted,
        0,
        "a receive on a full receive queue of 4",
    )?;
    let sends: Vec<SendWr> = (1..5)
        .map(|i| send_wr(100 + i as u64, &fx.src, i))
        .collect();
    p.a.post_send(&sends)?;
    books.sends(ctx, &p.cq_a, &[101, 102, 103, 104])?;
    books.recvs(
        ctx,
        &p.cq_b,
        &fx.dst,
        &[(201, 1, 1), (202, 2, 2), (203, 3, 3), (205, 5, 4)],
    )?;
    finish_pair(&mut books, ctx, p, &[204, 206])
}

fn send_queue_overflow<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let init = QpInit {
        max_send_wr: 4,
        ..QpInit::default()
    };
    // The peer posts no receive at first, so the sends stall on RNR; 7 retries forever, so
    // nothing fails meanwhile.
    let params = ConnParams {
        rnr_retry_count: 7,
        ..ConnParams::default()
    };
    let fx = fixture(ctx, &init, &params)?;
    let p = &fx.pair;
    let mut books = Books::default();
    let wrs: Vec<SendWr> = (0..5)
        .map(|i| send_wr(100 + i as u64, &fx.src, i))
        .collect();
    refused(
        p.a.post_send(&wrs),
        ErrorKind::ResourceExhausted,
        4,
        "5 sends on a send queue of 4 whose WRs cannot complete yet",
    )?;
    ctx.expect_quiet(&p.cq_a, QUIET)?;
    refused(
        p.a.post_send(&[send_wr(105, &fx.src, 5)]),
        ErrorKind::ResourceExhausted,
        0,
        "a send on a full send queue",
    )?;
    let recvs: Vec<RecvWr> = (0..4)
        .map(|i| recv_wr(200 + i as u64, &fx.dst, i))
        .collect();
    p.b.post_recv(&recvs)?;
    books.sends(ctx, &p.cq_a, &[100, 101, 102, 103])?;
    books.recvs(
        ctx,
        &p.cq_b,
        &fx.dst,
        &[(200, 0, 0), (201, 1, 1), (202, 2, 2), (203, 3, 3)],
    )?;
    ctx.expect_quiet(&p.cq_a, QUIET)?;
    // The same QP still works end to end.
    p.b.post_recv(&[recv_wr(204, &fx.dst, 4)])?;
    p.a.post_send(&[send_wr(106, &fx.src, 6)])?;
    books.sends(ctx, &p.cq_a, &[106])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(204, 4, 6)])?;
    finish_pair(&mut books, ctx, p, &[104, 105])
}

// ----- posting in the wrong state -----

fn post_send_before_connect<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let l = loose(ctx)?;
    let mut books = Books::default();
    let initial = ctx.state_model().initial();
    ensure_eq!(l.a.state()?, initial, "state of a new QP");
    refused(
        l.a.post_send(&[send_wr(100, &l.src, 0), send_wr(101, &l.src, 1)]),
        ErrorKind::InvalidState,
        0,
        &format!("sends on a QP in {initial}"),
    )?;
    ensure_eq!(l.a.state()?, initial, "state after the refused post");
    // The QP can still be connected and carries data.
    connect(ctx, &l.a, &l.b, &l.listener)?;
    l.b.post_recv(&[recv_wr(200, &l.dst, 0)])?;
    l.a.post_send(&[send_wr(102, &l.src, 2)])?;
    books.sends(ctx, &l.cq_a, &[102])?;
    books.recvs(ctx, &l.cq_b, &l.dst, &[(200, 0, 2)])?;
    books.finish(ctx, &[&l.a, &l.b], &[&l.cq_a, &l.cq_b], &[100, 101])
}

fn post_recv_in_reset<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let model = ctx.state_model();
    let initial = model.initial();
    if model.can_post_recv(initial) {
        return Err(CaseError::NotRun(format!(
            "the {model} state model allows receives in its initial state {initial}"
        )));
    }
    let l = loose(ctx)?;
    let mut books = Books::default();
    ensure_eq!(l.b.state()?, initial, "state of a new QP");
    refused(
        l.b.post_recv(&[recv_wr(200, &l.dst, 0), recv_wr(201, &l.dst, 1)]),
        ErrorKind::InvalidState,
        0,
        &format!("receives on a QP in {initial}"),
    )?;
    ensure_eq!(l.b.state()?, initial, "state after the refused post");
    // The QP can still be connected and carries data.
    connect(ctx, &l.a, &l.b, &l.listener)?;
    l.b.post_recv(&[recv_wr(202, &l.dst, 2)])?;
    l.a.post_send(&[send_wr(100, &l.src, 0)])?;
    books.sends(ctx, &l.cq_a, &[100])?;
    books.recvs(ctx, &l.cq_b, &l.dst, &[(202, 2, 0)])?;
    books.finish(ctx, &[&l.a, &l.b], &[&l.cq_a, &l.cq_b], &[200, 201])
}

fn post_send_in_init<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let l = loose(ctx)?;
    let mut books = Books::default();
    l.a.modify(QpState::Init)?;
    ensure_eq!(l.a.state()?, QpState::Init, "state after modify to INIT");
    refused(
        l.a.post_send(&[send_wr(100, &l.src, 0), send_wr(101, &l.src, 1)]),
        ErrorKind::InvalidState,
        0,
        "sends on a QP in INIT",
    )?;
    ensure_eq!(l.a.state()?, QpState::Init, "state after the refused post");
    // Receives are legal in INIT; the QP can still be connected and carries data both ways.
    l.a.post_recv(&[recv_wr(200, &l.dst, 0)])?;
    connect(ctx, &l.a, &l.b, &l.listener)?;
    l.b.post_send(&[send_wr(102, &l.src, 2)])?;
    books.sends(ctx, &l.cq_b, &[102])?;
    books.recvs(ctx, &l.cq_a, &l.dst, &[(200, 0, 2)])?;
    l.b.post_recv(&[recv_wr(201, &l.dst, 1)])?;
    l.a.post_send(&[send_wr(103, &l.src, 3)])?;
    books.sends(ctx, &l.cq_a, &[103])?;
    books.recvs(ctx, &l.cq_b, &l.dst, &[(201, 1, 3)])?;
    books.finish(ctx, &[&l.a, &l.b], &[&l.cq_a, &l.cq_b], &[100, 101])
}

// ----- destroyed and busy objects -----

fn post_after_destroy<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    p.a.destroy()?;
    refused(
        p.a.post_send(&[send_wr(100, &fx.src, 0)]),
        ErrorKind::Destroyed,
        0,
        "a send on a destroyed QP",
    )?;
    refused(
        p.a.post_recv(&[recv_wr(200, &fx.dst, 0)]),
        ErrorKind::Destroyed,
        0,
        "a receive on a destroyed QP",
    )?;
    fails_with(
        p.a.state(),
        ErrorKind::Destroyed,
        "state() of a destroyed QP",
    )?;
    fails_with(
        p.a.modify(QpState::Error),
        ErrorKind::Destroyed,
        "modify() of a destroyed QP",
    )?;
    fails_with(
        p.a.drain(ctx.deadline()),
        ErrorKind::Destroyed,
        "drain() of a destroyed QP",
    )?;
    p.a.destroy()
        .map_err(|e| CaseError::Failed(format!("destroying a QP twice must be a no-op: {e}")))?;
    ctx.expect_quiet(&p.cq_a, QUIET)?;
    // Its PD, CQ and the listener still work: a new QP on them connects and carries data.
    let c = p.pd.create_qp(&p.cq_a, &p.cq_a, &QpInit::default())?;
    let d = p.pd.create_qp(&p.cq_b, &p.cq_b, &QpInit::default())?;
    connect(ctx, &c, &d, &p.listener)?;
    d.post_recv(&[recv_wr(201, &fx.dst, 1)])?;
    c.post_send(&[send_wr(101, &fx.src, 1)])?;
    books.sends(ctx, &p.cq_a, &[101])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(201, 1, 1)])?;
    books.finish(ctx, &[&c, &d, &p.b], &[&p.cq_a, &p.cq_b], &[100, 200])
}

fn destroy_pd_with_mrs<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let pd = device.alloc_pd()?;
    let mr = ctx.mr_filled(&pd, 256, 0x5a)?;
    fails_with(
        pd.destroy(),
        ErrorKind::Busy,
        "destroying a PD with a region",
    )?;
    // Nothing was destroyed: the region keeps its contents, and the PD registers more.
    ensure!(
        ctx.contents(&mr)?.iter().all(|&b| b == 0x5a),
        "the region lost its contents when its PD refused to be destroyed"
    );
    let mr2 = ctx.mr(&pd, 256, Access::LOCAL_WRITE)?;
    mr2.write(0, &[0xa5; 256])?;
    ensure!(
        ctx.contents(&mr2)?.iter().all(|&b| b == 0xa5),
        "a region registered after the refused destroy does not hold its data"
    );
    fails_with(
        pd.destroy(),
        ErrorKind::Busy,
        "destroying a PD with two regions",
    )?;
    mr.destroy()?;
    fails_with(
        pd.destroy(),
        ErrorKind::Busy,
        "destroying a PD with one region left",
    )?;
    mr2.destroy()?;
    pd.destroy()?;
    fails_with(
        pd.register(64, Access::LOCAL_WRITE),
        ErrorKind::Destroyed,
        "register() on a destroyed PD",
    )?;
    pd.destroy()
        .map_err(|e| CaseError::Failed(format!("destroying a PD twice must be a no-op: {e}")))?;
    Ok(())
}

fn destroy_pd_with_qps<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    fails_with(
        p.pd.destroy(),
        ErrorKind::Busy,
        "destroying a PD with regions and QPs",
    )?;
    // Nothing was destroyed: data still moves.
    p.b.post_recv(&[recv_wr(200, &fx.dst, 0)])?;
    p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
    books.sends(ctx, &p.cq_a, &[100])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
    // The QPs alone keep it busy, and it still registers regions.
    fx.src.destroy()?;
    fx.dst.destroy()?;
    fails_with(p.pd.destroy(), ErrorKind::Busy, "destroying a PD with QPs")?;
    let mr = ctx.mr(&p.pd, 64, Access::LOCAL_WRITE)?;
    mr.destroy()?;
    finish_pair(&mut books, ctx, p, &[])?;
    p.a.destroy()?;
    fails_with(
        p.pd.destroy(),
        ErrorKind::Busy,
        "destroying a PD with one QP left",
    )?;
    p.b.destroy()?;
    p.pd.destroy()?;
    fails_with(
        p.pd.register(64, Access::LOCAL_WRITE),
        ErrorKind::Destroyed,
        "register() on a destroyed PD",
    )?;
    Ok(())
}

fn destroy_cq_in_use<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let fx = fixture(ctx, &QpInit::default(), &ConnParams::default())?;
    let p = &fx.pair;
    let mut books = Books::default();
    fails_with(
        p.cq_a.destroy(),
        ErrorKind::Busy,
        "destroying the CQ of QP a",
    )?;
    fails_with(
        p.cq_b.destroy(),
        ErrorKind::Busy,
        "destroying the CQ of QP b",
    )?;
    // Nothing was destroyed: both CQs still deliver.
    p.b.post_recv(&[recv_wr(200, &fx.dst, 0)])?;
    p.a.post_send(&[send_wr(100, &fx.src, 0)])?;
    books.sends(ctx, &p.cq_a, &[100])?;
    books.recvs(ctx, &p.cq_b, &fx.dst, &[(200, 0, 0)])?;
    finish_pair(&mut books, ctx, p, &[])?;
    p.a.destroy()?;
    p.cq_a.destroy()?;
    let mut buf = [Completion::default(); 4];
    fails_with(
        p.cq_a.poll(&mut buf),
        ErrorKind::Destroyed,
        "poll() on a destroyed CQ",
    )?;
    p.cq_a
        .destroy()
        .map_err(|e| CaseError::Failed(format!("destroying a CQ twice must be a no-op: {e}")))?;
    fails_with(
        p.cq_b.destroy(),
        ErrorKind::Busy,
        "destroying the CQ of QP b, still alive",
    )?;
    Ok(())
}

// ----- bad sizes and names -----

fn zero_depth_cq<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    fails_with(
        device.create_cq(0),
        ErrorKind::InvalidArgument,
        "create_cq(0)",
    )?;
    let cq = device.create_cq(1)?;
    ensure!(
        cq.capacity() >= 1,
        "a CQ of depth 1 has capacity {}",
        cq.capacity()
    );
    cq.destroy()?;
    Ok(())
}

fn zero_sized_qp<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(16)?;
    let zero_send = QpInit {
        max_send_wr: 0,
        ..QpInit::default()
    };
    let zero_recv = QpInit {
        max_recv_wr: 0,
        ..QpInit::default()
    };
    fails_with(
        pd.create_qp(&cq, &cq, &zero_send),
        ErrorKind::InvalidArgument,
        "create_qp with max_send_wr 0",
    )?;
    fails_with(
        pd.create_qp(&cq, &cq, &zero_recv),
        ErrorKind::InvalidArgument,
        "create_qp with max_recv_wr 0",
    )?;
    // The refused creates left nothing behind: the PD and CQ still make QPs, and once that QP
    // is gone nothing holds them.
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    ensure_eq!(
        qp.state()?,
        ctx.state_model().initial(),
        "state of a new QP"
    );
    qp.destroy()?;
    cq.destroy()?;
    pd.destroy()?;
    Ok(())
}

fn open_unknown_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let provider = ctx.provider();
    let devices = provider.devices()?;
    let mut name = String::from("anyverbs-conformance-no-such-device");
    while devices.iter().any(|d| d.identity.name == name) {
        name.push('x');
    }
    fails_with(
        provider.open(&name),
        ErrorKind::NotFound,
        &format!("open({name:?})"),
    )?;
    let device = ctx.open()?;
    ensure_eq!(
        device.info().identity.name.as_str(),
        ctx.device_name(),
        "name of the device opened after the failed open"
    );
    Ok(())
}

fn connect_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(16)?;
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    // A port of the device's own address where nobody listens: one a listener just had.
    let target = {
        let listener = device.listen(addr)?;
        listener.local_addr()
    };
    // The refusal may come synchronously from connect or, as with rdma_cm, from
    // wait_connected.
    match qp.connect(target, &ConnParams::default()) {
        Err(e) => ensure_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect to {target}, where nobody listens ({e})"
        ),
        Ok(()) => match qp.wait_connected(ctx.deadline()) {
            Ok(c) => {
                return Err(CaseError::Failed(format!(
                    "connected to {target}, where nobody listens: {c:?}"
                )));
            }
            Err(e) => ensure_eq!(
                e.kind(),
                ErrorKind::ConnectionRefused,
                "wait_connected after connecting to {target}, where nobody listens ({e})"
            ),
        },
    }
    // The QP, its CQ and PD can be destroyed cleanly.
    qp.destroy()?;
    fails_with(
        qp.state(),
        ErrorKind::Destroyed,
        "state() of a destroyed QP",
    )?;
    cq.destroy()?;
    pd.destroy()?;
    Ok(())
}
