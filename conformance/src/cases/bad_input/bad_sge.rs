//! Bad local SGEs.

use super::*;

/// What is wrong with a local SGE.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
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
pub(super) struct BadSge<P: Provider> {
    pub(super) sge: Sge,
    pub(super) _mr: Option<P::Mr>,
    pub(super) _pd: Option<P::Pd>,
}

/// A bad SGE of `fault`, otherwise like slot `slot` of `home` (a region of the pair's PD).
pub(super) fn bad_sge<P: Provider>(
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

/// Which queue a case posts its bad SGE on.
#[derive(Debug, Clone, Copy)]
pub(super) enum On {
    /// A SEND's scatter list.
    Send,
    /// A receive's scatter list.
    Recv,
}

/// One bad-SGE case: a row of [`ROWS`], run by [`run_row`].
pub(super) struct Row {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) on: On,
    pub(super) fault: Fault,
}

/// The bad-SGE cases: each bad SGE on each queue.
pub(super) const ROWS: [Row; 8] = [
    Row {
        name: "bad_input::send_sge_unknown_lkey",
        description: "A send WR whose SGE has an unknown lkey is refused with InvalidArgument (or completes \
         with a local protection error) and loses nothing.",
        on: On::Send,
        fault: Fault::UnknownLkey,
    },
    Row {
        name: "bad_input::send_sge_offset_past_end",
        description: "A send WR whose SGE starts past the end of its region is refused with \
         InvalidArgument (or completes with a local protection error) and loses nothing.",
        on: On::Send,
        fault: Fault::OffsetPastEnd,
    },
    Row {
        name: "bad_input::send_sge_length_overrun",
        description: "A send WR whose SGE runs over the end of its region is refused with InvalidArgument \
         (or completes with a local protection error) and loses nothing.",
        on: On::Send,
        fault: Fault::LengthOverrun,
    },
    Row {
        name: "bad_input::send_sge_other_pd",
        description: "A send WR whose SGE names a region of another protection domain is refused with \
         InvalidArgument (or completes with a local protection error) and loses nothing.",
        on: On::Send,
        fault: Fault::OtherPd,
    },
    Row {
        name: "bad_input::recv_sge_unknown_lkey",
        description: "A receive WR whose SGE has an unknown lkey is refused with InvalidArgument (or \
         completes with a local protection error) and loses nothing.",
        on: On::Recv,
        fault: Fault::UnknownLkey,
    },
    Row {
        name: "bad_input::recv_sge_offset_past_end",
        description: "A receive WR whose SGE starts past the end of its region is refused with \
         InvalidArgument (or completes with a local protection error) and loses nothing.",
        on: On::Recv,
        fault: Fault::OffsetPastEnd,
    },
    Row {
        name: "bad_input::recv_sge_length_overrun",
        description: "A receive WR whose SGE runs over the end of its region is refused with \
         InvalidArgument (or completes with a local protection error) and loses nothing.",
        on: On::Recv,
        fault: Fault::LengthOverrun,
    },
    Row {
        name: "bad_input::recv_sge_other_pd",
        description: "A receive WR whose SGE names a region of another protection domain is refused with \
         InvalidArgument (or completes with a local protection error) and loses nothing.",
        on: On::Recv,
        fault: Fault::OtherPd,
    },
];

/// Runs row `row` of [`ROWS`].
pub(super) fn run_row<P: Provider>(ctx: &Ctx<'_, P>, row: usize) -> CaseResult {
    let r = &ROWS[row];
    match r.on {
        On::Send => send_sge_fault(ctx, r.fault),
        On::Recv => recv_sge_fault(ctx, r.fault),
    }
}

/// A batch of three SENDs whose middle one has a bad SGE.
///
/// Two outcomes are correct. A provider that validates SGEs at post time (the mock) refuses the
/// batch at index 1 with InvalidArgument; the first SEND then completes and the QP keeps
/// working. Real NICs cannot validate lkeys at post time: they accept the batch, complete the
/// bad WR with a local protection error and move the QP to ERROR, which flushes the WR behind
/// it; then the QP cannot be used again, and the case checks the wr_ids of those completions.
pub(super) fn send_sge_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Fault) -> CaseResult {
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
pub(super) fn recv_sge_fault<P: Provider>(ctx: &Ctx<'_, P>, fault: Fault) -> CaseResult {
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
