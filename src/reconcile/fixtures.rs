//! What the reconcile's tests stand on: a mocked API server that answers, in order, the
//! requests a reconcile is expected to make (and fails the test on any other, or on one
//! expected and never made); a real [`Context`] with a manual clock and caches filled by
//! hand; and LoopServices, Jobs and statuses as the operator itself would have left them.
//!
//! The mock follows kube-rs' controller-rs `fixtures.rs`: a `tower_test` service behind a
//! real `kube::Client`, and a task that takes each request, checks its method, path and
//! query, records it, and sends the answer the scenario gives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KTime;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::Client;
use serde_json::{json, Value};

use super::context::{Caches, Context, Parts, Settings};
use super::observe::{Checked, Observed};
use super::plan::{self, Launched};
use crate::cache::Cache;
use crate::cached::CachedLoopService;
use crate::clock::ManualClock;
use crate::crd::{LoopService, LoopServiceStatus};
use crate::job::{self, JobParams, ObservedJob, PreviousResult};
use crate::metrics::Metrics;

pub const NS: &str = "ns";
pub const NAME: &str = "report";
pub const UID: &str = "6f1c2a9e-5b7d-4c3e-9a8f-0d1e2f3a4b5c";
/// Another LoopService's uid.
pub const OTHER_UID: &str = "0aa1b2c3-d4e5-4f60-8a7b-9c8d7e6f5a4b";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

/// The instant the tests' LoopService was created, and its first loop due.
pub fn t0() -> Timestamp {
    "2026-03-01T10:00:00Z".parse().expect("a valid instant")
}

/// `secs` seconds after [`t0`].
pub fn at(secs: i64) -> Timestamp {
    t0() + jiff::SignedDuration::from_secs(secs)
}

pub fn job_name(n: i64) -> String {
    job::job_name(NAME, UID, n)
}

// ---- The LoopService, its Jobs and its statuses ----

/// The LoopService `report` in `ns`: every 30 s, generation 1, stored once (resourceVersion
/// 1), no status; `spec` is merged over that.
pub fn loopservice(spec: Value) -> LoopService {
    let mut s = json!({"interval": "30s", "image": "busybox:1.36", "command": ["sh", "-c", "echo hi"]});
    if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "loops.dev/v1alpha1",
        "kind": "LoopService",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": "1",
                     "creationTimestamp": "2026-03-01T10:00:00Z"},
        "spec": s,
    }))
    .expect("a valid LoopService")
}

/// `ls` as the cache keeps it, with `status`.
pub fn with_status(ls: &LoopService, status: LoopServiceStatus) -> LoopService {
    LoopService { status: Some(status), ..ls.clone() }
}

/// What the controller hands the reconcile.
pub fn cached(ls: &LoopService) -> Arc<CachedLoopService> {
    Arc::new(CachedLoopService::new(ls.clone()))
}

/// The Job of loop `n` exactly as the operator creates it when it starts at `start` (due
/// then), as the API server stores it: with a uid and a creationTimestamp to the second.
pub fn loop_job(ls: &LoopService, n: i64, start: Timestamp) -> Job {
    let spec = ls.spec.validate().expect("a valid spec");
    let params = JobParams {
        ls,
        spec: &spec,
        loop_number: n,
        scheduled: start,
        start,
        run_request: None,
        requester: None,
        jittered: None,
        previous: PreviousResult::None,
        last_success: None,
    };
    let mut job = job::build_job(&params).expect("a Job");
    job.metadata.uid = Some(format!("job-uid-{n}"));
    job.metadata.creation_timestamp = Some(KTime(to_second(start)));
    job.status = Some(JobStatus { active: Some(1), start_time: Some(KTime(to_second(start))), ..JobStatus::default() });
    job
}

/// `job`, ended at `end`: Complete, or Failed with `BackoffLimitExceeded`.
pub fn ended(mut job: Job, end: Timestamp, succeeded: bool) -> Job {
    let (type_, reason) = if succeeded { ("Complete", None) } else { ("Failed", Some("BackoffLimitExceeded".to_string())) };
    job.status = Some(JobStatus {
        conditions: Some(vec![JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason,
            last_transition_time: Some(KTime(end)),
            ..JobCondition::default()
        }]),
        completion_time: succeeded.then_some(KTime(end)),
        start_time: job.metadata.creation_timestamp.clone(),
        ..JobStatus::default()
    });
    job
}

/// `job` with the operator's finalizer taken off, as it is once its loop's end is recorded.
pub fn released(mut job: Job) -> Job {
    job.metadata.finalizers.get_or_insert_with(Vec::new).retain(|f| f != crate::keys::FINALIZER_RECORD);
    job
}

/// `job` being deleted since `at` (a TTL, a user, the garbage collector): still there, held by
/// the operator's finalizer.
pub fn deleting(mut job: Job, at: Timestamp) -> Job {
    job.metadata.deletion_timestamp = Some(KTime(to_second(at)));
    job
}

/// What a reconcile of `ls` would observe with these Jobs and nothing else in the way.
pub fn observed(ls: &LoopService, jobs: &[Job]) -> Observed {
    let held = jobs.iter().filter_map(job::held).collect();
    let mut jobs: Vec<ObservedJob> = jobs.iter().filter_map(|j| job::observe(j).filter(|seen| !job::deleted_running(j, seen))).collect();
    jobs.sort_by_key(|j| j.loop_number);
    Observed {
        ls: Arc::new(ls.clone()),
        namespace: NS.into(),
        uid: UID.into(),
        prev: ls.status.clone().unwrap_or_default(),
        spec: Checked::Valid(Box::new(ls.spec.validate().expect("a valid spec")), None),
        jobs,
        held,
        lingering: None,
        stuck: None,
        draining: false,
        suspect: false,
    }
}

/// The status the operator writes for `ls` at `now`, seeing `jobs`, after the launch answered
/// `launched`: the pure plan and its conclusion, with no API server.
pub fn status_after(ls: &LoopService, jobs: &[Job], launched: Option<Launched>, now: Timestamp) -> LoopServiceStatus {
    let o = observed(ls, jobs);
    let p = plan::plan(&o, now);
    plan::conclude(&o, p, launched, now).status
}

/// The status after loop 1 started at [`t0`] (as its Job `job`), written by the operator.
pub fn running_first_loop(ls: &LoopService) -> LoopServiceStatus {
    let job = loop_job(ls, 1, t0());
    let seen = job::observe(&job).expect("a loop's Job");
    status_after(ls, &[], Some(Launched::Created(seen)), t0())
}

/// The status after loop 1 ran from [`t0`] to `t0 + 5 s` and succeeded, written at its end:
/// loop 2 is due at `t0 + 30 s`. Returns the status and loop 1's finished Job.
pub fn first_loop_succeeded(ls: &LoopService) -> (LoopServiceStatus, Job) {
    let running = with_status(ls, running_first_loop(ls));
    let job = ended(loop_job(ls, 1, t0()), at(5), true);
    let st = status_after(&running, std::slice::from_ref(&job), None, at(5));
    (st, released(job))
}

fn to_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

// ---- The context ----

/// A real Context on `client`: the clock, caches holding `jobs` and `pods` and marked
/// synced, default settings (Events for problems only), nothing draining.
pub fn context(client: Client, clock: Arc<ManualClock>, jobs: Vec<Job>, pods: Vec<Pod>) -> Arc<Context> {
    context_of(client, clock, jobs, pods, None, None)
}

/// [`context`] whose watch of `FailedCreate` Events holds one about Job `job`, saying `why`.
pub fn context_with_failed_create(client: Client, clock: Arc<ManualClock>, jobs: Vec<Job>, job: &str, why: &str) -> Arc<Context> {
    let event = json!({"metadata": {"name": "e", "namespace": NS}, "involvedObject": {"kind": "Job", "name": job, "namespace": NS},
                       "reason": "FailedCreate", "message": why, "lastTimestamp": "2026-01-01T00:00:00Z"});
    let mut ctx = context_of(client, clock, jobs, vec![], None, None);
    let caches = &mut Arc::get_mut(&mut ctx).expect("a new context").caches;
    caches.failed_creates = Cache::from_objects(vec![serde_json::from_value(event).expect("an Event")]);
    ctx
}

/// [`context`] of a release named `mine` (`<lease namespace>/<lease name>`): it claims what it works.
pub fn context_of_release(client: Client, clock: Arc<ManualClock>, jobs: Vec<Job>, mine: &str) -> Arc<Context> {
    context_of(client, clock, jobs, vec![], None, Some(mine))
}

/// [`context`] with `fault` armed: the reconcile stops there with [`crate::Error::Fault`].
pub fn context_with_fault(client: Client, clock: Arc<ManualClock>, jobs: Vec<Job>, fault: crate::fault::Fault) -> Arc<Context> {
    context_of(client, clock, jobs, vec![], Some(fault), None)
}

fn context_of(
    client: Client,
    clock: Arc<ManualClock>,
    jobs: Vec<Job>,
    pods: Vec<Pod>,
    fault: Option<crate::fault::Fault>,
    mine: Option<&str>,
) -> Arc<Context> {
    let parts = Parts {
        client,
        reporter: Reporter { controller: "loopservice-operator".into(), instance: Some("test".into()) },
        metrics: Arc::new(Metrics::default()),
        draining: Arc::default(),
        fault,
        settings: Settings::default(),
        clock,
        claims: Arc::new(super::claim::Claims::new(mine.map(str::to_string))),
    };
    let caches = Caches {
        jobs: Cache::from_objects(jobs),
        pods: Cache::from_objects(pods),
        failed_creates: Cache::from_objects(vec![]),
        synced: Arc::new(true.into()),
        watch_failed_at: Arc::default(),
    };
    Arc::new(Context::new(parts, caches))
}

pub fn clock_at(t: Timestamp) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t))
}

// ---- The mocked API server ----

/// One request the reconcile made, as the API server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// The query parameters, sorted, joined with `&`.
    pub query: String,
    pub content_type: Option<String>,
    /// The JSON body; `Null` when there is none.
    pub body: Value,
}

impl Seen {
    /// `METHOD path?query`, as in an API server's audit log.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

/// What the mocked API server holds: the Jobs created through it and the LoopService as last
/// written, for the reads that follow.
#[derive(Default)]
pub struct Stored {
    pub loopservice: Option<Value>,
    pub jobs: std::collections::BTreeMap<String, Value>,
}

type Answer = Box<dyn FnOnce(&Value, &mut Stored) -> (StatusCode, Value) + Send>;

/// One request the reconcile must make next, and what the API server answers it.
pub struct Expect {
    method: Method,
    path: String,
    query: &'static str,
    content_type: Option<&'static str>,
    answer: Answer,
    /// The texts of the `Warning` headers of the answer.
    warnings: Vec<String>,
}

const JOBS: &str = "/apis/batch/v1/namespaces/ns/jobs";
const LOOPSERVICES: &str = "/apis/loops.dev/v1alpha1/namespaces/ns/loopservices";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

impl Expect {
    fn new(method: Method, path: String, answer: Answer) -> Self {
        Expect { method, path, query: "", content_type: None, answer, warnings: vec![] }
    }

    /// The server-side dry run of a Job create; answered as the API server takes it (and
    /// stores nothing).
    pub fn dry_run_job() -> Self {
        let answer = Box::new(|b: &Value, _: &mut Stored| (StatusCode::CREATED, stored_job(b)));
        Expect { query: "dryRun=All", ..Expect::new(Method::POST, JOBS.into(), answer) }
    }

    /// The dry run of an API server without the Pod spec field `field`: it drops it, as it
    /// does any field it does not know.
    pub fn dry_run_job_dropping_pod_field(field: &'static str) -> Self {
        let answer = Box::new(move |b: &Value, _: &mut Stored| {
            let mut job = stored_job(b);
            if let Some(pod) = job.pointer_mut("/spec/template/spec").and_then(Value::as_object_mut) {
                pod.remove(field);
            }
            (StatusCode::CREATED, job)
        });
        Expect { query: "dryRun=All", ..Expect::new(Method::POST, JOBS.into(), answer) }
    }

    /// A Job create; answered as created, and stored.
    pub fn create_job() -> Self {
        let answer = Box::new(|b: &Value, stored: &mut Stored| {
            let job = stored_job(b);
            let name = job["metadata"]["name"].as_str().unwrap_or_default().to_string();
            stored.jobs.insert(name, job.clone());
            (StatusCode::CREATED, job)
        });
        Expect::new(Method::POST, JOBS.into(), answer)
    }

    /// A read of Job `name`; answered from what was created, or that it does not exist.
    pub fn get_job(name: &str) -> Self {
        let path = format!("{JOBS}/{name}");
        let name = name.to_string();
        let answer = Box::new(move |_: &Value, stored: &mut Stored| match stored.jobs.get(&name) {
            Some(job) => (StatusCode::OK, job.clone()),
            None => not_found("jobs.batch", &name),
        });
        Expect::new(Method::GET, path, answer)
    }

    /// A delete of Job `name` with background propagation (its Pods go after it); answered
    /// as done.
    pub fn delete_job(name: &str) -> Self {
        let answer = Box::new(|b: &Value, _: &mut Stored| {
            assert_eq!(b["propagationPolicy"], "Background", "a Job is deleted with its Pods in the background: {b}");
            (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        });
        Expect::new(Method::DELETE, format!("{JOBS}/{name}"), answer)
    }

    /// The JSON patch that takes the operator's finalizer off Job `name` (testing it is there
    /// first); answered with the Job without it, as stored.
    pub fn release_job(name: &str) -> Self {
        let key = name.to_string();
        let answer = Box::new(move |b: &Value, stored: &mut Stored| {
            let ops = b.as_array().cloned().unwrap_or_default();
            assert_eq!(ops.len(), 2, "a test, then a remove: {b}");
            assert_eq!((ops[0]["op"].as_str(), ops[0]["value"].as_str()), (Some("test"), Some(crate::keys::FINALIZER_RECORD)), "{b}");
            assert_eq!((ops[1]["op"].as_str(), &ops[1]["path"]), (Some("remove"), &ops[0]["path"]), "{b}");
            let mut job = stored.jobs.get(&key).cloned().unwrap_or_else(|| json!({"metadata": {"name": key}}));
            job["metadata"]["finalizers"] = json!([]);
            stored.jobs.insert(key, job.clone());
            (StatusCode::OK, job)
        });
        Expect { content_type: Some(JSON_PATCH), ..Expect::new(Method::PATCH, format!("{JOBS}/{name}"), answer) }
    }

    /// A merge patch of `ls`'s status; answered with the LoopService as last written (or `ls`),
    /// holding the status as sent, at the next resourceVersion.
    pub fn write_status(ls: &LoopService) -> Self {
        let path = format!("{LOOPSERVICES}/{}/status", ls.metadata.name.as_deref().unwrap_or(NAME));
        let first = serde_json::to_value(ls).expect("a LoopService serializes");
        let answer = Box::new(move |b: &Value, stored: &mut Stored| {
            let now = stored_with_status(stored.loopservice.take().unwrap_or(first), b);
            stored.loopservice = Some(now.clone());
            (StatusCode::OK, now)
        });
        Expect { content_type: Some(MERGE_PATCH), ..Expect::new(Method::PATCH, path, answer) }
    }

    /// A read of the LoopService; answered with it as last written.
    pub fn get_loopservice() -> Self {
        let answer = Box::new(|_: &Value, stored: &mut Stored| match &stored.loopservice {
            Some(ls) => (StatusCode::OK, ls.clone()),
            None => not_found("loopservices.loops.dev", NAME),
        });
        Expect::new(Method::GET, format!("{LOOPSERVICES}/{NAME}"), answer)
    }

    /// A merge patch of the LoopService's metadata writing claim `by`, conditioned on the
    /// resourceVersion read; answered with the LoopService claimed, at the next resourceVersion.
    pub fn claim(ls: &LoopService, by: &str) -> Self {
        let mut claimed = serde_json::to_value(ls).expect("a LoopService serializes");
        let (by, rv) = (by.to_string(), ls.metadata.resource_version.clone().unwrap_or_default());
        let answer = Box::new(move |b: &Value, stored: &mut Stored| {
            assert_eq!(b["metadata"]["resourceVersion"].as_str(), Some(rv.as_str()), "a claim is conditioned on the version read: {b}");
            assert_eq!(b["metadata"]["annotations"][crate::keys::ANN_CLAIMED_BY].as_str(), Some(by.as_str()), "{b}");
            claimed["metadata"]["annotations"][crate::keys::ANN_CLAIMED_BY] = json!(by);
            let next = rv.parse::<u64>().unwrap_or(0) + 1;
            claimed["metadata"]["resourceVersion"] = json!(next.to_string());
            stored.loopservice = Some(claimed.clone());
            (StatusCode::OK, claimed)
        });
        let path = format!("{LOOPSERVICES}/{}", ls.metadata.name.as_deref().unwrap_or(NAME));
        Expect { content_type: Some(MERGE_PATCH), ..Expect::new(Method::PATCH, path, answer) }
    }

    /// A read of the Lease `<namespace>/<name>` a claim names; answered with `lease` (a Lease's
    /// JSON), or that it does not exist.
    pub fn get_lease(claimant: &str, lease: Option<Value>) -> Self {
        let (ns, name) = claimant.split_once('/').expect("<namespace>/<name>");
        let path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}");
        let name = name.to_string();
        let answer = Box::new(move |_: &Value, _: &mut Stored| match lease {
            Some(l) => (StatusCode::OK, l),
            None => not_found("leases.coordination.k8s.io", &name),
        });
        Expect::new(Method::GET, path, answer)
    }

    /// A read of the namespace's metadata; answered with `labels`.
    pub fn get_namespace(labels: Value) -> Self {
        let answer = Box::new(move |_: &Value, _: &mut Stored| {
            (StatusCode::OK, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}}))
        });
        Expect::new(Method::GET, format!("/api/v1/namespaces/{NS}"), answer)
    }

    /// Answers with a `Warning` header of `text` too, as admission's warnings come.
    pub fn warns(mut self, text: &str) -> Self {
        self.warnings.push(text.to_string());
        self
    }

    /// An Event published (events.k8s.io/v1); answered as created.
    pub fn event() -> Self {
        Expect::new(Method::POST, EVENTS.into(), Box::new(|b: &Value, _: &mut Stored| (StatusCode::CREATED, b.clone())))
    }

    /// Answers with `body` instead.
    pub fn answers(self, code: u16, body: Value) -> Self {
        let code = StatusCode::from_u16(code).expect("an HTTP status code");
        Expect { answer: Box::new(move |_: &Value, _: &mut Stored| (code, body)), ..self }
    }

    /// Refuses the request: an API error `code` with `reason` and `message`.
    pub fn refused(self, code: u16, reason: &str, message: &str) -> Self {
        let body = api_error(code, reason, message);
        self.answers(code, body)
    }

    fn describe(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

/// The `Status` the API server answers an error with.
pub fn api_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn not_found(resource: &str, name: &str) -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, api_error(404, "NotFound", &format!("{resource} \"{name}\" not found")))
}

/// A Job create's body as the API server stores it: with a uid and a creationTimestamp
/// (to the second, when the operator's start annotation says when).
pub fn stored_job(sent: &Value) -> Value {
    let mut job = sent.clone();
    let created = sent["metadata"]["annotations"][crate::keys::ANN_STARTED]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map_or_else(|| "2026-03-01T10:00:00Z".to_string(), |t| to_second(t).to_string());
    job["metadata"]["uid"] = json!(format!("uid-of-{}", sent["metadata"]["name"].as_str().unwrap_or_default()));
    job["metadata"]["creationTimestamp"] = json!(created);
    job["metadata"]["resourceVersion"] = json!("100");
    job
}

fn stored_with_status(mut stored: Value, patch: &Value) -> Value {
    stored["status"] = patch["status"].clone();
    let rv = stored["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    stored["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
    stored
}

/// A query string's parameters, sorted, without empty ones (kube writes `?&dryRun=All`).
fn query_params(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    params.join("&")
}

/// The mocked API server: answers the expected requests in order from a task of its own.
pub struct ApiServer {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A client whose every request goes to a mocked API server expecting `expected`, in order.
/// Call [`ApiServer::done`] at the end: it fails the test on an unexpected request or an
/// expected one never made.
pub fn api_server(expected: Vec<Expect>) -> (Client, ApiServer) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut expected = VecDeque::from(expected);
        let mut stored = Stored::default();
        let so_far = |log: &Mutex<Vec<Seen>>| log.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Seen::line).collect::<Vec<_>>();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.expect("a request body");
            let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON request body") };
            let request = Seen {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: query_params(parts.uri.query().unwrap_or_default()),
                content_type: parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
                body,
            };
            log.lock().unwrap_or_else(|p| p.into_inner()).push(request.clone());
            let Some(next) = expected.pop_front() else {
                panic!("unexpected request {}; the requests made: {:#?}", request.line(), so_far(&log));
            };
            assert_eq!(request.line(), next.describe(), "not the request expected next; the requests made: {:#?}", so_far(&log));
            if let Some(ct) = next.content_type {
                assert_eq!(request.content_type.as_deref(), Some(ct), "the content type of {}", request.line());
            }
            let (code, answer) = (next.answer)(&request.body, &mut stored);
            let mut response = Response::builder().status(code).header(http::header::CONTENT_TYPE, "application/json");
            for w in &next.warnings {
                response = response.header("warning", format!("299 - {}", serde_json::to_string(w).expect("a JSON string")));
            }
            let response = response.body(Body::from(serde_json::to_vec(&answer).expect("a JSON answer"))).expect("a response");
            send.send_response(response);
        }
        let left: Vec<String> = expected.iter().map(Expect::describe).collect();
        assert!(left.is_empty(), "requests expected but never made: {left:#?}; the requests made: {:#?}", so_far(&log));
    });
    (Client::new(service, NS), ApiServer { seen, task })
}

impl ApiServer {
    /// The requests made so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends the conversation: drops the last reference to the context (and with it the
    /// client, so that the server hears no more), then fails the test if a request was not
    /// the one expected or an expected one never came. Returns every request made.
    pub async fn done(self, ctx: Arc<Context>) -> Requests {
        assert_eq!(Arc::strong_count(&ctx), 1, "the test still holds the context, and with it the client");
        drop(ctx);
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Err(_) => panic!("the API server still has a client after the context was dropped"),
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the API server's task ended: {e}"),
            Ok(Ok(())) => {}
        }
        Requests(self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Every request a reconcile made, with what a person checks of them.
#[derive(Clone, Debug)]
pub struct Requests(pub Vec<Seen>);

/// An Event as published: its type, reason, note and the object it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub regarding: String,
    pub related: Option<String>,
}

impl Requests {
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(Seen::line).collect()
    }

    /// The Jobs created for real (not dry runs), as sent.
    pub fn created_jobs(&self) -> Vec<Job> {
        self.0
            .iter()
            .filter(|s| s.method == Method::POST && s.path == JOBS && !s.query.contains("dryRun"))
            .map(|s| serde_json::from_value(s.body.clone()).expect("a Job"))
            .collect()
    }

    /// The Jobs sent in dry runs.
    pub fn dry_runs(&self) -> Vec<Job> {
        self.0
            .iter()
            .filter(|s| s.method == Method::POST && s.path == JOBS && s.query.contains("dryRun=All"))
            .map(|s| serde_json::from_value(s.body.clone()).expect("a Job"))
            .collect()
    }

    /// The statuses written, in order, with the resourceVersion each was conditioned on.
    pub fn statuses(&self) -> Vec<(String, LoopServiceStatus)> {
        self.0
            .iter()
            .filter(|s| s.method == Method::PATCH && s.path.ends_with("/status"))
            .map(|s| {
                let rv = s.body["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
                (rv, serde_json::from_value(s.body["status"].clone()).expect("a LoopService status"))
            })
            .collect()
    }

    /// The one status written.
    pub fn status(&self) -> LoopServiceStatus {
        let mut all = self.statuses();
        assert_eq!(all.len(), 1, "one status write; the requests made: {:#?}", self.lines());
        all.remove(0).1
    }

    pub fn events(&self) -> Vec<Published> {
        self.0
            .iter()
            .filter(|s| s.method == Method::POST && s.path == EVENTS)
            .map(|s| {
                let e = &s.body;
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                Published {
                    type_: text(&e["type"]),
                    reason: text(&e["reason"]),
                    note: text(&e["note"]),
                    regarding: format!("{}/{}", text(&e["regarding"]["kind"]), text(&e["regarding"]["name"])),
                    related: e["related"]["name"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// The Jobs whose finalizer was taken off, in order.
    pub fn released_jobs(&self) -> Vec<String> {
        self.jobs_by(Method::PATCH)
    }

    pub fn deleted_jobs(&self) -> Vec<String> {
        self.jobs_by(Method::DELETE)
    }

    /// The names of the Jobs `method` was sent to, in order.
    fn jobs_by(&self, method: Method) -> Vec<String> {
        self.0
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(JOBS))
            .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_string())
            .collect()
    }
}
