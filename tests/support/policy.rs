//! The chart's admission policies in a test's namespace, and users to try them as: clients
//! that act as a user through the API server's impersonation, and Roles that grant them rights.

use std::process::Command;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kube::{Api, Client};
use serde_json::json;

use super::TestNs;

/// The chart's template of the Job-rights policy.
pub const JOB_RIGHTS: &str = "templates/admission-policy.yaml";
/// The chart's template of the run-requester policy.
pub const RUN_REQUESTER: &str = "templates/run-requester-policy.yaml";

/// A client acting as `user`, through the API server's impersonation.
pub async fn as_user(user: &str) -> Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).unwrap()
}

/// One of the chart's policies and its binding (rendered with the helm arguments `values`),
/// renamed for this test and bound to its namespace only (other tests run beside it); deleted
/// when dropped.
pub struct Policy(Vec<(ApiResource, String)>);

impl Policy {
    /// The Job-rights policy.
    pub async fn install(ns: &TestNs, values: &[&str]) -> Policy {
        Policy::install_from(ns, JOB_RIGHTS, values).await
    }

    /// The policy of the chart's `template`.
    pub async fn install_from(ns: &TestNs, template: &str, values: &[&str]) -> Policy {
        let out = Command::new("helm")
            .args(["template", "t", "charts/loopservice-operator", "--show-only", template])
            .args(values)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("helm, from the local cluster's tools (eval \"$(hack/cluster.sh env)\")");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut made = vec![];
        for doc in text.split("\n---").filter(|d| d.contains("kind:")) {
            let mut v: serde_json::Value = serde_yaml::from_str(doc).unwrap();
            // `t-loopservice-operator-job-rights` becomes `job-rights-<namespace>`.
            let rendered = v["metadata"]["name"].as_str().unwrap().trim_start_matches("t-loopservice-operator-").to_string();
            let name = format!("{rendered}-{}", ns.name);
            v["metadata"]["name"] = json!(name);
            if v["kind"] == "ValidatingAdmissionPolicyBinding" {
                v["spec"]["policyName"] = json!(name);
                v["spec"]["matchResources"] = json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}});
            }
            let kind = v["kind"].as_str().unwrap().to_string();
            let ar = ApiResource {
                group: "admissionregistration.k8s.io".into(),
                version: "v1".into(),
                api_version: "admissionregistration.k8s.io/v1".into(),
                plural: match kind.as_str() {
                    "ValidatingAdmissionPolicy" => "validatingadmissionpolicies".into(),
                    _ => format!("{}s", kind.to_lowercase()),
                },
                kind,
            };
            let obj: DynamicObject = serde_json::from_value(v).unwrap();
            Api::<DynamicObject>::all_with(ns.client.clone(), &ar).create(&PostParams::default(), &obj).await.unwrap();
            made.push((ar, name.clone()));
        }
        assert_eq!(made.len(), 2, "a policy and its binding:\n{text}");
        Policy(made)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let made = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let client = Client::try_default().await.ok()?;
                for (ar, name) in made {
                    let _ = Api::<DynamicObject>::all_with(client.clone(), &ar).delete(&name, &DeleteParams::default()).await;
                }
                Some(())
            })
        })
        .join();
    }
}

/// A Role in `ns` with `rules`, bound to `user`.
pub async fn grant(ns: &TestNs, user: &str, rules: serde_json::Value) {
    let role: Role = serde_json::from_value(json!({"metadata": {"name": user}, "rules": rules})).unwrap();
    Api::<Role>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &binding).await.unwrap();
}
