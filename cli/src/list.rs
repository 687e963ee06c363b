//! `list`: the built-in providers, then every shared object in the plugin search path, each
//! examined in a child process of its own, with its devices; and `cases`.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use anyverbs::plugin::{plugin_files, search_path};
use anyverbs_conformance::{all_cases, matches_pattern};
use anyverbs_provider_mock::MockProvider;

use crate::probe::{self, ProbeDoc};
use crate::providers::built_in;

/// Longest one plugin may take to be loaded, started and listed in its child process.
pub const PLUGIN_LIMIT: Duration = Duration::from_secs(30);

/// Writes the list: the built-in providers, described here, then each plugin file of the search
/// path, described by a child process running this program (`exe`): a plugin that crashes or
/// hangs is shown as such, and the list goes on.
pub fn list(out: &mut dyn Write, exe: &Path) -> io::Result<()> {
    for p in built_in() {
        write_doc(out, &p.describe())?;
    }
    let dirs = search_path();
    let files = plugin_files(&dirs);
    if files.is_empty() {
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return writeln!(out, "no plugins in {}", shown.join(":"));
    }
    for path in files {
        match probe::in_child(exe, &path.display().to_string(), PLUGIN_LIMIT) {
            Ok(doc) => write_doc(out, &doc)?,
            Err(died) => {
                let mut lines = died.0.lines();
                writeln!(
                    out,
                    "{}: {}",
                    path.display(),
                    lines.next().unwrap_or_default()
                )?;
                for line in lines {
                    writeln!(out, "    {line}")?;
                }
            }
        }
    }
    Ok(())
}

/// Writes one provider's section: a header line, then a table of its devices, each note under
/// its device, and the refused entries.
fn write_doc(out: &mut dyn Write, doc: &ProbeDoc) -> io::Result<()> {
    if let Some(error) = &doc.error
        && doc.devices.is_empty()
    {
        return writeln!(out, "{}: {error}", doc.title);
    }
    let transport = doc.transport.as_deref().unwrap_or("?");
    writeln!(out, "{}: transport {transport}", doc.title)?;
    if let Some(error) = &doc.error {
        writeln!(out, "    {error}")?;
    }
    if doc.devices.is_empty() {
        writeln!(out, "    (no devices)")?;
    } else {
        let header = ["DEVICE", "TRANSPORT", "STATE MODEL", "NODE GUID", "FAULTS"];
        let rows: Vec<[&str; 5]> = doc
            .devices
            .iter()
            .map(|d| {
                [
                    d.name.as_str(),
                    d.transport.as_str(),
                    d.state_model.as_str(),
                    d.node_guid.as_str(),
                    d.faults.as_str(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |out: &mut dyn Write, cells: [&str; 5]| {
            writeln!(
                out,
                "    {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            )
        };
        line(out, header)?;
        for (row, device) in rows.into_iter().zip(&doc.devices) {
            line(out, row)?;
            if let Some(note) = &device.note {
                writeln!(out, "        note: {note}")?;
            }
        }
    }
    for refused in &doc.refused {
        writeln!(out, "    refused: {refused}")?;
    }
    Ok(())
}

/// `cases`: every case of the suite (or those `pattern` matches), one a line with what it
/// checks; false if `pattern` matches none.
pub fn cases(out: &mut dyn Write, pattern: Option<&str>) -> io::Result<bool> {
    let cases = all_cases::<MockProvider>();
    let selected: Vec<_> = cases
        .iter()
        .filter(|c| pattern.is_none_or(|p| matches_pattern(c.name, p)))
        .collect();
    let width = selected.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &selected {
        writeln!(out, "{:<width$}  {}", c.name, c.description)?;
    }
    Ok(!selected.is_empty())
}
