//! [`KitPd`] and [`KitMr`]: a protection domain and its memory regions built on the kit —
//! handle lifetimes and bounds — over a provider's [`RawPd`] and [`RawMr`].

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::cq::KitCq;
use super::life::DeviceLife;
use super::lock;
use super::qp::KitQp;
use super::raw::{RawMr, RawPd, RawQp};
use crate::Access;
use crate::drain::DrainProfile;
use crate::error::{Error, ErrorKind, Result};
use crate::lent::{Lent, LentBuffer};
use crate::mr::{MemoryRegion, check_memory, check_range};
use crate::pd::ProtectionDomain;
use crate::provider::Provider;
use crate::qp::QpInit;

/// A protection domain built on the kit: a provider's [`RawPd`] below, the ULP's
/// [`ProtectionDomain`] above.
///
/// The kit counts the PD's users — its [`KitMr`]s and [`KitQp`]s — and owns the handle's
/// lifetime:
/// - [`destroy`](ProtectionDomain::destroy) fails with `Busy` while a region or QP of it is
///   left, without asking the device (a driver's `EBUSY` is not relied on);
/// - after `destroy`, registering and creating QPs fail with `Destroyed`; after the device is
///   lost, with `DeviceLost`;
/// - a PD whose handle is dropped while regions or QPs use it lives on in the device until the
///   last of them goes, then is released.
pub struct KitPd<R: RawPd> {
    core: Arc<PdCore<R>>,
}

/// What a PD's handle, regions and QPs share.
struct PdCore<R: RawPd> {
    raw: R,
    state: Mutex<PdState>,
    life: DeviceLife,
    profile: &'static DrainProfile,
}

struct PdState {
    /// Regions and QPs of the PD not yet destroyed.
    users: usize,
    /// The device's PD was released.
    destroyed: bool,
}

/// Releases one user of a PD.
trait PdUsers: Send + Sync {
    fn release(&self);
}

impl<R: RawPd> PdUsers for PdCore<R> {
    fn release(&self) {
        let mut st = lock(&self.state);
        st.users = st.users.saturating_sub(1);
    }
}

impl<R: RawPd> Drop for PdCore<R> {
    fn drop(&mut self) {
        // The handle and every user are gone: release the device's PD if the ULP did not.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if !st.destroyed {
            st.destroyed = true;
            let _ = self.raw.destroy();
        }
    }
}

/// One region's or QP's hold on its PD: a user until released (when it is destroyed) or
/// dropped, and it keeps the device's PD alive until dropped.
pub(crate) struct PdUser {
    core: Arc<dyn PdUsers>,
    released: AtomicBool,
}

impl PdUser {
    /// Stops counting as a user of the PD (once).
    pub(crate) fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.core.release();
        }
    }

    /// For a user that could not be released in the device: it stays counted and the device's
    /// PD is never released (leaked with it), since releasing it under a region or QP still in
    /// the device is a use after free (or an assertion in a binding's destructor).
    pub(crate) fn leak(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            std::mem::forget(Arc::clone(&self.core));
        }
    }
}

impl Drop for PdUser {
    fn drop(&mut self) {
        self.release();
    }
}

impl<R: RawPd> std::fmt::Debug for KitPd<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.core.state);
        f.debug_struct("KitPd")
            .field("users", &st.users)
            .field("destroyed", &st.destroyed)
            .finish_non_exhaustive()
    }
}

impl<R: RawPd> KitPd<R> {
    /// Wraps the device's PD, allocated on a device whose liveness is `life` and whose QPs drain
    /// with `profile` ([`profile_for`](crate::drain::profile_for)).
    pub fn new(raw: R, life: DeviceLife, profile: &'static DrainProfile) -> KitPd<R> {
        KitPd {
            core: Arc::new(PdCore {
                raw,
                state: Mutex::new(PdState {
                    users: 0,
                    destroyed: false,
                }),
                life,
                profile,
            }),
        }
    }

    /// The device's PD.
    pub fn raw(&self) -> &R {
        &self.core.raw
    }

    /// Runs `make` for a new user of the PD, under the PD's lock: `DeviceLost` or `Destroyed`
    /// if too late, and the user counted only if `make` succeeds.
    fn with_new_user<T>(&self, make: impl FnOnce(&R) -> Result<T>) -> Result<(T, PdUser)> {
        self.core.life.check()?;
        let mut st = lock(&self.core.state);
        if st.destroyed {
            return Err(Error::destroyed("protection domain"));
        }
        let made = make(&self.core.raw)?;
        st.users += 1;
        let user = PdUser {
            core: Arc::clone(&self.core) as Arc<dyn PdUsers>,
            released: AtomicBool::new(false),
        };
        Ok((made, user))
    }

    /// [`ProtectionDomain::register`]: the device's region, counted among the PD's users.
    pub fn register(&self, len: usize, access: Access) -> Result<KitMr<R::Mr>> {
        let (raw, user) = self.with_new_user(|pd| pd.register(len, access))?;
        Ok(KitMr::new(raw, user, Lent::None))
    }

    /// [`ProtectionDomain::register_memory`]: the device's region over the caller's memory,
    /// counted among the PD's users. The kit refuses a null or wrapping range before the device
    /// sees it, and a region the device reports at another address or length.
    ///
    /// # Safety
    /// As [`ProtectionDomain::register_memory`].
    #[allow(unsafe_code)]
    pub unsafe fn register_memory(
        &self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<KitMr<R::Mr>> {
        check_memory(addr, len)?;
        // SAFETY: the caller upholds `register_memory`'s contract, which is the raw one's.
        let (raw, user) =
            self.with_new_user(|pd| unsafe { pd.register_memory(addr, len, access) })?;
        KitMr::new(raw, user, Lent::None).reporting(addr, len)
    }

    /// [`ProtectionDomain::register_buffer`], once for every provider on the kit: the buffer
    /// registered as caller memory ([`RawPd::register_memory`]), lent to the region, which hands
    /// it back only once deregistered.
    #[allow(unsafe_code)]
    pub fn register_buffer(&self, buf: Box<[u8]>, access: Access) -> Result<KitMr<R::Mr>> {
        let lent = LentBuffer::new(buf);
        let (addr, len) = (lent.as_ptr(), lent.len());
        // SAFETY: the region owns the buffer from here on (`Lent::Held`): nothing frees or
        // moves it until the region is deregistered — `take_buffer` and the drop hand it back
        // or free it only after `RawMr::destroy` succeeded, and leak it otherwise — and the
        // program reaches it only through the region, under its contracts.
        let made = self.with_new_user(|pd| unsafe { pd.register_memory(addr, len, access) });
        match made {
            Ok((raw, user)) => KitMr::new(raw, user, Lent::Held(lent)).reporting(addr, len),
            Err(e) => {
                // SAFETY: the registration failed: the device never had the buffer.
                drop(unsafe { lent.into_box() });
                Err(e)
            }
        }
    }

    /// [`ProtectionDomain::create_qp`]: the device's QP, built on the kit and counted among the
    /// PD's users until it is destroyed.
    pub fn create_qp(
        &self,
        send_cq: &KitCq<<R::Qp as RawQp>::Cq>,
        recv_cq: &KitCq<<R::Qp as RawQp>::Cq>,
        init: &QpInit,
    ) -> Result<KitQp<R::Qp>> {
        send_cq.check()?;
        recv_cq.check()?;
        let (raw, user) =
            self.with_new_user(|pd| pd.create_qp(send_cq.raw(), recv_cq.raw(), init))?;
        let qp = KitQp::new(
            raw,
            send_cq,
            recv_cq,
            init,
            self.core.profile,
            self.core.life.clone(),
        )?;
        Ok(qp.held_by(user))
    }

    /// [`ProtectionDomain::destroy`]: `Busy` while regions or QPs of it are left, without
    /// asking the device; releases the device's PD once.
    pub fn destroy(&self) -> Result<()> {
        let mut st = lock(&self.core.state);
        if st.destroyed {
            return Ok(());
        }
        if st.users > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "the protection domain is in use by {} memory regions and queue pairs",
                    st.users
                ),
            ));
        }
        self.core.raw.destroy()?;
        st.destroyed = true;
        Ok(())
    }
}

impl<P, R> ProtectionDomain<P> for KitPd<R>
where
    R: RawPd,
    P: Provider<Mr = KitMr<R::Mr>, Cq = KitCq<<R::Qp as RawQp>::Cq>, Qp = KitQp<R::Qp>>,
{
    fn register(&self, len: usize, access: Access) -> Result<KitMr<R::Mr>> {
        KitPd::register(self, len, access)
    }

    #[allow(unsafe_code)]
    unsafe fn register_memory(
        &self,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<KitMr<R::Mr>> {
        // SAFETY: the caller upholds the same contract.
        unsafe { KitPd::register_memory(self, addr, len, access) }
    }

    fn register_buffer(&self, buf: Box<[u8]>, access: Access) -> Result<KitMr<R::Mr>> {
        KitPd::register_buffer(self, buf, access)
    }

    fn create_qp(
        &self,
        send_cq: &KitCq<<R::Qp as RawQp>::Cq>,
        recv_cq: &KitCq<<R::Qp as RawQp>::Cq>,
        init: &QpInit,
    ) -> Result<KitQp<R::Qp>> {
        KitPd::create_qp(self, send_cq, recv_cq, init)
    }

    fn destroy(&self) -> Result<()> {
        KitPd::destroy(self)
    }
}

/// A memory region built on the kit: a provider's [`RawMr`] below, the ULP's [`MemoryRegion`]
/// above. The kit checks bounds (`InvalidArgument`, nothing copied) and the handle's state
/// (`Destroyed` after [`destroy`](MemoryRegion::destroy)); reading and writing work on a lost
/// device, whose regions' memory is the host's. Destroying or dropping it releases its hold on
/// its PD.
///
/// A buffer lent to it ([`KitPd::register_buffer`]) is handed back by
/// [`take_buffer`](MemoryRegion::take_buffer), or freed when the handle is dropped, only after
/// the device's region was deregistered ([`RawMr::destroy`] returned `Ok`: the device never
/// touches it again, whatever WRs are still posted); if deregistering fails when the handle is
/// dropped, the buffer is leaked with the region.
pub struct KitMr<M: RawMr> {
    // Declared first: deregistered before the hold on the PD is let go.
    raw: M,
    /// Whether the device's region was deregistered: read-held by `read` and `write` for their
    /// copy, so that `destroy` never deregisters the region under a copy in progress.
    destroyed: RwLock<bool>,
    /// The buffer lent to the region, if it was registered from one. Locked after `destroyed`.
    lent: Mutex<Lent>,
    pd: PdUser,
}

impl<M: RawMr> std::fmt::Debug for KitMr<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KitMr")
            .field("addr", &format_args!("{:#x}", self.raw.addr()))
            .field("len", &self.raw.len())
            .field("lkey", &self.raw.lkey())
            .field("rkey", &self.raw.rkey())
            .field("access", &self.raw.access())
            .finish_non_exhaustive()
    }
}

impl<M: RawMr> KitMr<M> {
    fn new(raw: M, pd: PdUser, lent: Lent) -> KitMr<M> {
        KitMr {
            raw,
            destroyed: RwLock::new(false),
            lent: Mutex::new(lent),
            pd,
        }
    }

    /// The region, if the device reports the memory it was given (`addr`, `len`); else an
    /// error, the region deregistered as it is dropped.
    fn reporting(self, addr: *mut u8, len: usize) -> Result<KitMr<M>> {
        if self.raw.host_ptr() == NonNull::new(addr) && self.raw.len() == len {
            return Ok(self);
        }
        Err(Error::new(
            ErrorKind::Other,
            format!(
                "the provider registered {len} bytes at {addr:p} but reports {} bytes at {:?}",
                self.raw.len(),
                self.raw.host_ptr()
            ),
        ))
    }

    /// The device's region.
    pub fn raw(&self) -> &M {
        &self.raw
    }

    /// `Destroyed` after `destroy`, else whether `n` bytes at `offset` lie in the region; runs
    /// `copy` on the device's region if they do, holding off `destroy` meanwhile.
    fn copy(&self, offset: usize, n: usize, copy: impl FnOnce(&M) -> Result<()>) -> Result<()> {
        let destroyed = self.destroyed.read().unwrap_or_else(|e| e.into_inner());
        if *destroyed {
            return Err(Error::destroyed("memory region"));
        }
        check_range(self.raw.len(), offset, n)?;
        copy(&self.raw)
    }
}

impl<M: RawMr> MemoryRegion for KitMr<M> {
    fn addr(&self) -> u64 {
        self.raw.addr()
    }

    fn len(&self) -> usize {
        self.raw.len()
    }

    fn lkey(&self) -> u32 {
        self.raw.lkey()
    }

    fn rkey(&self) -> u32 {
        self.raw.rkey()
    }

    fn access(&self) -> Access {
        self.raw.access()
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.copy(offset, src.len(), |raw| raw.write(offset, src))
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let n = dst.len();
        self.copy(offset, n, |raw| raw.read(offset, dst))
    }

    fn destroy(&self) -> Result<()> {
        // Waits for the copies in progress; a second destroy waits for the first.
        let mut destroyed = self.destroyed.write().unwrap_or_else(|e| e.into_inner());
        if *destroyed {
            return Ok(());
        }
        // On failure the region is still registered: the ULP may try again.
        self.raw.destroy()?;
        *destroyed = true;
        self.pd.release();
        Ok(())
    }

    #[allow(unsafe_code)]
    fn take_buffer(&self) -> Result<Box<[u8]>> {
        let mut destroyed = self.destroyed.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `destroyed` is set only once `RawMr::destroy` succeeded (here and in
        // `destroy`), after which the device never touches the memory (its contract); the
        // kit's own copies hold `destroyed` for reading and refuse a destroyed region; slices
        // must not outlive the registration (their callers' contract).
        unsafe {
            lock(&self.lent).take(&mut destroyed, || {
                self.raw.destroy()?;
                self.pd.release();
                Ok(())
            })
        }
    }

    fn as_ptr(&self) -> Result<*mut u8> {
        if *self.destroyed.read().unwrap_or_else(|e| e.into_inner()) {
            return Err(Error::destroyed("memory region"));
        }
        self.raw.host_ptr().map(NonNull::as_ptr).ok_or_else(|| {
            Error::not_supported("the region's memory is not host memory the program can reach")
        })
    }
}

impl<M: RawMr> Drop for KitMr<M> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let destroyed = self.destroyed.get_mut().unwrap_or_else(|e| e.into_inner());
        if !*destroyed {
            if self.raw.destroy().is_err() {
                // Still registered in the device: its PD must never be released under it, and
                // a lent buffer is leaked with it (dropping a `LentBuffer` does not free it).
                self.pd.leak();
                return;
            }
            *destroyed = true;
        }
        let lent = self.lent.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the device's region is deregistered (above, or by an earlier `destroy`), so
        // the device never touches the buffer again; no slice of it lives, since slices borrow
        // the handle being dropped.
        unsafe { lent.release(true) };
    }
}
