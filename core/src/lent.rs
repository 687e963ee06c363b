//! [`LentBuffer`]: a program's buffer lent to a memory region, and handed back (or freed) only
//! once the device can no longer touch it.
//!
//! The one place the kit and the loader turn a `Box<[u8]>` into memory the device writes
//! through a raw pointer, and back.

use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A buffer taken out of its `Box` while a region lends it to the device.
///
/// It holds the allocation as a raw pointer, not a `Box`: the device (and the program, through
/// [`MemoryRegion::as_ptr`](crate::MemoryRegion::as_ptr)) writes it through pointers derived
/// from this one, which a `Box` — a unique owner — would invalidate whenever it is moved.
///
/// Dropping it **leaks** the buffer: the safe default for memory the device may still write.
/// Its holder turns it back into a `Box` ([`into_box`](Self::into_box)) only once the region is
/// deregistered, or was never registered.
pub(crate) struct LentBuffer {
    ptr: NonNull<[u8]>,
}

// SAFETY: it owns its bytes as a `Box<[u8]>` does, which is `Send` and `Sync`; every access
// through the pointer is governed by the region's contracts, not by this handle.
unsafe impl Send for LentBuffer {}
// SAFETY: as above; `&LentBuffer` only hands out the address.
unsafe impl Sync for LentBuffer {}

impl LentBuffer {
    /// Takes `buf` out of its box.
    pub(crate) fn new(buf: Box<[u8]>) -> LentBuffer {
        LentBuffer {
            ptr: NonNull::from(Box::leak(buf)),
        }
    }

    /// The first byte: valid for reads and writes of [`len`](Self::len) bytes until the buffer
    /// is handed back (and non-null, dangling, for an empty buffer).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast::<u8>()
    }

    /// The buffer's length.
    pub(crate) fn len(&self) -> usize {
        self.ptr.len()
    }

    /// The buffer, in its box again.
    ///
    /// # Safety
    /// Nothing may access the buffer through another pointer any more: the region it was lent
    /// to is deregistered (the device never touches it again) or was never registered, and no
    /// slice of it lives.
    pub(crate) unsafe fn into_box(self) -> Box<[u8]> {
        // SAFETY: `ptr` comes from `Box::leak` of a `Box<[u8]>` of the global allocator and
        // was not turned back into a box before (`self` is consumed here, and nothing else
        // does); the caller guarantees that no other pointer to it is used any more.
        unsafe { Box::from_raw(self.ptr.as_ptr()) }
    }
}

/// What a region holds of a buffer lent to it.
pub(crate) enum Lent {
    /// It was not registered from a buffer.
    None,
    /// The buffer, until the region is deregistered and hands it back.
    Held(LentBuffer),
    /// Handed back (or freed).
    Taken,
}

impl Lent {
    /// The lent buffer, handed back once the region is deregistered: by `deregister`, unless
    /// `deregistered` says it is already (and then set). `InvalidArgument` if the region was
    /// not registered from a buffer, `Destroyed` if it was handed back already, `deregister`'s
    /// error (the buffer kept) if deregistering fails.
    ///
    /// # Safety
    /// `deregistered` is true only if the region the buffer was lent to is deregistered in the
    /// device, and `deregister` returns `Ok` only once it is (the device never touches the
    /// buffer again: [`RawMr::destroy`](crate::kit::RawMr::destroy)'s and `mr_destroy`'s
    /// contract); no slice of the buffer may outlive the registration (the contract of
    /// [`MemoryRegion::slice`](crate::MemoryRegion::slice)).
    pub(crate) unsafe fn take(
        &mut self,
        deregistered: &mut bool,
        deregister: impl FnOnce() -> Result<()>,
    ) -> Result<Box<[u8]>> {
        match self {
            Lent::None => {
                return Err(Error::invalid_argument(
                    "the region was not registered from a buffer",
                ));
            }
            Lent::Taken => return Err(Error::destroyed("memory region's buffer")),
            Lent::Held(_) => {}
        }
        if !*deregistered {
            // On failure the region is still registered and keeps the buffer.
            deregister()?;
            *deregistered = true;
        }
        let Lent::Held(buf) = std::mem::replace(self, Lent::Taken) else {
            unreachable!("matched above");
        };
        // SAFETY: the region is deregistered (the caller's guarantee for `deregistered` and
        // `deregister`), so the device never touches the buffer again, and no slice of it
        // outlived the registration.
        Ok(unsafe { buf.into_box() })
    }

    /// When the region's handle goes: frees a buffer still held if the region is
    /// `deregistered`, and leaks it if not (the device may still write it).
    ///
    /// # Safety
    /// `deregistered` is true only if the region is deregistered in the device; no slice of
    /// the buffer lives.
    pub(crate) unsafe fn release(&mut self, deregistered: bool) {
        // Not deregistered: dropping the `LentBuffer` leaks it.
        if let Lent::Held(buf) = std::mem::replace(self, Lent::Taken)
            && deregistered
        {
            // SAFETY: as the caller guarantees: nothing touches the buffer any more.
            drop(unsafe { buf.into_box() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LentBuffer;

    #[test]
    fn comes_back_with_what_was_written_through_the_pointer() {
        let lent = LentBuffer::new(vec![1u8, 2, 3].into_boxed_slice());
        assert_eq!(lent.len(), 3);
        // SAFETY: three bytes valid for writes; nothing else uses them.
        unsafe { lent.as_ptr().add(1).write(9) };
        // SAFETY: never lent to a device.
        assert_eq!(&*unsafe { lent.into_box() }, &[1, 9, 3]);
        let empty = LentBuffer::new(Box::default());
        assert!(!empty.as_ptr().is_null());
        // SAFETY: as above.
        assert!(unsafe { empty.into_box() }.is_empty());
    }
}
