//! What the server and the client share: a poisoned lock taken anyway, and a worker thread that
//! stops when asked.

use super::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few field updates: a panic inside one cannot leave the
    // data half-changed, so a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker thread that can be joined with a deadline.
pub(super) struct Worker<T> {
    handle: JoinHandle<T>,
    /// Disconnected when the thread ends, however it ends.
    done: Receiver<()>,
}

impl<T: Send + 'static> Worker<T> {
    pub(super) fn spawn(
        name: &str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Worker<T>> {
        let (tx, done) = sync_channel::<()>(0);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Dropped when the body returns or unwinds: that disconnects `done`.
                let _tx: SyncSender<()> = tx;
                body()
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::ResourceExhausted,
                    format!("cannot spawn the {name} thread: {e}"),
                )
            })?;
        Ok(Worker { handle, done })
    }

    /// The thread's result, if it ends by `deadline` without panicking. Otherwise it is left
    /// to finish on its own.
    pub(super) fn join(self, deadline: Instant) -> Option<T> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.done.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            // Nobody ever sends: disconnected means the thread's body is over.
            _ => self.handle.join().ok(),
        }
    }
}
