//! [`HumanPrinter`]: a run for people, as it happens.

use std::io::{self, Write};

use super::{format_duration, result_word, summary_line};
use crate::runner::{CaseReport, RunEvent, SuiteReport, Verdict};

/// Prints a run for people, as it happens.
///
/// Feed it every [`RunEvent`] through [`observe`](Self::observe) (for instance from the observer
/// closure given to [`run_suite`](crate::run_suite)), then call [`finish`](Self::finish) with the
/// report. Each case prints as
///
/// ```text
/// data::send_recv ... ok (1.2 ms)
/// data::rdma_read ... FAILED (3.0 ms)
///     expected 1 completion, got 0 before the deadline
/// state::iwarp_close ... not run: written for the Iwarp state model; the device uses InfiniBand
/// data::rdma_write ... CRASH (12.0 ms)
///     killed by signal 11 (SIGSEGV)
/// drain::slow ... HUNG (40.00 s)
///     still running after 40 s (the case limit); the provider ignored a deadline
/// lifecycle::flap_port ... excluded: the test bed cannot take the port down (rxe.expect:7)
/// data::send_recv ... XFAIL (5.01 s): no WR ever executes on a dead device (dead.expect:3)
///     FAILED: expected 1 completions, got 0 before the deadline: []
/// device::ports ... XPASS (0.4 ms): expectation out of date: ports are not listed (dead.expect:4)
/// ```
///
/// `CRASH` is a case whose process died, `HUNG` one still running past its limit; `excluded` a
/// case an exclusion of the expectations file kept from running; `XFAIL` a case listed as an
/// expected failure that failed, with the written reason, where it is written, and the actual
/// outcome indented below; `XPASS` a listed case that passed.
///
/// The case name is written (and flushed) when the case starts, so a case that hangs is visible.
/// Write errors do not interrupt the run: the first one is kept, later output is dropped, and
/// [`finish`](Self::finish) returns it.
#[derive(Debug)]
pub struct HumanPrinter<W: Write> {
    out: W,
    strict: bool,
    /// Name of a case whose start was printed and whose result was not yet.
    pending: Option<String>,
    /// Whether any case line was printed (the summary is then set off by a blank line).
    printed_case: bool,
    error: Option<io::Error>,
}

impl<W: Write> HumanPrinter<W> {
    /// A printer writing to `out`, judging the result non-strictly (see
    /// [`SuiteReport::is_success`]).
    pub fn new(out: W) -> Self {
        HumanPrinter {
            out,
            strict: false,
            pending: None,
            printed_case: false,
            error: None,
        }
    }

    /// Judges the result as `--strict` does: a case that did not run, with no exclusion, makes
    /// the run fail.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Runs `f` on the output unless an earlier write failed; keeps the first error.
    fn emit(&mut self, f: impl FnOnce(&mut W) -> io::Result<()>) {
        if self.error.is_none()
            && let Err(e) = f(&mut self.out)
        {
            self.error = Some(e);
        }
    }

    /// Prints a header line naming what is about to run: provider, device and number of cases.
    pub fn start(&mut self, provider: &str, device: &str, cases: usize) {
        let noun = if cases == 1 { "case" } else { "cases" };
        self.emit(|out| {
            writeln!(
                out,
                "running {cases} {noun} against provider {provider}, device {device}\n"
            )
        });
    }

    /// Prints one event: the case name when it starts, its outcome when it finishes.
    pub fn observe(&mut self, event: RunEvent<'_>) {
        match event {
            RunEvent::Started { name } => {
                self.printed_case = true;
                let unfinished = self.pending.replace(name.to_string());
                self.emit(|out| {
                    if unfinished.is_some() {
                        // A case started without the previous one finishing: end its line.
                        writeln!(out)?;
                    }
                    write!(out, "{name} ... ")?;
                    out.flush()
                });
            }
            RunEvent::Finished(case) => {
                self.printed_case = true;
                let pending = self.pending.take();
                self.emit(|out| {
                    match pending {
                        Some(p) if p == case.name => {}
                        Some(_) => write!(out, "\n{} ... ", case.name)?,
                        None => write!(out, "{} ... ", case.name)?,
                    }
                    write_outcome(out, case)?;
                    out.flush()
                });
            }
        }
    }

    /// Prints the summary block of `report`, flushes, and returns the output, or the first write
    /// error met since the printer was made.
    ///
    /// The block says why the run stopped, if it did; lists the cases that fail the run again
    /// (crashed ones followed by `(CRASH)`, hung ones by `(HUNG)`, unexpected passes by
    /// `(XPASS)`), then the [`summary_line`], a line with the provider, device and total time,
    /// and the [result](super::result_word): `result: ok` or `result: FAILED ...`.
    pub fn finish(mut self, report: &SuiteReport) -> io::Result<W> {
        let s = report.summary();
        let strict = self.strict;
        let pending = self.pending.take();
        let printed_case = self.printed_case;
        self.emit(|out| {
            if pending.is_some() {
                writeln!(out)?;
            }
            if printed_case {
                writeln!(out)?;
            }
            if let Some(why) = &report.aborted {
                writeln!(out, "the run stopped: {why}\n")?;
            }
            let failed: Vec<(&CaseReport, Verdict)> = report
                .cases
                .iter()
                .map(|c| (c, c.verdict()))
                .filter(|(_, v)| v.is_failure())
                .collect();
            if !failed.is_empty() {
                writeln!(out, "failures:")?;
                for (c, verdict) in failed {
                    match verdict {
                        Verdict::Failed => writeln!(out, "    {}", c.name)?,
                        _ => writeln!(out, "    {} ({})", c.name, verdict.label())?,
                    }
                }
                writeln!(out)?;
            }
            writeln!(out, "{}", summary_line(&s))?;
            writeln!(
                out,
                "provider {}, device {}, total time {}",
                report.provider,
                report.device,
                format_duration(report.duration)
            )?;
            writeln!(out, "result: {}", result_word(report, strict))?;
            out.flush()
        });
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Writes each line of `text` indented by four spaces, the first one after `first`.
fn write_indented<W: Write>(out: &mut W, first: &str, text: &str) -> io::Result<()> {
    for (i, line) in text.lines().enumerate() {
        let prefix = if i == 0 { first } else { "" };
        writeln!(out, "    {prefix}{line}")?;
    }
    Ok(())
}

/// Writes the outcome part of a case line (after `name ... `), and an indented reason for a
/// failure.
fn write_outcome<W: Write>(out: &mut W, case: &CaseReport) -> io::Result<()> {
    let time = format_duration(case.duration);
    let reason = case.outcome.reason().unwrap_or_default();
    let listed = case.expectation.as_ref();
    match case.verdict() {
        Verdict::Passed => writeln!(out, "ok ({time})"),
        verdict @ (Verdict::Failed | Verdict::Crashed | Verdict::Hung) => {
            writeln!(out, "{} ({time})", verdict.label())?;
            write_indented(out, "", reason)
        }
        Verdict::NotRun => {
            let mut lines = reason.lines();
            writeln!(out, "not run: {}", lines.next().unwrap_or(""))?;
            for line in lines {
                writeln!(out, "    {line}")?;
            }
            if let Some(e) = listed {
                writeln!(
                    out,
                    "    listed as an expected failure ({}), but it did not run",
                    e.location()
                )?;
            }
            Ok(())
        }
        Verdict::Excluded => match listed {
            Some(e) => writeln!(out, "excluded: {} ({})", e.reason, e.location()),
            None => writeln!(out, "excluded: {reason}"),
        },
        Verdict::UnexpectedPass => match listed {
            Some(e) => writeln!(
                out,
                "XPASS ({time}): expectation out of date: {} ({})",
                e.reason,
                e.location()
            ),
            None => writeln!(out, "XPASS ({time})"),
        },
        Verdict::ExpectedFailure => {
            if let Some(e) = listed {
                writeln!(out, "XFAIL ({time}): {} ({})", e.reason, e.location())?;
            } else {
                writeln!(out, "XFAIL ({time})")?;
            }
            let label = format!("{}: ", case.outcome.label());
            write_indented(out, &label, reason)
        }
    }
}
