//! On a machine without RDMA — no RDMA in the kernel (`ENOSYS`), or no rdma-core installed
//! (`EOPNOTSUPP` from the run-time loader) — discovery finds nothing and opening a device says
//! "RDMA is not available here: <cause>". Never a panic, never a load failure: this test binary
//! itself has no link-time dependency on rdma-core.

use std::path::Path;

use anyverbs::ErrorKind;
use anyverbs_verbs::context::Context;
use anyverbs_verbs::device;

#[test]
fn without_rdma_discovery_is_empty_and_opening_says_why() {
    if Path::new("/sys/class/infiniband").exists()
        && std::env::var_os("ANYVERBS_EXPECT_NO_RDMA_CORE").is_none()
    {
        eprintln!("this machine has RDMA devices; the no-RDMA case runs on machines without");
        return;
    }
    assert!(
        device::devices().unwrap().is_empty(),
        "no devices where there is no RDMA"
    );
    let e = device::availability().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    let e = Context::open("rxe0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    assert!(
        e.message().starts_with("RDMA is not available here: "),
        "{e}"
    );
    println!("{e}");
    // Run with rdma-core hidden (the test script bind-mounts an empty file over
    // libibverbs.so.1), the cause must name rdma-core rather than the kernel.
    if std::env::var_os("ANYVERBS_EXPECT_NO_RDMA_CORE").is_some() {
        assert!(e.message().contains("rdma-core is not installed"), "{e}");
    }
}
