//! [`Fault`]: faults a provider can inject into one of its devices, for tests of lifecycle
//! handling ([`Provider::inject`](crate::Provider::inject)).
//!
//! A device says which faults it can have injected, one bit each
//! ([`DeviceInfo::faults`](crate::DeviceInfo::faults), a set of [`Faults`]): a real software
//! device (rxe, siw) can be deleted and re-added and have its port flapped, but cannot have one QP
//! killed, a peer lost or its firmware stalled, while the mock can do everything. A fault the
//! device does not list fails [`Provider::inject`](crate::Provider::inject) with
//! [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported), and the conformance suite
//! reports each case that needs it as not run. Injection is safe while other threads post and
//! poll on the device.
//!
//! How a reset shows depends on the device: one that reports fatal errors
//! ([`Caps::DEVICE_FATAL`](crate::Caps::DEVICE_FATAL), drivers with disassociate such as mlx5)
//! reports [`DeviceEvent::DeviceFatal`](crate::DeviceEvent::DeviceFatal); one that cannot (rxe,
//! siw) is reset by removing and re-adding it, and reports
//! [`DeviceEvent::DeviceRemoved`](crate::DeviceEvent::DeviceRemoved) — a reset is a hot-remove,
//! and a ULP handles both the same way.

use std::fmt;
use std::time::Duration;

use bitflags::bitflags;

bitflags! {
    /// The faults a device can have injected, one bit per kind of [`Fault`]
    /// ([`Fault::kind`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Faults: u32 {
        /// [`Fault::Reset`].
        const RESET = 1 << 0;
        /// [`Fault::Unplug`] and [`Fault::Replug`] (`rdma link delete` and `add` on the same
        /// netdev).
        const UNPLUG = 1 << 1;
        /// [`Fault::ReplugOther`] (`rdma link add` on another netdev).
        const REPLUG_OTHER = 1 << 2;
        /// [`Fault::FlapPort`].
        const FLAP_PORT = 1 << 3;
        /// [`Fault::KillQp`].
        const KILL_QP = 1 << 4;
        /// [`Fault::LosePeer`].
        const LOSE_PEER = 1 << 5;
        /// [`Fault::Stall`] and [`Fault::Resume`].
        const STALL = 1 << 6;
        /// [`Fault::ChangeAddress`].
        const CHANGE_ADDRESS = 1 << 7;
    }
}

/// A fault to inject into a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The device resets: [`DeviceEvent::DeviceFatal`](crate::DeviceEvent::DeviceFatal) (or
    /// [`DeviceRemoved`](crate::DeviceEvent::DeviceRemoved) on a device without
    /// [`Caps::DEVICE_FATAL`](crate::Caps::DEVICE_FATAL), see the [module docs](self)), every
    /// handle dead, the monitor reports it removed; it is added back with the same identity (and
    /// a new index) once `down_for` has passed **and** every object of the old device has been
    /// released, as the kernel's unregistration waits for them.
    Reset {
        /// How long the device stays away at least.
        down_for: Duration,
    },
    /// The device is hot-removed: [`DeviceEvent::DeviceRemoved`](crate::DeviceEvent::DeviceRemoved),
    /// every handle dead, the monitor reports it removed. It stays away until
    /// [`Replug`](Self::Replug) or [`ReplugOther`](Self::ReplugOther); never, if neither comes.
    Unplug,
    /// The unplugged device comes back with the same identity (a new index), as soon as every
    /// object of its previous life has been released.
    Replug,
    /// A different device (other GUIDs) appears under the unplugged device's name, as
    /// `rdma link add rxe0` on another netdev does.
    ReplugOther,
    /// The port goes down ([`DeviceEvent::PortDown`](crate::DeviceEvent::PortDown)) and comes
    /// back active after `down_for`.
    FlapPort {
        /// Port number, from 1.
        port: u8,
        /// How long the port stays down.
        down_for: Duration,
    },
    /// The hardware address behind a port changes under its connections, as a bonding failover
    /// does: [`DeviceEvent::AddressChange`](crate::DeviceEvent::AddressChange), and nothing
    /// else — connections keep running. (A soft device on a plain interface cannot have it:
    /// the kernel raises the CM's ADDR_CHANGE only for a bond master's failover.)
    ChangeAddress {
        /// Port number, from 1.
        port: u8,
    },
    /// One QP fails ([`DeviceEvent::QpFatal`](crate::DeviceEvent::QpFatal)): it goes to ERROR
    /// and its WRs are flushed. Nothing else on the device is touched.
    KillQp {
        /// The QP's number.
        qp_num: u32,
    },
    /// The peer of one QP stops answering, as if its cable were pulled: the QP's sends fail with
    /// transport-retry-exceeded, the QP goes to ERROR and reports
    /// [`DeviceEvent::Disconnected`](crate::DeviceEvent::Disconnected).
    LosePeer {
        /// The QP's number.
        qp_num: u32,
    },
    /// The device stops producing completions and executing WRs, but says nothing (a hung
    /// firmware), until [`Resume`](Self::Resume).
    Stall,
    /// A stalled device works again.
    Resume,
}

impl Fault {
    /// The kind of fault this is: the bit of [`Faults`] a device must list to have it injected.
    pub fn kind(&self) -> Faults {
        match self {
            Fault::Reset { .. } => Faults::RESET,
            Fault::Unplug | Fault::Replug => Faults::UNPLUG,
            Fault::ReplugOther => Faults::REPLUG_OTHER,
            Fault::FlapPort { .. } => Faults::FLAP_PORT,
            Fault::KillQp { .. } => Faults::KILL_QP,
            Fault::LosePeer { .. } => Faults::LOSE_PEER,
            Fault::Stall | Fault::Resume => Faults::STALL,
            Fault::ChangeAddress { .. } => Faults::CHANGE_ADDRESS,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Reset { down_for } => write!(f, "reset (down for {down_for:?})"),
            Fault::Unplug => f.write_str("unplug"),
            Fault::Replug => f.write_str("replug"),
            Fault::ReplugOther => f.write_str("replug a different device under the same name"),
            Fault::FlapPort { port, down_for } => {
                write!(f, "flap port {port} (down for {down_for:?})")
            }
            Fault::ChangeAddress { port } => write!(f, "change the address of port {port}"),
            Fault::KillQp { qp_num } => write!(f, "kill QP {qp_num}"),
            Fault::LosePeer { qp_num } => write!(f, "lose the peer of QP {qp_num}"),
            Fault::Stall => f.write_str("stall"),
            Fault::Resume => f.write_str("resume"),
        }
    }
}
