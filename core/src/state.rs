//! One QP state model for InfiniBand and iWARP.
//!
//! [`QpState`] has a variant for every state of both transports; a [`StateModel`] says which of
//! them a QP of that transport can be in and which transitions are legal. The iWARP model follows
//! the RDMAP/verbs specification and the kernel's siw driver: IDLE, RTS, CLOSING, TERMINATE and
//! ERROR. The InfiniBand model follows the verbs specification's modify-QP table (the kernel's
//! `ib_modify_qp_is_ok`): RESET, INIT, RTR, RTS, SQD, SQE and ERR.

use std::fmt;

use crate::error::{Error, Result};

/// The state of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// InfiniBand RESET: just created or reset; nothing may be posted.
    Reset,
    /// InfiniBand INIT: receives may be posted, sends may not.
    Init,
    /// InfiniBand RTR (ready to receive).
    ReadyToReceive,
    /// Ready to send (both transports): connected and fully operational.
    ReadyToSend,
    /// InfiniBand SQD: the send queue stops after the WRs in progress.
    SendQueueDrained,
    /// InfiniBand SQE: a send WR completed in error; receives still work.
    SendQueueError,
    /// Error (both transports): every WR is flushed; the terminal state before reset/destroy.
    Error,
    /// iWARP IDLE: created, not connected; receives may be posted, sends may not.
    Idle,
    /// iWARP CLOSING: the connection is being closed gracefully.
    Closing,
    /// iWARP TERMINATE: a TERMINATE message is being sent or was received.
    Terminate,
}

impl QpState {
    /// The name used in the transport's specification.
    pub const fn as_str(self) -> &'static str {
        match self {
            QpState::Reset => "RESET",
            QpState::Init => "INIT",
            QpState::ReadyToReceive => "RTR",
            QpState::ReadyToSend => "RTS",
            QpState::SendQueueDrained => "SQD",
            QpState::SendQueueError => "SQE",
            QpState::Error => "ERROR",
            QpState::Idle => "IDLE",
            QpState::Closing => "CLOSING",
            QpState::Terminate => "TERMINATE",
        }
    }
}

impl fmt::Display for QpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who causes a state transition. Some transitions only the connection manager or the hardware
/// may make; a ULP asking for them gets [`ErrorKind::InvalidState`](crate::ErrorKind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The ULP, through `QueuePair::modify`.
    Modify,
    /// The connection manager, while connecting or accepting.
    Connection,
    /// The device itself: an error completion, a TERMINATE message, an LLP close.
    Hardware,
}

/// Which transport's QP state machine applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateModel {
    /// InfiniBand and RoCE: RESET, INIT, RTR, RTS, SQD, SQE, ERR.
    InfiniBand,
    /// iWARP: IDLE, RTS, CLOSING, TERMINATE, ERROR.
    Iwarp,
}

impl fmt::Display for StateModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateModel::InfiniBand => "InfiniBand",
            StateModel::Iwarp => "iWARP",
        })
    }
}

impl StateModel {
    /// The state a newly created QP is in.
    pub const fn initial(self) -> QpState {
        match self {
            StateModel::InfiniBand => QpState::Reset,
            StateModel::Iwarp => QpState::Idle,
        }
    }

    /// Every state a QP of this model can be in.
    pub const fn states(self) -> &'static [QpState] {
        use QpState::*;
        match self {
            StateModel::InfiniBand => &[
                Reset,
                Init,
                ReadyToReceive,
                ReadyToSend,
                SendQueueDrained,
                SendQueueError,
                Error,
            ],
            StateModel::Iwarp => &[Idle, ReadyToSend, Closing, Terminate, Error],
        }
    }

    /// The state a connection moves a freshly created QP to before it can carry traffic,
    /// in order (InfiniBand: INIT, RTR, RTS; iWARP: RTS).
    pub const fn connect_path(self) -> &'static [QpState] {
        use QpState::*;
        match self {
            StateModel::InfiniBand => &[Init, ReadyToReceive, ReadyToSend],
            StateModel::Iwarp => &[ReadyToSend],
        }
    }

    /// Whether `cause` may move a QP from `from` to `to`.
    pub fn allows(self, from: QpState, to: QpState, cause: Cause) -> bool {
        use Cause::*;
        use QpState::*;
        let states = self.states();
        if !states.contains(&from) || !states.contains(&to) {
            return false;
        }
        match self {
            StateModel::InfiniBand => match (from, to) {
                // `ib_modify_qp_is_ok`: every state may be reset; every state but RESET may be
                // moved to ERR (RESET→ERR is not in the table).
                (_, Reset) => cause == Modify,
                (Reset, Error) => false,
                (_, Error) => true,
                (Reset, Init) | (Init, Init) | (Init, ReadyToReceive) => cause != Hardware,
                (ReadyToReceive, ReadyToSend) => cause != Hardware,
                (ReadyToSend, ReadyToSend) => cause != Hardware,
                (ReadyToSend, SendQueueDrained) | (SendQueueDrained, SendQueueDrained) => {
                    cause == Modify
                }
                (SendQueueDrained, ReadyToSend) | (SendQueueError, ReadyToSend) => cause == Modify,
                // A send WR failing in RTS (unreliable transports only; RC goes to ERR).
                (ReadyToSend, SendQueueError) => cause == Hardware,
                _ => false,
            },
            StateModel::Iwarp => match (from, to) {
                // ERROR is final on iWARP (siw has no way out of it but destroy); moving to
                // ERROR again is a no-op.
                (Error, Error) => true,
                (Error, _) => false,
                (_, Error) => true,
                (Idle, Idle) => cause == Modify,
                // An iWARP QP becomes RTS only when the connection manager connects it.
                (Idle, ReadyToSend) => cause == Connection,
                // Graceful close: the ULP asks; the send queue must be empty (siw moves to
                // ERROR instead when a send is in progress).
                (ReadyToSend, Closing) => cause != Connection,
                (Closing, Closing) => cause == Modify,
                (ReadyToSend, Terminate) => cause != Connection,
                // The LLP close completed.
                (Closing, Idle) => cause != Connection,
                _ => false,
            },
        }
    }

    /// Like [`allows`](Self::allows), but returns a typed error naming both states.
    pub fn check(self, from: QpState, to: QpState, cause: Cause) -> Result<()> {
        if self.allows(from, to, cause) {
            Ok(())
        } else {
            let who = match cause {
                Cause::Modify => "modify",
                Cause::Connection => "the connection manager",
                Cause::Hardware => "the device",
            };
            Err(Error::invalid_state(format!(
                "{self} QP cannot move from {from} to {to} by {who}"
            )))
        }
    }

    /// Whether receive WRs may be posted in `state` (kernel rxe: not in RESET; siw: IDLE and
    /// RTS). In ERROR a post is legal; what happens to the WR is described by
    /// [`Caps::POST_IN_ERROR_FLUSHED`](crate::Caps).
    pub fn can_post_recv(self, state: QpState) -> bool {
        use QpState::*;
        match self {
            StateModel::InfiniBand => state != Reset,
            StateModel::Iwarp => matches!(state, Idle | ReadyToSend | Error),
        }
    }

    /// Whether send WRs may be posted in `state` (kernel rxe: RTS, SQD, SQE, ERR; siw: RTS,
    /// ERROR). See [`can_post_recv`](Self::can_post_recv) for ERROR.
    pub fn can_post_send(self, state: QpState) -> bool {
        use QpState::*;
        match self {
            StateModel::InfiniBand => {
                matches!(
                    state,
                    ReadyToSend | SendQueueDrained | SendQueueError | Error
                )
            }
            StateModel::Iwarp => matches!(state, ReadyToSend | Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QpState::*;

    #[test]
    fn infiniband_connect_path_is_legal_and_skipping_is_not() {
        let m = StateModel::InfiniBand;
        let mut s = m.initial();
        for &next in m.connect_path() {
            m.check(s, next, Cause::Connection).unwrap();
            s = next;
        }
        assert_eq!(s, ReadyToSend);
        assert!(!m.allows(Reset, ReadyToSend, Cause::Modify));
        assert!(!m.allows(Init, ReadyToSend, Cause::Modify));
        assert!(!m.allows(Error, ReadyToSend, Cause::Modify));
    }

    #[test]
    fn iwarp_reaches_rts_only_through_the_connection_manager() {
        let m = StateModel::Iwarp;
        assert!(m.allows(Idle, ReadyToSend, Cause::Connection));
        let e = m.check(Idle, ReadyToSend, Cause::Modify).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidState);
        assert!(e.to_string().contains("IDLE"), "{e}");
    }

    #[test]
    fn states_of_the_other_transport_are_rejected() {
        assert!(!StateModel::Iwarp.allows(Idle, Init, Cause::Modify));
        assert!(!StateModel::InfiniBand.allows(ReadyToSend, Closing, Cause::Modify));
        assert!(!StateModel::InfiniBand.allows(ReadyToReceive, ReadyToReceive, Cause::Modify));
    }

    #[test]
    fn every_state_but_ib_reset_can_reach_error() {
        for m in [StateModel::InfiniBand, StateModel::Iwarp] {
            for &s in m.states() {
                let expected = !(m == StateModel::InfiniBand && s == Reset);
                assert_eq!(m.allows(s, Error, Cause::Modify), expected, "{m:?} {s}");
            }
        }
        assert!(!StateModel::Iwarp.allows(Error, Idle, Cause::Modify));
        assert!(StateModel::InfiniBand.allows(Error, Reset, Cause::Modify));
    }

    #[test]
    fn posting_rules() {
        let ib = StateModel::InfiniBand;
        assert!(!ib.can_post_recv(Reset));
        assert!(ib.can_post_recv(Init));
        assert!(!ib.can_post_send(Init));
        assert!(ib.can_post_send(ReadyToSend));
        let iw = StateModel::Iwarp;
        assert!(iw.can_post_recv(Idle));
        assert!(!iw.can_post_send(Idle));
        assert!(!iw.can_post_send(Closing));
        assert!(!iw.can_post_recv(Terminate));
    }
}
