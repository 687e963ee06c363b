//! The plugin side of the control path: every call but posts and polls, each with its handle
//! checked, panics caught, and its error written into the caller's buffer.

use smallvec::SmallVec;

use super::*;
use crate::cm::Listener;
use crate::cq::CompletionQueue;
use crate::device::Device;
use crate::event::{DeviceEvent, EventStream, MonitorEvent, Next};
use crate::mr::MemoryRegion;
use crate::pd::ProtectionDomain;
use crate::qp::{QpInit, QueuePair};

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn provider_free<P: Provider>(p: *mut RawProvider) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P, _>(p, tag::PROVIDER) }
}

pub(super) unsafe extern "C" fn provider_name<P: Provider>(
    p: *const RawProvider,
    sink: abi::Sink<abi::Bytes>,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a provider handle from `provider_new`.
        if let Ok(p) = unsafe { object::<P, _>(p, tag::PROVIDER, "provider") } {
            let name = convert::bytes(p.name().as_bytes());
            // SAFETY: the sink is the loader's, and `name` lives across the call.
            unsafe { (sink.put)(sink.ctx, &name) };
        }
    }));
}

pub(super) unsafe extern "C" fn provider_transport<P: Provider>(p: *const RawProvider) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a provider handle from `provider_new`.
        unsafe { object::<P, _>(p, tag::PROVIDER, "provider") }
            .map_or(0, |p| convert::transport_code(p.transport()))
    }))
    .unwrap_or(0)
}

pub(super) unsafe extern "C" fn provider_devices<P: Provider>(
    p: *const RawProvider,
    sink: abi::Sink<abi::DeviceInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            for info in p.devices()? {
                let raw = convert::device_info(&info);
                (sink.put)(sink.ctx, &raw);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn provider_open<P: Provider>(
    p: *const RawProvider,
    name: abi::Bytes,
    out: *mut *mut abi::RawDevice,
    info: abi::Sink<abi::DeviceInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, name, sink and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            let name = convert::text(
                name,
                "device name",
                convert::NAME_ARGUMENT_MAX,
                ErrorKind::InvalidArgument,
            )?;
            let device = p.open(name)?;
            let raw = convert::device_info(device.info());
            (info.put)(info.ctx, &raw);
            hand_out(out, tag::DEVICE, device)
        })
    }
}

pub(super) unsafe extern "C" fn provider_monitor<P: Provider>(
    p: *const RawProvider,
    out: *mut *mut abi::RawMonitorEvents,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            hand_out(out, tag::MONITOR_EVENTS, p.monitor()?)
        })
    }
}

pub(super) unsafe extern "C" fn provider_inject<P: Provider>(
    p: *const RawProvider,
    name: abi::Bytes,
    fault: *const abi::Fault,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, name and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            let name = convert::text(
                name,
                "device name",
                convert::NAME_ARGUMENT_MAX,
                ErrorKind::InvalidArgument,
            )?;
            let fault = convert::fault_from(input(fault, "fault")?)?;
            p.inject(name, &fault)
        })
    }
}

pub(super) unsafe extern "C" fn provider_held_objects<P: Provider>(
    p: *const RawProvider,
    name: abi::Bytes,
    out: *mut abi::HeldObjects,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, name and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let p = object::<P, _>(p, tag::PROVIDER, "provider")?;
            let name = convert::text(
                name,
                "device name",
                convert::NAME_ARGUMENT_MAX,
                ErrorKind::InvalidArgument,
            )?;
            put(out, convert::held_objects(&p.held_objects(name)?))
        })
    }
}

pub(super) unsafe extern "C" fn device_free<P: Provider>(d: *mut abi::RawDevice) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Device, _>(d, tag::DEVICE) }
}

pub(super) unsafe extern "C" fn device_ports<P: Provider>(
    d: *const abi::RawDevice,
    sink: abi::Sink<abi::PortInfo>,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, sink and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            for port in d.ports()? {
                let addresses: SmallVec<[abi::SockAddr; 4]> = port
                    .addresses
                    .iter()
                    .map(|ip| convert::sock_addr(std::net::SocketAddr::new(*ip, 0)))
                    .collect();
                let raw = abi::PortInfo {
                    number: port.number,
                    state: convert::port_state_code(port.state),
                    link_layer: convert::link_layer_code(port.link_layer),
                    addresses: addresses.as_ptr(),
                    address_count: addresses.len(),
                };
                (sink.put)(sink.ctx, &raw);
            }
            Ok(())
        })
    }
}

pub(super) unsafe extern "C" fn device_alloc_pd<P: Provider>(
    d: *const abi::RawDevice,
    out: *mut *mut abi::RawPd,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            hand_out(out, tag::PD, d.alloc_pd()?)
        })
    }
}

pub(super) unsafe extern "C" fn device_create_cq<P: Provider>(
    d: *const abi::RawDevice,
    depth: u32,
    out: *mut *mut abi::RawCq,
    info: *mut abi::CqInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let cq = d.create_cq(depth)?;
            put(
                info,
                abi::CqInfo {
                    cq_num: cq.cq_num(),
                    capacity: cq.capacity(),
                },
            )?;
            hand_out(out, tag::CQ, cq)
        })
    }
}

pub(super) unsafe extern "C" fn device_listen<P: Provider>(
    d: *const abi::RawDevice,
    addr: *const abi::SockAddr,
    out: *mut *mut abi::RawListener,
    local: *mut abi::SockAddr,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let addr =
                convert::sock_addr_from(input(addr, "address")?, ErrorKind::InvalidArgument)?;
            let listener = d.listen(addr)?;
            put(local, convert::sock_addr(listener.local_addr()))?;
            hand_out(out, tag::LISTENER, listener)
        })
    }
}

pub(super) unsafe extern "C" fn device_events<P: Provider>(
    d: *const abi::RawDevice,
    out: *mut *mut abi::RawDeviceEvents,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            hand_out(out, tag::DEVICE_EVENTS, d.events()?)
        })
    }
}

pub(super) unsafe extern "C" fn pd_free<P: Provider>(pd: *mut abi::RawPd) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Pd, _>(pd, tag::PD) }
}

pub(super) unsafe extern "C" fn pd_register<P: Provider>(
    pd: *const abi::RawPd,
    len: usize,
    access: u32,
    out: *mut *mut abi::RawMr,
    info: *mut abi::MrInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let mr = pd.register(len, convert::access_from(access)?)?;
            put(
                info,
                abi::MrInfo {
                    addr: mr.addr(),
                    len: mr.len() as u64,
                    lkey: mr.lkey(),
                    rkey: mr.rkey(),
                    access: mr.access().bits(),
                },
            )?;
            hand_out(out, tag::MR, mr)
        })
    }
}

pub(super) unsafe extern "C" fn pd_create_qp<P: Provider>(
    pd: *const abi::RawPd,
    send_cq: *const abi::RawCq,
    recv_cq: *const abi::RawCq,
    init: *const abi::QpInit,
    out: *mut *mut abi::RawQp,
    qp_num: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let pd = object::<P::Pd, _>(pd, tag::PD, "PD")?;
            let send_cq = object::<P::Cq, _>(send_cq, tag::CQ, "send CQ")?;
            let recv_cq = object::<P::Cq, _>(recv_cq, tag::CQ, "receive CQ")?;
            let init = input(init, "QP init")?;
            let init = QpInit {
                max_send_wr: init.max_send_wr,
                max_recv_wr: init.max_recv_wr,
                max_send_sge: init.max_send_sge,
                max_recv_sge: init.max_recv_sge,
                max_inline_data: init.max_inline_data,
            };
            let qp = pd.create_qp(send_cq, recv_cq, &init)?;
            put(qp_num, qp.qp_num())?;
            hand_out(out, tag::QP, qp)
        })
    }
}

pub(super) unsafe extern "C" fn pd_destroy<P: Provider>(
    pd: *const abi::RawPd,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Pd, _>(pd, tag::PD, "PD")?.destroy()) }
}

pub(super) unsafe extern "C" fn mr_free<P: Provider>(mr: *mut abi::RawMr) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Mr, _>(mr, tag::MR) }
}

pub(super) unsafe extern "C" fn mr_write<P: Provider>(
    mr: *const abi::RawMr,
    offset: usize,
    src: *const u8,
    len: usize,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, buffer, and `src` readable for `len` bytes, as the ABI documents.
    unsafe {
        guard(err, || {
            let mr = object::<P::Mr, _>(mr, tag::MR, "MR")?;
            mr.write(offset, convert::slice(abi::Bytes { ptr: src, len }))
        })
    }
}

pub(super) unsafe extern "C" fn mr_read<P: Provider>(
    mr: *const abi::RawMr,
    offset: usize,
    dst: *mut u8,
    len: usize,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle, buffer, and `dst` writable for `len` bytes, as the ABI documents.
    unsafe {
        guard(err, || {
            let mr = object::<P::Mr, _>(mr, tag::MR, "MR")?;
            let dst = if len == 0 || dst.is_null() {
                &mut [][..]
            } else {
                std::slice::from_raw_parts_mut(dst, len)
            };
            mr.read(offset, dst)
        })
    }
}

pub(super) unsafe extern "C" fn mr_destroy<P: Provider>(
    mr: *const abi::RawMr,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Mr, _>(mr, tag::MR, "MR")?.destroy()) }
}

pub(super) unsafe extern "C" fn cq_free<P: Provider>(cq: *mut abi::RawCq) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Cq, _>(cq, tag::CQ) }
}

pub(super) unsafe extern "C" fn cq_destroy<P: Provider>(
    cq: *const abi::RawCq,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Cq, _>(cq, tag::CQ, "CQ")?.destroy()) }
}

pub(super) unsafe extern "C" fn qp_free<P: Provider>(qp: *mut abi::RawQp) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Qp, _>(qp, tag::QP) }
}

pub(super) unsafe extern "C" fn qp_state<P: Provider>(
    qp: *const abi::RawQp,
    state: *mut u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            put(state, convert::qp_state_code(qp.state()?))
        })
    }
}

pub(super) unsafe extern "C" fn qp_modify<P: Provider>(
    qp: *const abi::RawQp,
    state: u32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            qp.modify(convert::qp_state_from(state, ErrorKind::InvalidArgument)?)
        })
    }
}

pub(super) unsafe extern "C" fn qp_connect<P: Provider>(
    qp: *const abi::RawQp,
    remote: *const abi::SockAddr,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let remote =
                convert::sock_addr_from(input(remote, "address")?, ErrorKind::InvalidArgument)?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            qp.connect(remote, &params)
        })
    }
}

pub(super) unsafe extern "C" fn qp_wait_connected<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::Connection,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let connection = qp.wait_connected(convert::deadline_in(timeout_ns))?;
            put(out, convert::connection(&connection)?)
        })
    }
}

pub(super) unsafe extern "C" fn qp_drain<P: Provider>(
    qp: *const abi::RawQp,
    timeout_ns: u64,
    out: *mut abi::DrainReport,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let report = qp.drain(convert::deadline_in(timeout_ns))?;
            put(out, convert::drain_report(&report))
        })
    }
}

pub(super) unsafe extern "C" fn qp_destroy<P: Provider>(
    qp: *const abi::RawQp,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and buffer as the ABI documents.
    unsafe { guard(err, || object::<P::Qp, _>(qp, tag::QP, "QP")?.destroy()) }
}

pub(super) unsafe extern "C" fn listener_free<P: Provider>(l: *mut abi::RawListener) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Listener, _>(l, tag::LISTENER) }
}

pub(super) unsafe extern "C" fn listener_next_request<P: Provider>(
    l: *const abi::RawListener,
    timeout_ns: u64,
    out: *mut abi::ConnectRequest,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = l.next_request(convert::deadline_in(timeout_ns))?;
            put(out, convert::connect_request(&request)?)
        })
    }
}

pub(super) unsafe extern "C" fn listener_accept<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    qp: *const abi::RawQp,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            l.accept(&request, qp, &params)
        })
    }
}

pub(super) unsafe extern "C" fn listener_reject<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    private_data: abi::Bytes,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            l.reject(
                &request,
                convert::private_slice(private_data, ErrorKind::InvalidArgument)?,
            )
        })
    }
}

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
