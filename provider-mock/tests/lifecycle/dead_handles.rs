//! Every handle dead after a loss.

use super::*;

pub(super) fn every_handle_fails_after(fault: Fault) {
    for device in DEVICES {
        let provider = MockProvider::new();
        let p = pair(&provider, device, device);
        let was = before(&p);
        p.b.post_recv(&[RecvWr::new(7, &[p.mr_b.sge(0, 64)])])
            .unwrap();
        provider.inject(device, &fault).unwrap();
        assert_every_handle_lost(&p, &was);
        assert_eq!(
            open_error(&provider, device),
            ErrorKind::NotFound,
            "{device} is absent until everything is released"
        );
        destroy_b_side(&p);
    }
}

#[test]
pub(super) fn every_handle_fails_with_device_lost_after_reset() {
    every_handle_fails_after(reset_now());
}

#[test]
pub(super) fn every_handle_fails_with_device_lost_after_unplug() {
    every_handle_fails_after(Fault::Unplug);
}

/// Runs `wait` on a thread; injects `fault` once it has blocked; it must return `DeviceLost`
/// within [`PROMPT`].
pub(super) fn wakes_with_device_lost<T: std::fmt::Debug + Send + 'static>(
    provider: &MockProvider,
    device: &str,
    fault: Fault,
    wait: impl FnOnce() -> anyverbs::Result<T> + Send + 'static,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let r = wait();
        tx.send(Instant::now()).unwrap();
        r
    });
    thread::sleep(Duration::from_millis(30));
    assert!(rx.try_recv().is_err(), "the wait did not block");
    let injected = Instant::now();
    provider.inject(device, &fault).unwrap();
    let woke = rx.recv_timeout(Duration::from_secs(5)).expect("woke");
    let r = waiter.join().unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::DeviceLost);
    let took = woke.saturating_duration_since(injected);
    assert!(took < PROMPT, "woke {took:?} after the fault");
}

#[test]
pub(super) fn blocked_waits_wake_with_device_lost() {
    for fault in [reset_now(), Fault::Unplug] {
        // cq.wait
        let provider = MockProvider::new();
        let p = Arc::new(pair(&provider, "mock0", "mock0"));
        let q = Arc::clone(&p);
        wakes_with_device_lost(&provider, "mock0", fault.clone(), move || {
            q.cq_b.wait(&mut [Completion::default(); 1], soon())
        });

        // listener.next_request
        let provider = MockProvider::new();
        let dev = provider.open("mock1").unwrap();
        let listener = Arc::new(dev.listen(address(&dev)).unwrap());
        let l = Arc::clone(&listener);
        wakes_with_device_lost(&provider, "mock1", fault.clone(), move || {
            l.next_request(soon())
        });

        // qp.wait_connected: the listener never answers.
        let provider = MockProvider::new();
        let server = provider.open("mock1").unwrap();
        let listener = server.listen(address(&server)).unwrap();
        let dev = provider.open("mock0").unwrap();
        let pd = dev.alloc_pd().unwrap();
        let cq = dev.create_cq(4).unwrap();
        let qp = Arc::new(pd.create_qp(&cq, &cq, &QpInit::default()).unwrap());
        qp.connect(listener.local_addr(), &ConnParams::default())
            .unwrap();
        let q = Arc::clone(&qp);
        wakes_with_device_lost(&provider, "mock0", fault.clone(), move || {
            q.wait_connected(soon())
        });

        // qp.drain on the dead personality: waits for a marker that never completes.
        let provider = MockProvider::new();
        let p = Arc::new(pair(&provider, "mockdead0", "mockdead0"));
        p.b.post_recv(&[RecvWr::new(1, &[p.mr_b.sge(0, 8)])])
            .unwrap();
        let q = Arc::clone(&p);
        wakes_with_device_lost(&provider, "mockdead0", fault, move || q.b.drain(soon()));
    }
}

#[test]
pub(super) fn device_events_end_with_the_loss() {
    for (fault, last) in [
        (reset_now(), DeviceEvent::DeviceFatal),
        (Fault::Unplug, DeviceEvent::DeviceRemoved),
    ] {
        let provider = MockProvider::new();
        let dev = provider.open("mock0").unwrap();
        let (e1, e2) = (dev.events().unwrap(), dev.events().unwrap());
        provider.inject("mock0", &fault).unwrap();
        for events in [&e1, &e2] {
            assert_eq!(events.recv(soon()).unwrap(), last);
            assert_eq!(
                events.recv(soon()).unwrap_err().kind(),
                ErrorKind::DeviceLost
            );
        }
    }
}
