//! Runs the suite as ordinary tests (one test per case) from a provider crate's `cargo test`.
//!
//! In the provider crate, add a test target with `harness = false` whose `main` is:
//!
//! ```no_run
//! // tests/conformance.rs, the whole of it:
//! anyverbs_conformance::libtest::run(
//!     anyverbs_provider_mock::MockProvider::new,
//!     &["mock0", "mockiw0"],
//! );
//! ```
//!
//! Each case becomes one test per device, named `<device>/<case>`, so `cargo test -- data::`
//! filters as usual. A case the device cannot run is reported as ignored, with the reason in its
//! name.

use std::sync::Arc;
use std::time::Duration;

use anyverbs::Provider;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::cases::all_cases;
use crate::ctx::Ctx;
use crate::runner::{Outcome, run_case};

/// Runs every case against each of `devices` of a provider made by `make` (called once per
/// case, so a provider whose instances are independent, like the mock's fabrics, isolates every
/// case), then exits with libtest's exit code.
pub fn run<P, F>(make: F, devices: &[&str]) -> !
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
    for &device in devices {
        let Some(info) = listed.iter().find(|d| d.identity.name == device) else {
            panic!("provider {} has no device {device:?}", probe.name());
        };
        for case in all_cases::<P>() {
            let ignored = case.needs.missing(info.caps, info.state_model);
            let name = match &ignored {
                Some(reason) => format!("{device}/{} (not run: {reason})", case.name),
                None => format!("{device}/{}", case.name),
            };
            let make = Arc::clone(&make);
            let device = device.to_string();
            let info = info.clone();
            trials.push(
                Trial::test(name, move || {
                    let provider = make();
                    let ctx = Ctx::new(&provider, &device, info, Duration::from_secs(10));
                    match run_case(&ctx, &case).outcome {
                        Outcome::Passed => Ok(()),
                        Outcome::Failed(m) => Err(Failed::from(m)),
                        Outcome::NotRun(m) => Err(Failed::from(format!("not run: {m}"))),
                    }
                })
                .with_ignored_flag(ignored.is_some()),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit()
}
