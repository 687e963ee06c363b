//! Device removal and return on real devices, from inside the process that holds them: removal
//! is reported (the CM's DEVICE_REMOVAL through the removal watch), the kernel's delete completes
//! once everything is released — which shows that no context of the removed device stays open —
//! a device added again on its netdev is the same device under a new index, one added under the
//! same name on another netdev is not, and the monitor reports both with identities. Every test
//! restores the device it removed. The tests take turns: they delete shared devices.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::DeviceEvent;
use anyverbs::kit::DeviceLife;
use anyverbs_verbs::context::Context;
use anyverbs_verbs::events::{AsyncEventThread, RemovalWatch};
use anyverbs_verbs::fault::{FaultInjector, Replug};
use anyverbs_verbs::monitor::{DeviceChange, Monitor};
use anyverbs_verbs::objects::{Access, Mr, Qp};
use common::lifecycle::*;
use common::*;

#[test]
fn removal_is_reported_and_the_delete_completes_once_everything_is_released() {
    let Some(names) = devices_under_test("removal") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let before = ctx.entry().clone();
        let pd = ctx.alloc_pd().unwrap();
        let mr = Mr::alloc(&pd, 4096, Access::ALL).unwrap();
        let cq = ctx.create_cq(16, None).unwrap();
        let qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let async_thread =
            AsyncEventThread::spawn(ctx.sideway().clone(), life.clone(), Arc::new(|_| None))
                .unwrap();
        let watch = RemovalWatch::start(
            name,
            before.identity.node_guid.0,
            before.netdev.as_deref().unwrap(),
            life.clone(),
        )
        .unwrap()
        .expect("the netdev has an address");
        let monitor = Monitor::start().unwrap();
        let changes = monitor.subscribe().unwrap();
        let injector = FaultInjector::for_device(&before).unwrap();
        let mut injection = injector.unplug(Replug::Later, within(10)).unwrap();
        let unlisted = injection.started().elapsed();
        let event = stream.recv(within(10)).unwrap();
        let reported = injection.started().elapsed();
        assert_eq!(event, DeviceEvent::DeviceRemoved, "{name}");
        assert!(
            life.is_lost(),
            "{name}: the kit knows the device is lost when the event is seen"
        );
        // The monitor learns of it too, while the delete still waits for this process.
        let seen = loop {
            match changes.recv(within(10)).unwrap() {
                DeviceChange::Removed(e) if e.identity.name == *name => {
                    assert_eq!(e.identity, before.identity);
                    break injection.started().elapsed();
                }
                _ => {}
            }
        };
        // Holding objects, the delete waits.
        let held = injection.wait(Instant::now() + Duration::from_millis(500));
        assert!(
            held.is_err(),
            "{name}: the kernel's delete completed while the process still held objects"
        );
        injection.replug(Replug::SameNetdev);
        let released = Instant::now();
        drop(watch);
        drop(async_thread);
        drop((qp, mr, cq, pd));
        drop(ctx);
        let done = injection
            .wait(within(20))
            .unwrap_or_else(|e| panic!("{name}: {e}; still open here: {:?}", open_rdma_files()));
        let after_release = released.elapsed();
        assert_eq!(done.replugged_on.as_deref(), before.netdev.as_deref());
        let back = wait_for_device(name, within(10));
        assert!(
            back.identity.is_same_device(&before.identity),
            "{name}: same netdev, same device: {:?} vs {:?}",
            back.identity,
            before.identity
        );
        assert_ne!(
            back.identity.index, before.identity.index,
            "{name}: a re-added device takes a new index"
        );
        record(
            "removal.txt",
            &format!(
                "{name}: off the kernel's list after {unlisted:?}; DEVICE_REMOVAL reported after {reported:?}; the monitor saw it removed after {seen:?}, objects still held; delete completed {after_release:?} after the release ({:?} after it was asked for); back on {} as index {} (was {}), same identity",
                done.delete_took,
                back.netdev.as_deref().unwrap_or("?"),
                back.identity.index,
                before.identity.index
            ),
        );
    }
}

#[test]
fn the_same_name_on_another_netdev_is_another_device() {
    let Some(names) = devices_under_test("other netdev") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let Some(spare) = spare_for(name) else {
            panic!("{name}: no spare netdev in ANYVERBS_TEST_SPARES");
        };
        let before = find(name).unwrap();
        let home = before.netdev.clone().unwrap();
        let injector = FaultInjector::for_device(&before).unwrap();
        let mut injection = injector
            .unplug(Replug::OtherNetdev(spare.clone()), within(10))
            .unwrap();
        injection.wait(within(20)).unwrap();
        let moved = wait_for_device(name, within(10));
        assert_eq!(moved.netdev.as_deref(), Some(spare.as_str()));
        assert!(
            !moved.identity.is_same_device(&before.identity),
            "{name} on {spare} must not be taken for {name} on {home}"
        );
        assert_ne!(moved.identity.node_guid, before.identity.node_guid);
        record(
            "identity.txt",
            &format!(
                "{name} on {spare}: node_guid {} (on {home}: {}), index {}: another device",
                moved.identity.node_guid, before.identity.node_guid, moved.identity.index
            ),
        );
        // Put it back where it was.
        let mut back = FaultInjector::for_device(&moved)
            .unwrap()
            .unplug(Replug::OtherNetdev(home.clone()), within(10))
            .unwrap();
        back.wait(within(20)).unwrap();
        let restored = wait_for_device(name, within(10));
        assert!(
            restored.identity.is_same_device(&before.identity),
            "{name} restored on {home}"
        );
    }
}

#[test]
fn the_monitor_reports_removal_and_return_with_identities() {
    let Some(names) = devices_under_test("monitor") else {
        return;
    };
    let _turn = turn();
    let monitor = Monitor::start().unwrap();
    let changes = monitor.subscribe().unwrap();
    for name in &names {
        let before = find(name).unwrap();
        let injector = FaultInjector::for_device(&before).unwrap();
        let mut injection = injector.unplug(Replug::SameNetdev, within(10)).unwrap();
        let started = injection.started();
        let mut removed_after = None;
        let mut added_after = None;
        while removed_after.is_none() || added_after.is_none() {
            match changes.recv(within(10)).unwrap() {
                DeviceChange::Removed(e) if e.identity.name == *name => {
                    assert_eq!(
                        e.identity, before.identity,
                        "removed with the identity it had"
                    );
                    removed_after = Some(started.elapsed());
                }
                DeviceChange::Added(e) if e.identity.name == *name => {
                    assert!(removed_after.is_some(), "{name}: added before removed");
                    assert!(e.identity.is_same_device(&before.identity));
                    assert_ne!(e.identity.index, before.identity.index);
                    added_after = Some(started.elapsed());
                }
                other => println!("monitor: {other:?}"),
            }
        }
        let done = injection.wait(within(10)).unwrap();
        record(
            "monitor.txt",
            &format!(
                "{name}: reset by delete+add: monitor saw it removed after {:?} and added after {:?} (delete took {:?}); the monitor learns by uevents plus a netlink rescan every {:?}",
                removed_after.unwrap(),
                added_after.unwrap(),
                done.delete_took,
                anyverbs_verbs::monitor::RESCAN_INTERVAL
            ),
        );
    }
}

#[test]
fn a_port_flap_takes_the_port_down_and_brings_it_back() {
    let Some(names) = devices_under_test("port flap") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let _async =
            AsyncEventThread::spawn(ctx.sideway().clone(), life.clone(), Arc::new(|_| None))
                .unwrap();
        let injector = FaultInjector::for_device(ctx.entry()).unwrap();
        injector.port_flap(Duration::from_millis(300)).unwrap();
        let deadline = within(5);
        while !ctx.port(1).unwrap().active {
            assert!(
                Instant::now() < deadline,
                "{name}: port 1 did not come back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut seen = Vec::new();
        while let Some(e) = stream.try_recv().unwrap() {
            seen.push(e.to_string());
        }
        record(
            "flap.txt",
            &format!(
                "{name}: netdev down 300 ms then up: async events {seen:?}; port active again"
            ),
        );
    }
}

#[test]
fn an_injection_dropped_before_its_replug_puts_the_device_back() {
    let Some(names) = devices_under_test("restore") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let before = find(name).unwrap();
        let injection = FaultInjector::for_device(&before)
            .unwrap()
            .unplug(Replug::Later, within(10))
            .unwrap();
        // A case that fails here drops its injection without putting the device back.
        drop(injection);
        let back = wait_for_device(name, within(10));
        assert!(
            back.identity.is_same_device(&before.identity),
            "{name} restored on its own netdev"
        );
        assert_eq!(back.netdev, before.netdev);
    }
}

#[test]
fn a_delete_by_another_process_is_reported_and_completes_once_released() {
    let Some(names) = devices_under_test("delete from outside") else {
        return;
    };
    let Some(tool) = tb_device() else {
        eprintln!("delete from outside: skipped, tb-device is only in the test bed");
        return;
    };
    let _turn = turn();
    for name in &names {
        let ctx = Context::open(name).unwrap();
        let before = ctx.entry().clone();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(8, None).unwrap();
        let qp = Qp::create_rc(&pd, &cq, &cq, CAPS).unwrap();
        let life = DeviceLife::new();
        let stream = life.subscribe().unwrap();
        let watch = RemovalWatch::start(
            name,
            before.identity.node_guid.0,
            before.netdev.as_deref().unwrap(),
            life.clone(),
        )
        .unwrap()
        .unwrap();
        // The operator deletes the device while this process holds it.
        let asked = Instant::now();
        let mut operator = std::process::Command::new(&tool)
            .args(["delete", name])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert_eq!(
            stream.recv(within(10)).unwrap(),
            DeviceEvent::DeviceRemoved,
            "{name}"
        );
        let reported = asked.elapsed();
        drop((qp, cq, pd, watch, ctx));
        let status = loop {
            if let Some(status) = operator.try_wait().unwrap() {
                break status;
            }
            assert!(
                asked.elapsed() < Duration::from_secs(30),
                "{name}: the operator's delete did not return"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            status.success(),
            "{name}: tb-device delete failed: {status}"
        );
        let deleted = asked.elapsed();
        let added = std::process::Command::new(&tool)
            .args(["add-same", name])
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "{name}: tb-device add-same: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let back = wait_for_device(name, within(10));
        assert!(back.identity.is_same_device(&before.identity));
        record(
            "removal.txt",
            &format!(
                "{name}: deleted by another process (tb-device): reported here after {reported:?}; its delete returned after {deleted:?}, once this process let go"
            ),
        );
    }
}
