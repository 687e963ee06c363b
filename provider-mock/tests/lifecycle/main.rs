//! Device lifecycle and fault injection on the mock: every handle of a lost device fails with
//! `DeviceLost` without blocking, events and monitor reports for every fault, devices that come
//! back (as themselves or as another device) only once everything of their previous life is
//! released, QP-level faults that touch nothing else, and injection racing the data path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Caps, Completion, CompletionQueue, ConnParams, ConnectRequest, Device, DeviceEvent,
    ErrorKind, EventStream, Fault, Faults, Listener, MemoryRegion, MonitorEvent, PortState,
    Provider, QpInit, QpState, QueuePair, RecvWr, SendWr, WcStatus,
};
use anyverbs_provider_mock::{
    LiveObjects, MockCq, MockDevice, MockListener, MockMr, MockPd, MockProvider, MockQp,
};

mod dead_handles;
mod faults;
mod fixtures;
mod returns;

use fixtures::*;
