//! Puts the entry symbols of the providers linked into the test binaries
//! (`anyverbs_provider_v*`) into their dynamic symbol tables, so that `dlsym` on the running
//! program finds them (`tests/loader.rs` checks that two linked providers kept distinct
//! symbols). An executable exports nothing by default, and the linker drops what nothing
//! references; only these symbols are exported, not everything as `--export-dynamic` would.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol=anyverbs_provider_v*");
    }
}
