//! The report as JSON.

use std::io::{self, Write};

use serde::Serialize;

use crate::runner::{CaseReport, SuiteReport, Summary};

/// Version of the JSON document [`to_json`] writes; raised if a field changes meaning or goes
/// away (adding a field does not raise it).
///
/// - Version 2 added the outcomes `crashed`, `expected_failure` and `unexpected_pass`, the case
///   fields `actual_outcome` and `expectation`, and the summary fields `crashed`,
///   `expected_failures` and `unexpected_passes`; `summary.failed` counts crashes and
///   unexpected passes too.
/// - Version 3: a case whose process was killed for running too long is `hung`, no longer
///   `crashed`; a case an exclusion kept from running is `excluded`, and a case listed as an
///   expected failure that did not run stays `not_run` (it was an `expected_failure`); an
///   `expectation` has a `kind` (`expected_failure` or `exclusion`); the summary has `hung` and
///   `excluded`; the document has `aborted` when the run stopped early.
pub const JSON_FORMAT_VERSION: u32 = 3;

/// The JSON document: the report plus its summary, with fixed field names.
#[derive(Serialize)]
struct JsonReport<'a> {
    format_version: u32,
    provider: &'a str,
    device: &'a str,
    duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aborted: Option<&'a str>,
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
            aborted: report.aborted.as_deref(),
            summary: report.summary(),
            cases: &report.cases,
        }
    }
}

/// The report as pretty-printed JSON.
///
/// ```json
/// {
///   "format_version": 3,
///   "provider": "mock",
///   "device": "mock0",
///   "duration": 0.0123,
///   "summary": { "passed": 40, "failed": 4, "not_run": 2, "crashed": 1, "hung": 1,
///                "excluded": 1, "expected_failures": 1, "unexpected_passes": 1 },
///   "cases": [
///     { "name": "data::send_recv", "description": "...", "outcome": "passed", "duration": 0.0012 },
///     { "name": "data::rdma_read", "description": "...", "outcome": "failed", "reason": "...", "duration": 0.003 },
///     { "name": "state::iwarp_close", "description": "...", "outcome": "not_run", "reason": "...", "duration": 0.0 },
///     { "name": "data::rdma_write", "description": "...", "outcome": "crashed",
///       "reason": "killed by signal 11 (SIGSEGV)", "duration": 0.012 },
///     { "name": "drain::slow", "description": "...", "outcome": "hung",
///       "reason": "still running after 40 s ...", "duration": 40.0 },
///     { "name": "lifecycle::flap_port", "description": "...", "outcome": "excluded",
///       "reason": "excluded (rxe.expect:7): the test bed cannot take the port down",
///       "actual_outcome": "not_run",
///       "expectation": { "kind": "exclusion", "pattern": "lifecycle::flap_port",
///                        "reason": "the test bed cannot take the port down",
///                        "file": "rxe.expect", "line": 7 },
///       "duration": 0.0 },
///     { "name": "data::zero_length_messages", "description": "...", "outcome": "expected_failure",
///       "reason": "expected 1 completions, got 0 ...", "actual_outcome": "failed",
///       "expectation": { "kind": "expected_failure", "pattern": "data::*",
///                        "reason": "no WR ever executes", "file": "dead.expect", "line": 3 },
///       "duration": 5.01 },
///     { "name": "device::ports", "description": "...", "outcome": "unexpected_pass",
///       "reason": "expectation out of date: ports are not listed", "actual_outcome": "passed",
///       "expectation": { "kind": "expected_failure", "pattern": "device::ports",
///                        "reason": "ports are not listed", "file": "dead.expect", "line": 4 },
///       "duration": 0.0004 }
///   ]
/// }
/// ```
///
/// Durations are in seconds. `outcome` is the case's [`Verdict`](crate::Verdict): `passed`,
/// `failed`, `not_run`, `crashed` (the process running the case died, with `--isolate`), `hung`
/// (still running past its limit), `excluded` (an exclusion kept it from running),
/// `expected_failure` (listed as one, and failed, crashed or hung) or `unexpected_pass`
/// (listed, and passed). `reason` is present for every outcome but `passed`: for
/// `expected_failure` it is the actual failure's reason, for `unexpected_pass` it is
/// `expectation out of date: ` and the written reason. `actual_outcome` (`passed`, `failed`,
/// `not_run`, `crashed` or `hung`) and `expectation` (the line of the expectations file that
/// lists the case) are present for listed cases only.
///
/// `aborted` is present when the run stopped before its end (a case hung in-process, or the
/// provider could not even be made and listed), with why; the cases it did not reach are
/// `not_run`, and such a run never counts as a success.
///
/// In `summary`, each case counts in one of `passed`, `failed`, `not_run`, `excluded` and
/// `expected_failures`; `failed` counts the cases that fail the run (outcomes `failed`,
/// `crashed`, `hung` and `unexpected_pass`), `crashed`, `hung` and `unexpected_passes` count
/// those again.
pub fn to_json(report: &SuiteReport) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&JsonReport::new(report))
}

/// Writes [`to_json`]'s document to `out`, followed by a newline.
pub fn write_json<W: Write>(report: &SuiteReport, mut out: W) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, &JsonReport::new(report))?;
    writeln!(out)?;
    out.flush()
}
