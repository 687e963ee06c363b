//! Panics a plugin's guards catch are reported as errors, quietly.
//!
//! A plugin built as a `cdylib` carries its own copy of the standard library, with its own
//! panic hook, which prints every panic — with a full backtrace when the environment sets
//! `RUST_BACKTRACE` — before any `catch_unwind` gets it. A panic the plugin side catches at the
//! boundary becomes an error the program receives (`the provider panicked at src/lib.rs:44:9:
//! ...`), so printing it as well only buries the program's own output.
//!
//! So the plugin's hook defers instead of printing: it keeps the panic's report (message,
//! place, and a backtrace if the environment asks for one) on its thread, and the guard that
//! catches the panic takes the report into the error. A report nobody takes — a panic that
//! escapes on one of the provider's own threads, or one the provider catches itself — is
//! printed when the thread ends, or when the next panic on the thread comes first. Nothing is
//! deferred in a plugin built with `panic = "abort"` (the process ends right after the hook),
//! and nothing changes when the exported functions run in the loader's own program (a table
//! linked in and loaded with `Plugin::from_table`): that program's hook is its own business.
//!
//! The data path pays nothing for this: the hook runs only when something panics.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::fmt;
use std::panic::PanicHookInfo;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the loader of this copy of anyverbs when it starts a provider: the exported functions
/// then run in the loader's own program, which keeps its hook.
pub(crate) static LOADER_IN_THIS_COPY: AtomicBool = AtomicBool::new(false);

/// A panic, as the default hook would have printed it.
pub(super) struct Report {
    thread: String,
    message: String,
    location: Option<String>,
    backtrace: Backtrace,
}

impl Report {
    fn new(info: &PanicHookInfo<'_>) -> Report {
        let payload = info.payload();
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a non-string panic payload".to_string()
        };
        Report {
            thread: std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_string(),
            message,
            location: info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
            backtrace: Backtrace::capture(),
        }
    }

    /// `at FILE:LINE:COL: MESSAGE`, or the message alone, for an error.
    pub(super) fn summary(&self) -> String {
        match &self.location {
            Some(at) => format!("at {at}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread '{}' panicked", self.thread)?;
        if let Some(at) = &self.location {
            write!(f, " at {at}")?;
        }
        writeln!(f, ":\n{}", self.message)?;
        if self.backtrace.status() == BacktraceStatus::Captured {
            writeln!(f, "stack backtrace:\n{}", self.backtrace)?;
        }
        Ok(())
    }
}

/// The report of this thread's last panic, not yet taken; printed if the thread ends first.
struct Pending(RefCell<Option<Report>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(report) = self.0.get_mut().take() {
            print_report(&report);
        }
    }
}

/// Prints a report on standard error, as the default hook does: a failure to print is ignored
/// (`eprint!` would panic, here inside a panic hook or a thread-local's destructor, which aborts
/// the process — say, when standard error is a pipe nobody reads any more).
fn print_report(report: &Report) {
    use std::io::Write;
    let _ = write!(std::io::stderr().lock(), "{report}");
}

thread_local! {
    static PENDING: Pending = const { Pending(RefCell::new(None)) };
}

/// Installs the deferring hook, once, unless this copy's loader runs here (see the module
/// documentation). Called as a provider is made, before any of its code runs.
pub(super) fn install() {
    if cfg!(panic = "abort") || LOADER_IN_THIS_COPY.load(Ordering::Relaxed) {
        return;
    }
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let report = Report::new(info);
            let earlier = PENDING.try_with(|p| p.0.borrow_mut().replace(report));
            match earlier {
                // A report nobody took (not the loader's to report): print it now.
                Ok(Some(untaken)) => print_report(&untaken),
                Ok(None) => {}
                // The thread is ending: nothing can take a report any more.
                Err(_) => previous(info),
            }
        }));
    });
}

/// The report of the panic a guard just caught, taken so that it is not printed; `None` where
/// the hook does not defer (the panic was printed already).
pub(super) fn take() -> Option<Report> {
    PENDING.try_with(|p| p.0.borrow_mut().take()).ok().flatten()
}
