//! Destroyed and busy objects.

use super::*;

pub(super) fn post_after_destroy<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn destroy_pd_with_mrs<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn destroy_pd_with_qps<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn destroy_cq_in_use<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
