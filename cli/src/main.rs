//! # anyverbs-conform: runs the anyverbs conformance suite against one device of one provider
//!
//! ```text
//! anyverbs-conform list
//! anyverbs-conform cases [--case PATTERN]
//! anyverbs-conform run --provider NAME|PATH [--device NAME] [--case PATTERN] [--strict]
//!                      [--format human|json|junit] [--output FILE] [--timeout SECS]
//!                      [--case-limit SECS] [--expect FILE] [--no-builtin-expectations]
//!                      [--isolate]
//! ```
//!
//! `--provider` selects the provider under test: a path (anything with a `/`, or ending in
//! `.so`) loads that plugin file; a name selects a provider built into this binary (`mock`), or
//! else the plugin of that name in the search path (`ANYVERBS_PROVIDER_PATH`, then
//! `/usr/local/lib/anyverbs:/usr/lib/anyverbs`; the name `foo` matches
//! `libanyverbs_provider_foo.so` or `libfoo.so`). A plugin that cannot be loaded is a usage
//! error whose message says what is wrong with the file (not a shared object, wrong
//! architecture, ABI mismatch, ...).
//!
//! `list` shows the providers built into this binary, then every shared object in the plugin
//! search path — with its package, version, plugin ABI version and file, or the reason it cannot
//! be loaded — and, for each provider, its transport and devices: name, transport, QP state
//! model and node GUID, with a note under a device that exists to demonstrate failure saying
//! which expectations file goes with it, and the device entries the loader refused. Each plugin
//! is loaded and listed in a child process of its own (limited to 30 s): one that crashes or
//! hangs is shown as such, and the list goes on.
//!
//! `cases` lists the cases of the suite with what each checks (with `--case`, those that
//! match).
//!
//! `run` runs every case of the suite (or, with `--case`, those whose name matches a glob such
//! as `data::*`, or contains the pattern if it has no wildcard; a pattern that matches no case
//! is a usage error) against `--device`, by default the provider's first device. Every case
//! runs on a fresh instance of the provider, so a case that resets or unplugs the device leaves
//! nothing behind for the next. Two bounds apply:
//!
//! - `--timeout` bounds every single wait inside a case (default 5 s);
//! - `--case-limit` bounds a whole case (default 6 × `--timeout` + 10 s: 40 s). A case still
//!   running then is reported as `HUNG` (a provider that ignores a deadline). In-process, the
//!   run stops there: the report is written, the remaining cases are listed as not run, and the
//!   process exits at once with status 1 — the stuck thread is abandoned, never waited on, and
//!   no further case runs beside a provider that may hold its own locks. Loading a plugin,
//!   making the provider and listing its devices are bounded the same way.
//!
//! Output:
//! - `--format human` (the default) prints each case as it runs and a summary at the end, to
//!   standard output or to `--output FILE`;
//! - `--format json` and `--format junit` write one document at the end, to standard output or
//!   to `--output FILE`; with `--output`, the human progress is printed to standard output too.
//!   A document on standard output is all that goes there: anything else written to it (a
//!   plugin's own prints) goes to standard error.
//!
//! `--expect FILE` reads what the provider is known not to pass on this device, each line with
//! a written reason and one of two kinds (BoGo's disabled tests and fabtests' exclude lists):
//!
//! ```text
//! # mockdead0: no WR ever executes.
//! xfail    data::*                          no WR ever executes on a dead device
//! exclude  lifecycle::flap_port             the test bed cannot take this port down
//! ```
//!
//! - `xfail PATTERN REASON`, an **expected failure**: the case runs; if it fails, crashes or
//!   hangs it is `XFAIL` and does not fail the run, even with `--strict`; if it passes it is
//!   `XPASS` ("expectation out of date") and fails the run, so the file stays true; if it does
//!   not run it stays "not run".
//! - `exclude PATTERN REASON`, an **exclusion**: the case cannot run on this device; it is not
//!   run, is reported as `excluded` with the reason, and `--strict` accepts it.
//!
//! The pattern is an exact case name or a glob (`*`, `?`; unlike `--case`, never a substring);
//! blank lines and lines starting with `#` are ignored. A line without a kind or a reason, or
//! whose pattern matches no case of the suite, is a usage error naming `FILE:LINE`. If several
//! lines match a case, the first applies.
//!
//! The built-in mock ships expectations for its devices that exist to demonstrate failure
//! (`mockdead0`, a NIC that died silently); `run --provider mock` applies them to that device on
//! its own, with the `--timeout` they suggest, and says so on standard error.
//! `--expect` replaces them; `--no-builtin-expectations` runs without them.
//!
//! `--isolate` runs each case in a child process: the binary runs itself as
//! `anyverbs-conform run --provider=P --device=D --timeout=T --case-limit=L
//! --no-builtin-expectations --format json --case=NAME --exact` (`--provider` passed on
//! verbatim) and reads the child's JSON report; before the cases, a child makes the provider
//! and lists its devices, so **no code of a plugin runs in the parent at all**. A child killed
//! by a signal, or exiting without a usable report, makes its case `CRASH`; one still running
//! after the case limit + 10 s is killed and its case is `HUNG`; each with the signal, exit
//! status or time and the last lines of its standard error, and the run goes on. A provider
//! that crashes or hangs while it is made and listed ends the run: the report says why, lists
//! every case as not run, and the exit status is 1.
//!
//! Exit status: `0` when the run finished and no case failed, crashed, hung or passed
//! unexpectedly (and, with `--strict`, every case ran, was an expected failure or was
//! excluded); `1` otherwise; `2` for usage and setup errors (unknown provider or device, a
//! `--case` that matches nothing, a bad expectations file, an unwritable output file, ...),
//! with a message on standard error.
//!
//! Examples:
//!
//! ```text
//! anyverbs-conform run --provider mock
//! anyverbs-conform run --provider mock --device mockiw0 --strict
//! anyverbs-conform run --provider mock --case 'data::*' --format junit --output conform.xml
//! anyverbs-conform run --provider mock --device mockdead0 --isolate
//! anyverbs-conform run --provider target/debug/libanyverbs_provider_mock.so --isolate
//! ANYVERBS_PROVIDER_PATH=target/debug anyverbs-conform run --provider anyverbs_provider_mock
//! ```

#![deny(unsafe_code)]

mod args;
mod list;
mod probe;
mod providers;
mod run;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use probe::ProbeDoc;
use run::{EXIT_OK, EXIT_USAGE, error};

/// Parses the command line and runs the subcommand.
fn main() -> ExitCode {
    let cli = Cli::parse();
    // A document on standard output must hold nothing a plugin prints.
    match &cli.command {
        Command::Run(args) if args.format != args::Format::Human && args.output.is_none() => {
            run::set_aside_stdout();
        }
        Command::Probe(_) => run::set_aside_stdout(),
        _ => {}
    }
    let code = match cli.command {
        Command::List => match std::env::current_exe() {
            Ok(exe) => {
                let mut out = io::stdout().lock();
                match list::list(&mut out, &exe).and_then(|()| out.flush()) {
                    Ok(()) => EXIT_OK,
                    Err(e) => {
                        error(format_args!("cannot write the list: {e}"));
                        EXIT_USAGE
                    }
                }
            }
            Err(e) => {
                error(format_args!(
                    "cannot find this program to examine the plugins: {e}"
                ));
                EXIT_USAGE
            }
        },
        Command::Cases(args) => {
            let mut out = io::stdout().lock();
            match list::cases(&mut out, args.case.as_deref()) {
                Ok(true) => EXIT_OK,
                Ok(false) => {
                    error(format_args!(
                        "no case matches {:?}",
                        args.case.unwrap_or_default()
                    ));
                    EXIT_USAGE
                }
                Err(e) => {
                    error(format_args!("cannot write the cases: {e}"));
                    EXIT_USAGE
                }
            }
        }
        Command::Run(args) if args.isolate => run::isolated(&args),
        Command::Run(args) => run::in_process_resolved(&args),
        Command::Probe(args) => {
            let doc = match providers::resolve(&args.provider) {
                Ok(p) => p.describe(),
                Err(e) => ProbeDoc::failed(args.provider.clone(), format!("cannot load: {e}")),
            };
            match serde_json::to_writer(run::document_stdout(), &doc) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    error(format_args!("cannot write the description: {e}"));
                    EXIT_USAGE
                }
            }
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
