//! The cases, one module per group.

use anyverbs::Provider;

use crate::case::Case;

pub mod bad_input;
pub mod channel;
pub mod connect;
pub mod data;
pub mod device;
pub mod drain;
pub mod lifecycle;
pub mod memory;
pub mod recovery;
pub mod resources;
pub mod state;

/// Every case, in run order.
pub fn all_cases<P: Provider>() -> Vec<Case<P>> {
    let mut cases = Vec::new();
    cases.extend(device::cases::<P>());
    cases.extend(resources::cases::<P>());
    cases.extend(state::cases::<P>());
    cases.extend(connect::cases::<P>());
    cases.extend(data::cases::<P>());
    cases.extend(channel::cases::<P>());
    cases.extend(memory::cases::<P>());
    cases.extend(bad_input::cases::<P>());
    cases.extend(drain::cases::<P>());
    cases.extend(lifecycle::cases::<P>());
    cases.extend(recovery::cases::<P>());
    cases
}
