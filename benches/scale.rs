//! Scale and timing figures of the operator on the local cluster (`make bench`). Prints
//! numbers; asserts nothing about speed, so a busy machine gives slower figures, not failures.
//!
//! 1. `BENCH_IDLE` (default 200) suspended LoopServices: how long until the operator has
//!    written every status, and its memory then.
//! 2. `BENCH_ACTIVE` (default 4) LoopServices looping every `BENCH_INTERVAL` seconds
//!    (default 5) for `BENCH_SECONDS` (default 40): how late each Job was created after its
//!    loop was due, the start-to-start spacing error, and the operator's CPU time and memory.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, ListParams, PostParams};
use loopservice_operator::crd::{LoopService, Phase};
use serde_json::json;
use support::*;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (resident memory in MiB, CPU seconds used) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (rss_kb / 1024.0, ticks / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ls(name: &str, interval: &str, suspend: bool) -> LoopService {
    serde_json::from_value(json!({
        "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
        "metadata": {"name": name},
        "spec": {"interval": interval, "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                 "command": ["true"], "suspend": suspend, "successfulJobsHistoryLimit": 100}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() {
    let idle = env_num("BENCH_IDLE", 200);
    let active = env_num("BENCH_ACTIVE", 4);
    let seconds = env_num("BENCH_SECONDS", 40) as u64;
    let interval = env_num("BENCH_INTERVAL", 5);

    let ns = TestNs::new("bench").await;
    ensure_crd(&ns.client).await;
    let op = Operator::start(&ns.name, &[("LOG_LEVEL", "warn")]);
    op.http_addr().await;
    let (rss0, _) = usage(op.pid());

    // 1. Many idle LoopServices.
    let api = ns.loopservices();
    let start = Instant::now();
    for i in 0..idle {
        api.create(&PostParams::default(), &ls(&format!("idle-{i}"), "1h", true)).await.unwrap();
    }
    let created = start.elapsed();
    wait_for("every idle status", Duration::from_secs(600), || async {
        let list = api.list(&ListParams::default()).await.ok()?;
        let done = list.items.iter().filter(|l| l.status.as_ref().and_then(|s| s.phase) == Some(Phase::Suspended)).count();
        (done == idle).then_some(())
    })
    .await;
    let all_status = start.elapsed();
    let (rss1, cpu1) = usage(op.pid());
    for i in 0..idle {
        let _ = api.delete(&format!("idle-{i}"), &DeleteParams::default()).await;
    }

    // 2. A few busy LoopServices.
    for i in 0..active {
        api.create(&PostParams::default(), &ls(&format!("busy-{i}"), &format!("{interval}s"), false)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (rss2, cpu2) = usage(op.pid());
    // A loop is due one interval after the previous start, or when an overrunning previous
    // loop ended. Only the first kind measures the operator's own timing: the end of a Job is
    // stamped by Kubernetes to the whole second and seen through the Job controller, so the
    // second kind mostly measures that.
    let interval_ms = interval as f64 * 1000.0;
    let mut late_ms = vec![];
    let mut late_after_overrun_ms = vec![];
    let mut spacing_ms = vec![];
    let mut loops = 0;
    for i in 0..active {
        let jobs = loop_jobs(&ns, &format!("busy-{i}")).await;
        loops += jobs.len();
        for w in jobs.windows(2) {
            let prev_start = start_time(&w[0]);
            let due = ann_time(&w[1], "loops.dev/scheduled-time");
            let start = start_time(&w[1]);
            let late = due.duration_until(start).as_secs_f64() * 1000.0;
            let due_after = prev_start.duration_until(due).as_secs_f64() * 1000.0;
            // Kubernetes stamps a Job's end to the whole second: only a previous loop stamped
            // as ended a second or more before the due time surely ended before it.
            let ended_before = finished(&w[0]).is_some_and(|(_, end)| end.duration_until(due).as_secs_f64() >= 1.0);
            if (due_after - interval_ms).abs() < 1.0 && ended_before {
                late_ms.push(late);
                spacing_ms.push((prev_start.duration_until(start).as_secs_f64() * 1000.0 - interval_ms).abs());
            } else {
                late_after_overrun_ms.push(late);
            }
        }
    }
    late_after_overrun_ms.sort_by(f64::total_cmp);
    late_ms.sort_by(f64::total_cmp);
    spacing_ms.sort_by(f64::total_cmp);

    println!("\nloopservice-operator scale figures (local cluster, 2 cores)");
    println!("  idle LoopServices created            {idle} in {:.2}s", created.as_secs_f64());
    println!("  ... all statuses written after        {:.2}s ({:.0}/s)", all_status.as_secs_f64(), idle as f64 / all_status.as_secs_f64());
    println!("  operator memory: start {rss0:.1} MiB, after {idle} LoopServices {rss1:.1} MiB");
    println!("  operator CPU for the idle phase       {cpu1:.2}s");
    println!("  busy LoopServices ({interval}s, `true`)        {active} for {seconds}s: {loops} loops");
    println!("  loops due one interval after a previous start, that loop surely over: {}", late_ms.len());
    println!(
        "    Job created after due (ms)          p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&late_ms, 0.5), percentile(&late_ms, 0.9), percentile(&late_ms, 0.99), percentile(&late_ms, 1.0)
    );
    println!(
        "    start spacing error (ms)            p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&spacing_ms, 0.5), percentile(&spacing_ms, 0.9), percentile(&spacing_ms, 0.99), percentile(&spacing_ms, 1.0)
    );
    println!("  loops due when the previous loop ended (or may have): {}", late_after_overrun_ms.len());
    println!(
        "    Job created after the stamped end (ms) p50 {:.1}  p90 {:.1}  max {:.1}",
        percentile(&late_after_overrun_ms, 0.5), percentile(&late_after_overrun_ms, 0.9), percentile(&late_after_overrun_ms, 1.0)
    );
    println!("  operator memory after busy phase      {rss2:.1} MiB; CPU for the busy phase {:.2}s", cpu2 - cpu1);
}
