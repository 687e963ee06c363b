//! Runs the built `anyverbs-conform` binary against the built-in mock provider and checks its
//! output and exit status.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with `args`.
fn conform(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anyverbs-conform"))
        .args(args)
        .output()
        .expect("cannot start anyverbs-conform")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is not UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is not UTF-8")
}

/// Everything about a run, for assertion messages.
fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// A file path unique to this process and test, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!(
            "anyverbs-conform-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("temp path is not UTF-8")
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.0)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.0.display()))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a line is the human summary line `N passed, N failed, N not run`; returns the counts.
/// The failed count may be broken down in parentheses (`3 failed (1 crash, 1 unexpected pass)`)
/// and expected failures counted at the end (`, 2 expected failures`); those are left out.
fn summary_counts(line: &str) -> Option<(usize, usize, usize)> {
    let line = match (line.find(" ("), line.find("), ")) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &line[..open], &line[close + 1..])
        }
        _ => line.to_string(),
    };
    let mut parts = line.split(", ");
    let mut count =
        |suffix: &str| -> Option<usize> { parts.next()?.strip_suffix(suffix)?.parse().ok() };
    let counts = (count(" passed")?, count(" failed")?, count(" not run")?);
    match parts.next() {
        None => Some(counts),
        Some(rest)
            if rest.ends_with(" expected failure") || rest.ends_with(" expected failures") =>
        {
            parts.next().is_none().then_some(counts)
        }
        Some(_) => None,
    }
}

/// The single summary line of a human output.
fn summary_of(text: &str) -> (usize, usize, usize) {
    let found: Vec<_> = text.lines().filter_map(summary_counts).collect();
    assert_eq!(found.len(), 1, "expected one summary line in:\n{text}");
    found[0]
}

/// Runs with `--format json` to standard output, checks that stdout is exactly one JSON
/// document, and returns it with the exit code.
fn run_json(extra: &[&str]) -> (Value, i32, Output) {
    let mut args = vec!["run", "--provider", "mock", "--format", "json"];
    args.extend_from_slice(extra);
    let o = conform(&args);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", show(&o)));
    let code = o.status.code().expect("killed by a signal");
    (v, code, o)
}

fn count(v: &Value, field: &str) -> u64 {
    v["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no summary.{field} in {v}"))
}

fn case_names(v: &Value) -> Vec<String> {
    v["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases array in {v}"))
        .iter()
        .map(|c| c["name"].as_str().expect("case without a name").to_string())
        .collect()
}

/// The exit status the CLI must give a run with these counts.
fn expected_code(v: &Value, strict: bool) -> i32 {
    if count(v, "failed") > 0 || (strict && count(v, "not_run") > 0) {
        1
    } else {
        0
    }
}

#[test]
fn list_shows_mock_and_its_devices() {
    let o = conform(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("mock (built in): transport ")),
        "{out}"
    );
    for (device, model) in [
        ("mock0", "infiniband"),
        ("mock1", "infiniband"),
        ("mockiw0", "iwarp"),
    ] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(device))
            .unwrap_or_else(|| panic!("no row for {device} in:\n{out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        // DEVICE TRANSPORT STATE MODEL NODE GUID
        assert_eq!(cells.len(), 4, "{row}");
        assert_eq!(cells[2], model, "{row}");
        assert_eq!(cells[3].matches(':').count(), 3, "not a GUID: {row}");
    }
}

#[test]
fn run_mock_human_passes_and_prints_a_summary() {
    let o = conform(&["run", "--provider", "mock"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let (passed, failed, _not_run) = summary_of(&out);
    assert!(passed > 0, "{out}");
    assert_eq!(failed, 0, "{out}");
    assert!(out.lines().any(|l| l.contains(" ... ok (")), "{out}");
    assert!(
        out.contains("provider mock, device mock0, total time "),
        "{out}"
    );
    assert!(out.trim_end().ends_with("result: ok"), "{out}");
}

#[test]
fn json_to_a_file_parses_and_progress_goes_to_stdout() {
    let file = TempPath::new("report.json");
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--format",
        "json",
        "--output",
        file.as_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v: Value = serde_json::from_str(&file.read()).expect("output file is not JSON");
    assert_eq!(v["provider"], "mock");
    assert_eq!(v["device"], "mock0", "the default device is the first one");
    let cases = case_names(&v).len() as u64;
    assert!(cases > 0, "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert_eq!(
        count(&v, "passed") + count(&v, "failed") + count(&v, "not_run"),
        cases
    );
    // With --output, the operator still sees the human progress.
    let (passed, failed, not_run) = summary_of(&stdout(&o));
    assert_eq!(
        (passed as u64, failed as u64, not_run as u64),
        (
            count(&v, "passed"),
            count(&v, "failed"),
            count(&v, "not_run")
        )
    );
}

#[test]
fn json_to_stdout_is_only_the_document() {
    let (v, code, o) = run_json(&[]);
    assert_eq!(code, expected_code(&v, false), "{}", show(&o));
    assert_eq!(code, 0, "{}", show(&o));
    assert!(!case_names(&v).is_empty());
}

#[test]
fn junit_to_stdout_is_xml() {
    let o = conform(&["run", "--provider", "mock", "--format", "junit"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let xml = stdout(&o);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains(r#"<testsuite name="anyverbs-conform.mock.mock0""#),
        "{xml}"
    );
    assert!(xml.matches("<testcase ").count() > 0, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn junit_to_a_file_matches_the_json_counts() {
    let file = TempPath::new("report.xml");
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--device",
        "mockiw0",
        "--format",
        "junit",
        "--output",
        file.as_str(),
    ]);
    let xml = file.read();
    assert!(
        xml.contains(r#"<testsuite name="anyverbs-conform.mock.mockiw0""#),
        "{xml}"
    );
    let (passed, failed, not_run) = summary_of(&stdout(&o));
    let expected = if failed > 0 { 1 } else { 0 };
    assert_eq!(o.status.code(), Some(expected), "{}", show(&o));
    assert_eq!(
        xml.matches("<testcase ").count(),
        passed + failed + not_run,
        "{xml}"
    );
    assert_eq!(xml.matches("<failure").count(), failed, "{xml}");
    assert_eq!(xml.matches("<skipped").count(), not_run, "{xml}");
}

#[test]
fn human_to_a_file_leaves_stdout_empty() {
    let file = TempPath::new("report.txt");
    let o = conform(&["run", "--provider", "mock", "--output", file.as_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(stdout(&o), "");
    let (passed, _, _) = summary_of(&file.read());
    assert!(passed > 0);
}

#[test]
fn case_filter_that_matches_nothing_runs_nothing_and_succeeds() {
    let (v, code, o) = run_json(&["--case", "no-such-case-anywhere"]);
    assert_eq!(code, 0, "{}", show(&o));
    assert!(case_names(&v).is_empty(), "{v}");
    assert!(stderr(&o).contains("no case matches"), "{}", show(&o));
}

#[test]
fn case_filter_selects_one_group() {
    let (all, _, _) = run_json(&[]);
    let names = case_names(&all);
    let group = names[0].split("::").next().unwrap().to_string();
    let in_group = names
        .iter()
        .filter(|n| n.starts_with(&format!("{group}::")))
        .count();
    let (v, _, o) = run_json(&["--case", &format!("{group}::*")]);
    let selected = case_names(&v);
    assert_eq!(selected.len(), in_group, "{}", show(&o));
    assert!(
        selected
            .iter()
            .all(|n| n.starts_with(&format!("{group}::"))),
        "{selected:?}"
    );
}

#[test]
fn unknown_provider_is_a_usage_error_naming_the_known_ones() {
    let o = conform(&["run", "--provider", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains("nosuch") && err.contains("mock"), "{err}");
    assert_eq!(stdout(&o), "");
}

#[test]
fn unknown_device_is_a_usage_error_naming_the_devices() {
    let o = conform(&["run", "--provider", "mock", "--device", "nosuch0"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    for name in ["nosuch0", "mock0", "mock1", "mockiw0"] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
    assert_eq!(stdout(&o), "");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["run"][..],
        &["run", "--provider", "mock", "--timeout", "0"],
        &["run", "--provider", "mock", "--timeout", "soon"],
        &["run", "--provider", "mock", "--format", "yaml"],
        &["frobnicate"],
    ] {
        let o = conform(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}\n{}", show(&o));
    }
}

#[test]
fn unwritable_output_is_a_usage_error() {
    let dir = TempPath::new("no-such-dir");
    let path = dir.0.join("report.json");
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--format",
        "json",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains("cannot create"), "{}", show(&o));
}

/// On every device, the exit status follows the counts: 1 when a case failed, and with
/// `--strict` also when a case did not run. On the iWARP device some InfiniBand-only cases are
/// expected not to run; the strict failure is asserted wherever that is really so.
#[test]
fn strict_fails_exactly_when_cases_did_not_run() {
    let mut saw_not_run = false;
    for device in ["mock0", "mock1", "mockiw0"] {
        let (lenient, code, o) = run_json(&["--device", device]);
        assert_eq!(lenient["device"], device);
        assert_eq!(code, expected_code(&lenient, false), "{}", show(&o));
        let (strict, code, o) = run_json(&["--device", device, "--strict"]);
        assert_eq!(code, expected_code(&strict, true), "{}", show(&o));
        if count(&strict, "not_run") > 0 {
            saw_not_run = true;
            assert_eq!(code, 1, "{}", show(&o));
        }
    }
    if !saw_not_run {
        eprintln!("note: no device had cases that did not run; --strict exit 1 not exercised");
    }
}

// --- --expect -------------------------------------------------------------------------------

/// A case that fails on the dead mock device (no WR ever executes), quickly with `--timeout 0.2`.
const DEAD_FAILS: &str = "data::send_recv_one_sge";
/// A case that passes on every mock device.
const PASSES: &str = "device::listing";
/// A case that does not run on the InfiniBand mock devices.
const NOT_RUN_ON_MOCK0: &str = "state::iwarp_close_with_empty_send_queue";

/// Writes an expectations file with `text` and returns it.
fn expect_file(name: &str, text: &str) -> TempPath {
    let file = TempPath::new(name);
    std::fs::write(&file.0, text).expect("cannot write the expectations file");
    file
}

fn find_case<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no case {name} in {v}"))
}

#[test]
fn expect_line_without_a_reason_is_a_usage_error_naming_file_and_line() {
    let file = expect_file(
        "no-reason.expect",
        &format!("# known failures\n\n{DEAD_FAILS} dead device\n{PASSES}   \n"),
    );
    let o = conform(&["run", "--provider", "mock", "--expect", file.as_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:4: ", file.as_str())), "{err}");
    assert!(err.contains("no reason"), "{err}");
    assert_eq!(stdout(&o), "", "nothing runs");
}

#[test]
fn expect_pattern_matching_no_case_is_a_usage_error_naming_file_and_line() {
    // A typo, an unknown group, and a substring (expectations match exact names or globs).
    for pattern in ["device::lisitng", "nosuch::*", "device::list"] {
        let file = expect_file(
            "unknown.expect",
            &format!("{PASSES} fine\n{pattern} some reason\n"),
        );
        let o = conform(&[
            "run",
            "--provider",
            "mock",
            "--format",
            "json",
            "--expect",
            file.as_str(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{pattern}: {}", show(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("{}:2: ", file.as_str())), "{err}");
        assert!(err.contains(pattern), "{err}");
        assert_eq!(stdout(&o), "");
    }
}

#[test]
fn expect_file_that_cannot_be_read_is_a_usage_error() {
    let missing = TempPath::new("missing.expect");
    let o = conform(&["run", "--provider", "mock", "--expect", missing.as_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(stderr(&o).contains(missing.as_str()), "{}", show(&o));
}

#[test]
fn expected_failure_is_xfail_and_does_not_fail_the_run() {
    let file = expect_file(
        "xfail.expect",
        &format!("# mockdead0\n{DEAD_FAILS}   no WR ever executes on a dead device\n"),
    );
    let args = [
        "run",
        "--provider",
        "mock",
        "--device",
        "mockdead0",
        "--timeout",
        "0.2",
        "--case",
        DEAD_FAILS,
        "--expect",
        file.as_str(),
    ];
    // Without the expectation, the case fails the run.
    let o = conform(&args[..args.len() - 2]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    let o = conform(&args);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    let line = out
        .lines()
        .position(|l| l.starts_with(&format!("{DEAD_FAILS} ... XFAIL (")))
        .unwrap_or_else(|| panic!("no XFAIL line in:\n{out}"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[line].ends_with(&format!(
            "): no WR ever executes on a dead device ({}:2)",
            file.as_str()
        )),
        "{out}"
    );
    assert!(
        lines[line + 1].starts_with("    FAILED: "),
        "the actual failure: {out}"
    );
    assert!(
        out.contains("\n0 passed, 0 failed, 0 not run, 1 expected failure\n"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("result: ok"), "{out}");

    // The same in JSON.
    let (v, code, o) = run_json(&args[3..]);
    assert_eq!(code, 0, "{}", show(&o));
    assert_eq!(v["format_version"], 2);
    assert_eq!(count(&v, "expected_failures"), 1, "{v}");
    assert_eq!(count(&v, "failed"), 0, "{v}");
    let case = find_case(&v, DEAD_FAILS);
    assert_eq!(case["outcome"], "expected_failure", "{case}");
    assert_eq!(case["actual_outcome"], "failed", "{case}");
    assert!(
        case["reason"].as_str().unwrap().contains("completions"),
        "{case}"
    );
    assert_eq!(
        case["expectation"]["reason"],
        "no WR ever executes on a dead device"
    );
    assert_eq!(case["expectation"]["file"], file.as_str());
    assert_eq!(case["expectation"]["line"], 2);
}

#[test]
fn expected_failure_of_a_case_that_does_not_run_passes_strict() {
    let file = expect_file(
        "notrun.expect",
        &format!("{NOT_RUN_ON_MOCK0} written for iWARP\n"),
    );
    let (v, code, o) = run_json(&[
        "--case",
        NOT_RUN_ON_MOCK0,
        "--strict",
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(code, 0, "{}", show(&o));
    let case = find_case(&v, NOT_RUN_ON_MOCK0);
    assert_eq!(case["outcome"], "expected_failure", "{case}");
    assert_eq!(case["actual_outcome"], "not_run", "{case}");
    assert_eq!(count(&v, "not_run"), 0, "{v}");
}

#[test]
fn unexpected_pass_is_xpass_and_fails_the_run() {
    let file = expect_file("xpass.expect", "device::* listing was broken before 0.2\n");
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--case",
        PASSES,
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{PASSES} ... XPASS ("))
                && l.ends_with(&format!(
                    "): expectation out of date: listing was broken before 0.2 ({}:1)",
                    file.as_str()
                ))),
        "{out}"
    );
    assert!(
        out.contains(&format!("failures:\n    {PASSES} (XPASS)\n")),
        "{out}"
    );
    assert!(
        out.contains("\n0 passed, 1 failed (1 unexpected pass), 0 not run\n"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("result: FAILED"), "{out}");

    let (v, code, o) = run_json(&["--case", PASSES, "--expect", file.as_str()]);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(code, expected_code(&v, false));
    assert_eq!(count(&v, "unexpected_passes"), 1, "{v}");
    assert_eq!(count(&v, "failed"), 1, "{v}");
    let case = find_case(&v, PASSES);
    assert_eq!(case["outcome"], "unexpected_pass", "{case}");
    assert_eq!(case["actual_outcome"], "passed", "{case}");
    assert_eq!(
        case["reason"],
        "expectation out of date: listing was broken before 0.2"
    );
    assert_eq!(case["expectation"]["pattern"], "device::*");
}

#[test]
fn junit_shows_expected_failures_as_skipped_and_unexpected_passes_as_failures() {
    let file = expect_file(
        "junit.expect",
        &format!("{DEAD_FAILS} dead\n{PASSES} was broken\n"),
    );
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--device",
        "mockdead0",
        "--timeout",
        "0.2",
        "--case",
        "data::send_recv_one_sge",
        "--format",
        "junit",
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let xml = stdout(&o);
    assert!(
        xml.contains(&format!(
            r#"<skipped message="expected failure: dead ({}:1)" type="expected_failure">FAILED: "#,
            file.as_str()
        )),
        "{xml}"
    );
    assert!(xml.contains(r#"skipped="1""#), "{xml}");
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--case",
        PASSES,
        "--format",
        "junit",
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let xml = stdout(&o);
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(
        xml.contains(r#"<failure message="unexpected pass: expectation out of date: was broken"#),
        "{xml}"
    );
}

// --- --isolate and --exact -------------------------------------------------------------------

/// `(name, outcome, reason)` of every case of a JSON report.
fn outcomes(v: &Value) -> Vec<(String, String, String)> {
    v["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases in {v}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn isolate_gives_the_same_outcomes() {
    for extra in [
        &["--case", "device::*"][..],
        // Passed and not run.
        &["--device", "mockiw0", "--case", "data::*"],
        // Failed.
        &[
            "--device",
            "mockdead0",
            "--timeout",
            "0.2",
            "--case",
            "data::send_recv*",
        ],
    ] {
        let (inline, code, o) = run_json(extra);
        assert!(!outcomes(&inline).is_empty(), "{}", show(&o));
        let isolated_args: Vec<&str> = extra.iter().copied().chain(["--isolate"]).collect();
        let (isolated, isolated_code, io) = run_json(&isolated_args);
        assert_eq!(
            outcomes(&isolated),
            outcomes(&inline),
            "{extra:?}\n{}",
            show(&io)
        );
        assert_eq!(isolated["summary"], inline["summary"], "{extra:?}");
        assert_eq!(isolated_code, code, "{extra:?}\n{}", show(&io));
    }
}

#[test]
fn isolate_human_output_and_expectations() {
    let file = expect_file("isolate.expect", &format!("{DEAD_FAILS} dead device\n"));
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--device",
        "mockdead0",
        "--timeout",
        "0.2",
        "--case",
        "data::send_recv*",
        "--isolate",
        "--expect",
        file.as_str(),
    ]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the unlisted case fails: {}",
        show(&o)
    );
    assert!(out.contains(&format!("{DEAD_FAILS} ... XFAIL (")), "{out}");
    assert!(
        out.contains("data::send_recv_many_sges ... FAILED ("),
        "{out}"
    );
    assert!(!out.contains("CRASH"), "{out}");
}

#[test]
fn exact_selects_one_case_by_its_whole_name() {
    let (v, code, o) = run_json(&["--case", "device::list"]);
    assert_eq!(code, 0, "{}", show(&o));
    assert_eq!(case_names(&v), [PASSES], "a substring without --exact");
    let (v, code, o) = run_json(&["--case", "device::list", "--exact"]);
    assert_eq!(code, 0, "{}", show(&o));
    assert!(case_names(&v).is_empty(), "{v}");
    let (v, _, _) = run_json(&["--case", PASSES, "--exact"]);
    assert_eq!(case_names(&v), [PASSES]);
    let o = conform(&["run", "--provider", "mock", "--exact"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--exact needs --case: {}",
        show(&o)
    );
}
