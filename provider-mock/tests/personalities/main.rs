//! Every mock personality against the real device it imitates, and anyverbs' drain on each.
//!
//! # One body, a table of expectations
//!
//! In the style of `object_store`'s shared integration tests, each test here is ONE body that
//! runs unchanged on every device of the default fabric. What differs between devices is data:
//! the [`Row`] of [`ROWS`] for the device says what the real counterpart of its [`Personality`]
//! does — what a move to ERROR flushes and when, what becomes of a WR posted in ERROR (flushed at
//! once, flushed late, refused with an errno, or accepted and never completed), whether another
//! move to ERROR completes what is left, which strategy its provider must drain with, and whether
//! that drain has to fall back at its deadline. A body asks "what does the row say?", never
//! "which device is this?": adding a personality is adding a row, and a personality that drifts
//! from its real counterpart, or a drain that is wrong on it, fails the row it contradicts.
//!
//! [`for_each_device`] runs a body on every row at once, each in a thread named after the device
//! and on a fabric of its own, and fails with every failing device's message.
//!
//! The ULP's side of the bookkeeping is a [`Book`]: every `wr_id` the ULP posted with what it may
//! see of it ([`Due`]), and every completion polled, with when it was polled. Each test ends by
//! checking the book: every receive and signaled send exactly once, every unsignaled send at most
//! once and never successful, every refused WR never, nothing else, and nothing after the drain.
//!
//! The tests, each on all nine devices:
//!
//! - `naive_marker_drain_per_personality`: the Linux `ib_drain_qp` algorithm through the public
//!   API (ERROR, a zero-length marker per queue, wait), then ERROR again, then a second marker
//!   per queue; each outcome as the row says. Then anyverbs' drain settles whatever is left.
//! - `drain_plan_and_report_per_personality`: a drain from RTS and from ERROR with receives (and,
//!   with RNR, stalled sends) outstanding; strategy, fallback, totals and timing of the report.
//! - `posts_in_error_by_the_ulp_are_accounted`: sends and receives the ULP posts in ERROR.
//! - `late_device_completions_never_reach_the_ulp`: a drain whose deadline has passed, right
//!   after the move to ERROR, before asynchronous flushes arrive; they never arrive after it.
//! - `concurrent_drains_and_racing_posts`: two drains at once and a thread posting receives.
//!
//! `iwarp_closing_with_sends_outstanding_is_refused` is not here: no iWARP personality can keep a
//! send outstanding through the public API (iWARP has no RNR, a SEND without a receive
//! terminates the connection, and the dead device follows the InfiniBand model).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::drain::WorkQueue;
use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, Device, DrainReport, DrainStrategy,
    ErrorKind, Fallback, Listener, MemoryRegion, PostError, Provider, QpInit, QpState, QueuePair,
    RecvWr, RemoteAddr, SendFlags, SendOp, SendWr, Sge, WcOpcode, WcStatus,
};
use anyverbs_provider_mock::{
    FabricConfig, MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
    Personality,
};

mod book;
mod budgets;
mod concurrency;
mod driver;
mod fixtures;
mod late_completions;
mod naive_drain;
mod plan_and_report;
mod posts_in_error;
mod table;

use DrainStrategy::{ErrorThenMarker, FlushMarker, MarkerThenError, WaitForFlush};
use book::*;
use budgets::*;
use driver::*;
use fixtures::*;
use plan_and_report::*;
use table::Fate::{Flushed, FlushedLate, Never, Refused};
use table::*;
