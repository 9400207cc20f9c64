//! The reconcile against a mocked API server: each test is one scenario, run through the
//! real `reconcile` with a real Context, checking what a user would see (the Job created,
//! the status written, the Events, when it looks again) and that no other request was made.
//! Then the pure plan, by a table of situations.

use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;

use super::fixtures::*;
use super::plan::{self, Launched, Recheck, Requeue};
use super::{is_conflict, reconcile};
use crate::crd::{LoopService, LoopServiceStatus, Phase, Time};
use crate::job;
use crate::keys::LABEL_LOOP;
use crate::reasons::Reason;
use crate::status::Obstacle;
use crate::Error;

/// The Ready condition: (status, reason, message).
fn ready(st: &LoopServiceStatus) -> (String, String, String) {
    condition(st, "Ready")
}

fn condition(st: &LoopServiceStatus, type_: &str) -> (String, String, String) {
    let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("a {type_} condition in {st:#?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.name_any()).collect()
}

fn secs(n: u64) -> Action {
    Action::requeue(Duration::from_secs(n))
}

/// `job` as another LoopService's (same name, another owner).
fn owned_by_another(mut job: Job) -> Job {
    job.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "loops.dev/v1alpha1".into(),
        kind: "LoopService".into(),
        name: "someone-else".into(),
        uid: OTHER_UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    job
}

/// Loops 1..=n started every 30 s from t0, each running 5 s; all but the last recorded as
/// ended, the last running: the status the operator wrote when it started loop `n`, and the
/// Jobs (the last one running).
fn after_loops(ls: &LoopService, n: i64) -> (LoopServiceStatus, Vec<Job>) {
    let (mut st, mut jobs) = (LoopServiceStatus::default(), vec![]);
    for k in 1..=n {
        let start = at(30 * (k - 1));
        let job = loop_job(ls, k, start);
        let seen = job::observe(&job).expect("a loop's Job");
        st = status_after(&with_status(ls, st), &jobs, Some(Launched::Created(seen)), start);
        if k == n {
            jobs.push(job);
        } else {
            jobs.push(ended(job, at(30 * (k - 1) + 5), true));
            st = status_after(&with_status(ls, st), &jobs, None, at(30 * (k - 1) + 5));
            // Once its end is stored, the operator takes its finalizer off.
            let done = jobs.pop().map(released);
            jobs.extend(done);
        }
    }
    (st, jobs)
}

const CONFLICT: &str =
    "Operation cannot be fulfilled on loopservices.loops.dev \"report\": the object has been modified; please apply your changes to the latest version and try again";

// ---- 1. The first loop ----

#[tokio::test]
async fn a_new_loopservice_starts_loop_1_at_once_and_records_it_running() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(15), "a running loop is looked at again in 15 s");
    assert_eq!(names(&asked.dry_runs()), [job_name(1)], "the new spec's Job is checked with a dry run first");
    let created = asked.created_jobs();
    assert_eq!(names(&created), [job_name(1)]);
    assert_eq!(created[0].labels()[LABEL_LOOP], "1");
    assert_eq!(created[0].owner_references()[0].uid, UID);
    let (version, st) = asked.statuses().remove(0);
    assert_eq!(version, "1", "the status write is conditioned on the version read");
    assert_eq!((st.loops_started, st.active_job.clone(), st.phase), (1, Some(job_name(1)), Some(Phase::Running)));
    assert_eq!(st.last_start_time, Some(Time(t0())));
    assert_eq!(st.observed_generation, Some(1));
    let (status, reason, message) = ready(&st);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Running"));
    assert_eq!(message, format!("loop 1 is running as Job {}", job_name(1)));
    assert_eq!(asked.events(), [], "a loop that starts is no Event by default");
}

// ---- 2. Adopting a Job an earlier instance made ----

#[tokio::test]
async fn a_job_of_this_loopservice_already_there_is_adopted_not_created_twice() {
    let ls = loopservice(json!({}));
    // Made 2 s ago by an instance that died before writing status; the cache has not seen it.
    let earlier = loop_job(&ls, 1, at(-2));
    let exists = format!("jobs.batch \"{}\" already exists", job_name(1));
    let (client, api) = api_server(vec![
        Expect::dry_run_job().refused(409, "AlreadyExists", &exists),
        Expect::create_job().refused(409, "AlreadyExists", &exists),
        Expect::get_job(&job_name(1)).answers(200, serde_json::to_value(&earlier).unwrap()),
        Expect::write_status(&ls),
    ]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(15));
    assert_eq!(asked.created_jobs().len(), 1, "one create, refused as existing; none after it");
    let st = asked.status();
    assert_eq!((st.loops_started, st.active_job.clone(), st.phase), (1, Some(job_name(1)), Some(Phase::Running)));
    assert_eq!(st.last_start_time, Some(Time(at(-2))), "the loop started when the earlier instance made its Job");
    assert_eq!(ready(&st).1, "Running");
    assert_eq!(asked.events(), []);
}

// ---- 3. The Job name taken by another's Job ----

#[tokio::test]
async fn a_job_name_taken_by_another_owner_blocks_the_loop_with_job_name_taken() {
    let ls = loopservice(json!({}));
    let stranger = owned_by_another(loop_job(&ls, 1, at(-600)));
    let exists = format!("jobs.batch \"{}\" already exists", job_name(1));
    let (client, api) = api_server(vec![
        Expect::dry_run_job().refused(409, "AlreadyExists", &exists),
        Expect::create_job().refused(409, "AlreadyExists", &exists),
        Expect::get_job(&job_name(1)).answers(200, serde_json::to_value(&stranger).unwrap()),
        Expect::write_status(&ls),
        Expect::event(),
    ]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(5), "a taken name is tried again in 5 s");
    let st = asked.status();
    assert_eq!((st.loops_started, st.active_job.clone()), (0, None), "no loop is counted");
    let (status, reason, message) = ready(&st);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "JobNameTaken"));
    assert!(message.contains(&job_name(1)) && message.contains("not this LoopService's"), "{message}");
    let events = asked.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "JobNameTaken"));
    assert_eq!(events[0].regarding, format!("LoopService/{NAME}"));
    assert_eq!(events[0].related, Some(job_name(1)));
}

// ---- 4. A create the API server refuses ----

#[tokio::test]
async fn a_create_refused_by_a_quota_a_webhook_or_validation_is_a_failed_loop_with_the_api_servers_message() {
    let quota = format!(
        "jobs.batch \"{}\" is forbidden: exceeded quota: compute, requested: limits.cpu=1, used: limits.cpu=4, limited: limits.cpu=4",
        job_name(2)
    );
    let webhook = "admission webhook \"images.policy.example.com\" denied the request: images must come from registry.example.com";
    let invalid = format!("Job.batch \"{}\" is invalid: metadata.labels: Invalid value: \"x\": too long", job_name(2));
    for (code, reason, message) in [(403, "Forbidden", quota.as_str()), (403, "Forbidden", webhook), (422, "Invalid", invalid.as_str())] {
        let ls = loopservice(json!({}));
        let (st, loop_1) = first_loop_succeeded(&ls);
        let ls = with_status(&ls, st);
        let (client, api) =
            api_server(vec![Expect::create_job().refused(code, reason, message), Expect::write_status(&ls), Expect::event()]);
        let ctx = context(client, clock_at(at(30)), vec![loop_1], vec![]);

        let res = reconcile(cached(&ls), ctx.clone()).await;
        let asked = api.done(ctx).await;

        assert_eq!(res.expect("the reconcile succeeds"), secs(30), "{code}: the next loop comes one interval later");
        assert_eq!(names(&asked.created_jobs()), [job_name(2)]);
        let st = asked.status();
        assert_eq!((st.loops_started, st.loops_failed, st.last_finished_loop, st.active_job.clone()), (2, 1, 2, None), "{code}");
        let error = st.last_error.clone().expect("lastError");
        assert_eq!((error.r#loop, error.reason.as_str()), (2, "JobRejected"));
        assert_eq!(error.message, format!("the API server refused the Job: {message}"));
        assert_eq!(st.phase, Some(Phase::Failing));
        assert_eq!(st.next_run_time, Some(Time(at(60))));
        let events = asked.events();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "LoopFailed"));
        assert!(events[0].note.contains(message), "{}", events[0].note);
        assert_eq!(events[0].related, Some(job_name(2)));
    }
}

#[tokio::test]
async fn a_create_the_operators_own_rbac_forbids_is_a_reconcile_error_not_a_failed_loop() {
    let ls = loopservice(json!({}));
    let (st, loop_1) = first_loop_succeeded(&ls);
    let ls = with_status(&ls, st);
    let rbac = "jobs.batch is forbidden: User \"system:serviceaccount:loops:operator\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"ns\"";
    let (client, api) = api_server(vec![Expect::create_job().refused(403, "Forbidden", rbac), Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(at(30)), vec![loop_1], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert!(matches!(res, Err(Error::CreateJob(..))), "{res:?}");
    let st = asked.status();
    assert_eq!((st.loops_started, st.loops_failed), (1, 0), "no loop number is used up");
    let (status, reason, message) = condition(&st, "Reconciled");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ReconcileError"));
    assert!(message.contains("cannot create resource"), "{message}");
    assert_eq!(asked.events(), []);
}

// ---- 4b. PodSecurity's warning on the dry run ----

/// What the API server warns of a Job whose Pod template breaks PodSecurity `restricted`.
const PSA_WARNING: &str = "would violate PodSecurity \"restricted:latest\": runAsNonRoot != true (pod or container \"loop\" must set securityContext.runAsNonRoot=true)";

#[tokio::test]
async fn a_pod_template_that_breaks_the_enforced_pod_security_level_is_invalid_spec_before_any_loop() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![
        Expect::dry_run_job().warns(PSA_WARNING),
        Expect::get_namespace(json!({"pod-security.kubernetes.io/enforce": "restricted"})),
        Expect::write_status(&ls),
        Expect::event(),
    ]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(30), "checked again in 30 s: the namespace's labels may change");
    assert_eq!(asked.created_jobs().len(), 0, "no loop: its Pods would be refused");
    let st = asked.status();
    assert_eq!((st.phase, st.loops_started), (Some(Phase::Invalid), 0));
    let (status, reason, message) = ready(&st);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert_eq!(
        message,
        format!("its Pods would be refused: namespace {NS} enforces PodSecurity \"restricted\", and the API server warns that the Pod template {PSA_WARNING}")
    );
    let events = asked.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "InvalidSpec"));
    assert!(events[0].note.contains(PSA_WARNING), "{}", events[0].note);
}

#[tokio::test]
async fn a_pod_security_warning_of_a_level_not_enforced_is_a_warning_event_and_the_loop_runs() {
    // `warn: restricted` over `enforce: baseline`; and a namespace the operator may not read.
    let baseline = json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "restricted"});
    let cases = [
        (Expect::get_namespace(baseline), "does not enforce that level"),
        (Expect::get_namespace(json!({})).refused(403, "Forbidden", "namespaces \"ns\" is forbidden"), "cannot read whether"),
    ];
    for (namespace, says) in cases {
        let ls = loopservice(json!({}));
        let (client, api) = api_server(vec![
            Expect::dry_run_job().warns(PSA_WARNING),
            namespace,
            Expect::create_job(),
            Expect::write_status(&ls),
            Expect::event(),
        ]);
        let ctx = context(client, clock_at(t0()), vec![], vec![]);

        let res = reconcile(cached(&ls), ctx.clone()).await;
        let asked = api.done(ctx).await;

        assert_eq!(res.expect("the reconcile succeeds"), secs(15));
        assert_eq!(names(&asked.created_jobs()), [job_name(1)]);
        assert_eq!(asked.status().phase, Some(Phase::Running));
        let events = asked.events();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "PodSecurityWarning"));
        assert!(events[0].note.contains(PSA_WARNING) && events[0].note.contains(says), "{}", events[0].note);
    }
}

// ---- 5. A status write that conflicts ----

#[tokio::test]
async fn a_status_write_conflict_fails_the_reconcile_as_a_conflict_and_never_shows_as_reconciled_false() {
    let ls = loopservice(json!({}));
    let exists = format!("jobs.batch \"{}\" already exists", job_name(1));
    let conflict = || Expect::write_status(&ls).refused(409, "Conflict", CONFLICT);
    // The cache stays as it was: each retry finds loop 1's Job by its name and adopts it.
    let retry = || [Expect::create_job().refused(409, "AlreadyExists", &exists), Expect::get_job(&job_name(1)), conflict()];
    let mut expected = vec![Expect::dry_run_job(), Expect::create_job(), conflict()];
    expected.extend(retry());
    expected.extend(retry());
    let (client, api) = api_server(expected);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    // Three reconciles in a row meet a conflict: none writes Reconciled=False, not even once
    // the failures repeat (a transient error shows from the third).
    for attempt in 1..=3 {
        let err = reconcile(cached(&ls), ctx.clone()).await.expect_err("the reconcile fails");
        assert!(matches!(err, Error::WriteStatus(..)), "attempt {attempt}: {err:?}");
        assert!(is_conflict(&err), "attempt {attempt}: {err:?}");
        let _ = super::error_policy(cached(&ls), &err, ctx.clone());
    }
    let asked = api.done(ctx).await;

    assert_eq!(asked.statuses().len(), 3, "one status write per reconcile, none after it");
    assert_eq!(names(&asked.created_jobs()), [job_name(1), job_name(1), job_name(1)], "one Job, adopted on each retry");
}

// ---- 6. Old Jobs go after the status that counts them ----

/// Loop 3 of a LoopService that keeps one successful Job ended at t0 + 65 s; at t0 + 70 s the
/// reconcile is to store that, let loop 3's Job go, and delete the Jobs of loops 2 and 1.
fn loop_3_ended_at_65_keeping_one_job() -> (LoopService, ApiServer, std::sync::Arc<super::Context>) {
    let ls = loopservice(json!({"successfulJobsHistoryLimit": 1}));
    let (st, mut jobs) = after_loops(&ls, 3);
    let loop_3 = jobs.pop().unwrap();
    jobs.push(ended(loop_3, at(65), true));
    let ls = with_status(&ls, st);
    let (client, api) = api_server(vec![
        Expect::write_status(&ls),
        Expect::release_job(&job_name(3)),
        Expect::delete_job(&job_name(2)),
        Expect::delete_job(&job_name(1)),
    ]);
    let ctx = context(client, clock_at(at(70)), jobs, vec![]);
    (ls, api, ctx)
}

#[tokio::test]
async fn old_jobs_beyond_the_history_limit_are_deleted_after_the_status_write() {
    let (ls, api, ctx) = loop_3_ended_at_65_keeping_one_job();

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(20), "loop 4 is due at t0 + 90 s");
    assert_eq!(
        asked.lines(),
        [
            format!("PATCH /apis/loops.dev/v1alpha1/namespaces/ns/loopservices/{NAME}/status"),
            format!("PATCH /apis/batch/v1/namespaces/ns/jobs/{}", job_name(3)),
            format!("DELETE /apis/batch/v1/namespaces/ns/jobs/{}", job_name(2)),
            format!("DELETE /apis/batch/v1/namespaces/ns/jobs/{}", job_name(1)),
        ],
        "the status that counts loop 3 is stored before its Job is let go and before any Job goes"
    );
    let st = asked.status();
    assert_eq!((st.last_finished_loop, st.loops_succeeded, st.active_job.clone()), (3, 3, None));
    assert_eq!(asked.deleted_jobs(), [job_name(2), job_name(1)], "the newest successful Job is kept");
}

#[tokio::test]
async fn when_the_status_write_fails_no_old_job_is_deleted() {
    let ls = loopservice(json!({"successfulJobsHistoryLimit": 1}));
    let (st, mut jobs) = after_loops(&ls, 3);
    let loop_3 = jobs.pop().unwrap();
    jobs.push(ended(loop_3, at(65), true));
    let ls = with_status(&ls, st);
    let (client, api) = api_server(vec![Expect::write_status(&ls).refused(500, "InternalError", "etcdserver: request timed out")]);
    let ctx = context(client, clock_at(at(70)), jobs, vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert!(matches!(res, Err(Error::WriteStatus(..))), "{res:?}");
    assert_eq!(asked.deleted_jobs(), Vec::<String>::new(), "the Jobs stay until a status counting their loops is stored");
}

/// A LoopService is reconciled one reconcile at a time, so its next loop cannot start while
/// the reconcile that records its last loop's end still waits to write. When other namespaces'
/// bookkeeping holds every bookkeeping place, that reconcile's writes wait their turn, and go
/// ahead of the backlog a second before the next loop is due.
#[tokio::test(start_paused = true)]
async fn the_end_of_a_loop_is_recorded_ahead_of_a_bookkeeping_backlog_a_second_before_the_next_loop_is_due() {
    let (ls, api, ctx) = loop_3_ended_at_65_keeping_one_job();
    let mut backlog = vec![];
    for _ in 0..ctx.settings.bookkeeping_concurrency {
        backlog.push(ctx.request(crate::turns::Priority::Bookkeeping, "broken").await);
    }

    let started = tokio::time::Instant::now();
    // Bounded here: a reconcile stuck behind the backlog would wait as long as the backlog.
    let res = tokio::time::timeout(Duration::from_secs(25), reconcile(cached(&ls), ctx.clone())).await;
    let took = started.elapsed();
    drop(backlog);
    let res = res.expect("the reconcile waited for the backlog past the next loop's due time");
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(20), "loop 4 is due at t0 + 90 s");
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_millis(19_100),
        "its writes waited {took:?}, not until a second before loop 4 was due"
    );
    assert_eq!(asked.lines().len(), 4, "{:#?}", asked.lines());
}

// ---- 7. The cache a step behind the operator's own write ----

#[tokio::test]
async fn a_cache_behind_its_own_write_is_waited_for_then_the_stored_object_is_read() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![
        Expect::dry_run_job(),
        Expect::create_job(),
        Expect::write_status(&ls),
        Expect::get_loopservice(),
        Expect::get_job(&job_name(1)),
    ]);
    let clock = clock_at(t0());
    let ctx = context(client, clock.clone(), vec![], vec![]);

    let first = reconcile(cached(&ls), ctx.clone()).await;
    assert_eq!(first.expect("the first reconcile succeeds"), secs(15));
    let after_first = api.seen().len();

    // The watch has not brought the write yet: the cached object still has no status.
    let second = reconcile(cached(&ls), ctx.clone()).await;
    assert_eq!(second.expect("the second reconcile succeeds"), Action::requeue(Duration::from_millis(50)));
    assert_eq!(api.seen().len(), after_first, "a reconcile that waits for its own write asks nothing");
    assert_eq!(ctx.metrics.own_write_waits.get(), 1);

    // A watch failed just now: the cache is not trusted alone, and the stored object is read
    // (and, the caches being suspect, the running loop's Job too).
    ctx.caches.watch_failed_at.store(jiff::Timestamp::now().as_millisecond(), Ordering::SeqCst);
    let third = reconcile(cached(&ls), ctx.clone()).await;
    assert_eq!(third.expect("the third reconcile succeeds"), secs(2), "a running loop is rechecked in 2 s while the caches are suspect");
    assert_eq!(ctx.metrics.stale_reads.get(), 1);
    let asked = api.done(ctx).await;

    assert_eq!(
        asked.lines()[after_first..],
        [
            format!("GET /apis/loops.dev/v1alpha1/namespaces/ns/loopservices/{NAME}"),
            format!("GET /apis/batch/v1/namespaces/ns/jobs/{}", job_name(1)),
        ]
    );
    assert_eq!(names(&asked.created_jobs()), [job_name(1)], "the stored status shows loop 1 running: no second Job");
    assert_eq!(asked.statuses().len(), 1, "the stored status is already right");
}

// ---- 8. The running loop's Job missing from the cache ----

#[tokio::test]
async fn a_running_loops_job_gone_from_the_cache_and_the_server_fails_the_loop_and_starts_the_next() {
    let ls = loopservice(json!({}));
    let ls = with_status(&ls, running_first_loop(&ls));
    let (client, api) = api_server(vec![Expect::get_job(&job_name(1)), Expect::create_job(), Expect::write_status(&ls), Expect::event()]);
    let ctx = context(client, clock_at(at(40)), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(15));
    let created = asked.created_jobs();
    assert_eq!(names(&created), [job_name(2)]);
    assert_eq!(created[0].labels()[LABEL_LOOP], "2");
    let st = asked.status();
    assert_eq!((st.loops_started, st.loops_failed, st.active_job.clone()), (2, 1, Some(job_name(2))));
    let error = st.last_error.clone().expect("lastError");
    assert_eq!((error.r#loop, error.reason.as_str()), (1, "JobDeleted"));
    let events = asked.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "LoopFailed"));
    assert!(events[0].note.contains("JobDeleted"), "{}", events[0].note);
}

#[tokio::test]
async fn a_running_loops_job_missing_from_the_cache_but_stored_is_left_running() {
    let ls = loopservice(json!({}));
    let ls = with_status(&ls, running_first_loop(&ls));
    let running = loop_job(&ls, 1, t0());
    let (client, api) = api_server(vec![Expect::get_job(&job_name(1)).answers(200, serde_json::to_value(&running).unwrap())]);
    let ctx = context(client, clock_at(at(5)), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(15));
    assert_eq!(asked.created_jobs().len(), 0, "nothing is created beside a running loop");
    assert_eq!(asked.statuses().len(), 0, "nothing changed");
}

/// A running loop's Job with no Pod 10 s after its start: the Job controller's `FailedCreate`
/// Event, from the operator's watch of them, says why in Ready. No Events list is asked for
/// (each scanned the namespace's Events in etcd: 11.7 s on average an hour into the soak).
#[tokio::test]
async fn a_running_loops_job_without_a_pod_says_why_from_the_watched_failed_create_event() {
    let ls = loopservice(json!({}));
    let ls = with_status(&ls, running_first_loop(&ls));
    let why = "pods \"report-c1d7a-1-x\" is forbidden: error looking up service account ns/missing";
    let (client, api) = api_server(vec![Expect::write_status(&ls), Expect::event()]);
    let ctx = context_with_failed_create(client, clock_at(at(20)), vec![loop_job(&ls, 1, t0())], &job_name(1), why);

    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;

    let (status, reason, message) = ready(&asked.status());
    assert_eq!((status.as_str(), reason.as_str()), ("False", "PodCreateFailed"));
    assert!(message.contains(why), "{message}");
}

// ---- 9. Draining ----

#[tokio::test]
async fn a_draining_operator_starts_no_loop_and_shows_the_loop_due() {
    let ls = loopservice(json!({}));
    let (st, loop_1) = first_loop_succeeded(&ls);
    let ls = with_status(&ls, st);
    let (client, api) = api_server(vec![Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(at(30)), vec![loop_1], vec![]);
    ctx.draining.store(true, Ordering::SeqCst);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(1));
    assert_eq!(asked.created_jobs().len(), 0, "no Job while draining");
    let st = asked.status();
    assert_eq!((st.loops_started, st.phase, st.next_run_time), (1, Some(Phase::Waiting), Some(Time(at(30)))));
    let (status, reason, message) = ready(&st);
    assert_eq!((status.as_str(), reason.as_str(), message.as_str()), ("True", "Waiting", "loop 2 is due now"));
}

// ---- 10. A spec the API server refuses in the dry run ----

#[tokio::test]
async fn a_spec_whose_job_the_dry_run_refuses_is_invalid_with_the_api_servers_message() {
    let ls = loopservice(json!({}));
    let refusal = format!(
        "Job.batch \"{}\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        job_name(1)
    );
    let (client, api) =
        api_server(vec![Expect::dry_run_job().refused(422, "Invalid", &refusal), Expect::write_status(&ls), Expect::event()]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    let res = reconcile(cached(&ls), ctx.clone()).await;
    let asked = api.done(ctx).await;

    assert_eq!(res.expect("the reconcile succeeds"), secs(30), "a refused spec is checked again in 30 s");
    assert_eq!(asked.created_jobs().len(), 0, "no real create");
    let st = asked.status();
    assert_eq!((st.phase, st.loops_started), (Some(Phase::Invalid), 0));
    let (status, reason, message) = ready(&st);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    // The API server's words, less the name of the Job it was shown (no loop of it exists).
    let unnamed = "Job.batch is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1";
    assert_eq!(message, format!("the API server refuses the Job this spec makes: {unnamed}"));
    let events = asked.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", "InvalidSpec"));
    assert!(events[0].note.contains(unnamed), "{}", events[0].note);

    // Still refused when checked again, 30 s, 2 min and an hour after it was first refused:
    // each recheck waits as long as it has been refused so far, at most 10 minutes.
    let refused = with_status(&ls, st);
    for (after, wait) in [(30, 30), (120, 120), (3600, 600)] {
        let (client, api) = api_server(vec![Expect::dry_run_job().refused(422, "Invalid", &refusal)]);
        let ctx = context(client, clock_at(at(after)), vec![], vec![]);
        let res = reconcile(cached(&refused), ctx.clone()).await;
        let asked = api.done(ctx).await;
        assert_eq!(res.expect("the reconcile succeeds"), secs(wait), "refused for {after} s");
        assert!(asked.statuses().is_empty() && asked.events().is_empty(), "nothing new to say: {:#?}", asked.lines());
    }
}

/// Another LoopService of a spec just refused, in the same namespace: refused with the same
/// message from the first one's answer, without a dry run of its own (thousands of one broken
/// spec cost the API server one).
/// The API server's refusal of a Job with a volume mount of no volume, naming the Job.
fn volume_refusal(job: &str) -> String {
    format!("Job.batch \"{job}\" is invalid: {VOLUME_REFUSED}")
}

/// What is left of [`volume_refusal`]'s words once the Job's name is taken out.
const VOLUME_REFUSED: &str = "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"nope\"";

/// Another LoopService of the same spec as [`loopservice`]'s, `name` with `uid`.
fn same_spec(name: &str, uid: &str) -> LoopService {
    let mut ls = loopservice(json!({}));
    ls.metadata.name = Some(name.into());
    ls.metadata.uid = Some(uid.into());
    ls
}

#[tokio::test]
async fn loopservices_of_one_refused_spec_share_one_dry_run() {
    let first = loopservice(json!({}));
    let second = same_spec("report-copy", OTHER_UID);
    // As the API server words it: naming the Job of the first LoopService checked.
    let (client, api) = api_server(vec![
        Expect::dry_run_job().refused(422, "Invalid", &volume_refusal(&job_name(1))),
        Expect::write_status(&first),
        Expect::event(),
        Expect::write_status(&second),
        Expect::event(),
    ]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    for ls in [&first, &second] {
        assert_eq!(reconcile(cached(ls), ctx.clone()).await.expect("the reconcile succeeds"), secs(30));
    }
    let asked = api.done(ctx).await;
    assert_eq!(asked.dry_runs().len(), 1, "one dry run for both: {:#?}", asked.lines());
    let statuses = asked.statuses();
    assert_eq!(statuses.len(), 2);
    for (_, st) in statuses {
        let (status, reason, message) = ready(&st);
        assert_eq!((st.phase, status.as_str(), reason.as_str()), (Some(Phase::Invalid), "False", "InvalidSpec"));
        // The same words for both, naming neither one's Job.
        assert_eq!(message, format!("the API server refuses the Job this spec makes: Job.batch is invalid: {VOLUME_REFUSED}"));
    }
    assert_eq!(asked.events().len(), 2, "each LoopService says so in an Event of its own");
}

/// After a restart (no verdicts kept), a LoopService already reported Invalid for the same
/// refusal is checked again and nothing is written: no status, no Event. Thousands of them
/// would otherwise be reported again at every start of the operator.
#[tokio::test]
async fn a_refused_spec_already_reported_is_not_reported_again_after_a_restart() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![
        Expect::dry_run_job().refused(422, "Invalid", &volume_refusal(&job_name(1))),
        Expect::write_status(&ls),
        Expect::event(),
    ]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the first reconcile succeeds");
    let (_, reported) = api.done(ctx).await.statuses().pop().expect("a status write");
    let stored = with_status(&ls, reported);
    // After the restart another LoopService of the spec, new, is checked first: the API
    // server's answer names its Job, and the stored one is answered from it.
    let other = same_spec("report-copy", OTHER_UID);
    let other_job = crate::job::job_name("report-copy", OTHER_UID, 1);
    let (client, api) = api_server(vec![
        Expect::dry_run_job().refused(422, "Invalid", &volume_refusal(&other_job)),
        Expect::write_status(&other),
        Expect::event(),
    ]);
    let ctx = context(client, clock_at(at(120)), vec![], vec![]);
    reconcile(cached(&other), ctx.clone()).await.expect("the new one's reconcile succeeds");
    reconcile(cached(&stored), ctx.clone()).await.expect("the reconcile after a restart succeeds");
    let asked = api.done(ctx).await;
    assert_eq!(asked.lines().len(), 3, "nothing for the one reported before: {:#?}", asked.lines());
}

/// Past a burst, each report of an invalid spec is booked its own instant in its namespace's
/// pace: its reconcile writes nothing and comes back then, instead of waiting inside itself
/// (which held a place, woke every waiter at once, and timed out past 30 s in a flood).
#[tokio::test]
async fn reports_of_invalid_specs_past_a_burst_come_back_at_their_own_instants() {
    let burst = super::context::Settings::default().invalid_reports_per_second.get() as usize;
    let all: Vec<LoopService> =
        (0..burst + 3).map(|i| same_spec(&format!("report-{i}"), &format!("0aa1b2c3-d4e5-4f60-8a7b-9c8d7e6f5a{i:02}"))).collect();
    let mut expect = vec![Expect::dry_run_job().refused(422, "Invalid", &format!("Job.batch is invalid: {VOLUME_REFUSED}"))];
    for ls in &all {
        expect.extend([Expect::write_status(ls), Expect::event()]);
    }
    let (client, api) = api_server(expect);
    let clock = clock_at(t0());
    let ctx = context(client, clock.clone(), vec![], vec![]);
    let every = Duration::from_secs(1) / super::context::Settings::default().invalid_reports_per_second.get();
    let mut actions = vec![];
    for ls in &all {
        actions.push(reconcile(cached(ls), ctx.clone()).await.expect("the reconcile succeeds"));
    }
    let refused_recheck = Action::requeue(Duration::from_secs(30));
    assert!(actions[..burst].iter().all(|a| *a == refused_recheck), "the burst is reported at once: {actions:?}");
    let booked: Vec<Action> = (1..=3).map(|k| Action::requeue(every * k)).collect();
    assert_eq!(actions[burst..], booked[..], "past the burst, one report each `every`");
    let writes = |api: &ApiServer| api.seen().iter().filter(|s| s.path.ends_with("/status") || s.path.contains("/events")).count();
    assert_eq!(writes(&api), 2 * burst, "past the burst, nothing is written before its instant");
    // Woken early (a change): still not its turn, and booked no further back.
    clock.advance(every / 2);
    let early = reconcile(cached(&all[burst]), ctx.clone()).await.expect("the reconcile succeeds");
    assert_eq!(early, Action::requeue(every / 2));
    clock.advance(every * 3);
    for ls in &all[burst..] {
        assert_eq!(reconcile(cached(ls), ctx.clone()).await.expect("the reconcile succeeds"), refused_recheck);
    }
    let asked = api.done(ctx).await;
    assert_eq!((asked.statuses().len(), asked.events().len()), (burst + 3, burst + 3), "each reported once, with its Event");
}

/// Reconciles that cannot start a loop (a refused spec's report, a loop's end) hold at most
/// three quarters of the places: when they hold all theirs, thousands of them waiting to write
/// status and Events, the reconcile of a due loop in another namespace finds a place at once.
#[tokio::test]
async fn reconciles_that_cannot_start_a_loop_leave_places_for_due_loops() {
    let (client, api) = api_server(vec![]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    let n = usize::from(super::context::Settings::default().max_reconciles);
    let mut held = vec![];
    for _ in 0..n - n / 4 {
        held.push(ctx.slot(false, "broken").await);
    }
    let quick = Duration::from_millis(50);
    assert!(tokio::time::timeout(quick, ctx.slot(false, "broken")).await.is_err(), "not urgent past its share");
    assert!(tokio::time::timeout(quick, ctx.slot(false, "healthy")).await.is_err(), "the share is for all namespaces");
    let due = tokio::time::timeout(quick, ctx.slot(true, "healthy")).await;
    assert!(due.is_ok(), "a due loop waited for a place");
    drop((held, due));
    api.done(ctx).await;
}

// ---- 11. Pod fields newer than the operator's types ----

/// A LoopService whose template has a Pod field no Kubernetes the operator's types know has.
fn with_future_pod_field() -> LoopService {
    loopservice(json!({"template": {"spec": {"futurePodField": {"mode": "on"}}}}))
}

#[tokio::test]
async fn a_pod_field_the_operators_types_do_not_have_is_sent_as_written_in_the_dry_run_and_the_job() {
    let ls = with_future_pod_field();
    let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;

    let posts: Vec<_> = asked.0.iter().filter(|s| s.path.ends_with("/jobs")).collect();
    assert_eq!(posts.len(), 2, "a dry run, then the Job: {:#?}", asked.lines());
    for sent in posts {
        assert_eq!(sent.body["spec"]["template"]["spec"]["futurePodField"], json!({"mode": "on"}), "{}", sent.line());
    }
    assert_eq!(asked.status().loops_started, 1);
}

#[tokio::test]
async fn a_pod_field_the_api_server_drops_makes_the_spec_invalid_naming_it() {
    let ls = with_future_pod_field();
    let (client, api) =
        api_server(vec![Expect::dry_run_job_dropping_pod_field("futurePodField"), Expect::write_status(&ls), Expect::event()]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);

    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;

    assert_eq!(asked.created_jobs().len(), 0, "no real create");
    let st = asked.status();
    let (status, reason, message) = ready(&st);
    assert_eq!((st.phase, status.as_str(), reason.as_str()), (Some(Phase::Invalid), "False", "InvalidSpec"));
    assert_eq!(message, "this Kubernetes API server drops spec.template.spec.futurePodField: a field or feature it does not have");
}

// ---- The plan, by table ----

fn obstacle_kind(o: &Obstacle) -> &'static str {
    match o {
        Obstacle::NameTaken { .. } => "NameTaken",
        Obstacle::Lingering { .. } => "Lingering",
        Obstacle::Stuck { .. } => "Stuck",
    }
}

#[test]
fn the_plan_by_situation() {
    let ls = loopservice(json!({}));
    let running = with_status(&ls, running_first_loop(&ls));
    let running_job = loop_job(&ls, 1, t0());
    let (done, loop_1) = first_loop_succeeded(&ls);
    let waiting = with_status(&ls, done);
    let stuck =
        |job: String| Obstacle::Stuck { job, reason: Reason::LoopStuck, why: "its Pod cannot start its container: ErrImagePull".into() };

    struct Row {
        case: &'static str,
        now: jiff::Timestamp,
        o: super::observe::Observed,
        launch: Option<i64>,
        obstacle: Option<&'static str>,
        ready: (&'static str, &'static str),
        warnings: &'static [&'static str],
        requeue: (Requeue, Recheck),
    }
    let with = |ls: &LoopService, jobs: &[Job], f: &dyn Fn(&mut super::observe::Observed)| {
        let mut o = observed(ls, jobs);
        f(&mut o);
        o
    };
    let suspended = loopservice(json!({"suspend": true}));
    let one_loop = with_status(&loopservice(json!({"loops": 1})), waiting.status.clone().unwrap());
    let rows = [
        Row {
            case: "a new LoopService: loop 1 starts at once",
            now: t0(),
            o: observed(&ls, &[]),
            launch: Some(1),
            obstacle: None,
            ready: ("True", "Running"),
            warnings: &[],
            requeue: (Requeue::After(Duration::from_secs(15)), Recheck::Running),
        },
        Row {
            case: "loop 2 not due yet: wait for t0 + 30 s",
            now: at(10),
            o: observed(&waiting, std::slice::from_ref(&loop_1)),
            launch: None,
            obstacle: None,
            ready: ("True", "Waiting"),
            warnings: &[],
            requeue: (Requeue::At(at(30)), Recheck::Due),
        },
        Row {
            case: "loop 2 due, but a Pod of a deleted Job still runs",
            now: at(30),
            o: with(&waiting, std::slice::from_ref(&loop_1), &|o| o.lingering = Some(("report-old-x".into(), "Running".into()))),
            launch: None,
            obstacle: Some("Lingering"),
            ready: ("False", "LoopStuck"),
            warnings: &["LoopStuck"],
            requeue: (Requeue::After(Duration::from_secs(1)), Recheck::Lingering),
        },
        Row {
            case: "the running loop's Pod cannot pull its image",
            now: at(20),
            o: with(&running, std::slice::from_ref(&running_job), &|o| o.stuck = Some(stuck(job_name(1)))),
            launch: None,
            obstacle: Some("Stuck"),
            ready: ("False", "LoopStuck"),
            warnings: &["LoopStuck"],
            requeue: (Requeue::After(Duration::from_secs(15)), Recheck::Running),
        },
        Row {
            case: "a stuck verdict about another Job is not the running loop's",
            now: at(20),
            o: with(&running, std::slice::from_ref(&running_job), &|o| o.stuck = Some(stuck("report-other-9".into()))),
            launch: None,
            obstacle: None,
            ready: ("True", "Running"),
            warnings: &[],
            requeue: (Requeue::After(Duration::from_secs(15)), Recheck::Running),
        },
        Row {
            case: "a loop running past its interval: the next waits for it",
            now: at(45),
            o: observed(&running, std::slice::from_ref(&running_job)),
            launch: None,
            obstacle: None,
            ready: ("True", "Running"),
            warnings: &[],
            requeue: (Requeue::After(Duration::from_secs(15)), Recheck::Running),
        },
        Row {
            case: "the running loop's Job is gone: loop 1 failed, loop 2 starts",
            now: at(40),
            o: observed(&running, &[]),
            launch: Some(2),
            obstacle: None,
            ready: ("True", "Running"),
            warnings: &["LoopFailed"],
            requeue: (Requeue::After(Duration::from_secs(15)), Recheck::Running),
        },
        Row {
            case: "draining: the due loop is left to the next instance",
            now: at(30),
            o: with(&waiting, std::slice::from_ref(&loop_1), &|o| o.draining = true),
            launch: None,
            obstacle: None,
            ready: ("True", "Waiting"),
            warnings: &[],
            requeue: (Requeue::After(Duration::from_secs(1)), Recheck::Draining),
        },
        Row {
            case: "suspended: nothing starts until the spec changes",
            now: t0(),
            o: observed(&suspended, &[]),
            launch: None,
            obstacle: None,
            ready: ("False", "Suspended"),
            warnings: &[],
            requeue: (Requeue::OnChange, Recheck::OnChange),
        },
        Row {
            case: "spec.loops ran: finished",
            now: at(30),
            o: observed(&one_loop, std::slice::from_ref(&loop_1)),
            launch: None,
            obstacle: None,
            ready: ("True", "Finished"),
            warnings: &[],
            requeue: (Requeue::OnChange, Recheck::OnChange),
        },
        Row {
            case: "the API server refuses the spec's Job: invalid, checked again in 30 s",
            now: t0(),
            o: with(&ls, &[], &|o| o.spec = super::observe::Checked::Refused("a quota says no".into())),
            launch: None,
            obstacle: None,
            ready: ("False", "InvalidSpec"),
            warnings: &["InvalidSpec"],
            requeue: (Requeue::After(Duration::from_secs(30)), Recheck::Refused),
        },
    ];
    for row in rows {
        let p = plan::plan(&row.o, row.now);
        assert_eq!(p.launch.as_ref().map(|l| l.loop_number), row.launch, "{}: the launch", row.case);
        assert_eq!(p.obstacle.as_ref().map(obstacle_kind), row.obstacle, "{}: the obstacle", row.case);
        // The launch answered as created, at the reconcile's instant.
        let answer = p.launch.as_ref().map(|l| {
            let seen = job::observe(&loop_job(&row.o.ls, l.loop_number, row.now)).expect("a loop's Job");
            Launched::Created(seen)
        });
        let out = plan::conclude(&row.o, p, answer, row.now);
        let (status, reason, _) = ready(&out.status);
        assert_eq!((status.as_str(), reason.as_str()), row.ready, "{}: Ready", row.case);
        let warnings: Vec<String> = out.notes.iter().filter(|n| n.warning).map(|n| n.reason.to_string()).collect();
        assert_eq!(warnings, row.warnings, "{}: the warnings", row.case);
        assert_eq!((out.requeue, out.recheck), row.requeue, "{}: the requeue", row.case);
    }
}

#[test]
fn a_stuck_loop_says_why_in_ready_and_its_warning_names_the_job() {
    let ls = loopservice(json!({}));
    let running = with_status(&ls, running_first_loop(&ls));
    let mut o = observed(&running, &[loop_job(&ls, 1, t0())]);
    let why = "its Pod cannot start its container: ErrImagePull: pull access denied for nope".to_string();
    o.stuck = Some(Obstacle::Stuck { job: job_name(1), reason: Reason::LoopStuck, why: why.clone() });
    let p = plan::plan(&o, at(20));
    let out = plan::conclude(&o, p, None, at(20));
    let (_, _, message) = ready(&out.status);
    assert_eq!(message, format!("loop 1 is running as Job {}, but {why}", job_name(1)));
    assert_eq!(out.status.phase, Some(Phase::Running));
    let note = out.notes.iter().find(|n| n.warning).expect("a warning");
    assert_eq!((note.reason, note.job.clone()), (Reason::LoopStuck, Some(job_name(1))));
    // Written once: a second reconcile with that status stored warns no more.
    let mut again = observed(&with_status(&ls, out.status.clone()), &[loop_job(&ls, 1, t0())]);
    again.stuck = o.stuck.clone();
    let out2 = plan::conclude(&again, plan::plan(&again, at(35)), None, at(35));
    assert_eq!(out2.status, out.status, "the same verdict, nothing new to write");
    assert!(out2.notes.iter().all(|n| !n.warning), "{:?}", out2.notes);
}

#[test]
fn a_cache_from_objects_finds_them_by_their_loopservice() {
    let ls = loopservice(json!({}));
    let cache = crate::cache::Cache::from_objects(vec![loop_job(&ls, 1, t0()), loop_job(&ls, 2, at(30))]);
    let mut found: Vec<String> = cache.of(NS, UID).iter().map(|j| j.name_any()).collect();
    found.sort();
    assert_eq!(found, [job_name(1), job_name(2)]);
    assert!(cache.of(NS, OTHER_UID).is_empty());
}

#[tokio::test]
async fn a_run_request_too_long_to_copy_is_refused_once_with_no_loop_and_no_copy() {
    let mut ls = with_status(&loopservice(json!({})), running_first_loop(&loopservice(json!({}))));
    let huge = "9".repeat(250_000);
    ls.metadata.annotations = Some([(crate::keys::ANN_RUN_REQUESTED_AT.to_string(), huge)].into());
    let (client, api) = api_server(vec![Expect::write_status(&ls), Expect::event()]);
    let ctx = context(client, clock_at(at(2)), vec![loop_job(&ls, 1, t0())], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let st = asked.status();
    let key = st.last_handled_run_request.clone().expect("the request is recorded as handled");
    assert!(key.starts_with("sha256:") && key.len() == 23, "a digest, not the value: {key}");
    assert_eq!((st.manual_loops, st.loops_started), (0, 1), "no loop for it");
    let events = asked.events();
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Warning", Reason::RunRequestRefused.as_str()));
    assert!(events[0].note.contains("a value of 250000 characters") && events[0].note.len() < 400, "{}", events[0].note);

    // Looked at again, as the cache keeps it (the value as its digest): handled already,
    // nothing said twice.
    let mut handled = LoopService { status: Some(st), ..ls };
    crate::runtime::trim_loopservice(&mut handled);
    let kept = handled.annotations()[crate::keys::ANN_RUN_REQUESTED_AT].clone();
    assert_eq!(kept, key, "the cache keeps the digest, not 250,000 characters");
    let (client, api) = api_server(vec![]);
    let ctx = context(client, clock_at(at(3)), vec![loop_job(&handled, 1, t0())], vec![]);
    reconcile(cached(&handled), ctx.clone()).await.expect("the reconcile succeeds");
    assert!(api.done(ctx).await.0.is_empty());
}

#[tokio::test]
async fn a_run_request_names_who_asked_and_why_on_the_job_in_the_history_and_in_an_event() {
    use crate::keys::{ANN_RUN_REASON, ANN_RUN_REQUESTED_AT, ANN_RUN_REQUESTED_BY};
    let ls = loopservice(json!({}));
    let (st, loop_1) = first_loop_succeeded(&ls);
    let mut ls = with_status(&ls, st);
    ls.metadata.annotations = Some(
        [(ANN_RUN_REQUESTED_AT, "2026-11-25T10:00:07Z"), (ANN_RUN_REQUESTED_BY, "alice"), (ANN_RUN_REASON, "the night's data\ncame late")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let (client, api) = api_server(vec![Expect::create_job(), Expect::write_status(&ls), Expect::event()]);
    // Loop 2 is due at 30 s; the request starts it at 8 s.
    let ctx = context(client, clock_at(at(8)), vec![loop_1], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;

    let job = &asked.created_jobs()[0];
    let said = |k: &str| job.annotations().get(k).cloned();
    assert_eq!(
        (said(ANN_RUN_REQUESTED_BY), said(ANN_RUN_REASON)),
        (Some("alice".into()), Some("the night's data came late".into())),
        "on one line"
    );
    let st = asked.status();
    let r = &st.history[0];
    assert_eq!((r.r#loop, r.requested_by.as_deref(), r.request_reason.as_deref()), (2, Some("alice"), Some("the night's data came late")));
    // An Event, though loops that merely start are none by default: a person asked for this one.
    let events = asked.events();
    assert_eq!((events[0].type_.as_str(), events[0].reason.as_str()), ("Normal", "LoopStarted"));
    assert_eq!(
        events[0].note,
        format!("started loop 2 as Job {} (run requested at 2026-11-25T10:00:07Z by alice: the night's data came late)", job_name(2))
    );
}

#[tokio::test]
async fn a_name_longer_than_63_characters_is_invalid_where_the_api_server_runs_no_cel() {
    let mut ls = loopservice(json!({}));
    ls.metadata.name = Some("n".repeat(64));
    let (client, api) = api_server(vec![Expect::write_status(&ls), Expect::event()]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let st = asked.status();
    assert_eq!(st.phase, Some(Phase::Invalid));
    assert_eq!(ready(&st).2, crate::rules::MSG_NAME_LENGTH);
    assert!(asked.created_jobs().is_empty());
}

// ---- Queues (Kueue) ----

fn queued_loopservice() -> LoopService {
    loopservice(json!({"jobMetadata": {"labels": {"kueue.x-k8s.io/queue-name": "loops"}}}))
}

/// Loop 1's Job as the operator's cache keeps it (trimmed) while it waits for its queue:
/// suspended, with the Job controller's Suspended condition and no startTime.
fn waiting_job(ls: &LoopService) -> Job {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KTime;
    let mut j = loop_job(ls, 1, t0());
    let suspended =
        JobCondition { type_: "Suspended".into(), status: "True".into(), last_transition_time: Some(KTime(t0())), ..Default::default() };
    j.status = Some(JobStatus { conditions: Some(vec![suspended]), ..JobStatus::default() });
    crate::cache::trim_job(&mut j);
    j
}

#[tokio::test]
async fn a_loop_for_a_queue_is_created_suspended_and_its_loopservice_is_queued() {
    let ls = queued_loopservice();
    let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let created = asked.created_jobs();
    assert_eq!(created[0].spec.as_ref().and_then(|s| s.suspend), Some(true), "Kueue resumes it once admitted");
    assert_eq!(created[0].labels()[crate::keys::LABEL_QUEUE_NAME], "loops");
    let st = asked.status();
    assert_eq!((st.phase, st.queued_since, st.active_job.clone()), (Some(Phase::Queued), Some(Time(t0())), Some(job_name(1))));
    assert_eq!(ready(&st).1, "Queued");
}

#[tokio::test]
async fn a_waiting_job_in_the_cache_keeps_it_queued_and_once_resumed_its_admission_is_recorded() {
    let ls = queued_loopservice();
    let queued = with_status(&ls, running_first_loop(&ls));
    assert_eq!(queued.status.as_ref().unwrap().phase, Some(Phase::Queued));

    // Still waiting, as the trimmed cache shows it: nothing to write.
    let (client, api) = api_server(vec![]);
    let ctx = context(client, clock_at(at(4)), vec![waiting_job(&ls)], vec![]);
    reconcile(cached(&queued), ctx.clone()).await.expect("the reconcile succeeds");
    assert!(api.done(ctx).await.statuses().is_empty(), "still Queued: no status write");

    // Resumed by Kueue at t0 + 3 s: Running, no longer queued, and the record says when.
    let mut admitted = waiting_job(&ls);
    admitted.spec.as_mut().unwrap().suspend = Some(false);
    admitted.status = Some(k8s_openapi::api::batch::v1::JobStatus {
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(3))),
        ..Default::default()
    });
    let (client, api) = api_server(vec![Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(at(4)), vec![admitted], vec![]);
    reconcile(cached(&queued), ctx.clone()).await.expect("the reconcile succeeds");
    let metrics = ctx.metrics.clone();
    let asked = api.done(ctx).await;
    let write = asked.0.iter().find(|s| s.path.ends_with("/status")).expect("a status write");
    assert_eq!(write.body["status"]["queuedSince"], serde_json::Value::Null, "written as null, so a merge patch clears it");
    assert!(write.body["status"].as_object().unwrap().contains_key("queuedSince"));
    let st = asked.status();
    assert_eq!((st.phase, st.queued_since), (Some(Phase::Running), None));
    assert_eq!(st.history[0].admitted_time, Some(Time(at(3))));
    let metrics = metrics.render();
    assert!(metrics.contains("loopservice_start_delay_seconds_count{stage=\"admitted\"} 1"), "{metrics}");
}
