//! Runs the `plugin` benchmark's iterations a given number of times on one side, for counting
//! instructions with callgrind (deterministic, unlike time on a shared VM).
//!
//! ```sh
//! cargo build --release -p anyverbs-provider-mock --example plugin_rounds
//! valgrind --tool=callgrind target/release/examples/plugin_rounds direct 1 20000
//! valgrind --tool=callgrind target/release/examples/plugin_rounds direct 1 0   # set-up only
//! ```
//!
//! Arguments: `direct` (the mock linked in) or `plugin` (the mock's plugin, through the
//! loader); messages per round (1 to 16, or 0 for a poll of an empty CQ); iterations. The
//! difference of two runs with different iteration counts, divided by the difference of the
//! counts, is the cost of one iteration.

use anyverbs::Provider;
use anyverbs::plugin::{Plugin, plugin_file_name};
use anyverbs_provider_mock::MockProvider;

#[path = "../benches/common/bed.rs"]
mod bed;
// Shared with the bench and the twin; `Work::code` is the twin's half.
#[path = "../benches/common/run.rs"]
#[allow(dead_code)]
mod run;

use bed::Bed;
use run::{Run, Work};

fn iterations<P: Provider>(provider: P, work: Work, count: u64) {
    let bed = Bed::new(provider);
    let mut run = Run::new(&bed, work);
    for _ in 0..count {
        run.once();
    }
    if count > 0 {
        run.check_data();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: plugin_rounds direct|plugin MESSAGES ITERATIONS";
    let [_, side, messages, count] = &args[..] else {
        panic!("{usage}");
    };
    let work = Work::from_code(messages.parse().expect(usage));
    let count: u64 = count.parse().expect(usage);
    match side.as_str() {
        "direct" => iterations(MockProvider::new(), work, count),
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
            let provider = plugin.instantiate().unwrap_or_else(|e| panic!("{e}"));
            iterations(provider, work, count)
        }
        _ => panic!("{usage}"),
    }
}
