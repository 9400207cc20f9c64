//! Steady load (`make bench-steady`, the phase `steady`): `BENCH_STEADY_N` (1000) loops every
//! `BENCH_STEADY_INTERVAL` (60 s) for `BENCH_STEADY_MINUTES` (4) minutes, on the fake nodes,
//! three ways one after the other, each in a namespace of its own deleted before the next:
//!
//! 1. LoopServices run by the operator, started once they all exist (so their first loops are
//!    one burst at its start, which sets each LoopService's moment in the interval);
//! 2. CronJobs (`* * * * *`) run by the controller manager, over the first whole minutes after
//!    they exist;
//! 3. no controller: a bare client creates the operator's Job for each LoopService of 1 at the
//!    moments its loops came due there (its first due time in the minutes measured, then every
//!    interval), at most the operator's default concurrency in flight: what the control plane
//!    gives a client that does nothing but create the Jobs on time (the ceiling; its first wave
//!    includes opening its connections).
//!
//! Lateness is when the Job's ADDED event reached the bench's own Job watch less its due time:
//! - LoopService loop k >= 2: max(start of loop k-1 + interval, end of loop k-1), the start from
//!   loop k-1's Job (`loops.dev/start-time`) and the end from the LoopService's `status.history`
//!   read at the phase's end (the Job's end, to the second), or the Job's `loops.dev/jittered-time`
//!   if it has one; loops the operator stamped with another `loops.dev/scheduled-time` are counted;
//! - CronJob: its scheduled minute (`batch.kubernetes.io/cronjob-scheduled-timestamp`);
//! - bare client: the moment it was to create the Job.
//!
//! Jobs due are those whose due time fell in the minutes measured (for the LoopServices and the
//! bare client, from half an interval after the operator was ready: past the burst of first
//! loops, before the next are due); a due time that passed with no Job by the end of a grace of
//! 15 s counts as due and not made, once per interval. CPU is
//! read from /proc over each phase: the operator, the controller manager, the bench process.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{ListParams, PostParams};
use kube::Api;
use loopservice_operator::keys::{ANN_JITTERED, ANN_SCHEDULED, ANN_STARTED, LABEL_LOOP, LABEL_NAME};

use crate::peers::{create_many, cronjob, CRON_SCHEDULED};
use crate::support::{ensure_crd, wait_until, TestNs};
use crate::watch::{JobWatch, Seen};
use crate::{delete_and_wait, floor, plane, proc};

const GRACE: SignedDuration = SignedDuration::from_secs(15);

/// `BENCH_STEADY_N`, `BENCH_STEADY_INTERVAL` (seconds, `60` or `60s`), `BENCH_STEADY_MINUTES`.
pub fn sizes() -> (usize, u64, usize) {
    let interval = std::env::var("BENCH_STEADY_INTERVAL").ok().and_then(|v| v.trim().trim_end_matches('s').parse().ok());
    let n = crate::stats::env_num("BENCH_STEADY_N", 1000);
    (n, interval.unwrap_or(60).max(1), crate::stats::env_num("BENCH_STEADY_MINUTES", 4).max(1))
}

pub struct Phase {
    pub name: &'static str,
    /// What made the Jobs, and the CPU seconds it used over the phase.
    pub maker: (&'static str, f64),
    pub peak_rss_mib: Option<f64>,
    pub made: usize,
    pub due: usize,
    /// (seconds from the phase's start to the due time, lateness in seconds) of each Job made.
    pub late: Vec<(f64, f64)>,
    /// CPU seconds of each control plane process over the phase.
    pub plane: Vec<(&'static str, f64)>,
    /// etcd's database (total, in use; MiB) before and after.
    pub db: [Option<(f64, f64)>; 2],
    pub notes: Vec<String>,
}

pub struct Steady {
    pub n: usize,
    pub interval: u64,
    pub minutes: usize,
    pub phases: Vec<Phase>,
}

/// Runs the three phases; each namespace is deleted, and waited for, before the next.
pub async fn run(n: usize, interval: u64, minutes: usize) -> Steady {
    let (ls, offsets, ns) = loopservices(n, interval, minutes).await;
    assert!(ls.made > 0, "no LoopService loop after the first was seen: the operator did not loop");
    delete_and_wait(ns).await;
    let (cron, ns) = cronjobs(n, minutes).await;
    assert!(cron.made > 0, "no CronJob Job was seen for the minutes measured");
    delete_and_wait(ns).await;
    let (bare, ns) = ceiling(&offsets, interval, minutes).await;
    delete_and_wait(ns).await;
    Steady { n, interval, minutes, phases: vec![ls, cron, bare] }
}

/// The control plane's CPU and etcd's size from one instant.
struct Meter(plane::Cpu, Option<(f64, f64)>);

impl Meter {
    fn start() -> Meter {
        Meter(plane::Cpu::read(), plane::etcd_db())
    }

    fn phase(self, name: &'static str, maker: (&'static str, f64)) -> Phase {
        let plane = plane::Cpu::read().since(&self.0);
        let db = [self.1, plane::etcd_db()];
        Phase { name, maker, peak_rss_mib: None, made: 0, due: 0, late: vec![], plane, db, notes: vec![] }
    }
}

fn secs(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// Phase 1: the operator's lateness, and each LoopService's first due time in the minutes
/// measured as seconds after the operator was ready (for the ceiling).
async fn loopservices(n: usize, interval: u64, minutes: usize) -> (Phase, Vec<f64>, TestNs) {
    let ns = TestNs::new("bench-steady-ls").await;
    ensure_crd(&ns.client).await;
    let watch = JobWatch::start(&ns.name);
    let t = Instant::now();
    create_many(&ns, "loop-", 0..n, &format!("{interval}s"), false).await;
    println!("  LoopServices: created {n} in {:.1} s, then started the operator; running {minutes} min", t.elapsed().as_secs_f64());
    let meter = Meter::start();
    let (mut op, addr) = proc::start(&ns.name).await;
    let t0 = proc::wait_ready(&mut op, &addr, Duration::from_secs(60)).await;
    // The minutes measured begin half an interval after ready: after the first loops' burst,
    // before the next loops are due.
    let begin = t0 + SignedDuration::from_secs_f64(interval as f64 / 2.0);
    let end = begin + SignedDuration::from_secs(minutes as i64 * 60);
    while Timestamp::now() < end + GRACE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if Timestamp::now() > t0 + SignedDuration::from_secs(30) && watch.count() == 0 {
            panic!("no Job at all 30 s after the operator was ready with {n} LoopServices; log:\n{}", proc::tail(&op.log_text()));
        }
    }
    // Each loop's end as the LoopService records it (the last HISTORY loops).
    let mut ends: HashMap<(String, i64), Option<Timestamp>> = HashMap::new();
    for l in ns.loopservices().list(&ListParams::default()).await.expect("list LoopServices").items {
        for r in l.status.iter().flat_map(|s| &s.history).filter(|r| !r.job_name.is_empty()) {
            ends.insert((l.metadata.name.clone().unwrap_or_default(), r.r#loop), r.end_time.as_ref().map(|t| t.0));
        }
    }
    let pid = op.pid();
    let cpu = proc::cpu_secs(pid);
    let mut p = meter.phase("LoopService", ("operator", cpu));
    p.peak_rss_mib = Some(proc::memory(pid).1);
    drop(op);
    let jobs = watch.snapshot();
    drop(watch);

    let mut by_ls: BTreeMap<String, Vec<(i64, Seen)>> = BTreeMap::new();
    for (_, s) in jobs {
        let l = s.labels.get(LABEL_LOOP).and_then(|v| v.parse().ok()).unwrap_or(-1);
        by_ls.entry(s.labels.get(LABEL_NAME).cloned().unwrap_or_default()).or_default().push((l, s));
    }
    let every = SignedDuration::from_secs(interval as i64);
    // The due times from `from` on, one interval apart, within the minutes measured.
    let passed = |from: Timestamp| {
        let behind = secs(begin.duration_since(from)).max(0.0);
        let from = from + SignedDuration::from_secs_f64((behind / interval as f64).ceil() * interval as f64);
        (secs(end.duration_since(from)) / interval as f64).ceil().max(0.0) as usize
    };
    let (mut offsets, mut unknown_end, mut stamped, mut relisted) = (vec![], 0, 0, 0);
    for (name, mut loops) in by_ls {
        loops.sort_by_key(|(l, _)| *l);
        let mut first = None;
        // The due time of the loop after `(l, s)`; `None` while it runs.
        let mut next = |l: i64, s: &Seen| -> Option<Timestamp> {
            let by_start = s.ann_time(ANN_STARTED)? + every;
            match ends.get(&(name.clone(), l)) {
                Some(end) => end.map(|e| by_start.max(e)),
                None => {
                    unknown_end += 1;
                    Some(by_start)
                }
            }
        };
        for w in loops.windows(2) {
            let ((pl, prev), (_, cur)) = (&w[0], &w[1]);
            let Some(due) = cur.ann_time(ANN_JITTERED).or_else(|| next(*pl, prev)) else { continue };
            if due < begin || due >= end {
                continue;
            }
            first.get_or_insert(due);
            p.made += 1;
            p.due += 1;
            if cur.ann_time(ANN_SCHEDULED).is_some_and(|s| s.duration_since(due).abs() > SignedDuration::from_millis(1)) {
                stamped += 1;
            }
            if cur.relisted {
                relisted += 1;
                continue;
            }
            let late = secs(cur.at.duration_since(due));
            p.late.push((secs(due.duration_since(t0)), late));
            // The due times that passed while it was late, one per whole interval: not made.
            p.due += (late / interval as f64).max(0.0) as usize;
        }
        if let Some((l, last)) = loops.last() {
            if let Some(due) = next(*l, last) {
                p.due += passed(due);
                first.get_or_insert(due);
            }
        }
        offsets.extend(first.map(|d| secs(d.duration_since(t0))));
    }
    if offsets.len() < n {
        p.notes.push(format!("{} LoopServices had no Job at all (their due times are not counted)", n - offsets.len()));
    }
    if unknown_end > 0 {
        p.notes.push(format!("{unknown_end} loops' ends were no longer in status.history: due = start + interval"));
    }
    p.notes.push(format!("{stamped} loops stamped by the operator with another due time (loops.dev/scheduled-time)"));
    if relisted > 0 {
        p.notes.push(format!("{relisted} Jobs seen only in a relist of the bench's watch: made, not timed"));
    }
    (p, offsets, ns)
}

/// Phase 2: `n` CronJobs every minute, over the `minutes` whole minutes after they exist.
async fn cronjobs(n: usize, minutes: usize) -> (Phase, TestNs) {
    let ns = TestNs::new("bench-steady-cron").await;
    let watch = JobWatch::start(&ns.name);
    let api: Api<CronJob> = Api::namespaced(ns.client.clone(), &ns.name);
    let t = Instant::now();
    let creates = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &cronjob(&format!("cron-{i}"))).await.expect("create CronJob") }
        })
        .buffer_unordered(16);
    creates.collect::<Vec<_>>().await;
    let meter = Meter::start();
    let kcm = plane::pid("kube-controller-manager");
    let kcm_cpu = kcm.map_or(f64::NAN, proc::cpu_secs);
    let first = (Timestamp::now().as_second() + 2).div_euclid(60) * 60 + 60;
    let schedules: Vec<i64> = (0..minutes as i64).map(|k| first + 60 * k).collect();
    let t0 = Timestamp::from_second(first).unwrap();
    println!("  CronJobs: created {n} in {:.1} s; measuring the {minutes} minutes from {t0}", t.elapsed().as_secs_f64());
    let last = Timestamp::from_second(*schedules.last().unwrap()).unwrap();
    let measured = |watch: &JobWatch| -> Vec<(f64, f64, bool)> {
        let jobs = watch.snapshot();
        let due = |s: &Seen| s.ann_time(CRON_SCHEDULED).filter(|d| schedules.contains(&d.as_second()));
        jobs.iter().filter_map(|(_, s)| due(s).map(|d| (secs(d.duration_since(t0)), secs(s.at.duration_since(d)), s.relisted))).collect()
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Timestamp::now();
        if now > t0 + SignedDuration::from_secs(40) && watch.count() == 0 {
            panic!("no Job from {n} CronJobs 40 s after the minute: is the CronJob controller running?");
        }
        if now > last && (measured(&watch).len() >= n * minutes || now > last + SignedDuration::from_secs(55)) {
            break;
        }
    }
    let seen = measured(&watch);
    let cpu = kcm.filter(|p| Some(*p) == plane::pid("kube-controller-manager")).map_or(f64::NAN, |p| proc::cpu_secs(p) - kcm_cpu);
    let mut p = meter.phase("CronJob", ("kube-controller-manager", cpu));
    drop(watch);
    (p.made, p.due) = (seen.len(), n * minutes);
    p.late = seen.iter().filter(|s| !s.2).map(|s| (s.0, s.1)).collect();
    p.notes.push(format!("Jobs not seen within 55 s of the last minute count as not made: {}", (n * minutes).saturating_sub(seen.len())));
    (p, ns)
}

/// Phase 3: the ceiling. The operator's Job of loop k of LoopService `loop-<i>`, created at
/// `t0 + offsets[i] + (k - 2) * interval` while that is within the minutes measured (`offsets`
/// are seconds after the operator was ready in phase 1).
async fn ceiling(offsets: &[f64], interval: u64, minutes: usize) -> (Phase, TestNs) {
    let ns = TestNs::new("bench-steady-bare").await;
    let watch = JobWatch::start(&ns.name);
    let at_once = floor::at_once()[0];
    let t0 = Timestamp::now() + SignedDuration::from_secs(5);
    // As in phase 1: from half an interval after `t0`, for `minutes`.
    let span = interval as f64 / 2.0 + (minutes * 60) as f64;
    let mut plan: Vec<(Timestamp, k8s_openapi::api::batch::v1::Job)> = vec![];
    for (i, o) in offsets.iter().enumerate() {
        for (k, x) in (0..).map(|k| o + (k * interval) as f64).take_while(|x| *x < span).enumerate() {
            let due = t0 + SignedDuration::from_secs_f64(x);
            plan.push((due, floor::loop_job(&format!("loop-{i}"), k as i64 + 2, due)));
        }
    }
    plan.sort_by_key(|(due, _)| *due);
    let due_n = plan.len();
    println!("  bare client: {} LoopServices' {due_n} Jobs over {minutes} min, {at_once} creates at a time", offsets.len());
    let api: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(kube::Client::try_default().await.expect("a client"), &ns.name);
    let meter = Meter::start();
    let cpu0 = proc::cpu_secs(std::process::id());
    let creates = futures::stream::iter(plan)
        .map(|(due, job)| {
            let api = api.clone();
            async move {
                wait_until(due).await;
                api.create(&PostParams::default(), &job).await.map(|_| ())
            }
        })
        .buffer_unordered(at_once);
    let failed = creates.filter(|r| futures::future::ready(r.is_err())).count().await;
    wait_until(t0 + SignedDuration::from_secs_f64(span) + GRACE).await;
    let mut p = meter.phase("bare client (ceiling)", ("bench process", proc::cpu_secs(std::process::id()) - cpu0));
    let jobs = watch.snapshot();
    drop(watch);
    let timed = |s: &Seen| s.ann_time(ANN_SCHEDULED).filter(|_| !s.relisted);
    p.late = jobs.iter().filter_map(|(_, s)| timed(s).map(|d| (secs(d.duration_since(t0)), secs(s.at.duration_since(d))))).collect();
    (p.made, p.due) = (jobs.len(), due_n);
    if failed > 0 {
        p.notes.push(format!("{failed} creates failed"));
    }
    (p, ns)
}
