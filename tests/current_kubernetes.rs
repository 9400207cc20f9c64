//! What only a current Kubernetes (1.31 and later) shows: a Job first gets `FailureTarget`
//! (or `SuccessCriteriaMet`) and only once its Pods have terminated `Failed` (or `Complete`).
//! A loop ends at the terminal condition, so the next loop never starts while the previous
//! loop's Pod is still shutting down.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::runtime::watcher;

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use serde_json::json;
use support::*;

fn condition_time(job: &k8s_openapi::api::batch::v1::Job, type_: &str) -> Option<jiff::Timestamp> {
    let c = job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")?;
    Some(c.last_transition_time.as_ref()?.0)
}

/// Kubernetes before 1.31 marks a Job Failed before its Pods terminate: `make test` leaves this
/// out on older clusters (nextest reports it as skipped), and it fails if run by hand there.
mod from_1_31 {
    use super::*;

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn the_next_loop_waits_for_the_previous_loops_pod_to_terminate() {
        let ns = TestNs::new("terminal").await;
        require_minor(&ns.client, 31).await;
        ensure_crd(&ns.client).await;
        // The Job controller deletes a failed Job's Pods: keep the last state of each seen.
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        let seen: Arc<Mutex<HashMap<String, Pod>>> = Arc::default();
        let watch = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut events = watcher(pods, watcher::Config::default()).boxed();
                while let Ok(Some(e)) = events.try_next().await {
                    if let watcher::Event::Apply(p) | watcher::Event::Delete(p) | watcher::Event::InitApply(p) = e {
                        seen.lock().unwrap().insert(p.labels().get("job-name").cloned().unwrap_or_default(), p);
                    }
                }
            }
        });
        let _op = Operator::start(&ns.name, &[]);
        // The loop runs past its 2 s timeout; its container takes 4 s to stop on SIGTERM.
        let script = "trap 'sleep 4; exit 1' TERM; sleep 60 & wait; sleep 4";
        let v = json!({
            "metadata": {"name": "slowstop"},
            "spec": {
                "interval": "1s", "timeout": "2s", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c"], "args": [script],
                "successfulJobsHistoryLimit": 10, "failedJobsHistoryLimit": 10,
            }
        });
        create_ls(&ns, v).await.unwrap();

        let jobs = wait_for("loop 2's Job", Duration::from_secs(90), || async {
            let jobs = loop_jobs(&ns, "slowstop").await;
            (jobs.len() >= 2).then_some(jobs)
        })
        .await;
        let first = &ns.jobs().get(&jobs[0].name_any()).await.unwrap();
        let target = condition_time(first, "FailureTarget").expect("loop 1's Job has FailureTarget");
        let failed = condition_time(first, "Failed").expect("loop 1's Job is Failed");
        let pod = seen.lock().unwrap().get(&first.name_any()).cloned().expect("loop 1's Pod");
        watch.abort();
        let finished_at = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs[0].state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0)
            .expect("loop 1's container terminated");
        let second_start = start_time(&jobs[1]);
        println!("loop 1: FailureTarget {target}, container stopped {finished_at}, Failed {failed}; loop 2 started {second_start}");
        assert!(finished_at.duration_since(target).as_secs_f64() >= 3.0, "the container took its 4 s to stop");
        // Kubernetes stamps conditions and container ends to the second.
        assert!(second_start >= finished_at, "loop 2 started before loop 1's Pod had stopped");
        assert!(second_start >= failed, "loop 2 started before loop 1's Job was Failed");

        let st = wait_status(&ns, "slowstop", "loop 1 recorded", |st| st.last_finished_loop >= 1).await;
        let err = st.last_error.expect("loop 1's error");
        assert_eq!(err.reason, "DeadlineExceeded", "{err:?}");
    }
}
