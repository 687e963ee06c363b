//! Runs cases against one device of one provider and collects a [`SuiteReport`].

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::Provider;
use serde::Serialize;

use crate::case::{Case, CaseError};
use crate::ctx::Ctx;
use crate::expect::Expectation;

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The provider did what the case requires.
    Passed,
    /// The provider broke the contract; the reason says how.
    Failed(String),
    /// The case could not run on this device; the reason says why.
    NotRun(String),
    /// The process running the case died or hung (only with `--isolate`, where each case runs
    /// in a child process; see [`isolate`](crate::isolate)); the reason says how: the signal,
    /// the exit status or the time after which it was killed, and the end of its stderr.
    /// Counted as a failure.
    Crashed(String),
}

impl Outcome {
    /// A short label: `ok`, `FAILED`, `not run`, `CRASH`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed(_) => "FAILED",
            Outcome::NotRun(_) => "not run",
            Outcome::Crashed(_) => "CRASH",
        }
    }

    /// The name of the outcome in the JSON report: `passed`, `failed`, `not_run`, `crashed`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::NotRun(_) => "not_run",
            Outcome::Crashed(_) => "crashed",
        }
    }

    /// The reason, for every outcome but [`Passed`](Outcome::Passed).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Passed => None,
            Outcome::Failed(r) | Outcome::NotRun(r) | Outcome::Crashed(r) => Some(r),
        }
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
    /// Did not run, and not expected to fail.
    NotRun,
    /// Crashed (see [`Outcome::Crashed`]), and not expected to fail.
    Crashed,
    /// Expected to fail, and failed, did not run or crashed. Does not fail the run, even with
    /// `--strict`.
    ExpectedFailure,
    /// Expected to fail, but passed: the expectation is out of date. Fails the run.
    UnexpectedPass,
}

impl Verdict {
    /// A short label for people: `ok`, `FAILED`, `not run`, `CRASH`, `XFAIL`, `XPASS`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Passed => "ok",
            Verdict::Failed => "FAILED",
            Verdict::NotRun => "not run",
            Verdict::Crashed => "CRASH",
            Verdict::ExpectedFailure => "XFAIL",
            Verdict::UnexpectedPass => "XPASS",
        }
    }

    /// The name in the JSON report (the case's `outcome` field): `passed`, `failed`, `not_run`,
    /// `crashed`, `expected_failure`, `unexpected_pass`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::NotRun => "not_run",
            Verdict::Crashed => "crashed",
            Verdict::ExpectedFailure => "expected_failure",
            Verdict::UnexpectedPass => "unexpected_pass",
        }
    }

    /// Whether a case with this verdict fails the run whatever `--strict` says: failed,
    /// crashed, or passed unexpectedly.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Verdict::Failed | Verdict::Crashed | Verdict::UnexpectedPass
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
    /// The line of the expectations file (`--expect`) that lists the case as known not to
    /// pass, if any; see [`Expectations::apply`](crate::expect::Expectations::apply).
    pub expectation: Option<Expectation>,
}

impl CaseReport {
    /// What the outcome means for the run, given the expectation.
    pub fn verdict(&self) -> Verdict {
        match (&self.outcome, self.expectation.is_some()) {
            (Outcome::Passed, false) => Verdict::Passed,
            (Outcome::Failed(_), false) => Verdict::Failed,
            (Outcome::NotRun(_), false) => Verdict::NotRun,
            (Outcome::Crashed(_), false) => Verdict::Crashed,
            (Outcome::Passed, true) => Verdict::UnexpectedPass,
            (_, true) => Verdict::ExpectedFailure,
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
    /// One report per case, in run order.
    pub cases: Vec<CaseReport>,
    /// Wall time of the whole run.
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
}

/// Counts of a [`SuiteReport`], by [`Verdict`].
///
/// Every case counts in exactly one of `passed`, `failed`, `not_run` and `expected_failures`.
/// `failed` counts every case that fails the run whatever `--strict` says, so it includes the
/// `crashed` and `unexpected_passes` cases, which are also counted on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Cases that passed (and were not expected to fail).
    pub passed: usize,
    /// Cases that fail the run: failed, crashed or passed unexpectedly.
    pub failed: usize,
    /// Cases that did not run (and were not expected to fail).
    pub not_run: usize,
    /// Of `failed`, the cases that crashed.
    pub crashed: usize,
    /// Cases expected to fail (failed, not run or crashed) that did; they do not fail the run.
    pub expected_failures: usize,
    /// Of `failed`, the cases expected to fail that passed.
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
                Verdict::ExpectedFailure => s.expected_failures += 1,
                Verdict::UnexpectedPass => {
                    s.failed += 1;
                    s.unexpected_passes += 1;
                }
            }
        }
        s
    }

    /// Whether the run counts as a success: nothing failed, crashed or passed unexpectedly, and
    /// with `strict`, nothing was left unrun (an expected failure never fails the run).
    pub fn is_success(&self, strict: bool) -> bool {
        let s = self.summary();
        s.failed == 0 && (!strict || s.not_run == 0)
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Device under test.
    pub device: String,
    /// Only cases whose name matches (see [`matches_pattern`]).
    pub pattern: Option<String>,
    /// Longest any single wait inside a case may take.
    pub case_timeout: Duration,
}

impl SuiteOptions {
    /// All cases on `device`, with the default 5 s wait bound.
    pub fn new(device: impl Into<String>) -> Self {
        SuiteOptions {
            device: device.into(),
            pattern: None,
            case_timeout: Duration::from_secs(5),
        }
    }
}

/// Progress of a run, for output that shows each case as it runs.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A case is about to run.
    Started {
        /// Its name.
        name: &'a str,
    },
    /// A case finished.
    Finished(&'a CaseReport),
}

/// Whether a case name matches a `--case` pattern: a glob (`*` any run, `?` one character) if
/// the pattern has wildcards, a substring otherwise.
pub fn matches_pattern(name: &str, pattern: &str) -> bool {
    if pattern.contains(['*', '?']) {
        wildmatch::WildMatch::new(pattern).matches(name)
    } else {
        name.contains(pattern)
    }
}

/// Runs one case: checks its needs, catches panics, and times it.
pub fn run_case<P: Provider>(ctx: &Ctx<'_, P>, case: &Case<P>) -> CaseReport {
    let start = Instant::now();
    let info = ctx.info();
    let outcome = match case.needs.missing(info.caps, info.state_model) {
        Some(reason) => Outcome::NotRun(reason),
        None => match panic::catch_unwind(AssertUnwindSafe(|| (case.run)(ctx))) {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(CaseError::Failed(m))) => Outcome::Failed(m),
            Ok(Err(CaseError::NotRun(m))) => Outcome::NotRun(m),
            Err(payload) => Outcome::Failed(format!("panicked: {}", panic_message(&payload))),
        },
    };
    CaseReport {
        name: case.name.to_string(),
        description: case.description.to_string(),
        outcome,
        duration: start.elapsed(),
        expectation: None,
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs every selected case of `cases` against the device named in `options`, each on a fresh
/// provider made by `make` (so a case that resets or unplugs the device, or leaves anything
/// behind, cannot affect the next one).
///
/// Fails (before running anything) only if the first provider cannot be made or the device
/// cannot be found. A case whose own provider cannot be made fails with the reason.
pub fn run_suite<P: Provider>(
    make: &dyn Fn() -> anyverbs::Result<P>,
    cases: &[Case<P>],
    options: &SuiteOptions,
    observer: &mut dyn FnMut(RunEvent<'_>),
) -> anyverbs::Result<SuiteReport> {
    let start = Instant::now();
    let probe = make()?;
    let info = probe
        .devices()?
        .into_iter()
        .find(|d| d.identity.name == options.device)
        .ok_or_else(|| {
            anyverbs::Error::new(
                anyverbs::ErrorKind::NotFound,
                format!(
                    "provider {} has no device named {:?}",
                    probe.name(),
                    options.device
                ),
            )
        })?;
    let provider_name = probe.name().to_string();
    drop(probe);
    let mut reports = Vec::new();
    for case in cases {
        if let Some(p) = &options.pattern
            && !matches_pattern(case.name, p)
        {
            continue;
        }
        observer(RunEvent::Started { name: case.name });
        let report = match make() {
            Ok(provider) => {
                let ctx = Ctx::new(
                    Arc::new(provider),
                    &options.device,
                    info.clone(),
                    options.case_timeout,
                );
                run_case(&ctx, case)
            }
            Err(e) => CaseReport {
                name: case.name.to_string(),
                description: case.description.to_string(),
                outcome: Outcome::Failed(format!("cannot make a fresh provider for the case: {e}")),
                duration: Duration::ZERO,
                expectation: None,
            },
        };
        observer(RunEvent::Finished(&report));
        reports.push(report);
    }
    Ok(SuiteReport {
        provider: provider_name,
        device: options.device.clone(),
        cases: reports,
        duration: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;

    use anyverbs::Fault;
    use anyverbs_provider_mock::MockProvider;

    use crate::case::{CaseResult, Needs};

    fn unplug(ctx: &Ctx<'_, MockProvider>) -> CaseResult {
        ctx.provider().inject(ctx.device_name(), &Fault::Unplug)?;
        Ok(())
    }

    fn open(ctx: &Ctx<'_, MockProvider>) -> CaseResult {
        ctx.open().map(drop)
    }

    #[test]
    fn every_case_gets_a_fresh_provider() {
        let case = |name, run| Case {
            name,
            description: "",
            needs: Needs::NOTHING,
            run,
        };
        let cases = [
            case("unplug", unplug as fn(&Ctx<'_, MockProvider>) -> CaseResult),
            case("open", open),
        ];
        let made = Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            Ok(MockProvider::new())
        };
        let report = run_suite(&make, &cases, &SuiteOptions::new("mock0"), &mut |_| {}).unwrap();
        let outcomes: Vec<&Outcome> = report.cases.iter().map(|c| &c.outcome).collect();
        assert_eq!(outcomes, [&Outcome::Passed, &Outcome::Passed]);
        assert_eq!(
            made.get(),
            3,
            "one provider to find the device, then one per case"
        );
    }

    #[test]
    fn patterns_are_globs_or_substrings() {
        assert!(matches_pattern("data::send_recv", "send"));
        assert!(matches_pattern("data::send_recv", "data::*"));
        assert!(!matches_pattern("data::send_recv", "bad::*"));
        assert!(matches_pattern("data::send_recv", "data::send_rec?"));
    }
}
