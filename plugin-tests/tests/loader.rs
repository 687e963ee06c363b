//! The loader's bookkeeping with real plugins: distinct entry symbols for providers linked into
//! one program, finding plugins by name and listing a directory, handles kept to their own
//! provider instance, and loading one file twice.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use anyverbs::plugin::abi::{EntryFn, ProviderTable};
use anyverbs::plugin::{LoadError, Plugin, plugin_file_name};
use anyverbs::{CompletionQueue, Device, ErrorKind, ProtectionDomain, Provider, QpInit};
use anyverbs_plugin_tests::{TempDir, deps_dir, fixture, mock_plugin_path, plugin_path};

// Link the rlibs of two providers that use `export_provider!` (the mock and a fixture) into
// this test binary, as a program linking several providers would.
use anyverbs_fixture_init_fails as _;
use anyverbs_provider_mock as _;

/// Copies `from` into `dir` as `name`.
fn copy_into(dir: &TempDir, from: &Path, name: &str) -> PathBuf {
    let to = dir.path().join(name);
    std::fs::copy(from, &to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
    to
}

/// The table an entry point returns.
///
/// # Safety
/// `entry` must be an anyverbs entry point of this ABI major.
unsafe fn table_of(entry: EntryFn) -> &'static ProviderTable {
    // SAFETY: an entry point takes nothing and returns a pointer to its static table.
    let table = unsafe { entry() };
    assert!(!table.is_null(), "an entry point returned no table");
    // SAFETY: non-null, static, of this ABI, as the caller guarantees.
    unsafe { &*table }
}

#[cfg(target_os = "linux")]
#[test]
fn providers_linked_into_one_program_keep_distinct_entry_symbols() {
    // The build script exports `anyverbs_provider_v*` from the test binaries.
    let this = libloading::os::unix::Library::this();
    let mut tables = Vec::new();
    for (crate_name, package) in [
        ("anyverbs_provider_mock", "anyverbs-provider-mock"),
        ("anyverbs_fixture_init_fails", "anyverbs-fixture-init-fails"),
    ] {
        let symbol =
            anyverbs::plugin::abi::entry_symbol(anyverbs::plugin::abi::ABI_MAJOR, crate_name);
        let name = format!("{symbol}\0");
        // SAFETY: the symbol, if present, is an anyverbs entry point, of type `EntryFn`.
        let entry = unsafe { this.get::<EntryFn>(name.as_bytes()) }
            .unwrap_or_else(|e| panic!("{symbol} is not in the test binary: {e}"));
        // SAFETY: an anyverbs entry point.
        let table = unsafe { table_of(*entry) };
        // SAFETY: the table's name is a static NUL-terminated string.
        let table_name = unsafe { CStr::from_ptr(table.name) };
        assert_eq!(
            table_name.to_str().unwrap(),
            package,
            "the table of {symbol}"
        );
        // The linked table is as good as a loaded file's.
        let plugin = Plugin::from_table(table, &symbol).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plugin.name(), package);

        // The plugin file defines the same symbol; looked up in the file, it is the file's
        // own, not the program's copy (the loader opens plugins RTLD_LOCAL and looks them up
        // by handle, so a provider both linked and loaded is two providers).
        let path = plugin_path(crate_name);
        Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: loading a plugin the loader has already loaded runs no initialiser again.
        let file = unsafe { libloading::Library::new(&path) }.unwrap();
        // SAFETY: as above.
        let file_entry = unsafe { file.get::<EntryFn>(name.as_bytes()) }.unwrap();
        // SAFETY: an anyverbs entry point.
        let file_table = unsafe { table_of(*file_entry) };
        assert!(
            !std::ptr::eq(file_table, table),
            "{symbol} of {} resolved to the program's copy",
            path.display()
        );
        std::mem::forget(file);
        tables.push(table as *const ProviderTable);
    }
    assert_ne!(tables[0], tables[1]);
}

#[test]
fn find_in_finds_the_mock_by_name_and_says_where_it_looked_otherwise() {
    let empty = TempDir::new("find-empty");
    let dir = TempDir::new("find");
    let copy = copy_into(
        &dir,
        &mock_plugin_path(),
        &plugin_file_name("anyverbs_provider_mock"),
    );
    let dirs = [empty.path().to_path_buf(), dir.path().to_path_buf()];

    let plugin = Plugin::find_in("mock", &dirs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.path(), copy);
    assert_eq!(plugin.name(), "anyverbs-provider-mock");
    let provider = plugin.instantiate().unwrap();
    assert!(!provider.devices().unwrap().is_empty());

    // `lib<name>.so` is found too: a fixture by its crate name.
    let by_crate = Plugin::find_in("anyverbs_fixture_init_fails", &[deps_dir()]).unwrap();
    assert_eq!(by_crate.path(), fixture("init_fails"));

    let e = Plugin::find_in("nosuch", &dirs).unwrap_err();
    assert!(
        matches!(&e, LoadError::NoProviderNamed { name, searched } if name == "nosuch" && *searched == dirs),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let text = e.to_string();
    for word in [
        "\"nosuch\"",
        "libanyverbs_provider_nosuch.so",
        "libnosuch.so",
        &empty.path().display().to_string(),
        &dir.path().display().to_string(),
        "ANYVERBS_PROVIDER_PATH",
    ] {
        assert!(text.contains(word), "{text:?} does not say {word:?}");
    }

    let e = Plugin::find_in("mock", &[]).unwrap_err();
    assert!(e.to_string().contains("(no directories)"), "{e}");
}

#[test]
fn available_in_lists_every_shared_object_with_its_own_outcome() {
    let dir = TempDir::new("available");
    let mock = copy_into(
        &dir,
        &mock_plugin_path(),
        &plugin_file_name("anyverbs_provider_mock"),
    );
    let no_entry = copy_into(
        &dir,
        &fixture("no_entry"),
        &plugin_file_name("anyverbs_fixture_no_entry"),
    );
    let text = dir.write("libx.so", b"not a plugin\n");
    dir.write("README.txt", b"not listed: not a .so\n");
    let missing = dir.path().join("no-such-directory");

    let found = Plugin::available_in(&[missing, dir.path().to_path_buf()]);
    let paths: Vec<&Path> = found.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(paths, [&no_entry, &mock, &text], "in file-name order");

    assert!(
        matches!(&found[0].plugin, Err(LoadError::MissingEntry { path, .. }) if *path == no_entry),
        "{:?}",
        found[0]
    );
    let plugin = found[1].plugin.as_ref().unwrap();
    assert_eq!(plugin.name(), "anyverbs-provider-mock");
    assert_eq!(plugin.path(), mock);
    #[cfg(target_os = "linux")]
    assert!(
        matches!(&found[2].plugin, Err(LoadError::NotSharedObject { path, .. }) if *path == text),
        "{:?}",
        found[2]
    );
    #[cfg(not(target_os = "linux"))]
    assert!(found[2].plugin.is_err());
}

#[test]
fn a_handle_of_one_instance_is_refused_by_another() {
    let plugin = Plugin::load(mock_plugin_path()).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (plugin.instantiate().unwrap(), plugin.instantiate().unwrap());
    let (dev_a, dev_b) = (a.open("mock0").unwrap(), b.open("mock0").unwrap());
    let pd_a = dev_a.alloc_pd().unwrap();
    let (cq_a, cq_b) = (dev_a.create_cq(16).unwrap(), dev_b.create_cq(16).unwrap());
    let init = QpInit::default();

    for (send, recv, which) in [(&cq_b, &cq_b, "send CQ"), (&cq_a, &cq_b, "receive CQ")] {
        let Err(e) = pd_a.create_qp(send, recv, &init) else {
            panic!("a QP was made with a CQ of another provider instance")
        };
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(
            e.message().contains(which) && e.message().contains("another provider instance"),
            "{e}"
        );
    }
    // The same objects of one instance work together.
    let qp = pd_a.create_qp(&cq_a, &cq_a, &init).unwrap();
    drop(qp);
    assert_eq!(cq_b.poll(&mut [Default::default(); 4]).unwrap(), 0);
}

/// How many mappings of `path` the process has.
#[cfg(target_os = "linux")]
fn mappings_of(path: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let path = path.display().to_string();
    maps.lines().filter(|l| l.contains(&path)).count()
}

#[test]
fn loading_one_file_twice_gives_the_same_plugin_and_unloads_nothing() {
    let dir = TempDir::new("twice");
    let path = copy_into(
        &dir,
        &mock_plugin_path(),
        &plugin_file_name("anyverbs_provider_mock"),
    );
    #[cfg(target_os = "linux")]
    assert_eq!(mappings_of(&path), 0);

    let first = Plugin::load(&path).unwrap();
    let provider = first.instantiate().unwrap();
    let device = provider.open("mock0").unwrap();
    #[cfg(target_os = "linux")]
    let mapped = mappings_of(&path);
    #[cfg(target_os = "linux")]
    assert!(mapped > 0);

    let second = Plugin::load(&path).unwrap();
    assert_eq!(second.path(), first.path());
    // Another spelling of the same file is the same plugin too.
    let third = Plugin::load(
        dir.path()
            .join(".")
            .join(plugin_file_name("anyverbs_provider_mock")),
    )
    .unwrap();
    assert_eq!(third.path(), first.path());
    #[cfg(target_os = "linux")]
    assert_eq!(mappings_of(&path), mapped);

    // What the first load made still works, and so does the second's.
    let cq = device.create_cq(8).unwrap();
    assert_eq!(cq.poll(&mut [Default::default(); 2]).unwrap(), 0);
    let again = second.instantiate().unwrap();
    assert!(!again.devices().unwrap().is_empty());
    drop((cq, device, provider, again));
    #[cfg(target_os = "linux")]
    assert_eq!(mappings_of(&path), mapped, "nothing was unloaded");
}
