//! # anyverbs-conformance: the suite every anyverbs provider must pass
//!
//! A library of named [`Case`]s, each stating what it [`Needs`] from the device; a case the
//! device cannot run is reported as **not run** with the reason, never as passed. The same cases
//! run three ways:
//!
//! - from a provider crate's own `cargo test`, one test per case, through [`libtest::run`] (the
//!   object_store pattern: shared test functions, provider differences as data);
//! - from the `anyverbs-conform` command line, against one provider and one device, with human,
//!   JSON or JUnit output, optionally with an [expectations file](expect) of the cases the
//!   provider is known not to pass, and optionally [each case in a child process](isolate) so a
//!   crashing or hanging provider costs one case;
//! - from any program, through [`run_suite`].

#![deny(unsafe_code)]

pub mod case;
pub mod cases;
pub mod ctx;
pub mod expect;
pub mod isolate;
pub mod libtest;
pub mod report;
pub mod runner;

pub use case::{Case, CaseError, CaseFn, CaseResult, Needs};
pub use cases::all_cases;
pub use ctx::{Ctx, LoneQp, Loopback, Pair, loopback};
pub use expect::{ExpectError, Expectation, ExpectationKind, Expectations};
pub use runner::{
    CaseReport, Outcome, RunEvent, SuiteOptions, SuiteReport, Summary, Verdict, bounded,
    case_limit_for, matches_pattern, panic_as_error, run_case, run_suite,
};
