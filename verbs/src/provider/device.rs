//! An open device: what its objects share ([`DeviceCore`]) and the ULP's handle on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use anyverbs::drain::DrainProfile;
use anyverbs::kit::DeviceLife;
use anyverbs::{
    Device, DeviceEvent, DeviceInfo, Error, EventStream, LinkLayer, PortInfo, PortState, Result,
};

use super::cq::{RawVerbsChannel, RawVerbsCq};
use super::held::{Held, HeldBook, Kind};
use super::hub::Hub;
use super::listener::VerbsListener;
use super::pd::RawVerbsPd;
use super::qp::QpShared;
use super::{Flavor, VerbsChannel, VerbsCq, VerbsPd, VerbsProvider};
use crate::context::Context;
use crate::device::DeviceEntry;
use crate::events::{AsyncEventThread, RemovalWatch};
use crate::objects::QpState as VState;

/// What every object of one open device shares.
pub(crate) struct DeviceCore {
    pub(crate) flavor: &'static Flavor,
    pub(crate) context: Context,
    pub(crate) info: DeviceInfo,
    pub(crate) life: DeviceLife,
    pub(crate) profile: &'static DrainProfile,
    /// The device's address when it was opened: where its connections start from.
    pub(crate) address: Option<IpAddr>,
    /// The regions of the device by lkey — address and length — so an inline SGE, which the
    /// CPU reads at post time, is checked to lie in memory the process registered. Read-locked
    /// for the whole of an inline post; a region leaves it (write lock) before it is
    /// deregistered and its memory freed.
    pub(crate) regions: RwLock<HashMap<u32, (u64, usize)>>,
    /// CQ numbers by the address of their `ibv_cq` (how async events and channels name them).
    pub(crate) cqs: Mutex<HashMap<usize, u32>>,
    next_cq: AtomicU32,
    /// The QPs by number, for the events that change their state.
    pub(crate) qps: Mutex<HashMap<u32, Weak<QpShared>>>,
    /// The completion channels' loss signals: rung when the device is lost, so an event loop
    /// asleep on a channel's fd wakes (the kernel's channel never fires for a removal).
    pub(crate) loss_signals: Mutex<Vec<Weak<super::cq::Wake>>>,
    /// The CQs an overflow was reported for (`IBV_EVENT_CQ_ERR`).
    overflowed: Mutex<std::collections::HashSet<u32>>,
    any_overflow: std::sync::atomic::AtomicBool,
    pub(crate) hub: Hub,
    pub(crate) held: Held,
    /// The async event thread and the removal watch; stopped (and the context released) when
    /// the last object of the device goes.
    _watchers: (Option<AsyncEventThread>, Option<RemovalWatch>),
}

impl DeviceCore {
    /// A number for a new CQ, recorded under its key.
    pub(crate) fn number_cq(&self, key: usize) -> u32 {
        let n = self.next_cq.fetch_add(1, Ordering::Relaxed);
        self.cqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, n);
        n
    }

    /// Forgets a CQ's key (it was destroyed; the address may be reused).
    pub(crate) fn forget_cq(&self, key: usize) {
        self.cqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The number of the CQ whose `ibv_cq` is at `key`.
    pub(crate) fn cq_num(&self, key: usize) -> Option<u32> {
        self.cqs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
    }

    /// Whether an overflow of the CQ `num` was reported (a lock is taken only once any was).
    pub(crate) fn overflowed(&self, num: u32) -> bool {
        self.any_overflow.load(Ordering::Acquire)
            && self
                .overflowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&num)
    }

    /// Records what an event says happened to a QP, then reports it to the kit: a QP the
    /// device moved to ERROR reads ERROR before the kit hears of it.
    pub(crate) fn report(&self, event: DeviceEvent) {
        let errored = match event {
            DeviceEvent::QpFatal { qp_num }
            | DeviceEvent::QpRequestError { qp_num }
            | DeviceEvent::QpAccessError { qp_num } => Some(qp_num),
            // On iWARP the connection is the QP's: its end puts the QP in ERROR.
            DeviceEvent::Disconnected { qp_num } if !self.flavor.app_moves_to_rts => Some(qp_num),
            _ => None,
        };
        if let DeviceEvent::CqError { cq_num } = event {
            self.overflowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(cq_num);
            self.any_overflow.store(true, Ordering::Release);
        }
        if let Some(qp_num) = errored {
            let qp = self
                .qps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&qp_num)
                .and_then(Weak::upgrade);
            if let Some(qp) = qp {
                qp.record(VState::Error);
                self.life.qp_entered_error(qp_num);
            }
        }
        let lost = event.is_device_lost();
        self.life.report(event);
        if lost {
            let signals =
                std::mem::take(&mut *self.loss_signals.lock().unwrap_or_else(|e| e.into_inner()));
            for signal in signals.iter().filter_map(Weak::upgrade) {
                signal.ring();
            }
        }
    }

    /// `DeviceLost` once the device is lost.
    pub(crate) fn check(&self) -> Result<()> {
        self.life.check()
    }

    /// The device's address, or why a connection cannot start here.
    pub(crate) fn address(&self) -> Result<IpAddr> {
        self.address.ok_or_else(|| {
            Error::not_supported(format!(
                "{} has no IP address: the connection manager needs one",
                self.info.identity.name
            ))
        })
    }

    /// The flavor's state for a verbs state.
    pub(crate) fn state_of(&self, s: VState) -> anyverbs::QpState {
        use anyverbs::QpState as S;
        let iwarp = self.flavor.state_model == anyverbs::StateModel::Iwarp;
        match s {
            VState::Reset => S::Reset,
            VState::Init if iwarp => S::Idle,
            VState::Init => S::Init,
            VState::Rtr => S::ReadyToReceive,
            VState::Rts => S::ReadyToSend,
            VState::Sqd if iwarp => S::Closing,
            VState::Sqd => S::SendQueueDrained,
            VState::Sqe if iwarp => S::Terminate,
            VState::Sqe => S::SendQueueError,
            VState::Error => S::Error,
        }
    }

    /// The verbs state for one of the flavor's states.
    pub(crate) fn verbs_state(&self, s: anyverbs::QpState) -> VState {
        use anyverbs::QpState as S;
        match s {
            S::Reset => VState::Reset,
            S::Init | S::Idle => VState::Init,
            S::ReadyToReceive => VState::Rtr,
            S::ReadyToSend => VState::Rts,
            S::SendQueueDrained | S::Closing => VState::Sqd,
            S::SendQueueError | S::Terminate => VState::Sqe,
            S::Error => VState::Error,
        }
    }
}

/// An open device of a [`VerbsProvider`]: one incarnation of a kernel device. Once it is lost
/// (removed, reset) every call on it and its objects fails with `DeviceLost`; releasing them is
/// what lets the kernel finish the removal.
pub struct VerbsDevice {
    core: Arc<DeviceCore>,
    /// The handle itself counts among the objects the device's delete waits for (it holds the
    /// device's context, as long as its objects do).
    _held: Held,
}

impl std::fmt::Debug for VerbsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsDevice")
            .field("name", &self.core.info.identity.name)
            .field("index", &self.core.info.identity.index)
            .finish_non_exhaustive()
    }
}

impl VerbsDevice {
    pub(crate) fn open(
        flavor: &'static Flavor,
        entry: DeviceEntry,
        held: &HeldBook,
        faults: &super::inject::Faults,
    ) -> Result<VerbsDevice> {
        let context = Context::open(&entry.identity.name)?;
        // The device opened must be the one listed (a name can move to a newer device).
        if !context.entry().identity.is_same_device(&entry.identity) {
            return Err(Error::new(
                anyverbs::ErrorKind::NotFound,
                format!("{} changed while it was being opened", entry.identity.name),
            ));
        }
        let info = super::info::info_of(flavor, &context, faults)?;
        let life = DeviceLife::with_caps(info.caps);
        let profile = context.entry().drain_profile();
        let address = match &context.entry().netdev {
            Some(netdev) => crate::netdev::addresses(netdev)?.into_iter().next(),
            None => None,
        };
        let name = info.identity.name.clone();
        // The event sources report to the core once it exists (events before that, during the
        // open itself, concern no object yet).
        let cell: Arc<OnceLock<Weak<DeviceCore>>> = Arc::default();
        let upgrade = {
            let cell = cell.clone();
            move || cell.get().and_then(Weak::upgrade)
        };
        let sink = {
            let upgrade = upgrade.clone();
            move |event| {
                if let Some(core) = upgrade() {
                    core.report(event);
                }
            }
        };
        let hub = Hub::start(sink.clone())?;
        let cq_num = {
            let upgrade = upgrade.clone();
            Arc::new(move |key| upgrade().and_then(|core: Arc<DeviceCore>| core.cq_num(key)))
        };
        let async_thread =
            AsyncEventThread::spawn_with(context.sideway().clone(), sink.clone(), cq_num)?;
        let watch = match context.entry().netdev.as_deref() {
            Some(netdev) => RemovalWatch::start_with(
                &name,
                info.identity.node_guid.0,
                netdev,
                sink.clone(),
            )
            .unwrap_or_else(|e| {
                tracing::warn!(%e, device = %name, "no removal watch: a removal is learnt from the monitor only");
                None
            }),
            None => None,
        };
        let core = Arc::new(DeviceCore {
            flavor,
            held: held.hold(&name, Kind::Device).another_quiet(),
            context,
            info,
            life,
            profile,
            address,
            regions: RwLock::default(),
            cqs: Mutex::default(),
            next_cq: AtomicU32::new(1),
            qps: Mutex::default(),
            overflowed: Mutex::default(),
            any_overflow: std::sync::atomic::AtomicBool::new(false),
            loss_signals: Mutex::default(),
            hub,
            _watchers: (Some(async_thread), watch),
        });
        let _ = cell.set(Arc::downgrade(&core));
        Ok(VerbsDevice {
            _held: core.held.another(Kind::Device),
            core,
        })
    }
}

impl Device<VerbsProvider> for VerbsDevice {
    fn info(&self) -> &DeviceInfo {
        &self.core.info
    }

    fn ports(&self) -> Result<Vec<PortInfo>> {
        self.core.check()?;
        let attrs = self.core.context.attributes()?;
        let addresses = match &self.core.context.entry().netdev {
            Some(netdev) => crate::netdev::addresses(netdev).unwrap_or_default(),
            None => Vec::new(),
        };
        (1..=attrs.ports)
            .map(|number| {
                let p = self.core.context.port(number)?;
                Ok(PortInfo {
                    number,
                    state: if p.active {
                        PortState::Active
                    } else {
                        PortState::Down
                    },
                    link_layer: if p.ethernet {
                        LinkLayer::Ethernet
                    } else {
                        LinkLayer::InfiniBand
                    },
                    // The netdev is known for port 1 only.
                    addresses: if number == 1 {
                        addresses.clone()
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    }

    fn alloc_pd(&self) -> Result<VerbsPd> {
        self.core.check()?;
        let raw = RawVerbsPd::alloc(&self.core)?;
        Ok(VerbsPd::new(raw, self.core.life.clone(), self.core.profile))
    }

    fn create_cq(&self, depth: u32) -> Result<VerbsCq> {
        self.create_cq_with(depth, None)
    }

    fn create_channel(&self) -> Result<VerbsChannel> {
        self.core.check()?;
        let raw = RawVerbsChannel::create(&self.core)?;
        Ok(VerbsChannel::new(raw, self.core.life.clone()))
    }

    fn create_cq_with(&self, depth: u32, channel: Option<&VerbsChannel>) -> Result<VerbsCq> {
        self.core.check()?;
        if let Some(ch) = channel
            && !Arc::ptr_eq(ch.raw().core(), &self.core)
        {
            return Err(Error::invalid_argument(
                "the completion channel belongs to another device handle",
            ));
        }
        let raw = RawVerbsCq::create(&self.core, depth, channel.map(|c| c.raw()))?;
        match channel {
            None => Ok(VerbsCq::new(raw, depth, self.core.life.clone())),
            Some(ch) => VerbsCq::with_channel(raw, depth, self.core.life.clone(), ch),
        }
    }

    fn listen(&self, addr: SocketAddr) -> Result<VerbsListener> {
        self.core.check()?;
        VerbsListener::listen(&self.core, addr)
    }

    fn events(&self) -> Result<EventStream<DeviceEvent>> {
        self.core.life.subscribe()
    }
}
