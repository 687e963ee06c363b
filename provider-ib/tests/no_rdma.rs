//! What the provider does where the machine has no RDMA — the CI host's kernel has none — and
//! where the suite runs instead: on a machine with RDMA these say so and pass without checking;
//! the conformance suite runs on rxe0 in the test bed (`scripts/test-all`, step 5).

use anyverbs::{ErrorKind, Provider};

/// The cause, or `None` (after saying so) where this machine has RDMA.
fn no_rdma(test: &str) -> Option<anyverbs::Error> {
    match anyverbs_verbs::device::availability() {
        Err(e) => Some(e),
        Ok(()) => {
            eprintln!(
                "{test}: skipped, this machine has RDMA; the suite runs on real devices in the \
                 test bed (scripts/test-all)"
            );
            None
        }
    }
}

#[test]
fn without_rdma_no_device_is_listed() {
    let Some(_) = no_rdma("without_rdma_no_device_is_listed") else {
        return;
    };
    let provider = anyverbs_provider_ib::provider();
    assert_eq!(provider.name(), "ib");
    assert_eq!(provider.devices().unwrap(), Vec::new());
}

#[test]
fn without_rdma_opening_a_device_says_why() {
    let Some(cause) = no_rdma("without_rdma_opening_a_device_says_why") else {
        return;
    };
    assert!(
        cause.message().starts_with("RDMA is not available here: "),
        "{cause}"
    );
    let e = anyverbs_provider_ib::provider().open("rxe0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
    assert!(
        e.message().starts_with("RDMA is not available here: "),
        "{e}"
    );
}

#[test]
fn without_rdma_injecting_a_fault_says_why() {
    let Some(_) = no_rdma("without_rdma_injecting_a_fault_says_why") else {
        return;
    };
    let e = anyverbs_provider_ib::provider()
        .inject("rxe0", &anyverbs::Fault::Unplug)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotSupported, "{e}");
}
