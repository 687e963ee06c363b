//! The whole conformance suite against the mock, one test per case and device personality
//! (`mock0`: InfiniBand HCA, `mockiw0`: iWARP with kernel siw semantics, and one device for each
//! other personality). Every case gets a fresh fabric.

use anyverbs_conformance::libtest::{Target, run_targets};

/// Why the dead device runs only the drain cases: they are what must hold on it.
const DEAD: &str = "no WR ever executes on a dead device";

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
                    ("bad_input::*", DEAD),
                    ("state::error_flushes_outstanding", DEAD),
                    ("state::sqd_pauses_the_send_queue", DEAD),
                ],
            },
        ],
    );
}
