//! An open device: its identity, capabilities and limits, and the factory of its objects.

use std::sync::Arc;

use anyverbs::Error;
use sideway::ibverbs::device_context::DeviceContext;

use crate::error::call_failed;

use crate::device::DeviceEntry;
use crate::objects::{CompletionChannel, Cq, Pd};

/// What `ibv_query_device` says about a device, with the GUIDs in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAttributes {
    /// Ports (numbered from 1).
    pub ports: u8,
    /// QPs.
    pub max_qp: u32,
    /// WRs per queue.
    pub max_qp_wr: u32,
    /// SGEs per WR.
    pub max_sge: u32,
    /// SGEs per RDMA READ.
    pub max_sge_rd: u32,
    /// CQs.
    pub max_cq: u32,
    /// Entries per CQ.
    pub max_cqe: u32,
    /// Memory regions.
    pub max_mr: u32,
    /// Bytes per memory region.
    pub max_mr_size: u64,
    /// Protection domains.
    pub max_pd: u32,
    /// RDMA READs and atomics a QP can have outstanding as the target
    /// (`max_qp_rd_atom`: the responder resources a peer may use).
    pub max_qp_rd_atom: u32,
    /// RDMA READs and atomics a QP can have outstanding as the initiator
    /// (`max_qp_init_rd_atom`: the initiator depth).
    pub max_qp_init_rd_atom: u32,
    /// Whether atomics are supported at all (`atomic_cap` is not `IBV_ATOMIC_NONE`).
    pub atomics: bool,
    /// Vendor OUI.
    pub vendor_id: u32,
    /// Vendor part id.
    pub vendor_part_id: u32,
}

/// What `ibv_query_port` says about one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAttributes {
    /// Whether the port is ACTIVE.
    pub active: bool,
    /// Whether the link layer is Ethernet (RoCE, iWARP) rather than InfiniBand.
    pub ethernet: bool,
    /// The active MTU in bytes.
    pub active_mtu: u32,
    /// The largest message in bytes.
    pub max_msg_size: u32,
    /// Entries of the GID table (0 on siw).
    pub gid_table_len: u32,
}

/// `IBV_LINK_LAYER_ETHERNET` (verbs.h).
const LINK_LAYER_ETHERNET: u8 = 2;

impl DeviceAttributes {
    /// The core's [`DeviceLimits`](anyverbs::DeviceLimits) from these attributes, port 1's
    /// largest message and the inline size a QP of the device was granted (verbs reports inline
    /// capacity only per QP, at creation).
    pub fn limits(&self, port: &PortAttributes, max_inline_data: u32) -> anyverbs::DeviceLimits {
        anyverbs::DeviceLimits {
            max_qp: self.max_qp,
            max_qp_wr: self.max_qp_wr,
            max_sge: self.max_sge,
            max_cq: self.max_cq,
            max_cqe: self.max_cqe,
            max_mr: self.max_mr,
            max_mr_size: self.max_mr_size,
            max_pd: self.max_pd,
            max_inline_data,
            max_msg_size: port.max_msg_size,
            // The CM carries both as 8-bit values (`struct rdma_conn_param`).
            max_responder_resources: u8::try_from(self.max_qp_rd_atom).unwrap_or(u8::MAX),
            max_initiator_depth: u8::try_from(self.max_qp_init_rd_atom).unwrap_or(u8::MAX),
        }
    }

    pub(crate) fn from_raw(a: &rdma_mummy_sys::ibv_device_attr) -> DeviceAttributes {
        let n = |v: i32| v.max(0) as u32;
        DeviceAttributes {
            ports: a.phys_port_cnt,
            max_qp: n(a.max_qp),
            max_qp_wr: n(a.max_qp_wr),
            max_sge: n(a.max_sge),
            max_sge_rd: n(a.max_sge_rd),
            max_cq: n(a.max_cq),
            max_cqe: n(a.max_cqe),
            max_mr: n(a.max_mr),
            max_mr_size: a.max_mr_size,
            max_pd: n(a.max_pd),
            max_qp_rd_atom: n(a.max_qp_rd_atom),
            max_qp_init_rd_atom: n(a.max_qp_init_rd_atom),
            atomics: a.atomic_cap != rdma_mummy_sys::ibv_atomic_cap::IBV_ATOMIC_NONE,
            vendor_id: a.vendor_id,
            vendor_part_id: a.vendor_part_id,
        }
    }
}

/// An open device.
#[derive(Clone)]
pub struct Context {
    entry: DeviceEntry,
    inner: Arc<DeviceContext>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("device", &self.entry.identity.name)
            .finish()
    }
}

impl Context {
    /// Opens the device called `name` (see [`crate::device::open`] for the errors).
    pub fn open(name: &str) -> Result<Context, Error> {
        let (entry, inner) = crate::device::open(name)?;
        Ok(Context { entry, inner })
    }

    /// Who the device is.
    pub fn entry(&self) -> &DeviceEntry {
        &self.entry
    }

    /// sideway's context, for the objects built on it.
    pub fn sideway(&self) -> &Arc<DeviceContext> {
        &self.inner
    }

    /// The device's capabilities and limits (`ibv_query_device`).
    pub fn attributes(&self) -> Result<DeviceAttributes, Error> {
        // SAFETY: the context is open as long as self.
        let a = unsafe { crate::raw::query::device(self.inner.context()) }
            .map_err(|errno| call_failed("ibv_query_device", errno))?;
        Ok(DeviceAttributes::from_raw(&a))
    }

    /// Port `port` (from 1; `ibv_query_port`).
    pub fn port(&self, port: u8) -> Result<PortAttributes, Error> {
        // SAFETY: the context is open as long as self.
        let p = unsafe { crate::raw::query::port(self.inner.context(), port) }
            .map_err(|errno| call_failed("ibv_query_port", errno))?;
        Ok(PortAttributes {
            active: p.state == rdma_mummy_sys::ibv_port_state::IBV_PORT_ACTIVE,
            ethernet: p.link_layer == LINK_LAYER_ETHERNET,
            active_mtu: match p.active_mtu {
                m @ 1..=5 => 128 << m,
                _ => 0,
            },
            max_msg_size: p.max_msg_sz,
            gid_table_len: p.gid_tbl_len.max(0) as u32,
        })
    }

    /// A protection domain.
    pub fn alloc_pd(&self) -> Result<Pd, Error> {
        Pd::alloc(&self.inner)
    }

    /// A completion channel.
    pub fn create_channel(&self) -> Result<CompletionChannel, Error> {
        CompletionChannel::create(&self.inner)
    }

    /// A completion queue of at least `depth` entries, optionally on `channel`.
    pub fn create_cq(
        &self,
        depth: u32,
        channel: Option<&CompletionChannel>,
    ) -> Result<Arc<Cq>, Error> {
        Cq::create(&self.inner, depth, channel).map(Arc::new)
    }
}
