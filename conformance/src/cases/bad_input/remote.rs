//! Remote access errors.

use super::*;

/// What is wrong with an RDMA WR's remote address.
#[derive(Debug, Clone, Copy)]
pub(super) enum Remote {
    /// The rkey names no region of the peer.
    BadRkey,
    /// The address is inside the region, but address + length runs past its end.
    OutOfBounds,
}

/// The bad remote address of `fault`, otherwise like slot 1 of `target`.
pub(super) fn bad_remote<P: Provider>(
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

/// The RDMA operation a case aims at a bad remote address.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    /// RDMA WRITE.
    Write,
    /// RDMA READ.
    Read,
}

/// One bad-remote-address case: a row of [`ROWS`], run by [`run_row`].
pub(super) struct Row {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) needs: Needs,
    pub(super) op: Op,
    pub(super) fault: Remote,
}

/// The bad-remote-address cases: each bad address for each operation.
pub(super) const ROWS: [Row; 4] = [
    Row {
        name: "bad_input::rdma_write_bad_rkey",
        description: "An RDMA WRITE with an rkey the peer does not know completes with a remote access \
         error, after the WRITE before it succeeded, and writes nothing.",
        needs: Needs::caps(Caps::RDMA_WRITE),
        op: Op::Write,
        fault: Remote::BadRkey,
    },
    Row {
        name: "bad_input::rdma_write_out_of_bounds",
        description: "An RDMA WRITE running past the end of the remote region completes with a remote \
         access error, after the WRITE before it succeeded, and writes nothing.",
        needs: Needs::caps(Caps::RDMA_WRITE),
        op: Op::Write,
        fault: Remote::OutOfBounds,
    },
    Row {
        name: "bad_input::rdma_read_bad_rkey",
        description: "An RDMA READ with an rkey the peer does not know completes with a remote access \
         error, after the READ before it succeeded, and reads nothing.",
        needs: Needs::caps(Caps::RDMA_READ),
        op: Op::Read,
        fault: Remote::BadRkey,
    },
    Row {
        name: "bad_input::rdma_read_out_of_bounds",
        description: "An RDMA READ running past the end of the remote region completes with a remote \
         access error, after the READ before it succeeded, and reads nothing.",
        needs: Needs::caps(Caps::RDMA_READ),
        op: Op::Read,
        fault: Remote::OutOfBounds,
    },
];

/// Runs row `row` of [`ROWS`].
pub(super) fn run_row<P: Provider>(ctx: &Ctx<'_, P>, row: usize) -> CaseResult {
    let r = &ROWS[row];
    match r.op {
        Op::Write => rdma_write_fault(ctx, r.fault),
        Op::Read => rdma_read_fault(ctx, r.fault),
    }
}

/// Three RDMA WRITEs, the middle one to a bad remote address.
///
/// Only the responder can tell that an rkey or a remote range is bad, so the post succeeds on
/// every provider and the error always arrives as a remote access error completion of that WR;
/// the QP then moves to ERROR and the WRITE behind it is flushed.
pub(super) fn rdma_write_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Remote) -> CaseResult {
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
pub(super) fn rdma_read_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Remote) -> CaseResult {
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
