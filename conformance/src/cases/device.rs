//! device cases.

use anyverbs::Provider;

use crate::case::Case;

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![]
}
