//! What a user can change without meaning to must not wedge a loop: a LoopService deleted and
//! created again under the same name starts afresh at loop 1, beside the old one's Jobs.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};
use kube::ResourceExt;
use support::*;

async fn jobs_of_uid(ns: &TestNs, uid: &str) -> Vec<Job> {
    let mut jobs = ns.jobs().list(&ListParams::default().labels(&format!("loops.dev/loopservice-uid={uid}"))).await.unwrap().items;
    jobs.sort_by_key(loop_number);
    jobs
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loopservice_made_again_under_its_name_starts_at_loop_1_beside_the_old_jobs() {
    let ns = setup("trust").await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("again", "4s", "echo hi")).await.unwrap();
    let old = ns.loopservices().get("again").await.unwrap();
    let old_uid = old.uid().unwrap();
    wait_status(&ns, "again", "two loops of the first LoopService", |st| st.last_finished_loop >= 2).await;

    // Deleted with its Jobs left behind (as `kubectl delete --cascade=orphan` does; the
    // garbage collector may also simply not have got to them yet), then made again at once.
    let orphan = DeleteParams { propagation_policy: Some(PropagationPolicy::Orphan), ..DeleteParams::default() };
    ns.loopservices().delete("again", &orphan).await.unwrap();
    wait_for("the first LoopService to be gone", Duration::from_secs(30), || async {
        ns.loopservices().get_opt("again").await.unwrap().is_none().then_some(())
    })
    .await;
    let left: Vec<String> = jobs_of_uid(&ns, &old_uid).await.iter().map(|j| j.name_any()).collect();
    assert!(left.len() >= 2, "the old Jobs are still there: {left:?}");
    let made_again = jiff::Timestamp::now();
    create_ls(&ns, ls("again", "4s", "echo hi")).await.unwrap();
    let new_uid = ns.loopservices().get("again").await.unwrap().uid().unwrap();
    assert_ne!(new_uid, old_uid);

    // The new one starts at loop 1 at once and goes on, never held by the old Jobs' names.
    let st = wait_status(&ns, "again", "two loops of the new LoopService", |st| st.last_finished_loop >= 2).await;
    let first_start = st.history.iter().find(|r| r.r#loop == 1).expect("loop 1 in the history").start_time.0;
    let waited = secs(made_again, first_start);
    println!("loop 1 of the new LoopService started {waited:.2} s after it was made; old Jobs {left:?}");
    assert!(waited < 3.0, "loop 1 started {waited:.2} s after the LoopService was made");
    assert_eq!(st.loops_failed, 0, "{st:?}");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_ne!(ready.reason, "JobNameTaken", "{ready:?}");
    assert!(!events(&ns, "again").await.iter().any(|(_, r, _)| r == "JobNameTaken"));
    let new_jobs = jobs_of_uid(&ns, &new_uid).await;
    assert_eq!(new_jobs.iter().take(2).map(loop_number).collect::<Vec<_>>(), [1, 2]);
    for j in &new_jobs {
        assert!(!left.contains(&j.name_any()), "{} is an old Job's name", j.name_any());
        assert_eq!(j.owner_references()[0].uid, new_uid);
    }
    // The old Jobs are left as they were: not adopted, not deleted.
    let still: Vec<String> = jobs_of_uid(&ns, &old_uid).await.iter().map(|j| j.name_any()).collect();
    assert_eq!(still, left);
}
