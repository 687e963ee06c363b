//! The plugin side of [`Device`]: ports, and the objects a device makes.

use smallvec::SmallVec;

use super::*;
use crate::cm::Listener;
use crate::cq::{CompletionChannel, CompletionQueue};
use crate::device::Device;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

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

pub(super) unsafe extern "C" fn device_create_channel<P: Provider>(
    d: *const abi::RawDevice,
    out: *mut *mut abi::RawChannel,
    fd: *mut i32,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let channel = d.create_channel()?;
            #[cfg(unix)]
            let raw_fd = {
                use std::os::fd::AsRawFd;
                channel.fd().as_raw_fd()
            };
            #[cfg(not(unix))]
            let raw_fd = -1;
            put(fd, raw_fd)?;
            hand_out(out, tag::CHANNEL, channel)
        })
    }
}

pub(super) unsafe extern "C" fn device_create_cq_on<P: Provider>(
    d: *const abi::RawDevice,
    depth: u32,
    channel: *const abi::RawChannel,
    out: *mut *mut abi::RawCq,
    info: *mut abi::CqInfo,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let d = object::<P::Device, _>(d, tag::DEVICE, "device")?;
            let channel = object::<P::Channel, _>(channel, tag::CHANNEL, "completion channel")?;
            let cq = d.create_cq_with(depth, Some(channel))?;
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
