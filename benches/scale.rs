//! Scale figures of the operator on the local cluster, measured from outside it (`make bench`).
//! Each Job's creation is the instant its ADDED event reached the bench's own Job watch.
//! Prints figures with their sample counts and the targets beside them; asserts nothing about
//! speed, but stops loudly when nothing happens at all. Needs the fake nodes
//! (`hack/cluster.sh fake-nodes 5`).
//!
//! 0. A bare client creating `BENCH_N` and then `BENCH_OVERDUE` Jobs at once, without the
//!    operator: the fastest this cluster lets any controller create them (the floor).
//! 1. `BENCH_N` (100) loops as LoopServices (interval 60 s) and then as CronJobs
//!    (`* * * * *`), each for `BENCH_MINUTES` (3) minutes: Job creation after its due time.
//! 2. The API server's request counters over the LoopService phase, per loop.
//! 3. `BENCH_OVERDUE` (1000) LoopServices created with no operator: from its readiness to
//!    each Job's creation.
//! 4. `BENCH_IDLE` (10000) suspended LoopServices: memory, time to ready after a restart at a
//!    tenth, a half and all of them, idle CPU, /metrics size.
//!
//! 5. (before 4) `BENCH_FAIR_N` (100) LoopServices every 10 s in one namespace, alone, beside
//!    `BENCH_FAIR_BROKEN` (5000) broken ones created in another, and after a restart: how
//!    late their Jobs are.
//!
//! 6. (`make bench-steady`, not in the default phases) `steady`: `BENCH_STEADY_N` (1000) loops
//!    every `BENCH_STEADY_INTERVAL` (60 s) for `BENCH_STEADY_MINUTES` (4) minutes as
//!    LoopServices, as CronJobs, and created by a bare client at the same moments: Jobs made
//!    against due, lateness, CPU, etcd's size (see scale/steady.rs).
//!
//! 7. (`make soak`, not in the default phases) `soak`: `SOAK_N` (1000) LoopServices every
//!    `SOAK_INTERVAL` (60 s) for `SOAK_MINUTES` (60), sampled each minute: the operator's RSS,
//!    sockets and reconciles, Events, status size, etcd's size (see scale/soak.rs).
//!
//! 8. (`make bench-shards`, not in the default phases) `failover`: 3 shards of 2 replicas and
//!    `FAILOVER_N` (300) LoopServices every `FAILOVER_INTERVAL` (5 s), shard 0's leader
//!    SIGKILLed halfway; `shard-memory`: each shard's memory with `SHARD_MEMORY_N` (10,000)
//!    suspended LoopServices for 1, 2 and 4 shards (see scale/shards.rs).
//!
//! `BENCH_PHASES` (default `floor,peers,overdue,fairness,idle`; `loopservices` is `peers` without the
//! CronJobs) picks phases. `BENCH_FLOOR_AT_ONCE` (a comma list; default `--concurrency`'s) sets
//! the floor's creates in flight at once. `BENCH_OPERATOR_ENV="K=V,K=V"` passes extra
//! environment to the operator. Plots go to `<target dir>/bench/`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "scale/apiserver.rs"]
mod apiserver;
#[path = "scale/fairness.rs"]
mod fairness;
#[path = "scale/floor.rs"]
mod floor;
#[path = "scale/idle.rs"]
mod idle;
#[path = "scale/overdue.rs"]
mod overdue;
#[path = "scale/peers.rs"]
mod peers;
#[path = "scale/plane.rs"]
mod plane;
#[path = "scale/plot.rs"]
mod plot;
#[path = "scale/proc.rs"]
mod proc;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/shards.rs"]
mod shards;
#[path = "scale/soak.rs"]
mod soak;
#[path = "scale/stats.rs"]
mod stats;
#[path = "scale/steady.rs"]
mod steady;
#[path = "scale/watch.rs"]
mod watch;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::ListParams;
use kube::Api;
use plotters::style::RGBColor;
use stats::env_num;

/// Deletes a bench namespace and waits until it is gone, so its cleanup does not load the
/// next phase.
async fn delete_and_wait(ns: support::TestNs) {
    let (client, name) = (ns.client.clone(), ns.name.clone());
    drop(ns);
    let api: Api<Namespace> = Api::all(client);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(300) {
        if matches!(api.get_opt(&name).await, Ok(None)) {
            println!("  (namespace {name} deleted in {:.0} s)", t.elapsed().as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  (namespace {name} still terminating after 300 s)");
}

#[tokio::main]
async fn main() {
    let n = env_num("BENCH_N", 100);
    let minutes = env_num("BENCH_MINUTES", 3).max(1);
    let overdue_n = env_num("BENCH_OVERDUE", 1000);
    let idle_n = env_num("BENCH_IDLE", 10000);
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "floor,peers,overdue,fairness,idle".into());
    let client = support::client().await;
    let fake =
        Api::<Node>::all(client.clone()).list(&ListParams::default().labels("loops.dev/fake-node=true")).await.expect("list nodes").items;
    assert!(!fake.is_empty(), "no fake nodes: run `hack/cluster.sh fake-nodes 5` first");
    let version = client.apiserver_version().await.expect("server version");
    // The CRD first, so that a cluster just brought up has known it for a while when the
    // LoopService phase begins.
    support::ensure_crd(&client).await;
    let began = Instant::now();
    println!(
        "\nloopservice-operator scale bench: Kubernetes {}, {} fake nodes, {} cores",
        version.git_version,
        fake.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  kube-controller-manager client: {}", peers::kcm_qps());
    println!("  BENCH_N={n} BENCH_MINUTES={minutes} BENCH_OVERDUE={overdue_n} BENCH_IDLE={idle_n} BENCH_PHASES={phases}");
    println!(
        "  operator env: LOG_LEVEL=warn,loopservice_operator=info{}",
        proc::extra_env().iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>()
    );

    let mut plots = vec![];
    if phases.contains("floor") {
        let mut rows = vec![];
        for at_once in floor::at_once() {
            for size in [n, overdue_n].into_iter().filter(|s| *s > 0) {
                let (r, ns) = floor::run(size, at_once).await;
                rows.push(r);
                delete_and_wait(ns).await;
            }
        }
        report::floor(&rows);
    }
    // `loopservices` alone runs the LoopService phase without the CronJob one after it.
    if phases.contains("peers") || phases.contains("loopservices") {
        println!("\nLoopService phase: {n} LoopServices, interval 60 s, Jobs on the fake nodes");
        let ls = peers::loopservices(n, minutes).await;
        assert!(!ls.skew.is_empty(), "no LoopService loop after the first was seen: the operator did not loop");
        let cron = if phases.contains("peers") {
            println!("CronJob phase: {n} CronJobs, `* * * * *`, Jobs on the fake nodes");
            let cron = peers::cronjobs(n, minutes).await;
            assert!(!cron.skew.is_empty(), "no CronJob Job was seen for the minutes measured");
            Some(cron)
        } else {
            None
        };
        report::peers(&ls, cron.as_ref());
        report::api(&ls);
        let mut series = vec![("LoopService", &ls.skew[..], RGBColor(30, 90, 200))];
        if let Some(c) = &cron {
            series.push(("CronJob", &c.skew[..], RGBColor(210, 40, 40)));
        }
        plots.push(plot::cdf("skew-cdf.png", "Job creation after due: CDF", &series));
    }
    if phases.contains("steady") {
        let (sn, every, sm) = steady::sizes();
        println!("\nSteady phase: {sn} loops every {every} s for {sm} min (BENCH_STEADY_N, BENCH_STEADY_INTERVAL, BENCH_STEADY_MINUTES)");
        let r = steady::run(sn, every, sm).await;
        report::steady(&r);
        let colors = [RGBColor(30, 90, 200), RGBColor(210, 40, 40), RGBColor(40, 150, 60)];
        let series: Vec<plot::Series> = r.phases.iter().zip(colors).map(|(p, c)| (p.name, p.late.clone(), c)).collect();
        plots.push(plot::scatter_log(
            "steady-lateness.png",
            "Steady load: Job lateness over time",
            "seconds into the phase (due time)",
            &series,
        ));
    }
    if phases.contains("soak") {
        let (sn, every, sm) = soak::sizes();
        println!("\nSoak phase: {sn} LoopServices every {every} s for {sm} min (SOAK_N, SOAK_INTERVAL, SOAK_MINUTES)");
        let (rows, ns) = soak::run(sn, every, sm).await;
        soak::report(&rows);
        let colors = [
            RGBColor(30, 90, 200),
            RGBColor(210, 40, 40),
            RGBColor(40, 150, 60),
            RGBColor(200, 130, 0),
            RGBColor(120, 60, 170),
            RGBColor(0, 150, 160),
            RGBColor(90, 90, 90),
        ];
        let series: Vec<plot::Series> = soak::relative(&rows).into_iter().zip(colors).map(|((name, v), c)| (name, v, c)).collect();
        plots.push(plot::lines("soak.png", "Soak: each figure as % of its first minute", "minutes", &series));
        delete_and_wait(ns).await;
    }
    if phases.contains("failover") {
        let (fn_, every, window) = shards::failover_sizes();
        println!("\nFailover phase: {fn_} LoopServices every {every} s, 3 shards (FAILOVER_N, FAILOVER_INTERVAL, FAILOVER_WINDOW)");
        let (r, ns) = shards::failover(fn_, every, window).await;
        shards::report_failover(&r);
        delete_and_wait(ns).await;
    }
    if phases.contains("shard-memory") {
        let mn = env_num("SHARD_MEMORY_N", 10000);
        println!("\nShard memory phase: {mn} suspended LoopServices, 1, 2 and 4 shards (SHARD_MEMORY_N)");
        let (rows, ns) = shards::memory(mn).await;
        shards::report_memory(mn, &rows);
        delete_and_wait(ns).await;
    }
    if phases.contains("overdue") && overdue_n > 0 {
        println!("\nOverdue phase: {overdue_n} LoopServices created with the operator stopped");
        let o = overdue::run(overdue_n).await;
        report::overdue(&o);
        delete_and_wait(o.ns).await;
    }
    if phases.contains("fairness") {
        let (fair_n, broken_n) = (env_num("BENCH_FAIR_N", 100), env_num("BENCH_FAIR_BROKEN", 5000));
        println!("\nFairness phase: {fair_n} LoopServices every 10 s, then {broken_n} broken ones in another namespace");
        let r = fairness::run(fair_n, broken_n).await;
        report::fairness(&r);
        let (a, b, c) = r.namespaces;
        delete_and_wait(c).await;
        delete_and_wait(b).await;
        delete_and_wait(a).await;
    }
    if phases.contains("idle") && idle_n > 0 {
        println!("\nIdle phase: {idle_n} suspended LoopServices, in steps {:?}", idle::steps(idle_n));
        let r = idle::run(idle_n).await;
        report::idle(&r);
        let pts = |f: fn(&idle::IdleRow) -> f64| r.rows.iter().map(|w| (w.n as f64, f(w))).collect::<Vec<_>>();
        let series = [
            ("peak RSS after a restart (VmHWM), MiB", pts(|w| w.hwm_restart), RGBColor(210, 40, 40)),
            ("settled RSS after a restart, MiB", pts(|w| w.rss_restart), RGBColor(30, 90, 200)),
            ("RSS of the operator that saw them created, MiB", pts(|w| w.rss), RGBColor(40, 150, 60)),
        ];
        plots.push(plot::lines("rss-vs-n.png", "Operator memory against suspended LoopServices", "suspended LoopServices", &series));
        // The last phase: its namespace is deleted in the background.
        drop(r.ns);
    }
    println!();
    for p in plots {
        match p {
            Ok(path) => println!("plot: {}", path.display()),
            Err(e) => panic!("could not write a plot: {e}"),
        }
    }
    println!("bench took {:.0} s", began.elapsed().as_secs_f64());
}
