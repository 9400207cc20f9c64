//! No loop runs twice, whatever dies when: the operator's finalizer keeps each loop's Job until
//! its end is stored, and an instance killed at any write (an injected [`Fault`]) leaves a
//! state the next instance finishes without creating the loop's Job again. Each scenario runs
//! the real reconcile against the mocked API server: first the instance that dies, then a new
//! one on what it left, with the Job gone the ways a Job goes (its TTL, a history limit of 0,
//! a user's delete).

use serde_json::json;

use super::fixtures::*;
use super::reconcile;
use crate::crd::{LoopResult, Phase};
use crate::fault::Fault;
use crate::keys::FINALIZER_RECORD;
use crate::reasons::Reason;
use crate::Error;

#[tokio::test]
async fn a_loops_job_is_created_held_and_let_go_once_its_end_is_stored() {
    let ls = loopservice(json!({}));
    let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job(), Expect::write_status(&ls)]);
    let ctx = context(client, clock_at(t0()), vec![], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let created = asked.created_jobs();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].metadata.finalizers, Some(vec![FINALIZER_RECORD.to_string()]), "the Job is held from its creation");

    // Loop 1 ends: its end is stored first, and only then is its Job let go.
    let running = with_status(&ls, asked.status());
    let job = ended(loop_job(&ls, 1, t0()), at(5), true);
    let (client, api) = api_server(vec![Expect::write_status(&running), Expect::release_job(&job_name(1))]);
    let ctx = context(client, clock_at(at(5)), vec![job], vec![]);
    reconcile(cached(&running), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let st = asked.status();
    assert_eq!((st.last_finished_loop, st.loops_succeeded, st.active_job.clone()), (1, 1, None));
    assert_eq!(asked.released_jobs(), [job_name(1)]);
}

/// How a finished Job goes before a new instance looks, in these scenarios.
#[derive(Clone, Copy, Debug)]
enum Vanish {
    /// `ttlSecondsAfterFinished: 0`: the TTL controller deletes it as it ends.
    Ttl,
    /// A user deletes the finished Job.
    UserDelete,
}

#[tokio::test]
async fn killed_after_the_create_with_the_finished_job_then_deleted_the_loop_is_recorded_and_never_created_again() {
    for vanish in [Vanish::Ttl, Vanish::UserDelete] {
        let spec = match vanish {
            Vanish::Ttl => json!({"ttlSecondsAfterFinished": 0}),
            Vanish::UserDelete => json!({}),
        };
        let ls = loopservice(spec);
        // The instance that dies right after its create.
        let (client, api) = api_server(vec![Expect::dry_run_job(), Expect::create_job()]);
        let ctx = context_with_fault(client, clock_at(t0()), vec![], Fault::AfterJobCreate);
        let res = reconcile(cached(&ls), ctx.clone()).await;
        assert!(matches!(res, Err(Error::Fault(_))), "{vanish:?}: {res:?}");
        let created = api.done(ctx).await.created_jobs();
        assert_eq!(created.len(), 1);

        // Its Job runs, succeeds at t0 + 5 s and is being deleted; a new instance looks at 10 s
        // and finds no status: the finalizer kept the Job, and so the loop's end, in place.
        let job = deleting(ended(loop_job(&ls, 1, t0()), at(5), true), at(6));
        let exists = format!("jobs.batch \"{}\" already exists", job_name(1));
        let (client, api) = api_server(vec![
            Expect::dry_run_job().refused(409, "AlreadyExists", &exists),
            Expect::write_status(&ls),
            Expect::event(),
            Expect::release_job(&job_name(1)),
        ]);
        let ctx = context(client, clock_at(at(10)), vec![job], vec![]);
        let res = reconcile(cached(&ls), ctx.clone()).await;
        let asked = api.done(ctx).await;

        assert_eq!(res.expect("the reconcile succeeds"), secs(20), "{vanish:?}: loop 2 is due one interval after loop 1's start");
        assert_eq!(asked.created_jobs().len(), 0, "{vanish:?}: loop 1 is never created again");
        let st = asked.status();
        assert_eq!((st.loops_started, st.last_finished_loop, st.loops_succeeded, st.loops_failed), (1, 1, 1, 0), "{vanish:?}");
        assert_eq!(st.history[0].result, LoopResult::Succeeded, "{vanish:?}: its end is known");
        assert_eq!(st.phase, Some(Phase::Waiting));
        assert_eq!(asked.events()[0].reason, Reason::LoopAdopted.as_str(), "{vanish:?}");
        assert_eq!(asked.released_jobs(), [job_name(1)], "{vanish:?}: let go once its end is stored");
    }
}

#[tokio::test]
async fn killed_after_the_status_write_with_history_limit_0_the_next_instance_lets_go_and_deletes_the_job_only() {
    let ls = loopservice(json!({"successfulJobsHistoryLimit": 0}));
    let (job, written) = end_stored_then_killed(&ls).await;
    assert_eq!(written.last_finished_loop, 1);

    // A new instance: the end is stored, the Job still held.
    let recorded = with_status(&ls, written);
    let (client, api) = api_server(vec![Expect::release_job(&job_name(1)), Expect::delete_job(&job_name(1))]);
    let ctx = context(client, clock_at(at(6)), vec![job], vec![]);
    let res = reconcile(cached(&recorded), ctx.clone()).await;
    let asked = api.done(ctx).await;
    assert_eq!(res.expect("the reconcile succeeds"), secs(24), "loop 2 is due at t0 + 30 s");
    assert_eq!((asked.created_jobs().len(), asked.statuses().len()), (0, 0), "nothing created, nothing to write");
    assert_eq!((asked.released_jobs(), asked.deleted_jobs()), (vec![job_name(1)], vec![job_name(1)]));
}

#[tokio::test]
async fn a_running_job_a_user_deletes_is_a_failed_loop_and_is_let_go_after_that_is_stored() {
    let ls = loopservice(json!({}));
    let running = with_status(&ls, running_first_loop(&ls));
    let job = deleting(loop_job(&ls, 1, t0()), at(3));
    let (client, api) = api_server(vec![Expect::write_status(&running), Expect::event(), Expect::release_job(&job_name(1))]);
    let ctx = context(client, clock_at(at(3)), vec![job], vec![]);
    reconcile(cached(&running), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    let st = asked.status();
    assert_eq!((st.last_finished_loop, st.loops_failed, st.active_job.clone()), (1, 1, None));
    assert_eq!(st.last_error.map(|e| e.reason), Some(Reason::JobDeleted.to_string()));
    assert_eq!(asked.released_jobs(), [job_name(1)]);
    assert_eq!(asked.lines().last().map(|l| l.starts_with("PATCH /apis/batch")), Some(true), "let go last");
}

#[tokio::test]
async fn a_loopservice_being_deleted_lets_go_of_its_held_jobs() {
    let mut ls = with_status(&loopservice(json!({})), running_first_loop(&loopservice(json!({}))));
    ls.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(2)));
    let job = loop_job(&ls, 1, t0());
    let (client, api) = api_server(vec![Expect::release_job(&job_name(1))]);
    let ctx = context(client, clock_at(at(3)), vec![job], vec![]);
    reconcile(cached(&ls), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    assert_eq!(asked.released_jobs(), [job_name(1)]);
    assert_eq!(asked.statuses().len(), 0);
}

#[tokio::test]
async fn a_loopservice_whose_spec_went_bad_still_lets_go_of_jobs_whose_ends_are_stored() {
    // Loop 1's end is stored, and the instance dies before letting its Job go.
    let ls = loopservice(json!({}));
    let (job, written) = end_stored_then_killed(&ls).await;

    // Then the spec is edited into one the operator refuses: no loop runs, the Job is let go.
    let bad = with_status(&loopservice(json!({"env": [{"name": "LOOP_NUMBER", "value": "7"}]})), written);
    let (client, api) = api_server(vec![Expect::write_status(&bad), Expect::event(), Expect::release_job(&job_name(1))]);
    let ctx = context(client, clock_at(at(6)), vec![job], vec![]);
    reconcile(cached(&bad), ctx.clone()).await.expect("the reconcile succeeds");
    let asked = api.done(ctx).await;
    assert_eq!(asked.status().phase, Some(Phase::Invalid));
    assert_eq!(asked.events()[0].reason, Reason::InvalidSpec.as_str());
    assert_eq!(asked.released_jobs(), [job_name(1)]);
}

/// Loop 1 of `ls` ends at t0 + 5 s; an instance stores its end and is killed right after, before
/// letting the Job go. Returns the Job (still held) and the status it stored.
async fn end_stored_then_killed(ls: &crate::crd::LoopService) -> (k8s_openapi::api::batch::v1::Job, crate::crd::LoopServiceStatus) {
    let running = with_status(ls, running_first_loop(ls));
    let job = ended(loop_job(ls, 1, t0()), at(5), true);
    let (client, api) = api_server(vec![Expect::write_status(&running)]);
    let ctx = context_with_fault(client, clock_at(at(5)), vec![job.clone()], Fault::AfterStatusWrite);
    let res = reconcile(cached(&running), ctx.clone()).await;
    assert!(matches!(res, Err(Error::Fault(_))), "{res:?}");
    let written = api.done(ctx).await.status();
    (job, written)
}

fn secs(n: u64) -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(n))
}

#[test]
fn a_reconcile_that_records_an_end_and_starts_the_next_loop_lets_go_of_the_ended_loops_job() {
    use super::plan::{self, Launched};
    // Back-to-back loops (each ends after the next is due) record an end and start a loop in
    // every reconcile: the ended loop's Job is let go (and, with history limit 0, deleted) in
    // that same reconcile, or it never would be.
    let ls = loopservice(json!({"successfulJobsHistoryLimit": 0}));
    let running = with_status(&ls, running_first_loop(&ls));
    let loop_1 = ended(loop_job(&ls, 1, t0()), at(31), true);
    let o = observed(&running, std::slice::from_ref(&loop_1));
    let p = plan::plan(&o, at(31));
    assert_eq!(p.launch.as_ref().map(|l| l.loop_number), Some(2), "loop 1 overran: loop 2 starts at once");
    let loop_2 = crate::job::observe(&loop_job(&ls, 2, at(31))).expect("a loop's Job");
    let out = plan::conclude(&o, p, Some(Launched::Created(loop_2)), at(31));
    assert_eq!(out.status.last_finished_loop, 1, "loop 1's end is recorded");
    let released: Vec<String> = out.releases.iter().map(|h| h.name.clone()).collect();
    assert_eq!((released, out.deletes), (vec![job_name(1)], vec![job_name(1)]));
}
