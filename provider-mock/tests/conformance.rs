//! The whole conformance suite against the mock, one test per case and device: `mock0` follows
//! the InfiniBand state model, `mockiw0` the iWARP one. Every case gets a fresh fabric.

fn main() {
    anyverbs_conformance::libtest::run(
        anyverbs_provider_mock::MockProvider::new,
        &["mock0", "mockiw0"],
    );
}
