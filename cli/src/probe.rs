//! What `list` shows of a provider, as one JSON document ([`ProbeDoc`]): made in this process
//! for a built-in provider, or by the hidden `probe` subcommand in a child process for a plugin
//! (`list`, and `run --isolate` before its cases), so that a plugin that crashes or hangs while
//! it is loaded, started or listed costs the child, never the parent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyverbs::{DeviceInfo, Provider};
use anyverbs_conformance::isolate::{self, ChildEnd};
use serde::{Deserialize, Serialize};

/// A provider and its devices, or why they could not be had.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeDoc {
    /// How to name it: `mock (built in)`, or a plugin's package, version, ABI and file.
    pub title: String,
    /// The provider's own name (`Provider::name`), once it started.
    pub provider: Option<String>,
    /// Its transport, once it started.
    pub transport: Option<String>,
    /// Its devices.
    pub devices: Vec<DeviceRow>,
    /// The device entries the loader refused, each with why.
    pub refused: Vec<String>,
    /// Why it could not be loaded, started or listed, if it could not.
    pub error: Option<String>,
}

/// One device, as `list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Its name.
    pub name: String,
    /// Its transport.
    pub transport: String,
    /// Its QP state model, lower case.
    pub state_model: String,
    /// Its node GUID, as `ibv_devinfo` prints it.
    pub node_guid: String,
    /// The faults it can have injected, for the lifecycle and recovery cases: `all`, `none`,
    /// or their names, lower case, comma-separated.
    pub faults: String,
    /// What `list` says of it beyond that (a device that demonstrates failure, and the
    /// expectations file that goes with it).
    pub note: Option<String>,
}

impl ProbeDoc {
    /// A provider that could not be described, and why.
    pub fn failed(title: String, error: String) -> ProbeDoc {
        ProbeDoc {
            title,
            error: Some(error),
            ..ProbeDoc::default()
        }
    }
}

/// Describes `provider` titled `title`, with its device `listing` (the good entries and the
/// refused ones), each device with the note `note` gives it.
pub fn describe<P: Provider>(
    title: String,
    provider: &P,
    listing: anyverbs::Result<(Vec<DeviceInfo>, Vec<String>)>,
    note: impl Fn(&str) -> Option<String>,
) -> ProbeDoc {
    let mut doc = ProbeDoc {
        title,
        provider: Some(provider.name().to_string()),
        transport: Some(provider.transport().to_string()),
        ..ProbeDoc::default()
    };
    match listing {
        Ok((devices, refused)) => {
            doc.devices = devices
                .iter()
                .map(|d| DeviceRow {
                    name: d.identity.name.clone(),
                    transport: d.transport.to_string(),
                    state_model: format!("{:?}", d.state_model).to_lowercase(),
                    node_guid: d.identity.node_guid.to_string(),
                    faults: fault_names(d.faults),
                    note: note(&d.identity.name),
                })
                .collect();
            doc.refused = refused;
        }
        Err(e) => doc.error = Some(format!("cannot list devices: {e}")),
    }
    doc
}

/// Why a probe in a child process gave no description.
#[derive(Debug, Clone)]
pub struct ProbeDied(pub String);

/// Describes the provider `spec` names in a child process (this program, `exe`, running
/// `probe`), killed after `limit`: its description, or how the child died, hung or failed.
pub fn in_child(exe: &Path, spec: &str, limit: Duration) -> Result<ProbeDoc, ProbeDied> {
    let mut command = Command::new(exe);
    command.arg("probe").arg(format!("--provider={spec}"));
    let output = isolate::run_child(&mut command, limit)
        .map_err(|e| ProbeDied(format!("cannot start a child process to examine it: {e}")))?;
    let tail = isolate::stderr_tail(&output.stderr)
        .map(|t| format!("\nlast lines of its standard error:\n{t}"))
        .unwrap_or_default();
    let how = match output.end {
        ChildEnd::Killed { after } => format!(
            "hung: still running after {} s, and killed",
            after.as_secs_f64()
        ),
        ChildEnd::Exited(status) if status.success() => {
            return serde_json::from_slice(&output.stdout).map_err(|e| {
                ProbeDied(format!(
                    "its child process wrote no usable description ({e}){tail}"
                ))
            });
        }
        ChildEnd::Exited(status) => match isolate::describe_signal(status) {
            Some(signal) => format!("crashed: {signal}"),
            None => format!("its child process ended with {status}"),
        },
    };
    Err(ProbeDied(format!("{how}{tail}")))
}

/// How `list` shows the faults a device can have injected.
fn fault_names(faults: anyverbs::Faults) -> String {
    if faults == anyverbs::Faults::all() {
        return "all".into();
    }
    if faults.is_empty() {
        return "none".into();
    }
    faults
        .iter_names()
        .map(|(name, _)| name.to_lowercase())
        .collect::<Vec<_>>()
        .join(",")
}
