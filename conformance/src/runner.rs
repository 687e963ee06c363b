//! Runs cases against one device of one provider and collects a [`SuiteReport`].

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::Provider;
use serde::Serialize;

use crate::case::{Case, CaseError};
use crate::ctx::Ctx;

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
}

impl Outcome {
    /// A short label: `ok`, `FAILED`, `not run`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed(_) => "FAILED",
            Outcome::NotRun(_) => "not run",
        }
    }
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// What the case checks.
    pub description: String,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it ran.
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,
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

/// Counts of a [`SuiteReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Cases that did not run.
    pub not_run: usize,
}

impl SuiteReport {
    /// Counts by outcome.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.cases {
            match c.outcome {
                Outcome::Passed => s.passed += 1,
                Outcome::Failed(_) => s.failed += 1,
                Outcome::NotRun(_) => s.not_run += 1,
            }
        }
        s
    }

    /// Whether the run counts as a success: nothing failed, and with `strict`, nothing was left
    /// unrun.
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
