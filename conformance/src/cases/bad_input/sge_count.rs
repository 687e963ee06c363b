//! Too many SGEs.

use super::*;

/// Every QP gets the device's max_sge, and the bad WR one more: a provider may round the QP's
/// SGE limits up, but never past what the device supports.
pub(super) fn max_sge_init<P: Provider>(ctx: &Ctx<'_, P>) -> Result<(QpInit, u32), CaseError> {
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
pub(super) fn tiny_sges(mr: &impl MemoryRegion, n: u32) -> SgList {
    (0..n as usize).map(|k| mr.sge(k % mr.len(), 1)).collect()
}

pub(super) fn too_many_sges_send<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn too_many_sges_recv<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
