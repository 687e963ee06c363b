//! Drain profiles: the drain plan each driver needs, as data — one table that the mock's
//! personalities and the real providers read alike.
//!
//! Drivers disagree about WRs posted in ERROR (flushed, flushed later, accepted and never
//! completed, refused), and the sound [`DrainPlan`] follows from what a driver does. A provider
//! finds its device's profile by the driver behind it — the kernel driver of the device's PCI
//! function (`/sys/class/infiniband/<dev>/device/driver`) or, for a software device without one,
//! its vendor id — **never by the device name**, which says nothing about the driver
//! ([`profile_for`]). Each entry says why its plan is right and where that was learnt.
//!
//! A driver not in the table gets [`UNKNOWN_DRIVER`]: it posts nothing in ERROR and waits for
//! the device's flushes, which is sound on every driver; one that never flushes is settled at
//! the deadline.

use crate::state::QpState;

use super::DrainPlan;

/// How a profile recognises its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverKey {
    /// The kernel driver bound to the device's PCI function, as sysfs names it (`mlx5_core`).
    KernelDriver(&'static str),
    /// The vendor id `ibv_query_device` reports, for a device with no PCI function (rxe, siw).
    Vendor(u32),
}

/// The drain plan of one driver, with its reason and source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainProfile {
    /// The driver's short name (`mlx5`, `rxe`, ...).
    pub name: &'static str,
    /// How its devices are recognised.
    pub keys: &'static [DriverKey],
    /// The plan. [`DrainPlan::MarkerThenError`] applies in RTS only ([`plan_for`](Self::plan_for)).
    pub plan: DrainPlan,
    /// What the driver does that makes this plan the sound one.
    pub reason: &'static str,
    /// Where that was learnt: a measurement, or the driver's source.
    pub source: &'static str,
}

impl DrainProfile {
    /// The plan for a QP in `state`. A marker posted before ERROR needs a send queue that still
    /// runs, which only RTS has; in any other state no send can be outstanding unseen, so ERROR
    /// and the device's own flush are enough ([`DrainPlan::WaitForFlush`]).
    pub fn plan_for(&self, state: QpState) -> DrainPlan {
        match self.plan {
            DrainPlan::MarkerThenError if state != QpState::ReadyToSend => DrainPlan::WaitForFlush,
            plan => plan,
        }
    }

    /// Whether the profile is for the driver with this PCI function driver or vendor id.
    pub fn matches(&self, kernel_driver: Option<&str>, vendor_id: u32) -> bool {
        self.keys.iter().any(|key| match *key {
            DriverKey::KernelDriver(name) => kernel_driver == Some(name),
            DriverKey::Vendor(id) => id == vendor_id,
        })
    }
}

const LINUX_ALGORITHM: DrainPlan = DrainPlan::ErrorThenMarker {
    repeat_error_for_recv: false,
};

/// Every known driver.
pub const PROFILES: &[DrainProfile] = &[
    DrainProfile {
        name: "mlx5",
        keys: &[DriverKey::KernelDriver("mlx5_core")],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted and flushed by the hardware, so a marker \
                 posted after ERROR completes after everything before it (Linux's ib_drain_qp)",
        source: "rdma-core providers/mlx5; Linux drivers/infiniband/core/verbs.c",
    },
    DrainProfile {
        name: "hns",
        keys: &[DriverKey::KernelDriver("hns3")],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted; the provider moves the QP to ERROR again so \
                 that the hardware flushes them",
        source: "rdma-core providers/hns/hns_roce_u_hw_v2.c",
    },
    DrainProfile {
        name: "bnxt_re",
        keys: &[DriverKey::KernelDriver("bnxt_en")],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted and flushed from the provider's software flush \
                 lists",
        source: "rdma-core providers/bnxt_re/verbs.c",
    },
    DrainProfile {
        name: "ionic",
        keys: &[DriverKey::KernelDriver("ionic")],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted and flushed in software after the last \
                 hardware completion",
        source: "rdma-core providers/ionic/ionic_verbs.c",
    },
    DrainProfile {
        name: "rdmavt",
        keys: &[
            DriverKey::KernelDriver("hfi1"),
            DriverKey::KernelDriver("ib_qib"),
        ],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted and flushed in software",
        source: "Linux drivers/infiniband/sw/rdmavt/qp.c",
    },
    DrainProfile {
        name: "irdma",
        keys: &[DriverKey::KernelDriver("ice")],
        plan: LINUX_ALGORITHM,
        reason: "WRs posted in ERROR are accepted and flushed later by the flush worker; waiting \
                 for the marker covers the delay",
        source: "Linux drivers/infiniband/hw/irdma (verbs.c, utils.c); rdma-core providers/irdma",
    },
    DrainProfile {
        name: "x722",
        keys: &[DriverKey::KernelDriver("i40e")],
        plan: DrainPlan::WaitForFlush,
        reason: "a marker posted in ERROR was accepted and never completed (Intel X722, iWARP \
                 through irdma): post nothing in ERROR, wait for the flushes of what is \
                 outstanding",
        source: "field reports of X722 drains that never returned",
    },
    DrainProfile {
        name: "rxe",
        keys: &[DriverKey::Vendor(0x00ff_ffff)],
        plan: DrainPlan::ErrorThenMarker {
            repeat_error_for_recv: true,
        },
        reason: "a send posted in ERROR is flushed at once, but a receive posted in ERROR \
                 completes only when the QP is moved to ERROR again",
        source: "measured with rdma_rxe (Linux 6.1, rdma-core 44) in the test bed",
    },
    DrainProfile {
        name: "siw",
        keys: &[DriverKey::Vendor(0x0062_6d74)],
        plan: DrainPlan::WaitForFlush,
        reason: "user-space siw accepts WRs posted in ERROR and never completes them, not even \
                 after another move to ERROR (kernel siw flushes them, for kernel QPs only)",
        source: "measured with siw (Linux 6.1, rdma-core 44) in the test bed",
    },
    DrainProfile {
        name: "cxgb4",
        keys: &[DriverKey::KernelDriver("cxgb4")],
        plan: DrainPlan::FlushMarker,
        reason: "posts in ERROR are refused with EINVAL: the marker lives in the provider and \
                 completes when the device has flushed everything before it",
        source: "rdma-core providers/cxgb4/qp.c",
    },
    DrainProfile {
        name: "erdma",
        keys: &[DriverKey::KernelDriver("erdma")],
        plan: DrainPlan::MarkerThenError,
        reason: "posts in ERROR are refused with EIO and the hardware ignores WRs after ERROR: \
                 the send marker goes in before the move to ERROR, as the kernel's erdma drain \
                 does",
        source: "rdma-core providers/erdma; Linux drivers/infiniband/hw/erdma (drain_sq, drain_rq)",
    },
    DrainProfile {
        name: "mana",
        keys: &[DriverKey::KernelDriver("mana")],
        plan: DrainPlan::WaitForFlush,
        reason: "posts in ERROR are refused with EINVAL, and WRs already posted are flushed in \
                 software only after an error completion or a fatal event — after a plain move \
                 to ERROR they may never complete, and the drain then settles them at its \
                 deadline",
        source: "rdma-core providers/mana (wr.c, cq.c, qp.c)",
    },
];

/// The profile of a driver the table does not know.
pub const UNKNOWN_DRIVER: DrainProfile = DrainProfile {
    name: "unknown",
    keys: &[],
    plan: DrainPlan::WaitForFlush,
    reason: "drivers disagree about WRs posted in ERROR, so post none: move to ERROR and wait \
             for the device's flushes; a device that never flushes is settled at the deadline",
    source: "the drivers in this table",
};

/// The profile of the driver with this PCI function driver (sysfs name, if the device has a PCI
/// function) and vendor id; [`UNKNOWN_DRIVER`] when the table has none. The kernel driver is
/// looked at first: one vendor ships several drivers (Intel: irdma on E810 and on X722).
pub fn profile_for(kernel_driver: Option<&str>, vendor_id: u32) -> &'static DrainProfile {
    let by_driver = kernel_driver.and_then(|driver| {
        PROFILES.iter().find(|p| {
            p.keys
                .iter()
                .any(|k| matches!(k, DriverKey::KernelDriver(name) if *name == driver))
        })
    });
    by_driver
        .or_else(|| {
            PROFILES.iter().find(|p| {
                p.keys
                    .iter()
                    .any(|k| matches!(k, DriverKey::Vendor(id) if *id == vendor_id))
            })
        })
        .unwrap_or(&UNKNOWN_DRIVER)
}

/// The profile called `name` (the mock's personalities name theirs).
pub fn profile_named(name: &str) -> Option<&'static DrainProfile> {
    PROFILES.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_is_found_by_its_pci_driver_or_vendor_never_by_device_name() {
        assert_eq!(profile_for(Some("mlx5_core"), 0x02c9).name, "mlx5");
        assert_eq!(profile_for(None, 0x00ff_ffff).name, "rxe");
        assert_eq!(profile_for(None, 0x0062_6d74).name, "siw");
        // Intel ships irdma on two NICs that drain differently: the PCI driver tells them apart.
        assert_eq!(profile_for(Some("ice"), 0x8086).name, "irdma");
        assert_eq!(profile_for(Some("i40e"), 0x8086).name, "x722");
        let unknown = profile_for(Some("newnic"), 0x1234);
        assert_eq!(unknown.name, "unknown");
        assert_eq!(unknown.plan, DrainPlan::WaitForFlush);
    }

    #[test]
    fn every_profile_has_a_name_a_key_a_reason_and_a_source_and_names_are_unique() {
        for p in PROFILES {
            assert!(
                !p.keys.is_empty() && !p.reason.is_empty() && !p.source.is_empty(),
                "{p:?}"
            );
            assert_eq!(
                PROFILES.iter().filter(|q| q.name == p.name).count(),
                1,
                "{}",
                p.name
            );
            for key in p.keys {
                let owners = PROFILES.iter().filter(|q| q.keys.contains(key)).count();
                assert_eq!(owners, 1, "{key:?} belongs to one profile only");
            }
        }
    }

    #[test]
    fn a_marker_before_error_is_for_rts_only() {
        let erdma = profile_named("erdma").unwrap();
        assert_eq!(
            erdma.plan_for(QpState::ReadyToSend),
            DrainPlan::MarkerThenError
        );
        assert_eq!(erdma.plan_for(QpState::Init), DrainPlan::WaitForFlush);
        let rxe = profile_named("rxe").unwrap();
        assert_eq!(rxe.plan_for(QpState::Init), rxe.plan);
    }
}
