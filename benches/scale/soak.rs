//! The soak (`make soak`, the phase `soak`; not in CI): `SOAK_N` (1000) LoopServices every
//! `SOAK_INTERVAL` (60 s) on the fake nodes for `SOAK_MINUTES` (60), sampled once a minute
//! from outside the operator:
//!
//! - its resident memory (VmRSS) and open sockets (its `/proc/<pid>/fd` links to sockets);
//! - reconciles run in the minute (`loopservice_reconciles_total` on its /metrics), and what
//!   drives them: the objects its watches were sent, by kind (`loopservice_watch_events_total`),
//!   and the reconciles' own asks to run again, by why (`loopservice_requeues_total`);
//! - Events the operator wrote in the minute (events.k8s.io Events of the namespace reported by
//!   it, not seen before) and in all;
//! - the size of a LoopService's status as stored (JSON bytes, mean and largest);
//! - etcd's database (total and in use);
//! - the namespace's Jobs (the history limits should hold them flat);
//! - the Jobs made in the minute (by the bench's own Job watch) and how long after its
//!   `loops.dev/scheduled-time` each was seen (p99);
//! - the loops that ended in the minute (by `status.history`) and how long they ran (mean).
//!
//! Flat lines are the pass: what grows with time is a leak to find.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use loopservice_operator::keys::ANN_SCHEDULED;

use crate::peers::create_many;
use crate::stats::{env_num, Sample};
use crate::support::{ensure_crd, TestNs};
use crate::watch::JobWatch;
use crate::{plane, proc};

/// The `reportingController` of the operator's Events.
const REPORTER: &str = "loopservice-operator";

/// `SOAK_N`, `SOAK_INTERVAL` (seconds), `SOAK_MINUTES`.
pub fn sizes() -> (usize, u64, usize) {
    (env_num("SOAK_N", 1000), env_num("SOAK_INTERVAL", 60).max(1) as u64, env_num("SOAK_MINUTES", 60).max(1))
}

/// One minute's figures.
#[derive(Clone, Debug)]
pub struct Row {
    pub minute: usize,
    pub rss_mib: f64,
    pub sockets: usize,
    pub reconciles: f64,
    /// The minute's watch events by kind: LoopServices, Jobs, Pods.
    pub watched: [f64; 3],
    /// The minute's asks to run again: at a due time, while running (each 15 s), while
    /// running with suspect caches (each 2 s), for the cache to show an own write, all others.
    pub requeues: [f64; 5],
    /// Loops that ended in the minute, and their mean run time (seconds).
    pub ended: usize,
    pub ran_mean: f64,
    pub events_new: usize,
    pub events: usize,
    pub status_mean: f64,
    pub status_max: usize,
    /// etcd's database, total and in use, MiB.
    pub db: Option<(f64, f64)>,
    pub jobs: usize,
    pub made: usize,
    /// p99 of (Job seen − its scheduled time), seconds, over `made`.
    pub late_p99: f64,
}

/// Runs the soak; prints each minute's row as it is taken.
pub async fn run(n: usize, interval: u64, minutes: usize) -> (Vec<Row>, TestNs) {
    let ns = TestNs::new("bench-soak").await;
    ensure_crd(&ns.client).await;
    let watch = JobWatch::start(&ns.name);
    create_many(&ns, "loop-", 0..n, &format!("{interval}s"), false).await;
    let (mut op, addr) = proc::start(&ns.name).await;
    proc::wait_ready(&mut op, &addr, Duration::from_secs(120)).await;
    let metrics_addr = op.metrics_addr().await;
    println!("  {n} LoopServices every {interval} s; the operator is ready; one row a minute for {minutes} min");
    println!("{}", header());
    let began = Instant::now();
    let mut state = State::default();
    let mut rows = vec![];
    for minute in 1..=minutes {
        let at = Duration::from_secs(60 * minute as u64);
        tokio::time::sleep(at.saturating_sub(began.elapsed())).await;
        if let Ok(Some(status)) = op.child.try_wait() {
            panic!("the operator exited ({status}) at minute {minute}; log:\n{}", proc::tail(&op.log_text()));
        }
        let row = state.take(minute, &ns, op.pid(), &metrics_addr, &watch).await;
        println!("{}", line(&row));
        rows.push(row);
    }
    drop(op);
    drop(watch);
    (rows, ns)
}

/// What the rows count from: the last minute's totals.
#[derive(Default)]
struct State {
    reconciles: f64,
    counters: HashMap<String, f64>,
    ended: HashSet<(String, i64)>,
    events: HashSet<String>,
    jobs_seen: usize,
}

impl State {
    async fn take(&mut self, minute: usize, ns: &TestNs, pid: u32, metrics_addr: &str, watch: &JobWatch) -> Row {
        let counters = counters(metrics_addr);
        let reconciles = counters.get("loopservice_reconciles_total").copied().unwrap_or(f64::NAN);
        let delta = |name: &str, label: &str| -> f64 {
            let sum =
                |m: &HashMap<String, f64>| m.iter().filter(|(k, _)| k.starts_with(name) && k.contains(label)).map(|(_, v)| v).sum::<f64>();
            sum(&counters) - sum(&self.counters)
        };
        let watched = ["loopservice", "job", "pod"].map(|k| delta("loopservice_watch_events_total{", &format!("kind=\"{k}\"")));
        let named = ["due", "running", "running_suspect", "own_write"];
        let rq = named.map(|a| delta("loopservice_requeues_total{", &format!("after=\"{a}\"")));
        let other = delta("loopservice_requeues_total{", "after=") - rq.iter().sum::<f64>();
        let requeues = [rq[0], rq[1], rq[2], rq[3], other];
        let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
        let listed = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        let ours = listed.iter().filter(|e| e.reporting_controller.as_deref() == Some(REPORTER));
        let uids: HashSet<String> = ours.filter_map(|e| e.uid()).collect();
        let events_new = uids.difference(&self.events).count();
        self.events.extend(uids);
        let loopservices = ns.loopservices().list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        let sizes: Vec<usize> = loopservices.iter().map(|l| serde_json::to_vec(&l.status).map_or(0, |v| v.len())).collect();
        let mut ran = vec![];
        for l in &loopservices {
            for r in l.status.iter().flat_map(|s| &s.history) {
                let Some(end) = &r.end_time else { continue };
                if self.ended.insert((l.name_any(), r.r#loop)) {
                    ran.push(end.0.duration_since(r.start_time.0).as_secs_f64());
                }
            }
        }
        let jobs = ns.jobs().list_metadata(&ListParams::default()).await.map_or(0, |l| l.items.len());
        let seen = watch.snapshot();
        let mut all: Vec<_> = seen.iter().map(|(_, s)| s).collect();
        all.sort_by_key(|s| s.at);
        let fresh = &all[self.jobs_seen.min(all.len())..];
        let late: Vec<f64> = fresh.iter().filter_map(|s| Some(s.at.duration_since(s.ann_time(ANN_SCHEDULED)?).as_secs_f64())).collect();
        let row = Row {
            minute,
            rss_mib: proc::memory(pid).0,
            sockets: sockets(pid),
            reconciles: reconciles - self.reconciles,
            watched,
            requeues,
            ended: ran.len(),
            ran_mean: ran.iter().sum::<f64>() / ran.len().max(1) as f64,
            events_new,
            events: self.events.len(),
            status_mean: sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64,
            status_max: sizes.iter().copied().max().unwrap_or(0),
            db: plane::etcd_db(),
            jobs,
            made: fresh.len(),
            late_p99: Sample::new(late).p(0.99),
        };
        self.reconciles = reconciles;
        self.counters = counters;
        self.jobs_seen = all.len();
        row
    }
}

/// The operator's own series on its /metrics (`loopservice_…`), by name with labels; none when
/// it does not answer.
fn counters(addr: &str) -> HashMap<String, f64> {
    let Some((200, body)) = proc::http_get(addr, "/metrics") else { return HashMap::new() };
    body.lines()
        .filter(|l| l.starts_with("loopservice_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The process's open sockets: its file descriptors that link to `socket:[…]`.
fn sockets(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(Result::ok).filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))).count()
}

fn header() -> String {
    format!(
        "{:>4} {:>8} {:>7} {:>10} {:>23} {:>31} {:>7} {:>7} {:>11} {:>10} {:>15} {:>6} {:>6} {:>10} {:>6} {:>6}",
        "min",
        "RSS MiB",
        "sockets",
        "reconciles",
        "watched: LS / Job / Pod",
        "requeues: due/run/susp/own/else",
        "Events",
        "(all)",
        "status B",
        "(largest)",
        "etcd MiB (use)",
        "Jobs",
        "made",
        "late p99",
        "ended",
        "ran s"
    )
}

fn line(r: &Row) -> String {
    let db = r.db.map_or("-".into(), |(t, u)| format!("{t:.1} ({u:.1})"));
    let watched = r.watched.map(|v| format!("{v:.0}")).join(" / ");
    let requeues = r.requeues.map(|v| format!("{v:.0}")).join("/");
    format!(
        "{:>4} {:>8.1} {:>7} {:>10.0} {:>23} {:>31} {:>7} {:>7} {:>11.0} {:>10} {:>15} {:>6} {:>6} {:>9.2}s {:>6} {:>6.1}",
        r.minute,
        r.rss_mib,
        r.sockets,
        r.reconciles,
        watched,
        requeues,
        r.events_new,
        r.events,
        r.status_mean,
        r.status_max,
        db,
        r.jobs,
        r.made,
        r.late_p99,
        r.ended,
        r.ran_mean
    )
}

/// The first row and the last, and how much each figure changed.
pub fn report(rows: &[Row]) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return };
    println!("\nSoak: start (minute {}) and end (minute {})", first.minute, last.minute);
    println!("{}", header());
    println!("{}\n{}", line(first), line(last));
    let change = |a: f64, b: f64| if a == 0.0 { "-".to_string() } else { format!("{:+.1}%", (b - a) / a * 100.0) };
    println!(
        "  change: RSS {}, sockets {}, reconciles a minute {}, status size {}, etcd in use {}, Jobs {}",
        change(first.rss_mib, last.rss_mib),
        change(first.sockets as f64, last.sockets as f64),
        change(first.reconciles, last.reconciles),
        change(first.status_mean, last.status_mean),
        change(first.db.map_or(0.0, |d| d.1), last.db.map_or(0.0, |d| d.1)),
        change(first.jobs as f64, last.jobs as f64),
    );
    // Reconciles per loop over 10-minute spans: a wave every interval makes single minutes zigzag.
    let spans = rows.chunks(10).map(|c| {
        let (rec, ended) = c.iter().fold((0.0, 0), |(a, b), r| (a + r.reconciles, b + r.ended));
        let ran = c.iter().map(|r| r.ran_mean * r.ended as f64).sum::<f64>() / ended.max(1) as f64;
        let pods = c.iter().map(|r| r.watched[2]).sum::<f64>() / ended.max(1) as f64;
        let running = c.iter().map(|r| r.requeues[1] + r.requeues[2]).sum::<f64>() / ended.max(1) as f64;
        format!(
            "min {}-{}: {:.2} reconciles, {running:.2} running rechecks, {pods:.2} Pod events a loop ended; loops ran {ran:.1} s (n={ended})",
            c[0].minute,
            c[c.len() - 1].minute,
            rec / ended.max(1) as f64
        )
    });
    for s in spans {
        println!("  {s}");
    }
    let peak = rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
    println!("  RSS peak of the minutes sampled {peak:.1} MiB; {} rows", rows.len());
}

/// A figure of a row, by name.
type Figure = (&'static str, fn(&Row) -> f64);

/// Each figure as a percentage of its value at the first row: flat lines at 100.
pub fn relative(rows: &[Row]) -> Vec<(&'static str, Vec<(f64, f64)>)> {
    let figures: [Figure; 7] = [
        ("operator RSS", |r| r.rss_mib),
        ("operator sockets", |r| r.sockets as f64),
        ("reconciles a minute", |r| r.reconciles),
        ("status size (mean)", |r| r.status_mean),
        ("etcd in use", |r| r.db.map_or(f64::NAN, |d| d.1)),
        ("Jobs kept", |r| r.jobs as f64),
        ("loop run time (mean)", |r| r.ran_mean),
    ];
    figures
        .iter()
        .map(|(name, f)| {
            let base = rows.first().map_or(f64::NAN, f);
            (*name, rows.iter().map(|r| (r.minute as f64, f(r) / base * 100.0)).collect())
        })
        .collect()
}
