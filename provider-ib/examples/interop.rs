//! anyverbs against plain librdmacm programs: rdma-core's `rdma_server` and `rdma_client`
//! (librdmacm's examples). Their protocol: the client connects, each side posts a 16-byte
//! receive, the client sends 16 bytes, the server answers with 16 bytes, both disconnect.
//!
//! ```sh
//! interop client ADDR PORT [DEVICE]   # against `rdma_server -s ADDR -p PORT`
//! interop server ADDR PORT [DEVICE]   # for `rdma_client -s ADDR -p PORT`
//! ```
//!
//! Prints what it received and exits 0 once the exchange completed both ways.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, Listener, MemoryRegion, Provider,
    QpInit, QueuePair, RecvWr, SendFlags, SendOp, SendWr, Sge, WcOpcode,
};

const LEN: u32 = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(role), Some(ip), Some(port)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<IpAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: interop client|server ADDR PORT [DEVICE]");
        return ExitCode::from(2);
    };
    let device = args.get(3).cloned().unwrap_or_else(|| "rxe0".into());
    match run(role, SocketAddr::new(ip, port), &device) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Polls `cq` until completions of every one of `opcodes` arrived (in any order); returns the
/// receive's, if one was waited for.
fn wait_for<C: CompletionQueue>(
    cq: &C,
    opcodes: &[WcOpcode],
    deadline: Instant,
) -> anyverbs::Result<Option<Completion>> {
    let mut missing = opcodes.to_vec();
    let mut received = None;
    let mut wc = [Completion::default(); 4];
    while !missing.is_empty() {
        let n = cq.poll(&mut wc)?;
        for c in &wc[..n] {
            if !c.status.is_success() {
                return Err(anyverbs::Error::new(
                    anyverbs::ErrorKind::Other,
                    format!("a WR failed: {c:?}"),
                ));
            }
            missing.retain(|o| *o != c.opcode);
            if c.opcode == WcOpcode::Recv {
                received = Some(*c);
            }
        }
        if Instant::now() >= deadline {
            return Err(anyverbs::Error::timed_out(format!(
                "no {missing:?} completion in time"
            )));
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(received)
}

fn run(role: &str, addr: SocketAddr, device: &str) -> anyverbs::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let provider = anyverbs_provider_ib::provider();
    let dev = provider.open(device)?;
    let pd = dev.alloc_pd()?;
    let cq = dev.create_cq(16)?;
    let init = QpInit {
        max_send_wr: 4,
        max_recv_wr: 4,
        ..QpInit::default()
    };
    let qp = pd.create_qp(&cq, &cq, &init)?;
    anyverbs::cm::ready_for_receives(&qp, dev.info().state_model)?;
    let mr = pd.register(2 * LEN as usize, Access::LOCAL_WRITE)?;
    let send = Sge {
        addr: mr.addr(),
        length: LEN,
        lkey: mr.lkey(),
    };
    let recv = Sge {
        addr: mr.addr() + u64::from(LEN),
        ..send
    };
    qp.post_recv(&[RecvWr::single(1, recv)])
        .map_err(|e| e.error)?;
    let listener;
    match role {
        "client" => {
            qp.connect(addr, &ConnParams::default())?;
            let c = qp.wait_connected(deadline)?;
            println!("connected to {} (QP {})", c.peer, c.peer_qp_num);
            mr.write(0, b"anyverbs client\0")?;
            qp.post_send(&[SendWr::single(2, SendOp::Send, send).with_flags(SendFlags::SIGNALED)])
                .map_err(|e| e.error)?;
            let got = wait_for(&cq, &[WcOpcode::Send, WcOpcode::Recv], deadline)?
                .expect("a receive was waited for");
            let mut data = vec![0; got.byte_len as usize];
            mr.read(u64::from(LEN) as usize, &mut data)?;
            println!(
                "received {} bytes: {:?}",
                got.byte_len,
                String::from_utf8_lossy(&data)
            );
        }
        "server" => {
            listener = dev.listen(addr)?;
            println!("listening at {}", listener.local_addr());
            let request = listener.next_request(deadline)?;
            listener.accept(&request, &qp, &ConnParams::default())?;
            println!("accepted {}", request.peer);
            let got =
                wait_for(&cq, &[WcOpcode::Recv], deadline)?.expect("a receive was waited for");
            let mut data = vec![0; got.byte_len as usize];
            mr.read(u64::from(LEN) as usize, &mut data)?;
            println!(
                "received {} bytes: {:?}",
                got.byte_len,
                String::from_utf8_lossy(&data)
            );
            mr.write(0, b"anyverbs server\0")?;
            qp.post_send(&[SendWr::single(2, SendOp::Send, send).with_flags(SendFlags::SIGNALED)])
                .map_err(|e| e.error)?;
            wait_for(&cq, &[WcOpcode::Send], deadline)?;
        }
        other => {
            return Err(anyverbs::Error::invalid_argument(format!(
                "no role {other:?}: client or server"
            )));
        }
    }
    // Both rdma-core examples disconnect when they are done; so does this side.
    let report = qp.disconnect(Instant::now() + Duration::from_secs(5))?;
    println!("exchanged 16 bytes each way; disconnected ({report:?})");
    Ok(())
}
