//! [`DeviceLife`]: what the provider tells the kit about a device as it happens — the device's
//! events, that it is gone, and that it moved a QP to ERROR on its own — and the one place those
//! events are published from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rustc_hash::FxHashMap;

use super::lock;
use crate::caps::Caps;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{DeviceEvent, EventHub, EventStream};

/// What the provider and every kit handle of one device share: the device's capabilities,
/// whether the device is alive, which of its QPs the device moved to ERROR on its own, and the
/// device's event hub.
///
/// The capabilities ([`with_caps`](Self::with_caps)) are what the kit refuses WRs by, before
/// they reach the device ([`SendWr::check_for`](crate::SendWr::check_for)): an atomic on a
/// device without [`Caps::ATOMICS`] fails with `NotSupported`. A device created with
/// [`new`](Self::new) has none.
///
/// The provider [reports](Self::report) every event its device raises here, and the kit does
/// what each one implies before the ULP can see it: a QP's fatal error marks that QP in ERROR
/// ([`qp_entered_error`](Self::qp_entered_error)); a device's last event
/// ([`DeviceEvent::DeviceRemoved`], [`DeviceEvent::DeviceFatal`]) marks the device
/// [lost](Self::lose), from when on every call on a kit handle of the device fails at once with
/// [`ErrorKind::DeviceLost`], completions the kit had put aside included, and ends the event
/// streams right behind that event. A device that comes back is a new device with a new
/// `DeviceLife`.
///
/// Marking it lost wakes nobody: the provider also makes the waits blocked in its raw CQs
/// return ([`RawCq::wait`](super::RawCq::wait) fails with `DeviceLost`).
#[derive(Debug, Clone, Default)]
pub struct DeviceLife(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// What the device reports in its [`DeviceInfo`](crate::DeviceInfo).
    caps: Caps,
    lost: OnceLock<String>,
    /// The "in ERROR by the device" flag of each live kit QP, by QP number.
    qps: Mutex<FxHashMap<u32, Weak<AtomicBool>>>,
    /// The device's events, for [`Device::events`](crate::Device::events).
    events: EventHub<DeviceEvent>,
}

impl DeviceLife {
    /// A live device with no capabilities: the kit refuses the operations that need one
    /// (atomics). A provider whose device reports capabilities uses
    /// [`with_caps`](Self::with_caps).
    pub fn new() -> DeviceLife {
        DeviceLife::default()
    }

    /// A live device with the capabilities `caps`, those its
    /// [`DeviceInfo::caps`](crate::DeviceInfo::caps) reports.
    pub fn with_caps(caps: Caps) -> DeviceLife {
        DeviceLife(Arc::new(Shared {
            caps,
            ..Shared::default()
        }))
    }

    /// The device's capabilities, as given to [`with_caps`](Self::with_caps).
    #[inline]
    pub fn caps(&self) -> Caps {
        self.0.caps
    }

    /// A new stream of the device's events: what [`Device::events`](crate::Device::events)
    /// returns. Fails with `DeviceLost` once the device is lost.
    pub fn subscribe(&self) -> Result<EventStream<DeviceEvent>> {
        self.0.events.subscribe()
    }

    /// Publishes an event of the device, after doing what it implies: `QpFatal`,
    /// `QpRequestError` and `QpAccessError` mark the QP in ERROR
    /// ([`qp_entered_error`](Self::qp_entered_error)); `DeviceRemoved` and `DeviceFatal` mark
    /// the device [lost](Self::lose). So a ULP that reacts to the event (drains the QP, drops
    /// the device) finds the kit knowing it already. Events after the device's last event are
    /// dropped (its hub is closed). Never blocks; safe to call from any thread, under the
    /// provider's own locks.
    pub fn report(&self, event: DeviceEvent) {
        match event {
            DeviceEvent::DeviceRemoved | DeviceEvent::DeviceFatal => {
                let why = format!("the device is gone: {event}");
                self.lose(event, why);
            }
            DeviceEvent::QpFatal { qp_num }
            | DeviceEvent::QpRequestError { qp_num }
            | DeviceEvent::QpAccessError { qp_num } => {
                self.qp_entered_error(qp_num);
                self.0.events.publish(event);
            }
            _ => self.0.events.publish(event),
        }
    }

    /// Marks the device lost, then publishes `last` (its last event: `DeviceRemoved` or
    /// `DeviceFatal`) and ends every event stream right behind it. `why` becomes the message of
    /// every later `DeviceLost` error and of the streams' end. Only the first loss counts: a
    /// second call changes nothing and publishes nothing.
    pub fn lose(&self, last: DeviceEvent, why: impl Into<String>) {
        if self.0.lost.set(why.into()).is_err() {
            return;
        }
        let why = self.0.lost.get().expect("set above");
        self.0
            .events
            .publish_and_close(last, ErrorKind::DeviceLost, why.clone());
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
    /// what a device that drops posts in ERROR will never complete. The kit checks the news
    /// against the device's [state](super::RawQp::state) at the next post, so a report that
    /// arrives late (after the ULP reset the QP) dooms nothing; report it only once that state
    /// reads ERROR. (Without it the kit learns
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
