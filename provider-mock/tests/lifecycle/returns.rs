//! A device that comes back.

use super::*;

/// The next monitor event, which must come before the deadline.
pub(super) fn next(monitor: &EventStream<MonitorEvent>) -> MonitorEvent {
    monitor.recv(soon()).expect("a monitor event")
}

#[test]
pub(super) fn a_reset_device_comes_back_as_itself_with_a_new_index() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let before = provider.open("mock0").unwrap().info().clone();
    let start = Instant::now();
    provider
        .inject(
            "mock0",
            &Fault::Reset {
                down_for: Duration::from_millis(30),
            },
        )
        .unwrap();
    assert!(
        !provider
            .devices()
            .unwrap()
            .iter()
            .any(|d| d.identity.name == "mock0")
    );
    let MonitorEvent::Removed(gone) = next(&monitor) else {
        panic!("expected Removed first");
    };
    assert_eq!(gone, before.identity);
    // Nobody touches the fabric: the return comes on its own, after down_for.
    let MonitorEvent::Added(back) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(back.identity.is_same_device(&before.identity));
    assert_eq!(back.identity.name, "mock0");
    assert_eq!(back.identity.pci_address, before.identity.pci_address);
    let initial = provider.devices().unwrap().len() as u32;
    assert!(back.identity.index >= initial, "indices are never reused");
    assert_ne!(back.identity.index, before.identity.index);
    let listed = provider.devices().unwrap();
    assert!(listed.contains(&back));
    let dev = provider.open("mock0").unwrap();
    assert_eq!(dev.info(), &back);
    dev.alloc_pd().unwrap();
    // Reset again: yet another index.
    drop(dev);
    provider.inject("mock0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(again) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(again.identity.index > back.identity.index);
}

#[test]
pub(super) fn a_reset_device_returns_only_once_every_object_is_released() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let dev = provider.open("mock1").unwrap();
    let pd = dev.alloc_pd().unwrap();
    drop(dev);
    assert_eq!(
        provider.live_objects("mock1").unwrap(),
        LiveObjects {
            pds: 1,
            ..LiveObjects::default()
        }
    );
    provider.inject("mock1", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let e = monitor.recv(Instant::now() + PROMPT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "back although a PD is held");
    assert_eq!(open_error(&provider, "mock1"), ErrorKind::NotFound);
    drop(pd);
    let start = Instant::now();
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
    assert!(start.elapsed() < PROMPT);
    assert_eq!(provider.live_objects("mock1").unwrap().total(), 0);
    provider.open("mock1").unwrap();
}

#[test]
pub(super) fn an_open_device_handle_also_holds_the_return() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let dev = provider.open("mockiw0").unwrap();
    provider.inject("mockiw0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    drop(dev);
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
}

#[test]
pub(super) fn unplug_stays_away_until_replugged() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let before = provider.open("mock0").unwrap().info().clone();
    provider.inject("mock0", &Fault::Unplug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    assert_eq!(open_error(&provider, "mock0"), ErrorKind::NotFound);
    // Only replugging applies to an absent device.
    for fault in [
        Fault::Unplug,
        reset_now(),
        Fault::Stall,
        Fault::KillQp { qp_num: 2 },
    ] {
        let e = provider.inject("mock0", &fault).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{fault}");
    }
    provider.inject("mock0", &Fault::Replug).unwrap();
    let MonitorEvent::Added(back) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(back.identity.is_same_device(&before.identity));
    assert_ne!(back.identity.index, before.identity.index);
    // Replugging a present device is refused.
    let e = provider.inject("mock0", &Fault::Replug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[test]
pub(super) fn replug_waits_for_the_objects_of_the_unplugged_device() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let p = pair(&provider, "mock0", "mock0");
    provider.inject("mock0", &Fault::Unplug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    provider.inject("mock0", &Fault::Replug).unwrap();
    assert!(monitor.recv(Instant::now() + PROMPT).is_err());
    let e = provider.inject("mock0", &Fault::Replug).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "already replugged");
    assert!(provider.live_objects("mock0").unwrap().total() > 0);
    drop(p);
    assert!(matches!(next(&monitor), MonitorEvent::Added(_)));
    assert_eq!(provider.live_objects("mock0").unwrap().total(), 0);
}

#[test]
pub(super) fn replug_other_is_a_different_device_and_replug_restores_the_original() {
    let provider = MockProvider::new();
    let monitor = provider.monitor().unwrap();
    let original = provider.open("mockrxe0").unwrap().info().clone();
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::ReplugOther).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(other) = next(&monitor) else {
        panic!("expected Added");
    };
    assert_eq!(other.identity.name, "mockrxe0");
    assert!(!other.identity.is_same_device(&original.identity));
    assert_ne!(other.identity.node_guid, original.identity.node_guid);
    assert_ne!(
        other.identity.sys_image_guid,
        original.identity.sys_image_guid
    );
    // A reset keeps the identity of the device that is there.
    provider.inject("mockrxe0", &reset_now()).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(reset) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(reset.identity.is_same_device(&other.identity));
    // Another ReplugOther gives yet another device; Replug restores the configured one.
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::ReplugOther).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(third) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(!third.identity.is_same_device(&other.identity));
    assert!(!third.identity.is_same_device(&original.identity));
    provider.inject("mockrxe0", &Fault::Unplug).unwrap();
    provider.inject("mockrxe0", &Fault::Replug).unwrap();
    assert!(matches!(next(&monitor), MonitorEvent::Removed(_)));
    let MonitorEvent::Added(restored) = next(&monitor) else {
        panic!("expected Added");
    };
    assert!(restored.identity.is_same_device(&original.identity));
}
