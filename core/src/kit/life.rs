//! [`DeviceLife`]: what the provider tells the kit about a device as it happens — that it is
//! gone, and that it moved a QP to ERROR on its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustc_hash::FxHashMap;

use super::lock;
use crate::error::{Error, ErrorKind, Result};

/// What the provider and every kit handle of one device share: whether the device is alive,
/// and which of its QPs the device moved to ERROR on its own.
///
/// The provider marks it [lost](Self::lose) when it learns the device is gone (removed, reset,
/// a fatal error), in the same step in which it publishes
/// [`DeviceEvent`](crate::DeviceEvent)s saying so; from then on every call on a kit handle of the
/// device fails at once with [`ErrorKind::DeviceLost`], completions the kit had put aside
/// included. A device that comes back is a new device with a new `DeviceLife`.
///
/// Marking it lost wakes nobody: the provider also makes the waits blocked in its raw CQs
/// return ([`RawCq::wait`](super::RawCq::wait) fails with `DeviceLost`).
#[derive(Debug, Clone, Default)]
pub struct DeviceLife(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    lost: OnceLock<String>,
    /// The "in ERROR by the device" flag of each live kit QP, by QP number.
    qps: Mutex<FxHashMap<u32, Weak<AtomicBool>>>,
}

impl DeviceLife {
    /// A live device.
    pub fn new() -> DeviceLife {
        DeviceLife::default()
    }

    /// Marks the device lost; `why` becomes the message of every later `DeviceLost` error (the
    /// first reason given wins).
    pub fn lose(&self, why: impl Into<String>) {
        let _ = self.0.lost.set(why.into());
    }

    /// Whether the device is lost.
    pub fn is_lost(&self) -> bool {
        self.0.lost.get().is_some()
    }

    /// `DeviceLost` once the device is lost.
    #[inline]
    pub fn check(&self) -> Result<()> {
        match self.0.lost.get() {
            None => Ok(()),
            Some(why) => Err(lost(why)),
        }
    }

    /// Tells the kit that the device moved QP `qp_num` to ERROR on its own: an
    /// `IBV_EVENT_QP_FATAL`, `QP_REQ_ERR` or `QP_ACCESS_ERR`, an iWARP connection torn down.
    /// WRs posted to it from now on are known never to succeed, so a drain does not wait for
    /// what a device that drops posts in ERROR will never complete. (Without it the kit learns
    /// of the ERROR only from the QP's error completions, when they are polled.) Never blocks;
    /// safe to call from any thread, under the provider's own locks.
    pub fn qp_entered_error(&self, qp_num: u32) {
        if let Some(flag) = lock(&self.0.qps).get(&qp_num).and_then(Weak::upgrade) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Starts listening for [`qp_entered_error`](Self::qp_entered_error) on QP `qp_num`
    /// through `flag` (a newer QP under a reused number takes the number over).
    pub(crate) fn register(&self, qp_num: u32, flag: &Arc<AtomicBool>) {
        lock(&self.0.qps).insert(qp_num, Arc::downgrade(flag));
    }

    /// Stops listening through `flag`, if QP `qp_num` is still registered with it.
    pub(crate) fn unregister(&self, qp_num: u32, flag: &Arc<AtomicBool>) {
        let mut qps = lock(&self.0.qps);
        if qps
            .get(&qp_num)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(flag)))
        {
            qps.remove(&qp_num);
        }
    }
}

/// The error of a call on a lost device; out of line, so that the live check inlines small.
#[cold]
#[inline(never)]
fn lost(why: &str) -> Error {
    Error::new(ErrorKind::DeviceLost, why.to_owned())
}
