//! The function table: one entry per operation, the entries of the major's first version (4.0)
//! required and those a minor version added optional.

use std::ffi::c_char;

use super::*;

/// Shorthand for the error-buffer argument.
type Err = *mut ErrorBuf;

/// Declares the table's fields: every function is optional at the type level (`Option` of a
/// function pointer is a nullable C function pointer). The functions of the major's first version (4.0) are required:
/// the loader refuses a table with one of them null. The functions a minor version added
/// (`added`, each with the minor that added it) are optional: the loader reads one only if the
/// plugin's table is long enough to hold it, and a program sees a null or missing one as
/// [`ErrorKind::NotSupported`].
macro_rules! table {
    (
        required { $($(#[$doc:meta])* $field:ident: fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)* }
        added { $($(#[$adoc:meta])* $minor:literal $afield:ident: fn($($aarg:ident: $aty:ty),*) $(-> $aret:ty)?;)* }
    ) => {
        /// The function table of ABI 4.0. See the [ABI documentation](super) for the rules.
        #[repr(C)]
        pub struct ProviderTable {
            /// Versions and size; its layout never changes.
            pub header: TableHeader,
            /// The plugin's package name, NUL-terminated, static.
            pub name: *const c_char,
            /// The plugin's package version, NUL-terminated, static.
            pub version: *const c_char,
            $(
                $(#[$doc])*
                pub $field: Option<unsafe extern "C" fn($($arg: $ty),*) $(-> $ret)?>,
            )*
            $(
                $(#[$adoc])*
                pub $afield: Option<unsafe extern "C" fn($($aarg: $aty),*) $(-> $aret)?>,
            )*
        }

        /// The function entries of a [`ProviderTable`] after the loader checked that none of the
        /// required ones is null: what a loaded provider calls, one indirect call per operation.
        #[derive(Clone, Copy)]
        pub struct Functions {
            $(
                $(#[$doc])*
                pub $field: unsafe extern "C" fn($($arg: $ty),*) $(-> $ret)?,
            )*
            $(
                $(#[$adoc])*
                pub $afield: Option<unsafe extern "C" fn($($aarg: $aty),*) $(-> $aret)?>,
            )*
        }

        /// The size of a table of ABI 4.0, the smallest this major allows: the offset of the
        /// first function a minor version added.
        pub const MIN_TABLE_SIZE: u32 = {
            let sizes = [$(std::mem::offset_of!(ProviderTable, $afield),)* size_of::<ProviderTable>()];
            sizes[0] as u32
        };

        impl ProviderTable {
            /// The function entries of the table at `table`, whose header says it is `size`
            /// bytes long; or the names of the required entries that are null, in table order.
            /// An added entry the table is too short to hold is `None`, and is not read.
            ///
            /// # Safety
            /// `table` must point to a table of this major whose first `size` bytes (at least
            /// [`MIN_TABLE_SIZE`]) are readable.
            pub unsafe fn functions_from(
                table: *const ProviderTable,
                size: u32,
            ) -> std::result::Result<Functions, Vec<&'static str>> {
                // SAFETY: every required entry lies within the first `MIN_TABLE_SIZE` bytes,
                // readable as the caller guarantees; each is read through its own place, never
                // through a reference to the whole (perhaps shorter) table.
                let ($($field,)*) = unsafe { ($((&raw const (*table).$field).read(),)*) };
                // Read only by the entries a minor added; 4.0 has none yet.
                let _ = size;
                let mut missing = Vec::new();
                $(
                    if $field.is_none() {
                        missing.push(stringify!($field));
                    }
                )*
                $(
                    let end = std::mem::offset_of!(ProviderTable, $afield)
                        + size_of::<Option<unsafe extern "C" fn()>>();
                    let $afield = if end <= size as usize {
                        // SAFETY: the table's size covers the entry, readable as the caller
                        // guarantees.
                        unsafe { (&raw const (*table).$afield).read() }
                    } else {
                        None
                    };
                    let _: u16 = $minor;
                )*
                match ($($field,)*) {
                    ($(Some($field),)*) => Ok(Functions { $($field,)* $($afield,)* }),
                    _ => Err(missing),
                }
            }
        }
    };
}

table! {
    required {
    /// Makes a provider instance.
    provider_new: fn(out: *mut *mut RawProvider, err: Err) -> Status;
    /// Releases a provider instance.
    provider_free: fn(p: *mut RawProvider);
    /// The provider's short name, handed to `sink` as bytes.
    provider_name: fn(p: *const RawProvider, sink: Sink<Bytes>);
    /// Transport code.
    provider_transport: fn(p: *const RawProvider) -> u32;
    /// The devices, one call of `sink` each.
    provider_devices: fn(p: *const RawProvider, sink: Sink<DeviceInfo>, err: Err) -> Status;
    /// Opens a device; its info goes to `info`.
    provider_open: fn(p: *const RawProvider, name: Bytes, out: *mut *mut RawDevice, info: Sink<DeviceInfo>, err: Err) -> Status;
    /// Subscribes to the monitor.
    provider_monitor: fn(p: *const RawProvider, out: *mut *mut RawMonitorEvents, err: Err) -> Status;
    /// Injects a fault.
    provider_inject: fn(p: *const RawProvider, name: Bytes, fault: *const Fault, err: Err) -> Status;

    /// Releases a device.
    device_free: fn(d: *mut RawDevice);
    /// The ports, one call of `sink` each.
    device_ports: fn(d: *const RawDevice, sink: Sink<PortInfo>, err: Err) -> Status;
    /// Allocates a PD.
    device_alloc_pd: fn(d: *const RawDevice, out: *mut *mut RawPd, err: Err) -> Status;
    /// Creates a CQ.
    device_create_cq: fn(d: *const RawDevice, depth: u32, out: *mut *mut RawCq, info: *mut CqInfo, err: Err) -> Status;
    /// Listens; the bound address goes to `local`.
    device_listen: fn(d: *const RawDevice, addr: *const SockAddr, out: *mut *mut RawListener, local: *mut SockAddr, err: Err) -> Status;
    /// Subscribes to device events.
    device_events: fn(d: *const RawDevice, out: *mut *mut RawDeviceEvents, err: Err) -> Status;

    /// Releases a PD.
    pd_free: fn(pd: *mut RawPd);
    /// Allocates and registers memory; `info.ptr` says where the program may reach it, or 0.
    pd_register: fn(pd: *const RawPd, len: usize, access: u32, out: *mut *mut RawMr, info: *mut MrInfo, err: Err) -> Status;
    /// Creates a QP; its number goes to `qp_num`, the sizes it was granted (at least those
    /// asked for) to `granted`.
    pd_create_qp: fn(pd: *const RawPd, send_cq: *const RawCq, recv_cq: *const RawCq, init: *const QpInit, out: *mut *mut RawQp, qp_num: *mut u32, granted: *mut QpInit, err: Err) -> Status;
    /// Destroys a PD.
    pd_destroy: fn(pd: *const RawPd, err: Err) -> Status;

    /// Releases an MR.
    mr_free: fn(mr: *mut RawMr);
    /// Copies `len` bytes from `src` into the MR at `offset`.
    mr_write: fn(mr: *const RawMr, offset: usize, src: *const u8, len: usize, err: Err) -> Status;
    /// Copies `len` bytes from the MR at `offset` into `dst`.
    mr_read: fn(mr: *const RawMr, offset: usize, dst: *mut u8, len: usize, err: Err) -> Status;
    /// Destroys an MR. Once it returned [`STATUS_OK`] the plugin and its device never touch
    /// the region's memory again (a WR still posted with its keys fails instead).
    mr_destroy: fn(mr: *const RawMr, err: Err) -> Status;

    /// Releases a CQ.
    cq_free: fn(cq: *mut RawCq);
    /// Polls up to `capacity` completions into `out`, oldest first, and returns how many, or
    /// a negated status. `out` may be uninitialised; the plugin writes the completions it
    /// counts, and past them nothing but zeros (it may clear entries; it returns at most 64).
    cq_poll: fn(cq: *const RawCq, out: *mut Completion, capacity: usize, err: Err) -> PollResult;
    /// Like `cq_poll`, waiting up to `timeout_ns` for the first.
    cq_wait: fn(cq: *const RawCq, out: *mut Completion, capacity: usize, timeout_ns: u64, err: Err) -> PollResult;
    /// Destroys a CQ.
    cq_destroy: fn(cq: *const RawCq, err: Err) -> Status;

    /// Releases a QP.
    qp_free: fn(qp: *mut RawQp);
    /// The QP's state code.
    qp_state: fn(qp: *const RawQp, state: *mut u32, err: Err) -> Status;
    /// Moves the QP to a state.
    qp_modify: fn(qp: *const RawQp, state: u32, err: Err) -> Status;
    /// Posts send WRs: all of them, or on failure the ones `fail` counts.
    qp_post_send: fn(qp: *const RawQp, wrs: *const SendWr, count: usize, fail: *mut PostFailure) -> Status;
    /// Posts receive WRs: all of them, or on failure the ones `fail` counts.
    qp_post_recv: fn(qp: *const RawQp, wrs: *const RecvWr, count: usize, fail: *mut PostFailure) -> Status;
    /// Starts connecting.
    qp_connect: fn(qp: *const RawQp, remote: *const SockAddr, params: *const ConnParams, err: Err) -> Status;
    /// Waits for the connection. When the peer rejected it (`ConnectionRefused`), `out` holds
    /// the reject's private data, at most
    /// [`MAX_REJECT_PRIVATE_DATA`](crate::MAX_REJECT_PRIVATE_DATA) bytes — written whenever
    /// the peer rejected, with 0 bytes too; a refusal without a rejection (nobody listening)
    /// leaves `out` untouched.
    qp_wait_connected: fn(qp: *const RawQp, timeout_ns: u64, out: *mut Connection, err: Err) -> Status;
    /// Drains.
    qp_drain: fn(qp: *const RawQp, timeout_ns: u64, out: *mut DrainReport, err: Err) -> Status;
    /// Ends the QP's connection (see [`QueuePair::disconnect`](crate::QueuePair::disconnect)).
    qp_disconnect: fn(qp: *const RawQp, timeout_ns: u64, out: *mut DisconnectReport, err: Err) -> Status;
    /// Destroys a QP.
    qp_destroy: fn(qp: *const RawQp, err: Err) -> Status;

    /// Releases a listener.
    listener_free: fn(l: *mut RawListener);
    /// Waits for the next connection request.
    listener_next_request: fn(l: *const RawListener, timeout_ns: u64, out: *mut ConnectRequest, err: Err) -> Status;
    /// Accepts a request onto a QP.
    listener_accept: fn(l: *const RawListener, request: *const ConnectRequest, qp: *const RawQp, params: *const ConnParams, err: Err) -> Status;
    /// Rejects a request.
    listener_reject: fn(l: *const RawListener, request: *const ConnectRequest, private_data: Bytes, err: Err) -> Status;

    /// Releases a device event stream.
    device_events_free: fn(s: *mut RawDeviceEvents);
    /// Waits for the next device event.
    device_events_recv: fn(s: *const RawDeviceEvents, timeout_ns: u64, out: *mut DeviceEvent, err: Err) -> Status;
    /// Releases a monitor stream.
    monitor_events_free: fn(s: *mut RawMonitorEvents);
    /// Waits for the next monitor event and hands it to `sink`.
    monitor_events_recv: fn(s: *const RawMonitorEvents, timeout_ns: u64, sink: Sink<MonitorEvent>, err: Err) -> Status;
    /// The objects of the device named `name` not yet released, into `out` (see
    /// [`Provider::held_objects`](crate::Provider::held_objects)).
    provider_held_objects: fn(p: *const RawProvider, name: Bytes, out: *mut HeldObjects, err: Err) -> Status;

    /// Creates a completion channel (see [`CompletionChannel`](crate::CompletionChannel)); its
    /// file descriptor goes to `fd`: open, and the same, as long as the channel's handle is
    /// not released. The program never reads or closes it: the loader duplicates it (which proves
    /// it open) and watches its own copy.
    device_create_channel: fn(d: *const RawDevice, out: *mut *mut RawChannel, fd: *mut i32, err: Err) -> Status;
    /// Creates a CQ as `device_create_cq` does, on `channel` (a channel of the same device).
    device_create_cq_on: fn(d: *const RawDevice, depth: u32, channel: *const RawChannel, out: *mut *mut RawCq, info: *mut CqInfo, err: Err) -> Status;
    /// Arms a CQ (see [`CompletionQueue::arm`](crate::CompletionQueue::arm));
    /// `solicited_only` is 0 or 1.
    cq_arm: fn(cq: *const RawCq, solicited_only: u32, err: Err) -> Status;
    /// Releases a completion channel.
    channel_free: fn(ch: *mut RawChannel);
    /// The channel's next notification, without blocking: `fired` 1 and the number of the CQ
    /// (one created on this channel) in `cq_num`, or `fired` 0 when there is none.
    channel_next: fn(ch: *const RawChannel, fired: *mut u32, cq_num: *mut u32, err: Err) -> Status;
    /// Destroys a completion channel.
    channel_destroy: fn(ch: *const RawChannel, err: Err) -> Status;
    /// Registers `len` bytes of the program's memory at `addr` (see
    /// [`ProtectionDomain::register_memory`](crate::ProtectionDomain::register_memory)): the
    /// program keeps it allocated and out of the device's way until `mr_destroy` returned
    /// [`STATUS_OK`] for the region, after which the plugin and its device never touch it
    /// again. `info` reports `addr` as both `addr` and `ptr`.
    pd_register_memory: fn(pd: *const RawPd, addr: *mut u8, len: usize, access: u32, out: *mut *mut RawMr, info: *mut MrInfo, err: Err) -> Status;
    }
    added {
    }
}

// SAFETY: the table is immutable static data: function pointers and pointers to static,
// NUL-terminated strings that are never written.
unsafe impl Sync for ProviderTable {}
// SAFETY: as for `Sync`.
unsafe impl Send for ProviderTable {}
