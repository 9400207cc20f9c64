//! Pure status bookkeeping: what the owned Jobs mean for the LoopService's status, what to
//! do next, and the phase and conditions that tell a user about it.
//!
//! Every loop's end is recorded exactly once: loops run one after another, so
//! `lastFinishedLoop` (written in the same status update as the counters) says which loops
//! are already counted. A Job the operator created but did not record (it was killed between
//! the two writes) is adopted from the Jobs on the next reconcile.

use std::time::Duration;

use jiff::Timestamp;

use crate::crd::{Condition, LoopError, LoopRecord, LoopResult, LoopServiceSpec, LoopServiceStatus, Overrun, Phase, Time, Trigger};
use crate::job::{ObservedJob, Outcome, PreviousResult};
use crate::pause::{self, Pause, Window};
use crate::reasons::{condition_status, ConditionType, Reason};
use crate::schedule::{self, Alignment, Grid, Jitter, PreviousLoop};
use crate::spec::ValidSpec;
use crate::text::{clip, clip_to};

pub mod catch_up;
pub mod forecast;
pub mod why;

pub use catch_up::skip_missed;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod requester_tests;

/// Something worth an Event.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    pub message: String,
    /// The loop's Job, when there is one: the Event's related object. It also keeps Events
    /// of different loops apart, where the recorder would fold them into one series.
    pub job: Option<String>,
    /// How many of what it tells of happened: the due times a LoopsMissed note covers, else 1.
    pub times: u64,
    /// The start of a loop a person asked for (a run request): an Event whatever
    /// `--loop-events` says, since who asked, and why, is news to whoever looks.
    pub requested: bool,
    /// For a LoopAdmitted note: how long the loop's Job waited for its queue.
    pub seconds: Option<f64>,
}

impl Note {
    pub fn normal(reason: Reason, message: String) -> Self {
        Note { warning: false, reason, message, job: None, times: 1, requested: false, seconds: None }
    }
    pub fn warning(reason: Reason, message: String) -> Self {
        Note { warning: true, reason, message: clip(&message), job: None, times: 1, requested: false, seconds: None }
    }
    fn about(mut self, job: Option<&str>) -> Self {
        self.job = job.map(str::to_string);
        self
    }
}

/// Records what the Jobs say: adopts a started loop the status does not know of yet, and
/// counts every finished loop not yet counted, in order.
///
/// `interval` is the spec's interval now, and it judges whether each loop recorded here
/// overran: when `spec.interval` is changed while a loop runs, the new interval judges it. That
/// is the interval that places the next loop (max(start + interval, end)), so a loop counts as
/// an overrun exactly when the next loop had to wait for its end: a 20 s loop started under a
/// 30 s interval that was then lowered to 10 s overran (the next loop starts when it ends),
/// and a 20 s loop started under 10 s that was raised to 30 s did not.
pub fn record_jobs(prev: &LoopServiceStatus, jobs: &[ObservedJob], interval: Duration, now: Timestamp) -> (LoopServiceStatus, Vec<Note>) {
    let mut st = prev.clone();
    // Counts are never negative; a status edited to say so counts from zero.
    for c in [
        &mut st.loops_started,
        &mut st.last_finished_loop,
        &mut st.loops_succeeded,
        &mut st.loops_failed,
        &mut st.overruns,
        &mut st.consecutive_failures,
        &mut st.manual_loops,
        &mut st.loops_missed,
    ] {
        *c = (*c).max(0);
    }
    let mut notes: Vec<Note> = adopt(&mut st, jobs).into_iter().collect();
    count_ends(&mut st, &mut notes, jobs, interval, now);
    // Never two loops at once: a running Job of this LoopService, whatever its number (a
    // status read a step behind, a loop recorded as refused whose Job appeared after all),
    // holds back the next loop until it ends.
    if st.active_job.is_none() {
        let running = jobs.iter().filter(|j| j.end.is_none()).max_by_key(|j| j.loop_number);
        st.active_job = running.map(|j| j.name.clone());
        st.queued_since = running.and_then(|j| j.queued_since).map(Time);
    }
    (st, notes)
}

/// Adopts a started loop the status does not know of yet. Only the loop after the last
/// recorded start can have such a Job: the operator creates one Job per reconcile and records
/// it in the very next step. A larger number (a hand-edited label, say) is not taken as
/// progress. With no status at all (lost, or never written) the newest Job is adopted, and
/// what is known is rebuilt from the Jobs left.
fn adopt(st: &mut LoopServiceStatus, jobs: &[ObservedJob]) -> Option<Note> {
    let lost = st.loops_started == 0 && st.last_finished_loop == 0;
    let started = st.loops_started;
    let j = jobs
        .iter()
        .filter(|j| if lost { j.loop_number > 0 } else { Some(j.loop_number) == started.checked_add(1) })
        .max_by_key(|j| j.loop_number)?;
    st.loops_started = j.loop_number;
    st.last_start_time = Some(Time(j.start));
    if lost {
        // What happened before the oldest Job still here cannot be known: count from there.
        st.last_finished_loop = jobs.iter().map(|j| j.loop_number).min().unwrap_or(1) - 1;
        // Manual loops among the Jobs left; older ones cannot be known.
        st.manual_loops = jobs.iter().filter(|o| o.run_request.is_some() && o.loop_number <= j.loop_number).count() as i64;
        let newest_manual = jobs.iter().filter(|o| o.run_request.is_some()).max_by_key(|o| o.loop_number);
        st.last_handled_run_request = newest_manual.and_then(|o| o.run_request.clone());
        // The history of the Jobs left, oldest first (each updated as it is counted).
        let mut left: Vec<&ObservedJob> = jobs.iter().filter(|o| o.loop_number <= j.loop_number).collect();
        left.sort_by_key(|o| o.loop_number);
        for o in left {
            remember(st, started_record(o));
        }
    } else {
        if let Some(r) = &j.run_request {
            handled(st, r);
        }
        remember(st, started_record(j));
    }
    Some(Note::normal(Reason::LoopAdopted, format!("found Job {} of loop {} and took it over", j.name, j.loop_number)).about(Some(&j.name)))
}

/// Counts every finished loop not yet counted, in order, up to the running one.
fn count_ends(st: &mut LoopServiceStatus, notes: &mut Vec<Note>, jobs: &[ObservedJob], interval: Duration, now: Timestamp) {
    st.active_job = None;
    st.queued_since = None;
    let mut k = st.last_finished_loop.saturating_add(1);
    while k <= st.loops_started {
        match jobs.iter().find(|j| j.loop_number == k) {
            Some(j) => {
                admission(st, notes, j);
                match &j.end {
                    None => {
                        st.active_job = Some(j.name.clone());
                        st.queued_since = j.queued_since.map(Time);
                        break;
                    }
                    Some((end, outcome)) => record_end(st, notes, j, *end, outcome, interval),
                }
            }
            None => k = record_deleted(st, notes, jobs, k, interval, now),
        }
        st.last_finished_loop = k;
        let Some(next) = k.checked_add(1) else { break };
        k = next;
    }
}

/// A loop's Job that its queue admitted since the status last looked: its record says when,
/// and a note carries the wait, from the Job's creation to its admission.
fn admission(st: &mut LoopServiceStatus, notes: &mut Vec<Note>, j: &ObservedJob) {
    let (Some(at), Some(queue)) = (j.admitted, &j.queue) else { return };
    let Some(r) = st.history.iter_mut().find(|r| r.r#loop == j.loop_number && r.result != LoopResult::Missed) else { return };
    if r.admitted_time.is_some() {
        return;
    }
    r.admitted_time = Some(Time(at));
    let waited = schedule::seconds_between(j.start, at).max(0.0);
    let message = format!("queue {queue} admitted Job {} of loop {} after {waited:.1} s", j.name, j.loop_number);
    notes.push(Note { seconds: Some(waited), ..Note::normal(Reason::LoopAdmitted, message).about(Some(&j.name)) });
}

/// Loops from `k` on have no Job: all deleted before their ends were recorded. Counted as
/// failed in one step, however many there are; returns the last of them.
fn record_deleted(
    st: &mut LoopServiceStatus,
    notes: &mut Vec<Note>,
    jobs: &[ObservedJob],
    k: i64,
    interval: Duration,
    now: Timestamp,
) -> i64 {
    let last = jobs.iter().map(|j| j.loop_number).filter(|n| *n > k && *n <= st.loops_started).min().map_or(st.loops_started, |n| n - 1);
    let message = if last == k {
        format!("the Job of loop {k} was deleted before its end was recorded")
    } else {
        format!("the Jobs of loops {k} to {last} were deleted before their ends were recorded")
    };
    let failure = Failure { last, count: last.saturating_sub(k).saturating_add(1), job: None, at: now, reason: Reason::JobDeleted };
    fail(st, notes, failure, message.clone());
    for r in st.history.iter_mut().filter(|r| r.r#loop >= k && r.r#loop <= last && r.result == LoopResult::Running) {
        finish_record(r, now, Some((Reason::JobDeleted, &message)), interval);
    }
    last
}

/// How many loops `status.history` keeps. Ten records of at most a few hundred bytes each
/// keep the status small; Events and metrics hold the longer story.
pub const HISTORY: usize = 10;
/// The longest message a history record keeps (lastError has the full one).
pub const HISTORY_MESSAGE: usize = 200;

/// Puts a record into the history, newest first: a loop's replaces the one of the same loop,
/// a Missed one the Missed one of the same first due time. A Missed record carries the number
/// of the loop that runs after it, and comes after that loop's record.
fn remember(st: &mut LoopServiceStatus, record: LoopRecord) {
    let missed = |r: &LoopRecord| r.result == LoopResult::Missed;
    let same = |r: &LoopRecord| {
        if missed(&record) {
            missed(r) && r.due_time == record.due_time
        } else {
            !missed(r) && r.r#loop == record.r#loop
        }
    };
    st.history.retain(|r| !same(r));
    st.history.push(record);
    st.history.sort_by_key(|r| (std::cmp::Reverse(r.r#loop), missed(r), std::cmp::Reverse(r.due_time)));
    st.history.truncate(HISTORY);
}

/// Loop `n`'s record in the history, if it is still there (never a Missed record).
fn record_of(st: &LoopServiceStatus, n: i64) -> Option<&LoopRecord> {
    st.history.iter().find(|r| r.r#loop == n && r.result != LoopResult::Missed)
}

/// The record of a loop that has started, from its Job.
fn started_record(j: &ObservedJob) -> LoopRecord {
    let manual = j.run_request.is_some();
    LoopRecord {
        r#loop: j.loop_number,
        job_name: j.name.clone(),
        trigger: if manual { Trigger::Manual } else { Trigger::Scheduled },
        requested_by: j.requester.by.clone().filter(|_| manual),
        request_reason: j.requester.reason.clone().filter(|_| manual),
        due_time: Time(j.scheduled.unwrap_or(j.start)),
        start_time: Time(j.start),
        end_time: None,
        duration_seconds: None,
        result: LoopResult::Running,
        reason: None,
        message: None,
        overran: false,
        admitted_time: j.admitted.map(Time),
        missed_due_times: None,
    }
}

/// Marks a record ended at `end`: succeeded, or failed with (reason, message).
fn finish_record(r: &mut LoopRecord, end: Timestamp, failure: Option<(Reason, &str)>, interval: Duration) {
    let end = end.max(r.start_time.0);
    let took = schedule::seconds_between(r.start_time.0, end);
    r.end_time = Some(Time(end));
    r.duration_seconds = Some((took * 1000.0).round() / 1000.0);
    r.overran = schedule::overran(r.start_time.0, end, interval);
    match failure {
        None => r.result = LoopResult::Succeeded,
        Some((reason, message)) => {
            r.result = LoopResult::Failed;
            r.reason = Some(reason.to_string());
            r.message = Some(clip_to(message, HISTORY_MESSAGE));
        }
    }
}

fn record_end(st: &mut LoopServiceStatus, notes: &mut Vec<Note>, j: &ObservedJob, end: Timestamp, outcome: &Outcome, interval: Duration) {
    let (k, job, start) = (j.loop_number, j.name.as_str(), j.start);
    let mut record = record_of(st, k).cloned().unwrap_or_else(|| started_record(j));
    let failure = match outcome {
        Outcome::Succeeded => None,
        Outcome::Failed { reason, message } => Some((*reason, clip(message))),
    };
    finish_record(&mut record, end, failure.as_ref().map(|(r, m)| (*r, m.as_str())), interval);
    if failure.is_none() {
        st.last_success_scheduled_time = Some(record.due_time);
    }
    remember(st, record);
    let took = schedule::seconds_between(start, end);
    if schedule::overran(start, end, interval) {
        st.overruns = st.overruns.saturating_add(1);
        let mut message = schedule::overrun_message(k, took, interval);
        if let Some(admitted) = record_of(st, k).and_then(|r| r.admitted_time) {
            message.push_str(&format!(", {:.1} s of it waiting for its queue", schedule::seconds_between(start, admitted.0).max(0.0)));
        }
        st.last_overrun = Some(Overrun {
            r#loop: k,
            duration_seconds: (took * 1000.0).round() / 1000.0,
            interval_seconds: interval.as_secs_f64(),
            time: Time(end),
            message: message.clone(),
        });
        notes.push(Note::warning(Reason::LoopOverrun, message).about(Some(job)));
    }
    match outcome {
        Outcome::Succeeded => {
            st.loops_succeeded = st.loops_succeeded.saturating_add(1);
            st.consecutive_failures = 0;
            st.last_success_time = Some(Time(end));
            st.last_completion_time = Some(Time(end));
            notes.push(
                Note::normal(Reason::LoopSucceeded, format!("loop {k} succeeded in {} seconds", schedule::fmt_secs(took))).about(Some(job)),
            );
        }
        Outcome::Failed { reason, message } => {
            st.last_completion_time = Some(Time(end));
            fail(st, notes, Failure { last: k, count: 1, job: Some(job), at: end, reason: *reason }, message.clone());
        }
    }
}

/// `count` failed loops, the last of them loop `last`, ended `at` for `reason`.
struct Failure<'a> {
    last: i64,
    count: i64,
    job: Option<&'a str>,
    at: Timestamp,
    reason: Reason,
}

/// Records failed loops.
fn fail(st: &mut LoopServiceStatus, notes: &mut Vec<Note>, failure: Failure<'_>, message: String) {
    let Failure { last: k, count, job, at, reason } = failure;
    let message = clip(&message);
    st.loops_failed = st.loops_failed.saturating_add(count);
    st.consecutive_failures = st.consecutive_failures.saturating_add(count);
    st.last_failure_time = Some(Time(at));
    if st.last_completion_time.is_none_or(|t| t.0 < at) {
        st.last_completion_time = Some(Time(at));
    }
    st.last_error = Some(LoopError { r#loop: k, reason: reason.to_string(), message: message.clone(), time: Time(at) });
    notes.push(Note::warning(Reason::LoopFailed, format!("loop {k} failed ({reason}): {message}")).about(job));
}

/// Records that the loop of run request `r` has started: it is not handled again.
fn handled(st: &mut LoopServiceStatus, r: &str) {
    st.manual_loops = st.manual_loops.saturating_add(1);
    st.last_handled_run_request = Some(r.to_string());
}

/// The longest run request taken: the time `kubectl loopservice run` and `date -Is` write
/// takes 25 to 35 characters. The value is copied to status and to the loop's Job and Pod.
pub const RUN_REQUEST_MAX: usize = 64;

/// Whether a run request's value is one the operator runs: at most [`RUN_REQUEST_MAX`]
/// characters, none of them a control character. Any such value will do, as with Flux's
/// `reconcile.fluxcd.io/requestedAt` (a time is the convention, not a rule).
pub fn run_request_ok(r: &str) -> bool {
    r.len() <= RUN_REQUEST_MAX && !r.chars().any(char::is_control) && !r.starts_with(DIGEST)
}

/// How the digest of a refused run request begins (the cache keeps a value too long to run as
/// its digest); a run request may not begin so.
const DIGEST: &str = "sha256:";

/// What status records of a refused run request: the value, or a digest of one too long to copy.
pub fn refused_request_key(r: &str) -> String {
    if r.len() <= RUN_REQUEST_MAX {
        return r.to_string();
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(r.as_bytes());
    format!("{DIGEST}{}", digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
}

/// The run request not yet handled: the annotation's value, when it is new and one the
/// operator runs.
pub fn pending_run_request<'a>(status: &LoopServiceStatus, annotation: Option<&'a str>) -> Option<&'a str> {
    annotation.filter(|r| !r.is_empty() && run_request_ok(r) && Some(*r) != status.last_handled_run_request.as_deref())
}

/// A new run request the operator does not run (too long, or with control characters):
/// recorded as handled, with a Warning, and no loop.
pub fn refuse_run_request(st: &mut LoopServiceStatus, annotation: Option<&str>) -> Option<Note> {
    let r = annotation.filter(|r| !r.is_empty() && !run_request_ok(r))?;
    let key = refused_request_key(r);
    if st.last_handled_run_request.as_deref() == Some(key.as_str()) {
        return None;
    }
    st.last_handled_run_request = Some(key);
    let shown = match r {
        _ if r.len() > RUN_REQUEST_MAX => format!("a value of {} characters", r.len()),
        _ if r.starts_with(DIGEST) => format!("a value of more than {RUN_REQUEST_MAX} characters ({r})"),
        _ => format!("{r:?}"),
    };
    Some(Note::warning(
        Reason::RunRequestRefused,
        format!(
            "no loop for the run request {shown}: loops.dev/run-requested-at must be at most {RUN_REQUEST_MAX} characters with no control characters, such as the time `kubectl loopservice run` or `date -Is` writes"
        ),
    ))
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Start loop `loop_number` now; it was due at `scheduled`. `run_request` is the run
    /// request it answers, for a manual loop.
    Launch {
        loop_number: i64,
        scheduled: Timestamp,
        run_request: Option<String>,
    },
    /// A loop runs; nothing starts until it ends.
    Running {
        job: String,
    },
    /// The next loop is due at this instant.
    Wait {
        until: Timestamp,
    },
    /// The next loop would start inside a window of spec.pauseWindows: it starts at `until`,
    /// the end of the windows that cover it; `window` names the latest of them.
    Paused {
        until: Timestamp,
        window: String,
    },
    Suspended,
    /// The LoopService suspended itself: `failures` loops failed in a row, the last `loop`.
    SuspendedAfterFailures {
        failures: i64,
        r#loop: i64,
    },
    Finished,
    /// The spec cannot run (`message` says why): nothing starts until it changes. With
    /// `recheck`, the API server refused it, for a cause that may lie outside the spec (a
    /// quota, a webhook), and it is checked again now and then. [`decide`] never says this;
    /// the reconcile's plan does, before deciding.
    Invalid {
        message: String,
        recheck: bool,
    },
}

/// What stands in the way of the next step, found by the reconcile: Ready turns False with a
/// reason that tells a person what to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Obstacle {
    /// Loop `r#loop`'s Job name is taken by a Job that is not this LoopService's.
    NameTaken { r#loop: i64, job: String },
    /// Loop `r#loop` waits for a Pod of a deleted Job of this LoopService (loops never overlap).
    Lingering { r#loop: i64, pod: String, phase: String },
    /// The running loop's Pod cannot make progress ([`Reason::LoopStuck`]) or cannot be
    /// created ([`Reason::PodCreateFailed`]): `why`.
    Stuck { job: String, reason: Reason, why: String },
}

impl Obstacle {
    /// Ready's reason and message, and the Job the Event is about.
    fn verdict(&self, st: &LoopServiceStatus) -> (Reason, String, Option<&str>) {
        match self {
            Obstacle::NameTaken { r#loop, job } => (
                Reason::JobNameTaken,
                format!("loop {loop} cannot start: Job {job} exists and is not this LoopService's; delete it or rename it"),
                Some(job),
            ),
            Obstacle::Lingering { r#loop, pod, phase } => (
                Reason::LoopStuck,
                format!("loop {loop} waits for Pod {pod} ({phase}) of a deleted Job of this LoopService to end; delete the Pod to go on"),
                None,
            ),
            Obstacle::Stuck { job, reason, why } => {
                (*reason, format!("loop {} is running as Job {job}, but {why}", st.loops_started), Some(job))
            }
        }
    }
}

/// Failed loops in a row that count toward spec.suspendAfterFailures: those after the
/// latest self-suspension, once it has ended (a resume starts the count again).
pub fn failures_toward_suspension(st: &LoopServiceStatus) -> i64 {
    match &st.failure_suspension {
        Some(s) if !s.active => st.consecutive_failures.min(st.last_finished_loop.saturating_sub(s.r#loop)).max(0),
        _ => st.consecutive_failures,
    }
}

/// Applies spec.suspendAfterFailures (`limit`) to the recorded loops: ends a self-suspension
/// when the spec changed (another generation) or a loop succeeded, and starts one when
/// `limit` loops failed in a row since the latest resume. The Note (for a Warning Event)
/// comes once, when it starts. The spec is never written: a user's `suspend` stays theirs.
pub fn suspend_after_failures(st: &mut LoopServiceStatus, limit: Option<i64>, generation: Option<i64>, now: Timestamp) -> Option<Note> {
    if let Some(s) = st.failure_suspension.as_mut().filter(|s| s.active) {
        if Some(s.generation) != generation || st.consecutive_failures == 0 || limit.is_none() {
            s.active = false;
        }
        return None;
    }
    let limit = limit?;
    let failures = failures_toward_suspension(st);
    if failures < limit {
        return None;
    }
    let r#loop = st.last_finished_loop;
    st.failure_suspension =
        Some(crate::crd::FailureSuspension { r#loop, failures, time: Time(now), generation: generation.unwrap_or(0), active: true });
    let job = record_of(st, r#loop).map(|r| r.job_name.clone());
    Some(Note::warning(Reason::SuspendedAfterFailures, suspension_message(failures, r#loop)).about(job.as_deref()))
}

fn suspension_message(failures: i64, r#loop: i64) -> String {
    format!(
        "suspended after {failures} loops failed in a row (spec.suspendAfterFailures), the last loop {}; change the spec to resume (set suspend to true and back to false), or request a run",
        r#loop
    )
}

/// What the next step depends on besides the recorded status: the spec's controls and the
/// run request annotation (`loops.dev/run-requested-at`).
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub loops: Option<i64>,
    pub suspended: bool,
    pub run_request: Option<&'a str>,
    pub interval: Duration,
    pub jitter: Option<&'a Jitter<'a>>,
    /// spec.failureBackoff: (initial, max).
    pub backoff: Option<(Duration, Duration)>,
    /// spec.alignment.
    pub alignment: Option<Alignment>,
    /// spec.catchUpWindow.
    pub catch_up: Option<Duration>,
    /// spec.pauseWindows.
    pub windows: &'a [Window],
}

impl<'a> Rules<'a> {
    /// The rules of a spec the operator validated (`valid`), with its jitter (made for the
    /// LoopService's uid), its creation time and the run request pending on it.
    pub fn of(
        spec: &LoopServiceSpec,
        valid: &'a ValidSpec,
        jitter: Option<&'a Jitter<'a>>,
        created: Timestamp,
        run_request: Option<&'a str>,
    ) -> Rules<'a> {
        Rules {
            loops: spec.loops,
            suspended: spec.is_suspended(),
            run_request,
            interval: valid.interval,
            jitter,
            backoff: valid.failure_backoff,
            alignment: valid.alignment.map(|offset| Alignment { offset, created }),
            catch_up: valid.catch_up_window,
            windows: &valid.pause_windows,
        }
    }

    /// Start-anchored loops every `interval` and nothing else: no control set, none pending.
    pub fn every(interval: Duration) -> Rules<'static> {
        Rules {
            loops: None,
            suspended: false,
            run_request: None,
            interval,
            jitter: None,
            backoff: None,
            alignment: None,
            catch_up: None,
            windows: &[],
        }
    }
}

/// Why the next scheduled loop is due when it is: the terms of the loop rule,
/// max(previous start + interval, previous end), and the controls on top of it. [`decide`]
/// starts the loop at `start`; [`why::why`] says which of these terms sets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// The previous loop's start, as recorded (never after `now`).
    pub previous_start: Option<Timestamp>,
    /// What the interval counts from: the previous start without its jitter delay (manual
    /// loops have none), so delays never add up; with spec.alignment, the grid point it was
    /// due at when it started on time (see [`Grid::anchor`]).
    pub anchor: Option<Timestamp>,
    /// anchor + interval.
    pub by_interval: Option<Timestamp>,
    /// The previous loop's end (its start when no end is recorded).
    pub previous_end: Option<Timestamp>,
    /// The loop rule's time, before the failure backoff: max(by_interval, previous_end), or
    /// when the first loop is due; or `resumed` when that is later.
    pub by_rule: Timestamp,
    /// After due times were skipped past spec.catchUpWindow: the first one not skipped, when
    /// it is later than the loop rule's own time.
    pub resumed: Option<Timestamp>,
    /// After failures in a row: no loop before this instant.
    pub backoff: Option<Backoff>,
    /// With spec.alignment: the grid the due time moves onto, from `off_grid`, the later of
    /// the loop rule's time and the backoff's.
    pub grid: Option<Grid>,
    pub off_grid: Timestamp,
    /// The next loop's number, when it is due, and its jitter delay after that.
    pub next: i64,
    pub due: Timestamp,
    pub jitter: Option<Duration>,
    /// When it starts: due + jitter.
    pub start: Timestamp,
    /// Where it would have started inside a pause window: then `due` is the end of the windows
    /// that cover it, and `start` that plus its jitter delay.
    pub pause: Option<Pause>,
}

/// The failure backoff in force: `failures` in a row, the latest ending at `after`, so the
/// next loop waits `wait`, until `until`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub failures: i64,
    pub after: Timestamp,
    pub wait: Duration,
    pub until: Timestamp,
}

/// When the next scheduled loop is due, and why (see [`Timing`]).
pub fn timing(status: &LoopServiceStatus, rules: &Rules<'_>, now: Timestamp) -> Timing {
    // No recorded instant is taken to lie in the future: a clock ahead of this one (another
    // instance's) or an edited status must not hold the loop back longer than one interval.
    let past = |t: Time| t.0.min(now);
    let previous_start = status.last_start_time.map(past);
    let grid = rules.alignment.map(|a| Grid { interval: rules.interval, offset: a.offset });
    let anchor = previous_start.map(|start| match rules.jitter {
        Some(j) if !manual(status, status.loops_started) => schedule::sub(start, j.offset(status.loops_started)),
        _ => start,
    });
    let anchor = anchor.map(|a| grid.map_or(a, |g| g.anchor(a)));
    let previous_end = previous_start.map(|start| status.last_completion_time.map(past).map_or(start, |e| e.max(start)));
    let previous = anchor.map(|start| PreviousLoop { start, end: previous_end });
    // With jitter or alignment, the first loop is due when the LoopService was created (then
    // on the grid), a fixed instant to jitter from.
    let created = rules.jitter.map(|j| j.created).or(rules.alignment.map(|a| a.created));
    let rule = match (previous, created) {
        (None, Some(created)) => created.min(now),
        _ => schedule::next_start(previous, rules.interval, now).unwrap_or(now),
    };
    // After skipped due times, the first not skipped (never more than an interval ahead: an
    // edited status must not hold the loop back longer).
    let resumed = status.last_missed.as_ref().map(|m| m.next_due_time.0.min(schedule::add(now, rules.interval))).filter(|r| *r > rule);
    let by_rule = resumed.unwrap_or(rule);
    // After failures in a row, the next loop waits at least the backoff after the latest
    // failed loop's end.
    let backoff = match (rules.backoff, status.last_failure_time.map(past)) {
        (Some((initial, max)), Some(after)) if status.consecutive_failures > 0 => {
            let wait = schedule::failure_backoff(status.consecutive_failures, initial, max);
            Some(Backoff { failures: status.consecutive_failures, after, wait, until: schedule::add(after, wait) })
        }
        _ => None,
    };
    let off_grid = backoff.map_or(by_rule, |b| by_rule.max(b.until));
    // With alignment, the first grid point at or after it: after an overrun or a backoff too.
    let due = grid.map_or(off_grid, |g| g.at_or_after(off_grid));
    let next = status.loops_started.saturating_add(1);
    let jitter = rules.jitter.map(|j| j.offset(next));
    let delayed = |due: Timestamp| jitter.map_or(due, |d| schedule::add(due, d));
    // A start inside a pause window moves to the end of the windows, and the due time with it
    // (the next loop counts from there), even when that end has passed; and a loop that is
    // due when now is inside a window waits for its end too.
    let mut pause = pause::paused_at(rules.windows, delayed(due));
    let mut due = pause.as_ref().map_or(due, |p| p.until);
    if delayed(due) < now {
        if let Some(p) = pause::paused_at(rules.windows, now) {
            (pause, due) = (Some(p), p.until);
        }
    }
    Timing {
        previous_start,
        anchor,
        by_interval: anchor.map(|a| schedule::add(a, rules.interval)),
        previous_end,
        by_rule,
        resumed,
        backoff,
        grid,
        off_grid,
        next,
        due,
        jitter,
        start: delayed(due),
        pause,
    }
}

/// Decides from the recorded status alone (call [`record_jobs`] first).
pub fn decide(status: &LoopServiceStatus, rules: &Rules<'_>, now: Timestamp) -> Decision {
    if let Some(job) = &status.active_job {
        return Decision::Running { job: job.clone() };
    }
    // A run request starts a loop at once, even when suspended or finished; one loop per value.
    if let Some(r) = pending_run_request(status, rules.run_request) {
        return Decision::Launch { loop_number: status.loops_started.saturating_add(1), scheduled: now, run_request: Some(r.to_string()) };
    }
    // Manual loops do not count toward spec.loops.
    if rules.loops.is_some_and(|n| status.loops_started.saturating_sub(status.manual_loops) >= n) {
        return Decision::Finished;
    }
    if rules.suspended {
        return Decision::Suspended;
    }
    if let Some(s) = status.failure_suspension.as_ref().filter(|s| s.active) {
        return Decision::SuspendedAfterFailures { failures: s.failures, r#loop: s.r#loop };
    }
    let t = timing(status, rules, now);
    // Timers fire to the millisecond; a wake-up a hair early must not cost a whole extra
    // round trip through the queue.
    if t.start <= schedule::add(now, Duration::from_millis(5)) {
        Decision::Launch { loop_number: t.next, scheduled: t.due, run_request: None }
    } else if let Some(p) = &t.pause {
        let window = rules.windows.get(p.window).map(|w| w.describe()).unwrap_or_default();
        Decision::Paused { until: t.start, window }
    } else {
        Decision::Wait { until: t.start }
    }
}

/// Whether loop `n` was started by a run request, as far as the history says.
fn manual(status: &LoopServiceStatus, n: i64) -> bool {
    record_of(status, n).is_some_and(|r| r.trigger == Trigger::Manual)
}

/// LOOP_PREVIOUS_RESULT of the next loop: how the latest loop whose end is recorded ended.
/// None before the first loop ends, and when a lost status was rebuilt from Jobs that say
/// nothing of it yet.
pub fn previous_result(st: &LoopServiceStatus) -> PreviousResult {
    if st.last_finished_loop == 0 {
        PreviousResult::None
    } else if st.consecutive_failures > 0 {
        PreviousResult::Failed
    } else if st.last_success_time.is_some() {
        PreviousResult::Succeeded
    } else {
        PreviousResult::None
    }
}

/// Records that loop `seen.loop_number`'s Job was created (`seen.start`): it runs now.
pub fn launched(st: &mut LoopServiceStatus, seen: &ObservedJob) -> Note {
    let (n, job) = (seen.loop_number, seen.name.as_str());
    remember(st, started_record(seen));
    st.loops_started = n;
    st.last_start_time = Some(Time(seen.start));
    st.active_job = Some(job.to_string());
    st.queued_since = seen.queued_since.map(Time);
    let mut message = format!("started loop {n} as Job {job}");
    if let Some(q) = &seen.queue {
        message.push_str(&format!(", waiting for queue {q} to admit it"));
    }
    if let Some(r) = &seen.run_request {
        handled(st, r);
        message.push_str(&format!(" (run requested at {r}{})", seen.requester.phrase()));
    }
    Note { requested: seen.run_request.is_some(), ..Note::normal(Reason::LoopStarted, message).about(Some(job)) }
}

/// Records that the API server refused the Job of loop `seen.loop_number` (`message` says
/// why): the loop counts as started and failed, and the next one comes one interval later.
pub fn rejected(st: &mut LoopServiceStatus, seen: &ObservedJob, message: &str, interval: Duration) -> Vec<Note> {
    let (n, start) = (seen.loop_number, seen.start);
    let mut notes = vec![];
    if let Some(r) = &seen.run_request {
        handled(st, r);
    }
    let message = format!("the API server refused the Job: {message}");
    let mut record = started_record(seen);
    finish_record(&mut record, start, Some((Reason::JobRejected, &message)), interval);
    remember(st, record);
    st.loops_started = n;
    st.last_start_time = Some(Time(start));
    st.last_completion_time = Some(Time(start));
    st.active_job = None;
    let failure = Failure { last: n, count: 1, job: Some(&seen.name), at: start, reason: Reason::JobRejected };
    fail(st, &mut notes, failure, message);
    st.last_finished_loop = n;
    notes
}

/// What the status says of the LoopService as a whole, from the decision and what stands in
/// its way: phase, next run time, observed generation and conditions. The one place the Ready
/// verdict is made. `prev` is the stored status: a reason that is news comes back as a Note,
/// for a Warning Event, once.
pub struct Verdict<'a> {
    pub decision: &'a Decision,
    pub obstacle: Option<&'a Obstacle>,
    pub loops: Option<i64>,
    pub generation: Option<i64>,
}

/// Sets the phase, next run time, observed generation and conditions (see [`Verdict`]).
pub fn finalize(st: &mut LoopServiceStatus, prev: &LoopServiceStatus, verdict: Verdict<'_>, now: Timestamp) -> Option<Note> {
    let Verdict { decision, obstacle, loops, generation } = verdict;
    if let Decision::Invalid { message, .. } = decision {
        invalid(st, message, generation, now);
        return (st != prev).then(|| Note::warning(Reason::InvalidSpec, message.clone()));
    }
    st.observed_generation = generation;
    st.next_run_time = match decision {
        Decision::Wait { until } | Decision::Paused { until, .. } => Some(Time(*until)),
        Decision::Launch { scheduled, .. } => Some(Time(*scheduled)),
        _ => None,
    };
    let (phase, ready, reason, message) = phase_and_ready(st, decision, loops);
    st.phase = Some(phase);
    set_condition(st, ConditionType::Ready, ready, reason, message, generation, now);

    let (over, reason, message) = match &st.last_overrun {
        Some(o) if o.r#loop == st.last_finished_loop => (true, Reason::LoopOverran, o.message.clone()),
        _ if st.last_finished_loop > 0 => (false, Reason::OnTime, format!("loop {} ran within its interval", st.last_finished_loop)),
        _ => (false, Reason::NoLoopFinished, "no loop has finished yet".to_string()),
    };
    set_condition(st, ConditionType::Overrun, over, reason, message, generation, now);

    let (failing, reason, message) = match &st.last_error {
        Some(e) if st.consecutive_failures > 0 => (
            true,
            Reason::failure(&e.reason),
            clip(&format!("{} loop(s) failed in a row; loop {}: {}", st.consecutive_failures, e.r#loop, e.message)),
        ),
        _ => (false, Reason::NoFailures, "the latest loop did not fail".to_string()),
    };
    set_condition(st, ConditionType::Failing, failing, reason, message, generation, now);
    reconciled(st, generation, now);
    let (reason, message, job) = obstacle?.verdict(st);
    let (message, job) = (message, job.map(str::to_string));
    not_ready(st, prev, reason, message, job.as_deref(), generation, now)
}

/// The phase, and Ready's status, reason and message, for a decision.
fn phase_and_ready(st: &LoopServiceStatus, decision: &Decision, loops: Option<i64>) -> (Phase, bool, Reason, String) {
    match decision {
        Decision::Running { job } => match st.queued_since {
            Some(since) => (
                Phase::Queued,
                true,
                Reason::Queued,
                format!("loop {} waits for its queue to admit Job {job}, since {since}", st.loops_started),
            ),
            None => (Phase::Running, true, Reason::Running, format!("loop {} is running as Job {job}", st.loops_started)),
        },
        Decision::Launch { loop_number, run_request, .. } => {
            let phase = if st.loops_started == 0 { Phase::Pending } else { Phase::Waiting };
            let why = if run_request.is_some() { " (run requested)" } else { "" };
            (phase, true, Reason::Waiting, format!("loop {loop_number} is due now{why}"))
        }
        Decision::Wait { until } => {
            let phase = if st.consecutive_failures > 0 { Phase::Failing } else { Phase::Waiting };
            (phase, true, Reason::Waiting, format!("loop {} is due at {}", st.loops_started.saturating_add(1), Time(*until)))
        }
        Decision::Paused { until, window } => (
            Phase::Paused,
            true,
            Reason::Paused,
            format!("loop {} is paused by window {window} until {}", st.loops_started.saturating_add(1), Time(*until)),
        ),
        Decision::Suspended => {
            (Phase::Suspended, false, Reason::Suspended, format!("spec.suspend is true; {} loops ran", st.loops_started))
        }
        Decision::SuspendedAfterFailures { failures, r#loop } => {
            (Phase::Suspended, false, Reason::SuspendedAfterFailures, suspension_message(*failures, *r#loop))
        }
        Decision::Finished => (Phase::Finished, true, Reason::Finished, finished_message(st, loops)),
        Decision::Invalid { message, .. } => (Phase::Invalid, false, Reason::InvalidSpec, clip_to(message, MAX_INVALID_MESSAGE)),
    }
}

/// Records that reconciles of this LoopService fail: `failures` in a row, the latest with
/// `error`. The Reconciled condition says so (False, [`Reason::ReconcileError`]) while
/// reconciles keep failing (RBAC forbids a request, a webhook refuses a write); the next
/// success turns it True again.
pub fn reconcile_failed(st: &mut LoopServiceStatus, error: &str, failures: u32, now: Timestamp) {
    let generation = st.observed_generation;
    let message = clip(&format!("{failures} reconcile(s) failed in a row; the latest: {error}"));
    set_condition(st, ConditionType::Reconciled, false, Reason::ReconcileError, message, generation, now);
}

/// Turns the Reconciled condition True after a success; a LoopService that never failed has none.
fn reconciled(st: &mut LoopServiceStatus, generation: Option<i64>, now: Timestamp) {
    if st.conditions.iter().any(|c| ConditionType::Reconciled == c.type_ && c.status == condition_status(false)) {
        let message = "the latest reconcile succeeded".to_string();
        set_condition(st, ConditionType::Reconciled, true, Reason::Reconciled, message, generation, now);
    }
}

/// What Ready says once spec.loops ran out. `spec.loops` may have been lowered below the
/// loops already started: those ran (a running one ends as usual), none starts after them,
/// and the message says how many ran rather than claiming `spec.loops` did.
fn finished_message(st: &LoopServiceStatus, loops: Option<i64>) -> String {
    let scheduled = st.loops_started.saturating_sub(st.manual_loops);
    let limit = loops.unwrap_or(scheduled);
    let mut message = if scheduled > limit {
        format!("{scheduled} scheduled loops ran, more than spec.loops ({limit}): it was lowered after they started; no more loops start")
    } else {
        format!("all {limit} loops ran")
    };
    if st.manual_loops > 0 {
        message.push_str(&format!(" (and {} on request)", st.manual_loops));
    }
    message
}

/// Turns Ready False for an obstacle. `prev` is the stored status, so that the Note (for an
/// Event) comes once, when the reason first appears, and the condition keeps its transition time.
fn not_ready(
    st: &mut LoopServiceStatus,
    prev: &LoopServiceStatus,
    reason: Reason,
    message: String,
    job: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<Note> {
    let before = prev.conditions.iter().find(|c| ConditionType::Ready == c.type_);
    let already = before.is_some_and(|c| reason == c.reason);
    let since = match before {
        Some(c) if c.status == condition_status(false) => c.last_transition_time,
        _ => Time(now),
    };
    set_condition(st, ConditionType::Ready, false, reason, message.clone(), generation, now);
    if let Some(c) = st.conditions.iter_mut().find(|c| ConditionType::Ready == c.type_) {
        c.last_transition_time = since;
    }
    (!already).then(|| Note::warning(reason, message).about(job))
}

/// The longest InvalidSpec message kept in the Ready condition: what is wrong with a spec
/// can quote the spec, and the status must stay far below the object size limit.
pub const MAX_INVALID_MESSAGE: usize = 4 * crate::text::MAX_MESSAGE;

/// The status of a LoopService whose spec cannot be run (the operator's checks, the CEL rules'
/// twins, or the API server's dry run refused it): nothing is launched until it is fixed.
pub fn invalid(st: &mut LoopServiceStatus, message: &str, generation: Option<i64>, now: Timestamp) {
    st.observed_generation = generation;
    st.phase = Some(Phase::Invalid);
    st.next_run_time = None;
    set_condition(st, ConditionType::Ready, false, Reason::InvalidSpec, clip_to(message, MAX_INVALID_MESSAGE), generation, now);
    reconciled(st, generation, now);
}

fn set_condition(
    st: &mut LoopServiceStatus,
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = condition_status(status).to_string();
    let last_transition_time = match st.conditions.iter().find(|c| type_ == c.type_) {
        Some(c) if c.status == status => c.last_transition_time,
        _ => Time(now),
    };
    let c = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    match st.conditions.iter_mut().find(|c| type_ == c.type_) {
        Some(old) => *old = c,
        None => st.conditions.push(c),
    }
}

/// Loop numbers whose Jobs can go: finished and counted in the status that is already
/// stored (`persisted`), beyond the newest `keep_ok` successful and `keep_failed` failed ones.
pub fn jobs_to_delete(jobs: &[ObservedJob], persisted: &LoopServiceStatus, keep_ok: usize, keep_failed: usize) -> Vec<String> {
    let mut done: Vec<&ObservedJob> = jobs.iter().filter(|j| j.end.is_some() && j.loop_number <= persisted.last_finished_loop).collect();
    done.sort_by_key(|j| std::cmp::Reverse(j.loop_number));
    let (mut ok, mut failed) = (0, 0);
    let mut out = vec![];
    for j in done {
        let (count, keep) = match j.end {
            Some((_, Outcome::Succeeded)) => (&mut ok, keep_ok),
            _ => (&mut failed, keep_failed),
        };
        *count += 1;
        if *count > keep {
            out.push(j.name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(10);

    // The tables below speak in (loop, job, due, start, run request); these say it to the
    // functions that take a whole observed Job or a Verdict.
    fn seen(n: i64, job: &str, due: Timestamp, start: Timestamp, run_request: Option<&str>) -> ObservedJob {
        let run_request = run_request.map(Into::into);
        ObservedJob {
            name: job.into(),
            loop_number: n,
            start,
            scheduled: Some(due),
            run_request,
            requester: Default::default(),
            end: None,
            queue: None,
            queued_since: None,
            admitted: None,
        }
    }
    fn launched(st: &mut LoopServiceStatus, n: i64, job: &str, due: Timestamp, start: Timestamp, run_request: Option<&str>) -> Note {
        super::launched(st, &seen(n, job, due, start, run_request))
    }
    fn finalize(st: &mut LoopServiceStatus, decision: &Decision, loops: Option<i64>, generation: Option<i64>, now: Timestamp) {
        let prev = st.clone();
        super::finalize(st, &prev, Verdict { decision, obstacle: None, loops, generation }, now);
    }

    fn t(s: f64) -> Timestamp {
        Timestamp::from_millisecond((s * 1000.0) as i64).unwrap()
    }
    /// The rules over interval `I` with no jitter, backoff or alignment.
    fn plain(loops: Option<i64>, suspended: bool, run_request: Option<&str>) -> Rules<'_> {
        Rules { loops, suspended, run_request, ..Rules::every(I) }
    }
    fn job(n: i64, start: f64, end: Option<(f64, bool)>) -> ObservedJob {
        ObservedJob {
            name: format!("r-{n}"),
            loop_number: n,
            start: t(start),
            scheduled: Some(t(start)),
            run_request: None,
            requester: Default::default(),
            end: end.map(|(e, ok)| {
                (
                    t(e),
                    if ok {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed { reason: Reason::JobFailed, message: "container exited with code 1".into() }
                    },
                )
            }),
            queue: None,
            queued_since: None,
            admitted: None,
        }
    }

    /// One full reconcile of the pure parts, as the controller runs them.
    fn step(st: &LoopServiceStatus, jobs: &[ObservedJob], now: f64) -> (LoopServiceStatus, Decision, Vec<Note>) {
        let (mut st, notes) = record_jobs(st, jobs, I, t(now));
        let d = super::decide(&st, &plain(None, false, None), t(now));
        finalize(&mut st, &d, None, Some(1), t(now));
        (st, d, notes)
    }

    #[test]
    fn a_failing_reconcile_shows_in_a_condition_that_the_next_success_clears() {
        let (mut st, _, _) = step(&LoopServiceStatus::default(), &[], 5.0);
        assert!(!st.conditions.iter().any(|c| c.type_ == ConditionType::Reconciled), "none until something fails");
        reconcile_failed(&mut st, "creating job r-1: jobs.batch is forbidden", 3, t(6.0));
        let c = st.conditions.iter().find(|c| c.type_ == ConditionType::Reconciled).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", Reason::ReconcileError.as_str()));
        assert!(c.message.contains("3 reconcile(s) failed in a row") && c.message.contains("forbidden"), "{}", c.message);
        assert_eq!(st.loops_started, 0, "a reconcile error is not a loop");
        let (st, _, _) = step(&st, &[], 7.0);
        let c = st.conditions.iter().find(|c| c.type_ == ConditionType::Reconciled).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.last_transition_time), ("True", Reason::Reconciled.as_str(), Time(t(7.0))));
    }

    #[test]
    fn first_loop_is_due_at_once() {
        let (st, d, _) = step(&LoopServiceStatus::default(), &[], 5.0);
        assert_eq!(d, Decision::Launch { loop_number: 1, scheduled: t(5.0), run_request: None });
        assert_eq!(st.loops_started, 0);
        assert_eq!(st.phase, Some(Phase::Pending), "no loop has started yet");
    }

    #[test]
    fn a_full_cycle_start_succeed_wait() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(5.0), t(5.0), None);
        let (st, d, _) = step(&st, &[job(1, 5.0, None)], 6.0);
        assert_eq!(d, Decision::Running { job: "r-1".into() });
        assert_eq!(st.phase, Some(Phase::Running));
        assert_eq!(st.active_job.as_deref(), Some("r-1"));

        let (st, d, notes) = step(&st, &[job(1, 5.0, Some((8.0, true)))], 8.2);
        assert_eq!(d, Decision::Wait { until: t(15.0) });
        assert_eq!((st.loops_succeeded, st.loops_failed, st.overruns, st.last_finished_loop), (1, 0, 0, 1));
        assert_eq!(st.next_run_time, Some(Time(t(15.0))));
        assert_eq!(st.phase, Some(Phase::Waiting));
        assert_eq!(st.active_job, None);
        assert_eq!(notes, vec![Note::normal(Reason::LoopSucceeded, "loop 1 succeeded in 3 seconds".into()).about(Some("r-1"))]);

        // Recording is idempotent: the same Jobs seen again change nothing and say nothing.
        let (again, _, notes) = step(&st, &[job(1, 5.0, Some((8.0, true)))], 9.0);
        assert_eq!((again.loops_succeeded, again.last_finished_loop), (1, 1));
        assert!(notes.is_empty());
    }

    #[test]
    fn an_overrun_is_counted_and_the_next_loop_starts_at_its_end() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (st, d, notes) = step(&st, &[job(1, 0.0, Some((41.2, true)))], 41.5);
        assert_eq!(d, Decision::Launch { loop_number: 2, scheduled: t(41.2), run_request: None });
        assert_eq!(st.overruns, 1);
        let o = st.last_overrun.as_ref().unwrap();
        assert_eq!((o.r#loop, o.duration_seconds, o.interval_seconds), (1, 41.2, 10.0));
        assert_eq!(o.message, "loop 1 took 41.2 seconds, which is longer than its interval of 10 seconds");
        assert!(notes.iter().any(|n| n.warning && n.reason == "LoopOverrun"));
        let c = st.conditions.iter().find(|c| c.type_ == "Overrun").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "LoopOverran"));
    }

    #[test]
    fn a_failure_is_recorded_with_its_message_and_the_loop_goes_on() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (st, d, _) = step(&st, &[job(1, 0.0, Some((1.0, false)))], 1.5);
        assert_eq!(d, Decision::Wait { until: t(10.0) });
        assert_eq!((st.loops_failed, st.consecutive_failures), (1, 1));
        assert_eq!(st.phase, Some(Phase::Failing));
        let e = st.last_error.as_ref().unwrap();
        assert_eq!((e.r#loop, e.reason.as_str(), e.message.as_str()), (1, "JobFailed", "container exited with code 1"));
        let c = st.conditions.iter().find(|c| c.type_ == "Failing").unwrap();
        assert_eq!(c.status, "True");

        // A later success clears the streak but keeps the history.
        let mut st2 = st.clone();
        launched(&mut st2, 2, "r-2", t(10.0), t(10.0), None);
        let (st2, _, _) = step(&st2, &[job(1, 0.0, Some((1.0, false))), job(2, 10.0, Some((11.0, true)))], 11.5);
        assert_eq!((st2.loops_failed, st2.loops_succeeded, st2.consecutive_failures), (1, 1, 0));
        assert_eq!(st2.phase, Some(Phase::Waiting));
        let c = st2.conditions.iter().find(|c| c.type_ == "Failing").unwrap();
        assert_eq!(c.status, "False");
    }

    #[test]
    fn a_job_created_but_not_recorded_is_adopted_not_duplicated() {
        // The operator was killed after creating r-3 and before writing status.
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 2, "r-2", t(20.0), t(20.0), None);
        st.last_finished_loop = 1;
        let jobs = [job(2, 20.0, Some((21.0, true))), job(3, 30.0, None)];
        let (st, d, notes) = step(&st, &jobs, 31.0);
        assert_eq!(d, Decision::Running { job: "r-3".into() });
        assert_eq!((st.loops_started, st.loops_succeeded, st.last_finished_loop), (3, 1, 2));
        assert_eq!(st.last_start_time, Some(Time(t(30.0))));
        assert!(notes.iter().any(|n| n.reason == "LoopAdopted"));
    }

    #[test]
    fn after_downtime_exactly_one_loop_is_due() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let jobs = [job(1, 0.0, Some((1.0, true)))];
        let (mut st, d, _) = step(&st, &jobs, 3600.0);
        assert_eq!(d, Decision::Launch { loop_number: 2, scheduled: t(10.0), run_request: None });
        launched(&mut st, 2, "r-2", t(3600.0), t(3600.0), None);
        let (_, d, _) = step(&st, &[jobs[0].clone(), job(2, 3600.0, Some((3601.0, true)))], 3601.0);
        assert_eq!(d, Decision::Wait { until: t(3610.0) }, "no catch-up loop");
    }

    #[test]
    fn a_deleted_running_job_counts_as_failed_once() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (st, _, notes) = step(&st, &[], 3.0);
        assert_eq!((st.loops_failed, st.last_finished_loop), (1, 1));
        assert_eq!(st.last_error.as_ref().unwrap().reason, "JobDeleted");
        assert_eq!(notes.len(), 1);
        let (st, _, notes) = step(&st, &[], 4.0);
        assert_eq!(st.loops_failed, 1);
        assert!(notes.is_empty());
    }

    #[test]
    fn lost_status_restarts_counting_at_the_oldest_job_left() {
        let jobs = [job(7, 70.0, Some((71.0, true))), job(8, 80.0, Some((81.0, false)))];
        let (st, d, _) = step(&LoopServiceStatus::default(), &jobs, 85.0);
        assert_eq!((st.loops_started, st.loops_succeeded, st.loops_failed, st.last_finished_loop), (8, 1, 1, 8));
        assert_eq!(d, Decision::Wait { until: t(90.0) });
    }

    #[test]
    fn loops_limit_finishes_and_suspend_pauses() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 3, "r-3", t(0.0), t(0.0), None);
        st.last_finished_loop = 2;
        let (mut st, _) = record_jobs(&st, &[job(3, 0.0, Some((1.0, true)))], I, t(2.0));
        assert_eq!(super::decide(&st, &plain(Some(3), false, None), t(2.0)), Decision::Finished);
        assert_eq!(super::decide(&st, &plain(Some(4), true, None), t(2.0)), Decision::Suspended);
        assert!(matches!(super::decide(&st, &plain(Some(4), false, None), t(2.0)), Decision::Wait { .. }));
        finalize(&mut st, &Decision::Finished, Some(3), Some(2), t(2.0));
        assert_eq!(st.phase, Some(Phase::Finished));
        assert_eq!(st.next_run_time, None);
        // Resumed long after its time: due at once.
        assert!(matches!(super::decide(&st, &plain(None, false, None), t(500.0)), Decision::Launch { loop_number: 4, .. }));
    }

    #[test]
    fn a_rejected_job_is_a_failed_loop_and_the_next_comes_an_interval_later() {
        let mut st = LoopServiceStatus::default();
        let notes = super::rejected(
            &mut st,
            &seen(1, "r-1", t(0.0), t(0.0), None),
            "Job.batch \"r-1\" is invalid: spec.template.spec.containers[0].env[0].name: Invalid value",
            I,
        );
        assert_eq!((st.loops_started, st.loops_failed, st.last_finished_loop), (1, 1, 1));
        assert_eq!(st.last_error.as_ref().unwrap().reason, "JobRejected");
        assert!(notes[0].message.contains("env[0].name"));
        let (_, d, _) = step(&st, &[], 1.0);
        assert_eq!(d, Decision::Wait { until: t(10.0) });
    }

    #[test]
    fn condition_transition_time_moves_only_on_change() {
        let mut st = LoopServiceStatus::default();
        finalize(&mut st, &Decision::Wait { until: t(10.0) }, None, Some(1), t(1.0));
        finalize(&mut st, &Decision::Running { job: "r-1".into() }, None, Some(1), t(2.0));
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.last_transition_time, ready.reason.as_str()), (Time(t(1.0)), "Running"));
        finalize(&mut st, &Decision::Suspended, None, Some(2), t(3.0));
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.last_transition_time, ready.status.as_str()), (Time(t(3.0)), "False"));
        assert_eq!(st.conditions.len(), 3);
    }

    #[test]
    fn a_stuck_loop_turns_ready_false_and_says_so_once() {
        let why = "its Pod cannot start its container: ErrImageNeverPull";
        let mut prev = LoopServiceStatus::default();
        launched(&mut prev, 1, "r-1", t(0.0), t(0.0), None);
        finalize(&mut prev, &Decision::Running { job: "r-1".into() }, None, Some(1), t(1.0));

        let running = Decision::Running { job: "r-1".into() };
        let stuck = Obstacle::Stuck { job: "r-1".into(), reason: Reason::LoopStuck, why: why.into() };
        let verdict = || Verdict { decision: &running, obstacle: Some(&stuck), loops: None, generation: Some(1) };
        let mut st = prev.clone();
        let note = super::finalize(&mut st, &prev, verdict(), t(20.0)).unwrap();
        assert!(note.warning && note.message.contains("ErrImageNeverPull") && note.job.as_deref() == Some("r-1"));
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
        assert_eq!((ready.status.as_str(), ready.reason.as_str(), ready.last_transition_time), ("False", "LoopStuck", Time(t(20.0))));
        assert_eq!(ready.message, format!("loop 1 is running as Job r-1, but {why}"));

        // The next reconcile sees the same: no second Event, the same transition time.
        let stored = st.clone();
        let mut again = stored.clone();
        assert_eq!(super::finalize(&mut again, &stored, verdict(), t(35.0)), None);
        assert_eq!(again, stored, "nothing to write");
    }

    #[test]
    fn a_job_with_a_far_loop_number_is_not_adopted_and_gaps_count_in_one_step() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 5, "r-5", t(50.0), t(50.0), None);
        st.last_finished_loop = 4;
        // Someone relabelled a finished Job as loop 999999999999: it is not progress.
        let mut far = job(999_999_999_999, 40.0, Some((41.0, true)));
        far.name = "r-4".into();
        let (st2, _, _) = step(&st, &[job(5, 50.0, Some((51.0, true))), far], 52.0);
        assert_eq!((st2.loops_started, st2.last_finished_loop, st2.loops_succeeded), (5, 5, 1));

        // A status that claims a huge number of loops with no Jobs left: one step, one Note.
        let mut huge = LoopServiceStatus { loops_started: i64::MAX, last_finished_loop: 1, ..Default::default() };
        huge.last_start_time = Some(Time(t(0.0)));
        let (st3, notes) = record_jobs(&huge, &[], I, t(1.0));
        assert_eq!(st3.last_finished_loop, i64::MAX);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].message.contains("loops 2 to"), "{}", notes[0].message);
    }

    #[test]
    fn any_running_job_holds_the_next_loop() {
        // Loop 3 was recorded as refused, but its Job appeared after all and runs.
        let mut st = LoopServiceStatus::default();
        super::rejected(&mut st, &seen(3, "r-3", t(30.0), t(30.0), None), "exceeded quota", I);
        let (_, d, _) = step(&st, &[job(3, 30.5, None)], 45.0);
        assert_eq!(d, Decision::Running { job: "r-3".into() });
    }

    fn manual(mut j: ObservedJob, r: &str) -> ObservedJob {
        j.run_request = Some(r.to_string());
        j
    }

    #[test]
    fn a_run_request_starts_one_loop_at_once_and_anchors_the_next_on_it() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (st, _) = record_jobs(&st, &[job(1, 0.0, Some((1.0, true)))], I, t(3.0));
        // Due at 10 s; a request at 3 s starts loop 2 now.
        let d = super::decide(&st, &plain(None, false, Some("a")), t(3.0));
        assert_eq!(d, Decision::Launch { loop_number: 2, scheduled: t(3.0), run_request: Some("a".into()) });
        let mut st2 = st.clone();
        let note = launched(&mut st2, 2, "r-2", t(3.0), t(3.0), Some("a"));
        assert!(note.message.contains("run requested at a"), "{}", note.message);
        assert_eq!((st2.manual_loops, st2.last_handled_run_request.as_deref()), (1, Some("a")));
        // The same value again starts nothing; the next loop is one interval after loop 2's start.
        let jobs = [job(1, 0.0, Some((1.0, true))), manual(job(2, 3.0, Some((4.0, true))), "a")];
        let (st3, _) = record_jobs(&st2, &jobs, I, t(5.0));
        assert_eq!(super::decide(&st3, &plain(None, false, Some("a")), t(5.0)), Decision::Wait { until: t(13.0) });
        // A new value does; an empty one does not.
        assert!(matches!(
            super::decide(&st3, &plain(None, false, Some("b")), t(5.0)),
            Decision::Launch { loop_number: 3, run_request: Some(_), .. }
        ));
        assert_eq!(super::decide(&st3, &plain(None, false, Some("")), t(5.0)), Decision::Wait { until: t(13.0) });
    }

    #[test]
    fn a_run_request_during_a_loop_starts_when_it_ends() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (st, _) = record_jobs(&st, &[job(1, 0.0, None)], I, t(2.0));
        assert_eq!(super::decide(&st, &plain(None, false, Some("a")), t(2.0)), Decision::Running { job: "r-1".into() });
        let (st, _) = record_jobs(&st, &[job(1, 0.0, Some((4.0, true)))], I, t(4.2));
        assert_eq!(
            super::decide(&st, &plain(None, false, Some("a")), t(4.2)),
            Decision::Launch { loop_number: 2, scheduled: t(4.2), run_request: Some("a".into()) }
        );
    }

    #[test]
    fn a_run_request_runs_one_loop_while_suspended_or_finished_not_counted_toward_loops() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (mut st, _) = record_jobs(&st, &[job(1, 0.0, Some((1.0, true)))], I, t(2.0));
        assert_eq!(super::decide(&st, &plain(None, true, None), t(2.0)), Decision::Suspended);
        assert!(matches!(super::decide(&st, &plain(None, true, Some("a")), t(2.0)), Decision::Launch { loop_number: 2, .. }));
        launched(&mut st, 2, "r-2", t(2.0), t(2.0), Some("a"));
        let jobs = [job(1, 0.0, Some((1.0, true))), manual(job(2, 2.0, Some((3.0, true))), "a")];
        let (st, _) = record_jobs(&st, &jobs, I, t(3.5));
        assert_eq!(super::decide(&st, &plain(None, true, Some("a")), t(3.5)), Decision::Suspended, "suspended again");
        // spec.loops: 1 ran out with loop 1; the manual loop 2 does not count, a request still runs.
        assert_eq!(super::decide(&st, &plain(Some(1), false, Some("a")), t(3.5)), Decision::Finished);
        assert!(matches!(super::decide(&st, &plain(Some(1), false, Some("b")), t(3.5)), Decision::Launch { loop_number: 3, .. }));
        // spec.loops: 2 has one scheduled loop left, anchored on the manual start.
        assert_eq!(super::decide(&st, &plain(Some(2), false, Some("a")), t(3.5)), Decision::Wait { until: t(12.0) });
    }

    #[test]
    fn a_manual_loops_job_adopted_after_a_crash_is_not_run_again() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        st.last_finished_loop = 1;
        // Killed after creating loop 2's Job for request "a", before writing status.
        let jobs = [job(1, 0.0, Some((1.0, true))), manual(job(2, 3.0, None), "a")];
        let (st, _) = record_jobs(&st, &jobs, I, t(4.0));
        assert_eq!((st.loops_started, st.manual_loops, st.last_handled_run_request.as_deref()), (2, 1, Some("a")));
        let jobs = [jobs[0].clone(), manual(job(2, 3.0, Some((5.0, true))), "a")];
        let (st, _) = record_jobs(&st, &jobs, I, t(5.5));
        assert_eq!(super::decide(&st, &plain(None, false, Some("a")), t(5.5)), Decision::Wait { until: t(13.0) });
        // A lost status is rebuilt with the newest request handled.
        let (lost, _) = record_jobs(&LoopServiceStatus::default(), &jobs, I, t(6.0));
        assert_eq!((lost.manual_loops, lost.last_handled_run_request.as_deref()), (1, Some("a")));
    }

    #[test]
    fn status_history_records_each_loop_and_stays_exact_without_its_jobs() {
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        // Twelve loops: 2 s each, loop 5 fails, loop 7 overruns (12 s of 10), loop 9 is manual.
        for n in 1..=12i64 {
            let start = n as f64 * 20.0;
            let due = start - 0.5;
            let request = (n == 9).then_some("a");
            launched(&mut st, n, &format!("r-{n}"), t(due), t(start), request);
            assert_eq!(st.history[0].result, LoopResult::Running);
            assert_eq!(st.history[0].end_time, None);
            let took = if n == 7 { 12.0 } else { 2.0 };
            let mut j = job(n, start, Some((start + took, n != 5)));
            j.scheduled = Some(t(due));
            j.run_request = request.map(str::to_string);
            jobs.push(j);
            // The history limit keeps only the newest two Jobs around.
            let keep = jobs.len().saturating_sub(2);
            let (next, _) = record_jobs(&st, &jobs, I, t(start + took + 0.5));
            st = next;
            jobs.drain(..keep);
        }
        let loops: Vec<i64> = st.history.iter().map(|r| r.r#loop).collect();
        assert_eq!(loops, (3..=12).rev().collect::<Vec<_>>(), "the last 10, newest first");
        let r = |n: i64| st.history.iter().find(|r| r.r#loop == n).unwrap();
        assert_eq!(
            *r(12),
            LoopRecord {
                r#loop: 12,
                job_name: "r-12".into(),
                trigger: Trigger::Scheduled,
                requested_by: None,
                request_reason: None,
                due_time: Time(t(239.5)),
                start_time: Time(t(240.0)),
                end_time: Some(Time(t(242.0))),
                duration_seconds: Some(2.0),
                result: LoopResult::Succeeded,
                reason: None,
                message: None,
                overran: false,
                admitted_time: None,
                missed_due_times: None,
            }
        );
        assert_eq!(
            (r(5).result, r(5).reason.as_deref(), r(5).message.as_deref()),
            (LoopResult::Failed, Some("JobFailed"), Some("container exited with code 1"))
        );
        assert!(r(7).overran && r(7).duration_seconds == Some(12.0));
        assert_eq!(r(9).trigger, Trigger::Manual);
        // No Jobs left at all: nothing changes.
        let (again, notes) = record_jobs(&st, &[], I, t(300.0));
        assert_eq!(again.history, st.history);
        assert!(notes.is_empty());
    }

    #[test]
    fn a_deleted_a_refused_and_an_adopted_loop_are_in_the_history() {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (mut st, _) = record_jobs(&st, &[], I, t(3.0));
        let h = &st.history[0];
        assert_eq!((h.result, h.reason.as_deref(), h.end_time), (LoopResult::Failed, Some("JobDeleted"), Some(Time(t(3.0)))));
        super::rejected(&mut st, &seen(2, "r-2", t(10.0), t(10.1), None), "exceeded quota", I);
        let h = &st.history[0];
        assert_eq!((h.r#loop, h.result, h.reason.as_deref()), (2, LoopResult::Failed, Some("JobRejected")));
        assert!(h.message.as_deref().unwrap().contains("exceeded quota"));
        // Loop 3's Job was created, the status write lost: adopted, then recorded.
        let (st, _) = record_jobs(&st, &[manual(job(3, 20.0, None), "x")], I, t(21.0));
        assert_eq!((st.history[0].r#loop, st.history[0].result, st.history[0].trigger), (3, LoopResult::Running, Trigger::Manual));
        let (st, _) = record_jobs(&st, &[manual(job(3, 20.0, Some((22.0, true))), "x")], I, t(23.0));
        assert_eq!(
            st.history.iter().map(|r| (r.r#loop, r.result)).collect::<Vec<_>>(),
            [(3, LoopResult::Succeeded), (2, LoopResult::Failed), (1, LoopResult::Failed)]
        );
        // A lost status is rebuilt from the Jobs left.
        let jobs = [job(7, 70.0, Some((71.0, true))), job(8, 80.0, Some((81.0, false)))];
        let (lost, _) = record_jobs(&LoopServiceStatus::default(), &jobs, I, t(85.0));
        assert_eq!(
            lost.history.iter().map(|r| (r.r#loop, r.result)).collect::<Vec<_>>(),
            [(8, LoopResult::Failed), (7, LoopResult::Succeeded)]
        );
    }

    #[test]
    fn the_previous_result_and_the_last_success_follow_the_recorded_loops() {
        let mut st = LoopServiceStatus::default();
        assert_eq!((previous_result(&st), st.last_success_scheduled_time), (PreviousResult::None, None));
        // Loop 1 was due at 0 and started at 0.2; it succeeds.
        launched(&mut st, 1, "r-1", t(0.0), t(0.2), None);
        let j1 = ObservedJob { scheduled: Some(t(0.0)), ..job(1, 0.2, Some((1.0, true))) };
        let (mut st, _) = record_jobs(&st, std::slice::from_ref(&j1), I, t(1.5));
        assert_eq!((previous_result(&st), st.last_success_scheduled_time), (PreviousResult::Succeeded, Some(Time(t(0.0)))));
        // Loop 2 fails: the last success stays loop 1's due time.
        launched(&mut st, 2, "r-2", t(10.0), t(10.0), None);
        let (mut st, _) = record_jobs(&st, &[j1.clone(), job(2, 10.0, Some((11.0, false)))], I, t(11.5));
        assert_eq!((previous_result(&st), st.last_success_scheduled_time), (PreviousResult::Failed, Some(Time(t(0.0)))));
        launched(&mut st, 3, "r-3", t(20.0), t(20.0), None);
        let (st, _) = record_jobs(&st, &[j1, job(2, 10.0, Some((11.0, false))), job(3, 20.0, Some((21.0, true)))], I, t(21.5));
        assert_eq!((previous_result(&st), st.last_success_scheduled_time), (PreviousResult::Succeeded, Some(Time(t(20.0)))));
        // A status rebuilt from Jobs that have not ended says None, not Succeeded.
        let (lost, _) = record_jobs(&LoopServiceStatus::default(), &[job(7, 70.0, None)], I, t(71.0));
        assert_eq!(previous_result(&lost), PreviousResult::None);
    }

    #[test]
    fn jitter_delays_each_start_within_bounds_and_never_accumulates() {
        let j = Jitter { uid: "u-1", max: Duration::from_secs(5), created: t(100.0) };
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        let mut now = 100.0;
        for n in 1..=10i64 {
            let off = j.offset(n).as_secs_f64();
            // Looking early: wait until due + offset, whenever we look.
            let due = 100.0 + 10.0 * (n - 1) as f64;
            let d = super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, None) }, t(now));
            if off > 0.005 {
                assert_eq!(d, Decision::Wait { until: t(due + off) }, "loop {n}");
                assert_eq!(
                    super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, None) }, t(now + 0.5).min(t(due + off - 0.01))),
                    d,
                    "the same later"
                );
            }
            now = due + off;
            let d = super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, None) }, t(now));
            assert_eq!(d, Decision::Launch { loop_number: n, scheduled: t(due), run_request: None }, "loop {n}");
            launched(&mut st, n, &format!("r-{n}"), t(due), t(now), None);
            jobs.push(job(n, now, Some((now + 1.0, true))));
            now += 1.5;
            let (next, _) = record_jobs(&st, &jobs, I, t(now));
            st = next;
        }
        // Ten loops later the due times are still exactly one interval apart: 100, 110, ... 190.
        let next = super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, None) }, t(now));
        assert_eq!(next, Decision::Wait { until: t(200.0 + j.offset(11).as_secs_f64()) });
    }

    #[test]
    fn a_manual_loop_is_not_delayed_and_anchors_the_next_on_its_start() {
        let j = Jitter { uid: "u-1", max: Duration::from_secs(5), created: t(0.0) };
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let (mut st, _) = record_jobs(&st, &[job(1, 0.0, Some((1.0, true)))], I, t(2.0));
        assert!(
            matches!(super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, Some("a")) }, t(3.0)), Decision::Launch { scheduled, .. } if scheduled == t(3.0))
        );
        launched(&mut st, 2, "r-2", t(3.0), t(3.0), Some("a"));
        let jobs = [job(1, 0.0, Some((1.0, true))), manual(job(2, 3.0, Some((4.0, true))), "a")];
        let (st, _) = record_jobs(&st, &jobs, I, t(4.5));
        assert_eq!(
            super::decide(&st, &Rules { jitter: Some(&j), ..plain(None, false, Some("a")) }, t(4.5)),
            Decision::Wait { until: t(13.0 + j.offset(3).as_secs_f64()) }
        );
    }

    /// Loop 1 (a scheduled loop, or one for run request `request`), due at `due`, started at
    /// `start` and ended at `end`, succeeded or not (`ok`), as recorded at its end.
    fn after_loop_1(due: f64, start: f64, end: f64, ok: bool, request: Option<&str>) -> LoopServiceStatus {
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(due), t(start), request);
        let mut j = job(1, start, Some((end, ok)));
        (j.scheduled, j.run_request) = (Some(t(due)), request.map(Into::into));
        record_jobs(&st, &[j], I, t(end)).0
    }

    #[test]
    fn alignment_puts_every_due_time_on_the_grid() {
        // Interval 10 s, offset 3 s: the grid is 3, 13, 23, ... s after the epoch; the
        // LoopService was created at 101.
        let a = Alignment { offset: Duration::from_secs(3), created: t(101.0) };
        let j = Jitter { uid: "u-1", max: Duration::from_secs(5), created: t(101.0) };
        let backoff = Some((Duration::from_secs(15), Duration::from_secs(60)));
        let rules = |jitter: Option<&'static Jitter<'static>>, backoff, run_request| Rules {
            jitter,
            backoff,
            alignment: Some(a),
            ..plain(None, false, run_request)
        };
        let j: &'static Jitter<'static> = Box::leak(Box::new(j));
        let launch = |at: f64| Decision::Launch { loop_number: 2, scheduled: t(at), run_request: None };
        let wait = |at: f64| Decision::Wait { until: t(at) };
        let none = LoopServiceStatus::default();
        #[rustfmt::skip]
        let cases: Vec<(&str, LoopServiceStatus, Rules<'_>, f64, Decision)> = vec![
            // The first loop waits for the first grid point at or after the creation.
            ("first loop waits for the grid", none.clone(), rules(None, None, None), 101.0, Decision::Wait { until: t(103.0) }),
            ("first loop on the grid", none.clone(), rules(None, None, None), 103.0, Decision::Launch { loop_number: 1, scheduled: t(103.0), run_request: None }),
            // A start a little late (the reconcile, the create) still counts from its grid point.
            ("normal", after_loop_1(103.0, 103.4, 105.0, true, None), rules(None, None, None), 105.0, wait(113.0)),
            ("normal, due", after_loop_1(103.0, 103.4, 105.0, true, None), rules(None, None, None), 113.0, launch(113.0)),
            // An overrun: the next loop waits for the grid point after the end, not at once.
            ("overrun", after_loop_1(103.0, 103.0, 115.5, true, None), rules(None, None, None), 115.5, wait(123.0)),
            ("overrun ending on a grid point", after_loop_1(103.0, 103.0, 123.0, true, None), rules(None, None, None), 123.0, launch(123.0)),
            // After hours of downtime one loop is due at once (its grid point is long past) ...
            ("downtime", after_loop_1(103.0, 103.0, 104.0, true, None), rules(None, None, None), 7300.0, launch(113.0)),
            // ... and the loop after it is one interval later at least, back on the grid.
            ("after downtime", after_loop_1(113.0, 7300.0, 7301.0, true, None), rules(None, None, None), 7301.0, wait(7313.0)),
            // Jitter delays the start after the grid point; the next due counts from the grid
            // point, not from the delayed start.
            ("jitter", after_loop_1(103.0, 103.0 + j.offset(1).as_secs_f64() + 0.2, 109.0, true, None), rules(Some(j), None, None), 109.0, wait(113.0 + j.offset(2).as_secs_f64())),
            // A failure's backoff (15 s after its end at 105) moves the due to 120, then onto the grid.
            ("backoff", after_loop_1(103.0, 103.0, 105.0, false, None), rules(None, backoff, None), 105.0, wait(123.0)),
            // A run request starts at once, off the grid; the next loop is the first grid
            // point at least one interval after its start.
            ("run now", after_loop_1(100.0, 107.5, 108.0, true, None), rules(None, None, Some("go")), 108.0, Decision::Launch { loop_number: 2, scheduled: t(108.0), run_request: Some("go".into()) }),
            ("after run now", after_loop_1(107.5, 107.5, 108.0, true, Some("go")), rules(None, None, Some("go")), 108.0, wait(123.0)),
        ];
        for (name, st, rules, now, want) in cases {
            assert_eq!(super::decide(&st, &rules, t(now)), want, "{name}");
        }
        // Without alignment the same loops are start-anchored, as before.
        let off = Rules { alignment: None, ..rules(None, None, None) };
        assert_eq!(super::decide(&none, &off, t(101.0)), Decision::Launch { loop_number: 1, scheduled: t(101.0), run_request: None });
        assert_eq!(super::decide(&after_loop_1(103.0, 103.4, 105.0, true, None), &off, t(105.0)), wait(113.4));
        assert_eq!(super::decide(&after_loop_1(103.0, 103.0, 115.5, true, None), &off, t(115.5)), launch(115.5));
        // The status's next run time is the aligned one.
        let mut st = after_loop_1(103.0, 103.0, 115.5, true, None);
        let d = super::decide(&st, &rules(None, None, None), t(115.5));
        finalize(&mut st, &d, None, Some(1), t(115.5));
        assert_eq!(st.next_run_time, Some(Time(t(123.0))));
    }

    #[test]
    fn aligned_loops_stay_on_the_grid_and_never_closer_than_one_interval() {
        // Loops of random lengths (some overrun), started up to 0.5 s late: every due time is
        // on the grid, and every start at least one interval (less the slack) after the last.
        let a = Alignment { offset: Duration::from_millis(2500), created: t(0.0) };
        let rules = Rules { alignment: Some(a), ..plain(None, false, None) };
        let mut st = LoopServiceStatus::default();
        let (mut jobs, mut now, mut last_start) = (vec![], 0.0, None::<f64>);
        for n in 1..=40i64 {
            let Decision::Wait { until } = super::decide(&st, &rules, t(now)) else { panic!("loop {n} due at {now}") };
            let due = until.as_millisecond() as f64 / 1000.0;
            assert_eq!((due * 1000.0) as i64 % 10_000, 2_500, "loop {n} due at {due}");
            let start = due + (n % 6) as f64 * 0.1;
            assert_eq!(super::decide(&st, &rules, t(due)), Decision::Launch { loop_number: n, scheduled: t(due), run_request: None });
            if let Some(last) = last_start {
                assert!(start - last >= 9.0, "loop {n} started {start}, {} after the previous", start - last);
            }
            launched(&mut st, n, &format!("r-{n}"), t(due), t(start), None);
            let end = start + [1.0, 4.0, 12.0, 25.0, 9.65][n as usize % 5];
            jobs.push(job(n, start, Some((end, true))));
            st = record_jobs(&st, &jobs, I, t(end)).0;
            (now, last_start) = (end, Some(start));
        }
    }

    #[test]
    fn failure_backoff_grows_with_each_failure_and_a_success_resets_it() {
        let b = Some((Duration::from_secs(4), Duration::from_secs(12)));
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        let mut start = 0.0;
        // Loops 1-4 fail after 2 s, loop 5 succeeds, loop 6 fails.
        let mut waits = vec![];
        for n in 1..=6i64 {
            launched(&mut st, n, &format!("r-{n}"), t(start), t(start), None);
            let end = start + 2.0;
            jobs.push(job(n, start, Some((end, n == 5))));
            let (next, _) = record_jobs(&st, &jobs, I, t(end + 0.1));
            st = next;
            let Decision::Wait { until } = super::decide(&st, &Rules { backoff: b, ..plain(None, false, None) }, t(end + 0.1)) else {
                panic!("loop {n}")
            };
            waits.push((until.duration_since(t(start)).as_secs_f64(), until.duration_since(t(end)).as_secs_f64()));
            // A run request is not held back.
            assert!(matches!(
                super::decide(&st, &Rules { backoff: b, ..plain(None, false, Some("now")) }, t(end + 0.1)),
                Decision::Launch { .. }
            ));
            start = until.as_millisecond() as f64 / 1000.0;
        }
        // (after the start, after the end): the interval of 10 s, or the backoff after the end.
        assert_eq!(waits, [(10.0, 8.0), (10.0, 8.0), (14.0, 12.0), (14.0, 12.0), (10.0, 8.0), (10.0, 8.0)]);
        // With a 1 s interval the backoff itself shows: 4, 8, 12, 12 after each failed end,
        // the interval after the success, and 4 again after the next failure.
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        let mut start = 0.0;
        let mut after_end = vec![];
        let one = Duration::from_secs(1);
        for n in 1..=6i64 {
            launched(&mut st, n, &format!("r-{n}"), t(start), t(start), None);
            let end = start + 2.0;
            jobs.push(job(n, start, Some((end, n == 5))));
            st = record_jobs(&st, &jobs, one, t(end)).0;
            let Decision::Wait { until } = super::decide(
                &st,
                &Rules {
                    loops: None,
                    suspended: false,
                    run_request: None,
                    interval: one,
                    jitter: None,
                    backoff: b,
                    alignment: None,
                    catch_up: None,
                    windows: &[],
                },
                t(end),
            ) else {
                after_end.push(0.0);
                start = end;
                continue;
            };
            after_end.push(until.duration_since(t(end)).as_secs_f64());
            start = until.as_millisecond() as f64 / 1000.0;
        }
        assert_eq!(after_end, [4.0, 8.0, 12.0, 12.0, 0.0, 4.0]);
    }

    #[test]
    fn suspends_itself_after_n_failures_and_a_spec_change_resumes_with_the_count_reset() {
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        let run = |st: &mut LoopServiceStatus, jobs: &mut Vec<ObservedJob>, n: i64, ok: bool, generation: i64| {
            let start = n as f64 * 10.0;
            launched(st, n, &format!("r-{n}"), t(start), t(start), None);
            jobs.push(job(n, start, Some((start + 1.0, ok))));
            *st = record_jobs(st, jobs, I, t(start + 2.0)).0;
            suspend_after_failures(st, Some(2), Some(generation), t(start + 2.0))
        };
        assert_eq!(run(&mut st, &mut jobs, 1, false, 1), None);
        let note = run(&mut st, &mut jobs, 2, false, 1).expect("suspended after 2");
        assert!(note.warning && note.reason == Reason::SuspendedAfterFailures && note.job.as_deref() == Some("r-2"), "{note:?}");
        assert!(note.message.contains("after 2 loops failed in a row"), "{}", note.message);
        let d = super::decide(&st, &plain(None, false, None), t(100.0));
        assert_eq!(d, Decision::SuspendedAfterFailures { failures: 2, r#loop: 2 });
        let mut shown = st.clone();
        finalize(&mut shown, &d, None, Some(1), t(100.0));
        let ready = shown.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (shown.phase, ready.status.as_str(), ready.reason.as_str()),
            (Some(Phase::Suspended), "False", "SuspendedAfterFailures")
        );
        // Seen again: no second Note, still suspended; a run request still runs.
        assert_eq!(suspend_after_failures(&mut st, Some(2), Some(1), t(101.0)), None);
        assert!(matches!(super::decide(&st, &plain(None, false, Some("r")), t(101.0)), Decision::Launch { .. }));
        // The spec changes (generation 2): resumed, and the count starts again.
        assert_eq!(suspend_after_failures(&mut st, Some(2), Some(2), t(102.0)), None);
        assert!(!st.failure_suspension.as_ref().unwrap().active);
        assert!(matches!(super::decide(&st, &plain(None, false, None), t(102.0)), Decision::Launch { loop_number: 3, .. }));
        assert_eq!(run(&mut st, &mut jobs, 3, false, 2), None, "one failure since the resume");
        assert_eq!(failures_toward_suspension(&st), 1);
        assert_eq!(st.consecutive_failures, 3, "the streak itself is kept");
        assert!(run(&mut st, &mut jobs, 4, false, 2).is_some(), "two failures since the resume");
        // A success (a run request's loop, say) ends it too.
        assert_eq!(run(&mut st, &mut jobs, 5, true, 2), None);
        assert!(!st.failure_suspension.as_ref().unwrap().active);
        assert_eq!(super::decide(&st, &plain(None, false, None), t(55.0)), Decision::Wait { until: t(60.0) });
    }

    #[test]
    fn the_interval_in_force_when_a_loop_is_recorded_judges_its_overrun() {
        // Loop 1 starts at 0 under a 30 s interval and takes 20 s.
        let mut st = LoopServiceStatus::default();
        launched(&mut st, 1, "r-1", t(0.0), t(0.0), None);
        let jobs = [job(1, 0.0, Some((20.0, true)))];
        // The interval was lowered to 10 s while it ran: it overran, and the next loop starts
        // as soon as it ended, as the overrun rule says.
        let ten = Duration::from_secs(10);
        let (lowered, notes) = record_jobs(&st, &jobs, ten, t(20.5));
        assert_eq!((lowered.overruns, lowered.last_overrun.as_ref().map(|o| o.interval_seconds)), (1, Some(10.0)));
        assert!(lowered.history[0].overran);
        assert!(notes.iter().any(|n| n.reason == "LoopOverrun" && n.message.contains("interval of 10 seconds")), "{notes:?}");
        assert_eq!(
            super::decide(
                &lowered,
                &Rules {
                    loops: None,
                    suspended: false,
                    run_request: None,
                    interval: ten,
                    jitter: None,
                    backoff: None,
                    alignment: None,
                    catch_up: None,
                    windows: &[]
                },
                t(20.5)
            ),
            Decision::Launch { loop_number: 2, scheduled: t(20.0), run_request: None }
        );
        // Raised to 30 s instead: on time, and the next loop is 30 s after its start.
        let thirty = Duration::from_secs(30);
        let (raised, _) = record_jobs(&st, &jobs, thirty, t(20.5));
        assert_eq!(raised.overruns, 0);
        assert!(!raised.history[0].overran);
        assert_eq!(
            super::decide(
                &raised,
                &Rules {
                    loops: None,
                    suspended: false,
                    run_request: None,
                    interval: thirty,
                    jitter: None,
                    backoff: None,
                    alignment: None,
                    catch_up: None,
                    windows: &[]
                },
                t(20.5)
            ),
            Decision::Wait { until: t(30.0) }
        );
    }

    #[test]
    fn loops_lowered_below_the_loops_started_finish_cleanly_with_a_true_message() {
        // Five loops started (loop 5 runs) when spec.loops is lowered from 10 to 2.
        let mut st = LoopServiceStatus::default();
        let mut jobs = vec![];
        for n in 1..=5i64 {
            let start = n as f64 * 10.0;
            launched(&mut st, n, &format!("r-{n}"), t(start), t(start), None);
            jobs.push(job(n, start, (n < 5).then_some((start + 1.0, true))));
            st = record_jobs(&st, &jobs, I, t(start + 2.0)).0;
            assert_ne!(super::decide(&st, &plain(Some(10), false, None), t(start + 2.0)), Decision::Finished);
        }
        // The running loop is left to end as usual.
        let d = super::decide(&st, &plain(Some(2), false, None), t(53.0));
        assert_eq!(d, Decision::Running { job: "r-5".into() });
        jobs[4] = job(5, 50.0, Some((54.0, true)));
        let (mut st, _) = record_jobs(&st, &jobs, I, t(55.0));
        assert_eq!((st.loops_succeeded, st.last_finished_loop, st.active_job.as_deref()), (5, 5, None));
        // Then nothing more starts, now or ever after.
        for now in [55.0, 60.0, 3600.0] {
            assert_eq!(super::decide(&st, &plain(Some(2), false, None), t(now)), Decision::Finished, "at {now}");
        }
        finalize(&mut st, &Decision::Finished, Some(2), Some(2), t(55.0));
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((st.phase, ready.status.as_str(), ready.reason.as_str()), (Some(Phase::Finished), "True", "Finished"));
        assert_eq!(
            ready.message,
            "5 scheduled loops ran, more than spec.loops (2): it was lowered after they started; no more loops start"
        );
        assert_eq!(st.next_run_time, None);
        // Exactly spec.loops, with a loop run on request: says both.
        let exact = LoopServiceStatus { loops_started: 3, manual_loops: 1, last_finished_loop: 3, ..Default::default() };
        assert_eq!(finished_message(&exact, Some(2)), "all 2 loops ran (and 1 on request)");
    }

    #[test]
    fn recorded_instants_in_the_future_hold_the_loop_back_at_most_one_interval() {
        // A status whose times lie an hour ahead (an instance with a clock ahead, an edit):
        // the next loop is due at most one interval (plus backoff) from now.
        let future = Time(t(3600.0));
        let st = LoopServiceStatus {
            loops_started: 1,
            last_finished_loop: 1,
            last_start_time: Some(future),
            last_completion_time: Some(future),
            last_failure_time: Some(future),
            consecutive_failures: 1,
            ..Default::default()
        };
        assert_eq!(super::decide(&st, &plain(None, false, None), t(100.0)), Decision::Wait { until: t(110.0) });
        let backoff = Some((Duration::from_secs(4), Duration::from_secs(60)));
        assert_eq!(
            super::decide(
                &st,
                &Rules {
                    loops: None,
                    suspended: false,
                    run_request: None,
                    interval: I,
                    jitter: None,
                    backoff,
                    alignment: None,
                    catch_up: None,
                    windows: &[]
                },
                t(100.0)
            ),
            Decision::Wait { until: t(110.0) }
        );
        let long = Some((Duration::from_secs(30), Duration::from_secs(60)));
        assert_eq!(super::decide(&st, &Rules { backoff: long, ..plain(None, false, None) }, t(100.0)), Decision::Wait { until: t(130.0) });
    }

    #[test]
    fn history_keeps_the_newest_recorded_jobs_only() {
        let jobs: Vec<_> =
            (1..=6).map(|n| job(n, n as f64 * 10.0, Some((n as f64 * 10.0 + 1.0, n % 2 == 0)))).chain([job(7, 70.0, None)]).collect();
        let persisted = LoopServiceStatus { last_finished_loop: 5, ..Default::default() };
        // Recorded: 1..=5; successes 2, 4; failures 1, 3, 5. Loop 6 is not recorded yet.
        assert_eq!(jobs_to_delete(&jobs, &persisted, 1, 2), vec!["r-2".to_string(), "r-1".to_string()]);
        assert!(jobs_to_delete(&jobs, &persisted, 10, 10).is_empty());
    }
}
