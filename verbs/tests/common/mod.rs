//! What the device tests share: which devices to run on, and where to write what they measured.
//!
//! The tests that need a real RDMA device run where `ANYVERBS_TEST_DEVICES` names devices (the
//! test bed sets it to `rxe0 siw0`: `testbed/run`). Anywhere else they say so and pass without
//! running — unless `ANYVERBS_REQUIRE_DEVICES=1`, which the test bed also sets, so that a test
//! bed that lost its devices fails instead of passing silently.

#![allow(dead_code)]

pub mod lifecycle;

use std::io::Write;
use std::time::{Duration, Instant};

/// The devices to run on, or `None` (after saying why) when this machine has none to offer.
pub fn devices_under_test(test: &str) -> Option<Vec<String>> {
    let devices: Vec<String> = std::env::var("ANYVERBS_TEST_DEVICES")
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if devices.is_empty() {
        if std::env::var("ANYVERBS_REQUIRE_DEVICES").is_ok_and(|v| v == "1") {
            panic!("{test}: ANYVERBS_REQUIRE_DEVICES=1 but ANYVERBS_TEST_DEVICES names no device");
        }
        eprintln!(
            "{test}: skipped, it needs an RDMA device; it runs in the test bed (testbed/run)"
        );
        return None;
    }
    Some(devices)
}

/// Appends a line to `<ANYVERBS_TESTBED_OUT>/<file>` (the facts the README quotes), and prints
/// it.
pub fn record(file: &str, line: &str) {
    println!("{line}");
    if let Ok(dir) = std::env::var("ANYVERBS_TESTBED_OUT") {
        let path = std::path::Path::new(&dir).join(file);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// A deadline `secs` from now.
pub fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyverbs_verbs::cm::{CmChannel, CmEventKind, CmId, ConnParam};
use anyverbs_verbs::context::Context;
use anyverbs_verbs::device::Transport;
use anyverbs_verbs::objects::{Access, Cq, Mr, Pd, Qp, QpCaps, QpState};
use anyverbs_verbs::raw::data_path::{RawCompletion, RecvWr, SendFlags, SendOp, SendWr};

/// The first IP address of the device's netdev.
pub fn address_of(ctx: &Context) -> IpAddr {
    let netdev = ctx.entry().netdev.clone().expect("the device has a netdev");
    anyverbs_verbs::netdev::addresses(&netdev)
        .unwrap()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{netdev} has no IP address"))
}

/// One end of a connection: its own context, PD, CQ, QP and a 4 KiB region.
pub struct End {
    pub ctx: Context,
    pub pd: Pd,
    pub cq: Arc<Cq>,
    pub qp: Qp,
    pub mr: Mr,
    pub id: CmId,
    pub channel: Arc<CmChannel>,
    /// What the peer's private data said.
    pub peer_data: Vec<u8>,
}

pub const CAPS: QpCaps = QpCaps {
    max_send_wr: 16,
    max_recv_wr: 16,
    max_send_sge: 1,
    max_recv_sge: 1,
    max_inline_data: 0,
};

fn resources(device: &str) -> (Context, Pd, Arc<Cq>, Mr) {
    let ctx = Context::open(device).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64, None).unwrap();
    let mr = Mr::alloc(&pd, 4096, Access::ALL).unwrap();
    (ctx, pd, cq, mr)
}

/// The connection parameters both sides use: the device's READ limits, seven retries.
pub fn param(ctx: &Context, qp_num: u32) -> ConnParam {
    let a = ctx.attributes().unwrap();
    ConnParam {
        qp_num,
        responder_resources: a.max_qp_rd_atom.min(16) as u8,
        initiator_depth: a.max_qp_init_rd_atom.min(16) as u8,
        retry_count: 7,
        rnr_retry_count: 7,
    }
}

/// Moves `qp` with the CM's attributes as far as the transport lets the application: INIT on
/// iWARP; INIT, RTR and RTS on InfiniBand/RoCE.
pub fn move_with_cm(transport: Transport, qp: &mut Qp, id: &CmId, upto: QpState) {
    let states: &[QpState] = match (transport, upto) {
        (Transport::Iwarp, _) | (_, QpState::Init) => &[QpState::Init],
        _ => &[QpState::Rtr, QpState::Rts],
    };
    for &state in states {
        let (attr, mask) = id.qp_attr(state).unwrap();
        qp.to_state_with(state, &attr, mask).unwrap();
    }
}

/// Posts a receive of the whole second half of the region.
pub fn post_recv(end: &End, wr_id: u64) {
    let sge = end.mr.sge(2048, 2048).unwrap();
    // SAFETY: the SGE lies in `end.mr`, which outlives the QP's use of it in these tests (the
    // QP is destroyed before the region: `End`'s fields drop in order, qp before mr).
    unsafe {
        end.qp.post_recv(&[RecvWr {
            wr_id,
            sges: &[sge],
        }])
    }
    .unwrap();
}

/// Sends `data` from the first half of the region, signaled.
pub fn send(end: &mut End, wr_id: u64, data: &[u8]) {
    end.mr.write(0, data).unwrap();
    let sge = end.mr.sge(0, data.len() as u32).unwrap();
    let wr = SendWr {
        wr_id,
        op: SendOp::Send,
        sges: &[sge],
        flags: SendFlags {
            signaled: true,
            ..SendFlags::default()
        },
    };
    // SAFETY: as in post_recv.
    unsafe { end.qp.post_send(&[wr]) }.unwrap();
}

/// Polls `cq` until `n` completions arrived or the deadline passed.
pub fn poll_n(cq: &Cq, n: usize, deadline: Instant) -> Vec<RawCompletion> {
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let _ = cq.poll(n - out.len(), &mut out).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

/// Connects a client to a server on `device` through the CM, with private data both ways; the
/// server runs on a thread. Returns (client, server), both in RTS with a receive posted.
pub fn connect_pair(
    device: &str,
    port: u16,
    request_data: &[u8],
    accept_data: &[u8],
) -> (End, End) {
    let transport = Context::open(device).unwrap().entry().transport;
    let server_ctx = Context::open(device).unwrap();
    let addr = SocketAddr::new(address_of(&server_ctx), port);
    let listen_channel = CmChannel::new().unwrap();
    let listener = listen_channel.create_id().unwrap();
    listener.bind(addr).unwrap();
    listener.listen(4).unwrap();
    let device_s = device.to_owned();
    let accept_data = accept_data.to_vec();
    let server = std::thread::spawn(move || {
        let request = listen_channel
            .expect(&listener, CmEventKind::ConnectRequest, within(10))
            .unwrap();
        let id = request.new_id.unwrap();
        let (ctx, pd, cq, mr) = resources(&device_s);
        let mut qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
        move_with_cm(transport, &mut qp, &id, QpState::Init);
        if transport == Transport::InfiniBand {
            move_with_cm(transport, &mut qp, &id, QpState::Rts);
        }
        let mut end = End {
            ctx,
            pd,
            cq,
            qp,
            mr,
            id,
            channel: listen_channel.clone(),
            peer_data: request.private_data,
        };
        post_recv(&end, 100);
        let p = param(&end.ctx, end.qp.qp_num());
        end.id.accept(&p, &accept_data).unwrap();
        let established = listen_channel
            .expect(&end.id, CmEventKind::Established, within(10))
            .unwrap();
        assert!(established.status == 0, "{established:?}");
        if transport == Transport::Iwarp {
            end.qp.record_state(QpState::Rts);
        }
        drop(listener);
        end
    });
    let channel = CmChannel::new().unwrap();
    let id = channel.create_id().unwrap();
    id.resolve_addr(None, addr, Duration::from_secs(2)).unwrap();
    channel
        .expect(&id, CmEventKind::AddrResolved, within(5))
        .unwrap();
    let (bound, _, _) = id.device().expect("resolved to a device");
    assert_eq!(bound, device, "the CM resolved {addr} to another device");
    id.resolve_route(Duration::from_secs(2)).unwrap();
    channel
        .expect(&id, CmEventKind::RouteResolved, within(5))
        .unwrap();
    let (ctx, pd, cq, mr) = resources(device);
    let mut qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
    move_with_cm(transport, &mut qp, &id, QpState::Init);
    let mut client = End {
        ctx,
        pd,
        cq,
        qp,
        mr,
        id,
        channel: channel.clone(),
        peer_data: Vec::new(),
    };
    post_recv(&client, 200);
    let p = param(&client.ctx, client.qp.qp_num());
    client.id.connect(&p, request_data).unwrap();
    match transport {
        Transport::InfiniBand => {
            let response = channel
                .expect(&client.id, CmEventKind::ConnectResponse, within(10))
                .unwrap();
            client.peer_data = response.private_data;
            move_with_cm(transport, &mut client.qp, &client.id, QpState::Rts);
            client.id.establish().unwrap();
        }
        _ => {
            let established = channel
                .expect(&client.id, CmEventKind::Established, within(10))
                .unwrap();
            client.peer_data = established.private_data;
            client.qp.record_state(QpState::Rts);
        }
    }
    let server = server.join().expect("the server side failed");
    (client, server)
}

/// The verbs and CM device files this process still has open (for a delete that does not
/// complete: something still holds the device).
pub fn open_rdma_files() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for fd in dir.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().into_owned();
                if t.contains("infiniband") || t.contains("rdma_cm") {
                    out.push(format!("fd {} -> {t}", fd.file_name().to_string_lossy()));
                }
            }
        }
    }
    out
}
