//! # anyverbs-provider-ib: InfiniBand and RoCE on rdma-core
//!
//! The provider for InfiniBand HCAs and RoCE NICs (mlx5, mlx4, bnxt_re, hns, irdma in RoCE
//! mode, the kernel's Soft-RoCE `rxe`, ...). It is thin on purpose: the transport's rules —
//! the InfiniBand QP state model, its capabilities, the application's moves to RTR and RTS with
//! the connection manager's attributes — as data ([`FLAVOR`]) over the shared verbs plumbing
//! ([`anyverbs_verbs::provider`]), which puts the core's provider kit on rdma-core. The kit
//! does admission, completions, drain (by the profile of the driver found: `mlx5` flushes at
//! once, `rxe` needs ERROR repeated after the receive marker, a dead device gets synthesized
//! flushes), state and lifetimes.
//!
//! ## Design choices
//!
//! - **rdma-core is loaded at run time** (sideway, rdma-mummy-sys): this crate links nothing
//!   of rdma-core. Where the machine has no RDMA, [`Provider::devices`] is empty and
//!   opening a device says "RDMA is not available here: ..."; the plugin refuses to start with
//!   that message, so `anyverbs-conform run --provider ib` reports it as an environment error.
//! - **Connections by IP address through the RDMA CM**, as ULPs connect on RoCE. Peers written on
//!   plain librdmacm (`rping`, `rdma_server`/`rdma_client`) interoperate.
//! - **QP state is tracked and asked of the kernel** (`ibv_query_qp` on InfiniBand devices tells
//!   the truth; libibverbs' cached state does not).
//! - **Device removal** is learnt from the CM (a CM ID is kept bound to the device's address:
//!   rxe, like every driver that cannot disassociate, reports removal only there) and from
//!   `IBV_EVENT_DEVICE_FATAL` where the driver has it; every handle then fails with `DeviceLost`
//!   at once, and once the ULP released its objects the kernel's delete completes.
//!
//! ```no_run
//! use anyverbs::Provider;
//!
//! let provider = anyverbs_provider_ib::IbProvider::new(&anyverbs_provider_ib::FLAVOR);
//! for device in provider.devices()? {
//!     println!("{} ({})", device.identity.name, device.identity.node_guid);
//! }
//! # Ok::<(), anyverbs::Error>(())
//! ```
//!
//! [`Provider::devices`]: anyverbs::Provider::devices

#![deny(unsafe_code)]

use anyverbs::{Caps, StateModel, Transport};
use anyverbs_verbs::provider::{Flavor, VerbsProvider};

/// The provider: the verbs provider with InfiniBand's rules.
pub type IbProvider = VerbsProvider;

/// InfiniBand's rules: the IB state model; immediate data, SQD, RNR retries and (where the
/// device has them) atomics; the application moves its QPs to RTR and RTS with the CM's
/// attributes; `ibv_query_qp` tells the QP's real state.
pub static FLAVOR: Flavor = Flavor {
    name: "ib",
    transport: Transport::InfiniBand,
    takes: anyverbs_verbs::device::Transport::InfiniBand,
    state_model: StateModel::InfiniBand,
    caps: Caps::IMMEDIATE_DATA
        .union(Caps::SQ_DRAIN_STATE)
        .union(Caps::RNR_RETRY)
        .union(Caps::ATOMICS),
    app_moves_to_rts: true,
    query_tells_state: true,
};

/// The InfiniBand/RoCE provider.
pub fn provider() -> IbProvider {
    VerbsProvider::new(&FLAVOR)
}

/// The plugin's constructor: refuses to start, saying why, where the machine has no RDMA.
fn plugin() -> anyverbs::Result<IbProvider> {
    anyverbs_verbs::device::availability()?;
    Ok(provider())
}

anyverbs::export_provider!(IbProvider, plugin);
