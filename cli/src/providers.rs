//! The providers `--provider` can name: built into this binary (the mock), or plugins loaded
//! through `anyverbs::plugin`; and the built-in expectations that go with the mock's devices.

use anyverbs::Provider;
use anyverbs::plugin::{LoadedProvider, Plugin};
use anyverbs_provider_mock::MockProvider;
use anyverbs_provider_mock::expectations::{self, Builtin};

use crate::probe::{self, ProbeDoc};
use crate::run;

/// The package name of the mock, as its plugin's table says it.
const MOCK_PACKAGE: &str = "anyverbs-provider-mock";

/// A provider this binary can test, with its type erased so that providers of different types
/// (built in, or loaded from a plugin) share one interface.
pub trait KnownProvider {
    /// The name `--provider` selects it by.
    fn name(&self) -> &str;
    /// Makes the provider and describes it and its devices, as `list` shows them.
    fn describe(&self) -> ProbeDoc;
    /// Runs the suite in this process as `args` say, each case on a fresh provider; returns
    /// the exit status.
    fn run(&self, args: &crate::args::RunArgs) -> i32;
}

/// A provider linked into this binary, made by a constructor function.
pub struct Registered<P> {
    /// The name `--provider` selects it by.
    pub name: &'static str,
    /// Makes a provider; fails if the provider cannot work on this host.
    pub make: fn() -> anyverbs::Result<P>,
}

impl<P: Provider> KnownProvider for Registered<P> {
    fn name(&self) -> &str {
        self.name
    }

    fn describe(&self) -> ProbeDoc {
        let title = format!("{} (built in)", self.name);
        match (self.make)() {
            Ok(provider) => {
                let listing = provider.devices().map(|d| (d, Vec::new()));
                probe::describe(title, &provider, listing, |device| {
                    builtin_expectations(self.name, device).map(|b| {
                        format!(
                            "{}; its built-in expectations ({}) apply",
                            b.purpose, b.path
                        )
                    })
                })
            }
            Err(e) => ProbeDoc::failed(title, format!("unavailable: {e}")),
        }
    }

    fn run(&self, args: &crate::args::RunArgs) -> i32 {
        let builtin = |device: &str| builtin_expectations(self.name, device);
        run::in_process(self.name, self.make, args, &builtin)
    }
}

/// A provider loaded from a plugin through `anyverbs::plugin`.
pub struct Loaded {
    /// The plugin.
    pub plugin: Plugin,
}

impl Loaded {
    /// How `list` and errors name the plugin: package, version, ABI and file.
    pub fn title(&self) -> String {
        let (major, minor) = self.plugin.abi_version();
        format!(
            "{} {} (plugin, ABI {major}.{minor}, {})",
            self.plugin.name(),
            self.plugin.version(),
            self.plugin.path().display()
        )
    }
}

impl KnownProvider for Loaded {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn describe(&self) -> ProbeDoc {
        let plugin = self.plugin;
        match plugin.instantiate() {
            Ok(provider) => {
                // The good entries, and each refused one with why.
                let listing = provider.device_listing().map(|l| {
                    let refused = l.refused.iter().map(|e| e.to_string()).collect();
                    (l.devices, refused)
                });
                probe::describe(self.title(), &provider, listing, |device| {
                    mock_plugin_note(&plugin, device)
                })
            }
            Err(e) => ProbeDoc::failed(self.title(), format!("cannot start: {e}")),
        }
    }

    fn run(&self, args: &crate::args::RunArgs) -> i32 {
        let plugin = self.plugin;
        let make = move || -> anyverbs::Result<LoadedProvider> {
            plugin.instantiate().map_err(anyverbs::Error::from)
        };
        run::in_process(self.plugin.name(), make, args, &|_| None)
    }
}

/// The providers linked into this binary, by name.
pub fn built_in() -> Vec<Box<dyn KnownProvider + Send>> {
    vec![Box::new(Registered {
        name: "mock",
        make: || Ok(MockProvider::new()),
    })]
}

/// The built-in expectations of `device` of the built-in provider named `provider`: the mock's
/// for its failure-demonstrating devices, nothing for anything else.
pub fn builtin_expectations(provider: &str, device: &str) -> Option<&'static Builtin> {
    (provider == "mock")
        .then(|| expectations::for_device(device))
        .flatten()
}

/// The note `list` shows for `device` of a plugin that is the mock's own package: which
/// expectations file goes with it (built-in expectations apply to the built-in mock only).
fn mock_plugin_note(plugin: &Plugin, device: &str) -> Option<String> {
    if plugin.name() != MOCK_PACKAGE {
        return None;
    }
    expectations::for_device(device).map(|b| {
        format!(
            "{}; run it with --expect {} --timeout {}",
            b.purpose,
            b.path,
            b.timeout.as_secs_f64()
        )
    })
}

/// Whether `--provider` names a file rather than a provider: it has a directory part or ends
/// like a shared object.
pub fn is_path(spec: &str) -> bool {
    spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(std::env::consts::DLL_SUFFIX)
}

/// Whether `--provider` names a provider built into this binary.
pub fn is_built_in(spec: &str) -> bool {
    !is_path(spec) && built_in().iter().any(|p| p.name() == spec)
}

/// The provider `--provider` selects: a plugin file for a path; otherwise a built-in provider
/// of that name, or else a plugin of that name from the search path. Loading a plugin runs its
/// code in this process.
pub fn resolve(spec: &str) -> Result<Box<dyn KnownProvider + Send>, String> {
    if is_path(spec) {
        return Plugin::load(spec)
            .map(|plugin| Box::new(Loaded { plugin }) as Box<dyn KnownProvider + Send>)
            .map_err(|e| e.to_string());
    }
    if let Some(p) = built_in().into_iter().find(|p| p.name() == spec) {
        return Ok(p);
    }
    Plugin::find(spec)
        .map(|plugin| Box::new(Loaded { plugin }) as Box<dyn KnownProvider + Send>)
        .map_err(|e| {
            let names: Vec<String> = built_in().iter().map(|p| p.name().to_string()).collect();
            format!(
                "unknown provider {spec:?}: not built in (built in: {}), and {e}",
                names.join(", ")
            )
        })
}
