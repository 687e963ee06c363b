//! The mock loaded as a plugin (`libanyverbs_provider_mock.so`, through the loader) gives the
//! same conformance results as the mock linked in, on every device personality.

use std::path::PathBuf;
use std::time::Duration;

use anyverbs::Provider;
use anyverbs::plugin::{Plugin, plugin_file_name};
use anyverbs_conformance::{Outcome, SuiteOptions, SuiteReport, all_cases, run_suite};
use anyverbs_provider_mock::MockProvider;

/// The plugin cargo built beside this test binary (`target/<profile>/deps/`).
fn mock_plugin() -> Plugin {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("the test binary's directory");
    let path: PathBuf = dir.join(plugin_file_name("anyverbs_provider_mock"));
    Plugin::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the whole suite on `device`. The dead device only waits out deadlines (nothing ever
/// completes there), so it gets short ones.
fn run<P: Provider>(
    make: impl Fn() -> anyverbs::Result<P> + Send + Sync + 'static,
    device: &str,
) -> SuiteReport {
    let wait = if device == "mockdead0" { 300 } else { 5_000 };
    let options = SuiteOptions {
        case_timeout: Duration::from_millis(wait),
        ..SuiteOptions::new(device)
    };
    run_suite(make, &all_cases::<P>(), &options, &mut |_| {}).expect("the suite runs")
}

/// Each case's name, outcome kind (with the reason of a case that did not run) and failure
/// message, in run order.
type Outcomes = Vec<(String, String, String)>;

/// What [`outcomes`] compares: failure texts may differ in how an error's source chain is
/// printed, so a failure compares by kind and its message is only shown.
fn outcomes(report: &SuiteReport) -> Outcomes {
    report
        .cases
        .iter()
        .map(|c| {
            let (outcome, message) = match &c.outcome {
                Outcome::Passed => ("passed".to_string(), String::new()),
                Outcome::NotRun(reason) => (format!("not run: {reason}"), String::new()),
                Outcome::Failed(m) => ("failed".to_string(), m.clone()),
                #[allow(unreachable_patterns)]
                other => (format!("{other:?}"), String::new()),
            };
            (c.name.clone(), outcome, message)
        })
        .collect()
}

#[test]
fn the_plugin_passes_the_whole_suite_exactly_as_the_linked_mock_does() {
    let plugin = mock_plugin();
    assert_eq!(
        plugin.abi_version(),
        (
            anyverbs::plugin::abi::ABI_MAJOR,
            anyverbs::plugin::abi::ABI_MINOR
        )
    );
    assert_eq!(plugin.name(), "anyverbs-provider-mock");
    let loaded = plugin.instantiate().unwrap();
    let devices: Vec<String> = loaded
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.identity.name)
        .collect();
    let linked_devices: Vec<String> = MockProvider::new()
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.identity.name)
        .collect();
    assert_eq!(devices, linked_devices);
    // The dead device only waits out deadlines, so it runs beside the others; the working
    // devices run one after the other, so that timing-sensitive cases (the supervisor's) do not
    // compete for two cores with ten suites at once.
    let suite = |device: &str| {
        let linked = run(|| Ok(MockProvider::new()), device);
        let through_plugin = run(
            move || plugin.instantiate().map_err(anyverbs::Error::from),
            device,
        );
        (
            device.to_string(),
            outcomes(&linked),
            outcomes(&through_plugin),
        )
    };
    let results: Vec<(String, Outcomes, Outcomes)> = std::thread::scope(|scope| {
        let dead = scope.spawn(|| suite("mockdead0"));
        let mut results: Vec<_> = devices
            .iter()
            .filter(|d| *d != "mockdead0")
            .map(|d| suite(d))
            .collect();
        results.push(dead.join().expect("the dead device's run panicked"));
        results
    });
    assert_eq!(results.len(), devices.len());
    for (device, a, b) in &results {
        assert_eq!(a.len(), b.len());
        for ((name, linked, why_l), (_, loaded, why_p)) in a.iter().zip(b) {
            assert_eq!(
                linked, loaded,
                "{name} on {device}: linked {linked} {why_l:?}, plugin {loaded} {why_p:?}"
            );
        }
        if device != "mockdead0" {
            let failed: Vec<_> = b.iter().filter(|(_, o, _)| o == "failed").collect();
            assert!(
                failed.is_empty(),
                "on {device}, through the plugin: {failed:?}"
            );
        }
    }
}

#[test]
fn a_relayed_event_stream_ends_when_the_provider_and_its_handles_are_gone() {
    use anyverbs::{Device, ErrorKind};
    use std::time::Instant;

    // As with the linked mock: once the program lets go of the provider and every handle, the
    // stream ends with Destroyed instead of waiting forever for events that cannot come.
    let linked = MockProvider::new();
    let device = linked.open("mock0").unwrap();
    let linked_events = device.events().unwrap();
    drop((device, linked));
    let linked_end = linked_events
        .recv(Instant::now() + Duration::from_secs(2))
        .unwrap_err();

    let loaded = mock_plugin().instantiate().unwrap();
    let device = loaded.open("mock0").unwrap();
    let events = device.events().unwrap();
    // While the provider is held, the stream is alive: a wait times out.
    let e = events
        .recv(Instant::now() + Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    drop((device, loaded));
    let start = Instant::now();
    let end = events
        .recv(Instant::now() + Duration::from_secs(2))
        .unwrap_err();
    assert_eq!(end.kind(), ErrorKind::Destroyed, "{end}");
    assert_eq!(
        end.kind(),
        linked_end.kind(),
        "{end} vs linked {linked_end}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn an_error_crosses_the_plugin_boundary_saying_its_text_once() {
    use anyverbs::{Access, Device, MemoryRegion, ProtectionDomain};
    let loaded = mock_plugin().instantiate().unwrap();
    let linked = MockProvider::new();
    // A provider error converted into `anyverbs::Error` keeps itself as the source, with the
    // same text: across the ABI the text must be said once, as the linked provider says it.
    let (Err(plugin_err), Err(linked_err)) = (loaded.open("nosuch0"), linked.open("nosuch0"))
    else {
        panic!("nosuch0 opened");
    };
    assert_eq!(plugin_err.kind(), linked_err.kind());
    assert_eq!(plugin_err.message(), linked_err.message());
    let region = |e: anyverbs::Error| e.message().to_string();
    let plugin_write = loaded
        .open("mock0")
        .and_then(|d| d.alloc_pd())
        .and_then(|pd| pd.register(8, Access::LOCAL_WRITE))
        .and_then(|mr| mr.write(4, &[0; 8]))
        .unwrap_err();
    let linked_write = linked
        .open("mock0")
        .and_then(|d| d.alloc_pd())
        .and_then(|pd| pd.register(8, Access::LOCAL_WRITE))
        .and_then(|mr| mr.write(4, &[0; 8]))
        .unwrap_err();
    assert_eq!(region(plugin_write), region(linked_write));
}

#[test]
fn ready_for_receives_works_on_a_loaded_provider() {
    use anyverbs::cm::ready_for_receives;
    use anyverbs::{
        Access, Device, MemoryRegion, ProtectionDomain, QpInit, QpState, QueuePair, RecvWr,
    };
    use std::time::Instant;

    // Built on QueuePair::modify alone, it works through the plugin ABI like any other call.
    let loaded = mock_plugin().instantiate().unwrap();
    for (name, ready) in [("mock0", QpState::Init), ("mockiw0", QpState::Idle)] {
        let device = loaded.open(name).unwrap();
        let model = device.info().state_model;
        let pd = device.alloc_pd().unwrap();
        let cq = device.create_cq(8).unwrap();
        let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
        let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
        ready_for_receives(&qp, model).unwrap();
        assert_eq!(qp.state().unwrap(), ready, "{name} ({model:?})");
        qp.post_recv(&[RecvWr::new(1, &[mr.sge(0, 64)])]).unwrap();
        let report = qp.drain(Instant::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(report.accounted(), 1, "{name}: {report}");
    }
}
