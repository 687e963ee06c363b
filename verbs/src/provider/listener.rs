//! Listening for connection requests through the RDMA CM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyverbs::cm::MAX_REJECT_PRIVATE_DATA;
use anyverbs::{ConnParams, ConnectRequest, Error, ErrorKind, Listener, Result};

use super::connect::Request;
use super::device::DeviceCore;
use super::held::{Held, Kind};
use super::hub::{Inbox, Route};
use super::{VerbsProvider, VerbsQp};
use crate::cm::CmId;

/// A listening CM ID bound to one of the device's addresses. Dropping it stops listening and
/// rejects the requests not yet accepted.
pub struct VerbsListener {
    core: Arc<DeviceCore>,
    id: CmId,
    inbox: Arc<Inbox>,
    addr: SocketAddr,
    pending: Mutex<HashMap<u64, Request>>,
    _held: Held,
}

impl std::fmt::Debug for VerbsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl VerbsListener {
    pub(crate) fn listen(core: &Arc<DeviceCore>, addr: SocketAddr) -> Result<VerbsListener> {
        // A wildcard address would take the requests of every device, which this device's
        // QPs cannot accept.
        if addr.ip().is_unspecified() {
            return Err(Error::invalid_argument(format!(
                "{addr}: a listener listens on one of its device's addresses (see \
                 Device::ports), not on a wildcard"
            )));
        }
        let id = core.hub.create_id()?;
        let inbox = Arc::new(Inbox::default());
        core.hub.route(id.token(), Route::Listener(inbox.clone()));
        let listening = || -> Result<SocketAddr> {
            id.bind(addr)?;
            let here = &core.info.identity;
            match id.device() {
                Some((name, guid, _)) if name == here.name && guid == here.node_guid.0 => {}
                Some((name, _, _)) => {
                    return Err(Error::invalid_argument(format!(
                        "{addr} is an address of {name}, not of {}",
                        here.name
                    )));
                }
                None => {
                    return Err(Error::invalid_argument(format!(
                        "{addr} is not an address of an RDMA device"
                    )));
                }
            }
            id.listen(64)?;
            Ok(id.addresses().0.unwrap_or(addr))
        };
        match listening() {
            Ok(bound) => Ok(VerbsListener {
                _held: core.held.another(Kind::Listener),
                core: core.clone(),
                id,
                inbox,
                addr: bound,
                pending: Mutex::default(),
            }),
            Err(e) => {
                core.hub.unroute(id.token());
                Err(e)
            }
        }
    }

    fn take(&self, request: &ConnectRequest) -> Result<Request> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request.id)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no pending request {} on this listener (already answered?)",
                        request.id
                    ),
                )
            })
    }
}

impl Listener<VerbsProvider> for VerbsListener {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest> {
        loop {
            self.core.check()?;
            let Some(event) = self.inbox.pop(deadline) else {
                if Instant::now() >= deadline {
                    return Err(Error::timed_out(format!(
                        "no connection request at {} by the deadline",
                        self.addr
                    )));
                }
                continue;
            };
            let Some(id) = event.new_id else { continue };
            let peer = id
                .addresses()
                .1
                .unwrap_or_else(|| SocketAddr::new(self.addr.ip(), 0));
            // The CM reports the credits from this side's view: the requester's initiator depth
            // is what this side is asked to serve.
            let request = Request {
                peer,
                peer_qp_num: event.peer.qp_num,
                private_data: event.private_data.clone(),
                initiator_depth: event.peer.responder_resources,
                responder_resources: event.peer.initiator_depth,
                id,
            };
            let out = ConnectRequest {
                id: event.token,
                peer,
                private_data: event.private_data,
                initiator_depth: request.initiator_depth,
                responder_resources: request.responder_resources,
            };
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(event.token, request);
            return Ok(out);
        }
    }

    fn accept(&self, request: &ConnectRequest, qp: &VerbsQp, params: &ConnParams) -> Result<()> {
        self.core.check()?;
        qp.with_device_qp(|raw| {
            if !Arc::ptr_eq(&raw.core, &self.core) {
                return Err(Error::invalid_argument(
                    "the QP belongs to another device handle than the listener",
                ));
            }
            // What can be refused without answering the requester leaves the request pending:
            // the ULP may accept it again with good parameters, or reject it.
            params.check(
                &self.core.info.limits,
                anyverbs::cm::MAX_ACCEPT_PRIVATE_DATA,
            )?;
            super::connect::check_unconnected(raw)?;
            let pending = self.take(request)?;
            super::connect::accept(raw, pending, params)
        })
    }

    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()> {
        self.core.check()?;
        if private_data.len() > MAX_REJECT_PRIVATE_DATA {
            return Err(Error::invalid_argument(format!(
                "{} bytes of private data in a reject; at most {MAX_REJECT_PRIVATE_DATA} fit",
                private_data.len()
            )));
        }
        let pending = self.take(request)?;
        pending.id.reject(private_data)
    }
}

impl Drop for VerbsListener {
    fn drop(&mut self) {
        self.core.hub.unroute(self.id.token());
        let pending: Vec<Request> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in pending {
            let _ = r.id.reject(&[]);
        }
    }
}
