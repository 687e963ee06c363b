//! Zero-copy memory: regions over the caller's own memory
//! ([`ProtectionDomain::register_memory`]) and over buffers lent to them
//! ([`ProtectionDomain::register_buffer`]). Data lands in the caller's memory and is read there
//! directly, not copied out with `read`; bounds, keys and access rights hold as for the
//! provider's own regions; a deregistered region's keys and handle are refused; a lent buffer
//! comes back with what the device wrote; and after a drain nothing writes the memory.
//!
//! The cases own the memory they register and keep it alive, untouched but through the
//! region, until the region is destroyed: every `unsafe` below is that contract, kept.

// Registering caller memory and reading it directly is `unsafe` by design: the suite checks
// exactly that path.
#![allow(unsafe_code)]

use std::time::Duration;

use anyverbs::{
    Access, Caps, ErrorKind, MemoryRegion, PostError, ProtectionDomain, Provider, QueuePair,
    RecvWr, SendOp, SendWr, Sge, WcOpcode, WcStatus,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "memory::send_lands_in_caller_memory",
            description: "A SEND into a receive posted in a region of the caller's memory lands \
                          there: the region's address and pointer are the caller's, the bytes are \
                          read directly through the region and, once it is destroyed, in the \
                          caller's own buffer; nothing around them changes.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(send_lands_in_caller_memory::<P>),
        },
        Case {
            name: "memory::rdma_into_and_out_of_caller_memory",
            description: "An RDMA WRITE lands in a region of the caller's memory at the given \
                          offset, and an RDMA READ of it into a lent buffer brings the same bytes \
                          back, which take_buffer hands over.",
            needs: Needs::caps(Caps::RDMA_WRITE.union(Caps::RDMA_READ)),
            run: CaseFn::Plain(rdma_into_and_out_of_caller_memory::<P>),
        },
        Case {
            name: "memory::lent_buffer_comes_back",
            description: "A buffer lent to a region receives a SEND in place; take_buffer \
                          deregisters the region and hands the very buffer back with the data \
                          in it, once: afterwards the region is destroyed and its old SGE is \
                          refused (or fails) without touching the buffer.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(lent_buffer_comes_back::<P>),
        },
        Case {
            name: "memory::caller_memory_local_checks",
            description: "On a region of the caller's memory, a send SGE running past its end, \
                          one with its address but another region's lkey, and a receive without \
                          local write access are refused with InvalidArgument (or complete in \
                          error); the memory is untouched.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(caller_memory_local_checks::<P>),
        },
        Case {
            name: "memory::caller_memory_remote_checks",
            description: "RDMA WRITEs into a region of the caller's memory registered without \
                          remote write access, with another region's rkey, or past its end \
                          complete with a remote access error; the memory is untouched.",
            needs: Needs::caps(Caps::RDMA_WRITE),
            run: CaseFn::Plain(caller_memory_remote_checks::<P>),
        },
        Case {
            name: "memory::use_after_deregistration_refused",
            description: "Once a region of the caller's memory is destroyed, reading, writing \
                          and direct access fail with Destroyed, and a SEND from its old SGE is \
                          refused with InvalidArgument (or completes with a local protection \
                          error); the memory is untouched.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(use_after_deregistration_refused::<P>),
        },
        Case {
            name: "memory::nothing_written_after_a_drain",
            description: "A receive posted in the caller's memory is drained; then the peer \
                          sends, and writes into the region where it may: nothing lands in the \
                          memory.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(nothing_written_after_a_drain::<P>),
        },
    ]
}

/// What the caller's memory holds where nothing may land.
const UNTOUCHED: u8 = 0xc3;

/// A recognisable byte pattern.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8))
        .collect()
}

/// Registers all of `memory` with `access`.
///
/// # Safety
/// `memory` must outlive the region, and be touched only through it until it is destroyed
/// (the contract of [`ProtectionDomain::register_memory`]).
unsafe fn register<P: Provider>(
    pd: &P::Pd,
    memory: &mut [u8],
    access: Access,
) -> anyverbs::Result<P::Mr> {
    // SAFETY: the caller's contract.
    unsafe { pd.register_memory(memory.as_mut_ptr(), memory.len(), access) }
}

/// Whether every byte of `bytes` is `UNTOUCHED`.
fn untouched(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == UNTOUCHED)
}

/// A WR that must not run: refused at post with `InvalidArgument` (a provider that checks
/// SGEs when they are posted), or completed on `cq` with an error status (hardware that
/// notices while it executes).
fn refused_or_failed<P: Provider>(
    ctx: &Ctx<'_, P>,
    posted: Result<(), PostError>,
    cq: &P::Cq,
    wr_id: u64,
    what: &str,
) -> CaseResult {
    match posted {
        Err(e) => {
            ensure_eq!(
                e.kind(),
                ErrorKind::InvalidArgument,
                "{what}: error kind ({e})"
            );
            ensure_eq!(e.accepted, 0, "{what}: PostError::accepted ({e})");
        }
        Ok(()) => {
            let c = ctx.completion(cq)?;
            ensure_eq!(c.wr_id, wr_id, "{what}: the completion's wr_id");
            ensure!(
                c.status != WcStatus::Success,
                "{what}: accepted and completed with success"
            );
        }
    }
    Ok(())
}

/// Checks that `r` failed with `kind`.
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

fn send_lands_in_caller_memory<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let msg = pattern(1, 200);
    src.write(0, &msg)?;
    // Declared before the region, so dropped after it.
    let mut memory = vec![UNTOUCHED; 512];
    let base = memory.as_mut_ptr();
    // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
    let dst = unsafe { register::<P>(&pair.pd, &mut memory, Access::LOCAL_WRITE)? };
    ensure_eq!(dst.addr(), base as u64, "the region's address");
    ensure_eq!(dst.as_ptr()?, base, "the region's pointer");
    ensure_eq!(dst.len(), 512, "the region's length");
    pair.b.post_recv(&[RecvWr::new(7, &[dst.sge(100, 256)])])?;
    pair.a.post_send(&[SendWr::send(8, &[src.sge(0, 200)])])?;
    let r = ctx.completion(&pair.cq_b)?;
    ctx.expect_status(&r, 7, WcStatus::Success)?;
    ensure_eq!(r.byte_len, 200, "received length");
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 8, WcStatus::Success)?;
    {
        // SAFETY: the receive completed and nothing else is posted on the region: nothing
        // writes it while the slice lives, and the slice ends before the region does.
        let seen = unsafe { dst.slice(0, 512)? };
        ensure_eq!(
            &seen[100..300],
            &msg[..],
            "bytes read directly in the region"
        );
        ensure!(
            untouched(&seen[..100]) && untouched(&seen[300..]),
            "bytes around the received message changed"
        );
    }
    dst.destroy()?;
    drop(dst);
    ensure_eq!(
        &memory[100..300],
        &msg[..],
        "bytes in the caller's own buffer"
    );
    ensure!(
        untouched(&memory[..100]) && untouched(&memory[300..]),
        "bytes of the caller's buffer around the message changed"
    );
    Ok(())
}

fn rdma_into_and_out_of_caller_memory<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let msg = pattern(2, 200);
    src.write(0, &msg)?;
    let mut memory = vec![UNTOUCHED; 1024];
    let rights = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
    let target = unsafe { register::<P>(&pair.pd, &mut memory, rights)? };
    let write = SendWr::single(1, SendOp::Write(target.remote(300)), src.sge(0, 200));
    pair.a.post_send(&[write])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 1, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::RdmaWrite, "opcode");
    {
        // SAFETY: the WRITE completed and nothing else writes the region meanwhile (the READ
        // below only reads it, after the slice is gone).
        let seen = unsafe { target.slice(0, 1024)? };
        ensure_eq!(
            &seen[300..500],
            &msg[..],
            "bytes written into the caller's memory"
        );
        ensure!(
            untouched(&seen[..300]) && untouched(&seen[500..]),
            "bytes outside the write target changed"
        );
    }
    let lent = pair
        .pd
        .register_buffer(vec![0; 512].into_boxed_slice(), Access::LOCAL_WRITE)?;
    let read = SendWr::single(2, SendOp::Read(target.remote(300)), lent.sge(50, 200));
    pair.a.post_send(&[read])?;
    let s = ctx.completion(&pair.cq_a)?;
    ctx.expect_status(&s, 2, WcStatus::Success)?;
    ensure_eq!(s.opcode, WcOpcode::RdmaRead, "opcode");
    let back = lent.take_buffer()?;
    ensure_eq!(&back[50..250], &msg[..], "bytes read into the lent buffer");
    ensure!(
        back[..50].iter().chain(&back[250..]).all(|b| *b == 0),
        "bytes of the lent buffer outside the READ's target changed"
    );
    target.destroy()?;
    drop(target);
    ensure_eq!(
        &memory[300..500],
        &msg[..],
        "bytes in the caller's own buffer"
    );
    ctx.expect_quiet(&pair.cq_b, Duration::from_millis(20))
}

fn lent_buffer_comes_back<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 256, 0)?;
    let msg = pattern(3, 100);
    src.write(0, &msg)?;
    let buf = vec![UNTOUCHED; 256].into_boxed_slice();
    let at = buf.as_ptr();
    let dst = pair.pd.register_buffer(buf, Access::LOCAL_WRITE)?;
    ensure_eq!(dst.len(), 256, "the region's length");
    ensure_eq!(dst.as_ptr()?.cast_const(), at, "the region's pointer");
    let old = dst.sge(0, 256);
    pair.b.post_recv(&[RecvWr::new(1, &[old])])?;
    pair.a.post_send(&[SendWr::send(2, &[src.sge(0, 100)])])?;
    ctx.expect_status(&ctx.completion(&pair.cq_b)?, 1, WcStatus::Success)?;
    ctx.expect_status(&ctx.completion(&pair.cq_a)?, 2, WcStatus::Success)?;
    // Copies work on a lent buffer as on any region.
    let mut copied = vec![0; 100];
    dst.read(0, &mut copied)?;
    ensure_eq!(copied, msg, "bytes copied out with read");
    let back = dst.take_buffer()?;
    ensure_eq!(back.as_ptr(), at, "the buffer handed back is the one lent");
    ensure_eq!(&back[..100], &msg[..], "bytes received in the lent buffer");
    ensure!(untouched(&back[100..]), "bytes past the message changed");
    fails_with(
        dst.take_buffer(),
        ErrorKind::Destroyed,
        "a second take_buffer",
    )?;
    fails_with(
        dst.read(0, &mut copied),
        ErrorKind::Destroyed,
        "read after take_buffer",
    )?;
    fails_with(
        dst.as_ptr(),
        ErrorKind::Destroyed,
        "as_ptr after take_buffer",
    )?;
    dst.destroy()?;
    // The old SGE names a deregistered region: a receive there is refused, or fails when a
    // message arrives; the buffer, the program's again, is not written.
    let posted = pair.b.post_recv(&[RecvWr::new(3, &[old])]);
    let refused = posted.is_err();
    if !refused {
        pair.a.post_send(&[SendWr::send(4, &[src.sge(0, 100)])])?;
    }
    refused_or_failed(ctx, posted, &pair.cq_b, 3, "a receive into a taken buffer")?;
    ensure_eq!(
        &back[..100],
        &msg[..],
        "the taken buffer after a receive into it"
    );
    ensure!(
        untouched(&back[100..]),
        "the taken buffer after a receive into it"
    );
    Ok(())
}

fn caller_memory_local_checks<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let mut memory = vec![UNTOUCHED; 256];
    {
        let pair = ctx.pair()?;
        // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
        let mr = unsafe { register::<P>(&pair.pd, &mut memory, Access::LOCAL_WRITE)? };
        let overrun = mr.sge(200, 100);
        let posted = pair.a.post_send(&[SendWr::send(1, &[overrun])]);
        refused_or_failed(ctx, posted, &pair.cq_a, 1, "a send SGE past the end")?;
    }
    {
        let pair = ctx.pair()?;
        let other = ctx.mr_filled(&pair.pd, 256, 0)?;
        // SAFETY: as above.
        let mr = unsafe { register::<P>(&pair.pd, &mut memory, Access::LOCAL_WRITE)? };
        let wrong_key = Sge {
            lkey: other.lkey(),
            ..mr.sge(0, 64)
        };
        let posted = pair.a.post_send(&[SendWr::send(2, &[wrong_key])]);
        refused_or_failed(ctx, posted, &pair.cq_a, 2, "a send SGE with another lkey")?;
    }
    {
        let pair = ctx.pair()?;
        let src = ctx.mr_filled(&pair.pd, 64, 0x11)?;
        // SAFETY: as above.
        let read_only = unsafe { register::<P>(&pair.pd, &mut memory, Access::empty())? };
        let posted = pair.b.post_recv(&[RecvWr::new(3, &[read_only.sge(0, 64)])]);
        if posted.is_ok() {
            // Hardware notices when a message arrives.
            pair.a.post_send(&[SendWr::send(4, &[src.sge(0, 64)])])?;
        }
        refused_or_failed(
            ctx,
            posted,
            &pair.cq_b,
            3,
            "a receive without local write access",
        )?;
        read_only.destroy()?;
    }
    ensure!(untouched(&memory), "the caller's memory changed");
    Ok(())
}

fn caller_memory_remote_checks<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let mut memory = vec![UNTOUCHED; 256];
    let rights = Access::LOCAL_WRITE | Access::REMOTE_WRITE;
    // Each WRITE fails its QP: one connection each. (access, rkey of another region, offset)
    for (n, (access, other_rkey, offset)) in [
        (Access::LOCAL_WRITE | Access::REMOTE_READ, false, 0),
        (rights, true, 0),
        (rights, false, 224),
    ]
    .into_iter()
    .enumerate()
    {
        let pair = ctx.pair()?;
        let src = ctx.mr_filled(&pair.pd, 64, 0x22)?;
        let other = ctx.mr_filled(&pair.pd, 256, 0)?;
        // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
        let target = unsafe { register::<P>(&pair.pd, &mut memory, access)? };
        let mut remote = target.remote(offset);
        if other_rkey {
            remote.rkey = other.rkey();
        }
        let wr_id = 10 + n as u64;
        pair.a
            .post_send(&[SendWr::single(wr_id, SendOp::Write(remote), src.sge(0, 64))])?;
        let s = ctx.completion(&pair.cq_a)?;
        ctx.expect_status(&s, wr_id, WcStatus::RemoteAccessError)?;
        target.destroy()?;
    }
    ensure!(untouched(&memory), "the caller's memory changed");
    Ok(())
}

fn use_after_deregistration_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let landing = ctx.mr_filled(&pair.pd, 128, 0)?;
    let mut memory = vec![UNTOUCHED; 128];
    // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
    let mr = unsafe { register::<P>(&pair.pd, &mut memory, Access::LOCAL_WRITE)? };
    let old = mr.sge(0, 64);
    mr.destroy()?;
    mr.destroy()?; // a second destroy changes nothing
    let mut buf = [0; 8];
    fails_with(mr.read(0, &mut buf), ErrorKind::Destroyed, "read")?;
    fails_with(mr.write(0, &buf), ErrorKind::Destroyed, "write")?;
    fails_with(mr.as_ptr(), ErrorKind::Destroyed, "as_ptr")?;
    // SAFETY: refused: a destroyed region hands out no slice.
    fails_with(unsafe { mr.slice(0, 8) }, ErrorKind::Destroyed, "slice")?;
    // A receive waits on the peer, so that a SEND that wrongly ran would complete.
    pair.b
        .post_recv(&[RecvWr::new(1, &[landing.sge(0, 128)])])?;
    let posted = pair.a.post_send(&[SendWr::send(2, &[old])]);
    refused_or_failed(
        ctx,
        posted,
        &pair.cq_a,
        2,
        "a SEND from a deregistered region",
    )?;
    drop(mr);
    ensure!(untouched(&memory), "the caller's memory changed");
    Ok(())
}

fn nothing_written_after_a_drain<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 64, 0x77)?;
    let writes = ctx.info().caps.contains(Caps::RDMA_WRITE);
    let mut memory = vec![UNTOUCHED; 256];
    let access = if writes {
        Access::LOCAL_WRITE | Access::REMOTE_WRITE
    } else {
        Access::LOCAL_WRITE
    };
    // SAFETY: `memory` outlives the region and is touched only through it until destroyed.
    let dst = unsafe { register::<P>(&pair.pd, &mut memory, access)? };
    pair.b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 128)])])?;
    pair.b.drain(ctx.drain_deadline())?;
    // The peer sends into the drained receive, and writes where the region's rights allow:
    // either may be refused, or fail; neither may land.
    let _ = pair.a.post_send(&[SendWr::send(2, &[src.sge(0, 64)])]);
    if writes {
        let write = SendWr::single(3, SendOp::Write(dst.remote(128)), src.sge(0, 64));
        let _ = pair.a.post_send(&[write]);
    }
    pair.a.drain(ctx.drain_deadline())?;
    {
        // SAFETY: both QPs are drained: none of their WRs runs any more, and the peer can no
        // longer reach the region through a drained QP.
        let seen = unsafe { dst.slice(0, 256)? };
        ensure!(
            untouched(seen),
            "bytes landed in the caller's memory after the drain"
        );
    }
    dst.destroy()?;
    drop(dst);
    ensure!(
        untouched(&memory),
        "the caller's memory changed after the drain"
    );
    let _ = ctx.poll_all(&pair.cq_a)?;
    let _ = ctx.poll_all(&pair.cq_b)?;
    Ok(())
}
