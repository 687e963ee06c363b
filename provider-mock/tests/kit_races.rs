//! The provider kit under concurrency, on every personality: drains of QPs that share a CQ
//! while a ULP thread waits on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyverbs::{
    Access, Completion, CompletionQueue, Device, ErrorKind, MemoryRegion, Provider, QpInit,
    QpState, QueuePair, RecvWr,
};
use anyverbs_provider_mock::{FabricConfig, MockProvider};

const QPS: u64 = 4;
const RECVS: u64 = 10;

/// Four QPs share a CQ, each with receives outstanding; four threads drain them at once while
/// a ULP thread waits on the CQ, a few completions at a time. The ULP gets every receive
/// exactly once, and as soon as the drains put them aside — never by sleeping until its own
/// deadline while completions wait in the kit (a drain consumed the wake meant for it).
#[test]
fn drains_sharing_a_cq_with_a_waiting_ulp_lose_no_wake() {
    for config in FabricConfig::default().devices {
        let dev = config.name;
        for round in 0..3 {
            let p = MockProvider::new();
            let d = p.open(&dev).unwrap();
            let pd = d.alloc_pd().unwrap();
            let cq = d.create_cq(256).unwrap();
            let mr = pd.register(64, Access::LOCAL_WRITE).unwrap();
            let qps: Vec<_> = (0..QPS)
                .map(|_| pd.create_qp(&cq, &cq, &QpInit::default()).unwrap())
                .collect();
            for (i, q) in (0..).zip(&qps) {
                // InfiniBand QPs leave RESET to take receives; iWARP ones start in INIT.
                let _ = q.modify(QpState::Init);
                let wrs: Vec<RecvWr> = (0..RECVS)
                    .map(|j| RecvWr::single(i * 100 + j, mr.sge(0, 8)))
                    .collect();
                q.post_recv(&wrs).unwrap();
            }
            let expect = (QPS * RECVS) as usize;
            let start = Instant::now();
            let (seen, drained_at, waited) = std::thread::scope(|s| {
                let waiter = s.spawn(|| {
                    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
                    let mut buf = [Completion::default(); 3];
                    let mut total = 0;
                    while total < expect {
                        match cq.wait(&mut buf, Instant::now() + Duration::from_secs(3)) {
                            Ok(n) => {
                                for c in &buf[..n] {
                                    *seen.entry(c.wr_id).or_default() += 1;
                                }
                                total += n;
                            }
                            Err(e) if e.kind() == ErrorKind::TimedOut => break,
                            Err(e) => panic!("{dev}: {e}"),
                        }
                    }
                    (seen, start.elapsed())
                });
                let drains: Vec<_> = qps
                    .iter()
                    .map(|q| s.spawn(move || q.drain(Instant::now() + Duration::from_millis(400))))
                    .collect();
                for d in drains {
                    let report = d.join().unwrap();
                    assert!(report.is_ok(), "{dev}: {report:?}");
                }
                let drained_at = start.elapsed();
                let (seen, waited) = waiter.join().unwrap();
                (seen, drained_at, waited)
            });
            let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
            assert!(twice.is_empty(), "{dev}, round {round}: {twice:?}");
            assert_eq!(seen.len(), expect, "{dev}, round {round}");
            assert!(
                waited < drained_at + Duration::from_millis(200),
                "{dev}, round {round}: the drains ended after {drained_at:?}, the ULP got the \
                 last completion after {waited:?}"
            );
        }
    }
}
