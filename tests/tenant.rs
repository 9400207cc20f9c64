//! A tenant gets no more through a LoopService than a Job would give it: the chart's admission
//! policy admits a LoopService, or a change of its spec, only from a user who may create Jobs
//! in its namespace. An operator told to watch a list of namespaces works in those only, with
//! the chart's Roles there, and never touches a LoopService elsewhere.

mod support;

/// ValidatingAdmissionPolicy is served from Kubernetes 1.30.
mod from_1_30 {
    use std::time::Duration;

    use kube::api::{Patch, PatchParams, PostParams};
    use kube::Api;
    use loopservice_operator::crd::LoopService;
    use serde_json::json;

    use super::support::policy::{as_user, grant, Policy};
    use super::support::*;

    /// What a user with LoopService rights alone tries, to get a Pod a Job would not give it:
    /// each refused by the chart's policy with a message naming the missing right.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_loopservice_only_user_gets_no_pod_through_a_loopservice() {
        let ns = setup("loops-only").await;
        let loops = json!({"apiGroups": ["loops.dev"], "resources": ["loopservices"], "verbs": ["get", "create", "patch", "update"]});
        grant(&ns, "loops-only", json!([loops])).await;
        let _policy = Policy::install(&ns, &[]).await;
        let only: Api<LoopService> = Api::namespaced(as_user("loops-only").await, &ns.name);
        let mut t = super::attacks::Tally::default();
        let with = |name: &str, pod: serde_json::Value| -> LoopService {
            let mut v = ls(name, "1h", "echo hi");
            if pod.get("containers").is_some() {
                // The loop's container in full, in place of the spec's shorthand for it.
                for k in ["image", "imagePullPolicy", "command", "args"] {
                    v["spec"].as_object_mut().unwrap().remove(k);
                }
            }
            v["spec"]["template"] = json!({"spec": pod});
            serde_json::from_value(v).unwrap()
        };
        let loop_with = |security: serde_json::Value| json!({"containers": [{"name": "loop", "image": "busybox:1.36", "command": ["true"], "securityContext": security}]});
        let privileged = with("privileged", loop_with(json!({"privileged": true})));
        let dry = PostParams { dry_run: true, ..PostParams::default() };
        wait_for("the policy to refuse a LoopService from loops-only", Duration::from_secs(60), || async {
            matches!(only.create(&dry, &privileged).await, Err(kube::Error::Api(s)) if s.code == 403).then_some(())
        })
        .await;
        let says: &[&str] = &["loops-only may not create Jobs in namespace", &ns.name];
        let creates = [
            ("a privileged container", privileged.clone()),
            ("a hostPath volume of the node's root", with("hostpath", json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}))),
            ("the node's PID namespace", with("hostpid", json!({"hostPID": true}))),
            ("the node's network", with("hostnet", json!({"hostNetwork": true}))),
            ("another ServiceAccount's rights", with("sa", json!({"serviceAccountName": "builder"}))),
            ("added capabilities", with("caps", loop_with(json!({"capabilities": {"add": ["SYS_ADMIN"]}})))),
        ];
        for (attack, v) in creates {
            t.refused(&format!("create with {attack}"), only.create(&PostParams::default(), &v).await, says);
        }
        // A LoopService someone allowed to create Jobs made: loops-only may not change what runs.
        ns.loopservices()
            .create(&PostParams::default(), &serde_json::from_value::<LoopService>(ls("made", "1h", "echo hi")).unwrap())
            .await
            .unwrap();
        let ssa = PatchParams::apply("loops-only").force();
        let changes = [
            ("merge-patch the command", Patch::Merge(json!({"spec": {"command": ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token"]}}))),
            ("merge-patch the image", Patch::Merge(json!({"spec": {"image": "attacker.example/tool:1"}}))),
            ("JSON-patch a hostPath volume in", Patch::Json(serde_json::from_value(json!([{"op": "add", "path": "/spec/template", "value": {"spec": {"volumes": [{"name": "r", "hostPath": {"path": "/"}}]}}}])).unwrap())),
        ];
        for (attack, patch) in changes {
            t.refused(attack, only.patch("made", &PatchParams::default(), &patch).await, says);
        }
        let applied = json!({"apiVersion": "loops.dev/v1alpha1", "kind": "LoopService", "metadata": {"name": "made"}, "spec": {"serviceAccountName": "builder"}});
        t.refused("server-side apply another ServiceAccount", only.patch("made", &ssa, &Patch::Apply(applied)).await, says);
        let mut replaced = only.get("made").await.unwrap();
        replaced.spec.suspend = Some(false);
        replaced.spec.interval = "1s".into();
        replaced.spec.args = Some(vec!["while true; do :; done".into()]);
        t.refused("replace (PUT) the spec", only.replace("made", &PostParams::default(), &replaced).await, says);
        t.print("LoopService-only user");
        for gone in ["privileged", "hostpath", "hostpid", "hostnet", "sa", "caps"] {
            assert!(only.get_opt(gone).await.unwrap().is_none(), "{gone} was stored");
        }
    }

    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_user_who_may_not_create_jobs_may_not_create_a_loopservice_or_change_its_spec() {
        let ns = setup("tenant").await;
        let loops = json!({"apiGroups": ["loops.dev"], "resources": ["loopservices"], "verbs": ["get", "create", "patch", "update"]});
        let jobs = json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]});
        grant(&ns, "loops-only", json!([loops])).await;
        grant(&ns, "loops-and-jobs", json!([loops, jobs])).await;
        let _policy = Policy::install(&ns, &[]).await;
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

    /// The message of the policy's refusal of a dry-run create of `ls`; `None` when admitted.
    async fn refusal(api: &Api<LoopService>, ls: &LoopService) -> Option<String> {
        match api.create(&PostParams { dry_run: true, ..PostParams::default() }, ls).await {
            Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
            _ => None,
        }
    }

    /// With the chart's deny-list on, a LoopService whose Pod template asks for what the node
    /// gives is refused with a message naming what, even from a user who may create Jobs; a
    /// plain one, and one that adds a capability of the allowed set, are admitted.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn the_deny_list_refuses_a_pod_template_that_asks_for_the_node_each_with_its_message() {
        let ns = setup("denylist").await;
        require_minor(&ns.client, 30).await;
        let loops = json!({"apiGroups": ["loops.dev"], "resources": ["loopservices"], "verbs": ["get", "create"]});
        let jobs = json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]});
        grant(&ns, "jobs-too", json!([loops, jobs])).await;
        let _policy = Policy::install(&ns, &["--set", "admissionPolicy.denyList.enabled=true"]).await;
        let api: Api<LoopService> = Api::namespaced(as_user("jobs-too").await, &ns.name);
        let with_pod = |name: &str, pod: serde_json::Value| -> LoopService {
            let mut v = ls(name, "1h", "echo hi");
            v["spec"]["template"] = json!({"spec": pod});
            serde_json::from_value(v).unwrap()
        };
        let container = |extra: serde_json::Value| {
            let mut c = json!({"name": "helper", "image": "busybox:1.36"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        // The policy takes a moment to load: a dry run asks until it answers.
        let privileged = with_pod("privileged", json!({"containers": [container(json!({"securityContext": {"privileged": true}}))]}));
        let said = wait_for("the deny-list to refuse a privileged container", Duration::from_secs(60), || refusal(&api, &privileged)).await;
        assert!(said.contains("privileged container"), "{said}");
        let cases = [
            (json!({"initContainers": [container(json!({"securityContext": {"privileged": true}}))]}), "privileged container"),
            (json!({"hostPID": true}), "spec.template.spec.hostPID may not be true"),
            (json!({"hostNetwork": true}), "spec.template.spec.hostNetwork may not be true"),
            (json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), "may not use hostPath"),
            (json!({"containers": [container(json!({"ports": [{"containerPort": 80, "hostPort": 80}]}))]}), "ports[].hostPort"),
            (
                json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}))]}),
                "add Linux capabilities beyond",
            ),
            (
                json!({"containers": [container(json!({"securityContext": {"allowPrivilegeEscalation": true}}))]}),
                "allow privilege escalation",
            ),
        ];
        for (pod, words) in cases {
            let said = refusal(&api, &with_pod("refused", pod.clone())).await.unwrap_or_else(|| panic!("admitted: {pod}"));
            println!("refused: {said}");
            assert!(said.contains(words) && said.contains("this cluster refuses LoopServices"), "{pod}: {said}");
        }
        api.create(&PostParams::default(), &serde_json::from_value(ls("plain", "1h", "echo hi")).unwrap())
            .await
            .expect("a plain one is admitted");
        let allowed = json!({"containers": [container(json!({"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}}}))]});
        api.create(&PostParams::default(), &with_pod("bind", allowed)).await.expect("an allowed capability is admitted");
    }
}

/// The hostile-tenant suite: a tenant in one namespace tries attacks on the operator and on
/// another namespace's loops; each is refused with a message that names what was wrong, or
/// contained in the tenant's own LoopService, and the other namespace's loop goes on as before.
pub mod attacks {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams, PostParams};
    use kube::{Api, ResourceExt};
    use loopservice_operator::crd::{LoopServiceStatus, Phase};
    use loopservice_operator::keys::{ANN_RUN_REQUESTED_AT, LABEL_CONTROLLER_UID, LABEL_JOB_NAME, LABEL_LOOP, LABEL_UID};
    use serde_json::json;

    use super::support::*;

    /// Attacks tried so far, one line each, printed at the end of a test.
    #[derive(Default)]
    pub struct Tally(Vec<String>);

    impl Tally {
        /// An attack the API server refused (schema, CEL, admission or size): `res` is an
        /// error whose message names every one of `names`.
        pub fn refused<T: std::fmt::Debug>(&mut self, attack: &str, res: Result<T, kube::Error>, names: &[&str]) {
            match res {
                Err(kube::Error::Api(s)) => {
                    assert!(
                        names.iter().all(|n| s.message.contains(n)),
                        "{attack}: refused, but the message names not all of {names:?}: {}",
                        s.message
                    );
                    self.0.push(format!("refused    {attack}: {}", clip(&s.message)));
                }
                other => panic!("{attack}: not refused: {other:?}"),
            }
        }

        /// An attack that got through the API server and was contained as `how`.
        pub fn contained(&mut self, attack: &str, how: &str) {
            self.0.push(format!("contained  {attack}: {}", clip(how)));
        }

        pub fn skipped(&mut self, attack: &str, why: &str) {
            self.0.push(format!("SKIPPED    {attack}: {why}"));
        }

        pub fn print(&self, suite: &str) {
            println!("{suite}: {} attacks", self.0.len());
            for l in &self.0 {
                println!("  {l}");
            }
        }
    }

    /// The part of a message that says why, shortened to a line.
    fn clip(s: &str) -> String {
        let s = s.rsplit_once("denied request: ").map_or(s, |(_, why)| why);
        if s.len() <= 160 {
            return s.to_string();
        }
        let cut = (0..=160).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    }

    fn with_spec(name: &str, spec: serde_json::Value) -> serde_json::Value {
        let mut v = ls(name, "1h", "echo never");
        for (k, x) in spec.as_object().unwrap() {
            v["spec"][k] = x.clone();
        }
        v
    }

    /// What the schema and the API server refuse, whoever asks, each naming its field.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn oversized_and_malformed_specs_are_refused_naming_the_field() {
        let ns = setup("attack-schema").await;
        let minor = server_minor(&ns.client).await;
        let mut t = Tally::default();
        let many = |n: usize, each: usize| -> serde_json::Value { (0..n).map(|_| json!("x".repeat(each))).collect() };
        let cases = [
            (
                "20,000 environment variables",
                with_spec("env", json!({"env": (0..20_000).map(|i| json!({"name": format!("V{i}"), "value": "x"})).collect::<Vec<_>>()})),
                vec!["spec.env"],
            ),
            ("300 arguments", with_spec("args", json!({"args": many(300, 1)})), vec!["spec.args"]),
            ("an argument of 20,000 characters", with_spec("arg", json!({"args": many(1, 20_000)})), vec!["spec.args"]),
            ("300 command words", with_spec("command", json!({"command": many(300, 1)})), vec!["spec.command"]),
            ("an image reference of 2,000 characters", with_spec("image", json!({"image": "x".repeat(2000)})), vec!["spec.image"]),
            (
                "a service account name of 300 characters",
                with_spec("sa", json!({"serviceAccountName": "a".repeat(300)})),
                vec!["spec.serviceAccountName"],
            ),
            ("a spec of 4 MiB, past the API server's request limit", with_spec("huge", json!({"args": many(256, 16_000)})), vec![]),
            (
                "reserved labels on the Pod template (to pass as another LoopService's Pod)",
                with_spec("labels", json!({"template": {"metadata": {"labels": {LABEL_UID: "0000", LABEL_JOB_NAME: "x"}}}})),
                vec!["spec.template.metadata.labels"],
            ),
            (
                "reserved annotations on the Pod template",
                with_spec("annotations", json!({"template": {"metadata": {"annotations": {"loops.dev/loop": "1"}}}})),
                vec!["spec.template.metadata.annotations"],
            ),
        ];
        for (attack, v, names) in cases {
            // Before 1.25 (no CEL) the reserved keys are the operator's twin check: InvalidSpec.
            if minor < 25 && attack.starts_with("reserved") {
                t.skipped(attack, "checked by CEL, which this API server lacks (the operator's twin check reports it in status)");
                continue;
            }
            t.refused(attack, create_raw(&ns, v).await, &names);
        }
        let long = "n".repeat(64);
        if minor >= 25 {
            t.refused("a name of 64 characters", create_raw(&ns, ls(&long, "1h", "echo never")).await, &["at most 63 characters"]);
            t.refused(
                "a name of 253 characters",
                create_raw(&ns, ls(&"n".repeat(253), "1h", "echo never")).await,
                &["at most 63 characters"],
            );
        } else {
            t.skipped(
                "names of 64 and 253 characters",
                "checked by CEL, which this API server lacks (the operator's twin check reports it in status)",
            );
        }
        t.print("schema");
        assert!(ns.loopservices().list(&Default::default()).await.unwrap().items.is_empty(), "a refused LoopService was stored");
    }

    /// The victim's status without what changes with every loop, for a before/after check.
    /// What must not change of the victim's status: that it loops (Running or Waiting, as the
    /// moment falls: a loop near its interval may have overrun), and no error.
    fn steady_part(st: &LoopServiceStatus) -> (bool, String, i64) {
        (matches!(st.phase, Some(Phase::Running | Phase::Waiting)), format!("{:?}", st.last_error), st.consecutive_failures)
    }

    /// Attacks on another namespace's loops and on the tenant's own LoopServices' bookkeeping:
    /// spoofed Pods, Jobs and Events that claim to be another LoopService's, bad run requests, a
    /// flood of broken specs, name squatting and spec churn. Each is contained, and the victim
    /// namespace's loop runs every 2 s with no error throughout.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_hostile_tenant_is_contained_and_other_namespaces_loop_on() {
        let victim = setup("victim").await;
        let tenant = setup("tenant").await;
        let op = Operator::start_for(&[&victim.name, &tenant.name], &[]);
        let mut t = Tally::default();
        let steady = create_ls(&victim, ls("steady", "2s", "echo ok")).await.unwrap();
        let uid = steady.uid().unwrap();
        let first = wait_jobs(&victim, "steady", 1).await;
        let job = first[0].name_any();
        let job_uid = first[0].uid().unwrap();
        let before = wait_status(&victim, "steady", "loop 1 finished", |st| st.last_finished_loop >= 1).await;

        // Spoofing, from the tenant's namespace.
        let spoof_labels = json!({LABEL_UID: uid, LABEL_JOB_NAME: job, LABEL_CONTROLLER_UID: job_uid, LABEL_LOOP: "999"});
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "spoof-pod", "labels": spoof_labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "loop", "image": "nope.invalid/none:1", "command": ["false"]}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(tenant.client.clone(), &tenant.name).create(&PostParams::default(), &pod).await.unwrap();
        let failed: Pod = serde_json::from_value(json!({
            "metadata": {"name": "spoof-failed", "labels": spoof_labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", "echo PWNED > /dev/termination-log; exit 7"]}]}
        }))
        .unwrap();
        Api::<Pod>::namespaced(tenant.client.clone(), &tenant.name).create(&PostParams::default(), &failed).await.unwrap();
        let job_spoof: Job = serde_json::from_value(json!({
            "metadata": {"name": "spoof-job", "labels": spoof_labels, "annotations": {"loops.dev/loop": "999", "loops.dev/scheduled-time": "2020-01-01T00:00:00Z"}},
            "spec": {"template": {"metadata": {"labels": {LABEL_UID: uid}}, "spec": {"restartPolicy": "Never", "containers": [
                {"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["false"]}]}}}
        }))
        .unwrap();
        tenant.jobs().create(&PostParams::default(), &job_spoof).await.unwrap();
        let same_name = create_ls(&tenant, ls("steady", "2s", "exit 3")).await.unwrap();

        // Bad run requests and squatting, on the tenant's own LoopServices.
        create_ls(&tenant, ls("target", "1h", "echo ok")).await.unwrap();
        wait_jobs(&tenant, "target", 1).await;
        wait_status(&tenant, "target", "loop 1 of target finished", |st| st.last_finished_loop >= 1).await;
        let bad_requests = [
            ("a run request of 250,000 characters", "9".repeat(250_000)),
            ("a run request with a newline", "2026-12-05T00:00:00Z\nX-Injected: yes".to_string()),
            ("a run request that poses as a digest", "sha256:0123456789abcdef".to_string()),
        ];
        for (attack, value) in bad_requests {
            let patch = json!({"metadata": {"annotations": {ANN_RUN_REQUESTED_AT: value}}});
            tenant.loopservices().patch("target", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            let key = loopservice_operator::status::refused_request_key(&value);
            let st = wait_status(&tenant, "target", attack, |st| st.last_handled_run_request.as_deref() == Some(key.as_str())).await;
            assert_eq!(st.loops_started, 1, "{attack}: a loop ran");
            let evs = events_where(&tenant, "target", attack, |e| e.iter().any(|(_, r, _)| r == "RunRequestRefused")).await;
            let note = evs.iter().find(|(_, r, _)| r == "RunRequestRefused").map(|e| e.2.clone()).unwrap_or_default();
            t.contained(attack, &format!("no loop; handled as {key:?}; Warning RunRequestRefused: {note}"));
        }
        let squatted = create_ls_with_first_job_name_taken(&tenant, ls("squatted", "2s", "echo ok")).await;
        let st = wait_status(&tenant, "squatted", "squatted stuck on its Job name", |st| {
            st.conditions.iter().any(|c| c.type_ == "Ready" && c.message.contains(&squatted))
        })
        .await;
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        t.contained("a Job under the name of the tenant's own next loop", &format!("{}: {}", ready.reason, ready.message));

        // A flood: broken specs (refused by the API server's Job validation), and spec churn.
        let broken = |name: String| {
            let mut v = ls(&name, "2s", "echo never");
            v["spec"]["template"] = json!({"spec": {"containers": [{"name": "side", "image": "busybox:1.36", "volumeMounts": [{"name": "none", "mountPath": "/x"}]}]}});
            v
        };
        let creates = (0..200).map(|i| create_ls(&tenant, broken(format!("broken-{i:03}"))));
        for r in futures::future::join_all(creates).await {
            r.unwrap();
        }
        let churn = create_ls(&tenant, ls("churn", "2s", "echo 0")).await.unwrap().name_any();
        for i in 1..=100 {
            let patch = json!({"spec": {"args": [format!("echo {i}")]}});
            tenant.loopservices().patch(&churn, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
        let st = wait_status(&tenant, "broken-199", "the last broken spec reported", |st| st.phase == Some(Phase::Invalid)).await;
        let msg = st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
        assert!(msg.contains("volumeMounts"), "{msg}");
        t.contained("200 LoopServices the API server refuses, every 2 s", &format!("each InvalidSpec: {msg}"));
        wait_status(&tenant, &churn, "the churned spec worked", |st| st.observed_generation == Some(101)).await;
        t.contained("100 spec changes in a row", "worked to the last generation");

        // Meanwhile the victim looped on, untouched.
        let after =
            wait_status(&victim, "steady", "five more loops of the victim", |st| st.last_finished_loop >= before.last_finished_loop + 5)
                .await;
        assert_eq!(steady_part(&after), steady_part(&before), "the victim's status changed: {after:?}");
        assert!(
            after.loops_started < 999 && !format!("{after:?}").contains("PWNED") && !format!("{after:?}").contains("spoof"),
            "{after:?}"
        );
        let victim_jobs = loop_jobs(&victim, "steady").await;
        assert!(victim_jobs.iter().all(|j| j.namespace().as_deref() == Some(victim.name.as_str())));
        for attack in [
            "a Pod in the tenant's namespace with the victim's uid, Job name and controller-uid labels (stuck, image missing)",
            "a failed Pod with the victim's labels and a termination message",
            "a Job with the victim's uid label and loop 999 annotations",
            "a LoopService of the same name in the tenant's namespace",
        ] {
            t.contained(attack, "the victim's status, Jobs and loops unchanged");
        }
        let theirs = wait_jobs(&tenant, &same_name.name_any(), 1).await;
        assert!(
            theirs.iter().all(|j| j.labels().get(LABEL_UID) == same_name.uid().as_ref()),
            "the same-named LoopService's Jobs carry its own uid"
        );
        t.print("tenant");
        assert!(!op.log_text().contains("panicked"), "{}", op.log_text());
    }
}

/// The operator's peak resident memory (VmHWM) in MiB.
fn peak_mib(op: &support::Operator) -> f64 {
    let kib: f64 = std::fs::read_to_string(format!("/proc/{}/status", op.pid()))
        .expect("the operator runs")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// The largest specs the operator works (just under its 32 KiB cap), 1,000 of them: the
/// operator that sees them created, and one started with all of them there (its first list
/// holds them all at once), each stay within the chart's 128 MiB memory limit.
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_thousand_of_the_largest_specs_fit_in_the_charts_memory_limit() {
    use std::time::Duration;

    use futures::StreamExt;
    use support::*;
    const N: usize = 1000;
    let ns = setup("largest").await;
    let mut big = ls("x", "1h", "echo never");
    big["spec"]["suspend"] = true.into();
    big["spec"]["args"] = (0..2).map(|i| serde_json::json!(format!("{i}{}", "x".repeat(15_850)))).collect();
    let bytes = serde_json::to_vec(&big["spec"]).unwrap().len();
    let cap = loopservice_operator::runtime::MAX_SPEC_BYTES;
    assert!(bytes > cap - 1024 && bytes <= cap, "a spec of {bytes} bytes is not the largest under the {cap}-byte cap");
    let op = Operator::start(&ns.name, &[]);
    let creates = futures::stream::iter(0..N).map(|i| {
        let (ns, mut v) = (&ns, big.clone());
        async move {
            v["metadata"]["name"] = format!("largest-{i:04}").into();
            create_ls(ns, v).await.unwrap_or_else(|e| panic!("create largest-{i:04}: {e}"));
        }
    });
    creates.buffer_unordered(16).collect::<Vec<()>>().await;
    wait_for("all of them reconciled", Duration::from_secs(300), || async { (op.decided_reconciles().await >= N as u64).then_some(()) })
        .await;
    let seen_created = peak_mib(&op);
    let first = status(&ns, "largest-0000").await;
    assert_eq!(first.phase, Some(loopservice_operator::crd::Phase::Suspended), "the largest spec under the cap is worked: {first:?}");
    drop(op);
    let op = Operator::start(&ns.name, &[]);
    wait_for("all of them reconciled after a restart", Duration::from_secs(300), || async {
        (op.decided_reconciles().await >= N as u64).then_some(())
    })
    .await;
    let restarted = peak_mib(&op);
    println!("{N} suspended LoopServices with {bytes}-byte specs: peak resident memory {seen_created:.1} MiB as they were created, {restarted:.1} MiB when started with them there");
    for (what, mib) in [("as they were created", seen_created), ("after a restart", restarted)] {
        assert!(mib < 128.0, "peak resident memory {what} {mib:.1} MiB, past the chart's 128 MiB limit");
    }
    assert!(!op.log_text().contains("panicked"), "{}", op.log_text());
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
    let peak = peak_mib(&op);
    println!("40 specs of 1251 KiB refused; the operator's peak resident memory {peak:.1} MiB");
    assert!(peak < 128.0, "peak resident memory {peak:.1} MiB, past the chart's 128 MiB limit");
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
