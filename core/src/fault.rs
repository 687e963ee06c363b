//! [`Fault`]: faults a provider can inject into one of its devices, for tests of lifecycle
//! handling ([`Provider::inject`](crate::Provider::inject)).
//!
//! Providers that can inject report [`Caps::FAULT_INJECTION`](crate::Caps::FAULT_INJECTION);
//! the others fail [`Provider::inject`](crate::Provider::inject) with
//! [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported). Injection is safe while other
//! threads post and poll on the device.

use std::fmt;
use std::time::Duration;

/// A fault to inject into a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// The device resets: [`DeviceEvent::DeviceFatal`](crate::DeviceEvent::DeviceFatal), every
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
            Fault::KillQp { qp_num } => write!(f, "kill QP {qp_num}"),
            Fault::LosePeer { qp_num } => write!(f, "lose the peer of QP {qp_num}"),
            Fault::Stall => f.write_str("stall"),
            Fault::Resume => f.write_str("resume"),
        }
    }
}
