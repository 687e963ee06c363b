//! The mock as a plugin (`libanyverbs_bench_twin.so`) that also runs the `plugin` benchmark's
//! direct side.
//!
//! A ULP that links the mock in and one that loads it as a plugin run two copies of the mock,
//! compiled and laid out apart; on the 2-core VM this project is measured on, that alone moves
//! a round's time by a few percent either way from one process to the next, more than the
//! boundary costs. Here both sides of the comparison run the one copy in this shared object:
//! the direct side calls the mock from code linked into this same object
//! ([`anyverbs_bench_twin_direct`]), the plugin side reaches it through the ABI from the bench,
//! and both use one fabric (every instance of this plugin wraps the same [`MockProvider`]). What
//! is left between them is the boundary.
//!
//! Not a provider to ship: it exists for `cargo bench -p anyverbs-provider-mock --bench plugin`.

#![deny(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Instant;

use anyverbs_provider_mock::MockProvider;

#[path = "../../benches/common/bed.rs"]
mod bed;
// Shared with the bench, which uses the half this side does not (`Work::code`).
#[path = "../../benches/common/run.rs"]
#[allow(dead_code)]
mod run;

use bed::Bed;
use run::{Run, Work};

/// The provider every instance of the plugin wraps, and the direct side runs on.
static PROVIDER: OnceLock<MockProvider> = OnceLock::new();
/// The direct side's test bed, on [`PROVIDER`], made at the first call.
static DIRECT: OnceLock<Bed<MockProvider>> = OnceLock::new();

anyverbs::export_provider!(MockProvider, || Ok(PROVIDER
    .get_or_init(MockProvider::new)
    .clone()));

/// Runs `iters` iterations of the work `work` names (`Work::from_code`: the messages of a
/// round, or 0 for a poll of an empty CQ) on the direct side, and returns the nanoseconds they
/// took; setting up the bed at the first call and checking the data afterwards are not counted.
/// A negative result means the iterations failed (the message is on standard error), or that
/// no instance of the plugin was made yet.
#[allow(unsafe_code)] // an exported symbol, which the bench looks up by name
#[unsafe(no_mangle)]
pub extern "C" fn anyverbs_bench_twin_direct(work: usize, iters: u64) -> f64 {
    catch_unwind(AssertUnwindSafe(|| {
        let provider = PROVIDER.get().expect("instantiate the plugin first");
        let bed = DIRECT.get_or_init(|| Bed::new(provider.clone()));
        let mut run = Run::new(bed, Work::from_code(work));
        let start = Instant::now();
        for _ in 0..iters {
            run.once();
        }
        let elapsed = start.elapsed();
        run.check_data();
        elapsed.as_secs_f64() * 1e9
    }))
    .unwrap_or(-1.0)
}
