//! [`LoadError`]: every way a plugin file can fail to load or start, each naming the file.

use std::fmt;
use std::path::PathBuf;

use super::{PROVIDER_PATH_ENV, plugin_file_name};
use crate::error::{Error, ErrorKind};
use crate::plugin::abi::ABI_MAJOR;

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
    /// The table is not where, or not what, the ABI allows: its address (misaligned, outside
    /// every loaded object, or shorter there than its header declares), or its name or version
    /// (no terminating NUL within its bound, outside the plugin's loaded image, empty, not
    /// UTF-8, ...).
    MalformedTable {
        /// The file.
        path: PathBuf,
        /// `address`, `name` or `version`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The new provider broke the ABI as it started: its name or transport is not one the ABI
    /// allows. The error's source is a [`PluginFault`](crate::plugin::PluginFault).
    Misbehaved {
        /// The file.
        path: PathBuf,
        /// What the loader refused.
        error: Error,
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
            LoadError::MalformedTable {
                path,
                field,
                problem,
            } => write!(
                f,
                "{}: its function table's {field} is malformed: {problem}",
                path.display()
            ),
            LoadError::Misbehaved { error, .. } => write!(f, "{}", error.message()),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Unreadable { source, .. } => Some(source),
            LoadError::InitFailed { error, .. } | LoadError::Misbehaved { error, .. } => {
                Some(error)
            }
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
            | LoadError::NullHandle { .. }
            | LoadError::MalformedTable { .. }
            | LoadError::Misbehaved { .. } => ErrorKind::Other,
        }
    }
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        Error::new(e.kind(), e.to_string()).with_source(e)
    }
}
