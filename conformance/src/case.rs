//! What a conformance case is: a name, what it needs from the device, and a function.

use std::fmt;

use anyverbs::{Caps, Provider, StateModel};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Capabilities the device must have.
    pub caps: Caps,
    /// The QP state model the case is written for, if it is specific to one.
    pub state_model: Option<StateModel>,
}

impl Needs {
    /// Needs nothing beyond the basics every provider has.
    pub const NOTHING: Needs = Needs {
        caps: Caps::empty(),
        state_model: None,
    };

    /// Needs these capabilities.
    pub const fn caps(caps: Caps) -> Needs {
        Needs {
            caps,
            state_model: None,
        }
    }

    /// Needs a device of this state model.
    pub const fn model(state_model: StateModel) -> Needs {
        Needs {
            caps: Caps::empty(),
            state_model: Some(state_model),
        }
    }

    /// Why a device with `caps` and `model` cannot run the case, or `None` if it can.
    pub fn missing(&self, caps: Caps, model: StateModel) -> Option<String> {
        let lacking = self.caps - caps;
        if !lacking.is_empty() {
            let names: Vec<&str> = lacking.iter_names().map(|(name, _)| name).collect();
            return Some(format!("device lacks {}", names.join(", ")));
        }
        match self.state_model {
            Some(m) if m != model => Some(format!(
                "written for the {m} state model; the device uses {model}"
            )),
            _ => None,
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
    pub run: fn(&Ctx<'_, P>) -> CaseResult,
}

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
