//! The objects still held per device name: what a device's delete waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyverbs::HeldObjects;

/// One kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Device,
    Pd,
    Mr,
    Cq,
    Qp,
    Listener,
    Channel,
    /// Not counted.
    None,
}

fn field(counts: &mut HeldObjects, kind: Kind) -> Option<&mut u32> {
    Some(match kind {
        Kind::Device => &mut counts.devices,
        Kind::Pd => &mut counts.pds,
        Kind::Mr => &mut counts.mrs,
        Kind::Cq => &mut counts.cqs,
        Kind::Qp => &mut counts.qps,
        Kind::Listener => &mut counts.listeners,
        Kind::Channel => &mut counts.channels,
        Kind::None => return None,
    })
}

/// The counts of every device name, shared by a provider and its clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldBook {
    counts: Arc<Mutex<HashMap<String, HeldObjects>>>,
}

impl HeldBook {
    /// What is held of the devices called `name`, over all their incarnations.
    pub(crate) fn of(&self, name: &str) -> HeldObjects {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(name).copied().unwrap_or(HeldObjects::NONE)
    }

    /// Counts one object of `kind` on the device `name` until the guard is dropped.
    pub(crate) fn hold(&self, name: &str, kind: Kind) -> Held {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = field(
            counts.entry(name.to_owned()).or_insert(HeldObjects::NONE),
            kind,
        ) {
            *n += 1;
        }
        Held {
            book: self.clone(),
            name: name.to_owned(),
            kind,
        }
    }
}

/// One object counted as held; dropping it releases the count.
#[derive(Debug)]
pub(crate) struct Held {
    book: HeldBook,
    name: String,
    kind: Kind,
}

impl Held {
    /// A guard that counts nothing, for the same device: what [`another`](Self::another) is
    /// called on by objects that are not themselves counted (the device's shared core).
    pub(crate) fn another_quiet(self) -> Held {
        let name = self.name.clone();
        let book = self.book.clone();
        drop(self);
        Held {
            book,
            name,
            kind: Kind::None,
        }
    }

    /// Another object of `kind` on the same device.
    pub(crate) fn another(&self, kind: Kind) -> Held {
        self.book.hold(&self.name, kind)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.book.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.name).and_then(|c| field(c, self.kind)) {
            *n = n.saturating_sub(1);
        }
    }
}
