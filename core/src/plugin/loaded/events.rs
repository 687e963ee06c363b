//! Relaying a plugin's event stream into a stream of this program.

use std::time::Duration;

use super::Handle;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{EventHub, EventStream};

/// What the event pump relays.
pub(super) enum Pumped<E> {
    Event(E),
    Missed(u64),
    /// An event the loader refused (an unknown code, a bad name): it is lost, and the reader
    /// is told it missed one; the stream goes on.
    Refused(Error),
}

/// How long the pump waits in the plugin before it checks whether anyone still listens.
pub(super) const PUMP_POLL: Duration = Duration::from_millis(50);

/// Relays a plugin's event stream into a stream of this program: a thread waits in the plugin
/// and publishes what it gets, so the stream offers everything a provider's own does
/// (deadlines, the readiness fd, wakeups, missed-event notices). The thread ends, and releases
/// the plugin's stream, when the stream ends, its reader drops it, or the program lets go of
/// the provider and every handle of it (the stream then ends with `Destroyed`, as a linked
/// provider's does).
///
/// `is_last` says which events end a stream (a device's loss): the relay publishes such an event
/// and the end in one step, as the provider's own stream does, so no reader ever sees the event
/// without the end right behind it.
///
/// An event the loader refuses costs that event alone: the reader is told it missed one, and
/// the stream goes on (a program takes an ended device stream for a lost device). Only a call
/// that fails ends the stream.
pub(super) fn pump<S: 'static, E>(
    mut stream: Handle<S>,
    is_last: fn(&E) -> bool,
    recv: impl Fn(&Handle<S>, u64) -> Result<Pumped<E>> + Send + 'static,
) -> Result<EventStream<E>>
where
    E: Clone + Send + 'static,
{
    let hub = EventHub::new();
    let reader = hub.subscribe()?;
    let timeout_ns = PUMP_POLL.as_nanos() as u64;
    // The relay must not keep the provider in use: it watches the program's hold instead.
    stream.user = None;
    let users = stream.shared.users.clone();
    let run = move || {
        while hub.subscribers() > 0 {
            if users.strong_count() == 0 {
                hub.close(ErrorKind::Destroyed, "the event source is gone");
                break;
            }
            let asked = std::time::Instant::now();
            match recv(&stream, timeout_ns) {
                Ok(Pumped::Event(e)) if is_last(&e) => {
                    // The provider's stream ends right after this event; take its message if it
                    // is already there.
                    let message = match recv(&stream, 0) {
                        Err(end) if end.kind() == ErrorKind::DeviceLost => {
                            end.message().to_string()
                        }
                        _ => "the device was lost".to_string(),
                    };
                    hub.publish_and_close(e, ErrorKind::DeviceLost, message);
                    break;
                }
                Ok(Pumped::Event(e)) => hub.publish(e),
                Ok(Pumped::Missed(n)) => hub.publish_missed(n),
                Ok(Pumped::Refused(e)) => {
                    tracing::warn!(error = %e, "an event of a plugin was refused");
                    hub.publish_missed(1);
                }
                // A plugin that returns before its timeout (one that turns nanoseconds into
                // whole seconds, say) must not make this thread spin: it waits out the rest.
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    std::thread::sleep(PUMP_POLL.saturating_sub(asked.elapsed()));
                }
                // A provider that reports dropped events as an error: the stream goes on.
                Err(e) if e.kind() == ErrorKind::Overflow => hub.publish_missed(1),
                Err(e) => {
                    hub.close(e.kind(), e.message());
                    break;
                }
            }
        }
        drop(stream);
    };
    std::thread::Builder::new()
        .name("anyverbs-plugin-events".into())
        .spawn(run)
        .map_err(|e| {
            Error::new(
                ErrorKind::ResourceExhausted,
                format!("cannot start the thread that relays a plugin's events: {e}"),
            )
        })?;
    Ok(reader)
}
