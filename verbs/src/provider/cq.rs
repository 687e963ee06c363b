//! Completion queues and completion channels.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyverbs::kit::{RawChannel, RawCq};
use anyverbs::{Completion, Error, ErrorKind, Result};

use super::device::DeviceCore;
use super::held::{Held, Kind};
use crate::objects::{CompletionChannel, Cq};
use crate::raw::core_path;

/// Completions a CQ holds beyond the depth the ULP asked for: the drain's markers (one per work
/// queue attached, [`RawCq::reserve`]). The device's CQ is made this much larger at once:
/// rdma-core cannot be relied on to resize one (siw cannot).
pub const MARKER_ROOM: u32 = 256;

/// How long a wait sleeps at most before it looks whether the device was lost.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// How often a wait on a CQ whose notifications belong to the ULP polls.
const NAP: Duration = Duration::from_millis(1);

/// An eventfd: what [`RawCq::wake`] writes and a wait watches.
pub(crate) struct Wake(OwnedFd);

impl Wake {
    fn new() -> Result<Wake> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(crate::error::io_failed(
                "eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the fd was just opened and is owned by nobody else.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; a full counter (EAGAIN)
        // already means "woken".
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd we own.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// Waits until `fds` has a readable fd or `timeout` passes; returns which are readable.
fn poll_fds(fds: &[RawFd], timeout: Duration) -> Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
    // SAFETY: `pfds` is a live array of `pfds.len()` pollfds.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(crate::error::io_failed("poll", e));
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// A completion queue of the device: `ibv_cq`, with the notification the kit's waits use.
///
/// A CQ the ULP created on its own channel is armed and read by the ULP only; a wait on it polls
/// with short naps. Any other CQ has a private channel: a wait arms the CQ, has the kit poll
/// once more (what arrived before the arm fires nothing), then sleeps on the channel.
pub struct RawVerbsCq {
    core: Arc<DeviceCore>,
    /// The verbs CQ; `None` once destroyed.
    state: Mutex<Option<Arc<Cq>>>,
    num: u32,
    key: usize,
    /// The private channel, and whether the CQ is armed on it.
    private: Option<(CompletionChannel, Mutex<bool>)>,
    wake: Wake,
    _held: Held,
}

impl std::fmt::Debug for RawVerbsCq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVerbsCq")
            .field("num", &self.num)
            .finish_non_exhaustive()
    }
}

impl RawVerbsCq {
    pub(crate) fn create(
        core: &Arc<DeviceCore>,
        depth: u32,
        channel: Option<&RawVerbsChannel>,
    ) -> Result<RawVerbsCq> {
        if depth == 0 {
            return Err(Error::invalid_argument("a CQ needs at least one entry"));
        }
        let max = core.info.limits.max_cqe;
        if depth > max {
            return Err(Error::invalid_argument(format!(
                "a CQ of {depth} entries; the device allows {max}"
            )));
        }
        let entries = depth.saturating_add(MARKER_ROOM).min(max.max(depth));
        let (private, on) = match channel {
            Some(ch) => (None, Some(ch.channel()?)),
            None => (
                Some(CompletionChannel::create(core.context.sideway())?),
                None,
            ),
        };
        let cq = Arc::new(Cq::create(
            core.context.sideway(),
            entries,
            on.as_ref().or(private.as_ref()),
        )?);
        let key = cq.key();
        Ok(RawVerbsCq {
            num: core.number_cq(key),
            key,
            state: Mutex::new(Some(cq)),
            private: private.map(|p| (p, Mutex::new(false))),
            wake: Wake::new()?,
            _held: core.held.another(Kind::Cq),
            core: core.clone(),
        })
    }

    /// The verbs CQ itself, for measurements against raw verbs (see
    /// [`RawVerbsQp::with_verbs_qp`](super::RawVerbsQp::with_verbs_qp)); completions polled
    /// from it never reach the kit.
    pub fn verbs_cq(&self) -> Result<Arc<Cq>> {
        self.cq()
    }

    /// The verbs CQ, while it is not destroyed.
    pub(crate) fn cq(&self) -> Result<Arc<Cq>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::destroyed("completion queue"))
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.core
    }

    fn nap(&self, deadline: Instant, slice: Duration) -> Result<bool> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let ready = poll_fds(&[self.wake.0.as_raw_fd()], (deadline - now).min(slice))?;
        if ready[0] {
            self.wake.clear();
        }
        self.core.check()?;
        Ok(true)
    }
}

impl RawCq for RawVerbsCq {
    fn cq_num(&self) -> u32 {
        self.num
    }

    fn poll(&self, out: &mut [Completion]) -> Result<usize> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cq) = &*st else {
            return Err(Error::destroyed("completion queue"));
        };
        // SAFETY: the CQ is live (held under the lock) and this lock makes this the only poller
        // (the verbs CQ's own poll is used by nobody but a benchmark's raw baseline).
        let n = unsafe { core_path::poll_cq(cq.as_ptr(), out)? };
        drop(st);
        if n == 0 && self.core.overflowed(self.num) {
            return Err(Error::new(
                ErrorKind::Overflow,
                format!("CQ {} overflowed: completions were lost", self.num),
            ));
        }
        Ok(n)
    }

    fn wait(&self, deadline: Instant) -> Result<bool> {
        self.core.check()?;
        let Some((channel, armed)) = &self.private else {
            // The ULP's channel: never armed or read here.
            return self.nap(deadline, NAP);
        };
        {
            let mut armed = armed.lock().unwrap_or_else(|e| e.into_inner());
            if !*armed {
                self.cq()?.arm(false)?;
                *armed = true;
                // What arrived before the arm fires nothing: the kit polls once more first.
                return Ok(true);
            }
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let ready = poll_fds(
                &[channel.fd(), self.wake.0.as_raw_fd()],
                (deadline - now).min(WAIT_SLICE),
            )?;
            self.core.check()?;
            if ready[1] {
                self.wake.clear();
                return Ok(true);
            }
            if ready[0] {
                if channel.next_event(Instant::now())?.is_some() {
                    *armed.lock().unwrap_or_else(|e| e.into_inner()) = false;
                }
                return Ok(true);
            }
        }
    }

    fn arm(&self, solicited_only: bool) -> Result<()> {
        if self.private.is_some() {
            return Err(Error::invalid_state("the CQ was created without a channel"));
        }
        self.cq()?.arm(solicited_only)
    }

    fn wake(&self) {
        self.wake.ring();
    }

    fn reserve(&self, extra: u32) -> Result<()> {
        if extra > MARKER_ROOM {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "CQ {} has room for the markers of {MARKER_ROOM} work queues, not {extra}",
                    self.num
                ),
            ));
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        let cq = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        if cq.is_some() {
            self.core.forget_cq(self.key);
        }
        // The device's CQ goes with the last reference: this one, once the QPs that used it are
        // gone (the kit destroys a CQ only then).
        drop(cq);
        Ok(())
    }
}

impl Drop for RawVerbsCq {
    fn drop(&mut self) {
        let _ = self.destroy();
    }
}

/// A completion channel of the device (`ibv_comp_channel`), for the ULP's CQs.
///
/// The fd the ULP watches is an epoll instance over the channel's fd and a loss signal rung when
/// the device is lost: readable when a CQ fired, and once the device is gone (the kernel's
/// channel never fires for a removal on drivers that cannot disassociate).
pub struct RawVerbsChannel {
    core: Arc<DeviceCore>,
    channel: CompletionChannel,
    epoll: OwnedFd,
    _lost: Arc<Wake>,
    destroyed: AtomicBool,
    _held: Held,
}

impl std::fmt::Debug for RawVerbsChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawVerbsChannel")
            .field("fd", &self.channel.fd())
            .finish_non_exhaustive()
    }
}

impl RawVerbsChannel {
    pub(crate) fn create(core: &Arc<DeviceCore>) -> Result<RawVerbsChannel> {
        let channel = CompletionChannel::create(core.context.sideway())?;
        let lost = Arc::new(Wake::new()?);
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(crate::error::io_failed(
                "epoll_create1",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: just opened, owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        for fd in [channel.fd(), lost.0.as_raw_fd()] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: both fds are open; `ev` is a live epoll_event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(crate::error::io_failed(
                    "epoll_ctl",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        core.loss_signals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&lost));
        if core.life.is_lost() {
            lost.ring();
        }
        Ok(RawVerbsChannel {
            channel,
            epoll,
            _lost: lost,
            destroyed: AtomicBool::new(false),
            _held: core.held.another(Kind::Channel),
            core: core.clone(),
        })
    }

    pub(crate) fn core(&self) -> &Arc<DeviceCore> {
        &self.core
    }

    fn channel(&self) -> Result<CompletionChannel> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(Error::destroyed("completion channel"));
        }
        Ok(self.channel.clone())
    }
}

impl RawChannel for RawVerbsChannel {
    fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.epoll.as_fd()
    }

    fn next(&self) -> Result<Option<u32>> {
        self.core.check()?;
        // Events of CQs this channel no longer knows are skipped: nothing of theirs to poll.
        loop {
            match self.channel()?.next_event(Instant::now())? {
                None => return Ok(None),
                Some(key) => {
                    if let Some(num) = self.core.cq_num(key) {
                        return Ok(Some(num));
                    }
                }
            }
        }
    }

    /// Marks the channel destroyed; `ibv_destroy_comp_channel` runs when the handle is dropped
    /// (its fd stays open until then, as [`RawChannel::fd`] promises).
    fn destroy(&self) -> Result<()> {
        self.destroyed.store(true, Ordering::Release);
        Ok(())
    }
}
