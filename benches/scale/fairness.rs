//! Phase 5: fairness between namespaces. `BENCH_FAIR_N` (100) healthy LoopServices every 10 s
//! in one namespace; their Jobs' lateness (the bench's Job watch against each Job's due time)
//! alone; while `BENCH_FAIR_BROKEN` (5000) LoopServices the API server refuses are created in
//! another namespace (the bench's own creates load the API server too); beside them, once
//! created; and after a restart of the operator with both there (loops due once it is ready).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use loopservice_operator::crd::Phase;
use loopservice_operator::keys::{ANN_SCHEDULED, LABEL_LOOP};
use serde_json::json;

use crate::peers::{create_many, fake_node_pod_spec};
use crate::proc;
use crate::support::{create_ls, ensure_crd, Operator, TestNs};
use crate::watch::JobWatch;

/// How long each window lasts.
const WINDOW: Duration = Duration::from_secs(60);

pub struct FairResult {
    pub healthy: usize,
    pub broken: usize,
    pub create_broken_s: f64,
    /// Lateness (seconds) of the healthy loops' Jobs after the first, in each window.
    pub alone: Vec<f64>,
    pub during: Vec<f64>,
    pub beside: Vec<f64>,
    pub restarted: Vec<f64>,
    /// Broken LoopServices whose status said Invalid at the end.
    pub broken_reported: usize,
    pub namespaces: (TestNs, TestNs),
}

/// A LoopService whose Job the API server refuses: a volume mount of no volume.
fn broken(name: &str) -> serde_json::Value {
    let mut spec = fake_node_pod_spec();
    spec["containers"] = json!([{"name": "side", "image": "busybox:1.36", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]);
    json!({
        "metadata": {"name": name},
        "spec": {"interval": "10s", "image": "busybox:1.36", "command": ["true"], "template": {"spec": spec}}
    })
}

/// Starts the operator for both namespaces.
async fn start(healthy: &TestNs, broken: &TestNs) -> (Operator, String) {
    let (mut op, addr) = proc::start_for(&[&healthy.name, &broken.name]).await;
    proc::wait_ready(&mut op, &addr, Duration::from_secs(120)).await;
    (op, addr)
}

/// Lateness of the loops after the first that were due and seen in `[from, to)`.
fn lateness(watch: &JobWatch, from: jiff::Timestamp, to: jiff::Timestamp) -> Vec<f64> {
    watch
        .snapshot()
        .iter()
        .filter(|(_, s)| !s.relisted && s.at < to)
        .filter(|(_, s)| s.labels.get(LABEL_LOOP).and_then(|l| l.parse::<i64>().ok()).unwrap_or(0) >= 2)
        .filter_map(|(_, s)| Some((s.at, s.ann_time(ANN_SCHEDULED)?)))
        .filter(|(_, due)| *due >= from)
        .map(|(at, due)| at.duration_since(due).as_secs_f64())
        .collect()
}

async fn window(op: &mut Operator, watch: &JobWatch, what: &str) -> Vec<f64> {
    let from = jiff::Timestamp::now();
    let seen = watch.count();
    tokio::time::sleep(WINDOW).await;
    assert!(watch.count() > seen, "no healthy Job in {WINDOW:?} {what}; operator log:\n{}", proc::tail(&op.log_text()));
    lateness(watch, from, jiff::Timestamp::now())
}

pub async fn run(n: usize, m: usize) -> FairResult {
    let healthy = TestNs::new("bench-fair").await;
    let broken_ns = TestNs::new("bench-broken").await;
    ensure_crd(&healthy.client).await;
    let watch = JobWatch::start(&healthy.name);
    create_many(&healthy, "loop-", 0..n, "10s", false).await;
    let (mut op, _) = start(&healthy, &broken_ns).await;
    // The first loops all start at once; the windows measure the loops after them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alone = window(&mut op, &watch, "alone").await;

    let from = jiff::Timestamp::now();
    let t = Instant::now();
    let creates = futures::stream::iter(0..m)
        .map(|i| {
            let ns = &broken_ns;
            async move {
                let name = format!("broken-{i}");
                create_ls(ns, broken(&name)).await.unwrap_or_else(|e| panic!("create LoopService {name}: {e}"));
            }
        })
        .buffer_unordered(32);
    creates.collect::<Vec<()>>().await;
    let create_broken_s = t.elapsed().as_secs_f64();
    let during = lateness(&watch, from, jiff::Timestamp::now());
    let beside = window(&mut op, &watch, "beside the broken LoopServices").await;

    drop(op);
    let (mut op, _) = start(&healthy, &broken_ns).await;
    let restarted = window(&mut op, &watch, "after a restart").await;
    drop(op);
    let listed = broken_ns.loopservices().list(&ListParams::default()).await.expect("list broken LoopServices").items;
    let broken_reported = listed.iter().filter(|l| l.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid)).count();
    FairResult {
        healthy: n,
        broken: m,
        create_broken_s,
        alone,
        during,
        beside,
        restarted,
        broken_reported,
        namespaces: (healthy, broken_ns),
    }
}
