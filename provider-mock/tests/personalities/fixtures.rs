//! Fixtures.

use super::*;

/// Two QPs connected through the connection manager on one device; `a` is the QP under test.
/// Fields drop in order: QPs before the MR and CQs, those before the PD.
pub(super) struct Pair {
    pub(super) a: MockQp,
    pub(super) _b: MockQp,
    pub(super) _listener: MockListener,
    pub(super) mr: MockMr,
    pub(super) cq_a: MockCq,
    pub(super) _cq_b: MockCq,
    pub(super) _pd: MockPd,
    pub(super) dev: MockDevice,
}

impl Pair {
    /// A connected pair on `row`'s device, on a fabric of its own.
    pub(super) fn new(row: &Row, params: &ConnParams, init: &QpInit, cq_depth: u32) -> Pair {
        let dev_name = row.device;
        let fail = |what: &str, e: anyverbs::Error| -> ! { panic!("{dev_name}: {what}: {e}") };
        let soon = || Instant::now() + Duration::from_secs(5);
        let provider = MockProvider::new();
        let dev = provider.open(dev_name).unwrap_or_else(|e| fail("open", e));
        let pd = dev.alloc_pd().unwrap_or_else(|e| fail("alloc_pd", e));
        let cq_a = dev
            .create_cq(cq_depth)
            .unwrap_or_else(|e| fail("create_cq", e));
        let cq_b = dev
            .create_cq(cq_depth)
            .unwrap_or_else(|e| fail("create_cq", e));
        let a = pd
            .create_qp(&cq_a, &cq_a, init)
            .unwrap_or_else(|e| fail("create_qp", e));
        let b = pd
            .create_qp(&cq_b, &cq_b, init)
            .unwrap_or_else(|e| fail("create_qp", e));
        let mr = pd
            .register(64 * 1024, Access::LOCAL_WRITE)
            .unwrap_or_else(|e| fail("register", e));
        let ip = dev.ports().unwrap_or_else(|e| fail("ports", e))[0].addresses[0];
        let listener = dev
            .listen(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| fail("listen", e));
        a.connect(listener.local_addr(), params)
            .unwrap_or_else(|e| fail("connect", e));
        let request = listener
            .next_request(soon())
            .unwrap_or_else(|e| fail("next_request", e));
        listener
            .accept(&request, &b, params)
            .unwrap_or_else(|e| fail("accept", e));
        a.wait_connected(soon())
            .unwrap_or_else(|e| fail("wait_connected", e));
        assert_eq!(a.state().unwrap(), QpState::ReadyToSend, "{dev_name}");
        Pair {
            a,
            _b: b,
            _listener: listener,
            mr,
            cq_a,
            _cq_b: cq_b,
            _pd: pd,
            dev,
        }
    }

    /// A connected pair with default sizes and connection parameters.
    pub(super) fn default_on(row: &Row) -> Pair {
        Pair::new(row, &ConnParams::default(), &QpInit::default(), 1024)
    }

    /// A 64-byte receive buffer, number `i`.
    pub(super) fn recv_sge(&self, i: u64) -> Sge {
        self.mr.sge((i as usize % 512) * 64, 64)
    }

    /// 8 bytes to send.
    pub(super) fn send_sge(&self) -> Sge {
        self.mr.sge(63 * 1024, 8)
    }
}

/// A zero-length marker on `queue`, as the naive drain posts it: a zero-length RDMA WRITE on the
/// send queue (it touches no remote memory), a receive without SGEs on the receive queue.
pub(super) fn post_marker(qp: &MockQp, queue: WorkQueue, id: u64) -> Result<(), PostError> {
    match queue {
        WorkQueue::Send => qp.post_send(&[SendWr::new(
            id,
            SendOp::Write(RemoteAddr { addr: 0, rkey: 0 }),
            &[],
        )]),
        WorkQueue::Recv => qp.post_recv(&[RecvWr::new(id, &[])]),
    }
}

/// The opcode a completion of a marker on `queue` carries.
pub(super) fn marker_opcode(queue: WorkQueue) -> WcOpcode {
    match queue {
        WorkQueue::Send => WcOpcode::RdmaWrite,
        WorkQueue::Recv => WcOpcode::Recv,
    }
}

/// Posts [`RECVS`] receives on `a` (in its current state, which must take them) and books them.
pub(super) fn post_receives(p: &Pair, book: &mut Book) -> Vec<u64> {
    let ids: Vec<u64> = (RECV_BASE..RECV_BASE + RECVS).collect();
    for &id in &ids {
        p.a.post_recv(&[RecvWr::new(id, &[p.recv_sge(id)])])
            .unwrap_or_else(|e| panic!("{}: post receive {id}: {e}", book.device));
        book.expect(id, Due::Once, WcOpcode::Recv);
    }
    ids
}

/// A SEND of 8 bytes, signaled or not.
pub(super) fn send_wr(p: &Pair, id: u64, signaled: bool) -> SendWr<'static> {
    let wr = SendWr::single(id, SendOp::Send, p.send_sge());
    if signaled {
        wr
    } else {
        wr.with_flags(SendFlags::empty())
    }
}

/// What the ULP may see of an accepted send.
pub(super) fn send_due(signaled: bool) -> Due {
    if signaled { Due::Once } else { Due::AtMostOnce }
}

/// Checks a post's synchronous outcome against `fate`; true if the WR was accepted.
pub(super) fn accepted(dev: &str, what: &str, r: Result<(), PostError>, fate: Fate) -> bool {
    match (fate, r) {
        (Refused(errno), Err(e)) => {
            assert_eq!(
                e.accepted, 0,
                "{dev}: {what}: a one-WR post accepted nothing"
            );
            assert_eq!(e.kind(), ErrorKind::InvalidState, "{dev}: {what}: {e}");
            let text = error_chain(&e);
            assert!(
                text.contains(errno),
                "{dev}: {what}: the refusal should name {errno}: {text}"
            );
            false
        }
        (Refused(errno), Ok(())) => {
            panic!("{dev}: {what} was accepted; the real device refuses posts in ERROR ({errno})")
        }
        (_, Ok(())) => true,
        (fate, Err(e)) => panic!("{dev}: {what} was refused ({e}); expected {fate:?}"),
    }
}

/// An error and all its sources, as one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}
