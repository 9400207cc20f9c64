//! Phase 3: LoopServices created while no operator runs, so that every first loop is
//! overdue when it starts; from its readiness to each Job's creation as the watch saw it.

use std::time::{Duration, Instant};

use crate::peers::create_many;
use crate::proc;
use crate::support::{ensure_crd, TestNs};
use crate::watch::JobWatch;

pub struct OverdueResult {
    pub m: usize,
    pub create_s: f64,
    /// From start of the process to /readyz 200.
    pub ready_s: f64,
    /// Seconds from ready to each Job seen (negative: seen before /readyz answered 200).
    pub lat: Vec<f64>,
    pub ns: TestNs,
}

pub async fn run(m: usize) -> OverdueResult {
    let ns = TestNs::new("bench-overdue").await;
    ensure_crd(&ns.client).await;
    let watch = JobWatch::start(&ns.name);
    let t = Instant::now();
    create_many(&ns, "overdue-", 0..m, "1h", false).await;
    let create_s = t.elapsed().as_secs_f64();
    let spawned = jiff::Timestamp::now();
    let (mut op, addr) = proc::start(&ns.name).await;
    let ready = proc::wait_ready(&mut op, &addr, Duration::from_secs(120)).await;
    let limit = Duration::from_secs(300);
    let t = Instant::now();
    while watch.count() < m && t.elapsed() < limit {
        if t.elapsed() > Duration::from_secs(30) && watch.count() == 0 {
            panic!("no Job 30 s after the operator was ready with {m} overdue LoopServices; log:\n{}", proc::tail(&op.log_text()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(op);
    let lat = watch.snapshot().iter().filter(|(_, s)| !s.relisted).map(|(_, s)| s.at.duration_since(ready).as_secs_f64()).collect();
    OverdueResult { m, create_s, ready_s: ready.duration_since(spawned).as_secs_f64(), lat, ns }
}
