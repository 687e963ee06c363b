//! `anyverbs-conform` over plugins: the mock loaded from its shared object gives the same report
//! as the built-in mock; `list` shows plugins with their ABI version and the reason a file
//! cannot be loaded; a bad `--provider` is a usage error that says what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The mock's plugin, which cargo builds beside this test binary (`target/<profile>/deps/`).
fn mock_plugin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .expect("the test binary's directory")
        .join(anyverbs::plugin::plugin_file_name("anyverbs_provider_mock"));
    assert!(path.is_file(), "no mock plugin at {}", path.display());
    path
}

/// Runs the binary with `args` and the plugin search path set to `path_env` (or unset).
fn conform(args: &[&str], path_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anyverbs-conform"));
    cmd.args(args);
    match path_env {
        Some(p) => cmd.env(anyverbs::plugin::PROVIDER_PATH_ENV, p),
        None => cmd.env_remove(anyverbs::plugin::PROVIDER_PATH_ENV),
    };
    cmd.output().expect("cannot start anyverbs-conform")
}

fn show(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A directory unique to this process and test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "anyverbs-cli-plugins-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each case's name, outcome and reason from a JSON report (durations and totals left out).
fn outcomes(o: &Output) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", show(o)));
    v["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("no cases in {v}"))
        .iter()
        .map(|c| {
            let field = |f: &str| c[f].as_str().unwrap_or_default().to_string();
            (field("name"), field("outcome"), field("reason"))
        })
        .collect()
}

#[test]
fn the_mock_plugin_by_path_reports_exactly_what_the_built_in_mock_does() {
    let plugin = mock_plugin();
    for device in ["mock0", "mockiw0"] {
        let args = |provider: &str| {
            [
                "run",
                "--provider",
                provider,
                "--device",
                device,
                "--format",
                "json",
            ]
            .map(str::to_string)
        };
        let linked = conform(&args("mock").each_ref().map(String::as_str), None);
        let loaded = conform(
            &args(plugin.to_str().unwrap())
                .each_ref()
                .map(String::as_str),
            None,
        );
        assert_eq!(linked.status.code(), Some(0), "{}", show(&linked));
        assert_eq!(loaded.status.code(), Some(0), "{}", show(&loaded));
        let (a, b) = (outcomes(&linked), outcomes(&loaded));
        assert!(a.len() > 50, "the whole suite ran: {} cases", a.len());
        assert_eq!(a, b, "on {device}: built-in vs plugin");
    }
}

#[test]
fn the_mock_plugin_by_name_from_the_search_path_runs() {
    let dir = TempDir::new("by-name");
    std::fs::copy(mock_plugin(), dir.0.join("libanyverbs_provider_mock.so")).unwrap();
    // `anyverbs_provider_mock` is not a built-in name, so the search path is used; the file
    // `libanyverbs_provider_mock.so` matches it as `lib<name>.so`.
    let o = conform(
        &[
            "run",
            "--provider",
            "anyverbs_provider_mock",
            "--case",
            "device::*",
        ],
        Some(&dir.0),
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("result: ok"),
        "{}",
        show(&o)
    );
}

#[test]
fn list_shows_plugins_with_their_abi_version_and_the_files_that_cannot_be_loaded() {
    let dir = TempDir::new("list");
    std::fs::copy(mock_plugin(), dir.0.join("libanyverbs_provider_mock.so")).unwrap();
    std::fs::write(dir.0.join("libnotes.so"), "not a library\n").unwrap();
    let o = conform(&["list"], Some(&dir.0));
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("mock (built in)"), "{}", show(&o));
    let plugin_line = out
        .lines()
        .find(|l| l.starts_with("anyverbs-provider-mock "))
        .unwrap_or_else(|| panic!("no plugin line:\n{}", show(&o)));
    assert!(plugin_line.contains("ABI 4.0"), "{plugin_line}");
    assert!(
        plugin_line.contains("libanyverbs_provider_mock.so"),
        "{plugin_line}"
    );
    assert!(
        out.contains("libnotes.so: cannot load: ") && out.contains("not an ELF file"),
        "{}",
        show(&o)
    );
    // The plugin's devices are listed under it, as the built-in ones are.
    assert_eq!(out.matches("mockiw0").count(), 2, "{}", show(&o));
}

#[test]
fn a_provider_that_cannot_be_loaded_is_a_usage_error_saying_why() {
    let dir = TempDir::new("bad");
    let text = dir.0.join("libtext.so");
    std::fs::write(&text, "hello").unwrap();
    let cases: [(&str, &str); 3] = [
        (
            text.to_str().unwrap(),
            "is not a shared object: it is not an ELF file",
        ),
        ("/nonexistent/libanyverbs_provider_x.so", "no such file"),
        (
            "nosuchprovider",
            "no provider plugin named \"nosuchprovider\"",
        ),
    ];
    for (provider, says) in cases {
        let o = conform(&["run", "--provider", provider], Some(&dir.0));
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "--provider {provider}: {}", show(&o));
    }
}

#[test]
fn isolate_reports_a_provider_that_kills_the_process_as_crash_and_goes_on() {
    // The mock, except that creating a CQ aborts the process.
    let crashing = mock_plugin()
        .parent()
        .unwrap()
        .join(anyverbs::plugin::plugin_file_name(
            "anyverbs_fixture_crashing",
        ));
    assert!(
        crashing.is_file(),
        "no crashing plugin at {}",
        crashing.display()
    );
    let crashing = crashing.to_str().unwrap();

    // Without isolation the first case that creates a CQ takes the whole run down.
    let o = conform(
        &[
            "run",
            "--provider",
            crashing,
            "--device",
            "mock0",
            "--case",
            "resources::*",
        ],
        None,
    );
    assert_eq!(o.status.code(), None, "killed by a signal: {}", show(&o));

    // With it, every such case is a CRASH naming the signal, and the others still pass.
    let o = conform(
        &[
            "run",
            "--provider",
            crashing,
            "--device",
            "mock0",
            "--isolate",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let cases = outcomes(&o);
    let of = |name: &str| {
        cases
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no case {name} in {}", show(&o)))
    };
    let listing = of("device::listing");
    assert_eq!(listing.1, "passed", "{listing:?}");
    let crashed = of("data::send_recv_one_sge");
    assert_eq!(crashed.1, "crashed", "{crashed:?}");
    assert!(crashed.2.contains("SIGABRT"), "{crashed:?}");
    let all_crashes = cases.iter().filter(|(_, o, _)| o == "crashed").count();
    assert!(all_crashes > 40, "{all_crashes} crashes: {}", show(&o));
    assert_eq!(
        cases.len(),
        outcomes(&conform(
            &["run", "--provider", "mock", "--format", "json"],
            None
        ))
        .len(),
        "the run went on after the first crash"
    );
}
