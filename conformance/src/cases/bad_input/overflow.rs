//! Queue overflow.

use super::*;

pub(super) fn recv_queue_overflow<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn send_queue_overflow<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
