//! The verbs plumbing on real devices (rxe0 and siw0 in the test bed): discovery and identity,
//! limits, objects and state moves, post and poll, the connection manager, the async event
//! thread. Each test runs on every device `ANYVERBS_TEST_DEVICES` names, and says it was skipped
//! where there is none (see `common`).

mod common;

use std::time::{Duration, Instant};

use anyverbs::DeviceEvent;
use anyverbs::kit::DeviceLife;
use anyverbs_verbs::cm::{CmChannel, CmEventKind};
use anyverbs_verbs::context::Context;
use anyverbs_verbs::device::{self, Transport};
use anyverbs_verbs::events::{AsyncEventThread, RemovalWatch};
use anyverbs_verbs::objects::{Access, CqKind, Mr, Qp, QpState};
use anyverbs_verbs::raw::data_path::{RecvWr, SendFlags, SendOp, SendWr, WC_FLUSH_ERR, WC_SUCCESS};
use common::*;

#[test]
fn discovery_gives_each_device_its_identity_in_the_order_rdma_dev_show_prints() {
    let Some(names) = devices_under_test("discovery") else {
        return;
    };
    let all = device::devices().unwrap();
    for name in &names {
        let entry = all
            .iter()
            .find(|e| &e.identity.name == name)
            .unwrap_or_else(|| panic!("{name} not discovered among {all:?}"));
        let (node, sys) = device::sysfs_guids(entry).expect("sysfs has the GUIDs");
        assert_eq!(
            entry.identity.node_guid, node,
            "node GUID as /sys/class/infiniband/{name}/node_guid prints it"
        );
        assert_eq!(
            entry.identity.sys_image_guid, sys,
            "system-image GUID as sysfs prints it"
        );
        assert!(!entry.identity.node_guid.is_zero());
        let netdev = entry
            .netdev
            .clone()
            .expect("a software device has a netdev");
        let expected = if name.starts_with("siw") {
            Transport::Iwarp
        } else {
            Transport::InfiniBand
        };
        assert_eq!(entry.transport, expected);
        assert_eq!(
            entry.identity.pci_address, None,
            "a software device has no PCI function"
        );
        // The drain profile comes from the driver (here its vendor id), not the name.
        let profile = entry.drain_profile();
        assert_eq!(
            profile.name,
            if name.starts_with("siw") {
                "siw"
            } else {
                "rxe"
            },
            "{name}"
        );
        let same = entry.identity.is_same_device(&entry.identity);
        assert!(same, "a device is the same device as itself");
        record(
            "identity.txt",
            &format!(
                "{name}: index {} node_guid {} sys_image_guid {} netdev {netdev} vendor {:#x} part {:#x} transport {:?} driver {:?}",
                entry.identity.index,
                entry.identity.node_guid,
                entry.identity.sys_image_guid,
                entry.identity.vendor_id,
                entry.identity.vendor_part_id,
                entry.transport,
                entry.kernel_driver
            ),
        );
    }
}

#[test]
fn limits_include_the_read_credits_and_ports_are_active_ethernet() {
    let Some(names) = devices_under_test("limits") else {
        return;
    };
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let a = ctx.attributes().unwrap();
        assert!(
            a.ports >= 1 && a.max_qp > 0 && a.max_qp_wr > 0 && a.max_cqe > 0,
            "{a:?}"
        );
        assert!(
            a.max_qp_rd_atom > 0 && a.max_qp_init_rd_atom > 0,
            "{name}: READ credits {a:?}"
        );
        let p = ctx.port(1).unwrap();
        assert!(p.active && p.ethernet, "{name}: port 1 {p:?}");
        let limits = a.limits(&p, 64);
        assert_eq!(
            (limits.max_qp, limits.max_msg_size, limits.max_inline_data),
            (a.max_qp, p.max_msg_size, 64)
        );
        record(
            "limits.txt",
            &format!(
                "{name}: max_qp {} max_qp_wr {} max_sge {} max_cqe {} max_mr_size {} max_qp_rd_atom {} max_qp_init_rd_atom {} atomics {} mtu {} max_msg {} gids {}",
                a.max_qp,
                a.max_qp_wr,
                a.max_sge,
                a.max_cqe,
                a.max_mr_size,
                a.max_qp_rd_atom,
                a.max_qp_init_rd_atom,
                a.atomics,
                p.active_mtu,
                p.max_msg_size,
                p.gid_table_len
            ),
        );
    }
}

#[test]
fn a_missing_device_is_not_found() {
    let Some(_) = devices_under_test("missing device") else {
        return;
    };
    let e = Context::open("nosuchdev9").unwrap_err();
    assert_eq!(e.kind(), anyverbs::ErrorKind::NotFound, "{e}");
}

#[test]
fn objects_are_made_and_a_receive_flushes_when_the_qp_moves_to_error() {
    let Some(names) = devices_under_test("objects") else {
        return;
    };
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let mr = Mr::alloc(&pd, 8192, Access::ALL).unwrap();
        assert!(mr.lkey() != 0 || mr.rkey() != 0);
        let channel = ctx.create_channel().unwrap();
        let cq = ctx.create_cq(32, Some(&channel)).unwrap();
        assert!(cq.capacity() >= 32);
        let mut qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
        assert!(
            qp.caps().max_recv_wr >= CAPS.max_recv_wr && qp.caps().max_send_wr >= CAPS.max_send_wr
        );
        record(
            "objects.txt",
            &format!(
                "{name}: CQ verbs {:?}, capacity {}, QP granted {:?}",
                cq.kind(),
                cq.capacity(),
                qp.caps()
            ),
        );
        qp.to_init(1, Access::ALL).unwrap();
        assert_eq!(qp.state(), QpState::Init);
        // A send in INIT is refused at once. Where the driver says which WR failed, the WRs
        // before it are posted; where it does not (rxe: its doorbell fails after the WRs are in
        // the ring), the whole batch counts as posted and must flush in ERROR.
        let sge = mr.sge(0, 64).unwrap();
        let send = SendWr {
            wr_id: 1,
            op: SendOp::Send,
            sges: &[sge],
            flags: SendFlags {
                signaled: true,
                ..SendFlags::default()
            },
        };
        // SAFETY: the SGE lies in `mr`, which outlives the QP.
        let refused = unsafe { qp.post_send(&[send, send]) }.unwrap_err();
        let counted_as_posted = refused.accepted;
        record(
            "objects.txt",
            &format!(
                "{name}: send in INIT refused, {counted_as_posted} of 2 counted as posted: {}",
                refused.error
            ),
        );
        let rsge = mr.sge(4096, 4096).unwrap();
        // SAFETY: as above.
        unsafe {
            qp.post_recv(&[
                RecvWr {
                    wr_id: 41,
                    sges: &[rsge],
                },
                RecvWr {
                    wr_id: 42,
                    sges: &[rsge],
                },
            ])
        }
        .unwrap();
        cq.arm(false).unwrap();
        qp.to_state(QpState::Error).unwrap();
        let flushed = poll_n(&cq, 2, within(5));
        assert_eq!(
            flushed.len(),
            2,
            "{name}: both receives flush within 5 s: {flushed:?}"
        );
        assert_eq!(
            flushed.iter().map(|c| c.wr_id).collect::<Vec<_>>(),
            vec![41, 42]
        );
        assert!(
            flushed
                .iter()
                .all(|c| c.status == WC_FLUSH_ERR && c.qp_num == qp.qp_num()),
            "{flushed:?}"
        );
        // The armed CQ's channel fired for the flush.
        let fired = channel
            .next_event(Instant::now() + Duration::from_secs(2))
            .unwrap();
        assert_eq!(
            fired,
            Some(cq.key()),
            "{name}: the completion channel names the CQ"
        );
        qp.to_state(QpState::Reset).unwrap();
        qp.to_init(1, Access::ALL).unwrap();
        if name.starts_with("siw") {
            assert_eq!(
                cq.kind(),
                CqKind::Basic,
                "siw answers EOPNOTSUPP to ibv_create_cq_ex"
            );
        }
    }
}

#[test]
fn the_cm_connects_with_private_data_sends_both_ways_and_disconnects() {
    let Some(names) = devices_under_test("cm") else {
        return;
    };
    for (i, name) in names.iter().enumerate() {
        let started = Instant::now();
        let (mut client, mut server) =
            connect_pair(name, 18515 + i as u16, b"hello from the client", b"welcome");
        assert!(
            server.peer_data.starts_with(b"hello from the client"),
            "{name}: {:?}",
            server.peer_data
        );
        assert!(
            client.peer_data.starts_with(b"welcome"),
            "{name}: {:?}",
            client.peer_data
        );
        assert_eq!(
            (client.qp.state(), server.qp.state()),
            (QpState::Rts, QpState::Rts)
        );
        send(&mut client, 1, b"ping");
        send(&mut server, 2, b"pong");
        let c = poll_n(&client.cq, 2, within(10));
        let s = poll_n(&server.cq, 2, within(10));
        assert!(
            c.iter().chain(&s).all(|c| c.status == WC_SUCCESS),
            "{name}: {c:?} {s:?}"
        );
        assert_eq!(
            (c.len(), s.len()),
            (2, 2),
            "{name}: a send and a receive each side"
        );
        let mut got = [0u8; 4];
        server.mr.read(2048, &mut got).unwrap();
        assert_eq!(&got, b"ping");
        client.mr.read(2048, &mut got).unwrap();
        assert_eq!(&got, b"pong");
        record(
            "cm.txt",
            &format!(
                "{name}: connect + one send each way: {:?}",
                started.elapsed()
            ),
        );
        // Modify to every state the transport allows by hand.
        if client.ctx.entry().transport == Transport::InfiniBand {
            client.qp.to_state(QpState::Sqd).unwrap();
            client.qp.to_state(QpState::Rts).unwrap();
        }
        // The initiator's DREQ gives the peer Disconnected; the peer's own disconnect answers it
        // (on InfiniBand/RoCE with the DREP the initiator waits for), and then the initiator
        // gets Disconnected too.
        use anyverbs_verbs::cm::CmEventKind::Disconnected;
        let asked = Instant::now();
        client.id.disconnect().unwrap();
        let told = server
            .channel
            .expect(&server.id, Disconnected, within(10))
            .unwrap();
        assert_eq!(
            anyverbs_verbs::events::translate_cm(told.kind, server.qp.qp_num(), 1),
            Some(DeviceEvent::Disconnected {
                qp_num: server.qp.qp_num()
            }),
            "the CM's DISCONNECTED is the core's lifecycle event"
        );
        server.id.disconnect().unwrap();
        client
            .channel
            .expect(&client.id, Disconnected, within(10))
            .unwrap();
        record(
            "cm.txt",
            &format!("{name}: disconnect, both sides told: {:?}", asked.elapsed()),
        );
        client.qp.to_state(QpState::Error).unwrap();
        server.qp.to_state(QpState::Error).unwrap();
    }
}

#[test]
fn a_rejected_request_carries_the_reject_data() {
    let Some(names) = devices_under_test("reject") else {
        return;
    };
    for (i, name) in names.iter().enumerate() {
        use anyverbs_verbs::cm::{CmChannel, CmEventKind, ConnParam};
        let ctx = Context::open(name).unwrap();
        let addr = std::net::SocketAddr::new(address_of(&ctx), 18600 + i as u16);
        let lc = CmChannel::new().unwrap();
        let listener = lc.create_id().unwrap();
        listener.bind(addr).unwrap();
        listener.listen(1).unwrap();
        let cc = CmChannel::new().unwrap();
        let id = cc.create_id().unwrap();
        id.resolve_addr(None, addr, Duration::from_secs(2)).unwrap();
        cc.expect(&id, CmEventKind::AddrResolved, within(5))
            .unwrap();
        id.resolve_route(Duration::from_secs(2)).unwrap();
        cc.expect(&id, CmEventKind::RouteResolved, within(5))
            .unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(8, None).unwrap();
        let mut qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
        let (attr, mask) = id.qp_attr(QpState::Init).unwrap();
        qp.to_state_with(QpState::Init, &attr, mask).unwrap();
        let p = ConnParam {
            qp_num: qp.qp_num(),
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 7,
        };
        id.connect(&p, b"may I").unwrap();
        let request = lc
            .expect(&listener, CmEventKind::ConnectRequest, within(10))
            .unwrap();
        request
            .new_id
            .as_ref()
            .unwrap()
            .reject(b"no, go away")
            .unwrap();
        let rejected = cc
            .next_event(within(10))
            .unwrap()
            .expect("an answer to the request");
        assert_eq!(rejected.kind, CmEventKind::Rejected, "{name}: {rejected:?}");
        assert!(
            rejected.private_data.starts_with(b"no, go away"),
            "{name}: {:?}",
            rejected.private_data
        );
        record(
            "cm.txt",
            &format!(
                "{name}: reject status {} with {} bytes of private data",
                rejected.status,
                rejected.private_data.len()
            ),
        );
    }
}

#[test]
fn the_async_event_thread_and_the_removal_watch_start_and_stop() {
    let Some(names) = devices_under_test("event threads") else {
        return;
    };
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let thread = AsyncEventThread::spawn(
            ctx.sideway().clone(),
            life.clone(),
            std::sync::Arc::new(|_| None),
        )
        .unwrap();
        let entry = ctx.entry().clone();
        let watch = RemovalWatch::start(
            name,
            entry.identity.node_guid.0,
            entry.netdev.as_deref().unwrap(),
            life.clone(),
        )
        .unwrap()
        .expect("the device's netdev has an address");
        assert_eq!(watch.address(), address_of(&ctx));
        let stopping = Instant::now();
        drop(thread);
        drop(watch);
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "threads stop promptly"
        );
        assert!(
            stream.try_recv().unwrap().is_none(),
            "no event without a cause"
        );
    }
}

#[test]
fn each_fault_says_whether_it_can_be_injected() {
    use anyverbs_verbs::fault::{ALL_FAULTS, FaultInjector};
    let Some(names) = devices_under_test("fault availability") else {
        return;
    };
    let all = device::devices().unwrap();
    for name in &names {
        let entry = all.iter().find(|e| &e.identity.name == name).unwrap();
        let injector = FaultInjector::for_device(entry).expect("rxe and siw take faults, as root");
        let spare = if name.starts_with("siw") {
            "dummy3"
        } else {
            "dummy2"
        };
        for kind in ALL_FAULTS {
            let available = injector.available(kind, Some(spare));
            assert!(available.is_ok(), "{name}: {kind:?}: {available:?}");
            record("faults.txt", &format!("{name}: {kind:?}: available"));
        }
        assert!(
            injector
                .available(anyverbs_verbs::fault::FaultKind::ReplugOther, None)
                .is_err()
        );
    }
}

/// Two IDs on one channel: waiting for the second one's event does not lose the first one's
/// (it is held for the next wait about that ID).
#[test]
fn expect_holds_the_events_of_other_ids() {
    let Some(names) = devices_under_test("expect on a shared channel") else {
        return;
    };
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let addr = std::net::SocketAddr::new(address_of(&ctx), 7600);
        let channel = CmChannel::new().unwrap();
        let first = channel.create_id().unwrap();
        let second = channel.create_id().unwrap();
        first
            .resolve_addr(None, addr, Duration::from_secs(2))
            .unwrap();
        // The first ID's event is queued before the second asks.
        assert!(anyverbs_verbs::wait::readable(channel.fd(), within(5)).unwrap());
        second
            .resolve_addr(None, addr, Duration::from_secs(2))
            .unwrap();
        let e = channel
            .expect(&second, CmEventKind::AddrResolved, within(5))
            .unwrap_or_else(|e| panic!("{name}: the second ID's wait: {e}"));
        assert_eq!(e.token, second.token());
        let e = channel
            .expect(&first, CmEventKind::AddrResolved, within(5))
            .unwrap_or_else(|e| panic!("{name}: the first ID's event was lost: {e}"));
        assert_eq!(e.token, first.token());
        assert!(channel.next_event(Instant::now()).unwrap().is_none());
    }
}
