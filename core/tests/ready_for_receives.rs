//! `cm::ready_for_receives` on every device of the mock, InfiniBand and iWARP models alike:
//! receives can be posted on a fresh QP before it is connected or accepted, and the first SEND
//! of the peer lands in them.

use std::time::{Duration, Instant};

use anyverbs::cm::ready_for_receives;
use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, ErrorKind, Listener, MemoryRegion,
    Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, StateModel, WcStatus,
};
use anyverbs_provider_mock::MockProvider;

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// The mock's devices whose WRs execute (the dead one completes nothing), with their models.
fn working_devices(provider: &MockProvider) -> Vec<(String, StateModel)> {
    let devices: Vec<(String, StateModel)> = provider
        .devices()
        .unwrap()
        .into_iter()
        .filter(|d| d.identity.name != "mockdead0")
        .map(|d| (d.identity.name, d.state_model))
        .collect();
    for model in [StateModel::InfiniBand, StateModel::Iwarp] {
        assert!(
            devices.iter().any(|(_, m)| *m == model),
            "no {model} device"
        );
    }
    devices
}

/// Waits for `n` completions on `cq`, as (wr_id, status).
fn completions(cq: &impl CompletionQueue, n: usize) -> Vec<(u64, WcStatus)> {
    let mut wc = [Completion::default(); 8];
    let mut got = Vec::new();
    while got.len() < n {
        let k = cq.wait(&mut wc[..n - got.len()], soon()).unwrap();
        got.extend(wc[..k].iter().map(|c| (c.wr_id, c.status)));
    }
    got.sort_by_key(|(id, _)| *id);
    got
}

#[test]
fn receives_posted_before_connect_and_accept_take_the_first_sends() {
    let provider = MockProvider::new();
    for (name, model) in working_devices(&provider) {
        let device = provider.open(&name).unwrap();
        let pd = device.alloc_pd().unwrap();
        let (cq_a, cq_b) = (device.create_cq(8).unwrap(), device.create_cq(8).unwrap());
        let a = pd.create_qp(&cq_a, &cq_a, &QpInit::default()).unwrap();
        let b = pd.create_qp(&cq_b, &cq_b, &QpInit::default()).unwrap();
        let mr = pd.register(256, Access::LOCAL_WRITE).unwrap();
        for qp in [&a, &b] {
            ready_for_receives(qp, model).unwrap();
            let expected = match model {
                StateModel::InfiniBand => QpState::Init,
                _ => model.initial(),
            };
            assert_eq!(qp.state().unwrap(), expected, "{name}");
        }
        // Both sides' receives go in before the connection exists.
        a.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])]).unwrap();
        b.post_recv(&[RecvWr::new(2, &[mr.sge(64, 64)])]).unwrap();
        let addr = device.ports().unwrap()[0].addresses[0];
        let listener = device.listen((addr, 0).into()).unwrap();
        a.connect(listener.local_addr(), &ConnParams::default())
            .unwrap();
        let request = listener.next_request(soon()).unwrap();
        listener
            .accept(&request, &b, &ConnParams::default())
            .unwrap();
        // The passive side sends first, before the active side even looked at its connection.
        b.post_send(&[SendWr::send(3, &[mr.sge(128, 8)])]).unwrap();
        a.wait_connected(soon()).unwrap();
        a.post_send(&[SendWr::send(4, &[mr.sge(192, 8)])]).unwrap();
        assert_eq!(
            completions(&cq_a, 2),
            vec![(1, WcStatus::Success), (4, WcStatus::Success)],
            "{name}"
        );
        assert_eq!(
            completions(&cq_b, 2),
            vec![(2, WcStatus::Success), (3, WcStatus::Success)],
            "{name}"
        );
        a.drain(soon()).unwrap();
        b.drain(soon()).unwrap();
    }
}

#[test]
fn without_it_an_infiniband_qp_in_reset_refuses_receives() {
    let provider = MockProvider::new();
    for (name, model) in working_devices(&provider) {
        let device = provider.open(&name).unwrap();
        let pd = device.alloc_pd().unwrap();
        let cq = device.create_cq(8).unwrap();
        let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
        let posted = qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])]);
        match model {
            StateModel::InfiniBand => {
                let e = posted.expect_err(&name);
                assert_eq!(
                    (e.kind(), e.accepted),
                    (ErrorKind::InvalidState, 0),
                    "{name}"
                );
            }
            _ => posted.expect(&name),
        }
        qp.drain(soon()).unwrap();
    }
}

#[test]
fn it_can_be_called_twice_but_not_on_a_connected_infiniband_qp() {
    let provider = MockProvider::new();
    for (name, model) in working_devices(&provider) {
        let device = provider.open(&name).unwrap();
        let pd = device.alloc_pd().unwrap();
        let cq = device.create_cq(8).unwrap();
        let a = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        let b = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        ready_for_receives(&a, model).unwrap();
        ready_for_receives(&a, model).unwrap();
        let addr = device.ports().unwrap()[0].addresses[0];
        let listener = device.listen((addr, 0).into()).unwrap();
        a.connect(listener.local_addr(), &ConnParams::default())
            .unwrap();
        let request = listener.next_request(soon()).unwrap();
        listener
            .accept(&request, &b, &ConnParams::default())
            .unwrap();
        a.wait_connected(soon()).unwrap();
        let again = ready_for_receives(&a, model);
        match model {
            // RTS to INIT is no transition of the model: refused, and the QP is left alone.
            StateModel::InfiniBand => {
                assert_eq!(again.unwrap_err().kind(), ErrorKind::InvalidState, "{name}")
            }
            // iWARP's IDLE takes receives: nothing to do, whatever the state.
            _ => again.unwrap(),
        }
        assert_eq!(a.state().unwrap(), QpState::ReadyToSend, "{name}");
    }
}
