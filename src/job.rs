//! Pure Job building and reading: names, labels, annotations, owner reference, and what a
//! Job (and its Pods) say about how a loop went.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::crd::{LoopService, Time, Trigger};
use crate::requester::Requester;
use crate::spec::ValidSpec;

use crate::keys::*;
use crate::reasons::{Reason, FALSE, TRUE};
use crate::text::clip;

/// Kubernetes label values, and so Job names (the Job controller copies the name into its
/// Pods' `job-name` label), are limited to 63 characters.
const MAX_NAME: usize = 63;

/// How many hex digits of the LoopService's uid go into its Job names.
pub const UID_FRAGMENT: usize = 5;

/// The Job name of loop `n` of the LoopService `loopservice` with uid `uid`:
/// `<name>-<fragment>-<n>`, the fragment being the first 5 hex digits of the uid's SHA-256.
/// When that would pass 63 characters, the name is cut and a hash of the full name added (so
/// two long names never share Jobs).
///
/// The fragment keeps a LoopService deleted and created again under the same name from
/// meeting the Jobs of the old one (kept by `--cascade=orphan`, or not yet collected): the new
/// one starts afresh at loop 1 at once. The name stays deterministic, so a loop still never
/// runs twice.
pub fn job_name(loopservice: &str, uid: &str, n: i64) -> String {
    let suffix = format!("-{}-{n}", uid_fragment(uid));
    // Room is kept for a loop number of LOOP_DIGITS digits, so that a LoopService's Job names
    // keep one shape from loop 1 on (a name is never cut at loop 10 or 100 that was whole
    // before); only past loop 9,999,999,999 would the name part shrink.
    let room = NAME_ROOM.min(MAX_NAME.saturating_sub(suffix.len()));
    format!("{}{suffix}", short_name(loopservice, room))
}

/// The most digits of a loop number a Job name keeps room for.
const LOOP_DIGITS: usize = 10;
/// What is left of a Job name for the LoopService's name: 63, less `-<fragment>-` and the
/// loop number's room (46).
const NAME_ROOM: usize = MAX_NAME - UID_FRAGMENT - 2 - LOOP_DIGITS;

/// The first [`UID_FRAGMENT`] hex digits of the SHA-256 of a uid.
pub fn uid_fragment(uid: &str) -> String {
    hex8(uid)[..UID_FRAGMENT].to_string()
}

/// A value of at most `max` characters naming `name`: `name` itself when it fits, else a
/// prefix, `-`, and 8 hex digits of its SHA-256.
pub fn short_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let hash = hex8(name);
    let keep = max.saturating_sub(hash.len() + 1);
    // Names are ASCII (DNS subdomains), so byte slicing is safe; trailing separators would make
    // an invalid name or label value.
    let prefix = name[..keep].trim_end_matches(['-', '.']);
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

fn hex8(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// What the Job of one loop is made from.
pub struct JobParams<'a> {
    pub ls: &'a LoopService,
    pub spec: &'a ValidSpec,
    pub loop_number: i64,
    pub scheduled: Timestamp,
    pub start: Timestamp,
    /// The run request this loop answers; `None` for a scheduled loop.
    pub run_request: Option<&'a str>,
    /// Who asked for it and why, for a manual loop.
    pub requester: Option<&'a Requester>,
    /// With spec.jitter: when the loop was to start, its due time plus its delay.
    pub jittered: Option<Timestamp>,
    /// How the loop before this one ended (LOOP_PREVIOUS_RESULT).
    pub previous: PreviousResult,
    /// LOOP_LAST_SUCCESS_TIME: the LOOP_SCHEDULED_TIME of the latest loop that succeeded.
    pub last_success: Option<Timestamp>,
}

/// How the loop before this one ended, for LOOP_PREVIOUS_RESULT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviousResult {
    Succeeded,
    Failed,
    /// No loop before it, or none whose end is known.
    None,
}

impl PreviousResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PreviousResult::Succeeded => "Succeeded",
            PreviousResult::Failed => "Failed",
            PreviousResult::None => "None",
        }
    }
}

/// Builds the Job of one loop from the validated spec: one attempt (`backoffLimit: 0` unless
/// the spec says otherwise), the template's Pod with the operator's labels, annotations and
/// loop variables added, the log tail as the loop container's termination message (unless
/// the template chose otherwise), owned by the LoopService.
pub fn build_job(p: &JobParams<'_>) -> Option<Job> {
    let ls = p.ls;
    let name = ls.metadata.name.clone()?;
    let uid = ls.metadata.uid.clone()?;
    let uid_for_name = uid.clone();
    let owner = ls.controller_owner_ref(&())?;
    let labels = BTreeMap::from([
        (LABEL_NAME.to_string(), short_name(&name, MAX_NAME)),
        (LABEL_UID.to_string(), uid),
        (LABEL_LOOP.to_string(), p.loop_number.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
    ]);
    let trigger = if p.run_request.is_some() { Trigger::Manual } else { Trigger::Scheduled };
    let mut annotations = BTreeMap::from([
        (ANN_NAME.to_string(), name.clone()),
        (ANN_LOOP.to_string(), p.loop_number.to_string()),
        (ANN_SCHEDULED.to_string(), Time(p.scheduled).format()),
        (ANN_STARTED.to_string(), Time(p.start).format()),
        (ANN_TRIGGER.to_string(), trigger.as_str().to_string()),
    ]);
    if let Some(r) = p.run_request {
        annotations.insert(ANN_RUN_REQUEST.to_string(), r.to_string());
        annotations.extend(p.requester.map(Requester::annotations).unwrap_or_default());
    }
    if let Some(at) = p.jittered {
        annotations.insert(ANN_JITTERED.to_string(), Time(at).format());
    }
    let spec = p.spec;
    let mut pod = spec.pod.clone();
    for c in pod.containers.iter_mut().filter(|c| c.name == CONTAINER) {
        // After the user's own, so that the API server's messages about `env[i]` name the
        // variable the spec names.
        let mut env = c.env.take().unwrap_or_default();
        env.extend([
            env_var(ENV_LOOP_NUMBER, &p.loop_number.to_string()),
            env_var(ENV_SCHEDULED_TIME, &Time(p.scheduled).format()),
            env_var(ENV_LOOPSERVICE_NAME, &name),
            env_var(ENV_PREVIOUS_RESULT, p.previous.as_str()),
            env_var(ENV_LAST_SUCCESS_TIME, &p.last_success.map(|t| Time(t).format()).unwrap_or_default()),
        ]);
        c.env = Some(env);
        c.termination_message_policy.get_or_insert_with(|| "FallbackToLogsOnError".to_string());
    }
    // A Job for a queue is created suspended: the queue (Kueue) resumes it once admitted.
    let queued = spec.job_labels.contains_key(LABEL_QUEUE_NAME);
    // The operator's keys win; validation refuses a template or jobMetadata that sets them.
    let (job_labels, job_annotations) = (over(&spec.job_labels, &labels), over(&spec.job_annotations, &annotations));
    let (pod_labels, mut pod_annotations) = (over(&spec.pod_labels, &labels), over(&spec.pod_annotations, &annotations));
    // `kubectl logs` and `exec` go to the loop's container unless told otherwise.
    pod_annotations.entry(ANN_DEFAULT_CONTAINER.to_string()).or_insert_with(|| CONTAINER.to_string());
    Some(Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, &uid_for_name, p.loop_number)),
            namespace: ls.metadata.namespace.clone(),
            labels: Some(job_labels),
            annotations: Some(job_annotations),
            owner_references: Some(vec![owner]),
            finalizers: Some(vec![FINALIZER_RECORD.to_string()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.backoff_limit),
            // Round up so that a loop is never cut short of its timeout.
            active_deadline_seconds: spec.timeout.map(|t| t.as_secs() as i64 + i64::from(t.subsec_nanos() > 0)),
            pod_failure_policy: spec.pod_failure_policy.clone(),
            ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
            suspend: queued.then_some(true),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations: Some(pod_annotations), ..ObjectMeta::default() }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// `theirs` with `ours` over it.
fn over(theirs: &BTreeMap<String, String>, ours: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all = theirs.clone();
    all.extend(ours.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// The Job as the API server is sent it: `job`, built by [`build_job`] from `spec`, with the
/// template's Pod spec fields that the operator's types do not have (a Pod field newer than
/// them) put back where the template has them, so that the API server gets the Pod as written.
pub fn request_body(job: &Job, spec: &ValidSpec) -> serde_json::Value {
    let mut body = serde_json::to_value(job).unwrap_or_default();
    if let (Some(unknown), Some(pod)) = (&spec.pod_unknown, body.pointer_mut("/spec/template/spec")) {
        crate::json_paths::restore(pod, unknown);
    }
    body
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), value_from: None }
}

/// How a loop's Job ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// `reason` is JobFailed or DeadlineExceeded; `message` says what the Job said.
    Failed {
        reason: Reason,
        message: String,
    },
}

/// One loop's Job as the operator reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    pub name: String,
    pub loop_number: i64,
    /// When the operator created it: the start-time annotation, to the millisecond, held to
    /// the Job's creationTimestamp (see [`observe`]).
    pub start: Timestamp,
    /// When the loop was due: the scheduled-time annotation, never after `start`.
    pub scheduled: Option<Timestamp>,
    /// The run request it answers, for a manual loop.
    pub run_request: Option<String>,
    /// Who asked for it and why, for a manual loop, as far as its Job says.
    pub requester: Requester,
    /// When and how it ended; `None` while it runs.
    pub end: Option<(Timestamp, Outcome)>,
    /// For a Job labelled for a queue ([`LABEL_QUEUE_NAME`]): where it waits to be admitted.
    pub queue: Option<String>,
    /// While it runs and is suspended (waiting for its queue, or put back in it): since when.
    pub queued_since: Option<Timestamp>,
    /// For a Job of a queue that is no longer suspended: when it was admitted (the Job's
    /// startTime, which Kubernetes sets when a suspended Job resumes).
    pub admitted: Option<Timestamp>,
}

/// How far the start-time annotation may be from the Job's creationTimestamp: the API server
/// stamps creation to the whole second, after the operator read its clock, and the two clocks
/// may disagree a little.
pub const START_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a Job of this operator's; `None` for a Job that is not a loop's.
///
/// The annotations are the operator's, but anyone who may edit the Job may change them, by
/// hand or by a tool that rewrites annotations. They are trusted only as far as the API
/// server's own stamps allow: the start is held within [`START_SLACK`] of the
/// creationTimestamp (an annotation saying the loop started an hour from now, or an hour ago,
/// can neither stall the loop nor hurry it along), the due time is never after the start, and
/// an unreadable annotation falls back to the creationTimestamp.
pub fn observe(job: &Job) -> Option<ObservedJob> {
    let name = job.metadata.name.clone()?;
    let loop_number: i64 = job.labels().get(LABEL_LOOP)?.parse().ok().filter(|n| *n > 0)?;
    let ann = job.annotations();
    let parse = |k: &str| ann.get(k).and_then(|v| v.parse::<Timestamp>().ok());
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let start = match (parse(ANN_STARTED), created) {
        (Some(s), Some(c)) => s.clamp(crate::schedule::sub(c, START_SLACK), crate::schedule::add(c, START_SLACK)),
        (s, c) => s.or(c)?,
    };
    let scheduled = parse(ANN_SCHEDULED).map(|t| t.min(start));
    let status = job.status.as_ref();
    let cond =
        |type_: &str| status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == TRUE));
    let end = if let Some(c) = cond("Complete") {
        let at = status.and_then(|s| s.completion_time.as_ref()).or(c.last_transition_time.as_ref()).map(|t| t.0).unwrap_or(start);
        Some((at.max(start), Outcome::Succeeded))
    } else if let Some(c) = cond("Failed") {
        let at = c.last_transition_time.as_ref().map(|t| t.0).unwrap_or(start);
        let job_reason = c.reason.clone().unwrap_or_default();
        let reason = if job_reason == Reason::DeadlineExceeded.as_str() { Reason::DeadlineExceeded } else { Reason::JobFailed };
        let mut message = format!("Job {name} failed");
        if !job_reason.is_empty() {
            message.push_str(&format!(": {job_reason}"));
        }
        if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(&format!(" ({m})"));
        }
        Some((at.max(start), Outcome::Failed { reason, message }))
    } else {
        None
    };
    let run_request = ann.get(ANN_RUN_REQUEST).cloned();
    let requester = if run_request.is_some() { Requester::from_annotations(ann) } else { Requester::UNKNOWN };
    let queue = job.labels().get(LABEL_QUEUE_NAME).cloned();
    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    // Since when it is suspended: the Job controller's Suspended condition, else its creation.
    let queued_since = (queue.is_some() && suspended && end.is_none())
        .then(|| cond("Suspended").and_then(|c| c.last_transition_time.as_ref()).map_or(start, |t| t.0.max(start)));
    let admitted = if queue.is_some() && !suspended { status.and_then(|s| s.start_time.as_ref()).map(|t| t.0.max(start)) } else { None };
    Some(ObservedJob { name, loop_number, start, scheduled, run_request, requester, end, queue, queued_since, admitted })
}

/// A loop's Job that carries [`FINALIZER_RECORD`]: it stays until the operator lets it go.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub name: String,
    pub uid: String,
    /// 0 when the loop label is missing or unreadable: such a Job is let go at once.
    pub loop_number: i64,
    /// Where the finalizer stands in `metadata.finalizers` (the release patch tests it is there).
    pub index: usize,
    /// Its deletion has begun (a TTL, a history limit, a user, the garbage collector).
    pub deleting: bool,
}

/// Whether `job` carries the operator's finalizer, and where.
pub fn held(job: &Job) -> Option<Held> {
    let index = job.finalizers().iter().position(|f| f == FINALIZER_RECORD)?;
    let loop_number = job.labels().get(LABEL_LOOP).and_then(|n| n.parse().ok()).filter(|n: &i64| *n > 0).unwrap_or(0);
    let uid = job.uid().unwrap_or_default();
    Some(Held { name: job.name_any(), uid, loop_number, index, deleting: job.metadata.deletion_timestamp.is_some() })
}

/// The JSON patch that takes the operator's finalizer off a Job: it tests the finalizer is
/// still at `index` first, so that no one else's is removed (a Job changed since fails the
/// patch with 422, and is looked at again).
pub fn release_patch(index: usize) -> json_patch::Patch {
    let path = format!("/metadata/finalizers/{index}");
    let ops = serde_json::json!([{ "op": "test", "path": path, "value": FINALIZER_RECORD }, { "op": "remove", "path": path }]);
    serde_json::from_value(ops).unwrap_or_else(|_| json_patch::Patch(vec![]))
}

/// Whether a Job is being deleted before its loop ended: its loop counts as cut short (as
/// though the Job were gone), while the finalizer still keeps the Job, and its name, in place.
pub fn deleted_running(job: &Job, seen: &ObservedJob) -> bool {
    job.metadata.deletion_timestamp.is_some() && seen.end.is_none()
}

/// What the Pods of a failed Job say: the loop container's exit code, reason and
/// termination message (the log tail, with `FallbackToLogsOnError`). Empty when no Pod
/// says anything.
pub fn describe_pods(pods: &[Pod]) -> String {
    let mut parts = vec![];
    for pod in pods {
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten().filter(|c| c.name == CONTAINER) {
            let state = cs.state.as_ref();
            if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                let mut p = format!("container exited with code {}", t.exit_code);
                if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
                    p.push_str(&format!(" ({r})"));
                }
                if let Some(m) = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
                    p.push_str(&format!(": {m}"));
                }
                parts.push(p);
            } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                let mut p = format!("container waiting: {}", w.reason.as_deref().unwrap_or("unknown"));
                if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                    p.push_str(&format!(": {m}"));
                }
                parts.push(p);
            }
        }
    }
    parts.dedup();
    parts.join("; ")
}

/// Container waiting reasons that do not go away by waiting: the loop's Pod cannot start
/// until someone changes something.
const STUCK_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a running loop's Pods cannot make progress, if they say so: a container stuck waiting
/// (a missing image, a missing Secret or ConfigMap) or a Pod the scheduler cannot place.
pub fn stuck_reason(pods: &[Pod]) -> Option<String> {
    for pod in pods {
        let status = pod.status.as_ref();
        let statuses = status.and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.as_deref().unwrap_or_default();
                if STUCK_REASONS.contains(&reason) {
                    let message = w.message.as_deref().filter(|m| !m.is_empty()).map(|m| format!(": {m}")).unwrap_or_default();
                    return Some(clip(&format!("its Pod cannot start its container: {reason}{message}")));
                }
            }
        }
        let conditions = status.and_then(|s| s.conditions.as_ref());
        if let Some(c) = conditions.into_iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == FALSE) {
            let message = c.message.as_deref().unwrap_or_default();
            return Some(clip(&format!("its Pod cannot be scheduled: {message}")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LoopServiceSpec;
    use crate::text::{clip_to, MAX_MESSAGE};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KTime;

    fn ls(name: &str) -> LoopService {
        ls_with(name, serde_json::json!({}))
    }

    /// A LoopService with the shorthand fields set, and `extra` on top of them.
    fn ls_with(name: &str, extra: serde_json::Value) -> LoopService {
        let mut spec = serde_json::json!({
            "interval": "30s",
            "image": "busybox:1.36",
            "command": ["sh", "-c"],
            "args": ["echo hi"],
            "env": [{"name": "A", "value": "b"}],
            "imagePullPolicy": "IfNotPresent",
            "timeout": "1s500ms",
        });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let spec: LoopServiceSpec = serde_json::from_value(spec).unwrap();
        let mut ls = LoopService::new(name, spec);
        ls.metadata.namespace = Some("ns".into());
        ls.metadata.uid = Some("0c4d2f7e-1111-2222-3333-444455556666".into());
        ls
    }

    fn job_of(l: &LoopService, loop_number: i64, scheduled: &str, start: &str) -> Job {
        let spec = l.spec.validate().unwrap();
        build_job(&JobParams {
            ls: l,
            spec: &spec,
            loop_number,
            scheduled: ts(scheduled),
            start: ts(start),
            run_request: None,
            requester: None,
            jittered: None,
            previous: PreviousResult::None,
            last_success: None,
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const UID: &str = "0c4d2f7e-1111-2222-3333-444455556666";

    #[test]
    fn short_names_are_name_uid_fragment_and_loop() {
        let f = uid_fragment(UID);
        assert_eq!(f.len(), UID_FRAGMENT);
        assert!(f.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{f}");
        assert_eq!(job_name("report", UID, 12), format!("report-{f}-12"));
        // A LoopService of the same name made again (another uid) has other Job names.
        assert_ne!(job_name("report", UID, 1), job_name("report", "9a1b6c3d-0000-4000-8000-000000000001", 1));
    }

    #[test]
    fn long_names_stay_within_63_and_stay_distinct() {
        let a = "a".repeat(250);
        let b = format!("{}b", "a".repeat(249));
        for n in [1, 999_999, i64::MAX] {
            let (ja, jb) = (job_name(&a, UID, n), job_name(&b, UID, n));
            assert!(ja.len() <= 63 && jb.len() <= 63, "{ja} {jb}");
            assert_ne!(ja, jb);
            assert!(ja.ends_with(&format!("-{}-{n}", uid_fragment(UID))));
            assert_eq!(ja, job_name(&a, UID, n), "deterministic");
        }
        // A name of 46 characters is kept as it is up to loop 9,999,999,999; one longer is cut
        // from loop 1 on, so that the shape of its Job names never changes with the loop number.
        let exact = "x".repeat(46);
        let f = uid_fragment(UID);
        assert_eq!(job_name(&exact, UID, 1), format!("{exact}-{f}-1"));
        assert_eq!(job_name(&exact, UID, 9_999_999_999), format!("{exact}-{f}-9999999999"));
        assert_eq!(job_name(&exact, UID, 9_999_999_999).len(), 63);
        let longer = format!("{exact}y");
        let (first, later) = (job_name(&longer, UID, 1), job_name(&longer, UID, 1000));
        assert_ne!(first, format!("{longer}-{f}-1"));
        assert_eq!(first.trim_end_matches("-1"), later.trim_end_matches("-1000"), "one shape at loop 1 and loop 1000");
    }

    #[test]
    fn truncation_never_leaves_a_trailing_separator() {
        // Cut at 37 characters (46, less "-<hash>"): right after "-.".
        let name = format!("{}-.{}", "a".repeat(35), "b".repeat(40));
        let j = job_name(&name, UID, 7);
        assert!(j.starts_with(&format!("{}-", "a".repeat(35))), "{j}");
        assert!(!j.contains("-.") && !j.contains(".-") && !j.contains("--"), "{j}");
        assert!(j.len() <= 63);
    }

    #[test]
    fn job_has_one_attempt_owner_labels_and_timing_annotations() {
        let l = ls("report");
        let job = job_of(&l, 3, "2026-11-25T10:00:30.012Z", "2026-11-25T10:00:30.020Z");
        assert_eq!(job.metadata.name, Some(format!("report-{}-3", uid_fragment(UID))));
        assert_eq!(job.metadata.namespace.as_deref(), Some("ns"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("LoopService", "report", Some(true)));
        let labels = job.labels();
        assert_eq!(labels[LABEL_LOOP], "3");
        assert_eq!(labels[LABEL_UID], "0c4d2f7e-1111-2222-3333-444455556666");
        assert_eq!(job.annotations()[ANN_SCHEDULED], "2026-11-25T10:00:30.012Z");
        assert_eq!(job.annotations()[ANN_STARTED], "2026-11-25T10:00:30.020Z");
        assert_eq!(job.annotations()[ANN_TRIGGER], "Scheduled");
        assert!(!job.annotations().contains_key(ANN_RUN_REQUEST));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(2));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.termination_message_policy.as_deref(), Some("FallbackToLogsOnError"));
        assert_eq!(c.args.as_ref().unwrap(), &vec!["echo hi".to_string()]);
        let env: Vec<_> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(env, ["A", "LOOP_NUMBER", "LOOP_SCHEDULED_TIME", "LOOPSERVICE_NAME", "LOOP_PREVIOUS_RESULT", "LOOP_LAST_SUCCESS_TIME"]);
        // The Job reads back as what was launched.
        let seen = observe(&job).unwrap();
        assert_eq!((seen.loop_number, seen.start, seen.end.clone()), (3, ts("2026-11-25T10:00:30.020Z"), None));
    }

    #[test]
    fn job_metadata_goes_on_the_job_and_a_queue_label_creates_it_suspended() {
        let plain = job_of(&ls("report"), 1, "2026-11-25T10:00:30Z", "2026-11-25T10:00:30Z");
        assert_eq!(plain.spec.as_ref().unwrap().suspend, None, "no queue: the Job runs at once");
        let l = ls_with(
            "report",
            serde_json::json!({"jobMetadata": {"labels": {LABEL_QUEUE_NAME: "team-a", "cost-center": "7"}, "annotations": {"note": "x"}}}),
        );
        let mut job = job_of(&l, 1, "2026-11-25T10:00:30Z", "2026-11-25T10:00:30Z");
        assert_eq!(job.labels()[LABEL_QUEUE_NAME], "team-a");
        assert_eq!(job.labels()["cost-center"], "7");
        assert_eq!(job.labels()[LABEL_LOOP], "1", "the operator's labels are there too");
        assert_eq!(job.annotations()["note"], "x");
        let pod_labels = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(!pod_labels.contains_key("cost-center"), "the Job's labels, not its Pods'");
        assert_eq!(job.spec.as_ref().unwrap().suspend, Some(true), "Kueue resumes it once admitted");

        // Waiting: queued since its creation, or since the Job controller's Suspended condition.
        let seen = observe(&job).unwrap();
        assert_eq!((seen.queue.as_deref(), seen.queued_since, seen.admitted), (Some("team-a"), Some(seen.start), None));
        let suspended = JobCondition {
            type_: "Suspended".into(),
            status: TRUE.into(),
            last_transition_time: Some(KTime(ts("2026-11-25T10:00:40Z"))),
            ..JobCondition::default()
        };
        job.status = Some(JobStatus { conditions: Some(vec![suspended]), ..JobStatus::default() });
        assert_eq!(observe(&job).unwrap().queued_since, Some(ts("2026-11-25T10:00:40Z")), "put back in its queue at :40");

        // Admitted: resumed, with the startTime Kubernetes sets then.
        job.spec.as_mut().unwrap().suspend = Some(false);
        job.status = Some(JobStatus { start_time: Some(KTime(ts("2026-11-25T10:00:33Z"))), ..JobStatus::default() });
        let seen = observe(&job).unwrap();
        assert_eq!((seen.queued_since, seen.admitted), (None, Some(ts("2026-11-25T10:00:33Z"))));
    }

    #[test]
    fn a_manual_loops_job_says_so_and_names_its_request_its_requester_and_reason() {
        let l = ls("report");
        let spec = l.spec.validate().unwrap();
        let at = ts("2026-11-25T10:00:00Z");
        let asked = Requester { by: Some("alice".into()), reason: Some("the night's data came late".into()) };
        let params = JobParams {
            ls: &l,
            spec: &spec,
            loop_number: 5,
            scheduled: at,
            start: at,
            run_request: Some("2026-11-25T09:59:59Z"),
            requester: Some(&asked),
            jittered: Some(ts("2026-11-25T10:00:01.5Z")),
            previous: PreviousResult::Failed,
            last_success: Some(ts("2026-11-25T09:00:00.5Z")),
        };
        let job = build_job(&params).unwrap();
        assert_eq!(job.annotations()[ANN_TRIGGER], "Manual");
        assert_eq!(job.annotations()[ANN_RUN_REQUEST], "2026-11-25T09:59:59Z");
        assert_eq!(job.annotations()[ANN_JITTERED], "2026-11-25T10:00:01.500Z");
        assert_eq!(
            (job.annotations()[ANN_RUN_REQUESTED_BY].as_str(), job.annotations()[ANN_RUN_REASON].as_str()),
            ("alice", "the night's data came late")
        );
        // Read back, as a status rebuilt from the Jobs reads it.
        let seen = observe(&job).unwrap();
        assert_eq!((seen.run_request.as_deref(), &seen.requester), (Some("2026-11-25T09:59:59Z"), &asked));
        // The Pod carries them too, for whatever reads the Pod.
        let meta = job.spec.as_ref().unwrap().template.metadata.clone().unwrap();
        assert_eq!(meta.annotations.unwrap()[ANN_RUN_REQUESTED_BY], "alice");
        // A scheduled loop's Job names no one, whatever its annotations say.
        let mut scheduled = job.clone();
        scheduled.annotations_mut().remove(ANN_RUN_REQUEST);
        assert_eq!(observe(&scheduled).unwrap().requester, Requester::UNKNOWN);
        let pod = job.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let var = |n: &str| env.iter().find(|e| e.name == n).and_then(|e| e.value.clone()).unwrap();
        assert_eq!((var("LOOP_PREVIOUS_RESULT"), var("LOOP_LAST_SUCCESS_TIME")), ("Failed".into(), "2026-11-25T09:00:00.500Z".into()));
    }

    #[test]
    fn pod_fields_the_types_do_not_have_reach_the_job_as_written() {
        // A Pod spec field, a container field and an env field no Kubernetes has (yet): the
        // API server of a newer Kubernetes than the types may have them.
        let l = ls_with(
            "new",
            serde_json::json!({"template": {"spec": {
                "futurePodField": {"mode": "x", "list": [1, 2]},
                "containers": [{"name": "side", "image": "busybox:1.36", "futureContainerField": true,
                    "env": [{"name": "S", "value": "1", "futureEnvField": "y"}]}],
            }}}),
        );
        let spec = l.spec.validate().expect("unknown fields are the API server's to judge");
        let job = job_of(&l, 1, "2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z");
        let body = request_body(&job, &spec);
        let pod = &body["spec"]["template"]["spec"];
        assert_eq!(pod["futurePodField"], serde_json::json!({"mode": "x", "list": [1, 2]}));
        let side = &pod["containers"][0];
        assert_eq!((side["name"].as_str(), &side["futureContainerField"]), (Some("side"), &serde_json::json!(true)));
        assert_eq!(side["env"][0]["futureEnvField"], "y");
        // Everything else as build_job made it: the loop's container after the template's,
        // with its variables, and the operator's restart policy.
        let loop_c = &pod["containers"][1];
        assert_eq!(loop_c["name"], "loop");
        assert!(loop_c.get("futureContainerField").is_none(), "{loop_c}");
        assert_eq!(pod["restartPolicy"], "Never");
        let mut without = body.clone();
        for (at, field) in [("/spec/template/spec", "futurePodField"), ("/spec/template/spec/containers/0", "futureContainerField")] {
            without.pointer_mut(at).unwrap().as_object_mut().unwrap().remove(field);
        }
        without.pointer_mut("/spec/template/spec/containers/0/env/0").unwrap().as_object_mut().unwrap().remove("futureEnvField");
        assert_eq!(without, serde_json::to_value(&job).unwrap(), "nothing but those fields is added");
        // A template with none: the body is the Job.
        let plain = ls("plain");
        let job = job_of(&plain, 1, "2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z");
        assert_eq!(request_body(&job, &plain.spec.validate().unwrap()), serde_json::to_value(&job).unwrap());
    }

    #[test]
    fn the_template_is_the_pod_with_the_operators_labels_and_variables_added() {
        let l = ls_with(
            "t",
            serde_json::json!({
                "backoffLimit": 2,
                "ttlSecondsAfterFinished": 600,
                "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]},
                "template": {
                    "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                    "spec": {
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
                        "initContainers": [{"name": "prepare", "image": "busybox:1.36"}],
                        "priorityClassName": "low",
                        "imagePullSecrets": [{"name": "registry"}],
                    }
                }
            }),
        );
        let job = job_of(&l, 4, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let spec = job.spec.unwrap();
        assert_eq!((spec.backoff_limit, spec.ttl_seconds_after_finished), (Some(2), Some(600)));
        assert_eq!(spec.pod_failure_policy.unwrap().rules[0].action, "FailJob");
        let meta = spec.template.metadata.unwrap();
        let (labels, annotations) = (meta.labels.unwrap(), meta.annotations.unwrap());
        assert_eq!((labels["team"].as_str(), labels[LABEL_LOOP].as_str()), ("a", "4"));
        assert_eq!((annotations["note"].as_str(), annotations[ANN_LOOP].as_str()), ("x", "4"));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(1000));
        assert_eq!(pod.init_containers.unwrap()[0].name, "prepare");
        assert_eq!(pod.priority_class_name.as_deref(), Some("low"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        // Only the loop's container gets the loop variables, after its own.
        let env: Vec<_> = pod.containers[0].env.as_ref().unwrap().iter().map(|e| e.name.clone()).collect();
        assert_eq!(env, ["A", "LOOP_NUMBER", "LOOP_SCHEDULED_TIME", "LOOPSERVICE_NAME", "LOOP_PREVIOUS_RESULT", "LOOP_LAST_SUCCESS_TIME"]);
        assert_eq!(annotations[ANN_DEFAULT_CONTAINER], "loop");
    }

    #[test]
    fn a_loop_container_from_the_template_keeps_its_own_termination_message_policy() {
        let mut l = ls_with("t", serde_json::json!({}));
        l.spec.image = None;
        l.spec.command = None;
        l.spec.args = None;
        l.spec.env = None;
        l.spec.image_pull_policy = None;
        l.spec.template = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "side", "image": "busybox:1.36"},
            {"name": "loop", "image": "busybox:1.36", "terminationMessagePolicy": "File"},
        ]}}))
        .unwrap();
        let job = job_of(&l, 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let (side, lp) = (&pod.containers[0], &pod.containers[1]);
        assert_eq!((side.env.as_ref(), side.termination_message_policy.as_ref()), (None, None));
        assert_eq!(lp.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(lp.env.as_ref().unwrap().len(), 5);
    }

    fn finished(job: &mut Job, type_: &str, reason: Option<&str>, message: Option<&str>, at: &str) {
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: reason.map(Into::into),
                message: message.map(Into::into),
                last_transition_time: Some(KTime(ts(at))),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
    }

    #[test]
    fn reads_success_failure_and_deadline() {
        let l = ls("r");
        let mut job = job_of(&l, 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z");
        finished(&mut job, "Complete", None, None, "2026-01-01T00:00:04Z");
        assert_eq!(observe(&job).unwrap().end, Some((ts("2026-01-01T00:00:04Z"), Outcome::Succeeded)));

        finished(
            &mut job,
            "Failed",
            Some("BackoffLimitExceeded"),
            Some("Job has reached the specified backoff limit"),
            "2026-01-01T00:00:05Z",
        );
        let (_, o) = observe(&job).unwrap().end.unwrap();
        assert_eq!(
            o,
            Outcome::Failed {
                reason: Reason::JobFailed,
                message: format!(
                    "Job r-{}-1 failed: BackoffLimitExceeded (Job has reached the specified backoff limit)",
                    uid_fragment(UID)
                )
            }
        );

        finished(&mut job, "Failed", Some("DeadlineExceeded"), None, "2026-01-01T00:00:05Z");
        let (_, o) = observe(&job).unwrap().end.unwrap();
        assert!(matches!(o, Outcome::Failed { ref reason, .. } if *reason == Reason::DeadlineExceeded));

        // An end stamped (to the second) before the millisecond start is read as the start.
        finished(&mut job, "Complete", None, None, "2026-01-01T00:00:00Z");
        assert_eq!(observe(&job).unwrap().end.unwrap().0, ts("2026-01-01T00:00:00.5Z"));
    }

    #[test]
    fn edited_time_annotations_can_neither_stall_nor_hurry_a_loop() {
        let l = ls("r");
        let created = ts("2026-01-01T00:00:00Z");
        let with = |start: &str, scheduled: &str| {
            let mut job = job_of(&l, 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.4Z");
            job.metadata.creation_timestamp = Some(KTime(created));
            let ann = job.metadata.annotations.as_mut().unwrap();
            ann.insert(ANN_STARTED.into(), start.into());
            ann.insert(ANN_SCHEDULED.into(), scheduled.into());
            observe(&job).unwrap()
        };
        // As the operator wrote it: kept to the millisecond.
        let seen = with("2026-01-01T00:00:00.4Z", "2026-01-01T00:00:00Z");
        assert_eq!((seen.start, seen.scheduled), (ts("2026-01-01T00:00:00.4Z"), Some(created)));
        // A start a day ahead would hold the next loop back a day; a day behind would start
        // it at once: both are held to the creationTimestamp, within the slack.
        assert_eq!(with("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z").start, ts("2026-01-01T00:00:02Z"));
        assert_eq!(with("2025-12-31T00:00:00Z", "2025-12-31T00:00:00Z").start, ts("2025-12-31T23:59:58Z"));
        // Unreadable: the creationTimestamp. A due time after the start: the start.
        let odd = with("soon", "2030-01-01T00:00:00Z");
        assert_eq!((odd.start, odd.scheduled), (created, Some(created)));
        // An end stamped by the API server is not moved past the held start either.
        let mut job = job_of(&l, 1, "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        job.metadata.creation_timestamp = Some(KTime(created));
        finished(&mut job, "Complete", None, None, "2026-01-01T00:00:03Z");
        assert_eq!(observe(&job).unwrap().end.unwrap().0, ts("2026-01-01T00:00:03Z"));
    }

    #[test]
    fn jobs_without_a_loop_label_are_ignored() {
        let mut job = Job::default();
        job.metadata.name = Some("other".into());
        assert!(observe(&job).is_none());
    }

    #[test]
    fn pods_give_exit_code_and_termination_message() {
        let pod = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 3,
                            reason: Some("Error".into()),
                            message: Some("disk full\n".into()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(describe_pods(&[pod]), "container exited with code 3 (Error): disk full");
        assert_eq!(describe_pods(&[]), "");
    }

    #[test]
    fn a_pod_waiting_for_a_missing_image_is_stuck_but_one_creating_is_not() {
        let waiting = |reason: &str| Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("Container image \"nope:1\" is not present with pull policy of Never".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let r = stuck_reason(&[waiting("ErrImageNeverPull")]).unwrap();
        assert!(r.contains("ErrImageNeverPull") && r.contains("nope:1"), "{r}");
        assert_eq!(stuck_reason(&[waiting("ContainerCreating")]), None);
        assert_eq!(stuck_reason(&[]), None);
    }

    #[test]
    fn clip_keeps_the_start_and_the_tail_on_char_boundaries() {
        let m = format!("spec.x: {}é-end", "é".repeat(2000));
        let c = clip(&m);
        assert!(c.len() <= MAX_MESSAGE && c.ends_with("é-end") && c.starts_with("spec.x: é") && c.contains(" ... "), "{c}");
        assert_eq!(clip("short"), "short");
        for max in [0, 5, 16, 17, 100] {
            assert!(clip_to(&m, max).len() <= max.max(16), "{max}");
        }
    }
}
