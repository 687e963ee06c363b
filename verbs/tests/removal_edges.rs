//! The edges of removal on real devices: a netdev with only a link-local address, a listener
//! released late, a device this process never used deleted from outside, two devices at once, a
//! monitor started while a delete waits, an unplug that deletes nothing, an unanswered connect
//! request. Like `lifecycle`, each test restores what it removed, and they take turns.

mod common;

use std::time::{Duration, Instant};

use anyverbs::DeviceEvent;
use anyverbs::kit::DeviceLife;
use anyverbs_verbs::context::Context;
use anyverbs_verbs::device::DeviceEntry;
use anyverbs_verbs::events::RemovalWatch;
use anyverbs_verbs::fault::{FaultInjector, Replug};
use anyverbs_verbs::monitor::{DeviceChange, Monitor};
use anyverbs_verbs::objects::Qp;
use common::lifecycle::*;
use common::*;

/// A netdev whose only address is the IPv6 link-local one every interface gets when it comes
/// up: such an address means nothing without its interface, so the watch must bind with the
/// netdev's scope (or say it cannot watch), never fail the device's opening.
#[test]
fn a_netdev_with_only_a_link_local_address_is_watched() {
    let Some(names) = devices_under_test("link-local removal watch") else {
        return;
    };
    let _turn = turn();
    for (kind, device, netdev) in [("rxe", "rxe9", "dummy9"), ("siw", "siw9", "dummy8")] {
        if !names.iter().any(|n| n.starts_with(kind)) {
            continue;
        }
        let mut scratch = Scratch {
            device: None,
            netdev: netdev.into(),
        };
        ip(&["link", "add", netdev, "type", "dummy"]);
        ip(&["link", "set", netdev, "up"]);
        let deadline = within(10);
        let address = loop {
            let addresses = anyverbs_verbs::netdev::addresses(netdev).unwrap();
            if let Some(a) = addresses.first() {
                break *a;
            }
            assert!(
                Instant::now() < deadline,
                "{netdev} got no link-local address"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            matches!(address, std::net::IpAddr::V6(a) if a.segments()[0] == 0xfe80),
            "{netdev}: {address}"
        );
        anyverbs_verbs::netlink::add_link(device, kind, netdev, Duration::from_secs(10)).unwrap();
        scratch.device = Some(device.into());
        let entry = wait_for_device(device, within(10));
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let watch = RemovalWatch::start(device, entry.identity.node_guid.0, netdev, life.clone());
        let watch = match watch {
            Ok(w) => w,
            Err(e) => panic!("{device} on {netdev} ({address} only): {e}"),
        };
        record(
            "facts.txt",
            &format!(
                "{device} on {netdev} with only {address}: removal watch {:?}",
                watch.as_ref().map(|w| w.address())
            ),
        );
        if watch.is_some() {
            // The watch sees the device go, and lets go of it so that the delete completes.
            let index = entry.identity.index;
            let delete = std::thread::spawn(move || {
                anyverbs_verbs::netlink::delete_link(index, Duration::from_secs(20))
            });
            assert_eq!(
                stream.recv(within(10)).unwrap(),
                DeviceEvent::DeviceRemoved,
                "{device}"
            );
            delete.join().unwrap().unwrap();
            scratch.device = None;
        }
        drop(watch);
        drop(scratch);
    }
}

/// A listener the application keeps after the removal watch let go of the device (and after the
/// janitor's look at the kernel's list): librdmacm's own context on the device must still be
/// closed once the listener goes, or the delete would wait forever.
#[test]
fn a_listener_released_late_does_not_keep_a_removed_device() {
    let Some(names) = devices_under_test("late listener") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let before = find(name).unwrap();
        let netdev = before.netdev.clone().unwrap();
        let address = anyverbs_verbs::netdev::addresses(&netdev).unwrap()[0];
        let channel = anyverbs_verbs::cm::CmChannel::new().unwrap();
        let listener = channel.create_id().unwrap();
        listener
            .bind(std::net::SocketAddr::new(address, 0))
            .unwrap();
        listener.listen(4).unwrap();
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let watch = RemovalWatch::start(name, before.identity.node_guid.0, &netdev, life.clone())
            .unwrap()
            .unwrap();
        let injector = FaultInjector::for_device(&before).unwrap();
        let mut injection = injector.unplug(Replug::SameNetdev, within(10)).unwrap();
        assert_eq!(stream.recv(within(10)).unwrap(), DeviceEvent::DeviceRemoved);
        drop(watch);
        let removal = channel
            .expect(
                &listener,
                anyverbs_verbs::cm::CmEventKind::DeviceRemoval,
                within(10),
            )
            .unwrap();
        assert_eq!(removal.token, listener.token());
        // Longer than the janitor's interval: it has looked, and found the device gone, while
        // the listener still held it.
        std::thread::sleep(anyverbs_verbs::cm::JANITOR_INTERVAL * 4);
        assert!(
            injection
                .wait(Instant::now() + Duration::from_millis(200))
                .is_err(),
            "{name}: the delete completed while a listener was bound to the device"
        );
        drop(listener);
        drop(channel);
        injection
            .wait(within(10))
            .unwrap_or_else(|e| panic!("{name}: {e}; still open here: {:?}", open_rdma_files()));
        wait_for_device(name, within(10));
    }
}

/// A process that used the CM on one device only, after librdmacm opened its own context on
/// every device (`rdma_get_devices`, which the removal watch and the janitor call): a delete of
/// the other device, from outside, must complete without this process doing anything — the
/// janitor has librdmacm let go. Repeated, since the janitor's look races the kernel's removal.
#[test]
fn a_device_this_process_never_used_can_be_deleted_from_outside() {
    let Some(names) = devices_under_test("unused device deleted from outside") else {
        return;
    };
    let Some(tool) = tb_device() else {
        eprintln!("unused device deleted from outside: skipped, tb-device is only in the test bed");
        return;
    };
    let _turn = turn();
    for used in &names {
        let Some(other) = other_than(&names, used) else {
            continue;
        };
        let before = find(used).unwrap();
        let address =
            anyverbs_verbs::netdev::addresses(before.netdev.as_deref().unwrap()).unwrap()[0];
        let channel = anyverbs_verbs::cm::CmChannel::new().unwrap();
        let id = channel.create_id().unwrap();
        id.bind(std::net::SocketAddr::new(address, 0)).unwrap();
        let mut times = Vec::new();
        for round in 0..6 {
            // As the removal watch does after a removal: librdmacm opens every device present.
            if round % 2 == 1 {
                let before = open_rdma_files().len();
                anyverbs_verbs::cm::forget_removed_devices();
                if round == 1 {
                    println!(
                        "librdmacm opened every device: verbs and CM files open here {before} -> {}",
                        open_rdma_files().len()
                    );
                }
            }
            let (took, ok, err) = tb(&tool, &["delete", &other]);
            assert!(
                ok,
                "{other} (round {round}, librdmacm opened it: {}): the delete from outside did not complete in {took:?}: {err}; open here: {:?}",
                round % 2 == 1,
                open_rdma_files()
            );
            times.push(took);
            let (_, ok, err) = tb(&tool, &["add-same", &other]);
            assert!(ok, "{other}: add-same: {err}");
            wait_for_device(&other, within(10));
        }
        record(
            "removal.txt",
            &format!(
                "{other}: deleted from outside while this process used the CM on {used} only: the delete returned after {times:?} (odd rounds: after librdmacm opened every device)"
            ),
        );
        drop(id);
        drop(channel);
    }
}

/// Two devices deleted at the same moment are both reported removed, then both added back,
/// each with its identity.
#[test]
fn the_monitor_reports_two_devices_removed_at_once() {
    let Some(names) = devices_under_test("monitor, two at once") else {
        return;
    };
    if names.len() < 2 {
        return;
    }
    let _turn = turn();
    let monitor = Monitor::start().unwrap();
    let changes = monitor.subscribe().unwrap();
    let befores: Vec<DeviceEntry> = names.iter().map(|n| find(n).unwrap()).collect();
    let mut injections: Vec<_> = befores
        .iter()
        .map(|b| {
            FaultInjector::for_device(b)
                .unwrap()
                .unplug(Replug::SameNetdev, within(10))
                .unwrap()
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let deadline = within(10);
    let mut pending: Vec<(String, &str)> = names
        .iter()
        .flat_map(|n| [(n.clone(), "removed"), (n.clone(), "added")])
        .collect();
    while !pending.is_empty() {
        let change = changes
            .recv(deadline)
            .unwrap_or_else(|e| panic!("{e}; still waiting for {pending:?}; seen {seen:?}"));
        let (name, what, identity) = match &change {
            DeviceChange::Removed(e) => (e.identity.name.clone(), "removed", &e.identity),
            DeviceChange::Added(e) => (e.identity.name.clone(), "added", &e.identity),
        };
        seen.push(format!("{what} {name} index {}", identity.index));
        let Some(at) = names.iter().position(|n| *n == name) else {
            continue;
        };
        let before = &befores[at];
        match what {
            "removed" => assert_eq!(*identity, before.identity, "{name} removed as it was"),
            _ => {
                assert!(identity.is_same_device(&before.identity));
                assert_ne!(identity.index, before.identity.index);
            }
        }
        let at = pending
            .iter()
            .position(|(n, w)| *n == name && *w == what)
            .unwrap_or_else(|| panic!("{what} {name} reported twice or out of order: {seen:?}"));
        assert!(
            what == "removed" || !pending.contains(&(name.clone(), "removed")),
            "{name} added before removed: {seen:?}"
        );
        pending.remove(at);
    }
    for i in &mut injections {
        i.wait(within(10)).unwrap();
    }
    std::thread::sleep(anyverbs_verbs::monitor::RESCAN_INTERVAL * 2);
    assert_eq!(changes.try_recv().unwrap(), None, "nothing more: {seen:?}");
    record("monitor.txt", &format!("two at once: {seen:?}"));
}

/// A monitor started while a device's delete waits for this process: the device is not
/// reported present, nor removed; once the process lets go, its return is reported once.
#[test]
fn a_monitor_started_during_a_pending_delete_reports_only_the_return() {
    let Some(names) = devices_under_test("monitor during a pending delete") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let before = ctx.entry().clone();
        let mut injection = FaultInjector::for_device(&before)
            .unwrap()
            .unplug(Replug::SameNetdev, within(10))
            .unwrap();
        let monitor = Monitor::start().unwrap();
        let changes = monitor.subscribe().unwrap();
        std::thread::sleep(anyverbs_verbs::monitor::RESCAN_INTERVAL * 2);
        assert_eq!(
            changes.try_recv().unwrap(),
            None,
            "{name}: nothing changes while the delete waits"
        );
        drop(ctx);
        injection.wait(within(10)).unwrap();
        match changes.recv(within(5)).unwrap() {
            DeviceChange::Added(e) => {
                assert!(e.identity.is_same_device(&before.identity));
                assert_ne!(e.identity.index, before.identity.index);
            }
            other => panic!("{name}: {other:?}"),
        }
        std::thread::sleep(anyverbs_verbs::monitor::RESCAN_INTERVAL * 2);
        assert_eq!(changes.try_recv().unwrap(), None, "{name}: added once");
    }
}

/// An unplug of a device whose delete is already under way, or by an injector made before the
/// device was re-added (the index it knows is gone), removes nothing: it fails.
#[test]
fn an_unplug_that_deletes_nothing_fails() {
    let Some(names) = devices_under_test("unplug that deletes nothing") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let before = find(name).unwrap();
        let injector = FaultInjector::for_device(&before).unwrap();
        let ctx = Context::open(name).unwrap();
        let mut first = injector.unplug(Replug::SameNetdev, within(10)).unwrap();
        let second = injector.unplug(Replug::Later, within(10));
        assert!(
            second.is_err(),
            "{name}: a second unplug while the first is pending: {second:?}"
        );
        drop(second);
        drop(ctx);
        first.wait(within(10)).unwrap();
        wait_for_device(name, within(10));
        // The injector still knows the old index.
        let stale = injector.unplug(Replug::Later, within(10));
        assert!(
            stale.is_err(),
            "{name}: an unplug by a stale index: {stale:?}"
        );
        drop(stale);
        let back = find(name).unwrap();
        assert!(
            back.identity.is_same_device(&before.identity),
            "{name} still there"
        );
    }
}

/// A connect request that is never answered: its ID dropped unanswered, or still queued when
/// the listener and its channel go. The peer learns at once that it was refused, and nothing
/// keeps the device: an unplug afterwards completes.
#[test]
fn an_unanswered_connect_request_is_refused_and_keeps_nothing() {
    let Some(names) = devices_under_test("unanswered connect request") else {
        return;
    };
    let _turn = turn();
    for (case, read_it) in [
        ("request read, ID dropped", true),
        ("request still queued, channel dropped", false),
    ] {
        for name in &names {
            let transport = find(name).unwrap().transport;
            let server_ctx = Context::open(name).unwrap();
            let addr = std::net::SocketAddr::new(address_of(&server_ctx), 7500 + read_it as u16);
            drop(server_ctx);
            let listen_channel = anyverbs_verbs::cm::CmChannel::new().unwrap();
            let listener = listen_channel.create_id().unwrap();
            listener.bind(addr).unwrap();
            listener.listen(4).unwrap();
            let channel = anyverbs_verbs::cm::CmChannel::new().unwrap();
            let id = channel.create_id().unwrap();
            id.resolve_addr(None, addr, Duration::from_secs(2)).unwrap();
            channel
                .expect(
                    &id,
                    anyverbs_verbs::cm::CmEventKind::AddrResolved,
                    within(5),
                )
                .unwrap();
            id.resolve_route(Duration::from_secs(2)).unwrap();
            channel
                .expect(
                    &id,
                    anyverbs_verbs::cm::CmEventKind::RouteResolved,
                    within(5),
                )
                .unwrap();
            let ctx = Context::open(name).unwrap();
            let pd = ctx.alloc_pd().unwrap();
            let cq = ctx.create_cq(8, None).unwrap();
            let mut qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
            move_with_cm(
                transport,
                &mut qp,
                &id,
                anyverbs_verbs::objects::QpState::Init,
            );
            id.connect(&param(&ctx, qp.qp_num()), b"hello").unwrap();
            let asked = Instant::now();
            let mut server = Some((listener, listen_channel));
            if read_it {
                let (listener, listen_channel) = server.as_ref().unwrap();
                let request = listen_channel
                    .expect(
                        listener,
                        anyverbs_verbs::cm::CmEventKind::ConnectRequest,
                        within(10),
                    )
                    .unwrap();
                drop(request);
            } else {
                assert!(
                    anyverbs_verbs::wait::readable(server.as_ref().unwrap().1.fd(), within(10))
                        .unwrap(),
                    "{name}: no connect request queued"
                );
                drop(server.take());
            }
            let answer = channel.next_event(within(20)).unwrap();
            let answered = asked.elapsed();
            let kind = answer.as_ref().map(|e| (e.kind, e.status));
            assert!(
                matches!(
                    kind,
                    Some((
                        anyverbs_verbs::cm::CmEventKind::Rejected
                            | anyverbs_verbs::cm::CmEventKind::ConnectError
                            | anyverbs_verbs::cm::CmEventKind::Unreachable,
                        _
                    ))
                ),
                "{name} ({case}): the client got {kind:?} after {answered:?}"
            );
            record(
                "facts.txt",
                &format!(
                    "{name}: connect request unanswered ({case}): the client got {kind:?} after {answered:?}"
                ),
            );
            drop((qp, cq, pd, ctx, id, channel, server));
            let mut injection = FaultInjector::for_device(&find(name).unwrap())
                .unwrap()
                .unplug(Replug::SameNetdev, within(10))
                .unwrap();
            injection.wait(within(10)).unwrap_or_else(|e| {
                panic!("{name} ({case}): {e}; open here: {:?}", open_rdma_files())
            });
            wait_for_device(name, within(10));
        }
    }
}
