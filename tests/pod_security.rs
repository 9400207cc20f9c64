//! PodSecurity admission refuses only Pods: a Job whose Pod template breaks the level its
//! namespace enforces is created, and its loop never runs. The dry run of a new spec's Job
//! brings PodSecurity's warning, and the operator reports such a spec as InvalidSpec before any
//! loop; a level the namespace only warns of is a Warning Event, and the loops run.

mod support;

/// PodSecurity admission enforces namespace labels from 1.25: `make test` leaves these out on
/// older clusters (nextest reports them as skipped), and each fails if run by hand there.
mod from_1_25 {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Patch, PatchParams};
    use kube::Api;
    use loopservice_operator::crd::{LoopServiceStatus, Phase};
    use serde_json::json;

    use super::support::*;

    /// A LoopService whose loop is busybox `echo`, run by the Pod template `pod`.
    fn with_pod(name: &str, pod: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name}, "spec": {"interval": "5s", "template": {"spec": pod}}})
    }

    /// As root, with no securityContext: PodSecurity `restricted` refuses its Pods.
    fn as_root(name: &str) -> serde_json::Value {
        with_pod(
            name,
            json!({"containers": [{"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["echo", "hi"]}]}),
        )
    }

    /// What PodSecurity `restricted` asks of a Pod (as the examples do).
    fn restricted(name: &str) -> serde_json::Value {
        with_pod(
            name,
            json!({
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["echo", "hi"],
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            }),
        )
    }

    fn ready(st: &LoopServiceStatus) -> (String, String) {
        let c = st.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
        (c.reason.clone(), c.message.clone())
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_pod_template_that_breaks_the_enforced_level_is_invalid_spec_and_no_job_is_made() {
        let ns = setup("psa-enforce").await;
        require_minor(&ns.client, 25).await;
        ns.enforce_pod_security("restricted").await;
        let op = Operator::start(&ns.name, &[]);
        create_raw(&ns, as_root("root")).await.expect("the API server accepts the LoopService");
        create_raw(&ns, restricted("compliant")).await.unwrap();

        let st = wait_status(&ns, "root", "InvalidSpec", |st| st.phase == Some(Phase::Invalid)).await;
        let (reason, message) = ready(&st);
        println!("root: {reason}: {message}");
        assert_eq!(reason, "InvalidSpec");
        assert!(
            message.starts_with(&format!("its Pods would be refused: namespace {} enforces PodSecurity \"restricted\"", ns.name)),
            "{message}"
        );
        assert!(
            message.contains("would violate PodSecurity \"restricted:latest\"") && message.contains("runAsNonRoot != true"),
            "names what violates: {message}"
        );
        events_where(&ns, "root", "a Warning Event InvalidSpec naming PodSecurity", |evs| {
            evs.iter().any(|(t, r, note)| t == "Warning" && r == "InvalidSpec" && note.contains("would violate PodSecurity"))
        })
        .await;
        wait_status(&ns, "compliant", "two loops of the compliant LoopService beside it", |st| st.loops_succeeded >= 2).await;
        reconciled_since(&op, &ns, &["root"], jiff::Timestamp::now()).await;
        assert!(loop_jobs(&ns, "root").await.is_empty(), "no Job of a spec whose Pods would be refused");
        assert_eq!(status(&ns, "root").await.loops_started, 0);
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_level_only_warned_of_is_a_warning_event_and_the_loops_run() {
        let ns = setup("psa-warn").await;
        require_minor(&ns.client, 25).await;
        // The usual way to try a stricter level: enforce `baseline`, warn of `restricted`.
        let labels = json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
        }}});
        Api::<Namespace>::all(ns.client.clone()).patch(&ns.name, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
        let _op = Operator::start(&ns.name, &[]);
        create_raw(&ns, as_root("root")).await.unwrap();

        let st = wait_status(&ns, "root", "two loops", |st| st.loops_succeeded >= 2).await;
        assert_ne!(st.phase, Some(Phase::Invalid), "{st:?}");
        let evs = events_where(&ns, "root", "a Warning Event PodSecurityWarning", |evs| {
            evs.iter().any(|(t, r, _)| t == "Warning" && r == "PodSecurityWarning")
        })
        .await;
        let (_, _, note) = evs.iter().find(|(_, r, _)| r == "PodSecurityWarning").unwrap();
        println!("root: PodSecurityWarning: {note}");
        assert!(note.contains("would violate PodSecurity \"restricted:latest\"") && note.contains("does not enforce that level"), "{note}");
        assert_eq!(evs.iter().filter(|(_, r, _)| r == "PodSecurityWarning").count(), 1, "one warning per spec: {evs:?}");
    }
}
