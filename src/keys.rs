//! The names the operator and its users share: labels and annotations on LoopServices, Jobs
//! and Pods, the loop container's name and environment, and Kubernetes' own keys it reads.
//! Tests, benches and the kubectl plugin import them from here.

pub const LABEL_NAME: &str = "loops.dev/loopservice";
pub const LABEL_UID: &str = "loops.dev/loopservice-uid";
pub const LABEL_LOOP: &str = "loops.dev/loop";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "loopservice-operator";
pub const ANN_NAME: &str = "loops.dev/loopservice";
/// On a loop's Job from its creation until its LoopService's status records the loop's end:
/// the Job cannot vanish (a TTL, a history limit, a user's delete, the garbage collector)
/// before the operator has read how the loop ended, so no loop number is ever freed to run again.
pub const FINALIZER_RECORD: &str = "loops.dev/record-end";
pub const ANN_LOOP: &str = "loops.dev/loop";
pub const ANN_SCHEDULED: &str = "loops.dev/scheduled-time";
pub const ANN_STARTED: &str = "loops.dev/start-time";
pub const ANN_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
/// With spec.jitter: the due time plus the loop's delay.
pub const ANN_JITTERED: &str = "loops.dev/jittered-time";
/// On a LoopService: the release of the operator that works it, as `<namespace>/<name>` of
/// that release's leader Lease (see `reconcile::claim`).
pub const ANN_CLAIMED_BY: &str = "loops.dev/claimed-by";
/// On a LoopService: a new value starts a loop at once (or when the running loop ends).
pub const ANN_RUN_REQUESTED_AT: &str = "loops.dev/run-requested-at";
/// On a LoopService, written with a run request: the user who asks for it, as the API server
/// knows them (`kubectl loopservice run` asks it with a SelfSubjectReview). The chart's
/// admission policy refuses a request whose requester is not the user making it. On a manual
/// loop's Job and Pod: who asked for it, as far as the request said.
pub const ANN_RUN_REQUESTED_BY: &str = "loops.dev/run-requested-by";
/// On a LoopService, written with a run request: why (`kubectl loopservice run --reason`). On a
/// manual loop's Job and Pod: the reason of the request it answers.
pub const ANN_RUN_REASON: &str = "loops.dev/run-reason";
/// On a loop's Job: `Scheduled` or `Manual`.
pub const ANN_TRIGGER: &str = "loops.dev/trigger";
/// On a manual loop's Job: the value of the run request it answers.
pub const ANN_RUN_REQUEST: &str = "loops.dev/run-request";
pub const CONTAINER: &str = "loop";
/// The variables the operator gives the loop's container.
pub const ENV_LOOP_NUMBER: &str = "LOOP_NUMBER";
pub const ENV_SCHEDULED_TIME: &str = "LOOP_SCHEDULED_TIME";
pub const ENV_LOOPSERVICE_NAME: &str = "LOOPSERVICE_NAME";
pub const ENV_PREVIOUS_RESULT: &str = "LOOP_PREVIOUS_RESULT";
pub const ENV_LAST_SUCCESS_TIME: &str = "LOOP_LAST_SUCCESS_TIME";
/// Every variable the operator sets in the loop's container; a spec may not set them.
pub const LOOP_ENV: [&str; 5] = [ENV_LOOP_NUMBER, ENV_SCHEDULED_TIME, ENV_LOOPSERVICE_NAME, ENV_PREVIOUS_RESULT, ENV_LAST_SUCCESS_TIME];

/// Set by the Job controller on its Pods: the Job's name.
pub const LABEL_JOB_NAME: &str = "job-name";
/// Set by the Job controller on its Pods (before 1.27 without the prefix).
pub const LABEL_CONTROLLER_UID: &str = "controller-uid";
/// Set by the Job controller on its Pods from Kubernetes 1.27.
pub const LABEL_BATCH_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Kueue's label on a Job: the LocalQueue that admits it. A loop's Job that carries it (from
/// `spec.jobMetadata.labels`) is created suspended and waits for Kueue to admit it.
pub const LABEL_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";
/// Kept by `kubectl apply` on the objects it applies; the operator never reads it.
pub const ANN_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
