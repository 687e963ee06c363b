//! `--isolate`: each case in a child process, with the same outcomes as in-process.

mod common;

use common::*;

#[test]
fn isolate_gives_the_same_outcomes() {
    for extra in [
        &["--case", "device::*"][..],
        // Passed and not run.
        &["--device", "mockiw0", "--case", "data::*"],
        // Failed.
        &[
            "--device",
            "mockdead0",
            "--timeout",
            "0.2",
            "--case",
            "data::send_recv*",
            "--no-builtin-expectations",
        ],
        // Expected failures, from the built-in expectations.
        &["--device", "mockdead0", "--case", "data::send_recv*"],
    ] {
        let (inline, code, o) = run_json(extra);
        assert!(!outcomes(&inline).is_empty(), "{}", show(&o));
        let isolated_args: Vec<&str> = extra.iter().copied().chain(["--isolate"]).collect();
        let (isolated, isolated_code, io) = run_json(&isolated_args);
        assert_eq!(
            outcomes(&isolated),
            outcomes(&inline),
            "{extra:?}\n{}",
            show(&io)
        );
        assert_eq!(isolated["summary"], inline["summary"], "{extra:?}");
        assert_eq!(isolated_code, code, "{extra:?}\n{}", show(&io));
    }
}

#[test]
fn isolate_human_output_and_expectations() {
    let file = expect_file(
        "isolate.expect",
        &format!("xfail {DEAD_FAILS} dead device\n"),
    );
    let o = conform(&[
        "run",
        "--provider",
        "mock",
        "--device",
        "mockdead0",
        "--timeout",
        "0.2",
        "--case",
        "data::send_recv*",
        "--isolate",
        "--expect",
        file.as_str(),
    ]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the unlisted case fails: {}",
        show(&o)
    );
    assert!(out.contains(&format!("{DEAD_FAILS} ... XFAIL (")), "{out}");
    assert!(
        out.contains("data::send_recv_many_sges ... FAILED ("),
        "{out}"
    );
    assert!(!out.contains("CRASH"), "{out}");
}
