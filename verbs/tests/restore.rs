//! A process that takes a device away and dies before putting it back — a crashed test case, an
//! `--isolate` child killed at its limit — must not leave the device missing for the next one:
//! the restorer process each injection starts puts it back on its own netdev, from wherever it
//! was (deleted, or added back on a spare netdev). The crashing process is this test binary
//! itself, run again as a child that injects and aborts.

mod common;

use std::time::{Duration, Instant};

use anyverbs_verbs::fault::{FaultInjector, Replug};
use common::lifecycle::*;
use common::*;

/// Set in the child: what to inject before aborting (`later` or `other`), and on which device.
const CHILD: &str = "ANYVERBS_RESTORE_CHILD";

/// The child's body: takes the device away and aborts without restoring anything.
#[test]
fn child_takes_the_device_away_and_aborts() {
    let Ok(what) = std::env::var(CHILD) else {
        return; // only as a child of the tests below
    };
    let (how, name) = what.split_once(':').expect("how:device");
    let entry = find(name).expect("the device is present");
    // "held": the device is open when the delete is asked for, so the delete is still waiting
    // for this very process when it aborts.
    let _held = (how == "held").then(|| anyverbs_verbs::device::open(name).expect("open"));
    let replug = match how {
        "later" | "held" => Replug::Later,
        _ => Replug::OtherNetdev(spare_for(name).expect("a spare netdev")),
    };
    let mut injection = FaultInjector::for_device(&entry)
        .unwrap()
        .unplug(replug.clone(), within(10))
        .unwrap();
    if replug != Replug::Later {
        // On the spare netdev before the crash.
        injection.wait(within(20)).unwrap();
    }
    std::process::abort();
}

fn crash_and_check(how: &str, name: &str) {
    let before = find(name).expect("the device is present");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_takes_the_device_away_and_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{how}:{name}"))
        .spawn()
        .unwrap();
    // A process that asked for the delete of a device it holds, from a thread of its own,
    // could never end: the delete waits for its files, which close only once it has ended.
    let deadline = within(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the child that took {name} away ({how}) has not ended 30 s after its abort"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the child was to abort");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Some(now) = find(name)
            && now.identity.is_same_device(&before.identity)
            && now.netdev == before.netdev
        {
            record(
                "restore.txt",
                &format!(
                    "{name}: put back home {:.2} s after its taker died ({how})",
                    started.elapsed().as_secs_f64()
                ),
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not back on {:?} 30 s after its taker died ({how}): {:?}",
            before.netdev,
            find(name).map(|e| e.netdev)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_device_unplugged_by_a_process_that_died_comes_back_home() {
    let Some(names) = devices_under_test("restore after a crash") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        crash_and_check("later", name);
    }
}

/// The taker dies while its own delete still waits for it (it holds the device): it must end
/// all the same, and the device come back once it has.
#[test]
fn a_device_held_by_a_process_that_died_during_its_delete_comes_back_home() {
    let Some(names) = devices_under_test("restore after a crash") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        crash_and_check("held", name);
    }
}

#[test]
fn a_device_moved_by_a_process_that_died_comes_back_home() {
    let Some(names) = devices_under_test("restore after a crash") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        if spare_for(name).is_none() {
            eprintln!("{name}: no spare netdev, skipped");
            continue;
        }
        crash_and_check("other", name);
    }
}

/// An unplug given up at once — its deadline already passed, or its injection dropped while
/// the delete waits for this very process — hands the delete to the restorer, which may be told
/// while the device is still listed at home (the child may not have sent the delete yet). It
/// must wait for the deleting child to end, then put the device home, not take the listing for
/// "home" and leave the device deleted for good.
#[test]
fn a_device_whose_unplug_was_given_up_at_once_comes_back_home() {
    let Some(names) = devices_under_test("restore after an unplug given up") else {
        return;
    };
    let _turn = turn();
    for name in &names {
        let before = find(name).expect("the device is present");
        let held = anyverbs_verbs::device::open(name).expect("open");
        let given_up = FaultInjector::for_device(&before)
            .unwrap()
            .unplug(Replug::Later, Instant::now());
        let how = if given_up.is_ok() {
            "dropped"
        } else {
            "deadline"
        };
        drop(given_up);
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(now) = find(name)
                && now.netdev == before.netdev
                && now.identity.is_same_device(&before.identity)
                // Deleted and added again (a new index), not seen before its delete.
                && now.identity.index != before.identity.index
            {
                record(
                    "restore.txt",
                    &format!(
                        "{name}: home {:.2} s after its unplug was given up ({how})",
                        started.elapsed().as_secs_f64()
                    ),
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is not back on {:?} 30 s after its unplug was given up ({how}): {:?}",
                before.netdev,
                find(name).map(|e| e.netdev)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
