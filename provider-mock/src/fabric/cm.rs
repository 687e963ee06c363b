//! The connection manager: listeners, connection requests, accept and reject.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyverbs::{
    Cause, ConnParams, ConnectRequest, Connection, DeviceEvent, DeviceLimits,
    MAX_ACCEPT_PRIVATE_DATA, MAX_CONNECT_PRIVATE_DATA, MAX_REJECT_PRIVATE_DATA, QpState,
    StateModel,
};

use super::{Conn, EPHEMERAL_PORTS, ListenerRec, QpRec, Refusal, RequestRec, State};
use crate::error::{MockError, MockResult};

impl State {
    /// The connection of `survivor` ends because its peer `gone` went away, and the survivor's
    /// CM reports `Disconnected`, once. `model` is the connection's transport:
    ///
    /// - InfiniBand: `gone` was destroyed, and its CM sent a DREQ, which the kernel's CM turns
    ///   into `RDMA_CM_EVENT_DISCONNECTED`. The DREQ changes no QP state (neither the kernel's
    ///   CM nor librdmacm touches the QP on it), so the survivor stays as it was until its ULP
    ///   drains it, and a send finds nobody to ACK it.
    /// - iWARP: the TCP stream is torn down (`IW_CM_EVENT_CLOSE` at the survivor, which the RDMA
    ///   CM reports as `RDMA_CM_EVENT_DISCONNECTED`), and the survivor's QP goes to ERROR.
    ///
    /// Nothing happens to a survivor connected to another QP, or whose connection was already
    /// cut.
    pub(super) fn hang_up(&mut self, gone: u32, survivor: u32, model: StateModel) {
        let Some(s) = self.qps.get_mut(&survivor) else {
            return;
        };
        if s.peer != Some(gone) || s.peer_lost {
            return;
        }
        s.peer = None;
        let report = !std::mem::replace(&mut s.disconnect_reported, true);
        let device = s.device;
        if model == StateModel::Iwarp {
            self.enter_error(survivor);
        }
        if report {
            self.publish(device, DeviceEvent::Disconnected { qp_num: survivor });
        }
    }

    fn alloc_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= *EPHEMERAL_PORTS.end() {
            *EPHEMERAL_PORTS.start()
        } else {
            p + 1
        };
        p
    }

    // ----- connection manager -----

    /// The present device that owns `ip`.
    fn device_of_ip(&self, ip: IpAddr) -> Option<u32> {
        self.slots
            .iter()
            .find(|s| s.config.address == ip)
            .and_then(|s| s.present())
    }

    pub(crate) fn listen(&mut self, device: u32, addr: SocketAddr) -> MockResult<SocketAddr> {
        let config = &self.slots[self.inc(device).slot].config;
        let own = config.address;
        if !addr.ip().is_unspecified() && addr.ip() != own {
            return Err(MockError::BadArgument(format!(
                "{} is not an address of device {}",
                addr.ip(),
                config.name
            )));
        }
        let mut bound = SocketAddr::new(own, addr.port());
        if bound.port() == 0 {
            loop {
                bound.set_port(self.alloc_port());
                if !self.listeners.contains_key(&bound) {
                    break;
                }
            }
        }
        if self.listeners.contains_key(&bound) {
            return Err(MockError::AddressInUse(bound));
        }
        self.listeners.insert(
            bound,
            ListenerRec {
                device,
                queue: VecDeque::new(),
            },
        );
        self.inc_mut(device).live.listeners += 1;
        Ok(bound)
    }

    pub(crate) fn close_listener(&mut self, addr: SocketAddr) {
        if let Some(l) = self.listeners.remove(&addr) {
            self.inc_mut(l.device).live.listeners -= 1;
            for id in l.queue {
                self.refuse(id, Refusal::Rejected(Vec::new()));
            }
        }
    }

    pub(super) fn refuse(&mut self, request: u64, why: Refusal) {
        if let Some(r) = self.requests.remove(&request)
            && let Some(q) = self.qps.get_mut(&r.client)
        {
            q.conn = Conn::Refused(why);
        }
    }

    pub(crate) fn connect(
        &mut self,
        qpn: u32,
        remote: SocketAddr,
        params: &ConnParams,
    ) -> MockResult<()> {
        let q = self.qp(qpn)?;
        let limits = self.inc(q.device).info.limits;
        check_params(params, &limits, MAX_CONNECT_PRIVATE_DATA)?;
        if !matches!(q.conn, Conn::Idle) || !is_fresh(q) {
            return Err(MockError::WrongState(format!(
                "connect needs a fresh, unconnected QP; this one is in {}",
                q.state
            )));
        }
        // An InfiniBand device cannot reach an iWARP one: they share no wire protocol. An absent
        // device cannot be reached at all.
        let device = q.device;
        let own = &self.slots[self.inc(device).slot].config;
        let (own_model, own_address) = (own.state_model(), own.address);
        match self.device_of_ip(remote.ip()) {
            Some(d) if self.inc(d).info.state_model == own_model => {}
            _ => return Err(MockError::NoRoute(remote.ip())),
        }
        let local = SocketAddr::new(own_address, self.alloc_port());
        let conn = if self.listeners.contains_key(&remote) {
            let id = self.next_request;
            self.next_request += 1;
            self.requests.insert(
                id,
                RequestRec {
                    listener: remote,
                    client: qpn,
                    client_device: device,
                    client_addr: local,
                    private_data: padded(own_model, &params.private_data, MAX_CONNECT_PRIVATE_DATA),
                    initiator_depth: params.initiator_depth_on(&limits),
                    responder_resources: params.responder_resources_on(&limits),
                },
            );
            self.listeners
                .get_mut(&remote)
                .expect("checked")
                .queue
                .push_back(id);
            Conn::Connecting { request: id }
        } else {
            // As with rdma_cm, the refusal arrives asynchronously.
            Conn::Refused(Refusal::NotListening(remote))
        };
        let q = self.qp_mut(qpn)?;
        q.conn = conn;
        q.params = params.clone();
        q.local_addr = Some(local);
        Ok(())
    }

    pub(crate) fn next_request(
        &mut self,
        listener: SocketAddr,
    ) -> Option<MockResult<ConnectRequest>> {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return Some(Err(MockError::Destroyed("listener")));
        };
        while let Some(id) = l.queue.pop_front() {
            if let Some(r) = self.requests.get(&id) {
                return Some(Ok(ConnectRequest {
                    id,
                    peer: r.client_addr,
                    private_data: r.private_data.clone(),
                    initiator_depth: r.initiator_depth,
                    responder_resources: r.responder_resources,
                }));
            }
        }
        None
    }

    pub(crate) fn accept(
        &mut self,
        listener: SocketAddr,
        request: u64,
        server: u32,
        params: &ConnParams,
    ) -> MockResult<()> {
        let l = self
            .listeners
            .get(&listener)
            .ok_or_else(|| MockError::Destroyed("listener"))?;
        let r = self
            .requests
            .get(&request)
            .filter(|r| r.listener == listener)
            .ok_or(MockError::NoSuchRequest(request))?;
        let s = self.qp(server)?;
        let limits = self.inc(s.device).info.limits;
        check_params(params, &limits, MAX_ACCEPT_PRIVATE_DATA)?;
        if s.device != l.device {
            return Err(MockError::BadArgument(
                "the QP belongs to another device than the listener".into(),
            ));
        }
        if !matches!(s.conn, Conn::Idle) || !is_fresh(s) {
            return Err(MockError::WrongState(format!(
                "accept needs a fresh, unconnected QP; this one is in {}",
                s.state
            )));
        }
        let client = r.client;
        let client_addr = r.client_addr;
        let client_private = r.private_data.clone();
        let (client_depth, client_resources) = (r.initiator_depth, r.responder_resources);
        let client_waits = self
            .qps
            .get(&client)
            .is_some_and(|c| matches!(c.conn, Conn::Connecting { request: id } if id == request));
        if !client_waits {
            self.requests.remove(&request);
            return Err(MockError::BadArgument(format!(
                "the requester of request {request} went away"
            )));
        }
        // Check both connect paths before changing anything, so a refused accept leaves both
        // QPs as they were.
        for qpn in [server, client] {
            let q = &self.qps[&qpn];
            let mut state = q.state;
            for &next in q.model.connect_path() {
                if state != next {
                    q.model
                        .check(state, next, Cause::Connection)
                        .map_err(MockError::Transition)?;
                    state = next;
                }
            }
        }
        self.requests.remove(&request);
        for (qpn, peer) in [(server, client), (client, server)] {
            let q = self.qps.get_mut(&qpn).expect("checked above");
            q.state = QpState::ReadyToSend;
            q.peer = Some(peer);
        }
        // Each direction's READ credits: the smaller of what its requester may have
        // outstanding and what its responder serves.
        let server_depth = params.initiator_depth_on(&limits).min(client_resources);
        let server_resources = params.responder_resources_on(&limits).min(client_depth);
        let model = self.qps[&server].model;
        let s = self.qps.get_mut(&server).expect("present");
        s.params = params.clone();
        s.read_credits = server_depth;
        s.local_addr = Some(listener);
        s.conn = Conn::Established(Connection {
            peer: client_addr,
            peer_qp_num: client,
            private_data: client_private,
            initiator_depth: server_depth,
            responder_resources: server_resources,
        });
        let c = self.qps.get_mut(&client).expect("present");
        c.read_credits = server_resources;
        c.conn = Conn::Established(Connection {
            peer: listener,
            peer_qp_num: server,
            private_data: padded(model, &params.private_data, MAX_ACCEPT_PRIVATE_DATA),
            initiator_depth: server_resources,
            responder_resources: server_depth,
        });
        Ok(())
    }

    /// Ends a QP's connection (see [`anyverbs::kit::RawQp::disconnect`]); the state it leaves
    /// the QP in.
    pub(crate) fn disconnect(&mut self, qpn: u32, orderly: bool) -> MockResult<QpState> {
        let q = self.qp(qpn)?;
        if !matches!(q.conn, Conn::Established(_)) {
            return Err(MockError::WrongState(
                "disconnect needs a QP that was connected".into(),
            ));
        }
        let (model, state) = (q.model, q.state);
        match model {
            // CLOSING (a FIN) once the send queue is empty, which `modify` checks; from a state
            // past RTS the connection is already closing or gone.
            StateModel::Iwarp if orderly && state == QpState::ReadyToSend => {
                self.modify(qpn, QpState::Closing)?;
            }
            StateModel::Iwarp if orderly => {}
            // A TERMINATE: ERROR, the peer torn down with it.
            StateModel::Iwarp => self.enter_error(qpn),
            // The CM's DREQ, which the peer's CM reports; librdmacm moves the QP to ERROR. A
            // dead device sends nothing, as when its QP is destroyed.
            StateModel::InfiniBand => {
                let q = self.qp_mut(qpn)?;
                let peer = q.peer.take().filter(|_| !q.peer_lost);
                let dead = q.personality == crate::config::Personality::Dead;
                self.enter_error(qpn);
                if let Some(peer) = peer.filter(|_| !dead) {
                    self.hang_up(qpn, peer, StateModel::InfiniBand);
                }
            }
        }
        Ok(self.qp(qpn)?.state)
    }

    pub(crate) fn reject(
        &mut self,
        listener: SocketAddr,
        request: u64,
        private_data: &[u8],
    ) -> MockResult<()> {
        if private_data.len() > MAX_REJECT_PRIVATE_DATA {
            return Err(MockError::BadArgument(format!(
                "{} bytes of private data in a reject; at most {MAX_REJECT_PRIVATE_DATA} fit",
                private_data.len()
            )));
        }
        match self.requests.get(&request) {
            Some(r) if r.listener == listener => {
                let model = self.inc(r.client_device).info.state_model;
                let data = padded(model, private_data, MAX_REJECT_PRIVATE_DATA);
                self.refuse(request, Refusal::Rejected(data));
                Ok(())
            }
            _ => Err(MockError::NoSuchRequest(request)),
        }
    }

    pub(crate) fn connection(&mut self, qpn: u32) -> Option<MockResult<Connection>> {
        let q = match self.qp(qpn) {
            Ok(q) => q,
            Err(e) => return Some(Err(e)),
        };
        match &q.conn {
            Conn::Idle => Some(Err(MockError::WrongState(
                "connect was not called on this QP".into(),
            ))),
            Conn::Connecting { .. } => None,
            Conn::Established(c) => Some(Ok(c.clone())),
            Conn::Refused(Refusal::NotListening(a)) => Some(Err(MockError::NotListening(*a))),
            Conn::Refused(Refusal::Rejected(data)) => Some(Err(MockError::Rejected(data.clone()))),
            Conn::Refused(Refusal::Abandoned) => Some(Err(MockError::WrongState(
                "the connection attempt was abandoned: the QP was moved to ERROR or RESET".into(),
            ))),
            Conn::Refused(Refusal::Unreachable(a)) => Some(Err(MockError::NoRoute(a.ip()))),
        }
    }
}

fn check_params(params: &ConnParams, limits: &DeviceLimits, max_private: usize) -> MockResult<()> {
    params
        .check(limits, max_private)
        .map_err(|e| MockError::BadArgument(e.message().to_string()))
}

/// Private data as the peer receives it: on InfiniBand the CM carries a fixed-size block, so it
/// arrives zero-padded to `size` (the receiver cannot learn the length the sender used); iWARP's
/// MPA carries the exact length.
fn padded(model: StateModel, data: &[u8], size: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    if model == StateModel::InfiniBand {
        out.resize(size, 0);
    }
    out
}

/// Whether a QP is still in its initial state (or INIT on InfiniBand) and may be connected.
fn is_fresh(q: &QpRec) -> bool {
    q.state == q.model.initial() || q.state == QpState::Init
}
