//! How fast the local cluster completes Jobs on its fake (kwok) nodes (`make bench-fake-nodes`):
//! `BENCH_FAKE_JOBS` (default 300) Jobs are created at once, each placed on the fake nodes,
//! and a Job watch records when each one is seen Complete. Prints completions per second and
//! creation-to-Complete percentiles. Needs `hack/cluster.sh fake-nodes N` first.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use support::*;

fn job(name: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"loops.dev/fake-node": "true"},
            "tolerations": [{"key": "loops.dev/fake-node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}]
        }}}
    }))
    .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_FAKE_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let ns = TestNs::new("bench-fake").await;
    let jobs = ns.jobs();
    let watch = {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let mut done: HashMap<String, Instant> = HashMap::new();
            let mut stream = watcher(jobs, watcher::Config::default()).applied_objects().boxed();
            while let Ok(Some(j)) = stream.try_next().await {
                if finished(&j).is_some_and(|(ok, _)| ok) {
                    done.entry(j.name_any()).or_insert_with(Instant::now);
                    if done.len() == n {
                        break;
                    }
                }
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let mut created = HashMap::new();
    let creates = futures::stream::iter(0..n)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                let name = format!("fake-{i}");
                jobs.create(&PostParams::default(), &job(&name)).await.expect("create Job");
                (name, Instant::now())
            }
        })
        .buffer_unordered(16);
    futures::pin_mut!(creates);
    while let Some((name, at)) = creates.next().await {
        created.insert(name, at);
    }
    let create_secs = start.elapsed().as_secs_f64();
    let done = tokio::time::timeout(Duration::from_secs(600), watch).await.expect("all Jobs Complete within 10 min").unwrap();
    let total = done.values().max().unwrap().duration_since(start).as_secs_f64();
    let mut lat: Vec<f64> = done.iter().map(|(name, at)| at.duration_since(created[name]).as_secs_f64()).collect();
    lat.sort_by(f64::total_cmp);
    println!("fake-node Jobs: {n} created in {create_secs:.1} s; all Complete after {total:.1} s: {:.1} Jobs/s", n as f64 / total);
    println!(
        "creation to Complete (Job watch, n={n}): p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}
