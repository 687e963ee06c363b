//! Runs the suite as ordinary tests (one test per case) from a provider crate's `cargo test`.
//!
//! In the provider crate, add a test target with `harness = false` whose `main` is:
//!
//! ```ignore
//! fn main() {
//!     anyverbs_conformance::libtest::run(|| my_provider::MyProvider::new(), "dev0");
//! }
//! ```
//!
//! Each case becomes one test named after it, so `cargo test -- data::` filters as usual. A case
//! the device cannot run is reported as ignored, with the reason in its name.

use std::sync::Arc;
use std::time::Duration;

use anyverbs::Provider;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::cases::all_cases;
use crate::ctx::Ctx;
use crate::runner::{Outcome, run_case};

/// Runs every case against `device` of a provider made by `make` (called once per case, so a
/// provider whose instances are independent, like the mock's fabrics, isolates every case), then
/// exits with libtest's exit code.
pub fn run<P, F>(make: F, device: &str) -> !
where
    P: Provider,
    F: Fn() -> P + Send + Sync + 'static,
{
    let args = Arguments::from_args();
    let make = Arc::new(make);
    let probe = make();
    let info = match probe.devices() {
        Ok(devices) => devices.into_iter().find(|d| d.identity.name == device),
        Err(e) => panic!("provider {} cannot list devices: {e}", probe.name()),
    };
    let Some(info) = info else {
        panic!("provider {} has no device {device:?}", probe.name());
    };
    let trials = all_cases::<P>()
        .into_iter()
        .map(|case| {
            let ignored = case.needs.missing(info.caps, info.state_model);
            let name = match &ignored {
                Some(reason) => format!("{} (not run: {reason})", case.name),
                None => case.name.to_string(),
            };
            let make = Arc::clone(&make);
            let device = device.to_string();
            let info = info.clone();
            Trial::test(name, move || {
                let provider = make();
                let ctx = Ctx::new(&provider, &device, info, Duration::from_secs(10));
                match run_case(&ctx, &case).outcome {
                    Outcome::Passed => Ok(()),
                    Outcome::Failed(m) => Err(Failed::from(m)),
                    Outcome::NotRun(m) => Err(Failed::from(format!("not run: {m}"))),
                }
            })
            .with_ignored_flag(ignored.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
