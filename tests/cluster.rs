//! The local cluster itself: real Jobs run real busybox containers to completion or failure.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::json;
use support::*;

fn job(name: &str, script: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "busybox:1.36",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", script],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                }]
            }}
        }
    }))
    .unwrap()
}

async fn run_to_end(ns: &TestNs, name: &str, script: &str) -> (bool, Duration, Pod) {
    let start = Instant::now();
    ns.jobs().create(&PostParams::default(), &job(name, script)).await.unwrap();
    let ok = wait_for(&format!("job {name} to finish"), Duration::from_secs(60), || async {
        finished(&ns.jobs().get(name).await.ok()?).map(|(ok, _)| ok)
    })
    .await;
    let took = start.elapsed();
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod = pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await.unwrap().items.remove(0);
    (ok, took, pod)
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn the_node_is_ready() {
    let client = client().await;
    let nodes = Api::<Node>::all(client).list(&ListParams::default().labels("!loops.dev/fake-node")).await.unwrap().items;
    assert_eq!(nodes.len(), 1, "one real node");
    let ready = nodes[0].status.as_ref().unwrap().conditions.as_ref().unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "node not Ready");
}

fn is_ready(node: &Node) -> bool {
    node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
#[ignore = "needs the local cluster and its fake nodes: run `make test`"]
async fn a_job_for_the_fake_nodes_completes_there_without_a_container() {
    let ns = TestNs::new("fake").await;
    let nodes = Api::<Node>::all(ns.client.clone()).list(&ListParams::default().labels("loops.dev/fake-node=true")).await.unwrap().items;
    assert!(nodes.len() >= 5, "`hack/cluster.sh fake-nodes 5` makes 5 fake nodes (found {})", nodes.len());
    assert!(nodes.iter().all(is_ready), "fake nodes are Ready");
    let taint = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    assert!(
        nodes.iter().all(|n| taint(n).iter().any(|t| t.key == "loops.dev/fake-node" && t.effect == "NoSchedule")),
        "fake nodes are tainted"
    );

    let mut job = job("on-fake", "exit 7");
    let spec = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    spec.node_selector = Some([("loops.dev/fake-node".to_string(), "true".to_string())].into());
    spec.tolerations =
        Some(vec![serde_json::from_value(json!({"key": "loops.dev/fake-node", "operator": "Exists", "effect": "NoSchedule"})).unwrap()]);
    let start = Instant::now();
    ns.jobs().create(&PostParams::default(), &job).await.unwrap();
    let ok = wait_for("the fake-node Job to finish", Duration::from_secs(10), || async {
        finished(&ns.jobs().get("on-fake").await.ok()?).map(|(ok, _)| ok)
    })
    .await;
    println!("fake-node Job completed in {} ms", start.elapsed().as_millis());
    // `exit 7` never ran: there is no container on a fake node, and the Pod Succeeded.
    assert!(ok, "the Job Completed");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod = pods.list(&ListParams::default().labels("job-name=on-fake")).await.unwrap().items.remove(0);
    let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert!(node.starts_with("loops-fake-"), "placed on a fake node, not {node}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_busybox_job_completes() {
    let ns = TestNs::new("job-ok").await;
    let (ok, took, pod) = run_to_end(&ns, "echo-ok", "echo ok").await;
    println!("busybox Job completed in {} ms", took.as_millis());
    assert!(ok);
    assert_eq!(terminated(&pod).exit_code, 0);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_failing_job_shows_its_exit_code_and_termination_message() {
    let ns = TestNs::new("job-fail").await;
    let (ok, _, pod) = run_to_end(&ns, "exit-3", "echo something broke; exit 3").await;
    assert!(!ok, "the Job failed");
    let t = terminated(&pod);
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.message.as_deref().map(str::trim), Some("something broke"));
    let job = ns.jobs().get("exit-3").await.unwrap();
    let cond = job.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn pods_get_a_service_account_token() {
    let ns = TestNs::new("token").await;
    let (ok, _, _) = run_to_end(&ns, "token", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace").await;
    assert!(ok, "the token volume is mounted");
}
