//! placeholder
pub mod cm;
pub mod context;
pub mod device;
pub mod error;
pub mod events;
pub mod fault;
pub mod monitor;
pub mod netdev;
pub mod netlink;
pub mod objects;
pub mod raw;
pub mod uevent;
pub mod wait;
