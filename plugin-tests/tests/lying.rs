//! A plugin whose answers break the ABI's limits or contradict what was asked (the `lying`
//! fixture), and plugins whose tables hold strings that cannot be read safely: the loader must
//! refuse every such value with an error naming the plugin, the call and the field, keep what
//! is good, and hand back no byte the plugin did not write.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyverbs::plugin::LoadedProvider;
use anyverbs::plugin::{LoadError, Plugin, PluginFault};
use anyverbs::{
    Access, Completion, CompletionChannel, CompletionQueue, ConnParams, Device, Error, ErrorKind,
    Listener, MemoryRegion, ProtectionDomain, Provider, QpInit, QpState, QueuePair, SendOp, SendWr,
    Sge,
};
use anyverbs_fixture_lying as lying;
use anyverbs_plugin_tests::fixture;

fn provider() -> LoadedProvider {
    let path = fixture("lying");
    Plugin::load(&path)
        .and_then(|p| p.instantiate())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts that `e` is the loader's refusal of what `call` returned for `field`, saying every
/// one of `words`.
fn assert_refused(e: &Error, call: &str, field: &str, words: &[&str]) {
    assert_eq!(e.kind(), ErrorKind::Other, "{e}");
    let fault = PluginFault::of(e).unwrap_or_else(|| panic!("no PluginFault behind {e}"));
    assert_eq!(fault.plugin(), fixture("lying"), "{e}");
    assert_eq!(fault.call(), call, "{e}");
    assert!(
        fault.field().contains(field),
        "{e}: field {:?}",
        fault.field()
    );
    for word in words {
        assert!(e.message().contains(word), "{e} does not say {word:?}");
    }
    // The message names the plugin, the call and the field, for people.
    for part in [&fixture("lying").display().to_string(), call, field] {
        assert!(e.message().contains(part), "{e} does not name {part:?}");
    }
}

fn refused<T>(result: anyverbs::Result<T>, call: &str, field: &str, words: &[&str]) {
    match result {
        Ok(_) => panic!("{call} returned a bad {field}, and the loader took it"),
        Err(e) => assert_refused(&e, call, field, words),
    }
}

#[test]
fn one_bad_device_entry_does_not_hide_the_good_ones() {
    let provider = provider();
    let listing = provider.device_listing().unwrap();
    let expected: Vec<String> = anyverbs_provider_mock::MockProvider::new()
        .devices()
        .unwrap()
        .into_iter()
        .map(|d| d.identity.name)
        .collect();
    let names: Vec<&str> = listing
        .devices
        .iter()
        .map(|d| d.identity.name.as_str())
        .collect();
    assert_eq!(names, expected, "the good entries, in order, each once");
    let reasons: Vec<String> = listing.refused.iter().map(|e| e.to_string()).collect();
    assert_eq!(listing.refused.len(), 6, "{reasons:#?}");
    let says = [
        "1099511627776 bytes, more than the 63",
        "empty",
        "control character '\\0'",
        "64 bytes, more than the 63",
        "listed twice",
        "1 null entries",
    ];
    for (e, words) in listing.refused.iter().zip(says) {
        assert_refused(e, "provider_devices", "device", &[words]);
    }
    // The trait's listing is the good entries.
    assert_eq!(provider.devices().unwrap(), listing.devices);
}

#[test]
fn a_port_numbered_zero_is_refused() {
    let provider = provider();
    refused(
        provider.open("mock1").unwrap().ports(),
        "device_ports",
        "port",
        &["port number 0"],
    );
    assert!(!provider.open("mock0").unwrap().ports().unwrap().is_empty());
}

#[test]
fn a_cq_smaller_than_asked_or_a_qp_number_out_of_range_is_refused_and_released() {
    let provider = provider();
    let device = provider.open("mock0").unwrap();
    refused(
        device.create_cq(lying::ZERO_CAPACITY_DEPTH),
        "device_create_cq",
        "capacity",
        &["0, though a depth of 13 was asked for"],
    );
    refused(
        device.create_cq(lying::SHORT_CAPACITY_DEPTH),
        "device_create_cq",
        "capacity",
        &["7, though a depth of 14"],
    );
    let cq = device.create_cq(16).unwrap();
    assert!(cq.capacity() >= 16);
    let pd = device.alloc_pd().unwrap();
    for (inline, says) in [
        (
            lying::QP_NUM_ZERO_INLINE,
            "0: an RC QP number is 1 to 0xffffff",
        ),
        (lying::QP_NUM_WIDE_INLINE, "16777216: an RC QP number"),
    ] {
        let init = QpInit {
            max_inline_data: inline,
            ..QpInit::default()
        };
        refused(
            pd.create_qp(&cq, &cq, &init),
            "pd_create_qp",
            "QP number",
            &[says],
        );
    }
    // A QP said to have been granted less than asked is refused too.
    let init = QpInit {
        max_inline_data: lying::SHORT_GRANT_INLINE,
        ..QpInit::default()
    };
    refused(
        pd.create_qp(&cq, &cq, &init),
        "pd_create_qp",
        "QP sizes granted",
        &["max_inline_data 0, less than the 79 asked for"],
    );
    // The refused QPs were released, not leaked: nothing uses the CQ any more.
    cq.destroy().unwrap();
}

#[test]
fn a_region_other_than_asked_is_refused() {
    let provider = provider();
    let pd = provider.open("mock0").unwrap().alloc_pd().unwrap();
    refused(
        pd.register(lying::EMPTY_REGION_LEN, Access::LOCAL_WRITE),
        "pd_register",
        "region length",
        &["0 bytes, though 4097 were registered"],
    );
    refused(
        pd.register(lying::OTHER_ACCESS_LEN, Access::LOCAL_WRITE),
        "pd_register",
        "access flags",
        &["was asked for"],
    );
    refused(
        pd.register(lying::WRAPPING_POINTER_LEN, Access::LOCAL_WRITE),
        "pd_register",
        "region pointer",
        &["would pass the end of the address space"],
    );
    let mr = pd.register(4096, Access::LOCAL_WRITE).unwrap();
    assert_eq!(mr.len(), 4096);
}

/// A region of the program's memory must be exactly where it was registered: the loader refuses
/// one reported at another address or pointer (direct access through it would reach memory the
/// program never lent), deregisters it, and hands a lent buffer to no one but the program.
#[test]
fn a_region_of_the_programs_memory_elsewhere_is_refused() {
    let provider = provider();
    let pd = provider.open("mock0").unwrap().alloc_pd().unwrap();
    for (len, field) in [
        (lying::OTHER_ADDRESS_LEN, "region address"),
        (lying::OTHER_POINTER_LEN, "region pointer"),
    ] {
        refused(
            pd.register_buffer(vec![0; len].into_boxed_slice(), Access::LOCAL_WRITE),
            "pd_register_memory",
            field,
            &["though", "were registered"],
        );
        let mut memory = vec![0u8; len];
        refused(
            // SAFETY: `memory` outlives the region, refused and deregistered at once.
            unsafe { pd.register_memory(memory.as_mut_ptr(), len, Access::LOCAL_WRITE) },
            "pd_register_memory",
            field,
            &["though"],
        );
    }
    // An honest one is where it was registered.
    let mr = pd
        .register_buffer(vec![3; 64].into_boxed_slice(), Access::LOCAL_WRITE)
        .unwrap();
    let ptr = mr.as_ptr().unwrap();
    assert_eq!(mr.addr(), ptr as u64);
    assert_eq!(&*mr.take_buffer().unwrap(), &[3; 64]);
}

#[test]
fn a_drain_report_counting_more_than_the_queues_hold_is_refused() {
    let provider = provider();
    let device = provider.open("mock0").unwrap();
    let cq = device.create_cq(16).unwrap();
    let pd = device.alloc_pd().unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    refused(
        qp.drain(Instant::now() + Duration::from_secs(5)),
        "qp_drain",
        "drain report",
        &["18446744073709551614 WRs completed by the device and 5 synthesized"],
    );
    // A report like it cannot overflow its own sum either.
    let report = anyverbs::DrainReport {
        strategy: anyverbs::DrainStrategy::Synthesized,
        completed_by_device: usize::MAX - 1,
        synthesized: 5,
        fallback: None,
        elapsed: Duration::ZERO,
    };
    assert_eq!(report.accounted(), usize::MAX);
}

/// mock0's first address.
fn address(device: &impl Device<LoadedProvider>) -> std::net::IpAddr {
    device.ports().unwrap()[0].addresses[0]
}

#[test]
fn a_listener_bound_elsewhere_and_private_data_beyond_the_cms_are_refused() {
    let provider = provider();
    let device = provider.open("mock0").unwrap();
    let ip = address(&device);
    refused(
        device.listen((ip, 7777).into()),
        "device_listen",
        "bound address",
        &[":7778, though", ":7777 was asked for"],
    );
    let listener = device.listen((ip, 0).into()).unwrap();
    let cq = device.create_cq(16).unwrap();
    let pd = device.alloc_pd().unwrap();
    let deadline = || Instant::now() + Duration::from_secs(5);
    let ready = |qp: &anyverbs::plugin::LoadedQp| qp.modify(QpState::Init).unwrap();

    // A request with private data comes back with more than a request carries.
    let a = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    ready(&a);
    let params = ConnParams {
        private_data: b"hello".to_vec(),
        ..ConnParams::default()
    };
    a.connect(listener.local_addr(), &params).unwrap();
    refused(
        listener.next_request(deadline()),
        "listener_next_request",
        "connect request",
        &["100 bytes, more than the 56"],
    );

    // An accepted connection comes back with more than an accept carries.
    let b = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    ready(&b);
    b.connect(listener.local_addr(), &ConnParams::default())
        .unwrap();
    let request = listener.next_request(deadline()).unwrap();
    let server = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    ready(&server);
    listener
        .accept(&request, &server, &ConnParams::default())
        .unwrap();
    refused(
        b.wait_connected(deadline()),
        "qp_wait_connected",
        "connection",
        &["250 bytes, more than the 196"],
    );
}

/// Fills a stretch of this thread's stack with a marker and returns: a loader that handed a
/// plugin uninitialised stack memory for a message would show the marker.
#[inline(never)]
fn poison_stack() {
    let mut junk = [0u8; 64 << 10];
    for chunk in junk.chunks_mut(8) {
        chunk.copy_from_slice(b"SECRET!!");
    }
    black_box(&mut junk);
}

const NO_MESSAGE: &str = "the provider gave no message";

#[test]
fn an_error_length_without_its_bytes_shows_nothing_of_the_program() {
    let provider = provider();
    let device = provider.open("mock0").unwrap();
    let pd = device.alloc_pd().unwrap();
    let cq = device.create_cq(16).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();

    // The control path.
    poison_stack();
    let e = pd.destroy().unwrap_err();
    assert_eq!(
        (e.kind(), e.message()),
        (ErrorKind::InvalidState, NO_MESSAGE)
    );

    // The data path: a post, and a poll.
    let sge = Sge {
        addr: 0,
        length: 0,
        lkey: 0,
    };
    poison_stack();
    let e = qp
        .post_send(&[SendWr::single(lying::SILENT_WR_ID, SendOp::Send, sge)])
        .unwrap_err();
    assert_eq!(e.accepted, 0);
    assert_eq!(e.error.message(), NO_MESSAGE, "{e}");
    poison_stack();
    let mut room = [Completion::default(); lying::SILENT_POLL_CAPACITY];
    let e = cq.poll(&mut room).unwrap_err();
    assert_eq!(e.message(), NO_MESSAGE, "{e}");
    // The data path's record is clean for the next failure too.
    let e = cq.poll(&mut room).unwrap_err();
    assert_eq!(e.message(), NO_MESSAGE, "{e}");
}

#[test]
fn a_message_is_cut_at_its_nul_and_cannot_drive_a_terminal() {
    let provider = provider();
    let pd = provider.open("mock0").unwrap().alloc_pd().unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    let e = mr.write(0, b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        e.message(),
        "\\u{1b}[2J\\u{1b}[31mred alert\\u{1b}[0m",
        "escapes shown, not obeyed; nothing after the NUL"
    );
}

/// Loads `path`, which must be refused as a malformed table whose `field` is described by
/// `says`.
fn assert_malformed(path: &Path, field: &str, says: &str) {
    match Plugin::load(path) {
        Ok(p) => panic!("{} loaded: {p:?}", path.display()),
        Err(e) => {
            assert!(
                matches!(&e, LoadError::MalformedTable { path: p, field: f, .. }
                    if p == path && *f == field),
                "{e:?}"
            );
            assert_eq!(e.kind(), ErrorKind::Other);
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(says), "{text}");
        }
    }
}

#[test]
fn a_table_name_without_its_nul_is_refused_unread_past_its_bound() {
    assert_malformed(
        &fixture("unterminated_name"),
        "name",
        "no terminating NUL within 128 bytes",
    );
}

#[test]
fn a_table_string_at_a_wild_address_is_refused_unread() {
    assert_malformed(
        &fixture("wild_version"),
        "version",
        "points into no object loaded in this process",
    );
}

#[test]
fn a_table_at_a_wild_address_is_refused_before_its_header_is_read() {
    assert_malformed(
        &fixture("wild_table"),
        "address",
        "points into no object loaded in this process",
    );
}

#[test]
fn a_table_whose_header_declares_more_than_there_is_is_refused() {
    assert_malformed(
        &fixture("oversized_table"),
        "address",
        "4294967295 bytes from",
    );
}

#[test]
fn a_channel_fd_not_open_or_a_cq_number_not_on_the_channel_is_refused() {
    let provider = provider();
    refused(
        provider.open("mock1").unwrap().create_channel(),
        "device_create_channel",
        "file descriptor",
        &["1000000: not an open descriptor"],
    );
    let device = provider.open("mock0").unwrap();
    let channel = device.create_channel().unwrap();
    let cq = device.create_cq_with(16, Some(&channel)).unwrap();
    let pd = device.alloc_pd().unwrap();
    let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
    let qp = pd.create_qp(&cq, &cq, &QpInit::default()).unwrap();
    qp.modify(QpState::Init).unwrap();
    qp.post_recv(&[anyverbs::RecvWr::new(1, &[mr.sge(0, 64)])])
        .unwrap();
    cq.arm(false).unwrap();
    // The receive is flushed into the armed CQ: the channel fires, and the plugin lies about
    // which CQ it was.
    qp.modify(QpState::Error).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match channel.next() {
            Err(e) => {
                assert_refused(
                    &e,
                    "channel_next",
                    "CQ number",
                    &["no CQ created on this channel"],
                );
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            other => panic!("channel_next said {other:?}, and the loader took it"),
        }
    }
    // The CQ itself is fine: the flushed receive is there.
    let mut wc = [Completion::default(); 2];
    assert_eq!(cq.poll(&mut wc).unwrap(), 1);
}
