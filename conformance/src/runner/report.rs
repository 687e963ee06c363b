//! What a run found: how each case ended ([`Outcome`]), what that means once the expectations
//! file is taken into account ([`Verdict`]), and the run's report ([`SuiteReport`]).

use std::time::Duration;

use serde::Serialize;

use crate::expect::{Expectation, ExpectationKind};

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The provider did what the case requires.
    Passed,
    /// The provider broke the contract; the reason says how.
    Failed(String),
    /// The case did not run: the device cannot run it, an exclusion says so, or the run stopped
    /// before it; the reason says which.
    NotRun(String),
    /// The process running the case died (only with `--isolate`, where each case runs in a
    /// child process; see [`isolate`](crate::isolate)); the reason says how: the signal or the
    /// exit status, and the end of its standard error. Counted as a failure.
    Crashed(String),
    /// The case was still running past its limit (see
    /// [`SuiteOptions::case_limit`](crate::SuiteOptions::case_limit)): a provider that ignores
    /// a deadline. Counted as a failure; in-process, the run stops there.
    Hung(String),
}

impl Outcome {
    /// A short label: `ok`, `FAILED`, `not run`, `CRASH`, `HUNG`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed(_) => "FAILED",
            Outcome::NotRun(_) => "not run",
            Outcome::Crashed(_) => "CRASH",
            Outcome::Hung(_) => "HUNG",
        }
    }

    /// The name of the outcome in the JSON report: `passed`, `failed`, `not_run`, `crashed`,
    /// `hung`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::NotRun(_) => "not_run",
            Outcome::Crashed(_) => "crashed",
            Outcome::Hung(_) => "hung",
        }
    }

    /// The reason, for every outcome but [`Passed`](Outcome::Passed).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(r) | Outcome::NotRun(r) | Outcome::Crashed(r) | Outcome::Hung(r) => {
                Some(r)
            }
        }
    }

    /// Whether the case ran and did not pass: failed, crashed or hung.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::Crashed(_) | Outcome::Hung(_)
        )
    }
}

/// What a case's result means for the run, once its [`Expectation`] (if any) is taken into
/// account; see [`CaseReport::verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Passed, and not expected to fail.
    Passed,
    /// Failed, and not expected to.
    Failed,
    /// Did not run, and no exclusion says why. Fails the run with `--strict`.
    NotRun,
    /// Crashed (see [`Outcome::Crashed`]), and not expected to.
    Crashed,
    /// Hung (see [`Outcome::Hung`]), and not expected to.
    Hung,
    /// Not run, as an exclusion of the expectations file says: the case cannot run on this
    /// device, and someone wrote down why. Accepted by `--strict`.
    Excluded,
    /// Listed as an expected failure, and it ran and failed, crashed or hung. Does not fail the
    /// run, even with `--strict`.
    ExpectedFailure,
    /// Listed in the expectations file, but it passed: the expectation is out of date. Fails
    /// the run.
    UnexpectedPass,
}

impl Verdict {
    /// A short label for people: `ok`, `FAILED`, `not run`, `CRASH`, `HUNG`, `excluded`,
    /// `XFAIL`, `XPASS`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::NotRun => "not run",
            Verdict::Crashed => "CRASH",
            Verdict::Hung => "HUNG",
            Verdict::Excluded => "excluded",
            Verdict::ExpectedFailure => "XFAIL",
            Verdict::UnexpectedPass => "XPASS",
        }
    }

    /// The name in the JSON report (the case's `outcome` field): `passed`, `failed`, `not_run`,
    /// `crashed`, `hung`, `excluded`, `expected_failure`, `unexpected_pass`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::NotRun => "not_run",
            Verdict::Crashed => "crashed",
            Verdict::Hung => "hung",
            Verdict::Excluded => "excluded",
            Verdict::ExpectedFailure => "expected_failure",
            Verdict::UnexpectedPass => "unexpected_pass",
        }
    }

    /// Whether a case with this verdict fails the run whatever `--strict` says: failed,
    /// crashed, hung, or passed unexpectedly.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Verdict::Failed | Verdict::Crashed | Verdict::Hung | Verdict::UnexpectedPass
        )
    }
}

/// The result of one case.
///
/// Its JSON form (see [`report::to_json`](crate::report::to_json)) has `name`, `description`,
/// `outcome` (the [`Verdict`]'s name), `reason` (absent for a pass), `actual_outcome` and
/// `expectation` (both only for a case listed in an expectations file) and `duration`.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// What the case checks.
    pub description: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it ran.
    pub duration: Duration,
    /// The line of the expectations file (`--expect`) that lists the case, if any; see
    /// [`Expectations::apply`](crate::expect::Expectations::apply).
    pub expectation: Option<Expectation>,
}

impl CaseReport {
    /// What the outcome means for the run, given the expectation:
    ///
    /// | outcome | not listed | `xfail` | `exclude` |
    /// |---|---|---|---|
    /// | passed | passed | XPASS | XPASS |
    /// | failed, crashed, hung | failed, crashed, hung | XFAIL | failed, crashed, hung |
    /// | not run | not run | not run | excluded |
    ///
    /// An exclusion excuses only a case that did not run; an expected failure only a case that
    /// ran and failed. A listed case that passes shows the line is out of date.
    pub fn verdict(&self) -> Verdict {
        let kind = self.expectation.as_ref().map(|e| e.kind);
        match (&self.outcome, kind) {
            (Outcome::Passed, None) => Verdict::Passed,
            (Outcome::Passed, Some(_)) => Verdict::UnexpectedPass,
            (Outcome::NotRun(_), Some(ExpectationKind::Exclusion)) => Verdict::Excluded,
            (Outcome::NotRun(_), _) => Verdict::NotRun,
            (o, Some(ExpectationKind::ExpectedFailure)) if o.is_failure() => {
                Verdict::ExpectedFailure
            }
            (Outcome::Failed(_), _) => Verdict::Failed,
            (Outcome::Crashed(_), _) => Verdict::Crashed,
            (Outcome::Hung(_), _) => Verdict::Hung,
        }
    }

    /// Why the case ended as its [`verdict`](Self::verdict) says: the outcome's reason (for an
    /// expected failure, the actual failure's), `expectation out of date: <written reason>` for
    /// an unexpected pass, nothing for a pass.
    pub fn reason(&self) -> Option<String> {
        match (&self.outcome, &self.expectation) {
            (Outcome::Passed, Some(e)) => Some(format!("expectation out of date: {}", e.reason)),
            (outcome, _) => outcome.reason().map(str::to_string),
        }
    }
}

/// The JSON form of a [`CaseReport`], with fixed field names.
#[derive(Serialize)]
struct CaseJson<'a> {
    name: &'a str,
    description: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expectation: Option<&'a Expectation>,
    duration: f64,
}

impl Serialize for CaseReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CaseJson {
            name: &self.name,
            description: &self.description,
            outcome: self.verdict().name(),
            reason: self.reason(),
            actual_outcome: self.expectation.as_ref().map(|_| self.outcome.name()),
            expectation: self.expectation.as_ref(),
            duration: self.duration.as_secs_f64(),
        }
        .serialize(s)
    }
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// Provider name.
    pub provider: String,
    /// Device name.
    pub device: String,
    /// One report per case, in run order (cases the run did not reach included, as not run).
    pub cases: Vec<CaseReport>,
    /// Wall time of the whole run.
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
    /// Why the run stopped before its end, if it did: a case hung in-process, or the provider
    /// could not even be started and listed. A run that stopped never counts as a success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

/// Counts of a [`SuiteReport`], by [`Verdict`].
///
/// Every case counts in exactly one of `passed`, `failed`, `not_run`, `excluded` and
/// `expected_failures`. `failed` counts every case that fails the run whatever `--strict` says,
/// so it includes the `crashed`, `hung` and `unexpected_passes` cases, which are also counted on
/// their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Cases that passed (and were not listed in the expectations file).
    pub passed: usize,
    /// Cases that fail the run: failed, crashed, hung or passed unexpectedly.
    pub failed: usize,
    /// Cases that did not run, with no exclusion saying why.
    pub not_run: usize,
    /// Of `failed`, the cases that crashed.
    pub crashed: usize,
    /// Of `failed`, the cases that hung.
    pub hung: usize,
    /// Cases an exclusion kept from running; they do not fail the run, even with `--strict`.
    pub excluded: usize,
    /// Cases expected to fail that did; they do not fail the run.
    pub expected_failures: usize,
    /// Of `failed`, the cases listed in the expectations file that passed.
    pub unexpected_passes: usize,
}

impl SuiteReport {
    /// Counts by verdict.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.cases {
            match c.verdict() {
                Verdict::Passed => s.passed += 1,
                Verdict::Failed => s.failed += 1,
                Verdict::NotRun => s.not_run += 1,
                Verdict::Crashed => {
                    s.failed += 1;
                    s.crashed += 1;
                }
                Verdict::Hung => {
                    s.failed += 1;
                    s.hung += 1;
                }
                Verdict::Excluded => s.excluded += 1,
                Verdict::ExpectedFailure => s.expected_failures += 1,
                Verdict::UnexpectedPass => {
                    s.failed += 1;
                    s.unexpected_passes += 1;
                }
            }
        }
        s
    }

    /// Whether the run counts as a success: it was not stopped, nothing failed, crashed, hung
    /// or passed unexpectedly, and with `strict`, nothing was left unrun without an exclusion
    /// (an expected failure or an exclusion never fails the run).
    pub fn is_success(&self, strict: bool) -> bool {
        let s = self.summary();
        self.aborted.is_none() && s.failed == 0 && (!strict || s.not_run == 0)
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
