//! Device listing, identity and ports.

use anyverbs::{Device, PortState, Provider};

use crate::case::{Case, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "device::listing",
            description: "The provider lists the device under test once, with unique names and \
                          a non-zero node GUID.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(listing::<P>),
        },
        Case {
            name: "device::identity_stable_across_opens",
            description: "Opening the device twice gives the same identity as the listing, and \
                          the identity rule calls them the same device.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(identity_stable_across_opens::<P>),
        },
        Case {
            name: "device::ports",
            description: "The device has ports numbered from 1, at least one of them active.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(ports::<P>),
        },
    ]
}

fn listing<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let devices = ctx.provider().devices()?;
    let matching = devices
        .iter()
        .filter(|d| d.identity.name == ctx.device_name())
        .count();
    ensure_eq!(matching, 1, "devices named {:?}", ctx.device_name());
    let mut names: Vec<&str> = devices.iter().map(|d| d.identity.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    ensure_eq!(names.len(), devices.len(), "unique device names");
    ensure!(
        !ctx.info().identity.node_guid.is_zero(),
        "the node GUID is zero: the device could never be recognised after a reset"
    );
    Ok(())
}

fn identity_stable_across_opens<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let first = ctx.open()?;
    let second = ctx.open()?;
    let listed = &ctx.info().identity;
    ensure_eq!(&first.info().identity, listed, "identity of the first open");
    ensure_eq!(
        &second.info().identity,
        listed,
        "identity of the second open"
    );
    ensure!(
        first
            .info()
            .identity
            .is_same_device(&second.info().identity),
        "two opens of one device are not the same device by the identity rule"
    );
    drop(first);
    let third = ctx.open()?;
    ensure_eq!(
        &third.info().identity,
        listed,
        "identity after closing an open"
    );
    Ok(())
}

fn ports<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let dev = ctx.open()?;
    let ports = dev.ports()?;
    ensure!(!ports.is_empty(), "the device has no ports");
    for (i, p) in ports.iter().enumerate() {
        ensure_eq!(usize::from(p.number), i + 1, "port numbering");
    }
    ensure!(
        ports.iter().any(|p| p.state == PortState::Active),
        "no active port: {ports:?}"
    );
    Ok(())
}
