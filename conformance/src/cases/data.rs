//! Data movement: SEND/RECV, RDMA WRITE and READ, atomics, immediate data, ordering,
//! zero-length messages, and the error completions of a reliable connection.

use std::time::Duration;

use anyverbs::{
    ATOMIC_LEN, Access, Caps, ConnParams, ErrorKind, MemoryRegion, ProtectionDomain, Provider,
    QpInit, QpState, QueuePair, RecvWr, SendFlags, SendOp, SendWr, StateModel, WcOpcode, WcStatus,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "data::send_recv_one_sge",
            description: "A SEND of one SGE lands in the posted receive; both sides complete \
                          with success and the receive reports the length.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(send_recv_one_sge::<P>),
        },
        Case {
            name: "data::inline_send_within_what_was_granted",
            description: "A QP asked for inline data reports at least that much granted; an \
                          inline SEND of every granted byte (up to 256) arrives intact, with its \
                          buffer changed right after the post; one byte more is refused at post \
                          and nothing is posted.",
            needs: Needs::caps(Caps::INLINE_DATA),
            run: CaseFn::Plain(inline_send_within_what_was_granted::<P>),
        },
        Case {
            name: "data::send_recv_many_sges",
            description: "A SEND gathered from three SGEs scatters into a receive of four SGEs of \
                          other sizes, byte for byte.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(send_recv_many_sges::<P>),
        },
        Case {
            name: "data::rdma_write",
            description: "An RDMA WRITE lands in remote memory at the given offset, and the \
                          responder sees no completion.",
            needs: Needs::caps(Caps::RDMA_WRITE),
            run: CaseFn::Plain(rdma_write::<P>),
        },
        Case {
            name: "data::rdma_read",
            description: "An RDMA READ copies remote memory into the local scatter list.",
            needs: Needs::caps(Caps::RDMA_READ),
            run: CaseFn::Plain(rdma_read::<P>),
        },
        Case {
            name: "data::remote_access_both_ways",
            description: "The passive side's RDMA READ (and atomic, where the device has them) on \
                          the active side's memory works as the active side's does: both QPs grant \
                          the remote rights the connection negotiated (librdmacm re-applies INIT \
                          once connected; a provider that does not leaves the active QP with none).",
            needs: Needs::caps(Caps::RDMA_READ),
            run: CaseFn::Plain(remote_access_both_ways::<P>),
        },
        Case {
            name: "data::atomic_compare_swap",
            description: "A compare-and-swap that finds the compare value swaps the target and \
                          returns the old value; one that does not returns the value found and \
                          leaves the target unchanged.",
            needs: Needs::caps(Caps::ATOMICS),
            run: CaseFn::Plain(atomic_compare_swap::<P>),
        },
        Case {
            name: "data::atomic_fetch_add",
            description: "Fetch-and-adds return the value found and add to it, wrapping at 2^64; \
                          several in one batch apply in order, each returning its predecessor's \
                          result.",
            needs: Needs::caps(Caps::ATOMICS),
            run: CaseFn::Plain(atomic_fetch_add::<P>),
        },
        Case {
            name: "data::atomics_refused_without_the_capability",
            description: "On a device without atomics, posting one fails with NotSupported: the \
                          WRs in front of it are posted and complete, it and those behind it \
                          never do, the target is untouched, and the QP keeps working.",
            needs: Needs::lacks(Caps::ATOMICS),
            run: CaseFn::Plain(atomics_refused_without_the_capability::<P>),
        },
        Case {
            name: "data::send_with_immediate",
            description: "SEND with immediate delivers the immediate in the receive completion.",
            needs: Needs::caps(Caps::IMMEDIATE_DATA),
            run: CaseFn::Plain(send_with_immediate::<P>),
        },
        Case {
            name: "data::write_with_immediate",
            description: "RDMA WRITE with immediate writes remote memory and consumes a receive \
                          that reports the immediate and the length, leaving its buffer untouched.",
            needs: Needs::caps(Caps::IMMEDIATE_DATA.union(Caps::RDMA_WRITE)),
            run: CaseFn::Plain(write_with_immediate::<P>),
        },
        Case {
            name: "data::completion_ordering",
            description: "Completions of one queue arrive in posting order; unsignaled sends \
                          that succeed produce none; receives match SENDs in order.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(completion_ordering::<P>),
        },
        Case {
            name: "data::zero_length_messages",
            description: "A SEND with no data completes a receive with length 0, and a \
                          zero-length RDMA WRITE succeeds.",
            needs: Needs::caps(Caps::ZERO_LENGTH),
            run: CaseFn::Plain(zero_length_messages::<P>),
        },
        Case {
            name: "data::remote_access_error",
            description: "An RDMA WRITE to a region registered without remote write access \
                          completes with a remote access error and leaves the memory untouched.",
            needs: Needs::caps(Caps::RDMA_WRITE),
            run: CaseFn::Plain(remote_access_error::<P>),
        },
        Case {
            name: "data::rnr_retry_exceeded",
            description: "A SEND to a peer with no receive posted fails with RNR retry exceeded \
                          once the retries run out, and the QP moves to ERROR.",
            needs: Needs::caps(Caps::RNR_RETRY),
            run: CaseFn::Plain(rnr_retry_exceeded::<P>),
        },
        Case {
            name: "data::send_without_receive_terminates",
            description: "On a transport without RNR retries, a SEND to a peer with no receive \
                          posted fails at once and both QPs end in ERROR, their WRs flushed.",
            needs: Needs::model(StateModel::Iwarp),
            run: CaseFn::Plain(send_without_receive_terminates::<P>),
        },
        Case {
            name: "data::local_length_error",
            description: "A SEND larger than the receive buffer completes the receive with a \
                          local length error and fails the send.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(local_length_error::<P>),
        },
        Case {
            name: "data::transport_retry_exceeded",
            description: "A SEND to a peer in ERROR fails with transport retry exceeded once the \
                          retries run out (InfiniBand: the peer drops the packets silently).",
            needs: Needs::model(StateModel::InfiniBand),
            run: CaseFn::Plain(transport_retry_exceeded::<P>),
        },
    ]
}

/// A recognisable byte pattern.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn send_recv_one_sge<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let dst = ctx.mr_filled(&pair.pd, 256, 0)?;
    let msg = pattern(1, 200);
    src.write(0, &msg)?;
    pair.b.post_recv(&[RecvWr::new(7, &[dst.sge(0, 256)])])?;
    pair.a.post_send(&[SendWr::send(8, &[src.sge(0, 200)])])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 7, WcStatus::Success)?;
    ensure_eq!(r.opcode, WcOpcode::Recv, "receive opcode");
    ensure_eq!(r.byte_len, 200, "received length");
    ensure_eq!(r.qp_num, pair.b.qp_num(), "receive QP number");
    ensure_eq!(r.imm(), None, "immediate data of a plain SEND");
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 8, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::Send, "send opcode");
    ensure_eq!(&ctx.contents(&dst)?[..200], &msg[..], "received bytes");
    Ok(())
}

fn inline_send_within_what_was_granted<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let max = ctx.info().limits.max_inline_data;
    if max == 0 {
        return Err(CaseError::NotRun(
            "the device reports INLINE_DATA with a max_inline_data of 0".into(),
        ));
    }
    let asked = max.min(64);
    let init = QpInit {
        max_inline_data: asked,
        ..QpInit::default()
    };
    let pair = ctx.pair_with(&init, &ConnParams::default(), 64)?;
    let granted = pair.a.granted();
    ensure!(
        granted.max_inline_data >= asked,
        "asked for {asked} bytes of inline data, granted {}",
        granted.max_inline_data
    );
    ensure_eq!(granted.max_send_wr, init.max_send_wr, "send WRs granted");
    let len = granted.max_inline_data.min(256);
    let src = ctx.mr_filled(&pair.pd, 512, 0)?;
    let dst = ctx.mr_filled(&pair.pd, 512, 0)?;
    let msg = pattern(3, len as usize);
    src.write(0, &msg)?;
    pair.b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 512)])])?;
    let inline = SendWr::single(2, SendOp::Send, src.sge(0, len))
        .with_flags(SendFlags::SIGNALED | SendFlags::INLINE);
    pair.a.post_send(&[inline])?;
    // Inline data was copied at post time: the buffer is the caller's again.
    src.write(0, &vec![0xff; len as usize])?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 1, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    ensure_eq!(
        &ctx.contents(&dst)?[..len as usize],
        &msg[..],
        "bytes of the inline SEND"
    );
    if granted.max_inline_data < 512 {
        let over = granted.max_inline_data + 1;
        let too_long = SendWr::single(3, SendOp::Send, src.sge(0, over))
            .with_flags(SendFlags::SIGNALED | SendFlags::INLINE);
        match pair.a.post_send(&[too_long]) {
            Err(e) if e.accepted == 0 => {}
            other => {
                return Err(CaseError::Failed(format!(
                    "an inline SEND of {over} bytes on a QP granted {}: expected a refusal \
                     with nothing posted, got {other:?}",
                    granted.max_inline_data
                )));
            }
        }
        ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    }
    Ok(())
}

fn send_recv_many_sges<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let s1 = ctx.mr_filled(&pair.pd, 256, 0)?;
    let s2 = ctx.mr_filled(&pair.pd, 128, 0)?;
    let dst = ctx.mr_filled(&pair.pd, 512, 0xee)?;
    let (p1, p2, p3) = (pattern(2, 100), pattern(3, 50), pattern(4, 30));
    s1.write(0, &p1)?;
    s2.write(10, &p2)?;
    s1.write(100, &p3)?;
    // Receive: 4 SGEs of 40, 60, 70 and 100 bytes at scattered offsets (270 bytes of room).
    let recv = [
        dst.sge(0, 40),
        dst.sge(100, 60),
        dst.sge(200, 70),
        dst.sge(300, 100),
    ];
    pair.b.post_recv(&[RecvWr::new(1, &recv)])?;
    pair.a.post_send(&[SendWr::send(
        2,
        &[s1.sge(0, 100), s2.sge(10, 50), s1.sge(100, 30)],
    )])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 1, WcStatus::Success)?;
    ensure_eq!(r.byte_len, 180, "received length");
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    let sent: Vec<u8> = [p1, p2, p3].concat();
    let got = ctx.contents(&dst)?;
    let landed: Vec<u8> = [&got[0..40], &got[100..160], &got[200..270], &got[300..310]].concat();
    ensure_eq!(landed, sent, "bytes scattered over the receive SGEs");
    ensure!(
        got[310..400].iter().all(|b| *b == 0xee),
        "bytes past the message were overwritten"
    );
    Ok(())
}

fn rdma_write<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let target = ctx.mr_filled(&pair.pd, 1024, 0x11)?;
    let msg = pattern(5, 300);
    let src = if msg.len() > src.len() {
        ctx.mr_filled(&pair.pd, 512, 0)?
    } else {
        src
    };
    src.write(0, &msg)?;
    let wr = SendWr::single(3, SendOp::Write(target.remote(500)), src.sge(0, 300));
    pair.a.post_send(&[wr])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 3, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::RdmaWrite, "opcode");
    let got = ctx.contents(&target)?;
    ensure_eq!(&got[500..800], &msg[..], "written bytes");
    ensure!(
        got[..500].iter().chain(&got[800..]).all(|b| *b == 0x11),
        "bytes outside the write target changed"
    );
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn rdma_read<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let remote = ctx.mr_filled(&pair.pd, 1024, 0)?;
    let local = ctx.mr_filled(&pair.pd, 512, 0)?;
    let msg = pattern(6, 256);
    remote.write(700, &msg)?;
    let sgl = [local.sge(0, 100), local.sge(200, 156)];
    let wr = SendWr::new(4, SendOp::Read(remote.remote(700)), &sgl);
    pair.a.post_send(&[wr])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 4, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::RdmaRead, "opcode");
    ensure_eq!(s.byte_len, 256, "bytes read");
    let got = ctx.contents(&local)?;
    ensure_eq!(
        [&got[0..100], &got[200..356]].concat(),
        msg,
        "bytes read into the scatter list"
    );
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn remote_access_both_ways<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let access = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC;
    let at_a = ctx.mr(&pair.pd, 1024, access)?;
    let local = ctx.mr_filled(&pair.pd, 512, 0)?;
    let msg = pattern(9, 128);
    at_a.write(300, &msg)?;
    // The passive side reads the active side's memory: the target is QP a.
    let sgl = [local.sge(0, 128)];
    pair.b
        .post_send(&[SendWr::new(7, SendOp::Read(at_a.remote(300)), &sgl)])?;
    let s = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&s, 7, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::RdmaRead, "opcode of b's READ");
    ensure_eq!(
        &ctx.contents(&local)?[..128],
        &msg[..],
        "bytes b read from a"
    );
    if ctx.info().caps.contains(Caps::ATOMICS) {
        let at = atomic_offset(&at_a, 16);
        at_a.write(at, &40u64.to_ne_bytes())?;
        pair.b.post_send(&[SendWr::fetch_add(
            8,
            local.sge(256, ATOMIC_LEN),
            at_a.remote(at),
            2,
        )])?;
        let s = ctx.completion(&pair.cq_b)?;
        ctx.expect_status(&s, 8, WcStatus::Success)?;
        ensure_eq!(
            read_u64(&at_a, at)?,
            42,
            "a's value after b's fetch-and-add"
        );
        ensure_eq!(read_u64(&local, 256)?, 40, "the value b fetched");
    }
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))
}

/// The first offset at or after `at` whose address in `mr` is 8-byte aligned, as an atomic's
/// remote address must be.
pub(crate) fn atomic_offset(mr: &impl MemoryRegion, at: usize) -> usize {
    let addr = mr.addr().wrapping_add(at as u64);
    at + ((ATOMIC_LEN as u64 - addr % ATOMIC_LEN as u64) % ATOMIC_LEN as u64) as usize
}

/// The 64-bit value at `offset` of `mr`, in host byte order (as atomics leave it).
pub(crate) fn read_u64(mr: &impl MemoryRegion, offset: usize) -> anyverbs::Result<u64> {
    let mut b = [0; 8];
    mr.read(offset, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

fn atomic_compare_swap<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let target = ctx.mr(&pair.pd, 64, Access::LOCAL_WRITE | Access::REMOTE_ATOMIC)?;
    target.write(0, &[0x77; 64])?;
    let local = ctx.mr_filled(&pair.pd, 64, 0xee)?;
    let at = atomic_offset(&target, 16);
    let (old, new, other) = (0x1111_2222_3333_4444u64, 0xaaaa_bbbb_cccc_ddddu64, 5u64);
    target.write(at, &old.to_ne_bytes())?;
    // Equal: swapped, the old value returned.
    pair.a.post_send(&[SendWr::compare_swap(
        1,
        local.sge(0, 8),
        target.remote(at),
        old,
        new,
    )])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 1, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::CompareSwap, "opcode");
    ensure_eq!(s.byte_len, 8, "byte_len of a compare-and-swap");
    ensure_eq!(
        read_u64(&local, 0)?,
        old,
        "value returned by the swapping CAS"
    );
    ensure_eq!(read_u64(&target, at)?, new, "target after the swapping CAS");
    // Not equal (the compare value is stale now): nothing swapped, the value found returned.
    pair.a.post_send(&[SendWr::compare_swap(
        2,
        local.sge(8, 8),
        target.remote(at),
        old,
        other,
    )])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 2, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::CompareSwap, "opcode");
    ensure_eq!(
        read_u64(&local, 8)?,
        new,
        "value returned by the failing CAS"
    );
    ensure_eq!(read_u64(&target, at)?, new, "target after the failing CAS");
    let got = ctx.contents(&target)?;
    ensure!(
        got[..at].iter().chain(&got[at + 8..]).all(|b| *b == 0x77),
        "bytes around the 8-byte target changed"
    );
    ensure!(
        ctx.contents(&local)?[16..].iter().all(|b| *b == 0xee),
        "bytes past the results changed"
    );
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn atomic_fetch_add<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let target = ctx.mr(&pair.pd, 64, Access::LOCAL_WRITE | Access::REMOTE_ATOMIC)?;
    let local = ctx.mr_filled(&pair.pd, 64, 0xee)?;
    let at = atomic_offset(&target, 8);
    target.write(at, &(u64::MAX - 1).to_ne_bytes())?;
    let faa = |id: u64, slot: usize, add: u64| {
        SendWr::fetch_add(id, local.sge(slot * 8, 8), target.remote(at), add)
    };
    pair.a.post_send(&[faa(1, 0, 1)])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 1, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::FetchAdd, "opcode");
    ensure_eq!(s.byte_len, 8, "byte_len of a fetch-and-add");
    ensure_eq!(read_u64(&local, 0)?, u64::MAX - 1, "value returned");
    ensure_eq!(read_u64(&target, at)?, u64::MAX, "target after adding 1");
    // Past 2^64 - 1 it wraps.
    pair.a.post_send(&[faa(2, 1, 3)])?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    ensure_eq!(read_u64(&local, 8)?, u64::MAX, "value returned");
    ensure_eq!(read_u64(&target, at)?, 2, "target after wrapping");
    // Several in a row, one batch: each sees the one before.
    pair.a
        .post_send(&[faa(3, 2, 10), faa(4, 3, 10), faa(5, 4, 10), faa(6, 5, 10)])?;
    let got = ctx.completions(&pair.cq_a, 4)?;
    for (i, c) in got.iter().enumerate() {
        let id = 3 + i as u64;
        ctx.expect_status(c, id, WcStatus::Success)?;
        ensure_eq!(c.opcode, WcOpcode::FetchAdd, "opcode of {id}");
        ensure_eq!(
            read_u64(&local, (2 + i) * 8)?,
            2 + 10 * i as u64,
            "value returned by fetch-and-add {id}"
        );
    }
    ensure_eq!(read_u64(&target, at)?, 42, "target after the batch");
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn atomics_refused_without_the_capability<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    // Registered for plain RDMA only: a device without atomics need not know the right.
    let target = ctx.mr_filled(&pair.pd, 64, 0x5a)?;
    let src = ctx.mr_filled(&pair.pd, 64, 0x21)?;
    let dst = ctx.mr_filled(&pair.pd, 64, 0)?;
    let at = atomic_offset(&target, 8);
    let result = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.b.post_recv(&[
        RecvWr::single(10, dst.sge(0, 16)),
        RecvWr::single(11, dst.sge(16, 16)),
    ])?;
    let wrs = [
        SendWr::single(1, SendOp::Send, src.sge(0, 16)),
        SendWr::compare_swap(2, result.sge(0, 8), target.remote(at), 0, 1),
        SendWr::single(3, SendOp::Send, src.sge(16, 16)),
    ];
    match pair.a.post_send(&wrs) {
        Ok(()) => {
            return Err(crate::CaseError::Failed(
                "a compare-and-swap was accepted by a device without atomics".into(),
            ));
        }
        Err(e) => {
            ensure_eq!(e.kind(), ErrorKind::NotSupported, "error kind ({e})");
            ensure_eq!(e.accepted, 1, "PostError::accepted ({e})");
        }
    }
    let lone = [SendWr::fetch_add(4, result.sge(8, 8), target.remote(at), 1)];
    match pair.a.post_send(&lone) {
        Ok(()) => {
            return Err(crate::CaseError::Failed(
                "a fetch-and-add was accepted by a device without atomics".into(),
            ));
        }
        Err(e) => {
            ensure_eq!(e.kind(), ErrorKind::NotSupported, "error kind ({e})");
            ensure_eq!(e.accepted, 0, "PostError::accepted ({e})");
        }
    }
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 1, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 10, WcStatus::Success)?;
    // The QP still works, and the refused WRs never complete.
    pair.a
        .post_send(&[SendWr::single(5, SendOp::Send, src.sge(16, 16))])?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 5, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 11, WcStatus::Success)?;
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    ensure!(
        ctx.contents(&target)?.iter().all(|b| *b == 0x5a),
        "a refused atomic changed the target"
    );
    ensure!(
        ctx.contents(&result)?.iter().all(|b| *b == 0),
        "a refused atomic wrote its result buffer"
    );
    Ok(())
}

fn send_with_immediate<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 9)?;
    pair.b.post_recv(&[RecvWr::new(5, &[mr.sge(128, 128)])])?;
    pair.a.post_send(&[SendWr::new(
        6,
        SendOp::SendWithImm(0xdead_beef),
        &[mr.sge(0, 16)],
    )])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 5, WcStatus::Success)?;
    ensure_eq!(r.imm(), Some(0xdead_beef), "immediate data");
    ensure_eq!(r.byte_len, 16, "length (immediate not counted)");
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 6, WcStatus::Success)
}

fn write_with_immediate<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let target = ctx.mr_filled(&pair.pd, 256, 0)?;
    let recv_buf = ctx.mr_filled(&pair.pd, 64, 0x5a)?;
    let msg = pattern(7, 128);
    src.write(0, &msg)?;
    pair.b
        .post_recv(&[RecvWr::new(9, &[recv_buf.sge(0, 64)])])?;
    pair.a.post_send(&[SendWr::new(
        10,
        SendOp::WriteWithImm(target.remote(64), 42),
        &[src.sge(0, 128)],
    )])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 9, WcStatus::Success)?;
    ensure_eq!(r.opcode, WcOpcode::RecvRdmaWithImm, "receive opcode");
    ensure_eq!(r.imm(), Some(42), "immediate data");
    ensure_eq!(r.byte_len, 128, "length of the write");
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 10, WcStatus::Success)?;
    ensure_eq!(&ctx.contents(&target)?[64..192], &msg[..], "written bytes");
    ensure!(
        ctx.contents(&recv_buf)?.iter().all(|b| *b == 0x5a),
        "the receive buffer of a WRITE with immediate was written"
    );
    Ok(())
}

fn completion_ordering<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const N: u64 = 32;
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 32 * 64, 0)?;
    let dst = ctx.mr_filled(&pair.pd, 32 * 64, 0)?;
    for i in 0..N as usize {
        src.write(i * 64, &pattern(i as u8, 64))?;
    }
    let recvs: Vec<RecvWr> = (0..N)
        .map(|i| RecvWr::single(100 + i, dst.sge(i as usize * 64, 64)))
        .collect();
    pair.b.post_recv(&recvs)?;
    // Every third send is signaled; the last one always is, so the queue is reaped.
    let sends: Vec<SendWr> = (0..N)
        .map(|i| {
            let wr = SendWr::single(200 + i, SendOp::Send, src.sge(i as usize * 64, 64));
            if i % 3 == 0 || i == N - 1 {
                wr
            } else {
                wr.with_flags(SendFlags::empty())
            }
        })
        .collect();
    let signaled: Vec<u64> = sends
        .iter()
        .filter(|w| w.flags.contains(SendFlags::SIGNALED))
        .map(|w| w.wr_id)
        .collect();
    pair.a.post_send(&sends)?;
    let r = ctx.completions(&pair.cq_b, N as usize)?;
    let ids: Vec<u64> = r.iter().map(|c| c.wr_id).collect();
    ensure_eq!(ids, (100..100 + N).collect::<Vec<_>>(), "receive order");
    ensure!(
        r.iter().all(|c| c.status == WcStatus::Success),
        "a receive failed: {r:?}"
    );
    let s = ctx.completions(&pair.cq_a, signaled.len())?;
    let ids: Vec<u64> = s.iter().map(|c| c.wr_id).collect();
    ensure_eq!(ids, signaled, "send completion order (signaled only)");
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))?;
    let got = ctx.contents(&dst)?;
    for i in 0..N as usize {
        ensure_eq!(
            &got[i * 64..(i + 1) * 64],
            &pattern(i as u8, 64)[..],
            "message {i} landed in receive {i}"
        );
    }
    Ok(())
}

fn zero_length_messages<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 64, 0x33)?;
    pair.b.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])])?;
    pair.a.post_send(&[SendWr::send(2, &[])])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 1, WcStatus::Success)?;
    ensure_eq!(r.byte_len, 0, "length of a zero-length SEND");
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    if ctx.info().caps.contains(Caps::RDMA_WRITE) {
        let wr = SendWr::new(3, SendOp::Write(mr.remote(0)), &[]);
        pair.a.post_send(&[wr])?;
        ctx.expect_status(&ctx.completion(&pair.cq_a)?, 3, WcStatus::Success)?;
    }
    ensure!(
        ctx.contents(&mr)?.iter().all(|b| *b == 0x33),
        "a zero-length message changed memory"
    );
    Ok(())
}

fn remote_access_error<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 64, 1)?;
    let read_only = pair
        .pd
        .register(64, Access::LOCAL_WRITE | Access::REMOTE_READ)?;
    let wr = SendWr::single(4, SendOp::Write(read_only.remote(0)), src.sge(0, 64));
    pair.a.post_send(&[wr])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 4, WcStatus::RemoteAccessError)?;
    ensure!(
        ctx.contents(&read_only)?.iter().all(|b| *b == 0),
        "a refused RDMA WRITE changed the target"
    );
    ensure_eq!(
        pair.a.state()?,
        QpState::Error,
        "requester state after the error"
    );
    Ok(())
}

fn rnr_retry_exceeded<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let params = ConnParams {
        rnr_retry_count: 1,
        ..ConnParams::default()
    };
    let pair = ctx.pair_with(&QpInit::default(), &params, 64)?;
    let mr = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.a.post_send(&[
        SendWr::send(1, &[mr.sge(0, 8)]),
        SendWr::send(2, &[mr.sge(8, 8)]),
    ])?;
    let got = ctx.completions(&pair.cq_a, 2)?;
    ctx.expect_status(&got[0], 1, WcStatus::RnrRetryExceeded)?;
    ctx.expect_status(&got[1], 2, WcStatus::WrFlushError)?;
    ensure_eq!(pair.a.state()?, QpState::Error, "requester state");
    Ok(())
}

fn send_without_receive_terminates<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    if ctx.info().caps.contains(Caps::RNR_RETRY) {
        return Err(crate::CaseError::NotRun(
            "the device retries on RNR instead".into(),
        ));
    }
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.a.post_recv(&[RecvWr::new(1, &[mr.sge(32, 32)])])?;
    pair.a.post_send(&[
        SendWr::send(2, &[mr.sge(0, 8)]),
        SendWr::send(3, &[mr.sge(8, 8)]),
    ])?;
    let mut got = ctx.completions(&pair.cq_a, 3)?;
    got.sort_by_key(|c| c.wr_id);
    ensure!(
        !got[1].status.is_success() && got[1].wr_id == 2,
        "the SEND without a receive completed with {}",
        got[1].status
    );
    ctx.expect_status(&got[0], 1, WcStatus::WrFlushError)?;
    ctx.expect_status(&got[2], 3, WcStatus::WrFlushError)?;
    ensure_eq!(pair.a.state()?, QpState::Error, "requester state");
    ensure_eq!(pair.b.state()?, QpState::Error, "responder state");
    Ok(())
}

fn local_length_error<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let mr = ctx.mr_filled(&pair.pd, 256, 0)?;
    pair.b.post_recv(&[RecvWr::new(1, &[mr.sge(0, 16)])])?;
    pair.a.post_send(&[SendWr::send(2, &[mr.sge(64, 64)])])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 1, WcStatus::LocalLengthError)?;
    let s = ctx.completion(&pair.cq_a)?;
    ensure_eq!(s.wr_id, 2, "wr_id of the failed send");
    // InfiniBand reports a remote invalid request; some devices a remote operation error.
    ensure!(
        matches!(
            s.status,
            WcStatus::RemoteInvalidRequest | WcStatus::RemoteOperationError
        ),
        "requester status {}",
        s.status
    );
    Ok(())
}

fn transport_retry_exceeded<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let params = ConnParams {
        retry_count: 1,
        ..ConnParams::default()
    };
    let pair = ctx.pair_with(&QpInit::default(), &params, 64)?;
    let mr = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.b.modify(QpState::Error)?;
    pair.a.post_send(&[SendWr::send(1, &[mr.sge(0, 8)])])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 1, WcStatus::TransportRetryExceeded)?;
    ensure_eq!(pair.a.state()?, QpState::Error, "requester state");
    Ok(())
}
