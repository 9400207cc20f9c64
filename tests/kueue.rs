//! LoopServices whose Jobs wait in a Kueue queue, against the real Kueue controller
//! (`hack/cluster.sh kueue`, which `make test` runs on the newest Kubernetes): a ClusterQueue of
//! 2 CPUs and 4 LoopServices whose loops ask for 1 CPU each. At most 2 loops run at once, none
//! is lost, a waiting loop is Queued, and its wait and any overrun are recorded. Measured from a
//! Job watch outside the operator.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use loopservice_operator::crd::{LoopResult, Phase};
use serde_json::json;
use support::*;

const N: usize = 4;
const INTERVAL: f64 = 10.0;
/// How long the loops run side by side before the figures are taken.
const RUN_FOR: Duration = Duration::from_secs(70);

/// What the watch saw of one Job: when it appeared, was admitted (resumed) and ended.
#[derive(Clone, Debug, Default)]
struct Seen {
    added: Option<jiff::Timestamp>,
    admitted: Option<jiff::Timestamp>,
    ended: Option<jiff::Timestamp>,
}

/// Watches the namespace's Jobs and counts those admitted and not ended, at every event.
struct AdmissionWatch {
    jobs: Arc<Mutex<BTreeMap<String, Seen>>>,
    most: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl AdmissionWatch {
    async fn start(ns: &TestNs) -> AdmissionWatch {
        let jobs: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let most: Arc<Mutex<usize>> = Arc::default();
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let mut listed_tx = Some(listed_tx);
        let (record, peak) = (jobs.clone(), most.clone());
        let api = ns.jobs();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let now = jiff::Timestamp::now();
                let j = match event {
                    Ok(Event::Apply(j) | Event::InitApply(j)) => j,
                    Ok(Event::InitDone) => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let mut all = record.lock().unwrap();
                let s = all.entry(j.name_any()).or_default();
                s.added.get_or_insert(now);
                if j.spec.as_ref().and_then(|s| s.suspend) != Some(true) {
                    s.admitted.get_or_insert(now);
                }
                if finished(&j).is_some() {
                    s.ended.get_or_insert(now);
                }
                let running = all.values().filter(|s| s.admitted.is_some() && s.ended.is_none()).count();
                let mut most = peak.lock().unwrap();
                *most = (*most).max(running);
            }
        });
        listed.await.expect("the Job watch listed the namespace");
        AdmissionWatch { jobs, most, task }
    }
}

impl Drop for AdmissionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cluster-scoped Kueue objects of one test, deleted when it ends.
struct Queue {
    name: String,
}

impl Queue {
    /// The queue of `examples/queued.yaml` (a ResourceFlavor, a 2-CPU ClusterQueue and the
    /// LocalQueue `loops`), its cluster-scoped objects named after namespace `ns` and for it only.
    fn create(ns: &str, example: &[serde_json::Value]) -> Queue {
        let mut docs = vec![];
        for doc in example.iter().filter(|d| d["apiVersion"].as_str().is_some_and(|v| v.starts_with("kueue.x-k8s.io/"))) {
            let mut d = doc.clone();
            match d["kind"].as_str() {
                Some("ResourceFlavor") => d["metadata"]["name"] = json!(ns),
                Some("ClusterQueue") => {
                    d["metadata"]["name"] = json!(ns);
                    d["spec"]["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
                    for group in d["spec"]["resourceGroups"].as_array_mut().into_iter().flatten() {
                        for flavor in group["flavors"].as_array_mut().into_iter().flatten() {
                            flavor["name"] = json!(ns);
                        }
                    }
                }
                Some("LocalQueue") => {
                    d["metadata"]["namespace"] = json!(ns);
                    d["spec"]["clusterQueue"] = json!(ns);
                }
                other => panic!("examples/queued.yaml: unexpected {other:?}"),
            }
            docs.push(serde_json::to_string(&d).unwrap());
        }
        assert_eq!(docs.len(), 3, "examples/queued.yaml has a ResourceFlavor, a ClusterQueue and a LocalQueue");
        kubectl_apply(&docs.join("\n---\n"));
        Queue { name: ns.to_string() }
    }
}

/// The documents of `examples/queued.yaml`.
fn example() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_root().join("examples/queued.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The ClusterQueue goes once its Workloads do, with the namespace.
        let _ = Command::new("kubectl").args(["delete", "--wait=false", "--ignore-not-found", "clusterqueue", &self.name]).output();
        let _ = Command::new("kubectl").args(["delete", "--wait=false", "--ignore-not-found", "resourceflavor", &self.name]).output();
    }
}

/// Kueue runs against this cluster: its CRDs are served and it answers /readyz.
async fn require_kueue() {
    let out = Command::new("kubectl").args(["get", "clusterqueues.kueue.x-k8s.io"]).output();
    let served = out.as_ref().is_ok_and(|o| o.status.success());
    let ready = kueue_answers_readyz().await;
    assert!(served && ready, "Kueue is not running against the cluster: run `hack/cluster.sh kueue` (make test does)");
}

/// Whether Kueue's health server (`hack/cluster.sh kueue` puts it on 127.0.0.1:28081) answers
/// `/readyz` with 200.
async fn kueue_answers_readyz() -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:28081").await else { return false };
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

mod newest_only {
    use super::*;

    #[tokio::test]
    #[ignore = "needs the local cluster with Kueue: run `make test`"]
    async fn four_loopservices_share_a_two_cpu_queue_at_most_two_run_none_lost_waits_recorded() {
        let ns = setup("kueue").await;
        require_kueue().await;
        let t0 = std::time::Instant::now();
        let example = example();
        let _queue = Queue::create(&ns.name, &example);
        wait_for("the ClusterQueue to be active", LONG, || async {
            let out = Command::new("kubectl")
                .args(["get", "clusterqueue", &ns.name, "-o", "jsonpath={.status.conditions[?(@.type==\"Active\")].status}"])
                .output()
                .ok()?;
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        })
        .await;
        println!("queue active {:.1}s after it was created", t0.elapsed().as_secs_f64());

        let names: Vec<String> = (0..N).map(|i| format!("queued-{i}")).collect();
        // The example's LoopService, four times: each loop asks for 1 CPU and sleeps 6 s every 10 s.
        let spec = |name: &str| {
            let mut v = example.iter().find(|d| d["kind"] == "LoopService").unwrap().clone();
            v["metadata"]["name"] = json!(name);
            // Every loop's Job kept, to count them.
            v["spec"]["successfulJobsHistoryLimit"] = json!(20);
            v
        };
        wait_served(&ns, &spec("probe"), "spec.jobMetadata", |ls| ls.spec.job_metadata.is_some()).await;
        let watch = AdmissionWatch::start(&ns).await;
        let op = Operator::start(&ns.name, &[]);
        for name in &names {
            create_ls(&ns, spec(name)).await.unwrap();
        }
        // What a user sees while a loop waits: phase Queued, in kubectl get too.
        let waiting = wait_for("a LoopService to be Queued", LONG, || async {
            let list = ns.loopservices().list(&Default::default()).await.ok()?;
            list.items.into_iter().find(|l| l.status.as_ref().is_some_and(|s| s.phase == Some(Phase::Queued)))
        })
        .await;
        let st = waiting.status.clone().unwrap();
        assert!(st.queued_since.is_some() && st.active_job.is_some(), "{st:?}");
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.message.contains("waits for its queue to admit Job"), "{}", ready.message);
        // kubectl get -o wide: phase Queued, and how long in the QUEUED column (a running
        // loop's row has none).
        let wide = wait_for("kubectl get to show a Queued loop", LONG, || async {
            let out = Command::new("kubectl").args(["get", "loopservices", "-n", &ns.name, "-o", "wide"]).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines().skip(1).any(|l| l.split_whitespace().nth(2) == Some("Queued")).then_some(text)
        })
        .await;
        // Cells by the header's columns (an empty cell leaves only spaces).
        let header = wide.lines().next().unwrap_or_default();
        let column = |name: &str| header.find(name).unwrap_or_else(|| panic!("no {name} column: {wide}"));
        let cell = |row: &str, from: usize, to: usize| row.get(from..to.min(row.len())).unwrap_or_default().trim().to_string();
        let (phase, queued, last_run) = (column("PHASE"), column("QUEUED"), column("LAST RUN"));
        for row in wide.lines().skip(1) {
            let (p, q) = (cell(row, phase, column("LOOPS")), cell(row, queued, last_run));
            assert_eq!(p == "Queued", !q.is_empty() && q != "<unknown>", "only a Queued row says how long it waits: {wide}");
        }
        println!("kubectl get loopservices -o wide, while {} waited:\n{wide}", waiting.name_any());

        tokio::time::sleep(RUN_FOR).await;
        let metrics = op.get("/metrics").await.unwrap_or_default();
        drop(op);
        let count = |stage: &str| {
            let prefix = format!("loopservice_start_delay_seconds_count{{stage=\"{stage}\"}} ");
            metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        let (created_count, admitted_count) = (count("created"), count("admitted"));
        // The figures, from the Jobs and the watch: every loop's Job, numbered 1..n each once.
        let seen = watch.jobs.lock().unwrap().clone();
        let most = *watch.most.lock().unwrap();
        let (mut created_late, mut waits, mut loops, mut overruns, mut finished_loops) = (vec![], vec![], 0, 0, 0);
        for name in &names {
            let jobs = loop_jobs(&ns, name).await;
            let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
            assert_eq!(numbers, (1..=jobs.len() as i64).collect::<Vec<_>>(), "{name}: loops lost or run twice: {numbers:?}");
            assert!(jobs.len() >= 2, "{name} ran {} loops in {RUN_FOR:?}", jobs.len());
            let st = status(&ns, name).await;
            assert!(st.loops_started >= jobs.len() as i64 && st.loops_started <= jobs.len() as i64 + 1, "{name}: {st:?}");
            assert_eq!(st.loops_failed, 0, "{name}: {:?}", st.last_error);
            assert_eq!(st.loops_succeeded, st.last_finished_loop, "{name}: every finished loop is counted");
            loops += jobs.len();
            overruns += st.overruns;
            for j in &jobs {
                let s = seen.get(&j.name_any()).cloned().unwrap_or_default();
                let due = ann_time(j, "loops.dev/scheduled-time");
                created_late.push(secs(due, s.added.expect("the watch saw every Job")));
                let record = st.history.iter().find(|r| r.r#loop == loop_number(j) && r.result != LoopResult::Missed);
                if let (Some(r), Some(_)) = (record, finished(j)) {
                    finished_loops += 1;
                    let admitted = r.admitted_time.unwrap_or_else(|| panic!("{name}: loop {} ended, no admittedTime: {r:?}", r.r#loop));
                    let wait = secs(r.start_time.0, admitted.0);
                    assert!(wait >= 0.0, "{name}: loop {} admitted before it started", r.r#loop);
                    waits.push(wait);
                    // Honest overruns: the loop's time counts from its Job's creation, queue and all.
                    let took = r.duration_seconds.unwrap();
                    assert_eq!(r.overran, took > INTERVAL, "{name}: loop {} took {took}s: {r:?}", r.r#loop);
                    if r.overran && wait >= 0.5 {
                        let o = st.last_overrun.as_ref().unwrap();
                        if o.r#loop == r.r#loop {
                            assert!(o.message.contains("waiting for its queue"), "{}", o.message);
                        }
                    }
                }
            }
        }
        assert!(most <= 2, "{most} loops admitted at once by a queue of 2 CPUs, 1 each");
        assert_eq!(most, 2, "4 loops of 6 s every 10 s fill both CPUs at some moment");
        assert!(!waits.is_empty() && waits.iter().cloned().fold(0.0, f64::max) > 1.0, "some loop waited for the queue: {waits:?}");
        created_late.sort_by(f64::total_cmp);
        waits.sort_by(f64::total_cmp);
        println!(
            "{N} LoopServices, interval {INTERVAL}s, sleep 6 s at 1 CPU each, a 2-CPU ClusterQueue, {RUN_FOR:?}: {loops} loops, \
             most admitted at once {most} (Job watch); created after due p50 {:.3}s max {:.3}s (n={}); \
             waited for admission p50 {:.1}s max {:.1}s (n={}); overruns {overruns}",
            percentile(&created_late, 0.5),
            created_late.last().unwrap(),
            created_late.len(),
            percentile(&waits, 0.5),
            waits.last().unwrap(),
            waits.len()
        );
        assert!(finished_loops >= N, "each LoopService finished a loop");
        // The start-delay metric tells the operator's part from the queue's.
        println!("loopservice_start_delay_seconds counts: created {created_count}, admitted {admitted_count}");
        // One created-stage sample per Job; a LoopService may have started one more loop between
        // the read of /metrics and the operator's stop.
        assert!(
            created_count <= loops as u64 && created_count + N as u64 >= loops as u64,
            "{created_count} created-stage samples for {loops} Jobs"
        );
        assert!(admitted_count as usize >= finished_loops && admitted_count as usize <= loops, "{metrics}");
    }
}
