//! The reconcile loop: observe the LoopService's Jobs, decide, act, write status.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, error, info, warn};

use crate::cached::CachedLoopService;
use crate::crd::{LoopService, LoopServiceStatus, Phase};
use crate::job::{self, clip, JobParams, ObservedJob, Outcome};
use crate::metrics::{ErrorLabels, LsLabels, Metrics, ResultLabels};
use crate::observe::{self, Cache};
use crate::schedule;
use crate::spec::ValidSpec;
use crate::status::{self, Decision, Note};
use crate::turns::{Priority, Turn, Turns};
use crate::verdicts::Verdicts;
use crate::{is_transient, Error, Result};

/// A fault to inject, for tests of crash safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Exit the process (code 137, as SIGKILL would) right after a Job is created and before
    /// the status that records it is written.
    ExitAfterJobCreate,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exit-after-job-create" => Ok(Fault::ExitAfterJobCreate),
            _ => Err(format!("unknown fault {s:?} (known: exit-after-job-create)")),
        }
    }
}

/// Default number of finished Jobs kept per LoopService, for successes and for failures.
const DEFAULT_HISTORY: usize = 3;
/// While a loop runs, its Job's watch events wake the reconcile on its end; this recheck
/// looks at its Pods for a reason it cannot make progress (a missing image, say).
const RUNNING_RECHECK: Duration = Duration::from_secs(15);
/// How often the series of deleted LoopServices are swept from /metrics.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long no reconcile runs (give or take half of it) before freed heap is handed back.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(1);
/// How often a loop blocked by a Job name that is taken tries again.
const NAME_TAKEN_RECHECK: Duration = Duration::from_secs(5);
/// How often a spec the API server refused is checked again (the cause may be outside it).
const RECHECK_INVALID: Duration = Duration::from_secs(30);
/// How long after a watch failure the caches are not trusted alone.
const SUSPECT_AFTER_WATCH_FAILURE: Duration = Duration::from_secs(60);
/// The recheck of a running loop while the caches are suspect.
const SUSPECT_RECHECK: Duration = Duration::from_secs(2);
/// A reconcile that finds the cache without this instance's last status write (the watch a
/// step behind it) runs again after `OWN_WRITE_RECHECK`, for up to `OWN_WRITE_WAIT` after the
/// write, before it reads the stored object instead: the watch almost always brings the write
/// within milliseconds, and a read per loop costs the API server more than a short wait.
const OWN_WRITE_RECHECK: Duration = Duration::from_millis(50);
const OWN_WRITE_WAIT: Duration = Duration::from_secs(2);
/// A loop's Pod gets this long to start before a waiting container counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Which Events the operator publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LoopEvents {
    /// What a person acts on: failures, overruns, stuck loops, invalid specs, suspensions,
    /// adoptions. Every loop is still counted in status and metrics.
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 128,
            max_reconciles: 1024,
            qps: 500,
            burst: 1000,
            loop_events: LoopEvents::Problems,
            reconcile_timeout: Duration::from_secs(30),
        }
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: no new loop starts, in-flight work finishes.
    pub draining: Arc<AtomicBool>,
    pub fault: Option<Fault>,
    pub settings: Settings,
    jobs: Option<Cache<Job>>,
    pods: Option<Cache<Pod>>,
    limiter: Limiter,
    /// Set once the LoopService, Job and Pod caches have all synced.
    synced: Arc<AtomicBool>,
    /// When a watch last failed (ms since the Unix epoch): for a while after, the caches may
    /// miss changes (a watch resumed on a restarted API server), and the running loop's Job
    /// is read from the API server too.
    watch_failed_at: Arc<std::sync::atomic::AtomicI64>,
    failures: Mutex<HashMap<ObjectRef<LoopService>, u32>>,
    /// A fingerprint of the status this instance last wrote, and when, by LoopService uid: a
    /// cached object whose status differs may be a write behind, and is waited for a moment
    /// (see `OWN_WRITE_WAIT`) and checked before a launch.
    written: Mutex<HashMap<String, (u64, Instant)>>,
    /// Turns to make an API request: `settings.concurrency` of them, launches first.
    turns: Turns,
    /// Dry-run answers of specs lately checked, by namespace and spec.
    verdicts: Verdicts,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        draining: Arc<AtomicBool>,
        fault: Option<Fault>,
        settings: Settings,
    ) -> Self {
        let turns = usize::from(settings.concurrency.max(1));
        let qps = std::num::NonZeroU32::new(settings.qps.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(settings.burst.max(settings.qps).max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            draining,
            fault,
            settings,
            jobs: None,
            pods: None,
            limiter: governor::RateLimiter::direct(governor::Quota::per_second(qps).allow_burst(burst)),
            synced: Arc::new(AtomicBool::new(false)),
            watch_failed_at: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            turns: Turns::new(turns),
            verdicts: Verdicts::default(),
        }
    }

    /// Waits for a turn (launches first) and the client's rate limit before one API request;
    /// the turn is held until it is dropped, after the request.
    async fn request(&self, priority: Priority) -> Turn<'_> {
        let turn = self.turns.take(priority).await;
        self.limiter.until_ready().await;
        turn
    }

    /// Whether a watch failed lately (in the last minute), so the caches may be behind.
    fn caches_suspect(&self) -> bool {
        let at = self.watch_failed_at.load(Ordering::SeqCst);
        at > 0 && Timestamp::now().as_millisecond().saturating_sub(at) < SUSPECT_AFTER_WATCH_FAILURE.as_millis() as i64
    }

    fn jobs_of(&self, uid: &str) -> Vec<Arc<Job>> {
        self.jobs.as_ref().map(|c| c.of(uid)).unwrap_or_default()
    }

    fn pods_of(&self, uid: &str) -> Vec<Arc<Pod>> {
        self.pods.as_ref().map(|c| c.of(uid)).unwrap_or_default()
    }

    fn remember_written(&self, uid: &str, st: &LoopServiceStatus) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), (fingerprint(st), Instant::now()));
    }

    /// Whether the cached status is the one this instance last wrote (or it wrote none).
    fn cache_has_last_write(&self, uid: &str, cached: &LoopServiceStatus) -> bool {
        self.behind_last_write(uid, cached).is_none()
    }

    /// How long ago this instance wrote a status the cache does not show yet; `None` when the
    /// cached status is the last one written (or it wrote none).
    fn behind_last_write(&self, uid: &str, cached: &LoopServiceStatus) -> Option<Duration> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let (hash, at) = written.get(uid)?;
        (*hash != fingerprint(cached)).then(|| at.elapsed())
    }

    fn retries(&self, key: &ObjectRef<LoopService>, reset: bool) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if reset {
            map.remove(key);
            return 0;
        }
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }
}

/// Reconciles one LoopService; the requeue is computed at the very end, since kube-runtime
/// counts it from when reconcile returns.
pub async fn reconcile(cached: Arc<CachedLoopService>, ctx: Arc<Context>) -> Result<Action> {
    // Nothing is decided before the Jobs and Pods are known.
    if !ctx.synced.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let ls = Arc::new(cached.expand().map_err(|e| Error::Cached(cached.name_any(), e))?);
    let began = Instant::now();
    ctx.metrics.reconciles.inc();
    // The work is boxed, and so allocated only once the reconcile runs: the controller makes up
    // to `max_reconciles` of these at once, and most finish in their first poll.
    let ls = match Box::pin(fresh(&ls, &ctx)).await {
        Ok(Fresh::Stored(stored)) => Arc::new(stored),
        Ok(Fresh::Current) => ls,
        Ok(Fresh::Wait) => {
            ctx.metrics.own_write_waits.inc();
            return Ok(Action::requeue(OWN_WRITE_RECHECK));
        }
        Err(Error::GetLoopService(_, kube::Error::Api(s))) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(e),
    };
    let res = match tokio::time::timeout(ctx.settings.reconcile_timeout, Box::pin(reconcile_inner(&ls, &ctx))).await {
        Ok(res) => res,
        Err(_) => Err(Error::TimedOut(ctx.settings.reconcile_timeout)),
    };
    ctx.metrics.reconcile_seconds.observe(began.elapsed().as_secs_f64());
    match &res {
        Ok(_) => {
            ctx.retries(&key(ls.as_ref()), true);
        }
        // A conflict is the cache a step behind a write of our own: no news.
        Err(e) if !matches!(e.kube(), Some(kube::Error::Api(s)) if s.code == 409) => report_failure(&ls, &ctx, e).await,
        Err(_) => {}
    }
    res
}

/// What a reconcile decides on: the cached LoopService, or the stored one.
enum Fresh {
    /// The cache shows this instance's last status write (or it wrote none).
    Current,
    /// The cache lacks a status write made a moment ago: run again shortly.
    Wait,
    /// The cache lacked a write for longer than a watch takes: the stored object, read.
    Stored(LoopService),
}

/// Whether the cached LoopService shows this instance's last status write. When it does not
/// (the watch is a step behind it), a reconcile on it would decide on an old status and its
/// status write would only conflict: it waits for the watch for a moment, then reads the
/// stored object.
async fn fresh(ls: &LoopService, ctx: &Context) -> Result<Fresh> {
    let (Some(ns), Some(uid)) = (ls.namespace(), ls.uid()) else { return Ok(Fresh::Current) };
    let cached = ls.status.clone().unwrap_or_default();
    match ctx.behind_last_write(&uid, &cached) {
        None => return Ok(Fresh::Current),
        Some(ago) if ago < OWN_WRITE_WAIT && !ctx.caches_suspect() => return Ok(Fresh::Wait),
        Some(_) => {}
    }
    let name = ls.name_any();
    let _turn = ctx.request(Priority::Bookkeeping).await;
    let mut stored = Api::<LoopService>::namespaced(ctx.client.clone(), &ns)
        .get(&name)
        .await
        .map_err(|e| Error::GetLoopService(format!("{ns}/{name}"), e))?;
    if stored.resource_version() == ls.resource_version() {
        // Someone else wrote it last; the cache is current.
        ctx.remember_written(&uid, &cached);
        return Ok(Fresh::Current);
    }
    trim_loopservice(&mut stored);
    ctx.metrics.stale_reads.inc();
    Ok(Fresh::Stored(stored))
}

/// Shows a failing reconcile in status (`Reconciled=False` with the error), so that it is seen
/// with `kubectl describe`, not only in the operator's log. Best effort: the cause may forbid
/// the status write too. A transient error shows only once it repeats.
async fn report_failure(ls: &LoopService, ctx: &Context, err: &Error) {
    let failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner()).get(&key(ls)).copied().unwrap_or(0) + 1;
    let transient = err.kube().is_some_and(is_transient);
    if transient && failures < 3 {
        return;
    }
    let prev = ls.status.clone().unwrap_or_default();
    let mut st = prev.clone();
    status::reconcile_failed(&mut st, &err.plain(), failures, Timestamp::now());
    if st != prev {
        let _turn = ctx.request(Priority::Bookkeeping).await;
        if let Err(e) = write_status(ls, &st, ctx).await {
            debug!(name = %ls.name_any(), error = %e, "could not record the reconcile error in status");
        }
    }
}

/// The key of a LoopService's retry count.
fn key(ls: &impl ResourceExt) -> ObjectRef<LoopService> {
    ObjectRef::new(&ls.name_any()).within(ls.namespace().as_deref().unwrap_or_default())
}

/// Retries failed reconciles with exponential backoff per LoopService: 250 ms doubling to a
/// minute. The cap keeps a LoopService that cannot be reconciled (say, RBAC is missing) from
/// being retried hot, and is short enough that it recovers soon after the cause is fixed.
pub fn error_policy(ls: Arc<CachedLoopService>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.retries(&key(ls.as_ref()), false);
    let transient = err.kube().is_some_and(is_transient);
    // A transient error (the API server away) is retried within 2 s, so that a due loop starts
    // soon after the API server answers again, however long it was away.
    let cap = if transient { Duration::from_secs(2) } else { Duration::from_secs(60) };
    let delay = Duration::from_millis(250u64.saturating_mul(1 << n.clamp(1, 9).saturating_sub(1))).min(cap);
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { step: err.metric_label().to_string() }).inc();
    let conflict = matches!(err.kube(), Some(kube::Error::Api(s)) if s.code == 409);
    let (namespace, name, retry_in_ms) = (ls.namespace().unwrap_or_default(), ls.name_any(), delay.as_millis() as u64);
    if conflict {
        // The cache was a step behind a write of our own; the retry reads the new version.
        debug!(%namespace, %name, error = %err, retry_in_ms, "reconcile conflicted");
    } else {
        warn!(%namespace, %name, error = %err.plain(), transient, retry_in_ms, "reconcile failed");
    }
    Action::requeue(delay)
}

/// What one reconcile decided, from what it observed: the pure part (see [`plan`]).
struct Plan<'a> {
    st: LoopServiceStatus,
    notes: Vec<Note>,
    decision: Decision,
    run_request: Option<&'a str>,
    jitter: Option<schedule::Jitter<'a>>,
}

/// Plans one reconcile: a pure function of the spec, the previous status, the loops observed
/// and `now`. It records the loops that ended and decides what comes next.
fn plan<'a>(
    ls: &'a LoopService,
    valid: &ValidSpec,
    prev: &LoopServiceStatus,
    observed: &'a [ObservedJob],
    uid: &'a str,
    now: Timestamp,
) -> Plan<'a> {
    let spec = &ls.spec;
    let (mut st, mut notes) = status::record_jobs(prev, observed, valid.interval, now);
    // A request whose Job is still here is handled, whatever the status says (it is written
    // after the Job is created, and a CRD older than the operator would drop it).
    let run_request = ls
        .annotations()
        .get(job::ANN_RUN_REQUESTED_AT)
        .map(String::as_str)
        .filter(|r| !observed.iter().any(|j| j.run_request.as_deref() == Some(*r)));
    notes.extend(status::suspend_after_failures(&mut st, spec.suspend_after_failures, ls.metadata.generation, now));
    let created = ls.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let jitter = valid.jitter.map(|max| schedule::Jitter { uid, max, created });
    let decision =
        status::decide(&st, spec.loops, spec.is_suspended(), run_request, valid.interval, jitter.as_ref(), valid.failure_backoff, now);
    Plan { st, notes, decision, run_request, jitter }
}

async fn reconcile_inner(ls: &LoopService, ctx: &Context) -> Result<Action> {
    let name = ls.name_any();
    let (Some(ns), Some(uid)) = (ls.namespace(), ls.uid()) else {
        return Err(Error::Incomplete(name));
    };
    if ls.metadata.deletion_timestamp.is_some() {
        // Its Jobs go with it through their owner references.
        return Ok(Action::await_change());
    }
    let prev = ls.status.clone().unwrap_or_default();
    let generation = ls.metadata.generation;
    let now = Timestamp::now();

    // Validate.
    let spec = &ls.spec;
    let valid = match spec.validate() {
        Ok(v) => v,
        Err(errors) => {
            invalid(ls, ctx, &prev, &errors.to_string(), generation, now).await?;
            return Ok(Action::await_change());
        }
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // A new spec is checked by the API server before it runs: what it would refuse (or drop)
    // is InvalidSpec now, not a failed loop later. While invalid, the check is repeated, since
    // the cause may lie outside the spec (an admission webhook, a quota).
    if prev.observed_generation != generation || prev.phase == Some(Phase::Invalid) {
        let verdict = ctx.verdicts.cell(&ns, spec);
        let checked = verdict
            .get_or_try_init(|| async {
                let _turn = ctx.request(Priority::Launch).await;
                dry_run(ls, &valid, &jobs_api, prev.loops_started.saturating_add(1), now).await
            })
            .await?;
        if let Some(message) = checked {
            invalid(ls, ctx, &prev, &message, generation, now).await?;
            return Ok(Action::requeue(RECHECK_INVALID));
        }
    }

    // Observe, from the caches.
    let owned = |j: &Job| j.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true));
    let jobs = ctx.jobs_of(&uid);
    let mut observed: Vec<ObservedJob> = jobs.iter().filter(|j| owned(j)).filter_map(|j| job::observe(j)).collect();
    // The running loop's Job missing from the cache is either deleted or not yet seen by a watch
    // that is catching up (after an API server restart): ask, rather than count it deleted and
    // start the next loop beside it. While a watch failed lately, ask anyway: the cached Job
    // may not show that it ended.
    let suspect = ctx.caches_suspect();
    if let Some(active) = prev.active_job.as_deref().filter(|a| suspect || !observed.iter().any(|j| j.name == *a)) {
        let _turn = ctx.request(Priority::Bookkeeping).await;
        let stored = jobs_api.get_opt(active).await.map_err(|e| Error::GetJob(active.to_string(), e))?;
        observed.retain(|j| j.name != active);
        if let Some(j) = stored.filter(|j| owned(j)) {
            observed.extend(job::observe(&j));
        }
    }
    observed.sort_by_key(|j| j.loop_number);
    let pods = ctx.pods_of(&uid);
    let pods_of_job = |job: &str| -> Vec<Pod> {
        pods.iter().filter(|p| p.labels().get("job-name").map(String::as_str) == Some(job)).map(|p| Pod::clone(p)).collect()
    };
    // A failed loop not yet recorded: ask its Pods why, so status says more than "failed".
    for j in observed.iter_mut().filter(|j| j.loop_number > prev.last_finished_loop) {
        if let Some((_, Outcome::Failed { message, .. })) = &mut j.end {
            let detail = job::describe_pods(&pods_of_job(&j.name));
            if !detail.is_empty() {
                *message = format!("{detail}; {message}");
            }
        }
    }

    // Plan.
    let Plan { mut st, mut notes, mut decision, run_request, jitter } = plan(ls, &valid, &prev, &observed, &uid, now);
    let (interval, suspended) = (valid.interval, spec.is_suspended());
    let mut name_taken = None;
    let mut waiting_for = None;

    // Act.
    if let Decision::Launch { loop_number, scheduled, run_request: request } = decision.clone() {
        // Loops never overlap: a Pod still running here has lost its Job (deleted while
        // its loop ran) and is on its way out. The next loop waits for it.
        let lingering = pods.iter().find(|p| {
            let job = p.labels().get("job-name").map(String::as_str);
            !observed.iter().any(|j| Some(j.name.as_str()) == job)
                && matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running" | "Pending"))
        });
        if ctx.draining.load(Ordering::SeqCst) {
            info!(namespace = %ns, %name, r#loop = loop_number, "draining: leaving the loop to the next operator instance");
        } else if let Some(pod) = lingering {
            info!(namespace = %ns, %name, r#loop = loop_number, pod = %pod.name_any(), "waiting for the pod of a deleted job to end");
            waiting_for = Some((loop_number, pod.name_any(), pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()));
        } else {
            // The decision rests on the cached object. A status a write behind could start a
            // loop that already ran: when the cache does not show this instance's last write,
            // read the stored object.
            if !ctx.cache_has_last_write(&uid, &prev) {
                let _turn = ctx.request(Priority::Launch).await;
                let stored = Api::<LoopService>::namespaced(ctx.client.clone(), &ns)
                    .get(&name)
                    .await
                    .map_err(|e| Error::GetLoopService(format!("{ns}/{name}"), e))?;
                if stored.resource_version() != ls.resource_version() {
                    debug!(namespace = %ns, %name, "cache is behind the stored object; reconciling again");
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                // Someone else wrote it last; the cache is current.
                ctx.remember_written(&uid, &prev);
            }
            // Run requests start at once; a scheduled loop with jitter was to start later than due.
            let jittered = jitter.filter(|_| request.is_none()).map(|j| schedule::add(scheduled, j.offset(loop_number)));
            let turn = ctx.request(Priority::Launch).await;
            let launched = launch(ls, ctx, &jobs_api, &valid, loop_number, scheduled, jittered, request.as_deref(), &mut st).await;
            drop(turn);
            match launched? {
                Launched::Notes(launched) => notes.extend(launched),
                Launched::NameTaken(job) => name_taken = Some((loop_number, job)),
            }
            decision =
                status::decide(&st, spec.loops, suspended, run_request, interval, jitter.as_ref(), valid.failure_backoff, Timestamp::now());
        }
    }

    status::finalize(&mut st, &decision, spec.loops, generation, Timestamp::now());
    if let Some((n, job)) = &name_taken {
        let message = format!("loop {n} cannot start: Job {job} exists and is not this LoopService's; delete it or rename it");
        notes.extend(status::not_ready(&mut st, &prev, "JobNameTaken", message, Some(job), generation, Timestamp::now()));
    }
    if let Some((n, pod, phase)) = &waiting_for {
        let message =
            format!("loop {n} waits for Pod {pod} ({phase}) of a deleted Job of this LoopService to end; delete the Pod to go on");
        notes.extend(status::not_ready(&mut st, &prev, "LoopStuck", message, None, generation, Timestamp::now()));
    }
    if let Decision::Running { job } = &decision {
        let running_for = st.last_start_time.map_or(0.0, |s| schedule::seconds_between(s.0, Timestamp::now()));
        if running_for >= STUCK_AFTER.as_secs_f64() {
            let job_pods = pods_of_job(job);
            let why = match job::stuck_reason(&job_pods) {
                Some(why) => Some(("LoopStuck", why)),
                // No Pod at all: the Job controller could not create one. Its Event says why.
                None if job_pods.is_empty() => pod_create_failure(ctx, &ns, job).await.map(|m| ("PodCreateFailed", m)),
                None => None,
            };
            if let Some((reason, why)) = why {
                let message = format!("loop {} is running as Job {job}, but {why}", st.loops_started);
                notes.extend(status::not_ready(&mut st, &prev, reason, message, Some(job), generation, Timestamp::now()));
            }
        }
    }
    if st != prev {
        let _turn = ctx.request(Priority::Bookkeeping).await;
        write_status(ls, &st, ctx).await?;
    }
    ctx.metrics.record_status(&LsLabels { namespace: ns.clone(), name: name.clone() }, &st);
    // Counted only once the status that records them is stored, so each is counted once.
    for n in &notes {
        count(ctx, &ns, &name, n);
    }
    publish(ls, ctx, &notes).await;

    // Old Jobs go only once their loop is counted in the status already stored: `st`, written
    // above (or equal to the stored one). The loop this reconcile recorded is counted there
    // already, so its Job is not left for a later reconcile to delete (the next loop's
    // Job, whose creation wakes none, would not bring one).
    let keep_ok = spec.successful_jobs_history_limit.map_or(DEFAULT_HISTORY, |n| n.max(0) as usize);
    let keep_failed = spec.failed_jobs_history_limit.map_or(DEFAULT_HISTORY, |n| n.max(0) as usize);
    for old in status::jobs_to_delete(&observed, &st, keep_ok, keep_failed) {
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
        let _turn = ctx.request(Priority::Bookkeeping).await;
        match jobs_api.delete(&old, &dp).await {
            Ok(_) => debug!(namespace = %ns, %name, job = %old, "deleted old job"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::DeleteJob(old, e)),
        }
    }

    let now = Timestamp::now();
    Ok(match decision {
        _ if name_taken.is_some() => Action::requeue(NAME_TAKEN_RECHECK),
        _ if waiting_for.is_some() => Action::requeue(Duration::from_secs(1)),
        Decision::Wait { until } => Action::requeue(schedule::until(until, now)),
        // Only while draining: the next instance starts it.
        Decision::Launch { .. } => Action::requeue(Duration::from_secs(1)),
        Decision::Running { .. } if suspect => Action::requeue(SUSPECT_RECHECK),
        Decision::Running { .. } => Action::requeue(RUNNING_RECHECK),
        Decision::Suspended | Decision::SuspendedAfterFailures { .. } | Decision::Finished => Action::await_change(),
    })
}

enum Launched {
    Notes(Vec<Note>),
    /// A Job of that name exists and is not this LoopService's.
    NameTaken(String),
}

/// Why the Job controller could not create the Pod of `job`, from the Job's latest
/// `FailedCreate` Event (a missing ServiceAccount, a PodSecurity or quota refusal). Read only
/// for a loop that has run for a while without any Pod. Best effort: `None` when unknown.
async fn pod_create_failure(ctx: &Context, ns: &str, job: &str) -> Option<String> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"));
    let _turn = ctx.request(Priority::Bookkeeping).await;
    match api.list(&lp).await {
        Ok(list) => list
            .items
            .into_iter()
            .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)))
            .and_then(|e| e.message)
            .map(|m| format!("its Pod cannot be created: {}", clip(&m))),
        Err(e) => {
            warn!(namespace = %ns, %job, error = %e, "could not read the events of the running loop's job");
            None
        }
    }
}

/// Creates loop `n`'s Job and records the outcome in `st`.
#[allow(clippy::too_many_arguments)]
async fn launch(
    ls: &LoopService,
    ctx: &Context,
    jobs_api: &Api<Job>,
    spec: &ValidSpec,
    n: i64,
    scheduled: Timestamp,
    jittered: Option<Timestamp>,
    run_request: Option<&str>,
    st: &mut LoopServiceStatus,
) -> Result<Launched> {
    let start = Timestamp::now();
    let params = JobParams {
        ls,
        spec,
        loop_number: n,
        scheduled,
        start,
        run_request,
        jittered,
        previous: status::previous_result(st),
        last_success: st.last_success_scheduled_time.map(|t| t.0),
    };
    let Some(job) = job::build_job(&params) else {
        return Err(Error::Incomplete(ls.name_any()));
    };
    let job_name = job.name_any();
    let (ns, name) = (ls.namespace().unwrap_or_default(), ls.name_any());
    match jobs_api.create(&PostParams::default(), &job).await {
        Ok(_) => {
            // Late against when the loop was to start: its due time, plus its jitter.
            let delay = schedule::seconds_between(jittered.unwrap_or(scheduled), start).max(0.0);
            ctx.metrics.start_delay_seconds.observe(delay);
            info!(namespace = %ns, %name, r#loop = n, job = %job_name, delay_ms = (delay * 1000.0) as u64, "started loop");
            if ctx.fault == Some(Fault::ExitAfterJobCreate) {
                error!(job = %job_name, "fault injection: exiting after creating a job, before writing status");
                std::process::exit(137);
            }
            Ok(Launched::Notes(vec![status::launched(st, n, &job_name, scheduled, start, run_request)]))
        }
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            // Made by an earlier instance that died before recording it: adopt, never duplicate.
            let existing = jobs_api.get(&job_name).await.map_err(|e| Error::GetJob(job_name.clone(), e))?;
            let ours = existing.owner_references().iter().any(|o| Some(&o.uid) == ls.metadata.uid.as_ref());
            match job::observe(&existing).filter(|_| ours) {
                Some(seen) => Ok(Launched::Notes(vec![status::launched(
                    st,
                    n,
                    &job_name,
                    seen.scheduled.unwrap_or(seen.start),
                    seen.start,
                    seen.run_request.as_deref(),
                )])),
                None => Ok(Launched::NameTaken(job_name)),
            }
        }
        Err(e) if is_transient(&e) => Err(Error::CreateJob(job_name, e)),
        // The operator's own credentials (not this loop) are refused: a reconcile error, shown
        // as Reconciled=False and retried; no loop number is used up.
        Err(kube::Error::Api(s)) if forbids_the_operator(&s) => Err(Error::CreateJob(job_name, kube::Error::Api(s))),
        Err(kube::Error::Api(s)) => {
            warn!(namespace = %ns, %name, r#loop = n, job = %job_name, message = %s.message, "the API server refused the job");
            Ok(Launched::Notes(status::rejected(st, n, &job_name, scheduled, start, run_request, &s.message, spec.interval)))
        }
        Err(e) => Err(Error::CreateJob(job_name, e)),
    }
}

/// Whether the API server refused the operator's own credentials (unauthenticated, or RBAC
/// forbids the request), rather than what was asked (a webhook or quota also answer 403).
fn forbids_the_operator(s: &kube::core::Status) -> bool {
    s.code == 401 || (s.code == 403 && s.message.contains("cannot create resource"))
}

/// Records that the spec cannot run, with why: Ready=False, reason InvalidSpec, and a Warning
/// Event when that is news.
async fn invalid(
    ls: &LoopService,
    ctx: &Context,
    prev: &LoopServiceStatus,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Result<()> {
    let mut st = prev.clone();
    status::invalid(&mut st, message, generation, now);
    if st != *prev {
        write_status(ls, &st, ctx).await?;
        publish(ls, ctx, &[Note::warning(status::REASON_INVALID_SPEC, message.to_string())]).await;
    }
    Ok(())
}

/// Asks the API server to validate, not create, the Job that loop `n` of this spec would be
/// (a server-side dry run). `Some(message)` when it refuses it, or would drop a field of it
/// that this Kubernetes version does not have.
async fn dry_run(ls: &LoopService, spec: &ValidSpec, jobs_api: &Api<Job>, n: i64, now: Timestamp) -> Result<Option<String>> {
    let params = JobParams {
        ls,
        spec,
        loop_number: n,
        scheduled: now,
        start: now,
        run_request: None,
        jittered: None,
        previous: job::PreviousResult::None,
        last_success: Some(now),
    };
    let Some(job) = job::build_job(&params) else {
        return Err(Error::Incomplete(ls.name_any()));
    };
    let job_name = job.name_any();
    let pp = PostParams { dry_run: true, ..PostParams::default() };
    match jobs_api.create(&pp, &job).await {
        Ok(stored) => {
            let sent = serde_json::to_value(&job.spec).unwrap_or_default();
            let back = serde_json::to_value(&stored.spec).unwrap_or_default();
            let dropped = crate::spec::dropped_paths(&sent, &back, "spec");
            Ok((!dropped.is_empty())
                .then(|| format!("this Kubernetes API server drops {}: a field or feature it does not have", dropped.join(", "))))
        }
        // A Job of that name exists: not the spec's fault (the launch reports whose it is).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) if is_transient(&e) => Err(Error::CheckJob(job_name, e)),
        Err(kube::Error::Api(s)) if forbids_the_operator(&s) => Err(Error::CheckJob(job_name, kube::Error::Api(s))),
        Err(kube::Error::Api(s)) => Ok(Some(clip(&format!("the API server refuses the Job this spec makes: {}", s.message)))),
        Err(e) => Err(Error::CheckJob(job_name, e)),
    }
}

/// Writes the whole status, on the condition that the object is still the version this
/// reconcile read: a stale read fails with a conflict and is retried, so a loop is never
/// counted twice.
async fn write_status(ls: &LoopService, st: &LoopServiceStatus, ctx: &Context) -> Result<()> {
    let (ns, name) = (ls.namespace().unwrap_or_default(), ls.name_any());
    // Read back untyped: the typed status would fill in, as defaults, what the API server dropped.
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ApiResource::erase::<LoopService>(&()));
    let patch = json!({
        "metadata": { "resourceVersion": ls.resource_version() },
        "status": st,
    });
    let stored = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::WriteStatus(format!("{ns}/{name}"), e))?;
    // A CRD older than the operator prunes the status fields it does not know, and a status
    // that forgets (say) which run request it handled would start that loop again and again.
    let sent = serde_json::to_value(st).unwrap_or_default();
    let back = stored.data.get("status").cloned().unwrap_or_default();
    let dropped = crate::spec::dropped_paths(&sent, &back, "status");
    if !dropped.is_empty() {
        return Err(Error::OutdatedCrd(format!("{ns}/{name}"), dropped.join(", ")));
    }
    if let Some(uid) = ls.uid() {
        ctx.remember_written(&uid, st);
    }
    Ok(())
}

/// A fingerprint of a status, to tell whether a cached one is the one last written.
fn fingerprint(st: &LoopServiceStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(st).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn count(ctx: &Context, ns: &str, name: &str, note: &Note) {
    let ls = LsLabels { namespace: ns.to_string(), name: name.to_string() };
    ctx.metrics.saw(&ls);
    let result = |r: &str| ResultLabels { namespace: ns.to_string(), name: name.to_string(), result: r.to_string() };
    match note.reason {
        "LoopStarted" => ctx.metrics.loops_started.get_or_create(&ls).inc(),
        "LoopSucceeded" => ctx.metrics.loops_finished.get_or_create(&result("succeeded")).inc(),
        "LoopFailed" => ctx.metrics.loops_finished.get_or_create(&result("failed")).inc(),
        "LoopOverrun" => ctx.metrics.overruns.get_or_create(&ls).inc(),
        _ => 0,
    };
    if note.warning {
        warn!(namespace = %ns, %name, reason = note.reason, message = %note.message, "loop event");
    }
}

/// Whether a note becomes an Event. By default only what a person acts on does: a loop that
/// started or succeeded is news in status and metrics, not an Event (two per loop would flood
/// etcd with thousands of LoopServices).
pub fn emits_event(note: &Note, events: LoopEvents) -> bool {
    events == LoopEvents::All || !matches!(note.reason, "LoopStarted" | "LoopSucceeded")
}

/// Events are best effort: a refused Event is logged, never a reason to redo a reconcile.
async fn publish(ls: &LoopService, ctx: &Context, notes: &[Note]) {
    let reference = ls.object_ref(&());
    for n in notes.iter().filter(|n| emits_event(n, ctx.settings.loop_events)) {
        let _turn = ctx.request(Priority::Bookkeeping).await;
        let ev = Event {
            type_: if n.warning { EventType::Warning } else { EventType::Normal },
            reason: n.reason.to_string(),
            note: Some(n.message.clone()),
            action: "Reconcile".to_string(),
            secondary: n.job.as_ref().map(|job| ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: Some(job.clone()),
                namespace: reference.namespace.clone(),
                ..ObjectReference::default()
            }),
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(name = %ls.name_any(), error = %e, "could not publish event");
        }
    }
}

/// A watch event of untyped LoopServices as typed ones. One that cannot be decoded leaves the
/// cache (a Delete of its name), and its status says why.
fn decode_event(event: watcher::Event<DynamicObject>, api: &Api<DynamicObject>) -> Option<watcher::Event<LoopService>> {
    use watcher::Event as E;
    let decode = |obj: DynamicObject| -> std::result::Result<LoopService, (DynamicObject, String)> {
        let value = serde_json::to_value(&obj).unwrap_or_default();
        serde_path_to_error::deserialize::<_, LoopService>(value).map_err(|e| (obj, format!("{}: {}", e.path(), e.inner())))
    };
    let apply = |obj: DynamicObject, init: bool| match decode(obj) {
        Ok(ls) if init => Some(E::InitApply(ls)),
        Ok(ls) => Some(E::Apply(ls)),
        Err((obj, why)) => {
            report_undecodable(api, &obj, &why);
            // The cache drops it (during a list, by leaving it out): with a spec it cannot read,
            // nothing runs.
            if init {
                None
            } else {
                placeholder(&obj).map(E::Delete)
            }
        }
    };
    match event {
        E::Apply(o) => apply(o, false),
        E::InitApply(o) => apply(o, true),
        E::Delete(o) => match decode(o) {
            Ok(ls) => Some(E::Delete(ls)),
            Err((o, _)) => placeholder(&o).map(E::Delete),
        },
        E::Init => Some(E::Init),
        E::InitDone => Some(E::InitDone),
    }
}

/// A watch event of LoopServices as the cache keeps them.
fn to_cached(event: watcher::Event<LoopService>) -> watcher::Event<CachedLoopService> {
    use watcher::Event as E;
    match event {
        E::Apply(ls) => E::Apply(ls.into()),
        E::InitApply(ls) => E::InitApply(ls.into()),
        E::Delete(ls) => E::Delete(ls.into()),
        E::Init => E::Init,
        E::InitDone => E::InitDone,
    }
}

/// A LoopService with only the name and namespace of `obj`, to remove it from the cache.
fn placeholder(obj: &DynamicObject) -> Option<LoopService> {
    let mut ls = LoopService::new(obj.metadata.name.as_deref()?, serde_json::from_value(json!({"interval": "1h", "image": "-"})).ok()?);
    ls.metadata.namespace = obj.metadata.namespace.clone();
    ls.metadata.uid = obj.metadata.uid.clone();
    Some(ls)
}

/// Writes `Ready=False InvalidSpec` with why the LoopService cannot be read, unless its status
/// says so already (its own status write comes back through the watch).
fn report_undecodable(api: &Api<DynamicObject>, obj: &DynamicObject, why: &str) {
    let (Some(ns), Some(name)) = (obj.metadata.namespace.clone(), obj.metadata.name.clone()) else { return };
    let message = clip(&format!("the operator cannot read this LoopService: {why}"));
    let conditions = obj.data.pointer("/status/conditions").and_then(|c| c.as_array());
    if conditions.is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["message"] == message.as_str())) {
        return;
    }
    warn!(namespace = %ns, %name, error = %why, "cannot decode a loopservice");
    let api = Api::<DynamicObject>::namespaced_with(api.clone().into_client(), &ns, &ApiResource::erase::<LoopService>(&()));
    let patch = json!({"status": {
        "phase": Phase::Invalid,
        "observedGeneration": obj.metadata.generation,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": status::REASON_INVALID_SPEC, "message": message,
            "lastTransitionTime": crate::crd::Time(Timestamp::now()), "observedGeneration": obj.metadata.generation,
        }],
    }});
    tokio::spawn(async move {
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(namespace = %ns, %name, error = %e, "could not report an unreadable loopservice");
        }
    });
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn a_placeholder_can_always_be_made_to_drop_an_unreadable_loopservice() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
            "spec": {"interval": "1h", "image": "busybox", "ttlSecondsAfterFinished": 2147483648u64},
        }))
        .unwrap();
        let value = serde_json::to_value(&obj).unwrap();
        assert!(serde_json::from_value::<LoopService>(value).is_err(), "an i32 past its range does not decode");
        let p = placeholder(&obj).expect("a placeholder");
        assert_eq!((p.metadata.name.as_deref(), p.metadata.namespace.as_deref()), (Some("x"), Some("ns")));
    }
}

/// Drops what the decisions never read from a cached LoopService.
fn trim_loopservice(ls: &mut LoopService) {
    ls.metadata.managed_fields = None;
    if let Some(a) = ls.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Whether a change to a LoopService can change a decision: its spec (generation), its
/// annotations (a run request), its deletion. Status writes, the operator's own above all, do
/// not re-run the plan.
fn loopservice_fingerprint(ls: &CachedLoopService) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ls.metadata.uid.hash(&mut h);
    ls.metadata.generation.hash(&mut h);
    ls.metadata.deletion_timestamp.is_some().hash(&mut h);
    ls.metadata.annotations.hash(&mut h);
    Some(h.finish())
}

/// Runs the controller until `shutdown` resolves and every in-flight reconcile has finished.
/// `ready` is set once the caches have synced.
pub async fn run(
    mut ctx: Context,
    namespace: Option<String>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (ls_api, jobs_api, pods_api): (Api<LoopService>, Api<Job>, Api<Pod>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let (jobs, job_stream) = Cache::new(jobs_api, observe::owned_config(), observe::trim_job);
    let (pods, pod_stream) = Cache::new(pods_api, observe::owned_config(), observe::trim_pod);
    observe::drive(pod_stream, "pods", ctx.watch_failed_at.clone());
    let (store, writer) = reflector::store();
    // Read untyped and decoded one by one: a LoopService the operator cannot decode (a value the
    // schema let through) is reported in its own status, and never keeps the others from a list.
    let ar = ApiResource::erase::<LoopService>(&());
    let raw_api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    };
    let _ = ls_api;
    let undecodable = raw_api.clone();
    let ls_stream = watcher(raw_api, watcher::Config::default().timeout(observe::WATCH_TIMEOUT_SECS))
        .backoff(observe::watch_backoff())
        .try_filter_map(move |event| std::future::ready(Ok(decode_event(event, &undecodable))))
        .modify(trim_loopservice)
        .map_ok(to_cached)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(loopservice_fingerprint, Default::default());
    let (job_store, pod_store) = (jobs.store.clone(), pods.store.clone());
    ctx.jobs = Some(jobs);
    ctx.pods = Some(pods);
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.max_reconciles.max(ctx.settings.concurrency));
    let synced = ctx.synced.clone();
    let watch_failed_at = ctx.watch_failed_at.clone();
    let ctx = Arc::new(ctx);
    let controller = Controller::for_stream(ls_stream, store.clone())
        .owns_stream(observe::job_triggers(job_stream))
        .with_config(config)
        .graceful_shutdown_on(shutdown);
    // Deleted LoopServices are never reconciled again: sweep their metric series, retry
    // counters and last writes now and then.
    let (sweep_store, sweep_ctx) = (store.clone(), ctx.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let exists = |l: &LsLabels| sweep_store.get(&ObjectRef::new(&l.name).within(&l.namespace)).is_some();
            for gone in sweep_ctx.metrics.forget_missing(exists) {
                debug!(namespace = %gone.namespace, name = %gone.name, "removed the metrics of a deleted loopservice");
            }
            sweep_ctx
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|k, _| sweep_store.get(&ObjectRef::new(&k.name).within(k.namespace.as_deref().unwrap_or_default())).is_some());
            let uids: std::collections::HashSet<String> = sweep_store.state().iter().filter_map(|l| l.uid()).collect();
            sweep_ctx.written.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| uids.contains(uid));
            drop(uids);
            let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
        }
    });
    // Freed heap is handed back once a burst of reconciles (a start, a wave of due loops) is
    // over: when none ran for a while after some did.
    let heap_ctx = ctx.clone();
    tokio::spawn(async move {
        let (mut seen, mut trimmed) = (0, 0);
        loop {
            tokio::time::sleep(QUIET_BEFORE_TRIM / 2).await;
            let now = heap_ctx.metrics.reconciles.get();
            if now == seen && now != trimmed {
                let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
                trimmed = now;
            }
            seen = now;
        }
    });
    tokio::spawn(async move {
        // The stores' readiness signals wake only the last task that polled them, and the
        // controller polls one too: poll again now and then rather than wait to be woken.
        let all = async {
            store.wait_until_ready().await?;
            job_store.wait_until_ready().await?;
            pod_store.wait_until_ready().await
        };
        let mut all = std::pin::pin!(all);
        loop {
            match tokio::time::timeout(Duration::from_millis(100), &mut all).await {
                Ok(Ok(())) => {
                    info!("caches synced");
                    synced.store(true, Ordering::SeqCst);
                    ready.store(true, Ordering::SeqCst);
                    // The initial lists' decoding is over: hand its freed pages back.
                    tokio::task::spawn_blocking(crate::heap::trim);
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            let watch_failed_at = watch_failed_at.clone();
            async move {
                match res {
                    Ok((obj, _)) => debug!(name = %obj.name, namespace = obj.namespace.as_deref().unwrap_or(""), "reconciled"),
                    // Logged by error_policy already.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                    // Watch failures (the API server unreachable, RBAC missing) land here; the
                    // watcher retries them with backoff.
                    Err(e) => {
                        watch_failed_at.store(Timestamp::now().as_millisecond(), Ordering::SeqCst);
                        warn!(error = %e, "controller stream error");
                    }
                }
            }
        })
        .await;
}
