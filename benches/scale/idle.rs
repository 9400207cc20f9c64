//! Phase 4: many suspended LoopServices. The operator's memory as they are created, then
//! after a restart with them present: time to ready, memory once settled and at its peak;
//! at the end its idle CPU and its /metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use loopservice_operator::crd::Phase;

use crate::peers::create_many;
use crate::proc;
use crate::support::{ensure_crd, TestNs};

pub struct IdleRow {
    pub n: usize,
    pub create_s: f64,
    /// From the first create of this step to every status `Suspended`.
    pub statuses_s: f64,
    pub rss: f64,
    pub hwm: f64,
    pub ready_s: f64,
    pub settle_s: f64,
    pub settled: bool,
    pub rss_restart: f64,
    pub hwm_restart: f64,
}

pub struct IdleResult {
    pub rows: Vec<IdleRow>,
    pub cpu_pct: f64,
    pub cpu_window_s: f64,
    pub metrics_bytes: usize,
    pub series: usize,
    pub ns: TestNs,
}

/// The sizes measured on the way to `total`: a tenth, a half, all.
pub fn steps(total: usize) -> Vec<usize> {
    let mut s = vec![total / 10, total / 2, total];
    s.retain(|n| *n > 0);
    s.dedup();
    s
}

pub async fn run(total: usize) -> IdleResult {
    let ns = TestNs::new("bench-idle").await;
    ensure_crd(&ns.client).await;
    // The bench's own LoopService watch: which have status.phase Suspended.
    let suspended: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let (map, api) = (suspended.clone(), ns.loopservices());
    let watch = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Some(ls) = stream.next().await {
            let Ok(ls) = ls else { continue };
            let done = ls.status.as_ref().and_then(|s| s.phase) == Some(Phase::Suspended);
            map.lock().unwrap().insert(ls.name_any(), done);
        }
    });
    let count = || suspended.lock().unwrap().values().filter(|d| **d).count();

    let (mut op, mut addr) = proc::start(&ns.name).await;
    proc::wait_ready(&mut op, &addr, Duration::from_secs(60)).await;
    let mut rows = vec![];
    let mut made = 0;
    for n in steps(total) {
        let t = Instant::now();
        create_many(&ns, "idle-", made..n, "1h", true).await;
        made = n;
        let create_s = t.elapsed().as_secs_f64();
        while count() < n {
            assert!(t.elapsed() < Duration::from_secs(900), "only {} of {n} statuses Suspended after 900 s", count());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statuses_s = t.elapsed().as_secs_f64();
        proc::settle(op.pid(), Duration::from_secs(60)).await;
        let (rss, hwm) = proc::memory(op.pid());

        drop(op);
        let spawned = jiff::Timestamp::now();
        (op, addr) = proc::start(&ns.name).await;
        let ready = proc::wait_ready(&mut op, &addr, Duration::from_secs(300)).await;
        let (settle, settled) = proc::settle(op.pid(), Duration::from_secs(90)).await;
        let (rss_restart, hwm_restart) = proc::memory(op.pid());
        let row = IdleRow {
            n,
            create_s,
            statuses_s,
            rss,
            hwm,
            ready_s: ready.duration_since(spawned).as_secs_f64(),
            settle_s: settle.as_secs_f64(),
            settled,
            rss_restart,
            hwm_restart,
        };
        println!(
            "  {n:>6} suspended: created in {:.1} s, all Suspended after {:.1} s; RSS {:.1} MiB (peak {:.1}); restart: ready {:.2} s, settled after {:.0} s{}, RSS {:.1} MiB (peak {:.1})",
            row.create_s, row.statuses_s, row.rss, row.hwm, row.ready_s, row.settle_s, if settled { "" } else { " (not settled)" }, row.rss_restart, row.hwm_restart
        );
        rows.push(row);
    }
    let window = Duration::from_secs(30);
    let c0 = proc::cpu_secs(op.pid());
    let t = Instant::now();
    tokio::time::sleep(window).await;
    let cpu_window_s = t.elapsed().as_secs_f64();
    let cpu_pct = (proc::cpu_secs(op.pid()) - c0) / cpu_window_s * 100.0;
    let (code, body) = proc::http_get(&op.metrics_addr().await, "/metrics").expect("GET the operator's /metrics");
    assert_eq!(code, 200, "the operator's /metrics answered {code}");
    let series = body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    drop(op);
    watch.abort();
    IdleResult { rows, cpu_pct, cpu_window_s, metrics_bytes: body.len(), series, ns }
}
