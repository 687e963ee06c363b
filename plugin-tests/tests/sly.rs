//! A plugin that sends single events the loader must refuse (the `sly` fixture): an event code
//! no ABI version defines, a removal without a device name. Each costs that event alone — the
//! reader is told it missed one — and the stream goes on: a program takes an ended device stream
//! for a lost device (the supervisor stops its service and waits for a return that never comes)
//! and an ended monitor for a provider that is gone.

use std::time::{Duration, Instant};

use anyverbs::plugin::LoadedProvider;
use anyverbs::plugin::Plugin;
use anyverbs::{Device, DeviceEvent, ErrorKind, Fault, MonitorEvent, Provider};
use anyverbs_plugin_tests::fixture;

fn provider() -> LoadedProvider {
    Plugin::load(fixture("sly"))
        .and_then(|p| p.instantiate())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn a_device_event_with_an_unknown_code_is_missed_and_the_stream_goes_on() {
    let provider = provider();
    let device = provider.open("mock0").unwrap();
    let events = device.events().unwrap();
    provider
        .inject(
            "mock0",
            &Fault::FlapPort {
                port: 1,
                down_for: Duration::from_millis(20),
            },
        )
        .unwrap();
    // The port's going down came with a code the loader refuses: missed, not the end.
    let e = events.recv(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortActive { port: 1 }
    );
}

#[test]
fn a_monitor_event_without_a_name_is_missed_and_the_monitor_goes_on() {
    let provider = provider();
    let monitor = provider.monitor().unwrap();
    provider.inject("mock1", &Fault::Unplug).unwrap();
    let e = monitor.recv(soon()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
    provider.inject("mock1", &Fault::Replug).unwrap();
    match monitor.recv(soon()).unwrap() {
        MonitorEvent::Added(info) => assert_eq!(info.identity.name, "mock1"),
        other => panic!("expected mock1 back, got {other:?}"),
    }
}

#[test]
fn a_device_entry_at_a_misaligned_address_is_refused_unread() {
    let provider = provider();
    let listing = provider.device_listing().unwrap();
    let expected: Vec<String> = anyverbs_provider_mock::MockProvider::new()
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.identity.name)
        .collect();
    let names: Vec<String> = listing
        .devices
        .iter()
        .map(|d| d.identity.name.clone())
        .collect();
    assert_eq!(names, expected);
    assert_eq!(listing.refused.len(), 1, "{:?}", listing.refused);
    let e = &listing.refused[0];
    let fault = anyverbs::plugin::PluginFault::of(e).unwrap_or_else(|| panic!("{e}"));
    assert_eq!(fault.call(), "provider_devices");
    assert!(e.message().contains("misaligned"), "{e}");
}

#[test]
fn a_device_opened_with_a_null_entry_for_its_information_is_refused() {
    let provider = provider();
    let e = provider
        .open(anyverbs_fixture_sly::NULL_INFO_DEVICE)
        .expect_err("a device without its information");
    let fault = anyverbs::plugin::PluginFault::of(&e).unwrap_or_else(|| panic!("{e}"));
    assert_eq!(fault.call(), "provider_open", "{e}");
    assert!(e.message().contains("1 null"), "{e}");
    // The handle was released: the device is not held.
    assert_eq!(
        provider
            .held_objects(anyverbs_fixture_sly::NULL_INFO_DEVICE)
            .unwrap()
            .devices,
        0
    );
}

#[test]
fn the_relay_does_not_spin_on_a_plugin_that_ignores_its_timeout() {
    let provider = provider();
    let device = provider.open(anyverbs_fixture_sly::SPIN_DEVICE).unwrap();
    let events = device.events().unwrap();
    // SAFETY: the fixture's counter, a function of the loaded file taking nothing.
    let calls = unsafe {
        let library = libloading::Library::new(fixture("sly")).unwrap();
        let f = *library
            .get::<extern "C" fn() -> usize>(b"anyverbs_fixture_sly_spin_calls\0")
            .unwrap();
        std::mem::forget(library);
        f
    };
    let before = calls();
    std::thread::sleep(Duration::from_secs(1));
    let made = calls() - before;
    // The relay waits 50 ms in each call: about 20 calls a second, not millions.
    assert!(made <= 100, "{made} calls in a second: the relay spins");
    // It still relays: the device's events arrive.
    provider
        .inject(
            anyverbs_fixture_sly::SPIN_DEVICE,
            &Fault::FlapPort {
                port: 1,
                down_for: Duration::from_millis(20),
            },
        )
        .unwrap();
    let e = events.recv(soon()).unwrap_err(); // the port's going down, refused: missed
    assert_eq!(e.kind(), ErrorKind::Overflow, "{e}");
    assert_eq!(
        events.recv(soon()).unwrap(),
        DeviceEvent::PortActive { port: 1 }
    );
}
