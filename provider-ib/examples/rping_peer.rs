//! anyverbs speaking rping's protocol (rdma-core's `rping`, librdmacm's examples), against the
//! real `rping` on the other side:
//!
//! ```sh
//! rping_peer server ADDR PORT          # for `rping -c -a ADDR -p PORT -C N -S SIZE -V`
//! rping_peer client ADDR PORT N SIZE   # against `rping -s -a ADDR -p PORT -C N -S SIZE -V`
//! ```
//!
//! Each ping: the client advertises its source buffer (address, rkey, length: 16 bytes,
//! big-endian, `struct rping_rdma_info`); the server RDMA READs it, answers "go ahead"; the
//! client advertises its sink buffer; the server RDMA WRITEs what it read there and answers
//! again; the client checks that the sink holds the source. Both sides post every receive
//! before the message it is for can arrive, as rping does.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, Device, Error, ErrorKind, Listener,
    MemoryRegion, Provider, QpInit, QueuePair, RecvWr, RemoteAddr, SendFlags, SendOp, SendWr, Sge,
    WcOpcode,
};

/// `sizeof(struct rping_rdma_info)`.
const INFO: u32 = 16;

type P = anyverbs_provider_ib::IbProvider;
type Cq = <P as Provider>::Cq;
type Qp = <P as Provider>::Qp;
type Mr = <P as Provider>::Mr;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(role), Some(ip), Some(port)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<IpAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<u16>().ok()),
    ) else {
        eprintln!("usage: rping_peer server ADDR PORT | rping_peer client ADDR PORT COUNT SIZE");
        return ExitCode::from(2);
    };
    let count = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let size = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(64);
    match run(role, SocketAddr::new(ip, port), count, size) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rping_peer {role}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The next completion of `cq`, which must have succeeded.
fn next(cq: &Cq, deadline: Instant) -> anyverbs::Result<Completion> {
    let mut wc = [Completion::default(); 1];
    loop {
        if cq.poll(&mut wc)? == 1 {
            if !wc[0].status.is_success() {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!("a WR failed: {:?}", wc[0]),
                ));
            }
            return Ok(wc[0]);
        }
        if Instant::now() >= deadline {
            return Err(Error::timed_out("no completion in time"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until a completion of each of `opcodes` arrived, in any order.
fn expect(cq: &Cq, opcodes: &[WcOpcode], deadline: Instant) -> anyverbs::Result<()> {
    let mut missing = opcodes.to_vec();
    while !missing.is_empty() {
        let c = next(cq, deadline)?;
        let at = missing
            .iter()
            .position(|o| *o == c.opcode)
            .ok_or_else(|| Error::new(ErrorKind::Other, format!("unexpected completion {c:?}")))?;
        missing.remove(at);
    }
    Ok(())
}

fn sge(mr: &Mr, offset: u64, length: u32) -> Sge {
    Sge {
        addr: mr.addr() + offset,
        length,
        lkey: mr.lkey(),
    }
}

fn send(qp: &Qp, sge: Sge) -> anyverbs::Result<()> {
    qp.post_send(&[SendWr::single(0, SendOp::Send, sge).with_flags(SendFlags::SIGNALED)])
        .map_err(|e| e.error)
}

fn recv(qp: &Qp, sge: Sge) -> anyverbs::Result<()> {
    qp.post_recv(&[RecvWr::single(0, sge)]).map_err(|e| e.error)
}

/// `struct rping_rdma_info` for `len` bytes of `mr` at `offset`.
fn info(mr: &Mr, offset: u64, len: u32) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&(mr.addr() + offset).to_be_bytes());
    b[8..12].copy_from_slice(&mr.rkey().to_be_bytes());
    b[12..].copy_from_slice(&len.to_be_bytes());
    b
}

fn run(role: &str, addr: SocketAddr, count: u32, size: u32) -> anyverbs::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let provider = anyverbs_provider_ib::provider();
    let dev = provider.open("rxe0")?;
    let pd = dev.alloc_pd()?;
    let cq = dev.create_cq(16)?;
    let init = QpInit {
        max_send_wr: 4,
        max_recv_wr: 4,
        ..QpInit::default()
    };
    let qp = pd.create_qp(&cq, &cq, &init)?;
    anyverbs::cm::ready_for_receives(&qp, dev.info().state_model)?;
    // Messages: [0, 16) to send, [16, 32) to receive.
    let msgs = pd.register(2 * INFO as usize, Access::LOCAL_WRITE)?;
    let (out, inbox) = (sge(&msgs, 0, INFO), sge(&msgs, u64::from(INFO), INFO));
    match role {
        "server" => {
            let data = pd.register(64 * 1024, Access::LOCAL_WRITE)?;
            let listener = dev.listen(addr)?;
            recv(&qp, inbox)?;
            let request = listener.next_request(deadline)?;
            listener.accept(&request, &qp, &ConnParams::default())?;
            let events = dev.events()?;
            let mut pings = 0;
            'pings: loop {
                // The source advertised, or the client gone (rping disconnects when done).
                let mut wc = [Completion::default(); 1];
                loop {
                    if cq.poll(&mut wc)? == 1 {
                        if wc[0].status.is_success() && wc[0].opcode == WcOpcode::Recv {
                            break;
                        }
                        return Err(Error::new(
                            ErrorKind::Other,
                            format!("unexpected {:?}", wc[0]),
                        ));
                    }
                    while let Some(e) = events.try_recv()? {
                        if e == (anyverbs::DeviceEvent::Disconnected {
                            qp_num: qp.qp_num(),
                        }) {
                            break 'pings;
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::timed_out("the client neither pinged nor left"));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                let mut m = [0u8; 16];
                msgs.read(INFO as usize, &mut m)?;
                let remote = RemoteAddr {
                    addr: u64::from_be_bytes(m[..8].try_into().unwrap()),
                    rkey: u32::from_be_bytes(m[8..12].try_into().unwrap()),
                };
                let len = u32::from_be_bytes(m[12..].try_into().unwrap()).min(64 * 1024);
                qp.post_send(
                    &[SendWr::single(0, SendOp::Read(remote), sge(&data, 0, len))
                        .with_flags(SendFlags::SIGNALED)],
                )
                .map_err(|e| e.error)?;
                expect(&cq, &[WcOpcode::RdmaRead], deadline)?;
                // "Go ahead", with the sink's advertisement to come.
                recv(&qp, inbox)?;
                msgs.write(0, &info(&data, 0, len))?;
                send(&qp, out)?;
                expect(&cq, &[WcOpcode::Send, WcOpcode::Recv], deadline)?;
                msgs.read(INFO as usize, &mut m)?;
                let sink = RemoteAddr {
                    addr: u64::from_be_bytes(m[..8].try_into().unwrap()),
                    rkey: u32::from_be_bytes(m[8..12].try_into().unwrap()),
                };
                qp.post_send(&[SendWr::single(0, SendOp::Write(sink), sge(&data, 0, len))
                    .with_flags(SendFlags::SIGNALED)])
                    .map_err(|e| e.error)?;
                expect(&cq, &[WcOpcode::RdmaWrite], deadline)?;
                recv(&qp, inbox)?;
                send(&qp, out)?;
                expect(&cq, &[WcOpcode::Send], deadline)?;
                pings += 1;
                println!("ping {pings}: read {len} bytes and wrote them back");
            }
            println!("served {pings} pings");
            Ok(())
        }
        "client" => {
            let access = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE;
            let source = pd.register(size as usize, access)?;
            let sink = pd.register(size as usize, access)?;
            recv(&qp, inbox)?;
            qp.connect(addr, &ConnParams::default())?;
            qp.wait_connected(deadline)?;
            for ping in 0..count {
                // A C string, as rping's are: its server writes back strlen + 1 bytes.
                let mut text: Vec<u8> = format!("anyverbs-ping-{ping}: ")
                    .into_bytes()
                    .into_iter()
                    .chain((0..).map(|i| b'A' + (i % 26) as u8))
                    .take(size as usize)
                    .collect();
                if let Some(last) = text.last_mut() {
                    *last = 0;
                }
                source.write(0, &text)?;
                sink.write(0, &vec![0; size as usize])?;
                msgs.write(0, &info(&source, 0, size))?;
                send(&qp, out)?;
                // "Go ahead": the server read the source.
                expect(&cq, &[WcOpcode::Send, WcOpcode::Recv], deadline)?;
                recv(&qp, inbox)?;
                msgs.write(0, &info(&sink, 0, size))?;
                send(&qp, out)?;
                // "Go ahead": the server wrote the sink.
                expect(&cq, &[WcOpcode::Send, WcOpcode::Recv], deadline)?;
                recv(&qp, inbox)?;
                let mut back = vec![0; size as usize];
                sink.read(0, &mut back)?;
                if back != text {
                    return Err(Error::new(
                        ErrorKind::Other,
                        format!("ping {ping}: the sink does not hold what the source did"),
                    ));
                }
                println!(
                    "ping {ping}: {}",
                    String::from_utf8_lossy(&back[..back.len().saturating_sub(1)])
                );
            }
            qp.disconnect(Instant::now() + Duration::from_secs(5))?;
            println!("{count} pings, every one read, written back and checked");
            Ok(())
        }
        other => Err(Error::invalid_argument(format!("no role {other:?}"))),
    }
}
