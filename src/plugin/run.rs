//! `run NAME [--wait] [--timeout DUR]`: a run request (a new value of the annotation
//! loops.dev/run-requested-at), and with --wait the result of the loop that answers it.

use std::time::Duration;

use futures::{pin_mut, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::connect::Target;
use super::format;
use super::logs::termination;
use super::{Error, EXIT_LOOP_FAILED, EXIT_OK};
use crate::crd::LoopService;
use crate::job::{self, Outcome};
use crate::keys::{ANN_RUN_REQUEST, ANN_RUN_REQUESTED_AT, LABEL_UID};

pub async fn run(t: &Target, name: &str, wait: bool, timeout: Duration) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let ls = api.get(name).await.map_err(|e| Error::loopservice("reading", name, &t.namespace, e))?;
    let uid = ls.uid().ok_or_else(|| Error::Other(format!("loopservice {name:?} has no uid")))?;
    // The instant to the nanosecond: a new value for each request, and it says when.
    let value = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {ANN_RUN_REQUESTED_AT: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::loopservice("requesting a run of", name, &t.namespace, e))?;
    format::print(&format!("loopservice.loops.dev/{name} run requested ({ANN_RUN_REQUESTED_AT}={value})\n"))?;
    if !wait {
        return Ok(EXIT_OK);
    }
    let waiting = wait_for_loop(t, &uid, &value);
    let job = if timeout.is_zero() {
        waiting.await?
    } else {
        tokio::time::timeout(timeout, waiting).await.map_err(|_| {
            Error::Other(format!("timed out after {} waiting for the loop of run request {value}", humantime::format_duration(timeout)))
        })??
    };
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.namespace);
    let job_name = job.name_any();
    let pods = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .map_err(|e| Error::api(format!("listing the pods of job {job_name}"), e))?
        .items;
    let result = LoopResult::of(&job, &pods).ok_or_else(|| Error::Other(format!("job {job_name} is not a loop's Job")))?;
    format::print(&result.render())?;
    Ok(if result.failed { EXIT_LOOP_FAILED } else { EXIT_OK })
}

/// Waits until the operator has started the request's loop (its Job carries the request's
/// value) and that Job has finished; returns the finished Job.
async fn wait_for_loop(t: &Target, uid: &str, value: &str) -> Result<Job, Error> {
    let jobs: Api<Job> = Api::namespaced(t.client.clone(), &t.namespace);
    format::note("waiting for the operator to start the loop");
    let config = watcher::Config::default().labels(&format!("{LABEL_UID}={uid}"));
    let stream = watcher(jobs.clone(), config).default_backoff().applied_objects();
    pin_mut!(stream);
    let mut started = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(j) if j.annotations().get(ANN_RUN_REQUEST).map(String::as_str) == Some(value) => {
                started = Some(j);
                break;
            }
            Ok(_) => {}
            Err(e) if fatal(&e) => return Err(Error::Other(format!("watching the jobs: {e}"))),
            // The watcher starts again after a backoff.
            Err(_) => {}
        }
    }
    let j = started.ok_or_else(|| Error::Other("the watch of the jobs ended".to_string()))?;
    let job_name = j.name_any();
    let n = job::observe(&j).map_or_else(|| "?".to_string(), |o| o.loop_number.to_string());
    format::note(&format!("loop {n} started: job/{job_name}; waiting for it to finish"));
    let ended = |j: Option<&Job>| j.is_none_or(|j| job::observe(j).is_some_and(|o| o.end.is_some()));
    let done = await_condition(jobs, &job_name, ended).await.map_err(|e| Error::Other(format!("watching job {job_name}: {e}")))?;
    done.ok_or_else(|| Error::Other(format!("job {job_name} was deleted before it finished")))
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
}
