//! Phase 1 and 2: the same N loops as LoopServices (interval 60 s) and as CronJobs
//! (`* * * * *`), Jobs placed on the fake nodes; each Job's creation as the bench's own Job
//! watch saw it, against its due time. The LoopService phase also counts the API server's
//! requests; the CronJob phase runs after it, in a namespace of its own.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::Api;
use loopservice_operator::keys::{ANN_SCHEDULED, ANN_STARTED, LABEL_LOOP, LABEL_NAME};
use serde_json::json;

use crate::apiserver::{self, Counts};
use crate::proc;
use crate::support::{create_ls, ensure_crd, TestNs};
use crate::watch::{JobWatch, LsWrites};

pub const CRON_SCHEDULED: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const INTERVAL_S: f64 = 60.0;

pub fn fake_node_pod_spec() -> serde_json::Value {
    json!({
        "nodeSelector": {"loops.dev/fake-node": "true"},
        "tolerations": [{"key": "loops.dev/fake-node", "operator": "Exists", "effect": "NoSchedule"}]
    })
}

/// A LoopService running `true` on the fake nodes.
pub fn loopservice(name: &str, interval: &str, suspend: bool) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {"interval": interval, "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                 "command": ["true"], "suspend": suspend, "template": {"spec": fake_node_pod_spec()}}
    })
}

/// Creates LoopServices `{prefix}{i}` for i in `range`, 16 at a time.
pub async fn create_many(ns: &TestNs, prefix: &str, range: std::ops::Range<usize>, interval: &str, suspend: bool) {
    let creates = futures::stream::iter(range)
        .map(|i| async move {
            let name = format!("{prefix}{i}");
            create_ls(ns, loopservice(&name, interval, suspend)).await.unwrap_or_else(|e| panic!("create LoopService {name}: {e}"));
        })
        .buffer_unordered(16);
    creates.collect::<Vec<()>>().await;
}

pub struct LsResult {
    pub skew: Vec<f64>,
    /// Loops >= 2 whose due time is the previous loop's start + 60 s, to the millisecond.
    pub anchored: usize,
    pub not_anchored: Vec<String>,
    pub spacing_err_ms: Vec<f64>,
    /// For each loop number from 2: how far apart the due times of that wave of loops were.
    pub due_spread_ms: Vec<(i64, f64)>,
    pub loops: usize,
    pub api: Counts,
    pub operator_events: f64,
    /// Writes to the LoopServices seen by the bench's watch of them: status, other.
    pub status_writes: usize,
    pub other_writes: usize,
    pub relisted: usize,
    /// The operator's own counters at the end: (name, value).
    pub operator_counters: Vec<(String, f64)>,
    pub bench_creates: usize,
    pub seconds: f64,
}

pub async fn loopservices(n: usize, minutes: usize) -> LsResult {
    let ns = TestNs::new("bench-ls").await;
    ensure_crd(&ns.client).await;
    let watch = JobWatch::start(&ns.name);
    let writes = LsWrites::start(ns.loopservices()).await;
    let before = apiserver::scrape(&ns.client).await;
    let start = Instant::now();
    // Created before the operator starts, so that it starts every first loop in one burst and
    // each later wave of loops is due within that burst's spread (printed), not over however
    // long the creates took.
    create_many(&ns, "loop-", 0..n, "60s", false).await;
    let created = start.elapsed().as_secs_f64();
    let (mut op, addr) = proc::start(&ns.name).await;
    proc::wait_ready(&mut op, &addr, Duration::from_secs(60)).await;
    println!("  created {n} LoopServices in {created:.1} s, then started the operator; running {minutes} min");
    let run_for = Duration::from_secs(minutes as u64 * 60 + 15);
    while start.elapsed() < run_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if start.elapsed() > Duration::from_secs(30) && watch.count() == 0 {
            panic!("no Job at all 30 s after creating {n} LoopServices; operator log:\n{}", proc::tail(&op.log_text()));
        }
    }
    let after = apiserver::scrape(&ns.client).await;
    let seconds = start.elapsed().as_secs_f64();
    let (status_writes, other_writes, relisted) = writes.counts();
    let operator_counters = proc::http_get(&op.metrics_addr().await, "/metrics").map(|(_, body)| counters(&body)).unwrap_or_default();
    drop(op);
    let jobs = watch.snapshot();
    drop(watch);

    // Events the operator published in this namespace (a repeated Event counts its series).
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let operator_events = events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("loopservice-operator"))
        .map(|e| e.series.as_ref().map_or(1.0, |s| s.count as f64))
        .sum();

    let mut by_ls: std::collections::BTreeMap<String, Vec<(i64, crate::watch::Seen)>> = Default::default();
    for (_, s) in jobs.iter().filter(|(_, s)| !s.relisted) {
        let l = s.labels.get(LABEL_LOOP).and_then(|v| v.parse().ok()).unwrap_or(-1);
        by_ls.entry(s.labels.get(LABEL_NAME).cloned().unwrap_or_default()).or_default().push((l, s.clone()));
    }
    let mut r = LsResult {
        skew: vec![],
        anchored: 0,
        not_anchored: vec![],
        spacing_err_ms: vec![],
        due_spread_ms: vec![],
        loops: jobs.len(),
        api: without_startup(apiserver::diff(&before, &after), n),
        operator_events,
        status_writes,
        other_writes,
        relisted,
        operator_counters,
        bench_creates: n,
        seconds,
    };
    let mut waves: std::collections::BTreeMap<i64, Vec<jiff::Timestamp>> = Default::default();
    for (name, mut loops) in by_ls {
        loops.sort_by_key(|(l, _)| *l);
        for w in loops.windows(2) {
            let ((pl, prev), (l, cur)) = (&w[0], &w[1]);
            let due = cur.ann_time(ANN_SCHEDULED).unwrap_or_else(|| panic!("Job of {name} loop {l} has no {ANN_SCHEDULED}"));
            waves.entry(*l).or_default().push(due);
            r.skew.push(cur.at.duration_since(due).as_secs_f64());
            let (Some(ps), Some(cs)) = (prev.ann_time(ANN_STARTED), cur.ann_time(ANN_STARTED)) else { continue };
            let off_ms = (ps.duration_since(due).as_secs_f64() + INTERVAL_S) * 1000.0;
            if pl + 1 == *l && off_ms.abs() < 1.0 {
                r.anchored += 1;
                r.spacing_err_ms.push((cs.duration_since(ps).as_secs_f64() - INTERVAL_S) * 1000.0);
            } else {
                r.not_anchored.push(format!("{name} loop {l}: due {off_ms:+.0} ms from loop {pl}'s start + 60 s"));
            }
        }
    }
    for (l, due) in waves {
        if let (Some(first), Some(last)) = (due.iter().min(), due.iter().max()) {
            r.due_spread_ms.push((l, last.duration_since(*first).as_secs_f64() * 1000.0));
        }
    }
    r
}

/// The phase's requests less those that are not the loops': the bench's own LoopService
/// creates, and the operator's first LIST of each of its caches (LoopServices, Jobs, Pods)
/// at its start.
fn without_startup(mut api: Counts, bench_creates: usize) -> Counts {
    for ((verb, res, _), n) in api.iter_mut() {
        let not_loops = match (verb.as_str(), res.as_str()) {
            ("POST", "loopservices") => bench_creates as f64,
            ("LIST", "loopservices" | "jobs" | "pods") => 1.0,
            _ => 0.0,
        };
        *n = (*n - not_loops).max(0.0);
    }
    api
}

/// The operator's counters that say how much work a loop took it: reconciles, reconciles put
/// off for the cache, reads of the stored LoopService past a stale cache, and failed
/// reconciles by step.
fn counters(metrics: &str) -> Vec<(String, f64)> {
    const NAMES: [&str; 4] = [
        "loopservice_reconciles_total",
        "loopservice_own_write_waits_total",
        "loopservice_stale_cache_reads_total",
        "loopservice_reconcile_errors_total",
    ];
    metrics
        .lines()
        .filter(|l| NAMES.iter().any(|n| l.starts_with(n)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

pub struct CronResult {
    pub skew: Vec<f64>,
    pub expected: usize,
    pub schedules: usize,
    pub seconds: f64,
}

/// A CronJob running `true` on the fake nodes every minute.
pub fn cronjob(name: &str) -> CronJob {
    let mut pod = fake_node_pod_spec();
    pod["restartPolicy"] = json!("Never");
    pod["containers"] = json!([{"name": "main", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"]}]);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": pod}}}}
    }))
    .unwrap()
}

pub async fn cronjobs(n: usize, minutes: usize) -> CronResult {
    let ns = TestNs::new("bench-cron").await;
    let watch = JobWatch::start(&ns.name);
    let api: Api<CronJob> = Api::namespaced(ns.client.clone(), &ns.name);
    let start = Instant::now();
    let creates = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cronjob(&format!("cron-{i}"))).await.expect("create CronJob");
            }
        })
        .buffer_unordered(16);
    creates.collect::<Vec<()>>().await;
    // The minutes measured: the first whole minute at least 2 s after the last create.
    let created = jiff::Timestamp::now();
    let first = (created.as_second() + 2).div_euclid(60) * 60 + 60;
    let schedules: Vec<i64> = (0..minutes as i64).map(|k| first + 60 * k).collect();
    let last = *schedules.last().unwrap();
    println!(
        "  created {n} CronJobs in {:.1} s; measuring the {minutes} minutes from {}",
        start.elapsed().as_secs_f64(),
        jiff::Timestamp::from_second(first).unwrap()
    );
    let expected = n * minutes;
    let measured = |watch: &JobWatch| -> Vec<f64> {
        watch
            .snapshot()
            .iter()
            .filter(|(_, s)| !s.relisted)
            .filter_map(|(_, s)| {
                let due = s.ann_time(CRON_SCHEDULED)?;
                schedules.contains(&due.as_second()).then(|| s.at.duration_since(due).as_secs_f64())
            })
            .collect()
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = jiff::Timestamp::now().as_second();
        if now > first + 40 && watch.count() == 0 {
            panic!("no Job from {n} CronJobs 40 s after the minute: is the CronJob controller running?");
        }
        if now > last && (measured(&watch).len() >= expected || now > last + 55) {
            break;
        }
    }
    let skew = measured(&watch);
    if watch.snapshot().iter().any(|(_, s)| !s.annotations.contains_key(CRON_SCHEDULED)) {
        panic!("a CronJob's Job has no {CRON_SCHEDULED} annotation (Kubernetes before 1.28?)");
    }
    CronResult { skew, expected, schedules: minutes, seconds: start.elapsed().as_secs_f64() }
}

/// The controller manager's client QPS, from its command line.
pub fn kcm_qps() -> String {
    let dir = std::env::var("LOOPS_CLUSTER_DIR")
        .unwrap_or_else(|_| format!("{}/.local/state/loops-cluster", std::env::var("HOME").unwrap_or_default()));
    let pid = std::fs::read_to_string(format!("{dir}/run/kube-controller-manager.pid")).unwrap_or_default();
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", pid.trim())) else {
        return "unknown (no kube-controller-manager process found)".into();
    };
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let flag = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}=")).map(str::to_string).or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    match (flag("--kube-api-qps"), flag("--kube-api-burst")) {
        (Some(q), b) => format!("{q} QPS, burst {} (LOOPS_CONTROL_PLANE_QPS)", b.unwrap_or_else(|| "default".into())),
        (None, _) => "Kubernetes' default, 20 QPS and burst 30 (LOOPS_CONTROL_PLANE_QPS unset)".into(),
    }
}
