//! Protection domains and memory regions on the kit: who may destroy what when, what keeps the
//! device's PD alive, and what a region's handle allows.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::mpsc;

use super::*;
use crate::{Access, MemoryRegion};

/// What the toy device did with its PDs and regions.
#[derive(Default)]
struct ToyDevice {
    /// `RawPd::destroy` calls.
    pd_destroys: AtomicUsize,
    /// `RawMr::destroy` calls.
    mr_destroys: AtomicUsize,
    next_qpn: AtomicU32,
    /// Regions registered and not (successfully) deregistered.
    live_mrs: AtomicUsize,
    /// `RawMr::destroy` fails (a driver's `EBUSY`: a memory window still bound).
    mr_destroy_fails: AtomicBool,
    /// `RawPd::destroy` calls made while a region of the PD was still registered (a use after
    /// free on a real device; an assertion in a binding such as `sideway`).
    pd_destroys_under_a_region: AtomicUsize,
    /// Calls of `RawMr::read`/`write` that reached the region after it was deregistered.
    copies_after_destroy: AtomicUsize,
    /// `RawMr::host_ptr` of a caller's memory reports one byte past what was registered.
    misreports: AtomicBool,
}

struct ToyPd(Arc<ToyDevice>);

struct ToyMr {
    memory: Mutex<Vec<u8>>,
    device: Arc<ToyDevice>,
    deregistered: AtomicBool,
    /// Runs at the start of the next `read`, before it copies (a reader "descheduled" there).
    read_hook: Mutex<Option<Hook>>,
    /// The caller's memory it was registered over (its address); the toy copies into its own
    /// `memory` all the same, and never touches the caller's.
    host: Option<usize>,
}

impl RawPd for ToyPd {
    type Mr = ToyMr;
    type Qp = ToyQp;

    fn register(&self, len: usize, _access: Access) -> Result<ToyMr> {
        self.0
            .live_mrs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(ToyMr {
            memory: Mutex::new(vec![0; len]),
            device: Arc::clone(&self.0),
            deregistered: AtomicBool::new(false),
            read_hook: Mutex::new(None),
            host: None,
        })
    }

    #[allow(unsafe_code)]
    unsafe fn register_memory(&self, addr: *mut u8, len: usize, access: Access) -> Result<ToyMr> {
        let mut mr = self.register(len, access)?;
        let skew = usize::from(self.0.misreports.load(std::sync::atomic::Ordering::Relaxed));
        mr.host = Some(addr as usize + skew);
        Ok(mr)
    }

    fn create_qp(&self, send_cq: &ToyCq, recv_cq: &ToyCq, _init: &QpInit) -> Result<ToyQp> {
        let num = 100
            + self
                .0
                .next_qpn
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(ToyQp::new(num, InError::Flush, send_cq, recv_cq))
    }

    fn destroy(&self) -> Result<()> {
        if count(&self.0.live_mrs) > 0 {
            self.0
                .pd_destroys_under_a_region
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.0
            .pd_destroys
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl RawMr for ToyMr {
    fn addr(&self) -> u64 {
        0x1000
    }

    fn len(&self) -> usize {
        lock(&self.memory).len()
    }

    fn lkey(&self) -> u32 {
        1
    }

    fn rkey(&self) -> u32 {
        2
    }

    fn access(&self) -> Access {
        Access::LOCAL_WRITE
    }

    fn host_ptr(&self) -> Option<std::ptr::NonNull<u8>> {
        std::ptr::NonNull::new(self.host? as *mut u8)
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.copying();
        lock(&self.memory)[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let hook = lock(&self.read_hook).take();
        if let Some(hook) = hook {
            hook();
        }
        self.copying();
        dst.copy_from_slice(&lock(&self.memory)[offset..offset + dst.len()]);
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        self.device
            .mr_destroys
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self
            .device
            .mr_destroy_fails
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Error::new(ErrorKind::Busy, "toy: a memory window is bound"));
        }
        if !self
            .deregistered
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.device
                .live_mrs
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl ToyMr {
    /// Notes a copy; one into a deregistered region is a bug of the kit (its memory may be
    /// unpinned and freed by then).
    fn copying(&self) {
        if self.deregistered.load(std::sync::atomic::Ordering::Relaxed) {
            self.device
                .copies_after_destroy
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn pd(life: &DeviceLife) -> (Arc<ToyDevice>, KitPd<ToyPd>) {
    let device = Arc::new(ToyDevice::default());
    let profile = profile_named("mlx5").expect("a built-in profile");
    let pd = KitPd::new(ToyPd(Arc::clone(&device)), life.clone(), profile);
    (device, pd)
}

fn count(n: &AtomicUsize) -> usize {
    n.load(std::sync::atomic::Ordering::Relaxed)
}

/// `Busy` while a region or a QP of the PD is left, without the device being asked (a driver's
/// EBUSY, or a binding that asserts in its destructor, is not relied on); the device's PD is
/// released once, when the last user is gone and the ULP destroys it.
#[test]
fn a_pd_is_busy_while_a_region_or_qp_of_it_is_left() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let c = cq(16, &life);
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    let qp = pd.create_qp(&c.1, &c.1, &QpInit::default()).unwrap();
    assert_eq!(pd.destroy().unwrap_err().kind(), ErrorKind::Busy);
    mr.destroy().unwrap();
    mr.destroy().unwrap(); // a second destroy changes nothing
    assert_eq!(count(&device.mr_destroys), 1);
    assert_eq!(pd.destroy().unwrap_err().kind(), ErrorKind::Busy);
    qp.destroy().unwrap();
    pd.destroy().unwrap();
    pd.destroy().unwrap();
    assert_eq!(count(&device.pd_destroys), 1);
    // Destroyed: nothing new is made on it.
    let e = pd.register(64, Access::LOCAL_WRITE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed);
    let e = pd.create_qp(&c.1, &c.1, &QpInit::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Destroyed);
    drop((mr, qp, pd));
    assert_eq!(
        count(&device.pd_destroys),
        1,
        "released once, not again on drop"
    );
    assert_eq!(
        count(&device.mr_destroys),
        1,
        "deregistered once, not again on drop"
    );
}

/// The ULP drops the PD's handle while a region and a QP still use it: the device's PD lives
/// on until the last of them goes (a QP or region of a released PD would be a use after free),
/// then is released once.
#[test]
fn a_dropped_pd_lives_on_in_the_device_until_its_last_user_goes() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let c = cq(16, &life);
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    let qp = pd.create_qp(&c.1, &c.1, &QpInit::default()).unwrap();
    drop(pd);
    assert_eq!(count(&device.pd_destroys), 0);
    mr.write(0, b"still here").unwrap();
    drop(mr);
    assert_eq!(
        count(&device.mr_destroys),
        1,
        "a dropped region is deregistered"
    );
    assert_eq!(count(&device.pd_destroys), 0, "the QP still uses the PD");
    drop(qp);
    assert_eq!(count(&device.pd_destroys), 1);
}

/// A region's reads and writes are bounds-checked by the kit (nothing copied), fail with
/// `Destroyed` after `destroy`, and work on a lost device, whose memory is the host's; making
/// things on a lost device's PD fails with `DeviceLost`, destroying it still works.
#[test]
fn a_region_is_bounds_checked_and_readable_after_the_device_is_lost() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let c = cq(16, &life);
    let mr = pd.register(16, Access::LOCAL_WRITE).unwrap();
    mr.write(8, b"12345678").unwrap();
    for (offset, n) in [(9, 8), (17, 0), (usize::MAX, 1)] {
        let e = mr.write(offset, &vec![7; n]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{offset}+{n}: {e}");
        let e = mr.read(offset, &mut vec![0; n]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{offset}+{n}: {e}");
    }
    life.lose(DeviceEvent::DeviceRemoved, "device toy0 was removed");
    let mut got = [0; 8];
    mr.read(8, &mut got).unwrap();
    assert_eq!(
        &got, b"12345678",
        "nothing written out of bounds, and readable"
    );
    let e = pd.register(16, Access::LOCAL_WRITE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceLost);
    let e = pd.create_qp(&c.1, &c.1, &QpInit::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeviceLost);
    mr.destroy().unwrap();
    assert_eq!(
        mr.read(0, &mut got).unwrap_err().kind(),
        ErrorKind::Destroyed
    );
    pd.destroy().unwrap();
    assert_eq!(count(&device.pd_destroys), 1);
}

/// A region whose deregistration fails (a driver's `EBUSY`) is still in the device, however its
/// handle goes: dropping it must not let the PD be released under it.
#[test]
fn a_region_that_could_not_be_deregistered_keeps_its_pd() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    device
        .mr_destroy_fails
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(mr.destroy().unwrap_err().kind(), ErrorKind::Busy);
    drop(mr); // its deregistration fails again
    assert_eq!(count(&device.live_mrs), 1);
    assert_eq!(
        pd.destroy().unwrap_err().kind(),
        ErrorKind::Busy,
        "the region is still registered in the device"
    );
    drop(pd);
    assert_eq!(
        count(&device.pd_destroys_under_a_region),
        0,
        "the device's PD was released under a registered region"
    );
}

/// A read that passed the kit's checks when another thread destroys the region: the device's
/// region is not deregistered under the copy (its memory may be unpinned and freed), and the
/// read is not told `Destroyed` for a region that is still there either.
#[test]
fn a_region_is_not_deregistered_under_a_copy_in_progress() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let mr = Arc::new(pd.register(64, Access::LOCAL_WRITE).unwrap());
    let (in_read, reading) = mpsc::channel();
    let (destroyed, done) = mpsc::channel::<()>();
    *lock(&mr.raw().read_hook) = Some(Box::new(move || {
        in_read.send(()).unwrap();
        // Give a destroy on another thread every chance to run now.
        let _ = done.recv_timeout(Duration::from_millis(300));
    }));
    let destroyer = {
        let mr = Arc::clone(&mr);
        std::thread::spawn(move || {
            reading.recv().unwrap();
            mr.destroy().unwrap();
            let _ = destroyed.send(());
        })
    };
    let mut got = [0; 8];
    mr.read(0, &mut got).unwrap();
    destroyer.join().unwrap();
    assert_eq!(
        count(&device.copies_after_destroy),
        0,
        "a copy reached a deregistered region"
    );
    assert_eq!(
        mr.read(0, &mut got).unwrap_err().kind(),
        ErrorKind::Destroyed
    );
}

/// The device refuses to destroy a QP once: the QP is still in the device, so its PD stays
/// `Busy`; destroying the QP again destroys it in the device (not an `Ok` for a QP still there)
/// and only then lets the PD go.
#[test]
fn a_qp_whose_device_destroy_failed_is_destroyed_by_the_next_destroy() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let c = cq(16, &life);
    let qp = pd.create_qp(&c.1, &c.1, &QpInit::default()).unwrap();
    lock(&qp.raw().st).destroy_fails = 1;
    assert_eq!(qp.destroy().unwrap_err().kind(), ErrorKind::Busy);
    assert_eq!(pd.destroy().unwrap_err().kind(), ErrorKind::Busy);
    qp.destroy().unwrap();
    assert!(
        lock(&qp.raw().st).destroyed,
        "destroy said Ok, but the QP is still in the device"
    );
    pd.destroy().unwrap();
    assert_eq!(count(&device.pd_destroys), 1);
    qp.destroy().unwrap(); // and a third changes nothing
}

/// A lent buffer comes back from `take_buffer` with what was written into it directly, once:
/// the region is deregistered by then, and refuses copies and direct access afterwards.
#[test]
#[allow(unsafe_code)]
fn a_lent_buffer_comes_back_once_the_region_is_deregistered() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let mr = pd
        .register_buffer(vec![7u8; 32].into_boxed_slice(), Access::LOCAL_WRITE)
        .unwrap();
    assert_eq!(mr.len(), 32);
    // SAFETY: no WR uses the region, and nothing else touches these bytes meanwhile.
    unsafe { mr.slice_mut(4, 4).unwrap() }.copy_from_slice(b"abcd");
    // SAFETY: as above.
    assert_eq!(unsafe { mr.slice(0, 8).unwrap() }, b"\x07\x07\x07\x07abcd");
    // SAFETY: as above: out of bounds is refused before any pointer is made.
    let e = unsafe { mr.slice(30, 3) }.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(pd.destroy().unwrap_err().kind(), ErrorKind::Busy);
    let buf = mr.take_buffer().unwrap();
    assert_eq!(&buf[..8], b"\x07\x07\x07\x07abcd");
    assert_eq!(count(&device.mr_destroys), 1);
    assert_eq!(count(&device.live_mrs), 0);
    assert_eq!(mr.take_buffer().unwrap_err().kind(), ErrorKind::Destroyed);
    assert_eq!(mr.as_ptr().unwrap_err().kind(), ErrorKind::Destroyed);
    assert_eq!(
        mr.read(0, &mut [0; 4]).unwrap_err().kind(),
        ErrorKind::Destroyed
    );
    mr.destroy().unwrap();
    pd.destroy().unwrap();
    drop(mr);
    assert_eq!(count(&device.mr_destroys), 1, "deregistered once");
}

/// A deregistration that fails leaves the region registered with its buffer: `take_buffer`
/// hands nothing back until it succeeds, and a destroyed region still holds the buffer for it.
#[test]
fn a_lent_buffer_stays_while_deregistering_fails() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let mr = pd
        .register_buffer(vec![1u8; 8].into_boxed_slice(), Access::LOCAL_WRITE)
        .unwrap();
    device
        .mr_destroy_fails
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(mr.take_buffer().unwrap_err().kind(), ErrorKind::Busy);
    assert!(mr.as_ptr().is_ok(), "still registered");
    device
        .mr_destroy_fails
        .store(false, std::sync::atomic::Ordering::Relaxed);
    mr.destroy().unwrap();
    assert_eq!(&*mr.take_buffer().unwrap(), &[1u8; 8]);
    // A region that was not registered from a buffer has none to hand back; the toy's own
    // memory is not the program's to reach.
    let plain = pd.register(8, Access::LOCAL_WRITE).unwrap();
    assert_eq!(
        plain.take_buffer().unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(plain.as_ptr().unwrap_err().kind(), ErrorKind::NotSupported);
}

/// Caller memory: a null or wrapping range is refused before the device sees it; a device that
/// reports other memory than it was given is refused, its region deregistered.
#[test]
#[allow(unsafe_code)]
fn caller_memory_is_checked_before_and_after_the_device() {
    let life = DeviceLife::new();
    let (device, pd) = pd(&life);
    let mut memory = [0u8; 16];
    let addr = memory.as_mut_ptr();
    // SAFETY: refused before anything is registered.
    let e = unsafe { pd.register_memory(std::ptr::null_mut(), 16, Access::LOCAL_WRITE) };
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    // SAFETY: as above.
    let e = unsafe { pd.register_memory(usize::MAX as *mut u8, 16, Access::LOCAL_WRITE) };
    assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(count(&device.live_mrs), 0);
    // SAFETY: `memory` outlives the region, which the toy never writes through.
    let mr = unsafe { pd.register_memory(addr, 16, Access::LOCAL_WRITE) }.unwrap();
    assert_eq!(mr.as_ptr().unwrap(), addr);
    mr.destroy().unwrap();
    device
        .misreports
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: as above.
    let e = unsafe { pd.register_memory(addr, 16, Access::LOCAL_WRITE) }.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    assert_eq!(
        count(&device.live_mrs),
        0,
        "the refused region was deregistered"
    );
    pd.destroy().unwrap();
}
