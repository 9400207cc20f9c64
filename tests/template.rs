//! The Pod template, the Job fields, the checks before the first loop, the CRD's CEL rules and
//! who may do what: against the local cluster's real API server, Jobs and containers.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use loopservice_operator::crd::Phase;
use loopservice_operator::spec;
use serde_json::json;
use support::*;

/// Makes the namespace enforce PodSecurity `restricted` (Kubernetes 1.23 and later read it).
async fn enforce_restricted(ns: &TestNs) {
    let patch = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}});
    Api::<Namespace>::all(ns.client.clone()).patch(&ns.name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (eval \"$(hack/cluster.sh env)\")");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn helm_template(args: &[&str]) -> String {
    let mut all = vec!["template"];
    all.extend(args);
    let out = Command::new("helm").args(&all).current_dir(repo_root()).output().expect("helm on PATH (eval \"$(hack/cluster.sh env)\")");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const SECURE_CONTAINER: &str = r#"{"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}"#;

fn restricted_pod() -> serde_json::Value {
    json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}})
}

/// The Pods of a LoopService's loops.
async fn loop_pods(ns: &TestNs, name: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(ns.client.clone(), &ns.name)
        .list(&ListParams::default().labels(&format!("loops.dev/loopservice={name}")))
        .await
        .unwrap()
        .items
}

/// The loop container's state once it has ended: (exit code, termination message).
fn loop_ended(pod: &Pod) -> Option<(i32, String)> {
    let cs = pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == "loop")?;
    let t = cs.state.as_ref()?.terminated.as_ref()?;
    Some((t.exit_code, t.message.clone().unwrap_or_default()))
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loops_pod_has_the_templates_volumes_secrets_scheduling_security_init_container_and_labels() {
    let ns = setup("template").await;
    enforce_restricted(&ns).await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"target": "reports"}});
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"}, "stringData": {"password": "s3cret-value"}});
    for obj in [cm, secret] {
        let (ok, out) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&obj.to_string()));
        assert!(ok, "{out}");
    }
    let nodes = Api::<Node>::all(ns.client.clone()).list(&ListParams::default()).await.unwrap().items;
    // The node that runs containers (the cluster may also have simulated nodes, which do not).
    let real = nodes
        .iter()
        .find(|n| !n.labels().contains_key("loops.dev/fake-node") && n.labels().get("type").map(String::as_str) != Some("kwok"));
    let host = real.expect("a real node").labels()["kubernetes.io/hostname"].clone();
    let _op = Operator::start(&ns.name, &[]);
    let secure: serde_json::Value = serde_json::from_str(SECURE_CONTAINER).unwrap();
    let script = "echo \"$(cat /scratch/ready) $(cat /settings/target) $PASSWORD\" > /dev/termination-log";
    create_raw(
        &ns,
        json!({
            "metadata": {"name": "full"},
            "spec": {
                "interval": "30s",
                "template": {
                    "metadata": {"labels": {"team": "storage"}, "annotations": {"example.com/owner": "storage-team"}},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": host},
                        "tolerations": [{"key": "loops.dev/maintenance", "operator": "Exists", "effect": "NoSchedule"}],
                        "securityContext": restricted_pod(),
                        "volumes": [{"name": "settings", "configMap": {"name": "settings"}}, {"name": "work", "emptyDir": {}}],
                        "initContainers": [{
                            "name": "prepare", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "echo prepared > /scratch/ready"],
                            "volumeMounts": [{"name": "work", "mountPath": "/scratch"}],
                            "securityContext": secure,
                        }],
                        "containers": [{
                            "name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", script],
                            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "password"}}}],
                            "volumeMounts": [{"name": "settings", "mountPath": "/settings", "readOnly": true}, {"name": "work", "mountPath": "/scratch"}],
                            "securityContext": secure,
                        }],
                    }
                }
            }
        }),
    )
    .await
    .unwrap();
    let st = wait_status(&ns, "full", "loop 1 to succeed", |st| st.loops_succeeded >= 1 || st.loops_failed >= 1).await;
    assert_eq!((st.loops_succeeded, st.loops_failed), (1, 0), "{st:?}");
    let pods = loop_pods(&ns, "full").await;
    let pod = &pods[0];
    let (code, message) = loop_ended(pod).expect("the loop container ended");
    println!("loop 1's container: exit {code}, termination message {message:?}");
    assert_eq!(
        (code, message.trim()),
        (0, "prepared reports s3cret-value"),
        "the ConfigMap, the Secret and the init container's work reached the loop"
    );
    let labels = pod.labels();
    assert_eq!(labels.get("team").map(String::as_str), Some("storage"));
    assert_eq!(labels.get("loops.dev/loop").map(String::as_str), Some("1"), "the operator's labels are there too");
    assert_eq!(pod.annotations().get("example.com/owner").map(String::as_str), Some("storage-team"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_selector.as_ref().unwrap()["kubernetes.io/hostname"], host);
    assert!(spec.tolerations.iter().flatten().any(|t| t.key.as_deref() == Some("loops.dev/maintenance")));
    assert_eq!(spec.security_context.as_ref().unwrap().run_as_user, Some(65532));
    assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "prepare");
    assert!(spec.volumes.iter().flatten().any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "settings")));
    let c = spec.containers.iter().find(|c| c.name == "loop").unwrap();
    assert!(c.env.iter().flatten().any(|e| e.name == "PASSWORD" && e.value_from.as_ref().is_some_and(|v| v.secret_key_ref.is_some())));
    assert!(c.env.iter().flatten().any(|e| e.name == "LOOP_NUMBER"), "the loop variables are added");
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
}

/// Polls every 10 ms, for timing.
async fn poll_until<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_spec_the_api_server_would_refuse_is_invalid_spec_within_2s_and_makes_no_job() {
    let ns = setup("dryrun").await;
    let op = Operator::start(&ns.name, &[]);
    wait_for("the operator to be ready", LONG, || async { (op.get("/readyz").await.as_deref() == Some("ready")).then_some(()) }).await;
    // Three kinds of refusal: a mount of a volume that is not there, a variable name with `=`,
    // a bad toleration; what the CRD's schema lets through and the Job's validation does not.
    let bad = [
        (json!({"volumeMounts": [{"name": "missing", "mountPath": "/x"}]}), json!({}), "volumeMounts[0].name"),
        (json!({"env": [{"name": "A=B", "value": "x"}]}), json!({}), "env[0].name"),
        (json!({}), json!({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}), "tolerations[0]"),
    ];
    let mut took = vec![];
    const SAMPLES: usize = 12;
    for i in 0..SAMPLES {
        let (container, pod, field) = &bad[i % bad.len()];
        let mut c = json!({"name": "loop", "image": "busybox:1.36", "command": ["true"]});
        c.as_object_mut().unwrap().extend(container.as_object().unwrap().clone());
        let mut p = json!({"containers": [c]});
        p.as_object_mut().unwrap().extend(pod.as_object().unwrap().clone());
        let name = format!("refused-{i}");
        let started = Instant::now();
        create_raw(&ns, json!({"metadata": {"name": name}, "spec": {"interval": "1s", "template": {"spec": p}}})).await.unwrap();
        let api = ns.loopservices();
        let ready = poll_until(Duration::from_secs(10), || async {
            let st = api.get(&name).await.ok()?.status?;
            st.conditions.into_iter().find(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
        })
        .await
        .unwrap_or_else(|| panic!("{name}: no InvalidSpec within 10 s"));
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("the API server refuses the Job") && ready.message.contains(field), "{name}: {}", ready.message);
        if i < bad.len() {
            println!("{name}: Ready=False InvalidSpec: {}", ready.message);
        }
    }
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "apply to InvalidSpec, {SAMPLES} samples, ms: min {:.0}, median {:.0}, max {:.0} (all: {:?})",
        sorted[0],
        sorted[SAMPLES / 2],
        sorted[SAMPLES - 1],
        took.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    assert!(sorted[SAMPLES - 1] < 2000.0, "every refusal shows within 2 s");
    // With a 1 s interval, a loop of each would have been due at once: none ran, however
    // often the operator looked.
    let names: Vec<String> = (0..SAMPLES).map(|i| format!("refused-{i}")).collect();
    reconciled_since(&op, &ns, &names.iter().map(String::as_str).collect::<Vec<_>>(), jiff::Timestamp::now()).await;
    assert!(ns.jobs().list(&ListParams::default()).await.unwrap().items.is_empty(), "no Job was made");
    let st = status(&ns, "refused-0").await;
    assert_eq!((st.phase, st.loops_started, st.loops_failed), (Some(Phase::Invalid), 0, 0));
    // Fixed, it runs.
    let fix = json!({"spec": {"template": {"spec": {"containers": [{"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"]}]}}}});
    ns.loopservices().patch("refused-0", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    wait_status(&ns, "refused-0", "a loop of the fixed spec", |st| st.loops_succeeded >= 1).await;
}

/// Bad specs and the message that refuses each: a CEL rule of the CRD where the API server
/// runs them, `InvalidSpec` in status where it does not.
fn rule_cases() -> Vec<(serde_json::Value, String)> {
    let loop_c = json!({"name": "loop", "image": "busybox:1.36"});
    let t = |spec: serde_json::Value| json!({"spec": spec});
    vec![
        (json!({"image": "busybox:1.36", "template": t(json!({"containers": [loop_c]}))}), spec::MSG_LOOP_CONTAINER_TWICE.into()),
        (json!({}), spec::MSG_LOOP_CONTAINER_MISSING.into()),
        (json!({"command": ["true"], "template": t(json!({"containers": [loop_c]}))}), spec::shorthand_message("command")),
        (json!({"env": [{"name": "A", "value": "b"}], "template": t(json!({"containers": [loop_c]}))}), spec::shorthand_message("env")),
        (
            json!({"image": "busybox:1.36", "serviceAccountName": "a", "template": t(json!({"serviceAccountName": "b"}))}),
            spec::MSG_SERVICE_ACCOUNT_TWICE.into(),
        ),
        (
            json!({"image": "busybox:1.36", "podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}}]}, "template": t(json!({"restartPolicy": "OnFailure"}))}),
            spec::MSG_POD_FAILURE_POLICY_RESTART.into(),
        ),
        (json!({"image": "busybox:1.36", "template": {"metadata": {"labels": {"loops.dev/loop": "7"}}}}), spec::MSG_OWNED_LABELS.into()),
        (
            json!({"image": "busybox:1.36", "template": {"metadata": {"annotations": {"loops.dev/start-time": "x"}}}}),
            spec::MSG_OWNED_ANNOTATIONS.into(),
        ),
        (json!({"image": "busybox:1.36", "env": [{"name": "LOOP_NUMBER", "value": "1"}]}), spec::MSG_ENV_OWNED.into()),
        (json!({"image": "busybox:1.36", "env": [{"name": "LOOP_LAST_SUCCESS_TIME", "value": "1"}]}), spec::MSG_ENV_OWNED.into()),
        // The interval is 5s in every case.
        (json!({"image": "busybox:1.36", "jitter": "5s"}), spec::MSG_JITTER.into()),
        (json!({"image": "busybox:1.36", "jitter": "1m"}), spec::MSG_JITTER.into()),
        (json!({"image": "busybox:1.36", "failureBackoff": {"initial": "1m", "max": "59s999ms"}}), spec::MSG_BACKOFF.into()),
        (
            json!({"template": t(json!({"containers": [{"name": "loop", "image": "busybox:1.36", "env": [{"name": "LOOPSERVICE_NAME", "value": "x"}]}]}))}),
            spec::MSG_TEMPLATE_ENV_OWNED.into(),
        ),
    ]
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn cel_rules_and_invalid_spec_refuse_the_same_specs_with_the_same_message() {
    let ns = setup("rules").await;
    let minor = server_minor(&ns.client).await;
    // CEL rules run from Kubernetes 1.25 (beta, on by default); earlier servers drop them.
    let cel = minor >= 25;
    println!("Kubernetes 1.{minor}: expecting {}", if cel { "the API server's CEL rules" } else { "InvalidSpec in status" });
    let op = (!cel).then(|| Operator::start(&ns.name, &[]));
    let mut names = vec![];
    for (i, (spec, message)) in rule_cases().into_iter().enumerate() {
        let mut spec = spec;
        spec["interval"] = json!("5s");
        let name = format!("rule-{i}");
        let created = create_raw(&ns, json!({"metadata": {"name": name}, "spec": spec})).await;
        if cel {
            let Err(kube::Error::Api(s)) = created else { panic!("case {i}: the API server accepted it: {created:?}") };
            println!("case {i}: {} {}", s.code, s.message);
            assert_eq!(s.code, 422, "case {i}");
            assert!(s.message.contains(&message), "case {i}: {}", s.message);
        } else {
            created.unwrap_or_else(|e| panic!("case {i}: {e}"));
            let st = wait_status(&ns, &name, "InvalidSpec", |st| st.phase == Some(Phase::Invalid)).await;
            let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
            println!("case {i}: {} {}", ready.reason, ready.message);
            // One the operator cannot read is never in its cache, and so never reconciled.
            if !ready.message.starts_with(UNREADABLE) {
                names.push(name.clone());
            }
            assert_eq!(ready.reason, "InvalidSpec");
            assert!(ready.message.contains(&message), "case {i}: {}", ready.message);
        }
    }
    if let Some(op) = &op {
        // Once the operator has looked at each it reads again, none has run.
        reconciled_since(op, &ns, &names.iter().map(String::as_str).collect::<Vec<_>>(), jiff::Timestamp::now()).await;
        assert!(ns.jobs().list(&ListParams::default()).await.unwrap().items.is_empty(), "no refused spec ran");
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn kubectl_explain_documents_the_template_and_the_job_fields() {
    let ns = setup("explain-t").await;
    let _ = &ns;
    // kubectl wraps descriptions: compare with whitespace folded.
    let fold = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let explain = |path: &str| {
        let (ok, text) = kubectl(&["explain", path], None);
        assert!(ok, "kubectl explain {path}: {text}");
        fold(&text)
    };
    let text = wait_for("kubectl explain loopservice.spec.template", LONG, || async {
        let (ok, text) = kubectl(&["explain", "loopservice.spec.template"], None);
        (ok && text.contains("container named")).then_some(text)
    })
    .await;
    println!("{text}");
    let text = fold(&text);
    for words in
        ["container named `loop`", "both, or neither, is refused", "restartPolicy", "owner reference", "LOOP_NUMBER", "metadata", "spec"]
    {
        assert!(text.contains(words), "{words}: {text}");
    }
    let pod = explain("loopservice.spec.template.spec");
    assert!(pod.contains("kubectl explain pod.spec"), "{pod}");
    // Kubernetes 1.20 publishes no fields under a schema that preserves unknown fields; the
    // description above still says where to look.
    if server_minor(&ns.client).await >= 25 {
        assert!(pod.contains("containers <[]Object>") || pod.contains("containers <[]object>"), "{pod}");
        assert!(pod.contains("initContainers"), "{pod}");
    }
    let spec = explain("loopservice.spec");
    for words in ["podFailurePolicy", "ttlSecondsAfterFinished", "activeDeadlineSeconds"] {
        assert!(spec.contains(words), "{words}: {spec}");
    }
    let pfp = explain("loopservice.spec.podFailurePolicy.rules");
    assert!(pfp.contains("onExitCodes"), "{pfp}");
}

/// A client acting as `user` (in `groups`), through the API server's impersonation.
async fn as_user(user: &str, groups: &[&str]) -> Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).unwrap()
}

/// Cluster-scoped objects a test made, deleted when dropped.
struct ClusterRoles(Client, Vec<String>);

impl Drop for ClusterRoles {
    fn drop(&mut self) {
        let names = self.1.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let api: Api<ClusterRole> = Api::all(Client::try_default().await.ok()?);
                for n in names {
                    let _ = api.delete(&n, &DeleteParams::default()).await;
                }
                Some(())
            })
        })
        .join();
        let _ = &self.0;
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn namespace_editors_and_viewers_get_loopservices_through_the_aggregated_roles() {
    let a = setup("edit-a").await;
    let b = TestNs::new("edit-b").await;
    let release = format!("agg{}", &a.name[a.name.len() - 6..]);
    let yaml = helm_template(&[&release, "charts/loopservice-operator", "--show-only", "templates/aggregate-roles.yaml"]);
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&yaml));
    assert!(ok, "{out}");
    let _roles = ClusterRoles(
        a.client.clone(),
        vec![format!("{release}-loopservice-operator-view"), format!("{release}-loopservice-operator-edit")],
    );
    // The built-in roles pick the rules up (the controller-manager aggregates them).
    let roles: Api<ClusterRole> = Api::all(a.client.clone());
    for role in ["view", "edit", "admin"] {
        wait_for(&format!("loopservices in the {role} ClusterRole"), Duration::from_secs(30), || async {
            let r = roles.get(role).await.ok()?;
            r.rules?.iter().any(|r| r.api_groups.iter().flatten().any(|g| g == "loops.dev")).then_some(())
        })
        .await;
    }
    let (alice, bob) = (format!("alice-{release}"), format!("bob-{release}"));
    for (user, role) in [(&alice, "edit"), (&bob, "view")] {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        let (ok, out) = kubectl(&["apply", "-n", &a.name, "-f", "-"], Some(&binding.to_string()));
        assert!(ok, "{out}");
    }
    let ls = |name: &str| -> loopservice_operator::crd::LoopService {
        serde_json::from_value(json!({"apiVersion": "loops.dev/v1alpha1", "kind": "LoopService", "metadata": {"name": name}, "spec": {"interval": "1h", "image": "busybox:1.36"}}))
            .unwrap()
    };
    let alice_client = as_user(&alice, &["system:authenticated"]).await;
    let bob_client = as_user(&bob, &["system:authenticated"]).await;
    let in_ns = |c: &Client, ns: &TestNs| Api::<loopservice_operator::crd::LoopService>::namespaced(c.clone(), &ns.name);
    // RBAC caches refresh quickly but not at once: the first create may need a moment.
    wait_for("alice to create a LoopService in her namespace", Duration::from_secs(20), || async {
        in_ns(&alice_client, &a).create(&PostParams::default(), &ls("by-alice")).await.ok().map(|_| ())
    })
    .await;
    let patch = json!({"spec": {"suspend": true}});
    in_ns(&alice_client, &a).patch("by-alice", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("an editor patches");
    let code = |r: Result<loopservice_operator::crd::LoopService, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code,
        Ok(_) => 200,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code(in_ns(&alice_client, &b).create(&PostParams::default(), &ls("by-alice")).await), 403, "not in another namespace");
    assert_eq!(code(in_ns(&bob_client, &a).get("by-alice").await), 200, "a viewer reads");
    assert_eq!(code(in_ns(&bob_client, &a).create(&PostParams::default(), &ls("by-bob")).await), 403, "a viewer does not create");
    assert_eq!(code(in_ns(&bob_client, &b).get("by-alice").await), 403, "nor reads another namespace");
    in_ns(&alice_client, &a).delete("by-alice", &DeleteParams::default()).await.expect("an editor deletes");
}

async fn allowed(client: &Client, user: &str, ns: &str, verb: &str, resource: (&str, &str), name: Option<&str>) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                verb: Some(verb.to_string()),
                group: Some(resource.0.to_string()),
                resource: Some(resource.1.to_string()),
                name: name.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn the_operators_rbac_names_its_lease_and_is_enough_to_lead_and_run_loops() {
    let ns = setup("rbac").await;
    let lease = "loops-lease";
    let yaml = chart_rbac(&ns.name, &[&format!("watchNamespace={}", ns.name), &format!("leaderElection.leaseName={lease}")]);
    kubectl_apply(&yaml);
    let sa = format!("system:serviceaccount:{}:lso-loopservice-operator", ns.name);
    let leases = ("coordination.k8s.io", "leases");
    let c = &ns.client;
    for (verb, name, want) in [
        ("get", Some(lease), true),
        ("patch", Some(lease), true),
        ("create", None, true),
        // Any Lease may be read: a claim on a LoopService is honoured while the Lease of the
        // release that claimed it is renewed (the chart's claims ClusterRole).
        ("get", Some("another-lease"), true),
        ("patch", Some("another-lease"), false),
        ("delete", Some(lease), false),
        ("list", None, false),
        ("update", Some(lease), false),
    ] {
        let got = allowed(c, &sa, &ns.name, verb, leases, name).await;
        println!("{verb} leases/{}: {got}", name.unwrap_or("*"));
        assert_eq!(got, want, "{verb} leases/{name:?}");
    }
    assert!(allowed(c, &sa, &ns.name, "create", ("batch", "jobs"), None).await);
    assert!(!allowed(c, &sa, &ns.name, "get", ("", "secrets"), None).await, "no Secrets");
    assert!(!allowed(c, &sa, "kube-system", "create", ("batch", "jobs"), None).await, "nothing outside its namespace");

    // The operator, as that ServiceAccount, leads with that Lease and runs a loop.
    let path = kubeconfig_as(&sa, &format!("{}-as-operator", ns.name));
    let mut op =
        Operator::start(&ns.name, &[("KUBECONFIG", &path), ("LEADER_ELECT", "true"), ("LEASE_NAME", lease), ("POD_NAMESPACE", &ns.name)]);
    wait_for("the operator to lead", LONG, || async { op.log_text().contains("became the leader").then_some(()) }).await;
    create_ls(&ns, json!({"metadata": {"name": "beat"}, "spec": {"interval": "2s", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"]}}))
        .await
        .unwrap();
    wait_status(&ns, "beat", "a loop run under the chart's RBAC", |st| st.loops_succeeded >= 1).await;
    op.signal("TERM");
    let (code, _) = op.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{}", op.log_text());
    assert!(op.log_text().contains("released the leader lease"), "{}", op.log_text());
    assert!(!op.log_text().contains("forbidden"), "{}", op.log_text());
}

/// PodSecurity admission is GA from Kubernetes 1.25 (and absent before 1.23): `make test` leaves
/// this out on older clusters (nextest reports it as skipped), and it fails if run by hand there.
mod from_1_25 {
    use super::*;

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn every_example_runs_in_a_namespace_that_enforces_restricted() {
        let ns = setup("examples").await;
        require_minor(&ns.client, 25).await;
        enforce_restricted(&ns).await;
        let _op = Operator::start(&ns.name, &[]);
        let mut names = vec![];
        let mut files: Vec<_> = std::fs::read_dir(repo_root().join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in &files {
            // An example of Kueue's queues needs Kueue: tests/kueue.rs runs it against it.
            if std::fs::read_to_string(f).unwrap().contains("apiVersion: kueue.x-k8s.io/") {
                println!("{}: left to tests/kueue.rs, which runs it against Kueue", f.display());
                continue;
            }
            let (ok, out) = kubectl(&["apply", "-n", &ns.name, "-f", &f.to_string_lossy()], None);
            assert!(ok, "{}: {out}", f.display());
            assert!(!out.contains("Warning"), "{}: {out}", f.display());
            let text = std::fs::read_to_string(f).unwrap();
            for doc in text.split("\n---") {
                let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
                if v["kind"].as_str() == Some("LoopService") {
                    let name = v["metadata"]["name"].as_str().unwrap().to_string();
                    // An aligned example's first loop waits for its grid (up to an interval),
                    // one with quiet hours for their end when they are on: a run request, as
                    // `kubectl loopservice run` makes, starts one at once.
                    if v["spec"]["alignment"].is_mapping() || v["spec"]["pauseWindows"].is_sequence() {
                        let run = format!("{}={}", loopservice_operator::keys::ANN_RUN_REQUESTED_AT, jiff::Timestamp::now());
                        let (ok, out) = kubectl(&["annotate", "-n", &ns.name, "loopservice", &name, &run], None);
                        assert!(ok, "{name}: {out}");
                    }
                    names.push(name);
                }
            }
        }
        println!("examples: {names:?}");
        assert!(names.len() >= 5, "{names:?}");
        for name in &names {
            let (code, message) = wait_for(&format!("the first loop of {name} to end in its Pod"), LONG, || async {
                loop_pods(&ns, name).await.iter().find_map(loop_ended)
            })
            .await;
            println!("{name}: loop container exited {code}: {}", message.trim());
            assert_eq!(code, if name == "failing" { 1 } else { 0 }, "{name}: {message}");
            let st = status(&ns, name).await;
            assert_ne!(st.phase, Some(Phase::Invalid), "{name}: {st:?}");
        }
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn the_crd_installs_with_a_client_side_kubectl_apply() {
    let client = client().await;
    let minor = server_minor(&client).await;
    let (ok, out) = kubectl(&["apply", "--dry-run=server", "-f", "crds/loopservice.yaml"], None);
    println!("Kubernetes 1.{minor}: kubectl apply --dry-run=server -f crds/loopservice.yaml: {}", out.trim());
    if minor >= 25 {
        assert!(ok, "{out}");
        return;
    }
    // Before 1.25 the server's OpenAPI has no x-kubernetes-validations, and kubectl's own
    // validation refuses the field; README says to skip it there (the server drops the rules).
    assert!(!ok && out.contains("x-kubernetes-validations"), "{out}");
    let (ok, out) = kubectl(&["apply", "--validate=false", "--dry-run=server", "-f", "crds/loopservice.yaml"], None);
    println!("Kubernetes 1.{minor}: kubectl apply --validate=false: {}", out.trim());
    assert!(ok, "{out}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_sidecar_runs_beside_the_loop_where_kubernetes_has_them_and_is_invalid_spec_where_it_would_be_dropped() {
    let ns = setup("sidecar").await;
    let minor = server_minor(&ns.client).await;
    let _op = Operator::start(&ns.name, &[]);
    // A native sidecar: an init container that keeps running (Kubernetes 1.29 and later).
    create_raw(
        &ns,
        json!({"metadata": {"name": "side"}, "spec": {
            "interval": "1h",
            "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", "echo loop done"],
            "template": {"spec": {"initContainers": [{
                "name": "proxy", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                "restartPolicy": "Always", "command": ["sleep", "3600"],
            }]}},
        }}),
    )
    .await
    .unwrap();
    if minor >= 29 {
        let st = wait_status(&ns, "side", "the loop with a sidecar to end", |st| st.last_finished_loop >= 1).await;
        assert_eq!((st.loops_succeeded, st.loops_failed), (1, 0), "the sidecar did not hold the loop: {st:?}");
        println!("Kubernetes 1.{minor}: the loop with a sidecar succeeded");
    } else {
        // An older API server would drop restartPolicy, and the sidecar would block the loop
        // as an init container that never ends: the dry run finds that out first.
        let st = wait_status(&ns, "side", "InvalidSpec", |st| st.phase == Some(Phase::Invalid)).await;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        println!("Kubernetes 1.{minor}: {}: {}", ready.reason, ready.message);
        assert!(ready.message.contains("drops spec.template.spec.initContainers[0].restartPolicy"), "{}", ready.message);
        assert!(ns.jobs().list(&ListParams::default()).await.unwrap().items.is_empty());
    }
}

/// A Pod field Kubernetes 1.33 did not have, on by default from 1.35: `make test` leaves this
/// out on older clusters (nextest reports it as skipped), and it fails if run by hand there.
mod from_1_35 {
    use super::*;

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_pod_field_newer_than_kubernetes_1_33_reaches_the_loops_pod() {
        let ns = setup("newer-pod-field").await;
        require_minor(&ns.client, 35).await;
        let _op = Operator::start(&ns.name, &[]);
        // `hostnameOverride` (Kubernetes 1.34 alpha, 1.35 beta and on, 1.37 GA): the loop
        // succeeds only in a Pod whose hostname it set.
        let check = r#"h="$(hostname)"; echo "hostname: $h"; test "$h" = loop-host"#;
        create_raw(
            &ns,
            json!({"metadata": {"name": "host"}, "spec": {
                "interval": "1h",
                "template": {"spec": {"hostnameOverride": "loop-host", "containers": [{
                    "name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", check],
                }]}},
            }}),
        )
        .await
        .unwrap();
        let st = wait_status(&ns, "host", "the loop to end", |st| st.last_finished_loop >= 1).await;
        assert_eq!((st.loops_succeeded, st.loops_failed), (1, 0), "{:?}", st.last_error);
        let jobs = loop_jobs(&ns, "host").await;
        let pod = jobs[0].spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("the Job's Pod spec");
        assert_eq!(pod.hostname_override.as_deref(), Some("loop-host"), "the Job carries the field");
        println!("Kubernetes 1.{}: the loop ran in a Pod with hostname loop-host", server_minor(&ns.client).await);
    }
}
