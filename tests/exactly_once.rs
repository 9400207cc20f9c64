//! No loop runs twice, whatever dies when, however its Job goes: the crash-at-every-step
//! matrix on the local cluster. An operator built with `fault-injection` dies at one write of
//! a reconcile (`LOOPSERVICE_FAULT`), again and again, while the loops' Jobs vanish the ways
//! Jobs go; then a healthy operator carries on. A Job watch of the test's own counts each
//! Job created, by uid: every loop number is created once, loops never overlap, and every
//! loop created is counted in status.

mod support;

use k8s_openapi::api::batch::v1::Job;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use loopservice_operator::crd::LoopResult;
use loopservice_operator::fault::Fault;
use loopservice_operator::keys::FINALIZER_RECORD;

use serde_json::json;
use support::once::{assert_once, watch_jobs};
use support::*;

/// How a loop's Job goes once it has finished.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Vanish {
    /// `ttlSecondsAfterFinished: 0` (the TTL controller; Kubernetes 1.21 or later).
    Ttl,
    /// History limits of 0: the operator deletes it once its end is recorded.
    HistoryZero,
    /// A user deletes it as soon as it has finished.
    UserDelete,
}

impl Vanish {
    fn name(self) -> &'static str {
        match self {
            Vanish::Ttl => "ttl",
            Vanish::HistoryZero => "history-0",
            Vanish::UserDelete => "user-delete",
        }
    }

    fn spec(self) -> serde_json::Value {
        match self {
            Vanish::Ttl => json!({"ttlSecondsAfterFinished": 0}),
            Vanish::HistoryZero => json!({"successfulJobsHistoryLimit": 0, "failedJobsHistoryLimit": 0}),
            Vanish::UserDelete => json!({}),
        }
    }

    /// The modes this cluster has: the TTL controller is alpha before 1.21.
    async fn all(ns: &TestNs) -> Vec<Vanish> {
        let minor = server_minor(&ns.client).await;
        let mut all = vec![Vanish::HistoryZero, Vanish::UserDelete];
        if minor >= 21 {
            all.insert(0, Vanish::Ttl);
        } else {
            println!("Kubernetes 1.{minor}: the TTL mode is left out (ttlSecondsAfterFinished needs 1.21)");
        }
        all
    }
}

/// Runs the operator with `fault` armed until it has died `crashes` times (it comes back at
/// once each time), then a healthy one until every LoopService has `more` loops recorded past
/// what it had; then checks each loop ran once.
async fn crash_matrix(fault: Fault, crashes: usize, more: i64) {
    let ns = setup(&format!("once-{}", &fault.name()[5..].replace('-', ""))).await;
    let modes = Vanish::all(&ns).await;
    let names: Vec<String> = modes.iter().map(|m| m.name().to_string()).collect();
    let user: Vec<String> = modes.iter().filter(|m| **m == Vanish::UserDelete).map(|m| m.name().to_string()).collect();
    let seen = watch_jobs(&ns, user);
    for m in &modes {
        let mut v = ls(m.name(), "2s", "echo loop $LOOP_NUMBER");
        merge(&mut v["spec"], m.spec());
        create_ls(&ns, v).await.unwrap();
    }
    // Events for every loop, so that the faults at an Event fire as often as the others.
    let env = [("LOOPSERVICE_FAULT", fault.name()), ("LOOP_EVENTS", "all")];
    for i in 0..crashes {
        let mut op = Operator::start(&ns.name, &env);
        let (code, _) = op.wait_exit(LONG).await;
        assert_eq!(code, Some(137), "{}: crash {} of {crashes}: the fault fired; log:\n{}", fault.name(), i + 1, op.log_text());
    }
    let before: Vec<i64> = futures::future::join_all(names.iter().map(|n| status(&ns, n))).await.iter().map(|s| s.loops_started).collect();
    let op = Operator::start(&ns.name, &[("LOOP_EVENTS", "all")]);
    for (n, b) in names.iter().zip(&before) {
        wait_status(&ns, n, "loops recorded after the crashes", |st| st.last_finished_loop >= b + more).await;
    }
    // Stop it between loops: suspend all, then wait for each running loop to be recorded.
    for n in &names {
        ns.loopservices().patch(n, &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
    }
    for n in &names {
        wait_status(&ns, n, "suspended with every loop recorded", |st| {
            st.active_job.is_none() && st.last_finished_loop == st.loops_started
        })
        .await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    reconciled_since(&op, &ns, &refs, jiff::Timestamp::now()).await;
    let mut total = 0;
    for n in &names {
        total += assert_once(&ns, n, &seen).await;
    }
    // No Job is left held once its loop is recorded.
    let held: Vec<String> = ns
        .jobs()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|j| j.finalizers().iter().any(|f| f == FINALIZER_RECORD))
        .map(|j| j.name_any())
        .collect();
    assert!(held.is_empty(), "{}: Jobs still held after their loops were recorded: {held:?}", fault.name());
    println!(
        "{}: {crashes} crashes x {} ways a Job goes ({}): {total} loops created, each once, none lost",
        fault.name(),
        modes.len(),
        names.join(", ")
    );
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
}

macro_rules! matrix {
    ($($name:ident: $fault:expr;)*) => {$(
        #[tokio::test]
        #[ignore = "needs the local cluster: run `make test`"]
        async fn $name() {
            crash_matrix($fault, 3, 3).await;
        }
    )*};
}

matrix! {
    killed_after_each_job_create_no_loop_runs_twice: Fault::AfterJobCreate;
    killed_after_each_status_write_no_loop_runs_twice: Fault::AfterStatusWrite;
    killed_before_each_event_no_loop_runs_twice: Fault::BeforeEvent;
    killed_after_each_event_no_loop_runs_twice: Fault::AfterEvent;
    killed_after_each_release_no_loop_runs_twice: Fault::AfterRelease;
    killed_after_each_delete_no_loop_runs_twice: Fault::AfterDelete;
}

/// The case as a user met it: loop 1 (interval 1h) created by an operator that died before
/// recording it, its finished Job then deleted (by its TTL, or by a user); a healthy operator
/// records loop 1 from the Job the finalizer kept, and never creates it again.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loop_whose_finished_job_goes_after_a_crash_is_recorded_and_never_created_again() {
    let ns = setup("vanish").await;
    let modes: Vec<Vanish> = Vanish::all(&ns).await.into_iter().filter(|m| *m != Vanish::HistoryZero).collect();
    let seen = watch_jobs(&ns, vec![]);
    for m in &modes {
        let mut v = ls(m.name(), "1h", "echo once");
        merge(&mut v["spec"], m.spec());
        create_ls(&ns, v).await.unwrap();
    }
    // A crashed instance creates one loop-1 Job or more (reconciles run at once) before it
    // dies; the next adopts those there and creates the rest.
    loop {
        let have = futures::future::join_all(modes.iter().map(|m| loop_jobs(&ns, m.name()))).await;
        if have.iter().all(|jobs| !jobs.is_empty()) {
            break;
        }
        let mut op = Operator::start(&ns.name, &[("LOOPSERVICE_FAULT", "exit-after-job-create")]);
        let (code, _) = op.wait_exit(LONG).await;
        assert_eq!(code, Some(137), "the fault fired; log:\n{}", op.log_text());
    }
    let jobs: Api<Job> = ns.jobs();
    for m in &modes {
        let j = wait_for(&format!("{}'s loop 1 to finish", m.name()), LONG, || async {
            loop_jobs(&ns, m.name()).await.into_iter().find(|j| finished(j).is_some())
        })
        .await;
        if *m == Vanish::UserDelete {
            jobs.delete(&j.name_any(), &DeleteParams::background()).await.unwrap();
        }
        // Deleted (by the TTL controller, or the user), yet kept: its loop's end is not recorded.
        let kept = wait_for(&format!("{}'s Job to be deleted and kept by the finalizer", m.name()), LONG, || async {
            jobs.get_opt(&j.name_any()).await.ok().flatten().filter(|j| j.metadata.deletion_timestamp.is_some())
        })
        .await;
        assert!(kept.finalizers().iter().any(|f| f == FINALIZER_RECORD), "{:?}", kept.finalizers());
        // Its start may be recorded (a crashed instance that came back found the Job of
        // another's loop and recorded it before it died itself); its end is not.
        assert_eq!(status(&ns, m.name()).await.last_finished_loop, 0, "no status recorded loop 1's end");
    }
    let op = Operator::start(&ns.name, &[]);
    for m in &modes {
        let st = wait_status(&ns, m.name(), "loop 1 recorded", |st| st.last_finished_loop >= 1).await;
        assert_eq!((st.loops_started, st.loops_succeeded), (1, 1), "{}", m.name());
        assert_eq!(st.history[0].result, LoopResult::Succeeded, "{}: its end was read from the Job kept", m.name());
        wait_for(&format!("{}'s Job to be let go and gone", m.name()), LONG, || async {
            loop_jobs(&ns, m.name()).await.is_empty().then_some(())
        })
        .await;
    }
    let refs: Vec<&str> = modes.iter().map(|m| m.name()).collect();
    reconciled_since(&op, &ns, &refs, jiff::Timestamp::now()).await;
    for m in &modes {
        assert_eq!(assert_once(&ns, m.name(), &seen).await, 1, "{}: loop 1 once, and no loop 2 within the hour", m.name());
    }
}

/// A LoopService deleted while no operator runs leaves its running loop's Job held; the next
/// operator lets it go, and the garbage collector removes it.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn the_job_of_a_loopservice_deleted_while_no_operator_ran_is_let_go_by_the_next() {
    let ns = setup("orphan").await;
    let op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("gone", "1h", "sleep 600")).await.unwrap();
    let job = wait_jobs(&ns, "gone", 1).await.remove(0);
    wait_status(&ns, "gone", "loop 1 running", |st| st.active_job.is_some()).await;
    drop(op);
    ns.loopservices().delete("gone", &DeleteParams::background()).await.unwrap();
    let jobs = ns.jobs();
    wait_for("the garbage collector to delete the Job (kept by the finalizer)", LONG, || async {
        jobs.get_opt(&job.name_any()).await.ok().flatten().filter(|j| j.metadata.deletion_timestamp.is_some())
    })
    .await;
    let _op = Operator::start(&ns.name, &[]);
    wait_for("the next operator to let the Job go", LONG, || async {
        jobs.get_opt(&job.name_any()).await.ok().flatten().is_none().then_some(())
    })
    .await;
}

/// A LoopService deleted and created again under the same name while no operator ran: the old
/// one's running loop's Job (held) is let go and removed by the garbage collector, and the new
/// LoopService starts its own loop 1, once; the old loop is never taken for the new one's.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loopservice_created_again_under_its_name_runs_its_own_loops_once_and_the_old_job_goes() {
    let ns = setup("recreated").await;
    let seen = watch_jobs(&ns, vec![]);
    let op = Operator::start(&ns.name, &[]);
    let first = create_ls(&ns, ls("again", "1h", "sleep 600")).await.unwrap();
    let old = wait_jobs(&ns, "again", 1).await.remove(0);
    wait_status(&ns, "again", "loop 1 running", |st| st.active_job.is_some()).await;
    drop(op);
    ns.loopservices().delete("again", &DeleteParams::background()).await.unwrap();
    wait_for("the old LoopService to be gone", LONG, || async {
        ns.loopservices().get_opt("again").await.ok().flatten().is_none().then_some(())
    })
    .await;
    let second = create_ls(&ns, ls("again", "1h", "echo new")).await.unwrap();
    assert_ne!(first.uid(), second.uid());
    let op = Operator::start(&ns.name, &[]);
    let jobs = ns.jobs();
    wait_for("the old Job to be let go and removed by the garbage collector", LONG, || async {
        jobs.get_opt(&old.name_any()).await.ok().flatten().is_none().then_some(())
    })
    .await;
    let st = wait_status(&ns, "again", "the new LoopService's loop 1 recorded", |st| st.last_finished_loop >= 1).await;
    assert_eq!((st.loops_started, st.loops_succeeded), (1, 1), "the new LoopService ran its own loop 1: {st:?}");
    reconciled_since(&op, &ns, &["again"], jiff::Timestamp::now()).await;
    let created: Vec<(String, i64)> =
        seen.lock().unwrap().get("again").map(|m| m.values().map(|c| (c.name.clone(), c.r#loop)).collect()).unwrap_or_default();
    assert_eq!(created.len(), 2, "one loop 1 of each LoopService: {created:?}");
    assert!(created.iter().all(|(_, n)| *n == 1) && created[0].0 != created[1].0, "{created:?}");
}
