//! The ULP's book.

use super::*;

/// What the ULP may see of one of its WRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Exactly one completion (receives, signaled sends).
    Once,
    /// At most one completion, never a success (unsignaled sends).
    AtMostOnce,
    /// None: the post was refused.
    Never,
}

/// A moment of a test: taken before a call, and after polling the CQ right after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Act {
    pub(super) before: Instant,
    /// How many completions the book held after that poll: earlier ones arrived "at once".
    pub(super) seen: usize,
}

/// The ULP's record of one QP: what it posted, and every completion it polled, in order.
pub(super) struct Book {
    pub(super) device: &'static str,
    pub(super) qpn: u32,
    pub(super) due: BTreeMap<u64, (Due, WcOpcode)>,
    pub(super) seen: Vec<(Completion, Instant)>,
}

impl Book {
    pub(super) fn new(device: &'static str, qp: &MockQp) -> Book {
        Book {
            device,
            qpn: qp.qp_num(),
            due: BTreeMap::new(),
            seen: Vec::new(),
        }
    }

    /// Books a WR the ULP posted (or tried to).
    pub(super) fn expect(&mut self, id: u64, due: Due, opcode: WcOpcode) {
        let old = self.due.insert(id, (due, opcode));
        assert!(old.is_none(), "{}: wr_id {id} booked twice", self.device);
    }

    /// Polls everything `cq` holds now.
    pub(super) fn poll(&mut self, cq: &MockCq) {
        let mut buf = [Completion::default(); 64];
        loop {
            let n = cq
                .poll(&mut buf)
                .unwrap_or_else(|e| panic!("{}: poll: {e}", self.device));
            let at = Instant::now();
            self.seen.extend(buf[..n].iter().map(|c| (*c, at)));
            if n < buf.len() {
                return;
            }
        }
    }

    /// Runs `f`, then polls at once; returns what `f` returned and when that happened.
    pub(super) fn act<R>(&mut self, cq: &MockCq, f: impl FnOnce() -> R) -> (R, Act) {
        let before = Instant::now();
        let r = f();
        self.poll(cq);
        let act = Act {
            before,
            seen: self.seen.len(),
        };
        (r, act)
    }

    /// Collects completions until `done` holds or `deadline` passes.
    pub(super) fn collect_until(
        &mut self,
        cq: &MockCq,
        deadline: Instant,
        done: impl Fn(&Book) -> bool,
    ) {
        let mut buf = [Completion::default(); 64];
        loop {
            self.poll(cq);
            if done(self) {
                return;
            }
            match cq.wait(&mut buf, deadline) {
                Ok(n) => {
                    let at = Instant::now();
                    self.seen.extend(buf[..n].iter().map(|c| (*c, at)));
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => return,
                Err(e) => panic!("{}: wait: {e}", self.device),
            }
        }
    }

    /// The first completion of `id`: its position in the book, and when it was polled.
    pub(super) fn arrival(&self, id: u64) -> Option<(usize, &Completion, Instant)> {
        self.seen
            .iter()
            .enumerate()
            .find(|(_, (c, _))| c.wr_id == id)
            .map(|(i, (c, at))| (i, c, *at))
    }

    /// Accepted WRs the ULP has not seen complete.
    pub(super) fn pending(&self) -> usize {
        self.due
            .iter()
            .filter(|(id, (due, _))| *due != Due::Never && self.arrival(**id).is_none())
            .count()
    }

    /// Checks every completion polled so far against the book: each for this QP, a flush error
    /// (nothing in these tests moves data; an unsignaled send never reports success) with the
    /// opcode of its WR, and each `wr_id` seen as often as it is due.
    pub(super) fn check(&self) {
        let dev = self.device;
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for (c, _) in &self.seen {
            let Some(&(due, opcode)) = self.due.get(&c.wr_id) else {
                panic!(
                    "{dev}: a completion for wr_id {} the ULP never posted: {c:?}",
                    c.wr_id
                );
            };
            assert_eq!(c.qp_num, self.qpn, "{dev}: {c:?}");
            assert_eq!(
                c.status,
                WcStatus::WrFlushError,
                "{dev}: wr {} ({due:?}) completed with {}; only flushes are possible here",
                c.wr_id,
                c.status
            );
            assert_eq!(
                c.opcode, opcode,
                "{dev}: wr {}: a flush carries its WR's opcode",
                c.wr_id
            );
            *counts.entry(c.wr_id).or_default() += 1;
        }
        for (id, (due, _)) in &self.due {
            let n = counts.get(id).copied().unwrap_or(0);
            let ok = match due {
                Due::Once => n == 1,
                Due::AtMostOnce => n <= 1,
                Due::Never => n == 0,
            };
            assert!(ok, "{dev}: wr {id} is due {due:?} but was seen {n} time(s)");
        }
    }

    /// After a drain returned: polls what the CQ holds and checks the book (everything is there
    /// already), then waits [`QUIET`] and checks that nothing more ever comes.
    pub(super) fn finish(&mut self, cq: &MockCq) {
        self.poll(cq);
        self.check();
        let n = self.seen.len();
        thread::sleep(QUIET);
        self.poll(cq);
        assert!(
            self.seen.len() == n,
            "{}: completions after the drain returned: {:?}",
            self.device,
            &self.seen[n..]
        );
    }
}

/// WRs whose fate the naive algorithm watches for, all acted on within one window.
pub(super) struct Watch {
    pub(super) items: Vec<Watched>,
}

pub(super) struct Watched {
    pub(super) what: String,
    pub(super) id: u64,
    pub(super) fate: Fate,
    pub(super) act: Act,
}

impl Watch {
    pub(super) fn new() -> Watch {
        Watch { items: Vec::new() }
    }

    pub(super) fn add(&mut self, what: String, id: u64, fate: Fate, act: Act) {
        self.items.push(Watched {
            what,
            id,
            fate,
            act,
        });
    }

    /// Waits, at most [`NAIVE_WINDOW`] from the first act, for what is due to arrive (the whole
    /// window when something must never arrive), then checks each WR against its fate.
    pub(super) fn verify(self, book: &mut Book, cq: &MockCq) {
        let Some(start) = self.items.iter().map(|w| w.act.before).min() else {
            return;
        };
        let must_arrive: Vec<u64> = self
            .items
            .iter()
            .filter(|w| matches!(w.fate, Flushed | FlushedLate))
            .map(|w| w.id)
            .collect();
        let wait_out = self.items.iter().any(|w| w.fate == Never);
        book.collect_until(cq, start + NAIVE_WINDOW, |b| {
            !wait_out && must_arrive.iter().all(|id| b.arrival(*id).is_some())
        });
        for w in &self.items {
            check_fate(book, w);
        }
    }
}

/// Checks what became of one watched WR.
pub(super) fn check_fate(book: &Book, w: &Watched) {
    let (dev, what) = (book.device, &w.what);
    let arrival = book.arrival(w.id);
    match w.fate {
        Flushed => {
            let (i, c, _) = arrival.unwrap_or_else(|| {
                panic!("{dev}: {what} should be flushed at once; nothing in {NAIVE_WINDOW:?}")
            });
            assert_eq!(c.status, WcStatus::WrFlushError, "{dev}: {what}");
            assert!(
                i < w.act.seen,
                "{dev}: {what} was flushed, but not by the time the call returned"
            );
        }
        FlushedLate => {
            let (i, c, at) = arrival.unwrap_or_else(|| {
                panic!("{dev}: {what} should be flushed late; nothing in {NAIVE_WINDOW:?}")
            });
            assert_eq!(c.status, WcStatus::WrFlushError, "{dev}: {what}");
            assert!(
                i >= w.act.seen,
                "{dev}: {what} was there at once; the device flushes asynchronously"
            );
            assert!(
                at - w.act.before >= flush_delay(),
                "{dev}: {what} arrived after {:?}, before the flush delay",
                at - w.act.before
            );
        }
        Never => {
            if let Some((_, c, _)) = arrival {
                panic!("{dev}: {what} completed ({c:?}); on the real device it never does");
            }
        }
        Refused(_) => unreachable!("refused WRs are checked at the post"),
    }
}
