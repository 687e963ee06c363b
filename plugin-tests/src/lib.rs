//! Helpers for the plugin loader's tests in `tests/`: where cargo put the fixture plugins, and
//! scratch directories for the broken files the tests make.
//!
//! The fixtures (`fixtures/<name>/`, packages `anyverbs-fixture-<name>`) are small cdylib
//! crates, each a plugin broken in one way. They are dev-dependencies of this package, so
//! `cargo test` builds `libanyverbs_fixture_<name>.so` into `target/<profile>/deps/`, the
//! directory of the test binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyverbs::plugin::plugin_file_name;

/// The directory cargo builds the test binary and the dependencies' cdylibs into.
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .expect("the test binary's directory")
        .to_path_buf()
}

/// The path of the plugin built from crate `crate_name`, checked to exist.
pub fn plugin_path(crate_name: &str) -> PathBuf {
    let path = deps_dir().join(plugin_file_name(crate_name));
    assert!(
        path.is_file(),
        "{} was not built; is its crate a dev-dependency of anyverbs-plugin-tests?",
        path.display()
    );
    path
}

/// The plugin of fixture `name` (as in `fixtures/<name>/`).
pub fn fixture(name: &str) -> PathBuf {
    plugin_path(&format!("anyverbs_fixture_{name}"))
}

/// The mock provider's plugin.
pub fn mock_plugin_path() -> PathBuf {
    plugin_path("anyverbs_provider_mock")
}

/// A directory under the system's temporary directory, unique to this process and call,
/// removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Makes a fresh directory whose name contains `label`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "anyverbs-plugin-tests-{}-{}-{nanos}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to the file `name` in the directory and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
