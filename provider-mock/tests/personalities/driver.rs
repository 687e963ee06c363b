//! The driver.

use super::*;

/// Runs `body` on every row at once, each in a thread named after the device, and fails with the
/// message of every device that failed. Checks first that the table matches the default fabric.
pub(super) fn for_each_device(body: impl Fn(&Row) + Sync) {
    check_table();
    let failures: Vec<String> = thread::scope(|s| {
        let body = &body;
        let handles: Vec<_> = ROWS
            .iter()
            .map(|row| {
                thread::Builder::new()
                    .name(row.device.to_string())
                    .spawn_scoped(s, move || body(row))
                    .expect("spawn a device thread")
            })
            .collect();
        handles
            .into_iter()
            .zip(&ROWS)
            .filter_map(|(h, row)| {
                h.join()
                    .err()
                    .map(|p| format!("{}: {}", row.device, panic_text(&*p)))
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} device(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every personality has exactly one row, on the device the default fabric gives it.
pub(super) fn check_table() {
    let config = FabricConfig::default();
    for p in Personality::ALL {
        assert_eq!(
            ROWS.iter().filter(|r| r.personality == p).count(),
            1,
            "one row per personality: {p:?}"
        );
    }
    for row in &ROWS {
        let d = config
            .devices
            .iter()
            .find(|d| d.name == row.device)
            .unwrap_or_else(|| panic!("{}: not on the default fabric", row.device));
        assert_eq!(d.personality, row.personality, "{}", row.device);
    }
}

pub(super) fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// Joins a scoped thread, passing its panic on unchanged.
pub(super) fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}
