//! Every way a plugin can be bad, with a real broken plugin (a fixture crate's cdylib, or a file
//! made here) each: the loader must return the right typed error, whose message names the file
//! and says what is wrong, and the test process must survive.

use std::path::Path;

use anyverbs::plugin::LoadedProvider;
use anyverbs::plugin::abi::{ABI_MAJOR, ABI_MINOR};
use anyverbs::plugin::{LoadError, Plugin, plugin_file_name};
use anyverbs::{
    Completion, CompletionQueue, Device, Error, ErrorKind, Fault, Provider, WcFlags, WcStatus,
};
use anyverbs_plugin_tests::{TempDir, fixture, mock_plugin_path};

/// Loads `path`, which must fail; returns the error.
fn load_err(path: &Path) -> LoadError {
    match Plugin::load(path) {
        Ok(plugin) => panic!("{} loaded, but must not: {plugin:?}", path.display()),
        Err(e) => e,
    }
}

/// Asserts that the message of `e` names `path` and contains every one of `words`.
fn assert_says(e: &impl std::fmt::Display, path: &Path, words: &[&str]) {
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} does not name {}",
        path.display()
    );
    for word in words {
        assert!(text.contains(word), "{text:?} does not say {word:?}");
    }
}

/// Asserts that `result` is an error of `kind` whose message contains every one of `words`.
fn assert_call_err<T>(result: anyverbs::Result<T>, kind: ErrorKind, words: &[&str]) -> Error {
    let Err(e) = result else {
        panic!("the call succeeded, but must fail with {kind}")
    };
    assert_eq!(e.kind(), kind, "{e}");
    for word in words {
        assert!(e.message().contains(word), "{e} does not say {word:?}");
    }
    e
}

fn instantiate(name: &str) -> LoadedProvider {
    let path = fixture(name);
    let plugin = Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"));
    plugin.instantiate().unwrap_or_else(|e| panic!("{e}"))
}

// ---- Fixture plugins refused at load ----

#[test]
fn a_library_without_an_entry_symbol_is_missing_entry_naming_the_symbol() {
    let path = fixture("no_entry");
    let e = load_err(&path);
    let symbol = "anyverbs_provider_v4_anyverbs_fixture_no_entry";
    assert!(
        matches!(&e, LoadError::MissingEntry { path: p, symbol: s } if *p == path && s == symbol),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_says(&e, &path, &[symbol, "not an anyverbs provider plugin"]);
}

/// Loads the fixture `name`, which speaks ABI `plugin`, and checks the refusal.
fn assert_abi_mismatch(name: &str, plugin: (u16, u16)) {
    let path = fixture(name);
    let e = load_err(&path);
    assert!(
        matches!(
            &e,
            LoadError::AbiMismatch { path: p, plugin: got, loader }
                if *p == path && *got == plugin && *loader == (ABI_MAJOR, ABI_MINOR)
        ),
        "{e:?}"
    );
    assert_eq!((ABI_MAJOR, ABI_MINOR), (4, 0));
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    let version = format!("ABI {}.{}", plugin.0, plugin.1);
    assert_says(&e, &path, &[&version, "ABI 4.0", "rebuild"]);
}

#[test]
fn a_plugin_of_a_future_abi_major_is_abi_mismatch_naming_both_versions() {
    assert_abi_mismatch("abi_future", (5, 0));
}

#[test]
fn a_plugin_built_for_an_earlier_abi_major_is_abi_mismatch_naming_both_versions() {
    assert_abi_mismatch("abi_past", (3, 1));
}

#[test]
fn a_table_shorter_than_the_abi_needs_is_table_too_small() {
    let path = fixture("table_small");
    let e = load_err(&path);
    let needed = anyverbs::plugin::abi::MIN_TABLE_SIZE;
    assert!(
        matches!(&e, LoadError::TableTooSmall { path: p, size: 16, needed: n } if *p == path && *n == needed),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Other);
    assert_says(&e, &path, &["16 bytes", &format!("at least {needed}")]);
}

#[test]
fn an_entry_symbol_returning_null_is_null_table() {
    let path = fixture("null_table");
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::NullTable { path: p } if *p == path),
        "{e:?}"
    );
    assert_says(&e, &path, &["returned no table"]);
}

#[test]
fn null_function_entries_are_missing_functions_naming_each() {
    let path = fixture("null_entry");
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::MissingFunctions { path: p, names } if *p == path && *names == ["cq_poll", "qp_drain"]),
        "{e:?}"
    );
    assert_says(&e, &path, &["null entries", "cq_poll, qp_drain"]);
}

// ---- Fixture plugins that load but cannot start ----

#[test]
fn a_failing_constructor_is_init_failed_with_the_providers_kind_and_message() {
    let path = fixture("init_fails");
    let plugin = Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.name(), "anyverbs-fixture-init-fails");
    for _ in 0..2 {
        let e = plugin.instantiate().unwrap_err();
        let LoadError::InitFailed { path: p, error } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*p, path);
        assert_eq!(error.kind(), ErrorKind::NotSupported);
        assert!(error.message().contains("no hardware here"), "{error}");
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert_says(&e, &path, &["failed to start", "no hardware here"]);
    }
}

#[test]
fn a_panicking_constructor_is_init_failed_and_the_process_survives() {
    let path = fixture("init_panics");
    let plugin = Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        let e = plugin.instantiate().unwrap_err();
        let LoadError::InitFailed { error, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(error.kind(), ErrorKind::Other);
        assert!(error.message().contains("panicked"), "{error}");
        assert!(
            error
                .message()
                .contains(anyverbs_fixture_init_panics::PANIC_TEXT),
            "{error}"
        );
        assert_says(&e, &path, &["failed to start", "panicked"]);
    }
}

#[test]
fn a_constructor_returning_a_null_provider_is_null_handle() {
    let path = fixture("init_null");
    let plugin = Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let e = plugin.instantiate().unwrap_err();
    assert!(
        matches!(&e, LoadError::NullHandle { path: p } if *p == path),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Other);
    assert_says(&e, &path, &["reported success", "null provider handle"]);
}

// ---- Fixture plugins that start but misbehave in calls ----

#[test]
fn null_duplicate_and_garbage_results_of_calls_are_errors_of_kind_other() {
    let provider = instantiate("misbehaving");
    let device = provider.open("mock0").unwrap();

    assert_call_err(
        device.alloc_pd().map(drop),
        ErrorKind::Other,
        &[
            "device_alloc_pd",
            "handle",
            "null, though the call reported success",
        ],
    );

    let first = device.create_cq(16).unwrap();
    assert_call_err(
        device.create_cq(16).map(drop),
        ErrorKind::Other,
        &[
            "device_create_cq",
            "already stands for a live object",
            "handed out twice",
        ],
    );
    // The refused duplicate was not adopted: the first CQ is intact, and works.
    let mut room = [Completion::default(); 4];
    assert_eq!(first.poll(&mut room).unwrap(), 0);

    let mut seven = [Completion::default(); anyverbs_fixture_misbehaving::FABRICATE_CAPACITY];
    // A completion with a status the ABI does not define was already taken off the CQ: it is
    // kept, as a general error with its wr_id, so the program can still reclaim the WR.
    assert_eq!(first.poll(&mut seven).unwrap(), 1);
    assert_eq!(
        seven[0].status,
        anyverbs::WcStatus::General,
        "{:?}",
        seven[0]
    );
    assert_eq!(
        seven[0].wr_id,
        anyverbs_fixture_misbehaving::FABRICATED_WR_ID
    );

    // A poll that fails after writing undefined codes over the whole buffer: the program's
    // buffer still holds valid completions afterwards (read here as raw integers).
    let mut eight = [Completion::default(); anyverbs_fixture_misbehaving::SCRIBBLE_CAPACITY];
    assert_call_err(
        first.poll(&mut eight).map(drop),
        ErrorKind::InvalidState,
        &[anyverbs_fixture_misbehaving::SCRIBBLE_MESSAGE],
    );
    for wc in &eight {
        let raw: *const Completion = wc;
        // SAFETY: `Completion` is `#[repr(C)]`: status, opcode and flags are the `u32`s at
        // offsets 8, 12 and 24; read as integers, whatever they hold.
        let (status, opcode, flags) = unsafe {
            let p = raw.cast::<u32>();
            (p.add(2).read(), p.add(3).read(), p.add(6).read())
        };
        assert_eq!(
            (status, opcode),
            (WcStatus::General as u32, 0),
            "{status} {opcode}"
        );
        assert_eq!(flags, WcFlags::all().bits());
    }

    // A count beyond the room, and a negative result that negates no status: errors of kind
    // Other, saying what the plugin returned.
    let mut nine = [Completion::default(); anyverbs_fixture_misbehaving::OVERFULL_CAPACITY];
    assert_call_err(
        first.poll(&mut nine).map(drop),
        ErrorKind::Other,
        &["cq_poll", "10 completions, for room for 9"],
    );
    let mut ten = [Completion::default(); anyverbs_fixture_misbehaving::NOT_A_STATUS_CAPACITY];
    assert_call_err(
        first.poll(&mut ten).map(drop),
        ErrorKind::Other,
        &["unknown status"],
    );

    assert_call_err(
        device.listen("127.0.0.1:0".parse().unwrap()).map(drop),
        ErrorKind::Other,
        &[
            "unknown status 999",
            anyverbs_fixture_misbehaving::LISTEN_MESSAGE,
        ],
    );
    assert_call_err(
        provider.inject("mock0", &Fault::Unplug),
        ErrorKind::InvalidState,
        &[],
    );

    // The plugin works on: a real CQ again, a different one.
    let second = device.create_cq(16).unwrap();
    assert_ne!(first.cq_num(), second.cq_num());
    assert_eq!(second.poll(&mut room).unwrap(), 0);

    // Releasing everything frees each object once (a double free would abort the process).
    drop((first, second, device, provider));
    let again = instantiate("misbehaving");
    let device = again.open("mock0").unwrap();
    let cq = device.create_cq(8).unwrap();
    assert_eq!(cq.poll(&mut room).unwrap(), 0);
}

#[test]
fn an_error_the_plugin_gave_no_message_for_still_says_what_failed() {
    let provider = instantiate("misbehaving");
    let e = provider.inject("mock0", &Fault::Unplug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert!(
        !e.message().trim().is_empty(),
        "{e:?}: the message is empty; it should at least name the provider and the call"
    );
}

#[test]
fn panics_in_provider_calls_are_errors_of_kind_other_and_the_process_survives() {
    let provider = instantiate("panicky");
    assert_eq!(provider.name(), "panicky");
    for _ in 0..2 {
        let e = assert_call_err(provider.devices(), ErrorKind::Other, &["panicked"]);
        assert!(
            e.message()
                .contains(anyverbs_fixture_panicky::DEVICES_PANIC),
            "{e}"
        );
        assert_call_err(
            provider.inject("x", &Fault::Unplug),
            ErrorKind::Other,
            &["panicked", anyverbs_fixture_panicky::INJECT_PANIC],
        );
    }
    // Calls that do not panic still work.
    assert_call_err(provider.open("x").map(drop), ErrorKind::NotFound, &["x"]);
}

#[test]
fn the_crashing_plugin_loads_and_lists_devices() {
    // Its `create_cq` aborts the process; that is for the CLI's --isolate, never called here.
    let provider = instantiate("crashing");
    assert_eq!(provider.plugin().name(), "anyverbs-fixture-crashing");
    let devices = provider.devices().unwrap();
    assert!(
        devices.iter().any(|d| d.identity.name == "mock0"),
        "{devices:?}"
    );
    let device = provider.open("mock0").unwrap();
    assert!(!device.ports().unwrap().is_empty());
}

// ---- Files that are not plugins ----

#[test]
fn a_renamed_plugin_lacks_the_entry_symbol_its_new_name_implies() {
    // The entry symbol is derived from the file name, so a plugin installed under another name
    // is refused, with a message saying to keep cargo's file name.
    let dir = TempDir::new("renamed");
    let path = dir.path().join(plugin_file_name("mock"));
    std::fs::copy(mock_plugin_path(), &path).unwrap();
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::MissingEntry { path: p, symbol } if *p == path && symbol == "anyverbs_provider_v4_mock"),
        "{e:?}"
    );
    assert_says(
        &e,
        &path,
        &[
            "anyverbs_provider_v4_mock",
            "keep the file name lib<crate>.so",
        ],
    );

    // A name that is no crate name at all (a hyphen) is refused the same way.
    let path = dir.path().join(plugin_file_name("my-mock"));
    std::fs::copy(mock_plugin_path(), &path).unwrap();
    let e = load_err(&path);
    eprintln!("{e:?}\n  {e}");
    assert!(
        matches!(&e, LoadError::MissingEntry { path: p, .. } if *p == path),
        "{e:?}"
    );
    assert_says(&e, &path, &["keep the file name"]);
}

#[test]
fn a_path_that_does_not_exist_is_not_found() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("libnothing.so");
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::NotFound { path: p } if *p == path),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_says(&e, &path, &["no such file"]);
}

#[test]
fn a_path_through_a_file_is_unreadable() {
    let dir = TempDir::new("unreadable");
    let file = dir.write("file", b"x");
    let path = file.join("libx.so");
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::Unreadable { path: p, .. } if *p == path),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(std::error::Error::source(&e).is_some());
    assert_says(&e, &path, &["cannot read"]);
}

#[test]
fn a_directory_is_not_a_shared_object() {
    let dir = TempDir::new("directory");
    let path = dir.path().join("libdir.so");
    std::fs::create_dir(&path).unwrap();
    let e = load_err(&path);
    assert!(
        matches!(&e, LoadError::NotSharedObject { path: p, .. } if *p == path),
        "{e:?}"
    );
    assert_says(&e, &path, &["not a shared object", "directory"]);
}

#[cfg(target_os = "linux")]
mod elf {
    use std::path::PathBuf;

    use super::*;

    /// A copy of the mock plugin in `dir` under `name`, with `patch` applied to its bytes.
    fn patched_mock(dir: &TempDir, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
        let mut bytes = std::fs::read(mock_plugin_path()).unwrap();
        patch(&mut bytes);
        dir.write(name, &bytes)
    }

    #[test]
    fn a_text_file_is_not_an_elf_file() {
        let dir = TempDir::new("text");
        let path = dir.write("libx.so", b"this is not a plugin\n");
        let e = load_err(&path);
        assert!(
            matches!(&e, LoadError::NotSharedObject { path: p, reason } if *p == path && reason.contains("not an ELF file")),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_says(&e, &path, &["not a shared object", "not an ELF file"]);
    }

    #[test]
    fn an_empty_file_is_not_an_elf_file() {
        let dir = TempDir::new("empty");
        let path = dir.write("libempty.so", b"");
        let e = load_err(&path);
        assert!(
            matches!(&e, LoadError::NotSharedObject { reason, .. } if reason.contains("not an ELF file")),
            "{e:?}"
        );
        assert_says(&e, &path, &["not an ELF file"]);
    }

    #[test]
    fn a_ten_byte_elf_file_has_a_truncated_header() {
        let dir = TempDir::new("short");
        let path = dir.write("libshort.so", b"\x7fELF\x02\x01\x01\0\0\0");
        let e = load_err(&path);
        assert!(
            matches!(&e, LoadError::NotSharedObject { path: p, reason } if *p == path && reason.contains("truncated")),
            "{e:?}"
        );
        assert_says(&e, &path, &["not a shared object", "truncated"]);
    }

    #[test]
    fn a_shared_object_for_another_machine_is_wrong_architecture_naming_both() {
        let (other, other_name, host_name) = if cfg!(target_arch = "aarch64") {
            (62u16, "x86_64", "aarch64")
        } else {
            (183u16, "aarch64", std::env::consts::ARCH)
        };
        let dir = TempDir::new("arch");
        let path = patched_mock(&dir, "libanyverbs_provider_mock.so", |b| {
            b[18..20].copy_from_slice(&other.to_le_bytes());
        });
        let e = load_err(&path);
        assert!(
            matches!(
                &e,
                LoadError::WrongArchitecture { path: p, found, expected }
                    if *p == path && found.contains(other_name) && expected.contains(host_name)
            ),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert_says(
            &e,
            &path,
            &[
                &format!("built for {other_name}"),
                &format!("this process is {host_name}"),
            ],
        );
    }

    #[test]
    fn a_relocatable_object_is_not_a_shared_object() {
        let dir = TempDir::new("reloc");
        let path = patched_mock(&dir, "libanyverbs_provider_mock.so", |b| {
            b[16..18].copy_from_slice(&1u16.to_le_bytes());
        });
        let e = load_err(&path);
        assert!(
            matches!(&e, LoadError::NotSharedObject { path: p, reason } if *p == path && reason.contains("relocatable")),
            "{e:?}"
        );
        assert_says(&e, &path, &["not a shared object", "relocatable"]);
    }

    #[test]
    fn a_shared_object_cut_inside_its_program_headers_is_refused_before_dlopen() {
        // A valid ELF header for this machine, then nothing: the headers it describes are not in
        // the file, which the loader sees before it asks the dynamic loader.
        let dir = TempDir::new("cut64");
        let path = patched_mock(&dir, "libanyverbs_provider_mock.so", |b| b.truncate(64));
        let e = load_err(&path);
        assert!(
            matches!(&e, LoadError::NotSharedObject { path: p, reason } if *p == path && reason.contains("cut short")),
            "{e:?}"
        );
        assert_says(&e, &path, &["cut short", "64 bytes"]);
    }

    /// Set in the child process of the next test: the file it must load.
    const TRUNCATED_CHILD: &str = "ANYVERBS_PLUGIN_TESTS_TRUNCATED";

    #[test]
    fn a_shared_object_cut_after_its_headers_is_refused_without_killing_the_process() {
        // The file must be refused with an error: `dlopen` would map its segments past the end
        // of the file and the process would die of SIGBUS, so the load runs in a child process
        // (a regression then fails this test instead of killing the test run).
        if let Some(path) = std::env::var_os(TRUNCATED_CHILD) {
            let path = PathBuf::from(path);
            let e = load_err(&path);
            assert!(
                matches!(
                    &e,
                    LoadError::Open { .. } | LoadError::NotSharedObject { .. }
                ),
                "{e:?}"
            );
            assert_says(&e, &path, &[]);
            return;
        }
        let dir = TempDir::new("cut4k");
        let path = patched_mock(&dir, "libanyverbs_provider_mock.so", |b| b.truncate(4096));
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "elf::a_shared_object_cut_after_its_headers_is_refused_without_killing_the_process",
                "--test-threads=1",
            ])
            .env(TRUNCATED_CHILD, &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "loading {} (the mock cut to 4096 bytes) ended the process: {}\n{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn the_test_executable_itself_is_refused_readably() {
        // A PIE executable is ELF type ET_DYN, like a shared object, so the header check passes
        // it on to `dlopen`, which refuses to load an executable.
        let path = std::env::current_exe().unwrap();
        let e = load_err(&path);
        eprintln!("loading the test executable: {e:?}\n  {e}");
        assert!(
            matches!(&e, LoadError::Open { path: p, .. } if *p == path),
            "{e:?}"
        );
        assert_says(&e, &path, &["cannot load"]);
        if cfg!(target_env = "gnu") {
            // glibc says why.
            assert_says(
                &e,
                &path,
                &["cannot dynamically load position-independent executable"],
            );
        }
    }
}
