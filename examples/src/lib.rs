//! # anyverbs-examples: upper-layer protocols over anyverbs
//!
//! [`echo`] is a small echo service — a server and a client — written as the template for a
//! ULP that survives device resets and hot-replugs: each side is a
//! [`Service`](anyverbs::supervisor::Service) run by the recovery
//! [`Supervisor`](anyverbs::supervisor::Supervisor), which stops it when its device is lost and starts it
//! again when the *same* device (by identity) comes back. Read `src/echo/` from `mod.rs`, then
//! `server.rs` and `client.rs` (the wire format, the log and the worker threads are apart):
//! every step says why it is there.
//!
//! [`harness`] runs a server and a client under their supervisors and throws faults at them;
//! the demo, the soak test and the benchmark are built on it.
//!
//! ## Running it
//!
//! ```sh
//! # The demo: echo across injected device resets on the mock (default 4 resets, alternating
//! # the server's and the client's device). Exits 0 only if every message was echoed exactly
//! # once and in order.
//! cargo run -p anyverbs-examples --bin echo [-- RESETS]
//!
//! # The soak test: 1,000 disruptions (resets and unplug/replug cycles of both devices),
//! # checking exactly-once delivery, live objects and memory along the way.
//! cargo test -p anyverbs-examples --test soak -- --nocapture
//!
//! # Recovery time: from the device's return to the first echo after the restart, with the
//! # supervisor's share separated from the service's own start().
//! cargo bench -p anyverbs-examples --bench recovery
//! ```
//!
//! What to expect on the mock (a 2-vCPU machine, debug build): the demo finishes in well under
//! a second; the soak runs about 85–105 disruptions a second, about 10–12 s in all, most of it
//! the server-side cycles, where the client learns of the loss only when its message in flight
//! exhausts its transport retries (about 8 ms on the mock) or its echo times out (25 ms in the
//! soak), then reconnects after the supervisor's 5 ms reconnect delay. Recovery of the client
//! from its own device's return to its first echo takes about 200 µs (median), of which the
//! supervisor's share is a few µs.

#![deny(unsafe_code)]

pub mod echo;
pub mod harness;
