//! What the loader checks in a plugin's results beyond the ABI's codes: lengths and counts
//! against the ABI's limits, values against what was asked, and how a refusal is reported — a
//! [`PluginFault`] naming the plugin, the call and the field.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::sink::Collect;
use crate::device::DeviceInfo;
use crate::drain::DrainReport;
use crate::error::{Error, ErrorKind, Result};
use crate::mr::Access;
use crate::plugin::abi;
use crate::qp::{DisconnectReport, QpInit};

/// What a loaded plugin returned that breaks the ABI's rules, and that the loader therefore
/// refused: the [source](std::error::Error::source) of the error (of kind
/// [`ErrorKind::Other`]) the call returns.
///
/// ```
/// # use anyverbs::{Error, ErrorKind};
/// # use anyverbs::plugin::PluginFault;
/// fn explain(e: &Error) -> String {
///     match PluginFault::of(e) {
///         Some(fault) => format!("{} broke the ABI in {}: {}", fault.plugin().display(),
///                                fault.call(), fault.field()),
///         None => e.to_string(),
///     }
/// }
/// # assert_eq!(explain(&Error::from(ErrorKind::Busy)), "busy: busy");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFault {
    plugin: PathBuf,
    call: &'static str,
    field: String,
    problem: String,
}

impl PluginFault {
    /// The plugin's file (or, for a table linked into the program, its label).
    pub fn plugin(&self) -> &Path {
        &self.plugin
    }

    /// The ABI function whose result was refused, e.g. `provider_devices`.
    pub fn call(&self) -> &'static str {
        self.call
    }

    /// The value refused, e.g. `device name`, `capacity`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// The fault behind `error`, if it is the loader's refusal of a plugin's result.
    pub fn of(error: &Error) -> Option<&PluginFault> {
        std::error::Error::source(error)?.downcast_ref()
    }
}

impl fmt::Display for PluginFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin {}: {} returned a bad {}: {}",
            self.plugin.display(),
            self.call,
            self.field,
            self.problem
        )
    }
}

impl std::error::Error for PluginFault {}

/// A device listing of a loaded provider: the entries that passed the checks, and one error
/// for each that did not (see [`LoadedProvider::device_listing`](super::LoadedProvider)).
#[derive(Debug)]
pub struct DeviceListing {
    /// The good entries, in the plugin's order.
    pub devices: Vec<DeviceInfo>,
    /// Why each refused entry was refused.
    pub refused: Vec<Error>,
}

impl DeviceListing {
    /// The good entries; every refused one is logged. An error if there are refused entries
    /// and no good one: a listing that is all bad says nothing true about the host.
    pub fn into_devices(self) -> Result<Vec<DeviceInfo>> {
        for e in &self.refused {
            tracing::warn!(error = %e, "a device entry of a plugin was refused");
        }
        match (self.devices.is_empty(), self.refused.into_iter().next()) {
            (true, Some(first)) => Err(first),
            _ => Ok(self.devices),
        }
    }
}

/// The checks of one call's results, for one plugin.
pub(super) struct Check<'a> {
    plugin: &'a Path,
    call: &'static str,
}

impl<'a> Check<'a> {
    pub(super) fn new(plugin: &'a Path, call: &'static str) -> Self {
        Check { plugin, call }
    }

    /// The error for a refused `field`.
    pub(super) fn fault(&self, field: impl Into<String>, problem: impl Into<String>) -> Error {
        let fault = PluginFault {
            plugin: self.plugin.to_path_buf(),
            call: self.call,
            field: field.into(),
            problem: problem.into(),
        };
        Error::new(ErrorKind::Other, fault.to_string()).with_source(fault)
    }

    /// The error for a `field` that failed to decode with `e`.
    pub(super) fn refused(&self, field: &str, e: Error) -> Error {
        self.fault(field, e.message().to_string())
    }

    /// The one item a call must have given to a sink.
    pub(super) fn one<T, U, F: FnMut(&T) -> Result<U>>(
        &self,
        items: Collect<T, U, F>,
        field: &str,
    ) -> Result<U> {
        let given =
            items.items.len() + items.beyond_limit + items.null_items + items.misaligned_items;
        let mut converted = items.items.into_iter();
        match (given, converted.next()) {
            (1, Some(item)) => item,
            _ => Err(self.fault(
                field,
                format!(
                    "{given} given ({} null, {} at a misaligned address), where there must be \
                     exactly one",
                    items.null_items, items.misaligned_items
                ),
            )),
        }
    }

    /// The devices of a listing, with the entries refused: bad ones, names listed twice, null
    /// entries and entries beyond [`abi::DEVICES_MAX`].
    pub(super) fn listing<F: FnMut(&abi::DeviceInfo) -> Result<DeviceInfo>>(
        &self,
        items: Collect<abi::DeviceInfo, DeviceInfo, F>,
    ) -> DeviceListing {
        let mut listing = DeviceListing {
            devices: Vec::new(),
            refused: Vec::new(),
        };
        let mut names = HashSet::new();
        for (i, item) in items.items.into_iter().enumerate() {
            match item {
                Ok(info) if names.insert(info.identity.name.clone()) => listing.devices.push(info),
                Ok(info) => listing.refused.push(self.fault(
                    format!("device (entry {i})"),
                    format!("the name {:?} is listed twice", info.identity.name),
                )),
                Err(e) => listing
                    .refused
                    .push(self.refused(&format!("device (entry {i})"), e)),
            }
        }
        if items.null_items > 0 {
            listing
                .refused
                .push(self.fault("device", format!("{} null entries", items.null_items)));
        }
        if items.misaligned_items > 0 {
            listing.refused.push(self.fault(
                "device",
                format!(
                    "{} entries at misaligned addresses, not read",
                    items.misaligned_items
                ),
            ));
        }
        if items.beyond_limit > 0 {
            listing.refused.push(self.fault(
                "device listing",
                format!(
                    "{} entries beyond the {} allowed, ignored",
                    items.beyond_limit,
                    abi::DEVICES_MAX
                ),
            ));
        }
        listing
    }

    /// A CQ's capacity: at least the depth asked for.
    pub(super) fn cq_capacity(&self, capacity: u32, depth: u32) -> Result<u32> {
        if capacity == 0 || capacity < depth {
            return Err(self.fault(
                "capacity",
                format!("{capacity}, though a depth of {depth} was asked for"),
            ));
        }
        Ok(capacity)
    }

    /// A QP number: 1 to [`abi::QP_NUM_MAX`].
    pub(super) fn qp_num(&self, qp_num: u32) -> Result<u32> {
        if qp_num == 0 || qp_num > abi::QP_NUM_MAX {
            return Err(self.fault(
                "QP number",
                format!(
                    "{qp_num}: an RC QP number is 1 to {:#x} (24 bits)",
                    abi::QP_NUM_MAX
                ),
            ));
        }
        Ok(qp_num)
    }

    /// A completion channel's file descriptor: not negative, and open in this process — proved
    /// by duplicating it. The loader watches its own duplicate, which shares the plugin's open
    /// file (and so its readiness) but stays this program's: a plugin that closes its
    /// descriptor, and a process that reuses the number, cannot make the program watch an
    /// unrelated file.
    #[cfg(unix)]
    pub(super) fn channel_fd(&self, fd: i32) -> Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        if fd < 0 {
            return Err(self.fault("file descriptor", format!("{fd}: negative")));
        }
        // SAFETY: F_DUPFD_CLOEXEC duplicates the descriptor if it is open and fails otherwise;
        // any integer is a valid argument.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy == -1 {
            let e = std::io::Error::last_os_error();
            return Err(self.fault(
                "file descriptor",
                format!("{fd}: not an open descriptor of this process ({e})"),
            ));
        }
        // SAFETY: `copy` is a descriptor fcntl just opened for this process; nothing else owns
        // it.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(copy) })
    }

    /// What `channel_next` said: `fired` 0 (nothing), or 1 with the number of a CQ that was
    /// created on the channel (`on_channel`) or has left it (`departed`: dropped, `None`).
    pub(super) fn notification(
        &self,
        fired: u32,
        cq_num: u32,
        on_channel: bool,
        departed: bool,
    ) -> Result<Option<Option<u32>>> {
        match fired {
            0 => Ok(None),
            1 if on_channel => Ok(Some(Some(cq_num))),
            1 if departed => Ok(Some(None)),
            1 => Err(self.fault(
                "CQ number",
                format!("{cq_num}, which is no CQ created on this channel"),
            )),
            other => Err(self.fault("fired", format!("{other}, where 0 or 1 was due"))),
        }
    }

    /// The sizes a new QP was granted: at least those asked for, in every field.
    pub(super) fn granted(&self, granted: &abi::QpInit, asked: &QpInit) -> Result<QpInit> {
        let got = QpInit {
            max_send_wr: granted.max_send_wr,
            max_recv_wr: granted.max_recv_wr,
            max_send_sge: granted.max_send_sge,
            max_recv_sge: granted.max_recv_sge,
            max_inline_data: granted.max_inline_data,
        };
        let short = [
            ("max_send_wr", got.max_send_wr, asked.max_send_wr),
            ("max_recv_wr", got.max_recv_wr, asked.max_recv_wr),
            ("max_send_sge", got.max_send_sge, asked.max_send_sge),
            ("max_recv_sge", got.max_recv_sge, asked.max_recv_sge),
            (
                "max_inline_data",
                got.max_inline_data,
                asked.max_inline_data,
            ),
        ]
        .into_iter()
        .find(|&(_, got, asked)| got < asked);
        if let Some((field, got, asked)) = short {
            return Err(self.fault(
                "QP sizes granted",
                format!("{field} {got}, less than the {asked} asked for"),
            ));
        }
        Ok(got)
    }

    /// A new region of the program's memory (`pd_register_memory`): as [`region`](Self::region),
    /// and at exactly the address registered, reached at exactly that pointer.
    pub(super) fn caller_region(
        &self,
        info: &abi::MrInfo,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<()> {
        self.region(info, len, access)?;
        for (field, got) in [("region address", info.addr), ("region pointer", info.ptr)] {
            if got != addr as u64 {
                return Err(self.fault(
                    field,
                    format!("{got:#x}, though {len} bytes at {addr:p} were registered"),
                ));
            }
        }
        Ok(())
    }

    /// A new memory region: exactly the length and access asked for, at an address where it
    /// fits, and reached (if at all) at a pointer where it fits.
    pub(super) fn region(&self, info: &abi::MrInfo, len: usize, access: Access) -> Result<()> {
        if info.len != len as u64 {
            return Err(self.fault(
                "region length",
                format!("{} bytes, though {len} were registered", info.len),
            ));
        }
        if info.access != access.bits() {
            return Err(self.fault(
                "access flags",
                format!(
                    "{:#x}, though {:#x} ({access:?}) was asked for",
                    info.access,
                    access.bits()
                ),
            ));
        }
        if info.addr.checked_add(info.len).is_none() {
            return Err(self.fault(
                "region address",
                format!(
                    "{:#x}: {} bytes there would pass the end of the address space",
                    info.addr, info.len
                ),
            ));
        }
        let fits = usize::try_from(info.ptr)
            .ok()
            .and_then(|p| p.checked_add(len))
            .is_some();
        if info.ptr != 0 && !fits {
            return Err(self.fault(
                "region pointer",
                format!(
                    "{:#x}: {len} bytes there would pass the end of the address space",
                    info.ptr
                ),
            ));
        }
        Ok(())
    }

    /// A drain report: it accounts for no more WRs than the QP's queues hold (WRs outstanding
    /// when the drain started).
    pub(super) fn drain_report(&self, report: DrainReport, init: &QpInit) -> Result<DrainReport> {
        let held = u64::from(init.max_send_wr) + u64::from(init.max_recv_wr);
        let (done, made) = (report.completed_by_device as u64, report.synthesized as u64);
        match done.checked_add(made) {
            Some(total) if total <= held => Ok(report),
            _ => Err(self.fault(
                "drain report",
                format!(
                    "{done} WRs completed by the device and {made} synthesized, more than the \
                     {held} the QP's queues hold"
                ),
            )),
        }
    }

    /// A disconnect report: no more sends outstanding than the QP's send queue holds.
    pub(super) fn disconnect_report(
        &self,
        report: DisconnectReport,
        init: &QpInit,
    ) -> Result<DisconnectReport> {
        if report.sends_outstanding as u64 > u64::from(init.max_send_wr) {
            return Err(self.fault(
                "disconnect report",
                format!(
                    "{} sends outstanding, more than the {} the QP's send queue holds",
                    report.sends_outstanding, init.max_send_wr
                ),
            ));
        }
        Ok(report)
    }

    /// The address a listener is bound to: the address asked for, with a port chosen if 0 was
    /// asked for.
    pub(super) fn bound_address(&self, local: SocketAddr, asked: SocketAddr) -> Result<()> {
        let ip_ok = asked.ip().is_unspecified() || local.ip() == asked.ip();
        let port_ok = if asked.port() == 0 {
            local.port() != 0
        } else {
            local.port() == asked.port()
        };
        if !ip_ok || !port_ok {
            return Err(self.fault(
                "bound address",
                format!("{local}, though {asked} was asked for"),
            ));
        }
        Ok(())
    }
}
