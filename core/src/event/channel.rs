//! [`EventHub`] and [`EventStream`]: a broadcast channel for rare events, readable with a
//! deadline or through a file descriptor, and [`Wakeup`], which lets one thread wait on several
//! streams at once.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};

/// Most events a stream holds for its reader. When a slow reader lets more pile up, the oldest
/// are dropped (the newest, such as a device removal, matter most) and the reader is told how
/// many it missed ([`ErrorKind::Overflow`]).
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data inconsistent (every critical
    // section is a few field updates), so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets one thread wait until any of several [`EventStream`]s (or anything else that calls
/// [`notify`](Wakeup::notify)) has news, without a thread per stream.
///
/// Read the [`generation`](Wakeup::generation), check every source without blocking, then
/// [`wait`](Wakeup::wait) for the generation to change.
#[derive(Debug, Default)]
pub struct Wakeup {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Wakeup {
    /// A new wakeup, to share between the sources and the waiter.
    pub fn new() -> Arc<Wakeup> {
        Arc::new(Wakeup::default())
    }

    /// Counts one change and wakes every waiter.
    pub fn notify(&self) {
        *lock(&self.generation) += 1;
        self.cond.notify_all();
    }

    /// How many changes there were so far.
    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Waits until the generation differs from `seen` or `deadline` passes; true if it changed.
    pub fn wait(&self, seen: u64, deadline: Instant) -> bool {
        let mut generation = lock(&self.generation);
        loop {
            if *generation != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            generation = match self.cond.wait_timeout(generation, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// Why a stream ends: the hub was closed (a lost device) or dropped.
#[derive(Debug, Clone)]
struct Closed {
    kind: ErrorKind,
    message: String,
}

struct Queue<E> {
    items: VecDeque<E>,
    /// Events dropped because the queue was full, not yet reported.
    missed: u64,
    closed: Option<Closed>,
    wakeups: Vec<Weak<Wakeup>>,
    /// Whether the readiness socket holds a byte.
    #[cfg(unix)]
    signalled: bool,
}

impl<E> Queue<E> {
    fn has_news(&self) -> bool {
        !self.items.is_empty() || self.missed > 0 || self.closed.is_some()
    }
}

/// The state one stream shares with its hub.
struct Shared<E> {
    queue: Mutex<Queue<E>>,
    cond: Condvar,
    /// A connected socket pair: the hub writes one byte into `.0` while events are waiting, so
    /// `.1` is readable exactly then. Made on the first call of `as_fd`.
    #[cfg(unix)]
    readiness: std::sync::OnceLock<(
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    )>,
}

impl<E> Shared<E> {
    /// Wakes the stream's reader, its wakeups, and keeps the readiness socket in step with the
    /// queue. Called with the queue locked, after every change.
    fn changed(&self, queue: &mut Queue<E>) {
        self.sync_readiness(queue);
        self.cond.notify_all();
        queue.wakeups.retain(|w| match w.upgrade() {
            Some(w) => {
                w.notify();
                true
            }
            None => false,
        });
    }

    #[cfg(unix)]
    fn sync_readiness(&self, queue: &mut Queue<E>) {
        use std::io::{Read, Write};
        let Some((writer, reader)) = self.readiness.get() else {
            return;
        };
        let want = queue.has_news();
        if want == queue.signalled {
            return;
        }
        if want {
            // One byte into an empty non-blocking socket cannot block or fail short of the
            // process running out of socket buffers; then the fd just stays unreadable and the
            // blocking interface still works.
            queue.signalled = (&*writer).write(&[1]).is_ok();
        } else {
            let mut sink = [0u8; 8];
            while matches!((&*reader).read(&mut sink), Ok(n) if n > 0) {}
            queue.signalled = false;
        }
    }

    #[cfg(not(unix))]
    fn sync_readiness(&self, _queue: &mut Queue<E>) {}
}

/// What [`EventStream::recv_next`] found.
pub(crate) enum Next<E> {
    /// An event.
    Event(E),
    /// This many events were dropped because the reader fell behind.
    Missed(u64),
}

/// The error a reader gets once after `missed` events were dropped.
fn missed_error(missed: u64) -> Error {
    Error::new(
        ErrorKind::Overflow,
        format!("{missed} events were dropped because the reader fell behind"),
    )
}

/// The sending side of a broadcast channel of events: every [`EventStream`] subscribed to it
/// receives every event published after it subscribed.
///
/// Providers keep one hub per device (and one for their monitor). Publishing never blocks: a
/// reader that falls behind loses the oldest events and is told so.
pub struct EventHub<E> {
    inner: Mutex<HubInner<E>>,
}

struct HubInner<E> {
    subscribers: Vec<Weak<Shared<E>>>,
    closed: Option<Closed>,
}

impl<E> HubInner<E> {
    /// Ends every stream with `closed` (each returns its queued events first) and refuses later
    /// subscriptions.
    fn end_streams(&mut self, closed: Closed) {
        for shared in self.subscribers.drain(..).filter_map(|s| s.upgrade()) {
            let mut queue = lock(&shared.queue);
            queue.closed = Some(closed.clone());
            shared.changed(&mut queue);
        }
        self.closed = Some(closed);
    }
}

impl<E: Clone + Send + 'static> Default for EventHub<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Clone + Send + 'static> EventHub<E> {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        EventHub {
            inner: Mutex::new(HubInner {
                subscribers: Vec::new(),
                closed: None,
            }),
        }
    }

    /// A new stream that receives every event published from now on. Subscribing to a closed
    /// hub fails with the error it was closed with.
    pub fn subscribe(&self) -> Result<EventStream<E>> {
        let mut inner = lock(&self.inner);
        if let Some(closed) = &inner.closed {
            return Err(Error::new(closed.kind, closed.message.clone()));
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                missed: 0,
                closed: None,
                wakeups: Vec::new(),
                #[cfg(unix)]
                signalled: false,
            }),
            cond: Condvar::new(),
            #[cfg(unix)]
            readiness: std::sync::OnceLock::new(),
        });
        inner.subscribers.retain(|s| s.strong_count() > 0);
        inner.subscribers.push(Arc::downgrade(&shared));
        Ok(EventStream { shared })
    }

    /// Sends `event` to every live subscriber. Ignored once the hub is closed.
    pub fn publish(&self, event: E) {
        let mut inner = lock(&self.inner);
        if inner.closed.is_some() {
            return;
        }
        inner.subscribers.retain(|s| match s.upgrade() {
            Some(shared) => {
                let mut queue = lock(&shared.queue);
                if queue.items.len() >= EVENT_QUEUE_CAPACITY {
                    queue.items.pop_front();
                    queue.missed += 1;
                }
                queue.items.push_back(event.clone());
                shared.changed(&mut queue);
                true
            }
            None => false,
        });
    }

    /// Tells every live subscriber that `missed` events were dropped before it could see them
    /// (used where events are relayed from another stream that overflowed). Ignored once the
    /// hub is closed.
    pub(crate) fn publish_missed(&self, missed: u64) {
        let inner = lock(&self.inner);
        if inner.closed.is_some() || missed == 0 {
            return;
        }
        for shared in inner.subscribers.iter().filter_map(Weak::upgrade) {
            let mut queue = lock(&shared.queue);
            queue.missed = queue.missed.saturating_add(missed);
            shared.changed(&mut queue);
        }
    }

    /// Publishes `event` and closes the hub as one step, so that no reader can see the event
    /// without the end right behind it: how a provider's event thread reports a device's last
    /// event ([`DeviceEvent::DeviceRemoved`](crate::DeviceEvent::DeviceRemoved),
    /// [`DeviceEvent::DeviceFatal`](crate::DeviceEvent::DeviceFatal)), and how a relayed stream
    /// ends. Does nothing on a closed hub.
    pub fn publish_and_close(&self, event: E, kind: ErrorKind, message: impl Into<String>) {
        let mut inner = lock(&self.inner);
        if inner.closed.is_some() {
            return;
        }
        let closed = Closed {
            kind,
            message: message.into(),
        };
        // The event and the end go into each queue under one lock, so no reader sees one
        // without the other.
        for shared in inner.subscribers.drain(..).filter_map(|s| s.upgrade()) {
            let mut queue = lock(&shared.queue);
            if queue.items.len() >= EVENT_QUEUE_CAPACITY {
                queue.items.pop_front();
                queue.missed += 1;
            }
            queue.items.push_back(event.clone());
            queue.closed = Some(closed.clone());
            shared.changed(&mut queue);
        }
        inner.closed = Some(closed);
    }

    /// Ends every stream: each returns the events still queued, then fails with `kind` and
    /// `message` at once, without blocking. Later subscriptions fail the same way; a second close
    /// is ignored.
    pub fn close(&self, kind: ErrorKind, message: impl Into<String>) {
        let mut inner = lock(&self.inner);
        if inner.closed.is_some() {
            return;
        }
        inner.end_streams(Closed {
            kind,
            message: message.into(),
        });
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner).closed.is_some()
    }

    /// Number of streams still subscribed.
    pub fn subscribers(&self) -> usize {
        let mut inner = lock(&self.inner);
        inner.subscribers.retain(|s| s.strong_count() > 0);
        inner.subscribers.len()
    }
}

impl<E> Drop for EventHub<E> {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if inner.closed.is_none() {
            inner.end_streams(Closed {
                kind: ErrorKind::Destroyed,
                message: "the event source is gone".into(),
            });
        }
    }
}

/// The receiving side: the events of one device or of a provider's monitor, in order.
///
/// - Blocking code calls [`recv`](Self::recv) with a deadline.
/// - An event loop registers the stream's file descriptor (`AsFd`, Unix only), which is readable
///   while an event, a missed-events notice or the end of the stream is waiting, then calls
///   [`try_recv`](Self::try_recv) until it returns `Ok(None)`.
/// - A thread watching several streams attaches one [`Wakeup`] to all of them
///   ([`notify`](Self::notify)).
///
/// A stream never blocks past its deadline, and never at all once its source is closed.
pub struct EventStream<E> {
    shared: Arc<Shared<E>>,
}

impl<E> EventStream<E> {
    /// The next event, without waiting: `Ok(None)` if there is none yet.
    ///
    /// Errors: [`ErrorKind::Overflow`] once after events were dropped because the reader fell
    /// behind (the message says how many; the stream goes on); after the source closed and every
    /// queued event was read, the close's error every time — [`ErrorKind::DeviceLost`] for a
    /// lost device, [`ErrorKind::Destroyed`] when the provider is gone.
    pub fn try_recv(&self) -> Result<Option<E>> {
        let mut queue = lock(&self.shared.queue);
        self.take(&mut queue)
    }

    /// The next event, waiting until `deadline` ([`ErrorKind::TimedOut`]). Errors as
    /// [`try_recv`](Self::try_recv).
    pub fn recv(&self, deadline: Instant) -> Result<E> {
        let mut queue = lock(&self.shared.queue);
        loop {
            if let Some(event) = self.take(&mut queue)? {
                return Ok(event);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timed_out("no event before the deadline"));
            }
            queue = match self.shared.cond.wait_timeout(queue, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    fn take(&self, queue: &mut Queue<E>) -> Result<Option<E>> {
        let result = if queue.missed > 0 {
            let missed = std::mem::take(&mut queue.missed);
            Err(missed_error(missed))
        } else if let Some(event) = queue.items.pop_front() {
            Ok(Some(event))
        } else if let Some(closed) = &queue.closed {
            return Err(Error::new(closed.kind, closed.message.clone()));
        } else {
            return Ok(None);
        };
        self.shared.sync_readiness(queue);
        result
    }

    /// Like [`recv`](Self::recv), but reports missed events as their count rather than as an
    /// error, so that the plugin boundary can carry the count across exactly.
    pub(crate) fn recv_next(&self, deadline: Instant) -> Result<Next<E>> {
        // One locked loop, so that events dropped while waiting are reported as a count too,
        // never as an error.
        let mut queue = lock(&self.shared.queue);
        loop {
            if queue.missed > 0 {
                let missed = std::mem::take(&mut queue.missed);
                self.shared.sync_readiness(&mut queue);
                return Ok(Next::Missed(missed));
            }
            if let Some(event) = queue.items.pop_front() {
                self.shared.sync_readiness(&mut queue);
                return Ok(Next::Event(event));
            }
            if let Some(closed) = &queue.closed {
                return Err(Error::new(closed.kind, closed.message.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timed_out("no event before the deadline"));
            }
            queue = match self.shared.cond.wait_timeout(queue, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Also notifies `wakeup` whenever an event arrives or the stream ends (and once now if
    /// something is already waiting), so one thread can wait on several streams.
    pub fn notify(&self, wakeup: &Arc<Wakeup>) {
        let mut queue = lock(&self.shared.queue);
        queue.wakeups.push(Arc::downgrade(wakeup));
        if queue.has_news() {
            wakeup.notify();
        }
    }

    /// Number of events waiting (not counting a missed-events notice or the end).
    pub fn pending(&self) -> usize {
        lock(&self.shared.queue).items.len()
    }
}

#[cfg(unix)]
impl<E> EventStream<E> {
    /// A file descriptor that is readable while [`try_recv`](Self::try_recv) has something to
    /// return: register it with an event loop (epoll, mio, tokio's `AsyncFd`) for readability,
    /// and never read from it. Made on the first call; fails only when the process is out of
    /// file descriptors.
    pub fn fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        if self.shared.readiness.get().is_none() {
            let pair = std::os::unix::net::UnixStream::pair().map_err(|e| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!("cannot make the event stream's readiness socket: {e}"),
                )
            })?;
            for end in [&pair.0, &pair.1] {
                end.set_nonblocking(true).map_err(|e| {
                    Error::new(
                        ErrorKind::Other,
                        format!("cannot make the readiness socket non-blocking: {e}"),
                    )
                })?;
            }
            // Another thread may have won the race; its pair is as good as ours.
            let _ = self.shared.readiness.set(pair);
        }
        let mut queue = lock(&self.shared.queue);
        self.shared.sync_readiness(&mut queue);
        drop(queue);
        let (_, reader) = self
            .shared
            .readiness
            .get()
            .ok_or_else(|| Error::new(ErrorKind::Other, "readiness socket vanished"))?;
        Ok(reader.as_fd())
    }
}

impl<E> std::fmt::Debug for EventStream<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = lock(&self.shared.queue);
        f.debug_struct("EventStream")
            .field("pending", &queue.items.len())
            .field("closed", &queue.closed.is_some())
            .finish()
    }
}

impl<E> std::fmt::Debug for EventHub<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = lock(&self.inner);
        f.debug_struct("EventHub")
            .field("subscribers", &inner.subscribers.len())
            .field("closed", &inner.closed.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn recv_next_reports_dropped_events_as_a_count_also_while_waiting() {
        // The plugin relay reads with `recv_next`: an overflow must come as a count, never as
        // an error (which would end the relayed stream), however it falls around a wait.
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        for i in 0..EVENT_QUEUE_CAPACITY + 5 {
            hub.publish(i);
        }
        assert!(matches!(s.recv_next(soon()), Ok(Next::Missed(5))));
        assert!(matches!(s.recv_next(soon()), Ok(Next::Event(5))));
        for _ in 6..EVENT_QUEUE_CAPACITY + 5 {
            assert!(matches!(s.recv_next(soon()), Ok(Next::Event(_))));
        }
        // An overflow while the reader waits: events and counts, never an error, add up to the
        // burst.
        let (mut events, mut missed) = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                for i in 0..EVENT_QUEUE_CAPACITY + 3 {
                    hub.publish(i);
                }
            });
            match s.recv_next(soon()) {
                Ok(Next::Event(_)) => (1, 0),
                Ok(Next::Missed(n)) => (0, n),
                Err(e) => panic!("an error while waiting: {e}"),
            }
        });
        loop {
            match s.recv_next(Instant::now()) {
                Ok(Next::Event(_)) => events += 1,
                Ok(Next::Missed(n)) => missed += n,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                    break;
                }
            }
        }
        assert_eq!(events + missed, (EVENT_QUEUE_CAPACITY + 3) as u64);
    }

    #[test]
    fn publish_and_close_delivers_the_event_with_the_end_right_behind_it() {
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        hub.publish_and_close(7, ErrorKind::DeviceLost, "gone");
        assert_eq!(s.try_recv().unwrap(), Some(7));
        assert_eq!(s.try_recv().unwrap_err().kind(), ErrorKind::DeviceLost);
        assert!(hub.is_closed());
        assert_eq!(hub.subscribe().unwrap_err().kind(), ErrorKind::DeviceLost);
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order() {
        let hub = EventHub::new();
        let a = hub.subscribe().unwrap();
        let b = hub.subscribe().unwrap();
        hub.publish(1);
        hub.publish(2);
        for s in [&a, &b] {
            assert_eq!(s.recv(soon()).unwrap(), 1);
            assert_eq!(s.recv(soon()).unwrap(), 2);
            assert_eq!(s.try_recv().unwrap(), None);
        }
    }

    #[test]
    fn a_late_subscriber_sees_only_later_events() {
        let hub = EventHub::new();
        hub.publish(1);
        let s = hub.subscribe().unwrap();
        hub.publish(2);
        assert_eq!(s.recv(soon()).unwrap(), 2);
    }

    #[test]
    fn recv_times_out_at_the_deadline() {
        let hub = EventHub::<u32>::new();
        let s = hub.subscribe().unwrap();
        let start = Instant::now();
        let err = s.recv(start + Duration::from_millis(20)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn close_delivers_what_is_queued_then_fails_without_blocking() {
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        hub.publish(7);
        hub.close(ErrorKind::DeviceLost, "mock0 was removed");
        hub.publish(8); // ignored after close
        assert_eq!(s.recv(soon()).unwrap(), 7);
        let start = Instant::now();
        for _ in 0..3 {
            let err = s.recv(soon()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DeviceLost);
            assert_eq!(err.message(), "mock0 was removed");
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(hub.subscribe().unwrap_err().kind(), ErrorKind::DeviceLost);
    }

    #[test]
    fn dropping_the_hub_ends_the_stream() {
        let hub = EventHub::<u8>::new();
        let s = hub.subscribe().unwrap();
        drop(hub);
        assert_eq!(s.recv(soon()).unwrap_err().kind(), ErrorKind::Destroyed);
    }

    #[test]
    fn a_slow_reader_loses_the_oldest_and_is_told_how_many() {
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        for i in 0..EVENT_QUEUE_CAPACITY + 3 {
            hub.publish(i);
        }
        let err = s.try_recv().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overflow);
        assert!(err.message().starts_with("3 events"), "{}", err.message());
        assert_eq!(s.try_recv().unwrap(), Some(3));
        assert_eq!(s.pending(), EVENT_QUEUE_CAPACITY - 1);
    }

    #[test]
    fn dropped_streams_are_forgotten() {
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        assert_eq!(hub.subscribers(), 1);
        drop(s);
        hub.publish(1);
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn a_blocked_reader_wakes_when_an_event_is_published() {
        let hub = Arc::new(EventHub::new());
        let s = hub.subscribe().unwrap();
        let publisher = {
            let hub = Arc::clone(&hub);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                hub.publish(42);
            })
        };
        assert_eq!(s.recv(soon()).unwrap(), 42);
        publisher.join().unwrap();
    }

    #[test]
    fn one_wakeup_watches_several_streams() {
        let devices = EventHub::new();
        let monitor = EventHub::new();
        let a = devices.subscribe().unwrap();
        let b = monitor.subscribe().unwrap();
        let wakeup = Wakeup::new();
        a.notify(&wakeup);
        b.notify(&wakeup);
        let seen = wakeup.generation();
        assert!(!wakeup.wait(seen, Instant::now() + Duration::from_millis(5)));
        monitor.publish("added");
        assert!(wakeup.wait(seen, soon()));
        assert_eq!(a.try_recv().unwrap(), None::<&str>);
        assert_eq!(b.try_recv().unwrap(), Some("added"));
    }

    #[cfg(unix)]
    #[test]
    fn the_fd_is_readable_exactly_while_something_waits() {
        fn readable(s: &EventStream<u32>) -> bool {
            poll_readable(s.fd().unwrap())
        }

        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        assert!(!readable(&s));
        hub.publish(1);
        hub.publish(2);
        assert!(readable(&s));
        assert_eq!(s.try_recv().unwrap(), Some(1));
        assert!(readable(&s));
        assert_eq!(s.try_recv().unwrap(), Some(2));
        assert!(!readable(&s));
        hub.close(ErrorKind::DeviceLost, "gone");
        assert!(readable(&s), "the end of the stream is news too");
        assert!(s.try_recv().is_err());
        assert!(readable(&s), "and it stays news");
    }

    #[cfg(unix)]
    #[test]
    fn an_fd_asked_for_late_is_readable_for_events_already_queued() {
        let hub = EventHub::new();
        let s = hub.subscribe().unwrap();
        hub.publish(1u32);
        assert!(poll_readable(s.fd().unwrap()));
    }

    /// Asks `poll(2)`, as an event loop would, whether `fd` is readable now.
    #[cfg(unix)]
    #[allow(unsafe_code)]
    fn poll_readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call, `fd` is open (borrowed
        // from a live stream), and a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert!(n >= 0, "poll failed");
        n == 1 && pfd.revents & libc::POLLIN != 0
    }
}
