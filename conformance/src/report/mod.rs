//! Output formats for a [`SuiteReport`]: a streaming human printer, JSON and JUnit XML.
//!
//! - [`HumanPrinter`] is meant to be the observer of [`run_suite`](crate::run_suite): it prints
//!   each case as it starts and finishes, then a summary block.
//! - [`to_json`] / [`write_json`] render the whole report, with its [`Summary`], as pretty JSON
//!   (fields documented on [`to_json`]).
//! - [`junit_report`] / [`write_junit`] render it as one JUnit `<testsuite>`, for CI systems.

mod human;
mod json;
mod junit;
#[cfg(test)]
mod tests;

pub use human::HumanPrinter;
pub use json::{JSON_FORMAT_VERSION, to_json, write_json};
pub use junit::{RUN_CASE_NAME, junit_report, junit_suite_name, write_junit};

use std::time::Duration;

use crate::runner::{SuiteReport, Summary};

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
/// When some of the failed cases crashed, hung or passed unexpectedly, the failed count is
/// broken down in parentheses, and excluded cases and expected failures are counted at the end,
/// when there are any:
/// `38 passed, 3 failed (1 crash, 1 hang, 1 unexpected pass), 2 not run, 5 excluded, 4 expected
/// failures`.
pub fn summary_line(s: &Summary) -> String {
    let breakdown: Vec<String> = [
        (s.crashed, "crash", "crashes"),
        (s.hung, "hang", "hangs"),
        (s.unexpected_passes, "unexpected pass", "unexpected passes"),
    ]
    .into_iter()
    .filter(|(n, _, _)| *n > 0)
    .map(|(n, one, many)| counted(n, one, many))
    .collect();
    let breakdown = if breakdown.is_empty() {
        String::new()
    } else {
        format!(" ({})", breakdown.join(", "))
    };
    let mut line = format!(
        "{} passed, {} failed{breakdown}, {} not run",
        s.passed, s.failed, s.not_run
    );
    if s.excluded > 0 {
        line.push_str(&format!(", {} excluded", s.excluded));
    }
    if s.expected_failures > 0 {
        line.push_str(&format!(
            ", {}",
            counted(s.expected_failures, "expected failure", "expected failures")
        ));
    }
    line
}

/// The group of a case name: what comes before the first `::` (`data` for `data::send_recv`),
/// or the whole name if it has none.
pub fn case_group(name: &str) -> &str {
    name.split_once("::").map_or(name, |(group, _)| group)
}

/// The one-word result of a run: `ok`, `FAILED`, `FAILED (strict: N cases not run)`, or
/// `FAILED (the run stopped)`.
pub fn result_word(report: &SuiteReport, strict: bool) -> String {
    let s = report.summary();
    if report.is_success(strict) {
        "ok".to_string()
    } else if report.aborted.is_some() && s.failed == 0 {
        "FAILED (the run stopped)".to_string()
    } else if s.failed > 0 || report.aborted.is_some() {
        "FAILED".to_string()
    } else {
        format!(
            "FAILED (strict: {} not run)",
            counted(s.not_run, "case", "cases")
        )
    }
}
