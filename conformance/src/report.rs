//! Output formats for a [`SuiteReport`]: a streaming human printer, JSON and JUnit XML.
//!
//! - [`HumanPrinter`] is meant to be the observer of [`run_suite`](crate::run_suite): it prints
//!   each case as it starts and finishes, then a summary block.
//! - [`to_json`] / [`write_json`] render the whole report, with its [`Summary`], as pretty JSON
//!   (fields documented on [`to_json`]).
//! - [`junit_report`] / [`write_junit`] render it as one JUnit `<testsuite>`, for CI systems.

use std::io::{self, Write};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use crate::runner::{CaseReport, Outcome, RunEvent, SuiteReport, Summary, Verdict};

/// Formats a duration for people: milliseconds with one decimal below a second (`1.2 ms`),
/// seconds with two decimals from one second on (`3.25 s`).
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// `1 crash`, `2 crashes`: a count and a noun in the singular or plural.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The line that counts a run: `N passed, N failed, N not run`.
///
/// When some of the failed cases crashed or passed unexpectedly, the failed count is broken
/// down in parentheses, and expected failures are counted at the end, when there are any:
/// `38 passed, 3 failed (1 crash, 1 unexpected pass), 2 not run, 4 expected failures`.
pub fn summary_line(s: &Summary) -> String {
    let mut breakdown = Vec::new();
    if s.crashed > 0 {
        breakdown.push(counted(s.crashed, "crash", "crashes"));
    }
    if s.unexpected_passes > 0 {
        breakdown.push(counted(
            s.unexpected_passes,
            "unexpected pass",
            "unexpected passes",
        ));
    }
    let breakdown = if breakdown.is_empty() {
        String::new()
    } else {
        format!(" ({})", breakdown.join(", "))
    };
    let expected = if s.expected_failures > 0 {
        format!(
            ", {}",
            counted(s.expected_failures, "expected failure", "expected failures")
        )
    } else {
        String::new()
    };
    format!(
        "{} passed, {} failed{breakdown}, {} not run{expected}",
        s.passed, s.failed, s.not_run
    )
}

/// Prints a run for people, as it happens.
///
/// Feed it every [`RunEvent`] through [`observe`](Self::observe) (for instance from the observer
/// closure given to [`run_suite`](crate::run_suite)), then call [`finish`](Self::finish) with the
/// report. Each case prints as
///
/// ```text
/// data::send_recv ... ok (1.2 ms)
/// data::rdma_read ... FAILED (3.0 ms)
///     expected 1 completion, got 0 before the deadline
/// state::iwarp_close ... not run: written for the Iwarp state model; the device uses InfiniBand
/// data::rdma_write ... CRASH (12.0 ms)
///     killed by signal 11 (SIGSEGV)
/// data::send_recv ... XFAIL (5.01 s): no WR ever executes on a dead device (dead.expect:3)
///     FAILED: expected 1 completions, got 0 before the deadline: []
/// device::ports ... XPASS (0.4 ms): expectation out of date: ports are not listed (dead.expect:4)
/// ```
///
/// `CRASH` is a case whose process died or hung (with `--isolate`); `XFAIL` a case listed in the
/// expectations file that did not pass, with the written reason, where it is written, and the
/// actual outcome indented below; `XPASS` a listed case that passed.
///
/// The case name is written (and flushed) when the case starts, so a case that hangs is visible.
/// Write errors do not interrupt the run: the first one is kept, later output is dropped, and
/// [`finish`](Self::finish) returns it.
#[derive(Debug)]
pub struct HumanPrinter<W: Write> {
    out: W,
    strict: bool,
    /// Name of a case whose start was printed and whose result was not yet.
    pending: Option<String>,
    /// Whether any case line was printed (the summary is then set off by a blank line).
    printed_case: bool,
    error: Option<io::Error>,
}

impl<W: Write> HumanPrinter<W> {
    /// A printer writing to `out`, judging the result non-strictly (see
    /// [`SuiteReport::is_success`]).
    pub fn new(out: W) -> Self {
        HumanPrinter {
            out,
            strict: false,
            pending: None,
            printed_case: false,
            error: None,
        }
    }

    /// Judges the result as `--strict` does: a case that did not run makes the run fail.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Runs `f` on the output unless an earlier write failed; keeps the first error.
    fn emit(&mut self, f: impl FnOnce(&mut W) -> io::Result<()>) {
        if self.error.is_none()
            && let Err(e) = f(&mut self.out)
        {
            self.error = Some(e);
        }
    }

    /// Prints a header line naming what is about to run: provider, device and number of cases.
    pub fn start(&mut self, provider: &str, device: &str, cases: usize) {
        let noun = if cases == 1 { "case" } else { "cases" };
        self.emit(|out| {
            writeln!(
                out,
                "running {cases} {noun} against provider {provider}, device {device}\n"
            )
        });
    }

    /// Prints one event: the case name when it starts, its outcome when it finishes.
    pub fn observe(&mut self, event: RunEvent<'_>) {
        match event {
            RunEvent::Started { name } => {
                self.printed_case = true;
                let unfinished = self.pending.replace(name.to_string());
                self.emit(|out| {
                    if unfinished.is_some() {
                        // A case started without the previous one finishing: end its line.
                        writeln!(out)?;
                    }
                    write!(out, "{name} ... ")?;
                    out.flush()
                });
            }
            RunEvent::Finished(case) => {
                self.printed_case = true;
                let pending = self.pending.take();
                self.emit(|out| {
                    match pending {
                        Some(p) if p == case.name => {}
                        Some(_) => write!(out, "\n{} ... ", case.name)?,
                        None => write!(out, "{} ... ", case.name)?,
                    }
                    write_outcome(out, case)?;
                    out.flush()
                });
            }
        }
    }

    /// Prints the summary block of `report`, flushes, and returns the output, or the first write
    /// error met since the printer was made.
    ///
    /// The block lists the cases that fail the run again (crashed ones followed by `(CRASH)`,
    /// unexpected passes by `(XPASS)`), then the [`summary_line`], a line with the provider,
    /// device and total time, and `result: ok` or `result: FAILED`.
    pub fn finish(mut self, report: &SuiteReport) -> io::Result<W> {
        let s = report.summary();
        let strict = self.strict;
        let pending = self.pending.take();
        let printed_case = self.printed_case;
        self.emit(|out| {
            if pending.is_some() {
                writeln!(out)?;
            }
            if printed_case {
                writeln!(out)?;
            }
            let failed: Vec<(&CaseReport, Verdict)> = report
                .cases
                .iter()
                .map(|c| (c, c.verdict()))
                .filter(|(_, v)| v.is_failure())
                .collect();
            if !failed.is_empty() {
                writeln!(out, "failures:")?;
                for (c, verdict) in failed {
                    match verdict {
                        Verdict::Failed => writeln!(out, "    {}", c.name)?,
                        _ => writeln!(out, "    {} ({})", c.name, verdict.label())?,
                    }
                }
                writeln!(out)?;
            }
            writeln!(out, "{}", summary_line(&s))?;
            writeln!(
                out,
                "provider {}, device {}, total time {}",
                report.provider,
                report.device,
                format_duration(report.duration)
            )?;
            let verdict = if report.is_success(strict) {
                "ok".to_string()
            } else if s.failed > 0 {
                "FAILED".to_string()
            } else {
                format!(
                    "FAILED (strict: {} {} not run)",
                    s.not_run,
                    if s.not_run == 1 { "case" } else { "cases" }
                )
            };
            writeln!(out, "result: {verdict}")?;
            out.flush()
        });
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Writes each line of `text` indented by four spaces, the first one after `first`.
fn write_indented<W: Write>(out: &mut W, first: &str, text: &str) -> io::Result<()> {
    for (i, line) in text.lines().enumerate() {
        let prefix = if i == 0 { first } else { "" };
        writeln!(out, "    {prefix}{line}")?;
    }
    Ok(())
}

/// Writes the outcome part of a case line (after `name ... `), and an indented reason for a
/// failure.
fn write_outcome<W: Write>(out: &mut W, case: &CaseReport) -> io::Result<()> {
    let time = format_duration(case.duration);
    match (&case.outcome, &case.expectation) {
        (Outcome::Passed, None) => writeln!(out, "ok ({time})"),
        (Outcome::Failed(reason), None) => {
            writeln!(out, "FAILED ({time})")?;
            write_indented(out, "", reason)
        }
        (Outcome::Crashed(reason), None) => {
            writeln!(out, "CRASH ({time})")?;
            write_indented(out, "", reason)
        }
        (Outcome::NotRun(reason), None) => {
            let mut lines = reason.lines();
            writeln!(out, "not run: {}", lines.next().unwrap_or(""))?;
            for line in lines {
                writeln!(out, "    {line}")?;
            }
            Ok(())
        }
        (Outcome::Passed, Some(e)) => writeln!(
            out,
            "XPASS ({time}): expectation out of date: {} ({})",
            e.reason,
            e.location()
        ),
        (actual, Some(e)) => {
            writeln!(out, "XFAIL ({time}): {} ({})", e.reason, e.location())?;
            let label = format!("{}: ", actual.label());
            write_indented(out, &label, actual.reason().unwrap_or_default())
        }
    }
}

/// Version of the JSON document [`to_json`] writes; raised if a field changes meaning or goes
/// away (adding a field does not raise it).
///
/// Version 2 added the outcomes `crashed`, `expected_failure` and `unexpected_pass`, the case
/// fields `actual_outcome` and `expectation`, and the summary fields `crashed`,
/// `expected_failures` and `unexpected_passes`; `summary.failed` counts crashes and unexpected
/// passes too.
pub const JSON_FORMAT_VERSION: u32 = 2;

/// The JSON document: the report plus its summary, with fixed field names.
#[derive(Serialize)]
struct JsonReport<'a> {
    format_version: u32,
    provider: &'a str,
    device: &'a str,
    duration: f64,
    summary: Summary,
    cases: &'a [CaseReport],
}

impl<'a> JsonReport<'a> {
    fn new(report: &'a SuiteReport) -> Self {
        JsonReport {
            format_version: JSON_FORMAT_VERSION,
            provider: &report.provider,
            device: &report.device,
            duration: report.duration.as_secs_f64(),
            summary: report.summary(),
            cases: &report.cases,
        }
    }
}

/// The report as pretty-printed JSON.
///
/// ```json
/// {
///   "format_version": 2,
///   "provider": "mock",
///   "device": "mock0",
///   "duration": 0.0123,
///   "summary": { "passed": 40, "failed": 3, "not_run": 2, "crashed": 1,
///                "expected_failures": 1, "unexpected_passes": 1 },
///   "cases": [
///     { "name": "data::send_recv", "description": "...", "outcome": "passed", "duration": 0.0012 },
///     { "name": "data::rdma_read", "description": "...", "outcome": "failed", "reason": "...", "duration": 0.003 },
///     { "name": "state::iwarp_close", "description": "...", "outcome": "not_run", "reason": "...", "duration": 0.0 },
///     { "name": "data::rdma_write", "description": "...", "outcome": "crashed",
///       "reason": "killed by signal 11 (SIGSEGV)", "duration": 0.012 },
///     { "name": "data::zero_length_messages", "description": "...", "outcome": "expected_failure",
///       "reason": "expected 1 completions, got 0 ...", "actual_outcome": "failed",
///       "expectation": { "pattern": "data::*", "reason": "no WR ever executes",
///                        "file": "dead.expect", "line": 3 },
///       "duration": 5.01 },
///     { "name": "device::ports", "description": "...", "outcome": "unexpected_pass",
///       "reason": "expectation out of date: ports are not listed", "actual_outcome": "passed",
///       "expectation": { "pattern": "device::ports", "reason": "ports are not listed",
///                        "file": "dead.expect", "line": 4 },
///       "duration": 0.0004 }
///   ]
/// }
/// ```
///
/// Durations are in seconds. `outcome` is the case's [`Verdict`]: `passed`, `failed`, `not_run`,
/// `crashed` (the child process running the case died or hung, with `--isolate`),
/// `expected_failure` (listed in the expectations file, and failed, did not run or crashed) or
/// `unexpected_pass` (listed, and passed). `reason` is present for every outcome but `passed`:
/// for `expected_failure` it is the actual failure's reason, for `unexpected_pass` it is
/// `expectation out of date: ` and the written reason. `actual_outcome` (`passed`, `failed`,
/// `not_run` or `crashed`) and `expectation` (the line of the expectations file that lists the
/// case) are present for listed cases only.
///
/// In `summary`, each case counts in one of `passed`, `failed`, `not_run` and
/// `expected_failures`; `failed` counts the cases that fail the run (outcomes `failed`,
/// `crashed` and `unexpected_pass`), `crashed` and `unexpected_passes` count those two again.
pub fn to_json(report: &SuiteReport) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&JsonReport::new(report))
}

/// Writes [`to_json`]'s document to `out`, followed by a newline.
pub fn write_json<W: Write>(report: &SuiteReport, mut out: W) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, &JsonReport::new(report))?;
    writeln!(out)?;
    out.flush()
}

/// The JUnit name of the suite run against `device` of `provider`:
/// `anyverbs-conform.<provider>.<device>`.
pub fn junit_suite_name(provider: &str, device: &str) -> String {
    format!("anyverbs-conform.{provider}.{device}")
}

/// The group of a case name: what comes before the first `::` (`data` for `data::send_recv`),
/// or the whole name if it has none.
pub fn case_group(name: &str) -> &str {
    name.split_once("::").map_or(name, |(group, _)| group)
}

/// The report as a JUnit document: one `<testsuite>` named by [`junit_suite_name`], with the
/// provider and device as properties, and one `<testcase>` per case (`classname` its
/// [`case_group`], `name` the full case name, `time` its duration):
///
/// - a failed case has a `<failure>` whose message and text are the reason;
/// - a crashed case has an `<error type="crash">` whose message and text are the reason (CI
///   systems show errors as failures; the suite's `errors` attribute counts them);
/// - a case that did not run is `<skipped>` with the reason as message;
/// - an expected failure is `<skipped type="expected_failure">` (as pytest writes an `xfail`)
///   with the message `expected failure: <written reason> (FILE:LINE)` and, as text, the actual
///   outcome and its reason (`FAILED: ...`): CI systems show it as skipped, with the reason,
///   neither hiding it among the passes nor failing the build;
/// - an unexpected pass has a `<failure type="unexpected_pass">` with the message
///   `unexpected pass: expectation out of date: <written reason> (FILE:LINE)`.
///
/// Skipped cases (not run and expected failures) are counted in the suite's `skipped` (and
/// `disabled`) attribute.
pub fn junit_report(report: &SuiteReport) -> Report {
    let mut suite = TestSuite::new(junit_suite_name(&report.provider, &report.device));
    suite.set_time(report.duration);
    suite.add_property(Property::new("provider", report.provider.as_str()));
    suite.add_property(Property::new("device", report.device.as_str()));
    for case in &report.cases {
        let status = match (&case.outcome, &case.expectation) {
            (Outcome::Passed, None) => TestCaseStatus::success(),
            (Outcome::Failed(reason), None) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                // The message attribute loses line breaks in most XML readers; the element's
                // text keeps the reason exactly.
                s.set_message(reason.as_str());
                s.set_description(reason.as_str());
                s
            }
            (Outcome::Crashed(reason), None) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_type("crash");
                s.set_message(reason.as_str());
                s.set_description(reason.as_str());
                s
            }
            (Outcome::NotRun(reason), None) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(reason.as_str());
                s
            }
            (Outcome::Passed, Some(e)) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_type("unexpected_pass");
                let message = format!(
                    "unexpected pass: expectation out of date: {} ({})",
                    e.reason,
                    e.location()
                );
                s.set_message(message.as_str());
                s.set_description(message);
                s
            }
            (actual, Some(e)) => {
                let mut s = TestCaseStatus::skipped();
                s.set_type("expected_failure");
                s.set_message(format!("expected failure: {} ({})", e.reason, e.location()));
                s.set_description(format!(
                    "{}: {}",
                    actual.label(),
                    actual.reason().unwrap_or_default()
                ));
                s
            }
        };
        let mut tc = TestCase::new(case.name.as_str(), status);
        tc.set_classname(case_group(&case.name));
        tc.set_time(case.duration);
        suite.add_test_case(tc);
    }
    // quick-junit counts skipped cases as `disabled`; many readers look for `skipped`.
    let summary = report.summary();
    let skipped = summary.not_run + summary.expected_failures;
    suite
        .extra
        .insert("skipped".into(), skipped.to_string().into());
    let mut doc = Report::new("anyverbs-conform");
    doc.set_time(report.duration);
    doc.add_test_suite(suite);
    doc
}

/// Writes [`junit_report`]'s document to `out` as XML.
pub fn write_junit<W: Write>(
    report: &SuiteReport,
    mut out: W,
) -> Result<(), quick_junit::SerializeError> {
    junit_report(report).serialize(&mut out)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::expect::Expectation;

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
            pattern: pattern.into(),
            reason: reason.into(),
            file: "dead.expect".into(),
            line,
        }
    }

    /// One case of every verdict: passed, failed, not run, crashed, two expected failures (a
    /// failure and a crash) and an unexpected pass.
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
                listed(
                    "data::d",
                    Outcome::Failed("got 0\nof 1".into()),
                    "data::d",
                    "never executes",
                    3,
                ),
                listed(
                    "data::e",
                    Outcome::Crashed("killed after 40 s".into()),
                    "data::e*",
                    "hangs",
                    4,
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
                failed: 3,
                not_run: 1,
                crashed: 1,
                expected_failures: 2,
                unexpected_passes: 1,
            }
        );
        assert_eq!(
            summary_line(&s),
            "1 passed, 3 failed (1 crash, 1 unexpected pass), 1 not run, 2 expected failures"
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
    fn human_shows_crash_xfail_and_xpass() {
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
        let xfail = at("data::d ... XFAIL (1.0 ms): never executes (dead.expect:3)");
        assert_eq!(lines[xfail + 1], "    FAILED: got 0");
        assert_eq!(lines[xfail + 2], "    of 1");
        let xfail = at("data::e ... XFAIL (1.0 ms): hangs (dead.expect:4)");
        assert_eq!(lines[xfail + 1], "    CRASH: killed after 40 s");
        at("device::ports ... XPASS (1.0 ms): expectation out of date: no ports (dead.expect:5)");
        let failures = at("failures:");
        assert_eq!(
            lines[failures + 1..failures + 4],
            [
                "    data::a",
                "    data::c (CRASH)",
                "    device::ports (XPASS)"
            ]
        );
        assert_eq!(lines[failures + 4], "");
        at("1 passed, 3 failed (1 crash, 1 unexpected pass), 1 not run, 2 expected failures");
        assert_eq!(lines.last(), Some(&"result: FAILED"));
    }

    #[test]
    fn expected_failures_alone_succeed_even_strictly() {
        let mut r = every_verdict();
        r.cases.retain(|c| {
            c.expectation.is_some() && !matches!(c.outcome, Outcome::Passed)
                || c.outcome == Outcome::Passed && c.expectation.is_none()
        });
        assert_eq!(r.cases.len(), 3);
        assert!(r.is_success(true));
        let text = human(&r, true, true);
        assert!(
            text.contains("\n1 passed, 0 failed, 0 not run, 2 expected failures\n"),
            "{text}"
        );
        assert!(text.ends_with("result: ok\n"), "{text}");
        assert!(!text.contains("failures:"), "{text}");
    }

    #[test]
    fn json_shows_every_verdict() {
        let v: serde_json::Value =
            serde_json::from_str(&to_json(&every_verdict()).unwrap()).unwrap();
        assert_eq!(v["format_version"], 2);
        let summary = &v["summary"];
        for (field, n) in [
            ("passed", 1),
            ("failed", 3),
            ("not_run", 1),
            ("crashed", 1),
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
                "expected_failure",
                "expected_failure",
                "unexpected_pass"
            ]
        );
        // Unlisted cases have neither actual_outcome nor expectation.
        for c in &cases[..4] {
            assert!(c.get("actual_outcome").is_none(), "{c}");
            assert!(c.get("expectation").is_none(), "{c}");
        }
        assert_eq!(
            cases[3]["reason"],
            "killed by signal 11 (SIGSEGV)\nlast words"
        );
        assert_eq!(cases[4]["reason"], "got 0\nof 1");
        assert_eq!(cases[4]["actual_outcome"], "failed");
        assert_eq!(
            cases[4]["expectation"],
            serde_json::json!({
                "pattern": "data::d",
                "reason": "never executes",
                "file": "dead.expect",
                "line": 3
            })
        );
        assert_eq!(cases[5]["actual_outcome"], "crashed");
        assert_eq!(cases[5]["expectation"]["pattern"], "data::e*");
        assert_eq!(cases[6]["actual_outcome"], "passed");
        assert_eq!(cases[6]["reason"], "expectation out of date: no ports");
        assert_eq!(cases[6]["expectation"]["line"], 5);
    }

    #[test]
    fn junit_shows_crash_as_error_xfail_as_skipped_and_xpass_as_failure() {
        let mut buf = Vec::new();
        write_junit(&every_verdict(), &mut buf).unwrap();
        let xml = String::from_utf8(buf).unwrap();
        assert!(xml.contains(r#"failures="2""#), "{xml}");
        assert!(xml.contains(r#"errors="1""#), "{xml}");
        assert!(xml.contains(r#"skipped="3""#), "{xml}");
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
        match status("data::c") {
            TestCaseStatus::NonSuccess {
                kind, message, ty, ..
            } => {
                assert_eq!(*kind, NonSuccessKind::Error);
                assert_eq!(text(ty).as_deref(), Some("crash"));
                assert_eq!(
                    text(message).as_deref(),
                    Some("killed by signal 11 (SIGSEGV)\nlast words")
                );
            }
            other => panic!("expected an error, got {other:?}"),
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
    }
}
