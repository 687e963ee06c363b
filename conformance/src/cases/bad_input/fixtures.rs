//! Fixtures and bookkeeping.

use super::*;

/// Bytes of one message; registered buffers are cut into slots of this size.
pub(super) const MSG: u32 = 64;
/// `MSG` as a length.
pub(super) const SLOT: usize = MSG as usize;
/// Slots in each buffer.
pub(super) const SLOTS: usize = 32;
/// How long "nothing completes" is watched for.
pub(super) const QUIET: Duration = Duration::from_millis(50);

/// The byte every byte of source slot `slot` is filled with.
pub(super) fn pattern(slot: usize) -> u8 {
    0x40 + slot as u8
}

/// A connected pair plus a source buffer (slot `i` filled with `pattern(i)`) and a zeroed
/// destination buffer, both in the pair's PD. The buffers drop before the pair (and its PD).
pub(super) struct Fx<P: Provider> {
    pub(super) src: P::Mr,
    pub(super) dst: P::Mr,
    pub(super) pair: Pair<P>,
}

pub(super) fn fixture<P: Provider>(
    ctx: &Ctx<'_, P>,
    init: &QpInit,
    params: &ConnParams,
) -> Result<Fx<P>, CaseError> {
    let pair = ctx.pair_with(init, params, 256)?;
    let (src, dst) = buffers(ctx, &pair.pd)?;
    Ok(Fx { src, dst, pair })
}

pub(super) fn buffers<P: Provider>(
    ctx: &Ctx<'_, P>,
    pd: &P::Pd,
) -> Result<(P::Mr, P::Mr), CaseError> {
    let src = ctx.mr(pd, SLOTS * SLOT, Access::LOCAL_WRITE)?;
    for s in 0..SLOTS {
        src.write(s * SLOT, &[pattern(s); SLOT])?;
    }
    let dst = ctx.mr(pd, SLOTS * SLOT, Access::LOCAL_WRITE)?;
    Ok((src, dst))
}

/// Two QPs on the device under test that are NOT connected yet, with a listener to connect them
/// through and the same buffers as [`Fx`]. Fields drop in order: MRs, QPs, listener, CQs, PD.
pub(super) struct Loose<P: Provider> {
    pub(super) src: P::Mr,
    pub(super) dst: P::Mr,
    pub(super) a: P::Qp,
    pub(super) b: P::Qp,
    pub(super) listener: P::Listener,
    pub(super) cq_a: P::Cq,
    pub(super) cq_b: P::Cq,
    pub(super) _pd: P::Pd,
    pub(super) _device: P::Device,
}

pub(super) fn loose<P: Provider>(ctx: &Ctx<'_, P>) -> Result<Loose<P>, CaseError> {
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
pub(super) fn connect<P: Provider>(
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
pub(super) fn send_wr(wr_id: u64, src: &impl MemoryRegion, slot: usize) -> SendWr<'static> {
    SendWr::single(wr_id, SendOp::Send, src.sge(slot * SLOT, MSG))
}

/// A receive into destination slot `slot`.
pub(super) fn recv_wr(wr_id: u64, dst: &impl MemoryRegion, slot: usize) -> RecvWr<'static> {
    RecvWr::single(wr_id, dst.sge(slot * SLOT, MSG))
}

/// Slot `slot` of `mr` cut into `n` contiguous SGEs (one SGE if `n` exceeds the slot's bytes).
pub(super) fn split_slot(mr: &impl MemoryRegion, slot: usize, n: u32) -> SgList {
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
pub(super) fn refused(
    r: Result<(), PostError>,
    kind: ErrorKind,
    accepted: usize,
    what: &str,
) -> CaseResult {
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
pub(super) fn fails_with<T>(r: anyverbs::Result<T>, kind: ErrorKind, what: &str) -> CaseResult {
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
pub(super) fn statuses(got: &[Completion], want: &[(u64, WcStatus)]) -> CaseResult {
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
pub(super) struct Books {
    pub(super) seen: Vec<Completion>,
}

impl Books {
    /// Waits for exactly `n` completions on `cq` and records them.
    pub(super) fn wait<P: Provider>(
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
    pub(super) fn sends<P: Provider>(
        &mut self,
        ctx: &Ctx<'_, P>,
        cq: &P::Cq,
        ids: &[u64],
    ) -> CaseResult {
        let got = self.wait(ctx, cq, ids.len())?;
        let want: Vec<(u64, WcStatus)> = ids.iter().map(|&id| (id, WcStatus::Success)).collect();
        statuses(&got, &want)
    }

    /// Waits for the successful completions of receives, in order, each `(wr_id, dst slot,
    /// src slot)`, and checks that the data of that source slot landed in that destination slot.
    pub(super) fn recvs<P: Provider>(
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
    pub(super) fn finish<P: Provider>(
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
pub(super) fn finish_pair<P: Provider>(
    books: &mut Books,
    ctx: &Ctx<'_, P>,
    p: &Pair<P>,
    refused: &[u64],
) -> CaseResult {
    books.finish(ctx, &[&p.a, &p.b], &[&p.cq_a, &p.cq_b], refused)
}
