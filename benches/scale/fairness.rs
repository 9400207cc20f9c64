//! Phase 5: fairness between namespaces. `BENCH_FAIR_N` (100) healthy LoopServices every 10 s
//! in one namespace; their Jobs' lateness (the bench's Job watch against each Job's due time)
//! alone; while as many broken LoopServices are created in a namespace the operator does not
//! watch, and the 60 s after (the control: what the creates cost without the operator's work on
//! them); while `BENCH_FAIR_BROKEN` (5000) LoopServices the API server refuses are created in
//! another namespace (the bench's own creates load the API server too); beside them, once
//! created (while the operator reports them); once all are reported; and after a restart of the
//! operator (SIGTERM, then a new process) with both there (loops due once it leads with its
//! caches synced).
//!
//! A loop is due at the latest of: its due time as the operator stamped it on the Job (the start
//! of the loop before plus the interval); the end of the loop before as `status.history` records
//! it (the Job's completionTime, to the second); and when the bench's Job watch first saw that
//! end (to the millisecond: no watcher, the operator included, can know of it sooner). A loop
//! whose predecessor overran starts when it ends (the loop's rule), and is late only after that.
//! How many loops were due at an end, and so timed from it, is printed beside, and so is the
//! lateness timed from the recorded end alone, as this bench timed it before it saw the ends.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::{watcher, WatchStreamExt};
use loopservice_operator::crd::Phase;
use loopservice_operator::keys::{ANN_SCHEDULED, ANN_STARTED, LABEL_LOOP, LABEL_NAME};
use serde_json::json;

use crate::apiserver::{self, Counts};
use crate::peers::{create_many, fake_node_pod_spec};
use crate::support::{create_ls, ensure_crd, Operator, TestNs};
use crate::watch::{JobWatch, Seen};
use crate::{plane, proc};

/// How long each window lasts.
const WINDOW: Duration = Duration::from_secs(60);

pub struct FairResult {
    pub healthy: usize,
    pub broken: usize,
    pub create_broken_s: f64,
    /// Seconds from the first create of a broken LoopService until all said Invalid, if by the
    /// end of the window beside them.
    pub all_reported_s: Option<f64>,
    pub alone: Window,
    /// Beside `broken` LoopServices of the same spec in a namespace the operator does not
    /// watch, the 60 s after they were created (in `create_unwatched_s`).
    pub unwatched: Window,
    pub create_unwatched_s: f64,
    /// While the bench creates the broken LoopServices the operator does not watch.
    pub during_unwatched: Window,
    /// While the bench creates the broken LoopServices the operator watches.
    pub during: Window,
    pub beside: Window,
    /// Beside them once all were reported Invalid (their report, a status write and an Event
    /// each, done).
    pub settled: Window,
    pub restarted: Window,
    /// Broken LoopServices whose status said Invalid at the end.
    pub broken_reported: usize,
    pub namespaces: (TestNs, TestNs, TestNs),
}

/// The healthy loops of one window.
#[derive(Default)]
pub struct Window {
    /// Each loop's Job after the first: when it was due (seconds into the window) and its
    /// lateness (seconds).
    pub late: Vec<(f64, f64)>,
    /// The lateness of the loops due when the loop before ended (it overran): timed from that
    /// end, as recorded (the Job's completionTime), so it includes how long the Job's end took
    /// to reach the operator.
    pub after_overrun: Vec<f64>,
    /// The lateness of the others: due at the start of the loop before plus the interval.
    pub on_time: Vec<f64>,
    /// Each loop's lateness timed from the later of its stamped due time and the recorded end
    /// before it, without the end the watch saw (seconds).
    pub from_recorded_end: Vec<f64>,
    /// Loops whose predecessor's end was not in `status.history`: timed from the stamped due time.
    pub unknown_end: usize,
    /// Each loop's lateness in two parts (seconds): the operator's, from its due time to the
    /// start the operator stamped on its Job just before the create; and the rest, the create
    /// and the watch event's way to the bench.
    pub parts: Vec<(f64, f64)>,
    /// What the API server was asked in the window, by every client.
    pub calls: Counts,
    /// CPU seconds in the window: the operator's, then the control plane's by component.
    pub cpu: Vec<(&'static str, f64)>,
}

/// Each healthy loop's end as its LoopService's `status.history` records it now.
async fn ends(ns: &TestNs) -> HashMap<(String, i64), jiff::Timestamp> {
    let listed = ns.loopservices().list(&ListParams::default()).await.expect("list the healthy LoopServices").items;
    let mut ends = HashMap::new();
    for l in listed {
        for r in l.status.iter().flat_map(|s| &s.history) {
            if let Some(end) = &r.end_time {
                ends.insert((l.metadata.name.clone().unwrap_or_default(), r.r#loop), end.0);
            }
        }
    }
    ends
}

/// When every broken LoopService's status first said Invalid, from a watch of their namespace.
struct Reported {
    at: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reported {
    fn start(ns: &TestNs, m: usize) -> Reported {
        let at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (api, done) = (ns.loopservices(), at.clone());
        let task = tokio::spawn(async move {
            let mut invalid = HashSet::new();
            let stream = watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff().applied_objects();
            futures::pin_mut!(stream);
            while let Some(ls) = stream.next().await {
                let Ok(ls) = ls else { continue };
                if ls.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid) {
                    invalid.insert(ls.metadata.name.unwrap_or_default());
                    if invalid.len() >= m {
                        *done.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        });
        Reported { at, task }
    }

    fn at(&self) -> Option<Instant> {
        *self.at.lock().unwrap()
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        self.task.abort();
    }
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

/// Starts the operator for both namespaces; returns once it may start loops: ready, and with
/// leader election leading with its caches synced (a standby is ready before that).
async fn start(healthy: &TestNs, broken: &TestNs) -> (Operator, String) {
    let (mut op, addr) = proc::start_for(&[&healthy.name, &broken.name]).await;
    proc::wait_ready(&mut op, &addr, Duration::from_secs(120)).await;
    proc::wait_synced(&mut op, Duration::from_secs(120)).await;
    (op, addr)
}

/// The loops after the first that were due and seen in `[from, to)`, each due at the latest of
/// its stamped due time, the end of the loop before it as recorded (`ends`), and when the watch
/// saw that end.
fn lateness(watch: &JobWatch, ends: &HashMap<(String, i64), jiff::Timestamp>, from: jiff::Timestamp, to: jiff::Timestamp) -> Window {
    let mut w = Window::default();
    let snapshot = watch.snapshot();
    let loop_of = |s: &Seen| s.labels.get(LABEL_LOOP).and_then(|l| l.parse::<i64>().ok()).unwrap_or(0);
    // When the watch first saw each loop's Job end, by (LoopService, loop).
    let seen_ended: HashMap<(&str, i64), jiff::Timestamp> =
        snapshot.iter().filter_map(|(_, s)| Some(((s.labels.get(LABEL_NAME)?.as_str(), loop_of(s)), s.ended?))).collect();
    for (_, s) in snapshot.iter().filter(|(_, s)| !s.relisted && s.at < to) {
        let n = loop_of(s);
        let (Some(stamped), Some(name), true) = (s.ann_time(ANN_SCHEDULED), s.labels.get(LABEL_NAME), n >= 2) else { continue };
        let recorded = ends.get(&(name.clone(), n - 1)).copied();
        let end = [recorded, seen_ended.get(&(name.as_str(), n - 1)).copied()].into_iter().flatten().max();
        let due = end.map_or(stamped, |e| stamped.max(e));
        if due < from {
            continue;
        }
        w.unknown_end += usize::from(end.is_none());
        let late = s.at.duration_since(due).as_secs_f64();
        w.from_recorded_end.push(s.at.duration_since(recorded.map_or(stamped, |e| stamped.max(e))).as_secs_f64());
        // Due at the end before it, not at its stamped time: its predecessor overran.
        if end.is_some_and(|e| e >= stamped) {
            w.after_overrun.push(late);
        } else {
            w.on_time.push(late);
        }
        w.late.push((due.duration_since(from).as_secs_f64(), late));
        if let Some(started) = s.ann_time(ANN_STARTED) {
            w.parts.push((started.duration_since(due).as_secs_f64(), s.at.duration_since(started).as_secs_f64()));
        }
    }
    w
}

/// What a span of the bench measured from its start: the API server's request counts, the
/// operator's and the control plane's CPU, and the healthy loops due in it.
struct Span {
    before: Counts,
    plane: plane::Cpu,
    op_cpu: f64,
    from: jiff::Timestamp,
}

impl Span {
    async fn start(op: &Operator, healthy: &TestNs) -> Span {
        let before = apiserver::scrape(&healthy.client).await;
        Span { before, plane: plane::Cpu::read(), op_cpu: proc::cpu_secs(op.pid()), from: jiff::Timestamp::now() }
    }

    async fn end(self, op: &Operator, watch: &JobWatch, healthy: &TestNs) -> Window {
        let to = jiff::Timestamp::now();
        let mut cpu = vec![("operator", proc::cpu_secs(op.pid()) - self.op_cpu)];
        cpu.extend(plane::Cpu::read().since(&self.plane));
        let calls = apiserver::diff(&self.before, &apiserver::scrape(&healthy.client).await);
        Window { calls, cpu, ..lateness(watch, &ends(healthy).await, self.from, to) }
    }
}

async fn window(op: &mut Operator, watch: &JobWatch, healthy: &TestNs, what: &str) -> Window {
    let span = Span::start(op, healthy).await;
    let seen = watch.count();
    tokio::time::sleep(WINDOW).await;
    assert!(watch.count() > seen, "no healthy Job in {WINDOW:?} {what}; operator log:\n{}", proc::tail(&op.log_text()));
    span.end(op, watch, healthy).await
}

/// Creates `m` broken LoopServices in `ns`, 32 at a time; returns the seconds it took and the
/// span's measures (the healthy loops due meanwhile, the API requests and the CPU).
async fn create_broken(op: &Operator, watch: &JobWatch, healthy: &TestNs, ns: &TestNs, m: usize) -> (f64, Window) {
    let span = Span::start(op, healthy).await;
    let t = Instant::now();
    let creates = futures::stream::iter(0..m)
        .map(|i| async move {
            let name = format!("broken-{i}");
            create_ls(ns, broken(&name)).await.unwrap_or_else(|e| panic!("create LoopService {name}: {e}"));
        })
        .buffer_unordered(32);
    creates.collect::<Vec<()>>().await;
    let took = t.elapsed().as_secs_f64();
    (took, span.end(op, watch, healthy).await)
}

pub async fn run(n: usize, m: usize) -> FairResult {
    let healthy = TestNs::new("bench-fair").await;
    let broken_ns = TestNs::new("bench-broken").await;
    let unwatched = TestNs::new("bench-unwatched").await;
    ensure_crd(&healthy.client).await;
    let watch = JobWatch::start(&healthy.name);
    create_many(&healthy, "loop-", 0..n, "10s", false).await;
    let (mut op, _) = start(&healthy, &broken_ns).await;
    // The first loops all start at once; the windows measure the loops after them.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let alone = window(&mut op, &watch, &healthy, "alone").await;
    // The control: as many broken LoopServices in a namespace the operator does not watch, so
    // what the creates and the API server's work on them cost the healthy loops, without the
    // operator's reports.
    let (create_unwatched_s, during_unwatched) = create_broken(&op, &watch, &healthy, &unwatched, m).await;
    let unwatched_w = window(&mut op, &watch, &healthy, "beside broken LoopServices the operator does not watch").await;

    let reported = Reported::start(&broken_ns, m);
    let t = Instant::now();
    let (create_broken_s, during) = create_broken(&op, &watch, &healthy, &broken_ns, m).await;
    let beside = window(&mut op, &watch, &healthy, "beside the broken LoopServices").await;
    let all_reported_s = loop {
        match reported.at() {
            Some(at) => break Some(at.duration_since(t).as_secs_f64()),
            None if t.elapsed() > Duration::from_secs(600) => break None,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    drop(reported);
    let settled = window(&mut op, &watch, &healthy, "beside the broken LoopServices, all reported").await;

    // A restart as a rolling update makes it: SIGTERM, the drain, then a new process. With
    // leader election (`BENCH_OPERATOR_ENV=LEADER_ELECT=true`, the chart's default) the old one
    // lets its Lease go, so the new one is not held back by a crashed leader's Lease.
    op.signal("TERM");
    op.wait_exit(Duration::from_secs(60)).await;
    let (mut op, _) = start(&healthy, &broken_ns).await;
    let restarted = window(&mut op, &watch, &healthy, "after a restart").await;
    drop(op);
    let listed = broken_ns.loopservices().list(&ListParams::default()).await.expect("list broken LoopServices").items;
    let broken_reported = listed.iter().filter(|l| l.status.as_ref().and_then(|s| s.phase) == Some(Phase::Invalid)).count();
    FairResult {
        healthy: n,
        broken: m,
        create_broken_s,
        all_reported_s,
        alone,
        unwatched: unwatched_w,
        create_unwatched_s,
        during_unwatched,
        during,
        beside,
        settled,
        restarted,
        broken_reported,
        namespaces: (healthy, broken_ns, unwatched),
    }
}
