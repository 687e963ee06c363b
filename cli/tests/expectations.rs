//! `--expect`: expected failures and exclusions, their verdicts in every format, and the
//! built-in expectations of the mock's failure-demonstrating devices.

mod common;

use common::*;

#[test]
fn expect_line_without_a_reason_is_a_usage_error_naming_file_and_line() {
    let file = expect_file(
        "no-reason.expect",
        &format!("# known failures\n\nxfail {DEAD_FAILS} dead device\nxfail {PASSES}   \n"),
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
            &format!("xfail {PASSES} fine\nexclude {pattern} some reason\n"),
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
        &format!("# mockdead0\nxfail {DEAD_FAILS}   no WR ever executes on a dead device\n"),
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
    // Without the expectation (and without the device's built-in ones), the case fails the run.
    let without: Vec<&str> = args[..args.len() - 2]
        .iter()
        .copied()
        .chain(["--no-builtin-expectations"])
        .collect();
    let o = conform(&without);
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
    assert_eq!(v["format_version"], 3);
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
    assert_eq!(case["expectation"]["kind"], "expected_failure");
}

#[test]
fn an_expected_failure_that_does_not_run_stays_not_run_and_fails_strict() {
    let file = expect_file(
        "notrun.expect",
        &format!("xfail {NOT_RUN_ON_MOCK0} written for iWARP\n"),
    );
    let args = ["--case", NOT_RUN_ON_MOCK0, "--expect", file.as_str()];
    let (v, code, o) = run_json(&args);
    assert_eq!(code, 0, "{}", show(&o));
    let case = find_case(&v, NOT_RUN_ON_MOCK0);
    assert_eq!(case["outcome"], "not_run", "{case}");
    assert_eq!(case["actual_outcome"], "not_run", "{case}");
    assert_eq!(count(&v, "not_run"), 1, "{v}");
    assert_eq!(count(&v, "expected_failures"), 0, "{v}");
    // An xfail is not an excuse for not running: --strict fails it.
    let strict: Vec<&str> = args.iter().copied().chain(["--strict"]).collect();
    let (v, code, o) = run_json(&strict);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(code, expected_code(&v, true));
}

#[test]
fn an_exclusion_is_not_run_reported_with_its_reason_and_accepted_by_strict() {
    let file = expect_file(
        "exclude.expect",
        &format!(
            "exclude {NOT_RUN_ON_MOCK0} written for iWARP\n\
             exclude {DEAD_FAILS} this device never completes a WR\n"
        ),
    );
    // A case that would not run anyway, and one that would fail (and wait out its deadlines):
    // neither runs.
    for (device, case_name) in [("mock0", NOT_RUN_ON_MOCK0), ("mockdead0", DEAD_FAILS)] {
        let started = std::time::Instant::now();
        let (v, code, o) = run_json(&[
            "--device",
            device,
            "--case",
            case_name,
            "--strict",
            "--expect",
            file.as_str(),
        ]);
        assert_eq!(code, 0, "--strict accepts an exclusion: {}", show(&o));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "an excluded case does not run: {:?}",
            started.elapsed()
        );
        let case = find_case(&v, case_name);
        assert_eq!(case["outcome"], "excluded", "{case}");
        assert_eq!(case["actual_outcome"], "not_run", "{case}");
        assert_eq!(case["expectation"]["kind"], "exclusion", "{case}");
        assert!(
            case["reason"].as_str().unwrap().starts_with("excluded ("),
            "{case}"
        );
        assert_eq!(count(&v, "excluded"), 1, "{v}");
        assert_eq!(count(&v, "not_run"), 0, "{v}");
    }
    // In the human and JUnit forms too.
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--case",
        NOT_RUN_ON_MOCK0,
        "--strict",
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "{NOT_RUN_ON_MOCK0} ... excluded: written for iWARP ({}:1)",
            file.as_str()
        )),
        "{out}"
    );
    assert!(
        out.contains("\n0 passed, 0 failed, 0 not run, 1 excluded\n"),
        "{out}"
    );
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--case",
        NOT_RUN_ON_MOCK0,
        "--format",
        "junit",
        "--expect",
        file.as_str(),
    ]);
    let xml = stdout(&o);
    assert!(
        xml.contains(&format!(
            r#"<skipped message="excluded: written for iWARP ({}:1)" type="excluded""#,
            file.as_str()
        )),
        "{xml}"
    );
}

#[test]
fn a_line_without_its_kind_is_a_usage_error() {
    // The format before kinds: it does not say which of two things it means.
    let file = expect_file("old.expect", &format!("{PASSES} was broken\n"));
    let o = conform(&["run", "--provider", "mock", "--expect", file.as_str()]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}:1: ", file.as_str())), "{err}");
    assert!(
        err.contains("`xfail`") && err.contains("`exclude`"),
        "{err}"
    );
}

#[test]
fn unexpected_pass_is_xpass_and_fails_the_run() {
    let file = expect_file(
        "xpass.expect",
        "xfail device::* listing was broken before 0.2\n",
    );
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
        &format!("xfail {DEAD_FAILS} dead\nxfail {PASSES} was broken\n"),
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

// --- the mock's built-in expectations --------------------------------------------------------

#[test]
fn the_dead_device_runs_with_its_built_in_expectations_and_list_says_so() {
    let o = conform(&["list"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.split_whitespace().next() == Some("mockdead0"))
        .unwrap_or_else(|| panic!("no mockdead0 in:\n{out}"));
    assert!(
        lines[row + 1]
            .trim_start()
            .starts_with("note: demonstrates failure")
            && lines[row + 1].contains("provider-mock/expectations/mockdead0.expect"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.trim_start().starts_with("note:"))
            .count()
            == 1,
        "only the demonstration device has a note:\n{out}"
    );

    // Without --expect, the built-in file applies, with its suggested timeout, and says so.
    let (v, code, o) = run_json(&["--device", "mockdead0", "--case", "data::*"]);
    assert_eq!(code, 0, "{}", show(&o));
    assert!(
        stderr(&o).contains("using its built-in expectations (provider-mock/expectations/mockdead0.expect) and --timeout 0.5"),
        "{}",
        show(&o)
    );
    assert_eq!(count(&v, "failed"), 0, "{v}");
    assert!(count(&v, "expected_failures") > 0, "{v}");
    let case = find_case(&v, DEAD_FAILS);
    assert_eq!(
        case["expectation"]["file"],
        "built-in provider-mock/expectations/mockdead0.expect"
    );

    // Turned off, the same case fails.
    let (v, code, o) = run_json(&[
        "--device",
        "mockdead0",
        "--case",
        DEAD_FAILS,
        "--timeout",
        "0.2",
        "--no-builtin-expectations",
    ]);
    assert_eq!(code, 1, "{}", show(&o));
    assert_eq!(find_case(&v, DEAD_FAILS)["outcome"], "failed");
    assert!(
        !stderr(&o).contains("built-in expectations"),
        "{}",
        show(&o)
    );

    // An explicit file replaces them.
    let file = expect_file("mine.expect", &format!("xfail {DEAD_FAILS} mine\n"));
    let (v, code, o) = run_json(&[
        "--device",
        "mockdead0",
        "--case",
        "data::send_recv*",
        "--timeout",
        "0.2",
        "--expect",
        file.as_str(),
    ]);
    assert_eq!(code, 1, "only the one case is listed now: {}", show(&o));
    assert_eq!(find_case(&v, DEAD_FAILS)["expectation"]["reason"], "mine");
}
