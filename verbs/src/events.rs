//! The two event threads of an open device, reporting the core's [`DeviceEvent`]s to the
//! device's [`DeviceLife`], which marks in the provider kit what each implies (a QP's fatal
//! error, the device's loss) and publishes it:
//!
//! - [`AsyncEventThread`] reads the verbs async event fd (`ibv_get_async_event`), acknowledging
//!   each event at once: QP and CQ errors, SQ drained, port changes, device fatal.
//! - [`RemovalWatch`] keeps one CM ID bound to the device's IP address, with no connection, to
//!   learn of removal. rxe and siw (and every driver that cannot disassociate) report removal
//!   only as `RDMA_CM_EVENT_DEVICE_REMOVAL` on CM IDs — never `IBV_EVENT_DEVICE_FATAL` — and the
//!   kernel's `rdma link delete` waits until every object of the device is released. On removal
//!   the watch reports [`DeviceEvent::DeviceRemoved`] (the device is lost and its event streams
//!   end) and destroys its own ID at once; the rest is the owner's to release.
//!
//! A device with no IP address cannot be watched this way; its removal is learnt from
//! `DEVICE_FATAL` (drivers that disassociate) and from the device monitor
//! ([`crate::monitor`]).
//!
//! Both threads stop when their handle is dropped (within [`POLL_INTERVAL`]), releasing what
//! they hold — the async thread holds the device context, which must be closed before a removed
//! device can finish going away.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyverbs::kit::DeviceLife;
use anyverbs::{DeviceEvent, Error, ErrorKind};
use sideway::ibverbs::device_context::DeviceContext;

use crate::cm::{CmChannel, CmEventKind, CmId};
use crate::raw::async_events::{self, AsyncElement, RawAsyncEvent};

/// How long a thread waits for its fd before it looks at its stop flag.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The core's event for a verbs async event, or `None` for one a ULP does not need (COMM_EST,
/// path migration, LID/PKEY/SM changes, SRQ and WQ events). `cq_num` names a CQ by its key.
pub fn translate(
    event: RawAsyncEvent,
    cq_num: &dyn Fn(usize) -> Option<u32>,
) -> Option<DeviceEvent> {
    let qp = |f: fn(u32) -> DeviceEvent| match event.element {
        AsyncElement::Qp(n) => Some(f(n)),
        _ => None,
    };
    let port = |f: fn(u8) -> DeviceEvent| match event.element {
        AsyncElement::Port(p) => Some(f(p)),
        _ => None,
    };
    match event.event_type {
        0 => match event.element {
            AsyncElement::Cq(key) => cq_num(key).map(|cq_num| DeviceEvent::CqError { cq_num }),
            _ => None,
        },
        1 => qp(|qp_num| DeviceEvent::QpFatal { qp_num }),
        2 => qp(|qp_num| DeviceEvent::QpRequestError { qp_num }),
        3 => qp(|qp_num| DeviceEvent::QpAccessError { qp_num }),
        5 => qp(|qp_num| DeviceEvent::SqDrained { qp_num }),
        16 => qp(|qp_num| DeviceEvent::LastWqeReached { qp_num }),
        8 => Some(DeviceEvent::DeviceFatal),
        9 => port(|port| DeviceEvent::PortActive { port }),
        10 => port(|port| DeviceEvent::PortDown { port }),
        18 => port(|port| DeviceEvent::GidChange { port }),
        _ => None,
    }
}

/// The core's event for a CM event about a connection of QP `qp_num` through port `port`:
/// `Disconnected`, `DeviceRemoval` and `AddrChange` are lifecycle events; the rest belong to
/// connection setup.
pub fn translate_cm(kind: CmEventKind, qp_num: u32, port: u8) -> Option<DeviceEvent> {
    match kind {
        CmEventKind::Disconnected => Some(DeviceEvent::Disconnected { qp_num }),
        CmEventKind::DeviceRemoval => Some(DeviceEvent::DeviceRemoved),
        CmEventKind::AddrChange => Some(DeviceEvent::AddressChange { port }),
        _ => None,
    }
}

struct Stopper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stopper {
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A thread that drops its own handle (it held the last reference to its owner)
            // cannot wait for itself: it sees the flag and ends on its own.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The thread reading a device's verbs async events. Stops when dropped.
pub struct AsyncEventThread {
    stopper: Stopper,
}

impl std::fmt::Debug for AsyncEventThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEventThread").finish_non_exhaustive()
    }
}

impl Drop for AsyncEventThread {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

impl AsyncEventThread {
    /// Starts reading the async events of `context`, reporting them to `life`; `cq_num` names
    /// the CQs.
    pub fn spawn(
        context: Arc<DeviceContext>,
        life: DeviceLife,
        cq_num: Arc<dyn Fn(usize) -> Option<u32> + Send + Sync>,
    ) -> Result<AsyncEventThread, Error> {
        Self::spawn_with(context, move |event| life.report(event), cq_num)
    }

    /// [`spawn`](Self::spawn), handing each event to `sink` instead: a provider that tracks
    /// state the event changes (a QP's fatal error puts it in ERROR) records that first, then
    /// reports the event to its [`DeviceLife`].
    pub fn spawn_with(
        context: Arc<DeviceContext>,
        sink: impl Fn(DeviceEvent) + Send + 'static,
        cq_num: Arc<dyn Fn(usize) -> Option<u32> + Send + Sync>,
    ) -> Result<AsyncEventThread, Error> {
        // SAFETY: the context is live (we hold it).
        let fd = unsafe { async_events::set_nonblocking(context.context()) }
            .map_err(|e| crate::error::io_failed("fcntl(O_NONBLOCK) on the async fd", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("anyverbs-async".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match crate::wait::readable(fd, Instant::now() + POLL_INTERVAL) {
                        Ok(false) => continue,
                        Ok(true) => {}
                        Err(_) => break,
                    }
                    loop {
                        // SAFETY: the context is live (the thread holds it) and its fd is
                        // non-blocking.
                        match unsafe { async_events::next(context.context()) } {
                            Ok(Some(raw)) => {
                                tracing::debug!(?raw, "verbs async event");
                                if let Some(event) = translate(raw, &*cq_num) {
                                    sink(event);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(%e, "reading verbs async events failed; the thread stops");
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| crate::error::io_failed("spawning the async event thread", e))?;
        Ok(AsyncEventThread {
            stopper: Stopper {
                stop,
                thread: Some(thread),
            },
        })
    }
}

/// A CM ID bound to a device's IP address, kept only to learn of the device's removal.
pub struct RemovalWatch {
    stopper: Stopper,
    address: IpAddr,
}

impl std::fmt::Debug for RemovalWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemovalWatch")
            .field("address", &self.address)
            .finish()
    }
}

impl Drop for RemovalWatch {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

impl RemovalWatch {
    /// Binds a CM ID to the first address of `netdev` and checks that it landed on the device
    /// `device` (by name and node GUID, host order); reports [`DeviceEvent::DeviceRemoved`] to
    /// `life` when the device goes. `Ok(None)` when the netdev has no IP address: nothing
    /// can be watched this way.
    pub fn start(
        device: &str,
        node_guid: u64,
        netdev: &str,
        life: DeviceLife,
    ) -> Result<Option<RemovalWatch>, Error> {
        Self::start_with(device, node_guid, netdev, move |event| life.report(event))
    }

    /// [`start`](Self::start), handing the removal to `sink` instead.
    pub fn start_with(
        device: &str,
        node_guid: u64,
        netdev: &str,
        sink: impl Fn(DeviceEvent) + Send + 'static,
    ) -> Result<Option<RemovalWatch>, Error> {
        let Some(address) = crate::netdev::addresses(netdev)?.into_iter().next() else {
            return Ok(None);
        };
        let channel = CmChannel::new()?;
        let id = channel.create_id()?;
        id.bind(crate::netdev::bind_address(netdev, address)?)?;
        match id.device() {
            Some((name, guid, _)) if name == device && guid == node_guid => {}
            other => {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "a CM ID bound to {address} ({netdev}) landed on {other:?}, not on {device}"
                    ),
                ));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("anyverbs-removal".into())
            .spawn(move || watch(channel, id, sink, flag))
            .map_err(|e| crate::error::io_failed("spawning the removal watch", e))?;
        Ok(Some(RemovalWatch {
            stopper: Stopper {
                stop,
                thread: Some(thread),
            },
            address,
        }))
    }

    /// The address the watch is bound to.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

fn watch(channel: Arc<CmChannel>, id: CmId, sink: impl Fn(DeviceEvent), stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match channel.next_event(Instant::now() + POLL_INTERVAL) {
            Ok(Some(e)) if e.kind == CmEventKind::DeviceRemoval => {
                // Let go of the device first: the ID holds librdmacm's context on it, which
                // librdmacm closes only once told to look (see forget_removed_devices).
                drop(id);
                drop(channel);
                crate::cm::forget_removed_devices();
                sink(DeviceEvent::DeviceRemoved);
                return;
            }
            Ok(Some(e)) => tracing::debug!(kind = ?e.kind, "removal watch: ignoring a CM event"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%e, "removal watch: reading CM events failed; the watch stops");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_events_become_the_cores_device_events() {
        let none = |_: usize| None;
        let qp = |t| RawAsyncEvent {
            event_type: t,
            element: AsyncElement::Qp(7),
        };
        assert_eq!(
            translate(qp(1), &none),
            Some(DeviceEvent::QpFatal { qp_num: 7 })
        );
        assert_eq!(
            translate(qp(5), &none),
            Some(DeviceEvent::SqDrained { qp_num: 7 })
        );
        assert_eq!(
            translate(qp(4), &none),
            None,
            "COMM_EST is not a lifecycle event"
        );
        let fatal = RawAsyncEvent {
            event_type: 8,
            element: AsyncElement::Other,
        };
        assert_eq!(translate(fatal, &none), Some(DeviceEvent::DeviceFatal));
        let cq = RawAsyncEvent {
            event_type: 0,
            element: AsyncElement::Cq(0x1000),
        };
        assert_eq!(
            translate(cq, &|k| (k == 0x1000).then_some(3)),
            Some(DeviceEvent::CqError { cq_num: 3 })
        );
        let newer = RawAsyncEvent {
            event_type: 4242,
            element: AsyncElement::Other,
        };
        assert_eq!(translate(newer, &none), None);
    }

    #[test]
    fn cm_events_become_lifecycle_events_where_they_are_ones() {
        assert_eq!(
            translate_cm(CmEventKind::Disconnected, 9, 1),
            Some(DeviceEvent::Disconnected { qp_num: 9 })
        );
        assert_eq!(
            translate_cm(CmEventKind::DeviceRemoval, 9, 1),
            Some(DeviceEvent::DeviceRemoved)
        );
        assert_eq!(
            translate_cm(CmEventKind::AddrChange, 9, 2),
            Some(DeviceEvent::AddressChange { port: 2 })
        );
        assert_eq!(translate_cm(CmEventKind::Established, 9, 1), None);
    }
}
