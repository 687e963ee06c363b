//! What the CLI's tests share: running the built binary, reading its output, and scratch
//! files.

#![allow(dead_code)] // each test binary uses its part

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the binary with `args`.
pub fn conform(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anyverbs-conform"))
        .args(args)
        .output()
        .expect("cannot start anyverbs-conform")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is not UTF-8")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is not UTF-8")
}

/// Everything about a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// A file path unique to this process and test, removed when dropped.
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new(name: &str) -> TempPath {
        let path = std::env::temp_dir().join(format!(
            "anyverbs-conform-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("temp path is not UTF-8")
    }

    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.0)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.0.display()))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a line is the human summary line `N passed, N failed, N not run`; returns the counts.
/// The failed count may be broken down in parentheses (`3 failed (1 crash, 1 unexpected pass)`)
/// and excluded cases and expected failures counted at the end (`, 2 excluded, 2 expected
/// failures`); those are left out.
pub fn summary_counts(line: &str) -> Option<(usize, usize, usize)> {
    let line = match (line.find(" ("), line.find("), ")) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &line[..open], &line[close + 1..])
        }
        _ => line.to_string(),
    };
    let mut parts = line.split(", ");
    let mut count =
        |suffix: &str| -> Option<usize> { parts.next()?.strip_suffix(suffix)?.parse().ok() };
    let counts = (count(" passed")?, count(" failed")?, count(" not run")?);
    let extra_ok = parts.all(|rest| {
        rest.ends_with(" excluded")
            || rest.ends_with(" expected failure")
            || rest.ends_with(" expected failures")
    });
    extra_ok.then_some(counts)
}

/// The single summary line of a human output.
pub fn summary_of(text: &str) -> (usize, usize, usize) {
    let found: Vec<_> = text.lines().filter_map(summary_counts).collect();
    assert_eq!(found.len(), 1, "expected one summary line in:\n{text}");
    found[0]
}

/// Runs with `--format json` to standard output, checks that stdout is exactly one JSON
/// document, and returns it with the exit code.
pub fn run_json(extra: &[&str]) -> (Value, i32, Output) {
    let mut args = vec!["run", "--provider", "mock", "--format", "json"];
    args.extend_from_slice(extra);
    let o = conform(&args);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", show(&o)));
    let code = o.status.code().expect("killed by a signal");
    (v, code, o)
}

pub fn count(v: &Value, field: &str) -> u64 {
    v["summary"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no summary.{field} in {v}"))
}

pub fn case_names(v: &Value) -> Vec<String> {
    v["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases array in {v}"))
        .iter()
        .map(|c| c["name"].as_str().expect("case without a name").to_string())
        .collect()
}

/// The exit status the CLI must give a run with these counts.
pub fn expected_code(v: &Value, strict: bool) -> i32 {
    if v.get("aborted").is_some() || count(v, "failed") > 0 || (strict && count(v, "not_run") > 0) {
        1
    } else {
        0
    }
}

/// A case that fails on the dead mock device (no WR ever executes), quickly with `--timeout 0.2`.
pub const DEAD_FAILS: &str = "data::send_recv_one_sge";
/// A case that passes on every mock device.
pub const PASSES: &str = "device::listing";
/// A case that does not run on the InfiniBand mock devices.
pub const NOT_RUN_ON_MOCK0: &str = "state::iwarp_close_with_empty_send_queue";

/// Writes an expectations file with `text` and returns it.
pub fn expect_file(name: &str, text: &str) -> TempPath {
    let file = TempPath::new(name);
    std::fs::write(&file.0, text).expect("cannot write the expectations file");
    file
}

pub fn find_case<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["cases"]
        .as_array()
        .and_then(|cases| cases.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no case {name} in {v}"))
}

/// `(name, outcome, reason)` of every case of a JSON report.
pub fn outcomes(v: &Value) -> Vec<(String, String, String)> {
    v["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases in {v}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}
