//! The C ABI between a provider plugin and the loader: plain `#[repr(C)]` data and one table of
//! function pointers.
//!
//! # Rules
//!
//! - **Entry symbol.** A plugin file `lib<crate>.so` exports
//!   `anyverbs_provider_v<MAJOR>_<crate>` (see [`entry_symbol`]), an `extern "C" fn() -> *const
//!   ProviderTable`. The ABI major is in the symbol, as rdma-core puts it in
//!   `verbs_register_driver_<N>`; the crate name is there too, so that two providers linked into
//!   one program (a test binary) never define the same symbol — with one shared name the linker
//!   silently keeps one of them.
//! - **Versions.** The table starts with a [`TableHeader`] whose layout never changes: ABI
//!   major, ABI minor and the table's size in bytes. A major change may change anything after
//!   the header; a minor change only appends fields, so a loader reads a field only if the
//!   plugin's table is long enough to hold it ([`MIN_TABLE_SIZE`] is the size of a 3.0 table),
//!   and a plugin of a lower minor still loads, lacking what was added since (3.1 added
//!   `provider_held_objects`).
//! - **Plain data only.** Integers, `#[repr(C)]` structs, raw pointers, and enums as integers;
//!   a value the reader does not know is an error, never undefined behaviour. Strings are UTF-8
//!   as pointer and length, not NUL-terminated (except the table's two static names).
//! - **Ownership.** Whoever allocates frees. Handles are allocated by the plugin and released
//!   with the matching `*_free` function; everything passed into a call is borrowed for the
//!   call; variable-length results are handed to a caller's *sink* callback and borrowed only
//!   for the callback; fixed-size results are written into the caller's memory; completion
//!   buffers are the caller's.
//! - **Errors.** Every fallible function returns a [`Status`]: [`STATUS_OK`] or the code of an
//!   [`ErrorKind`] (see [`error_kind_code`]), and writes the message into the caller's
//!   [`ErrorBuf`]. The data path follows verbs: a poll returns its count of completions, or a
//!   negated status ([`PollResult`], as `ibv_poll_cq` returns a count or a negated errno); a
//!   post that fails says how many of its WRs were posted in a [`PostFailure`] (as
//!   `ibv_post_send` points `bad_wr` at the first WR not posted) and writes nothing when it
//!   succeeds, all WRs being posted then. Nothing is written on the data path's success, so
//!   nothing is checked then either.
//! - **No unwinding.** A panic inside a plugin is caught at the boundary and returned as an
//!   error of kind [`ErrorKind::Other`].
//! - **Deadlines** cross as nanoseconds from the call (`timeout_ns`), since an `Instant` means
//!   nothing outside the program that made it.
//! - **Limits.** Every pointer and length a plugin returns is checked against a documented limit
//!   before it is read, and every value against what was asked: a device name is 1 to
//!   [`DEVICE_NAME_MAX`] bytes of UTF-8 without control characters, a provider name at most
//!   [`PROVIDER_NAME_MAX`], the table's two strings at most [`TABLE_STRING_MAX`] bytes inside the
//!   plugin's loaded image, a port has at most [`PORT_ADDRESSES_MAX`] addresses, a listing at
//!   most [`DEVICES_MAX`] devices and [`PORTS_MAX`] ports, private data at most the CM's
//!   [`MAX_CONNECT_PRIVATE_DATA`](crate::MAX_CONNECT_PRIVATE_DATA) bytes in a request and
//!   [`MAX_ACCEPT_PRIVATE_DATA`](crate::MAX_ACCEPT_PRIVATE_DATA) in an accept, a QP number 1 to
//!   [`QP_NUM_MAX`]; a CQ holds at least what was asked, a memory region is exactly what was
//!   asked, a drain accounts for no more WRs than the QP's queues hold. The loader refuses
//!   anything else as an error of kind [`ErrorKind::Other`] whose source is a
//!   [`PluginFault`](super::PluginFault) naming the plugin, the call and the field; a device
//!   listing keeps its good entries and reports each refused one, and an event stream reports
//!   a refused event as missed and goes on.
//! - **The data path is not copied.** [`SendWr`], [`RecvWr`] and [`Completion`] have the layout
//!   of the crate's own types, so WRs and completion buffers cross as they are. The plugin side
//!   checks every field a caller could get wrong (opcode, flags, a null or misaligned scatter
//!   list; a null list is empty with a count of 0 and the WR's own `sge` with a count of 1)
//!   before it uses the WRs as Rust's own, and refuses the first bad WR of a batch with the
//!   exact count of WRs posted before it. A completion buffer may be uninitialised: the plugin
//!   clears the entries it hands its provider (64 at most a call), and the loader turns a
//!   status or opcode the plugin wrote that no ABI version defines into a general error in
//!   place, keeping the `wr_id`. Past the completions it counts, a plugin writes nothing but
//!   zeros (an all-zero completion is valid): the loader checks the entries counted on every
//!   poll, but not those past them — a check of every entry of the buffer on every poll would
//!   cost more than the crossing — so a plugin that leaves anything else there (say, raw
//!   provider codes it filtered out) breaks the ABI in memory the program owns.

use std::ffi::{c_char, c_void};

use crate::error::ErrorKind;
/// The SGE crosses as it is: `#[repr(C)]`, the layout of `struct ibv_sge`.
pub use crate::wr::Sge;

/// The ABI major version this crate implements. Loader and plugin must agree on it.
pub const ABI_MAJOR: u16 = 3;
/// The ABI minor version this crate implements; a plugin with a lower minor still loads.
pub const ABI_MINOR: u16 = 1;

/// The prefix of every entry symbol, before the ABI major.
pub const ENTRY_SYMBOL_PREFIX: &str = "anyverbs_provider_v";

/// The entry symbol a plugin built from crate `crate_name` (as in `CARGO_CRATE_NAME`, which is
/// also the file name's stem after `lib`) exports for ABI `major`.
pub fn entry_symbol(major: u16, crate_name: &str) -> String {
    format!("{ENTRY_SYMBOL_PREFIX}{major}_{crate_name}")
}

/// The type of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const ProviderTable;

/// The result of a fallible ABI call: [`STATUS_OK`], or an error kind's code.
pub type Status = u32;

/// Success.
pub const STATUS_OK: Status = 0;

/// Every [`ErrorKind`] with its ABI code. Codes are never reused.
const ERROR_KIND_CODES: [(ErrorKind, Status); 15] = [
    (ErrorKind::InvalidArgument, 1),
    (ErrorKind::InvalidState, 2),
    (ErrorKind::NotSupported, 3),
    (ErrorKind::NotFound, 4),
    (ErrorKind::ResourceExhausted, 5),
    (ErrorKind::Busy, 6),
    (ErrorKind::Destroyed, 7),
    (ErrorKind::DeviceLost, 8),
    (ErrorKind::TimedOut, 9),
    (ErrorKind::ConnectionRefused, 10),
    (ErrorKind::Unreachable, 11),
    (ErrorKind::AddressInUse, 12),
    (ErrorKind::Overflow, 13),
    (ErrorKind::RemoteFailure, 14),
    (ErrorKind::Other, 15),
];

/// The ABI code of an error kind (never [`STATUS_OK`]).
pub fn error_kind_code(kind: ErrorKind) -> Status {
    ERROR_KIND_CODES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(15, |(_, code)| *code)
}

/// The error kind of an ABI code; `None` for [`STATUS_OK`] and unknown codes.
pub fn error_kind_from_code(code: Status) -> Option<ErrorKind> {
    ERROR_KIND_CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(k, _)| *k)
}

/// Longest error message the ABI carries, in bytes; longer ones are cut at a character boundary.
pub const ERROR_MESSAGE_MAX: usize = 480;

/// Longest device name the ABI carries, in bytes: the kernel's `IB_DEVICE_NAME_MAX` (64) less its
/// terminating NUL. A device name is 1 to this many bytes of UTF-8 without control characters.
pub const DEVICE_NAME_MAX: usize = 63;

/// Longest provider name (`provider_name`), in bytes, with the rules of a device name.
pub const PROVIDER_NAME_MAX: usize = 64;

/// Longest string of the table's header (`ProviderTable::name` and `version`), in bytes with its
/// terminating NUL. Each must lie in memory the plugin's file maps.
pub const TABLE_STRING_MAX: usize = 128;

/// Most addresses one port may report.
pub const PORT_ADDRESSES_MAX: usize = 1024;

/// Most devices one `provider_devices` call may report.
pub const DEVICES_MAX: usize = 4096;

/// Most ports one device may report: port numbers are 1 to 255.
pub const PORTS_MAX: usize = 255;

/// Largest QP number: QP numbers are 24 bits on InfiniBand and iWARP, and 0 is never an RC QP.
pub const QP_NUM_MAX: u32 = 0x00ff_ffff;

/// The caller's buffer for an error message.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ErrorBuf {
    /// Bytes of `message` in use.
    pub len: u32,
    /// UTF-8 text.
    pub message: [u8; ERROR_MESSAGE_MAX],
}

impl Default for ErrorBuf {
    fn default() -> Self {
        ErrorBuf::ZERO
    }
}

impl ErrorBuf {
    /// An empty buffer, every byte zero.
    pub const ZERO: ErrorBuf = ErrorBuf {
        len: 0,
        message: [0; ERROR_MESSAGE_MAX],
    };

    /// Stores `text`, cut to fit at a character boundary.
    pub fn set(&mut self, text: &str) {
        let mut end = text.len().min(ERROR_MESSAGE_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.message[..end].copy_from_slice(&text.as_bytes()[..end]);
        self.len = end as u32;
    }

    /// The stored message bytes: as many as `len` says, at most the buffer's size.
    pub fn bytes(&self) -> &[u8] {
        &self.message[..(self.len as usize).min(ERROR_MESSAGE_MAX)]
    }

    /// The stored text; invalid UTF-8 is replaced, a bad length is clamped.
    pub fn text(&self) -> String {
        let len = (self.len as usize).min(ERROR_MESSAGE_MAX);
        String::from_utf8_lossy(&self.message[..len]).into_owned()
    }
}

/// Writes `text` into the buffer at `buf`, cut to fit at a character boundary, through raw
/// pointers only: the caller's buffer may be uninitialised apart from `len` (the loader does not
/// clear 480 bytes on every call), and no reference to it is made.
///
/// # Safety
/// `buf` must be valid for writes of an `ErrorBuf`.
pub unsafe fn write_error(buf: *mut ErrorBuf, text: &str) {
    let mut end = text.len().min(ERROR_MESSAGE_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: `buf` is writable (the caller's guarantee) and `end <= ERROR_MESSAGE_MAX`, the
    // length of `message`; the bytes are written before `len` announces them.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), (&raw mut (*buf).message).cast::<u8>(), end);
        (&raw mut (*buf).len).write(end as u32);
    }
}

/// What a post that failed reports, as `ibv_post_send`'s `bad_wr` does: how many of its WRs
/// were posted (those before the refused one), and why the next was not. Written only when the
/// post fails.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PostFailure {
    /// WRs posted before the failure.
    pub accepted: usize,
    /// Why the WR after them was not.
    pub error: ErrorBuf,
}

impl PostFailure {
    /// Nothing accepted, no message, every byte zero.
    pub const ZERO: PostFailure = PostFailure {
        accepted: 0,
        error: ErrorBuf::ZERO,
    };
}

/// The result of a poll: the count of completions written (`>= 0`), or a negated [`Status`]
/// (`< 0`), as `ibv_poll_cq` returns a count or a negated errno.
pub type PollResult = isize;

/// The layout every table starts with, the same in every ABI major.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableHeader {
    /// [`ABI_MAJOR`] of the plugin.
    pub abi_major: u16,
    /// [`ABI_MINOR`] of the plugin.
    pub abi_minor: u16,
    /// `size_of` the plugin's whole table, in bytes.
    pub table_size: u32,
}

/// A borrowed UTF-8 string or byte string: pointer and length. `ptr` may be null when `len`
/// is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Bytes {
    /// Borrows `b`.
    pub fn new(b: &[u8]) -> Self {
        Bytes {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }
}

/// Opaque handle types: each is only ever used behind a pointer.
macro_rules! opaque {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[repr(C)]
        pub struct $name {
            _opaque: [u8; 0],
        }
    )*};
}

opaque! {
    /// A provider instance.
    RawProvider;
    /// An open device.
    RawDevice;
    /// A protection domain.
    RawPd;
    /// A memory region.
    RawMr;
    /// A completion queue.
    RawCq;
    /// A queue pair.
    RawQp;
    /// A listener.
    RawListener;
    /// A stream of device events.
    RawDeviceEvents;
    /// A stream of monitor events.
    RawMonitorEvents;
}

/// An IPv4 or IPv6 socket address (an IP address alone has port 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SockAddr {
    /// 4 or 6.
    pub family: u8,
    /// Port, in host order.
    pub port: u16,
    /// IPv6 flow information.
    pub flowinfo: u32,
    /// IPv6 scope id.
    pub scope_id: u32,
    /// The address: IPv4 in the first 4 bytes, IPv6 in all 16.
    pub addr: [u8; 16],
}

/// A device's identity (see [`DeviceIdentity`](crate::DeviceIdentity)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Device name.
    pub name: Bytes,
    /// Kernel index.
    pub index: u32,
    /// Vendor id.
    pub vendor_id: u32,
    /// Vendor part id.
    pub vendor_part_id: u32,
    /// 1 if `pci_*` hold a PCI address.
    pub has_pci: u8,
    /// PCI bus.
    pub pci_bus: u8,
    /// PCI device.
    pub pci_device: u8,
    /// PCI function.
    pub pci_function: u8,
    /// PCI domain.
    pub pci_domain: u32,
    /// Node GUID.
    pub node_guid: u64,
    /// System-image GUID.
    pub sys_image_guid: u64,
}

/// A device's numeric limits (see [`DeviceLimits`](crate::DeviceLimits)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct Limits {
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_mr_size: u64,
    pub max_pd: u32,
    pub max_inline_data: u32,
    pub max_msg_size: u32,
}

/// What a provider says about a device (see [`DeviceInfo`](crate::DeviceInfo)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfo {
    /// Identity.
    pub identity: Identity,
    /// [`Transport`](crate::Transport) code: 1 InfiniBand, 2 iWARP, 3 mock.
    pub transport: u32,
    /// [`StateModel`](crate::StateModel) code: 1 InfiniBand, 2 iWARP.
    pub state_model: u32,
    /// [`Caps`](crate::Caps) bits.
    pub caps: u64,
    /// Limits.
    pub limits: Limits,
}

/// A port (see [`PortInfo`](crate::PortInfo)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PortInfo {
    /// Port number.
    pub number: u8,
    /// [`PortState`](crate::PortState) code: 1 down, 2 initializing, 3 active.
    pub state: u32,
    /// [`LinkLayer`](crate::LinkLayer) code: 1 InfiniBand, 2 Ethernet, 3 virtual.
    pub link_layer: u32,
    /// The port's IP addresses (port 0).
    pub addresses: *const SockAddr,
    /// How many.
    pub address_count: usize,
}

/// A caller's callback that receives items one at a time; `item` is borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Sink<T> {
    /// The caller's state.
    pub ctx: *mut c_void,
    /// Receives one item.
    pub put: unsafe extern "C" fn(ctx: *mut c_void, item: *const T),
}

/// A send work request: the layout of [`SendWr`](crate::SendWr), which crosses as it is. The
/// SGEs are [`Sge`] itself (the layout of `struct ibv_sge`).
///
/// The scatter list is `sge_count` SGEs at `sgl`, except that a null `sgl` is an empty list
/// when `sge_count` is 0 and the one SGE `sge` (in the WR itself) when it is 1.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SendWr {
    /// The ULP's identifier.
    pub wr_id: u64,
    /// The scatter/gather list, or null (see the type's documentation).
    pub sgl: *const Sge,
    /// Its length.
    pub sge_count: usize,
    /// The one SGE of a list whose `sgl` is null and `sge_count` 1; otherwise unused.
    pub sge: Sge,
    /// Remote address of WRITE and READ.
    pub remote_addr: u64,
    /// Remote key of WRITE and READ.
    pub rkey: u32,
    /// Immediate data of the `with immediate` operations.
    pub imm_data: u32,
    /// Operation: 1 SEND, 2 SEND with immediate, 3 WRITE, 4 WRITE with immediate, 5 READ;
    /// anything else is refused.
    pub opcode: u32,
    /// [`SendFlags`](crate::SendFlags) bits; an unknown bit is refused.
    pub flags: u32,
}

/// A receive work request: the layout of [`RecvWr`](crate::RecvWr); its scatter list is given
/// as a [`SendWr`]'s.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RecvWr {
    /// The ULP's identifier.
    pub wr_id: u64,
    /// The scatter/gather list, or null.
    pub sgl: *const Sge,
    /// Its length.
    pub sge_count: usize,
    /// The one SGE of a list whose `sgl` is null and `sge_count` 1; otherwise unused.
    pub sge: Sge,
}

/// A completion: the layout of [`Completion`](crate::Completion), which the plugin writes
/// straight into the caller's buffer. All zeros is a valid completion.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Completion {
    /// The WR's identifier.
    pub wr_id: u64,
    /// [`WcStatus`](crate::WcStatus) code: its discriminant, 0 success to 11 general error.
    pub status: u32,
    /// [`WcOpcode`](crate::WcOpcode) code: its discriminant, 0 SEND to 4 receive of a WRITE
    /// with immediate.
    pub opcode: u32,
    /// Bytes transferred.
    pub byte_len: u32,
    /// Immediate data.
    pub imm_data: u32,
    /// [`WcFlags`](crate::WcFlags) bits (1: `imm_data` is present).
    pub flags: u32,
    /// QP number.
    pub qp_num: u32,
    /// Vendor error.
    pub vendor_err: u32,
}

impl Completion {
    /// All zeros: a valid completion (success, SEND, no flags).
    pub const ZERO: Completion = Completion {
        wr_id: 0,
        status: 0,
        opcode: 0,
        byte_len: 0,
        imm_data: 0,
        flags: 0,
        qp_num: 0,
        vendor_err: 0,
    };
}

/// The data path's types cross the ABI as they are, so their layouts must be the ABI's, field
/// by field; a change to either breaks the build here.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    type CoreSend = crate::wr::SendWr<'static>;
    type CoreRecv = crate::wr::RecvWr<'static>;
    type CoreWc = crate::wr::Completion;
    assert!(size_of::<SendWr>() == size_of::<CoreSend>());
    assert!(align_of::<SendWr>() == align_of::<CoreSend>());
    assert!(offset_of!(SendWr, wr_id) == offset_of!(CoreSend, wr_id));
    assert!(offset_of!(SendWr, sgl) == offset_of!(CoreSend, sgl));
    assert!(offset_of!(SendWr, sge_count) == offset_of!(CoreSend, sgl) + size_of::<usize>());
    assert!(offset_of!(SendWr, sge) == offset_of!(CoreSend, sgl) + 2 * size_of::<usize>());
    assert!(size_of::<crate::wr::SgRef<'static>>() == 2 * size_of::<usize>() + size_of::<Sge>());
    assert!(offset_of!(SendWr, remote_addr) == offset_of!(CoreSend, remote_addr));
    assert!(offset_of!(SendWr, rkey) == offset_of!(CoreSend, rkey));
    assert!(offset_of!(SendWr, imm_data) == offset_of!(CoreSend, imm_data));
    assert!(offset_of!(SendWr, opcode) == offset_of!(CoreSend, opcode));
    assert!(offset_of!(SendWr, flags) == offset_of!(CoreSend, flags));
    assert!(size_of::<RecvWr>() == size_of::<CoreRecv>());
    assert!(align_of::<RecvWr>() == align_of::<CoreRecv>());
    assert!(offset_of!(RecvWr, wr_id) == offset_of!(CoreRecv, wr_id));
    assert!(offset_of!(RecvWr, sgl) == offset_of!(CoreRecv, sgl));
    assert!(offset_of!(RecvWr, sge_count) == offset_of!(CoreRecv, sgl) + size_of::<usize>());
    assert!(offset_of!(RecvWr, sge) == offset_of!(CoreRecv, sgl) + 2 * size_of::<usize>());
    assert!(size_of::<Completion>() == size_of::<CoreWc>());
    assert!(align_of::<Completion>() == align_of::<CoreWc>());
    assert!(offset_of!(Completion, wr_id) == offset_of!(CoreWc, wr_id));
    assert!(offset_of!(Completion, status) == offset_of!(CoreWc, status));
    assert!(offset_of!(Completion, opcode) == offset_of!(CoreWc, opcode));
    assert!(offset_of!(Completion, byte_len) == offset_of!(CoreWc, byte_len));
    assert!(offset_of!(Completion, imm_data) == offset_of!(CoreWc, imm_data));
    assert!(offset_of!(Completion, flags) == offset_of!(CoreWc, flags));
    assert!(offset_of!(Completion, qp_num) == offset_of!(CoreWc, qp_num));
    assert!(offset_of!(Completion, vendor_err) == offset_of!(CoreWc, vendor_err));
};

/// QP sizes (see [`QpInit`](crate::QpInit)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct QpInit {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// What a new memory region looks like.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MrInfo {
    /// Address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// Local key.
    pub lkey: u32,
    /// Remote key.
    pub rkey: u32,
    /// [`Access`](crate::Access) bits.
    pub access: u32,
}

/// What a new completion queue looks like.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CqInfo {
    /// CQ number.
    pub cq_num: u32,
    /// Capacity.
    pub capacity: u32,
}

/// Connection parameters (see [`ConnParams`](crate::ConnParams)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnParams {
    /// Private data.
    pub private_data: Bytes,
    /// Transport retries.
    pub retry_count: u8,
    /// RNR retries.
    pub rnr_retry_count: u8,
}

/// Most private data bytes the ABI's fixed-size results carry (more than any CM message holds).
pub const PRIVATE_DATA_MAX: usize = 256;

/// A connection request (see [`ConnectRequest`](crate::ConnectRequest)), returned by
/// `listener_next_request` and passed back to accept or reject.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest {
    /// Request id.
    pub id: u64,
    /// The requester.
    pub peer: SockAddr,
    /// Bytes of `private_data` in use.
    pub private_len: u32,
    /// Private data.
    pub private_data: [u8; PRIVATE_DATA_MAX],
}

/// An established connection (see [`Connection`](crate::Connection)).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The peer.
    pub peer: SockAddr,
    /// The peer's QP number.
    pub peer_qp_num: u32,
    /// Bytes of `private_data` in use.
    pub private_len: u32,
    /// Private data.
    pub private_data: [u8; PRIVATE_DATA_MAX],
}

/// What a drain did (see [`DrainReport`](crate::DrainReport)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DrainReport {
    /// [`DrainStrategy`](crate::DrainStrategy) code.
    pub strategy: u32,
    /// 0 no fallback, 1 deadline passed, 2 a step failed.
    pub fallback: u32,
    /// The error kind code of a failed step.
    pub fallback_kind: u32,
    /// WRs the device completed.
    pub completed_by_device: u64,
    /// WRs synthesized.
    pub synthesized: u64,
    /// Nanoseconds the drain took.
    pub elapsed_ns: u64,
}

/// A device event (see [`DeviceEvent`](crate::DeviceEvent)); `kind` 0 means `missed` events
/// were dropped.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceEvent {
    /// Event code (see `convert`); 0 for missed events.
    pub kind: u32,
    /// Port of port events.
    pub port: u8,
    /// QP number of QP events, CQ number of CQ events.
    pub number: u32,
    /// Events dropped, when `kind` is 0.
    pub missed: u64,
}

/// A monitor event (see [`MonitorEvent`](crate::MonitorEvent)), handed to a sink; `kind` 0 means
/// `missed` events were dropped.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MonitorEvent {
    /// 0 missed, 1 added (`info`), 2 removed (`info.identity`).
    pub kind: u32,
    /// The device added, or (identity only) removed.
    pub info: DeviceInfo,
    /// Events dropped, when `kind` is 0.
    pub missed: u64,
}

/// A fault to inject (see [`Fault`](crate::Fault)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Fault {
    /// Fault code (see `convert`).
    pub kind: u32,
    /// Port of a port flap.
    pub port: u8,
    /// QP number of QP faults.
    pub qp_num: u32,
    /// Down time of a reset or port flap, in nanoseconds.
    pub down_for_ns: u64,
}

/// What a process still holds of a device (see [`HeldObjects`](crate::HeldObjects)).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct HeldObjects {
    pub devices: u32,
    pub pds: u32,
    pub mrs: u32,
    pub cqs: u32,
    pub qps: u32,
    pub listeners: u32,
}

/// Shorthand for the error-buffer argument.
type Err = *mut ErrorBuf;

/// Declares the table's fields: every function is optional at the type level (`Option` of a
/// function pointer is a nullable C function pointer). The functions of ABI 3.0 are required:
/// the loader refuses a table with one of them null. The functions a minor version added
/// (`added`, each with the minor that added it) are optional: the loader reads one only if the
/// plugin's table is long enough to hold it, and a program sees a null or missing one as
/// [`ErrorKind::NotSupported`].
macro_rules! table {
    (
        required { $($(#[$doc:meta])* $field:ident: fn($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)* }
        added { $($(#[$adoc:meta])* $minor:literal $afield:ident: fn($($aarg:ident: $aty:ty),*) $(-> $aret:ty)?;)* }
    ) => {
        /// The function table of ABI 3.1. See the [module documentation](self) for the rules.
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

        /// The size of a table of ABI 3.0, the smallest this major allows: the offset of the
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
    /// Registers memory.
    pd_register: fn(pd: *const RawPd, len: usize, access: u32, out: *mut *mut RawMr, info: *mut MrInfo, err: Err) -> Status;
    /// Creates a QP; its number goes to `qp_num`.
    pd_create_qp: fn(pd: *const RawPd, send_cq: *const RawCq, recv_cq: *const RawCq, init: *const QpInit, out: *mut *mut RawQp, qp_num: *mut u32, err: Err) -> Status;
    /// Destroys a PD.
    pd_destroy: fn(pd: *const RawPd, err: Err) -> Status;

    /// Releases an MR.
    mr_free: fn(mr: *mut RawMr);
    /// Copies `len` bytes from `src` into the MR at `offset`.
    mr_write: fn(mr: *const RawMr, offset: usize, src: *const u8, len: usize, err: Err) -> Status;
    /// Copies `len` bytes from the MR at `offset` into `dst`.
    mr_read: fn(mr: *const RawMr, offset: usize, dst: *mut u8, len: usize, err: Err) -> Status;
    /// Destroys an MR.
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
    /// Waits for the connection.
    qp_wait_connected: fn(qp: *const RawQp, timeout_ns: u64, out: *mut Connection, err: Err) -> Status;
    /// Drains.
    qp_drain: fn(qp: *const RawQp, timeout_ns: u64, out: *mut DrainReport, err: Err) -> Status;
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
    }
    added {
    /// Since 3.1: the objects of the device named `name` not yet released, into `out` (see
    /// [`Provider::held_objects`](crate::Provider::held_objects)).
    1 provider_held_objects: fn(p: *const RawProvider, name: Bytes, out: *mut HeldObjects, err: Err) -> Status;
    }
}

// SAFETY: the table is immutable static data: function pointers and pointers to static,
// NUL-terminated strings that are never written.
unsafe impl Sync for ProviderTable {}
// SAFETY: as for `Sync`.
unsafe impl Send for ProviderTable {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_distinct_code_that_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for (kind, code) in ERROR_KIND_CODES {
            assert_ne!(code, STATUS_OK);
            assert!(seen.insert(code), "code {code} used twice");
            assert_eq!(error_kind_code(kind), code);
            assert_eq!(error_kind_from_code(code), Some(kind));
        }
        assert_eq!(error_kind_from_code(STATUS_OK), None);
        assert_eq!(error_kind_from_code(999), None);
    }

    #[test]
    fn error_buffer_cuts_long_messages_at_a_character_boundary() {
        let mut buf = ErrorBuf::default();
        let long = "é".repeat(ERROR_MESSAGE_MAX);
        buf.set(&long);
        let text = buf.text();
        assert!(text.len() <= ERROR_MESSAGE_MAX);
        assert!(text.chars().all(|c| c == 'é'));
        buf.set("short");
        assert_eq!(buf.text(), "short");
    }

    #[test]
    fn entry_symbol_names_major_and_crate() {
        assert_eq!(
            entry_symbol(ABI_MAJOR, "anyverbs_provider_mock"),
            "anyverbs_provider_v3_anyverbs_provider_mock"
        );
        // `export_provider!` spells the major in a literal (`concat!` takes no constants):
        // change both together.
        assert!(include_str!("mod.rs").contains("\"anyverbs_provider_v3_\""));
    }
}
