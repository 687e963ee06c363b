//! A panic the plugin side catches at the boundary reaches the program as an error saying
//! where the provider panicked — and nothing else: no "panicked at" line, no backtrace, even
//! with `RUST_BACKTRACE` set. A panic nobody catches, on a thread of the provider's own, is
//! still printed.
//!
//! The plugin prints through its own copy of the standard library, straight to file descriptor
//! 2, so the check runs the calls in a child process (this test binary, running the test
//! `child_calls_the_panicking_plugin` alone) and reads what it wrote.

use std::process::Command;

use anyverbs::plugin::Plugin;
use anyverbs::{Fault, Provider};
use anyverbs_fixture_panicky::{DEVICES_PANIC, INJECT_PANIC, THREAD_DEVICE, THREAD_PANIC};
use anyverbs_plugin_tests::fixture;

/// Set in the child's environment: only then does the child's test do anything.
const CHILD: &str = "ANYVERBS_QUIET_PANICS_CHILD";

#[test]
fn child_calls_the_panicking_plugin() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let provider = Plugin::load(fixture("panicky"))
        .and_then(|p| p.instantiate())
        .unwrap_or_else(|e| panic!("{e}"));
    let e = provider.devices().unwrap_err();
    println!("ERROR {e}");
    let e = provider.inject("mock0", &Fault::Unplug).unwrap_err();
    println!("ERROR {e}");
    let e = provider.inject(THREAD_DEVICE, &Fault::Unplug).unwrap_err();
    println!("ERROR {e}");
}

#[test]
fn a_caught_panic_is_its_error_alone_and_an_escaping_one_is_still_printed() {
    let exe = std::env::current_exe().expect("this test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "child_calls_the_panicking_plugin",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "full")
        .output()
        .expect("the child runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Each error is on a line of its own, the first one after libtest's "test ... " prefix.
    let errors: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.find("ERROR ").map(|at| &l[at..]))
        .collect();
    assert_eq!(errors.len(), 3, "{stdout}");
    for (line, panic) in errors.iter().zip([DEVICES_PANIC, INJECT_PANIC]) {
        assert!(
            line.contains(
                "other: the provider panicked at plugin-tests/fixtures/panicky/src/lib.rs:"
            ) && line.contains(panic),
            "{line}"
        );
    }
    // Caught: said once, as the error; never printed.
    for panic in [DEVICES_PANIC, INJECT_PANIC] {
        assert!(
            !stderr.contains(panic),
            "printed although caught:\n{stderr}"
        );
    }
    // Not caught, on the provider's own thread: printed, with its backtrace as asked.
    let printed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("panicked at"))
        .collect();
    assert_eq!(printed.len(), 1, "{stderr}");
    assert!(stderr.contains(THREAD_PANIC), "{stderr}");
    assert!(stderr.contains("stack backtrace:"), "{stderr}");
}

#[test]
fn a_deferred_panic_report_that_cannot_be_printed_does_not_abort_the_process() {
    // Standard error is a pipe nobody reads: printing the report of the provider thread's
    // panic fails (EPIPE; Rust programs ignore SIGPIPE). The default hook ignores that; the
    // deferring one must too, rather than panic inside a panic hook or a thread-local's
    // destructor, which aborts the whole process.
    let exe = std::env::current_exe().expect("this test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_calls_the_panicking_plugin",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the child runs");
    drop(child.stderr.take());
    let out = child.wait_with_output().expect("the child ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert_eq!(stdout.matches("ERROR ").count(), 3, "{stdout}");
}
