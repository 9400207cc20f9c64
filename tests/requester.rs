//! Who asked for a run, and why, against the local cluster: `kubectl loopservice run` names its
//! user and reason, the operator records them in the history, on the Job and in an Event that
//! `kubectl describe` shows, and the chart's admission policy refuses a request made in
//! another's name.

mod support;

use std::process::Command;

use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use support::policy::grant;
use support::*;

/// Runs `kubectl-loopservice ARGS` with `kubeconfig` (off the async runtime); its exit code,
/// stdout and stderr.
async fn plugin(kubeconfig: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = vec!["--kubeconfig".into(), kubeconfig.into()];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kubectl-loopservice")).args(&all).output().expect("run kubectl-loopservice")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    println!("$ kubectl loopservice {} -> exit {:?}\n{stdout}{stderr}", args.join(" "), out.status.code());
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

/// What a user with the built-in `edit` role may do with LoopServices and their loops, as a Role.
fn operates_loopservices() -> Value {
    json!([
        {"apiGroups": ["loops.dev"], "resources": ["loopservices"], "verbs": ["get", "list", "watch", "create", "patch", "update"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    ])
}

/// A LoopService that runs only when asked.
fn on_request(name: &str) -> Value {
    let mut v = ls(name, "1h", "echo ran");
    v["spec"]["suspend"] = json!(true);
    v
}

/// `alice` asks with the plugin, and someone by hand: the history, the Job and the Event say
/// who asked and why, or that it is not known. (On Kubernetes before 1.28 the API server cannot
/// tell the plugin who it is: its request names no one, and says so.)
#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_run_request_shows_who_asked_and_why_in_history_and_in_describe() {
    let ns = setup("asked").await;
    let _op = Operator::start(&ns.name, &[]);
    grant(&ns, "alice", operates_loopservices()).await;
    create_ls(&ns, on_request("report")).await.unwrap();
    let alice = kubeconfig_as("alice", &format!("{}-alice", ns.name));
    let knows_users = server_minor(&ns.client).await >= 28;

    let reason = "the night's data came late";
    let (code, out, err) = plugin(&alice, &["run", "report", "-n", &ns.name, "--reason", reason, "--wait", "--timeout", "90s"]).await;
    assert_eq!(code, 0, "{err}");
    let first = out.lines().next().unwrap();
    let value = first.rsplit_once("loops.dev/run-requested-at=").unwrap().1.trim_end_matches(')').to_string();
    if knows_users {
        assert!(first.starts_with("loopservice.loops.dev/report run requested by alice ("), "{first}");
    } else {
        assert!(err.contains("SelfSubjectReview is served from Kubernetes 1.28") && err.contains("names no requester"), "{err}");
    }
    let by = knows_users.then_some("alice");

    // The history: BY and REASON, in the table and as data.
    let (code, table, _) = plugin(&alice, &["history", "report", "-n", &ns.name]).await;
    assert_eq!(code, 0);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["LOOP", "TRIGGER", "BY", "STARTED", "DURATION", "RESULT", "JOB", "REASON", "MESSAGE"]);
    let row = table.lines().nth(1).unwrap();
    let cells = format!(
        r"^1 +Manual +{} +.+ +Succeeded +report-[0-9a-f]{{5}}-1 +{} +<none>$",
        regex::escape(by.unwrap_or("<unknown>")),
        regex::escape(reason)
    );
    assert!(regex::Regex::new(&cells).unwrap().is_match(row), "{row}");
    let (_, data, _) = plugin(&alice, &["history", "report", "-n", &ns.name, "-o", "json"]).await;
    let records: Vec<Value> = serde_json::from_str(&data).unwrap();
    assert_eq!((records[0]["requestedBy"].as_str(), records[0]["requestReason"].as_str()), (by, Some(reason)));

    // The loop's Job carries them, so that a status rebuilt from the Jobs keeps them.
    let job = &loop_jobs(&ns, "report").await[0];
    assert_eq!(job.annotations().get("loops.dev/run-requested-by").map(String::as_str), by);
    assert_eq!(job.annotations()["loops.dev/run-reason"], reason);

    // An Event says it, where `kubectl describe` shows it.
    let said = format!("(run requested at {value} by {}: {reason})", by.unwrap_or("an unknown user"));
    events_where(&ns, "report", "a LoopStarted Event naming who asked", |evs| {
        evs.iter().any(|(t, r, n)| t == "Normal" && r == "LoopStarted" && n.ends_with(&said))
    })
    .await;
    let described = Command::new("kubectl").args(["describe", "loopservice", "report", "-n", &ns.name]).output().unwrap();
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("LoopStarted") && described.contains(&said), "{described}");

    // A request by hand, which leaves out who asks (and takes alice's name off), is an
    // unknown user's.
    let by_hand = json!({"metadata": {"annotations": {
        "loops.dev/run-requested-at": "by-hand", "loops.dev/run-requested-by": null, "loops.dev/run-reason": null}}});
    ns.loopservices().patch("report", &PatchParams::default(), &Patch::Merge(&by_hand)).await.unwrap();
    let st = wait_status(&ns, "report", "loop 2 recorded", |st| st.history.iter().any(|r| r.r#loop == 2)).await;
    assert_eq!((st.history[0].requested_by.as_deref(), st.history[0].request_reason.as_deref()), (None, None));
    events_where(&ns, "report", "a LoopStarted Event of an unknown user's request", |evs| {
        evs.iter().any(|(_, r, n)| r == "LoopStarted" && n.ends_with("(run requested at by-hand by an unknown user)"))
    })
    .await;
    let (_, table, _) = plugin(&alice, &["history", "report", "-n", &ns.name]).await;
    assert!(regex::Regex::new(r"^2 +Manual +<unknown> +.+ +<none> +<none>$").unwrap().is_match(table.lines().nth(1).unwrap()), "{table}");
}

/// The run-requester policy is served from Kubernetes 1.30.
mod from_1_30 {
    use kube::api::{Patch, PatchParams, PostParams};
    use kube::{Api, ResourceExt};
    use loopservice_operator::crd::LoopService;
    use serde_json::{json, Value};
    use std::time::Duration;

    use super::support::policy::{as_user, grant, Policy, RUN_REQUESTER};
    use super::support::*;
    use super::{on_request, operates_loopservices, plugin};

    /// The annotations of a merge patch.
    fn annotate(pairs: Value) -> Patch<Value> {
        Patch::Merge(json!({"metadata": {"annotations": pairs}}))
    }

    /// Asserts the API server refused `attack` (403) with a message containing `says`.
    fn refused<T: std::fmt::Debug>(attack: &str, res: Result<T, kube::Error>, says: &str) {
        match res {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(says) => println!("refused: {attack}: {}", s.message),
            other => panic!("{attack}: not refused as it should be: {other:?}"),
        }
    }

    /// The policy's refusal of `patch` by `api`; `None` when admitted.
    async fn refusal(api: &Api<LoopService>, patch: &Patch<Value>) -> Option<String> {
        match api.patch("report", &PatchParams::default(), patch).await {
            Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
            Err(e) => panic!("{e}"),
            Ok(_) => None,
        }
    }

    /// bob tries to ask for runs in alice's name, or to put his request or reason under hers:
    /// each refused with a message that says whom the request names and who asks. What alice
    /// and bob ask in their own names, or with no name, is admitted, and so are writes that
    /// are no request.
    #[tokio::test]
    #[ignore = "needs the local cluster: run `make test`"]
    async fn a_forged_requester_is_refused_and_a_true_one_admitted() {
        let ns = setup("forged").await;
        require_minor(&ns.client, 30).await;
        grant(&ns, "alice", operates_loopservices()).await;
        grant(&ns, "bob", operates_loopservices()).await;
        create_ls(&ns, on_request("report")).await.unwrap();
        let _policy = Policy::install_from(&ns, RUN_REQUESTER, &[]).await;
        let (alice, bob): (Api<LoopService>, Api<LoopService>) =
            (Api::namespaced(as_user("alice").await, &ns.name), Api::namespaced(as_user("bob").await, &ns.name));

        // The policy takes a moment to load: a dry run asks until it answers.
        let forged = annotate(json!({"loops.dev/run-requested-at": "1", "loops.dev/run-requested-by": "alice"}));
        let dry = PatchParams { dry_run: true, ..PatchParams::default() };
        let said = wait_for("the policy to refuse bob's request in alice's name", Duration::from_secs(60), || async {
            match bob.patch("report", &dry, &forged).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(s.message),
                _ => None,
            }
        })
        .await;
        assert!(
            said.contains("loops.dev/run-requested-by must name the user who asks for the run: it names alice, and bob asks"),
            "{said}"
        );
        let says = "it names alice, and bob asks";
        refused("a request in another's name", bob.patch("report", &PatchParams::default(), &forged).await, says);

        // alice asks in her own name, with a reason.
        let hers =
            annotate(json!({"loops.dev/run-requested-at": "2", "loops.dev/run-requested-by": "alice", "loops.dev/run-reason": "hers"}));
        assert_eq!(refusal(&alice, &hers).await, None, "alice asks in her own name");
        // While her name stands, bob may not slip a request or a reason of his under it.
        refused(
            "a new request under another's name",
            bob.patch("report", &PatchParams::default(), &annotate(json!({"loops.dev/run-requested-at": "3"}))).await,
            says,
        );
        refused(
            "a new reason under another's name",
            bob.patch("report", &PatchParams::default(), &annotate(json!({"loops.dev/run-reason": "bob's"}))).await,
            says,
        );
        let mut stored = bob.get("report").await.unwrap();
        stored.annotations_mut().insert("loops.dev/run-requested-at".into(), "4".into());
        refused(
            "a replace (PUT) with a new request under another's name",
            bob.replace("report", &PostParams::default(), &stored).await,
            says,
        );
        let mut made: LoopService = serde_json::from_value(on_request("made")).unwrap();
        made.annotations_mut().insert("loops.dev/run-requested-by".into(), "alice".into());
        refused("a create in another's name", bob.create(&PostParams::default(), &made).await, says);
        let kept = bob.get("report").await.unwrap();
        let a = kept.annotations();
        assert_eq!(
            (a["loops.dev/run-requested-at"].as_str(), a["loops.dev/run-requested-by"].as_str(), a["loops.dev/run-reason"].as_str()),
            ("2", "alice", "hers"),
            "alice's request stands as she made it"
        );

        // What is no request is admitted whoever writes it, as is a request by hand that takes
        // the name off (its loop is an unknown user's).
        assert_eq!(refusal(&bob, &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}}))).await, None, "a label");
        let by_hand =
            annotate(json!({"loops.dev/run-requested-at": "5", "loops.dev/run-requested-by": null, "loops.dev/run-reason": null}));
        assert_eq!(refusal(&bob, &by_hand).await, None, "a request by hand with no name");
        // The plugin names its user as the API server knows it, which is what the policy checks.
        let kubeconfig = kubeconfig_as("bob", &format!("{}-bob", ns.name));
        let (code, out, err) = plugin(&kubeconfig, &["run", "report", "-n", &ns.name, "--reason", "bob's turn"]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("loopservice.loops.dev/report run requested by bob ("), "{out}");
        let a = bob.get("report").await.unwrap().annotations().clone();
        assert_eq!((a["loops.dev/run-requested-by"].as_str(), a["loops.dev/run-reason"].as_str()), ("bob", "bob's turn"));
        // And alice's plugin, after bob's request, asks in her name.
        let kubeconfig = kubeconfig_as("alice", &format!("{}-alice", ns.name));
        let (code, _, err) = plugin(&kubeconfig, &["run", "report", "-n", &ns.name]).await;
        assert_eq!(code, 0, "{err}");
        let a = alice.get("report").await.unwrap().annotations().clone();
        assert_eq!((a.get("loops.dev/run-requested-by").map(String::as_str), a.get("loops.dev/run-reason")), (Some("alice"), None));
    }
}
