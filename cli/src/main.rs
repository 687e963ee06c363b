//! # anyverbs-conform: runs the anyverbs conformance suite against one device of one provider
//!
//! ```text
//! anyverbs-conform list
//! anyverbs-conform run --provider NAME|PATH [--device NAME] [--case PATTERN] [--strict]
//!                      [--format human|json|junit] [--output FILE] [--timeout SECS]
//!                      [--expect FILE] [--isolate]
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
//! model and node GUID.
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
//! `--expect FILE` reads the cases the provider is known not to pass, each with a written reason
//! (the BoGo / fabtests exclude-list convention). The file is UTF-8 text; blank lines and lines
//! starting with `#` are ignored; every other line is `<pattern> <reason...>`: the first
//! whitespace-separated token is an exact case name or a glob (`*`, `?`; unlike `--case`, never
//! a substring), the rest of the line is the reason, which is required. A line without a reason,
//! or whose pattern matches no case of the suite, is a usage error naming `FILE:LINE`. If several
//! lines match a case, the first applies. Listed cases still run: one that fails, does not run or
//! crashes is an expected failure (`XFAIL`, shown with the written reason and the actual failure)
//! and does not fail the run, even with `--strict`; one that passes is an unexpected pass
//! (`XPASS ... expectation out of date: <reason>`) and fails the run, so the file stays true.
//! For example:
//!
//! ```text
//! # mockdead0: no WR ever executes.
//! data::*                          no WR ever executes on a dead device
//! state::error_flushes_outstanding a dead device produces no flush completions
//! ```
//!
//! `--isolate` runs each case in a child process: the binary runs itself as
//! `anyverbs-conform run --provider=P --device=D --timeout=T --format json --case=NAME --exact`
//! (`--provider` passed on verbatim, `--device` the device chosen by the parent) and reads the
//! child's JSON report. A child killed by a signal, exiting without a usable report, or still
//! running after 6 × `--timeout` + 10 s (it is then killed) makes its case `CRASH`, with the
//! signal, exit status or time and the last lines of its standard error, and the run goes on. A
//! crash fails the run unless the case is listed in `--expect`. The hidden flag `--exact` makes
//! `--case` an exact case name.
//!
//! Exit status: `0` when no case failed, crashed or passed unexpectedly (and, with `--strict`,
//! every case ran or was expected to fail); `1` otherwise; `2` for usage and setup errors
//! (unknown provider or device, bad expectations file, unwritable output file, ...), with a
//! message on standard error.
//!
//! Examples:
//!
//! ```text
//! anyverbs-conform run --provider mock
//! anyverbs-conform run --provider mock --device mockiw0 --strict
//! anyverbs-conform run --provider mock --case 'data::*' --format junit --output conform.xml
//! anyverbs-conform run --provider mock --device mockdead0 --expect mockdead0.expect --isolate
//! anyverbs-conform run --provider target/debug/libanyverbs_provider_mock.so --isolate
//! ANYVERBS_PROVIDER_PATH=target/debug anyverbs-conform run --provider anyverbs_provider_mock
//! ```

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};
use std::time::Duration;

use anyverbs::plugin::search_path;
use anyverbs::{DeviceInfo, LoadedProvider, Plugin, Provider};
use anyverbs_conformance::report::{self, HumanPrinter};
use anyverbs_conformance::{
    Expectations, RunEvent, SuiteOptions, all_cases, isolate, matches_pattern, run_suite,
};
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
    /// List the built-in providers and the plugins in the search path, with their devices.
    List,
    /// Run the suite against one device of one provider.
    Run(RunArgs),
}

/// Arguments of `run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// Provider to test: a built-in name, a plugin name from the search path, or a plugin
    /// file's path (see `list`).
    #[arg(long, short = 'p', value_name = "NAME|PATH")]
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
    /// Expectations file: cases known not to pass, one `<case or glob> <reason>` a line. They
    /// still run; failing is then expected (XFAIL), passing fails the run (XPASS).
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Run each case in a child process, so a crash or hang is reported as CRASH for that case
    /// and the run goes on (a child is killed after 6 × --timeout + 10 s).
    #[arg(long)]
    isolate: bool,
    /// Treat --case as an exact case name (used for the child processes of --isolate).
    #[arg(long, hide = true, requires = "case")]
    exact: bool,
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
/// (built in, or loaded from a plugin) share one interface.
trait KnownProvider {
    /// The name `--provider` selects it by.
    fn name(&self) -> &str;
    /// Makes the provider and writes its section of `list` to `out`.
    fn list(&self, out: &mut dyn Write) -> io::Result<()>;
    /// Makes the provider and runs the suite as `args` say, each case on a fresh provider;
    /// returns the exit status.
    fn run(&self, args: &RunArgs) -> i32;
}

/// A provider linked into this binary, made by a constructor function.
struct Registered<P> {
    /// The name `--provider` selects it by.
    name: &'static str,
    /// Makes a provider; fails if the provider cannot work on this host.
    make: fn() -> anyverbs::Result<P>,
}

impl<P: Provider> KnownProvider for Registered<P> {
    fn name(&self) -> &str {
        self.name
    }

    fn list(&self, out: &mut dyn Write) -> io::Result<()> {
        match (self.make)() {
            Ok(provider) => list_provider(&format!("{} (built in)", self.name), &provider, out),
            Err(e) => writeln!(out, "{} (built in): unavailable: {e}", self.name),
        }
    }

    fn run(&self, args: &RunArgs) -> i32 {
        match (self.make)() {
            Ok(provider) => run(provider, &self.make, args),
            Err(e) => {
                error(format_args!("cannot start provider {}: {e}", self.name));
                EXIT_USAGE
            }
        }
    }
}

/// A provider loaded from a plugin through `anyverbs::plugin`.
struct Loaded {
    /// The plugin.
    plugin: Plugin,
}

impl Loaded {
    /// How `list` and errors name the plugin: package, version, ABI and file.
    fn title(&self) -> String {
        let (major, minor) = self.plugin.abi_version();
        format!(
            "{} {} (plugin, ABI {major}.{minor}, {})",
            self.plugin.name(),
            self.plugin.version(),
            self.plugin.path().display()
        )
    }

    /// A fresh provider instance.
    fn make(&self) -> anyverbs::Result<LoadedProvider> {
        self.plugin.instantiate().map_err(anyverbs::Error::from)
    }
}

impl KnownProvider for Loaded {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn list(&self, out: &mut dyn Write) -> io::Result<()> {
        match self.make() {
            Ok(provider) => list_provider(&self.title(), &provider, out),
            Err(e) => writeln!(out, "{}: unavailable: {e}", self.title()),
        }
    }

    fn run(&self, args: &RunArgs) -> i32 {
        match self.make() {
            Ok(provider) => run(provider, &|| self.make(), args),
            Err(e) => {
                error(format_args!("{e}"));
                EXIT_USAGE
            }
        }
    }
}

/// The providers linked into this binary, by name.
fn built_in() -> Vec<Box<dyn KnownProvider>> {
    vec![Box::new(Registered {
        name: "mock",
        make: || Ok(MockProvider::new()),
    })]
}

/// Whether `--provider` names a file rather than a provider: it has a directory part or ends
/// like a shared object.
fn is_path(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(std::env::consts::DLL_SUFFIX)
}

/// The provider `--provider` selects: a plugin file for a path; otherwise a built-in provider
/// of that name, or else a plugin of that name from the search path.
fn resolve(spec: &str) -> Result<Box<dyn KnownProvider>, String> {
    if is_path(spec) {
        return Plugin::load(spec)
            .map(|plugin| Box::new(Loaded { plugin }) as Box<dyn KnownProvider>)
            .map_err(|e| e.to_string());
    }
    if let Some(p) = built_in().into_iter().find(|p| p.name() == spec) {
        return Ok(p);
    }
    Plugin::find(spec)
        .map(|plugin| Box::new(Loaded { plugin }) as Box<dyn KnownProvider>)
        .map_err(|e| {
            let names: Vec<String> = built_in().iter().map(|p| p.name().to_string()).collect();
            format!(
                "unknown provider {spec:?}: not built in (built in: {}), and {e}",
                names.join(", ")
            )
        })
}

/// `list`: the built-in providers, then every shared object in the plugin search path, loaded
/// or with the reason it cannot be.
fn list(out: &mut dyn Write) -> io::Result<()> {
    for p in built_in() {
        p.list(out)?;
    }
    let dirs = search_path();
    let found = Plugin::available_in(&dirs);
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if found.is_empty() {
        return writeln!(out, "no plugins in {}", shown.join(":"));
    }
    for f in found {
        match f.plugin {
            Ok(plugin) => Loaded { plugin }.list(out)?,
            Err(e) => writeln!(out, "{}: cannot load: {e}", f.path.display())?,
        }
    }
    Ok(())
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
fn run<P: Provider>(provider: P, make: &dyn Fn() -> anyverbs::Result<P>, args: &RunArgs) -> i32 {
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

    // Which cases run, and which are expected not to pass; both before the output file is
    // created, so a usage error leaves it alone.
    let cases = all_cases::<P>();
    let expectations = match &args.expect {
        Some(path) => {
            let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
            match Expectations::load(path, &names) {
                Ok(e) => e,
                Err(e) => {
                    error(format_args!("{e}"));
                    return EXIT_USAGE;
                }
            }
        }
        None => Expectations::none(),
    };
    let selected: Vec<_> = cases
        .into_iter()
        .filter(|c| match &args.case {
            None => true,
            Some(name) if args.exact => c.name == name,
            Some(pattern) => matches_pattern(c.name, pattern),
        })
        .collect();
    if selected.is_empty()
        && let Some(pattern) = &args.case
    {
        eprintln!("anyverbs-conform: warning: no case matches {pattern:?}; nothing to run");
    }

    // With --isolate, this program runs each case in a child process.
    let isolated_exe = match args.isolate.then(std::env::current_exe) {
        None => None,
        Some(Ok(exe)) => Some(exe),
        Some(Err(e)) => {
            error(format_args!(
                "--isolate: cannot find this program to run the cases: {e}"
            ));
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

    let mut printer = progress.map(|out| HumanPrinter::new(out).strict(args.strict));
    if let Some(p) = printer.as_mut() {
        p.start(provider.name(), &device, selected.len());
    }
    // The printer sees each case with its expectation; the report gets them all at the end.
    let mut observe = |event: RunEvent<'_>| {
        let Some(p) = printer.as_mut() else { return };
        match event {
            RunEvent::Finished(case) if !expectations.is_empty() => {
                let mut case = case.clone();
                expectations.apply(&mut case);
                p.observe(RunEvent::Finished(&case));
            }
            event => p.observe(event),
        }
    };
    let mut report = if let Some(exe) = &isolated_exe {
        isolate::run_isolated(
            provider.name(),
            &device,
            &selected,
            isolate::child_deadline(args.timeout),
            &mut |case| child_command(exe, args, &device, case),
            &mut observe,
        )
    } else {
        let options = SuiteOptions {
            device: device.clone(),
            pattern: None,
            case_timeout: args.timeout,
        };
        match run_suite(make, &selected, &options, &mut observe) {
            Ok(r) => r,
            Err(e) => {
                error(format_args!("{e}"));
                return EXIT_USAGE;
            }
        }
    };
    expectations.apply_all(&mut report);

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

/// The command that runs one case, named exactly, in a child process for `--isolate`: this
/// program (`exe`) with `run`, the same `--provider` (verbatim) and `--timeout`, the device
/// chosen by the parent, `--format json`, and `--case NAME --exact`. The `--opt=value` form
/// keeps a value that starts with `-` a value.
fn child_command(exe: &Path, args: &RunArgs, device: &str, case: &str) -> Process {
    let arg = |name: &str, value: &std::ffi::OsStr| {
        let mut a = OsString::from(name);
        a.push("=");
        a.push(value);
        a
    };
    let mut command = Process::new(exe);
    command
        .arg("run")
        .arg(arg("--provider", args.provider.as_ref()))
        .arg(arg("--device", device.as_ref()))
        .arg(arg(
            "--timeout",
            args.timeout.as_secs_f64().to_string().as_ref(),
        ))
        .args(["--format", "json", "--exact"])
        .arg(arg("--case", case.as_ref()));
    command
}

/// Parses the command line and runs the subcommand.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::List => {
            let mut out = io::stdout().lock();
            match list(&mut out).and_then(|()| out.flush()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    error(format_args!("cannot write the list: {e}"));
                    EXIT_USAGE
                }
            }
        }
        Command::Run(args) => match resolve(&args.provider) {
            Ok(p) => p.run(&args),
            Err(e) => {
                error(format_args!("{e}"));
                EXIT_USAGE
            }
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
