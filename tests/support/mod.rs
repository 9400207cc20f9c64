//! Test support for integration tests against the local cluster (`hack/cluster.sh up`).
//!
//! Each test makes its own namespace and deletes it afterwards; operator tests run their own
//! operator process, watching that namespace only.
#![allow(dead_code)]

pub mod job_watch;
pub mod once;
pub mod policy;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use loopservice_operator::crd::LoopService;
use serde_json::json;

pub const HOW_TO_START: &str =
    "no Kubernetes cluster answers: start the local one with `hack/cluster.sh up` and `eval \"$(hack/cluster.sh env)\"` (or run `make test`, which does both)";

pub async fn client() -> Client {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => panic!("{HOW_TO_START} ({e})"),
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .unwrap_or_else(|_| panic!("{HOW_TO_START} (timed out)"))
    {
        panic!("{HOW_TO_START} ({e})");
    }
    client
}

/// The API server's minor version (37 for v1.37.2).
pub async fn server_minor(client: &Client) -> u32 {
    let v = client.apiserver_version().await.expect("server version");
    v.minor.trim_end_matches('+').parse().expect("numeric minor version")
}

/// Panics unless the cluster runs Kubernetes 1.`min` or later. A test that applies only from
/// some version lives in a module `from_1_<min>` and calls this first: `make test` leaves such
/// tests out on an older cluster (nextest counts them as skipped), so on an older cluster this
/// is reached only by a run by hand, which then fails rather than passing without checking.
pub async fn require_minor(client: &Client, min: u32) {
    let minor = server_minor(client).await;
    assert!(
        minor >= min,
        "this test applies to Kubernetes 1.{min} and later, and this cluster is 1.{minor}: it checks nothing here. \
         `make test` leaves it out on this version (nextest reports it as skipped); by hand, add -E 'not test(/^from_1_{min}::/)'"
    );
}

/// A namespace of one test's own, deleted when dropped.
pub struct TestNs {
    pub name: String,
    pub client: Client,
}

impl TestNs {
    pub async fn new(prefix: &str) -> TestNs {
        let client = client().await;
        let suffix = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() & 0xffffff);
        let name = format!("t-{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"loops.dev/test": "true"}}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create test namespace");
        // Kubernetes before 1.24 refuses Pods until the namespace's default ServiceAccount has
        // its token Secret, which the controllers add a moment after the namespace appears;
        // later versions mint tokens on demand and only need the ServiceAccount.
        let legacy_tokens = server_minor(&client).await < 24;
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for("the default ServiceAccount (and its token on Kubernetes < 1.24)", Duration::from_secs(30), || async {
            let sa = sa.get_opt("default").await.ok().flatten()?;
            (!legacy_tokens || sa.secrets.is_some_and(|s| !s.is_empty())).then_some(())
        })
        .await;
        TestNs { name, client }
    }

    /// Labels the namespace so that PodSecurity admission enforces `level` (1.25+).
    pub async fn enforce_pod_security(&self, level: &str) {
        let patch = json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/enforce-version": "latest",
        }}});
        Api::<Namespace>::all(self.client.clone())
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label the namespace for PodSecurity");
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn loopservices(&self) -> Api<LoopService> {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The test's runtime may be shutting down: use a runtime and client of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let client = Client::try_default().await.ok()?;
                release_jobs(&client, &name).await;
                Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await.ok()
            })
        })
        .join();
    }
}

/// Takes the operator's finalizer off the Jobs in `ns`, as `kubectl loopservice release-jobs`
/// does after an uninstall: the test's operator is gone, and a namespace is not deleted while
/// a Job in it still has a finalizer.
pub async fn release_jobs(client: &Client, ns: &str) {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    for j in api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
        if let Some(h) = loopservice_operator::job::held(&j) {
            let patch = kube::api::Patch::<()>::Json(loopservice_operator::job::release_patch(h.index));
            let _ = api.patch(&h.name, &PatchParams::default(), &patch).await;
        }
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the CRD from `crds/loopservice.yaml` (created, or replacing the one there) and
/// waits until it is served. Create and replace work on every Kubernetes version: an API
/// server older than the CRD's CEL rules (before 1.25) drops them, where a server-side apply
/// would refuse fields it does not know.
pub async fn ensure_crd(client: &Client) {
    let text = std::fs::read_to_string(repo_root().join("crds/loopservice.yaml")).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for("the CRD to be created or replaced", Duration::from_secs(30), || async {
        match api.get_opt(&crd.name_any()).await.expect("read CRD") {
            None => api.create(&PostParams::default(), &crd).await.ok().map(|_| ()),
            Some(old) if old.spec == crd.spec => Some(()),
            Some(old) => {
                let mut new = crd.clone();
                new.metadata.resource_version = old.metadata.resource_version;
                // A conflict with another test's replace is retried.
                api.replace(&crd.name_any(), &PostParams::default(), &new).await.ok().map(|_| ())
            }
        }
    })
    .await;
    wait_for("the CRD to be established", Duration::from_secs(30), || async {
        let c = api.get(&crd.name_any()).await.ok()?;
        let ok = c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        ok.then_some(())
    })
    .await;
}

/// How long a cluster test waits for loops to happen.
pub const LONG: Duration = Duration::from_secs(90);

/// A LoopService running `script` in busybox every `interval`, keeping 20 Jobs of each kind.
pub fn ls(name: &str, interval: &str, script: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "interval": interval,
            "image": "busybox:1.36",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c"],
            "args": [script],
            "successfulJobsHistoryLimit": 20,
            "failedJobsHistoryLimit": 20,
        }
    })
}

/// A test namespace with the CRD installed.
pub async fn setup(prefix: &str) -> TestNs {
    let ns = TestNs::new(prefix).await;
    ensure_crd(&ns.client).await;
    ns
}

/// Waits until the API server keeps what `served` looks for in LoopService `value` (a dry-run
/// create): it serves a replaced CRD's schema a moment after it is established, and drops the
/// fields it does not know yet.
pub async fn wait_served(ns: &TestNs, value: &serde_json::Value, what: &str, served: impl Fn(&LoopService) -> bool) {
    let value: LoopService = serde_json::from_value(value.clone()).expect("a LoopService");
    wait_for(&format!("{what} to be served"), LONG, || async {
        let dry = PostParams { dry_run: true, ..Default::default() };
        ns.loopservices().create(&dry, &value).await.ok().filter(|ls| served(ls)).map(|_| ())
    })
    .await;
}

/// Waits until LoopService `name` has at least `n` Jobs; returns them, oldest loop first.
pub async fn wait_jobs(ns: &TestNs, name: &str, n: usize) -> Vec<Job> {
    wait_for(&format!("{n} jobs of {name}"), LONG, || async {
        let jobs = loop_jobs(ns, name).await;
        (jobs.len() >= n).then_some(jobs)
    })
    .await
}

/// The Events about object `name` once `pred` holds of them, waiting up to 10 s: the operator
/// publishes an Event after the status write it reports, so a test that has seen the status
/// may list the Events a moment before it.
pub async fn events_where(
    ns: &TestNs,
    name: &str,
    what: &str,
    pred: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let start = Instant::now();
    loop {
        let evs = events(ns, name).await;
        if pred(&evs) {
            return evs;
        }
        if start.elapsed() > Duration::from_secs(10) {
            panic!("timed out after 10 s waiting for Events of {name}: {what}; the Events: {evs:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The (type, reason, note) of each events.k8s.io Event about object `name`.
pub async fn events(ns: &TestNs, name: &str) -> Vec<(String, String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ns.client.clone(), &ns.name);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Seconds from `a` to `b`.
pub fn secs(a: jiff::Timestamp, b: jiff::Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}

/// A Job of the user's own, not the operator's, named `name` (to hold a loop's Job name).
pub async fn create_foreign_job(ns: &TestNs, name: &str) {
    let foreign: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"]}]}}}
    }))
    .unwrap();
    ns.jobs().create(&PostParams::default(), &foreign).await.unwrap();
}

/// The name of the Job of loop `n` of LoopService `name` (it carries a fragment of the uid).
pub async fn loop_job_name(ns: &TestNs, name: &str, n: i64) -> String {
    let ls = ns.loopservices().get(name).await.expect("get loopservice");
    loopservice_operator::job::job_name(name, ls.metadata.uid.as_deref().expect("uid"), n)
}

/// Creates LoopService `value` with the name of its loop 1's Job taken by a Job of the user's
/// own: created suspended, the foreign Job made under the name, then resumed. Returns the name.
pub async fn create_ls_with_first_job_name_taken(ns: &TestNs, value: serde_json::Value) -> String {
    let mut v = value;
    v["spec"]["suspend"] = json!(true);
    let name = v["metadata"]["name"].as_str().expect("metadata.name").to_string();
    create_ls(ns, v).await.expect("create loopservice");
    let job = loop_job_name(ns, &name, 1).await;
    create_foreign_job(ns, &job).await;
    let resume = json!({"spec": {"suspend": null}});
    ns.loopservices().patch(&name, &PatchParams::default(), &Patch::Merge(&resume)).await.expect("resume loopservice");
    job
}

/// Creates a LoopService from JSON (`metadata.name` and `spec`).
pub async fn create_ls(ns: &TestNs, value: serde_json::Value) -> Result<LoopService, kube::Error> {
    let mut v = value;
    v["apiVersion"] = json!("loops.dev/v1alpha1");
    v["kind"] = json!("LoopService");
    let ls: LoopService = serde_json::from_value(v).expect("valid LoopService JSON");
    ns.loopservices().create(&PostParams::default(), &ls).await
}

/// Creates a LoopService from raw JSON, bypassing the Rust types, to send what a user could.
pub async fn create_raw(ns: &TestNs, value: serde_json::Value) -> Result<serde_json::Value, kube::Error> {
    let mut v = value;
    v["apiVersion"] = json!("loops.dev/v1alpha1");
    v["kind"] = json!("LoopService");
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &kube::api::ApiResource::erase::<LoopService>(&()));
    let obj: kube::api::DynamicObject = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.map(|o| serde_json::to_value(o).unwrap())
}

/// The Jobs of a LoopService, oldest loop first.
pub async fn loop_jobs(ns: &TestNs, ls: &str) -> Vec<Job> {
    let mut jobs: Vec<Job> =
        ns.jobs().list(&ListParams::default().labels(&format!("loops.dev/loopservice={ls}"))).await.expect("list jobs").items;
    jobs.sort_by_key(loop_number);
    jobs
}

pub fn loop_number(j: &Job) -> i64 {
    j.labels().get("loops.dev/loop").and_then(|n| n.parse().ok()).unwrap_or(-1)
}

pub fn ann_time(j: &Job, key: &str) -> jiff::Timestamp {
    j.annotations()[key].parse().unwrap()
}

pub fn start_time(j: &Job) -> jiff::Timestamp {
    ann_time(j, "loops.dev/start-time")
}

pub fn finished(j: &Job) -> Option<(bool, jiff::Timestamp)> {
    let st = j.status.as_ref()?;
    let c = st.conditions.as_ref()?.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    Some((c.type_ == "Complete", c.last_transition_time.as_ref()?.0))
}

pub async fn status(ns: &TestNs, name: &str) -> loopservice_operator::crd::LoopServiceStatus {
    ns.loopservices().get(name).await.expect("get loopservice").status.unwrap_or_default()
}

/// Waits until the status of LoopService `name` satisfies `pred`, and returns it.
pub async fn wait_status(
    ns: &TestNs,
    name: &str,
    what: &str,
    pred: impl Fn(&loopservice_operator::crd::LoopServiceStatus) -> bool,
) -> loopservice_operator::crd::LoopServiceStatus {
    wait_for(what, Duration::from_secs(90), || async {
        let st = status(ns, name).await;
        pred(&st).then_some(st)
    })
    .await
}

/// When loop `n + 1` would be due after what `st` records: the last start plus `interval`, or
/// the last end if that is later (the loop rule, without jitter, backoff or other controls).
pub fn next_due(st: &loopservice_operator::crd::LoopServiceStatus, interval: Duration) -> jiff::Timestamp {
    let start = st.last_start_time.as_ref().expect("a loop has started").0;
    let by_start = start + jiff::SignedDuration::try_from(interval).unwrap();
    st.last_completion_time.as_ref().map_or(by_start, |end| by_start.max(end.0))
}

/// Waits until the clock has passed `t`.
pub async fn wait_until(t: jiff::Timestamp) {
    let left = t.duration_since(jiff::Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs()).await;
    }
}

/// How the operator's `Ready` message starts for a LoopService it cannot decode: it is never
/// in the operator's cache, and never reconciled.
pub const UNREADABLE: &str = "the operator cannot read this LoopService";

/// Changes an annotation on LoopService `name` that nothing reads: a change of its metadata
/// that makes the operator reconcile it, and changes nothing else. Untyped, so that it works
/// on a LoopService the operator's types cannot decode.
pub async fn poke(ns: &TestNs, name: &str) {
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &kube::api::ApiResource::erase::<LoopService>(&()));
    let value = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos().to_string();
    let patch = json!({"metadata": {"annotations": {"tests.loops.dev/poke": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_or_else(|e| panic!("poke {name}: {e}"));
}

/// Waits until the operator has looked at each of LoopServices `names` after the instant
/// `since` (it first waits for the clock to pass it), making it look by [`poke`]s, and returns
/// how many reconciles that took. A test calls this before it checks that something did *not*
/// happen (no Job, no second Event): without it, the check may pass only because the operator
/// had not got round to the object yet.
///
/// "Looked" is counted twice over: the operator's log says it reconciled each LoopService
/// twice (`reconciled name=...`), and its reconciles that ran to a decision
/// (`loopservice_reconcile_duration_seconds_count` on /metrics; one put off because the cache
/// lacked the operator's own status write, or run before its caches synced, is not counted)
/// rose by two per LoopService. Twice, because a reconcile in flight at `since` may end after
/// it; kube-runtime never runs two reconciles of one object at once, so the second began after
/// `since`. With one LoopService the metric is that LoopService's alone.
pub async fn reconciled_since(op: &Operator, ns: &TestNs, names: &[&str], since: jiff::Timestamp) -> u64 {
    looked_since(op, Some(ns), names, since, LONG).await
}

/// [`reconciled_since`] without pokes: waits up to `limit` for the operator's own rechecks
/// (a requeue, a watch event) to reconcile each of `names` twice after `since`.
pub async fn rechecked_since(op: &Operator, names: &[&str], since: jiff::Timestamp, limit: Duration) -> u64 {
    looked_since(op, None, names, since, limit).await
}

async fn looked_since(op: &Operator, poke_in: Option<&TestNs>, names: &[&str], since: jiff::Timestamp, limit: Duration) -> u64 {
    wait_until(since).await;
    wait_for("the operator's caches to sync (/readyz)", LONG, || async {
        (op.get("/readyz").await.as_deref() == Some("ready")).then_some(())
    })
    .await;
    let decided0 = op.decided_reconciles().await;
    let seen0: Vec<usize> = names.iter().map(|n| op.reconciles_of(n)).collect();
    let want = decided0 + 2 * names.len() as u64;
    let start = Instant::now();
    let mut poked = None::<Instant>;
    loop {
        let behind: Vec<&str> = names.iter().zip(&seen0).filter(|(n, s0)| op.reconciles_of(n) < *s0 + 2).map(|(n, _)| *n).collect();
        let decided = op.decided_reconciles().await;
        if behind.is_empty() && decided >= want {
            return decided - decided0;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for the operator to reconcile {names:?} twice each after {since}: \
                 not yet {behind:?} (by the `reconciled` lines of its log); reconciles that ran to a decision: {} of {}",
                decided - decided0,
                want - decided0
            );
        }
        if let Some(ns) = poke_in {
            if poked.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                let lagging = if behind.is_empty() { names.to_vec() } else { behind };
                for n in lagging {
                    poke(ns, n).await;
                }
                poked = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running operator process, watching one namespace or a few; killed when dropped.
pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
    /// The bearer token [`Operator::get`] sends for /metrics, for an operator started with
    /// `METRICS_AUTH=token`.
    pub metrics_token: Option<String>,
}

impl Operator {
    pub fn start(ns: &str, env: &[(&str, &str)]) -> Operator {
        Operator::start_with(ns, &["--namespace", ns], env)
    }

    /// An operator watching the namespaces `namespaces`.
    pub fn start_for(namespaces: &[&str], env: &[(&str, &str)]) -> Operator {
        let list = namespaces.join(",");
        Operator::start_with(namespaces[0], &["--namespaces", &list], env)
    }

    /// An operator process with `args` (which say what it watches), its log named after `name`.
    pub fn start_with(name: &str, args: &[&str], env: &[(&str, &str)]) -> Operator {
        let ns = name;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir).unwrap();
        // Two operators started in the same millisecond (two releases) get logs of their own.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let log = dir.join(format!("{ns}-{millis}-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loopservice-operator"));
        cmd.args(args)
            .args(["--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            // Debug logs help a failing test, unless the caller chose a level (a bench does).
            .env("LOG_LEVEL", "info,loopservice_operator=debug")
            // /metrics without a token, unless the caller asks for one (a test of the token
            // check does): the tests that read it are about what it says.
            .env("METRICS_AUTH", "none")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the operator binary");
        Operator { child, log, metrics_token: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([format!("-{sig}"), self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit and returns its exit code and how long it took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > limit {
                panic!("operator did not exit within {limit:?}; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address of /healthz and /readyz, from the operator's log.
    pub async fn http_addr(&self) -> String {
        self.logged_addr("serving /healthz").await
    }

    /// The address of /metrics, from the operator's log.
    pub async fn metrics_addr(&self) -> String {
        self.logged_addr("serving /metrics").await
    }

    async fn logged_addr(&self, what: &str) -> String {
        wait_for(&format!("the operator's log line {what:?}"), Duration::from_secs(20), || async {
            let log = self.log_text();
            let line = log.lines().find(|l| l.contains(what))?;
            Some(line.split("addr=").nth(1)?.split_whitespace().next()?.to_string())
        })
        .await
    }

    /// GETs `path` from the operator's http server: the trimmed body, `None` unless 200.
    pub async fn get(&self, path: &str) -> Option<String> {
        self.get_any(path).await.filter(|(code, _)| *code == 200).map(|(_, body)| body)
    }

    /// GETs `path` from the operator's http server (/metrics from its own listener, with
    /// [`Operator::metrics_token`]): the status code and the trimmed body.
    pub async fn get_any(&self, path: &str) -> Option<(u16, String)> {
        match (&self.metrics_token, path.starts_with("/metrics")) {
            (Some(token), true) => self.get_with(path, &[&format!("Authorization: Bearer {token}")]).await,
            _ => self.get_with(path, &[]).await,
        }
    }

    /// [`Operator::get_any`] with extra request header lines (`"Authorization: Bearer ..."`).
    pub async fn get_with(&self, path: &str, headers: &[&str]) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let addr = if path.starts_with("/metrics") { self.metrics_addr().await } else { self.http_addr().await };
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").as_bytes()).ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.trim().to_string()))
    }

    /// Reconciles that ran to a decision so far, of every LoopService it watches: the count of
    /// `loopservice_reconcile_duration_seconds` on /metrics.
    pub async fn decided_reconciles(&self) -> u64 {
        const SERIES: &str = "loopservice_reconcile_duration_seconds_count ";
        let metrics = wait_for("the operator's /metrics", Duration::from_secs(20), || self.get("/metrics")).await;
        let line = metrics.lines().find(|l| l.starts_with(SERIES)).unwrap_or_else(|| panic!("no {SERIES}on /metrics:\n{metrics}"));
        line[SERIES.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// Reconciles of LoopService `name` that returned, by the `reconciled name=...` lines of the
    /// operator's debug log.
    pub fn reconciles_of(&self, name: &str) -> usize {
        let field = format!("name={name}");
        self.log_text().lines().filter(|l| l.contains(": reconciled ") && l.split_whitespace().any(|w| w == field)).count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- operator log ({}) ----\n{}", self.log.display(), self.log_text());
        }
    }
}

/// A LoopService `name` whose loops run on the fake (kwok) nodes `make test` adds: many loops
/// at once cost the one real node nothing. History limits of 100.
pub fn on_fake_nodes(name: &str, interval: &str, jitter: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": name}, "spec": {
        "interval": interval, "jitter": jitter,
        "successfulJobsHistoryLimit": 100, "failedJobsHistoryLimit": 100,
        "template": {"spec": {
            "nodeSelector": {"loops.dev/fake-node": "true"},
            "tolerations": [{"key": "loops.dev/fake-node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "loop", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"]}],
        }},
    }})
}

/// A token of ServiceAccount `name` in `ns` (created if missing), from the TokenRequest API.
pub async fn service_account_token(ns: &TestNs, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    if api.get_opt(name).await.expect("read ServiceAccount").is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &sa).await.expect("create ServiceAccount");
    }
    let request =
        TokenRequest { spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }), ..Default::default() };
    let answer = api.create_token_request(name, &PostParams::default(), &request).await.expect("request a ServiceAccount token");
    answer.status.and_then(|s| s.token).expect("a TokenRequest's token")
}

/// Binds the chart's metrics-reader ClusterRole (renamed for this test) to ServiceAccount `sa`
/// of `ns`, and waits until the API server says it may get /metrics. Both objects are owned by
/// the test's namespace, and go with it.
pub async fn grant_metrics_reader(ns: &TestNs, sa: &str) {
    use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let out = Command::new("helm")
        .args(["template", "t", "charts/loopservice-operator", "--show-only", "templates/metrics-rbac.yaml"])
        .current_dir(repo_root())
        .output()
        .expect("helm, from the local cluster's tools (eval \"$(hack/cluster.sh env)\")");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut role: ClusterRole = text
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<ClusterRole>(d).ok())
        .find(|r| r.metadata.name.as_deref().is_some_and(|n| n.ends_with("-metrics-reader")))
        .unwrap_or_else(|| panic!("the chart's metrics-reader ClusterRole in\n{text}"));
    let namespace = Api::<Namespace>::all(ns.client.clone()).get(&ns.name).await.expect("the test's namespace");
    let owner = json!([{"apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": namespace.metadata.uid}]);
    let name = format!("{}-metrics-reader", ns.name);
    role.metadata = serde_json::from_value(json!({"name": name, "ownerReferences": owner})).unwrap();
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("create the reader ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-{sa}"), "ownerReferences": owner},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns.name}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(ns.client.clone()).create(&PostParams::default(), &binding).await.expect("bind the reader ClusterRole");
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{}:{sa}", ns.name)),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{}", ns.name)]),
            non_resource_attributes: Some(NonResourceAttributes { path: Some("/metrics".into()), verb: Some("get".into()) }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(ns.client.clone());
    wait_for("the API server to let the reader get /metrics", Duration::from_secs(30), || async {
        let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
        answer.status.is_some_and(|s| s.allowed).then_some(())
    })
    .await;
}

/// A kubeconfig, written for this test, that acts as `user` (say a ServiceAccount's
/// `system:serviceaccount:ns:name`) through the API server's impersonation; its path.
pub fn kubeconfig_as(user: &str, file: &str) -> String {
    let config = std::fs::read_to_string(std::env::var("KUBECONFIG").expect("KUBECONFIG (eval \"$(hack/cluster.sh env)\")")).unwrap();
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    for u in kc["users"].as_sequence_mut().unwrap() {
        u["user"]["as"] = serde_yaml::Value::from(user.to_string());
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{file}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path.to_string_lossy().to_string()
}

/// With LoopServices made in `watched` and in `left` before `op` started: those in `watched`
/// loop, the operator gets ready, and the one in `left` is never touched (no status, no Job,
/// no line of the operator's log). It was listed with the others and would have been due at
/// once, so by the time each of them has a loop's Job and its status says so, an operator
/// watching its namespace would have started its loop too. (Loops started, not finished: the
/// check needs no Pod to run.)
pub async fn only_the_watched_namespaces_loop(op: &Operator, watched: &[&TestNs], left: &TestNs) {
    for ns in watched {
        wait_status(ns, "beat", "a loop started in a watched namespace", |st| st.loops_started >= 1).await;
        wait_jobs(ns, "beat", 1).await;
    }
    assert_eq!(op.get("/readyz").await.as_deref(), Some("ready"), "ready: every watch listed\n{}", op.log_text());
    let idle = left.loopservices().get("idle").await.unwrap();
    assert!(idle.status.is_none(), "untouched: {:?}", idle.status);
    assert!(idle.annotations().is_empty() && idle.finalizers().is_empty(), "untouched: {:?}", idle.metadata);
    assert!(left.jobs().list(&ListParams::default()).await.unwrap().items.is_empty(), "no Job in {}", left.name);
    let log = op.log_text();
    let mentions: Vec<&str> = log.lines().filter(|l| l.contains(&left.name) && !l.contains("starting controller")).collect();
    assert!(mentions.is_empty(), "{mentions:#?}");
}

/// Makes a LoopService `idle` in `left` and one `beat` in each of `watched`, each looping every 2 s.
pub async fn loopservices_in(watched: &[&TestNs], left: &TestNs) {
    create_ls(left, ls("idle", "2s", "true")).await.unwrap();
    for ns in watched {
        create_ls(ns, ls("beat", "2s", "true")).await.unwrap();
    }
}

/// The chart's RBAC and ServiceAccount for a release `lso` in `ns`, with `sets` (each a `--set`
/// value), without the aggregated roles.
pub fn chart_rbac(ns: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", "lso", "charts/loopservice-operator", "-n", ns, "--set", "rbac.aggregateToDefaultRoles=false"];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--show-only", "templates/rbac.yaml", "--show-only", "templates/serviceaccount.yaml"]);
    let out = Command::new("helm")
        .args(&args)
        .current_dir(repo_root())
        .output()
        .expect("helm, from the local cluster's tools (eval \"$(hack/cluster.sh env)\")");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The documents `helm template x <chart> -n ops` renders with `args`.
pub fn helm_render(args: &[&str]) -> Vec<serde_yaml::Value> {
    let mut all = vec!["template", "x", "charts/loopservice-operator", "-n", "ops"];
    all.extend(args);
    let out = Command::new("helm").args(&all).current_dir(repo_root()).output().expect("helm on PATH (eval \"$(hack/cluster.sh env)\")");
    assert!(out.status.success(), "helm template {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).ok())
        .filter(|d| d.is_mapping())
        .collect()
}

/// `kubectl apply` of `yaml`, whose objects name their namespaces.
pub fn kubectl_apply(yaml: &str) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kubectl apply: {}\n{yaml}", String::from_utf8_lossy(&out.stderr));
}
