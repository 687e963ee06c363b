//! Finding and loading provider plugins: [`Plugin`], [`LoadError`] and the search path.

use std::ffi::{CStr, OsStr, c_char};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::abi::{self, ABI_MAJOR, ABI_MINOR, EntryFn, ErrorBuf, Functions, ProviderTable};
use super::loaded::LoadedProvider;
use crate::error::{Error, ErrorKind};

/// The environment variable naming directories to search for plugins, `:`-separated, before
/// [`DEFAULT_PROVIDER_PATH`]. Ignored in a setuid or setgid process, as rdma-core ignores
/// `RDMAV_DRIVERS` there: a user must not make a privileged program load their code.
pub const PROVIDER_PATH_ENV: &str = "ANYVERBS_PROVIDER_PATH";

/// Where plugins are searched for after [`PROVIDER_PATH_ENV`]: system-wide plugin directories,
/// in the style of rdma-core's `libibverbs/` and libfabric's `libfabric/` directories.
pub const DEFAULT_PROVIDER_PATH: &str = "/usr/local/lib/anyverbs:/usr/lib/anyverbs";

/// Why a plugin could not be loaded or started. Every variant names the file and says what to
/// do about it in its message.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// No file at the path.
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// No plugin of that name in any directory of the search path.
    NoProviderNamed {
        /// The name asked for.
        name: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The file exists but cannot be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a shared object (not ELF, or an executable or object file).
    NotSharedObject {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// A shared object built for another machine or word size.
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture it was built for.
        found: String,
        /// The architecture of this process.
        expected: String,
    },
    /// The dynamic loader refused the file (a missing dependency, an unresolved symbol, ...).
    Open {
        /// The file.
        path: PathBuf,
        /// The dynamic loader's message.
        reason: String,
    },
    /// The file exports no anyverbs entry symbol of any ABI version.
    MissingEntry {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: String,
    },
    /// The plugin implements another ABI major version.
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// The plugin's ABI version (major, minor).
        plugin: (u16, u16),
        /// The loader's ABI version (major, minor).
        loader: (u16, u16),
    },
    /// The plugin's table is shorter than its ABI version requires.
    TableTooSmall {
        /// The file.
        path: PathBuf,
        /// The size the table declares, in bytes.
        size: u32,
        /// The size this ABI major requires.
        needed: u32,
    },
    /// The entry symbol returned a null table.
    NullTable {
        /// The file.
        path: PathBuf,
    },
    /// Function entries of the table are null.
    MissingFunctions {
        /// The file.
        path: PathBuf,
        /// The null entries.
        names: Vec<&'static str>,
    },
    /// The provider's constructor failed.
    InitFailed {
        /// The file.
        path: PathBuf,
        /// The provider's error.
        error: Error,
    },
    /// The provider's constructor reported success but returned no provider.
    NullHandle {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { path } => {
                write!(f, "no provider plugin at {}: no such file", path.display())
            }
            LoadError::NoProviderNamed { name, searched } => {
                let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
                write!(
                    f,
                    "no provider plugin named {name:?} (looked for {} or {} in: {}); give a path, \
                     or add its directory to {PROVIDER_PATH_ENV}",
                    plugin_file_name(&format!("anyverbs_provider_{name}")),
                    plugin_file_name(name),
                    if dirs.is_empty() {
                        "(no directories)".into()
                    } else {
                        dirs.join(", ")
                    }
                )
            }
            LoadError::Unreadable { path, source } => {
                write!(
                    f,
                    "cannot read provider plugin {}: {source}",
                    path.display()
                )
            }
            LoadError::NotSharedObject { path, reason } => {
                write!(f, "{} is not a shared object: {reason}", path.display())
            }
            LoadError::WrongArchitecture {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} was built for {found}, but this process is {expected}",
                path.display()
            ),
            LoadError::Open { path, reason } => {
                write!(f, "cannot load {}: {reason}", path.display())
            }
            LoadError::MissingEntry { path, symbol } => write!(
                f,
                "{} is not an anyverbs provider plugin: it exports no {symbol} (plugins are built \
                 with anyverbs::export_provider! and keep the file name lib<crate>.so that cargo \
                 gives them)",
                path.display()
            ),
            LoadError::AbiMismatch {
                path,
                plugin,
                loader,
            } => write!(
                f,
                "{} implements plugin ABI {}.{}, but this program speaks ABI {}.{}; rebuild the \
                 plugin against a matching anyverbs",
                path.display(),
                plugin.0,
                plugin.1,
                loader.0,
                loader.1
            ),
            LoadError::TableTooSmall { path, size, needed } => write!(
                f,
                "{}: its function table is {size} bytes, but ABI {ABI_MAJOR}.0 needs at least \
                 {needed}",
                path.display()
            ),
            LoadError::NullTable { path } => {
                write!(f, "{}: its entry symbol returned no table", path.display())
            }
            LoadError::MissingFunctions { path, names } => write!(
                f,
                "{}: its function table has null entries: {}",
                path.display(),
                names.join(", ")
            ),
            LoadError::InitFailed { path, error } => {
                write!(f, "provider {} failed to start: {error}", path.display())
            }
            LoadError::NullHandle { path } => write!(
                f,
                "provider {} reported success but returned a null provider handle",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Unreadable { source, .. } => Some(source),
            LoadError::InitFailed { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl LoadError {
    /// The [`ErrorKind`] generic code reacts to: `NotFound` for a missing file or name,
    /// `NotSupported` for a plugin this program cannot use (wrong architecture or ABI), the
    /// provider's own kind for a failed start, `InvalidArgument` for a file that is not a plugin
    /// and `Other` for a broken plugin.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LoadError::NotFound { .. } | LoadError::NoProviderNamed { .. } => ErrorKind::NotFound,
            LoadError::WrongArchitecture { .. } | LoadError::AbiMismatch { .. } => {
                ErrorKind::NotSupported
            }
            LoadError::InitFailed { error, .. } => error.kind(),
            LoadError::Unreadable { .. }
            | LoadError::NotSharedObject { .. }
            | LoadError::MissingEntry { .. } => ErrorKind::InvalidArgument,
            LoadError::Open { .. }
            | LoadError::TableTooSmall { .. }
            | LoadError::NullTable { .. }
            | LoadError::MissingFunctions { .. }
            | LoadError::NullHandle { .. } => ErrorKind::Other,
        }
    }
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        Error::new(e.kind(), e.to_string()).with_source(e)
    }
}

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
            for path in files {
                let plugin = Plugin::load(&path);
                found.push(Found { path, plugin });
            }
        }
        found
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

    /// Makes a provider instance. Each call makes a new one.
    pub fn instantiate(&self) -> Result<LoadedProvider, LoadError> {
        let f = &self.inner.functions;
        let mut raw = std::ptr::null_mut();
        let mut err = ErrorBuf::default();
        // SAFETY: `provider_new` is the plugin's, checked non-null at load; both pointers are to
        // live locals.
        let status = unsafe { (f.provider_new)(&mut raw, &mut err) };
        if status != abi::STATUS_OK {
            return Err(LoadError::InitFailed {
                path: self.inner.path.clone(),
                error: super::loaded::status_error(status, err.text()),
            });
        }
        if raw.is_null() {
            return Err(LoadError::NullHandle {
                path: self.inner.path.clone(),
            });
        }
        // SAFETY: `raw` is a fresh provider handle of this plugin.
        Ok(unsafe { LoadedProvider::new(*self, raw) })
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
                Some(table) => match header(table) {
                    Some(h) => LoadError::AbiMismatch {
                        path: path.to_path_buf(),
                        plugin: (h.abi_major, h.abi_minor),
                        loader: (ABI_MAJOR, ABI_MINOR),
                    },
                    None => LoadError::NullTable {
                        path: path.to_path_buf(),
                    },
                },
                None => LoadError::MissingEntry {
                    path: path.to_path_buf(),
                    symbol,
                },
            });
        }
    };
    if table.is_null() {
        return Err(LoadError::NullTable {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: the entry symbol of this ABI major returns a pointer to a static table of this
    // layout; its header (checked first) says how much of it there is.
    let plugin = checked_raw(table, path)?;
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
            .map_err(|e| e.to_string())
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())
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

/// The header of a table.
fn header(table: *const ProviderTable) -> Option<abi::TableHeader> {
    // SAFETY: every table of every ABI major starts with a `TableHeader`.
    (!table.is_null()).then(|| unsafe { table.cast::<abi::TableHeader>().read() })
}

/// Checks a table from a raw pointer.
fn checked_raw(table: *const ProviderTable, path: &Path) -> Result<Loaded, LoadError> {
    let h = header(table).ok_or_else(|| LoadError::NullTable {
        path: path.to_path_buf(),
    })?;
    check_header(h, path)?;
    // SAFETY: the header says the table is of this major and at least this long.
    checked(unsafe { &*table }, path)
}

/// Checks the header of a table: its major version and that it is long enough.
fn check_header(h: abi::TableHeader, path: &Path) -> Result<(), LoadError> {
    if h.abi_major != ABI_MAJOR {
        return Err(LoadError::AbiMismatch {
            path: path.to_path_buf(),
            plugin: (h.abi_major, h.abi_minor),
            loader: (ABI_MAJOR, ABI_MINOR),
        });
    }
    let needed = size_of::<ProviderTable>() as u32;
    if h.table_size < needed {
        return Err(LoadError::TableTooSmall {
            path: path.to_path_buf(),
            size: h.table_size,
            needed,
        });
    }
    Ok(())
}

/// Checks a table and keeps what a plugin needs.
fn checked(table: &'static ProviderTable, path: &Path) -> Result<Loaded, LoadError> {
    check_header(table.header, path)?;
    let functions = table
        .functions()
        .map_err(|names| LoadError::MissingFunctions {
            path: path.to_path_buf(),
            names,
        })?;
    Ok(Loaded {
        path: path.to_path_buf(),
        functions,
        name: c_string(table.name),
        version: c_string(table.version),
        abi: (table.header.abi_major, table.header.abi_minor),
    })
}

/// A static C string of a table, or `?` for a null pointer.
fn c_string(s: *const c_char) -> String {
    if s.is_null() {
        return "?".into();
    }
    // SAFETY: the ABI requires a static, NUL-terminated string here.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Reading the ELF header before `dlopen`, for errors that say what is wrong with the file.
#[cfg(target_os = "linux")]
mod elf {
    use std::path::Path;

    use super::LoadError;

    /// The ELF machine of this process.
    const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
        62
    } else if cfg!(target_arch = "aarch64") {
        183
    } else if cfg!(target_arch = "x86") {
        3
    } else if cfg!(target_arch = "arm") {
        40
    } else if cfg!(target_arch = "riscv64") {
        243
    } else if cfg!(target_arch = "powerpc64") {
        21
    } else if cfg!(target_arch = "s390x") {
        22
    } else if cfg!(target_arch = "loongarch64") {
        258
    } else {
        0
    };

    /// A readable name of an ELF machine and class.
    fn machine_name(machine: u16, class: u8) -> String {
        let name = match machine {
            62 => "x86_64",
            183 => "aarch64",
            3 => "x86",
            40 => "arm",
            243 if class == 1 => "riscv32",
            243 => "riscv64",
            21 => "powerpc64",
            20 => "powerpc",
            22 => "s390x",
            258 => "loongarch64",
            8 => "mips",
            2 => "sparc",
            43 => "sparc64",
            other => return format!("ELF machine {other} ({}-bit)", bits(class)),
        };
        name.to_string()
    }

    fn bits(class: u8) -> u32 {
        if class == 1 { 32 } else { 64 }
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many there were.
    fn read_at(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut read = 0;
        while read < buf.len() {
            match file.read_at(&mut buf[read..], offset + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    }

    /// Checks that `path` is a complete ELF shared object for this machine: the header, the
    /// machine and word size, and that every loadable segment and the section headers lie
    /// inside the file. A file cut short (an interrupted copy) would otherwise be mapped past
    /// its end by `dlopen`, and the first touch of the missing part kills the process with
    /// SIGBUS.
    pub(super) fn check(path: &Path) -> Result<(), LoadError> {
        let not_so = |reason: &str| LoadError::NotSharedObject {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let unreadable = |source| LoadError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let file_len = file.metadata().map_err(unreadable)?.len();
        let mut header = [0u8; 64];
        let read = read_at(&file, 0, &mut header).map_err(unreadable)?;
        if read < 4 || header[..4] != *b"\x7fELF" {
            return Err(not_so("it is not an ELF file"));
        }
        let class = header[4];
        let header_len = if class == 1 { 52 } else { 64 };
        if read < header_len {
            return Err(not_so("its ELF header is truncated"));
        }
        let little = match header[5] {
            1 => true,
            2 => false,
            _ => return Err(not_so("its ELF header has an invalid byte order")),
        };
        let int = |bytes: &[u8]| -> u64 {
            let mut v = 0u64;
            for (i, b) in bytes.iter().enumerate() {
                let shift = if little {
                    8 * i
                } else {
                    8 * (bytes.len() - 1 - i)
                };
                v |= u64::from(*b) << shift;
            }
            v
        };
        let (kind, machine) = (int(&header[16..18]) as u16, int(&header[18..20]) as u16);
        let host_class = if cfg!(target_pointer_width = "64") {
            2
        } else {
            1
        };
        let host_little = cfg!(target_endian = "little");
        if machine != HOST_MACHINE || class != host_class || little != host_little {
            let endian = |l: bool| if l { "little-endian" } else { "big-endian" };
            return Err(LoadError::WrongArchitecture {
                path: path.to_path_buf(),
                found: format!("{} ({})", machine_name(machine, class), endian(little)),
                expected: format!(
                    "{} ({})",
                    machine_name(HOST_MACHINE, host_class),
                    endian(host_little)
                ),
            });
        }
        match kind {
            3 => {}
            1 => {
                return Err(not_so(
                    "it is a relocatable object file (.o), not a shared object",
                ));
            }
            2 => return Err(not_so("it is an executable, not a shared object")),
            4 => return Err(not_so("it is a core dump")),
            other => return Err(not_so(&format!("its ELF type is {other}"))),
        }
        // Where the program and section header tables are, in the layout of this class.
        let wide = class == 2;
        let (phoff, shoff) = if wide {
            (int(&header[32..40]), int(&header[40..48]))
        } else {
            (int(&header[28..32]), int(&header[32..36]))
        };
        let at = if wide { 54 } else { 42 };
        let (phentsize, phnum, shentsize, shnum) = (
            int(&header[at..at + 2]),
            int(&header[at + 2..at + 4]),
            int(&header[at + 4..at + 6]),
            int(&header[at + 6..at + 8]),
        );
        let cut = || {
            not_so(&format!(
                "it is cut short: {file_len} bytes, less than its ELF headers describe (an \
                 interrupted copy?)"
            ))
        };
        let table_end = |off: u64, size: u64, n: u64| off.checked_add(size.checked_mul(n)?);
        match table_end(shoff, shentsize, shnum) {
            Some(end) if end <= file_len => {}
            _ => return Err(cut()),
        }
        let ph_len = match table_end(0, phentsize, phnum) {
            Some(len) if phoff.checked_add(len).is_some_and(|end| end <= file_len) => len,
            _ => return Err(cut()),
        };
        let entry_len = if wide { 56 } else { 32 };
        if phnum > 0 && phentsize < entry_len {
            return Err(not_so("its program headers are malformed"));
        }
        let mut table = vec![0u8; usize::try_from(ph_len).map_err(|_| cut())?];
        if read_at(&file, phoff, &mut table).map_err(unreadable)? < table.len() {
            return Err(cut());
        }
        for entry in table.chunks_exact(phentsize.max(1) as usize) {
            const PT_LOAD: u64 = 1;
            if int(&entry[0..4]) != PT_LOAD {
                continue;
            }
            let (offset, filesz) = if wide {
                (int(&entry[8..16]), int(&entry[32..40]))
            } else {
                (int(&entry[4..8]), int(&entry[16..20]))
            };
            if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
                return Err(cut());
            }
        }
        Ok(())
    }
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
