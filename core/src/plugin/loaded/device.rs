//! [`LoadedDevice`]: a device opened through a plugin, behind [`Device`].

use std::net::SocketAddr;

use super::events::{self, Pumped};
use super::sink::Collect;
use super::{
    Handle, LoadedChannel, LoadedCq, LoadedListener, LoadedPd, LoadedProvider, call, same_provider,
};
use crate::device::{Device, DeviceInfo, PortInfo};
use crate::error::{ErrorKind, Result};
use crate::event::{DeviceEvent, EventStream};
use crate::plugin::abi;
use crate::plugin::convert;

/// A device opened through a plugin.
pub struct LoadedDevice {
    handle: Handle<abi::RawDevice>,
    info: DeviceInfo,
}

impl LoadedDevice {
    pub(super) fn new(handle: Handle<abi::RawDevice>, info: DeviceInfo) -> Self {
        LoadedDevice { handle, info }
    }
}

impl Device<LoadedProvider> for LoadedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn ports(&self) -> Result<Vec<PortInfo>> {
        let check = self.handle.shared.check("device_ports");
        let mut items = Collect::new(abi::PORTS_MAX, |port: &abi::PortInfo| {
            // SAFETY: called from the sink, while the addresses the port borrows are valid.
            unsafe { convert::port_from(port, ErrorKind::Other) }
                .map_err(|e| check.refused("port", e))
        });
        call!(
            self.handle.f(),
            device_ports(self.handle.ptr(), items.sink())
        )?;
        if items.null_items + items.misaligned_items + items.beyond_limit > 0 {
            return Err(check.fault(
                "port list",
                format!(
                    "{} null entries, {} at misaligned addresses and {} beyond the {} ports a \
                     device may have",
                    items.null_items,
                    items.misaligned_items,
                    items.beyond_limit,
                    abi::PORTS_MAX
                ),
            ));
        }
        let ports = items.items.into_iter().collect::<Result<Vec<PortInfo>>>()?;
        let mut seen = [false; 256];
        for port in &ports {
            if std::mem::replace(&mut seen[usize::from(port.number)], true) {
                return Err(check.fault("port", format!("port {} is listed twice", port.number)));
            }
        }
        Ok(ports)
    }

    fn alloc_pd(&self) -> Result<LoadedPd> {
        let mut raw = std::ptr::null_mut();
        call!(
            self.handle.f(),
            device_alloc_pd(self.handle.ptr(), &mut raw)
        )?;
        Ok(LoadedPd {
            handle: self
                .handle
                .shared
                .adopt("device_alloc_pd", raw, self.handle.f().pd_free)?,
        })
    }

    fn create_cq(&self, depth: u32) -> Result<LoadedCq> {
        let mut raw = std::ptr::null_mut();
        let mut info = abi::CqInfo::default();
        call!(
            self.handle.f(),
            device_create_cq(self.handle.ptr(), depth, &mut raw, &mut info)
        )?;
        let shared = &self.handle.shared;
        // Adopted first, so that a refused CQ is released.
        let handle = shared.adopt("device_create_cq", raw, self.handle.f().cq_free)?;
        shared
            .check("device_create_cq")
            .cq_capacity(info.capacity, depth)?;
        Ok(LoadedCq::new(handle, info, None))
    }

    fn create_channel(&self) -> Result<LoadedChannel> {
        let mut raw = std::ptr::null_mut();
        let mut fd = -1;
        call!(
            self.handle.f(),
            device_create_channel(self.handle.ptr(), &mut raw, &mut fd)
        )?;
        let shared = &self.handle.shared;
        // Adopted first, so that a refused channel is released.
        let handle = shared.adopt("device_create_channel", raw, self.handle.f().channel_free)?;
        #[cfg(unix)]
        let fd = shared.check("device_create_channel").channel_fd(fd)?;
        #[cfg(not(unix))]
        let _ = fd;
        Ok(LoadedChannel::new(
            handle,
            #[cfg(unix)]
            fd,
        ))
    }

    fn create_cq_with(&self, depth: u32, channel: Option<&LoadedChannel>) -> Result<LoadedCq> {
        let Some(channel) = channel else {
            return self.create_cq(depth);
        };
        let shared = &self.handle.shared;
        same_provider(shared, channel.handle(), "completion channel")?;
        let mut raw = std::ptr::null_mut();
        let mut info = abi::CqInfo::default();
        call!(
            self.handle.f(),
            device_create_cq_on(
                self.handle.ptr(),
                depth,
                channel.handle().ptr(),
                &mut raw,
                &mut info
            )
        )?;
        // Adopted first, so that a refused CQ is released.
        let handle = shared.adopt("device_create_cq_on", raw, self.handle.f().cq_free)?;
        shared
            .check("device_create_cq_on")
            .cq_capacity(info.capacity, depth)?;
        let membership = channel.members.join(info.cq_num);
        Ok(LoadedCq::new(handle, info, Some(membership)))
    }

    fn listen(&self, addr: SocketAddr) -> Result<LoadedListener> {
        let mut raw = std::ptr::null_mut();
        let mut local = abi::SockAddr::default();
        let asked = convert::sock_addr(addr);
        call!(
            self.handle.f(),
            device_listen(self.handle.ptr(), &asked, &mut raw, &mut local)
        )?;
        let shared = &self.handle.shared;
        let handle = shared.adopt("device_listen", raw, self.handle.f().listener_free)?;
        let check = shared.check("device_listen");
        let local = convert::sock_addr_from(&local, ErrorKind::Other)
            .map_err(|e| check.refused("bound address", e))?;
        check.bound_address(local, addr)?;
        Ok(LoadedListener { handle, local })
    }

    fn events(&self) -> Result<EventStream<DeviceEvent>> {
        let mut raw = std::ptr::null_mut();
        call!(self.handle.f(), device_events(self.handle.ptr(), &mut raw))?;
        let handle =
            self.handle
                .shared
                .adopt("device_events", raw, self.handle.f().device_events_free)?;
        events::pump(handle, DeviceEvent::is_device_lost, |h, timeout_ns| {
            let mut event = abi::DeviceEvent::default();
            call!(h.f(), device_events_recv(h.ptr(), timeout_ns, &mut event))?;
            if event.kind == 0 {
                return Ok(Pumped::Missed(event.missed));
            }
            Ok(match convert::device_event_from(&event) {
                Ok(e) => Pumped::Event(e),
                Err(e) => Pumped::Refused(h.shared.check("device_events_recv").refused("event", e)),
            })
        })
    }
}

impl std::fmt::Debug for LoadedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedDevice")
            .field("name", &self.info.identity.name)
            .field("plugin", &self.handle.shared.plugin.path())
            .finish_non_exhaustive()
    }
}
