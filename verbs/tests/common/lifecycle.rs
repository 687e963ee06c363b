//! What the lifecycle tests share: turns (they delete shared devices), finding devices, the
//! spare netdevs, the test bed's `tb-device`, scratch netdevs.

#![allow(dead_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyverbs_verbs::device::{self, DeviceEntry};

pub static TURN: Mutex<()> = Mutex::new(());

pub fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn find(name: &str) -> Option<DeviceEntry> {
    device::devices()
        .unwrap()
        .into_iter()
        .find(|e| e.identity.name == name)
}

/// The spare netdev for `device` (`ANYVERBS_TEST_SPARES="rxe0=dummy2,siw0=dummy3"`).
pub fn spare_for(device: &str) -> Option<String> {
    std::env::var("ANYVERBS_TEST_SPARES")
        .ok()?
        .split(',')
        .find_map(|pair| {
            let (d, n) = pair.split_once('=')?;
            (d.trim() == device).then(|| n.trim().to_owned())
        })
}

pub fn wait_for_device(name: &str, deadline: Instant) -> DeviceEntry {
    loop {
        if let Some(e) = find(name) {
            return e;
        }
        assert!(Instant::now() < deadline, "{name} did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tb-device` (the test bed's lifecycle tool), when this runs in the test bed.
pub fn tb_device() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new("/opt/anyverbs/bin/tb-device");
    let found = [
        path.to_path_buf(),
        "/usr/local/bin/tb-device".into(),
        "/usr/bin/tb-device".into(),
    ]
    .into_iter()
    .find(|p| p.exists());
    if found.is_none() && std::env::var("ANYVERBS_TESTBED").is_ok_and(|v| v == "1") {
        panic!("in the test bed but tb-device is not installed");
    }
    found
}

/// Runs `/usr/bin/ip ARGS` (the guest's iproute2), panicking when it fails.
pub fn ip(args: &[&str]) {
    let status = std::process::Command::new("/usr/bin/ip")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ip {args:?}: {status}");
}

/// Deletes a software device (by name) and the netdev under it when dropped.
pub struct Scratch {
    pub device: Option<String>,
    pub netdev: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(entry) = self.device.as_deref().and_then(find) {
            let _ =
                anyverbs_verbs::netlink::delete_link(entry.identity.index, Duration::from_secs(20));
        }
        let _ = std::process::Command::new("/usr/bin/ip")
            .args(["link", "del", &self.netdev])
            .status();
    }
}

/// The other device under test, if there are two.
pub fn other_than(names: &[String], name: &str) -> Option<String> {
    names.iter().find(|n| *n != name).cloned()
}

/// Runs `tb-device ARGS`, returning how long it took and whether it succeeded.
pub fn tb(tool: &std::path::Path, args: &[&str]) -> (Duration, bool, String) {
    let started = Instant::now();
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap();
    (
        started.elapsed(),
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
