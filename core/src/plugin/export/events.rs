//! The plugin side of [`EventStream`]: a device's and a monitor's events.

use super::*;
use crate::event::{DeviceEvent, EventStream, MonitorEvent, Next};

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn device_events_free(s: *mut abi::RawDeviceEvents) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<EventStream<DeviceEvent>, _>(s, tag::DEVICE_EVENTS) }
}

pub(super) unsafe extern "C" fn device_events_recv(
    s: *const abi::RawDeviceEvents,
    timeout_ns: u64,
    out: *mut abi::DeviceEvent,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let s = object::<EventStream<DeviceEvent>, _>(s, tag::DEVICE_EVENTS, "event stream")?;
            let raw = match s.recv_next(convert::deadline_in(timeout_ns))? {
                Next::Event(e) => convert::device_event(&e),
                Next::Missed(n) => abi::DeviceEvent {
                    missed: n,
                    ..abi::DeviceEvent::default()
                },
            };
            put(out, raw)
        })
    }
}

pub(super) unsafe extern "C" fn monitor_events_free(s: *mut abi::RawMonitorEvents) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<EventStream<MonitorEvent>, _>(s, tag::MONITOR_EVENTS) }
}

pub(super) unsafe extern "C" fn monitor_events_recv(
    s: *const abi::RawMonitorEvents,
    timeout_ns: u64,
    sink: abi::Sink<abi::MonitorEvent>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let s = object::<EventStream<MonitorEvent>, _>(s, tag::MONITOR_EVENTS, "monitor")?;
            let next = s.recv_next(convert::deadline_in(timeout_ns))?;
            let raw = match &next {
                Next::Event(MonitorEvent::Added(info)) => abi::MonitorEvent {
                    kind: 1,
                    info: convert::device_info(info),
                    missed: 0,
                },
                Next::Event(MonitorEvent::Removed(identity)) => abi::MonitorEvent {
                    kind: 2,
                    info: blank_info(convert::identity(identity)),
                    missed: 0,
                },
                Next::Missed(n) => abi::MonitorEvent {
                    kind: 0,
                    info: blank_info(abi::Identity {
                        name: convert::bytes(&[]),
                        index: 0,
                        vendor_id: 0,
                        vendor_part_id: 0,
                        has_pci: 0,
                        pci_bus: 0,
                        pci_device: 0,
                        pci_function: 0,
                        pci_domain: 0,
                        node_guid: 0,
                        sys_image_guid: 0,
                    }),
                    missed: *n,
                },
            };
            (sink.put)(sink.ctx, &raw);
            Ok(())
        })
    }
}

/// Device information holding only an identity (for a removal, where nothing else is known).
fn blank_info(identity: abi::Identity) -> abi::DeviceInfo {
    abi::DeviceInfo {
        identity,
        transport: 0,
        state_model: 0,
        caps: 0,
        faults: 0,
        limits: abi::Limits::default(),
    }
}
