//! Protection domains, memory regions and completion queues.

use std::collections::VecDeque;

use anyverbs::{Access, Completion, DeviceEvent, QpState, Sge, WcStatus};

use super::memory::{HostPtr, Memory};
use super::{CqRec, MrRec, PdRec, State, byte_range, next_free, size_check, total_length};
use crate::error::{MockError, MockResult};

impl State {
    // ----- protection domains -----

    pub(crate) fn alloc_pd(&mut self, device: u32) -> MockResult<u32> {
        let inc = self.inc(device);
        if inc.live.pds >= inc.info.limits.max_pd {
            return Err(MockError::TableFull("protection domain"));
        }
        let id = next_free(&mut self.next_pd, 1, u32::MAX, &self.pds);
        self.inc_mut(device).live.pds += 1;
        self.pds.insert(
            id,
            PdRec {
                device,
                mrs: 0,
                qps: 0,
            },
        );
        Ok(id)
    }

    pub(crate) fn destroy_pd(&mut self, id: u32) -> MockResult<()> {
        let Some(pd) = self.pds.get(&id) else {
            return Ok(());
        };
        if pd.mrs > 0 || pd.qps > 0 {
            return Err(MockError::InUse {
                what: "protection domain",
                users: format!("{} memory regions and {} queue pairs", pd.mrs, pd.qps),
            });
        }
        let device = pd.device;
        self.pds.remove(&id);
        self.inc_mut(device).live.pds -= 1;
        Ok(())
    }

    pub(super) fn live_pd(&self, id: u32) -> MockResult<&PdRec> {
        self.pds
            .get(&id)
            .ok_or_else(|| MockError::Destroyed("protection domain"))
    }

    // ----- memory regions -----

    /// Registers `len` bytes of memory the fabric allocates; the region's lkey, rkey, address
    /// and memory.
    pub(crate) fn register(
        &mut self,
        pd: u32,
        len: usize,
        access: Access,
    ) -> MockResult<(u32, u32, u64, HostPtr)> {
        self.check_registration(pd, len, access)?;
        self.insert_mr(pd, Memory::alloc(len), access)
    }

    /// Registers the caller's memory `mem` (see [`Memory::caller`]); as
    /// [`register`](Self::register). On failure `mem` is dropped: the device never used it.
    pub(crate) fn register_memory(
        &mut self,
        pd: u32,
        mem: Memory,
        access: Access,
    ) -> MockResult<(u32, u32, u64, HostPtr)> {
        self.check_registration(pd, mem.len(), access)?;
        self.insert_mr(pd, mem, access)
    }

    /// What refuses a registration: a dead PD, a length over the device's limit, remote
    /// rights without local write, a full table.
    fn check_registration(&self, pd: u32, len: usize, access: Access) -> MockResult<()> {
        let device = self.live_pd(pd)?.device;
        let limits = self.inc(device).info.limits;
        size_check("memory region length", len as u64, limits.max_mr_size)?;
        if access.intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
            && !access.contains(Access::LOCAL_WRITE)
        {
            return Err(MockError::BadArgument(
                "remote write or atomic access requires local write access".into(),
            ));
        }
        if self.inc(device).live.mrs >= limits.max_mr {
            return Err(MockError::TableFull("memory region"));
        }
        Ok(())
    }

    /// Enters a region of `mem` into the tables (checked by `check_registration`); a full
    /// table drops `mem`.
    fn insert_mr(
        &mut self,
        pd: u32,
        mem: Memory,
        access: Access,
    ) -> MockResult<(u32, u32, u64, HostPtr)> {
        let device = self.pds[&pd].device;
        let (addr, host) = (mem.addr(), mem.host_ptr());
        // rkeys are lkeys with the top bit set (lkeys stay below 2^31): the two never collide.
        let rkey_of = |lkey: u32| lkey ^ 0x8000_0000;
        let lkey = self
            .mrs
            .insert_with(|lkey| MrRec {
                device,
                pd,
                mem,
                addr,
                access,
                rkey: rkey_of(lkey),
            })
            .ok_or(MockError::TableFull("memory region"))?;
        let rkey = rkey_of(lkey);
        self.rkeys.insert(rkey, lkey);
        self.inc_mut(device).live.mrs += 1;
        if let Some(p) = self.pds.get_mut(&pd) {
            p.mrs += 1;
        }
        Ok((lkey, rkey, addr, host))
    }

    /// Deregisters a region: its keys are unknown from now on, and its memory is never touched
    /// again (dropped with the record: the fabric's freed, a caller's let go).
    pub(crate) fn destroy_mr(&mut self, lkey: u32) {
        if let Some(mr) = self.mrs.remove(&lkey) {
            self.rkeys.remove(&mr.rkey);
            self.inc_mut(mr.device).live.mrs -= 1;
            if let Some(p) = self.pds.get_mut(&mr.pd) {
                p.mrs -= 1;
            }
        }
    }

    pub(crate) fn mr_copy_in(&mut self, lkey: u32, offset: usize, src: &[u8]) -> MockResult<()> {
        let mr = self
            .mrs
            .get_mut(&lkey)
            .ok_or_else(|| MockError::Destroyed("memory region"))?;
        byte_range(mr.mem.len(), offset, src.len())?;
        mr.mem.write(offset, src);
        Ok(())
    }

    pub(crate) fn mr_copy_out(&self, lkey: u32, offset: usize, dst: &mut [u8]) -> MockResult<()> {
        let mr = self
            .mrs
            .get(&lkey)
            .ok_or_else(|| MockError::Destroyed("memory region"))?;
        byte_range(mr.mem.len(), offset, dst.len())?;
        mr.mem.read(offset, dst);
        Ok(())
    }

    /// Finds the region and offset of a local SGE, checking key, PD, bounds and write access.
    pub(super) fn resolve_local(
        &self,
        pd: u32,
        sge: &Sge,
        need_write: bool,
    ) -> Result<(&MrRec, usize), String> {
        let mr = self
            .mrs
            .get(&sge.lkey)
            .ok_or_else(|| format!("unknown lkey {:#x}", sge.lkey))?;
        let off = local_offset(mr, pd, sge, need_write).map_err(|f| f.describe(mr, sge))?;
        Ok((mr, off))
    }

    pub(super) fn gather(&self, pd: u32, sgl: &[Sge]) -> Result<Vec<u8>, String> {
        let mut data = Vec::with_capacity(total_length(sgl) as usize);
        self.gather_into(pd, sgl, &mut data)?;
        Ok(data)
    }

    /// Appends the bytes `sgl` names to `data`.
    pub(super) fn gather_into(
        &self,
        pd: u32,
        sgl: &[Sge],
        data: &mut Vec<u8>,
    ) -> Result<(), String> {
        for sge in sgl {
            let (mr, off) = self.resolve_local(pd, sge, false)?;
            mr.mem.extend_into(off, sge.length as usize, data);
        }
        Ok(())
    }

    /// Writes `data` into the memory `sgl` names, in order; nothing is written unless every SGE
    /// is valid.
    pub(super) fn scatter(&mut self, pd: u32, sgl: &[Sge], data: &[u8]) -> Result<(), String> {
        if let [sge] = sgl {
            // One SGE, the common case: one lookup.
            let mr = self
                .mrs
                .get_mut(&sge.lkey)
                .ok_or_else(|| format!("unknown lkey {:#x}", sge.lkey))?;
            let off = local_offset(mr, pd, sge, true).map_err(|f| f.describe(mr, sge))?;
            let n = data.len().min(sge.length as usize);
            mr.mem.write(off, &data[..n]);
            return Ok(());
        }
        let mut targets: smallvec::SmallVec<[_; 4]> = smallvec::SmallVec::new();
        for sge in sgl {
            let (_, off) = self.resolve_local(pd, sge, true)?;
            targets.push((sge.lkey, off, sge.length as usize));
        }
        let mut rest = data;
        for (lkey, off, len) in targets {
            if rest.is_empty() {
                break;
            }
            let n = len.min(rest.len());
            let mr = self.mrs.get_mut(&lkey).expect("resolved above");
            mr.mem.write(off, &rest[..n]);
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Finds the region of a remote access, checking key, PD, bounds and access rights.
    pub(super) fn resolve_remote(
        &self,
        pd: u32,
        addr: u64,
        rkey: u32,
        len: u64,
        need: Access,
    ) -> Option<(u32, usize)> {
        let lkey = *self.rkeys.get(&rkey)?;
        let mr = &self.mrs[&lkey];
        let start = addr.checked_sub(mr.addr)?;
        let ok = mr.pd == pd
            && mr.access.contains(need)
            && start
                .checked_add(len)
                .is_some_and(|end| end <= mr.mem.len() as u64);
        ok.then_some((lkey, start as usize))
    }

    // ----- completion queues -----

    /// Creates a CQ on incarnation `device`, on the completion channel `channel` if given.
    pub(crate) fn create_cq(
        &mut self,
        device: u32,
        depth: u32,
        channel: Option<u32>,
    ) -> MockResult<u32> {
        let inc = self.inc(device);
        let limits = inc.info.limits;
        size_check("CQ depth", u64::from(depth), u64::from(limits.max_cqe))?;
        if inc.live.cqs >= limits.max_cq {
            return Err(MockError::TableFull("completion queue"));
        }
        let channel = match channel {
            Some(ch) => Some((ch, self.join_channel(ch, device)?)),
            None => None,
        };
        let Some(id) = self.cqs.insert_with(|_| CqRec {
            device,
            capacity: depth,
            reserved: 0,
            entries: VecDeque::with_capacity(depth as usize),
            overflowed: false,
            wake_pending: false,
            users: 0,
            dropped: false,
            channel: channel.clone(),
            armed: None,
        }) else {
            if let Some((ch, _)) = channel {
                self.leave_channel(ch);
            }
            return Err(MockError::TableFull("completion queue"));
        };
        self.inc_mut(device).live.cqs += 1;
        Ok(id)
    }

    pub(crate) fn destroy_cq(&mut self, id: u32) -> MockResult<()> {
        let Some(cq) = self.cqs.get(&id) else {
            return Ok(());
        };
        if cq.users > 0 {
            return Err(MockError::InUse {
                what: "completion queue",
                users: format!("{} queue(s) of live QPs", cq.users),
            });
        }
        let device = cq.device;
        let channel = cq.channel.as_ref().map(|(ch, _)| *ch);
        self.cqs.remove(&id);
        self.inc_mut(device).live.cqs -= 1;
        if let Some(ch) = channel {
            self.leave_channel(ch);
        }
        Ok(())
    }

    pub(crate) fn drop_cq(&mut self, id: u32) {
        if self.destroy_cq(id).is_err()
            && let Some(cq) = self.cqs.get_mut(&id)
        {
            cq.dropped = true;
        }
    }

    pub(super) fn cq_lost_user(&mut self, id: u32) {
        let reap = match self.cqs.get_mut(&id) {
            Some(cq) => {
                cq.users -= 1;
                cq.dropped && cq.users == 0
            }
            None => false,
        };
        if reap {
            let _ = self.destroy_cq(id);
        }
    }

    pub(super) fn live_cq(&self, id: u32) -> MockResult<&CqRec> {
        self.cqs
            .get(&id)
            .filter(|c| !c.dropped)
            .ok_or_else(|| MockError::Destroyed("completion queue"))
    }

    /// Queues a completion the device produced (under the provider's token). A full ring
    /// overflows: the completion is lost, the CQ reports `Overflow` from then on, and (at the
    /// next progress step) every QP using it goes to ERROR, as a CQ error event does on hardware.
    pub(super) fn push_cqe(&mut self, id: u32, c: Completion) {
        self.push_cqes(id, std::iter::once(c));
    }

    /// [`push_cqe`](Self::push_cqe) for many completions, in order.
    pub(super) fn push_cqes(&mut self, id: u32, completions: impl IntoIterator<Item = Completion>) {
        let Some(cq) = self.cqs.get_mut(&id) else {
            return;
        };
        for c in completions {
            cq.push(id, c, &mut self.pending_cq_errors);
        }
    }

    /// Makes room for `extra` completions beyond the ULP's depth (the provider's reserve).
    pub(crate) fn reserve_cq(&mut self, id: u32, extra: u32) -> MockResult<()> {
        let cq = self
            .cqs
            .get_mut(&id)
            .ok_or_else(|| MockError::Destroyed("completion queue"))?;
        cq.reserved = cq.reserved.max(extra);
        Ok(())
    }

    /// Makes the current or next wait on the CQ return.
    pub(crate) fn wake_cq(&mut self, id: u32) {
        if let Some(cq) = self.cqs.get_mut(&id) {
            cq.wake_pending = true;
        }
    }

    /// Whether a wait on the CQ is over: it holds a completion, it overflowed, or a wake is
    /// pending (consumed here). `None` while none of these holds.
    pub(crate) fn cq_ready(&mut self, id: u32) -> Option<MockResult<()>> {
        let Some(cq) = self.cqs.get_mut(&id) else {
            return Some(Err(MockError::Destroyed("completion queue")));
        };
        if !cq.entries.is_empty() || cq.overflowed || std::mem::take(&mut cq.wake_pending) {
            Some(Ok(()))
        } else {
            None
        }
    }

    /// Moves every QP that uses an overflowed CQ to ERROR, then reports the CQ error.
    pub(super) fn fail_overflowed_cqs(&mut self) -> bool {
        if self.pending_cq_errors.is_empty() {
            return false;
        }
        let cqs = std::mem::take(&mut self.pending_cq_errors);
        let victims: Vec<u32> = self
            .qps
            .iter()
            .filter(|(_, q)| {
                q.state != QpState::Error && (cqs.contains(&q.send_cq) || cqs.contains(&q.recv_cq))
            })
            .map(|(n, _)| n)
            .collect();
        for qpn in victims {
            self.enter_error(qpn);
        }
        for cq_num in cqs {
            if let Some(cq) = self.cqs.get(&cq_num) {
                self.publish(cq.device, DeviceEvent::CqError { cq_num });
            }
        }
        true
    }

    /// Moves up to `out.len()` completions into `out`; `None` if there were none.
    pub(crate) fn poll(&mut self, cq: u32, out: &mut [Completion]) -> MockResult<usize> {
        let cq = self
            .cqs
            .get_mut(&cq)
            .filter(|c| !c.dropped)
            .ok_or_else(|| MockError::Destroyed("completion queue"))?;
        if cq.overflowed {
            return Err(MockError::CqOverflow);
        }
        let n = out.len().min(cq.entries.len());
        if n <= 1 {
            // The common single completion, or none (an empty ring, or no room in `out`: then
            // nothing leaves the ring).
            if let Some(slot) = out.first_mut().filter(|_| n == 1) {
                *slot = cq
                    .entries
                    .pop_front()
                    .expect("n is at most the ring's length");
            }
            return Ok(n);
        }
        // More: copied out as the ring's two runs.
        let (front, back) = cq.entries.as_slices();
        let k = front.len().min(n);
        out[..k].copy_from_slice(&front[..k]);
        out[k..n].copy_from_slice(&back[..n - k]);
        cq.entries.drain(..n);
        Ok(n)
    }
}

/// Why a local SGE is refused (see [`local_offset`]); the message is made only when needed.
#[derive(Debug, Clone, Copy)]
pub(super) enum SgeFault {
    OtherPd,
    OutOfBounds,
    NoLocalWrite,
}

impl SgeFault {
    /// What is wrong with `sge` in region `mr`.
    #[cold]
    fn describe(self, mr: &MrRec, sge: &Sge) -> String {
        match self {
            SgeFault::OtherPd => format!(
                "lkey {:#x} belongs to a region of another protection domain",
                sge.lkey
            ),
            SgeFault::OutOfBounds => format!(
                "{} bytes at {:#x} are outside the region [{:#x}, {:#x})",
                sge.length,
                sge.addr,
                mr.addr,
                mr.addr + mr.mem.len() as u64
            ),
            SgeFault::NoLocalWrite => format!(
                "lkey {:#x} was registered without local write access",
                sge.lkey
            ),
        }
    }
}

/// The offset in `mr` of a local SGE, checking PD, bounds and write access.
#[inline]
pub(super) fn local_offset(
    mr: &MrRec,
    pd: u32,
    sge: &Sge,
    need_write: bool,
) -> Result<usize, SgeFault> {
    if mr.pd != pd {
        return Err(SgeFault::OtherPd);
    }
    let start = sge.addr.wrapping_sub(mr.addr);
    let fits = sge.addr >= mr.addr
        && start
            .checked_add(u64::from(sge.length))
            .is_some_and(|end| end <= mr.mem.len() as u64);
    if !fits {
        return Err(SgeFault::OutOfBounds);
    }
    if need_write && !mr.access.contains(Access::LOCAL_WRITE) {
        return Err(SgeFault::NoLocalWrite);
    }
    Ok(start as usize)
}

impl CqRec {
    /// Queues completion `c` in the ring of CQ `id`; a full ring overflows (see
    /// [`State::push_cqe`]), and the CQ joins `pending` the first time.
    #[inline]
    pub(super) fn push(&mut self, id: u32, c: Completion, pending: &mut Vec<u32>) {
        if self.entries.len() >= (self.capacity + self.reserved) as usize {
            if !self.overflowed {
                pending.push(id);
            }
            self.overflowed = true;
            // A CQ error fires an armed CQ whatever the arm asked for.
            self.fire(id, true);
        } else {
            if self.armed.is_some() {
                self.fire(id, c.status != WcStatus::Success);
            }
            self.entries.push_back(c);
        }
    }

    /// Fires the CQ's channel if it is armed for this completion (`solicited`: one a
    /// solicited-only arm fires for too), and disarms it.
    #[cold]
    pub(super) fn fire(&mut self, id: u32, solicited: bool) {
        let fires = match self.armed {
            Some(super::channels::Arm::Any) => true,
            Some(super::channels::Arm::Solicited) => solicited,
            None => false,
        };
        if fires {
            self.armed = None;
            if let Some((_, core)) = &self.channel {
                core.fire(id);
            }
        }
    }
}
