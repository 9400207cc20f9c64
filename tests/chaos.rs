//! Chaos on the local cluster: the API server or etcd stopped and started, the operator
//! SIGKILLed again and again, the leader killed while 50 LoopServices loop. Each test checks
//! what a user relies on: no loop runs twice (loop numbers unique and contiguous from 1, no two
//! Jobs of a LoopService overlapping in time) and none is lost (the loops go on at their
//! interval afterwards).
//!
//! These tests stop parts of the shared cluster: they must run alone, after the rest of the
//! suite (`make test` runs them in a second, serial nextest run), and only on the newest
//! Kubernetes the cluster script builds (`make test` leaves them out, as skipped, on older ones).
//! Whatever happens, a stopped component is started again.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::*;

/// The newest Kubernetes minor version the cluster script brings up (its default).
fn newest_minor() -> u32 {
    let script = std::fs::read_to_string(repo_root().join("hack/cluster.sh")).expect("read hack/cluster.sh");
    let line =
        script.lines().find(|l| l.starts_with("DEFAULT_KUBERNETES_VERSION=")).expect("DEFAULT_KUBERNETES_VERSION in hack/cluster.sh");
    let v = line.split('=').nth(1).unwrap().trim_matches('"');
    v.split('.').nth(1).and_then(|m| m.parse().ok()).expect("a version like 1.37")
}

/// Panics unless the cluster runs the newest Kubernetes: `make test` leaves the chaos tests
/// out on older clusters (nextest reports them as skipped), so on an older cluster this is
/// reached only by a run by hand, which then fails rather than passing without checking.
async fn require_newest(client: &Client) {
    let (minor, newest) = (server_minor(client).await, newest_minor());
    assert!(
        minor >= newest,
        "the chaos tests apply to the newest Kubernetes (1.{newest}) only, and this cluster is 1.{minor}: they check nothing here. \
         `make test` leaves them out on this version (nextest reports them as skipped)"
    );
}

/// A benchmark of this repository (`make bench`, `make bench-fake-nodes`) running against the
/// cluster would be broken by an outage: wait for it to finish (up to 20 minutes).
async fn wait_until_no_benchmark_runs() {
    let busy = || Command::new("pgrep").args(["-f", "deps/scale-|deps/fake_nodes-"]).output().map(|o| o.status.success()).unwrap_or(false);
    let start = Instant::now();
    while busy() {
        assert!(start.elapsed() < Duration::from_secs(20 * 60), "a benchmark has been running against the cluster for 20 minutes");
        println!("a benchmark runs against the cluster; waiting for it to end before stopping a component");
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

fn cluster_sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(repo_root().join("hack/cluster.sh")).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("hack/cluster.sh {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A control-plane component stopped by a test. It is started again by [`Outage::end`], or
/// when dropped (a failed assertion, a panic), so that no test leaves the cluster broken.
struct Outage {
    component: &'static str,
    restarting: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Outage {
    fn begin(component: &'static str) -> Outage {
        let outage = Outage { component, restarting: None };
        cluster_sh(&["stop", component]).unwrap();
        outage
    }

    /// Starts the component again in the background (`hack/cluster.sh start` returns once it
    /// is healthy).
    fn end(&mut self) {
        let component = self.component;
        self.restarting = Some(std::thread::spawn(move || cluster_sh(&["start", component])));
    }

    fn finish(&mut self) -> Result<(), String> {
        match self.restarting.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err("the restart thread panicked".into())),
            None => cluster_sh(&["start", self.component]),
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        let mut result = self.finish();
        if result.is_err() {
            // Once more: a start that failed while something else was still coming back.
            result = cluster_sh(&["start", self.component]);
        }
        if let Err(e) = result {
            eprintln!("could not start {} again: {e}", self.component);
            if !std::thread::panicking() {
                panic!("could not start {} again: {e}", self.component);
            }
        }
    }
}

/// Polls the API server's /readyz (a new connection each time) until it answers `ok`.
async fn wait_ready(limit: Duration) -> (Instant, Timestamp) {
    let start = Instant::now();
    loop {
        let ok = async {
            let client = Client::try_default().await.ok()?;
            let req = http::Request::get("/readyz").body(vec![]).ok()?;
            let text = tokio::time::timeout(Duration::from_secs(1), client.request_text(req)).await.ok()?.ok()?;
            (text.trim() == "ok").then_some(())
        };
        if ok.await.is_some() {
            return (Instant::now(), Timestamp::now());
        }
        assert!(start.elapsed() < limit, "the API server did not answer /readyz within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watches the Jobs of LoopService `name` until one of a loop after `after` appears; returns it
/// and when the watch saw it.
async fn next_job(ns: &str, name: &str, after: i64, limit: Duration) -> (Job, Timestamp) {
    let client = Client::try_default().await.unwrap();
    let api: Api<Job> = Api::namespaced(client, ns);
    let config = watcher::Config::default().labels(&format!("loops.dev/loopservice={name}"));
    let stream = watcher(api, config).default_backoff().applied_objects();
    let mut stream = std::pin::pin!(stream);
    let found = tokio::time::timeout(limit, async {
        while let Some(item) = stream.next().await {
            if let Ok(j) = item {
                if loop_number(&j) > after {
                    return (j, Timestamp::now());
                }
            }
        }
        panic!("the job watch ended");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no Job of {name} after loop {after} within {limit:?}"))
}

/// One loop as its Job shows it.
#[derive(Debug)]
struct Loop {
    n: i64,
    start: Timestamp,
    due: Timestamp,
    /// When it was to start: its due time plus its jitter (the due time without jitter).
    jittered: Timestamp,
    /// The Job's end as Kubernetes stamps it (to the second, rounded down).
    end: Option<Timestamp>,
}

async fn loops(ns: &TestNs, name: &str) -> Vec<Loop> {
    loop_jobs(ns, name)
        .await
        .iter()
        .map(|j| Loop {
            n: loop_number(j),
            start: start_time(j),
            due: ann_time(j, "loops.dev/scheduled-time"),
            jittered: if j.annotations().contains_key("loops.dev/jittered-time") {
                ann_time(j, "loops.dev/jittered-time")
            } else {
                ann_time(j, "loops.dev/scheduled-time")
            },
            end: finished(j).map(|(_, t)| t),
        })
        .collect()
}

/// No loop ran twice: loop numbers 1..n each once, and each loop's Job started after the Job
/// before it had ended. Also the status counts the same loops.
async fn assert_each_loop_once(ns: &TestNs, name: &str) -> Vec<Loop> {
    let all = loops(ns, name).await;
    let numbers: Vec<i64> = all.iter().map(|l| l.n).collect();
    assert_eq!(numbers, (1..=all.len() as i64).collect::<Vec<_>>(), "{name}: loop numbers are not 1..n, each once: {numbers:?}");
    for w in all.windows(2) {
        let end = w[0].end.unwrap_or_else(|| panic!("{name}: loop {} started while loop {} had not ended: {all:#?}", w[1].n, w[0].n));
        assert!(w[1].start >= end, "{name}: loop {} started at {} before loop {} ended at {end}", w[1].n, w[1].start, w[0].n);
    }
    // The status counts the same loops as the Jobs, or one more (a loop whose Job is being
    // made). A loop may start while this reads, so the count is taken between two listings of
    // the Jobs that agree; a status that stays behind its Jobs fails after the limit.
    let mut last = (0, 0);
    let agreed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let before = loop_jobs(ns, name).await.len() as i64;
            let counted = status(ns, name).await.loops_started;
            let after = loop_jobs(ns, name).await.len() as i64;
            last = (counted, after);
            if before == after && counted >= after && counted <= after + 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(agreed.is_ok(), "{name}: status counts {} loops, Jobs {}", last.0, last.1);
    all
}

/// Waits for LoopService `name` to have started loop `n`.
async fn wait_loop(ns: &TestNs, name: &str, n: i64, limit: Duration) {
    wait_for(&format!("loop {n} of {name}"), limit, || async {
        let jobs = loop_jobs(ns, name).await;
        jobs.iter().any(|j| loop_number(j) >= n).then_some(())
    })
    .await;
}

fn looping(name: &str, interval: &str) -> serde_json::Value {
    let mut v = ls(name, interval, "echo loop $LOOP_NUMBER");
    v["spec"]["successfulJobsHistoryLimit"] = json!(100);
    v["spec"]["failedJobsHistoryLimit"] = json!(100);
    v
}

/// The seconds between consecutive starts of the loops numbered from `from` on.
fn spacings(all: &[Loop], from: i64) -> Vec<f64> {
    all.windows(2).filter(|w| w[0].n >= from).map(|w| secs(w[0].start, w[1].start)).collect()
}

/// Stops `component` for `outage` while a LoopService loops every 6 s, starts it again, and
/// checks: the next loop's Job within 10 s of the API server answering /readyz, one loop only
/// right after the outage, then loops at the interval, and none twice.
async fn outage(component: &'static str, outage: Duration, prefix: &str) {
    let ns = setup(prefix).await;
    require_newest(&ns.client).await;
    wait_until_no_benchmark_runs().await;
    const INTERVAL: f64 = 6.0;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, looping("steady", "6s")).await.unwrap();
    // Stop right after a loop has ended and been recorded: the next one is due in the outage.
    let st = wait_status(&ns, "steady", "loop 2 recorded, loop 3 not yet due", |st| {
        st.last_finished_loop >= 2
            && st.last_finished_loop == st.loops_started
            && st.next_run_time.is_some_and(|t| secs(Timestamp::now(), t.0) > 1.5)
    })
    .await;
    let before = st.loops_started;

    let stopped = Instant::now();
    let mut down = Outage::begin(component);
    println!("{component} stopped after loop {before}; staying down {outage:?}");
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    down.end();
    let (ready_at, ready_ts) = wait_ready(Duration::from_secs(120)).await;
    let down_for = ready_at.duration_since(stopped).as_secs_f64();
    let (job, seen) = next_job(&ns.name, "steady", before, Duration::from_secs(60)).await;
    down.finish().expect("the component is healthy again");
    drop(down);
    let created = secs(ready_ts, start_time(&job));
    let watched = secs(ready_ts, seen);
    println!(
        "{component} down {:.1}s (stop to /readyz); loop {}'s Job seen by a watch {watched:.3}s after the API server answered /readyz (its start stamped {created:.3}s after)",
        down_for,
        loop_number(&job)
    );
    assert_eq!(loop_number(&job), before + 1);
    assert!(watched <= 10.0, "the next loop's Job came {watched:.3}s after the API server answered again");

    // Three more loops, each started by the loop rule, max(previous start + interval, previous
    // end): never sooner (no burst of loops for the time lost), never much later (none lost).
    // The cluster itself recovers first: its controller manager and kubelet are refused for a
    // while after the API server restarts (its RBAC cache is loading), and a Job's completion
    // can be recorded tens of seconds late. The operator can only start the next loop once it
    // is.
    wait_loop(&ns, "steady", before + 3, Duration::from_secs(90)).await;
    wait_status(&ns, "steady", "the status to catch up", |st| st.loops_started >= before + 3).await;
    let all = assert_each_loop_once(&ns, "steady").await;
    let after = spacings(&all, before + 1);
    println!("starts after the outage, seconds apart: {after:.3?}");
    assert!(after.len() >= 2, "{all:#?}");
    // No burst: none sooner than the loop rule. The loop right after the outage may start late
    // by however late its predecessor's end was recorded; the ones after it follow the rule.
    assert_loop_rule(&all, before + 1, INTERVAL, f64::INFINITY);
    assert_loop_rule(&all, before + 2, INTERVAL, 2.0);
}

/// Each loop from `from` on started when the loop rule says: at max(previous start + interval,
/// previous end), within `slack` seconds after (and the end is stamped to the second, rounded
/// down).
fn assert_loop_rule(all: &[Loop], from: i64, interval: f64, slack: f64) {
    for w in all.windows(2).filter(|w| w[0].n >= from) {
        let end = w[0].end.map_or(0.0, |e| secs(w[0].start, e));
        let earliest = interval.max(end) - 0.05;
        let latest = interval.max(end + 1.0) + slack;
        let gap = secs(w[0].start, w[1].start);
        assert!(
            (earliest..latest).contains(&gap),
            "loop {} started {gap:.3}s after loop {} (which ended {end:.3}s after its start), not by the loop rule: {all:#?}",
            w[1].n,
            w[0].n
        );
    }
}

/// Places a loop's Pod on the cluster's fake (kwok) nodes, which complete it at once.
/// The chaos tests apply to the newest Kubernetes the cluster script brings up only: `make test`
/// leaves them out on older clusters (nextest reports them as skipped), and each fails if run by
/// hand there (`require_newest`).
mod newest_only {
    use super::*;

    /// All namespaces but a list (here, every namespace but the two of the test: the LoopServices
    /// of any other are not the test's to run): the operator watches the cluster with a field
    /// selector, runs the LoopServices of the two and never touches one in an excluded namespace.
    /// A cluster-wide operator, so it runs alone, with the chaos tests.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn an_exclusion_list_runs_every_namespace_but_those() {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::ListParams;

        let (a, b, c) = (setup("exclude-a").await, TestNs::new("exclude-b").await, TestNs::new("exclude-c").await);
        require_newest(&a.client).await;
        loopservices_in(&[&a, &b], &c).await;
        let namespaces = Api::<Namespace>::all(a.client.clone()).list(&ListParams::default()).await.unwrap().items;
        let mut out: Vec<String> = namespaces.iter().map(|n| n.name_any()).filter(|n| *n != a.name && *n != b.name).collect();
        out.sort_by_key(|n| *n != c.name);
        let op = Operator::start_with(&a.name, &[], &[("EXCLUDE_NAMESPACES", &out.join(","))]);
        only_the_watched_namespaces_loop(&op, &[&a, &b], &c).await;
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn the_api_server_down_30s_no_loop_twice_none_lost_next_loop_within_10s() {
        outage("kube-apiserver", Duration::from_secs(30), "chaos-api").await;
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn etcd_down_15s_no_loop_twice_none_lost() {
        outage("etcd", Duration::from_secs(15), "chaos-etcd").await;
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn fifteen_sigkills_of_the_operator_no_loop_twice_none_lost() {
        let ns = setup("chaos-kill").await;
        require_newest(&ns.client).await;
        const NAMES: [&str; 4] = ["k1", "k2", "k3", "k4"];
        const INTERVAL: f64 = 4.0;
        for name in NAMES {
            create_ls(&ns, looping(name, "4s")).await.unwrap();
        }
        let mut op = Operator::start(&ns.name, &[]);
        // Kills at different instants of the loops: some right after a loop's Job is created (before
        // its status is written), some a while after the operator came up.
        let pauses = [0.0, 0.3, 0.9, 1.6, 2.4, 3.3];
        for i in 0..15 {
            wait_for("the operator's caches to sync", Duration::from_secs(30), || async {
                op.log_text().contains("caches synced").then_some(())
            })
            .await;
            if i % 3 == 2 {
                let started = op.log_text().matches("started loop").count();
                wait_for("a loop to start", Duration::from_secs(20), || async {
                    (op.log_text().matches("started loop").count() > started).then_some(())
                })
                .await;
            } else {
                tokio::time::sleep(Duration::from_secs_f64(pauses[i % pauses.len()])).await;
            }
            op.signal("KILL");
            let (code, _) = op.wait_exit(Duration::from_secs(10)).await;
            assert_eq!(code, None, "killed by a signal");
            op = Operator::start(&ns.name, &[]);
        }
        let killed = Timestamp::now();
        let counts: Vec<i64> = futures::future::join_all(NAMES.iter().map(|n| async { loop_jobs(&ns, n).await.len() as i64 })).await;
        println!("15 SIGKILLs done; loops started so far: {counts:?}");
        // Two more loops each with the last instance: at the interval again.
        for (name, n) in NAMES.iter().zip(&counts) {
            wait_loop(&ns, name, n + 2, Duration::from_secs(30)).await;
        }
        for (name, n) in NAMES.iter().zip(&counts) {
            wait_status(&ns, name, "the status to catch up", |st| st.loops_started >= n + 2).await;
            let all = assert_each_loop_once(&ns, name).await;
            println!("{name}: {} loops, each once; seconds between starts {:.3?}", all.len(), spacings(&all, 1));
            // None lost: while the operator was killed again and again a loop is late by a few
            // restarts at most; with the last instance up, the loops follow the loop rule again.
            assert_loop_rule(&all, 1, INTERVAL, 5.0);
            let first_after = all.iter().find(|l| l.start > killed).map_or(i64::MAX, |l| l.n);
            assert_loop_rule(&all, first_after, INTERVAL, 2.0);
        }
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn leader_killed_while_50_loopservices_loop_the_standby_takes_over_no_loop_twice_none_lost() {
        let ns = setup("chaos-leader").await;
        require_newest(&ns.client).await;
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(ns.client.clone())
            .list(&kube::api::ListParams::default().labels("loops.dev/fake-node=true"))
            .await
            .unwrap();
        assert!(!nodes.items.is_empty(), "no fake nodes: run `hack/cluster.sh fake-nodes 5` (make test does)");
        const N: usize = 50;
        const INTERVAL: f64 = 20.0;
        let env = [("LEADER_ELECT", "true"), ("POD_NAMESPACE", ns.name.as_str())];
        let a = Operator::start(&ns.name, &env);
        wait_for("a to lead", LONG, || async { a.log_text().contains("became the leader").then_some(()) }).await;
        let b = Operator::start(&ns.name, &env);
        wait_for("b to stand by", LONG, || async { b.log_text().contains("standing by").then_some(()) }).await;
        let names: Vec<String> = (0..N).map(|i| format!("fleet-{i:02}")).collect();
        for name in &names {
            create_ls(&ns, on_fake_nodes(name, "20s", "15s")).await.unwrap();
        }
        let created = Instant::now();
        // Every LoopService has run its first loop under the leader.
        wait_for("loop 1 of each LoopService to be recorded", LONG, || async {
            let list = ns.loopservices().list(&Default::default()).await.ok()?;
            list.items.iter().all(|l| l.status.as_ref().is_some_and(|s| s.last_finished_loop >= 1)).then_some(())
        })
        .await;
        // Killed 2 s before the first second loops are due: the failover (about 7 s) takes in
        // the jittered start times of a good part of them.
        tokio::time::sleep(Duration::from_secs_f64(INTERVAL - 2.0).saturating_sub(created.elapsed())).await;
        a.signal("KILL");
        let killed = Instant::now();
        let killed_ts = Timestamp::now();
        wait_for("b to lead", Duration::from_secs(40), || async { b.log_text().contains("became the leader").then_some(()) }).await;
        let took_over = killed.elapsed().as_secs_f64();
        let took_over_ts = Timestamp::now();
        println!("the standby led {took_over:.3}s after the leader was SIGKILLed");
        drop(a);

        // Every LoopService's loops go on under the new leader: wait for one more loop each after
        // the first loop the new leader started.
        let mut counts = Vec::new();
        for name in &names {
            let jobs = loop_jobs(&ns, name).await;
            counts.push(jobs.iter().filter(|j| start_time(j) < took_over_ts).count() as i64);
        }
        for (name, n) in names.iter().zip(&counts) {
            wait_loop(&ns, name, n + 2, Duration::from_secs(90)).await;
        }
        let mut late = Vec::new();
        for (name, n) in names.iter().zip(&counts) {
            // The status write comes a moment after the Job's create: wait for it to count them.
            let jobs = loop_jobs(&ns, name).await.len() as i64;
            wait_status(&ns, name, "the status to catch up", |st| st.loops_started >= jobs).await;
            let all = assert_each_loop_once(&ns, name).await;
            assert!(all.len() as i64 >= n + 2);
            for l in &all {
                // A loop starts at its jittered time, or, when that fell in the failover, right at
                // the takeover: late by the failover at most, never skipped.
                let in_failover = l.jittered > killed_ts && l.jittered < took_over_ts;
                let from = if in_failover { took_over_ts } else { l.jittered };
                let lateness = secs(from, l.start);
                if in_failover {
                    late.push(lateness);
                }
                assert!(
                    lateness < 5.0,
                    "{name}: loop {} started {lateness:.3}s after {}: {all:#?}",
                    l.n,
                    if in_failover { "the takeover" } else { "its time" }
                );
            }
            for w in all.windows(2) {
                // The loop rule: due one interval after the previous loop's start without its jitter
                // (or at its end, stamped to the second, if it overran), so a late loop moves the
                // schedule on, and nothing is made up.
                let want = secs(w[0].due, w[0].start) - secs(w[0].due, w[0].jittered) + INTERVAL;
                let due_gap = secs(w[0].due, w[1].due);
                let overran = w[0].end.is_some_and(|e| secs(w[0].due, e) + 1.0 > want && due_gap <= secs(w[0].due, e) + 1.0);
                assert!(
                    due_gap > want - 0.05 && (due_gap < want + 0.05 || overran),
                    "{name}: loop {} due {due_gap:.3}s after loop {}, not {want:.3}s: {all:#?}",
                    w[1].n,
                    w[0].n
                );
            }
        }
        late.sort_by(f64::total_cmp);
        println!(
            "{N} LoopServices, each loop once across the failover; {} loops due during the failover started {:.3?}s after the takeover",
            late.len(),
            late
        );
        for l in &late {
            assert!(*l < 10.0, "a loop due during the failover started {l:.3}s after the takeover");
        }
    }

    /// The soak (`make chaos`; not in `make test`, it runs for some 10 minutes): the operator
    /// SIGKILLed `SOAK_KILLS` (100) times at random instants, the API server restarted at
    /// every tenth, while 10 LoopServices loop every 2 s, half of them with a TTL of 0 and
    /// history limits of 0. A Job watch of the test's own counts every creation by uid.
    #[tokio::test]
    #[ignore = "a soak: run `make chaos`"]
    async fn soak_sigkills_and_api_server_restarts_no_loop_twice_none_lost() {
        let ns = setup("soak").await;
        require_newest(&ns.client).await;
        wait_until_no_benchmark_runs().await;
        let kills: usize = std::env::var("SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
        let names: Vec<String> = (1..=10).map(|i| format!("s{i}")).collect();
        let seen = support::once::watch_jobs(&ns, vec![]);
        for (i, n) in names.iter().enumerate() {
            let mut v = ls(n, "2s", "echo loop $LOOP_NUMBER");
            if i % 2 == 0 {
                v["spec"]["ttlSecondsAfterFinished"] = json!(0);
                v["spec"]["successfulJobsHistoryLimit"] = json!(0);
                v["spec"]["failedJobsHistoryLimit"] = json!(0);
            }
            create_ls(&ns, v).await.unwrap();
        }
        let mut op = Operator::start(&ns.name, &[]);
        let mut rng = fastrand::Rng::with_seed(kills as u64);
        let began = Instant::now();
        for i in 0..kills {
            wait_for("the operator's caches to sync", Duration::from_secs(60), || async {
                op.log_text().contains("caches synced").then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_secs_f64(rng.f64() * 3.0)).await;
            op.signal("KILL");
            let (code, _) = op.wait_exit(Duration::from_secs(10)).await;
            assert_eq!(code, None, "killed by a signal");
            if i % 10 == 9 {
                let mut down = Outage::begin("kube-apiserver");
                tokio::time::sleep(Duration::from_secs_f64(rng.f64() * 5.0)).await;
                down.end();
                wait_ready(Duration::from_secs(120)).await;
                down.finish().expect("the API server is healthy again");
            }
            op = Operator::start(&ns.name, &[]);
            if i % 10 == 9 {
                println!("soak: {} SIGKILLs and {} API server restarts after {:.0} s", i + 1, (i + 1) / 10, began.elapsed().as_secs_f64());
            }
        }
        println!("{kills} SIGKILLs, {} API server restarts, in {:.0} s", kills / 10, began.elapsed().as_secs_f64());
        // The last instance carries on, then all are suspended between loops.
        for n in &names {
            let started = status(&ns, n).await.loops_started;
            wait_status(&ns, n, "two more loops with the last instance", |st| st.last_finished_loop >= started + 2).await;
        }
        for n in &names {
            ns.loopservices().patch(n, &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
        }
        let mut total = 0;
        for n in &names {
            wait_status(&ns, n, "suspended with every loop recorded", |st| {
                st.active_job.is_none() && st.last_finished_loop == st.loops_started
            })
            .await;
            total += support::once::assert_once(&ns, n, &seen).await;
        }
        println!(
            "soak: {kills} SIGKILLs and {} API server restarts over 10 LoopServices: {total} Jobs created, each loop once, none lost",
            kills / 10
        );
    }

    /// Run with the chaos tests, alone: 20 loops every 2 s ask the Job controller for more than
    /// it gives at its default QPS, and would slow every test beside it.
    ///
    /// Two releases of the operator (two leader Leases) at once on the same LoopServices: each
    /// LoopService is worked by the one release that claimed it. 20 LoopServices (on the fake
    /// nodes) every 2 s with
    /// history limits of 0 for `TWO_RELEASES_SECONDS` (180); then one release is SIGKILLed and the
    /// other takes its LoopServices over; started again, it stands by for all of them and says so.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn two_releases_at_once_each_loopservice_is_worked_by_one_and_no_loop_runs_twice() {
        let ns = setup("two-releases").await;
        require_newest(&ns.client).await;
        let seconds: u64 = std::env::var("TWO_RELEASES_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(180);
        let names: Vec<String> = (1..=20).map(|i| format!("r{i:02}")).collect();
        let seen = support::once::watch_jobs(&ns, vec![]);
        // On the fake nodes: 20 loops every 2 s for minutes would crowd the one real node.
        for n in &names {
            let mut v = on_fake_nodes(n, "2s", "1s");
            v["spec"]["successfulJobsHistoryLimit"] = json!(0);
            v["spec"]["failedJobsHistoryLimit"] = json!(0);
            create_ls(&ns, v).await.unwrap();
        }
        let release = |lease: &str| {
            Operator::start(&ns.name, &[("LEADER_ELECT", "true"), ("LEASE_NAME", lease), ("POD_NAMESPACE", ns.name.as_str())])
        };
        let (a, b) = (release("release-a"), release("release-b"));
        let (claim_a, claim_b) = (format!("{}/release-a", ns.name), format!("{}/release-b", ns.name));
        let claims = || async {
            let list = ns.loopservices().list(&Default::default()).await.unwrap();
            list.items
                .iter()
                .map(|l| l.annotations().get(loopservice_operator::keys::ANN_CLAIMED_BY).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        wait_for("every LoopService claimed", LONG, || async { claims().await.iter().all(|c| !c.is_empty()).then_some(()) }).await;
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_secs(seconds) {
            let now = claims().await;
            assert!(now.iter().all(|c| *c == claim_a || *c == claim_b), "claimed by one of the two: {now:?}");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let split = claims().await;
        let by_a = split.iter().filter(|c| **c == claim_a).count();
        println!("two releases for {seconds} s: {by_a} LoopServices claimed by release-a, {} by release-b", split.len() - by_a);
        assert!(a.log_text().contains("became the leader") && b.log_text().contains("became the leader"), "both releases led");

        // One release dies: the other takes its LoopServices over once its Lease lapses.
        let mut a = a;
        a.signal("KILL");
        a.wait_exit(Duration::from_secs(10)).await;
        let killed = std::time::Instant::now();
        wait_for("release-b to claim every LoopService", Duration::from_secs(120), || async {
            claims().await.iter().all(|c| *c == claim_b).then_some(())
        })
        .await;
        println!("release-b claimed all 20 LoopServices {:.1} s after release-a was SIGKILLed", killed.elapsed().as_secs_f64());
        futures::future::join_all(names.iter().map(|n| async {
            let started = status(&ns, n).await.loops_started;
            wait_status(&ns, n, "two more loops under release-b", |st| st.last_finished_loop >= started + 2).await;
        }))
        .await;
        // Back again, release-a stands by for all of them: not ready, saying why, and an Event each.
        let a = release("release-a");
        let why = wait_for("release-a's /readyz to say it stands by", LONG, || async {
            a.get_any("/readyz").await.filter(|(code, body)| *code == 503 && body.contains("standing by for 20")).map(|(_, b)| b)
        })
        .await;
        assert!(why.contains(&claim_b), "{why}");
        let events: Vec<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(ns.client.clone(), &ns.name).list(&Default::default()).await.unwrap().items;
        let standing: Vec<&str> = events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ClaimedElsewhere") && e.note.as_deref().is_some_and(|n| n.contains(&claim_b)))
            .filter_map(|e| e.regarding.as_ref()?.name.as_deref())
            .collect();
        for n in &names {
            assert!(standing.contains(&n.as_str()), "{n}: no ClaimedElsewhere Event naming release-b; Events: {standing:?}");
        }
        assert!(a.log_text().contains("standing by: another release works this loopservice"));

        for n in &names {
            ns.loopservices().patch(n, &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
        }
        futures::future::join_all(names.iter().map(|n| {
            wait_status(&ns, n, "suspended with every loop recorded", |st| {
                st.active_job.is_none() && st.last_finished_loop == st.loops_started
            })
        }))
        .await;
        let mut total = 0;
        for n in &names {
            total += support::once::assert_once(&ns, n, &seen).await;
        }
        println!("two releases: 20 LoopServices, {total} loops created, each once, none lost");
    }
}
