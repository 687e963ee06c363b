//! One connection-manager event channel per open device, read by one thread that routes each
//! event to the QP or listener whose ID it is about, and reports what the device's users must
//! learn (a connection gone, the device removed) as the core's events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyverbs::{DeviceEvent, Result};

use crate::cm::{CmChannel, CmEvent, CmEventKind, CmId};
use crate::events::POLL_INTERVAL;

/// Events for one owner, in order, with a wait that has a deadline.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<CmEvent>>,
    arrived: Condvar,
}

impl Inbox {
    fn push(&self, event: CmEvent) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(event);
        self.arrived.notify_all();
    }

    /// The next event, waiting until `deadline` but no longer than one [`POLL_INTERVAL`]
    /// (`None` then): the caller looks whether its device was lost between the slices.
    pub(crate) fn pop(&self, deadline: Instant) -> Option<CmEvent> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = queue.pop_front() {
            return Some(e);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let slice = (deadline - now).min(POLL_INTERVAL);
        queue = self
            .arrived
            .wait_timeout(queue, slice)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        queue.pop_front()
    }
}

/// Who an ID's events go to.
pub(crate) enum Route {
    /// A listening ID: its connect requests.
    Listener(Arc<Inbox>),
    /// A connection of the QP `qp_num`, driven by `driver`.
    Conn {
        driver: Arc<crate::provider::connect::Driver>,
        qp_num: u32,
    },
}

type Routes = Arc<Mutex<HashMap<u64, Route>>>;

/// The device's CM event channel and its reader.
pub(crate) struct Hub {
    channel: Arc<CmChannel>,
    routes: Routes,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    /// Starts reading; `sink` gets the events the device's users must learn of:
    /// [`DeviceEvent::Disconnected`] for a connection the peer or the network ended, and
    /// [`DeviceEvent::DeviceRemoved`] when the CM says the device is going away.
    pub(crate) fn start(sink: impl Fn(DeviceEvent) + Send + 'static) -> Result<Hub> {
        let channel = CmChannel::new()?;
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ch, r, s) = (channel.clone(), routes.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("anyverbs-cm".into())
            .spawn(move || read(ch, r, s, sink))
            .map_err(|e| crate::error::io_failed("spawning the CM event reader", e))?;
        Ok(Hub {
            channel,
            routes,
            stop,
            thread: Some(thread),
        })
    }

    /// A new ID on the device's channel.
    pub(crate) fn create_id(&self) -> Result<CmId> {
        self.channel.create_id()
    }

    /// Sends the events of the ID `token` to `route` from now on.
    pub(crate) fn route(&self, token: u64, route: Route) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, route);
    }

    /// Stops routing the ID `token`'s events (its owner is going).
    pub(crate) fn unroute(&self, token: u64) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token);
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

fn read(
    channel: Arc<CmChannel>,
    routes: Routes,
    stop: Arc<AtomicBool>,
    sink: impl Fn(DeviceEvent),
) {
    while !stop.load(Ordering::Relaxed) {
        let event = match channel.next_event(Instant::now() + POLL_INTERVAL) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%e, "reading CM events failed; the reader stops");
                return;
            }
        };
        tracing::debug!(kind = ?event.kind, token = event.token, "CM event");
        if event.kind == CmEventKind::DeviceRemoval {
            sink(DeviceEvent::DeviceRemoved);
        }
        let key = event.listener.unwrap_or(event.token);
        // The route is looked up and let go of before anything runs: a driver's step may end
        // its connection, which unroutes it.
        enum To {
            Inbox(Arc<Inbox>),
            Driver(Arc<crate::provider::connect::Driver>, u32),
            Nobody,
        }
        let to = match routes.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            Some(Route::Listener(inbox)) if event.kind == CmEventKind::ConnectRequest => {
                To::Inbox(inbox.clone())
            }
            Some(Route::Conn { driver, qp_num }) => To::Driver(driver.clone(), *qp_num),
            _ => To::Nobody,
        };
        match to {
            To::Inbox(inbox) => inbox.push(event),
            To::Driver(driver, qp_num) => {
                // The connection learns of its end before the ULP does: a ULP that reacts to
                // the event (disconnects, waits) finds the connection already knowing it.
                let ended = event.kind == CmEventKind::Disconnected;
                driver.on_event(event);
                if ended {
                    sink(DeviceEvent::Disconnected { qp_num });
                }
            }
            // A request on a listener already gone: dropping its ID rejects it.
            To::Nobody => {}
        }
    }
}
