//! Checking a plugin's table before anything in it is used: the header, the function entries,
//! and the two strings, which are read only within the plugin's loaded image and a bound.

use std::ffi::c_char;
use std::path::Path;

use super::{LoadError, Loaded};
use crate::error::ErrorKind;
use crate::plugin::abi::{self, ABI_MAJOR, ABI_MINOR, ProviderTable, TABLE_STRING_MAX};
use crate::plugin::convert;

/// The header of the table at `table`, once the pointer is checked: not null, aligned as a
/// table, and (on Linux) the header lying in readable memory of a loaded object.
pub(super) fn header(
    table: *const ProviderTable,
    path: &Path,
) -> Result<abi::TableHeader, LoadError> {
    if table.is_null() {
        return Err(LoadError::NullTable {
            path: path.to_path_buf(),
        });
    }
    readable_table(table, size_of::<abi::TableHeader>(), path)?;
    // SAFETY: every table of every ABI major starts with a `TableHeader`, here aligned and
    // readable (checked above).
    Ok(unsafe { table.cast::<abi::TableHeader>().read() })
}

/// Checks that `size` bytes of the table at `table` can be read: aligned as a table, and (on
/// Linux) within one readable loaded segment, so that a wild table pointer, or a table whose
/// header declares more than there is, is refused rather than read (and its "functions"
/// called).
fn readable_table(table: *const ProviderTable, size: usize, path: &Path) -> Result<(), LoadError> {
    let malformed = |problem: String| LoadError::MalformedTable {
        path: path.to_path_buf(),
        field: "address",
        problem,
    };
    if !table.is_aligned() {
        return Err(malformed(format!(
            "{table:p} is not aligned as a table ({} bytes)",
            align_of::<ProviderTable>()
        )));
    }
    match image::readable_from(table.cast()) {
        None => Err(malformed(format!(
            "{table:p} points into no object loaded in this process"
        ))),
        Some(readable) if readable < size => Err(malformed(format!(
            "{size} bytes from {table:p} would run past the end of the memory its object maps \
             there ({readable} bytes)"
        ))),
        Some(_) => Ok(()),
    }
}

/// Checks the header of a table: its major version and that it is long enough for it.
fn check_header(h: abi::TableHeader, path: &Path) -> Result<(), LoadError> {
    if h.abi_major != ABI_MAJOR {
        return Err(LoadError::AbiMismatch {
            path: path.to_path_buf(),
            plugin: (h.abi_major, h.abi_minor),
            loader: (ABI_MAJOR, ABI_MINOR),
        });
    }
    if h.table_size < abi::MIN_TABLE_SIZE {
        return Err(LoadError::TableTooSmall {
            path: path.to_path_buf(),
            size: h.table_size,
            needed: abi::MIN_TABLE_SIZE,
        });
    }
    Ok(())
}

/// Checks the table at `table` (a static table of a plugin, or of this program) and keeps what
/// a plugin needs. Only as much of it is read as its header says it has.
pub(super) fn checked(table: *const ProviderTable, path: &Path) -> Result<Loaded, LoadError> {
    let h = header(table, path)?;
    check_header(h, path)?;
    readable_table(table, h.table_size as usize, path)?;
    // SAFETY: the header says the table is of this major and `table_size` (at least
    // `MIN_TABLE_SIZE`) bytes long; the entry symbol's table is static.
    let functions =
        unsafe { ProviderTable::functions_from(table, h.table_size) }.map_err(|names| {
            LoadError::MissingFunctions {
                path: path.to_path_buf(),
                names,
            }
        })?;
    // SAFETY: the two strings' pointers lie within the first `MIN_TABLE_SIZE` bytes, read
    // through their own places.
    let (name, version) = unsafe {
        (
            (&raw const (*table).name).read(),
            (&raw const (*table).version).read(),
        )
    };
    Ok(Loaded {
        path: path.to_path_buf(),
        functions,
        name: table_string(name, "name", path)?,
        version: table_string(version, "version", path)?,
        abi: (h.abi_major, h.abi_minor),
    })
}

/// One of the table's static strings: NUL-terminated within [`TABLE_STRING_MAX`] bytes, and
/// within a loaded object's readable memory (on Linux, where the loader can tell), so that a
/// string without its NUL, or a wild pointer, is refused rather than read past its end.
fn table_string(ptr: *const c_char, field: &'static str, path: &Path) -> Result<String, LoadError> {
    let malformed = |problem: String| LoadError::MalformedTable {
        path: path.to_path_buf(),
        field,
        problem,
    };
    if ptr.is_null() {
        return Err(malformed("a null pointer".into()));
    }
    let Some(readable) = image::readable_from(ptr.cast()) else {
        return Err(malformed(format!(
            "{ptr:p} points into no object loaded in this process"
        )));
    };
    let len = readable.min(TABLE_STRING_MAX);
    // SAFETY: `len` bytes from `ptr` lie in a readable loaded segment (or, where that cannot be
    // told, the ABI requires a static string there, read no further than its bound).
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let Some(end) = bytes.iter().position(|b| *b == 0) else {
        return Err(malformed(format!("no terminating NUL within {len} bytes")));
    };
    // SAFETY: `bytes[..end]` is a live slice.
    unsafe {
        convert::name(
            abi::Bytes::new(&bytes[..end]),
            field,
            TABLE_STRING_MAX - 1,
            ErrorKind::Other,
        )
    }
    .map_err(|e| malformed(e.message().to_string()))
}

/// Which memory the objects loaded in this process map.
mod image {
    /// How many bytes from `addr` on are mapped, readable, by a loadable segment of an object
    /// loaded in this process (the program, or a shared object), if `addr` lies in one.
    #[cfg(target_os = "linux")]
    pub(super) fn readable_from(addr: *const u8) -> Option<usize> {
        use std::ffi::{c_int, c_void};

        struct Search {
            addr: usize,
            readable: Option<usize>,
        }

        unsafe extern "C" fn visit(
            info: *mut libc::dl_phdr_info,
            _size: libc::size_t,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `data` is the `Search` passed to `dl_iterate_phdr` below, and `info` the
            // dynamic loader's description of one object, valid during the callback; its
            // `dlpi_phdr` points to `dlpi_phnum` program headers.
            let (search, info) = unsafe { (&mut *data.cast::<Search>(), &*info) };
            if info.dlpi_phdr.is_null() {
                return 0;
            }
            // SAFETY: as above.
            let headers =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
            for h in headers {
                if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_R == 0 {
                    continue;
                }
                let start = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
                let Some(end) = start.checked_add(h.p_memsz as usize) else {
                    continue;
                };
                if (start..end).contains(&search.addr) {
                    search.readable = Some(end - search.addr);
                    return 1;
                }
            }
            0
        }

        let mut search = Search {
            addr: addr as usize,
            readable: None,
        };
        // SAFETY: `visit` only reads what the dynamic loader hands it and writes `search`,
        // which outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), (&raw mut search).cast()) };
        search.readable
    }

    /// Where the loader cannot tell which memory is mapped, everything is taken to be: the
    /// table's strings are then read no further than their bound, and the table no further
    /// than its header says.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn readable_from(_addr: *const u8) -> Option<usize> {
        Some(usize::MAX)
    }

    #[cfg(all(test, target_os = "linux"))]
    mod tests {
        use super::readable_from;

        #[test]
        fn static_data_is_found_and_a_wild_pointer_is_not() {
            static TEXT: [u8; 4] = *b"abc\0";
            let readable = readable_from(TEXT.as_ptr()).expect("this program's own data");
            assert!(readable >= 4);
            assert_eq!(readable_from(16 as *const u8), None);
        }
    }
}
