//! Bad atomics: a target without remote atomic access (found by the responder), and WRs that
//! are malformed where the requester can tell (refused at post).

use super::*;
use crate::cases::data::{atomic_offset, read_u64};

/// What the target region of the atomics holds at first, around their 8 bytes.
const FILL: u8 = 0x3c;

/// A pair, a target region every atomic may use, and an 8-byte aligned offset in it.
struct AtomicFx<P: Provider> {
    target: P::Mr,
    result: P::Mr,
    at: usize,
    pair: Pair<P>,
}

fn atomic_fixture<P: Provider>(ctx: &Ctx<'_, P>) -> Result<AtomicFx<P>, CaseError> {
    let pair = ctx.pair_with(&QpInit::default(), &ConnParams::default(), 256)?;
    let target = ctx.mr(
        &pair.pd,
        4 * SLOT,
        Access::LOCAL_WRITE | Access::REMOTE_ATOMIC,
    )?;
    target.write(0, &[FILL; 4 * SLOT])?;
    let at = atomic_offset(&target, SLOT);
    target.write(at, &100u64.to_ne_bytes())?;
    let result = ctx.mr(&pair.pd, 4 * SLOT, Access::LOCAL_WRITE)?;
    Ok(AtomicFx {
        target,
        result,
        at,
        pair,
    })
}

/// Three fetch-and-adds of 1, the middle one to a region registered without
/// [`Access::REMOTE_ATOMIC`]: only the responder can tell, so it completes with a remote access
/// error, the one behind it is flushed, and neither changes memory.
pub(super) fn atomic_without_remote_atomic_access<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let fx = atomic_fixture(ctx)?;
    let p = &fx.pair;
    let mut books = Books::default();
    // Every right but the atomic one.
    let plain = ctx.mr_filled(&p.pd, 2 * SLOT, FILL)?;
    let plain_at = atomic_offset(&plain, 8);
    let faa = |id: u64, slot: usize, remote: RemoteAddr| {
        SendWr::fetch_add(id, fx.result.sge(slot * 8, 8), remote, 1)
    };
    let wrs = [
        faa(100, 0, fx.target.remote(fx.at)),
        faa(101, 1, plain.remote(plain_at)),
        faa(102, 2, fx.target.remote(fx.at)),
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
    ensure_eq!(
        got[0].opcode,
        WcOpcode::FetchAdd,
        "opcode of fetch-and-add 100"
    );
    ensure_eq!(read_u64(&fx.result, 0)?, 100, "value returned by 100");
    ensure_eq!(
        read_u64(&fx.target, fx.at)?,
        101,
        "the target after 100 (and the flushed 102)"
    );
    ensure!(
        ctx.contents(&plain)?.iter().all(|&b| b == FILL),
        "the refused fetch-and-add 101 changed a region without remote atomic access"
    );
    ensure_eq!(
        p.a.state()?,
        QpState::Error,
        "requester state after the error"
    );
    finish_pair(&mut books, ctx, p, &[])
}

/// What is malformed about an atomic WR.
#[derive(Debug, Clone, Copy)]
pub(super) enum Malformed {
    /// The remote address is not 8-byte aligned.
    Misaligned,
    /// The local SGE is 4 bytes.
    ShortSge,
    /// Two local SGEs of 4 bytes (8 in all).
    TwoSges,
}

/// A batch of three fetch-and-adds whose middle one is `bad`: refused at post with
/// InvalidArgument after the first, which completes; the refused one and the one behind it
/// never do and change nothing; the QP keeps working.
pub(super) fn malformed_atomic<P: Provider>(ctx: &Ctx<'_, P>, bad: Malformed) -> CaseResult {
    let fx = atomic_fixture(ctx)?;
    let p = &fx.pair;
    let mut books = Books::default();
    let good = |id: u64, slot: usize| {
        SendWr::fetch_add(id, fx.result.sge(slot * 8, 8), fx.target.remote(fx.at), 1)
    };
    let halves = [fx.result.sge(8, 4), fx.result.sge(12, 4)];
    let remote = fx.target.remote(fx.at);
    let op = SendOp::FetchAdd { remote, add: 1 };
    let wrong = match bad {
        Malformed::Misaligned => {
            SendWr::fetch_add(101, fx.result.sge(8, 8), fx.target.remote(fx.at + 4), 1)
        }
        Malformed::ShortSge => SendWr::single(101, op, fx.result.sge(8, 4)),
        Malformed::TwoSges => SendWr::new(101, op, &halves),
    };
    refused(
        p.a.post_send(&[good(100, 0), wrong, good(102, 2)]),
        ErrorKind::InvalidArgument,
        1,
        &format!("an atomic WR that is {bad:?}"),
    )?;
    books.sends(ctx, &p.cq_a, &[100])?;
    ensure_eq!(read_u64(&fx.result, 0)?, 100, "value returned by 100");
    ensure_eq!(
        read_u64(&fx.target, fx.at)?,
        101,
        "the target after 100 (only)"
    );
    ensure!(
        ctx.contents(&fx.result)?[8..24].iter().all(|&b| b == 0),
        "the refused WR 101 or the unposted 102 wrote a result"
    );
    // The QP still works.
    p.a.post_send(&[good(103, 3)])?;
    books.sends(ctx, &p.cq_a, &[103])?;
    ensure_eq!(read_u64(&fx.result, 24)?, 101, "value returned by 103");
    let got = ctx.contents(&fx.target)?;
    ensure!(
        got[..fx.at]
            .iter()
            .chain(&got[fx.at + 8..])
            .all(|&b| b == FILL),
        "bytes around the target changed"
    );
    finish_pair(&mut books, ctx, p, &[101, 102])
}

pub(super) fn atomic_misaligned<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    malformed_atomic(ctx, Malformed::Misaligned)
}

pub(super) fn atomic_wrong_local_length<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    malformed_atomic(ctx, Malformed::ShortSge)?;
    malformed_atomic(ctx, Malformed::TwoSges)
}
