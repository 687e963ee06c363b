//! # anyverbs-conform: runs the anyverbs conformance suite against one device of one provider
//!
//! ```text
//! anyverbs-conform list
//! anyverbs-conform run --provider NAME [--device NAME] [--case PATTERN] [--strict]
//!                      [--format human|json|junit] [--output FILE] [--timeout SECS]
//! ```
//!
//! `list` shows the providers built into this binary (for now only `mock`) and, for each, its
//! transport and devices: name, transport, QP state model and node GUID.
//!
//! `run` runs every case of the suite (or, with `--case`, those whose name matches a glob such
//! as `data::*`, or contains the pattern if it has no wildcard) against `--device`, by default
//! the provider's first device. `--timeout` bounds every single wait inside a case (default 5 s).
//! Every case runs on a fresh instance of the provider, so a case that resets or unplugs the
//! device leaves nothing behind for the next.
//!
//! Output:
//! - `--format human` (the default) prints each case as it runs and a summary at the end, to
//!   standard output or to `--output FILE`;
//! - `--format json` and `--format junit` write one document at the end, to standard output or
//!   to `--output FILE`; with `--output`, the human progress is printed to standard output too.
//!
//! A `--case` pattern that matches no case runs nothing and succeeds (like a `cargo test` filter),
//! with a warning on standard error.
//!
//! Exit status: `0` when no case failed (and, with `--strict`, every case ran); `1` when a case
//! failed (or, with `--strict`, did not run); `2` for usage and setup errors (unknown provider or
//! device, unwritable output file, ...), with a message on standard error.
//!
//! Examples:
//!
//! ```text
//! anyverbs-conform run --provider mock
//! anyverbs-conform run --provider mock --device mockiw0 --strict
//! anyverbs-conform run --provider mock --case 'data::*' --format junit --output conform.xml
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyverbs::{DeviceInfo, Provider};
use anyverbs_conformance::report::{self, HumanPrinter};
use anyverbs_conformance::{SuiteOptions, all_cases, matches_pattern, run_suite};
use anyverbs_provider_mock::MockProvider;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit status of a run in which nothing failed.
const EXIT_OK: i32 = 0;
/// Exit status of a run in which a case failed (or, with `--strict`, did not run).
const EXIT_FAILED: i32 = 1;
/// Exit status of a usage or setup error.
const EXIT_USAGE: i32 = 2;

/// Runs the anyverbs conformance suite against one device of one provider.
#[derive(Debug, Parser)]
#[command(name = "anyverbs-conform", version)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// List the providers built into this binary, with their devices.
    List,
    /// Run the suite against one device of one provider.
    Run(RunArgs),
}

/// Arguments of `run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// Provider to test (see `list`).
    #[arg(long, short = 'p', value_name = "NAME")]
    provider: String,
    /// Device to test [default: the provider's first device].
    #[arg(long, short = 'd', value_name = "NAME")]
    device: Option<String>,
    /// Run only the cases whose name matches: a glob (`*`, `?`) if it has wildcards, else a
    /// substring.
    #[arg(long = "case", short = 'c', value_name = "PATTERN")]
    case: Option<String>,
    /// Count a case that did not run as a failure of the run.
    #[arg(long)]
    strict: bool,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the output to FILE instead of standard output (json and junit then also print
    /// progress to standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Longest any single wait inside a case may take, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    timeout: Duration,
}

/// Output formats of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Each case as it runs, then a summary.
    Human,
    /// One JSON document with every case and the summary.
    Json,
    /// One JUnit XML document, for CI systems.
    Junit,
}

/// Parses `--timeout`: a positive, finite number of seconds.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("must be more than 0 seconds, got {s}"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s} seconds: {e}"))
}

/// A provider this binary can test, with its type erased so that providers of different types
/// share one table (see [`providers`]).
trait KnownProvider {
    /// The name `--provider` selects it by.
    fn name(&self) -> &'static str;
    /// Makes the provider and writes its section of `list` to `out`.
    fn list(&self, out: &mut dyn Write) -> io::Result<()>;
    /// Makes the provider and runs the suite as `args` say, each case on a fresh provider;
    /// returns the exit status.
    fn run(&self, args: &RunArgs) -> i32;
}

/// A [`KnownProvider`] made by a constructor function.
struct Registered<P> {
    /// The name `--provider` selects it by.
    name: &'static str,
    /// Makes a provider; fails if the provider cannot work on this host.
    make: fn() -> anyverbs::Result<P>,
}

impl<P: Provider> KnownProvider for Registered<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn list(&self, out: &mut dyn Write) -> io::Result<()> {
        match (self.make)() {
            Ok(provider) => list_provider(self.name, &provider, out),
            Err(e) => writeln!(out, "{}: unavailable: {e}", self.name),
        }
    }

    fn run(&self, args: &RunArgs) -> i32 {
        match (self.make)() {
            Ok(provider) => run(provider, self.make, args),
            Err(e) => {
                error(format_args!("cannot start provider {}: {e}", self.name));
                EXIT_USAGE
            }
        }
    }
}

/// Every provider this binary knows, by name. A new provider (or a plugin loader) adds an entry.
fn providers() -> Vec<Box<dyn KnownProvider>> {
    vec![Box::new(Registered {
        name: "mock",
        make: || Ok(MockProvider::new()),
    })]
}

/// Prints an error message on standard error.
fn error(msg: std::fmt::Arguments<'_>) {
    eprintln!("anyverbs-conform: error: {msg}");
}

/// Lowercase name of a QP state model, in the style of [`anyverbs::Transport`]'s display.
fn state_model_name(info: &DeviceInfo) -> String {
    format!("{:?}", info.state_model).to_lowercase()
}

/// Writes the `list` section of one provider: a header line, then a table of its devices.
fn list_provider<P: Provider>(name: &str, provider: &P, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{name}: transport {}", provider.transport())?;
    let devices = match provider.devices() {
        Ok(d) => d,
        Err(e) => return writeln!(out, "    cannot list devices: {e}"),
    };
    if devices.is_empty() {
        return writeln!(out, "    (no devices)");
    }
    let rows: Vec<[String; 4]> = devices
        .iter()
        .map(|d| {
            [
                d.identity.name.clone(),
                d.transport.to_string(),
                state_model_name(d),
                d.identity.node_guid.to_string(),
            ]
        })
        .collect();
    let header = ["DEVICE", "TRANSPORT", "STATE MODEL", "NODE GUID"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 4]| {
        writeln!(
            out,
            "    {:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        )
    };
    line(out, header)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// Where some output goes: standard output or a file.
type Sink = Box<dyn Write>;

/// Opens `--output`: the file, created or truncated.
fn create_output(path: &Path) -> Result<Sink, String> {
    File::create(path)
        .map(|f| Box::new(BufWriter::new(f)) as Sink)
        .map_err(|e| format!("cannot create output file {}: {e}", path.display()))
}

/// Runs the suite against the device of `provider` that `args` select, each case on a fresh
/// provider from `make` (cases reset and unplug the device), prints the report in the chosen
/// format, and returns the exit status (see the crate documentation).
fn run<P: Provider>(provider: P, make: fn() -> anyverbs::Result<P>, args: &RunArgs) -> i32 {
    let devices = match provider.devices() {
        Ok(d) => d,
        Err(e) => {
            error(format_args!(
                "provider {} cannot list its devices: {e}",
                provider.name()
            ));
            return EXIT_USAGE;
        }
    };
    let names: Vec<&str> = devices.iter().map(|d| d.identity.name.as_str()).collect();
    let device = match (&args.device, names.first()) {
        (Some(wanted), _) if names.contains(&wanted.as_str()) => wanted.clone(),
        (Some(wanted), _) => {
            error(format_args!(
                "provider {} has no device {wanted:?}; its devices are: {}",
                provider.name(),
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            ));
            return EXIT_USAGE;
        }
        (None, Some(first)) => first.to_string(),
        (None, None) => {
            error(format_args!("provider {} has no devices", provider.name()));
            return EXIT_USAGE;
        }
    };

    // Where the human progress and the final document go.
    let (progress, document): (Option<Sink>, Option<Sink>) = match (args.format, &args.output) {
        (Format::Human, None) => (Some(Box::new(io::stdout())), None),
        (Format::Human, Some(path)) => match create_output(path) {
            Ok(f) => (Some(f), None),
            Err(e) => {
                error(format_args!("{e}"));
                return EXIT_USAGE;
            }
        },
        (_, None) => (None, Some(Box::new(io::stdout()))),
        (_, Some(path)) => match create_output(path) {
            Ok(f) => (Some(Box::new(io::stdout())), Some(f)),
            Err(e) => {
                error(format_args!("{e}"));
                return EXIT_USAGE;
            }
        },
    };

    let cases = all_cases::<P>();
    let selected = cases
        .iter()
        .filter(|c| {
            args.case
                .as_deref()
                .is_none_or(|p| matches_pattern(c.name, p))
        })
        .count();
    if selected == 0
        && let Some(pattern) = &args.case
    {
        eprintln!("anyverbs-conform: warning: no case matches {pattern:?}; nothing to run");
    }
    let options = SuiteOptions {
        device: device.clone(),
        pattern: args.case.clone(),
        case_timeout: args.timeout,
    };

    let mut printer = progress.map(|out| HumanPrinter::new(out).strict(args.strict));
    if let Some(p) = printer.as_mut() {
        p.start(provider.name(), &device, selected);
    }
    let report = match run_suite(&make, &cases, &options, &mut |event| {
        if let Some(p) = printer.as_mut() {
            p.observe(event);
        }
    }) {
        Ok(r) => r,
        Err(e) => {
            error(format_args!("{e}"));
            return EXIT_USAGE;
        }
    };

    if let Some(p) = printer
        && let Err(e) = p.finish(&report)
    {
        error(format_args!("cannot write the progress output: {e}"));
        return EXIT_USAGE;
    }
    if let Some(out) = document {
        let written = match args.format {
            Format::Json => report::write_json(&report, out).map_err(|e| e.to_string()),
            Format::Junit => {
                report::write_junit(&report, out).map_err(|e| match std::error::Error::source(&e) {
                    Some(cause) => format!("{e}: {cause}"),
                    None => e.to_string(),
                })
            }
            Format::Human => Ok(()),
        };
        if let Err(e) = written {
            error(format_args!("cannot write the report: {e}"));
            return EXIT_USAGE;
        }
    }

    if report.is_success(args.strict) {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Parses the command line and runs the subcommand.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let known = providers();
    let code = match cli.command {
        Command::List => {
            let mut out = io::stdout().lock();
            let listed = known.iter().try_for_each(|p| p.list(&mut out));
            match listed.and_then(|()| out.flush()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    error(format_args!("cannot write the list: {e}"));
                    EXIT_USAGE
                }
            }
        }
        Command::Run(args) => match known.iter().find(|p| p.name() == args.provider) {
            Some(p) => p.run(&args),
            None => {
                let names: Vec<&str> = known.iter().map(|p| p.name()).collect();
                error(format_args!(
                    "unknown provider {:?}; known providers: {}",
                    args.provider,
                    names.join(", ")
                ));
                EXIT_USAGE
            }
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
