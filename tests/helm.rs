//! End to end: the chart installs the operator as a Pod under its own ServiceAccount, in a
//! namespace that enforces PodSecurity `restricted` (Kubernetes 1.25+), which runs a
//! LoopService applied with kubectl in the namespace it watches, survives `helm upgrade`
//! without a duplicate Job, and goes away with `helm uninstall`. Needs the operator image
//! imported (`make image`).

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use support::*;

const CHART: &str = "charts/loopservice-operator";

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (is it on PATH? eval \"$(hack/cluster.sh env)\")"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = run(cmd, args);
    assert!(ok, "{cmd} {} failed:\n{text}", args.join(" "));
    text
}

#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn the_chart_lints_clean() {
    let observe = [
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "grafana.dashboard.enabled=true",
    ];
    for extra in [
        vec![],
        vec!["-f", "hack/values-local.yaml"],
        vec!["--set", "watchNamespace=team-a"],
        vec!["--set", "watchNamespaces={team-a,team-b}"],
        vec!["--set", "excludeNamespaces={kube-system,team-c}"],
        vec!["--set", "metrics.prometheusRule.enabled=true"],
        vec!["--set", "metrics.serviceMonitor.enabled=true"],
        vec!["--set", "grafana.dashboard.enabled=true"],
        vec!["--set", "admissionPolicy.denyList.enabled=true"],
        observe.to_vec(),
    ] {
        let mut args = vec!["lint", CHART, "--strict"];
        args.extend(extra);
        let text = must("helm", &args);
        assert!(!text.contains("[WARNING]") && !text.contains("[ERROR]"), "{text}");
    }
    // Cluster-wide by default, namespaced when asked; never a wildcard.
    let all = must("helm", &["template", "x", CHART]);
    assert!(all.contains("kind: ClusterRole\n") && all.contains("kind: ClusterRoleBinding"));
    assert!(!all.contains("\"*\""), "no wildcard in RBAC");
    // (Without the /metrics token check's ClusterRoles: tests/metrics_auth.rs checks those.)
    let no_metrics_roles = ["--set", "metrics.auth=none", "--set", "metrics.reader.create=false"];
    let one = must("helm", &[&["template", "x", CHART, "--set", "watchNamespace=team-a"][..], &no_metrics_roles].concat());
    assert!(one.contains("kind: Role\n") && one.contains("kind: RoleBinding"));
    // Namespaced, its ClusterRoleBindings are the read of other releases' Leases and the read
    // of a Namespace's PodSecurity labels (below).
    assert_eq!(one.matches("kind: ClusterRoleBinding").count(), 2, "{one}");
    assert!(one.contains("name: x-loopservice-operator-claims"), "{one}");
    assert!(one.contains("name: x-loopservice-operator-namespaces"), "{one}");
    assert!(one.contains("--namespaces=team-a") && !one.contains("--exclude-namespaces"), "{one}");

    // The admission policy (a LoopService only from whoever may create Jobs): on by default
    // where the API server serves it (1.30), left out before, and off when asked.
    for kind in ["kind: ValidatingAdmissionPolicy\n", "kind: ValidatingAdmissionPolicyBinding\n"] {
        assert!(all.contains(kind), "{kind} by default");
        let old = must("helm", &["template", "x", CHART, "--kube-version", "1.29.0"]);
        assert!(!old.contains(kind), "{kind} left out before 1.30");
        let off = must("helm", &["template", "x", CHART, "--set", "admissionPolicy.enabled=false"]);
        assert!(!off.contains(kind), "{kind} left out when disabled");
    }
    // Two policies, each bound: the Job-rights check, and the check that a run request's
    // requester is the user making it; the namespace selector limits both.
    for policy in ["job-rights", "run-requester"] {
        assert!(all.contains(&format!("  policyName: x-loopservice-operator-{policy}\n")), "{policy}");
    }
    let some = must("helm", &["template", "x", CHART, "--set", "admissionPolicy.namespaceSelector.matchLabels.loops=checked"]);
    assert_eq!(some.matches("namespaceSelector:\n      matchLabels:\n        loops: checked").count(), 2, "{some}");

    // Monitoring is opt-in: nothing of it by default; each piece when asked.
    for kind in ["kind: PrometheusRule", "kind: ServiceMonitor", "grafana_dashboard"] {
        assert!(!all.contains(kind), "{kind} only when enabled");
    }
    let mut args = vec!["template", "x", CHART];
    args.extend(observe);
    let on = must("helm", &args);
    let docs: Vec<serde_yaml::Value> = on.split("\n---").filter_map(|d| serde_yaml::from_str(d).ok()).collect();
    let find = |kind: &str| docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("a {kind} in\n{on}")).clone();
    let rule = find("PrometheusRule");
    assert_eq!(rule["spec"]["groups"][0]["rules"].as_sequence().map(Vec::len), Some(6), "{on}");
    // The ServiceMonitor selects the metrics Service (and nothing else) by its labels and port.
    let monitor = find("ServiceMonitor");
    let service = docs.iter().find(|d| d["kind"].as_str() == Some("Service")).expect("the metrics Service");
    let selector = monitor["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    for (k, v) in selector {
        assert_eq!(&service["metadata"]["labels"][k], v, "the Service has the label {k:?} the ServiceMonitor selects");
    }
    assert!(selector.contains_key("app.kubernetes.io/component"), "selects the metrics Service only");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"].as_bool(), Some(true), "keeps the LoopService's namespace label");
    let dashboard = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap") && d["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .expect("the dashboard ConfigMap");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["loopservice-operator.json"].as_str().unwrap()).expect("the dashboard is JSON");
    assert_eq!(json["uid"], "loopservice-operator");
    // A ServiceMonitor needs the Service it scrapes.
    let (ok, text) =
        run("helm", &["template", "x", CHART, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"]);
    assert!(!ok && text.contains("metrics.serviceMonitor.enabled needs metrics.service.enabled"), "{text}");
    // The only cluster-wide objects: the aggregated roles that let namespace editors and
    // viewers use LoopServices, which can be left out, the read of other releases' Leases
    // (a claim on a LoopService is honoured while its release's Lease is renewed), and the read
    // of a Namespace (whether it enforces the PodSecurity level a new spec's dry run warns of).
    let cluster_roles: Vec<&str> = one.split("\n---").filter(|d| d.lines().any(|l| l == "kind: ClusterRole")).collect();
    assert_eq!(cluster_roles.len(), 4, "{one}");
    let get_only = |resource: &'static str| {
        move |d: &&str| {
            let role: serde_yaml::Value = serde_yaml::from_str(d).expect("a ClusterRole");
            role["rules"].as_sequence().is_some_and(|rules| {
                rules.len() == 1
                    && rules[0]["resources"] == serde_yaml::Value::from(vec![resource])
                    && rules[0]["verbs"] == serde_yaml::Value::from(vec!["get"])
            })
        }
    };
    let (leases_get, namespaces_get) = (get_only("leases"), get_only("namespaces"));
    assert!(
        cluster_roles.iter().all(|d| d.contains("rbac.authorization.k8s.io/aggregate-to-") || leases_get(d) || namespaces_get(d)),
        "{one}"
    );
    assert_eq!(cluster_roles.iter().filter(|d| leases_get(d)).count(), 1);
    assert_eq!(cluster_roles.iter().filter(|d| namespaces_get(d)).count(), 1);
    let none = must(
        "helm",
        &[
            &["template", "x", CHART, "--set", "watchNamespace=team-a", "--set", "rbac.aggregateToDefaultRoles=false"][..],
            &no_metrics_roles,
        ]
        .concat(),
    );
    let kinds: Vec<&str> = none.lines().filter(|l| l.starts_with("kind: Cluster")).collect();
    assert_eq!(kinds, ["kind: ClusterRole", "kind: ClusterRole", "kind: ClusterRoleBinding", "kind: ClusterRoleBinding"], "{none}");
}

/// The admission policy's deny-list is off by default; on, each check renders as a validation
/// of its own, and a check turned off is left out.
#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn the_deny_list_renders_only_when_enabled() {
    let policy = |args: &[&str]| -> serde_yaml::Value {
        let mut all = vec!["template", "x", CHART, "--show-only", "templates/admission-policy.yaml"];
        all.extend(args);
        let text = must("helm", &all);
        let doc = text.split("\n---").find(|d| d.contains("kind: ValidatingAdmissionPolicy\n")).expect("the policy");
        serde_yaml::from_str(doc).unwrap()
    };
    let messages = |p: &serde_yaml::Value| -> Vec<String> {
        p["spec"]["validations"].as_sequence().unwrap().iter().filter_map(|v| v["message"].as_str().map(str::to_string)).collect()
    };
    let default = policy(&[]);
    assert_eq!(default["spec"]["validations"].as_sequence().map(Vec::len), Some(1), "only the Job-rights check by default");
    assert!(default["spec"]["variables"].is_null());
    let on = policy(&["--set", "admissionPolicy.denyList.enabled=true"]);
    let all = messages(&on);
    for words in [
        "privileged container",
        ".hostNetwork",
        ".hostPID",
        ".hostIPC",
        "hostPath",
        "hostPort",
        "capabilities beyond",
        "privilege escalation",
    ] {
        assert_eq!(all.iter().filter(|m| m.contains(words)).count(), 1, "{words}: {all:#?}");
    }
    assert_eq!(all.len(), 8, "{all:#?}");
    let some = messages(&policy(&[
        "--set",
        "admissionPolicy.denyList.enabled=true",
        "--set",
        "admissionPolicy.denyList.hostNamespaces=false",
        "--set",
        "admissionPolicy.denyList.capabilities=false",
    ]));
    assert_eq!(some.len(), 4, "{some:#?}");
    assert!(!some.iter().any(|m| m.contains("namespaces") || m.contains("capabilities")), "{some:#?}");
    // The deny-list is part of the policy: nothing of it without the policy, or before 1.30.
    for off in [&["--set", "admissionPolicy.enabled=false"][..], &["--kube-version", "1.29.0"][..]] {
        let mut args = vec!["template", "x", CHART, "--set", "admissionPolicy.denyList.enabled=true"];
        args.extend(off);
        assert!(!must("helm", &args).contains("this cluster refuses"), "{off:?}");
    }
}

/// The chart's documents, parsed.
fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    yaml.split("\n---").filter_map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).ok()).filter(|d| d["kind"].is_string()).collect()
}

/// Whether a role's rules name any of `resources`.
fn grants_any(role: &serde_yaml::Value, resources: &[&str]) -> bool {
    let rules = role["rules"].as_sequence().cloned().unwrap_or_default();
    rules
        .iter()
        .flat_map(|r| r["resources"].as_sequence().cloned().unwrap_or_default())
        .any(|r| resources.contains(&r.as_str().unwrap_or("")))
}

#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn a_namespace_list_gets_a_role_in_each_and_no_cluster_wide_rights_and_kube_system_is_left_out_by_default() {
    const WATCHED: [&str; 4] = ["loopservices", "jobs", "pods", "events"];
    let kinds_in = |docs: &[serde_yaml::Value], kind: &str| -> Vec<(String, String)> {
        let of = |d: &serde_yaml::Value, k: &str| d["metadata"][k].as_str().unwrap_or("").to_string();
        docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).map(|d| (of(d, "namespace"), of(d, "name"))).collect()
    };
    // A list (and the older single value, one more item): a Role and RoleBinding in each.
    let list =
        must("helm", &["template", "x", CHART, "-n", "ops", "--set", "watchNamespaces={team-a,team-b}", "--set", "watchNamespace=team-c"]);
    let docs = documents(&list);
    let role = |ns: &str| (ns.to_string(), "x-loopservice-operator".to_string());
    let want = vec![role("team-a"), role("team-b"), role("team-c")];
    let operator_roles: Vec<_> = kinds_in(&docs, "Role").into_iter().filter(|r| r.1 == "x-loopservice-operator").collect();
    assert_eq!(operator_roles, want, "{list}");
    let bindings: Vec<_> = kinds_in(&docs, "RoleBinding").into_iter().filter(|r| r.1 == "x-loopservice-operator").collect();
    assert_eq!(bindings, want, "{list}");
    for d in docs.iter().filter(|d| d["kind"].as_str() == Some("RoleBinding")) {
        assert_eq!(d["subjects"][0]["namespace"].as_str(), Some("ops"), "bound to the operator's ServiceAccount");
    }
    // The aggregated roles go to whoever holds view, edit or admin; the operator's own
    // cluster-wide roles are those its ClusterRoleBindings name.
    let mut bound: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ClusterRoleBinding") && d["subjects"][0]["name"].as_str() == Some("x-loopservice-operator"))
        .filter_map(|d| d["roleRef"]["name"].as_str())
        .collect();
    bound.sort();
    // (metrics-auth: the /metrics token check's reviews, cluster-scoped; tests/metrics_auth.rs.
    // namespaces: the read of a Namespace's PodSecurity labels.)
    let want = ["x-loopservice-operator-claims", "x-loopservice-operator-metrics-auth", "x-loopservice-operator-namespaces"];
    assert_eq!(bound, want, "{list}");
    for d in
        docs.iter().filter(|d| d["kind"].as_str() == Some("ClusterRole") && bound.contains(&d["metadata"]["name"].as_str().unwrap_or("")))
    {
        assert!(!grants_any(d, &WATCHED), "no cluster-wide right over {WATCHED:?}: {d:?}");
    }
    assert!(list.contains("- --namespaces=team-a,team-b,team-c") && !list.contains("--exclude-namespaces"), "{list}");
    // The default: cluster-wide, kube-system left out by the operator's watches.
    let all = must("helm", &["template", "x", CHART]);
    let docs = documents(&all);
    assert_eq!(kinds_in(&docs, "ClusterRole").iter().filter(|r| r.1 == "x-loopservice-operator").count(), 1, "{all}");
    assert!(kinds_in(&docs, "Role").iter().all(|r| r.1 != "x-loopservice-operator"), "{all}");
    assert!(all.contains("- --exclude-namespaces=kube-system") && !all.contains("--namespaces="), "{all}");
    let more = must("helm", &["template", "x", CHART, "--set", "excludeNamespaces={kube-system,team-c}"]);
    assert!(more.contains("- --exclude-namespaces=kube-system,team-c"), "{more}");
    let none = must("helm", &["template", "x", CHART, "--set", "excludeNamespaces=null"]);
    assert!(!none.contains("--exclude-namespaces") && !none.contains("--namespaces="), "{none}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn helm_install_upgrade_uninstall_runs_loops_under_its_own_service_account() {
    // The LoopService's namespace, and the operator's own, which enforces `restricted`.
    let ns = TestNs::new("helm").await;
    let op = TestNs::new("helm-op").await;
    let restricted = server_minor(&ns.client).await >= 25;
    if restricted {
        op.enforce_pod_security("restricted").await;
    }
    ensure_crd(&ns.client).await;
    // Not `lso`: the RBAC tests apply the chart's RBAC as release `lso` with kubectl, and leave
    // its cluster-wide objects behind, which Helm would refuse to adopt.
    let release = "helm-lso";
    let watch = format!("watchNamespace={}", ns.name);
    // Before 1.25 server-side apply (Helm v4's way with CRDs) refuses the CRD's CEL rules:
    // there the CRD goes in as README says (ensure_crd did) and the chart skips it.
    let skip_crds = !restricted;
    let install = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "--install",
            release,
            CHART,
            "-n",
            &op.name,
            "-f",
            "hack/values-local.yaml",
            "--set",
            &watch,
            "--wait",
            "--timeout",
            "120s",
        ];
        if skip_crds {
            args.push("--skip-crds");
        }
        args.extend_from_slice(extra);
        must("helm", &args)
    };
    let out = install(&[]);
    assert!(out.contains("kubectl get loopservices"), "NOTES tell the user how to check:\n{out}");
    // PodSecurity admission refuses a Pod that breaks `restricted`: a running Pod meets it.
    must("kubectl", &["-n", &op.name, "rollout", "status", "deployment/helm-lso-loopservice-operator", "--timeout=120s"]);

    kubectl_apply(&format!(
        "apiVersion: loops.dev/v1alpha1\nkind: LoopService\nmetadata: {{name: beat, namespace: {}}}\nspec:\n  interval: 8s\n  image: busybox:1.36\n  imagePullPolicy: IfNotPresent\n  command: [sh, -c]\n  args: [\"echo beat $LOOP_NUMBER\"]\n  successfulJobsHistoryLimit: 50\n",
        ns.name
    ));
    wait_for("3 loops run by the in-cluster operator", Duration::from_secs(120), || async {
        (status(&ns, "beat").await.loops_succeeded >= 3).then_some(())
    })
    .await;
    // Next Run is set between loops: 8 s leaves a gap even when a busy node takes 5 s to start
    // and end a loop's Pod (4 s did not, and every loop overran).
    let row = wait_for("kubectl columns filled in", Duration::from_secs(90), || async {
        let (_, text) = run("kubectl", &["get", "loopservices", "-n", &ns.name, "--no-headers"]);
        let row = text.lines().next()?.to_string();
        (!row.contains("<none>") && row.split_whitespace().count() == 9).then_some(row)
    })
    .await;
    println!("{row}");

    // Least privilege: the operator's ServiceAccount does what it needs and nothing more.
    let sa = format!("system:serviceaccount:{}:helm-lso-loopservice-operator", op.name);
    let can = |verb: &str, what: &str| run("kubectl", &["auth", "can-i", verb, what, "-n", &ns.name, "--as", &sa]).1.trim().to_string();
    assert_eq!(can("create", "jobs.batch"), "yes");
    assert_eq!(can("patch", "jobs.batch"), "yes", "to take its finalizer off a recorded loop's Job");
    let status_patch =
        run("kubectl", &["auth", "can-i", "patch", "loopservices.loops.dev", "--subresource=status", "-n", &ns.name, "--as", &sa]).1;
    assert_eq!(status_patch.trim(), "yes");
    assert_eq!(can("list", "secrets"), "no");
    assert_eq!(can("get", "secrets"), "no");
    assert_eq!(can("create", "pods"), "no");
    assert_eq!(can("update", "loopservices.loops.dev"), "no");
    assert_eq!(
        run("kubectl", &["auth", "can-i", "list", "jobs.batch", "-n", "default", "--as", &sa]).1.trim(),
        "no",
        "a Role, only in its namespace"
    );

    // An upgrade with a changed value replaces the Pod and the loops go on, with no duplicate.
    let before = status(&ns, "beat").await.loops_started;
    install(&["--set", "logLevel=debug"]);
    must("kubectl", &["-n", &op.name, "rollout", "status", "deployment/helm-lso-loopservice-operator", "--timeout=120s"]);
    let deploy: Api<Deployment> = Api::namespaced(ns.client.clone(), &op.name);
    let args = deploy.get("helm-lso-loopservice-operator").await.unwrap().spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--log-level=debug".to_string()), "{args:?}");
    wait_for("loops after the upgrade", Duration::from_secs(120), || async {
        (status(&ns, "beat").await.last_finished_loop >= before + 2).then_some(())
    })
    .await;
    let jobs = loop_jobs(&ns, "beat").await;
    let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "one Job per loop across the upgrade");
    let st = status(&ns, "beat").await;
    assert_eq!(st.loops_failed, 0);

    must("helm", &["uninstall", release, "-n", &op.name, "--wait", "--timeout", "120s"]);
    wait_for("the operator's Pod to go", Duration::from_secs(60), || async {
        let (_, text) =
            run("kubectl", &["get", "pods", "-n", &op.name, "-l", "app.kubernetes.io/name=loopservice-operator", "--no-headers"]);
        (text.trim().is_empty() || text.contains("No resources found")).then_some(())
    })
    .await;
    for n in [&ns.name, &op.name] {
        let (_, roles) = run("kubectl", &["get", "roles,rolebindings,serviceaccounts", "-n", n, "-o", "name"]);
        assert!(!roles.contains("helm-lso-loopservice-operator"), "{roles}");
    }

    // The clean-up docs/operations.md gives after an uninstall: the loops' Jobs let go, then
    // the LoopService deleted, and its Jobs go with it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-loopservice"))
        .args(["release-jobs", "-n", &ns.name])
        .output()
        .expect("run kubectl-loopservice");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("job(s) released"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let held = loop_jobs(&ns, "beat").await.iter().filter(|j| !j.metadata.finalizers.clone().unwrap_or_default().is_empty()).count();
    assert_eq!(held, 0, "no Job keeps a finalizer after release-jobs");
    must("kubectl", &["delete", "loopservice", "beat", "-n", &ns.name, "--wait=true"]);
    wait_for("the LoopService's Jobs to go with it", Duration::from_secs(60), || async {
        loop_jobs(&ns, "beat").await.is_empty().then_some(())
    })
    .await;
}
