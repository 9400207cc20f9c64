//! `explain-timing NAME`: why the next loop starts when it does. The answer is the
//! operator's own (`status::decide` on the stored status, with the spec as the operator
//! validates it); each factor (interval, overrun, failure backoff, jitter, suspend, loops
//! limit, run request) is then shown with the instant it implies, from `schedule`.

use std::time::Duration;

use jiff::Timestamp;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::connect::Target;
use super::format::{self, relative};
use super::{Error, Output, EXIT_OK};
use crate::crd::{LoopService, LoopServiceStatus, Phase, Time};
use crate::keys::ANN_RUN_REQUESTED_AT;
use crate::reasons::ConditionType;
use crate::schedule::{self, Jitter};
use crate::spec::ValidSpec;
use crate::status::{self, Decision, Rules, Timing};

/// The explanation, as `-o json|yaml` prints it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub name: String,
    pub namespace: String,
    /// The instant it was worked out for.
    pub now: Time,
    pub phase: Option<String>,
    pub next: Next,
    pub factors: Vec<Factor>,
    /// status.nextRunTime, as the operator last wrote it.
    pub status_next_run_time: Option<Time>,
}

/// What happens next.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Next {
    /// Due (it starts now), Waiting, Running, Suspended, SuspendedAfterFailures, Finished or Invalid.
    pub state: String,
    /// The loop it is about: the next one, or the running one.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_number: Option<i64>,
    /// When it starts (Due, Waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
    pub summary: String,
}

/// One thing that moves the next loop's start, and whether it does now.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Factor {
    /// interval, overrun, failureBackoff, jitter, suspend, loopsLimit or runRequest.
    pub factor: &'static str,
    pub applies: bool,
    pub detail: String,
    /// The instant this factor alone would start the next loop at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

pub async fn explain_timing(t: &Target, name: &str, output: Option<Output>) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let ls = api.get(name).await.map_err(|e| Error::loopservice("reading", name, &t.namespace, e))?;
    let e = explain(&ls, Timestamp::now());
    match output {
        Some(f) => print!("{}", format::data(&e, f)?),
        None => print!("{}", render(&e)),
    }
    Ok(EXIT_OK)
}

fn when(t: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", Time(t), relative(t, now))
}

fn dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

fn factor(factor: &'static str, applies: bool, detail: String, at: Option<Timestamp>) -> Factor {
    Factor { factor, applies, detail, at: at.map(Time) }
}

/// What the explanation is worked out from: the stored LoopService and what the operator's own
/// timing code makes of it.
#[derive(Clone, Copy)]
struct View<'a> {
    ls: &'a LoopService,
    st: &'a LoopServiceStatus,
    valid: &'a ValidSpec,
    now: Timestamp,
    jitter: Option<Jitter<'a>>,
    /// The run request not yet handled.
    pending: Option<&'a str>,
    suspended: bool,
    decision: &'a Decision,
    timing: &'a Timing,
    /// The latest loop started, and the next.
    last: i64,
    next: i64,
    running: Option<&'a str>,
    start: Option<Timestamp>,
    anchor: Option<Timestamp>,
    by_interval: Option<Timestamp>,
    /// The previous loop's end, as recorded.
    end: Option<Timestamp>,
}

/// Works out the explanation for `ls` at `now`.
pub fn explain(ls: &LoopService, now: Timestamp) -> Explanation {
    let st = ls.status.clone().unwrap_or_default();
    let mut e = Explanation {
        name: ls.name_any(),
        namespace: ls.namespace().unwrap_or_default(),
        now: Time(now),
        phase: st.phase.map(|p| p.to_string()),
        next: Next { state: String::new(), loop_number: None, at: None, summary: String::new() },
        factors: vec![],
        status_next_run_time: st.next_run_time,
    };
    let valid = match ls.spec.validate() {
        Ok(v) => v,
        Err(errors) => {
            e.next = Next { state: "Invalid".into(), loop_number: None, at: None, summary: format!("the spec cannot be run: {errors}") };
            return e;
        }
    };
    if st.phase == Some(Phase::Invalid) {
        let ready = st.conditions.iter().find(|c| ConditionType::Ready == c.type_);
        let why = ready.map_or("see the Ready condition", |c| c.message.as_str());
        e.next = Next { state: "Invalid".into(), loop_number: None, at: None, summary: format!("the spec cannot be run: {why}") };
        return e;
    }
    let uid = ls.uid().unwrap_or_default();
    let created = ls.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let jitter = valid.jitter.map(|max| Jitter { uid: &uid, max, created });
    let request = ls.annotations().get(ANN_RUN_REQUESTED_AT).map(String::as_str);
    let suspended = ls.spec.is_suspended();
    let rules = Rules {
        loops: ls.spec.loops,
        suspended,
        run_request: request,
        interval: valid.interval,
        jitter: jitter.as_ref(),
        backoff: valid.failure_backoff,
    };
    let (decision, timing) = (status::decide(&st, &rules, now), status::timing(&st, &rules, now));
    let v = View {
        ls,
        st: &st,
        valid: &valid,
        now,
        jitter,
        pending: status::pending_run_request(&st, request),
        suspended,
        decision: &decision,
        timing: &timing,
        last: st.loops_started,
        next: st.loops_started.saturating_add(1),
        running: st.active_job.as_deref(),
        start: timing.previous_start,
        anchor: timing.anchor,
        by_interval: timing.by_interval,
        end: st.last_completion_time.map(|t| t.0),
    };
    e.factors =
        [interval_factor, overrun_factor, failure_backoff_factor, jitter_factor, suspend_factor, loops_limit_factor, run_request_factor]
            .iter()
            .map(|f| f(&v))
            .collect();
    // The loop rule's time is what sets the start only when nothing later or stronger does.
    let scheduled_start = matches!(decision, Decision::Wait { .. } | Decision::Launch { run_request: None, .. });
    let overridden = e.factors.iter().any(|f| f.applies && matches!(f.factor, "overrun" | "failureBackoff"));
    let running_within = matches!(decision, Decision::Running { .. }) && v.by_interval.is_some_and(|d| d > now);
    e.factors[0].applies = (scheduled_start || running_within) && !overridden;
    e.next = next_step(&v);
    e
}

/// The loop rule's time, anchored on the previous start (without its jitter delay).
fn interval_factor(v: &View<'_>) -> Factor {
    let View { ls, now, jitter, last, start, anchor, by_interval, .. } = *v;
    match (start, anchor, by_interval) {
        (Some(s), Some(a), Some(due)) => {
            let base = if a == s {
                format!("loop {last} started at {}", Time(s))
            } else {
                format!("loop {last} was due at {} (it started {} later, its jitter delay)", Time(a), dur(schedule::until(s, a)))
            };
            factor("interval", true, format!("{base}; one interval ({}) later is {}", ls.spec.interval, when(due, now)), Some(due))
        }
        _ => {
            let at = jitter.map_or(now, |j| j.created.min(now));
            factor("interval", true, "no loop has started yet: the first loop is due as soon as the LoopService exists".into(), Some(at))
        }
    }
}

/// The previous loop's end, when it is later than the interval allows.
fn overrun_factor(v: &View<'_>) -> Factor {
    let View { ls, now, last, running, start, by_interval, end, .. } = *v;
    match (start, running, end, by_interval) {
        (None, ..) => factor("overrun", false, "no loop has run yet".into(), None),
        (Some(s), Some(job), _, due) => {
            let over = due.is_some_and(|d| now > d);
            let detail = if over {
                format!("loop {last} (job/{job}) is still running, {} so far, past its interval: the next loop starts as soon as it ends, with no catch-up loops", dur(schedule::until(now, s)))
            } else {
                format!("loop {last} (job/{job}) is running, {} so far; loops never overlap", dur(schedule::until(now, s)))
            };
            factor("overrun", over, detail, None)
        }
        (Some(s), None, Some(end), Some(due)) if end > due => factor(
            "overrun",
            true,
            format!(
                "loop {last} took {}s, longer than its interval of {}: the next loop is due at its end, {}, with no catch-up loops",
                schedule::fmt_secs(schedule::seconds_between(s, end)),
                ls.spec.interval,
                Time(end)
            ),
            Some(end),
        ),
        (Some(s), None, Some(end), _) => factor(
            "overrun",
            false,
            format!(
                "loop {last} ended at {} after {}s, within its interval",
                Time(end),
                schedule::fmt_secs(schedule::seconds_between(s, end))
            ),
            None,
        ),
        (Some(_), None, None, _) => factor("overrun", false, format!("the end of loop {last} is not recorded"), None),
    }
}

/// After failures in a row, a wait after the latest failed end.
fn failure_backoff_factor(v: &View<'_>) -> Factor {
    let View { valid, now, timing, by_interval, end, .. } = *v;
    let rule = by_interval.max(end);
    match (valid.failure_backoff, timing.backoff) {
        (None, _) => factor("failureBackoff", false, "not set (spec.failureBackoff)".into(), None),
        (Some((initial, max)), Some(b)) => {
            let (k, wait, until, failed) = (b.failures, b.wait, b.until, Time(b.after));
            let applies = rule.is_none_or(|r| until > r);
            let mut detail = format!(
                "{k} loop(s) failed in a row: the next waits min({} x 2^{}, {}) = {} after the latest failed end, {}: {}",
                dur(initial),
                k - 1,
                dur(max),
                dur(wait),
                Time(failed.0),
                when(until, now)
            );
            if !applies {
                detail.push_str(", before the loop rule's time");
            }
            factor("failureBackoff", applies, detail, Some(until))
        }
        (Some((initial, max)), _) => factor(
            "failureBackoff",
            false,
            format!("no failure in a row (after failures it waits {} doubling up to {})", dur(initial), dur(max)),
            None,
        ),
    }
}

/// A stable delay after the due time, for scheduled loops.
fn jitter_factor(v: &View<'_>) -> Factor {
    let View { jitter, pending, decision, next, timing, .. } = *v;
    match &jitter {
        None => factor("jitter", false, "not set (spec.jitter)".into(), None),
        Some(j) => {
            let off = timing.jitter.unwrap_or_default();
            let applies = matches!(decision, Decision::Wait { .. } | Decision::Launch { run_request: None, .. });
            let mut detail =
                format!("loop {next} starts {} after it is due (stable for the uid and loop number, in [0, {}))", dur(off), dur(j.max));
            if pending.is_some() {
                detail.push_str("; a run request is not delayed");
            }
            factor("jitter", applies, detail, None)
        }
    }
}

/// Spec.suspend, or a suspension after failures (in status).
fn suspend_factor(v: &View<'_>) -> Factor {
    let View { ls, st, suspended, .. } = *v;
    let self_suspension = st.failure_suspension.as_ref().filter(|s| s.active);
    match (suspended, self_suspension, ls.spec.suspend_after_failures) {
        (true, ..) => factor("suspend", true, format!("spec.suspend is true: no scheduled loop starts until it is resumed (kubectl loopservice resume {}); a run request still runs one loop", ls.name_any()), None),
        (false, Some(s), limit) => factor(
            "suspend",
            true,
            format!(
                "suspended itself after {} loops failed in a row (spec.suspendAfterFailures: {}), the last loop {}: no scheduled loop starts until the spec changes (kubectl loopservice resume {}) or a run request's loop succeeds",
                s.failures,
                limit.map_or_else(|| "unset".to_string(), |l| l.to_string()),
                s.r#loop,
                ls.name_any()
            ),
            None,
        ),
        (false, None, Some(limit)) => factor("suspend", false, format!("not suspended; it suspends itself after {limit} loops fail in a row ({} so far)", status::failures_toward_suspension(st)), None),
        (false, None, None) => factor("suspend", false, "not suspended".into(), None),
    }
}

/// Spec.loops counts scheduled loops only.
fn loops_limit_factor(v: &View<'_>) -> Factor {
    let View { ls, st, .. } = *v;
    let scheduled = st.loops_started.saturating_sub(st.manual_loops);
    match ls.spec.loops {
        None => factor("loopsLimit", false, "none: it loops for ever (spec.loops)".into(), None),
        Some(n) if scheduled >= n => factor(
            "loopsLimit",
            true,
            format!("all {n} scheduled loops have run (spec.loops): Finished; a run request still runs one loop"),
            None,
        ),
        Some(n) => factor(
            "loopsLimit",
            false,
            format!("{scheduled} of {n} scheduled loops have run (spec.loops; run requests do not count)"),
            None,
        ),
    }
}

/// A new value of the annotation starts a loop at once.
fn run_request_factor(v: &View<'_>) -> Factor {
    let View { st, now, pending, running, .. } = *v;
    match (pending, &st.last_handled_run_request) {
        (Some(r), _) if running.is_some() => factor(
            "runRequest",
            true,
            format!("run request {r:?} ({ANN_RUN_REQUESTED_AT}) is pending: its loop starts as soon as the running loop ends"),
            None,
        ),
        (Some(r), _) => {
            factor("runRequest", true, format!("run request {r:?} ({ANN_RUN_REQUESTED_AT}) is pending: its loop starts at once"), Some(now))
        }
        (None, Some(h)) => factor("runRequest", false, format!("none pending (the latest handled: {h:?})"), None),
        (None, None) => factor("runRequest", false, "none pending".into(), None),
    }
}

/// What happens next, in a sentence.
fn next_step(v: &View<'_>) -> Next {
    let View { now, decision, last, next, by_interval, timing, .. } = *v;
    match decision.clone() {
        Decision::Launch { loop_number, scheduled, run_request: Some(r) } => Next {
            state: "Due".into(),
            loop_number: Some(loop_number),
            at: Some(Time(scheduled)),
            summary: format!("loop {loop_number} starts now, for run request {r:?}"),
        },
        Decision::Launch { loop_number, scheduled, run_request: None } => {
            let at = if scheduled == timing.due { timing.start } else { scheduled };
            let mut summary = format!("loop {loop_number} is due ({}): the operator starts it now", when(at, now));
            if schedule::until(now, at) > Duration::from_secs(10) {
                summary.push_str("; it is overdue: is the operator running?");
            }
            Next { state: "Due".into(), loop_number: Some(loop_number), at: Some(Time(at)), summary }
        }
        Decision::Running { job } => {
            let mut summary = format!("loop {last} runs (job/{job}); the next loop starts when it ends");
            if let Some(due) = by_interval.filter(|d| *d > now) {
                summary =
                    format!("loop {last} runs (job/{job}); the next loop starts at {} or when it ends, whichever is later", when(due, now));
            }
            Next { state: "Running".into(), loop_number: Some(last), at: None, summary }
        }
        Decision::Wait { until } => Next {
            state: "Waiting".into(),
            loop_number: Some(next),
            at: Some(Time(until)),
            summary: format!("loop {next} starts at {}", when(until, now)),
        },
        Decision::Suspended => {
            Next { state: "Suspended".into(), loop_number: None, at: None, summary: "no loop starts while spec.suspend is true".into() }
        }
        Decision::SuspendedAfterFailures { failures, r#loop } => Next {
            state: "SuspendedAfterFailures".into(),
            loop_number: None,
            at: None,
            summary: format!("no scheduled loop starts: it suspended itself after {failures} failures in a row, the last loop {}", r#loop),
        },
        Decision::Finished => {
            Next { state: "Finished".into(), loop_number: None, at: None, summary: "no scheduled loop is left (spec.loops)".into() }
        }
        Decision::Invalid { message, .. } => {
            Next { state: "Invalid".into(), loop_number: None, at: None, summary: format!("the spec cannot be run: {message}") }
        }
    }
}

/// The explanation as text: the answer, then a table of the factors.
pub fn render(e: &Explanation) -> String {
    let mut out = format!(
        "loopservice {:?} in namespace {:?}, phase {}, at {}\nnext: {}\n",
        e.name,
        e.namespace,
        e.phase.as_deref().unwrap_or(format::NONE),
        e.now,
        e.next.summary
    );
    let differs = |w: Time, at: Time| schedule::seconds_between(w.0, at.0).abs() >= 1.0;
    let waiting = e.next.state == "Waiting";
    if let Some(written) = e.status_next_run_time.filter(|w| waiting && e.next.at.is_some_and(|at| differs(*w, at))) {
        out.push_str(&format!("note: status.nextRunTime says {written}; the operator writes it when it looks at the LoopService\n"));
    }
    if e.factors.is_empty() {
        return out;
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = e
        .factors
        .iter()
        .map(|f| vec![label(f.factor).to_string(), if f.applies { "yes" } else { "no" }.to_string(), f.detail.clone()])
        .collect();
    out.push_str(&format::table(&["FACTOR", "APPLIES", "WHY"], &rows));
    out
}

fn label(factor: &str) -> &str {
    match factor {
        "failureBackoff" => "failure backoff",
        "loopsLimit" => "loops limit",
        "runRequest" => "run request",
        f => f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn ts(s: i64) -> String {
        Time(at(s)).format()
    }

    /// A LoopService with `spec` over a 30s interval, created at 0, whose loop 7 (scheduled)
    /// started at 100, with `status` over that.
    fn ls(spec: Value, status: Value, annotations: Value) -> LoopService {
        let mut s = json!({"interval": "30s", "image": "busybox"});
        s.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        let mut st = json!({
            "phase": "Waiting", "loopsStarted": 7, "lastFinishedLoop": 7, "loopsSucceeded": 7,
            "lastStartTime": ts(100), "lastCompletionTime": ts(103),
            "history": [{"loop": 7, "jobName": "r-7", "trigger": "Scheduled", "dueTime": ts(100), "startTime": ts(100), "result": "Succeeded"}],
        });
        st.as_object_mut().unwrap().extend(status.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "r", "namespace": "ops", "uid": "0c4d2f7e-1111", "creationTimestamp": ts(0), "annotations": annotations},
            "spec": s, "status": st,
        }))
        .unwrap()
    }

    fn applies(e: &Explanation) -> Vec<&str> {
        e.factors.iter().filter(|f| f.applies).map(|f| f.factor).collect()
    }

    #[test]
    fn the_next_loop_is_one_interval_after_the_previous_start() {
        let e = explain(&ls(json!({}), json!({}), json!({})), at(110));
        assert_eq!((e.next.state.as_str(), e.next.loop_number, e.next.at), ("Waiting", Some(8), Some(Time(at(130)))));
        assert_eq!(applies(&e), ["interval"]);
        assert_eq!(e.factors[0].at, Some(Time(at(130))));
        let text = render(&e);
        assert!(text.contains(&format!("next: loop 8 starts at {} (in 20s)", ts(130))), "{text}");
        assert!(
            text.contains(&format!(
                "interval          yes       loop 7 started at {}; one interval (30s) later is {} (in 20s)",
                ts(100),
                ts(130)
            )),
            "{text}"
        );
        assert!(text.contains("overrun           no        loop 7 ended at"), "{text}");
    }

    #[test]
    fn an_overrun_moves_the_next_loop_to_the_previous_end() {
        let e = explain(&ls(json!({}), json!({"lastCompletionTime": ts(145)}), json!({})), at(146));
        assert_eq!((e.next.state.as_str(), e.next.at), ("Due", Some(Time(at(145)))));
        assert_eq!(applies(&e), ["overrun"]);
        assert!(e.factors[1].detail.starts_with("loop 7 took 45s, longer than its interval of 30s"), "{}", e.factors[1].detail);
    }

    #[test]
    fn failure_backoff_holds_the_next_loop_after_failures_in_a_row() {
        let spec = json!({"failureBackoff": {"initial": "30s", "max": "10m"}});
        let e = explain(&ls(spec, json!({"consecutiveFailures": 2, "lastFailureTime": ts(103)}), json!({})), at(110));
        // 2 failures: 30s x 2 = 1m after the failed end at 103.
        assert_eq!((e.next.state.as_str(), e.next.at), ("Waiting", Some(Time(at(163)))));
        assert_eq!(applies(&e), ["failureBackoff"]);
        assert!(
            e.factors[2].detail.starts_with("2 loop(s) failed in a row: the next waits min(30s x 2^1, 10m) = 1m after"),
            "{}",
            e.factors[2].detail
        );
    }

    #[test]
    fn jitter_delays_the_due_time_by_the_loops_stable_offset() {
        let e = explain(&ls(json!({"jitter": "10s"}), json!({}), json!({})), at(101));
        let j = Jitter { uid: "0c4d2f7e-1111", max: Duration::from_secs(10), created: at(0) };
        // Loop 7 was due at its start less its own delay; loop 8 is one interval after that, plus its delay.
        let want = schedule::add(schedule::add(schedule::sub(at(100), j.offset(7)), Duration::from_secs(30)), j.offset(8));
        assert_eq!(e.next.at, Some(Time(want)));
        assert_eq!(applies(&e), ["interval", "jitter"]);
        assert!(e.factors[3].detail.starts_with(&format!("loop 8 starts {} after it is due", dur(j.offset(8)))), "{}", e.factors[3].detail);
    }

    #[test]
    fn a_pending_run_request_runs_a_loop_even_while_suspended() {
        let e = explain(
            &ls(json!({"suspend": true}), json!({"phase": "Suspended"}), json!({"loops.dev/run-requested-at": "now-please"})),
            at(110),
        );
        assert_eq!((e.next.state.as_str(), e.next.loop_number), ("Due", Some(8)));
        assert_eq!(e.next.summary, "loop 8 starts now, for run request \"now-please\"");
        assert_eq!(applies(&e), ["suspend", "runRequest"]);
        // Once handled, the suspension holds.
        let handled = ls(
            json!({"suspend": true}),
            json!({"lastHandledRunRequest": "now-please"}),
            json!({"loops.dev/run-requested-at": "now-please"}),
        );
        let e = explain(&handled, at(110));
        assert_eq!(e.next.state, "Suspended");
        assert_eq!(e.factors[6].detail, "none pending (the latest handled: \"now-please\")");
    }

    #[test]
    fn the_loops_limit_counts_scheduled_loops_only_and_a_bad_spec_is_invalid() {
        let e = explain(&ls(json!({"loops": 6}), json!({"manualLoops": 1}), json!({})), at(110));
        assert_eq!(e.next.state, "Finished");
        assert_eq!(applies(&e), ["loopsLimit"]);
        let e = explain(&ls(json!({"loops": 7}), json!({"manualLoops": 1}), json!({})), at(110));
        assert_eq!(
            (e.next.state.as_str(), e.factors[5].detail.as_str()),
            ("Waiting", "6 of 7 scheduled loops have run (spec.loops; run requests do not count)")
        );
        let e = explain(&ls(json!({"interval": "5"}), json!({}), json!({})), at(110));
        assert_eq!(e.next.state, "Invalid");
        assert!(e.next.summary.contains("spec.interval \"5\" is not a duration"), "{}", e.next.summary);
    }
}
