//! What every reconcile shares: the client and its limits, the caches, the clock, the metrics,
//! and the little this instance remembers between reconciles (its last status writes, retry
//! counts, dry-run answers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::Client;

use super::claim::Claims;
use crate::cache::Cache;
use crate::clock::Clock;
use crate::crd::{LoopService, LoopServiceStatus};
use crate::fair::{Gate, Place};
pub use crate::fault::Fault;
use crate::metrics::Metrics;
use crate::pace::Pace;
use crate::turns::{Priority, Turn, Turns};
use crate::verdicts::Verdicts;

/// How long a release is remembered: the Job watch brings it within milliseconds, or else
/// a watch failed and the test in the release patch keeps a second one harmless.
const RELEASED_KEPT: Duration = Duration::from_secs(30);
/// How long after a watch failure the caches are not trusted alone.
const SUSPECT_AFTER_WATCH_FAILURE: Duration = Duration::from_secs(60);

/// Which Events the operator publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoopEvents {
    /// What a person acts on: failures, overruns, stuck loops, invalid specs, suspensions,
    /// adoptions; and the start of a loop a person asked for (who asked, and why). Every loop
    /// is still counted in status and metrics.
    #[default]
    Problems,
    /// Also a Normal Event for each loop started and each loop succeeded (two per loop).
    All,
}

/// How the controller runs: its limits and its choices.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API requests of reconciles in flight at once, at most ([`Priority`] says which go first).
    /// The default, 128, from `make bench` on a 2-core cluster: 100 Jobs due at one instant
    /// go out in one round and were created p99 197 ms late (n=300; 478 ms at 64, in two
    /// rounds), and 1,000 overdue ones all within 1.76 s (p99 1.68 s, as a bare client creating
    /// them 64 at a time did on the same cluster). Far more made a bare client's 1,000 creates
    /// slower in the bench's floor: all after 1.62 s at 256 and 2.28 s at 1,000 at a time,
    /// against 1.46 s at 128.
    pub concurrency: u16,
    /// Of `concurrency`, the bookkeeping requests (status writes, Events, deletes of old Jobs)
    /// in flight at once, at most, namespaces in turn: a backlog of them (thousands of new
    /// LoopServices to report) leaves the API server free to answer Job creates.
    pub bookkeeping_concurrency: u16,
    /// Reconciles running at once, at most. Far more than `concurrency`, so that due launches
    /// are not stuck in the controller's queue behind reconciles waiting for a request.
    pub max_reconciles: u16,
    /// API requests per second the reconciles make, at most, and the burst above it.
    pub qps: u32,
    pub burst: u32,
    pub loop_events: LoopEvents,
    /// A reconcile taking longer than this (a request hanging on a dead connection) fails and
    /// is retried.
    pub reconcile_timeout: Duration,
    /// Reports of invalid specs (a status write and an Event each) a second, at most, per
    /// namespace, after a burst of as many: a namespace that makes thousands of broken
    /// LoopServices at once has them reported over minutes, not in one flood of writes to the
    /// API server that every namespace's loops share. A few broken ones are reported at once. A
    /// report past the burst is booked its own instant ([`crate::pace`]).
    pub invalid_reports_per_second: std::num::NonZeroU32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 128,
            bookkeeping_concurrency: 16,
            max_reconciles: 1024,
            qps: 500,
            burst: 1000,
            loop_events: LoopEvents::Problems,
            reconcile_timeout: Duration::from_secs(30),
            invalid_reports_per_second: std::num::NonZeroU32::new(25).unwrap_or(std::num::NonZeroU32::MIN),
        }
    }
}

/// What the binary hands the controller.
pub struct Parts {
    pub client: Client,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: no new loop starts, in-flight work finishes.
    pub draining: Arc<AtomicBool>,
    pub fault: Option<Fault>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    /// This release's claims on LoopServices, and what it knows of other releases'.
    pub claims: Arc<Claims>,
}

/// The caches of the operator's Jobs and Pods, and what their watches say of themselves.
#[derive(Clone)]
pub struct Caches {
    pub jobs: Cache<Job>,
    pub pods: Cache<Pod>,
    /// The Job controller's `FailedCreate` Events: why a Job has no Pod.
    pub failed_creates: Cache<k8s_openapi::api::core::v1::Event>,
    /// Set once the LoopService, Job and Pod caches have all synced.
    pub synced: Arc<AtomicBool>,
    /// When a watch last failed (ms since the Unix epoch): for a while after, the caches may
    /// miss changes (a watch resumed on a restarted API server), and the running loop's Job
    /// is read from the API server too.
    pub watch_failed_at: Arc<AtomicI64>,
}

type Limiter = governor::DefaultDirectRateLimiter;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub draining: Arc<AtomicBool>,
    pub fault: Option<Fault>,
    pub settings: Settings,
    pub clock: Arc<dyn Clock>,
    pub claims: Arc<Claims>,
    pub caches: Caches,
    limiter: Limiter,
    failures: Mutex<HashMap<ObjectRef<LoopService>, u32>>,
    /// A fingerprint of the status this instance last wrote, and when, by LoopService uid: a
    /// cached object whose status differs may be a write behind (see `reconcile::observe`).
    written: Mutex<HashMap<String, (u64, Instant)>>,
    /// Jobs (by uid) whose finalizer this instance took off lately, while the cache may still
    /// show it: not released again.
    released: Mutex<HashMap<String, Instant>>,
    /// Turns to make an API request: `settings.concurrency` of them, launches first.
    turns: Turns,
    /// Places for reconciles past their first step: `settings.max_reconciles` of them, handed
    /// to namespaces in turn, urgent reconciles first ([`Context::slot`]).
    slots: Gate<2>,
    /// Places among `slots` that reconciles which are not urgent may hold, at most.
    slots_not_urgent: Gate<1>,
    /// Dry-run answers of specs lately checked, by namespace and spec.
    pub verdicts: Verdicts,
    /// Reports of invalid specs, by namespace ([`Settings::invalid_reports_per_second`]).
    pub invalid_reports: Pace,
}

/// The share of reconcile places kept for urgent reconciles: one in this many.
const SLOTS_KEPT_FOR_URGENT: usize = 4;

/// A place to run a reconcile.
pub struct Slot<'a> {
    _place: Place<'a, 2>,
    _not_urgent: Option<Place<'a, 1>>,
}

impl Context {
    pub fn new(parts: Parts, caches: Caches) -> Self {
        let Parts { client, reporter, metrics, draining, fault, settings, clock, claims } = parts;
        let reports = settings.invalid_reports_per_second;
        let turns = Turns::new(usize::from(settings.concurrency.max(1)), usize::from(settings.bookkeeping_concurrency));
        let slots = usize::from(settings.max_reconciles.max(settings.concurrency).max(1));
        let qps = std::num::NonZeroU32::new(settings.qps.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(settings.burst.max(settings.qps).max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            draining,
            fault,
            settings,
            clock,
            claims,
            caches,
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(qps).allow_burst(burst)),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            released: Mutex::new(HashMap::new()),
            turns,
            slots: Gate::new(slots),
            slots_not_urgent: Gate::new(slots - slots / SLOTS_KEPT_FOR_URGENT),
            verdicts: Verdicts::default(),
            invalid_reports: Pace::new(reports, reports),
        }
    }

    /// Waits for a place to run a reconcile of a LoopService in `namespace`, held until it is
    /// dropped. Urgent reconciles ([`crate::urgency`]) go first, and a share of the places is
    /// theirs only: when the others hold all they may (thousands waiting to write status and
    /// Events), a loop that is due still finds a place at once.
    pub async fn slot(&self, urgent: bool, namespace: &str) -> Slot<'_> {
        let not_urgent = if urgent { None } else { Some(self.slots_not_urgent.take(0, namespace).await) };
        let place = self.slots.take(usize::from(!urgent), namespace).await;
        Slot { _place: place, _not_urgent: not_urgent }
    }

    /// Waits for a turn (launches first, namespaces in turn) and the client's rate limit before
    /// one API request about a LoopService in `namespace`;
    /// the turn is held until it is dropped, after the request.
    pub async fn request(&self, priority: Priority, namespace: &str) -> Turn<'_> {
        let turn = self.turns.take(priority, namespace).await;
        self.limiter.until_ready().await;
        turn
    }

    /// As [`Context::request`] at bookkeeping priority, for a LoopService whose next loop is
    /// due at `due`, if one is: the request takes a launch's turn if it still waits shortly
    /// before then ([`Turns::take_before`]), as that loop's start waits for this reconcile.
    pub async fn bookkeeping(&self, namespace: &str, due: Option<tokio::time::Instant>) -> Turn<'_> {
        let turn = match due {
            Some(due) => self.turns.take_before(namespace, due).await,
            None => self.turns.take(Priority::Bookkeeping, namespace).await,
        };
        self.limiter.until_ready().await;
        turn
    }

    /// Whether a watch failed lately (in the last minute), so the caches may be behind.
    pub fn caches_suspect(&self) -> bool {
        let at = self.caches.watch_failed_at.load(Ordering::SeqCst);
        // When a watch failed is this machine's time (see `cache::drive`), not the loops' clock.
        let now = jiff::Timestamp::now().as_millisecond();
        at > 0 && now.saturating_sub(at) < SUSPECT_AFTER_WATCH_FAILURE.as_millis() as i64
    }

    pub fn remember_written(&self, uid: &str, st: &LoopServiceStatus) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), (fingerprint(st), Instant::now()));
    }

    /// How long ago this instance wrote a status the cache does not show yet; `None` when the
    /// cached status is the last one written (or it wrote none).
    pub fn behind_last_write(&self, uid: &str, cached: &LoopServiceStatus) -> Option<Duration> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let (hash, at) = written.get(uid)?;
        (*hash != fingerprint(cached)).then(|| at.elapsed())
    }

    /// Remembers that the finalizer of the Job with uid `job` is off.
    pub fn remember_released(&self, job: &str) {
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        released.retain(|_, at| at.elapsed() < RELEASED_KEPT);
        released.insert(job.to_string(), Instant::now());
    }

    /// Whether this instance took the finalizer off the Job with uid `job` lately.
    pub fn released_lately(&self, job: &str) -> bool {
        self.released.lock().unwrap_or_else(|p| p.into_inner()).get(job).is_some_and(|at| at.elapsed() < RELEASED_KEPT)
    }

    /// Counts one more failed reconcile of `key` (or, with `reset`, forgets them); returns the
    /// failures in a row.
    pub fn retries(&self, key: &ObjectRef<LoopService>, reset: bool) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if reset {
            map.remove(key);
            return 0;
        }
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Failed reconciles of `key` in a row so far.
    pub fn failures(&self, key: &ObjectRef<LoopService>) -> u32 {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied().unwrap_or(0)
    }

    /// Forgets what is kept for LoopServices that no longer exist.
    pub fn forget_missing(&self, exists: impl Fn(&ObjectRef<LoopService>) -> bool, uids: &std::collections::HashSet<String>) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| exists(k));
        self.written.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| uids.contains(uid));
        self.claims.forget_missing(uids);
    }
}

/// A fingerprint of a status, to tell whether a cached one is the one last written.
fn fingerprint(st: &LoopServiceStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(st).unwrap_or_default().hash(&mut h);
    h.finish()
}
