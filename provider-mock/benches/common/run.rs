//! What one iteration of the `plugin` benchmark does, on either side: shared by the bench (its
//! plugin side) and the twin plugin (`provider-mock/twin`, its direct side), so both run the
//! same rounds.

use std::hint::black_box;

use anyverbs::{Completion, CompletionQueue, MemoryRegion, Provider, RecvWr, SendWr};

use super::bed::{BATCH, Bed, MSG};

/// What one iteration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// A round of `n` messages: post `n` receives and `n` SENDs, poll until all completed.
    Messages(usize),
    /// One non-blocking poll of an empty CQ.
    EmptyPoll,
}

impl Work {
    /// As a number for the twin's C function: the messages of a round, 0 for the empty poll.
    pub fn code(self) -> usize {
        match self {
            Work::Messages(n) => n,
            Work::EmptyPoll => 0,
        }
    }

    /// From [`code`](Self::code).
    pub fn from_code(code: usize) -> Work {
        match code {
            0 => Work::EmptyPoll,
            n => Work::Messages(n),
        }
    }
}

/// One side's iterations of a [`Work`]: the bed, and the WRs and completion buffer it reuses.
pub struct Run<'b, P: Provider> {
    bed: &'b Bed<P>,
    work: Work,
    recv: Vec<RecvWr<'static>>,
    send: Vec<SendWr<'static>>,
    out: [Completion; BATCH],
}

impl<'b, P: Provider> Run<'b, P> {
    /// Iterations of `work` on `bed`; a round is of 1 to [`BATCH`] messages.
    pub fn new(bed: &'b Bed<P>, work: Work) -> Self {
        let n = match work {
            Work::Messages(n) => {
                assert!(
                    (1..=BATCH).contains(&n),
                    "a round is of 1 to {BATCH} messages"
                );
                n
            }
            Work::EmptyPoll => 0,
        };
        Run {
            bed,
            work,
            recv: bed.recv_wrs(n),
            send: bed.send_wrs(n),
            out: [Completion::default(); BATCH],
        }
    }

    /// One iteration, every completion checked; panics if it went wrong.
    #[inline]
    pub fn once(&mut self) {
        match self.work {
            Work::Messages(_) => self.bed.round(
                black_box(&self.recv),
                black_box(&self.send),
                black_box(&mut self.out),
            ),
            Work::EmptyPoll => {
                let k = self.bed.cq_a.poll(black_box(&mut self.out[..1]));
                assert_eq!(k.expect("poll cq_a"), 0, "the CQ must be empty");
            }
        }
    }

    /// Panics unless the last round left the source pattern in the destination: the data
    /// really moved.
    pub fn check_data(&self) {
        if let Work::Messages(n) = self.work {
            let (mut want, mut got) = (vec![0; n * MSG], vec![0; n * MSG]);
            self.bed.src.read(0, &mut want).expect("read src");
            self.bed.dst.read(0, &mut got).expect("read dst");
            assert_eq!(want, got, "destination differs from source");
        }
    }
}
