//! Observe: what is known of one LoopService before deciding. The caches answer almost all
//! of it; the API server is asked only what they cannot say: the stored object when the cache
//! lacks this instance's own last write (the one stale-cache check), what it thinks of a new
//! spec (a dry run, shared by LoopServices of one spec), the running loop's Job when the cache
//! lost it, and why a Job has no Pod.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::context::Context;
use crate::crd::{LoopService, LoopServiceStatus, Phase};
use crate::job::{self, Held, JobParams, ObservedJob, Outcome};
use crate::keys::LABEL_JOB_NAME;
use crate::pod_security;
use crate::reasons::Reason;
use crate::schedule;
use crate::spec::ValidSpec;
use crate::status::Obstacle;
use crate::text::clip;
use crate::turns::Priority;
use crate::verdicts::Verdict;
use crate::{is_transient, Error, Result};

/// A reconcile that finds the cache without this instance's last status write (the watch a
/// step behind it) runs again after `OWN_WRITE_RECHECK`, for up to `OWN_WRITE_WAIT` after the
/// write, before it reads the stored object instead: the watch almost always brings the write
/// within milliseconds, and a read per loop costs the API server more than a short wait.
pub const OWN_WRITE_RECHECK: Duration = Duration::from_millis(50);
const OWN_WRITE_WAIT: Duration = Duration::from_secs(2);
/// A loop's Pod gets this long to start before a waiting container counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(10);

/// What a reconcile found.
pub enum Observation {
    /// Enough to decide on.
    Seen(Box<Observed>),
    /// The cache lacks this instance's status write of a moment ago: look again shortly.
    Behind,
    /// Being deleted (its Jobs go with it, through their owner references), or gone. The Jobs
    /// still held by the operator's finalizer are let go: no end of theirs will be recorded.
    Gone(Vec<Held>),
}

/// Whether the spec can run, and if not, who said so.
pub enum Checked {
    /// With the warning the dry run of a new spec brought, to publish once (PodSecurity's
    /// `warn` level: the loops run).
    Valid(Box<ValidSpec>, Option<String>),
    /// The operator's own checks refuse it: nothing runs until the spec changes.
    Invalid(String),
    /// The API server refuses (or would drop part of) the Job it makes: checked again now and
    /// then, since the cause may lie outside the spec (a quota, a webhook).
    Refused(String),
}

/// One LoopService as the reconcile decides on it.
pub struct Observed {
    /// The cached LoopService, or the stored one when the cache was behind.
    pub ls: Arc<LoopService>,
    pub namespace: String,
    pub uid: String,
    /// The status as stored (the last one written).
    pub prev: LoopServiceStatus,
    pub spec: Checked,
    /// Its loops' Jobs, by loop number; a failed loop not yet recorded says what its Pods said.
    /// A Job being deleted before its loop ended is left out: its loop was cut short.
    pub jobs: Vec<ObservedJob>,
    /// Its Jobs that carry the operator's finalizer, each let go once its loop's end is stored.
    pub held: Vec<Held>,
    /// A Pod of a deleted Job of this LoopService that still runs (its name and phase): the
    /// next loop waits for it.
    pub lingering: Option<(String, String)>,
    /// The running loop's Pod cannot start, or cannot be created.
    pub stuck: Option<Obstacle>,
    /// SIGTERM came: no new loop starts.
    pub draining: bool,
    /// A watch failed lately: the running loop is rechecked more often.
    pub suspect: bool,
}

/// Observes one LoopService at `now`.
pub async fn observe(ls: Arc<LoopService>, ctx: &Context, now: Timestamp) -> Result<Observation> {
    let name = ls.name_any();
    let (Some(namespace), Some(uid)) = (ls.namespace(), ls.uid()) else {
        return Err(Error::Incomplete(name));
    };
    let ls = match current(ls, ctx, &namespace, &uid).await? {
        Current::Use(ls) => ls,
        Current::Behind => return Ok(Observation::Behind),
        Current::Gone => return Ok(Observation::Gone(vec![])),
    };
    if ls.meta().deletion_timestamp.is_some() {
        let owned = ctx.caches.jobs.of(&namespace, &uid);
        return Ok(Observation::Gone(owned.iter().filter(|j| owns(j, &uid)).filter_map(|j| job::held(j)).collect()));
    }
    let prev = ls.status.clone().unwrap_or_default();
    let spec = check(&ls, ctx, &namespace, &prev, now).await?;
    let mut seen = Observed {
        ls,
        namespace,
        uid,
        prev,
        spec,
        jobs: vec![],
        held: vec![],
        lingering: None,
        stuck: None,
        draining: ctx.draining.load(Ordering::SeqCst),
        suspect: ctx.caches_suspect(),
    };
    if !matches!(seen.spec, Checked::Valid(..)) {
        // No loop is decided on, but Jobs whose loops' ends were stored before the spec went
        // bad are still let go.
        let owned = ctx.caches.jobs.of(&seen.namespace, &seen.uid);
        seen.held =
            owned.iter().filter(|j| owns(j, &seen.uid)).filter_map(|j| job::held(j)).filter(|h| !ctx.released_lately(&h.uid)).collect();
    } else {
        let owned_jobs;
        (seen.jobs, seen.held, owned_jobs) = jobs(&seen, ctx).await?;
        let pods: Vec<Arc<Pod>> =
            ctx.caches.pods.of(&seen.namespace, &seen.uid).into_iter().filter(|p| of_our_jobs(p, &owned_jobs)).collect();
        explain_failures(&mut seen.jobs, &pods, seen.prev.last_finished_loop);
        seen.lingering = lingering(&seen.jobs, &pods);
        seen.stuck = stuck(&seen, &pods, ctx, now).await;
    }
    Ok(Observation::Seen(Box::new(seen)))
}

enum Current {
    Use(Arc<LoopService>),
    Behind,
    Gone,
}

/// The one stale-cache check: the LoopService to decide on. A cached object without this instance's last status write (the watch a step behind it)
/// would decide on an old status (and could start a loop that already ran): it is waited for a
/// moment, then read from the API server.
async fn current(ls: Arc<LoopService>, ctx: &Context, ns: &str, uid: &str) -> Result<Current> {
    let cached = ls.status.clone().unwrap_or_default();
    match ctx.behind_last_write(uid, &cached) {
        None => return Ok(Current::Use(ls)),
        Some(ago) if ago < OWN_WRITE_WAIT && !ctx.caches_suspect() => {
            ctx.metrics.own_write_waits.inc();
            return Ok(Current::Behind);
        }
        Some(_) => {}
    }
    let name = ls.name_any();
    let _turn = ctx.request(Priority::Bookkeeping, ns).await;
    let mut stored = match Api::<LoopService>::namespaced(ctx.client.clone(), ns).get(&name).await {
        Ok(stored) => stored,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Current::Gone),
        Err(e) => return Err(Error::GetLoopService(format!("{ns}/{name}"), e)),
    };
    if stored.resource_version() == ls.resource_version() {
        // Someone else wrote it last; the cache is current.
        ctx.remember_written(uid, &cached);
        return Ok(Current::Use(ls));
    }
    crate::runtime::trim_loopservice(&mut stored);
    ctx.metrics.stale_reads.inc();
    Ok(Current::Use(Arc::new(stored)))
}

/// Checks the spec: the operator's own rules, then, for a spec not seen run before, the API
/// server's dry run of the Job it makes (what it would refuse or drop is InvalidSpec now, not a
/// failed loop later). While refused, the check is repeated.
async fn check(ls: &LoopService, ctx: &Context, ns: &str, prev: &LoopServiceStatus, now: Timestamp) -> Result<Checked> {
    // The CRD's rule, for API servers that do not run CEL (before 1.25).
    if ls.name_any().len() > crate::rules::MAX_LOOPSERVICE_NAME {
        return Ok(Checked::Invalid(crate::rules::MSG_NAME_LENGTH.into()));
    }
    let valid = match ls.spec.validate() {
        Ok(v) => v,
        Err(errors) => {
            // Kept as the API server's refusals are, so that the next LoopServices of this spec
            // are known invalid before they are decoded (`crate::urgency`).
            let why = errors.to_string();
            let _ = ctx.verdicts.cell(ns, &ls.spec).set(Verdict::refused(why.clone()));
            return Ok(Checked::Invalid(why));
        }
    };
    if prev.observed_generation == ls.metadata.generation && prev.phase != Some(Phase::Invalid) {
        return Ok(Checked::Valid(Box::new(valid), None));
    }
    let verdict = ctx.verdicts.cell(ns, &ls.spec);
    let verdict = verdict
        .get_or_try_init(|| async {
            // A new spec is checked on the way to its first loop; a spec the API server refused
            // before, checked again as it was, is bookkeeping: it never delays a due loop.
            let again = prev.observed_generation == ls.metadata.generation && prev.phase == Some(Phase::Invalid);
            let _turn = ctx.request(if again { Priority::Bookkeeping } else { Priority::Launch }, ns).await;
            dry_run(ls, &valid, ctx, prev.loops_started.saturating_add(1), now).await
        })
        .await?;
    Ok(match verdict {
        Verdict { refused: Some(message), .. } => Checked::Refused(message.clone()),
        Verdict { refused: None, warning } => Checked::Valid(Box::new(valid), warning.clone()),
    })
}

/// Asks the API server to validate, not create, the Job that loop `n` of this spec would be
/// (a server-side dry run). Refused when it refuses it, would drop a field of it that this
/// Kubernetes version does not have, or warns that its Pods break the PodSecurity level the
/// namespace enforces (PodSecurity refuses only the Pods, and the loop would never run).
async fn dry_run(ls: &LoopService, spec: &ValidSpec, ctx: &Context, n: i64, now: Timestamp) -> Result<Verdict> {
    let params = JobParams {
        ls,
        spec,
        loop_number: n,
        scheduled: now,
        start: now,
        run_request: None,
        requester: None,
        jittered: None,
        previous: job::PreviousResult::None,
        last_success: Some(now),
    };
    let Some(job) = job::build_job(&params) else {
        return Err(Error::Incomplete(ls.name_any()));
    };
    let job_name = job.name_any();
    let ns = ls.namespace().unwrap_or_default();
    let pp = PostParams { dry_run: true, ..PostParams::default() };
    let body = job::request_body(&job, spec);
    let sent_at = ctx.clock.machine();
    match create_with_warnings(&ctx.client, &ns, &pp, &body).await {
        Ok((stored, warnings)) => {
            // A dry run is stamped too: a reading of the API server's clock.
            if let Some(created) = stored.pointer("/metadata/creationTimestamp").and_then(|t| t.as_str()) {
                if let Ok(created) = created.parse::<Timestamp>() {
                    ctx.clock.learn(sent_at, ctx.clock.machine(), created);
                }
            }
            // As sent and as the API server would store it, both as JSON: fields the operator's
            // types do not have count too.
            let dropped = crate::json_paths::dropped_paths(&body["spec"], &stored["spec"], "spec");
            if !dropped.is_empty() {
                let why = format!("this Kubernetes API server drops {}: a field or feature it does not have", dropped.join(", "));
                return Ok(Verdict::refused(clip(&why)));
            }
            match pod_security::violation(&warnings) {
                Some(v) => pod_security_verdict(ctx, &ns, &v).await.map_err(|e| Error::CheckJob(job_name, e)),
                None => Ok(Verdict::default()),
            }
        }
        // A Job of that name exists: not the spec's fault (the launch reports whose it is).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Verdict::default()),
        Err(e) if is_transient(&e) => Err(Error::CheckJob(job_name, e)),
        Err(kube::Error::Api(s)) if super::act::forbids_the_operator(&s) => Err(Error::CheckJob(job_name, kube::Error::Api(s))),
        Err(kube::Error::Api(s)) => {
            let message = without_job_name(&s.message, &job_name);
            Ok(Verdict::refused(clip(&format!("the API server refuses the Job this spec makes: {message}"))))
        }
        Err(e) => Err(Error::CheckJob(job_name, e)),
    }
}

/// The API server's message without the name of the Job dry-run: the answer is kept for every
/// LoopService of the spec (see [`crate::verdicts`]), and each one's status must say the same,
/// not name the Job of whichever was checked first (which would also change the message, and
/// so rewrite thousands of statuses, each time another is).
fn without_job_name(message: &str, job: &str) -> String {
    message.replace(&format!("\"{job}\" "), "").replace(job, "the loop's Job")
}

/// `Api::create` of the Job `body` ([`job::request_body`]) in `ns`, with the texts of the
/// answer's `Warning` headers, which kube's `Api` leaves out; the answer as JSON. Errors as
/// `Api::create`'s.
pub(super) async fn create_with_warnings(
    client: &kube::Client,
    ns: &str,
    pp: &PostParams,
    body: &serde_json::Value,
) -> kube::Result<(serde_json::Value, Vec<String>)> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let bytes = serde_json::to_vec(body).map_err(kube::Error::SerdeError)?;
    let mut req = kube::core::Request::new(api.resource_url()).create(pp, bytes).map_err(kube::Error::BuildRequest)?;
    req.extensions_mut().insert("create");
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let code = res.status();
    let warnings = pod_security::warning_texts(res.headers().get_all("warning").iter().filter_map(|v| v.to_str().ok()));
    let body = res.into_body().collect_bytes().await?;
    if code.is_client_error() || code.is_server_error() {
        // As kube's own client reads an error: a `Status`, or the text of one.
        let status = serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(&body);
            kube::core::Status::failure(text.trim(), "Failed to parse error data").with_code(code.as_u16())
        });
        return Err(kube::Error::Api(status.boxed()));
    }
    Ok((serde_json::from_slice(&body).map_err(kube::Error::SerdeError)?, warnings))
}

/// What a PodSecurity warning on the dry run means: refused when the namespace enforces the
/// level it names (or a stricter one), so every Pod of the Job would be refused; otherwise a
/// warning to publish, and the loops run. The namespace's labels say which; when the operator
/// may not read them, the Pods may yet be admitted, and it is only a warning (a refused Pod is
/// then reported as `PodCreateFailed` by the running loop).
async fn pod_security_verdict(ctx: &Context, ns: &str, v: &pod_security::Violation) -> kube::Result<Verdict> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = match namespaces.get(ns).await {
        Ok(namespace) => Some(namespace.metadata.labels.unwrap_or_default()),
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {
            warn!(namespace = %ns, error = %s.message, "cannot read the namespace's PodSecurity labels; a PodSecurity warning is reported as a warning");
            None
        }
        Err(e) => return Err(e),
    };
    let said = format!("the API server warns that the Pod template {}", v.text);
    let (refused, warning) = match (&labels, labels.as_ref().and_then(|l| pod_security::enforced(v, l))) {
        (_, Some(level)) => (Some(format!("its Pods would be refused: namespace {ns} enforces PodSecurity \"{level}\", and {said}")), None),
        (Some(_), None) => (None, Some(format!("{said}; namespace {ns} does not enforce that level, and the loops run"))),
        (None, None) => {
            (None, Some(format!("{said}; the operator cannot read whether namespace {ns} enforces that level, and the loops run")))
        }
    };
    Ok(Verdict { refused: refused.as_deref().map(clip), warning: warning.as_deref().map(clip) })
}

/// The LoopService's loops' Jobs, from the cache, and those of them the finalizer holds. The
/// running loop's Job missing from the cache is either deleted or not yet seen by a watch that
/// is catching up (after an API server restart): it is read, rather than counted deleted with
/// the next loop started beside it. While a watch failed lately it is read anyway: the cached
/// Job may not show that it ended.
async fn jobs(seen: &Observed, ctx: &Context) -> Result<(Vec<ObservedJob>, Vec<Held>, Vec<Arc<Job>>)> {
    let uid = seen.uid.as_str();
    let mut owned: Vec<Arc<Job>> = ctx.caches.jobs.of(&seen.namespace, uid).into_iter().filter(|j| owns(j, uid)).collect();
    let active = seen.prev.active_job.as_deref().filter(|a| seen.suspect || !owned.iter().any(|j| j.name_any() == *a));
    if let Some(active) = active {
        let _turn = ctx.request(Priority::Bookkeeping, &seen.namespace).await;
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &seen.namespace);
        let stored = api.get_opt(active).await.map_err(|e| Error::GetJob(active.to_string(), e))?;
        owned.retain(|j| j.name_any() != active);
        owned.extend(stored.filter(|j| owns(j, uid)).map(Arc::new));
    }
    let held = owned.iter().filter_map(|j| job::held(j)).filter(|h| !ctx.released_lately(&h.uid)).collect();
    let mut jobs: Vec<ObservedJob> = owned.iter().filter_map(|j| job::observe(j).filter(|seen| !job::deleted_running(j, seen))).collect();
    jobs.sort_by_key(|j| j.loop_number);
    Ok((jobs, held, owned))
}

/// Whether a Pod labelled as this LoopService's is one of its Jobs' Pods: its controlling
/// owner is a Job of the LoopService (by uid), or a Job the cache no longer has (the Pod of a
/// deleted Job, which the next loop waits for). A Pod of some other Job that carries the
/// label says nothing of these loops.
fn of_our_jobs(p: &Pod, owned: &[Arc<Job>]) -> bool {
    let Some(owner) = p.owner_references().iter().find(|o| o.controller == Some(true)) else { return false };
    owner.kind == "Job"
        && (owned.iter().any(|j| j.uid().as_deref() == Some(owner.uid.as_str())) || !owned.iter().any(|j| j.name_any() == owner.name))
}

/// Whether this LoopService (by uid) is the Job's controlling owner.
fn owns(j: &Job, uid: &str) -> bool {
    j.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true))
}

fn pods_of<'a>(pods: &'a [Arc<Pod>], job: &'a str) -> impl Iterator<Item = &'a Arc<Pod>> + 'a {
    pods.iter().filter(move |p| p.labels().get(LABEL_JOB_NAME).map(String::as_str) == Some(job))
}

/// A failed loop not yet recorded says what its Pods said, not only "failed".
fn explain_failures(jobs: &mut [ObservedJob], pods: &[Arc<Pod>], last_finished: i64) {
    for j in jobs.iter_mut().filter(|j| j.loop_number > last_finished) {
        if let Some((_, Outcome::Failed { message, .. })) = &mut j.end {
            let of_job: Vec<Pod> = pods_of(pods, &j.name).map(|p| Pod::clone(p)).collect();
            let detail = job::describe_pods(&of_job);
            if !detail.is_empty() {
                *message = format!("{detail}; {message}");
            }
        }
    }
}

/// Loops never overlap: a Pod still running whose Job is gone (deleted while its loop ran) is
/// on its way out, and the next loop waits for it.
fn lingering(jobs: &[ObservedJob], pods: &[Arc<Pod>]) -> Option<(String, String)> {
    let pod = pods.iter().find(|p| {
        let job = p.labels().get(LABEL_JOB_NAME).map(String::as_str);
        !jobs.iter().any(|j| Some(j.name.as_str()) == job)
            && matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running" | "Pending"))
    })?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    Some((pod.name_any(), phase))
}

/// Why the running loop cannot make progress, once it has run for `STUCK_AFTER`: its Pod
/// waits for something that will not come (an image that cannot be pulled), or there is no
/// Pod at all, and the Job controller's `FailedCreate` Event says why.
async fn stuck(seen: &Observed, pods: &[Arc<Pod>], ctx: &Context, now: Timestamp) -> Option<Obstacle> {
    let running = seen.jobs.iter().filter(|j| j.end.is_none()).max_by_key(|j| j.loop_number)?;
    // A Job waiting for its queue has no Pod by design; once admitted, its Pod gets its time.
    if running.queued_since.is_some() {
        return None;
    }
    if schedule::seconds_between(running.admitted.unwrap_or(running.start), now) < STUCK_AFTER.as_secs_f64() {
        return None;
    }
    let of_job: Vec<Pod> = pods_of(pods, &running.name).map(|p| Pod::clone(p)).collect();
    let (reason, why) = match job::stuck_reason(&of_job) {
        Some(why) => (Reason::LoopStuck, why),
        None if of_job.is_empty() => (Reason::PodCreateFailed, pod_create_failure(ctx, &seen.namespace, &running.name)?),
        None => return None,
    };
    Some(Obstacle::Stuck { job: running.name.clone(), reason, why })
}

/// Why the Job controller could not create the Pod of `job`, from the Job's latest
/// `FailedCreate` Event, kept by the operator's watch of them ([`crate::failed_creates`]).
/// Best effort: `None` when there is none.
fn pod_create_failure(ctx: &Context, ns: &str, job: &str) -> Option<String> {
    crate::failed_creates::why(&ctx.caches.failed_creates, ns, job)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(owner: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "ownerReferences": owner,
            "labels": {"loops.dev/loopservice-uid": "ls1", "job-name": "report-1"}}}))
        .expect("a Pod")
    }

    fn owner(kind: &str, name: &str, uid: &str) -> serde_json::Value {
        json!([{"apiVersion": "batch/v1", "kind": kind, "name": name, "uid": uid, "controller": true}])
    }

    #[test]
    fn a_pod_counts_only_when_its_controlling_job_is_the_loopservices() {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "report-1", "namespace": "ns", "uid": "job-uid"}})).unwrap();
        let owned = [Arc::new(job)];
        assert!(of_our_jobs(&pod(owner("Job", "report-1", "job-uid")), &owned), "its own Job's Pod");
        assert!(
            of_our_jobs(&pod(owner("Job", "report-0", "gone-uid")), &owned),
            "the Pod of a Job deleted since: the next loop waits for it"
        );
        assert!(!of_our_jobs(&pod(owner("Job", "report-1", "another-uid")), &owned), "another Job of the same name");
        assert!(!of_our_jobs(&pod(json!([])), &owned), "a Pod made by hand with the labels");
        assert!(!of_our_jobs(&pod(owner("ReplicaSet", "report-1", "job-uid")), &owned), "not a Job's Pod");
    }
}
