//! `run`: the suite against one device of one provider, in this process or each case in a
//! child process (`--isolate`), and the report in the format asked for.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::Command as Process;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyverbs::Provider;
use anyverbs::plugin::LoadedProvider;
use anyverbs_conformance::report::{self, HumanPrinter};
use anyverbs_conformance::{
    Case, CaseReport, Expectations, Outcome, RunEvent, SuiteOptions, SuiteReport, all_cases,
    bounded, isolate, matches_pattern, panic_as_error, run_suite,
};
use anyverbs_provider_mock::expectations::Builtin;

use crate::args::{Format, MAX_SECONDS, RunArgs};
use crate::probe;
use crate::providers;

/// Exit status of a run in which nothing failed.
pub const EXIT_OK: i32 = 0;
/// Exit status of a run in which a case failed, hung or (with `--strict`) did not run, or
/// that stopped early.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a usage or setup error.
pub const EXIT_USAGE: i32 = 2;

/// The wait bound when neither `--timeout` nor a device's built-in expectations give one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints an error message on standard error.
pub fn error(msg: std::fmt::Arguments<'_>) {
    eprintln!("anyverbs-conform: error: {msg}");
}

/// Prints a usage or setup error and returns its exit status.
fn usage(e: impl std::fmt::Display) -> i32 {
    error(format_args!("{e}"));
    EXIT_USAGE
}

/// The standard output this process started with, kept for the one document it writes there
/// once [`set_aside_stdout`] has sent everything else to standard error.
static DOCUMENT: OnceLock<File> = OnceLock::new();

/// Keeps standard output for the one document this process writes there (a JSON or JUnit
/// report, or `probe`'s description): a copy of file descriptor 1 is kept for the document, and
/// descriptor 1 then goes where standard error goes, so that whatever a plugin prints (through
/// its own copy of the standard library, straight to descriptor 1) cannot spoil the document —
/// which a parent reading a child's report, or a CI job parsing it, would find unusable. Call
/// before any plugin is loaded. Does nothing where descriptors cannot be copied.
#[allow(unsafe_code)] // fcntl(2) on our own stdout
pub fn set_aside_stdout() {
    #[cfg(unix)]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: plain descriptor calls on this process's own standard streams; the copy is
        // close-on-exec (no child inherits it) and owned by the `File` made from it, once.
        unsafe {
            let fd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 0);
            if fd < 0 {
                return;
            }
            if libc::dup2(2, 1) < 0 {
                libc::close(fd);
                return;
            }
            let _ = DOCUMENT.set(File::from_raw_fd(fd));
        }
    }
}

/// Where a document for standard output is written: the standard output set aside by
/// [`set_aside_stdout`], or standard output itself.
pub fn document_stdout() -> Box<dyn Write> {
    match DOCUMENT.get() {
        Some(file) => Box::new(BufWriter::new(file)),
        None => Box::new(io::stdout()),
    }
}

/// Ends the process at once with `code`, after flushing the standard streams: a case or probe
/// that hung left a thread running in the provider, which must neither be waited on nor run
/// exit handlers beside (a plugin may hold its own locks).
#[allow(unsafe_code)] // _exit(2): ends the process without running destructors
pub fn exit_now(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process without running anything of it; every output this
    // program wrote was flushed above.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// The cases `--case` selects (an exact name with `--exact`), or a usage error if it selects
/// none.
fn selected<P: Provider>(args: &RunArgs) -> Result<Vec<Case<P>>, String> {
    let cases: Vec<Case<P>> = all_cases::<P>()
        .into_iter()
        .filter(|c| match &args.case {
            None => true,
            Some(name) if args.exact => c.name == name,
            Some(pattern) => matches_pattern(c.name, pattern),
        })
        .collect();
    match (&args.case, cases.is_empty()) {
        (Some(pattern), true) => Err(format!(
            "no case matches --case {pattern:?} (a glob if it has `*` or `?`, else a part of \
             the name); `anyverbs-conform cases` lists them"
        )),
        _ => Ok(cases),
    }
}

/// The device `--device` names among `names`, or the first one.
fn pick_device(provider: &str, names: &[String], args: &RunArgs) -> Result<String, String> {
    match (&args.device, names.first()) {
        (Some(wanted), _) if names.contains(wanted) => Ok(wanted.clone()),
        (Some(wanted), _) => Err(format!(
            "provider {provider} has no device {wanted:?}; its devices are: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )),
        (None, Some(first)) => Ok(first.clone()),
        (None, None) => Err(format!("provider {provider} has no devices")),
    }
}

/// The case limit: `--case-limit`, or else
/// [`case_limit_for`](anyverbs_conformance::case_limit_for) the wait bound `timeout`, at most
/// [`MAX_SECONDS`] (which a child of `--isolate` must accept as its `--case-limit`).
fn case_limit(args: &RunArgs, timeout: Duration) -> Duration {
    args.case_limit.unwrap_or_else(|| {
        anyverbs_conformance::case_limit_for(timeout).min(Duration::from_secs_f64(MAX_SECONDS))
    })
}

/// The case limit before the device (and so its built-in expectations' timeout) is known: what
/// loading the provider and listing its devices is bounded by.
fn first_limit(args: &RunArgs) -> Duration {
    case_limit(args, args.timeout.unwrap_or(DEFAULT_TIMEOUT))
}

/// What a run expects, and the bounds it runs with, once the device is known.
struct Plan {
    expectations: Expectations,
    timeout: Duration,
    case_limit: Duration,
}

/// The expectations (`--expect`, or else the device's built-in ones) and the bounds: the wait
/// bound from `--timeout`, or the built-in expectations' suggestion, or 5 s; the case limit
/// from `--case-limit`, or [`case_limit`] of the wait bound. Says on standard error when
/// built-in expectations apply.
fn plan(args: &RunArgs, device: &str, builtin: Option<&'static Builtin>) -> Result<Plan, String> {
    let names: Vec<&str> = all_cases::<LoadedProvider>()
        .iter()
        .map(|c| c.name)
        .collect();
    let builtin = builtin.filter(|_| args.expect.is_none() && !args.no_builtin_expectations);
    let expectations = match (&args.expect, builtin) {
        (Some(path), _) => Expectations::load(path, &names).map_err(|e| e.to_string())?,
        (None, Some(b)) => {
            let timeout = match args.timeout {
                Some(_) => String::new(),
                None => format!(" and --timeout {}", b.timeout.as_secs_f64()),
            };
            eprintln!(
                "anyverbs-conform: {device} {}: using its built-in expectations ({}){timeout}; \
                 --no-builtin-expectations runs it without them",
                b.purpose, b.path
            );
            Expectations::parse(b.text, &format!("built-in {}", b.path), &names)
                .map_err(|e| e.to_string())?
        }
        (None, None) => Expectations::none(),
    };
    let timeout = args
        .timeout
        .or(builtin.map(|b| b.timeout))
        .unwrap_or(DEFAULT_TIMEOUT);
    Ok(Plan {
        expectations,
        timeout,
        case_limit: case_limit(args, timeout),
    })
}

/// Where some output goes: standard output or a file.
type Sink = Box<dyn Write>;

/// Where the human progress and the final document go, the output file created (or
/// truncated) now.
struct Outputs {
    printer: Option<HumanPrinter<Sink>>,
    document: Option<Sink>,
}

impl Outputs {
    fn open(args: &RunArgs) -> Result<Outputs, String> {
        let create = |path: &Path| {
            File::create(path)
                .map(|f| Box::new(BufWriter::new(f)) as Sink)
                .map_err(|e| format!("cannot create output file {}: {e}", path.display()))
        };
        let stdout = || Box::new(io::stdout()) as Sink;
        let (progress, document) = match (args.format, &args.output) {
            (Format::Human, None) => (Some(stdout()), None),
            (Format::Human, Some(path)) => (Some(create(path)?), None),
            (_, None) => (None, Some(document_stdout())),
            (_, Some(path)) => (Some(stdout()), Some(create(path)?)),
        };
        Ok(Outputs {
            printer: progress.map(|out| HumanPrinter::new(out).strict(args.strict)),
            document,
        })
    }

    /// The observer of a run: shows each case on the human progress, if there is one.
    fn observe(&mut self, event: RunEvent<'_>) {
        if let Some(p) = self.printer.as_mut() {
            p.observe(event);
        }
    }

    /// Writes the summary and the document, and returns the exit status.
    fn finish(self, report: &SuiteReport, args: &RunArgs) -> i32 {
        if let Some(p) = self.printer
            && let Err(e) = p.finish(report)
        {
            return usage(format_args!("cannot write the progress output: {e}"));
        }
        if let Some(out) = self.document {
            let written = match args.format {
                Format::Json => report::write_json(report, out).map_err(|e| e.to_string()),
                Format::Junit => report::write_junit(report, out).map_err(|e| {
                    match std::error::Error::source(&e) {
                        Some(cause) => format!("{e}: {cause}"),
                        None => e.to_string(),
                    }
                }),
                Format::Human => Ok(()),
            };
            if let Err(e) = written {
                return usage(format_args!("cannot write the report: {e}"));
            }
        }
        if report.is_success(args.strict) {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    }
}

/// What a run needs once the provider's devices are known: the device, the plan, and the
/// outputs (created now, after every usage error could be found).
struct Ready {
    device: String,
    plan: Plan,
    outputs: Outputs,
}

impl Ready {
    /// Chooses the device among `names` of `provider`, plans the run with the device's built-in
    /// expectations from `builtin`, opens the outputs and starts the progress for `cases` cases.
    fn new(
        provider: &str,
        names: &[String],
        args: &RunArgs,
        builtin: &dyn Fn(&str) -> Option<&'static Builtin>,
        cases: usize,
    ) -> Result<Ready, String> {
        let device = pick_device(provider, names, args)?;
        let plan = plan(args, &device, builtin(&device))?;
        let mut outputs = Outputs::open(args)?;
        if let Some(p) = outputs.printer.as_mut() {
            p.start(provider, &device, cases);
        }
        Ok(Ready {
            device,
            plan,
            outputs,
        })
    }
}

/// The report of a run that stopped before its first case, for `why`: every selected case not
/// run. Written as any report, and a failure.
fn stopped_before_cases<P: Provider>(
    provider: &str,
    args: &RunArgs,
    cases: &[Case<P>],
    why: String,
) -> i32 {
    let mut outputs = match Outputs::open(args) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let device = args.device.clone().unwrap_or_else(|| "(not chosen)".into());
    if let Some(p) = outputs.printer.as_mut() {
        p.start(provider, &device, cases.len());
    }
    let mut report = SuiteReport {
        provider: provider.to_string(),
        device,
        cases: Vec::new(),
        duration: Duration::ZERO,
        aborted: Some(why.clone()),
    };
    for case in cases {
        let skipped = CaseReport {
            name: case.name.to_string(),
            description: case.description.to_string(),
            outcome: Outcome::NotRun(format!("the run stopped before it: {why}")),
            duration: Duration::ZERO,
            expectation: None,
        };
        outputs.observe(RunEvent::Finished(&skipped));
        report.cases.push(skipped);
    }
    outputs.finish(&report, args).max(EXIT_FAILED)
}

/// Runs the suite in this process on the provider `--provider` names, loading it first (a
/// plugin's loading runs its code: its initialisers and entry symbol), bounded like making it:
/// a plugin that hangs as it is loaded gets a report, and the process ends at once.
pub fn in_process_resolved(args: &RunArgs) -> i32 {
    // Checked before anything is loaded; the cases are the same for every provider type.
    let cases = match selected::<LoadedProvider>(args) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let limit = first_limit(args);
    let spec = args.provider.clone();
    match bounded("anyverbs-load", limit, move || providers::resolve(&spec)) {
        Some(Ok(p)) => p.run(args),
        Some(Err(e)) => usage(e),
        None => {
            let why = format!(
                "loading provider {} did not finish within {} s (its initialisers or entry \
                 symbol hung)",
                args.provider,
                limit.as_secs_f64()
            );
            let code = stopped_before_cases(&args.provider, args, &cases, why);
            exit_now(code)
        }
    }
}

/// Runs the suite in this process on providers from `make`, named `name` in messages;
/// `builtin` gives a device's built-in expectations. Returns the exit status — or, when a case
/// or the provider hung, writes the report and ends the process at once ([`exit_now`]).
pub fn in_process<P: Provider>(
    name: &str,
    make: impl Fn() -> anyverbs::Result<P> + Send + Sync + 'static,
    args: &RunArgs,
    builtin: &dyn Fn(&str) -> Option<&'static Builtin>,
) -> i32 {
    let cases = match selected::<P>(args) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let make = Arc::new(make);
    // Making the provider and listing its devices is bounded like a case.
    let first_limit = first_limit(args);
    let probe = {
        let make = Arc::clone(&make);
        move || -> anyverbs::Result<(String, Vec<String>)> {
            panic_as_error("as it was made and listed its devices", || {
                let provider = make()?;
                let names = provider.devices()?.into_iter().map(|d| d.identity.name);
                Ok((provider.name().to_string(), names.collect()))
            })
        }
    };
    let (provider, names) = match bounded("anyverbs-probe", first_limit, probe) {
        Some(Ok(found)) => found,
        Some(Err(e)) => return usage(format_args!("provider {name} cannot list its devices: {e}")),
        None => {
            let why = format!(
                "making provider {name} and listing its devices did not finish within {} s \
                 (the provider ignored a deadline)",
                first_limit.as_secs_f64()
            );
            let code = stopped_before_cases(name, args, &cases, why);
            exit_now(code)
        }
    };
    let Ready {
        device,
        plan,
        mut outputs,
    } = match Ready::new(&provider, &names, args, builtin, cases.len()) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let options = SuiteOptions {
        device,
        pattern: None,
        case_timeout: plan.timeout,
        case_limit: Some(plan.case_limit),
        expectations: plan.expectations,
    };
    let report = run_suite(move || make(), &cases, &options, &mut |event| {
        outputs.observe(event)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let code = outputs.finish(&report, args);
    if report.aborted.is_some() {
        // A hung case's thread is still in the provider: end here, without waiting for it.
        exit_now(code.max(EXIT_FAILED))
    }
    code
}

/// Runs the suite with each case in a child process (`--isolate`): the provider is made and its
/// devices listed in a child too, so no plugin code runs in this process. Returns the exit
/// status.
pub fn isolated(args: &RunArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return usage(format_args!(
                "--isolate: cannot find this program to run the cases: {e}"
            ));
        }
    };
    // The cases are the same for every provider type; none of a plugin's code runs to know them.
    let cases = match selected::<LoadedProvider>(args) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let first_limit = first_limit(args);
    let doc = match probe::in_child(&exe, &args.provider, isolate::child_deadline(first_limit)) {
        Ok(doc) => doc,
        Err(died) => {
            let why = format!(
                "the provider could not be made and its devices listed (in a child process): {}",
                died.0
            );
            return stopped_before_cases(&args.provider, args, &cases, why);
        }
    };
    let provider = doc
        .provider
        .clone()
        .unwrap_or_else(|| args.provider.clone());
    if let Some(e) = &doc.error
        && doc.devices.is_empty()
    {
        return usage(format_args!("{}: {e}", doc.title));
    }
    let names: Vec<String> = doc.devices.iter().map(|d| d.name.clone()).collect();
    // Built-in expectations go with the built-in providers only.
    let builtin = |device: &str| {
        providers::is_built_in(&args.provider)
            .then(|| providers::builtin_expectations(&args.provider, device))
            .flatten()
    };
    let Ready {
        device,
        plan,
        mut outputs,
    } = match Ready::new(&provider, &names, args, &builtin, cases.len()) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let start = Instant::now();
    let mut report = isolate::run_isolated(
        &provider,
        &device,
        &cases,
        &plan.expectations,
        isolate::child_deadline(plan.case_limit),
        &mut |case| child_command(&exe, args, &device, &plan, case),
        &mut |event| outputs.observe(event),
    );
    report.duration = start.elapsed();
    outputs.finish(&report, args)
}

/// The command that runs one case, named exactly, in a child process for `--isolate`: this
/// program (`exe`) with `run`, the same `--provider` (verbatim), the device chosen, the bounds
/// of `plan`, no expectations (the parent applies them), `--format json`, and `--case NAME
/// --exact`. The `--opt=value` form keeps a value that starts with `-` a value.
fn child_command(exe: &Path, args: &RunArgs, device: &str, plan: &Plan, case: &str) -> Process {
    let arg = |name: &str, value: &std::ffi::OsStr| {
        let mut a = OsString::from(name);
        a.push("=");
        a.push(value);
        a
    };
    let secs = |d: Duration| d.as_secs_f64().to_string();
    let mut command = Process::new(exe);
    command
        .arg("run")
        .arg(arg("--provider", args.provider.as_ref()))
        .arg(arg("--device", device.as_ref()))
        .arg(arg("--timeout", secs(plan.timeout).as_ref()))
        .arg(arg("--case-limit", secs(plan.case_limit).as_ref()))
        .args(["--no-builtin-expectations", "--format", "json", "--exact"])
        .arg(arg("--case", case.as_ref()));
    command
}
