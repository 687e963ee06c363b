//! A loaded provider's device, protection domain, memory region and listener.

use std::net::SocketAddr;
use std::time::Instant;

use super::queue::{LoadedCq, LoadedQp};
use super::relay::{self, Pumped};
use super::sink::Collect;
use super::{Handle, LoadedProvider, call, same_provider};
use crate::cm::{ConnParams, ConnectRequest, Listener};
use crate::device::{Device, DeviceInfo, PortInfo};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{DeviceEvent, EventStream};
use crate::mr::{Access, MemoryRegion};
use crate::pd::ProtectionDomain;
use crate::plugin::abi;
use crate::plugin::convert;
use crate::qp::QpInit;

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
        Ok(LoadedCq::new(handle, info))
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
        relay::pump(handle, DeviceEvent::is_device_lost, |h, timeout_ns| {
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

/// A protection domain of a loaded provider.
pub struct LoadedPd {
    handle: Handle<abi::RawPd>,
}

impl ProtectionDomain<LoadedProvider> for LoadedPd {
    fn register(&self, len: usize, access: Access) -> Result<LoadedMr> {
        let mut raw = std::ptr::null_mut();
        let mut info = abi::MrInfo::default();
        let f = self.handle.f();
        call!(
            f,
            pd_register(self.handle.ptr(), len, access.bits(), &mut raw, &mut info)
        )?;
        let shared = &self.handle.shared;
        // Adopted first, so that a refused region is released.
        let handle = shared.adopt("pd_register", raw, f.mr_free)?;
        shared.check("pd_register").region(&info, len, access)?;
        Ok(LoadedMr {
            handle,
            addr: info.addr,
            len,
            lkey: info.lkey,
            rkey: info.rkey,
            access,
        })
    }

    fn create_qp(&self, send_cq: &LoadedCq, recv_cq: &LoadedCq, init: &QpInit) -> Result<LoadedQp> {
        let shared = &self.handle.shared;
        same_provider(shared, send_cq.handle(), "send CQ")?;
        same_provider(shared, recv_cq.handle(), "receive CQ")?;
        let raw_init = abi::QpInit {
            max_send_wr: init.max_send_wr,
            max_recv_wr: init.max_recv_wr,
            max_send_sge: init.max_send_sge,
            max_recv_sge: init.max_recv_sge,
            max_inline_data: init.max_inline_data,
        };
        let mut raw = std::ptr::null_mut();
        let mut qp_num = 0;
        call!(
            shared.f,
            pd_create_qp(
                self.handle.ptr(),
                send_cq.handle().ptr(),
                recv_cq.handle().ptr(),
                &raw_init,
                &mut raw,
                &mut qp_num
            )
        )?;
        // Adopted first, so that a refused QP is released.
        let handle = shared.adopt("pd_create_qp", raw, shared.f.qp_free)?;
        let qp_num = shared.check("pd_create_qp").qp_num(qp_num)?;
        Ok(LoadedQp::new(handle, qp_num, *init))
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), pd_destroy(self.handle.ptr()))
    }
}

/// A memory region of a loaded provider. Its address, length and keys are kept on this side.
pub struct LoadedMr {
    handle: Handle<abi::RawMr>,
    addr: u64,
    len: usize,
    lkey: u32,
    rkey: u32,
    access: Access,
}

impl MemoryRegion for LoadedMr {
    fn addr(&self) -> u64 {
        self.addr
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lkey(&self) -> u32 {
        self.lkey
    }

    fn rkey(&self) -> u32 {
        self.rkey
    }

    fn access(&self) -> Access {
        self.access
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_write(self.handle.ptr(), offset, src.as_ptr(), src.len())
        )
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        call!(
            self.handle.f(),
            mr_read(self.handle.ptr(), offset, dst.as_mut_ptr(), dst.len())
        )
    }

    fn destroy(&self) -> Result<()> {
        call!(self.handle.f(), mr_destroy(self.handle.ptr()))
    }
}

/// A listener of a loaded provider.
pub struct LoadedListener {
    handle: Handle<abi::RawListener>,
    local: SocketAddr,
}

impl Listener<LoadedProvider> for LoadedListener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest> {
        // Zeroed, not uninitialised: a plugin that reports success without writing it must
        // give a wrong value at worst, never undefined behaviour.
        let mut out = std::mem::MaybeUninit::<abi::ConnectRequest>::zeroed();
        call!(
            self.handle.f(),
            listener_next_request(
                self.handle.ptr(),
                convert::timeout_ns(deadline),
                out.as_mut_ptr()
            )
        )?;
        // SAFETY: all-zero bytes are a valid `abi::ConnectRequest` (integers and byte arrays
        // only), and the plugin may only have written a request over them.
        convert::connect_request_from(unsafe { out.assume_init_ref() }, ErrorKind::Other).map_err(
            |e| {
                self.handle
                    .shared
                    .check("listener_next_request")
                    .refused("connect request", e)
            },
        )
    }

    fn accept(&self, request: &ConnectRequest, qp: &LoadedQp, params: &ConnParams) -> Result<()> {
        same_provider(&self.handle.shared, qp.handle(), "QP")?;
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        let params = convert::conn_params(params);
        call!(
            self.handle.f(),
            listener_accept(self.handle.ptr(), &request, qp.handle().ptr(), &params)
        )
    }

    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()> {
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        call!(
            self.handle.f(),
            listener_reject(self.handle.ptr(), &request, convert::bytes(private_data))
        )
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

impl std::fmt::Debug for LoadedPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPd")
            .field("handle", &self.handle.ptr())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoadedMr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedMr")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("lkey", &self.lkey)
            .field("rkey", &self.rkey)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoadedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}
