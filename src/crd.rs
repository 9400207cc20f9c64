//! The `LoopService` custom resource: the only source of the CRD (see `crdgen`).

use std::borrow::Cow;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::PodFailurePolicy;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

pub use crate::duration::{DURATION_PATTERN, OFFSET_PATTERN};

/// What a LoopService asks for: a Job image to run once per loop, on start-anchored timing.
///
/// Loop i starts at max(start of loop i-1 + interval, end of loop i-1): loops never overlap,
/// a loop that overruns its interval is followed at once by the next one, and time lost
/// (an overrun, or the operator being down) is never made up with extra loops.
// The derive's printcolumn(...) entries each take a type_, which clippy reads as one attribute repeated.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "loops.dev",
    version = "v1alpha1",
    kind = "LoopService",
    plural = "loopservices",
    singular = "loopservice",
    shortname = "ls",
    shortname = "loops",
    category = "all",
    namespaced,
    status = "LoopServiceStatus",
    doc = "A LoopService runs one Kubernetes Job per loop, forever or for spec.loops loops, on start-anchored timing: the next loop starts one interval after the previous one started, or at once when the previous loop ran longer than the interval.",
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.interval",
        description = "Time from the start of one loop to the start of the next"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "What the LoopService is doing now"),
    printcolumn(name = "Loops", type_ = "integer", json_path = ".status.loopsStarted", description = "Loops started"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.loopsFailed", description = "Loops that failed"),
    printcolumn(
        name = "Overruns",
        type_ = "integer",
        json_path = ".status.overruns",
        description = "Loops that ran longer than the interval"
    ),
    printcolumn(
        name = "Missed",
        type_ = "integer",
        json_path = ".status.loopsMissed",
        priority = 1,
        description = "Due times skipped by spec.catchUpWindow (kubectl get -o wide)"
    ),
    printcolumn(
        name = "Queued",
        type_ = "date",
        json_path = ".status.queuedSince",
        priority = 1,
        description = "How long the running loop's Job has waited for its queue to admit it (kubectl get -o wide)"
    ),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastStartTime", description = "When the latest loop started"),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRunTime", description = "When the next loop is due"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable, transform = crate::rules::add_cel_rules)]
pub struct LoopServiceSpec {
    /// Time from the start of one loop to the start of the next, at least 1s: integer parts
    /// in the order h, m, s, ms, such as `30s`, `1m30s`, `2h` or `1s500ms`. A loop that runs
    /// longer than this is an overrun, and the next loop then starts as soon as it ends.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub interval: String,

    /// Container image that each loop's Job runs, e.g. `busybox:1.36`. It builds the loop's
    /// container (named `loop`) with `command`, `args`, `env`, `resources` and
    /// `imagePullPolicy`. Required, unless `template.spec.containers` has a container named
    /// `loop` instead; setting both is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Entrypoint of the loop's container (the image's ENTRYPOINT when absent), e.g. `[sh, -c]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = 16384)))]
    pub command: Option<Vec<String>>,

    /// Arguments to the entrypoint (the image's CMD when absent), e.g. `["echo hello"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = 16384)))]
    pub args: Option<Vec<String>>,

    /// Environment variables of the loop's container. The operator adds LOOP_NUMBER,
    /// LOOP_SCHEDULED_TIME (when the loop was due), LOOPSERVICE_NAME, LOOP_PREVIOUS_RESULT
    /// (Succeeded, Failed or None: how the loop before this one ended) and
    /// LOOP_LAST_SUCCESS_TIME (the LOOP_SCHEDULED_TIME of the latest loop that succeeded, or
    /// empty), so that a loop can process what came since the latest success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub env: Option<Vec<EnvVar>>,

    /// When the node pulls the image: Always, IfNotPresent or Never (Kubernetes' default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,

    /// CPU and memory requests and limits of the loop's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// ServiceAccount the loop's Pod runs as (the namespace's `default` when absent). Set it
    /// here or in `template.spec.serviceAccountName`, not in both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,

    /// The loop's Pod, as in a Deployment or CronJob: `metadata` (labels and annotations) and
    /// `spec`, a full Pod spec (`kubectl explain pod.spec` documents its fields).
    ///
    /// How it combines with the shorthand fields: the loop runs in the container named `loop`.
    /// Either `spec.image` (with `command`, `args`, `env`, `resources`, `imagePullPolicy`)
    /// builds that container, or `template.spec.containers` holds a container named `loop`;
    /// both, or neither, is refused. Every other container, init container, volume and Pod
    /// field of the template is used as written. `serviceAccountName` is set in one place only.
    ///
    /// The operator owns what makes a loop a loop, and refuses a template that sets it:
    /// `restartPolicy` is Never (or OnFailure when the template asks for it); the labels under
    /// `loops.dev/`, `app.kubernetes.io/managed-by` and the Job controller's (`job-name`,
    /// `controller-uid`, `batch.kubernetes.io/`); annotations under `loops.dev/`; the Job's
    /// name and owner reference; and the loop container's LOOP_NUMBER, LOOP_SCHEDULED_TIME,
    /// LOOPSERVICE_NAME, LOOP_PREVIOUS_RESULT and LOOP_LAST_SUCCESS_TIME variables. A field a
    /// Pod spec does not have (a typo) is refused too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<PodTemplate>,

    /// Labels and annotations of each loop's Job itself (the template's go on its Pods), e.g.
    /// `kueue.x-k8s.io/queue-name` to queue the loops in Kueue. The keys the operator and the Job
    /// controller own are refused as in the template. A Job labelled
    /// `kueue.x-k8s.io/queue-name` is created suspended, as Kueue expects, and the loop waits
    /// for its queue to admit it: phase Queued, `status.queuedSince`, and the loop's history
    /// record says when it was admitted. The loop starts when its Job is created (the next one
    /// counts one interval from there), so a long wait in the queue makes an overrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_metadata: Option<JobMetadata>,

    /// Spread the loops' starts: each scheduled loop starts a pseudo-random delay in
    /// [0, jitter) after it is due, so that many LoopServices with the same interval do not
    /// all start at once. Same format as `interval`, at least 1s and shorter than `interval`.
    /// The delay is derived from the LoopService's uid and the loop's number (stable across
    /// operator restarts) and does not accumulate: the next loop is due one interval after
    /// the previous one's start without its delay. LOOP_SCHEDULED_TIME and the Job's
    /// `loops.dev/scheduled-time` are the due time; `loops.dev/jittered-time` is the due
    /// time plus the delay. Run requests are not delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub jitter: Option<String>,

    /// Wait longer after failures: after k failed loops in a row, the next loop starts no
    /// sooner than min(initial * 2^(k-1), max) after the latest failed loop ended (and never
    /// before its time by the loop rule). A loop that succeeds ends the backoff. Run requests
    /// are not held back. No backoff when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_backoff: Option<FailureBackoff>,

    /// Start loops on a fixed grid: every due time is the Unix epoch + `offset` + k ×
    /// `interval` (UTC), so `interval: 15m` with `alignment: {}` runs at :00, :15, :30 and :45,
    /// and `interval: 6h` with `offset: 5h` at 05:00, 11:00, 17:00 and 23:00. The first loop
    /// waits for the first grid point at or after the LoopService's creation. Each next loop is
    /// due at the first grid point at or after the loop rule's time (one interval after the
    /// previous start, or the previous end when later) and the failure backoff's: loops are
    /// never closer than one interval, and an overrun, a backoff or a run request is followed
    /// by the next grid point, never by extra loops. Jitter delays the start after the grid
    /// point. Start-anchored timing, off the grid, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,

    /// Skip loops that would start too late: a scheduled loop that would start more than this
    /// after it was due (after its jitter delay, when `jitter` is set) is not run, say after the
    /// operator or the cluster was down. The due times skipped are one `Missed` record in
    /// `status.history`, counted in `status.loopsMissed`, with one Warning Event (LoopsMissed);
    /// the next loop is due at the first of its due times (one interval apart, on the grid with
    /// `alignment`) that is not yet past this window. Same format as `interval`, at least 1s;
    /// it may be longer than `interval`. Run requests are never skipped. Absent: a late loop
    /// always starts, at once, however late (and only one of the due times missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub catch_up_window: Option<String>,

    /// Quiet hours: no scheduled loop starts inside one of these windows (at most 16). Each
    /// window opens at the times of its cron `schedule`, in its `timeZone`, and lasts
    /// `duration`. A loop due inside a window starts once, at the end of the windows that cover
    /// it (when windows overlap or follow each other, at the end of them all), never as a
    /// burst; the next loop counts one interval from that start. A running loop is not
    /// stopped, and a run request still starts a loop at once. Status (phase Paused),
    /// `kubectl get` and `kubectl loopservice explain-timing` say which window and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub pause_windows: Option<Vec<PauseWindow>>,

    /// Longest a loop may run, at least 1s, in the same format as `interval` (e.g. `5m`): the
    /// Job's `activeDeadlineSeconds`, rounded up to whole seconds. A loop still running then is
    /// stopped and counted as failed (reason DeadlineExceeded). No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub timeout: Option<String>,

    /// Stop after this many loops (phase Finished). Loops forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub loops: Option<i64>,

    /// Pause: no new loop starts while true; a running loop finishes. Counts are kept, and
    /// when resumed a loop whose time has passed starts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Suspend after this many loops failed in a row (at least 1): no scheduled loop starts
    /// until the spec changes (e.g. `suspend` set to true and back to false, or `suspend:
    /// false` written when it was absent) or a run request's loop succeeds. The operator does
    /// not write the spec: the suspension is in status (`failureSuspension`, phase Suspended,
    /// Ready=False with reason SuspendedAfterFailures, and a Warning Event). After a resume
    /// the count starts again from zero. Never suspends when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub suspend_after_failures: Option<i64>,

    /// Retries of a failed Pod inside one loop (the Job's backoffLimit). Default 0: one loop
    /// is one attempt, and the next loop is the retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,

    /// When a failed Pod fails the loop at once, is ignored, or counts against `backoffLimit`,
    /// by its exit codes or Pod conditions: the Job's `podFailurePolicy` (`kubectl explain
    /// job.spec.podFailurePolicy`). Needs restartPolicy Never and Kubernetes 1.26 or later; an
    /// API server that would drop it makes the spec InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_failure_policy: Option<PodFailurePolicy>,

    /// Seconds after a loop's Job finishes before Kubernetes deletes it (the Job's
    /// `ttlSecondsAfterFinished`; Kubernetes 1.21 or later, an API server that would drop it
    /// makes the spec InvalidSpec). Absent: finished Jobs stay until the history limits remove
    /// them. A Job deleted before the operator saw it finish (say, the operator was down longer
    /// than this) is recorded as a failed loop, reason JobDeleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Finished Jobs of successful loops to keep for inspection (default 3); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_jobs_history_limit: Option<i32>,

    /// Finished Jobs of failed loops to keep for inspection (default 3); older ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_jobs_history_limit: Option<i32>,
}

/// `spec.jobMetadata`: what the loops' Jobs carry beside the operator's own labels and annotations.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct JobMetadata {
    /// Labels of each loop's Job (at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations of each loop's Job (at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// `spec.failureBackoff`: how long to wait after failed loops.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureBackoff {
    /// The wait after one failed loop, at least 1s, in the same format as `interval`
    /// (e.g. `30s`); it doubles with each further failure in a row.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub initial: String,
    /// The longest wait, however many loops failed in a row; not shorter than `initial`.
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub max: String,
}

/// One window of `spec.pauseWindows`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct PauseWindow {
    /// When the window opens: a cron schedule of five fields, minute hour day-of-month month
    /// day-of-week, as a CronJob's (`0 22 * * 1-5` is 22:00 Monday to Friday; names such as
    /// `MON-FRI` and `@daily` work too), read in `timeZone`. A time the spring daylight-saving
    /// change skips opens the window when the clock is back (02:30 on that night opens at
    /// 03:00); a time the autumn change repeats opens it once, the first time.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How long the window stays open, in the format of `interval` (e.g. `10h`), in real time
    /// (across a daylight-saving change too).
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 32))]
    pub duration: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Berlin`; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
}

/// `spec.alignment`: the grid the due times lie on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct Alignment {
    /// Where the grid starts after each multiple of the interval since the Unix epoch: `0s`
    /// (the default) or a duration in the same format as `interval`, shorter than `interval`.
    /// `interval: 1h` with `offset: 5m` runs at 00:05, 01:05, 02:05 ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = OFFSET_PATTERN), length(max = 32))]
    pub offset: Option<String>,
}

/// `spec.template` as written: a Pod template, kept as JSON so that whatever a user writes
/// reaches the operator, which checks it (`LoopServiceSpec::validate`) and reports what is
/// wrong in status instead of failing to read the object. The CRD declares the parts that
/// `kubectl explain` should show and that CEL rules look at, and keeps the rest of the Pod
/// spec as it is (`x-kubernetes-preserve-unknown-fields`): the full Pod spec schema would make
/// the CRD too large for a client-side `kubectl apply` (see README).
///
/// Kept as its JSON text (keys sorted), read when a reconcile needs it: a tree of JSON maps
/// costs kilobytes for a few fields, and every LoopService in the cache holds one.
#[derive(Clone, PartialEq, Eq)]
pub struct PodTemplate(Box<str>);

impl PodTemplate {
    pub fn new(map: serde_json::Map<String, serde_json::Value>) -> PodTemplate {
        PodTemplate(serde_json::Value::Object(map).to_string().into_boxed_str())
    }

    /// The template as a JSON object.
    pub fn map(&self) -> serde_json::Map<String, serde_json::Value> {
        // Made by `new` from a map, so it reads back as one.
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

impl Default for PodTemplate {
    fn default() -> PodTemplate {
        PodTemplate::new(serde_json::Map::new())
    }
}

impl std::fmt::Debug for PodTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PodTemplate({})", self.0)
    }
}

impl Serialize for PodTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PodTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PodTemplate, D::Error> {
        serde_json::Map::deserialize(d).map(PodTemplate::new)
    }
}

/// The most containers (and init containers) a template may list. CEL rules walk these
/// lists, and the API server needs a bound to cap their cost; a Pod has no such limit, but a
/// loop's Pod with more than 64 containers is not a loop's Pod.
pub const MAX_CONTAINERS: u64 = 64;
/// The most environment variables a container of a template may list, for the same reason.
pub const MAX_ENV: u64 = 1024;

impl JsonSchema for PodTemplate {
    fn schema_name() -> Cow<'static, str> {
        "PodTemplate".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let env = json!({
            "type": "array",
            "maxItems": MAX_ENV,
            "description": "Environment variables of the container, as in a Pod (kubectl explain pod.spec.containers.env).",
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"name": {"type": "string", "maxLength": 1024, "description": "Name of the variable."}},
            },
        });
        let container = |what: &str| {
            json!({
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "description": format!("A container, as in a Pod ({what})."),
                "properties": {
                    "name": {"type": "string", "maxLength": 63, "description": "Name of the container; `loop` names the container the loop runs in."},
                    "image": {"type": "string", "description": "Container image."},
                    "env": env,
                },
            })
        };
        let string_map = |what: &str| json!({"type": "object", "additionalProperties": {"type": "string"}, "description": what});
        json_schema!({
            "type": "object",
            "properties": {
                "metadata": {
                    "type": "object",
                    "description": "Labels and annotations of the loop's Pods (keys under loops.dev/ are the operator's).",
                    "properties": {
                        "labels": string_map("Labels of the loop's Pods, added to the operator's own."),
                        "annotations": string_map("Annotations of the loop's Pods, added to the operator's own."),
                    },
                },
                "spec": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "description": "A Pod spec, as in a Deployment or CronJob: every field of `kubectl explain pod.spec` (volumes, initContainers, nodeSelector, tolerations, affinity, securityContext, imagePullSecrets, priorityClassName, ...). Listed here are the fields the operator looks at.",
                    "properties": {
                        "containers": {
                            "type": "array",
                            "maxItems": MAX_CONTAINERS,
                            "description": "Containers of the loop's Pod. A container named `loop` is the loop's container, in place of spec.image; the others run beside it (the loop ends when all of them have ended).",
                            "items": container("kubectl explain pod.spec.containers"),
                        },
                        "initContainers": {
                            "type": "array",
                            "maxItems": MAX_CONTAINERS,
                            "description": "Init containers of the loop's Pod, run before its containers; one with restartPolicy Always is a sidecar that runs beside the loop (Kubernetes 1.29 or later).",
                            "items": container("kubectl explain pod.spec.initContainers"),
                        },
                        "restartPolicy": {
                            "type": "string",
                            "enum": ["Never", "OnFailure"],
                            "description": "Never (the default: a failed container fails the Pod, and backoffLimit says whether the loop tries again) or OnFailure (the kubelet restarts a failed container in the same Pod).",
                        },
                        "serviceAccountName": {
                            "type": "string",
                            "description": "ServiceAccount the loop's Pod runs as; or spec.serviceAccountName, not both.",
                        },
                    },
                },
            },
        })
    }
}

/// What the operator has seen and done, rebuilt from the LoopService's own Jobs on every
/// reconcile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct LoopServiceStatus {
    /// The metadata.generation of the spec this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Pending (no loop has started yet), Running (a loop's Job is running), Queued (the running
    /// loop's Job waits for its queue to admit it), Waiting (for the next
    /// loop's time), Paused (the next loop waits for a window of spec.pauseWindows to end),
    /// Suspended, Finished (spec.loops loops ran), Failing (waiting, and the latest loop failed)
    /// or Invalid (the spec cannot be run; see the Ready condition).
    #[serde(default)]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<Phase>,
    /// Loops started so far: the number of the latest loop.
    #[serde(default)]
    pub loops_started: i64,
    /// Loops whose Job completed.
    #[serde(default)]
    pub loops_succeeded: i64,
    /// Loops whose Job failed or could not be created.
    #[serde(default)]
    pub loops_failed: i64,
    /// Loops that ran longer than the interval.
    #[serde(default)]
    pub overruns: i64,
    /// Due times skipped because their loop would have started past spec.catchUpWindow.
    #[serde(default)]
    pub loops_missed: i64,
    /// Loops that failed in a row, up to now (0 after a success).
    #[serde(default)]
    pub consecutive_failures: i64,
    /// The number of the latest loop whose end is recorded in this status.
    #[serde(default)]
    pub last_finished_loop: i64,
    /// Loops started by a run request (the annotation `loops.dev/run-requested-at`). They are
    /// numbered and counted like the others, but do not count toward spec.loops.
    #[serde(default)]
    pub manual_loops: i64,
    /// The value of the annotation `loops.dev/run-requested-at` whose loop has started: a new
    /// value starts one loop, once.
    #[serde(default)]
    pub last_handled_run_request: Option<String>,
    /// Name of the Job of the loop running now.
    #[serde(default)]
    pub active_job: Option<String>,
    /// Since when the running loop's Job waits for its queue to admit it (a Job labelled
    /// `kueue.x-k8s.io/queue-name`, suspended until Kueue admits it): phase Queued. Absent
    /// when no loop waits.
    #[serde(default)]
    pub queued_since: Option<Time>,
    /// When the latest loop started (its Job was created).
    #[serde(default)]
    pub last_start_time: Option<Time>,
    /// When the latest finished loop ended.
    #[serde(default)]
    pub last_completion_time: Option<Time>,
    /// When the next loop is due; absent while a loop runs, when suspended or finished.
    #[serde(default)]
    pub next_run_time: Option<Time>,
    /// When a loop last succeeded.
    #[serde(default)]
    pub last_success_time: Option<Time>,
    /// When the latest loop that succeeded was due (its LOOP_SCHEDULED_TIME): what the next
    /// loop gets as LOOP_LAST_SUCCESS_TIME.
    #[serde(default)]
    pub last_success_scheduled_time: Option<Time>,
    /// When a loop last failed.
    #[serde(default)]
    pub last_failure_time: Option<Time>,
    /// The latest loop that ran longer than the interval.
    #[serde(default)]
    pub last_overrun: Option<Overrun>,
    /// The latest loop that failed, and why.
    #[serde(default)]
    pub last_error: Option<LoopError>,
    /// The latest due times skipped by spec.catchUpWindow, and when the loop after them is due.
    #[serde(default)]
    pub last_missed: Option<Missed>,
    /// The latest time the LoopService suspended itself after spec.suspendAfterFailures
    /// failures in a row, and whether it still is.
    #[serde(default)]
    pub failure_suspension: Option<FailureSuspension>,
    /// The latest loops (at most 10), newest first: each loop's trigger, due, start and end
    /// times, result and why. Written with the counters, so it stays exact when the Jobs are
    /// deleted (history limits, TTL) and across operator restarts.
    #[serde(default)]
    pub history: Vec<LoopRecord>,
    /// Ready (the spec is valid and loops run as scheduled), Overrun (the latest finished loop ran
    /// longer than the interval) and Failing (the latest loop failed).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Kubernetes publishes a `nullable` field to OpenAPI v2 without its type, which leaves
/// `kubectl explain` blank for it and unable to descend into it. An unset field here is an
/// absent one, so no property is nullable.
fn not_nullable(schema: &mut Schema) {
    let props = schema.as_object_mut().and_then(|o| o.get_mut("properties")).and_then(|p| p.as_object_mut());
    for (_, prop) in props.into_iter().flatten() {
        let Some(o) = prop.as_object_mut() else { continue };
        o.remove("nullable");
        // `Option<T>` arrives as `type: [T, "null"]`, or as `anyOf: [T, {type: "null"}]`.
        if let Some(types) = o.get_mut("type").and_then(|t| t.as_array_mut()) {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types[0].clone();
                o.insert("type".into(), only);
            }
        }
        let is_null = |v: &serde_json::Value| {
            v.get("type").is_some_and(|t| t == "null") || v.get("enum").is_some_and(|e| e == &serde_json::json!([null]))
        };
        if let Some(any) = o.get_mut("anyOf").and_then(|a| a.as_array_mut()) {
            any.retain(|v| !is_null(v));
            if any.len() == 1 {
                let only = any.remove(0);
                o.remove("anyOf");
                for (k, v) in only.as_object().into_iter().flatten() {
                    o.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
}

/// `Option<Phase>` as a string enum (the derived schema would put `null` in the enum).
fn phase_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": Phase::ALL.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

/// The phase of a LoopService.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Waiting,
    Suspended,
    Finished,
    Failing,
    Invalid,
    Paused,
    Queued,
}

impl Phase {
    /// Every phase, as the CRD schema lists them.
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Running,
        Phase::Waiting,
        Phase::Suspended,
        Phase::Finished,
        Phase::Failing,
        Phase::Invalid,
        Phase::Paused,
        Phase::Queued,
    ];

    /// Its place in [`Phase::ALL`]: a phase added to the enum must be added there too, or this
    /// match does not compile.
    pub const fn index(self) -> usize {
        match self {
            Phase::Pending => 0,
            Phase::Running => 1,
            Phase::Waiting => 2,
            Phase::Suspended => 3,
            Phase::Finished => 4,
            Phase::Failing => 5,
            Phase::Invalid => 6,
            Phase::Paused => 7,
            Phase::Queued => 8,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What started a loop.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Trigger {
    /// Its time came: the loop rule, spec.interval.
    Scheduled,
    /// A run request: a new value of the annotation `loops.dev/run-requested-at`.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "Scheduled",
            Trigger::Manual => "Manual",
        }
    }
}

/// The LoopService suspended itself: spec.suspendAfterFailures loops failed in a row.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct FailureSuspension {
    /// The failed loop after which it suspended itself.
    pub r#loop: i64,
    /// How many loops had failed in a row since the latest resume.
    pub failures: i64,
    /// When it suspended itself.
    pub time: Time,
    /// The metadata.generation of the spec it suspended at: any change to the spec resumes it.
    pub generation: i64,
    /// True while suspended; false once resumed (the spec changed, or a loop succeeded).
    pub active: bool,
}

/// How a loop went, so far.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LoopResult {
    /// Its Job runs.
    Running,
    /// Its Job completed.
    Succeeded,
    /// Its Job failed, ran past spec.timeout, was refused by the API server, or was deleted
    /// before it ended.
    Failed,
    /// Not run: it would have started past spec.catchUpWindow. One record covers the due
    /// times skipped together (`missedDueTimes`); it has no Job, and `loop` is the number of
    /// the loop that runs after them.
    Missed,
}

/// One loop, as `status.history` shows it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct LoopRecord {
    /// The loop's number.
    pub r#loop: i64,
    /// Name of the loop's Job.
    pub job_name: String,
    /// Scheduled (its time came) or Manual (a run request, the annotation
    /// `loops.dev/run-requested-at`).
    pub trigger: Trigger,
    /// For a manual loop: the user who asked for it (the annotation
    /// `loops.dev/run-requested-by`, which `kubectl loopservice run` writes and the chart's
    /// admission policy holds to the user making the request); absent when the request did not
    /// say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// For a manual loop: why it was asked for (the annotation `loops.dev/run-reason`, from
    /// `kubectl loopservice run --reason`); absent when the request did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_reason: Option<String>,
    /// When the loop was due: by the loop rule for a scheduled loop, when the request was
    /// taken up for a manual one.
    pub due_time: Time,
    /// When it started: its Job was created.
    pub start_time: Time,
    /// When it ended (its Job's end, stamped by Kubernetes to the second); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// How long it ran, in seconds; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Running, Succeeded or Failed.
    pub result: LoopResult,
    /// Why it failed: JobFailed, DeadlineExceeded, JobRejected or JobDeleted (as in lastError).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong, in short: the end of lastError's message for the same loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a loop whose Job waited for a queue (`kueue.x-k8s.io/queue-name`): when the queue
    /// admitted it and its Pods could start; absent while it waits, and for loops without a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_time: Option<Time>,
    /// Whether it ran longer than the interval.
    #[serde(default)]
    pub overran: bool,
    /// For a Missed record: how many due times it covers, from `dueTime` one interval apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_due_times: Option<i64>,
}

/// A loop that ran longer than its interval.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct Overrun {
    /// The loop's number.
    pub r#loop: i64,
    /// How long the loop ran, in seconds.
    pub duration_seconds: f64,
    /// The interval it overran, in seconds.
    pub interval_seconds: f64,
    /// When the loop ended.
    pub time: Time,
    /// E.g. "loop 7 took 41.2 seconds, which is longer than its interval of 30 seconds".
    pub message: String,
}

/// A loop that failed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct LoopError {
    /// The loop's number.
    pub r#loop: i64,
    /// JobFailed (the Job ran and failed), DeadlineExceeded (it ran past spec.timeout),
    /// JobRejected (the API server refused to create it) or JobDeleted (it was deleted before
    /// it finished).
    pub reason: String,
    /// What went wrong: the Job's condition, the container's exit code and termination
    /// message, or the API server's answer.
    pub message: String,
    /// When it happened.
    pub time: Time,
}

/// Due times skipped by spec.catchUpWindow.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct Missed {
    /// The first due time skipped.
    pub first_due_time: Time,
    /// How many due times were skipped: the first and each interval after it.
    pub count: i64,
    /// When the loop after them is due: the first due time not yet past the window.
    pub next_due_time: Time,
    /// When they were skipped.
    pub time: Time,
    /// E.g. "missed 3 due times, 2026-11-25T10:00:00.000Z to 2026-11-25T10:01:00.000Z: loop 8
    /// would have started 2m5s late, past spec.catchUpWindow (1m); it is due at ...".
    pub message: String,
}

/// A condition of a LoopService, in the usual Kubernetes shape.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = not_nullable)]
pub struct Condition {
    /// Ready, Overrun or Failing.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase word for why.
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
    /// When status last changed.
    pub last_transition_time: Time,
    /// The metadata.generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An instant written as RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T10:00:30.012Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub Timestamp);

impl Time {
    pub fn format(&self) -> String {
        // Cut to whole milliseconds first so that what is written is what is read back.
        jiff::fmt::temporal::DateTimePrinter::new().precision(Some(3)).timestamp_to_string(&to_millisecond(self.0))
    }
}

/// `t` cut to the whole millisecond (towards the epoch), as status keeps times. Unlike
/// `Timestamp::from_millisecond(t.as_millisecond())`, this holds in the last second jiff can
/// represent too.
pub fn to_millisecond(t: Timestamp) -> Timestamp {
    t.checked_sub(jiff::SignedDuration::from_nanos(i64::from(t.subsec_nanosecond() % 1_000_000))).unwrap_or(t)
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.format())
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.format())
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Timestamp>().map(Time).map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
    }
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

impl LoopServiceSpec {
    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }
}
