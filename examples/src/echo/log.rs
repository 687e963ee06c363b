//! The echo log: what the client saw, to check that every message was echoed exactly once and
//! in order.

use super::*;

/// What the client saw: every echo, checked against exactly once and in order. Shared between
/// the client (across all its restarts) and whoever checks the results.
///
/// It keeps counters, not the list of echoes, so it does not grow however long it runs.
#[derive(Debug, Default)]
pub struct EchoLog {
    inner: Mutex<EchoSummary>,
    cond: Condvar,
}

/// A snapshot of an [`EchoLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EchoSummary {
    /// Messages echoed exactly once and in order: messages `0..echoed`. Also the number of
    /// the next message to send.
    pub echoed: u64,
    /// Echoes of a message already echoed.
    pub duplicates: u64,
    /// Echoes of a message later than the next expected one (one was skipped).
    pub out_of_order: u64,
    /// Echoes whose bytes were not a message the client sent.
    pub corrupted: u64,
    /// When the last good echo arrived.
    pub last_echo_at: Option<Instant>,
    /// Connections the client has made (its worker ran on each).
    pub connections: u64,
    /// When the first good echo on the latest connection arrived: with the time the service
    /// was started, how long a restart took until messages flowed again.
    pub first_echo_at: Option<Instant>,
}

impl EchoSummary {
    /// Whether every echo so far was the next expected message, intact.
    pub fn is_clean(&self) -> bool {
        self.duplicates == 0 && self.out_of_order == 0 && self.corrupted == 0
    }
}

impl fmt::Display for EchoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} messages echoed in order; {} duplicated, {} out of order, {} corrupted",
            self.echoed, self.duplicates, self.out_of_order, self.corrupted
        )
    }
}

impl EchoLog {
    /// An empty log.
    pub fn new() -> Arc<EchoLog> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, EchoSummary> {
        lock(&self.inner)
    }

    /// The first message not yet echoed.
    pub fn next(&self) -> u64 {
        self.lock().echoed
    }

    /// Records an echo of message `seq` (`None`: the bytes were no message of ours).
    pub(super) fn record(&self, seq: Option<u64>, at: Instant) {
        let mut s = self.lock();
        match seq {
            None => s.corrupted += 1,
            Some(seq) if seq == s.echoed => {
                s.echoed += 1;
                s.last_echo_at = Some(at);
                s.first_echo_at.get_or_insert(at);
            }
            Some(seq) if seq < s.echoed => s.duplicates += 1,
            Some(_) => s.out_of_order += 1,
        }
        self.cond.notify_all();
    }

    /// A new connection is up: the next echo is its first.
    pub(super) fn begin_connection(&self) {
        let mut s = self.lock();
        s.connections += 1;
        s.first_echo_at = None;
        self.cond.notify_all();
    }

    /// What the log holds now.
    pub fn summary(&self) -> EchoSummary {
        self.lock().clone()
    }

    /// Waits until at least `count` messages were echoed, or `deadline`
    /// ([`ErrorKind::TimedOut`]). Returns the summary then.
    pub fn wait_for(&self, count: u64, deadline: Instant) -> Result<EchoSummary> {
        self.wait_until(deadline, |s| s.echoed >= count)
            .map_err(|s| {
                Error::timed_out(format!(
                    "{} of {count} messages echoed by the deadline",
                    s.echoed
                ))
            })
    }

    /// Waits until `done` holds for the log, or `deadline`; on time-out, the error is the
    /// summary then.
    pub fn wait_until(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&EchoSummary) -> bool,
    ) -> Result<EchoSummary, EchoSummary> {
        let mut s = self.lock();
        loop {
            if done(&s) {
                return Ok(s.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(s.clone());
            }
            s = match self.cond.wait_timeout(s, deadline - now) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }
}
