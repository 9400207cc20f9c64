//! `run NAME [--reason TEXT] [--wait] [--timeout DUR]`: a run request (a new value of the
//! annotation loops.dev/run-requested-at, with who asks and why beside it), and with --wait the
//! result of the loop that answers it.
//!
//! Whether the request was taken up is read from the LoopService's status alone: the operator
//! records the request it handled (status.lastHandledRunRequest) with the loop it started, or
//! refused; and when it cannot take the request up, Ready says why. What no status says
//! (no operator runs) is what --timeout is for.

use std::time::Duration;

use futures::{pin_mut, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::connect::Target;
use super::format::{self, note, NONE};
use super::logs::termination;
use super::whoami::whoami;
use super::{Error, EXIT_LOOP_FAILED, EXIT_OK};
use crate::crd::{self, LoopService, LoopServiceStatus, Phase, Trigger};
use crate::job::{self, Outcome};
use crate::keys::{ANN_RUN_REASON, ANN_RUN_REQUESTED_AT, ANN_RUN_REQUESTED_BY};
use crate::reasons::{ConditionType, Reason, FALSE};
use crate::requester::{clean, REASON_MAX};

pub async fn run(t: &Target, name: &str, reason: Option<&str>, wait: bool, timeout: Duration) -> Result<u8, Error> {
    // Untyped: a LoopService whose spec does not decode can still be asked, and its status says
    // why it will not run. A missing one is the patch's 404.
    let api: Api<DynamicObject> = Api::namespaced_with(t.client.clone(), &t.namespace, &ApiResource::erase::<LoopService>(&()));
    let who = whoami(&t.client).await;
    // The instant to the nanosecond: a new value for each request, and it says when.
    let value = Timestamp::now().to_string();
    let asked = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&request_patch(&value, who.as_deref().ok(), reason)))
        .await
        .map_err(|e| Error::loopservice("requesting a run of", name, &t.namespace, e))?;
    // Said once the request is made: a request that failed names no one anyway.
    let by = who.map_err(|why| note(&format!("warning: {why}; the request names no requester"))).ok();
    let requested_at = Instant::now();
    let who = by.map(|by| format!(" by {by}")).unwrap_or_default();
    format::print(&format!("loopservice.loops.dev/{name} run requested{who} ({ANN_RUN_REQUESTED_AT}={value})\n"))?;
    if !wait {
        return Ok(EXIT_OK);
    }
    let deadline = (!timeout.is_zero()).then(|| requested_at + timeout);
    let (n, job_name) = wait_for_start(&api, Seen::of(&asked), &value, requested_at, timeout).await?;
    note(&format!("loop {n} started: job/{job_name}; waiting for it to finish"));
    let jobs: Api<Job> = Api::namespaced(t.client.clone(), &t.namespace);
    let ending = wait_for_end(jobs, &job_name);
    let job = match deadline {
        None => ending.await?,
        Some(d) => tokio::time::timeout_at(d, ending).await.map_err(|_| {
            Error::TimedOut(format!(
                "loop {n} (job/{job_name}) had not ended {} after the request; it goes on running (`kubectl loopservice logs {name} --loop {n} -f` follows it)",
                humantime::format_duration(timeout)
            ))
        })??,
    };
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .map_err(|e| Error::api(format!("listing the pods of job {job_name}"), e))?
        .items;
    let result = LoopResult::of(&job, &pods).ok_or_else(|| Error::Other(format!("job {job_name} is not a loop's Job")))?;
    format::print(&result.render())?;
    Ok(if result.failed { EXIT_LOOP_FAILED } else { EXIT_OK })
}

/// The merge patch of a run request: its value, who asks (`by`) and why, in one write. An
/// absent requester or reason is removed, so that none is left from an earlier request.
pub fn request_patch(value: &str, by: Option<&str>, reason: Option<&str>) -> serde_json::Value {
    json!({"metadata": {"annotations": {ANN_RUN_REQUESTED_AT: value, ANN_RUN_REQUESTED_BY: by, ANN_RUN_REASON: reason}}})
}

/// `--reason`: one line of at most [`REASON_MAX`] bytes, as the operator keeps it.
pub fn parse_reason(text: &str) -> Result<String, String> {
    let reason = text.trim();
    if reason.len() > REASON_MAX {
        return Err(format!("a reason may take at most {REASON_MAX} bytes, and this one takes {}", reason.len()));
    }
    if clean(reason, REASON_MAX).as_deref() != Some(reason) {
        return Err("a reason is one line of text, without control characters or invisible marks, and not blank".to_string());
    }
    Ok(reason.to_string())
}

/// Watches the LoopService until its status says what became of run request `value`: its
/// loop's number and Job once it started; [`Error::Refused`] or [`Error::TimedOut`] when not.
/// `seen` is the LoopService as the request's write returned it.
async fn wait_for_start(
    api: &Api<DynamicObject>,
    mut seen: Seen,
    value: &str,
    requested_at: Instant,
    timeout: Duration,
) -> Result<(i64, String), Error> {
    note("waiting for the operator to start the loop");
    let config = watcher::Config::default().fields(&format!("metadata.name={}", seen.name));
    let stream = watcher(api.clone(), config).default_backoff();
    pin_mut!(stream);
    // Time passing alone can change the verdict (the settling of an obstacle, the timeout).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        match verdict(&seen, value, requested_at.elapsed(), timeout) {
            Verdict::Wait => {}
            Verdict::Started { r#loop, job } => return Ok((r#loop, job)),
            Verdict::Refused(message) => return Err(Error::Refused(message)),
            Verdict::TimedOut(message) => return Err(Error::TimedOut(message)),
            Verdict::Unknown(message) => return Err(Error::Other(message)),
        }
        tokio::select! {
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => seen = Seen::of(&o),
                Some(Ok(watcher::Event::Delete(_))) => {
                    return Err(Error::Other(format!("loopservice {:?} was deleted before its loop started", seen.name)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if fatal(&e) => return Err(Error::Other(format!("watching loopservice {:?}: {e}", seen.name))),
                // The watcher starts again after a backoff.
                Some(Err(_)) => {}
                None => return Err(Error::Other(format!("the watch of loopservice {:?} ended", seen.name))),
            },
            _ = tick.tick() => {}
        }
    }
}

/// Waits until Job `name` has finished; returns it.
async fn wait_for_end(jobs: Api<Job>, name: &str) -> Result<Job, Error> {
    let ended = |j: Option<&Job>| j.is_none_or(|j| job::observe(j).is_some_and(|o| o.end.is_some()));
    let done = await_condition(jobs, name, ended).await.map_err(|e| Error::Other(format!("watching job {name}: {e}")))?;
    done.ok_or_else(|| Error::Other(format!("job {name} was deleted before it finished")))
}

/// What `run --wait` reads of the LoopService: its name, its spec's generation and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub name: String,
    pub generation: Option<i64>,
    /// The status (the default when there is none), or why it cannot be read.
    pub status: Result<LoopServiceStatus, String>,
}

impl Seen {
    pub fn of(obj: &DynamicObject) -> Seen {
        let status = match obj.data.get("status") {
            None | Some(serde_json::Value::Null) => Ok(LoopServiceStatus::default()),
            Some(s) => serde_path_to_error::deserialize(s).map_err(|e| format!("status.{}: {}", e.path(), e.inner())),
        };
        Seen { name: obj.name_any(), generation: obj.metadata.generation, status }
    }
}

/// What has become of a run request, so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing yet: wait.
    Wait,
    /// Its loop started, as this Job.
    Started { r#loop: i64, job: String },
    /// It cannot run as things stand; the status's words for why.
    Refused(String),
    /// Nothing took it up within the timeout; what the status shows.
    TimedOut(String),
    /// It was taken up, but the status no longer says as what.
    Unknown(String),
}

/// How long an obstacle in the status must stand after the request before it is the answer:
/// the status read first may have been written before the request, and the reconcile the
/// request causes (within a second, with an operator running) may clear it.
pub const SETTLE: Duration = Duration::from_secs(5);

/// What the status in `seen` says of run request `value`, `elapsed` after it was made; a
/// `timeout` of zero never runs out. Pure: the same status and times give the same answer.
pub fn verdict(seen: &Seen, value: &str, elapsed: Duration, timeout: Duration) -> Verdict {
    let timed_out = !timeout.is_zero() && elapsed >= timeout;
    let st = match &seen.status {
        Ok(st) => st,
        Err(why) if timed_out => {
            return Verdict::TimedOut(format!(
                "run request {value} was not taken up within {}: the status of loopservice {:?} cannot be read ({why})",
                humantime::format_duration(timeout),
                seen.name
            ))
        }
        Err(_) => return Verdict::Wait,
    };
    if st.last_handled_run_request.as_deref() == Some(value) {
        return taken_up(st, value);
    }
    match obstacle(seen, st) {
        // The request stays pending: the operator takes it up once the obstacle is gone.
        Some(why) if elapsed >= SETTLE => Verdict::Refused(format!(
            "loopservice {:?} cannot run the request: {why} (the request stays pending: its loop starts once that is fixed)",
            seen.name
        )),
        _ if timed_out => Verdict::TimedOut(not_taken_up(seen, st, value, timeout)),
        _ => Verdict::Wait,
    }
}

/// The loop of a request the operator took up: the newest manual loop in the history (a later
/// manual loop would have come from a later request). A Job the API server refused is the
/// request's end.
fn taken_up(st: &LoopServiceStatus, value: &str) -> Verdict {
    let Some(r) = st.history.iter().find(|r| r.trigger == Trigger::Manual) else {
        return Verdict::Unknown(format!(
            "the operator took up run request {value}, but status.history no longer shows its loop; see `kubectl loopservice history`"
        ));
    };
    let reason = r.reason.as_deref().unwrap_or_default();
    if r.result == crd::LoopResult::Failed && Reason::JobRejected == reason {
        let message = r.message.as_deref().unwrap_or("the API server refused it");
        return Verdict::Refused(format!("loop {} could not start: its Job {} was refused ({reason}): {message}", r.r#loop, r.job_name));
    }
    Verdict::Started { r#loop: r.r#loop, job: r.job_name.clone() }
}

/// What in a status that describes the current spec keeps every loop from starting until a
/// person acts: an invalid spec, or the next Job's name taken by another object.
fn obstacle(seen: &Seen, st: &LoopServiceStatus) -> Option<String> {
    if st.observed_generation != seen.generation {
        return None;
    }
    let ready = st.conditions.iter().find(|c| ConditionType::Ready == c.type_ && c.status == FALSE);
    match ready {
        Some(c) if Reason::InvalidSpec == c.reason || Reason::JobNameTaken == c.reason => {
            Some(format!("Ready is False ({}): {}", c.reason, c.message))
        }
        _ if st.phase == Some(Phase::Invalid) => Some("status.phase is Invalid: its spec cannot be run".to_string()),
        _ => None,
    }
}

/// Why a request was not taken up, in the status's words: a loop still running (a request
/// waits for it), or no operator at work on the LoopService.
fn not_taken_up(seen: &Seen, st: &LoopServiceStatus, value: &str, timeout: Duration) -> String {
    let within = humantime::format_duration(timeout);
    let handled = st.last_handled_run_request.as_deref().unwrap_or(NONE);
    let shows = shows(st);
    match &st.active_job {
        Some(job) => format!(
            "run request {value} was not taken up within {within}: it waits for the running loop (job/{job}) to end; the status shows {shows}"
        ),
        None => format!(
            "no operator took up run request {value} within {within}: status.lastHandledRunRequest of loopservice {:?} is still {handled}, and the status shows {shows}",
            seen.name
        ),
    }
}

/// The phase and Ready condition of a status, as one phrase.
fn shows(st: &LoopServiceStatus) -> String {
    let phase = st.phase.map_or_else(|| NONE.to_string(), |p| p.to_string());
    match st.conditions.iter().find(|c| ConditionType::Ready == c.type_) {
        Some(c) => format!("phase {phase}, Ready {} ({}): {}", c.status, c.reason, c.message),
        None if st.phase.is_none() => "no phase and no conditions: no operator has handled this LoopService".to_string(),
        None => format!("phase {phase}, no Ready condition"),
    }
}

/// A watch error that waiting longer will not cure: the API server refused the request.
fn fatal(e: &watcher::Error) -> bool {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s,
        _ => return false,
    };
    matches!(api.code, 400 | 401 | 403 | 404)
}

/// How a finished loop went, as `run --wait` prints it.
#[derive(Debug, PartialEq)]
pub struct LoopResult {
    pub loop_number: i64,
    pub job: String,
    pub failed: bool,
    pub result: String,
    pub duration_seconds: f64,
    pub message: Option<String>,
}

impl LoopResult {
    /// From the loop's finished Job (read as the operator reads it) and its Pods: a failure's
    /// message says what the operator's status says; a success's is the loop container's
    /// termination message, when it wrote one.
    pub fn of(j: &Job, pods: &[Pod]) -> Option<LoopResult> {
        let o = job::observe(j)?;
        let (end, outcome) = o.end?;
        let duration_seconds = crate::schedule::seconds_between(o.start, end);
        let (failed, result, message) = match outcome {
            Outcome::Succeeded => {
                let message = pods.iter().filter_map(termination).filter_map(|t| t.message).next_back();
                (false, "Succeeded".to_string(), message)
            }
            Outcome::Failed { reason, message } => {
                let detail = job::describe_pods(pods);
                let message = if detail.is_empty() { message } else { format!("{detail}; {message}") };
                (true, format!("Failed ({reason})"), Some(message))
            }
        };
        Some(LoopResult { loop_number: o.loop_number, job: o.name, failed, result, duration_seconds, message })
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "loop:      {}\njob:       {}\nresult:    {}\nduration:  {}\n",
            self.loop_number,
            self.job,
            self.result,
            format::seconds(self.duration_seconds)
        );
        if let Some(m) = self.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            out.push_str(&format!("message:   {}\n", m.replace('\n', "\n           ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(condition: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "nightly-4", "labels": {"loops.dev/loop": "4"},
                         "annotations": {"loops.dev/start-time": "2026-11-25T10:00:00.400Z"}},
            "status": {"conditions": [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit",
                                       "lastTransitionTime": "2026-11-25T10:00:03Z"}],
                       "completionTime": "2026-11-25T10:00:03Z"}
        }))
        .unwrap()
    }

    fn pod(exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "nightly-4-abcde"},
            "status": {"containerStatuses": [{"name": "loop", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_succeeded_loop_shows_its_number_duration_and_termination_message() {
        let r = LoopResult::of(&job("Complete"), &[pod(0, "42 rows\n")]).unwrap();
        assert_eq!(r.render(), "loop:      4\njob:       nightly-4\nresult:    Succeeded\nduration:  2.6s\nmessage:   42 rows\n");
        assert!(!r.failed);
    }

    #[test]
    fn a_failed_loop_shows_the_containers_exit_and_the_jobs_reason() {
        let r = LoopResult::of(&job("Failed"), &[pod(3, "disk full")]).unwrap();
        assert!(r.failed);
        assert_eq!(r.result, "Failed (JobFailed)");
        assert_eq!(
            r.message.as_deref(),
            Some("container exited with code 3 (Error): disk full; Job nightly-4 failed: BackoffLimitExceeded (Job has reached the specified backoff limit)")
        );
        // A Job that has not ended is no result.
        let mut running = job("Complete");
        running.status = None;
        assert_eq!(LoopResult::of(&running, &[]), None);
    }

    #[test]
    fn a_request_says_who_asks_and_why_and_leaves_nothing_of_an_earlier_one() {
        assert_eq!(
            request_patch("2026-11-25T10:00:00Z", Some("alice"), Some("late data")),
            json!({"metadata": {"annotations": {"loops.dev/run-requested-at": "2026-11-25T10:00:00Z",
                "loops.dev/run-requested-by": "alice", "loops.dev/run-reason": "late data"}}})
        );
        // null removes the key in a merge patch.
        assert_eq!(
            request_patch("2026-11-25T10:00:00Z", None, None),
            json!({"metadata": {"annotations": {"loops.dev/run-requested-at": "2026-11-25T10:00:00Z",
                "loops.dev/run-requested-by": null, "loops.dev/run-reason": null}}})
        );
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        assert_eq!(parse_reason("  the night's data came late ").as_deref(), Ok("the night's data came late"));
        assert_eq!(parse_reason("ré".repeat(66).as_str()).map(|r| r.len()), Ok(198));
        assert_eq!(parse_reason(&"x".repeat(201)), Err("a reason may take at most 200 bytes, and this one takes 201".to_string()));
        for bad in ["two\nlines", "a\u{1b}[31mred", "hidden\u{202e}txet", "  "] {
            assert!(parse_reason(bad).unwrap_err().starts_with("a reason is one line of text"), "{bad:?}");
        }
    }

    const ASKED: &str = "2026-11-25T10:00:00.123456789Z";

    /// The LoopService `nightly` at generation 2, with `status` (JSON) as the operator wrote it.
    fn seen(status: serde_json::Value) -> Seen {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "nightly", "namespace": "ops", "generation": 2},
            "spec": {"interval": "1h", "image": "busybox"},
            "status": status,
        }))
        .unwrap();
        Seen::of(&obj)
    }

    fn ready(status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": "2026-11-25T09:00:00Z"}])
    }

    fn manual(n: i64, result: &str, reason: Option<&str>, message: Option<&str>) -> serde_json::Value {
        json!({"loop": n, "jobName": format!("nightly-{n}"), "trigger": "Manual", "dueTime": "2026-11-25T10:00:01Z",
               "startTime": "2026-11-25T10:00:01Z", "result": result, "reason": reason, "message": message})
    }

    fn scheduled(n: i64) -> serde_json::Value {
        json!({"loop": n, "jobName": format!("nightly-{n}"), "trigger": "Scheduled", "dueTime": "2026-11-25T10:00:01Z",
               "startTime": "2026-11-25T10:00:01Z", "result": "Running"})
    }

    #[test]
    fn the_verdict_on_a_run_request_comes_from_the_status_and_the_time_waited() {
        let s = Duration::from_secs;
        let waiting = json!({"observedGeneration": 2, "phase": "Waiting", "lastHandledRunRequest": "2026-11-25T09:00:00Z",
                             "conditions": ready("True", "Waiting", "loop 5 is due at 2026-11-25T11:00:00.000Z")});
        let mut started = waiting.clone();
        started["lastHandledRunRequest"] = json!(ASKED);
        started["history"] = json!([manual(5, "Running", None, None), manual(4, "Succeeded", None, None)]);
        // A scheduled loop after the manual one does not hide it.
        let mut then_scheduled = started.clone();
        then_scheduled["history"] = json!([scheduled(6), manual(5, "Succeeded", None, None)]);
        let mut rejected = started.clone();
        rejected["history"] =
            json!([manual(5, "Failed", Some("JobRejected"), Some("the API server refused the Job: exceeded quota: pods=10"))]);
        let mut trimmed = started.clone();
        trimmed["history"] = json!([scheduled(16)]);
        let invalid = json!({"observedGeneration": 2, "phase": "Invalid",
                             "conditions": ready("False", "InvalidSpec", "spec.interval: \"soon\" is not a duration")});
        let mut invalid_before = invalid.clone();
        invalid_before["observedGeneration"] = json!(1);
        let taken = json!({"observedGeneration": 2, "phase": "Waiting", "conditions": ready("False", "JobNameTaken",
                           "loop 5 cannot start: Job nightly-5 exists and is not this LoopService's; delete it or rename it")});
        let running = json!({"observedGeneration": 2, "phase": "Running", "activeJob": "nightly-4",
                             "conditions": ready("True", "Running", "loop 4 is running as Job nightly-4")});
        let cases: Vec<(&str, serde_json::Value, u64, u64, Verdict)> = vec![
            ("nothing yet", waiting.clone(), 3, 600, Verdict::Wait),
            ("started", started, 3, 600, Verdict::Started { r#loop: 5, job: "nightly-5".into() }),
            ("started, a scheduled loop since", then_scheduled, 3, 600, Verdict::Started { r#loop: 5, job: "nightly-5".into() }),
            (
                "the Job refused",
                rejected,
                1,
                600,
                Verdict::Refused("loop 5 could not start: its Job nightly-5 was refused (JobRejected): the API server refused the Job: exceeded quota: pods=10".into()),
            ),
            ("taken up, gone from the history", trimmed, 1, 600, Verdict::Unknown("the operator took up run request 2026-11-25T10:00:00.123456789Z, but status.history no longer shows its loop; see `kubectl loopservice history`".into())),
            ("invalid, not settled", invalid.clone(), 2, 600, Verdict::Wait),
            (
                "invalid",
                invalid.clone(),
                5,
                600,
                Verdict::Refused("loopservice \"nightly\" cannot run the request: Ready is False (InvalidSpec): spec.interval: \"soon\" is not a duration (the request stays pending: its loop starts once that is fixed)".into()),
            ),
            ("invalid for an older spec", invalid_before.clone(), 30, 600, Verdict::Wait),
            (
                "invalid for an older spec, timed out",
                invalid_before,
                600,
                600,
                Verdict::TimedOut("no operator took up run request 2026-11-25T10:00:00.123456789Z within 10m: status.lastHandledRunRequest of loopservice \"nightly\" is still <none>, and the status shows phase Invalid, Ready False (InvalidSpec): spec.interval: \"soon\" is not a duration".into()),
            ),
            (
                "name taken",
                taken,
                6,
                600,
                Verdict::Refused("loopservice \"nightly\" cannot run the request: Ready is False (JobNameTaken): loop 5 cannot start: Job nightly-5 exists and is not this LoopService's; delete it or rename it (the request stays pending: its loop starts once that is fixed)".into()),
            ),
            (
                "no operator",
                waiting.clone(),
                600,
                600,
                Verdict::TimedOut("no operator took up run request 2026-11-25T10:00:00.123456789Z within 10m: status.lastHandledRunRequest of loopservice \"nightly\" is still 2026-11-25T09:00:00Z, and the status shows phase Waiting, Ready True (Waiting): loop 5 is due at 2026-11-25T11:00:00.000Z".into()),
            ),
            ("no operator, no timeout", waiting, 86_400, 0, Verdict::Wait),
            (
                "never handled",
                serde_json::Value::Null,
                30,
                30,
                Verdict::TimedOut("no operator took up run request 2026-11-25T10:00:00.123456789Z within 30s: status.lastHandledRunRequest of loopservice \"nightly\" is still <none>, and the status shows no phase and no conditions: no operator has handled this LoopService".into()),
            ),
            ("behind a running loop", running.clone(), 30, 600, Verdict::Wait),
            (
                "behind a running loop, timed out",
                running,
                600,
                600,
                Verdict::TimedOut("run request 2026-11-25T10:00:00.123456789Z was not taken up within 10m: it waits for the running loop (job/nightly-4) to end; the status shows phase Running, Ready True (Running): loop 4 is running as Job nightly-4".into()),
            ),
            ("an unreadable status", json!({"loopsStarted": "many"}), 30, 600, Verdict::Wait),
            (
                "an unreadable status, timed out",
                json!({"loopsStarted": "many"}),
                60,
                60,
                Verdict::TimedOut("run request 2026-11-25T10:00:00.123456789Z was not taken up within 1m: the status of loopservice \"nightly\" cannot be read (status.loopsStarted: invalid type: string \"many\", expected i64)".into()),
            ),
        ];
        for (what, status, elapsed, timeout, want) in cases {
            assert_eq!(verdict(&seen(status), ASKED, s(elapsed), s(timeout)), want, "{what}");
        }
    }
}
