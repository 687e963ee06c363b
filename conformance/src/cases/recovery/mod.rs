//! The recovery supervisor (`anyverbs::supervisor`) on the device under test: it restarts a
//! service when the *same* device comes back, refuses a different device under the same name
//! unless the service adopts it, gives up after the return window, restarts only the service
//! whose QP failed, backs off on connection loss and gives up after the loss timeout, and
//! restarts at once when the device returns during a backoff.
//!
//! Each case supervises a small test service, `Probe`: on every start it builds a PD, two CQs
//! and a connected pair of QPs on the device handle the supervisor gives it, and checks that one
//! SEND/RECV actually passes; it counts starts and stops, and lets the case send more messages
//! through whatever it runs now. The 10-minute window and the reconnect delays run on a
//! [`ManualClock`](anyverbs::supervisor::ManualClock), so those cases take milliseconds of real time.

mod connection;
mod probe;
mod restart;
mod window;

use anyverbs::{Faults, Provider};

use crate::case::{Case, CaseFn, Needs};
use connection::*;
use restart::*;
use window::*;

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "recovery::restarts_when_the_same_device_returns_after_reset",
            description: "A supervised service on a device that resets is stopped (DeviceLost, \
                          Stopped, WaitingForDevice) and restarted on the same device when it \
                          returns (DeviceReturned, Started generation 2, new index); data flows \
                          again, and shutdown stops it.",
            needs: Needs::faults(Faults::RESET),
            run: CaseFn::Plain(restarts_after_reset::<P>),
        },
        Case {
            name: "recovery::restarts_when_the_same_device_is_replugged",
            description: "A supervised service on a device that is unplugged and plugged back \
                          is restarted on it (DeviceReturned, Started generation 2) and data \
                          flows again.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(restarts_after_replug::<P>),
        },
        Case {
            name: "recovery::refuses_a_different_device_under_the_same_name",
            description: "When a different device appears under the lost device's name, the \
                          supervisor (even one that selected the device by name) reports \
                          ForeignDevice, not adopted, and does not restart.",
            needs: Needs::faults(Faults::UNPLUG.union(Faults::REPLUG_OTHER)),
            run: CaseFn::Plain(refuses_a_foreign_device::<P>),
        },
        Case {
            name: "recovery::adopts_a_replacement_the_service_accepts",
            description: "When the service's accept_replacement agrees, a different device \
                          under the lost one's name is adopted: ForeignDevice adopted, Started on \
                          the new identity, and data flows.",
            needs: Needs::faults(Faults::UNPLUG.union(Faults::REPLUG_OTHER)),
            run: CaseFn::Plain(adopts_an_accepted_replacement::<P>),
        },
        Case {
            name: "recovery::gives_up_after_the_return_window",
            description: "With a manual clock, an unplugged device that never returns makes the \
                          supervisor give up (WindowExpired) once the 10-minute window has \
                          passed, and not a second before; its thread ends, all in well under 2 s \
                          of real time.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(gives_up_after_the_window::<P>),
        },
        Case {
            name: "recovery::reports_what_keeps_a_reset_device_away",
            description: "A service whose stop leaks its objects keeps a reset device from \
                          coming back: while waiting, the supervisor reports what is held \
                          (DeviceHeld: 2 QPs, 2 CQs, 2 MRs, 1 PD, 1 listener), not again while \
                          nothing changes, and once more right before it gives up after the \
                          window; released, the objects are no longer counted.",
            needs: Needs::faults(Faults::RESET),
            run: CaseFn::Plain(reports_what_keeps_the_device_away::<P>),
        },
        Case {
            name: "recovery::qp_fatal_restarts_only_its_service",
            description: "Two services supervised on one device: killing a QP of the first \
                          restarts the first after its reconnect delay (ConnectionLost, \
                          RestartScheduled, Started generation 2), while the second reports \
                          nothing, keeps its QPs and still passes data.",
            needs: Needs::faults(Faults::KILL_QP),
            run: CaseFn::Plain(qp_fatal_restarts_only_its_service::<P>),
        },
        Case {
            name: "recovery::connection_loss_backs_off_then_gives_up",
            description: "After a reported connection loss, restarts that fail are retried after \
                          10, 20 and 40 s (doubling up to the maximum, never early), and the \
                          supervisor gives up (LossTimeout) once the loss timeout has passed.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(connection_loss_backs_off_then_gives_up::<P>),
        },
        Case {
            name: "recovery::device_return_during_backoff_restarts_at_once",
            description: "A device unplugged and plugged back while a reconnect is pending \
                          restarts the service as soon as it returns, without waiting for the \
                          reconnect delay.",
            needs: Needs::faults(Faults::UNPLUG),
            run: CaseFn::Plain(device_return_during_backoff_restarts_at_once::<P>),
        },
    ]
}
