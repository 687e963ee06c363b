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

use crate::runner::{CaseReport, Outcome, RunEvent, SuiteReport, Summary};

/// Formats a duration for people: milliseconds with one decimal below a second (`1.2 ms`),
/// seconds with two decimals from one second on (`3.25 s`).
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// The line that counts a run: `N passed, N failed, N not run`.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "{} passed, {} failed, {} not run",
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
/// ```
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
    /// The block lists the failed cases again, then the line `N passed, N failed, N not run`,
    /// a line with the provider, device and total time, and `result: ok` or `result: FAILED`.
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
            let failed: Vec<&CaseReport> = report
                .cases
                .iter()
                .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
                .collect();
            if !failed.is_empty() {
                writeln!(out, "failures:")?;
                for c in failed {
                    writeln!(out, "    {}", c.name)?;
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

/// Writes the outcome part of a case line (after `name ... `), and an indented reason for a
/// failure.
fn write_outcome<W: Write>(out: &mut W, case: &CaseReport) -> io::Result<()> {
    let time = format_duration(case.duration);
    match &case.outcome {
        Outcome::Passed => writeln!(out, "ok ({time})"),
        Outcome::Failed(reason) => {
            writeln!(out, "FAILED ({time})")?;
            for line in reason.lines() {
                writeln!(out, "    {line}")?;
            }
            Ok(())
        }
        Outcome::NotRun(reason) => {
            let mut lines = reason.lines();
            writeln!(out, "not run: {}", lines.next().unwrap_or(""))?;
            for line in lines {
                writeln!(out, "    {line}")?;
            }
            Ok(())
        }
    }
}

/// Version of the JSON document [`to_json`] writes; raised if a field changes meaning or goes
/// away (adding a field does not raise it).
pub const JSON_FORMAT_VERSION: u32 = 1;

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
///   "format_version": 1,
///   "provider": "mock",
///   "device": "mock0",
///   "duration": 0.0123,
///   "summary": { "passed": 40, "failed": 1, "not_run": 2 },
///   "cases": [
///     { "name": "data::send_recv", "description": "...", "outcome": "passed", "duration": 0.0012 },
///     { "name": "data::rdma_read", "description": "...", "outcome": "failed", "reason": "...", "duration": 0.003 },
///     { "name": "state::iwarp_close", "description": "...", "outcome": "not_run", "reason": "...", "duration": 0.0 }
///   ]
/// }
/// ```
///
/// Durations are in seconds. `outcome` is `passed`, `failed` or `not_run`; `reason` is present
/// for the last two only.
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
/// [`case_group`], `name` the full case name, `time` its duration). A failed case has a
/// `<failure>` whose message and text are the reason; a case that did not run is `<skipped>`
/// with the reason as message, and counted in the suite's `skipped` (and `disabled`) attribute.
pub fn junit_report(report: &SuiteReport) -> Report {
    let mut suite = TestSuite::new(junit_suite_name(&report.provider, &report.device));
    suite.set_time(report.duration);
    suite.add_property(Property::new("provider", report.provider.as_str()));
    suite.add_property(Property::new("device", report.device.as_str()));
    for case in &report.cases {
        let status = match &case.outcome {
            Outcome::Passed => TestCaseStatus::success(),
            Outcome::Failed(reason) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                // The message attribute loses line breaks in most XML readers; the element's
                // text keeps the reason exactly.
                s.set_message(reason.as_str());
                s.set_description(reason.as_str());
                s
            }
            Outcome::NotRun(reason) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(reason.as_str());
                s
            }
        };
        let mut tc = TestCase::new(case.name.as_str(), status);
        tc.set_classname(case_group(&case.name));
        tc.set_time(case.duration);
        suite.add_test_case(tc);
    }
    // quick-junit counts skipped cases as `disabled`; many readers look for `skipped`.
    let skipped = report.summary().not_run;
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

    fn case(name: &str, outcome: Outcome, micros: u64) -> CaseReport {
        CaseReport {
            name: name.to_string(),
            description: format!("what {name} checks"),
            outcome,
            duration: Duration::from_micros(micros),
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
}
