//! Ping-pong latency and send bandwidth through anyverbs on a real device, shaped like
//! rdma-core's `ibv_rc_pingpong` and perftest's `ib_send_bw` so that they can run side by side in
//! one test bed run and be reported as ratios (`scripts/bench-testbed`):
//!
//! ```sh
//! perf pingpong SIZE ITERS [DEVICE]   # one line: usec/iter, as ibv_rc_pingpong prints it
//! perf sendbw SIZE ITERS [DEVICE]     # one line: MB/sec, as ib_send_bw's average
//! ```
//!
//! Both run a connected pair on `DEVICE` (default rxe0) in one process, each side on its own
//! thread busy-polling its CQ, as the two processes of the rdma-core tools do. `pingpong`: a
//! SEND of SIZE bytes from A, echoed back by B, ITERS times. `sendbw`: ITERS SENDs of SIZE bytes
//! from A to B with up to 128 outstanding (ib_send_bw's default depth), B reposting receives.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, ConnParams, MemoryRegion, Provider, QpInit, QueuePair,
    RecvWr, SendFlags, SendOp, SendWr, Sge,
};
use anyverbs_conformance::ctx::loopback;
use anyverbs_provider_ib::IbProvider;

type Qp = <IbProvider as Provider>::Qp;
type Cq = <IbProvider as Provider>::Cq;

/// Outstanding sends in `sendbw` (ib_send_bw's default tx depth).
const DEPTH: u32 = 128;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(test), Some(size), Some(iters)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<u32>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: perf pingpong|sendbw SIZE ITERS [DEVICE]");
        return ExitCode::from(2);
    };
    let device = args.get(3).cloned().unwrap_or_else(|| "rxe0".into());
    match run(test, size, iters, &device) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perf {test}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Polls `cq` until one completion arrived; checks it succeeded.
fn one(cq: &Cq) -> anyverbs::Result<Completion> {
    let mut wc = [Completion::default(); 1];
    loop {
        if cq.poll(&mut wc)? == 1 {
            if !wc[0].status.is_success() {
                return Err(anyverbs::Error::new(
                    anyverbs::ErrorKind::Other,
                    format!("a WR failed: {:?}", wc[0]),
                ));
            }
            return Ok(wc[0]);
        }
    }
}

fn run(test: &str, size: u32, iters: u64, device: &str) -> anyverbs::Result<String> {
    let provider = anyverbs_provider_ib::provider();
    let dev = provider.open(device)?;
    // Receives: twice the sends in flight, so the receiving thread's reposts never fall behind
    // into RNR retries.
    let init = QpInit {
        max_send_wr: DEPTH,
        max_recv_wr: 2 * DEPTH,
        ..QpInit::default()
    };
    let pair = loopback::<IbProvider>(
        &dev,
        &init,
        &ConnParams::default(),
        4 * DEPTH,
        Instant::now() + Duration::from_secs(30),
    )?;
    let len = size.max(1) as usize;
    let mr_a = pair.pd.register(2 * len, Access::LOCAL_WRITE)?;
    let mr_b = pair.pd.register(2 * len, Access::LOCAL_WRITE)?;
    let sge = |mr: &<IbProvider as Provider>::Mr, half: u64| Sge {
        addr: mr.addr() + half * len as u64,
        length: size,
        lkey: mr.lkey(),
    };
    let (send_a, recv_a, send_b, recv_b) =
        (sge(&mr_a, 0), sge(&mr_a, 1), sge(&mr_b, 0), sge(&mr_b, 1));
    let Pair { a, b, cq_a, cq_b } = Pair {
        a: Arc::new(pair.a),
        b: Arc::new(pair.b),
        cq_a: Arc::new(pair.cq_a),
        cq_b: Arc::new(pair.cq_b),
    };
    let send = |qp: &Qp, sge: Sge| {
        qp.post_send(&[SendWr::single(0, SendOp::Send, sge).with_flags(SendFlags::SIGNALED)])
            .map_err(|e| e.error)
    };
    let recv = |qp: &Qp, sge: Sge| qp.post_recv(&[RecvWr::single(0, sge)]).map_err(|e| e.error);
    match test {
        "pingpong" => {
            recv(&a, recv_a)?;
            recv(&b, recv_b)?;
            let (b2, cq_b2) = (b.clone(), cq_b.clone());
            // B: every message back, with its receive posted again first.
            let echo = std::thread::spawn(move || -> anyverbs::Result<()> {
                for _ in 0..iters {
                    loop {
                        let c = one(&cq_b2)?;
                        if c.opcode == anyverbs::WcOpcode::Recv {
                            break;
                        }
                    }
                    recv(&b2, recv_b)?;
                    send(&b2, send_b)?;
                }
                Ok(())
            });
            let started = Instant::now();
            for _ in 0..iters {
                send(&a, send_a)?;
                // The send's completion and the echo's, in either order.
                let mut got = 0;
                while got < 2 {
                    let c = one(&cq_a)?;
                    if c.opcode == anyverbs::WcOpcode::Recv {
                        recv(&a, recv_a)?;
                    }
                    got += 1;
                }
            }
            let took = started.elapsed();
            echo.join().expect("the echo thread")?;
            Ok(format!(
                "pingpong size={size} iters={iters} usec/iter={:.2}",
                took.as_secs_f64() * 1e6 / iters as f64
            ))
        }
        "sendbw" => {
            let (b2, cq_b2) = (b.clone(), cq_b.clone());
            for _ in 0..2 * DEPTH {
                recv(&b, recv_b)?;
            }
            let sink = std::thread::spawn(move || -> anyverbs::Result<()> {
                let mut wc = [Completion::default(); 16];
                let mut got = 0;
                while got < iters {
                    let n = cq_b2.poll(&mut wc)?;
                    for c in &wc[..n] {
                        if !c.status.is_success() {
                            return Err(anyverbs::Error::new(
                                anyverbs::ErrorKind::Other,
                                format!("a receive failed: {c:?}"),
                            ));
                        }
                        got += 1;
                        if got + u64::from(2 * DEPTH) <= iters {
                            recv(&b2, recv_b)?;
                        }
                    }
                }
                Ok(())
            });
            let started = Instant::now();
            let (mut posted, mut done) = (0u64, 0u64);
            let mut wc = [Completion::default(); 16];
            while done < iters {
                while posted < iters && posted - done < u64::from(DEPTH) {
                    send(&a, send_a)?;
                    posted += 1;
                }
                let n = cq_a.poll(&mut wc)?;
                if let Some(c) = wc[..n].iter().find(|c| !c.status.is_success()) {
                    return Err(anyverbs::Error::new(
                        anyverbs::ErrorKind::Other,
                        format!("a send failed: {c:?}"),
                    ));
                }
                done += n as u64;
            }
            sink.join().expect("the receiving thread")?;
            let took = started.elapsed();
            Ok(format!(
                "sendbw size={size} iters={iters} MB/sec={:.2}",
                size as f64 * iters as f64 / took.as_secs_f64() / 1e6
            ))
        }
        other => Err(anyverbs::Error::invalid_argument(format!(
            "no test {other:?}: pingpong or sendbw"
        ))),
    }
}

struct Pair {
    a: Arc<Qp>,
    b: Arc<Qp>,
    cq_a: Arc<Cq>,
    cq_b: Arc<Cq>,
}
