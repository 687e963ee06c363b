//! [`HeldObjects`]: what a process still holds of a device, by kind — what a reset or removed
//! device waits for before it can come back.

use std::fmt;

/// The objects of a device that the process has not released yet, counted by kind, over every
/// incarnation of the device (see [`Provider::held_objects`](crate::Provider::held_objects)).
///
/// A reset or removed RDMA device returns only once its process has released every object of
/// it (the kernel's unregistration waits for them), so a ULP that keeps one — a QP left in a
/// map, an MR a worker thread still holds — keeps its own device away; the
/// [`supervisor`](crate::supervisor) reports these counts while it waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HeldObjects {
    /// Open device handles.
    pub devices: u32,
    /// Protection domains.
    pub pds: u32,
    /// Memory regions.
    pub mrs: u32,
    /// Completion queues.
    pub cqs: u32,
    /// Queue pairs.
    pub qps: u32,
    /// Listeners.
    pub listeners: u32,
    /// Completion channels (each an open file of the device, which the kernel waits for too).
    pub channels: u32,
}

impl HeldObjects {
    /// Nothing held.
    pub const NONE: HeldObjects = HeldObjects {
        devices: 0,
        pds: 0,
        mrs: 0,
        cqs: 0,
        qps: 0,
        listeners: 0,
        channels: 0,
    };

    /// How many objects of every kind together (saturating).
    pub fn total(&self) -> u32 {
        [
            self.devices,
            self.pds,
            self.mrs,
            self.cqs,
            self.qps,
            self.listeners,
            self.channels,
        ]
        .into_iter()
        .fold(0u32, u32::saturating_add)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The counts of both, added kind by kind (saturating).
    pub fn plus(&self, other: &HeldObjects) -> HeldObjects {
        HeldObjects {
            devices: self.devices.saturating_add(other.devices),
            pds: self.pds.saturating_add(other.pds),
            mrs: self.mrs.saturating_add(other.mrs),
            cqs: self.cqs.saturating_add(other.cqs),
            qps: self.qps.saturating_add(other.qps),
            listeners: self.listeners.saturating_add(other.listeners),
            channels: self.channels.saturating_add(other.channels),
        }
    }
}

impl fmt::Display for HeldObjects {
    /// `1 QP, 2 MRs and 1 device handle`, or `nothing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds = [
            (self.qps, "QP", "QPs"),
            (self.cqs, "CQ", "CQs"),
            (self.mrs, "MR", "MRs"),
            (self.pds, "PD", "PDs"),
            (self.listeners, "listener", "listeners"),
            (self.channels, "completion channel", "completion channels"),
            (self.devices, "device handle", "device handles"),
        ];
        let parts: Vec<String> = kinds
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        match parts.as_slice() {
            [] => f.write_str("nothing"),
            [one] => f.write_str(one),
            [init @ .., last] => write!(f, "{} and {last}", init.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_read_well() {
        let held = HeldObjects {
            qps: 1,
            mrs: 2,
            devices: 1,
            ..HeldObjects::NONE
        };
        assert_eq!(held.total(), 4);
        assert_eq!(held.to_string(), "1 QP, 2 MRs and 1 device handle");
        assert_eq!(HeldObjects::NONE.to_string(), "nothing");
        assert!(HeldObjects::NONE.is_empty());
        assert_eq!(held.plus(&held).mrs, 4);
        let channel = HeldObjects {
            channels: 1,
            ..HeldObjects::NONE
        };
        assert_eq!(channel.total(), 1);
        assert_eq!(channel.to_string(), "1 completion channel");
        let full = HeldObjects {
            devices: u32::MAX,
            pds: 1,
            ..HeldObjects::NONE
        };
        assert_eq!(full.total(), u32::MAX);
    }
}
