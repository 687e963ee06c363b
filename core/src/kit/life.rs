//! [`DeviceLife`]: whether the device of a handle is still there.

use std::sync::{Arc, OnceLock};

use crate::error::{Error, ErrorKind, Result};

/// Whether a device is alive, shared by the provider and every kit handle of the device.
///
/// The provider marks it [lost](Self::lose) when it learns the device is gone (removed, reset,
/// a fatal error), in the same step in which it publishes
/// [`DeviceEvent`](crate::DeviceEvent)s saying so; from then on every call on a kit handle of the
/// device fails at once with [`ErrorKind::DeviceLost`], completions the kit had put aside
/// included. A device that comes back is a new device with a new `DeviceLife`.
#[derive(Debug, Clone, Default)]
pub struct DeviceLife(Arc<OnceLock<String>>);

impl DeviceLife {
    /// A live device.
    pub fn new() -> DeviceLife {
        DeviceLife::default()
    }

    /// Marks the device lost; `why` becomes the message of every later `DeviceLost` error (the
    /// first reason given wins).
    pub fn lose(&self, why: impl Into<String>) {
        let _ = self.0.set(why.into());
    }

    /// Whether the device is lost.
    pub fn is_lost(&self) -> bool {
        self.0.get().is_some()
    }

    /// `DeviceLost` once the device is lost.
    pub fn check(&self) -> Result<()> {
        match self.0.get() {
            None => Ok(()),
            Some(why) => Err(Error::new(ErrorKind::DeviceLost, why.clone())),
        }
    }
}
