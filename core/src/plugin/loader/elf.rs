//! Reading the ELF header before `dlopen`, for errors that say what is wrong with the file.

use std::path::Path;

use super::LoadError;

/// The ELF machine of this process.
const HOST_MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "x86") {
    3
} else if cfg!(target_arch = "arm") {
    40
} else if cfg!(target_arch = "riscv64") {
    243
} else if cfg!(target_arch = "powerpc64") {
    21
} else if cfg!(target_arch = "s390x") {
    22
} else if cfg!(target_arch = "loongarch64") {
    258
} else {
    0
};

/// A readable name of an ELF machine and class.
fn machine_name(machine: u16, class: u8) -> String {
    let name = match machine {
        62 => "x86_64",
        183 => "aarch64",
        3 => "x86",
        40 => "arm",
        243 if class == 1 => "riscv32",
        243 => "riscv64",
        21 => "powerpc64",
        20 => "powerpc",
        22 => "s390x",
        258 => "loongarch64",
        8 => "mips",
        2 => "sparc",
        43 => "sparc64",
        other => return format!("ELF machine {other} ({}-bit)", bits(class)),
    };
    name.to_string()
}

fn bits(class: u8) -> u32 {
    if class == 1 { 32 } else { 64 }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many there were.
fn read_at(file: &std::fs::File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], offset + read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}

/// Checks that `path` is a complete ELF shared object for this machine: the header, the
/// machine and word size, and that every loadable segment and the section headers lie
/// inside the file. A file cut short (an interrupted copy) would otherwise be mapped past
/// its end by `dlopen`, and the first touch of the missing part kills the process with
/// SIGBUS.
pub(super) fn check(path: &Path) -> Result<(), LoadError> {
    let not_so = |reason: &str| LoadError::NotSharedObject {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let unreadable = |source| LoadError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let file_len = file.metadata().map_err(unreadable)?.len();
    let mut header = [0u8; 64];
    let read = read_at(&file, 0, &mut header).map_err(unreadable)?;
    if read < 4 || header[..4] != *b"\x7fELF" {
        return Err(not_so("it is not an ELF file"));
    }
    let class = header[4];
    let header_len = if class == 1 { 52 } else { 64 };
    if read < header_len {
        return Err(not_so("its ELF header is truncated"));
    }
    let little = match header[5] {
        1 => true,
        2 => false,
        _ => return Err(not_so("its ELF header has an invalid byte order")),
    };
    let int = |bytes: &[u8]| -> u64 {
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            let shift = if little {
                8 * i
            } else {
                8 * (bytes.len() - 1 - i)
            };
            v |= u64::from(*b) << shift;
        }
        v
    };
    let (kind, machine) = (int(&header[16..18]) as u16, int(&header[18..20]) as u16);
    let host_class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let host_little = cfg!(target_endian = "little");
    if machine != HOST_MACHINE || class != host_class || little != host_little {
        let endian = |l: bool| if l { "little-endian" } else { "big-endian" };
        return Err(LoadError::WrongArchitecture {
            path: path.to_path_buf(),
            found: format!("{} ({})", machine_name(machine, class), endian(little)),
            expected: format!(
                "{} ({})",
                machine_name(HOST_MACHINE, host_class),
                endian(host_little)
            ),
        });
    }
    match kind {
        3 => {}
        1 => {
            return Err(not_so(
                "it is a relocatable object file (.o), not a shared object",
            ));
        }
        2 => return Err(not_so("it is an executable, not a shared object")),
        4 => return Err(not_so("it is a core dump")),
        other => return Err(not_so(&format!("its ELF type is {other}"))),
    }
    // Where the program and section header tables are, in the layout of this class.
    let wide = class == 2;
    let (phoff, shoff) = if wide {
        (int(&header[32..40]), int(&header[40..48]))
    } else {
        (int(&header[28..32]), int(&header[32..36]))
    };
    let at = if wide { 54 } else { 42 };
    let (phentsize, phnum, shentsize, shnum) = (
        int(&header[at..at + 2]),
        int(&header[at + 2..at + 4]),
        int(&header[at + 4..at + 6]),
        int(&header[at + 6..at + 8]),
    );
    let cut = || {
        not_so(&format!(
            "it is cut short: {file_len} bytes, less than its ELF headers describe (an \
             interrupted copy?)"
        ))
    };
    let table_end = |off: u64, size: u64, n: u64| off.checked_add(size.checked_mul(n)?);
    match table_end(shoff, shentsize, shnum) {
        Some(end) if end <= file_len => {}
        _ => return Err(cut()),
    }
    let ph_len = match table_end(0, phentsize, phnum) {
        Some(len) if phoff.checked_add(len).is_some_and(|end| end <= file_len) => len,
        _ => return Err(cut()),
    };
    let entry_len = if wide { 56 } else { 32 };
    if phnum > 0 && phentsize < entry_len {
        return Err(not_so("its program headers are malformed"));
    }
    let mut table = vec![0u8; usize::try_from(ph_len).map_err(|_| cut())?];
    if read_at(&file, phoff, &mut table).map_err(unreadable)? < table.len() {
        return Err(cut());
    }
    for entry in table.chunks_exact(phentsize.max(1) as usize) {
        const PT_LOAD: u64 = 1;
        if int(&entry[0..4]) != PT_LOAD {
            continue;
        }
        let (offset, filesz) = if wide {
            (int(&entry[8..16]), int(&entry[32..40]))
        } else {
            (int(&entry[4..8]), int(&entry[16..20]))
        };
        if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
            return Err(cut());
        }
    }
    Ok(())
}
