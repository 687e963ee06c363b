//! Runs the `plugin` benchmark's rounds a given number of times on one side, for counting
//! instructions with callgrind (deterministic, unlike time on a shared VM).
//!
//! ```sh
//! cargo build --release -p anyverbs-provider-mock --example plugin_rounds
//! valgrind --tool=callgrind target/release/examples/plugin_rounds direct 1 20000
//! valgrind --tool=callgrind target/release/examples/plugin_rounds plugin 1 0   # set-up only
//! ```
//!
//! Arguments: `direct` or `plugin`, messages per round (1 or 16), rounds.

use std::hint::black_box;

use anyverbs::plugin::{Plugin, plugin_file_name};
use anyverbs::{Completion, Provider};
use anyverbs_provider_mock::MockProvider;

#[path = "../benches/common/bed.rs"]
#[allow(dead_code)]
mod bed;

use bed::{BATCH, Bed};

fn rounds<P: Provider>(provider: P, n: usize, count: u64) {
    let bed = Bed::new(provider);
    let (recv, send) = (bed.recv_wrs(n), bed.send_wrs(n));
    let mut out = [Completion::default(); BATCH];
    for _ in 0..count {
        bed.round(black_box(&recv), black_box(&send), black_box(&mut out));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: plugin_rounds direct|plugin MESSAGES ROUNDS";
    let [_, side, n, count] = &args[..] else {
        panic!("{usage}");
    };
    let n: usize = n.parse().expect(usage);
    let count: u64 = count.parse().expect(usage);
    assert!((1..=BATCH).contains(&n), "{usage}: MESSAGES is 1..={BATCH}");
    match side.as_str() {
        "direct" => rounds(MockProvider::new(), n, count),
        "plugin" => {
            let exe = std::env::current_exe().expect("the program's path");
            // target/<profile>/examples/plugin_rounds; cargo builds the cdylib into
            // target/<profile>/deps/ as a dependency of the example.
            let profile = exe
                .parent()
                .and_then(|d| d.parent())
                .expect("target/<profile>");
            let so = profile
                .join("deps")
                .join(plugin_file_name("anyverbs_provider_mock"));
            let plugin = Plugin::load(so).unwrap_or_else(|e| panic!("{e}"));
            rounds(
                plugin.instantiate().unwrap_or_else(|e| panic!("{e}")),
                n,
                count,
            )
        }
        _ => panic!("{usage}"),
    }
}
