//! The plugin side of [`Provider`]: a provider's name, transport, devices, monitor, fault
//! injection and held objects.

use super::*;
use crate::device::Device;

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
