//! The operator's own errors are visible in status, and are not loop failures: an operator
//! whose credentials may not create Jobs shows `Reconciled=False` with the API server's
//! answer, uses up no loop number, and goes on once it may.

mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use support::*;

fn rules(create_jobs: bool) -> Vec<PolicyRule> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    };
    let mut job_verbs = vec!["get", "list", "watch", "delete"];
    if create_jobs {
        job_verbs.push("create");
    }
    vec![
        rule(&["loops.dev"], &["loopservices"], &["get", "list", "watch"]),
        rule(&["loops.dev"], &["loopservices/status"], &["get", "patch", "update"]),
        rule(&["batch"], &["jobs"], &job_verbs),
        rule(&[""], &["pods"], &["get", "list", "watch"]),
        rule(&[""], &["events"], &["list"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
    ]
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn an_operator_forbidden_to_create_jobs_says_so_in_status_and_loses_no_loop() {
    let ns = setup("rbac").await;
    let client = ns.client.clone();
    let sa = "limited-operator";
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap())
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns.name);
    let role = |create| json!({"metadata": {"name": "operator"}, "rules": rules(create)});
    roles.create(&PostParams::default(), &serde_json::from_value(role(false)).unwrap()).await.unwrap();
    let binding = json!({
        "metadata": {"name": "operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns.name}],
    });
    Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &serde_json::from_value(binding).unwrap())
        .await
        .unwrap();
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..TokenRequestSpec::default() }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    // The test's kubeconfig, with the ServiceAccount's token in place of its user's credentials.
    let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").expect("KUBECONFIG")).unwrap();
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    kc["users"][0]["user"] = serde_yaml::to_value(json!({"token": token})).unwrap();
    let path = std::env::temp_dir().join(format!("{}-kubeconfig", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();

    let _op = Operator::start(&ns.name, &[("KUBECONFIG", path.to_str().unwrap())]);
    create_ls(&ns, ls("guarded", "5s", "echo hi")).await.unwrap();
    let st =
        wait_status(&ns, "guarded", "Reconciled=False", |st| st.conditions.iter().any(|c| c.type_ == "Reconciled" && c.status == "False"))
            .await;
    let c = st.conditions.iter().find(|c| c.type_ == "Reconciled").unwrap();
    println!("{}: {}", c.reason, c.message);
    assert_eq!(c.reason, "ReconcileError");
    assert!(c.message.contains("forbidden") && c.message.contains("cannot create resource \"jobs\""), "{}", c.message);
    assert!(c.message.ends_with("(403 Forbidden)") && !c.message.contains("Status {"), "reads plainly: {}", c.message);
    // Not a loop, and not an invalid spec.
    assert_eq!((st.loops_started, st.loops_failed), (0, 0));
    assert!(!st.conditions.iter().any(|c| c.reason == "InvalidSpec"), "{:?}", st.conditions);
    assert!(loop_jobs(&ns, "guarded").await.is_empty());

    // Allowed now: loop 1 runs and the condition clears.
    roles.patch("operator", &PatchParams::default(), &Patch::Merge(role(true))).await.unwrap();
    let st = wait_status(&ns, "guarded", "loop 1 and Reconciled=True", |st| {
        st.loops_started >= 1 && st.conditions.iter().any(|c| c.type_ == "Reconciled" && c.status == "True")
    })
    .await;
    assert_eq!(loop_jobs(&ns, "guarded").await.iter().map(loop_number).min(), Some(1), "{st:?}");
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loopservice_the_operator_cannot_decode_is_invalid_spec_and_blocks_no_other() {
    let ns = setup("undecodable").await;
    // The template's Pod fields beyond what the schema declares are preserved as they are, so
    // the API server takes a port that is not a number; the operator cannot read it.
    let mut bad = ls("garbled", "5s", "echo hi");
    let spec = bad["spec"].as_object_mut().unwrap();
    let mut container = json!({"name": "loop", "ports": [{"containerPort": "eighty"}]});
    for key in ["image", "imagePullPolicy", "command", "args"] {
        container[key] = spec.remove(key).unwrap();
    }
    bad["spec"]["template"] = json!({"spec": {"containers": [container]}});
    create_raw(&ns, bad).await.expect("the API server takes it");
    create_ls(&ns, ls("fine", "5s", "echo fine")).await.unwrap();
    // Both exist before the operator's first list.
    let _op = Operator::start(&ns.name, &[]);
    let st = wait_status(&ns, "garbled", "Ready=False InvalidSpec", |st| {
        st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
    })
    .await;
    let c = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    println!("{}", c.message);
    assert!(c.message.contains("spec.template.spec.containers[0].ports[0].containerPort"), "names the field: {}", c.message);
    assert!(loop_jobs(&ns, "garbled").await.is_empty());
    wait_status(&ns, "fine", "the other LoopService's first loop", |st| st.loops_started >= 1).await;
}
