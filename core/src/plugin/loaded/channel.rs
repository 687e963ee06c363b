//! [`LoadedChannel`]: a completion channel of a loaded provider, behind [`CompletionChannel`].

use std::sync::Arc;

use super::{Handle, call};
use crate::cq::{ChannelMembers, CompletionChannel};
use crate::error::Result;
use crate::plugin::abi;

/// A completion channel of a loaded provider. Its file descriptor is the loader's duplicate of
/// the plugin's (an fd is the process's), made when the channel was: the same open file, owned
/// by the program. The numbers it reports are checked to be of CQs created on it, and a plugin
/// that reports only departed CQs cannot keep [`next`](CompletionChannel::next) looping.
pub struct LoadedChannel {
    handle: Handle<abi::RawChannel>,
    /// The loader's duplicate of the plugin's descriptor.
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
    /// The CQs created on it through this loader.
    pub(super) members: Arc<ChannelMembers>,
}

/// How many notifications of departed CQs one [`next`](CompletionChannel::next) skips before it
/// calls the plugin a liar: each departed CQ fires at most once per arm, and far fewer CQs than
/// this leave a channel between two calls.
const DEPARTED_SKIPS_MAX: usize = 1 << 16;

impl LoadedChannel {
    pub(super) fn new(
        handle: Handle<abi::RawChannel>,
        #[cfg(unix)] fd: std::os::fd::OwnedFd,
    ) -> Self {
        LoadedChannel {
            handle,
            #[cfg(unix)]
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
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    fn next(&self) -> Result<Option<u32>> {
        for _ in 0..DEPARTED_SKIPS_MAX {
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
        Err(self.handle.shared.check("channel_next").fault(
            "CQ number",
            format!(
                "{DEPARTED_SKIPS_MAX} notifications in a row of CQs that left the channel; a \
                 departed CQ fires at most once"
            ),
        ))
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), channel_destroy(self.handle.ptr()))
    }
}

impl std::fmt::Debug for LoadedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("LoadedChannel");
        #[cfg(unix)]
        d.field("fd", &self.fd);
        d.finish_non_exhaustive()
    }
}
