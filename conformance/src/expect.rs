//! Expectations files (`anyverbs-conform run --expect FILE`): the cases of the suite that one
//! provider is known not to pass, each with a written reason, and of which of two kinds (the
//! conventions of BoringSSL's BoGo, whose disabled tests carry a reason, and of libfabric's
//! fabtests exclude lists).
//!
//! # Format
//!
//! UTF-8 text, one expectation a line:
//!
//! ```text
//! # mockdead0 never executes a WR: every data case times out.
//! xfail    data::*                          no WR ever executes on a dead device
//! exclude  lifecycle::flap_port_*           the test bed cannot take this device's port down
//! ```
//!
//! - A blank line, or a line whose first non-blank character is `#`, is ignored. A `#` later in
//!   a line is part of the reason.
//! - Every other line is `<kind> <pattern> <reason...>`, separated by white space:
//!   - the kind is `xfail` (an **expected failure**: the case runs, and must fail) or `exclude`
//!     (an **exclusion**: the case cannot run on this device, and is not run);
//!   - the pattern is an exact case name, or a glob if it has a wildcard (`*` any run of
//!     characters, `?` one character; see [`pattern_matches`]). Unlike `--case`, a pattern
//!     without a wildcard is **not** a substring: `data::send` lists no case but `data::send`;
//!   - the reason, the rest of the line, is required.
//! - A pattern must match at least one case of the whole suite (not only of the cases selected
//!   with `--case`): a pattern that matches nothing is an error, so a typo cannot silently list
//!   nothing.
//! - If several lines match a case, the first one applies.
//!
//! Errors name the file and the line (`FILE:LINE: message`).
//!
//! # Meaning
//!
//! | the case | not listed | `xfail` | `exclude` |
//! |---|---|---|---|
//! | passes | ok | **XPASS**: fails the run ("expectation out of date") | — (not run) |
//! | fails, crashes or hangs | fails the run | **XFAIL**: does not fail the run | — (not run) |
//! | does not run | not run (`--strict` fails it) | not run (`--strict` fails it) | **excluded**: `--strict` accepts it |
//!
//! An expected failure excuses only a case that ran and failed, so a case that stops running
//! (say, after a change to the device's capabilities) is noticed; an exclusion excuses only a
//! case that did not run, because someone wrote down why it cannot. See
//! [`Verdict`](crate::runner::Verdict).

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::runner::{CaseReport, SuiteReport};

/// Whether a case name matches an expectation's pattern: a glob (`*` any run, `?` one
/// character) if the pattern has wildcards, the exact name otherwise.
pub fn pattern_matches(name: &str, pattern: &str) -> bool {
    if pattern.contains(['*', '?']) {
        wildmatch::WildMatch::new(pattern).matches(name)
    } else {
        name == pattern
    }
}

/// What an expectation says of the cases it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectationKind {
    /// `xfail`: the case runs, and is expected to fail (or crash, or hang).
    ExpectedFailure,
    /// `exclude`: the case cannot run on this device, and is not run.
    Exclusion,
}

impl ExpectationKind {
    /// The keyword that starts its lines: `xfail` or `exclude`.
    pub fn keyword(self) -> &'static str {
        match self {
            ExpectationKind::ExpectedFailure => "xfail",
            ExpectationKind::Exclusion => "exclude",
        }
    }
}

/// One line of an expectations file: its kind, the cases it lists, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// Expected failure or exclusion.
    pub kind: ExpectationKind,
    /// The pattern as written (see [`pattern_matches`]).
    pub pattern: String,
    /// Why the cases are expected not to pass, as written.
    pub reason: String,
    /// The file, as named on the command line.
    pub file: String,
    /// The line number in the file, from 1.
    pub line: usize,
}

impl Expectation {
    /// Where it was written: `FILE:LINE`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// Why a case this exclusion lists did not run: `excluded (FILE:LINE): REASON`.
    pub fn excluded_because(&self) -> String {
        format!("excluded ({}): {}", self.location(), self.reason)
    }
}

/// An error in an expectations file, or reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectError {
    /// The file, as named on the command line.
    pub file: String,
    /// The line at fault, from 1, if the error is on one line.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ExpectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ExpectError {}

/// The expectations of one provider, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    entries: Vec<Expectation>,
}

impl Expectations {
    /// No expectations: every case counts as it ends.
    pub fn none() -> Self {
        Expectations::default()
    }

    /// Parses the text of an expectations file named `file` (used in errors and in each
    /// [`Expectation`]), checking every pattern against the names of all the cases of the suite.
    ///
    /// The format is described in the [module documentation](self): blank lines and lines
    /// starting with `#` are ignored; every other line is `<kind> <pattern> <reason...>`, the
    /// kind `xfail` or `exclude` and the reason required; a pattern is an exact case name or a
    /// glob and must match at least one of `case_names`.
    pub fn parse(text: &str, file: &str, case_names: &[&str]) -> Result<Self, ExpectError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ExpectError {
                file: file.to_string(),
                line: Some(line),
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut words = trimmed.splitn(3, char::is_whitespace);
            let first = words.next().unwrap_or_default();
            let kind = match first {
                "xfail" => ExpectationKind::ExpectedFailure,
                "exclude" => ExpectationKind::Exclusion,
                other => {
                    return Err(err(format!(
                        "a line starts with `xfail` (the case runs and is expected to fail) or \
                         `exclude` (the case cannot run on this device and is not run), then \
                         the case or glob and the reason; this one starts with {other:?}"
                    )));
                }
            };
            let rest = trimmed[first.len()..].trim_start();
            let (pattern, reason) = match rest.split_once(char::is_whitespace) {
                Some((p, r)) => (p, r.trim()),
                None => (rest, ""),
            };
            if pattern.is_empty() {
                return Err(err(format!(
                    "`{first}` must be followed by a case name or glob, and the reason"
                )));
            }
            if reason.is_empty() {
                return Err(err(format!(
                    "{first} {pattern:?} has no reason: write after the pattern why the case {}",
                    match kind {
                        ExpectationKind::ExpectedFailure => "is expected to fail",
                        ExpectationKind::Exclusion => "cannot run on this device",
                    }
                )));
            }
            if !case_names.iter().any(|name| pattern_matches(name, pattern)) {
                let hint = if pattern.contains(['*', '?']) {
                    ""
                } else {
                    " (a pattern without `*` or `?` is an exact case name)"
                };
                return Err(err(format!(
                    "pattern {pattern:?} matches no case of the suite{hint}; \
                     `anyverbs-conform cases` lists the case names"
                )));
            }
            entries.push(Expectation {
                kind,
                pattern: pattern.to_string(),
                reason: reason.to_string(),
                file: file.to_string(),
                line,
            });
        }
        Ok(Expectations { entries })
    }

    /// Reads and parses the expectations file at `path` (see [`parse`](Self::parse)); errors
    /// name the file as `path` displays.
    pub fn load(path: &Path, case_names: &[&str]) -> Result<Self, ExpectError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ExpectError {
            file: file.clone(),
            line: None,
            message: if e.kind() == std::io::ErrorKind::InvalidData {
                "not UTF-8 text".to_string()
            } else {
                format!("cannot read the expectations file: {e}")
            },
        })?;
        Expectations::parse(&text, &file, case_names)
    }

    /// The expectations, in file order.
    pub fn entries(&self) -> &[Expectation] {
        &self.entries
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first expectation whose pattern matches the case named `name`.
    pub fn find(&self, name: &str) -> Option<&Expectation> {
        self.entries
            .iter()
            .find(|e| pattern_matches(name, &e.pattern))
    }

    /// The exclusion that keeps the case named `name` from running, if the first line that
    /// lists it is one.
    pub fn exclusion(&self, name: &str) -> Option<&Expectation> {
        self.find(name)
            .filter(|e| e.kind == ExpectationKind::Exclusion)
    }

    /// Sets the case's [`expectation`](CaseReport::expectation) to the one that lists it, or to
    /// none.
    pub fn apply(&self, case: &mut CaseReport) {
        case.expectation = self.find(&case.name).cloned();
    }

    /// [`apply`](Self::apply) to every case of the report.
    pub fn apply_all(&self, report: &mut SuiteReport) {
        for case in &mut report.cases {
            self.apply(case);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::runner::{Outcome, Verdict};

    const NAMES: &[&str] = &[
        "data::send",
        "data::send_recv",
        "data::rdma_read",
        "device::listing",
    ];

    fn parse(text: &str) -> Result<Expectations, ExpectError> {
        Expectations::parse(text, "x.expect", NAMES)
    }

    fn case(name: &str, outcome: Outcome) -> CaseReport {
        CaseReport {
            name: name.to_string(),
            description: String::new(),
            outcome,
            duration: Duration::ZERO,
            expectation: None,
        }
    }

    #[test]
    fn parses_kinds_patterns_reasons_comments_and_blank_lines() {
        let e = parse(
            "# comment\n\n   \n  # indented comment\n\
             xfail data::send   the reason  # with a hash \r\n\
             \texclude\tdata::r*\tread is not implemented\n",
        )
        .unwrap();
        assert_eq!(
            e.entries(),
            [
                Expectation {
                    kind: ExpectationKind::ExpectedFailure,
                    pattern: "data::send".into(),
                    reason: "the reason  # with a hash".into(),
                    file: "x.expect".into(),
                    line: 5,
                },
                Expectation {
                    kind: ExpectationKind::Exclusion,
                    pattern: "data::r*".into(),
                    reason: "read is not implemented".into(),
                    file: "x.expect".into(),
                    line: 6,
                },
            ]
        );
        assert_eq!(e.entries()[1].location(), "x.expect:6");
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn a_line_without_its_kind_is_an_error_saying_what_the_kinds_mean() {
        // The format before kinds existed: it no longer says which of two things it means.
        let err = parse("data::send no completion\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        let msg = err.to_string();
        for word in [
            "`xfail`",
            "`exclude`",
            "\"data::send\"",
            "expected to fail",
            "not run",
        ] {
            assert!(msg.contains(word), "{msg} does not say {word}");
        }
        let err = parse("xfail\n").unwrap_err();
        assert!(err.to_string().contains("followed by a case name"), "{err}");
    }

    #[test]
    fn a_line_without_a_reason_is_an_error_naming_file_and_line() {
        for text in [
            "\n# c\nxfail data::send\n",
            "\n# c\nexclude data::send   \t \n",
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, Some(3), "{err}");
            let msg = err.to_string();
            assert!(msg.starts_with("x.expect:3: "), "{msg}");
            assert!(msg.contains("no reason"), "{msg}");
        }
    }

    #[test]
    fn a_pattern_matching_no_case_is_an_error_naming_file_and_line() {
        for pattern in ["data::sned", "nosuch::*", "data::rdma"] {
            let err = parse(&format!("xfail data::send ok\nexclude {pattern} why\n")).unwrap_err();
            assert_eq!(err.line, Some(2), "{err}");
            assert!(err.to_string().starts_with("x.expect:2: pattern "), "{err}");
            assert!(err.to_string().contains(pattern), "{err}");
        }
    }

    #[test]
    fn patterns_are_exact_names_or_globs_never_substrings() {
        assert!(pattern_matches("data::send", "data::send"));
        assert!(!pattern_matches("data::send_recv", "data::send"));
        assert!(!pattern_matches("data::send", "send"));
        assert!(pattern_matches("data::send_recv", "data::send*"));
        assert!(pattern_matches("data::send_recv", "data::send_rec?"));
        assert!(!pattern_matches("device::listing", "data::*"));
    }

    #[test]
    fn first_matching_line_applies() {
        let e = parse("xfail data::send_recv first\nexclude data::* second\n").unwrap();
        assert_eq!(e.find("data::send_recv").unwrap().reason, "first");
        assert_eq!(e.find("data::send").unwrap().reason, "second");
        assert!(e.find("device::listing").is_none());
        assert!(
            e.exclusion("data::send_recv").is_none(),
            "the first line is an xfail"
        );
        assert_eq!(e.exclusion("data::send").unwrap().line, 2);
    }

    fn report(cases: Vec<CaseReport>) -> SuiteReport {
        SuiteReport {
            provider: "p".into(),
            device: "d".into(),
            cases,
            duration: Duration::ZERO,
            aborted: None,
        }
    }

    #[test]
    fn an_expected_failure_excuses_a_failure_and_nothing_else() {
        let e = parse("xfail data::* not yet\n").unwrap();
        let mut report = report(vec![
            case("data::send", Outcome::Failed("no completion".into())),
            case("data::rdma_read", Outcome::Passed),
            case("data::send_recv", Outcome::NotRun("lacks X".into())),
            case("device::listing", Outcome::Passed),
        ]);
        e.apply_all(&mut report);
        let verdicts: Vec<Verdict> = report.cases.iter().map(CaseReport::verdict).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::ExpectedFailure,
                Verdict::UnexpectedPass,
                Verdict::NotRun,
                Verdict::Passed
            ]
        );
        assert_eq!(
            report.cases[1].reason().as_deref(),
            Some("expectation out of date: not yet")
        );
        assert_eq!(report.cases[0].reason().as_deref(), Some("no completion"));
        let s = report.summary();
        assert_eq!(
            (s.passed, s.failed, s.not_run, s.expected_failures),
            (1, 1, 1, 1)
        );
        assert_eq!(s.unexpected_passes, 1);
        assert!(!report.is_success(false));
        report.cases.remove(1);
        assert!(report.is_success(false));
        assert!(
            !report.is_success(true),
            "a case listed as xfail that did not run is still not run under --strict"
        );
        report.cases.remove(1);
        assert!(report.is_success(true), "expected failures pass --strict");
        // Applying no expectations clears them.
        Expectations::none().apply_all(&mut report);
        assert!(report.cases.iter().all(|c| c.expectation.is_none()));
    }

    #[test]
    fn an_exclusion_excuses_a_case_that_did_not_run_and_nothing_else() {
        let e = parse("exclude data::* the device cannot\n").unwrap();
        let mut report = report(vec![
            case("data::send", Outcome::NotRun("excluded".into())),
            case("data::send_recv", Outcome::Failed("broke".into())),
            case("data::rdma_read", Outcome::Passed),
        ]);
        e.apply_all(&mut report);
        let verdicts: Vec<Verdict> = report.cases.iter().map(CaseReport::verdict).collect();
        assert_eq!(
            verdicts,
            [Verdict::Excluded, Verdict::Failed, Verdict::UnexpectedPass]
        );
        let s = report.summary();
        assert_eq!((s.excluded, s.not_run, s.failed), (1, 0, 2));
        report.cases.truncate(1);
        assert!(report.is_success(true), "--strict accepts an exclusion");
    }

    #[test]
    fn a_stopped_run_never_succeeds() {
        let mut report = report(vec![case("data::send", Outcome::Passed)]);
        assert!(report.is_success(true));
        report.aborted = Some("a case hung".into());
        assert!(!report.is_success(false));
    }

    #[test]
    fn load_names_the_file() {
        let err = Expectations::load(Path::new("/no/such/dir/x.expect"), NAMES).unwrap_err();
        assert_eq!(err.line, None);
        assert!(
            err.to_string()
                .starts_with("/no/such/dir/x.expect: cannot read"),
            "{err}"
        );
    }
}
