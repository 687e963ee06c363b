//! The whole conformance suite against the mock, one test per case and device personality
//! (`mock0`: InfiniBand HCA, `mockiw0`: iWARP with kernel siw semantics, and one device for each
//! other personality). Every case gets a fresh fabric.

use anyverbs_conformance::libtest::{Target, run_targets};

/// Why the dead device skips every case that needs a WR to execute or complete: the drain cases,
/// and the lifecycle cases that need no data to flow, are what must hold on it.
const DEAD: &str = "no WR ever executes on a dead device";
/// A killed QP's receives are flushed, and the other pair's messages pass: neither happens there.
const DEAD_FLUSH: &str = "a dead device produces no flush completions and passes no data";
/// The SEND to a lost peer must complete with transport-retry-exceeded: nothing completes there.
const DEAD_SEND: &str = "a dead device completes no SEND, not even with an error";
/// A destroyed QP's CM sends a DREQ through its device: a dead one sends nothing.
const DEAD_DREQ: &str = "a dead device sends no DREQ when its QP is destroyed";
/// The supervised test service checks on every start that a message passes.
const DEAD_SERVICE: &str = "the supervised test service needs a message to pass on every start";

fn main() {
    run_targets(
        anyverbs_provider_mock::MockProvider::new,
        &[
            Target::all("mock0"),
            Target::all("mockiw0"),
            Target::all("mockrxe0"),
            Target::all("mocksiw0"),
            Target::all("mockcxgb0"),
            Target::all("mockerdma0"),
            Target::all("mockirdma0"),
            Target::all("mocklost0"),
            Target {
                device: "mockdead0",
                skip: &[
                    ("data::*", DEAD),
                    ("channel::fd_wakes_a_poll_loop", DEAD),
                    ("channel::one_channel_two_cqs", DEAD),
                    ("channel::arm_then_poll", DEAD),
                    ("channel::time_wakes_a_sleeping_loop", DEAD),
                    ("bad_input::*", DEAD),
                    ("state::error_flushes_outstanding", DEAD),
                    ("state::sqd_pauses_the_send_queue", DEAD),
                    ("state::receives_before_connect", DEAD),
                    ("connect::defaults_are_the_device_maxima", DEAD),
                    ("connect::disconnect_tells_the_peer", DEAD_DREQ),
                    ("connect::read_credits_negotiated", DEAD),
                    ("lifecycle::address_change_events", DEAD),
                    ("lifecycle::kill_qp_touches_nothing_else", DEAD_FLUSH),
                    ("lifecycle::lose_peer_events", DEAD_SEND),
                    (
                        "lifecycle::peer_destroy_is_reported_as_disconnected",
                        DEAD_DREQ,
                    ),
                    ("lifecycle::stall_completes_nothing_until_resume", DEAD),
                    ("memory::send_lands_in_caller_memory", DEAD),
                    ("memory::rdma_into_and_out_of_caller_memory", DEAD),
                    ("memory::lent_buffer_comes_back", DEAD),
                    ("memory::caller_memory_remote_checks", DEAD),
                    ("recovery::*", DEAD_SERVICE),
                ],
            },
        ],
    );
}
