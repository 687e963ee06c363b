//! Bad sizes and names.

use super::*;

pub(super) fn zero_depth_cq<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    fails_with(
        device.create_cq(0),
        ErrorKind::InvalidArgument,
        "create_cq(0)",
    )?;
    let cq = device.create_cq(1)?;
    ensure!(
        cq.capacity() >= 1,
        "a CQ of depth 1 has capacity {}",
        cq.capacity()
    );
    cq.destroy()?;
    Ok(())
}

pub(super) fn zero_sized_qp<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(16)?;
    let zero_send = QpInit {
        max_send_wr: 0,
        ..QpInit::default()
    };
    let zero_recv = QpInit {
        max_recv_wr: 0,
        ..QpInit::default()
    };
    fails_with(
        pd.create_qp(&cq, &cq, &zero_send),
        ErrorKind::InvalidArgument,
        "create_qp with max_send_wr 0",
    )?;
    fails_with(
        pd.create_qp(&cq, &cq, &zero_recv),
        ErrorKind::InvalidArgument,
        "create_qp with max_recv_wr 0",
    )?;
    // The refused creates left nothing behind: the PD and CQ still make QPs, and once that QP
    // is gone nothing holds them.
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    ensure_eq!(
        qp.state()?,
        ctx.state_model().initial(),
        "state of a new QP"
    );
    qp.destroy()?;
    cq.destroy()?;
    pd.destroy()?;
    Ok(())
}

pub(super) fn open_unknown_device<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let provider = ctx.provider();
    let devices = provider.devices()?;
    let mut name = String::from("anyverbs-conformance-no-such-device");
    while devices.iter().any(|d| d.identity.name == name) {
        name.push('x');
    }
    fails_with(
        provider.open(&name),
        ErrorKind::NotFound,
        &format!("open({name:?})"),
    )?;
    let device = ctx.open()?;
    ensure_eq!(
        device.info().identity.name.as_str(),
        ctx.device_name(),
        "name of the device opened after the failed open"
    );
    Ok(())
}

pub(super) fn connect_refused<P: Provider>(ctx: &Ctx<'_, P>) -> CaseResult {
    let device = ctx.open()?;
    let addr = ctx.address(&device)?;
    let pd = device.alloc_pd()?;
    let cq = device.create_cq(16)?;
    let qp = pd.create_qp(&cq, &cq, &QpInit::default())?;
    // A port of the device's own address where nobody listens: one a listener just had.
    let target = {
        let listener = device.listen(addr)?;
        listener.local_addr()
    };
    // The refusal may come synchronously from connect or, as with rdma_cm, from
    // wait_connected.
    match qp.connect(target, &ConnParams::default()) {
        Err(e) => ensure_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect to {target}, where nobody listens ({e})"
        ),
        Ok(()) => match qp.wait_connected(ctx.deadline()) {
            Ok(c) => {
                return Err(CaseError::Failed(format!(
                    "connected to {target}, where nobody listens: {c:?}"
                )));
            }
            Err(e) => ensure_eq!(
                e.kind(),
                ErrorKind::ConnectionRefused,
                "wait_connected after connecting to {target}, where nobody listens ({e})"
            ),
        },
    }
    // The QP, its CQ and PD can be destroyed cleanly.
    qp.destroy()?;
    fails_with(
        qp.state(),
        ErrorKind::Destroyed,
        "state() of a destroyed QP",
    )?;
    cq.destroy()?;
    pd.destroy()?;
    Ok(())
}
