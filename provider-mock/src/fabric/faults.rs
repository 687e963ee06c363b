//! Fault injection into a mock device: the per-device and per-QP faults of
//! [`anyverbs::Fault`], on a present device or an absent one.

use std::time::Instant;

use anyverbs::{DeviceEvent, Fault, Guid};

use super::State;
use super::lifecycle::*;
use crate::error::{MockError, MockResult};

impl State {
    /// Injects `fault` into the device named `name` (see [`anyverbs::Fault`] and the crate
    /// docs).
    pub(crate) fn inject(&mut self, name: &str, fault: &Fault, now: Instant) -> MockResult<()> {
        let slot = self.slot_of(name)?;
        let can = self.slots[slot].config.faults;
        if !can.contains(fault.kind()) {
            let names: Vec<_> = can.iter_names().map(|(n, _)| n.to_lowercase()).collect();
            return Err(MockError::CannotInject {
                device: name.to_string(),
                fault: fault.to_string(),
                can: if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                },
            });
        }
        let Some(dev) = self.slots[slot].present() else {
            return self.inject_absent(slot, fault, now);
        };
        match *fault {
            Fault::Reset { down_for } => {
                let node_guid = self.inc(dev).info.identity.node_guid;
                self.lose(dev, Loss::Reset, now);
                let not_before = later(now, down_for);
                self.slots[slot].presence = Presence::Resetting(Return {
                    not_before,
                    node_guid,
                });
                self.lifecycle_pending = true;
                self.wake_at(not_before);
            }
            Fault::Unplug => {
                self.lose(dev, Loss::Unplugged, now);
                self.slots[slot].presence = Presence::Unplugged;
            }
            Fault::Replug | Fault::ReplugOther => {
                return Err(MockError::WrongState(format!(
                    "{name} is present: unplug it before replugging"
                )));
            }
            Fault::FlapPort { port, down_for } => {
                if port != 1 {
                    return Err(MockError::BadArgument(format!(
                        "{name} has one port, port 1; there is no port {port}"
                    )));
                }
                let until = later(now, down_for);
                let inc = self.inc_mut(dev);
                let extended = match inc.port_down_until {
                    Some(t) if t >= until => false,
                    Some(_) => true,
                    None => {
                        inc.life.report(DeviceEvent::PortDown { port });
                        true
                    }
                };
                // A flap within a longer one changes nothing. An extension needs no timer of its
                // own: the armed one re-arms for the new end when it fires early.
                if extended {
                    inc.port_down_until = Some(until);
                    let arm = inc.port_timer_at.is_none();
                    if arm {
                        inc.port_timer_at = Some(until);
                    }
                    self.lifecycle_pending = true;
                    if arm {
                        self.wake_at(until);
                    }
                }
            }
            Fault::ChangeAddress { port } => {
                if port != 1 {
                    return Err(MockError::BadArgument(format!(
                        "{name} has one port, port 1; there is no port {port}"
                    )));
                }
                // A failover behind the same address: the connections and listeners carry on.
                self.publish(dev, DeviceEvent::AddressChange { port });
            }
            Fault::KillQp { qp_num } => {
                self.qp_on(dev, qp_num)?;
                // The fatal error first, then what follows from it (on iWARP the peer's
                // Disconnected); the lock is held throughout, so nobody sees the QP before ERROR.
                self.publish(dev, DeviceEvent::QpFatal { qp_num });
                self.enter_error(qp_num);
            }
            Fault::LosePeer { qp_num } => self.lose_peer(dev, qp_num, now)?,
            Fault::Stall => {
                let inc = self.inc_mut(dev);
                if !inc.stalled {
                    inc.stalled = true;
                    self.stalled_devices += 1;
                }
            }
            Fault::Resume => self.resume(dev, now),
            _ => return Err(MockError::Unsupported("this fault")),
        }
        Ok(())
    }

    /// Injection into an absent device: only replugging applies, and only to an unplugged one.
    fn inject_absent(&mut self, slot: usize, fault: &Fault, now: Instant) -> MockResult<()> {
        let s = &mut self.slots[slot];
        let name = &s.config.name;
        if !matches!(fault, Fault::Replug | Fault::ReplugOther) {
            return Err(MockError::WrongState(format!(
                "{name} is absent: only Replug and ReplugOther apply, not {fault}"
            )));
        }
        match s.presence {
            Presence::Unplugged => {}
            Presence::Resetting(_) => {
                return Err(MockError::WrongState(format!(
                    "{name} is resetting and comes back on its own"
                )));
            }
            Presence::Replugging(_) => {
                return Err(MockError::WrongState(format!(
                    "{name} is already replugged; it appears once the objects of its previous \
                     life are released"
                )));
            }
            Presence::Present(_) => {
                return Err(MockError::WrongState(format!("{name} is present")));
            }
        }
        let node_guid = if *fault == Fault::ReplugOther {
            // Another adapter: other GUIDs, derived from the configured one.
            s.other_devices += 1;
            Guid(s.config.node_guid.0 ^ (s.other_devices << 32))
        } else {
            // Replug always restores the configured identity, also after ReplugOther.
            s.config.node_guid
        };
        s.presence = Presence::Replugging(Return {
            not_before: now,
            node_guid,
        });
        self.lifecycle_pending = true;
        Ok(())
    }

    /// The QP `qp_num` of incarnation `dev`.
    fn qp_on(&self, dev: u32, qp_num: u32) -> MockResult<()> {
        match self.qps.get(&qp_num) {
            Some(q) if q.device == dev => Ok(()),
            _ => Err(MockError::NoSuchQp {
                device: self.inc(dev).info.identity.name.clone(),
                qp_num,
            }),
        }
    }

    /// [`Fault::LosePeer`]: the connection is cut at both ends, silently.
    fn lose_peer(&mut self, dev: u32, qp_num: u32, now: Instant) -> MockResult<()> {
        self.qp_on(dev, qp_num)?;
        let q = self.qps.get_mut(&qp_num).expect("checked");
        let Some(peer) = q.peer else {
            return Err(MockError::WrongState(format!(
                "QP {qp_num} is not connected: it has no peer to lose"
            )));
        };
        if q.peer_lost {
            return Ok(());
        }
        q.peer_lost = true;
        if let Some(p) = self.qps.get_mut(&peer)
            && p.peer == Some(qp_num)
        {
            p.peer_lost = true;
            self.cut_off(peer, now);
        }
        self.cut_off(qp_num, now);
        Ok(())
    }

    /// The numbers of the QPs of incarnation `dev`.
    pub(super) fn qps_of(&self, dev: u32) -> Vec<u32> {
        self.qps
            .iter()
            .filter(|(_, q)| q.device == dev)
            .map(|(n, _)| n)
            .collect()
    }

    /// [`Fault::Resume`]: what the stalled device held back proceeds.
    fn resume(&mut self, dev: u32, now: Instant) {
        let inc = self.inc_mut(dev);
        if !inc.stalled {
            return;
        }
        inc.stalled = false;
        self.stalled_devices -= 1;
        let qpns = self.qps_of(dev);
        for qpn in qpns {
            let q = self.qps.get_mut(&qpn).expect("listed");
            // Retry timers did not run while the device hung: a waiting head starts afresh.
            if let Some(head) = q.sq.front_mut() {
                head.stall = None;
            }
            let held = std::mem::take(&mut q.held);
            for (queue, c) in held {
                self.emit(qpn, queue, c);
            }
            self.run_sq(qpn, Some(now));
        }
    }
}
