//! Plan: pure. From what was observed and the one `now` of the reconcile, everything it will
//! do: the loops to record, the Job to create, the Ready verdict with whatever stands in the
//! way, the Events, the old Jobs to delete, and when to look again. [`conclude`] folds in what
//! the API server answered to the launch, the one step that has to wait for it.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::observe::{Checked, Observed};
use crate::crd::LoopServiceStatus;
use crate::job::{Held, ObservedJob, PreviousResult};
use crate::keys::ANN_RUN_REQUESTED_AT;
use crate::reasons::{ConditionType, Reason};
use crate::requester::Requester;
use crate::schedule::{self, Jitter};
use crate::spec::ValidSpec;
use crate::status::{self, Decision, Note, Obstacle, Rules, Verdict};

/// Default number of finished Jobs kept per LoopService, for successes and for failures.
const DEFAULT_HISTORY: usize = 3;
/// While a loop runs, its Job's watch events wake the reconcile on its end; this recheck
/// looks at its Pods for a reason it cannot make progress (a missing image, say).
const RUNNING_RECHECK: Duration = Duration::from_secs(15);
/// The recheck of a running loop while the caches are suspect (a watch failed lately).
const SUSPECT_RECHECK: Duration = Duration::from_secs(2);
/// How often a loop blocked by a Job name that is taken tries again.
const NAME_TAKEN_RECHECK: Duration = Duration::from_secs(5);
/// How soon a spec the API server refused is checked again (the cause may be outside it: a
/// quota, a webhook), and how seldom at most: the wait doubles with how long it has been
/// refused, so one that stays refused costs one dry run per 10 minutes.
const RECHECK_INVALID: Duration = Duration::from_secs(30);
const RECHECK_INVALID_MAX: Duration = Duration::from_secs(600);
/// How often a loop waiting for a lingering Pod, or left due by a draining instance, looks again.
const SHORT_RECHECK: Duration = Duration::from_secs(1);

/// Everything one reconcile will do, before it asks the API server anything.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status with every loop the Jobs show recorded, before the launch.
    pub status: LoopServiceStatus,
    /// What happened, for Events and metrics.
    pub notes: Vec<Note>,
    pub decision: Decision,
    /// The loop to start now, if any.
    pub launch: Option<Launch>,
    /// What holds the next step up.
    pub obstacle: Option<Obstacle>,
}

/// A loop to start: what its Job is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub loop_number: i64,
    /// When it was due.
    pub scheduled: Timestamp,
    /// With spec.jitter, when it was to start (due plus its offset); a run request has none.
    pub jittered: Option<Timestamp>,
    /// The run request it answers, for a manual loop.
    pub run_request: Option<String>,
    /// Who asked for it and why, as the LoopService's annotations say beside the request.
    pub requester: Requester,
    pub previous: PreviousResult,
    pub last_success: Option<Timestamp>,
}

/// What the API server answered to a launch.
#[derive(Clone, Debug, PartialEq)]
pub enum Launched {
    /// The Job was created (its start: the instant of the create).
    Created(ObservedJob),
    /// The Job existed already, this LoopService's: made by an instance that died before
    /// recording it. Adopted, never made twice.
    Adopted(ObservedJob),
    /// A Job of that name exists and is not this LoopService's.
    NameTaken { job: String },
    /// The API server refused the Job (a quota, a webhook), with its message.
    Rejected { seen: ObservedJob, message: String },
}

/// When to reconcile again, if nothing changes before.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Requeue {
    /// At this instant (counted from when the reconcile returns).
    At(Timestamp),
    After(Duration),
    /// Only when the LoopService or its Jobs change.
    OnChange,
}

/// What the reconcile ends with: the status to store, the Events, the Jobs to let go of and
/// to delete once it is stored, and the next look.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: LoopServiceStatus,
    pub notes: Vec<Note>,
    /// Held Jobs whose loops the status records as ended: their finalizer comes off.
    pub releases: Vec<Held>,
    pub deletes: Vec<String>,
    pub requeue: Requeue,
    /// Why the reconcile looks again then.
    pub recheck: Recheck,
}

/// Why a reconcile asks to run again at a time of its own, whatever else changes: the label of
/// `loopservice_requeues_total`, so that what drives the reconciles shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recheck {
    /// The next loop is due then (or a pause ends).
    Due,
    /// A loop runs: its Pods are looked at for a reason it cannot go on.
    Running,
    /// A loop runs and the caches are suspect (a watch failed lately): looked at sooner.
    RunningSuspect,
    /// The API server refused the spec's Job: asked again, backing off.
    Refused,
    /// The Job's name is taken by a Job that is not the loop's.
    NameTaken,
    /// A Pod of a deleted Job still runs.
    Lingering,
    /// A loop is due while this instance drains.
    Draining,
    /// Nothing: only a change to the LoopService or its Jobs runs it again.
    OnChange,
    /// The cache lacked this instance's own last status write.
    OwnWrite,
    /// Another release of the operator works it; this one stands by.
    StandBy,
    /// The caches had not synced yet.
    Unsynced,
    /// The reconcile failed and is retried with backoff.
    Error,
    /// A report of an invalid spec waits for its turn in the namespace's pace.
    Paced,
}

impl Recheck {
    pub fn as_str(self) -> &'static str {
        match self {
            Recheck::Due => "due",
            Recheck::Running => "running",
            Recheck::RunningSuspect => "running_suspect",
            Recheck::Refused => "refused",
            Recheck::NameTaken => "name_taken",
            Recheck::Lingering => "lingering",
            Recheck::Draining => "draining",
            Recheck::OnChange => "on_change",
            Recheck::OwnWrite => "own_write",
            Recheck::StandBy => "stand_by",
            Recheck::Unsynced => "unsynced",
            Recheck::Error => "error",
            Recheck::Paced => "paced",
        }
    }
}

/// Plans one reconcile at `now`.
pub fn plan(o: &Observed, now: Timestamp) -> Plan {
    let (valid, warning) = match &o.spec {
        Checked::Valid(valid, warning) => (valid, warning),
        Checked::Invalid(message) | Checked::Refused(message) => {
            let recheck = matches!(o.spec, Checked::Refused(_));
            let decision = Decision::Invalid { message: message.clone(), recheck };
            return Plan { status: o.prev.clone(), notes: vec![], decision, launch: None, obstacle: None };
        }
    };
    let spec = &o.ls.spec;
    let (mut st, mut notes) = status::record_jobs(&o.prev, &o.jobs, valid.interval, now);
    notes.extend(status::suspend_after_failures(&mut st, spec.suspend_after_failures, o.ls.metadata.generation, now));
    notes.extend(status::refuse_run_request(&mut st, o.ls.annotations().get(ANN_RUN_REQUESTED_AT).map(String::as_str)));
    notes.extend(warning.iter().map(|w| Note::warning(Reason::PodSecurityWarning, w.clone())));
    notes.extend(with_rules(o, valid, now, |rules| status::skip_missed(&mut st, rules, now)));
    let decision = decide(o, valid, &st, now);
    let (mut launch, mut obstacle) = (None, None);
    match &decision {
        Decision::Launch { loop_number, .. } if o.draining => {
            tracing::info!(namespace = %o.namespace, name = %o.ls.name_any(), r#loop = loop_number, "draining: leaving the loop to the next operator instance");
        }
        Decision::Launch { loop_number, .. } if o.lingering.is_some() => {
            let (pod, phase) = o.lingering.clone().unwrap_or_default();
            obstacle = Some(Obstacle::Lingering { r#loop: *loop_number, pod, phase });
        }
        Decision::Launch { loop_number, scheduled, run_request } => {
            let jitter = jitter(o, valid, now).filter(|_| run_request.is_none());
            launch = Some(Launch {
                loop_number: *loop_number,
                scheduled: *scheduled,
                jittered: jitter.map(|j| schedule::add(*scheduled, j.offset(*loop_number))),
                run_request: run_request.clone(),
                requester: if run_request.is_some() { Requester::from_annotations(o.ls.annotations()) } else { Requester::UNKNOWN },
                previous: status::previous_result(&st),
                last_success: st.last_success_scheduled_time.map(|t| t.0),
            });
        }
        Decision::Running { job } => obstacle = o.stuck.clone().filter(|s| matches!(s, Obstacle::Stuck { job: j, .. } if j == job)),
        _ => {}
    }
    Plan { status: st, notes, decision, launch, obstacle }
}

/// Folds the launch's answer into the plan: the loop it started (or the refusal) is recorded,
/// the next step decided again, and the phase and conditions set.
pub fn conclude(o: &Observed, plan: Plan, launched: Option<Launched>, now: Timestamp) -> Outcome {
    let Plan { status: mut st, mut notes, mut decision, launch, mut obstacle } = plan;
    if let (Some(answer), Checked::Valid(valid, _)) = (launched, &o.spec) {
        let at = match answer {
            Launched::Created(seen) | Launched::Adopted(seen) => {
                notes.push(status::launched(&mut st, &seen));
                Some(seen.start)
            }
            Launched::Rejected { seen, message } => {
                notes.extend(status::rejected(&mut st, &seen, &message, valid.interval));
                Some(seen.start)
            }
            Launched::NameTaken { job } => {
                let r#loop = launch.as_ref().map_or(st.loops_started.saturating_add(1), |l| l.loop_number);
                obstacle = Some(Obstacle::NameTaken { r#loop, job });
                None
            }
        };
        if let Some(at) = at {
            decision = decide(o, valid, &st, now.max(at));
        }
    }
    let spec = &o.ls.spec;
    let verdict = Verdict { decision: &decision, obstacle: obstacle.as_ref(), loops: spec.loops, generation: o.ls.metadata.generation };
    notes.extend(status::finalize(&mut st, &o.prev, verdict, now));
    let keep = |limit: Option<i32>| limit.map_or(DEFAULT_HISTORY, |n| n.max(0) as usize);
    let deletes = match &o.spec {
        Checked::Valid(..) => {
            status::jobs_to_delete(&o.jobs, &st, keep(spec.successful_jobs_history_limit), keep(spec.failed_jobs_history_limit))
        }
        _ => vec![],
    };
    let (requeue, recheck) = requeue(&decision, obstacle.as_ref(), o.suspect, refused_for(&st, now));
    Outcome { releases: releases(&o.held, &st), status: st, notes, deletes, requeue, recheck }
}

/// The held Jobs to let go of once `st` is stored: those of loops it records as ended (a Job
/// without a readable loop number is never a loop's).
pub fn releases(held: &[Held], st: &LoopServiceStatus) -> Vec<Held> {
    held.iter().filter(|h| h.loop_number <= st.last_finished_loop).cloned().collect()
}

/// The spec's jitter, for this LoopService (one not yet stored has no creation time: its
/// first loop is due `now`).
fn jitter<'a>(o: &'a Observed, valid: &ValidSpec, now: Timestamp) -> Option<Jitter<'a>> {
    valid.jitter.map(|max| Jitter { uid: &o.uid, max, created: created(o, now) })
}

/// When the LoopService was created (`now` for one not yet stored).
fn created(o: &Observed, now: Timestamp) -> Timestamp {
    o.ls.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0)
}

/// Runs `f` with the spec's rules for what comes next: its controls and the run request.
fn with_rules<R>(o: &Observed, valid: &ValidSpec, now: Timestamp, f: impl FnOnce(&Rules<'_>) -> R) -> R {
    // A request whose Job is still here is handled, whatever the status says (it is written
    // after the Job is created, and a CRD older than the operator would drop it).
    let run_request =
        o.ls.annotations()
            .get(ANN_RUN_REQUESTED_AT)
            .map(String::as_str)
            .filter(|r| !o.jobs.iter().any(|j| j.run_request.as_deref() == Some(*r)));
    let jitter = jitter(o, valid, now);
    f(&Rules::of(&o.ls.spec, valid, jitter.as_ref(), created(o, now), run_request))
}

/// What comes next, from the recorded status.
fn decide(o: &Observed, valid: &ValidSpec, st: &LoopServiceStatus, now: Timestamp) -> Decision {
    with_rules(o, valid, now, |rules| status::decide(st, rules, now))
}

/// How long the spec has been refused (since Ready turned False with InvalidSpec).
fn refused_for(st: &LoopServiceStatus, now: Timestamp) -> Duration {
    let ready = st.conditions.iter().find(|c| c.type_ == ConditionType::Ready.as_str() && c.reason == Reason::InvalidSpec.as_str());
    // The time from the transition to `now`.
    ready.map_or(Duration::ZERO, |c| schedule::until(now, c.last_transition_time.0))
}

fn requeue(decision: &Decision, obstacle: Option<&Obstacle>, suspect: bool, refused_for: Duration) -> (Requeue, Recheck) {
    match (decision, obstacle) {
        (_, Some(Obstacle::NameTaken { .. })) => (Requeue::After(NAME_TAKEN_RECHECK), Recheck::NameTaken),
        (_, Some(Obstacle::Lingering { .. })) => (Requeue::After(SHORT_RECHECK), Recheck::Lingering),
        (Decision::Wait { until } | Decision::Paused { until, .. }, _) => (Requeue::At(*until), Recheck::Due),
        // Only while draining: the next instance starts it.
        (Decision::Launch { .. }, _) => (Requeue::After(SHORT_RECHECK), Recheck::Draining),
        (Decision::Running { .. }, _) if suspect => (Requeue::After(SUSPECT_RECHECK), Recheck::RunningSuspect),
        (Decision::Running { .. }, _) => (Requeue::After(RUNNING_RECHECK), Recheck::Running),
        (Decision::Invalid { recheck: true, .. }, _) => {
            (Requeue::After(refused_for.clamp(RECHECK_INVALID, RECHECK_INVALID_MAX)), Recheck::Refused)
        }
        (Decision::Invalid { .. } | Decision::Suspended | Decision::SuspendedAfterFailures { .. } | Decision::Finished, _) => {
            (Requeue::OnChange, Recheck::OnChange)
        }
    }
}
