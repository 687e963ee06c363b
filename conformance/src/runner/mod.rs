//! Runs cases against one device of one provider and collects a [`SuiteReport`].
//!
//! Every case runs on a fresh provider, and — unless [`SuiteOptions::case_limit`] is `None` — on
//! a thread of its own that the runner waits for no longer than the limit. A case still running
//! then is reported as [`Outcome::Hung`] and the run stops there: the stuck thread is abandoned,
//! never waited on, and no further case runs beside a provider that may hold its own locks
//! (the report says so in [`SuiteReport::aborted`]). Running each case in a process of its own
//! ([`isolate`](crate::isolate)) survives hangs and crashes and goes on.

mod report;

pub use report::{CaseReport, Outcome, SuiteReport, Summary, Verdict};

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyverbs::{DeviceInfo, Provider};

use crate::case::{Case, CaseError};
use crate::ctx::Ctx;
use crate::expect::Expectations;

/// How many times the wait bound (`--timeout`) a whole case may take by default (see
/// [`case_limit_for`]).
pub const CASE_LIMIT_FACTOR: u32 = 6;
/// What a whole case may take beyond [`CASE_LIMIT_FACTOR`] × the wait bound, by default: time
/// to make the provider and release everything.
pub const CASE_LIMIT_SLACK: Duration = Duration::from_secs(10);

/// The default limit of a whole case for a wait bound of `case_timeout`:
/// [`CASE_LIMIT_FACTOR`] × `case_timeout` + [`CASE_LIMIT_SLACK`] (40 s with the default 5 s).
/// A case waits a few times, each wait bounded by `case_timeout`.
pub fn case_limit_for(case_timeout: Duration) -> Duration {
    case_timeout
        .saturating_mul(CASE_LIMIT_FACTOR)
        .saturating_add(CASE_LIMIT_SLACK)
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
    /// Longest a whole case may take (provider made, case run, everything released) before it
    /// is reported as hung and the run stops; `None` runs each case on the caller's thread with
    /// no limit of its own (each wait is still bounded by `case_timeout`).
    pub case_limit: Option<Duration>,
    /// The cases expected to fail and the cases excluded (see [`expect`](crate::expect)):
    /// an excluded case is not run, and every case's report gets its expectation.
    pub expectations: Expectations,
}

impl SuiteOptions {
    /// All cases on `device`, with the default 5 s wait bound and the case limit that goes
    /// with it ([`case_limit_for`]).
    pub fn new(device: impl Into<String>) -> Self {
        let case_timeout = Duration::from_secs(5);
        SuiteOptions {
            device: device.into(),
            pattern: None,
            case_timeout,
            case_limit: Some(case_limit_for(case_timeout)),
            expectations: Expectations::none(),
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
    /// A case finished (or, once the run stopped, will not run).
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

/// Runs `f`, a panic becoming an error (of kind `Other`) saying the provider panicked `what`.
pub fn panic_as_error<T>(
    what: &str,
    f: impl FnOnce() -> anyverbs::Result<T>,
) -> anyverbs::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(anyverbs::Error::new(
            anyverbs::ErrorKind::Other,
            format!("the provider panicked {what}: {}", panic_message(&payload)),
        ))
    })
}

/// Runs one case: checks its needs, catches panics, and times it.
pub fn run_case<P: Provider>(ctx: &Ctx<'_, P>, case: &Case<P>) -> CaseReport {
    let start = Instant::now();
    let info = ctx.info();
    let outcome = match case.needs.missing(info.caps, info.faults, info.state_model) {
        Some(reason) => Outcome::NotRun(reason),
        None => match panic::catch_unwind(AssertUnwindSafe(|| case.run.call(ctx))) {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(CaseError::Failed(m))) => Outcome::Failed(m),
            Ok(Err(CaseError::NotRun(m))) => Outcome::NotRun(m),
            Err(payload) => Outcome::Failed(format!("panicked: {}", panic_message(&payload))),
        },
    };
    report_of(case, outcome, start.elapsed())
}

fn report_of<P: Provider>(case: &Case<P>, outcome: Outcome, duration: Duration) -> CaseReport {
    CaseReport {
        name: case.name.to_string(),
        description: case.description.to_string(),
        outcome,
        duration,
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

/// Runs `f` on a thread of its own and waits for it no longer than `limit`: `Some` of its
/// result, or `None` if it was still running then — the thread is left running, never waited
/// on. A panic in `f` is resumed here, in the caller (a thread that panicked has ended: it is
/// not still running). `what` names the thread. A thread that cannot be started runs `f` here,
/// unbounded.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let f = Arc::new(std::sync::Mutex::new(Some(f)));
    let job = Arc::clone(&f);
    let spawned = std::thread::Builder::new()
        .name(what.chars().take(15).collect())
        .spawn(move || {
            let f = job.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(f) = f {
                let _ = tx.send(panic::catch_unwind(AssertUnwindSafe(f)));
            }
        });
    if spawned.is_err() {
        let f = f.lock().unwrap_or_else(|e| e.into_inner()).take();
        return f.map(|f| f());
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Some(value),
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => None,
    }
}

/// Makes a provider and runs `case` on it, then releases everything: the whole of a case. A
/// provider that panics as it is made or released fails the case, saying so.
pub(crate) fn case_on_fresh_provider<P: Provider>(
    make: &(dyn Fn() -> anyverbs::Result<P> + Send + Sync),
    device: &str,
    info: DeviceInfo,
    timeout: Duration,
    case: &Case<P>,
) -> CaseReport {
    let start = Instant::now();
    let failed = |what: &str, payload: Box<dyn std::any::Any + Send>| {
        report_of(
            case,
            Outcome::Failed(format!(
                "the provider panicked {what}: {}",
                panic_message(&payload)
            )),
            start.elapsed(),
        )
    };
    match panic::catch_unwind(AssertUnwindSafe(make)) {
        Ok(Ok(provider)) => {
            let ctx = Ctx::new(Arc::new(provider), device, info, timeout);
            let report = run_case(&ctx, case);
            // Released before the report goes back: a provider that hangs in its teardown
            // hangs the case.
            match panic::catch_unwind(AssertUnwindSafe(move || drop(ctx))) {
                Ok(()) => report,
                Err(payload) => failed("as it was released after the case", payload),
            }
        }
        Ok(Err(e)) => report_of(
            case,
            Outcome::Failed(format!("cannot make a fresh provider for the case: {e}")),
            Duration::ZERO,
        ),
        Err(payload) => failed("as it was made for the case", payload),
    }
}

/// Runs every selected case of `cases` against the device named in `options`, each on a fresh
/// provider made by `make` (so a case that resets or unplugs the device, or leaves anything
/// behind, cannot affect the next one), each within [`SuiteOptions::case_limit`] (see the
/// [module documentation](self)).
///
/// Fails (before running anything) only if the first provider cannot be made or the device
/// cannot be found. If making it and listing its devices does not finish within the case
/// limit, the report says so ([`SuiteReport::aborted`]) and lists every case as not run. A case
/// whose own provider cannot be made fails with the reason.
pub fn run_suite<P: Provider>(
    make: impl Fn() -> anyverbs::Result<P> + Send + Sync + 'static,
    cases: &[Case<P>],
    options: &SuiteOptions,
    observer: &mut dyn FnMut(RunEvent<'_>),
) -> anyverbs::Result<SuiteReport> {
    let start = Instant::now();
    let make: Arc<dyn Fn() -> anyverbs::Result<P> + Send + Sync> = Arc::new(make);
    let selected: Vec<&Case<P>> = cases
        .iter()
        .filter(|c| {
            options
                .pattern
                .as_ref()
                .is_none_or(|p| matches_pattern(c.name, p))
        })
        .collect();
    let device = options.device.clone();
    let probe = {
        let make = Arc::clone(&make);
        let device = device.clone();
        move || -> anyverbs::Result<(String, DeviceInfo)> {
            panic_as_error("as it was made and listed its devices", || {
                let probe = make()?;
                let info = probe
                    .devices()?
                    .into_iter()
                    .find(|d| d.identity.name == device)
                    .ok_or_else(|| {
                        anyverbs::Error::new(
                            anyverbs::ErrorKind::NotFound,
                            format!("provider {} has no device named {device:?}", probe.name()),
                        )
                    })?;
                Ok((probe.name().to_string(), info))
            })
        }
    };
    let probed = match options.case_limit {
        None => Some(probe()),
        Some(limit) => bounded("anyverbs-probe", limit, probe),
    };
    let mut report = SuiteReport {
        provider: String::new(),
        device: device.clone(),
        cases: Vec::new(),
        duration: Duration::ZERO,
        aborted: None,
    };
    let info = match probed {
        Some(found) => {
            let (name, info) = found?;
            report.provider = name;
            info
        }
        None => {
            let limit = options.case_limit.unwrap_or_default();
            let why = format!(
                "making the provider and listing its devices did not finish within {}",
                seconds(limit)
            );
            stop_here(
                &mut report,
                &selected,
                0,
                &why,
                &options.expectations,
                observer,
            );
            report.aborted = Some(why);
            report.duration = start.elapsed();
            return Ok(report);
        }
    };
    for (at, case) in selected.iter().enumerate() {
        if let Some(exclusion) = options.expectations.exclusion(case.name) {
            let mut excluded = report_of(
                case,
                Outcome::NotRun(exclusion.excluded_because()),
                Duration::ZERO,
            );
            options.expectations.apply(&mut excluded);
            observer(RunEvent::Finished(&excluded));
            report.cases.push(excluded);
            continue;
        }
        observer(RunEvent::Started { name: case.name });
        let case = **case;
        let mut case_report = match options.case_limit {
            None => {
                case_on_fresh_provider(&*make, &device, info.clone(), options.case_timeout, &case)
            }
            Some(limit) => {
                let (make, device, info) = (Arc::clone(&make), device.clone(), info.clone());
                let timeout = options.case_timeout;
                let ran = bounded("anyverbs-case", limit, move || {
                    case_on_fresh_provider(&*make, &device, info, timeout, &case)
                });
                match ran {
                    Some(r) => r,
                    None => {
                        let why = format!(
                            "{} hung: still running after {}; a hung case cannot be stopped \
                             in-process, and its provider may hold locks the next case needs, so \
                             the run stops here (--isolate runs each case in a process of its \
                             own)",
                            case.name,
                            seconds(limit)
                        );
                        let mut hung = report_of(
                            &case,
                            Outcome::Hung(format!(
                                "still running after {} (the case limit); the provider ignored \
                                 a deadline",
                                seconds(limit)
                            )),
                            limit,
                        );
                        options.expectations.apply(&mut hung);
                        observer(RunEvent::Finished(&hung));
                        report.cases.push(hung);
                        stop_here(
                            &mut report,
                            &selected,
                            at + 1,
                            &why,
                            &options.expectations,
                            observer,
                        );
                        report.aborted = Some(why);
                        report.duration = start.elapsed();
                        return Ok(report);
                    }
                }
            }
        };
        options.expectations.apply(&mut case_report);
        observer(RunEvent::Finished(&case_report));
        report.cases.push(case_report);
    }
    report.duration = start.elapsed();
    Ok(report)
}

/// Lists the cases from `from` on as not run, the run having stopped for `why`.
fn stop_here<P: Provider>(
    report: &mut SuiteReport,
    selected: &[&Case<P>],
    from: usize,
    why: &str,
    expectations: &Expectations,
    observer: &mut dyn FnMut(RunEvent<'_>),
) {
    for case in &selected[from..] {
        let mut skipped = report_of(
            case,
            Outcome::NotRun(format!("the run stopped before it: {why}")),
            Duration::ZERO,
        );
        expectations.apply(&mut skipped);
        observer(RunEvent::Finished(&skipped));
        report.cases.push(skipped);
    }
}

/// A duration in seconds for messages: `40 s`, `0.2 s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

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

    fn hang(_: &Ctx<'_, MockProvider>) -> CaseResult {
        // Ignores every deadline, as a broken provider's call would.
        std::thread::sleep(Duration::from_secs(3600));
        Ok(())
    }

    fn case(
        name: &'static str,
        run: fn(&Ctx<'_, MockProvider>) -> CaseResult,
    ) -> Case<MockProvider> {
        Case {
            name,
            description: "",
            needs: Needs::NOTHING,
            run: crate::CaseFn::Plain(run),
        }
    }

    #[test]
    fn every_case_gets_a_fresh_provider() {
        let cases = [case("unplug", unplug), case("open", open)];
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let make = move || {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(MockProvider::new())
        };
        let report = run_suite(make, &cases, &SuiteOptions::new("mock0"), &mut |_| {}).unwrap();
        let outcomes: Vec<&Outcome> = report.cases.iter().map(|c| &c.outcome).collect();
        assert_eq!(outcomes, [&Outcome::Passed, &Outcome::Passed]);
        assert_eq!(
            made.load(Ordering::Relaxed),
            3,
            "one provider to find the device, then one per case"
        );
        assert_eq!(report.aborted, None);
    }

    #[test]
    fn a_hung_case_is_reported_and_the_run_stops_there_without_waiting_for_it() {
        let cases = [case("open", open), case("hang", hang), case("after", open)];
        let options = SuiteOptions {
            case_limit: Some(Duration::from_millis(300)),
            ..SuiteOptions::new("mock0")
        };
        let mut seen = Vec::new();
        let start = Instant::now();
        let report = run_suite(|| Ok(MockProvider::new()), &cases, &options, &mut |e| {
            if let RunEvent::Finished(c) = e {
                seen.push(c.outcome.label());
            }
        })
        .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        let verdicts: Vec<Verdict> = report.cases.iter().map(CaseReport::verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Passed, Verdict::Hung, Verdict::NotRun],
            "{:?}",
            report.cases
        );
        assert_eq!(seen, ["ok", "HUNG", "not run"]);
        let aborted = report.aborted.as_deref().unwrap();
        assert!(
            aborted.starts_with("hang hung: still running after 0.3 s"),
            "{aborted}"
        );
        assert!(
            report.cases[2]
                .outcome
                .reason()
                .unwrap()
                .contains("the run stopped before it"),
            "{:?}",
            report.cases[2]
        );
        assert!(!report.is_success(false));
        assert_eq!(report.summary().hung, 1);
    }

    #[test]
    fn a_provider_that_panics_as_it_is_made_fails_its_case_and_is_not_hung() {
        let cases = [case("open", open), case("after", open)];
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        // The first provider (to find the device) is made; the next one panics.
        let make = move || {
            if counter.fetch_add(1, Ordering::Relaxed) == 1 {
                panic!("cannot make a provider today");
            }
            Ok(MockProvider::new())
        };
        let options = SuiteOptions {
            case_limit: Some(Duration::from_secs(30)),
            ..SuiteOptions::new("mock0")
        };
        let start = Instant::now();
        let report = run_suite(make, &cases, &options, &mut |_| {}).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "{report:?}");
        assert_eq!(report.aborted, None, "{report:?}");
        let verdicts: Vec<Verdict> = report.cases.iter().map(CaseReport::verdict).collect();
        assert_eq!(verdicts, [Verdict::Failed, Verdict::Passed], "{report:?}");
        let reason = report.cases[0].outcome.reason().unwrap();
        assert!(
            reason.contains("panicked") && reason.contains("cannot make a provider today"),
            "{reason}"
        );
    }

    #[test]
    fn a_provider_that_panics_before_the_cases_is_an_error_not_a_hang() {
        let make = || -> anyverbs::Result<MockProvider> { panic!("no provider at all") };
        let e = run_suite(
            make,
            &[case("open", open)],
            &SuiteOptions::new("mock0"),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.message().contains("panicked") && e.message().contains("no provider at all"));
    }

    #[test]
    fn bounded_hands_a_panic_back_to_its_caller() {
        let caught = panic::catch_unwind(|| {
            bounded("panics", Duration::from_secs(30), || -> () {
                panic!("inside")
            })
        });
        let payload = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(&payload), "inside");
    }

    #[test]
    fn bounded_returns_in_time_or_gives_up_waiting() {
        assert_eq!(bounded("quick", Duration::from_secs(5), || 7), Some(7));
        let start = Instant::now();
        let never = bounded("slow", Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(3600))
        });
        assert_eq!(never, None);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn patterns_are_globs_or_substrings() {
        assert!(matches_pattern("data::send_recv", "send"));
        assert!(matches_pattern("data::send_recv", "data::*"));
        assert!(!matches_pattern("data::send_recv", "bad::*"));
        assert!(matches_pattern("data::send_recv", "data::send_rec?"));
    }
}
