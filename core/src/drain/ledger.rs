//! [`Ledger`]: a provider's record of every WR it posted for the ULP on one QP.
//!
//! A provider admits each WR into the ledger before posting it and gives the device the
//! [`Token`] the ledger returns instead of the ULP's `wr_id`. Every completion the device
//! produces then passes through [`Ledger::resolve`], which
//!
//! - gives the completion back its `wr_id` (and a meaningful opcode: devices fill in garbage for
//!   flushed WRs — rxe reports a flushed receive as a SEND),
//! - swallows the completions of the provider's own marker WRs, so a ULP's poll never sees them,
//! - retires unsignaled sends that succeeded silently when a later WR of the queue completes,
//! - and drops every completion that arrives after the QP was drained, so none can reach the
//!   ULP late.
//!
//! Because the ledger knows what is outstanding, it can also synthesize the flush completions a
//! device failed to produce ([`Ledger::settle`], [`Ledger::synthesize`]) and enforce the
//! queue depths the ULP asked for, leaving the slots the provider reserved for markers free.
//!
//! The ledger is plain data: the provider keeps it under whatever lock guards the QP and calls
//! it from its post, poll and drain paths.

use std::collections::VecDeque;

use crate::error::{Error, ErrorKind, Result};
use crate::wr::{Completion, RecvWr, SendFlags, SendWr, WcOpcode, WcStatus};

/// One of the two work queues of a QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// The send queue.
    Send,
    /// The receive queue.
    Recv,
}

impl WorkQueue {
    /// Both queues, send first.
    pub const BOTH: [WorkQueue; 2] = [WorkQueue::Send, WorkQueue::Recv];

    pub(crate) fn index(self) -> usize {
        match self {
            WorkQueue::Send => 0,
            WorkQueue::Recv => 1,
        }
    }
}

/// The `wr_id` a provider gives the device for a WR it posts: which queue, whether it is a
/// marker, the generation of the ledger that issued it, and a sequence number. The ULP's own
/// `wr_id` stays in the ledger.
///
/// The generation is what keeps a late completion from resolving in the wrong ledger: the kernel
/// reuses QP numbers, so a completion of a destroyed QP still in a shared CQ can name the number
/// of a newer QP, and only the generation tells the two ledgers apart. Completions are matched by
/// this identity — generation, queue and sequence — never by their position in the CQ.
///
/// Layout: bit 63 the queue, bit 62 the marker flag, 22 bits of generation, 40 bits of sequence
/// (which wraps; the ledger compares sequences relative to the oldest outstanding WR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u64);

const RECV_BIT: u64 = 1 << 63;
const MARKER_BIT: u64 = 1 << 62;
const GEN_SHIFT: u32 = 40;
const GEN_MASK: u64 = (1 << 22) - 1;
const SEQ_MASK: u64 = (1 << GEN_SHIFT) - 1;

/// The next ledger generation (process-wide, so two QPs that share a number never share one).
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Token {
    fn new(queue: WorkQueue, marker: bool, generation: u32, seq: u64) -> Token {
        let q = if queue == WorkQueue::Recv {
            RECV_BIT
        } else {
            0
        };
        let m = if marker { MARKER_BIT } else { 0 };
        let g = (u64::from(generation) & GEN_MASK) << GEN_SHIFT;
        Token(q | m | g | (seq & SEQ_MASK))
    }

    /// The generation of the ledger that issued the token.
    pub fn generation(self) -> u32 {
        ((self.0 >> GEN_SHIFT) & GEN_MASK) as u32
    }

    /// The value to put in the device WR's `wr_id`.
    pub fn wr_id(self) -> u64 {
        self.0
    }

    /// The token a device completion carries in its `wr_id`.
    pub fn from_wr_id(wr_id: u64) -> Token {
        Token(wr_id)
    }

    /// The queue the WR was posted on.
    pub fn queue(self) -> WorkQueue {
        if self.0 & RECV_BIT != 0 {
            WorkQueue::Recv
        } else {
            WorkQueue::Send
        }
    }

    /// Whether this is a marker the provider posted for a drain.
    pub fn is_marker(self) -> bool {
        self.0 & MARKER_BIT != 0
    }

    fn seq(self) -> u64 {
        self.0 & SEQ_MASK
    }
}

struct Entry {
    seq: u64,
    wr_id: u64,
    opcode: WcOpcode,
    signaled: bool,
    /// The device accepted the WR but will never complete it (posted in ERROR on a device that
    /// drops such WRs).
    doomed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Pending(u64),
    Done,
}

struct Queue {
    /// Outstanding WRs in posting order (sequence numbers ascending).
    entries: VecDeque<Entry>,
    next_seq: u64,
    depth: u32,
    marker: Marker,
}

impl Queue {
    fn new(depth: u32) -> Queue {
        Queue {
            entries: VecDeque::new(),
            next_seq: 0,
            depth,
            marker: Marker::None,
        }
    }

    /// How far after `base` the sequence number `seq` lies (sequences wrap at 40 bits).
    fn offset(base: u64, seq: u64) -> u64 {
        seq.wrapping_sub(base) & SEQ_MASK
    }

    fn position(&self, seq: u64) -> Option<usize> {
        // Completions arrive in posting order, so the match is nearly always at the front.
        let front = self.entries.front()?.seq;
        if front == seq {
            return Some(0);
        }
        let key = Queue::offset(front, seq);
        self.entries
            .binary_search_by_key(&key, |e| Queue::offset(front, e.seq))
            .ok()
    }

    /// Retires, without a completion, the unsignaled WRs at the head that were posted before
    /// `seq`: a later WR of the queue completed, so they completed (successfully) too.
    fn retire_silent_before(&mut self, seq: u64) {
        while let Some(e) = self.entries.front() {
            // `seq` lies after the head when it is within the forward half of the sequence space.
            let after = Queue::offset(e.seq, seq);
            if after == 0 || after > SEQ_MASK / 2 || e.signaled || e.doomed {
                break;
            }
            self.entries.pop_front();
        }
    }
}

/// Where a QP's drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainPhase {
    /// Not drained; posts are accepted.
    Open,
    /// A drain is running; posts are refused.
    Draining,
    /// A drain could not finish (the hardware QP could not be stopped); posts are refused and
    /// the next drain starts over.
    Interrupted,
    /// Drained: posts are refused, late completions are dropped.
    Drained,
}

/// What [`Ledger::begin_drain`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainStart {
    /// This caller drains; the ledger now refuses posts.
    Start,
    /// Another caller's drain is running.
    InProgress,
    /// The QP is drained already.
    Done,
}

/// A provider's record of the WRs it posted on one QP; see the [module docs](self).
pub struct Ledger {
    qp_num: u32,
    /// Part of every token this ledger issues; see [`Token`].
    generation: u32,
    queues: [Queue; 2],
    phase: DrainPhase,
    /// WRs outstanding when the current drain started.
    at_start: usize,
    /// Flush completions synthesized during the current drain.
    synthesized: usize,
    /// Completions dropped because they belonged to nothing outstanding.
    stale: u64,
}

impl Ledger {
    /// A ledger for QP `qp_num` whose queues hold `send_depth` and `recv_depth` WRs (the depths
    /// the ULP asked for; markers do not count against them).
    pub fn new(qp_num: u32, send_depth: u32, recv_depth: u32) -> Ledger {
        let generation =
            NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & GEN_MASK;
        Ledger {
            qp_num,
            generation: generation as u32,
            queues: [Queue::new(send_depth), Queue::new(recv_depth)],
            phase: DrainPhase::Open,
            at_start: 0,
            synthesized: 0,
            stale: 0,
        }
    }

    /// The QP this ledger belongs to.
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// The generation in every token this ledger issues: unique among the ledgers alive in the
    /// process (it wraps after about four million ledgers).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Where the QP's drain stands.
    pub fn phase(&self) -> DrainPhase {
        self.phase
    }

    /// WRs outstanding on `queue`.
    pub fn outstanding(&self, queue: WorkQueue) -> usize {
        self.queues[queue.index()].entries.len()
    }

    /// WRs outstanding on both queues.
    pub fn outstanding_total(&self) -> usize {
        self.outstanding(WorkQueue::Send) + self.outstanding(WorkQueue::Recv)
    }

    /// Completions dropped so far because nothing outstanding matched them (late completions
    /// after a drain, duplicates from a faulty device).
    pub fn stale(&self) -> u64 {
        self.stale
    }

    fn admit(
        &mut self,
        queue: WorkQueue,
        wr_id: u64,
        opcode: WcOpcode,
        signaled: bool,
    ) -> Result<Token> {
        if self.phase != DrainPhase::Open {
            return Err(Error::invalid_state(
                "the QP is drained (or being drained): it accepts no more work requests",
            ));
        }
        let q = &mut self.queues[queue.index()];
        if q.entries.len() >= q.depth as usize {
            let name = match queue {
                WorkQueue::Send => "send",
                WorkQueue::Recv => "receive",
            };
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!(
                    "the {name} queue is full: {} work requests outstanding",
                    q.depth
                ),
            ));
        }
        let seq = q.next_seq;
        q.next_seq = (q.next_seq + 1) & SEQ_MASK;
        q.entries.push_back(Entry {
            seq,
            wr_id,
            opcode,
            signaled,
            doomed: false,
        });
        Ok(Token::new(queue, false, self.generation, seq))
    }

    /// Records a send WR about to be posted; returns the token to post it with. Fails with
    /// `InvalidState` once a drain has started and `ResourceExhausted` when the queue is full.
    pub fn admit_send(&mut self, wr: &SendWr) -> Result<Token> {
        self.admit(
            WorkQueue::Send,
            wr.wr_id,
            wr.completion_opcode(),
            wr.flags.contains(SendFlags::SIGNALED),
        )
    }

    /// Records a receive WR about to be posted; returns the token to post it with.
    pub fn admit_recv(&mut self, wr: &RecvWr) -> Result<Token> {
        self.admit(WorkQueue::Recv, wr.wr_id, WcOpcode::Recv, true)
    }

    fn entry_mut(&mut self, token: Token) -> Option<&mut Entry> {
        if token.generation() != self.generation {
            return None;
        }
        let q = &mut self.queues[token.queue().index()];
        let i = q.position(token.seq())?;
        q.entries.get_mut(i)
    }

    /// Forgets a WR the device refused to accept: it will never complete.
    pub fn withdraw(&mut self, token: Token) {
        if token.generation() != self.generation {
            return;
        }
        let q = &mut self.queues[token.queue().index()];
        if let Some(i) = q.position(token.seq()) {
            q.entries.remove(i);
        }
    }

    /// Notes that a WR can never succeed (it was posted while the QP was in ERROR): it is never
    /// retired silently as an unsignaled success, and a drain that settles its queue gives it a
    /// flush completion if the device did not.
    pub fn doom(&mut self, token: Token) {
        if let Some(e) = self.entry_mut(token) {
            e.doomed = true;
        }
    }

    /// WRs on `queue` whose completion a drain still waits for: receives and signaled sends
    /// that were not doomed. What else is outstanding either produces no completion (a trailing
    /// unsignaled send that succeeded) or never will (a WR doomed in ERROR on a device that
    /// drops it), so once this is zero the queue is idle as far as completions can tell, and
    /// [`settle`](Self::settle) accounts for the rest.
    pub fn awaiting(&self, queue: WorkQueue) -> usize {
        self.queues[queue.index()]
            .entries
            .iter()
            .filter(|e| !e.doomed && (e.signaled || queue == WorkQueue::Recv))
            .count()
    }

    /// Whether an unsignaled send is outstanding that was not doomed: whether it ran (silently)
    /// or will be flushed, only a completion after it can tell.
    pub fn has_unsure_sends(&self) -> bool {
        self.queues[WorkQueue::Send.index()]
            .entries
            .iter()
            .any(|e| !e.signaled && !e.doomed)
    }

    /// Whether any outstanding WR on `queue` is doomed.
    pub fn has_doomed(&self, queue: WorkQueue) -> bool {
        self.queues[queue.index()].entries.iter().any(|e| e.doomed)
    }

    /// Places a marker behind every WR outstanding on `queue` and returns its token, or `None`
    /// when nothing is outstanding (no marker is needed). The marker completes when its
    /// completion is [resolved](Self::resolve) or the queue is [settled](Self::settle).
    pub fn arm_marker(&mut self, queue: WorkQueue) -> Option<Token> {
        let q = &mut self.queues[queue.index()];
        if q.entries.is_empty() {
            return None;
        }
        let seq = q.next_seq;
        q.next_seq = (q.next_seq + 1) & SEQ_MASK;
        q.marker = Marker::Pending(seq);
        Some(Token::new(queue, true, self.generation, seq))
    }

    /// Whether a marker armed on `queue` has not completed yet.
    pub fn marker_pending(&self, queue: WorkQueue) -> bool {
        matches!(self.queues[queue.index()].marker, Marker::Pending(_))
    }

    /// Turns a completion from the device into the ULP's completion, or `None` when the ULP must
    /// not see it (a marker, or a completion for nothing outstanding, e.g. after the drain).
    pub fn resolve(&mut self, device: &Completion) -> Option<Completion> {
        let mut c = *device;
        self.resolve_in_place(&mut c).then_some(c)
    }

    /// [`resolve`](Self::resolve) in place: rewrites the device's completion `c` into the ULP's
    /// and returns true, or returns false, leaving `c` as it was, when the ULP must not see it.
    #[inline]
    pub fn resolve_in_place(&mut self, c: &mut Completion) -> bool {
        if self.phase == DrainPhase::Drained {
            self.stale += 1;
            return false;
        }
        let token = Token::from_wr_id(c.wr_id);
        if token.generation() != self.generation {
            // Another ledger's WR: a late completion of a destroyed QP whose number this QP
            // now has.
            self.stale += 1;
            return false;
        }
        let queue = token.queue();
        let q = &mut self.queues[queue.index()];
        if token.is_marker() {
            if q.marker == Marker::Pending(token.seq()) {
                q.marker = Marker::Done;
                q.retire_silent_before(token.seq());
            } else {
                self.stale += 1;
            }
            return false;
        }
        let Some(i) = q.position(token.seq()) else {
            self.stale += 1;
            return false;
        };
        // In posting order the match is the head: no shifting.
        let entry = if i == 0 {
            q.entries.pop_front()
        } else {
            q.entries.remove(i)
        }
        .expect("found above");
        if queue == WorkQueue::Send {
            q.retire_silent_before(entry.seq);
        }
        c.wr_id = entry.wr_id;
        match queue {
            WorkQueue::Send => c.opcode = entry.opcode,
            WorkQueue::Recv if c.status == WcStatus::Success => {}
            WorkQueue::Recv => c.opcode = WcOpcode::Recv,
        }
        true
    }

    fn flush_of(&self, e: &Entry) -> Completion {
        Completion {
            wr_id: e.wr_id,
            status: WcStatus::WrFlushError,
            opcode: e.opcode,
            qp_num: self.qp_num,
            ..Completion::default()
        }
    }

    /// Settles `queue` once the device has finished with every WR on it and each completion it
    /// produced has been [resolved](Self::resolve): unsignaled sends retire silently (they
    /// succeeded), every other WR still outstanding gets a synthesized flush completion in `out`,
    /// and a pending marker completes. Returns how many completions were synthesized.
    pub fn settle(&mut self, queue: WorkQueue, out: &mut Vec<Completion>) -> usize {
        let q = &mut self.queues[queue.index()];
        let entries: Vec<Entry> = q.entries.drain(..).collect();
        if q.marker != Marker::None {
            q.marker = Marker::Done;
        }
        let before = out.len();
        for e in entries
            .iter()
            .filter(|e| e.signaled || e.doomed || queue == WorkQueue::Recv)
        {
            out.push(self.flush_of(e));
        }
        let n = out.len() - before;
        self.synthesized += n;
        n
    }

    /// Synthesizes a flush completion into `out` for every WR still outstanding on `queue`,
    /// unsignaled ones included (whether they ran is unknown), and completes a pending marker.
    /// Call it only once the device can no longer touch the QP (its hardware QP is destroyed, or
    /// the device is dead). Returns how many completions were synthesized.
    pub fn synthesize(&mut self, queue: WorkQueue, out: &mut Vec<Completion>) -> usize {
        let q = &mut self.queues[queue.index()];
        let entries: Vec<Entry> = q.entries.drain(..).collect();
        if q.marker != Marker::None {
            q.marker = Marker::Done;
        }
        out.extend(entries.iter().map(|e| self.flush_of(e)));
        self.synthesized += entries.len();
        entries.len()
    }

    /// Forgets every outstanding WR without a completion: the QP was moved to RESET, which in
    /// verbs discards both queues silently. Returns how many were discarded.
    pub fn discard_all(&mut self) -> usize {
        let mut n = 0;
        for q in &mut self.queues {
            n += q.entries.len();
            q.entries.clear();
            q.marker = Marker::None;
        }
        n
    }

    /// Where both queues' sequences stand now: [`discard_before`](Self::discard_before) with it
    /// forgets only the WRs posted before this moment.
    pub(crate) fn mark(&self) -> [u64; 2] {
        [self.queues[0].next_seq, self.queues[1].next_seq]
    }

    /// Whether the WR a device completion names was posted before `mark` (by this ledger): a
    /// completion a RESET after `mark` left behind says nothing about the QP now.
    pub(crate) fn posted_before(&self, device: &Completion, mark: [u64; 2]) -> bool {
        let token = Token::from_wr_id(device.wr_id);
        if token.generation() != self.generation {
            return false;
        }
        let after = Queue::offset(token.seq(), mark[token.queue().index()]);
        after != 0 && after <= SEQ_MASK / 2
    }

    /// [`discard_all`](Self::discard_all) for the WRs posted before `mark` only: a RESET
    /// discarded them, and WRs posted after it (the QP brought back to INIT by another thread)
    /// stay outstanding. Returns how many were discarded.
    pub(crate) fn discard_before(&mut self, mark: [u64; 2]) -> usize {
        let mut n = 0;
        for (q, mark) in self.queues.iter_mut().zip(mark) {
            while let Some(e) = q.entries.front() {
                let after = Queue::offset(e.seq, mark);
                if after == 0 || after > SEQ_MASK / 2 {
                    break;
                }
                q.entries.pop_front();
                n += 1;
            }
            q.marker = Marker::None;
        }
        n
    }

    /// Starts a drain if none ran yet: from now on posts are refused.
    pub fn begin_drain(&mut self) -> DrainStart {
        match self.phase {
            DrainPhase::Open | DrainPhase::Interrupted => {
                if self.phase == DrainPhase::Open {
                    self.at_start = self.outstanding_total();
                    self.synthesized = 0;
                }
                self.phase = DrainPhase::Draining;
                DrainStart::Start
            }
            DrainPhase::Draining => DrainStart::InProgress,
            DrainPhase::Drained => DrainStart::Done,
        }
    }

    /// Ends a drain that could not finish; the next drain starts over, posts stay refused.
    pub fn interrupt_drain(&mut self) {
        if self.phase == DrainPhase::Draining {
            self.phase = DrainPhase::Interrupted;
        }
    }

    /// Ends a successful drain: every later completion is dropped. Returns the WRs outstanding
    /// when it started and how many of them were synthesized.
    pub fn finish_drain(&mut self) -> (usize, usize) {
        self.phase = DrainPhase::Drained;
        (self.at_start, self.synthesized)
    }
}

#[cfg(test)]
mod tests;
