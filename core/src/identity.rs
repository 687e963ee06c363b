//! Device identity, and the rule for deciding that a device which went away has come back.
//!
//! The kernel reuses device names (`rxe0` on another netdev is still `rxe0`) and renumbers device
//! indexes on every re-add, so neither may be used to recognise a device. Only the stable fields
//! count: the node GUID, the system-image GUID and, where the device has one, its PCI address.
//! See [`DeviceIdentity::is_same_device`].

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A 64-bit globally unique identifier (node GUID, system-image GUID), in host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub u64);

impl Guid {
    /// True for the all-zero GUID, which identifies nothing (e.g. a device that has no GUID).
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Guid {
    /// The `ibv_devinfo` form: four groups of four hex digits, e.g. `0002:c903:0031:7d50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:04x}:{:04x}:{:04x}:{:04x}",
            (v >> 48) & 0xffff,
            (v >> 32) & 0xffff,
            (v >> 16) & 0xffff,
            v & 0xffff
        )
    }
}

impl FromStr for Guid {
    type Err = Error;
    /// Parses the `ibv_devinfo` form, or 16 hex digits with no separators.
    fn from_str(s: &str) -> Result<Self> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        if hex.is_empty() || hex.len() > 16 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid_argument(format!("not a GUID: {s:?}")));
        }
        u64::from_str_radix(&hex, 16)
            .map(Guid)
            .map_err(|_| Error::invalid_argument(format!("not a GUID: {s:?}")))
    }
}

/// A PCI address: domain, bus, device and function, as in `0000:3b:00.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = Error;
    /// Parses `DDDD:BB:DD.F` (as in sysfs) or `BB:DD.F` (domain 0).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid_argument(format!("not a PCI address: {s:?}"));
        let (head, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let domain = u32::from_str_radix(domain, 16).map_err(|_| bad())?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| bad())?;
        let device = u8::from_str_radix(device, 16).map_err(|_| bad())?;
        let function = u8::from_str_radix(function, 16).map_err(|_| bad())?;
        if device >= 32 || function >= 8 {
            return Err(bad());
        }
        Ok(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }
}

/// Everything that identifies a device, stable and unstable fields alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// Kernel device name, e.g. `mlx5_0`, `rxe0`. **Not stable**: reused for other devices.
    pub name: String,
    /// Kernel device index. **Not stable**: renumbered on every re-add.
    pub index: u32,
    /// Node GUID. Stable.
    pub node_guid: Guid,
    /// System-image GUID (shared by the ports/functions of one adapter). Stable.
    pub sys_image_guid: Guid,
    /// PCI address, where the device is a PCI function (software devices have none). Stable.
    pub pci_address: Option<PciAddress>,
    /// IEEE OUI of the vendor.
    pub vendor_id: u32,
    /// Vendor's part id.
    pub vendor_part_id: u32,
}

impl DeviceIdentity {
    /// Whether `other` is the same physical device as `self`, judged by the stable fields only.
    ///
    /// The rule:
    /// 1. Name and index are ignored: the kernel reuses names and renumbers indexes.
    /// 2. Both node GUIDs must be non-zero and equal, and so must both system-image GUIDs. A
    ///    device with a zero GUID cannot be recognised, so it is never "the same".
    /// 3. If both sides know their PCI address, the addresses must be equal too (a card moved to
    ///    another slot is treated as a different device). If either side does not know it (a
    ///    software device, or a provider that cannot tell), the GUIDs decide.
    /// 4. The vendor ids must be equal (a GUID collision across vendors is not a match). The part
    ///    id is not compared: siw numbers its devices in it (measured in the test bed: siw0 added
    ///    again on the same netdev reports part id 2 where it reported 1), so it is not stable.
    pub fn is_same_device(&self, other: &DeviceIdentity) -> bool {
        if self.node_guid.is_zero() || self.sys_image_guid.is_zero() {
            return false;
        }
        if self.node_guid != other.node_guid || self.sys_image_guid != other.sys_image_guid {
            return false;
        }
        if let (Some(a), Some(b)) = (self.pci_address, other.pci_address)
            && a != b
        {
            return false;
        }
        self.vendor_id == other.vendor_id
    }
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (index {}, node {}, system image {}",
            self.name, self.index, self.node_guid, self.sys_image_guid
        )?;
        if let Some(pci) = self.pci_address {
            write!(f, ", pci {pci}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rxe(name: &str, index: u32, guid: u64) -> DeviceIdentity {
        DeviceIdentity {
            name: name.into(),
            index,
            node_guid: Guid(guid),
            sys_image_guid: Guid(guid),
            pci_address: None,
            vendor_id: 0xffffff,
            vendor_part_id: 0,
        }
    }

    #[test]
    fn re_added_device_with_new_index_is_the_same() {
        // Measured in the guest: `rdma link add` on the same netdev gives a new index, same GUIDs.
        assert!(rxe("rxe0", 0, 0x5054_00ff_fe12_3456).is_same_device(&rxe(
            "rxe0",
            2,
            0x5054_00ff_fe12_3456
        )));
    }

    #[test]
    fn same_name_on_another_netdev_is_a_different_device() {
        assert!(!rxe("rxe0", 0, 0x5054_00ff_fe12_3456).is_same_device(&rxe(
            "rxe0",
            0,
            0x5054_00ff_fe99_0001
        )));
    }

    #[test]
    fn a_part_id_that_counts_devices_does_not_make_another_device() {
        // siw0 measured in the test bed: vendor 0x626d74, part 1 at boot, 2 once added again on
        // the same netdev, GUIDs unchanged.
        let mut first = rxe("siw0", 1, 0x00a7_00ff_fe00_0001);
        first.vendor_id = 0x62_6d74;
        first.vendor_part_id = 1;
        let mut again = first.clone();
        again.index = 3;
        again.vendor_part_id = 2;
        assert!(first.is_same_device(&again));
        again.vendor_id = 0x02c9;
        assert!(
            !first.is_same_device(&again),
            "another vendor is another device"
        );
    }

    #[test]
    fn zero_guid_is_never_the_same() {
        assert!(!rxe("siw0", 1, 0).is_same_device(&rxe("siw0", 1, 0)));
    }

    #[test]
    fn pci_address_decides_when_both_know_it() {
        let mut a = rxe("mlx5_0", 0, 0x0002_c903_0031_7d50);
        let mut b = a.clone();
        a.pci_address = Some("0000:3b:00.0".parse().unwrap());
        b.pci_address = Some("0000:5e:00.0".parse().unwrap());
        assert!(!a.is_same_device(&b));
        b.pci_address = None;
        assert!(a.is_same_device(&b));
    }

    #[test]
    fn guid_and_pci_round_trip_through_text() {
        let g: Guid = "0002:c903:0031:7d50".parse().unwrap();
        assert_eq!(g, Guid(0x0002_c903_0031_7d50));
        assert_eq!(g.to_string(), "0002:c903:0031:7d50");
        let p: PciAddress = "0000:3b:00.1".parse().unwrap();
        assert_eq!(p.to_string(), "0000:3b:00.1");
        assert_eq!("3b:00.1".parse::<PciAddress>().unwrap(), p);
        assert!("3b:20.1".parse::<PciAddress>().is_err());
        assert!("zz".parse::<Guid>().is_err());
    }
}
