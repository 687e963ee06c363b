//! [`LoadedChannel`]: a completion channel of a loaded provider, behind [`CompletionChannel`].

use std::sync::Arc;

use super::{Handle, call};
use crate::cq::{ChannelMembers, CompletionChannel};
use crate::error::Result;
use crate::plugin::abi;

/// A completion channel of a loaded provider. Its file descriptor is the plugin's (an fd is
/// the process's), checked to be open when the channel was made; the numbers it reports are
/// checked to be of CQs created on it.
pub struct LoadedChannel {
    handle: Handle<abi::RawChannel>,
    /// The plugin's descriptor: open as long as the handle is (the ABI's rule).
    #[cfg_attr(not(unix), allow(dead_code))]
    fd: i32,
    /// The CQs created on it through this loader.
    pub(super) members: Arc<ChannelMembers>,
}

impl LoadedChannel {
    pub(super) fn new(handle: Handle<abi::RawChannel>, fd: i32) -> Self {
        LoadedChannel {
            handle,
            fd,
            members: Arc::default(),
        }
    }

    pub(super) fn handle(&self) -> &Handle<abi::RawChannel> {
        &self.handle
    }
}

impl CompletionChannel for LoadedChannel {
    #[cfg(unix)]
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor was checked open when the channel was made, and the ABI
        // keeps it open until the handle, which `self` owns, is released.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) }
    }

    fn next(&self) -> Result<Option<u32>> {
        loop {
            let mut fired = 0;
            let mut cq_num = 0;
            call!(
                self.handle.f(),
                channel_next(self.handle.ptr(), &mut fired, &mut cq_num)
            )?;
            let got = self.handle.shared.check("channel_next").notification(
                fired,
                cq_num,
                self.members.contains(cq_num),
                self.members.departed(cq_num),
            )?;
            match got {
                None => return Ok(None),
                Some(Some(cq_num)) => return Ok(Some(cq_num)),
                // A CQ dropped since it fired (the plugin may keep it while QPs use it).
                Some(None) => continue,
            }
        }
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), channel_destroy(self.handle.ptr()))
    }
}

impl std::fmt::Debug for LoadedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedChannel")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}
