//! Faults: refused arguments, port flaps, killed QPs, lost peers, stalls.

use super::*;

#[test]
pub(super) fn unknown_devices_and_bad_arguments_are_refused() {
    let provider = MockProvider::new();
    let e = provider.inject("nosuch0", &Fault::Unplug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        provider.live_objects("nosuch0").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let e = provider
        .inject(
            "mock0",
            &Fault::FlapPort {
                port: 2,
                down_for: Duration::ZERO,
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    for fault in [Fault::KillQp { qp_num: 99 }, Fault::LosePeer { qp_num: 99 }] {
        let e = provider.inject("mock0", &fault).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{fault}");
    }
    // A QP of another device is not found either.
    let p = pair(&provider, "mock1", "mock1");
    let e = provider
        .inject(
            "mock0",
            &Fault::KillQp {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A QP that is not connected has no peer to lose.
    let qp = p
        .pd_a
        .create_qp(&p.cq_a, &p.cq_a, &QpInit::default())
        .unwrap();
    let e = provider
        .inject(
            "mock1",
            &Fault::LosePeer {
                qp_num: qp.qp_num(),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[test]
pub(super) fn each_mock_device_lists_the_faults_it_can_have_injected() {
    let provider = MockProvider::new();
    for info in provider.devices().unwrap() {
        let name = &info.identity.name;
        let soft = name == "mockrxe0" || name == "mocksiw0";
        let expected = if soft {
            Faults::RESET | Faults::UNPLUG | Faults::REPLUG_OTHER | Faults::FLAP_PORT
        } else {
            Faults::all()
        };
        assert_eq!(info.faults, expected, "{name}");
        let fatal = !soft && name != "mockdead0";
        assert_eq!(info.caps.contains(Caps::DEVICE_FATAL), fatal, "{name}");
    }
}

#[test]
pub(super) fn a_fault_the_device_does_not_list_is_not_supported_and_changes_nothing() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mockrxe0", "mockrxe0");
    for fault in [
        Fault::KillQp {
            qp_num: p.a.qp_num(),
        },
        Fault::LosePeer {
            qp_num: p.a.qp_num(),
        },
        Fault::Stall,
        Fault::Resume,
    ] {
        let e = provider.inject("mockrxe0", &fault).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSupported, "{fault}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("mockrxe0")
                && text.contains(&fault.to_string())
                && text.contains("reset"),
            "{text}"
        );
    }
    // Nothing happened: the QP is still connected and works.
    assert_eq!(p.a.state().unwrap(), QpState::ReadyToSend);
    p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 64)])])
        .unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 64)])])
        .unwrap();
    assert_eq!(wait_for(&p.cq_b, 1), [(1, WcStatus::Success)]);
    assert_eq!(wait_for(&p.cq_a, 1), [(2, WcStatus::Success)]);
}

#[test]
pub(super) fn a_reset_of_a_device_without_fatal_events_is_a_removal_and_a_return() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let before = provider.open("mockrxe0").unwrap();
    let events = before.events().unwrap();
    let old = before.info().identity.clone();
    provider
        .inject(
            "mockrxe0",
            &Fault::Reset {
                down_for: Duration::from_millis(10),
            },
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(
        events.recv(deadline).unwrap(),
        DeviceEvent::DeviceRemoved,
        "rxe has no DEVICE_FATAL: its reset is a removal"
    );
    drop(before);
    let mut seen = Vec::new();
    loop {
        let e = monitor.recv(deadline).unwrap();
        let back = matches!(&e, MonitorEvent::Added(info) if info.identity.name == "mockrxe0");
        seen.push(e);
        if back {
            break;
        }
    }
    let Some(MonitorEvent::Added(info)) = seen.last() else {
        panic!("mockrxe0 did not come back: {seen:?}");
    };
    assert!(info.identity.is_same_device(&old), "{info:?}");
    assert_ne!(info.identity.index, old.index);
}

#[test]
pub(super) fn a_port_flap_goes_down_and_comes_back_on_its_own() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock0");
    let events = p.dev_a.events().unwrap();
    let down_for = Duration::from_millis(40);
    let start = Instant::now();
    provider
        .inject("mock0", &Fault::FlapPort { port: 1, down_for })
        .unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortDown { port: 1 }
    );
    assert_eq!(p.dev_a.ports().unwrap()[0].state, PortState::Down);
    // The data path keeps working while the port is down (documented simplification).
    p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
        .unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    assert_eq!(wait_for(&p.cq_b, 1), vec![(1, WcStatus::Success)]);
    // Nobody calls into the fabric: PortActive must arrive on its own.
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortActive { port: 1 }
    );
    assert!(start.elapsed() >= down_for);
    assert_eq!(p.dev_a.ports().unwrap()[0].state, PortState::Active);
}

#[test]
pub(super) fn kill_qp_fails_that_qp_and_nothing_else() {
    for device in ["mock0", "mockrxe0", "mocksiw0"] {
        let provider = injecting_everything();
        let victim = pair(&provider, device, device);
        let other = pair(&provider, device, device);
        let events = victim.dev_a.events().unwrap();
        for p in [&victim, &other] {
            p.a.post_recv(&[RecvWr::new(10, &[p.mr_a.sge(0, 8)])])
                .unwrap();
            p.b.post_recv(&[RecvWr::new(20, &[p.mr_b.sge(0, 8)])])
                .unwrap();
        }
        let qp_num = victim.a.qp_num();
        provider.inject(device, &Fault::KillQp { qp_num }).unwrap();
        assert_eq!(
            events.recv(soon()).unwrap(),
            DeviceEvent::QpFatal { qp_num }
        );
        assert_eq!(victim.a.state().unwrap(), QpState::Error);
        assert_eq!(
            wait_for(&victim.cq_a, 1),
            vec![(10, WcStatus::WrFlushError)]
        );
        // Nothing else: the other pair moves data, the events name no other QP.
        for qp in [&other.a, &other.b] {
            assert_eq!(qp.state().unwrap(), QpState::ReadyToSend);
        }
        other
            .a
            .post_send(&[SendWr::send(1, &[other.mr_a.sge(0, 8)])])
            .unwrap();
        assert_eq!(wait_for(&other.cq_b, 1), vec![(20, WcStatus::Success)]);
        thread::sleep(Duration::from_millis(10));
        assert!(drain_cq(&other.cq_a).iter().all(|c| c.0 == 1));
        // On iWARP the connection goes down with the killed QP, and its own peer hears of it,
        // as siw's RDMA_CM_EVENT_DISCONNECTED; nothing names the other pair.
        if victim.dev_a.info().state_model == anyverbs::StateModel::Iwarp {
            assert_eq!(
                events.try_recv().unwrap(),
                Some(DeviceEvent::Disconnected {
                    qp_num: victim.b.qp_num()
                })
            );
        }
        assert_eq!(events.try_recv().unwrap(), None);
        // The victim is drained and destroyed as usual.
        victim.a.drain(soon()).unwrap();
    }
}

#[test]
pub(super) fn lose_peer_fails_sends_with_retry_exceeded_and_disconnects() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_a.events().unwrap();
    let peer_events = p.dev_b.events().unwrap();
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider
        .inject(
            "mock0",
            &Fault::LosePeer {
                qp_num: p.a.qp_num(),
            },
        )
        .unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    // Nobody polls: the send fails after the retries and the event arrives on its own.
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::Disconnected {
            qp_num: p.a.qp_num()
        }
    );
    assert_eq!(p.a.state().unwrap(), QpState::Error);
    let got = wait_for(&p.cq_a, 2);
    assert_eq!(
        got,
        vec![
            (2, WcStatus::TransportRetryExceeded),
            (1, WcStatus::WrFlushError)
        ]
    );
    // The peer is left as it is; it hears nothing.
    assert_eq!(p.b.state().unwrap(), QpState::ReadyToSend);
    assert_eq!(drain_cq(&p.cq_b), vec![]);
    assert_eq!(peer_events.try_recv().unwrap(), None);
    // Exactly one Disconnected.
    thread::sleep(Duration::from_millis(10));
    assert_eq!(events.try_recv().unwrap(), None);
}

#[test]
pub(super) fn the_survivors_of_a_lost_device_see_their_peer_stop_answering() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock1");
    let events = p.dev_a.events().unwrap();
    // One send in flight (RNR: the peer has no receive), one posted after the loss.
    p.a.post_send(&[SendWr::send(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("mock1", &Fault::Unplug).unwrap();
    p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::Disconnected {
            qp_num: p.a.qp_num()
        }
    );
    assert_eq!(
        wait_for(&p.cq_a, 2),
        vec![
            (1, WcStatus::TransportRetryExceeded),
            (2, WcStatus::WrFlushError)
        ]
    );
    // Tearing down the dead end does not touch the survivor either (iWARP would otherwise).
    p.b.destroy().unwrap();
    assert_eq!(events.try_recv().unwrap(), None);
}

#[test]
pub(super) fn an_iwarp_survivor_is_not_torn_down_by_the_dead_end() {
    let provider = MockProvider::with_config(anyverbs_provider_mock::FabricConfig {
        devices: vec![
            anyverbs_provider_mock::DeviceConfig::iwarp("iw0", 1),
            anyverbs_provider_mock::DeviceConfig::iwarp("iw1", 2),
        ],
        ..anyverbs_provider_mock::FabricConfig::default()
    });
    let p = pair(&provider, "iw0", "iw1");
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("iw1", &reset_now()).unwrap();
    p.b.destroy().unwrap();
    assert_eq!(p.a.state().unwrap(), QpState::ReadyToSend);
    assert_eq!(drain_cq(&p.cq_a), vec![]);
}

#[test]
pub(super) fn a_request_to_a_lost_listener_is_unreachable() {
    let provider = MockProvider::new();
    let server = provider.open("mock1").unwrap();
    let listener = server.listen(address(&server)).unwrap();
    let dev = provider.open("mock0").unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(4).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    provider.inject("mock1", &Fault::Unplug).unwrap();
    let e = qp.wait_connected(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable);
    // An absent device cannot be reached at all.
    let qp2 = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let e = qp2
        .connect(listener.local_addr(), &ConnParams::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable);
}

#[test]
pub(super) fn stall_holds_everything_until_resume() {
    for device in ["mock0", "mockrxe0", "mockiw0", "mockirdma0"] {
        let provider = injecting_everything();
        let p = pair(&provider, device, device);
        let spare = p
            .pd_a
            .create_qp(&p.cq_a, &p.cq_a, &QpInit::default())
            .unwrap();
        if spare.state().unwrap() == QpState::Reset {
            spare.modify(QpState::Init).unwrap(); // RESET takes no receives
        }
        spare
            .post_recv(&[RecvWr::new(30, &[p.mr_a.sge(64, 8)])])
            .unwrap();
        provider.inject(device, &Fault::Stall).unwrap();
        p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
            .unwrap();
        p.mr_a.write(0, b"stalled!").unwrap();
        p.a.post_send(&[SendWr::send(2, &[p.mr_a.sge(0, 8)])])
            .unwrap();
        // A flush is held too.
        spare.modify(QpState::Error).unwrap();
        let mut wc = [Completion::default(); 4];
        for cq in [&p.cq_a, &p.cq_b] {
            let e = cq.wait(&mut wc, shortly()).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::TimedOut,
                "{device}: completed while stalled"
            );
        }
        provider.inject(device, &Fault::Resume).unwrap();
        assert_eq!(wait_for(&p.cq_b, 1), vec![(1, WcStatus::Success)]);
        let mut got = wait_for(&p.cq_a, 2);
        got.sort_by_key(|c| c.0);
        assert_eq!(
            got,
            vec![(2, WcStatus::Success), (30, WcStatus::WrFlushError)]
        );
        let mut data = [0u8; 8];
        p.mr_b.read(0, &mut data).unwrap();
        assert_eq!(&data, b"stalled!");
    }
}

#[test]
pub(super) fn a_stalled_device_still_drains_by_the_deadline() {
    let provider = MockProvider::new();
    let p = pair(&provider, "mock0", "mock0");
    p.a.post_recv(&[RecvWr::new(1, &[p.mr_a.sge(0, 8)])])
        .unwrap();
    provider.inject("mock0", &Fault::Stall).unwrap();
    let report =
        p.a.drain(Instant::now() + Duration::from_millis(100))
            .unwrap();
    assert_eq!(report.synthesized, 1);
    assert_eq!(drain_cq(&p.cq_a), vec![(1, WcStatus::WrFlushError)]);
    // Resuming delivers nothing more for the drained QP.
    provider.inject("mock0", &Fault::Resume).unwrap();
    thread::sleep(Duration::from_millis(10));
    assert_eq!(drain_cq(&p.cq_a), vec![]);
}

#[test]
pub(super) fn cq_overflow_reports_a_cq_error() {
    let provider = MockProvider::new();
    let dev = provider.open("mock0").unwrap();
    let events = dev.events().unwrap();
    let pd = dev.alloc_pd().unwrap();
    let cq = dev.create_cq(1).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    qp.modify(QpState::Init).unwrap();
    // The ring holds the depth plus one slot per attached queue (the drain's markers): four
    // flushes overflow it.
    let recvs: Vec<RecvWr> = (0..4).map(|i| RecvWr::single(i, mr.sge(0, 8))).collect();
    qp.post_recv(&recvs).unwrap();
    qp.modify(QpState::Error).unwrap();
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::CqError {
            cq_num: cq.cq_num()
        }
    );
    assert_eq!(events.try_recv().unwrap(), None, "reported once");
}

#[test]
pub(super) fn live_objects_count_every_kind_and_return_to_zero() {
    let provider = MockProvider::new();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
    let p = pair(&provider, "mock0", "mock0");
    let channel = p.dev_a.create_channel().unwrap();
    assert_eq!(
        provider.live_objects("mock0").unwrap(),
        LiveObjects {
            devices: 2,
            pds: 2,
            mrs: 2,
            cqs: 2,
            qps: 2,
            listeners: 1,
            channels: 1,
        }
    );
    // Objects of a lost incarnation still count until released.
    provider.inject("mock0", &reset_now()).unwrap();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 12);
    drop(p);
    // A completion channel is an open file of the device too: the device waits for it.
    let held = provider.live_objects("mock0").unwrap();
    assert_eq!((held.total(), held.channels), (1, 1), "{held}");
    assert_eq!(open_error(&provider, "mock0"), ErrorKind::NotFound);
    drop(channel);
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
    // ... and the device is back.
    provider.open("mock0").unwrap();
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
}

#[test]
pub(super) fn injection_races_posting_and_polling_threads() {
    let provider = MockProvider::new();
    let p = Arc::new(pair(&provider, "mock0", "mock1"));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
            thread::spawn(move || {
                let mut wc = [Completion::default(); 16];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Errors are expected (the faults); panics and hangs are not.
                    if t == 0 {
                        let _ = p.b.post_recv(&[RecvWr::new(i, &[p.mr_b.sge(0, 8)])]);
                        let _ = p.a.post_send(&[SendWr::send(i, &[p.mr_a.sge(0, 8)])]);
                        let _ = p.cq_a.poll(&mut wc);
                    } else {
                        let _ = p
                            .cq_b
                            .wait(&mut wc, Instant::now() + Duration::from_millis(2));
                        let _ = p.a.state();
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let faults = [
        ("mock1", Fault::Stall),
        ("mock1", Fault::Resume),
        (
            "mock0",
            Fault::FlapPort {
                port: 1,
                down_for: Duration::from_millis(1),
            },
        ),
        ("mock0", Fault::Stall),
        ("mock0", Fault::Resume),
        (
            "mock1",
            Fault::LosePeer {
                qp_num: p.b.qp_num(),
            },
        ),
        ("mock0", reset_now()),
        ("mock1", Fault::Unplug),
    ];
    for (device, fault) in faults {
        thread::sleep(Duration::from_millis(5));
        provider.inject(device, &fault).unwrap();
    }
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no panic");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(p);
    for device in ["mock0", "mock1"] {
        assert_eq!(provider.live_objects(device).unwrap().total(), 0);
    }
    provider.inject("mock1", &Fault::Replug).unwrap();
    assert!(provider.open("mock0").is_ok() && provider.open("mock1").is_ok());
}
