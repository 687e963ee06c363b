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
//!   plugin's table is long enough to hold it ([`MIN_TABLE_SIZE`] is the size of a 4.0 table),
//!   and a plugin of a lower minor still loads, lacking what was added since. (4.0 is the
//!   first version of its major: nothing has been added yet. It changed what crosses on every
//!   path — a send WR's size, the connection parameters, a device's description — so plugins
//!   of 3.x are refused.)
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
//! - **Memory.** A region's memory is the plugin's (`pd_register`) or the program's
//!   (`pd_register_memory`, which also carries the program's buffers lent to regions): either
//!   way it is host memory both sides may address, reported in [`MrInfo::ptr`], and once
//!   `mr_destroy` succeeded the plugin never touches it again. The loader checks a region of
//!   the program's memory to be exactly what was registered — address, pointer, length,
//!   access — and a pointer the plugin reports for its own memory to be non-null and to fit
//!   the address space; it cannot check that the plugin's memory is really there.
//! - **No unwinding.** A panic inside a plugin is caught at the boundary and returned as an
//!   error of kind [`ErrorKind::Other`].
//! - **Deadlines** cross as nanoseconds from the call (`timeout_ns`), since an `Instant` means
//!   nothing outside the program that made it.
//! - **File descriptors** cross as integers: an fd is the process's, so a completion channel's
//!   is handed to the program as it is. The plugin owns it (it stays open until the channel's
//!   handle is released); the loader checks that it is an open descriptor, and that every CQ
//!   number a channel reports is one of a CQ created on that channel.
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

use std::ffi::c_void;

use crate::error::ErrorKind;
/// The SGE crosses as it is: `#[repr(C)]`, the layout of `struct ibv_sge`.
pub use crate::wr::Sge;

/// The ABI major version this crate implements. Loader and plugin must agree on it.
pub const ABI_MAJOR: u16 = 4;
/// The ABI minor version this crate implements; a plugin with a lower minor still loads.
pub const ABI_MINOR: u16 = 0;

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
    /// A completion channel.
    RawChannel;
    /// A stream of device events.
    RawDeviceEvents;
    /// A stream of monitor events.
    RawMonitorEvents;
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

mod control;
mod data_path;
mod table;

pub use control::*;
pub use data_path::*;
pub use table::*;

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
            "anyverbs_provider_v4_anyverbs_provider_mock"
        );
        // `export_provider!` spells the major in a literal (`concat!` takes no constants):
        // change both together.
        assert!(include_str!("../mod.rs").contains("\"anyverbs_provider_v4_\""));
    }
}
