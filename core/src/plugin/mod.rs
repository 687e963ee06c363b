//! Providers as run-time plugins: a versioned C ABI, the export macro, and the loader.
//!
//! A provider is written once, against the core traits, and loaded by any program built
//! against `anyverbs` — possibly compiled by another rustc — so the boundary is a C ABI, as
//! rdma-core's (`lib<driver>-rdmav<N>.so`, the ABI number in the registration symbol) and
//! libfabric's (`lib<prov>-fi.so`, `fi_prov_ini()`, `FI_PROVIDER_PATH`) are.
//!
//! - **Plugin side.** One line, [`export_provider!`](crate::export_provider), turns a
//!   [`Provider`](crate::Provider) into a plugin; the crate builds a `cdylib` beside its
//!   `rlib`. The macro builds the [`abi::ProviderTable`] from generic functions in [`export`]
//!   that check handles, catch panics and check every value. WRs and completions cross as they
//!   are: their types have the ABI's layout.
//! - **Loader side.** [`Plugin::load`] opens a file, [`Plugin::find`] a name in the
//!   [search path](search_path); [`Plugin::instantiate`] makes a [`LoadedProvider`], which
//!   implements the core traits like a linked provider, with one indirect call per operation
//!   and no per-call symbol lookup. Every way a plugin can be bad is a [`LoadError`] that names
//!   the file and says what is wrong.
//! - **The ABI** is in [`abi`]: plain `#[repr(C)]` data, enums as integers, explicit ownership,
//!   a header with major/minor version and table size. See its documentation for the rules.
//!
//! Plugins are never unloaded: a library whose thread-locals or statics are still referenced
//! after `dlclose` crashes the process later.
//!
//! ```no_run
//! // Not run: it needs a plugin installed in the search path.
//! use anyverbs::Provider;
//! use anyverbs::plugin::Plugin;
//!
//! // `libanyverbs_provider_mock.so` (or `libmock.so`) from ANYVERBS_PROVIDER_PATH or the default
//! // directories; `Plugin::load(path)` takes a file instead.
//! let plugin = Plugin::find("mock")?;
//! println!("{} {}, ABI {:?}", plugin.name(), plugin.version(), plugin.abi_version());
//! let provider = plugin.instantiate()?; // a `LoadedProvider`: a `Provider` like any other
//! for device in provider.devices()? {
//!     println!("{}", device.identity.name);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod abi;
mod convert;
#[doc(hidden)] // what export_provider! expands to call; not an API
pub mod export;
mod loaded;
mod loader;
mod status;

pub use loaded::{
    DeviceListing, LoadedChannel, LoadedCq, LoadedDevice, LoadedListener, LoadedMr, LoadedPd,
    LoadedProvider, LoadedQp, PluginFault,
};
pub use loader::{
    DEFAULT_PROVIDER_PATH, Found, LoadError, PROVIDER_PATH_ENV, Plugin, is_privileged,
    plugin_file_name, plugin_files, search_path, search_path_from,
};

/// Exports a provider as a plugin: `anyverbs::export_provider!(MyProvider, MyProvider::new);`
/// at the top level of the provider's crate, whose `Cargo.toml` has
/// `crate-type = ["rlib", "cdylib"]`.
///
/// The first argument is the provider type; the second is an expression of a function (or
/// closure) taking nothing and returning `anyverbs::Result<MyProvider>`, called each time a
/// program makes an instance (an error there reaches the program as
/// [`LoadError::InitFailed`]).
///
/// It defines the entry symbol `anyverbs_provider_v4_<crate name>`. The crate name is part of
/// it so that two providers linked into one program (a test binary linking several provider
/// crates) do not define the same symbol — the linker would silently keep just one. The loader
/// derives the name from the file name, `lib<crate name>.so`, which is what cargo produces;
/// keep it when installing the plugin.
#[macro_export]
macro_rules! export_provider {
    ($provider:ty, $new:expr $(,)?) => {
        // The expansion's own allowance, so that a provider crate may deny unsafe code.
        #[allow(unsafe_code)]
        const _: () = {
            unsafe extern "C" fn anyverbs_provider_new(
                out: *mut *mut $crate::plugin::abi::RawProvider,
                err: *mut $crate::plugin::abi::ErrorBuf,
            ) -> $crate::plugin::abi::Status {
                // SAFETY: the loader passes pointers valid for a write, as the ABI requires.
                unsafe { $crate::plugin::export::provider_new::<$provider>(out, err, $new) }
            }

            static ANYVERBS_PROVIDER_TABLE: $crate::plugin::abi::ProviderTable =
                $crate::plugin::export::table::<$provider>(
                    $crate::plugin::export::c_str(concat!(env!("CARGO_PKG_NAME"), "\0")),
                    $crate::plugin::export::c_str(concat!(env!("CARGO_PKG_VERSION"), "\0")),
                    anyverbs_provider_new,
                );

            #[unsafe(export_name = concat!("anyverbs_provider_v4_", env!("CARGO_CRATE_NAME")))]
            extern "C" fn anyverbs_provider_entry() -> *const $crate::plugin::abi::ProviderTable {
                &ANYVERBS_PROVIDER_TABLE
            }
        };
    };
}
