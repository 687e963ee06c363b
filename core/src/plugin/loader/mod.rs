//! Finding and loading provider plugins: [`Plugin`], [`LoadError`] and the search path.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[cfg(target_os = "linux")]
mod elf;
mod error;
mod table;

pub use error::LoadError;

use super::abi::{self, ABI_MAJOR, ABI_MINOR, EntryFn, Functions, ProviderTable};
use table::{checked, header};

/// The environment variable naming directories to search for plugins, `:`-separated, before
/// [`DEFAULT_PROVIDER_PATH`]. Ignored in a setuid or setgid process, as rdma-core ignores
/// `RDMAV_DRIVERS` there: a user must not make a privileged program load their code.
pub const PROVIDER_PATH_ENV: &str = "ANYVERBS_PROVIDER_PATH";

/// Where plugins are searched for after [`PROVIDER_PATH_ENV`]: system-wide plugin directories,
/// in the style of rdma-core's `libibverbs/` and libfabric's `libfabric/` directories.
pub const DEFAULT_PROVIDER_PATH: &str = "/usr/local/lib/anyverbs:/usr/lib/anyverbs";

/// The file name of a plugin built from crate `crate_name`: `lib<crate_name>.so` on Linux.
pub fn plugin_file_name(crate_name: &str) -> String {
    format!(
        "{}{crate_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The crate name a plugin file name stands for: `libfoo.so` (or `libfoo.so.1`) → `foo`.
fn crate_name_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let name = name
        .strip_prefix(std::env::consts::DLL_PREFIX)
        .unwrap_or(name);
    let stem = match name.find(std::env::consts::DLL_SUFFIX) {
        Some(end) => &name[..end],
        None => name.split('.').next()?,
    };
    (!stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then(|| stem.to_string())
}

/// Whether this process runs with privileges its user does not have (setuid, setgid, file
/// capabilities): then the environment must not choose what code it loads.
pub fn is_privileged() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getauxval only reads the auxiliary vector the kernel passed at exec.
        unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: these four calls only read the process's credentials and cannot fail.
        unsafe { libc::getuid() != libc::geteuid() || libc::getgid() != libc::getegid() }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The directories searched for plugins, in order: those in [`PROVIDER_PATH_ENV`] (unless the
/// process [is privileged](is_privileged)), then [`DEFAULT_PROVIDER_PATH`].
pub fn search_path() -> Vec<PathBuf> {
    search_path_from(
        std::env::var_os(PROVIDER_PATH_ENV).as_deref(),
        is_privileged(),
    )
}

/// [`search_path`] for a given variable value and privilege.
pub fn search_path_from(env: Option<&OsStr>, privileged: bool) -> Vec<PathBuf> {
    let from_env = env.filter(|_| !privileged);
    from_env
        .into_iter()
        .flat_map(std::env::split_paths)
        .chain(std::env::split_paths(DEFAULT_PROVIDER_PATH))
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

/// The shared objects (`*.so` on Linux) in `dirs`, each directory's in file-name order,
/// without loading any: what [`Plugin::available_in`] loads, for a program that examines each
/// file in a process of its own. A directory that does not exist is skipped.
pub fn plugin_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX))
            })
            .collect();
        files.sort();
        found.extend(files);
    }
    found
}

/// What [`Plugin::available`] found in one file of the search path.
#[derive(Debug)]
pub struct Found {
    /// The file.
    pub path: PathBuf,
    /// The plugin, or why it cannot be loaded.
    pub plugin: Result<Plugin, LoadError>,
}

/// A loaded provider plugin. Plugins are never unloaded: a library with thread-locals or
/// statics that is unloaded while anything of it still runs crashes the process later.
#[derive(Clone, Copy)]
pub struct Plugin {
    inner: &'static Loaded,
}

/// What a plugin keeps for the life of the process.
struct Loaded {
    path: PathBuf,
    functions: Functions,
    name: String,
    version: String,
    abi: (u16, u16),
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.inner.path)
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("abi", &self.inner.abi)
            .finish()
    }
}

/// Every plugin loaded so far, by canonical path, so that loading a file twice gives the same
/// plugin.
static LOADED: Mutex<Vec<(PathBuf, Plugin)>> = Mutex::new(Vec::new());

impl Plugin {
    /// Loads the plugin at `path` (a file, not a name: see [`find`](Self::find)).
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin, LoadError> {
        let path = path.as_ref();
        let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: path.to_path_buf(),
            },
            _ => LoadError::Unreadable {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        if !metadata.is_file() {
            return Err(LoadError::NotSharedObject {
                path: path.to_path_buf(),
                reason: "it is a directory or a special file".into(),
            });
        }
        let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        })?;
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, plugin)) = loaded.iter().find(|(p, _)| *p == canonical) {
            return Ok(*plugin);
        }
        #[cfg(target_os = "linux")]
        elf::check(path)?;
        let plugin = open(path, &canonical)?;
        loaded.push((canonical, plugin));
        Ok(plugin)
    }

    /// Finds the plugin named `name` in the [search path](search_path) and loads it: the first
    /// directory holding `libanyverbs_provider_<name>.so` or `lib<name>.so` wins.
    pub fn find(name: &str) -> Result<Plugin, LoadError> {
        Self::find_in(name, &search_path())
    }

    /// [`find`](Self::find) in the given directories.
    pub fn find_in(name: &str, dirs: &[PathBuf]) -> Result<Plugin, LoadError> {
        let candidates = [
            plugin_file_name(&format!("anyverbs_provider_{name}")),
            plugin_file_name(name),
        ];
        for dir in dirs {
            for file in &candidates {
                let path = dir.join(file);
                if path.is_file() {
                    return Plugin::load(path);
                }
            }
        }
        Err(LoadError::NoProviderNamed {
            name: name.to_string(),
            searched: dirs.to_vec(),
        })
    }

    /// Every shared object in the [search path](search_path), loaded or with the reason it
    /// cannot be; a directory that does not exist is skipped.
    pub fn available() -> Vec<Found> {
        Self::available_in(&search_path())
    }

    /// [`available`](Self::available) in the given directories, each listed in file-name order.
    pub fn available_in(dirs: &[PathBuf]) -> Vec<Found> {
        plugin_files(dirs)
            .into_iter()
            .map(|path| Found {
                plugin: Plugin::load(&path),
                path,
            })
            .collect()
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The plugin's package name, as its table says.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin's package version, as its table says.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The ABI version (major, minor) the plugin implements.
    pub fn abi_version(&self) -> (u16, u16) {
        self.inner.abi
    }

    /// The checked function entries.
    pub(crate) fn functions(&self) -> &'static Functions {
        &self.inner.functions
    }

    /// A plugin from a table in this program rather than a file (a provider exported with
    /// [`export_provider!`](crate::export_provider) and linked in), checked exactly as a
    /// loaded file is. `label` stands for the path in messages.
    pub fn from_table(table: &'static ProviderTable, label: &str) -> Result<Plugin, LoadError> {
        let plugin = checked(table, Path::new(label))?;
        Ok(Plugin {
            inner: Box::leak(Box::new(plugin)),
        })
    }
}

/// Opens the shared object and checks its entry symbol and table.
fn open(path: &Path, canonical: &Path) -> Result<Plugin, LoadError> {
    let library = dlopen(canonical).map_err(|reason| LoadError::Open {
        path: path.to_path_buf(),
        reason,
    })?;
    // Never unloaded: see the type's documentation.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    let crate_name = crate_name_of(path).unwrap_or_else(|| "<crate name>".to_string());
    let symbol = abi::entry_symbol(ABI_MAJOR, &crate_name);
    let table = match entry(library, &symbol) {
        Some(entry) => entry,
        None => {
            // Another major version exports another symbol: say which one it speaks.
            let other = (0..=32u16)
                .filter(|m| *m != ABI_MAJOR)
                .find_map(|m| entry(library, &abi::entry_symbol(m, &crate_name)));
            return Err(match other {
                Some(table) => match header(table, path) {
                    Ok(h) => LoadError::AbiMismatch {
                        path: path.to_path_buf(),
                        plugin: (h.abi_major, h.abi_minor),
                        loader: (ABI_MAJOR, ABI_MINOR),
                    },
                    Err(e) => e,
                },
                None => LoadError::MissingEntry {
                    path: path.to_path_buf(),
                    symbol,
                },
            });
        }
    };
    // The entry symbol of this ABI major returns a pointer to a static table of this layout;
    // its address and header are checked before anything else of it is read.
    let plugin = checked(table, path)?;
    Ok(Plugin {
        inner: Box::leak(Box::new(plugin)),
    })
}

/// Opens a shared object with every symbol resolved now (a missing dependency fails here, not
/// in the middle of a call) and kept local to it.
fn dlopen(path: &Path) -> Result<libloading::Library, String> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: loading a library runs its initialisers; loading a provider plugin is what
        // the caller asked for, and the path is absolute, so no search path can substitute
        // another file.
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .map(libloading::Library::from)
            // The dynamic loader's message quotes names from the file (a needed library's):
            // made printable like every text a plugin chooses.
            .map_err(|e| super::status::printable(e.to_string().as_bytes()))
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { libloading::Library::new(path) }
            .map_err(|e| super::status::printable(e.to_string().as_bytes()))
    }
}

/// Calls the entry symbol `symbol` if the library exports it.
fn entry(library: &'static libloading::Library, symbol: &str) -> Option<*const ProviderTable> {
    let mut name = symbol.as_bytes().to_vec();
    name.push(0);
    // SAFETY: the symbol, if present, is an anyverbs entry point, whose type is `EntryFn` in
    // every ABI version.
    let entry = unsafe { library.get::<EntryFn>(&name) }.ok()?;
    // SAFETY: an entry point takes nothing and returns a pointer to static data.
    Some(unsafe { entry() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_come_from_file_names() {
        assert_eq!(
            crate_name_of(Path::new("/x/libanyverbs_provider_mock.so")).as_deref(),
            Some("anyverbs_provider_mock")
        );
        assert_eq!(
            crate_name_of(Path::new("libfoo.so.1")).as_deref(),
            Some("foo")
        );
        assert_eq!(crate_name_of(Path::new("/x/lib-bad name.so")), None);
    }

    #[test]
    fn search_path_puts_the_variable_first_unless_privileged() {
        let env = OsStr::new("/opt/a::/opt/b");
        let normal = search_path_from(Some(env), false);
        assert_eq!(
            normal[..2],
            [PathBuf::from("/opt/a"), PathBuf::from("/opt/b")]
        );
        assert_eq!(normal[2..], search_path_from(None, false)[..]);
        let privileged = search_path_from(Some(env), true);
        assert_eq!(privileged, search_path_from(None, false));
        assert_eq!(
            privileged,
            [
                PathBuf::from("/usr/local/lib/anyverbs"),
                PathBuf::from("/usr/lib/anyverbs")
            ]
        );
    }

    #[test]
    fn this_test_process_is_not_privileged() {
        assert!(!is_privileged());
    }
}
