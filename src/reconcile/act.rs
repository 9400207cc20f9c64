//! Act: the launch, the one API write that cannot wait. It takes a launch turn (ahead of
//! every status write, delete and Event), creates the loop's Job, and says what the API server
//! answered; a Job of that name already there is adopted when it is this LoopService's.

use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, Fault};
use super::observe::{Checked, Observed};
use super::plan::{Launch, Launched};
use crate::job::{self, JobParams, ObservedJob};
use crate::metrics::Stage;
use crate::schedule;
use crate::turns::Priority;
use crate::{is_transient, Error, Result};

/// Performs the plan's launch, if any.
pub async fn act(o: &Observed, launch: Option<&Launch>, ctx: &Context) -> Result<Option<Launched>> {
    let (Some(launch), Checked::Valid(spec, _)) = (launch, &o.spec) else { return Ok(None) };
    let _turn = ctx.request(Priority::Launch, &o.namespace).await;
    // The start is the instant of the create, not of the reconcile's `now`: a launch may wait
    // for its turn when many are due at once. It is read off the API server's clock (see
    // `clock::ServerClock`), as the Job's end will be.
    let start = ctx.clock.now();
    let params = JobParams {
        ls: &o.ls,
        spec,
        loop_number: launch.loop_number,
        scheduled: launch.scheduled,
        start,
        run_request: launch.run_request.as_deref(),
        requester: Some(&launch.requester),
        jittered: launch.jittered,
        previous: launch.previous,
        last_success: launch.last_success,
    };
    let Some(job) = job::build_job(&params) else {
        return Err(Error::Incomplete(o.ls.name_any()));
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let (n, name) = (launch.loop_number, job.name_any());
    let seen = ObservedJob {
        name: name.clone(),
        loop_number: n,
        start,
        scheduled: Some(launch.scheduled),
        run_request: launch.run_request.clone(),
        requester: launch.requester.clone(),
        end: None,
        queue: spec.job_labels.get(crate::keys::LABEL_QUEUE_NAME).cloned(),
        queued_since: spec.job_labels.contains_key(crate::keys::LABEL_QUEUE_NAME).then_some(start),
        admitted: None,
    };
    let sent_at = ctx.clock.machine();
    // As `api.create(&job)`, with the template's Pod fields the operator's types do not have.
    let body = job::request_body(&job, spec);
    let created = super::observe::create_with_warnings(&ctx.client, &o.namespace, &PostParams::default(), &body).await;
    match created.and_then(|(created, _)| serde_json::from_value::<Job>(created).map_err(kube::Error::SerdeError)) {
        Ok(created) => {
            // The Job's creationTimestamp: a reading of the API server's clock, which the
            // operator's follows.
            if let Some(stamp) = &created.metadata.creation_timestamp {
                ctx.clock.learn(sent_at, ctx.clock.machine(), stamp.0);
            }
            // Late against when the loop was to start: its due time, plus its jitter.
            let delay = schedule::seconds_between(launch.jittered.unwrap_or(launch.scheduled), start).max(0.0);
            ctx.metrics.start_delay(Stage::Created).observe(delay);
            info!(namespace = %o.namespace, name = %o.ls.name_any(), r#loop = n, job = %name, delay_ms = (delay * 1000.0) as u64, "started loop");
            Fault::AfterJobCreate.hit(ctx.fault)?;
            Ok(Some(Launched::Created(seen)))
        }
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => adopt(o, &api, name).await.map(Some),
        Err(e) if is_transient(&e) => Err(Error::CreateJob(name, e)),
        // The operator's own credentials (not this loop) are refused: a reconcile error, shown
        // as Reconciled=False and retried; no loop number is used up.
        Err(kube::Error::Api(s)) if forbids_the_operator(&s) => Err(Error::CreateJob(name, kube::Error::Api(s))),
        Err(kube::Error::Api(s)) => {
            warn!(namespace = %o.namespace, name = %o.ls.name_any(), r#loop = n, job = %name, message = %s.message, "the API server refused the job");
            Ok(Some(Launched::Rejected { seen, message: s.message }))
        }
        Err(e) => Err(Error::CreateJob(name, e)),
    }
}

/// The Job of that name, made by an earlier instance that died before recording it: adopted
/// when it is this LoopService's, never made twice.
async fn adopt(o: &Observed, api: &Api<Job>, name: String) -> Result<Launched> {
    let existing = api.get(&name).await.map_err(|e| Error::GetJob(name.clone(), e))?;
    let ours = existing.owner_references().iter().any(|r| r.uid == o.uid);
    Ok(match job::observe(&existing).filter(|_| ours) {
        Some(seen) => Launched::Adopted(ObservedJob { end: None, ..seen }),
        None => Launched::NameTaken { job: name },
    })
}

/// Whether the API server refused the operator's own credentials (unauthenticated, or RBAC
/// forbids the request), rather than what was asked (a webhook or quota also answer 403).
pub fn forbids_the_operator(s: &kube::core::Status) -> bool {
    s.code == 401 || (s.code == 403 && s.message.contains("cannot create resource"))
}
