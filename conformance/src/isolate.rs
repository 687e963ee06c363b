//! Runs each case in a child process (`anyverbs-conform run --isolate`), so that a provider that
//! crashes (segfault, abort, `process::exit`) or hangs costs one case, reported as
//! [`Outcome::Crashed`] or [`Outcome::Hung`], and the run goes on.
//!
//! The CLI re-executes itself once per case as
//! `anyverbs-conform run --provider=P --device=D --timeout=T --case-limit=L --format json
//! --case=NAME --exact` and reads the child's JSON report (see
//! [`report::to_json`](crate::report::to_json)); before the cases, it runs one child that makes
//! the provider and lists its devices, so that no code of a plugin ever runs in the parent. This
//! module knows nothing of the command line: [`run_isolated`] takes a function that builds the
//! child's [`Command`] for a case name, and [`run_child`] runs any child.
//!
//! How a child's end is judged ([`classify`]):
//!
//! - it exited with status 0 or 1 and its report has the case: the case's outcome in the report
//!   (a child that stops a hung case itself reports it as hung; one whose run stopped before
//!   the case — its provider hung as it was loaded, made or listed — says so, and the case is
//!   `HUNG` with that reason);
//! - it was killed by a signal: `CRASH`, `killed by signal N (SIGNAME)`;
//! - it exited with another status, or without a parsable report that has the case: `CRASH`,
//!   `exited with status N ...`;
//! - it ran past its time limit, [`child_deadline`] (the case limit + 10 s): it is killed
//!   (`SIGKILL`) and the case is `HUNG`, `killed after N s`.
//!
//! A crash or hang message ends with the last lines of the child's standard error, if it wrote
//! any. Standard input of the child is `/dev/null`; its standard output and error are captured
//! (the first 16 MiB of standard output, the last 64 KiB of standard error).

use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::Provider;
use serde_json::Value;

use crate::case::Case;
use crate::expect::Expectations;
use crate::runner::{CaseReport, Outcome, RunEvent, SuiteReport, seconds};

/// What a child may run beyond the case limit before it is killed: time to start, and to
/// report a case it stopped itself (see [`child_deadline`]).
pub const CHILD_SLACK: Duration = Duration::from_secs(10);

/// Longest a child process running one case may run before it is killed: the case limit
/// (`--case-limit`, by default [`case_limit_for`](crate::case_limit_for) `--timeout`: 40 s with
/// the default 5 s) + [`CHILD_SLACK`]. The child bounds the case by the case limit itself and
/// reports a hang; the kill is for a child that cannot even do that.
pub fn child_deadline(case_limit: Duration) -> Duration {
    case_limit.saturating_add(CHILD_SLACK)
}

/// How long, once a child has ended, to wait for its output pipes to close (a grandchild can
/// keep them open); what was read by then is kept.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a killed child to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How much of a child's standard output is kept: the head, where the report is.
const STDOUT_LIMIT: usize = 16 << 20;
/// How much of a child's standard error is kept: the tail, where the last words are.
const STDERR_LIMIT: usize = 64 << 10;
/// How many lines of standard error a crash message shows at most.
const STDERR_TAIL_LINES: usize = 12;
/// How many characters of one line of standard error a crash message shows at most.
const STDERR_LINE_CHARS: usize = 400;

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// It exited, or was killed by a signal not sent by [`run_child`].
    Exited(ExitStatus),
    /// It ran past its deadline and [`run_child`] killed it.
    Killed {
        /// The deadline it ran past.
        after: Duration,
    },
}

/// What a child process left behind.
#[derive(Debug, Clone)]
pub struct ChildOutput {
    /// How it ended.
    pub end: ChildEnd,
    /// Its standard output (the head, up to 16 MiB).
    pub stdout: Vec<u8>,
    /// Its standard error (the tail, up to 64 KiB).
    pub stderr: Vec<u8>,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Which part of a stream a [`Capture`] keeps.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The first bytes, up to this many.
    Head(usize),
    /// The last bytes, up to this many.
    Tail(usize),
}

/// A stream read to its end by a thread of its own.
struct Capture {
    /// What was read so far (as [`Keep`] says).
    buf: Arc<Mutex<Vec<u8>>>,
    /// Disconnected when the thread has read the stream to its end (or an error).
    done: mpsc::Receiver<()>,
}

impl Capture {
    /// Starts reading `stream` on a new thread.
    fn start(mut stream: impl Read + Send + 'static, keep: Keep) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel::<()>();
        let shared = Arc::clone(&buf);
        thread::spawn(move || {
            let _done = tx; // dropped (disconnecting `done`) when the stream ends
            let mut chunk = [0u8; 8192];
            loop {
                let n = match stream.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut buf = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match keep {
                    Keep::Head(limit) => {
                        let room = limit.saturating_sub(buf.len());
                        buf.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Keep::Tail(limit) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() > 2 * limit {
                            let excess = buf.len() - limit;
                            buf.drain(..excess);
                        }
                    }
                }
            }
        });
        Capture { buf, done }
    }

    /// What was read once the stream ended, or by `until` if it has not.
    fn finish(self, until: Instant, keep: Keep) -> Vec<u8> {
        let wait = until.saturating_duration_since(Instant::now());
        // Disconnected: the stream ended. Timeout: keep what was read by now.
        let _: Result<(), RecvTimeoutError> = self.done.recv_timeout(wait);
        let mut buf = std::mem::take(&mut *self.buf.lock().unwrap_or_else(PoisonError::into_inner));
        if let Keep::Tail(limit) = keep
            && buf.len() > limit
        {
            buf.drain(..buf.len() - limit);
        }
        buf
    }
}

/// Waits for `child` to end until `deadline` (`None`: as long as it runs), polling; `None` if
/// it is still running then.
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Ok(None);
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs `command` with standard input from `/dev/null` and standard output and error captured,
/// and kills it (`SIGKILL`) if it runs longer than `deadline` (a deadline too far away to be
/// reached, such as `Duration::MAX`, is none). Fails only if it cannot be started (or waited
/// for).
pub fn run_child(command: &mut Command, deadline: Duration) -> io::Result<ChildOutput> {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout_keep = Keep::Head(STDOUT_LIMIT);
    let stderr_keep = Keep::Tail(STDERR_LIMIT);
    let stdout = child.stdout.take().map(|s| Capture::start(s, stdout_keep));
    let stderr = child.stderr.take().map(|s| Capture::start(s, stderr_keep));
    let end = match wait_until(&mut child, start.checked_add(deadline)) {
        Ok(Some(status)) => ChildEnd::Exited(status),
        Ok(None) => {
            // Fails only if it has already been reaped, which it has not.
            let _ = child.kill();
            match wait_until(&mut child, Some(Instant::now() + KILL_GRACE)) {
                // It exited by itself just before the kill.
                Ok(Some(status)) if status.code().is_some() => ChildEnd::Exited(status),
                _ => ChildEnd::Killed { after: deadline },
            }
        }
        Err(e) => {
            let _ = child.kill();
            let _ = wait_until(&mut child, Some(Instant::now() + KILL_GRACE));
            return Err(e);
        }
    };
    let elapsed = start.elapsed();
    let pipes_until = Instant::now() + PIPE_GRACE;
    Ok(ChildOutput {
        end,
        stdout: stdout.map_or_else(Vec::new, |c| c.finish(pipes_until, stdout_keep)),
        stderr: stderr.map_or_else(Vec::new, |c| c.finish(pipes_until, stderr_keep)),
        elapsed,
    })
}

/// The conventional name of a signal (`SIGSEGV`), if it is a common one.
#[cfg(unix)]
pub fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSYS, "SIGSYS"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == signal)
        .map(|(_, name)| *name)
}

/// How a process that did not exit by itself ended: `killed by signal 11 (SIGSEGV)`, with
/// `, core dumped` if it did; `None` if it exited.
#[cfg(unix)]
pub fn describe_signal(status: ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal()?;
    let name = signal_name(signal).map_or(String::new(), |n| format!(" ({n})"));
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    Some(format!("killed by signal {signal}{name}{core}"))
}

/// How a process that did not exit by itself ended (no signals on this platform).
#[cfg(not(unix))]
pub fn describe_signal(_status: ExitStatus) -> Option<String> {
    None
}

/// The last lines of a child's standard error, each cut to a readable length and made printable
/// (control characters other than tab escaped, `\u{1b}`: what a plugin wrote there must not
/// rewrite the terminal a report is shown on, nor break a report's format), or `None` if it
/// wrote nothing but white space.
pub fn stderr_tail(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    if lines.iter().all(|l| l.trim().is_empty()) {
        return None;
    }
    let shown = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    let printable = |l: &str| -> String {
        let mut out = String::with_capacity(l.len());
        for c in l.chars() {
            if c.is_control() && c != '\t' {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
        out
    };
    let cut: Vec<String> = shown
        .iter()
        .map(|l| match l.char_indices().nth(STDERR_LINE_CHARS) {
            Some((at, _)) => format!("{}...", printable(&l[..at])),
            None => printable(l),
        })
        .collect();
    Some(cut.join("\n"))
}

/// Reads the outcome of case `name` and its duration from a child's JSON report.
pub fn parse_child_report(stdout: &[u8], name: &str) -> Result<(Outcome, Duration), String> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err("no report".to_string());
    }
    let doc: Value = serde_json::from_slice(stdout).map_err(|e| format!("not JSON: {e}"))?;
    let case = doc["cases"]
        .as_array()
        .ok_or("no `cases` array")?
        .iter()
        .find(|c| c["name"] == name)
        .ok_or_else(|| format!("no result for case {name:?}"))?;
    let reason = case["reason"].as_str().unwrap_or_default().to_string();
    let outcome = match (case["outcome"].as_str(), doc["aborted"].as_str()) {
        // The child stopped before its case: its provider hung as it was loaded, made or
        // listed (nothing else stops a child's run).
        (Some("not_run"), Some(aborted)) => Outcome::Hung(format!(
            "the child process stopped before the case: {aborted}"
        )),
        (outcome, _) => match outcome {
            Some("passed") => Outcome::Passed,
            Some("failed") => Outcome::Failed(reason),
            Some("not_run") => Outcome::NotRun(reason),
            Some("crashed") => Outcome::Crashed(reason),
            Some("hung") => Outcome::Hung(reason),
            other => return Err(format!("unknown outcome {other:?}")),
        },
    };
    let duration = case["duration"]
        .as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or_default();
    Ok((outcome, duration))
}

/// Judges how the child that ran case `name` ended (see the [module documentation](self)):
/// the outcome, and the duration (the case's own from the report, else how long the child ran).
pub fn classify(name: &str, output: &ChildOutput) -> (Outcome, Duration) {
    let report = parse_child_report(&output.stdout, name);
    let mut hung = false;
    let what = match output.end {
        ChildEnd::Killed { after } => {
            hung = true;
            format!(
                "killed after {}: the child process running the case did not end in time",
                seconds(after)
            )
        }
        ChildEnd::Exited(status) => match (describe_signal(status), status.code()) {
            (Some(signal), _) => signal,
            (None, Some(code @ (0 | 1))) => match report {
                Ok(found) => return found,
                Err(e) => format!("exited with status {code} without a usable report ({e})"),
            },
            (None, Some(code)) => match report {
                Ok((outcome, _)) => format!(
                    "exited with status {code} after reporting the case as {}",
                    outcome.name()
                ),
                Err(_) => format!("exited with status {code} without a report"),
            },
            (None, None) => format!("ended without an exit status ({status})"),
        },
    };
    let message = match stderr_tail(&output.stderr) {
        Some(tail) => format!(
            "{what}\nlast lines of its standard error:\n{}",
            tail.lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        None => what,
    };
    let outcome = if hung {
        Outcome::Hung(message)
    } else {
        Outcome::Crashed(message)
    };
    (outcome, output.elapsed)
}

/// Runs each of `cases` in a child process of its own, built by `command_for(case name)`, each
/// killed after `deadline` (see [`child_deadline`]), and collects the report as
/// [`run_suite`](crate::run_suite) does, with `provider` and `device` as its names: a case an
/// exclusion of `expectations` lists is not run, and every case gets its expectation.
/// `observer` sees each case start and finish.
///
/// A child that cannot be started makes its case crash with the reason.
pub fn run_isolated<P: Provider>(
    provider: &str,
    device: &str,
    cases: &[Case<P>],
    expectations: &Expectations,
    deadline: Duration,
    command_for: &mut dyn FnMut(&str) -> Command,
    observer: &mut dyn FnMut(RunEvent<'_>),
) -> SuiteReport {
    let start = Instant::now();
    let mut reports = Vec::new();
    for case in cases {
        let (outcome, duration) = match expectations.exclusion(case.name) {
            Some(e) => (Outcome::NotRun(e.excluded_because()), Duration::ZERO),
            None => {
                observer(RunEvent::Started { name: case.name });
                match run_child(&mut command_for(case.name), deadline) {
                    Ok(output) => classify(case.name, &output),
                    Err(e) => (
                        Outcome::Crashed(format!("cannot start a child process for the case: {e}")),
                        Duration::ZERO,
                    ),
                }
            }
        };
        let mut report = CaseReport {
            name: case.name.to_string(),
            description: case.description.to_string(),
            outcome,
            duration,
            expectation: None,
        };
        expectations.apply(&mut report);
        observer(RunEvent::Finished(&report));
        reports.push(report);
    }
    SuiteReport {
        provider: provider.to_string(),
        device: device.to_string(),
        cases: reports,
        duration: start.elapsed(),
        aborted: None,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Runs `sh -c script` as a child with `deadline`.
    fn sh(script: &str, deadline: Duration) -> ChildOutput {
        run_child(Command::new("sh").args(["-c", script]), deadline).expect("cannot run sh")
    }

    fn crash_reason(output: &ChildOutput) -> String {
        match classify("data::x", output).0 {
            Outcome::Crashed(reason) => reason,
            other => panic!("expected a crash, got {other:?} from {output:?}"),
        }
    }

    fn hang_reason(output: &ChildOutput) -> String {
        match classify("data::x", output).0 {
            Outcome::Hung(reason) => reason,
            other => panic!("expected a hang, got {other:?} from {output:?}"),
        }
    }

    const REPORT: &str = r#"{"format_version": 2, "cases": [
        {"name": "data::x_y", "outcome": "passed", "duration": 0.5},
        {"name": "data::x", "outcome": "failed", "reason": "no completion", "duration": 0.25}
    ]}"#;

    #[test]
    fn a_deadline_too_far_to_reach_is_no_deadline() {
        let out = sh("echo done", Duration::MAX);
        assert!(
            matches!(out.end, ChildEnd::Exited(s) if s.success()),
            "{out:?}"
        );
        assert_eq!(out.stdout, b"done\n");
    }

    #[test]
    fn the_deadline_follows_the_case_limit() {
        assert_eq!(
            child_deadline(crate::case_limit_for(Duration::from_secs(5))),
            Duration::from_secs(50)
        );
        assert_eq!(
            child_deadline(Duration::from_millis(200)),
            Duration::from_millis(10_200)
        );
        assert_eq!(child_deadline(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn a_signal_is_a_crash_naming_it() {
        let out = sh(
            "echo about to fall >&2; kill -SEGV $$",
            Duration::from_secs(10),
        );
        let reason = crash_reason(&out);
        assert!(
            reason.starts_with(&format!("killed by signal {} (SIGSEGV)", libc::SIGSEGV)),
            "{reason}"
        );
        assert!(reason.contains("\n  about to fall"), "{reason}");
        let abort = crash_reason(&sh("kill -ABRT $$", Duration::from_secs(10)));
        assert!(abort.contains("(SIGABRT)"), "{abort}");
    }

    #[test]
    fn a_hang_is_killed_and_reported_as_hung() {
        let started = Instant::now();
        let out = sh(
            "echo still here >&2; exec sleep 30",
            Duration::from_millis(300),
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{out:?}");
        assert_eq!(
            out.end,
            ChildEnd::Killed {
                after: Duration::from_millis(300)
            }
        );
        let reason = hang_reason(&out);
        assert!(reason.starts_with("killed after 0.3 s"), "{reason}");
        assert!(reason.contains("still here"), "{reason}");
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_hang_the_parent() {
        let started = Instant::now();
        let out = sh("sleep 5 & echo bye; exit 3", Duration::from_secs(10));
        assert!(
            started.elapsed() < PIPE_GRACE + Duration::from_secs(5),
            "{out:?}"
        );
        let reason = crash_reason(&out);
        assert!(
            reason.starts_with("exited with status 3 without a report"),
            "{reason}"
        );
    }

    #[test]
    fn an_exit_without_a_report_is_a_crash_with_its_status_and_stderr() {
        let reason = crash_reason(&sh(
            "echo 'error: no such plugin' >&2; exit 3",
            Duration::from_secs(10),
        ));
        assert_eq!(
            reason,
            "exited with status 3 without a report\n\
             last lines of its standard error:\n  error: no such plugin"
        );
        let reason = crash_reason(&sh("exit 0", Duration::from_secs(10)));
        assert_eq!(
            reason,
            "exited with status 0 without a usable report (no report)"
        );
    }

    #[test]
    fn garbage_on_stdout_is_a_crash() {
        let reason = crash_reason(&sh("echo 'not {json'; exit 1", Duration::from_secs(10)));
        assert!(
            reason.starts_with("exited with status 1 without a usable report (not JSON: "),
            "{reason}"
        );
        // JSON, but not a report of this case.
        let reason = crash_reason(&sh(
            r#"echo '{"cases": [{"name": "data::x_y", "outcome": "passed"}]}'"#,
            Duration::from_secs(10),
        ));
        assert!(
            reason.contains(r#"no result for case "data::x""#),
            "{reason}"
        );
    }

    #[test]
    fn a_report_is_read_for_the_exact_case() {
        let out = sh(
            &format!("cat <<'EOF'\n{REPORT}\nEOF\nexit 1"),
            Duration::from_secs(10),
        );
        assert_eq!(
            classify("data::x", &out),
            (
                Outcome::Failed("no completion".into()),
                Duration::from_millis(250)
            )
        );
        assert_eq!(
            classify("data::x_y", &out).0,
            Outcome::Passed,
            "the exit status of the child does not decide the outcome"
        );
    }

    #[test]
    fn a_report_followed_by_a_crash_is_a_crash() {
        let out = sh(
            &format!("cat <<'EOF'\n{REPORT}\nEOF\nexit 101"),
            Duration::from_secs(10),
        );
        assert_eq!(
            crash_reason(&out),
            "exited with status 101 after reporting the case as failed"
        );
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines_cut_short() {
        assert_eq!(stderr_tail(b""), None);
        assert_eq!(stderr_tail(b" \n\n"), None);
        let many: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let tail = stderr_tail(many.as_bytes()).unwrap();
        assert_eq!(tail.lines().count(), STDERR_TAIL_LINES);
        assert!(tail.ends_with("line 19"), "{tail}");
        let long = "x".repeat(STDERR_LINE_CHARS + 10);
        let cut = stderr_tail(long.as_bytes()).unwrap();
        assert_eq!(cut.len(), STDERR_LINE_CHARS + 3);
    }

    #[test]
    fn a_child_that_cannot_start_is_an_error() {
        assert!(
            run_child(
                &mut Command::new("/no/such/program"),
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
