//! The report formats, on reports of every verdict.

use std::io::{self, Write};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

use super::*;
use crate::expect::{Expectation, ExpectationKind};
use crate::runner::{CaseReport, Outcome, RunEvent, Summary};

fn case(name: &str, outcome: Outcome, micros: u64) -> CaseReport {
    CaseReport {
        name: name.to_string(),
        description: format!("what {name} checks"),
        outcome,
        duration: Duration::from_micros(micros),
        expectation: None,
    }
}

fn expectation(pattern: &str, reason: &str, line: usize) -> Expectation {
    Expectation {
        kind: if pattern.starts_with("lifecycle::") {
            ExpectationKind::Exclusion
        } else {
            ExpectationKind::ExpectedFailure
        },
        pattern: pattern.into(),
        reason: reason.into(),
        file: "dead.expect".into(),
        line,
    }
}

/// One case of every verdict: passed, failed, not run, crashed, hung, excluded, two expected
/// failures (a failure and a hang), an expected failure that did not run, and an unexpected
/// pass. Expectations of `lifecycle::` cases are exclusions, the others expected failures.
fn every_verdict() -> SuiteReport {
    let listed = |name: &str, outcome, pattern: &str, reason: &str, line| CaseReport {
        expectation: Some(expectation(pattern, reason, line)),
        ..case(name, outcome, 1_000)
    };
    SuiteReport {
        provider: "mock".into(),
        device: "mockdead0".into(),
        cases: vec![
            case("device::open", Outcome::Passed, 1_000),
            case("data::a", Outcome::Failed("no completion".into()), 1_000),
            case("data::b", Outcome::NotRun("lacks X".into()), 1_000),
            case(
                "data::c",
                Outcome::Crashed("killed by signal 11 (SIGSEGV)\nlast words".into()),
                1_000,
            ),
            case(
                "drain::slow",
                Outcome::Hung("still running after 40 s".into()),
                1_000,
            ),
            listed(
                "lifecycle::flap",
                Outcome::NotRun("excluded (dead.expect:2): no port to flap".into()),
                "lifecycle::flap",
                "no port to flap",
                2,
            ),
            listed(
                "data::d",
                Outcome::Failed("got 0\nof 1".into()),
                "data::d",
                "never executes",
                3,
            ),
            listed(
                "data::e",
                Outcome::Hung("killed after 50 s".into()),
                "data::e*",
                "hangs",
                4,
            ),
            listed(
                "data::f",
                Outcome::NotRun("lacks Y".into()),
                "data::f",
                "fails",
                6,
            ),
            listed(
                "device::ports",
                Outcome::Passed,
                "device::ports",
                "no ports",
                5,
            ),
        ],
        duration: Duration::from_millis(7),
        aborted: None,
    }
}

/// Two passed (one without a group), one failed with a two-line reason, one not run.
fn sample() -> SuiteReport {
    SuiteReport {
        provider: "mock".into(),
        device: "mock0".into(),
        cases: vec![
            case("device::open", Outcome::Passed, 1_200),
            case(
                "data::send_recv",
                Outcome::Failed("expected 1 completion\ngot 0 <before> & \"after\"".into()),
                3_000,
            ),
            case(
                "state::iwarp_close",
                Outcome::NotRun("written for the Iwarp state model".into()),
                10,
            ),
            case("lonely", Outcome::Passed, 2_500_000),
        ],
        duration: Duration::from_millis(2_510),
        aborted: None,
    }
}

fn human(report: &SuiteReport, strict: bool, with_started: bool) -> String {
    let mut p = HumanPrinter::new(Vec::new()).strict(strict);
    p.start(&report.provider, &report.device, report.cases.len());
    for c in &report.cases {
        if with_started {
            p.observe(RunEvent::Started { name: &c.name });
        }
        p.observe(RunEvent::Finished(c));
    }
    String::from_utf8(p.finish(report).unwrap()).unwrap()
}

#[test]
fn durations_read_well() {
    assert_eq!(format_duration(Duration::from_micros(1_200)), "1.2 ms");
    assert_eq!(format_duration(Duration::ZERO), "0.0 ms");
    assert_eq!(format_duration(Duration::from_millis(3_250)), "3.25 s");
}

#[test]
fn case_groups() {
    assert_eq!(case_group("data::send_recv"), "data");
    assert_eq!(case_group("a::b::c"), "a");
    assert_eq!(case_group("lonely"), "lonely");
}

#[test]
fn human_prints_each_case_and_the_summary() {
    let text = human(&sample(), false, true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "running 4 cases against provider mock, device mock0"
    );
    assert!(lines.contains(&"device::open ... ok (1.2 ms)"), "{text}");
    let failed = lines
        .iter()
        .position(|l| *l == "data::send_recv ... FAILED (3.0 ms)")
        .unwrap_or_else(|| panic!("no FAILED line in:\n{text}"));
    assert_eq!(lines[failed + 1], "    expected 1 completion");
    assert_eq!(lines[failed + 2], "    got 0 <before> & \"after\"");
    assert!(
        lines.contains(&"state::iwarp_close ... not run: written for the Iwarp state model"),
        "{text}"
    );
    assert!(lines.contains(&"lonely ... ok (2.50 s)"), "{text}");
    assert!(lines.contains(&"2 passed, 1 failed, 1 not run"), "{text}");
    assert!(
        lines.contains(&"provider mock, device mock0, total time 2.51 s"),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"result: FAILED"));
    // The failed case is listed again under "failures:".
    let failures = lines.iter().position(|l| *l == "failures:").unwrap();
    assert_eq!(lines[failures + 1], "    data::send_recv");
}

#[test]
fn human_empty_run_has_no_stray_blank_lines() {
    let mut r = sample();
    r.cases.clear();
    r.duration = Duration::from_micros(10);
    assert_eq!(
        human(&r, false, true),
        "running 0 cases against provider mock, device mock0\n\n\
         0 passed, 0 failed, 0 not run\n\
         provider mock, device mock0, total time 0.0 ms\n\
         result: ok\n"
    );
}

#[test]
fn human_without_started_events_still_names_cases() {
    let with = human(&sample(), false, true);
    let without = human(&sample(), false, false);
    assert_eq!(with, without);
}

#[test]
fn human_verdict_depends_on_strictness() {
    let mut r = sample();
    r.cases.retain(|c| !matches!(c.outcome, Outcome::Failed(_)));
    let lenient = human(&r, false, true);
    assert!(
        lenient.contains("\n2 passed, 0 failed, 1 not run\n"),
        "{lenient}"
    );
    assert!(lenient.ends_with("result: ok\n"), "{lenient}");
    assert!(!lenient.contains("failures:"), "{lenient}");
    let strict = human(&r, true, true);
    assert!(
        strict.ends_with("result: FAILED (strict: 1 case not run)\n"),
        "{strict}"
    );
}

#[test]
fn human_keeps_the_first_write_error() {
    #[derive(Debug)]
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let r = sample();
    let mut p = HumanPrinter::new(Broken);
    p.observe(RunEvent::Finished(&r.cases[0]));
    let err = p.finish(&r).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn json_parses_back_with_counts_and_outcomes() {
    let r = sample();
    let text = to_json(&r).unwrap();
    assert!(text.contains('\n'), "not pretty-printed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format_version"], JSON_FORMAT_VERSION);
    assert_eq!(v["provider"], "mock");
    assert_eq!(v["device"], "mock0");
    assert!((v["duration"].as_f64().unwrap() - 2.51).abs() < 1e-9);
    assert_eq!(v["summary"]["passed"], 2);
    assert_eq!(v["summary"]["failed"], 1);
    assert_eq!(v["summary"]["not_run"], 1);
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    assert_eq!(cases[0]["name"], "device::open");
    assert_eq!(cases[0]["description"], "what device::open checks");
    assert_eq!(cases[0]["outcome"], "passed");
    assert!(cases[0].get("reason").is_none(), "{}", cases[0]);
    assert!((cases[0]["duration"].as_f64().unwrap() - 0.0012).abs() < 1e-9);
    assert_eq!(cases[1]["outcome"], "failed");
    assert_eq!(
        cases[1]["reason"],
        "expected 1 completion\ngot 0 <before> & \"after\""
    );
    assert_eq!(cases[2]["outcome"], "not_run");
    assert_eq!(cases[2]["reason"], "written for the Iwarp state model");
}

#[test]
fn write_json_matches_to_json() {
    let r = sample();
    let mut buf = Vec::new();
    write_json(&r, &mut buf).unwrap();
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        format!("{}\n", to_json(&r).unwrap())
    );
}

#[test]
fn junit_has_one_suite_with_failure_and_skip() {
    let r = sample();
    let mut buf = Vec::new();
    write_junit(&r, &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();
    assert!(
        xml.contains(r#"<testsuite name="anyverbs-conform.mock.mock0" tests="4""#),
        "{xml}"
    );
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(xml.contains(r#"skipped="1""#), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
    assert_eq!(xml.matches("<skipped").count(), 1, "{xml}");
    assert!(
        xml.contains(r#"<testcase name="data::send_recv" classname="data""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<skipped message="written for the Iwarp state model""#),
        "{xml}"
    );

    // Parse it back: structure, statuses, messages (escaping round-trips) and times.
    let doc = Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(doc.test_suites.len(), 1);
    let suite = &doc.test_suites[0];
    assert_eq!(suite.name.as_str(), "anyverbs-conform.mock.mock0");
    assert_eq!(suite.tests, 4);
    assert_eq!(suite.failures, 1);
    assert_eq!(suite.time, Some(Duration::from_millis(2_510)));
    let names: Vec<&str> = suite.test_cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "device::open",
            "data::send_recv",
            "state::iwarp_close",
            "lonely"
        ]
    );
    let classes: Vec<Option<&str>> = suite
        .test_cases
        .iter()
        .map(|c| c.classname.as_ref().map(|s| s.as_str()))
        .collect();
    assert_eq!(
        classes,
        [Some("device"), Some("data"), Some("state"), Some("lonely")]
    );
    assert!(matches!(
        suite.test_cases[0].status,
        TestCaseStatus::Success { .. }
    ));
    match &suite.test_cases[1].status {
        TestCaseStatus::NonSuccess {
            kind,
            message,
            description,
            ..
        } => {
            assert_eq!(*kind, NonSuccessKind::Failure);
            assert_eq!(
                message.as_ref().map(|m| m.as_str()),
                Some("expected 1 completion\ngot 0 <before> & \"after\"")
            );
            assert_eq!(
                description.as_ref().map(|m| m.as_str()),
                Some("expected 1 completion\ngot 0 <before> & \"after\"")
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    match &suite.test_cases[2].status {
        TestCaseStatus::Skipped { message, .. } => assert_eq!(
            message.as_ref().map(|m| m.as_str()),
            Some("written for the Iwarp state model")
        ),
        other => panic!("expected a skip, got {other:?}"),
    }
    assert_eq!(suite.test_cases[1].time, Some(Duration::from_millis(3)));
}

#[test]
fn summary_line_breaks_failures_down_only_when_needed() {
    let plain = Summary {
        passed: 3,
        failed: 1,
        not_run: 2,
        ..Summary::default()
    };
    assert_eq!(summary_line(&plain), "3 passed, 1 failed, 2 not run");
    let s = every_verdict().summary();
    assert_eq!(
        s,
        Summary {
            passed: 1,
            failed: 4,
            not_run: 2,
            crashed: 1,
            hung: 1,
            excluded: 1,
            expected_failures: 2,
            unexpected_passes: 1,
        }
    );
    assert_eq!(
        summary_line(&s),
        "1 passed, 4 failed (1 crash, 1 hang, 1 unexpected pass), 2 not run, 1 excluded, \
         2 expected failures"
    );
    let many = Summary {
        failed: 4,
        crashed: 2,
        unexpected_passes: 2,
        expected_failures: 1,
        ..Summary::default()
    };
    assert_eq!(
        summary_line(&many),
        "0 passed, 4 failed (2 crashes, 2 unexpected passes), 0 not run, 1 expected failure"
    );
}

#[test]
fn human_shows_every_verdict() {
    let r = every_verdict();
    let text = human(&r, false, true);
    let lines: Vec<&str> = text.lines().collect();
    let at = |wanted: &str| {
        lines
            .iter()
            .position(|l| *l == wanted)
            .unwrap_or_else(|| panic!("no line {wanted:?} in:\n{text}"))
    };
    let crash = at("data::c ... CRASH (1.0 ms)");
    assert_eq!(lines[crash + 1], "    killed by signal 11 (SIGSEGV)");
    assert_eq!(lines[crash + 2], "    last words");
    let hung = at("drain::slow ... HUNG (1.0 ms)");
    assert_eq!(lines[hung + 1], "    still running after 40 s");
    at("lifecycle::flap ... excluded: no port to flap (dead.expect:2)");
    let xfail = at("data::d ... XFAIL (1.0 ms): never executes (dead.expect:3)");
    assert_eq!(lines[xfail + 1], "    FAILED: got 0");
    assert_eq!(lines[xfail + 2], "    of 1");
    let xfail = at("data::e ... XFAIL (1.0 ms): hangs (dead.expect:4)");
    assert_eq!(lines[xfail + 1], "    HUNG: killed after 50 s");
    let not_run = at("data::f ... not run: lacks Y");
    assert_eq!(
        lines[not_run + 1],
        "    listed as an expected failure (dead.expect:6), but it did not run"
    );
    at("device::ports ... XPASS (1.0 ms): expectation out of date: no ports (dead.expect:5)");
    let failures = at("failures:");
    assert_eq!(
        lines[failures + 1..failures + 5],
        [
            "    data::a",
            "    data::c (CRASH)",
            "    drain::slow (HUNG)",
            "    device::ports (XPASS)"
        ]
    );
    assert_eq!(lines[failures + 5], "");
    at(
        "1 passed, 4 failed (1 crash, 1 hang, 1 unexpected pass), 2 not run, 1 excluded, \
        2 expected failures",
    );
    assert_eq!(lines.last(), Some(&"result: FAILED"));
}

#[test]
fn human_says_why_a_run_stopped() {
    let mut r = sample();
    r.cases.retain(|c| c.outcome == Outcome::Passed);
    r.aborted = Some("drain::slow hung: still running after 40 s".into());
    let text = human(&r, false, true);
    assert!(
        text.contains("\nthe run stopped: drain::slow hung: still running after 40 s\n"),
        "{text}"
    );
    assert!(
        text.ends_with("result: FAILED (the run stopped)\n"),
        "{text}"
    );
}

#[test]
fn exclusions_and_expected_failures_alone_succeed_even_strictly() {
    let mut r = every_verdict();
    r.cases.retain(|c| {
        matches!(
            c.verdict(),
            crate::Verdict::Passed | crate::Verdict::ExpectedFailure | crate::Verdict::Excluded
        )
    });
    assert_eq!(r.cases.len(), 4);
    assert!(r.is_success(true));
    let text = human(&r, true, true);
    assert!(
        text.contains("\n1 passed, 0 failed, 0 not run, 1 excluded, 2 expected failures\n"),
        "{text}"
    );
    assert!(text.ends_with("result: ok\n"), "{text}");
    assert!(!text.contains("failures:"), "{text}");
}

#[test]
fn json_shows_every_verdict() {
    let v: serde_json::Value = serde_json::from_str(&to_json(&every_verdict()).unwrap()).unwrap();
    assert_eq!(v["format_version"], 3);
    assert!(v.get("aborted").is_none(), "{v}");
    let summary = &v["summary"];
    for (field, n) in [
        ("passed", 1),
        ("failed", 4),
        ("not_run", 2),
        ("crashed", 1),
        ("hung", 1),
        ("excluded", 1),
        ("expected_failures", 2),
        ("unexpected_passes", 1),
    ] {
        assert_eq!(summary[field], n, "{field} in {summary}");
    }
    let cases = v["cases"].as_array().unwrap();
    let outcomes: Vec<&str> = cases
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "passed",
            "failed",
            "not_run",
            "crashed",
            "hung",
            "excluded",
            "expected_failure",
            "expected_failure",
            "not_run",
            "unexpected_pass"
        ]
    );
    // Unlisted cases have neither actual_outcome nor expectation.
    for c in &cases[..5] {
        assert!(c.get("actual_outcome").is_none(), "{c}");
        assert!(c.get("expectation").is_none(), "{c}");
    }
    assert_eq!(
        cases[3]["reason"],
        "killed by signal 11 (SIGSEGV)\nlast words"
    );
    assert_eq!(cases[5]["actual_outcome"], "not_run");
    assert_eq!(cases[5]["expectation"]["kind"], "exclusion");
    assert_eq!(cases[6]["reason"], "got 0\nof 1");
    assert_eq!(cases[6]["actual_outcome"], "failed");
    assert_eq!(
        cases[6]["expectation"],
        serde_json::json!({
            "kind": "expected_failure",
            "pattern": "data::d",
            "reason": "never executes",
            "file": "dead.expect",
            "line": 3
        })
    );
    assert_eq!(cases[7]["actual_outcome"], "hung");
    assert_eq!(cases[7]["expectation"]["pattern"], "data::e*");
    assert_eq!(cases[9]["actual_outcome"], "passed");
    assert_eq!(cases[9]["reason"], "expectation out of date: no ports");
    assert_eq!(cases[9]["expectation"]["line"], 5);
}

#[test]
fn json_says_why_a_run_stopped() {
    let mut r = sample();
    r.aborted = Some("drain::slow hung".into());
    let v: serde_json::Value = serde_json::from_str(&to_json(&r).unwrap()).unwrap();
    assert_eq!(v["aborted"], "drain::slow hung");
}

#[test]
fn junit_shows_every_verdict() {
    let mut buf = Vec::new();
    write_junit(&every_verdict(), &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();
    assert!(xml.contains(r#"failures="2""#), "{xml}");
    assert!(xml.contains(r#"errors="2""#), "{xml}");
    assert!(xml.contains(r#"skipped="5""#), "{xml}");
    let doc = Report::deserialize_from_str(&xml).unwrap();
    let suite = &doc.test_suites[0];
    let status = |name: &str| {
        &suite
            .test_cases
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("no {name} in {xml}"))
            .status
    };
    let text = |s: &Option<quick_junit::XmlString>| s.as_ref().map(|m| m.as_str().to_string());
    for (name, ty, message) in [
        (
            "data::c",
            "crash",
            "killed by signal 11 (SIGSEGV)\nlast words",
        ),
        ("drain::slow", "hang", "still running after 40 s"),
    ] {
        match status(name) {
            TestCaseStatus::NonSuccess {
                kind,
                message: m,
                ty: t,
                ..
            } => {
                assert_eq!(*kind, NonSuccessKind::Error);
                assert_eq!(text(t).as_deref(), Some(ty));
                assert_eq!(text(m).as_deref(), Some(message));
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    match status("lifecycle::flap") {
        TestCaseStatus::Skipped { message, ty, .. } => {
            assert_eq!(text(ty).as_deref(), Some("excluded"));
            assert_eq!(
                text(message).as_deref(),
                Some("excluded: no port to flap (dead.expect:2)")
            );
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    match status("data::d") {
        TestCaseStatus::Skipped {
            message,
            ty,
            description,
        } => {
            assert_eq!(text(ty).as_deref(), Some("expected_failure"));
            assert_eq!(
                text(message).as_deref(),
                Some("expected failure: never executes (dead.expect:3)")
            );
            assert_eq!(text(description).as_deref(), Some("FAILED: got 0\nof 1"));
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    match status("device::ports") {
        TestCaseStatus::NonSuccess {
            kind, message, ty, ..
        } => {
            assert_eq!(*kind, NonSuccessKind::Failure);
            assert_eq!(text(ty).as_deref(), Some("unexpected_pass"));
            assert_eq!(
                text(message).as_deref(),
                Some("unexpected pass: expectation out of date: no ports (dead.expect:5)")
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(
        !xml.contains(RUN_CASE_NAME),
        "a run that did not stop has no run case"
    );
}

#[test]
fn junit_shows_a_stopped_run_as_an_error_of_its_own() {
    let mut r = sample();
    r.aborted = Some("drain::slow hung".into());
    let doc = junit_report(&r);
    let suite = &doc.test_suites[0];
    let run = suite
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == RUN_CASE_NAME)
        .expect("a case for the run");
    assert_eq!(run.classname.as_ref().map(|c| c.as_str()), Some("run"));
    match &run.status {
        TestCaseStatus::NonSuccess { kind, message, .. } => {
            assert_eq!(*kind, NonSuccessKind::Error);
            assert_eq!(
                message.as_ref().map(|m| m.as_str()),
                Some("drain::slow hung")
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
}
