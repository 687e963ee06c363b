//! [`LoadedMr`]: a memory region of a loaded provider, behind [`MemoryRegion`].

use std::sync::Mutex;

use std::ptr::NonNull;

use super::{Handle, Raw, call};
use crate::error::{Error, Result};
use crate::lent::Lent;
use crate::mr::{Access, MemoryRegion};
use crate::plugin::abi;

/// A memory region of a loaded provider. Its address, length, keys and pointer are kept on
/// this side, as checked when it was registered.
///
/// A buffer lent to it ([`register_buffer`](crate::ProtectionDomain::register_buffer)) belongs
/// to the program's allocator; the plugin sees only its address and length
/// (`pd_register_memory`). It is handed back, or freed when the region is dropped, only after
/// `mr_destroy` succeeded; if it never does, the buffer is leaked.
pub struct LoadedMr {
    handle: Handle<abi::RawMr>,
    addr: u64,
    len: usize,
    lkey: u32,
    rkey: u32,
    access: Access,
    /// The region's memory in the program's address space, if the plugin reported it (a plain
    /// address: `Raw` only makes it `Send` and `Sync`; what may be done with it is the
    /// region's contracts').
    ptr: Option<Raw<u8>>,
    state: Mutex<MrState>,
}

struct MrState {
    /// `mr_destroy` succeeded.
    destroyed: bool,
    lent: Lent,
}

impl LoadedMr {
    /// The region `info` describes (checked by the caller), reached at `ptr`, holding `lent`.
    pub(super) fn new(
        handle: Handle<abi::RawMr>,
        info: &abi::MrInfo,
        (len, access): (usize, Access),
        ptr: Option<NonNull<u8>>,
        lent: Lent,
    ) -> LoadedMr {
        LoadedMr {
            handle,
            addr: info.addr,
            len,
            lkey: info.lkey,
            rkey: info.rkey,
            access,
            ptr: ptr.map(Raw),
            state: Mutex::new(MrState {
                destroyed: false,
                lent,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MrState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deregister(&self) -> Result<()> {
        call!(self.handle.f(), mr_destroy(self.handle.ptr()))
    }
}

impl MemoryRegion for LoadedMr {
    fn addr(&self) -> u64 {
        self.addr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lkey(&self) -> u32 {
        self.lkey
    }

    fn rkey(&self) -> u32 {
        self.rkey
    }

    fn access(&self) -> Access {
        self.access
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_write(self.handle.ptr(), offset, src.as_ptr(), src.len())
        )
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_read(self.handle.ptr(), offset, dst.as_mut_ptr(), dst.len())
        )
    }

    fn destroy(&self) -> Result<()> {
        let mut st = self.state();
        if !st.destroyed {
            self.deregister()?;
            st.destroyed = true;
        }
        Ok(())
    }

    #[allow(unsafe_code)]
    fn take_buffer(&self) -> Result<Box<[u8]>> {
        let st = &mut *self.state();
        // SAFETY: `destroyed` is set only once `mr_destroy` succeeded, after which the plugin
        // never touches the memory (the ABI's contract); slices must not outlive the
        // registration (their callers' contract).
        unsafe { st.lent.take(&mut st.destroyed, || self.deregister()) }
    }

    fn as_ptr(&self) -> Result<*mut u8> {
        if self.state().destroyed {
            return Err(Error::destroyed("memory region"));
        }
        match &self.ptr {
            Some(ptr) => Ok(ptr.ptr()),
            None => Err(Error::not_supported(
                "the plugin reports no pointer to the region's memory",
            )),
        }
    }
}

impl Drop for LoadedMr {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(st.lent, Lent::Held(_)) {
            // Deregistered before the handle is freed, to know whether the buffer is free to
            // go: `mr_free` does not say.
            let deregistered = st.destroyed || self.deregister().is_ok();
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            st.destroyed = deregistered;
            // SAFETY: `destroyed` is true only once `mr_destroy` succeeded; no slice lives, since
            // slices borrow the handle being dropped.
            unsafe { st.lent.release(deregistered) };
        }
    }
}

impl std::fmt::Debug for LoadedMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedMr")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}
