//! The echo demo: an echo server on `mock0` and a client on `mock1`, each under its own recovery
//! supervisor, echoing while device resets are injected into the server's and the client's
//! device in turn.
//!
//! ```sh
//! cargo run -p anyverbs-examples --bin echo [-- RESETS]
//! ```
//!
//! Prints every supervisor decision and the message count; exits 0 only if every message was
//! echoed exactly once and in order, 1 otherwise, 2 for a bad argument.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs_examples::harness::{Disruption, EchoPair, PairConfig, Role};
use anyverbs_provider_mock::MockProvider;

/// Resets injected when no count is given.
const DEFAULT_RESETS: u32 = 4;

fn main() -> ExitCode {
    let resets = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => DEFAULT_RESETS,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: echo [RESETS]   (default {DEFAULT_RESETS})");
            return ExitCode::from(2);
        }
    };
    match run(resets) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(resets: u32) -> anyverbs::Result<bool> {
    let t0 = Instant::now();
    // Budget for the whole demo; each wait inside has its own deadline derived from it.
    let deadline = t0 + Duration::from_secs(10) + Duration::from_millis(500) * resets;
    let provider = Arc::new(MockProvider::new());
    let config = PairConfig::fast();
    println!(
        "echo server on {}, client on {}; {resets} device resets to come",
        config.server_device, config.client_device
    );
    let observe = Box::new(
        move |role: Role, report: &anyverbs::supervisor::SupervisorReport| {
            println!(
                "{:>9.3} ms  {role}: {}",
                report.at.saturating_duration_since(t0).as_secs_f64() * 1e3,
                report.event
            );
        },
    );
    let mut pair = EchoPair::spawn(Arc::clone(&provider), config, observe, deadline)?;
    for i in 0..resets {
        // The server's device, then the client's, and so on.
        let role = if i % 2 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        println!(
            "--- reset {} of {resets}: {} (device {}), {} messages echoed so far",
            i + 1,
            role,
            pair.device(role),
            pair.log().next()
        );
        let recovery = pair.disrupt(Disruption::Reset(role), deadline)?;
        println!(
            "--- echoing again after {:.1} ms",
            recovery.took.as_secs_f64() * 1e3
        );
    }
    // A few more echoes on the last connection, then a clean shutdown.
    let more = pair.log().next() + 100;
    pair.log().wait_for(more, deadline)?;
    pair.poll_events()?;
    let stats = Arc::clone(pair.server_stats());
    let summary = pair.shutdown(deadline)?;
    println!(
        "{summary}; the server accepted {} connections and echoed {} messages (resent ones \
         count twice) in {} starts; {:.2} s",
        stats.accepted(),
        stats.echoed(),
        stats.starts(),
        t0.elapsed().as_secs_f64()
    );
    let ok = summary.is_clean() && summary.echoed >= more;
    println!(
        "{}",
        if ok {
            "OK: every message was echoed exactly once and in order"
        } else {
            "FAILED: messages were lost, duplicated or corrupted"
        }
    );
    Ok(ok)
}
