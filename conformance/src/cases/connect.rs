//! Connection setup as librdmacm gives it every program: private data both ways, the CM's
//! parameters (READ credits, timers) checked against the device and the protocol, and READ
//! credits negotiated as the InfiniBand CM does.
//!
//! Private data is compared as a prefix followed by zeros: on InfiniBand and RoCE the CM carries
//! a fixed-size block, so the receiver gets the sender's bytes zero-padded to that size; iWARP
//! (MPA) carries the exact length, which these cases then require.

use std::time::{Duration, Instant};

use anyverbs::{
    Caps, ConnParams, Device, DeviceEvent, ErrorKind, Fault, Faults, Listener,
    MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, MemoryRegion,
    ProtectionDomain, Provider, QpInit, QpState, QueuePair, RecvWr, SendOp, SendWr, StateModel,
    WcOpcode, WcStatus, ready_for_receives,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "connect::private_data_both_ways",
            description: "The requester's private data reaches the listener in the request, and \
                          the acceptor's reaches the requester in its connection: the bytes sent, \
                          then only zeros (InfiniBand pads to the CM's fixed size); exactly the \
                          bytes sent on iWARP.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(private_data_both_ways::<P>),
        },
        Case {
            name: "connect::reject_carries_private_data",
            description: "A listener's reject reaches the requester as ConnectionRefused whose \
                          rejection carries the reject's private data (zero-padded on \
                          InfiniBand), none included; more than the CM's 148 bytes is \
                          InvalidArgument and rejects nothing.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(reject_carries_private_data::<P>),
        },
        Case {
            name: "connect::oversized_private_data_refused",
            description: "More private data than the CM carries (57 bytes in a connect, 197 in \
                          an accept) is InvalidArgument and changes nothing: the same QPs then \
                          connect.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(oversized_private_data_refused::<P>),
        },
        Case {
            name: "connect::defaults_are_the_device_maxima",
            description: "Connection parameters with no READ credits set ask for the device's \
                          maxima (DeviceLimits), as librdmacm does: the request shows them, and \
                          an RDMA READ works on the connection.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(defaults_are_the_device_maxima::<P>),
        },
        Case {
            name: "connect::read_credits_negotiated",
            description: "The request shows the requester's initiator depth and responder \
                          resources; the acceptor's choice (within them) is what the requester's \
                          connection reports, mirrored; a READ works within one credit.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(read_credits_negotiated::<P>),
        },
        Case {
            name: "connect::out_of_range_params_refused",
            description: "READ credits beyond the device's limits, an ACK timeout or a minimum \
                          RNR timer verbs cannot express, and retry counts above 7 are \
                          InvalidArgument at connect and at accept, and change nothing.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(out_of_range_params_refused::<P>),
        },
        Case {
            name: "connect::disconnect_tells_the_peer",
            description: "A disconnect of a connected QP with nothing outstanding is orderly, \
                          leaves the QP out of RTS, and the peer's device reports Disconnected \
                          for the peer; both QPs then drain.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(disconnect_tells_the_peer::<P>),
        },
        Case {
            name: "connect::disconnect_before_connect_refused",
            description: "Disconnecting a QP that was never connected is InvalidState.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(disconnect_before_connect_refused::<P>),
        },
        Case {
            name: "connect::disconnect_with_a_send_outstanding",
            description: "With a send held on a stalled device, a disconnect reports it \
                          outstanding; where an orderly close needs quiet sends (iWARP) it \
                          waits until its deadline and closes abruptly, never in order; after \
                          the device resumes, the send completes exactly once, flushed.",
            needs: Needs::faults(Faults::STALL),
            run: CaseFn::Plain(disconnect_with_a_send_outstanding::<P>),
        },
    ]
}

/// Checks that `got` is `sent` followed by zeros only, exactly `sent` where the CM carries the
/// length (iWARP).
fn expect_private(ctx: &Ctx<'_, impl Provider>, got: &[u8], sent: &[u8], what: &str) -> CaseResult {
    ensure!(
        got.len() >= sent.len() && &got[..sent.len()] == sent,
        "{what}: expected the {} bytes sent first, got {got:?}",
        sent.len()
    );
    ensure!(
        got[sent.len()..].iter().all(|&b| b == 0),
        "{what}: after the bytes sent, only zeros may follow (the CM's padding), got {:?}",
        &got[sent.len()..]
    );
    if ctx.state_model() == StateModel::Iwarp {
        ensure_eq!(
            got.len(),
            sent.len(),
            "{what}: length on iWARP (MPA carries it)"
        );
    }
    Ok(())
}

/// Two fresh QPs on one device, ready for receives, and a listener.
struct Fresh<P: Provider> {
    /// Kept open for the case.
    _device: P::Device,
    pd: P::Pd,
    cq: P::Cq,
    a: P::Qp,
    b: P::Qp,
    listener: P::Listener,
}

fn fresh<P: Provider>(ctx: &Ctx<'_, P>) -> Result<Fresh<P>, CaseError> {
    let device = ctx.open()?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(64)?;
    let a = pd.create_qp(&cq, &cq, &QpInit::default())?;
    let b = pd.create_qp(&cq, &cq, &QpInit::default())?;
    ready_for_receives(&a, ctx.state_model())?;
    ready_for_receives(&b, ctx.state_model())?;
    let listener = device.listen(ctx.address(&device)?)?;
    Ok(Fresh {
        _device: device,
        pd,
        cq,
        a,
        b,
        listener,
    })
}

fn private_data_both_ways<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = fresh(ctx)?;
    let hello: Vec<u8> = (1..=20).collect();
    let welcome: Vec<u8> = (100..200).collect();
    f.a.connect(
        f.listener.local_addr(),
        &ConnParams {
            private_data: hello.clone(),
            ..ConnParams::default()
        },
    )?;
    let request = f.listener.next_request(ctx.deadline())?;
    expect_private(
        ctx,
        &request.private_data,
        &hello,
        "the request's private data",
    )?;
    f.listener.accept(
        &request,
        &f.b,
        &ConnParams {
            private_data: welcome.clone(),
            ..ConnParams::default()
        },
    )?;
    let connection = f.a.wait_connected(ctx.deadline())?;
    expect_private(
        ctx,
        &connection.private_data,
        &welcome,
        "the connection's private data",
    )?;
    Ok(())
}

fn reject_carries_private_data<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = fresh(ctx)?;
    f.a.connect(f.listener.local_addr(), &ConnParams::default())?;
    let request = f.listener.next_request(ctx.deadline())?;
    match f
        .listener
        .reject(&request, &[1; MAX_REJECT_PRIVATE_DATA + 1])
    {
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
        other => {
            return Err(CaseError::Failed(format!(
                "reject with {} bytes of private data: expected InvalidArgument, got {other:?}",
                MAX_REJECT_PRIVATE_DATA + 1
            )));
        }
    }
    let why: Vec<u8> = (200..230).collect();
    f.listener.reject(&request, &why)?;
    match f.a.wait_connected(ctx.deadline()) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            let Some(rejected) = e.rejected() else {
                return Err(CaseError::Failed(format!(
                    "the refusal of a rejected connection carries no rejection: {e}"
                )));
            };
            expect_private(
                ctx,
                &rejected.private_data,
                &why,
                "the reject's private data",
            )
        }
        other => Err(CaseError::Failed(format!(
            "wait_connected after a reject: expected ConnectionRefused, got {other:?}"
        ))),
    }
}

fn oversized_private_data_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = fresh(ctx)?;
    let too_long = ConnParams {
        private_data: vec![7; MAX_CONNECT_PRIVATE_DATA + 1],
        ..ConnParams::default()
    };
    match f.a.connect(f.listener.local_addr(), &too_long) {
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
        other => {
            return Err(CaseError::Failed(format!(
                "connect with {} bytes of private data: expected InvalidArgument, got {other:?}",
                MAX_CONNECT_PRIVATE_DATA + 1
            )));
        }
    }
    f.a.connect(f.listener.local_addr(), &ConnParams::default())?;
    let request = f.listener.next_request(ctx.deadline())?;
    let too_long = ConnParams {
        private_data: vec![7; MAX_ACCEPT_PRIVATE_DATA + 1],
        ..ConnParams::default()
    };
    match f.listener.accept(&request, &f.b, &too_long) {
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
        other => {
            return Err(CaseError::Failed(format!(
                "accept with {} bytes of private data: expected InvalidArgument, got {other:?}",
                MAX_ACCEPT_PRIVATE_DATA + 1
            )));
        }
    }
    f.listener.accept(&request, &f.b, &ConnParams::default())?;
    f.a.wait_connected(ctx.deadline())?;
    Ok(())
}

/// An RDMA READ of 64 bytes from `b`'s memory by `a`, which must succeed.
fn read_works<P: Provider>(ctx: &Ctx<'_, P>, pd: &P::Pd, a: &P::Qp, cq: &P::Cq) -> CaseResult {
    if !ctx.info().caps.contains(Caps::RDMA_READ) {
        return Ok(());
    }
    let remote = ctx.mr_filled(pd, 64, 0x5a)?;
    let local = ctx.mr_filled(pd, 64, 0)?;
    a.post_send(&[SendWr::new(
        9,
        SendOp::Read(remote.remote(0)),
        &[local.sge(0, 64)],
    )])?;
    let c = ctx.completion(cq)?;
    ctx.expect_status(&c, 9, WcStatus::Success)?;
    ensure_eq!(c.opcode, WcOpcode::RdmaRead, "opcode of the READ");
    ensure_eq!(ctx.contents(&local)?, vec![0x5a; 64], "bytes read");
    Ok(())
}

fn defaults_are_the_device_maxima<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let limits = ctx.info().limits;
    let f = fresh(ctx)?;
    f.a.connect(f.listener.local_addr(), &ConnParams::default())?;
    let request = f.listener.next_request(ctx.deadline())?;
    ensure_eq!(
        (request.initiator_depth, request.responder_resources),
        (limits.max_initiator_depth, limits.max_responder_resources),
        "(initiator depth, responder resources) of a request with the defaults"
    );
    f.listener.accept(&request, &f.b, &ConnParams::default())?;
    let connection = f.a.wait_connected(ctx.deadline())?;
    ensure!(
        connection.initiator_depth <= limits.max_initiator_depth
            && connection.responder_resources <= limits.max_responder_resources,
        "the connection's credits ({}, {}) exceed the device's ({}, {})",
        connection.initiator_depth,
        connection.responder_resources,
        limits.max_initiator_depth,
        limits.max_responder_resources
    );
    read_works(ctx, &f.pd, &f.a, &f.cq)
}

fn read_credits_negotiated<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let limits = ctx.info().limits;
    if limits.max_initiator_depth == 0 || limits.max_responder_resources == 0 {
        return Err(CaseError::NotRun(
            "the device allows no READ credits (initiator depth or responder resources 0)".into(),
        ));
    }
    let (depth, resources) = (
        limits.max_initiator_depth.min(2),
        limits.max_responder_resources.min(3),
    );
    let f = fresh(ctx)?;
    f.a.connect(
        f.listener.local_addr(),
        &ConnParams {
            initiator_depth: Some(depth),
            responder_resources: Some(resources),
            ..ConnParams::default()
        },
    )?;
    let request = f.listener.next_request(ctx.deadline())?;
    ensure_eq!(
        (request.initiator_depth, request.responder_resources),
        (depth, resources),
        "(initiator depth, responder resources) the request shows"
    );
    // The acceptor serves one READ at once and issues at most as many as the requester serves.
    let accepted = ConnParams {
        initiator_depth: Some(request.responder_resources.min(limits.max_initiator_depth)),
        responder_resources: Some(1),
        ..ConnParams::default()
    };
    f.listener.accept(&request, &f.b, &accepted)?;
    let connection = f.a.wait_connected(ctx.deadline())?;
    ensure_eq!(
        (connection.initiator_depth, connection.responder_resources),
        (1, accepted.initiator_depth.unwrap_or(0)),
        "the requester's (initiator depth, responder resources): the acceptor's, mirrored"
    );
    read_works(ctx, &f.pd, &f.a, &f.cq)
}

fn out_of_range_params_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let limits = ctx.info().limits;
    let mut bad = vec![
        (
            "an ACK timeout of 1 ns",
            ConnParams {
                ack_timeout: Some(Duration::from_nanos(1)),
                ..ConnParams::default()
            },
        ),
        (
            "a minimum RNR timer of 1 s",
            ConnParams {
                min_rnr_timer: Some(Duration::from_secs(1)),
                ..ConnParams::default()
            },
        ),
        (
            "a retry count of 8",
            ConnParams {
                retry_count: 8,
                ..ConnParams::default()
            },
        ),
    ];
    if let Some(d) = limits.max_initiator_depth.checked_add(1) {
        bad.push((
            "an initiator depth above the device's",
            ConnParams {
                initiator_depth: Some(d),
                ..ConnParams::default()
            },
        ));
    }
    if let Some(r) = limits.max_responder_resources.checked_add(1) {
        bad.push((
            "responder resources above the device's",
            ConnParams {
                responder_resources: Some(r),
                ..ConnParams::default()
            },
        ));
    }
    let f = fresh(ctx)?;
    for (what, params) in &bad {
        match f.a.connect(f.listener.local_addr(), params) {
            Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
            other => {
                return Err(CaseError::Failed(format!(
                    "connect with {what}: expected InvalidArgument, got {other:?}"
                )));
            }
        }
    }
    f.a.connect(f.listener.local_addr(), &ConnParams::default())?;
    let request = f.listener.next_request(ctx.deadline())?;
    for (what, params) in &bad {
        match f.listener.accept(&request, &f.b, params) {
            Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
            other => {
                return Err(CaseError::Failed(format!(
                    "accept with {what}: expected InvalidArgument, got {other:?}"
                )));
            }
        }
    }
    f.listener.accept(&request, &f.b, &ConnParams::default())?;
    f.a.wait_connected(ctx.deadline())?;
    Ok(())
}

fn disconnect_tells_the_peer<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let report = pair.a.disconnect(ctx.deadline())?;
    ensure!(
        report.orderly,
        "a disconnect with nothing outstanding: {report}"
    );
    ensure_eq!(report.sends_outstanding, 0, "sends outstanding");
    ensure!(
        pair.a.state()? != QpState::ReadyToSend,
        "the QP is still in RTS after its disconnect"
    );
    let peer = pair.b.qp_num();
    crate::cases::lifecycle::await_event(
        &events,
        &format!("Disconnected for the peer QP {peer}"),
        |e| *e == DeviceEvent::Disconnected { qp_num: peer },
        ctx.deadline(),
    )?;
    ctx.drain_pair(&pair)
}

fn disconnect_before_connect_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let f = fresh(ctx)?;
    match f.a.disconnect(ctx.deadline()) {
        Err(e) if e.kind() == ErrorKind::InvalidState => Ok(()),
        other => Err(CaseError::Failed(format!(
            "disconnect of a QP never connected: expected InvalidState, got {other:?}"
        ))),
    }
}

fn disconnect_with_a_send_outstanding<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    const WAIT: Duration = Duration::from_millis(100);
    let pair = ctx.pair()?;
    let src = ctx.mr_filled(&pair.pd, 64, 1)?;
    let dst = ctx.mr_filled(&pair.pd, 64, 0)?;
    pair.b.post_recv(&[RecvWr::new(1, &[dst.sge(0, 64)])])?;
    crate::cases::lifecycle::inject(ctx, &Fault::Stall)?;
    let outcome = (|| -> CaseResult {
        pair.a.post_send(&[SendWr::send(2, &[src.sge(0, 64)])])?;
        let start = Instant::now();
        let report = pair.a.disconnect(start + WAIT)?;
        ensure_eq!(
            report.sends_outstanding,
            1,
            "sends outstanding at the close ({report})"
        );
        if ctx.info().caps.contains(Caps::CLOSE_NEEDS_QUIET_SENDS) {
            ensure!(
                !report.orderly,
                "an orderly close with a send on the device: {report}"
            );
            ensure!(
                start.elapsed() >= WAIT,
                "it closed abruptly after {:?}, before its deadline",
                start.elapsed()
            );
        }
        Ok(())
    })();
    crate::cases::lifecycle::inject(ctx, &Fault::Resume)?;
    outcome?;
    pair.a.drain(ctx.drain_deadline())?;
    let got = ctx.completions(&pair.cq_a, 1)?;
    ctx.expect_status(&got[0], 2, WcStatus::WrFlushError)?;
    ctx.expect_quiet(&pair.cq_a, Duration::from_millis(20))
}
