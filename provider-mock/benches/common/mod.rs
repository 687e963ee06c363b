//! Fixture code shared by the mock's benchmarks.

use std::net::SocketAddr;
use std::time::Instant;

use anyverbs::{ConnParams, Device, Listener, QpInit, QueuePair};
use anyverbs_provider_mock::{MockCq, MockDevice, MockListener, MockPd, MockQp};

/// Two QPs of `pd` on `device`, `a` on `cq_a` and `b` on `cq_b`, connected through the connection
/// manager (`a` active, `b` accepted), with the listener they met through.
pub fn connected_pair(
    device: &MockDevice,
    pd: &MockPd,
    (cq_a, cq_b): (&MockCq, &MockCq),
    init: &QpInit,
    deadline: Instant,
) -> (MockQp, MockQp, MockListener) {
    let ip = *device
        .ports()
        .expect("ports")
        .iter()
        .flat_map(|p| p.addresses.iter())
        .next()
        .expect("the device has an address");
    let a = pd.create_qp(cq_a, cq_a, init).expect("create_qp a");
    let b = pd.create_qp(cq_b, cq_b, init).expect("create_qp b");
    let params = ConnParams::default();
    let listener = device.listen(SocketAddr::new(ip, 0)).expect("listen");
    a.connect(listener.local_addr(), &params).expect("connect");
    let request = listener.next_request(deadline).expect("next_request");
    listener.accept(&request, &b, &params).expect("accept");
    a.wait_connected(deadline).expect("wait_connected");
    (a, b, listener)
}
