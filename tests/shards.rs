//! Shards on the local cluster: `--shards N --shard-index i`. Two shards at once each run only
//! the LoopServices whose uid hashes into their share; a change from one shard to three and
//! back runs no loop twice and loses none. On an API server that serves sharded list and watch
//! (the local 1.37 turns its `ShardedListAndWatch` gate on) each shard is sent its own
//! LoopServices only; elsewhere (1.20) it is sent all and drops the others' itself: the tests
//! check whichever this API server does.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::ResourceExt;
use loopservice_operator::keys::ANN_CLAIMED_BY;
use loopservice_operator::shard::Shard;
use serde_json::json;
use support::*;

/// How long a change of hands may take: a standby looks again every 15 s.
const HANDOVER: Duration = Duration::from_secs(90);
const LEASE: &str = "shards";

/// An operator of `ns` that is shard `index` of `count`, with leader election (so claims).
fn shard(ns: &TestNs, index: u32, count: u32) -> Operator {
    let (index, count) = (index.to_string(), count.to_string());
    Operator::start(
        &ns.name,
        &[("SHARDS", &count), ("SHARD_INDEX", &index), ("LEADER_ELECT", "true"), ("LEASE_NAME", LEASE), ("POD_NAMESPACE", &ns.name)],
    )
}

/// The value of the series `name` whose labels include `labels` on `metrics`; `None` if absent.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn metrics(op: &Operator) -> String {
    wait_for("the operator's /metrics", Duration::from_secs(20), || op.get("/metrics")).await
}

/// Each LoopService's uid, by name.
async fn uids(ns: &TestNs) -> BTreeMap<String, String> {
    let list = ns.loopservices().list(&ListParams::default()).await.unwrap();
    list.items.iter().map(|l| (l.name_any(), l.uid().unwrap_or_default())).collect()
}

/// Each LoopService's claim (`loops.dev/claimed-by`), by name; empty when unclaimed.
async fn claims(ns: &TestNs) -> BTreeMap<String, String> {
    let list = ns.loopservices().list(&ListParams::default()).await.unwrap();
    list.items.iter().map(|l| (l.name_any(), l.annotations().get(ANN_CLAIMED_BY).cloned().unwrap_or_default())).collect()
}

/// The claim the shard of `count` that owns `uid` writes.
fn claim_of(ns: &TestNs, uid: &str, count: u32) -> String {
    let shard = (0..count).map(|i| Shard::new(i, count).unwrap()).find(|s| s.owns(uid)).unwrap();
    format!("{}/{}", ns.name, shard.lease_name(LEASE))
}

/// Waits until every LoopService is claimed as `count` shards claim it, and has started `more`
/// loops past `from` (its loops started then, by name).
async fn wait_worked_by(ns: &TestNs, count: u32, from: &BTreeMap<String, i64>, more: i64) {
    let uids = uids(ns).await;
    wait_for(&format!("every LoopService claimed by its shard of {count} and {more} loops on"), HANDOVER, || async {
        let claims = claims(ns).await;
        for (name, uid) in &uids {
            if claims[name] != claim_of(ns, uid, count) || status(ns, name).await.loops_started < from[name] + more {
                return None;
            }
        }
        Some(())
    })
    .await;
}

async fn loops_started(ns: &TestNs) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for name in uids(ns).await.keys() {
        out.insert(name.clone(), status(ns, name).await.loops_started);
    }
    out
}

/// Whether this API server answers a list with `shardSelector` with the shard's objects only.
async fn serves_sharded_lists(ns: &TestNs) -> bool {
    let all = uids(ns).await;
    let selector = Shard::new(0, 2).unwrap().selector().unwrap();
    let path = format!("/apis/loops.dev/v1alpha1/namespaces/{}/loopservices?shardSelector={}", ns.name, urlencode(&selector));
    let req = http::Request::get(path).body(vec![]).unwrap();
    let list: serde_json::Value = ns.client.request(req).await.unwrap();
    let n = list["items"].as_array().map_or(0, Vec::len);
    let expected = all.values().filter(|u| Shard::new(0, 2).unwrap().owns(u)).count();
    println!("a list with shardSelector returned {n} of {} LoopServices (shard 0 of 2 owns {expected})", all.len());
    n < all.len()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates LoopServices on the fake nodes, every 2 s, until each of `count` shards owns at
/// least `each` of them and there are `at_least` in all.
async fn create_spread(ns: &TestNs, count: u32, each: usize, at_least: usize) -> Vec<String> {
    let mut per = vec![0; count as usize];
    let mut names = vec![];
    while names.len() < at_least || per.iter().any(|&n| n < each) {
        let name = format!("l{:02}", names.len());
        let created = create_ls(ns, on_fake_nodes(&name, "2s", "1s")).await.unwrap();
        let uid = created.uid().unwrap();
        per[(0..count).position(|i| Shard::new(i, count).unwrap().owns(&uid)).unwrap()] += 1;
        names.push(name);
    }
    println!("{} LoopServices, by shard of {count}: {per:?}", names.len());
    names
}

/// Two shards of two run at once: each LoopService's loops are started by the shard its uid
/// hashes to and by no other, and each loop once.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn two_shards_at_once_each_run_only_their_own_loopservices() {
    let ns = setup("two-shards").await;
    let seen = support::once::watch_jobs(&ns, vec![]);
    let names = create_spread(&ns, 2, 2, 6).await;
    let server_side = serves_sharded_lists(&ns).await;
    let ops = [shard(&ns, 0, 2), shard(&ns, 1, 2)];
    let none = names.iter().map(|n| (n.clone(), 0)).collect();
    wait_worked_by(&ns, 2, &none, 3).await;
    let uids = uids(&ns).await;
    for (i, op) in ops.iter().enumerate() {
        let text = metrics(op).await;
        assert_eq!(sample(&text, "loopservice_shard", &[("index", &i.to_string()), ("shards", "2")]), Some(1.0), "{text}");
        for (name, uid) in &uids {
            let started = sample(&text, "loopservice_loops_started_total", &[("name", name)]).unwrap_or(0.0);
            if Shard::new(i as u32, 2).unwrap().owns(uid) {
                assert!(started >= 3.0, "shard {i} started {started} loops of its own {name}");
            } else {
                assert_eq!(started, 0.0, "shard {i} started loops of {name}, shard {}'s", 1 - i);
            }
        }
        let kept = sample(&text, "loopservice_watch_events_total", &[("kind", "loopservice"), ("shard", "ours")]).unwrap_or(0.0);
        let dropped = sample(&text, "loopservice_watch_events_total", &[("kind", "loopservice"), ("shard", "others")]).unwrap_or(0.0);
        let jobs_dropped = sample(&text, "loopservice_watch_events_total", &[("kind", "job"), ("shard", "others")]).unwrap_or(0.0);
        println!("shard {i} of 2: LoopService events kept {kept}, dropped {dropped}; Job events dropped {jobs_dropped}");
        assert!(kept > 0.0, "shard {i} was sent its own LoopServices");
        // Where the API server shards the watch, the other shard's LoopServices never arrive;
        // elsewhere they arrive and are dropped here. Jobs are always filtered here.
        if server_side {
            assert_eq!(dropped, 0.0, "the API server sends shard {i} only its own LoopServices");
        } else {
            assert!(dropped > 0.0, "shard {i} drops the other shard's LoopServices itself");
        }
        assert!(jobs_dropped > 0.0, "shard {i} drops the other shard's Jobs");
    }
    suspend_all_and_settle(&ns, &names).await;
    for name in &names {
        support::once::assert_once(&ns, name, &seen).await;
    }
}

/// One shard, then three (started while the one still runs, as a rolling change would), then
/// one again: each LoopService changes hands only once its shard has let go, each loop runs
/// once, and none is lost (every LoopService loops on after each change).
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn one_shard_to_three_and_back_runs_no_loop_twice_and_loses_none() {
    let ns = setup("reshard").await;
    let seen = support::once::watch_jobs(&ns, vec![]);
    let names = create_spread(&ns, 3, 2, 8).await;
    let mut one = shard(&ns, 0, 1);
    wait_worked_by(&ns, 1, &loops_started(&ns).await, 2).await;

    let three: Vec<Operator> = (0..3).map(|i| shard(&ns, i, 3)).collect();
    wait_standing_by(&ns, &three, 3).await;
    stop(&mut one).await;
    wait_worked_by(&ns, 3, &loops_started(&ns).await, 2).await;

    let back = shard(&ns, 0, 1);
    wait_standing_by(&ns, std::slice::from_ref(&back), 1).await;
    for mut op in three {
        stop(&mut op).await;
    }
    wait_worked_by(&ns, 1, &loops_started(&ns).await, 2).await;
    suspend_all_and_settle(&ns, &names).await;
    let mut total = 0;
    for name in &names {
        total += support::once::assert_once(&ns, name, &seen).await;
    }
    println!("{} LoopServices, {total} loops across 1 → 3 → 1 shards, each once", names.len());
    drop(back);
}

/// Waits until each of `ops` (the shards of `count`) stands by for all of its LoopServices,
/// which another release holds, and has written nothing to them.
async fn wait_standing_by(ns: &TestNs, ops: &[Operator], count: u32) {
    let uids = uids(ns).await;
    let before = claims(ns).await;
    for op in ops {
        let text = metrics(op).await;
        let index: u32 = (0..count).find(|i| sample(&text, "loopservice_shard", &[("index", &i.to_string())]).is_some()).unwrap();
        let own = uids.values().filter(|u| Shard::new(index, count).unwrap().owns(u)).count() as f64;
        wait_for(&format!("shard {index} of {count} to stand by for its {own} LoopServices"), HANDOVER, || async {
            (sample(&metrics(op).await, "loopservice_claimed_elsewhere", &[]) == Some(own)).then_some(())
        })
        .await;
    }
    assert_eq!(claims(ns).await, before, "a standby wrote no claim");
}

/// SIGTERM, and the drain over.
async fn stop(op: &mut Operator) {
    op.signal("TERM");
    let (code, took) = op.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "the operator drained and exited 0 (in {took:?})");
}

/// Suspends every LoopService and waits until each has recorded the end of its last loop.
async fn suspend_all_and_settle(ns: &TestNs, names: &[String]) {
    for name in names {
        let patch = json!({"spec": {"suspend": true}});
        ns.loopservices().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    for name in names {
        wait_status(ns, name, "its last loop's end recorded", |st| st.last_finished_loop == st.loops_started).await;
    }
}

/// The chart with `shards: 3`: a Deployment per shard, each with its own selector, flags and
/// Lease, and a Role that lets each patch only the shards' Leases.
#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn the_chart_runs_a_deployment_per_shard_each_with_its_own_lease() {
    let docs = helm_render(&["--set", "shards=3"]);
    let deployments: Vec<&serde_yaml::Value> = docs.iter().filter(|d| d["kind"].as_str() == Some("Deployment")).collect();
    assert_eq!(deployments.len(), 3);
    for (i, d) in deployments.iter().enumerate() {
        assert_eq!(d["metadata"]["name"].as_str(), Some(format!("x-loopservice-operator-shard-{i}").as_str()));
        let shard_label = |labels: &serde_yaml::Value| labels["loops.dev/shard"].as_str().map(String::from);
        assert_eq!(shard_label(&d["spec"]["selector"]["matchLabels"]), Some(i.to_string()), "the selector tells shards apart");
        assert_eq!(shard_label(&d["spec"]["template"]["metadata"]["labels"]), Some(i.to_string()));
        let args: Vec<&str> =
            d["spec"]["template"]["spec"]["containers"][0]["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
        for flag in ["--leader-elect", "--shards=3", &format!("--shard-index={i}")] {
            assert!(args.contains(&flag), "shard {i}: {flag} in {args:?}");
        }
    }
    let leader =
        docs.iter().find(|d| d["kind"].as_str() == Some("Role") && d["metadata"]["name"].as_str() == Some("x-loopservice-operator-leader"));
    let names: Vec<&str> =
        leader.expect("the leader Role")["rules"][0]["resourceNames"].as_sequence().unwrap().iter().filter_map(|n| n.as_str()).collect();
    assert_eq!(names, ["loopservice-operator-0-of-3", "loopservice-operator-1-of-3", "loopservice-operator-2-of-3"]);

    let one = helm_render(&[]);
    let deployments: Vec<&serde_yaml::Value> = one.iter().filter(|d| d["kind"].as_str() == Some("Deployment")).collect();
    assert_eq!(deployments.len(), 1);
    assert_eq!(deployments[0]["metadata"]["name"].as_str(), Some("x-loopservice-operator"), "one shard keeps the Deployment's name");
    assert!(!serde_yaml::to_string(deployments[0]).unwrap().contains("shard"), "and has no shard flags or labels");
}
