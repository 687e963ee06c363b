//! Creating and destroying PDs, MRs, CQs and QPs, in every legal order.

use anyverbs::{
    Access, CompletionQueue, Device, ErrorKind, MemoryRegion, ProtectionDomain, Provider, QpInit,
    QueuePair,
};

use crate::case::{Case, CaseError, CaseFn, CaseResult, Needs};
use crate::ctx::Ctx;
use crate::{ensure, ensure_eq};

/// The cases of this group.
pub fn cases<P: Provider>() -> Vec<Case<P>> {
    vec![
        Case {
            name: "resources::destroy_in_every_order",
            description: "Destroying a QP, MR, CQ and PD succeeds in every order that respects \
                          dependencies and fails with Busy, changing nothing, in every other.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(destroy_in_every_order::<P>),
        },
        Case {
            name: "resources::dropped_parent_outlives_children",
            description: "Dropping a PD and CQ handle while an MR and a QP still use them leaves \
                          the children working.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(dropped_parent_outlives_children::<P>),
        },
        Case {
            name: "resources::memory_region_access",
            description: "An MR reports its length and access, copies in and out within bounds, \
                          refuses copies out of bounds, and refuses remote write without local \
                          write.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(memory_region_access::<P>),
        },
        Case {
            name: "resources::cq_capacity",
            description: "A CQ holds at least the number of completions it was created with.",
            needs: Needs::NOTHING,
            run: CaseFn::Plain(cq_capacity::<P>),
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obj {
    Qp,
    Mr,
    Cq,
    Pd,
}

/// Objects that must be destroyed before `o`.
fn dependants(o: Obj) -> &'static [Obj] {
    match o {
        Obj::Qp | Obj::Mr => &[],
        Obj::Cq => &[Obj::Qp],
        Obj::Pd => &[Obj::Qp, Obj::Mr],
    }
}

fn permutations(items: &[Obj]) -> Vec<Vec<Obj>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

fn destroy_in_every_order<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let dev = ctx.open()?;
    for order in permutations(&[Obj::Qp, Obj::Mr, Obj::Cq, Obj::Pd]) {
        let pd = dev.alloc_pd()?;
        let mr = pd.register(4096, Access::LOCAL_WRITE)?;
        let cq = dev.create_cq(16)?;
        let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
        let mut gone: Vec<Obj> = Vec::new();
        let destroy = |o: Obj| -> anyverbs::Result<()> {
            match o {
                Obj::Qp => qp.destroy(),
                Obj::Mr => mr.destroy(),
                Obj::Cq => cq.destroy(),
                Obj::Pd => pd.destroy(),
            }
        };
        let mut refused = Vec::new();
        for &o in &order {
            let legal = dependants(o).iter().all(|d| gone.contains(d));
            match destroy(o) {
                Ok(()) if legal => gone.push(o),
                Ok(()) => {
                    return Err(CaseError::Failed(format!(
                        "order {order:?}: destroying {o:?} before {:?} succeeded",
                        dependants(o)
                    )));
                }
                Err(e) if !legal && e.kind() == ErrorKind::Busy => refused.push(o),
                Err(e) => {
                    return Err(CaseError::Failed(format!(
                        "order {order:?}: destroying {o:?} failed: {e}"
                    )));
                }
            }
        }
        // What was refused must still be alive and now destroyable, in a legal order.
        for o in [Obj::Qp, Obj::Mr, Obj::Cq, Obj::Pd] {
            if refused.contains(&o) {
                destroy(o).map_err(|e| {
                    CaseError::Failed(format!(
                        "order {order:?}: {o:?} refused earlier cannot be destroyed now: {e}"
                    ))
                })?;
            }
        }
        // Destroying twice is a no-op; any other call fails with Destroyed.
        qp.destroy()?;
        pd.destroy()?;
        let e = qp.state().err();
        ensure_eq!(
            e.map(|e| e.kind()),
            Some(ErrorKind::Destroyed),
            "state() of a destroyed QP"
        );
        let e = mr.write(0, &[1]).err();
        ensure_eq!(
            e.map(|e| e.kind()),
            Some(ErrorKind::Destroyed),
            "write to a destroyed MR"
        );
    }
    Ok(())
}

fn dropped_parent_outlives_children<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let dev = ctx.open()?;
    let pd = dev.alloc_pd()?;
    let cq = dev.create_cq(16)?;
    let mr = pd.register(64, Access::LOCAL_WRITE)?;
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    drop(pd);
    drop(cq);
    mr.write(0, b"still here")?;
    let mut buf = [0u8; 10];
    mr.read(0, &mut buf)?;
    ensure_eq!(
        &buf,
        b"still here",
        "MR contents after its PD handle was dropped"
    );
    ensure_eq!(
        qp.state()?,
        ctx.state_model().initial(),
        "QP state after its PD and CQ handles were dropped"
    );
    Ok(())
}

fn memory_region_access<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let dev = ctx.open()?;
    let pd = dev.alloc_pd()?;
    let access = Access::LOCAL_WRITE | Access::REMOTE_READ;
    let mr = pd.register(100, access)?;
    ensure_eq!(mr.len(), 100, "length");
    ensure_eq!(mr.access(), access, "access");
    let mut zero = [0xffu8; 100];
    mr.read(0, &mut zero)?;
    ensure!(zero.iter().all(|b| *b == 0), "a new region is not zeroed");
    mr.write(90, &[7; 10])?;
    let mut tail = [0u8; 10];
    mr.read(90, &mut tail)?;
    ensure_eq!(tail, [7u8; 10], "bytes written at the end");
    for (what, e) in [
        ("write past the end", mr.write(91, &[0; 10]).err()),
        ("read past the end", mr.read(100, &mut [0; 1]).err()),
    ] {
        ensure_eq!(
            e.map(|e| e.kind()),
            Some(ErrorKind::InvalidArgument),
            "{what}"
        );
    }
    let e = pd.register(64, Access::REMOTE_WRITE).err();
    ensure_eq!(
        e.map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument),
        "remote write without local write"
    );
    let other = pd.register(100, access)?;
    ensure!(
        other.lkey() != mr.lkey() && other.rkey() != mr.rkey(),
        "two live regions share a key"
    );
    Ok(())
}

fn cq_capacity<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let dev = ctx.open()?;
    for depth in [1, 7, 256] {
        let cq = dev.create_cq(depth)?;
        ensure!(
            cq.capacity() >= depth,
            "CQ created with depth {depth} holds {}",
            cq.capacity()
        );
    }
    Ok(())
}
