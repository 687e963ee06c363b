//! `anyverbs-conform` handed plugins an operator has never seen and that misbehave: one that
//! kills the process when asked for its devices, one that calls a callback after returning, one
//! that ignores deadlines, one that panics, one that lies. The CLI must never crash, hang, leak
//! memory contents into a report, or say "ok" when it should not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TempPath, show, stderr, stdout};
use serde_json::Value;

/// The plugin cargo built from fixture `name` beside this test binary.
fn fixture(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe.parent().expect("the test binary's directory").join(
        anyverbs::plugin::plugin_file_name(&format!("anyverbs_fixture_{name}")),
    );
    assert!(path.is_file(), "no plugin at {}", path.display());
    path
}

/// Runs the binary with `args`, the environment's plugin search path set to `path_env` (or
/// unset), and `env` added.
fn conform_with(args: &[&str], path_env: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anyverbs-conform"));
    cmd.args(args);
    match path_env {
        Some(p) => cmd.env(anyverbs::plugin::PROVIDER_PATH_ENV, p),
        None => cmd.env_remove(anyverbs::plugin::PROVIDER_PATH_ENV),
    };
    cmd.envs(env.iter().copied());
    cmd.output().expect("cannot start anyverbs-conform")
}

fn conform(args: &[&str]) -> Output {
    conform_with(args, None, &[])
}

/// Runs `run --provider PLUGIN --format json ARGS` and returns the report, after checking that
/// the CLI itself ended normally with `code`.
fn report(plugin: &Path, args: &[&str], code: i32) -> (Value, Output) {
    let plugin = plugin.display().to_string();
    let mut all = vec!["run", "--provider", plugin.as_str(), "--format", "json"];
    all.extend_from_slice(args);
    let o = conform(&all);
    assert_eq!(o.status.code(), Some(code), "{}", show(&o));
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{}", show(&o)));
    (v, o)
}

#[test]
fn with_isolate_a_plugin_that_crashes_listing_its_devices_gets_a_report_not_a_dead_run() {
    let (v, _) = report(
        &fixture("devices_crash"),
        &["--isolate", "--case", "device::*"],
        1,
    );
    let aborted = v["aborted"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        aborted.contains("could not be made and its devices listed")
            && aborted.contains("crashed: killed by signal 6 (SIGABRT)"),
        "{aborted}"
    );
    let cases = v["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{v}");
    assert!(cases.iter().all(|c| c["outcome"] == "not_run"), "{v}");
    // The human form says so too.
    let plugin = fixture("devices_crash").display().to_string();
    let o = conform(&[
        "run",
        "--provider",
        &plugin,
        "--isolate",
        "--case",
        "device::*",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stdout(&o).contains("the run stopped: "), "{}", show(&o));
    assert!(
        stdout(&o)
            .trim_end()
            .ends_with("result: FAILED (the run stopped)"),
        "{}",
        show(&o)
    );
}

#[test]
fn with_isolate_a_plugin_that_calls_back_after_returning_cannot_touch_the_parent() {
    // Each child the plugin runs in may die of it; the parent lists every case and reports.
    let plugin = fixture("late_callback");
    let plugin_arg = plugin.display().to_string();
    let o = conform(&[
        "run",
        "--provider",
        &plugin_arg,
        "--isolate",
        "--case",
        "device::*",
        "--format",
        "json",
    ]);
    let code = o.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "the parent must end by itself: {}",
        show(&o)
    );
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{}", show(&o)));
    assert!(!v["cases"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn list_shows_a_plugin_that_crashes_and_goes_on_listing_the_others() {
    let dir = TempPath::new("hostile-plugins");
    std::fs::create_dir_all(&dir.0).unwrap();
    for name in ["devices_crash", "late_callback"] {
        let file = fixture(name);
        std::os::unix::fs::symlink(&file, dir.0.join(file.file_name().unwrap())).unwrap();
    }
    let mock = fixture("devices_crash")
        .parent()
        .unwrap()
        .join(anyverbs::plugin::plugin_file_name("anyverbs_provider_mock"));
    std::os::unix::fs::symlink(&mock, dir.0.join(mock.file_name().unwrap())).unwrap();
    let o = conform_with(&["list"], Some(&dir.0), &[]);
    let _ = std::fs::remove_dir_all(&dir.0);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    let crashed = out
        .lines()
        .find(|l| l.contains("libanyverbs_fixture_devices_crash.so"))
        .unwrap_or_else(|| panic!("the crashing plugin is not listed:\n{out}"));
    assert!(
        crashed.contains("crashed: killed by signal 6 (SIGABRT)"),
        "{crashed}"
    );
    // The plugins after it are listed: the one that calls back late (in its own child), and
    // the mock with its devices.
    assert!(
        out.lines()
            .any(|l| l.starts_with("anyverbs-fixture-late-callback ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("anyverbs-provider-mock ") && l.contains("ABI 4.0")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some("mockdead0")),
        "{out}"
    );
}

#[test]
fn a_plugin_that_prints_to_standard_output_spoils_no_document() {
    let plugin = fixture("sly").display().to_string();
    let chatty = [(anyverbs_fixture_sly::CHATTY, "1")];
    // In-process and isolated, the JSON report on standard output is the report alone; what the
    // plugin printed went to standard error (in-process, this process's; isolated, the child's).
    for isolate in [false, true] {
        let mut args = vec![
            "run",
            "--provider",
            plugin.as_str(),
            "--case",
            "device::listing",
            "--format",
            "json",
        ];
        if isolate {
            args.push("--isolate");
        }
        let o = conform_with(&args, None, &chatty);
        assert_eq!(o.status.code(), Some(0), "{args:?}\n{}", show(&o));
        let v: Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{args:?}: not a report ({e}):\n{}", show(&o)));
        assert_eq!(v["cases"][0]["outcome"], "passed", "{v}");
        if !isolate {
            assert!(
                stderr(&o).contains("sly: a provider is made"),
                "{}",
                show(&o)
            );
        }
    }
    // `list` examines it in a child, and shows its devices.
    let dir = TempPath::new("chatty-plugin");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = fixture("sly");
    std::os::unix::fs::symlink(&file, dir.0.join(file.file_name().unwrap())).unwrap();
    let o = conform_with(&["list"], Some(&dir.0), &chatty);
    let _ = std::fs::remove_dir_all(&dir.0);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("anyverbs-fixture-sly ") && l.contains("transport mock")),
        "{out}"
    );
}

#[test]
fn what_a_crashing_plugin_wrote_to_standard_error_reaches_the_reports_printable() {
    // Its last words (terminal escapes, a NUL, a bell) are shown in the reports, escaped: as the
    // loader shows a plugin's messages, so they cannot clear the operator's terminal.
    let plugin = fixture("sly").display().to_string();
    let loud = [(anyverbs_fixture_sly::CRASH_LOUDLY, "1")];
    let raw = |text: &str| text.chars().any(|c| c.is_control() && c != '\n');
    for format in ["human", "json", "junit"] {
        let o = conform_with(
            &[
                "run",
                "--provider",
                &plugin,
                "--isolate",
                "--case",
                "device::listing",
                "--format",
                format,
            ],
            None,
            &loud,
        );
        assert_eq!(o.status.code(), Some(1), "{format}\n{}", show(&o));
        let out = stdout(&o);
        assert!(out.contains("sly: going down"), "{format}\n{out}");
        assert!(!raw(&out), "{format}: raw control characters\n{out:?}");
        if format == "json" {
            let v: Value = serde_json::from_str(&out).unwrap();
            let aborted = v["aborted"].as_str().unwrap();
            assert!(!raw(aborted), "{aborted:?}");
            assert!(aborted.contains("\\u{1b}[2J"), "{aborted:?}");
            assert!(aborted.contains("after a NUL"), "{aborted:?}");
        }
    }
    // `list` shows it the same way.
    let dir = TempPath::new("loud-plugin");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = fixture("sly");
    std::os::unix::fs::symlink(&file, dir.0.join(file.file_name().unwrap())).unwrap();
    let o = conform_with(&["list"], Some(&dir.0), &loud);
    let _ = std::fs::remove_dir_all(&dir.0);
    let out = stdout(&o);
    assert!(out.contains("sly: going down"), "{out}");
    assert!(!raw(&out), "raw control characters\n{out:?}");
}

/// Two cases that wait on a CQ, which the `hang` plugin never returns from.
const WAITS: &str = "data::send_recv_*_sge*";

#[test]
fn in_process_a_case_that_ignores_its_deadline_is_hung_and_the_run_stops_at_once() {
    let started = Instant::now();
    let (v, o) = report(
        &fixture("hang"),
        &["--case", WAITS, "--timeout", "0.5", "--case-limit", "2"],
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}:\n{}",
        started.elapsed(),
        show(&o)
    );
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 2, "{v}");
    assert_eq!(cases[0]["outcome"], "hung", "{v}");
    assert!(
        cases[1..].iter().all(|c| c["outcome"] == "not_run"
            && c["reason"]
                .as_str()
                .unwrap()
                .starts_with("the run stopped before it")),
        "{v}"
    );
    let aborted = v["aborted"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        aborted.contains("hung: still running after 2 s"),
        "{aborted}"
    );
    assert_eq!(v["summary"]["hung"], 1, "{v}");
}

#[test]
fn with_isolate_a_case_that_ignores_its_deadline_is_hung_and_the_run_goes_on() {
    let started = Instant::now();
    let (v, o) = report(
        &fixture("hang"),
        &[
            "--isolate",
            "--case",
            WAITS,
            "--timeout",
            "0.5",
            "--case-limit",
            "2",
        ],
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}:\n{}",
        started.elapsed(),
        show(&o)
    );
    assert!(v.get("aborted").is_none(), "{v}");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 2, "{v}");
    assert!(cases.iter().all(|c| c["outcome"] == "hung"), "{v}");
}

#[test]
fn in_process_a_provider_that_hangs_listing_its_devices_gets_a_report() {
    let plugin = fixture("hang").display().to_string();
    let started = Instant::now();
    let o = conform_with(
        &[
            "run",
            "--provider",
            &plugin,
            "--case",
            "device::*",
            "--case-limit",
            "1",
            "--format",
            "json",
        ],
        None,
        &[(anyverbs_fixture_hang::HANG_IN_DEVICES, "1")],
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{}", show(&o));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    let aborted = v["aborted"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        aborted.contains("listing its devices did not finish within 1 s"),
        "{aborted}"
    );
}

#[test]
fn in_process_a_plugin_that_hangs_as_it_is_loaded_gets_a_report() {
    let plugin = fixture("hang").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_anyverbs-conform"))
        .args([
            "run",
            "--provider",
            &plugin,
            "--case",
            "device::*",
            "--case-limit",
            "1",
            "--format",
            "json",
        ])
        .env(anyverbs_fixture_hang::HANG_IN_ENTRY, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot start anyverbs-conform");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("still running after 30 s, killed:\n{}", show(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    let aborted = v["aborted"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        aborted.contains("loading") && aborted.contains("did not finish within 1 s"),
        "{aborted}"
    );
    let cases = v["cases"].as_array().unwrap();
    assert!(
        !cases.is_empty() && cases.iter().all(|c| c["outcome"] == "not_run"),
        "{v}"
    );
}

#[test]
fn with_isolate_a_provider_that_hangs_as_a_case_child_makes_it_is_hung_not_not_run() {
    // The parent's probe makes one provider (fine); each case's child makes more, and hangs.
    // The child stops before its case and says why: the parent must count that as the hang it
    // is, not as a case that did not run (which passes a run without --strict).
    let plugin = fixture("hang").display().to_string();
    let o = conform_with(
        &[
            "run",
            "--provider",
            &plugin,
            "--isolate",
            "--case",
            "device::listing",
            "--case-limit",
            "1",
            "--format",
            "json",
        ],
        None,
        &[(anyverbs_fixture_hang::HANG_IN_SECOND_NEW, "1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", show(&o)));
    let case = &v["cases"][0];
    assert_eq!(case["outcome"], "hung", "{v}");
    assert!(
        case["reason"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1 s"),
        "{v}"
    );
    assert_eq!(v["summary"]["hung"], 1, "{v}");
}

#[test]
fn a_plugin_panic_the_boundary_caught_is_reported_as_its_error_quietly() {
    let plugin = fixture("panicky").display().to_string();
    let o = conform_with(
        &["run", "--provider", &plugin],
        None,
        &[("RUST_BACKTRACE", "full")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot list its devices")
            && err.contains("the provider panicked at plugin-tests/fixtures/panicky/src/lib.rs:")
            && err.contains(anyverbs_fixture_panicky::DEVICES_PANIC),
        "{err}"
    );
    assert!(!err.contains("stack backtrace"), "{err}");
    assert!(!err.contains("thread '"), "{err}");
}

#[test]
fn a_lying_plugins_messages_reach_the_report_printable_and_bounded() {
    let plugin = fixture("lying").display().to_string();
    let o = conform(&[
        "run",
        "--provider",
        &plugin,
        "--device",
        "mock0",
        "--case",
        // Writes into a region, where the plugin's error message carries terminal escapes.
        "resources::memory_region_access",
        "--format",
        "junit",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let xml = String::from_utf8(o.stdout.clone()).expect("the report is UTF-8");
    assert!(xml.contains("<failure"), "{xml}");
    assert!(xml.contains("\\u{1b}[31mred alert"), "{xml}");
    assert!(
        !xml.contains('\u{1b}'),
        "a raw escape reached the report: {xml}"
    );
    assert!(!xml.contains("after the NUL"), "{xml}");
    // The refused device entries are named in the listing, the good ones listed.
    let dir = TempPath::new("lying-plugin");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = fixture("lying");
    std::os::unix::fs::symlink(&file, dir.0.join(file.file_name().unwrap())).unwrap();
    let o = conform_with(&["list"], Some(&dir.0), &[]);
    let _ = std::fs::remove_dir_all(&dir.0);
    let out = stdout(&o);
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("refused: "))
        .collect();
    assert_eq!(refused.len(), 6, "{out}");
    assert!(
        refused.iter().all(|l| l.contains("provider_devices")),
        "{out}"
    );
    assert!(refused.iter().any(|l| l.contains("listed twice")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().next() == Some("mockiw0")),
        "{out}"
    );
}
