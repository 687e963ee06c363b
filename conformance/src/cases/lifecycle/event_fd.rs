//! The event stream's file descriptor, as an event loop watches it.

use std::time::{Duration, Instant};

use anyverbs::{Device, DeviceEvent, ErrorKind, Fault, Provider, QueuePair};

use super::inject;
use crate::case::{CaseError, CaseResult};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

#[cfg(unix)]
pub(super) fn event_fd_readable<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let pair = ctx.pair()?;
    let events = pair.device.events()?;
    let fd = events.fd()?;
    let wait = ctx.timeout().min(Duration::from_secs(2));
    ensure!(
        !crate::ctx::fd_readable(fd, Duration::ZERO)?,
        "the event fd is readable with no event waiting"
    );
    let qp_num = pair.a.qp_num();
    inject(ctx, &Fault::KillQp { qp_num })?;
    ensure!(
        crate::ctx::fd_readable(fd, wait)?,
        "the event fd did not become readable within {wait:?} of a QP fatal error"
    );
    let got = events.try_recv()?;
    ensure_eq!(
        got,
        Some(DeviceEvent::QpFatal { qp_num }),
        "the event waiting when the fd was readable"
    );
    // Events are asynchronous (a device's arrive through the kernel, a plugin's through a
    // relay): read what else the kill caused until the stream has been quiet for a while.
    loop {
        match events.recv(Instant::now() + EVENTS_QUIET) {
            Ok(e) => ensure!(
                !e.is_device_lost(),
                "killing a QP reported {e:?} on the device"
            ),
            Err(e) if e.kind() == ErrorKind::TimedOut => break,
            Err(e) => return Err(e.into()),
        }
    }
    ensure!(
        !crate::ctx::fd_readable(fd, Duration::ZERO)?,
        "the event fd stays readable after every event was read"
    );
    inject(ctx, &Fault::Unplug)?;
    ensure!(
        crate::ctx::fd_readable(fd, wait)?,
        "the event fd did not become readable within {wait:?} of an unplug"
    );
    // A QP event of the kill may still arrive first; the device's removal must follow.
    let mut got = events.try_recv()?;
    while let Some(e) = &got
        && e.is_qp_failure()
    {
        got = events.recv(Instant::now() + wait).map(Some)?;
    }
    ensure_eq!(
        got,
        Some(DeviceEvent::DeviceRemoved),
        "the event waiting after the unplug"
    );
    match events.try_recv() {
        Err(e) if e.kind() == ErrorKind::DeviceLost => {}
        other => {
            return Err(CaseError::Failed(format!(
                "after DeviceRemoved, try_recv must fail with DeviceLost; got {other:?}"
            )));
        }
    }
    ensure!(
        crate::ctx::fd_readable(fd, Duration::ZERO)?,
        "the event fd is not readable once the stream has ended: an event loop would never \
         learn of the end"
    );
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn event_fd_readable<P: Provider>(_ctx: &Ctx<'_, P>) -> CaseResult {
    Err(CaseError::NotRun(
        "event stream file descriptors exist on Unix only".into(),
    ))
}

/// How long a stream must stay quiet before a case takes it that a fault's events have all
/// arrived (events are asynchronous: a real device's come through the kernel, a plugin's through
/// a relay thread).
#[cfg(unix)]
const EVENTS_QUIET: Duration = Duration::from_millis(200);
