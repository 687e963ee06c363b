//! Atomics: refused by the kit on a device without them and when malformed, before the ledger
//! or the device sees them; tracked and flushed like READs where they are posted.

use super::*;
use crate::caps::Caps;
use crate::wr::{RemoteAddr, SendOp};

const REMOTE: RemoteAddr = RemoteAddr {
    addr: 0x1000,
    rkey: 3,
};

#[test]
fn a_device_without_atomics_refuses_them_at_post_and_the_device_never_sees_them() {
    let life = DeviceLife::new();
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    let wrs = [
        SendWr::send(100, &s),
        SendWr::compare_swap(101, s[0], REMOTE, 1, 2),
        SendWr::send(102, &s),
    ];
    let e = q.post_send(&wrs).unwrap_err();
    assert_eq!((e.kind(), e.accepted), (ErrorKind::NotSupported, 1), "{e}");
    let e = q
        .post_send(&[SendWr::fetch_add(103, s[0], REMOTE, 1)])
        .unwrap_err();
    assert_eq!((e.kind(), e.accepted), (ErrorKind::NotSupported, 0), "{e}");
    assert_eq!(lock(&q.raw().st).sq.len(), 1);
    // Only the SEND in front was admitted: the drain accounts for it alone.
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 1);
    assert_eq!(
        poll_all(&c.1),
        [(100, WcStatus::WrFlushError, WcOpcode::Send, 7)]
    );
}

#[test]
fn malformed_atomics_are_refused_with_invalid_argument_where_they_are_supported() {
    let life = DeviceLife::with_caps(Caps::ATOMICS);
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    let short = Sge { length: 4, ..s[0] };
    let two = [short, short];
    let misaligned = RemoteAddr {
        addr: REMOTE.addr + 4,
        ..REMOTE
    };
    for (wr, what) in [
        (SendWr::fetch_add(101, short, REMOTE, 1), "4-byte SGE"),
        (
            SendWr::new(
                101,
                SendOp::FetchAdd {
                    remote: REMOTE,
                    add: 1,
                },
                &two,
            ),
            "two SGEs",
        ),
        (
            SendWr::new(
                101,
                SendOp::FetchAdd {
                    remote: REMOTE,
                    add: 1,
                },
                &[],
            ),
            "no SGE",
        ),
        (
            SendWr::compare_swap(101, s[0], misaligned, 1, 2),
            "misaligned",
        ),
    ] {
        let e = q
            .post_send(&[SendWr::fetch_add(100, s[0], REMOTE, 1), wr])
            .unwrap_err();
        assert_eq!(
            (e.kind(), e.accepted),
            (ErrorKind::InvalidArgument, 1),
            "{what}: {e}"
        );
    }
    // The well-formed ones in front were posted; they complete with their own opcode.
    assert_eq!(lock(&q.raw().st).sq.len(), 4);
    q.raw().execute_sends(4);
    let got = poll_all(&c.1);
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|&(id, st, op, _)| (id, st, op) == (100, WcStatus::Success, WcOpcode::FetchAdd)),
        "{got:?}"
    );
}

#[test]
fn posted_atomics_are_tracked_and_flushed_like_reads() {
    let life = DeviceLife::with_caps(Caps::ATOMICS);
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    q.post_send(&[
        SendWr::compare_swap(100, s[0], REMOTE, 1, 2),
        SendWr::fetch_add(101, s[0], REMOTE, 1).with_flags(SendFlags::empty()),
        SendWr::single(102, SendOp::Read(REMOTE), s[0]),
    ])
    .unwrap();
    // The device flushes them with garbage opcodes; the ledger restores each WR's own.
    q.modify(QpState::Error).unwrap();
    let report = q.drain(soon()).unwrap();
    assert_eq!(report.accounted(), 3);
    assert_eq!(
        poll_all(&c.1),
        [
            (100, WcStatus::WrFlushError, WcOpcode::CompareSwap, 7),
            (101, WcStatus::WrFlushError, WcOpcode::FetchAdd, 7),
            (102, WcStatus::WrFlushError, WcOpcode::RdmaRead, 7),
        ]
    );
}

#[test]
fn an_inline_read_or_atomic_is_refused_before_the_device_sees_it() {
    let life = DeviceLife::with_caps(Caps::ATOMICS);
    let c = cq(16, &life);
    let q = qp(7, InError::Flush, &c, &c, &life);
    let s = sge();
    let inline = SendFlags::SIGNALED | SendFlags::INLINE;
    for wr in [
        SendWr::new(1, SendOp::Read(REMOTE), &s).with_flags(inline),
        SendWr::fetch_add(2, s[0], REMOTE, 1).with_flags(inline),
    ] {
        let e = q.post_send(&[wr]).unwrap_err();
        assert_eq!(
            (e.kind(), e.accepted),
            (ErrorKind::InvalidArgument, 0),
            "{e}"
        );
    }
    assert!(lock(&q.raw().st).sq.is_empty());
}
