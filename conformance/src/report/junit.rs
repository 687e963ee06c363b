//! The report as JUnit XML.

use std::io::Write;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::case_group;
use crate::runner::{CaseReport, SuiteReport, Verdict};

/// The JUnit name of the suite run against `device` of `provider`:
/// `anyverbs-conform.<provider>.<device>`.
pub fn junit_suite_name(provider: &str, device: &str) -> String {
    format!("anyverbs-conform.{provider}.{device}")
}

/// The name of the test case that stands for the run itself when it stopped early (its
/// `classname` is `run`).
pub const RUN_CASE_NAME: &str = "run::stopped";

/// A status that fails: a `<failure>` or `<error>` of `ty`, whose message and text are `text`
/// (the message attribute loses line breaks in most XML readers; the element's text keeps it
/// exactly).
fn non_success(kind: NonSuccessKind, ty: Option<&str>, text: &str) -> TestCaseStatus {
    let mut s = TestCaseStatus::non_success(kind);
    if let Some(ty) = ty {
        s.set_type(ty);
    }
    s.set_message(text);
    s.set_description(text);
    s
}

/// A `<skipped>` of `ty` with `message`.
fn skipped(ty: Option<&str>, message: String) -> TestCaseStatus {
    let mut s = TestCaseStatus::skipped();
    if let Some(ty) = ty {
        s.set_type(ty);
    }
    s.set_message(message);
    s
}

/// The JUnit status of one case.
fn status(case: &CaseReport) -> TestCaseStatus {
    let reason = case.outcome.reason().unwrap_or_default();
    let listed = case.expectation.as_ref();
    let at = listed.map_or(String::new(), |e| format!(" ({})", e.location()));
    let written = listed.map_or("", |e| e.reason.as_str());
    match case.verdict() {
        Verdict::Passed => TestCaseStatus::success(),
        Verdict::Failed => non_success(NonSuccessKind::Failure, None, reason),
        Verdict::Crashed => non_success(NonSuccessKind::Error, Some("crash"), reason),
        Verdict::Hung => non_success(NonSuccessKind::Error, Some("hang"), reason),
        Verdict::NotRun => skipped(None, reason.to_string()),
        Verdict::Excluded => skipped(Some("excluded"), format!("excluded: {written}{at}")),
        Verdict::UnexpectedPass => non_success(
            NonSuccessKind::Failure,
            Some("unexpected_pass"),
            &format!("unexpected pass: expectation out of date: {written}{at}"),
        ),
        Verdict::ExpectedFailure => {
            let mut s = skipped(
                Some("expected_failure"),
                format!("expected failure: {written}{at}"),
            );
            s.set_description(format!("{}: {reason}", case.outcome.label()));
            s
        }
    }
}

/// The report as a JUnit document: one `<testsuite>` named by [`junit_suite_name`], with the
/// provider and device as properties, and one `<testcase>` per case (`classname` its
/// [`case_group`], `name` the full case name, `time` its duration):
///
/// - a failed case has a `<failure>` whose message and text are the reason;
/// - a crashed case has an `<error type="crash">`, a hung one an `<error type="hang">`, whose
///   message and text are the reason (CI systems show errors as failures; the suite's `errors`
///   attribute counts them);
/// - a case that did not run is `<skipped>` with the reason as message; a case an exclusion
///   kept from running is `<skipped type="excluded">` with `excluded: <written reason>
///   (FILE:LINE)`;
/// - an expected failure is `<skipped type="expected_failure">` (as pytest writes an `xfail`)
///   with the message `expected failure: <written reason> (FILE:LINE)` and, as text, the actual
///   outcome and its reason (`FAILED: ...`): CI systems show it as skipped, with the reason,
///   neither hiding it among the passes nor failing the build;
/// - an unexpected pass has a `<failure type="unexpected_pass">` with the message
///   `unexpected pass: expectation out of date: <written reason> (FILE:LINE)`;
/// - a run that stopped early has one more test case, [`RUN_CASE_NAME`] (`classname` `run`),
///   with an `<error type="aborted">` saying why, so that a CI system shows the stop itself.
///
/// Skipped cases (not run, excluded and expected failures) are counted in the suite's `skipped`
/// (and `disabled`) attribute.
pub fn junit_report(report: &SuiteReport) -> Report {
    let mut suite = TestSuite::new(junit_suite_name(&report.provider, &report.device));
    suite.set_time(report.duration);
    suite.add_property(Property::new("provider", report.provider.as_str()));
    suite.add_property(Property::new("device", report.device.as_str()));
    for case in &report.cases {
        let mut tc = TestCase::new(case.name.as_str(), status(case));
        tc.set_classname(case_group(&case.name));
        tc.set_time(case.duration);
        suite.add_test_case(tc);
    }
    if let Some(why) = &report.aborted {
        let mut tc = TestCase::new(
            RUN_CASE_NAME,
            non_success(NonSuccessKind::Error, Some("aborted"), why),
        );
        tc.set_classname("run");
        suite.add_test_case(tc);
    }
    // quick-junit counts skipped cases as `disabled`; many readers look for `skipped`.
    let summary = report.summary();
    let skipped = summary.not_run + summary.excluded + summary.expected_failures;
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
