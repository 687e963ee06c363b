//! Posting in the wrong state.

use super::*;

pub(super) fn post_send_before_connect<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn post_recv_in_reset<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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

pub(super) fn post_send_in_init<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
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
