//! Phase 0: what this machine's API server allows at all. A bare client, no operator, creates
//! N Jobs at one instant, each the Job the operator makes for a loop of the bench's
//! LoopServices, at the operator's default concurrency; the same Job watch sees them. No
//! controller of Jobs can create them faster than this on the same cluster, so it is the floor
//! under targets (1) and (2).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::Api;
use loopservice_operator::crd::LoopService;
use loopservice_operator::job::{build_job, JobParams, PreviousResult};
use loopservice_operator::reconcile::Settings;

use crate::peers::loopservice;
use crate::support::TestNs;
use crate::watch::JobWatch;

pub struct FloorResult {
    pub n: usize,
    /// Creates in flight at once.
    pub at_once: usize,
    /// Seconds from the first create to each Job seen by the watch.
    pub lat: Vec<f64>,
}

/// The Job of loop `loop_number` of bench LoopService `name`, due and started at `now`,
/// without its owner (there is none here).
pub fn loop_job(name: &str, loop_number: i64, now: jiff::Timestamp) -> Job {
    let mut ls: LoopService = serde_json::from_value(loopservice(name, "60s", false)).expect("a bench LoopService");
    ls.metadata.namespace = Some("bench".into());
    ls.metadata.uid = Some(format!("00000000-0000-4000-8000-{:012x}", name.len()));
    let spec = ls.spec.validate().expect("the bench's spec is valid");
    let params = JobParams {
        ls: &ls,
        spec: &spec,
        loop_number,
        scheduled: now,
        start: now,
        run_request: None,
        requester: None,
        jittered: None,
        previous: PreviousResult::None,
        last_success: None,
    };
    let mut job = build_job(&params).expect("the operator's Job");
    job.metadata.owner_references = None;
    job.metadata.namespace = None;
    job
}

/// How many creates the floor keeps in flight at once: `BENCH_FLOOR_AT_ONCE` (a comma list),
/// by default the operator's default API requests in flight (`--concurrency`).
pub fn at_once() -> Vec<usize> {
    let default = usize::from(Settings::default().concurrency);
    std::env::var("BENCH_FLOOR_AT_ONCE")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).filter(|x| *x > 0).collect::<Vec<usize>>())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![default])
}

/// Creates `n` Jobs at once, `at_once` at a time, with a new client (so with the connections
/// it must open), in a namespace of its own.
pub async fn run(n: usize, at_once: usize) -> (FloorResult, TestNs) {
    let ns = TestNs::new("bench-floor").await;
    let watch = JobWatch::start(&ns.name);
    let now = jiff::Timestamp::now();
    let jobs: Vec<Job> = (0..n).map(|i| loop_job(&format!("floor-{i}"), 1, now)).collect();
    let client = kube::Client::try_default().await.expect("a client");
    let api: Api<Job> = Api::namespaced(client, &ns.name);
    let began = jiff::Timestamp::now();
    let creates = futures::stream::iter(jobs)
        .map(|job| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &job).await.map(|_| ()) }
        })
        .buffer_unordered(at_once);
    let results: Vec<_> = creates.collect().await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "{failed} of {n} Job creates failed: {:?}", results.iter().find(|r| r.is_err()));
    let t = std::time::Instant::now();
    while watch.count() < n && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lat = watch.snapshot().iter().filter(|(_, s)| !s.relisted).map(|(_, s)| s.at.duration_since(began).as_secs_f64()).collect();
    (FloorResult { n, at_once, lat }, ns)
}
