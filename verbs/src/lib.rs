//! placeholder

pub mod netlink;
pub mod uevent;
