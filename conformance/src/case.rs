//! What a conformance case is: a name, what it needs from the device, and a function.

use std::fmt;

use anyverbs::{Caps, Faults, Provider, StateModel};

use crate::ctx::Ctx;

/// Why a case did not pass: it failed, or it found at run time that it cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseError {
    /// The provider broke the contract; the message says how.
    Failed(String),
    /// The case could not run on this device; the message says why. Never counted as passed.
    NotRun(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaseError::Failed(m) => write!(f, "failed: {m}"),
            CaseError::NotRun(m) => write!(f, "not run: {m}"),
        }
    }
}

impl From<anyverbs::Error> for CaseError {
    fn from(e: anyverbs::Error) -> Self {
        CaseError::Failed(format!("unexpected error: {e}"))
    }
}

impl From<anyverbs::PostError> for CaseError {
    fn from(e: anyverbs::PostError) -> Self {
        CaseError::Failed(format!("unexpected post error: {e}"))
    }
}

/// The result of a case function.
pub type CaseResult = Result<(), CaseError>;

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::CaseError::Failed(format!($($msg)+)));
        }
    };
}

/// Fails the case unless the two values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::CaseError::Failed(format!(
                        "{}: expected {:?}, got {:?}",
                        format!($($msg)+),
                        r,
                        l
                    )));
                }
            }
        }
    };
}

/// What a case needs from the device; a device that lacks it reports the case as not run.
///
/// Built from the constructors and combined with the `and_*` methods, all `const`:
///
/// ```
/// use anyverbs::{Caps, Faults, StateModel};
/// use anyverbs_conformance::Needs;
///
/// // Runs only on InfiniBand-model devices with SQD ...
/// const SQD: Needs = Needs::caps(Caps::SQ_DRAIN_STATE).and_model(StateModel::InfiniBand);
/// // ... and only on devices whose posts in ERROR are *not* known to be flushed.
/// const NO_FLUSH: Needs = Needs::lacks(Caps::POST_IN_ERROR_FLUSHED);
/// // ... and only on devices that can have a QP killed.
/// const KILL: Needs = Needs::faults(Faults::KILL_QP);
/// let none = Faults::empty();
/// assert!(NO_FLUSH.missing(Caps::POST_IN_ERROR_FLUSHED, none, StateModel::Iwarp).is_some());
/// assert!(SQD.missing(Caps::SQ_DRAIN_STATE, none, StateModel::InfiniBand).is_none());
/// assert!(KILL.missing(Caps::empty(), Faults::UNPLUG, StateModel::Iwarp).is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Capabilities the device must have.
    pub caps: Caps,
    /// Capabilities the device must *not* have: the case is about how devices without them
    /// behave.
    pub lacks: Caps,
    /// The faults the case injects: the device must list them all in
    /// [`DeviceInfo::faults`](anyverbs::DeviceInfo::faults).
    pub faults: Faults,
    /// The QP state model the case is written for, if it is specific to one.
    pub state_model: Option<StateModel>,
}

impl Needs {
    /// Needs nothing beyond the basics every provider has.
    pub const NOTHING: Needs = Needs {
        caps: Caps::empty(),
        lacks: Caps::empty(),
        faults: Faults::empty(),
        state_model: None,
    };

    /// Needs these capabilities.
    pub const fn caps(caps: Caps) -> Needs {
        Needs::NOTHING.and_caps(caps)
    }

    /// Runs only on devices that have none of these capabilities.
    pub const fn lacks(caps: Caps) -> Needs {
        Needs::NOTHING.and_lacks(caps)
    }

    /// Injects these faults.
    pub const fn faults(faults: Faults) -> Needs {
        Needs::NOTHING.and_faults(faults)
    }

    /// Needs a device of this state model.
    pub const fn model(state_model: StateModel) -> Needs {
        Needs::NOTHING.and_model(state_model)
    }

    /// These needs, and also the capabilities `caps`.
    pub const fn and_caps(self, caps: Caps) -> Needs {
        Needs {
            caps: self.caps.union(caps),
            ..self
        }
    }

    /// These needs, and also a device that has none of `caps`.
    pub const fn and_lacks(self, caps: Caps) -> Needs {
        Needs {
            lacks: self.lacks.union(caps),
            ..self
        }
    }

    /// These needs, and also a device that can have `faults` injected.
    pub const fn and_faults(self, faults: Faults) -> Needs {
        Needs {
            faults: self.faults.union(faults),
            ..self
        }
    }

    /// These needs, on a device of `state_model`.
    pub const fn and_model(self, state_model: StateModel) -> Needs {
        Needs {
            state_model: Some(state_model),
            ..self
        }
    }

    /// Why a device with `caps`, that can have `faults` injected, and of `model` cannot run the
    /// case, or `None` if it can. Every reason is given, separated by `; `.
    pub fn missing(&self, caps: Caps, faults: Faults, model: StateModel) -> Option<String> {
        fn names<'a>(names: impl Iterator<Item = (&'a str, impl Sized)>) -> String {
            names.map(|(name, _)| name).collect::<Vec<_>>().join(", ")
        }
        let mut reasons = Vec::new();
        let lacking = self.caps - caps;
        if !lacking.is_empty() {
            reasons.push(format!("device lacks {}", names(lacking.iter_names())));
        }
        let unwanted = self.lacks & caps;
        if !unwanted.is_empty() {
            reasons.push(format!("the device has {}", names(unwanted.iter_names())));
        }
        let uninjectable = self.faults - faults;
        if !uninjectable.is_empty() {
            reasons.push(format!(
                "the device cannot have these faults injected: {}",
                names(uninjectable.iter_names())
            ));
        }
        if let Some(m) = self.state_model
            && m != model
        {
            reasons.push(format!(
                "written for the {m} state model; the device uses {model}"
            ));
        }
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }
}

/// One named conformance case.
pub struct Case<P: Provider> {
    /// Unique name, `group::what`, e.g. `data::send_recv_many_sges`.
    pub name: &'static str,
    /// One sentence: what a provider must do to pass.
    pub description: &'static str,
    /// What it needs from the device.
    pub needs: Needs,
    /// The case itself.
    pub run: CaseFn<P>,
}

/// What a case runs: a function of its own, or one row of a table its group keeps — cases that
/// differ only in data (which SGE is bad, which fault is injected) are rows of one table, run
/// by one function, rather than a wrapper function each.
pub enum CaseFn<P: Provider> {
    /// A function of the context.
    Plain(fn(&Ctx<'_, P>) -> CaseResult),
    /// `f(ctx, row)`: row `row` of the table behind `f`.
    Row(fn(&Ctx<'_, P>, usize) -> CaseResult, usize),
}

impl<P: Provider> CaseFn<P> {
    /// Runs the case on `ctx`.
    pub fn call(&self, ctx: &Ctx<'_, P>) -> CaseResult {
        match *self {
            CaseFn::Plain(f) => f(ctx),
            CaseFn::Row(f, row) => f(ctx, row),
        }
    }
}

impl<P: Provider> Clone for CaseFn<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Provider> Copy for CaseFn<P> {}

impl<P: Provider> Clone for Case<P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Provider> Copy for Case<P> {}

impl<P: Provider> fmt::Debug for Case<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("needs", &self.needs)
            .finish()
    }
}
