//! Shards (`make bench-shards`, the phases `failover` and `shard-memory`; not in the default
//! phases).
//!
//! `failover`: `FAILOVER_N` (300) LoopServices every `FAILOVER_INTERVAL` (5 s) on the fake
//! nodes, worked by 3 shards of 2 replicas each (leader election, a Lease per shard). Jobs are
//! timed by the bench's own Job watch for `FAILOVER_WINDOW` (60 s) with every replica alive,
//! then shard 0's active replica (its Lease's holder) is SIGKILLed and they are timed for as
//! long again. Lateness is when a Job's ADDED event reached the watch less its
//! `loops.dev/jittered-time` (else `loops.dev/scheduled-time`): the due time the operator
//! stamped, which for a loop due while its shard had no leader is the time it was due then.
//! Printed: the other shards' lateness without and with the kill, shard 0's, and when shard 0's
//! first Job after the kill was seen.
//!
//! `shard-memory`: `SHARD_MEMORY_N` (10,000) suspended LoopServices, reported Suspended by one
//! operator before the rows are measured; for 1, 2 and 4 shards,
//! asking the API server for each shard's range (`shardSelector`) and not: each shard's RSS
//! once ready and settled, its peak, and the LoopService objects its watch was sent.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use loopservice_operator::keys::{ANN_JITTERED, ANN_SCHEDULED, LABEL_UID};
use loopservice_operator::shard::Shard;

use crate::peers::create_many;
use crate::stats::{env_num, Sample};
use crate::support::{ensure_crd, wait_for, Operator, TestNs};
use crate::watch::{JobWatch, Seen};
use crate::{plane, proc};

const LEASE: &str = "bench-shards";

/// A shard replica of namespace `ns`: `replica` names it (its Lease identity).
fn replica(ns: &TestNs, index: u32, count: u32, replica: &str, extra: &[(&str, &str)]) -> Operator {
    let (i, n, id) = (index.to_string(), count.to_string(), format!("shard-{index}-{replica}"));
    let mut env = vec![
        ("LOG_LEVEL", "warn,loopservice_operator=info"),
        ("SHARDS", n.as_str()),
        ("SHARD_INDEX", i.as_str()),
        ("POD_NAME", id.as_str()),
        ("POD_NAMESPACE", ns.name.as_str()),
    ];
    env.extend_from_slice(extra);
    Operator::start(&ns.name, &env)
}

pub struct Failover {
    pub n: usize,
    pub interval: u64,
    pub window: u64,
    /// Lateness of the other shards' loops (seconds): without the kill, with it.
    pub others: [Sample; 2],
    /// Shard 0's loops: without the kill, with it.
    pub killed: [Sample; 2],
    /// From the SIGKILL to the first of shard 0's Jobs the watch saw after it.
    pub resumed_s: Option<f64>,
    pub lease_s: u64,
    /// kube-apiserver and etcd CPU over the two windows.
    pub plane: Vec<(&'static str, f64)>,
}

/// `FAILOVER_N`, `FAILOVER_INTERVAL`, `FAILOVER_WINDOW`.
pub fn failover_sizes() -> (usize, u64, u64) {
    (env_num("FAILOVER_N", 300), env_num("FAILOVER_INTERVAL", 5).max(1) as u64, env_num("FAILOVER_WINDOW", 60).max(10) as u64)
}

pub async fn failover(n: usize, interval: u64, window: u64) -> (Failover, TestNs) {
    let ns = TestNs::new("bench-failover").await;
    ensure_crd(&ns.client).await;
    let watch = JobWatch::start(&ns.name);
    create_many(&ns, "loop-", 0..n, &format!("{interval}s"), false).await;
    let elect = [("LEADER_ELECT", "true"), ("LEASE_NAME", LEASE)];
    let mut ops: Vec<Operator> = (0..3).flat_map(|i| ["a", "b"].map(|r| (i, r))).map(|(i, r)| replica(&ns, i, 3, r, &elect)).collect();
    // Every LoopService claimed, so every shard leads; then a window to settle.
    wait_for("every LoopService claimed by its shard", Duration::from_secs(180), || async {
        let list = ns.loopservices().list(&ListParams::default()).await.ok()?;
        list.items.iter().all(|l| l.annotations().contains_key(loopservice_operator::keys::ANN_CLAIMED_BY)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(window / 2)).await;
    let cpu = plane::Cpu::read();
    let t0 = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let holder = lease_holder(&ns, &Shard::new(0, 3).unwrap().lease_name(LEASE)).await;
    // Replicas were started in order: shard 0's "a", then its "b", then shard 1's...
    let victim = ["shard-0-a", "shard-0-b"].iter().position(|id| *id == holder);
    let victim = victim.unwrap_or_else(|| panic!("no replica of shard 0 holds its Lease (holder {holder:?})"));
    let killed_at = jiff::Timestamp::now();
    ops[victim].signal("KILL");
    let _ = ops[victim].wait_exit(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let t2 = jiff::Timestamp::now();
    let plane = plane::Cpu::read().since(&cpu);
    drop(ops);
    let jobs = watch.snapshot();
    drop(watch);
    let late = |from: jiff::Timestamp, to: jiff::Timestamp, of_zero: bool| {
        let zero = Shard::new(0, 3).unwrap();
        let v = jobs.iter().filter_map(|(_, s)| {
            let due = due(s)?;
            let mine = zero.owns(s.labels.get(LABEL_UID)?);
            (mine == of_zero && due >= from && due < to && !s.relisted).then(|| s.at.duration_since(due).as_secs_f64())
        });
        Sample::new(v.collect())
    };
    let resumed = jobs
        .iter()
        .filter(|(_, s)| s.at > killed_at && s.labels.get(LABEL_UID).is_some_and(|u| Shard::new(0, 3).unwrap().owns(u)))
        .map(|(_, s)| s.at.duration_since(killed_at).as_secs_f64())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    let r = Failover {
        n,
        interval,
        window,
        others: [late(t0, killed_at, false), late(killed_at, t2, false)],
        killed: [late(t0, killed_at, true), late(killed_at, t2, true)],
        resumed_s: resumed,
        lease_s: 10,
        plane,
    };
    (r, ns)
}

async fn lease_holder(ns: &TestNs, name: &str) -> String {
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let lease = leases.get(name).await.unwrap_or_else(|e| panic!("Lease {name}: {e}"));
    lease.spec.and_then(|s| s.holder_identity).unwrap_or_default()
}

fn due(s: &Seen) -> Option<jiff::Timestamp> {
    s.ann_time(ANN_JITTERED).or_else(|| s.ann_time(ANN_SCHEDULED))
}

pub fn report_failover(r: &Failover) {
    println!("\nFailover: {} LoopServices every {} s, 3 shards of 2 replicas; {} s windows", r.n, r.interval, r.window);
    println!("  other shards, all alive:        {}", r.others[0].line(1.0, "s"));
    println!("  other shards, shard 0 killed:   {}", r.others[1].line(1.0, "s"));
    println!("  shard 0, all alive:             {}", r.killed[0].line(1.0, "s"));
    println!("  shard 0, after its leader died: {}", r.killed[1].line(1.0, "s"));
    match r.resumed_s {
        Some(s) => println!("  shard 0's first Job after the SIGKILL: {s:.1} s later (Lease {} s)", r.lease_s),
        None => println!("  shard 0 made no Job after the SIGKILL within the window"),
    }
    let plane: Vec<String> = r.plane.iter().map(|(c, s)| format!("{c} {s:.0} s")).collect();
    println!("  control plane CPU over both windows: {}", plane.join(", "));
}

pub struct MemoryRow {
    pub shards: u32,
    pub server_side: bool,
    /// Per shard: (RSS MiB settled, peak MiB, LoopService objects kept, dropped).
    pub per_shard: Vec<(f64, f64, f64, f64)>,
}

/// Each shard's memory and LoopService watch objects with `n` suspended LoopServices.
pub async fn memory(n: usize) -> (Vec<MemoryRow>, TestNs) {
    let ns = TestNs::new("bench-shard-memory").await;
    ensure_crd(&ns.client).await;
    let t = Instant::now();
    create_many(&ns, "idle-", 0..n, "60s", true).await;
    println!("  created {n} suspended LoopServices in {:.0} s", t.elapsed().as_secs_f64());
    // One operator first reports them all Suspended, so that every row below starts from the
    // same stored objects (no status to write, one watch event each).
    let first = replica(&ns, 0, 1, "first", &[]);
    let addr = first.http_addr().await;
    wait_for("the first operator ready", Duration::from_secs(300), || async {
        matches!(proc::http_get(&addr, "/readyz"), Some((200, _))).then_some(())
    })
    .await;
    proc::settle(first.pid(), Duration::from_secs(120)).await;
    drop(first);
    let mut rows = vec![];
    for shards in [1, 2, 4] {
        for server_side in [true, false] {
            if shards == 1 && !server_side {
                continue;
            }
            let flag = if server_side { "true" } else { "false" };
            let ops: Vec<Operator> = (0..shards).map(|i| replica(&ns, i, shards, "a", &[("SERVER_SIDE_SHARDS", flag)])).collect();
            let mut per_shard = vec![];
            for op in &ops {
                let addr = op.http_addr().await;
                wait_for("a shard ready", Duration::from_secs(300), || async {
                    matches!(proc::http_get(&addr, "/readyz"), Some((200, _))).then_some(())
                })
                .await;
            }
            for op in &ops {
                proc::settle(op.pid(), Duration::from_secs(60)).await;
                let (rss, peak) = proc::memory(op.pid());
                let metrics = proc::http_get(&op.metrics_addr().await, "/metrics").map(|(_, b)| b).unwrap_or_default();
                let count = |shard: &str| {
                    metrics
                        .lines()
                        .find(|l| {
                            l.starts_with("loopservice_watch_events_total{")
                                && l.contains("kind=\"loopservice\"")
                                && l.contains(&format!("shard=\"{shard}\""))
                        })
                        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                        .unwrap_or(0.0)
                };
                per_shard.push((rss, peak, count("ours"), count("others")));
            }
            println!("  {shards} shard(s), server-side {server_side}: {per_shard:?}");
            rows.push(MemoryRow { shards, server_side, per_shard });
        }
    }
    (rows, ns)
}

pub fn report_memory(n: usize, rows: &[MemoryRow]) {
    println!("\nShard memory: {n} suspended LoopServices, each shard once ready and settled");
    println!(
        "{:>6} {:>12} {:>22} {:>22} {:>28}",
        "shards", "filtering", "RSS MiB (mean, max)", "peak MiB (max)", "LoopServices sent (kept/dropped)"
    );
    for r in rows {
        let rss: Vec<f64> = r.per_shard.iter().map(|p| p.0).collect();
        let mean = rss.iter().sum::<f64>() / rss.len().max(1) as f64;
        let max = rss.iter().copied().fold(0.0, f64::max);
        let peak = r.per_shard.iter().map(|p| p.1).fold(0.0, f64::max);
        let kept = r.per_shard.iter().map(|p| p.2).sum::<f64>() / r.per_shard.len().max(1) as f64;
        let dropped = r.per_shard.iter().map(|p| p.3).sum::<f64>() / r.per_shard.len().max(1) as f64;
        let filtering = if r.shards == 1 {
            "none"
        } else if r.server_side {
            "API server"
        } else {
            "operator"
        };
        println!(
            "{:>6} {:>12} {:>22} {:>22} {:>28}",
            r.shards,
            filtering,
            format!("{mean:.1}, {max:.1}"),
            format!("{peak:.1}"),
            format!("{kept:.0} / {dropped:.0} each")
        );
    }
}
