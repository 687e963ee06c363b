//! The command line: subcommands and their arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs the anyverbs conformance suite against one device of one provider.
#[derive(Debug, Parser)]
#[command(name = "anyverbs-conform", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the built-in providers and the plugins in the search path, with their devices
    /// (each plugin is examined in a child process of its own).
    List,
    /// List the cases of the suite, with what each checks.
    Cases(CasesArgs),
    /// Run the suite against one device of one provider.
    Run(RunArgs),
    /// Make the provider, list its devices and print them as JSON (what `list` and `run
    /// --isolate` run in a child process, so that no plugin code runs in theirs).
    #[command(hide = true)]
    Probe(ProbeArgs),
}

/// Arguments of `cases`.
#[derive(Debug, Args)]
pub struct CasesArgs {
    /// Only the cases whose name matches: a glob (`*`, `?`) if it has wildcards, else a
    /// substring.
    #[arg(long = "case", short = 'c', value_name = "PATTERN")]
    pub case: Option<String>,
}

/// Arguments of `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Provider to describe: a built-in name, a plugin name from the search path, or a plugin
    /// file's path.
    #[arg(long, short = 'p', value_name = "NAME|PATH")]
    pub provider: String,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Provider to test: a built-in name, a plugin name from the search path, or a plugin
    /// file's path (see `list`).
    #[arg(long, short = 'p', value_name = "NAME|PATH")]
    pub provider: String,
    /// Device to test [default: the provider's first device].
    #[arg(long, short = 'd', value_name = "NAME")]
    pub device: Option<String>,
    /// Run only the cases whose name matches: a glob (`*`, `?`) if it has wildcards, else a
    /// substring. A pattern that matches no case is a usage error (see `cases`).
    #[arg(long = "case", short = 'c', value_name = "PATTERN")]
    pub case: Option<String>,
    /// Count a case that did not run, and that no exclusion of the expectations file explains,
    /// as a failure of the run.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write the output to FILE instead of standard output (json and junit then also print
    /// progress to standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Longest any single wait inside a case may take, in seconds, at most 1e9 [default: 5, or
    /// what a device's built-in expectations suggest].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// Longest a whole case may take, in seconds, at most 1e9, before it counts as hung
    /// [default: 6 × --timeout + 10]. In-process, a hung case stops the run (the report is written, and the
    /// process exits at once); with --isolate, its child process is killed and the run goes on.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub case_limit: Option<Duration>,
    /// Expectations file: one `xfail <case or glob> <reason>` (the case runs and must fail) or
    /// `exclude <case or glob> <reason>` (the case cannot run on this device) a line. Replaces
    /// the built-in expectations of the mock's failure-demonstrating devices.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,
    /// Do not apply the expectations the built-in mock ships for its failure-demonstrating
    /// devices (see `list`), nor the timeout they suggest.
    #[arg(long)]
    pub no_builtin_expectations: bool,
    /// Run each case in a child process, so a crash or hang is reported for that case and the
    /// run goes on; no plugin code runs in this process at all (the provider is made and its
    /// devices listed in a child too).
    #[arg(long)]
    pub isolate: bool,
    /// Treat --case as an exact case name (used for the child processes of --isolate).
    #[arg(long, hide = true, requires = "case")]
    pub exact: bool,
}

/// Output formats of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Each case as it runs, then a summary.
    Human,
    /// One JSON document with every case and the summary.
    Json,
    /// One JUnit XML document, for CI systems.
    Junit,
}

/// The longest `--timeout` or `--case-limit`, in seconds (about 31 years): deadlines are
/// computed from them (a few times the wait bound, plus slack), and an `Instant` that far away
/// still exists.
pub const MAX_SECONDS: f64 = 1e9;

/// Parses a number of seconds: more than 0, at most [`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("must be more than 0 seconds, got {s}"));
    }
    if secs > MAX_SECONDS {
        return Err(format!("must be at most {MAX_SECONDS} seconds, got {s}"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} seconds: {e}"))
}
