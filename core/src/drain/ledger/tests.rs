//! The ledger's unit tests.

use super::*;
use crate::wr::Sge;

fn send(id: u64, signaled: bool) -> SendWr<'static> {
    let wr = SendWr::send(
        id,
        &[Sge {
            addr: 0,
            length: 1,
            lkey: 1,
        }],
    );
    if signaled {
        wr
    } else {
        wr.with_flags(SendFlags::empty())
    }
}

fn device(token: Token, status: WcStatus, opcode: WcOpcode) -> Completion {
    Completion {
        wr_id: token.wr_id(),
        status,
        opcode,
        qp_num: 7,
        ..Completion::default()
    }
}

#[test]
fn resolve_restores_wr_id_and_repairs_flush_opcode() {
    let mut l = Ledger::new(7, 4, 4);
    let t = l.admit_recv(&RecvWr::new(42, &[])).unwrap();
    // rxe reports a flushed receive as a SEND.
    let c = l
        .resolve(&device(t, WcStatus::WrFlushError, WcOpcode::Send))
        .unwrap();
    assert_eq!(
        (c.wr_id, c.opcode, c.status),
        (42, WcOpcode::Recv, WcStatus::WrFlushError)
    );
    assert_eq!(l.outstanding(WorkQueue::Recv), 0);
    // The same completion again is stale.
    assert!(
        l.resolve(&device(t, WcStatus::WrFlushError, WcOpcode::Send))
            .is_none()
    );
    assert_eq!(l.stale(), 1);
}

#[test]
fn duplicate_ulp_wr_ids_stay_distinct() {
    let mut l = Ledger::new(7, 4, 4);
    let a = l.admit_send(&send(5, true)).unwrap();
    let b = l.admit_send(&send(5, true)).unwrap();
    assert_ne!(a, b);
    assert!(
        l.resolve(&device(a, WcStatus::Success, WcOpcode::Send))
            .is_some()
    );
    assert_eq!(l.outstanding(WorkQueue::Send), 1);
    assert!(
        l.resolve(&device(b, WcStatus::Success, WcOpcode::Send))
            .is_some()
    );
    assert_eq!(l.outstanding(WorkQueue::Send), 0);
}

#[test]
fn signaled_completion_retires_earlier_unsignaled_sends() {
    let mut l = Ledger::new(7, 8, 4);
    l.admit_send(&send(1, false)).unwrap();
    l.admit_send(&send(2, false)).unwrap();
    let t = l.admit_send(&send(3, true)).unwrap();
    l.admit_send(&send(4, false)).unwrap();
    let c = l
        .resolve(&device(t, WcStatus::Success, WcOpcode::Send))
        .unwrap();
    assert_eq!(c.wr_id, 3);
    assert_eq!(l.outstanding(WorkQueue::Send), 1, "only wr 4 is left");
}

#[test]
fn depth_excludes_markers_and_refuses_the_one_too_many() {
    let mut l = Ledger::new(7, 2, 1);
    l.admit_send(&send(1, true)).unwrap();
    l.admit_send(&send(2, true)).unwrap();
    let e = l.admit_send(&send(3, true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted);
    assert!(l.arm_marker(WorkQueue::Send).is_some());
    assert_eq!(l.outstanding(WorkQueue::Send), 2);
}

#[test]
fn marker_is_swallowed_and_retires_silent_sends() {
    let mut l = Ledger::new(7, 8, 4);
    l.admit_send(&send(1, false)).unwrap();
    assert_eq!(l.begin_drain(), DrainStart::Start);
    let m = l.arm_marker(WorkQueue::Send).unwrap();
    assert!(m.is_marker());
    assert!(l.marker_pending(WorkQueue::Send));
    assert!(
        l.resolve(&device(m, WcStatus::WrFlushError, WcOpcode::RdmaWrite))
            .is_none()
    );
    assert!(!l.marker_pending(WorkQueue::Send));
    assert_eq!(l.outstanding(WorkQueue::Send), 0);
}

#[test]
fn no_marker_on_an_empty_queue() {
    let mut l = Ledger::new(7, 8, 4);
    assert!(l.arm_marker(WorkQueue::Recv).is_none());
    assert!(!l.marker_pending(WorkQueue::Recv));
}

#[test]
fn settle_retires_unsignaled_and_synthesizes_the_rest() {
    let mut l = Ledger::new(7, 8, 4);
    l.admit_send(&send(1, false)).unwrap();
    l.admit_send(&send(2, true)).unwrap();
    let doomed = l.admit_send(&send(3, false)).unwrap();
    l.doom(doomed);
    l.admit_recv(&RecvWr::new(9, &[])).unwrap();
    l.begin_drain();
    let mut out = Vec::new();
    assert_eq!(l.settle(WorkQueue::Send, &mut out), 2);
    assert_eq!(l.settle(WorkQueue::Recv, &mut out), 1);
    let ids: Vec<u64> = out.iter().map(|c| c.wr_id).collect();
    assert_eq!(ids, [2, 3, 9]);
    assert!(out.iter().all(|c| c.status == WcStatus::WrFlushError));
    assert_eq!(out[2].opcode, WcOpcode::Recv);
    assert_eq!(l.finish_drain(), (4, 3));
}

#[test]
fn synthesize_covers_unsignaled_and_then_drops_late_completions() {
    let mut l = Ledger::new(7, 8, 4);
    let t = l.admit_send(&send(1, false)).unwrap();
    l.admit_recv(&RecvWr::new(2, &[])).unwrap();
    l.begin_drain();
    let mut out = Vec::new();
    assert_eq!(l.synthesize(WorkQueue::Send, &mut out), 1);
    assert_eq!(l.synthesize(WorkQueue::Recv, &mut out), 1);
    assert_eq!(l.finish_drain(), (2, 2));
    assert!(
        l.resolve(&device(t, WcStatus::WrFlushError, WcOpcode::Send))
            .is_none()
    );
}

#[test]
fn posts_are_refused_once_the_drain_starts_and_withdraw_forgets() {
    let mut l = Ledger::new(7, 8, 4);
    let t = l.admit_send(&send(1, true)).unwrap();
    l.withdraw(t);
    assert_eq!(l.outstanding(WorkQueue::Send), 0);
    assert_eq!(l.begin_drain(), DrainStart::Start);
    assert_eq!(l.begin_drain(), DrainStart::InProgress);
    let e = l.admit_recv(&RecvWr::new(1, &[])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    l.interrupt_drain();
    assert_eq!(l.phase(), DrainPhase::Interrupted);
    assert!(l.admit_send(&send(2, true)).is_err());
    assert_eq!(l.begin_drain(), DrainStart::Start);
    l.finish_drain();
    assert_eq!(l.begin_drain(), DrainStart::Done);
}

#[test]
fn a_late_completion_of_a_reused_qp_number_is_not_the_new_qps() {
    // QP 7 is destroyed with a receive outstanding; the kernel gives number 7 to a new QP,
    // whose first receive has the same queue and sequence as the old one.
    let mut old = Ledger::new(7, 4, 4);
    let old_token = old.admit_recv(&RecvWr::new(1, &[])).unwrap();
    let mut new = Ledger::new(7, 4, 4);
    let new_token = new.admit_recv(&RecvWr::new(2, &[])).unwrap();
    assert_ne!(old_token.generation(), new_token.generation());
    assert_ne!(old_token, new_token);
    // The old QP's flush arrives late on the shared CQ and is routed by number to the new
    // ledger: it must not complete the new QP's receive.
    let late = Completion {
        wr_id: old_token.wr_id(),
        status: WcStatus::WrFlushError,
        qp_num: 7,
        ..Completion::default()
    };
    assert_eq!(new.resolve(&late), None);
    assert_eq!(new.stale(), 1);
    assert_eq!(
        new.outstanding(WorkQueue::Recv),
        1,
        "the new receive is still outstanding"
    );
    new.withdraw(old_token);
    assert_eq!(
        new.outstanding(WorkQueue::Recv),
        1,
        "another ledger's token withdraws nothing"
    );
    let own = Completion {
        wr_id: new_token.wr_id(),
        qp_num: 7,
        ..Completion::default()
    };
    assert_eq!(new.resolve(&own).map(|c| c.wr_id), Some(2));
}

#[test]
fn discard_before_forgets_only_what_was_posted_before_the_mark_across_the_wrap() {
    let mut l = Ledger::new(1, 8, 8);
    l.queues[WorkQueue::Recv.index()].next_seq = SEQ_MASK;
    l.admit_recv(&RecvWr::new(1, &[])).unwrap();
    let mark = l.mark();
    let t = l.admit_recv(&RecvWr::new(2, &[])).unwrap();
    assert_eq!(t.seq(), 0, "the sequence wrapped after the mark");
    assert_eq!(l.discard_before(mark), 1);
    let done = Completion {
        wr_id: t.wr_id(),
        qp_num: 1,
        ..Completion::default()
    };
    assert_eq!(l.resolve(&done).map(|c| c.wr_id), Some(2));
}

#[test]
fn sequences_wrap_without_confusing_the_order() {
    let mut l = Ledger::new(1, 8, 8);
    l.queues[WorkQueue::Send.index()].next_seq = SEQ_MASK - 1;
    // Two unsignaled sends before the wrap, a signaled one after it.
    let _a = l.admit_send(&send(10, false)).unwrap();
    let b = l.admit_send(&send(11, false)).unwrap();
    let c = l.admit_send(&send(12, true)).unwrap();
    assert_eq!(b.seq(), SEQ_MASK);
    assert_eq!(c.seq(), 0, "the sequence wrapped");
    let done = Completion {
        wr_id: c.wr_id(),
        qp_num: 1,
        ..Completion::default()
    };
    assert_eq!(l.resolve(&done).map(|c| c.wr_id), Some(12));
    assert_eq!(
        l.outstanding(WorkQueue::Send),
        0,
        "the unsignaled sends before it retired across the wrap"
    );
    // A marker after the wrap still completes and is swallowed.
    let d = l.admit_send(&send(13, true)).unwrap();
    let m = l.arm_marker(WorkQueue::Send).unwrap();
    assert!(m.is_marker() && m.seq() == d.seq() + 1);
}

#[test]
fn atomics_are_tracked_and_synthesized_with_their_own_opcodes() {
    use crate::wr::RemoteAddr;
    let mut l = Ledger::new(7, 8, 4);
    let local = Sge {
        addr: 0,
        length: 8,
        lkey: 1,
    };
    let remote = RemoteAddr { addr: 8, rkey: 2 };
    l.admit_send(&SendWr::compare_swap(1, local, remote, 0, 1))
        .unwrap();
    l.admit_send(&SendWr::fetch_add(2, local, remote, 1))
        .unwrap();
    assert_eq!(l.outstanding(WorkQueue::Send), 2);
    l.begin_drain();
    let mut out = Vec::new();
    assert_eq!(l.synthesize(WorkQueue::Send, &mut out), 2);
    let got: Vec<_> = out.iter().map(|c| (c.wr_id, c.status, c.opcode)).collect();
    assert_eq!(
        got,
        [
            (1, WcStatus::WrFlushError, WcOpcode::CompareSwap),
            (2, WcStatus::WrFlushError, WcOpcode::FetchAdd),
        ]
    );
}
