//! A tenant gets no more through a LoopService than a Job would give it: the chart's admission
//! policy admits a LoopService, or a change of its spec, only from a user who may create Jobs
//! in its namespace. An operator told to watch a list of namespaces works in those only, with
//! the chart's Roles there, and never touches a LoopService elsewhere.

mod support;

/// ValidatingAdmissionPolicy is served from Kubernetes 1.30.
mod from_1_30 {
    use std::process::Command;
    use std::time::Duration;

    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
    use kube::discovery::ApiResource;
    use kube::{Api, Client};
    use loopservice_operator::crd::LoopService;
    use serde_json::json;

    use super::support::*;

    /// A client acting as `user`, through the API server's impersonation.
    async fn as_user(user: &str) -> Client {
        let mut config = kube::Config::infer().await.unwrap();
        config.auth_info.impersonate = Some(user.to_string());
        Client::try_from(config).unwrap()
    }

    /// The chart's policy and binding, renamed for this test and bound to its namespace only
    /// (other tests run beside it); deleted when dropped.
    struct Policy(Vec<(ApiResource, String)>);

    impl Policy {
        async fn install(ns: &TestNs) -> Policy {
            let out = Command::new("helm")
                .args(["template", "t", "charts/loopservice-operator", "--show-only", "templates/admission-policy.yaml"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("helm, from the local cluster's tools (eval \"$(hack/cluster.sh env)\")");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            let name = format!("job-rights-{}", ns.name);
            let mut made = vec![];
            for doc in text.split("\n---").filter(|d| d.contains("kind:")) {
                let mut v: serde_json::Value = serde_yaml::from_str(doc).unwrap();
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
    async fn grant(ns: &TestNs, user: &str, rules: serde_json::Value) {
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

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_user_who_may_not_create_jobs_may_not_create_a_loopservice_or_change_its_spec() {
        let ns = setup("tenant").await;
        let loops = json!({"apiGroups": ["loops.dev"], "resources": ["loopservices"], "verbs": ["get", "create", "patch", "update"]});
        let jobs = json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]});
        grant(&ns, "loops-only", json!([loops])).await;
        grant(&ns, "loops-and-jobs", json!([loops, jobs])).await;
        let _policy = Policy::install(&ns).await;
        let only: Api<LoopService> = Api::namespaced(as_user("loops-only").await, &ns.name);
        let both: Api<LoopService> = Api::namespaced(as_user("loops-and-jobs").await, &ns.name);
        let privileged: LoopService = serde_json::from_value(ls("root", "1h", "echo hi")).unwrap();

        // The policy takes a moment to load: a dry run asks until it answers.
        let dry = PostParams { dry_run: true, ..PostParams::default() };
        let refusal = wait_for("the policy to refuse a LoopService from loops-only", Duration::from_secs(60), || async {
            match only.create(&dry, &privileged).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
                _ => None,
            }
        })
        .await;
        assert!(refusal.contains("loops-only may not create Jobs in namespace") && refusal.contains(&ns.name), "{refusal}");
        assert!(only.get_opt("root").await.unwrap().is_none());

        // Whoever may create Jobs there may create it; loops-only may then ask for a run (an
        // annotation: the spec is as admitted), but not change what runs.
        both.create(&PostParams::default(), &privileged).await.expect("admitted for a user who may create Jobs");
        let run = json!({"metadata": {"annotations": {"loops.dev/run-requested-at": "2026-12-05T00:00:00Z"}}});
        only.patch("root", &PatchParams::default(), &Patch::Merge(&run)).await.expect("a run request is not a change of spec");
        let change = json!({"spec": {"command": ["sh", "-c", "cat /etc/shadow"]}});
        match only.patch("root", &PatchParams::default(), &Patch::Merge(&change)).await {
            Err(kube::Error::Api(s)) => assert!(s.code == 403 && s.message.contains("may not create Jobs"), "{s:?}"),
            Ok(_) => panic!("loops-only changed the spec of a LoopService"),
            Err(e) => panic!("{e}"),
        }
        both.patch("root", &PatchParams::default(), &Patch::Merge(&change)).await.expect("admitted for a user who may create Jobs");
    }
}

/// A tenant cannot make the operator hold more than its cap per LoopService. 20,000 variables
/// are refused by the schema, naming the field; 40 LoopServices with 1.25 MiB specs that the
/// schema admits (80 arguments of 16,000 characters) are each refused as InvalidSpec with their
/// size, none is cached, the operator stays far below the chart's 128 MiB memory limit and
/// never restarts, and another LoopService beside them loops on.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn oversized_specs_are_refused_with_their_size_and_cost_the_operator_nothing() {
    use support::*;
    let ns = setup("oversized").await;
    let op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("healthy", "3s", "echo ok")).await.unwrap();
    let mut many = ls("many-vars", "10s", "echo never");
    many["spec"]["env"] = (0..20_000).map(|i| serde_json::json!({"name": format!("V{i:05}"), "value": "x"})).collect();
    match create_ls(&ns, many).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("spec.env") && s.message.contains("512"), "{}", s.message),
        other => panic!("20,000 variables admitted: {other:?}"),
    }
    let names: Vec<String> = (0..40).map(|i| format!("big-{i:02}")).collect();
    for n in &names {
        let mut v = ls(n, "10s", "echo never");
        v["spec"]["args"] = (0..80).map(|i| serde_json::json!(format!("{i:02}{}", "x".repeat(15_998)))).collect();
        create_ls(&ns, v).await.unwrap();
    }
    for n in &names {
        let st = wait_status(&ns, n, "refused as too large", |st| st.phase == Some(loopservice_operator::crd::Phase::Invalid)).await;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
        assert_eq!(ready.reason, "InvalidSpec");
        assert!(ready.message.contains("its spec is 1251 KiB of JSON") && ready.message.contains("at most 32 KiB"), "{}", ready.message);
        assert!(loop_jobs(&ns, n).await.is_empty(), "{n}: no loop ran");
    }
    let started = status(&ns, "healthy").await.last_finished_loop;
    wait_status(&ns, "healthy", "two more loops beside them", |st| st.last_finished_loop >= started + 2).await;
    let peak_kib: f64 = std::fs::read_to_string(format!("/proc/{}/status", op.pid()))
        .expect("the operator runs")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    println!("40 specs of 1251 KiB refused; the operator's peak resident memory {:.1} MiB", peak_kib / 1024.0);
    assert!(peak_kib < 128.0 * 1024.0, "peak resident memory {peak_kib} KiB, past the chart's 128 MiB limit");
    assert!(!op.log_text().contains("panicked"), "{}", op.log_text());
}

/// A list of namespaces: the operator, as the chart's ServiceAccount with nothing but the
/// chart's Roles in the two listed namespaces, runs their LoopServices and never touches one in
/// a third.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_namespace_list_runs_its_namespaces_under_roles_there_and_leaves_another_untouched() {
    use support::*;

    let (a, b, c) = (setup("list-a").await, TestNs::new("list-b").await, TestNs::new("list-c").await);
    let yaml = chart_rbac(&a.name, &[&format!("watchNamespaces={{{},{}}}", a.name, b.name), "leaderElection.enabled=false"]);
    assert!(!yaml.contains("kind: Cluster"), "nothing cluster-wide:\n{yaml}");
    kubectl_apply(&yaml);

    loopservices_in(&[&a, &b], &c).await;
    let kubeconfig = kubeconfig_as(&format!("system:serviceaccount:{}:lso-loopservice-operator", a.name), &format!("{}-list", a.name));
    let list = format!("{},{}", a.name, b.name);
    let op = Operator::start_with(&a.name, &[], &[("KUBECONFIG", &kubeconfig), ("WATCH_NAMESPACES", &list)]);
    only_the_watched_namespaces_loop(&op, &[&a, &b], &c).await;
    // Made once the merged watches are listed: their changes come through too, and only theirs.
    create_ls(&c, ls("later", "2s", "true")).await.unwrap();
    create_ls(&b, ls("later", "2s", "true")).await.unwrap();
    wait_status(&b, "later", "a loop of a LoopService made after the start", |st| st.loops_started >= 1).await;
    wait_jobs(&b, "later", 1).await;
    assert!(c.loopservices().get("later").await.unwrap().status.is_none());
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());
}

/// All namespaces but a list: one cluster-wide watch per kind, with the field selector the
/// operator makes, which the API server serves for LoopServices, Jobs and Pods (on Kubernetes
/// 1.20 too). What the operator does with it runs alone, in tests/chaos.rs: a cluster-wide
/// operator would run the LoopServices of the tests beside it.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn the_field_selector_of_an_exclusion_list_leaves_those_namespaces_out_of_each_watch() {
    use std::collections::BTreeSet;

    use futures::TryStreamExt;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ApiResource, DynamicObject, ListParams};
    use kube::runtime::watcher::{self, watcher};
    use kube::{Api, ResourceExt};
    use loopservice_operator::crd::LoopService;
    use loopservice_operator::scope::Scope;

    use support::*;

    let (a, c) = (setup("exclude-a").await, TestNs::new("exclude-c").await);
    for ns in [&a, &c] {
        create_ls(ns, ls("idle", "1h", "true")).await.unwrap();
        create_foreign_job(ns, "mine").await;
    }
    for ns in [&a, &c] {
        let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
        wait_for("the Job's Pod", LONG, || async { (!pods.list(&ListParams::default()).await.ok()?.items.is_empty()).then_some(()) }).await;
    }
    let scope = Scope::new(&[], &[c.name.clone(), "kube-system".into()]).unwrap();
    for ar in [ApiResource::erase::<LoopService>(&()), ApiResource::erase::<Job>(&()), ApiResource::erase::<Pod>(&())] {
        let api: Api<DynamicObject> = Api::all_with(a.client.clone(), &ar);
        let mut events = std::pin::pin!(watcher(api, scope.config(watcher::Config::default())));
        let mut seen = BTreeSet::new();
        while let Some(event) = events.try_next().await.unwrap() {
            match event {
                watcher::Event::InitApply(o) => {
                    seen.insert(o.namespace().unwrap_or_default());
                }
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert!(seen.contains(&a.name), "{}: {seen:?}", ar.plural);
        assert!(!seen.contains(&c.name) && !seen.contains("kube-system"), "{}: {seen:?}", ar.plural);
    }
}
