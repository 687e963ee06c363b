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
    let replug = match how {
        "later" => Replug::Later,
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
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_takes_the_device_away_and_aborts",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{how}:{name}"))
        .status()
        .unwrap();
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
