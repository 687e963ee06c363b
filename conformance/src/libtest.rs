//! Runs the suite as ordinary tests (one test per case) from a provider crate's `cargo test`.
//!
//! In the provider crate, add a test target with `harness = false` whose `main` is:
//!
//! ```
//! // tests/conformance.rs, the whole of it:
//! anyverbs_conformance::libtest::run(
//!     anyverbs_provider_mock::MockProvider::new,
//!     &["mock0", "mockiw0"],
//! );
//! ```
//!
//! Each case becomes one test per device, named `<device>/<case>`, so `cargo test -- data::`
//! filters as usual. A case the device cannot run is reported as ignored, with the reason in its
//! name. [`run_targets`] also takes, per device, cases to skip, each with its written reason
//! (as rustls does for the BoGo suite): they show as ignored with that reason.

use std::sync::Arc;
use std::time::Duration;

use anyverbs::Provider;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::cases::all_cases;
use crate::runner::{
    Outcome, bounded, case_limit_for, case_on_fresh_provider, matches_pattern, seconds,
};

/// The bound of every wait inside a case.
const CASE_TIMEOUT: Duration = Duration::from_secs(10);

/// One device to run the suite against, with the cases it skips and why.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The device's name.
    pub device: &'a str,
    /// `(pattern, reason)`: cases whose names match the pattern (see
    /// [`matches_pattern`]) are not run on this device.
    pub skip: &'a [(&'a str, &'a str)],
}

impl<'a> Target<'a> {
    /// Every case on `device`.
    pub const fn all(device: &'a str) -> Target<'a> {
        Target { device, skip: &[] }
    }
}

/// Runs every case against each of `devices` of a provider made by `make` (called once per
/// case, so a provider whose instances are independent, like the mock's fabrics, isolates every
/// case), then exits with libtest's exit code.
pub fn run<P, F>(make: F, devices: &[&str]) -> !
where
    P: Provider,
    F: Fn() -> P + Send + Sync + 'static,
{
    let targets: Vec<Target<'_>> = devices.iter().map(|d| Target::all(d)).collect();
    run_targets(make, &targets)
}

/// Like [`run`], with cases skipped per device for a written reason.
pub fn run_targets<P, F>(make: F, targets: &[Target<'_>]) -> !
where
    P: Provider,
    F: Fn() -> P + Send + Sync + 'static,
{
    let args = Arguments::from_args();
    let make = Arc::new(make);
    let probe = make();
    let listed = probe
        .devices()
        .unwrap_or_else(|e| panic!("provider {} cannot list devices: {e}", probe.name()));
    let mut trials = Vec::new();
    for target in targets {
        let device = target.device;
        let Some(info) = listed.iter().find(|d| d.identity.name == device) else {
            panic!("provider {} has no device {device:?}", probe.name());
        };
        for case in all_cases::<P>() {
            let skipped = target
                .skip
                .iter()
                .find(|(pattern, _)| matches_pattern(case.name, pattern))
                .map(|(_, reason)| reason.to_string());
            let ignored =
                skipped.or_else(|| case.needs.missing(info.caps, info.faults, info.state_model));
            let name = match &ignored {
                Some(reason) => format!("{device}/{} (not run: {reason})", case.name),
                None => format!("{device}/{}", case.name),
            };
            let make = Arc::clone(&make);
            let device = device.to_string();
            let info = info.clone();
            trials.push(
                Trial::test(name, move || {
                    // Bounded as a whole: a provider that ignores a deadline fails its case (its
                    // thread is left running) rather than hang the test binary.
                    let limit = case_limit_for(CASE_TIMEOUT);
                    let ran = bounded("anyverbs-case", limit, move || {
                        let make = move || Ok(make());
                        case_on_fresh_provider(&make, &device, info, CASE_TIMEOUT, &case)
                    });
                    let Some(report) = ran else {
                        return Err(Failed::from(format!(
                            "hung: still running after {} (the provider ignored a deadline); \
                             its thread is left running",
                            seconds(limit)
                        )));
                    };
                    match report.outcome {
                        Outcome::Passed => Ok(()),
                        Outcome::Failed(m) => Err(Failed::from(m)),
                        Outcome::NotRun(m) => Err(Failed::from(format!("not run: {m}"))),
                        Outcome::Crashed(m) => Err(Failed::from(format!("crashed: {m}"))),
                        Outcome::Hung(m) => Err(Failed::from(format!("hung: {m}"))),
                    }
                })
                .with_ignored_flag(ignored.is_some()),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit()
}
