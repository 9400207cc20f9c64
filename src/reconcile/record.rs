//! Record: the rest of the writes, in order. The status first (one write, conditioned on the
//! version read); then, once it is stored, the metrics and Events of what it records (so each
//! is counted once) and the deletes of old Jobs whose loops it counts.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::context::{Context, Fault, LoopEvents};
use super::observe::{Checked, Observed};
use super::plan::{self, Launched, Outcome, Plan, Recheck, Requeue};
use crate::crd::{LoopService, LoopServiceStatus};
use crate::job::Held;
use crate::metrics::{LsLabels, ResultLabels, Stage};
use crate::reasons::Reason;
use crate::schedule;
use crate::status::Note;
use crate::{Error, Result};

/// Concludes the plan with the launch's answer and records the outcome; returns when to look
/// again, computed last (kube-runtime counts a requeue from when the reconcile returns).
pub async fn record(o: &Observed, plan: Plan, launched: Option<Launched>, paced: bool, ctx: &Context, now: Timestamp) -> Result<Action> {
    let Outcome { status, notes, releases, deletes, requeue, recheck } = plan::conclude(o, plan, launched, now);
    // A report of an invalid spec (its status write and its Event) is paced per namespace
    // (`--invalid-reports-per-second`): past the burst it comes back at its booked instant.
    // `paced`: the claim this reconcile wrote took that turn already.
    let pace_here = !matches!(o.spec, Checked::Valid(..)) && !paced;
    // The next loop's start waits for this reconcile's writes: they go ahead of other
    // bookkeeping shortly before it is due.
    let due = match requeue {
        Requeue::At(at) => Some(Instant::now() + schedule::until(at, ctx.clock.now())),
        Requeue::After(_) | Requeue::OnChange => None,
    };
    if status != o.prev {
        if pace_here {
            if let Some(wait) = ctx.invalid_reports.turn(&o.namespace, &o.ls.name_any(), now) {
                ctx.metrics.requeued(Recheck::Paced);
                return Ok(Action::requeue(wait));
            }
        }
        let _turn = ctx.bookkeeping(&o.namespace, due).await;
        write_status(&o.ls, &status, ctx).await?;
        Fault::AfterStatusWrite.hit(ctx.fault)?;
    }
    let labels = LsLabels { namespace: o.namespace.clone(), name: o.ls.name_any() };
    ctx.metrics.record_status(&labels, &status);
    for n in &notes {
        count(ctx, &labels, n);
    }
    publish(&o.ls, ctx, &notes, due).await?;
    release(ctx, &o.namespace, &releases, due).await?;
    delete_jobs(o, ctx, deletes, due).await?;
    ctx.metrics.requeued(recheck);
    Ok(match requeue {
        Requeue::At(at) => Action::requeue(schedule::until(at, ctx.clock.now())),
        Requeue::After(d) => Action::requeue(d),
        Requeue::OnChange => Action::await_change(),
    })
}

/// Writes the whole status, on the condition that the object is still the version this
/// reconcile read: a stale read fails with a conflict and is retried, so a loop is never
/// counted twice.
pub async fn write_status(ls: &LoopService, st: &LoopServiceStatus, ctx: &Context) -> Result<()> {
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
    let dropped = crate::json_paths::dropped_paths(&sent, &back, "status");
    if !dropped.is_empty() {
        return Err(Error::OutdatedCrd(format!("{ns}/{name}"), dropped.join(", ")));
    }
    if let Some(uid) = ls.uid() {
        ctx.remember_written(&uid, st);
    }
    Ok(())
}

/// Counts what a note says happened, once the status that records it is stored.
fn count(ctx: &Context, labels: &LsLabels, note: &Note) {
    ctx.metrics.saw(labels);
    let result = |r: &str| ResultLabels { namespace: labels.namespace.clone(), name: labels.name.clone(), result: r.to_string() };
    match note.reason {
        Reason::LoopStarted => ctx.metrics.loops_started.get_or_create(labels).inc(),
        Reason::LoopSucceeded => ctx.metrics.loops_finished.get_or_create(&result("succeeded")).inc(),
        Reason::LoopFailed => ctx.metrics.loops_finished.get_or_create(&result("failed")).inc(),
        Reason::LoopOverrun => ctx.metrics.overruns.get_or_create(labels).inc(),
        Reason::LoopsMissed => ctx.metrics.loops_missed.get_or_create(labels).inc_by(note.times),
        Reason::LoopAdmitted => {
            ctx.metrics.start_delay(Stage::Admitted).observe(note.seconds.unwrap_or(0.0));
            0
        }
        _ => 0,
    };
    if note.warning {
        warn!(namespace = %labels.namespace, name = %labels.name, reason = %note.reason, message = %note.message, "loop event");
    }
}

/// Whether a note becomes an Event. By default only what a person acts on does: a loop that
/// started or succeeded is news in status and metrics, not an Event (two per loop would flood
/// etcd with thousands of LoopServices). The start of a loop a person asked for is an Event
/// always: it says who asked, and why, where `kubectl describe` shows it.
pub fn emits_event(note: &Note, events: LoopEvents) -> bool {
    events == LoopEvents::All
        || note.requested
        || !matches!(note.reason, Reason::LoopStarted | Reason::LoopSucceeded | Reason::LoopAdmitted)
}

/// Events are best effort: a refused Event is logged, never a reason to redo a reconcile.
/// `due`: when the LoopService's next loop is due, if known ([`Context::bookkeeping`]).
pub async fn publish(ls: &LoopService, ctx: &Context, notes: &[Note], due: Option<Instant>) -> Result<()> {
    let reference = ls.object_ref(&());
    for n in notes.iter().filter(|n| emits_event(n, ctx.settings.loop_events)) {
        let _turn = ctx.bookkeeping(reference.namespace.as_deref().unwrap_or_default(), due).await;
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
        Fault::BeforeEvent.hit(ctx.fault)?;
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(name = %ls.name_any(), error = %e, "could not publish event");
        }
        Fault::AfterEvent.hit(ctx.fault)?;
    }
    Ok(())
}

/// Takes the operator's finalizer off Jobs whose loops' ends are stored (or that no loop will
/// ever be recorded for): a JSON patch that tests the finalizer is still where it was read,
/// so that no one else's finalizer is removed. A Job already gone, or changed since (the test
/// fails), is left for a later reconcile.
pub async fn release(ctx: &Context, ns: &str, held: &[Held], due: Option<Instant>) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for h in held {
        let patch = crate::job::release_patch(h.index);
        let _turn = ctx.bookkeeping(ns, due).await;
        match api.patch(&h.name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                ctx.remember_released(&h.uid);
                debug!(namespace = %ns, job = %h.name, "released job");
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 || s.code == 409 => {
                debug!(namespace = %ns, job = %h.name, code = s.code, "job gone or changed before its release; a later look releases it")
            }
            Err(e) => return Err(Error::ReleaseJob(h.name.clone(), e)),
        }
        Fault::AfterRelease.hit(ctx.fault)?;
    }
    Ok(())
}

/// Old Jobs go only once their loop is counted in the status just stored (or equal to the
/// stored one). The loop this reconcile recorded is counted there already, so its Job is not
/// left for a later reconcile to delete (the next loop's Job, whose creation wakes none,
/// would not bring one).
async fn delete_jobs(o: &Observed, ctx: &Context, deletes: Vec<String>, due: Option<Instant>) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &o.namespace);
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    for old in deletes {
        let _turn = ctx.bookkeeping(&o.namespace, due).await;
        match api.delete(&old, &dp).await {
            Ok(_) => {
                debug!(namespace = %o.namespace, job = %old, "deleted old job");
                Fault::AfterDelete.hit(ctx.fault)?;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::DeleteJob(old, e)),
        }
    }
    Ok(())
}
