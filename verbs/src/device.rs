//! Discovery: which RDMA devices this machine has, each with its full identity, and opening one.
//!
//! Identity comes from three sources that agree by construction and are cross-checked in the
//! test bed: libibverbs (name, kernel index, node GUID; vendor, part and system-image GUID from
//! `ibv_query_device`), sysfs (the PCI function behind the device and its kernel driver, where
//! there is one) and the kernel's RDMA netlink interface (the netdev of each port — the only
//! place an iWARP device's netdev is found, as siw has no GID table). GUIDs are converted from
//! the `__be64` verbs returns to host order, so they print as `rdma dev show` and
//! `/sys/class/infiniband/*/node_guid` print them (sideway's own `Guid` display is
//! byte-swapped).
//!
//! "The same device" is judged by [`DeviceIdentity::is_same_device`] from the core: node GUID,
//! system-image GUID, PCI address where both sides have one, vendor and part — never name or
//! index, which the kernel reuses (`rdma link add rxe0` on another netdev) and renumbers (every
//! re-add takes a new index).

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyverbs::{DeviceIdentity, Error, ErrorKind, Guid, PciAddress};
use sideway::ibverbs::device::{DeviceInfo as _, DeviceList};
use sideway::ibverbs::device_context::DeviceContext;

use crate::error::{means_unavailable, unavailable, unavailable_cause};

/// The transport of a device, from `ibv_device.transport_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// InfiniBand or RoCE (`IBV_TRANSPORT_IB`): the application moves QPs to RTR and RTS.
    InfiniBand,
    /// iWARP (`IBV_TRANSPORT_IWARP`): QPs connect only through the CM, which moves them past INIT.
    Iwarp,
    /// Anything else (usNIC, unknown); not used by anyverbs.
    Other(u32),
}

/// One device as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Name, index, GUIDs, PCI address, vendor and part: see [`DeviceIdentity::is_same_device`].
    /// The index is `u32::MAX` where the kernel's RDMA netlink interface did not answer.
    pub identity: DeviceIdentity,
    /// The transport.
    pub transport: Transport,
    /// The netdev of port 1, where the device has one (RoCE and iWARP devices do).
    pub netdev: Option<String>,
    /// The kernel driver of the PCI function behind the device (`mlx5_core`, ...); software
    /// devices (rxe, siw) have no PCI function and so none.
    pub kernel_driver: Option<String>,
    /// The device's directory in sysfs (`/sys/class/infiniband/<name>`).
    pub sysfs_path: PathBuf,
}

impl DeviceEntry {
    /// The drain profile of the driver behind the device, from the core's table: by the kernel
    /// driver of its PCI function, or by its vendor id where it has none (rxe, siw).
    pub fn drain_profile(&self) -> &'static anyverbs::drain::DrainProfile {
        anyverbs::drain::profile_for(self.kernel_driver.as_deref(), self.identity.vendor_id)
    }
}

/// The device list, from one `ibv_get_device_list`, or why there is none: the "RDMA is not
/// available here" error where the machine has no RDMA, the call's own error otherwise.
fn device_list() -> Result<DeviceList, Error> {
    DeviceList::new().map_err(|e| {
        let errno = crate::error::errno_of(&e);
        if means_unavailable(errno) {
            unavailable(unavailable_cause(errno))
        } else {
            crate::error::call_failed("ibv_get_device_list", errno)
        }
    })
}

/// How long a caller waits for the device-list thread ([`on_lister`]).
const LISTER_TIMEOUT: Duration = Duration::from_secs(30);

std::thread_local! {
    static ON_LISTER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` — everything that makes libibverbs list the devices — on one thread of the process,
/// and waits for it (at most [`LISTER_TIMEOUT`]).
///
/// Why one thread: libibverbs allocates a device's struct in the thread that first lists it,
/// so in that thread's malloc arena, and librdmacm up to rdma-core 51 sorts its device lists by
/// the *difference* of those pointers truncated to an `int` (fixed upstream in c4a5ac8, "Fix an
/// overflow bug in qsort comparison function"). One struct in the main thread's heap and one in
/// a thread's arena are terabytes apart, the sort goes wrong, and librdmacm's merge of the old
/// and new lists drops devices that are still there. Once its list is empty while the devices
/// are unchanged, its next initialisation takes its global lock and calls itself again: the
/// process deadlocks in librdmacm (seen in the test bed: the CM janitor and both supervisors of
/// the echo cycles waiting on the lock the janitor held). Listing on one thread keeps every
/// device's struct in one arena.
pub(crate) fn on_lister<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    type Job = Box<dyn FnOnce() + Send>;
    /// The device-list thread's channel and the process that started it: a forked child has
    /// its parent's channel but not the thread behind it, and starts its own.
    static LISTER: std::sync::Mutex<Option<(u32, std::sync::mpsc::Sender<Job>)>> =
        std::sync::Mutex::new(None);
    if ON_LISTER.with(|on| on.get()) {
        return Ok(f());
    }
    let pid = std::process::id();
    let lister = {
        let mut lister = LISTER.lock().unwrap_or_else(|p| p.into_inner());
        match &*lister {
            Some((owner, tx)) if *owner == pid => Some(tx.clone()),
            _ => {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let spawned = std::thread::Builder::new()
                    .name("anyverbs-device-list".into())
                    .spawn(move || {
                        ON_LISTER.with(|on| on.set(true));
                        for job in rx {
                            job();
                        }
                    });
                match spawned {
                    Ok(_) => {
                        *lister = Some((pid, tx.clone()));
                        Some(tx)
                    }
                    // Tried again at the next listing.
                    Err(e) => {
                        tracing::warn!(%e, "no device-list thread: listing where asked");
                        None
                    }
                }
            }
        }
    };
    let Some(lister) = lister else {
        return Ok(f());
    };
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    // A panic in `f` goes to its caller, as it would have listing in place; the thread lives on.
    let job: Job = Box::new(move || {
        let _ = reply.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    if lister.send(job).is_err() {
        return Err(Error::new(
            ErrorKind::Other,
            "the device-list thread is gone",
        ));
    }
    match answer.recv_timeout(LISTER_TIMEOUT) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::new(
            ErrorKind::TimedOut,
            format!("listing the RDMA devices took longer than {LISTER_TIMEOUT:?}"),
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::new(
            ErrorKind::Other,
            "the device-list thread ended without an answer",
        )),
    }
}

/// Whether this machine can do RDMA at all: `Ok(())`, or the "RDMA is not available here"
/// error with its cause (no kernel RDMA: `ENOSYS`; no rdma-core: `EOPNOTSUPP`).
pub fn availability() -> Result<(), Error> {
    on_lister(|| device_list().map(|_| ()))?
}

/// Every RDMA device of the machine, each with its identity. Empty, not an error, where the
/// machine has no RDMA ([`availability`] says why). A device that vanishes while it is being
/// looked at is left out.
pub fn devices() -> Result<Vec<DeviceEntry>, Error> {
    on_lister(devices_here)?
}

fn devices_here() -> Result<Vec<DeviceEntry>, Error> {
    let list = match device_list() {
        Ok(list) => list,
        Err(e) if e.message().starts_with(crate::error::UNAVAILABLE) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let links = crate::netlink::list_devices(Duration::from_secs(2)).unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|device| describe(&device, &links).ok().map(|(entry, _)| entry))
        .collect())
}

/// Opens the device called `name`: its identity and a verbs context on it.
///
/// Errors: "RDMA is not available here: ..." ([`ErrorKind::NotSupported`]) on a machine without
/// RDMA; [`ErrorKind::NotFound`] when no device has that name.
pub fn open(name: &str) -> Result<(DeviceEntry, Arc<DeviceContext>), Error> {
    let name = name.to_owned();
    on_lister(move || open_here(&name))?
}

fn open_here(name: &str) -> Result<(DeviceEntry, Arc<DeviceContext>), Error> {
    let list = device_list()?;
    let links = crate::netlink::list_devices(Duration::from_secs(2)).unwrap_or_default();
    let device = list
        .iter()
        .find(|device| device.name() == name)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no RDMA device called {name:?}"),
            )
        })?;
    describe(&device, &links)
}

/// Opens `device` and reads its identity; the context stays open for the caller.
fn describe(
    device: &sideway::ibverbs::device::Device<'_>,
    links: &[crate::netlink::RdmaDevice],
) -> Result<(DeviceEntry, Arc<DeviceContext>), Error> {
    let name = device.name();
    let context = device
        .open()
        .map_err(|e| crate::error::sideway_failed(&format!("ibv_open_device({name})"), &e))?;
    // SAFETY: the context was just opened and is live.
    let attr = unsafe { crate::raw::query::device(context.context()) }
        .map_err(|errno| crate::error::call_failed(&format!("ibv_query_device({name})"), errno))?;
    // SAFETY: the context is open, so its device pointer is valid; ibv_get_device_index and the
    // ibdev_path field only read the device struct.
    // The transport is read as the number it is: sideway's conversion panics on a value it does
    // not know.
    let (sysfs_path, transport) = unsafe {
        let raw = context.context();
        let dev = raw.as_ref().device;
        let path = CStr::from_ptr((*dev).ibdev_path.as_ptr())
            .to_string_lossy()
            .into_owned();
        (PathBuf::from(path), (*dev).transport_type)
    };
    let node_guid = u64::from_be(device.guid().as_u64());
    let (pci_address, kernel_driver) = pci_function(&sysfs_path);
    // The kernel index and the netdevs come from RDMA netlink (libibverbs learns the index the
    // same way, but the run-time loader does not offer `ibv_get_device_index`). Matched by name
    // and GUID: a name alone may already belong to a newer device.
    let link = links
        .iter()
        .find(|l| l.name == name && l.node_guid == node_guid);
    let index = link.map_or(u32::MAX, |l| l.index);
    let netdev = link.and_then(|l| {
        l.ports
            .iter()
            .find(|p| p.port == 1)
            .and_then(|p| p.netdev.clone())
    });
    let identity = DeviceIdentity {
        name,
        index,
        node_guid: Guid(node_guid),
        sys_image_guid: Guid(u64::from_be(attr.sys_image_guid)),
        pci_address,
        vendor_id: attr.vendor_id,
        vendor_part_id: attr.vendor_part_id,
    };
    let transport = match transport {
        rdma_mummy_sys::ibv_transport_type::IBV_TRANSPORT_IB => Transport::InfiniBand,
        rdma_mummy_sys::ibv_transport_type::IBV_TRANSPORT_IWARP => Transport::Iwarp,
        other => Transport::Other(other as u32),
    };
    Ok((
        DeviceEntry {
            identity,
            transport,
            netdev,
            kernel_driver,
            sysfs_path,
        },
        context,
    ))
}

/// The PCI function behind a device and its kernel driver, from `<sysfs>/device`: present only
/// where that link leads to a device on the PCI bus.
fn pci_function(sysfs: &Path) -> (Option<PciAddress>, Option<String>) {
    let Ok(function) = std::fs::canonicalize(sysfs.join("device")) else {
        return (None, None);
    };
    let on_pci = std::fs::canonicalize(function.join("subsystem"))
        .ok()
        .and_then(|s| s.file_name().map(|n| n == "pci"))
        .unwrap_or(false);
    if !on_pci {
        return (None, None);
    }
    let address = function
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok());
    let driver = std::fs::canonicalize(function.join("driver"))
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    (address, driver)
}

/// The node GUID and system-image GUID sysfs shows for a device (`node_guid`,
/// `sys_image_guid`: the form `rdma dev show` prints), for cross-checking.
pub fn sysfs_guids(entry: &DeviceEntry) -> Option<(Guid, Guid)> {
    let read = |file: &str| -> Option<Guid> {
        std::fs::read_to_string(entry.sysfs_path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("node_guid")?, read("sys_image_guid")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_listing_reaches_its_caller_and_the_lister_lives_on() {
        // A panic in a job (sideway's conversions panic on values they do not know) must not
        // kill the one listing thread: every later listing of the process would fail.
        let panicked = std::panic::catch_unwind(|| on_lister(|| -> u32 { panic!("in a job") }));
        assert!(panicked.is_err(), "the caller did not see the job's panic");
        for _ in 0..2 {
            assert_eq!(on_lister(|| 7).unwrap(), 7);
        }
    }

    #[test]
    fn a_forked_child_lists_without_waiting_for_the_parents_thread() {
        // A forked child has the parent's channel but not its thread: a listing there must
        // not wait LISTER_TIMEOUT for a thread that does not exist.
        assert_eq!(on_lister(|| 1).unwrap(), 1);
        // SAFETY: the child only lists (through on_lister) and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let t = std::time::Instant::now();
            let ok = on_lister(|| 7).ok() == Some(7) && t.elapsed() < Duration::from_secs(5);
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: our own child, status is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if std::time::Instant::now() >= deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("the forked child's listing did not return within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the forked child's listing failed or was slow (status {status})"
        );
    }

    #[test]
    fn a_device_on_a_pci_function_has_its_address_and_driver() {
        // The shape sysfs has for a hardware HCA: /sys/class/infiniband/mlx5_0/device is a link to
        // the PCI function, whose `subsystem` links to the PCI bus and `driver` to its driver.
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("anyverbs-verbs-pci-{}", std::process::id()));
        let function = root.join("devices/pci0000:00/0000:3b:00.1");
        let bus = root.join("bus/pci");
        let driver = bus.join("drivers/mlx5_core");
        let ib = root.join("class/infiniband/mlx5_0");
        for dir in [&function, &driver, &ib] {
            std::fs::create_dir_all(dir).unwrap();
        }
        symlink(&bus, function.join("subsystem")).unwrap();
        symlink(&driver, function.join("driver")).unwrap();
        symlink(&function, ib.join("device")).unwrap();
        let (address, kernel_driver) = pci_function(&ib);
        assert_eq!(address, "0000:3b:00.1".parse().ok());
        assert_eq!(kernel_driver.as_deref(), Some("mlx5_core"));
        // A device whose parent is on another bus (a virtual one) has none.
        std::fs::remove_file(function.join("subsystem")).unwrap();
        symlink(root.join("bus/virtual"), function.join("subsystem")).unwrap();
        std::fs::create_dir_all(root.join("bus/virtual")).unwrap();
        assert_eq!(pci_function(&ib), (None, None));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_device_without_a_pci_function_has_no_address_or_driver() {
        let dir = std::env::temp_dir().join(format!("anyverbs-verbs-sysfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(pci_function(&dir), (None, None));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
