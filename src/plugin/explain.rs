//! `explain-timing NAME`: why the next loop starts when it does. This renders the operator's
//! own verdict, `status::why::why` on the stored status with the spec as the operator
//! validates it: what sets the next start, what happens next, and each factor (interval,
//! overrun, failure backoff, catch-up window, alignment, jitter, suspend, loops limit, run request), whether it applies
//! and the instant it implies. Nothing here works out timing; it only puts it in words.

use std::time::Duration;

use jiff::Timestamp;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::connect::Target;
use super::format::{self, relative};
use super::{Error, Output, EXIT_OK};
use crate::crd::{LoopService, LoopServiceStatus, Time};
use crate::keys::ANN_RUN_REQUESTED_AT;
use crate::schedule::{self, Jitter};
use crate::status::forecast;
use crate::status::why::{self, FactorKind, Factors, PreviousRun, Suspension, Why};
use crate::status::Rules;

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
    /// interval, overrun, failureBackoff, catchUpWindow, alignment, jitter, suspend, loopsLimit or runRequest.
    pub factor: &'static str,
    pub applies: bool,
    pub detail: String,
    /// The instant this factor alone would start the next loop at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

pub async fn explain_timing(t: &Target, name: &str, output: Option<Output>, next: Option<usize>) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let ls = api.get(name).await.map_err(|e| Error::loopservice("reading", name, &t.namespace, e))?;
    if let Some(n) = next {
        return print_forecast(&ls, n, output);
    }
    let e = explain(&ls, Timestamp::now());
    match output {
        Some(f) => format::print(&format::data(&e, f)?)?,
        None => format::print(&render(&e))?,
    }
    Ok(EXIT_OK)
}

/// `--next N`: one RFC 3339 start time a line (the loop's number and due time with `-o`); why
/// the list ends early goes to standard error.
fn print_forecast(ls: &LoopService, n: usize, output: Option<Output>) -> Result<u8, Error> {
    let f = forecast(ls, Timestamp::now(), n)
        .map_err(|message| Error::Other(format!("loopservice {:?} cannot run: {message}", ls.name_any())))?;
    match output {
        Some(o) => format::print(&format::data(&f, o)?)?,
        None => {
            let lines: String = f.starts.iter().map(|p| format!("{}\n", p.start)).collect();
            format::print(&lines)?;
            if let Some(stop) = &f.stop {
                format::note(&format!("no more loops after these {}: {stop}", f.starts.len()));
            }
        }
    }
    Ok(EXIT_OK)
}

fn when(t: Timestamp, now: Timestamp) -> String {
    format!("{} ({})", Time(t), relative(t, now))
}

fn dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Works out the explanation for `ls` at `now`: the operator's verdict, in words.
pub fn explain(ls: &LoopService, now: Timestamp) -> Explanation {
    let st = ls.status.clone().unwrap_or_default();
    let (next, factors) = match verdict(ls, &st, now) {
        Err(errors) => (next_step(&why::Next::Invalid { message: Some(errors) }, now), vec![]),
        // Nothing moves the start of a loop that cannot start.
        Ok(w) if matches!(w.next, why::Next::Invalid { .. }) => (next_step(&w.next, now), vec![]),
        Ok(w) => {
            let factor = |k: FactorKind| Factor {
                factor: k.name(),
                applies: w.factors.applies(k),
                detail: detail(k, ls, &w.factors, now),
                at: w.factors.at(k).map(Time),
            };
            (next_step(&w.next, now), FactorKind::ALL.into_iter().map(factor).collect())
        }
    };
    Explanation {
        name: ls.name_any(),
        namespace: ls.namespace().unwrap_or_default(),
        now: Time(now),
        phase: st.phase.map(|p| p.to_string()),
        next,
        factors,
        status_next_run_time: st.next_run_time,
    }
}

/// The operator's verdict on `st` under the spec's rules, as the operator reads them from
/// the LoopService; the spec's errors when it cannot be run.
fn verdict(ls: &LoopService, st: &LoopServiceStatus, now: Timestamp) -> Result<Why, String> {
    with_rules(ls, now, |rules| why::why(st, rules, now))
}

/// Runs `f` with the spec's rules as the operator reads them from the LoopService; the spec's
/// errors when it cannot be run.
fn with_rules<R>(ls: &LoopService, now: Timestamp, f: impl FnOnce(&Rules<'_>) -> R) -> Result<R, String> {
    let valid = ls.spec.validate().map_err(|errors| errors.to_string())?;
    let uid = ls.uid().unwrap_or_default();
    let created = ls.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let jitter = valid.jitter.map(|max| Jitter { uid: &uid, max, created });
    let run_request = ls.annotations().get(ANN_RUN_REQUESTED_AT).map(String::as_str);
    Ok(f(&Rules::of(&ls.spec, &valid, jitter.as_ref(), created, run_request)))
}

/// `--next N`: the next N starts the plan implies, from the same model as the operator's
/// decisions, and why the list ends early when it does.
pub fn forecast(ls: &LoopService, now: Timestamp, n: usize) -> Result<Forecast, String> {
    let st = ls.status.clone().unwrap_or_default();
    if st.phase == Some(crate::crd::Phase::Invalid) {
        let ready = st.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone()).unwrap_or_default();
        return Err(ready);
    }
    let (planned, stop) = with_rules(ls, now, |rules| forecast::next_starts(&st, rules, now, n))?;
    let starts = planned
        .into_iter()
        .map(|p| PlannedStart { loop_number: p.loop_number, due: Time(p.due), start: Time(p.start), run_request: p.run_request })
        .collect();
    let stop = stop.map(|s| {
        match s {
            forecast::Stop::Suspended => "spec.suspend is true: no scheduled loop starts until it is resumed",
            forecast::Stop::SuspendedAfterFailures => "it suspended itself after failures in a row (spec.suspendAfterFailures)",
            forecast::Stop::Finished => "spec.loops scheduled loops will have run",
        }
        .to_string()
    });
    Ok(Forecast { starts, stop })
}

/// `explain-timing --next N` as data.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    pub starts: Vec<PlannedStart>,
    /// Why fewer than N start, when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// One start the plan implies.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStart {
    #[serde(rename = "loop")]
    pub loop_number: i64,
    /// When it is due.
    pub due: Time,
    /// When it starts: due plus its jitter delay.
    pub start: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_request: Option<String>,
}

/// Factor `kind`'s fact, in a sentence.
fn detail(kind: FactorKind, ls: &LoopService, f: &Factors, now: Timestamp) -> String {
    match kind {
        FactorKind::Interval => interval(ls, &f.interval, now),
        FactorKind::Overrun => overrun(ls, &f.overrun),
        FactorKind::FailureBackoff => failure_backoff(&f.failure_backoff, now),
        FactorKind::CatchUpWindow => catch_up(&f.catch_up, now),
        FactorKind::Alignment => alignment(&f.alignment, now),
        FactorKind::Jitter => jitter(&f.jitter),
        FactorKind::PauseWindows => pause_windows(&f.pause, now),
        FactorKind::Suspend => suspend(ls, &f.suspend),
        FactorKind::LoopsLimit => loops_limit(&f.loops_limit),
        FactorKind::RunRequest => run_request(&f.run_request),
    }
}

/// The loop rule's time, anchored on the previous start (without its jitter delay).
fn interval(ls: &LoopService, f: &why::IntervalFact, now: Timestamp) -> String {
    let Some(p) = f.previous else {
        return "no loop has started yet: the first loop is due as soon as the LoopService exists".into();
    };
    let (last, start, due) = (p.loop_number, Time(p.start), Time(p.due));
    let base = if p.delay.is_zero() {
        format!("loop {last} started at {start}")
    } else {
        let why = if ls.spec.jitter.is_some() { ", its jitter delay" } else { "" };
        format!("loop {last} was due at {due} (it started {} later{why})", dur(p.delay))
    };
    format!("{base}; one interval ({}) later is {}", ls.spec.interval, when(f.at, now))
}

/// The previous loop's end, when it is later than the interval allows.
fn overrun(ls: &LoopService, f: &why::OverrunFact) -> String {
    match &f.previous {
        PreviousRun::NoneYet => "no loop has run yet".into(),
        PreviousRun::Running { loop_number: last, job, ran } if f.applies => format!(
            "loop {last} (job/{job}) is still running, {} so far, past its interval: the next loop starts as soon as it ends, with no catch-up loops",
            dur(*ran)
        ),
        PreviousRun::Running { loop_number: last, job, ran } => {
            format!("loop {last} (job/{job}) is running, {} so far; loops never overlap", dur(*ran))
        }
        PreviousRun::Ended { loop_number: last, end, took } if f.applies => format!(
            "loop {last} took {}s, longer than its interval of {}: the next loop is due at its end, {}, with no catch-up loops",
            schedule::fmt_secs(took.as_secs_f64()),
            ls.spec.interval,
            Time(*end)
        ),
        PreviousRun::Ended { loop_number: last, end, took } => {
            format!("loop {last} ended at {} after {}s, within its interval", Time(*end), schedule::fmt_secs(took.as_secs_f64()))
        }
        PreviousRun::EndNotRecorded { loop_number: last } => format!("the end of loop {last} is not recorded"),
    }
}

/// After failures in a row, a wait after the latest failed end.
fn failure_backoff(f: &why::BackoffFact, now: Timestamp) -> String {
    match (f.rule, f.in_force) {
        (None, _) => "not set (spec.failureBackoff)".into(),
        (Some((initial, max)), Some(b)) => {
            let mut detail = format!(
                "{} loop(s) failed in a row: the next waits min({} x 2^{}, {}) = {} after the latest failed end, {}: {}",
                b.failures,
                dur(initial),
                b.failures - 1,
                dur(max),
                dur(b.wait),
                Time(b.after),
                when(b.until, now)
            );
            if !f.applies {
                detail.push_str(", before the loop rule's time");
            }
            detail
        }
        (Some((initial, max)), None) => {
            format!("no failure in a row (after failures it waits {} doubling up to {})", dur(initial), dur(max))
        }
    }
}

/// Due times whose loop would start past the window are skipped.
fn catch_up(f: &why::CatchUpFact, now: Timestamp) -> String {
    let latest = f.last.as_ref().map(|m| {
        let which = if m.count == 1 {
            format!("the due time {}", m.first_due_time)
        } else {
            format!("{} due times from {}", m.count, m.first_due_time)
        };
        format!("{which} skipped at {}", m.time)
    });
    match (f.window, latest, f.at) {
        (_, Some(latest), Some(at)) => {
            format!("{latest}, past the window: the next loop is due at the first due time not skipped, {}", when(at, now))
        }
        (None, _, _) => "not set (spec.catchUpWindow): a late loop starts at once, however late".into(),
        (Some(w), latest, _) => {
            let mut detail = format!("a scheduled loop that would start more than {} after it was due is skipped", dur(w));
            if let Some(latest) = latest {
                detail.push_str(&format!("; {} due time(s) skipped so far, the latest: {latest}", f.missed));
            }
            detail
        }
    }
}

/// The due time moved onto the grid epoch + offset + k × interval.
fn alignment(f: &why::AlignmentFact, now: Timestamp) -> String {
    let (Some(g), Some(at)) = (f.grid, f.at) else {
        return "not set (spec.alignment): start-anchored, off any grid".into();
    };
    let grid = format!("the grid is the Unix epoch + {} + k x {}", dur(g.offset), dur(g.interval));
    if at == f.from {
        format!("{grid}; the next loop's time, {}, is on it", when(at, now))
    } else {
        format!("{grid}; the next loop's time, {}, moves to the next grid point, {}", Time(f.from), when(at, now))
    }
}

/// A stable delay after the due time, for scheduled loops.
fn jitter(f: &why::JitterFact) -> String {
    let Some(max) = f.max else {
        return "not set (spec.jitter)".into();
    };
    let mut detail = format!(
        "loop {} starts {} after it is due (stable for the uid and loop number, in [0, {}))",
        f.loop_number,
        dur(f.delay),
        dur(max)
    );
    if f.run_request_pending {
        detail.push_str("; a run request is not delayed");
    }
    detail
}

/// Quiet hours: no scheduled loop starts inside a window.
fn pause_windows(f: &why::PauseFact, now: Timestamp) -> String {
    match (&f.by, f.until) {
        (Some(by), Some(until)) => format!("the next loop would start inside window {by}: paused by window until {}", when(until, now)),
        _ if f.windows.is_empty() => "none (spec.pauseWindows)".into(),
        _ => format!("the next start is outside the windows: {}", f.windows.join(", ")),
    }
}

/// Spec.suspend, or a suspension after failures (in status).
fn suspend(ls: &LoopService, f: &why::SuspendFact) -> String {
    let name = ls.name_any();
    match (f.by, ls.spec.suspend_after_failures) {
        (Some(Suspension::Spec), _) => format!("spec.suspend is true: no scheduled loop starts until it is resumed (kubectl loopservice resume {name}); a run request still runs one loop"),
        (Some(Suspension::AfterFailures { failures, r#loop }), limit) => format!(
            "suspended itself after {failures} loops failed in a row (spec.suspendAfterFailures: {}), the last loop {loop}: no scheduled loop starts until the spec changes (kubectl loopservice resume {name}) or a run request's loop succeeds",
            limit.map_or_else(|| "unset".to_string(), |l| l.to_string()),
        ),
        (None, Some(limit)) => format!("not suspended; it suspends itself after {limit} loops fail in a row ({} so far)", f.failures_in_a_row),
        (None, None) => "not suspended".into(),
    }
}

/// Spec.loops counts scheduled loops only.
fn loops_limit(f: &why::LoopsLimitFact) -> String {
    match f.limit {
        None => "none: it loops for ever (spec.loops)".into(),
        Some(n) if f.applies => format!("all {n} scheduled loops have run (spec.loops): Finished; a run request still runs one loop"),
        Some(n) => format!("{} of {n} scheduled loops have run (spec.loops; run requests do not count)", f.scheduled),
    }
}

/// A new value of the annotation starts a loop at once.
fn run_request(f: &why::RunRequestFact) -> String {
    match (&f.pending, &f.last_handled) {
        (Some(r), _) if f.waits_for.is_some() => {
            format!("run request {r:?} ({ANN_RUN_REQUESTED_AT}) is pending: its loop starts as soon as the running loop ends")
        }
        (Some(r), _) => format!("run request {r:?} ({ANN_RUN_REQUESTED_AT}) is pending: its loop starts at once"),
        (None, Some(h)) => format!("none pending (the latest handled: {h:?})"),
        (None, None) => "none pending".into(),
    }
}

/// What happens next, in a sentence.
fn next_step(n: &why::Next, now: Timestamp) -> Next {
    let summary = match n {
        why::Next::Due { loop_number, run_request: Some(r), .. } => format!("loop {loop_number} starts now, for run request {r:?}"),
        why::Next::Due { loop_number, at, run_request: None, overdue } => {
            let mut summary = format!("loop {loop_number} is due ({}): the operator starts it now", when(*at, now));
            if *overdue {
                summary.push_str("; it is overdue: is the operator running?");
            }
            summary
        }
        why::Next::Running { loop_number: last, job, not_before: Some(due) } => {
            format!("loop {last} runs (job/{job}); the next loop starts at {} or when it ends, whichever is later", when(*due, now))
        }
        why::Next::Running { loop_number: last, job, not_before: None } => {
            format!("loop {last} runs (job/{job}); the next loop starts when it ends")
        }
        why::Next::Waiting { loop_number, at } => format!("loop {loop_number} starts at {}", when(*at, now)),
        why::Next::Paused { loop_number, at, window } => {
            format!("loop {loop_number} is paused by window {window} until {}, and starts then", when(*at, now))
        }
        why::Next::Suspended => "no loop starts while spec.suspend is true".into(),
        why::Next::SuspendedAfterFailures { failures, r#loop } => {
            format!("no scheduled loop starts: it suspended itself after {failures} failures in a row, the last loop {loop}")
        }
        why::Next::Finished => "no scheduled loop is left (spec.loops)".into(),
        why::Next::Invalid { message } => {
            format!("the spec cannot be run: {}", message.as_deref().unwrap_or("see the Ready condition"))
        }
    };
    Next { state: n.state().into(), loop_number: n.loop_number(), at: n.at().map(Time), summary }
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
        "catchUpWindow" => "catch-up window",
        "pauseWindows" => "pause windows",
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

    /// What explain-timing says of `factor`.
    fn said<'a>(e: &'a Explanation, factor: &str) -> &'a str {
        e.factors.iter().find(|f| f.factor == factor).map_or("", |f| f.detail.as_str())
    }

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
        assert!(said(&e, "overrun").starts_with("loop 7 took 45s, longer than its interval of 30s"), "{}", said(&e, "overrun"));
    }

    #[test]
    fn failure_backoff_holds_the_next_loop_after_failures_in_a_row() {
        let spec = json!({"failureBackoff": {"initial": "30s", "max": "10m"}});
        let e = explain(&ls(spec, json!({"consecutiveFailures": 2, "lastFailureTime": ts(103)}), json!({})), at(110));
        // 2 failures: 30s x 2 = 1m after the failed end at 103.
        assert_eq!((e.next.state.as_str(), e.next.at), ("Waiting", Some(Time(at(163)))));
        assert_eq!(applies(&e), ["failureBackoff"]);
        assert!(
            said(&e, "failureBackoff").starts_with("2 loop(s) failed in a row: the next waits min(30s x 2^1, 10m) = 1m after"),
            "{}",
            said(&e, "failureBackoff")
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
        assert!(said(&e, "jitter").starts_with(&format!("loop 8 starts {} after it is due", dur(j.offset(8)))), "{}", said(&e, "jitter"));
    }

    #[test]
    fn alignment_moves_the_due_time_onto_the_grid() {
        // Loop 7 started at 100 and ended at 145, past its interval: the next loop waits for the
        // grid point after its end (the grid is 10 s past each multiple of 30 s).
        let e = explain(&ls(json!({"alignment": {"offset": "10s"}}), json!({"lastCompletionTime": ts(145)}), json!({})), at(146));
        assert_eq!((e.next.state.as_str(), e.next.at), ("Waiting", Some(Time(at(160)))));
        assert_eq!(applies(&e), ["overrun", "alignment"]);
        let want =
            format!("the grid is the Unix epoch + 10s + k x 30s; the next loop's time, {}, moves to the next grid point", Time(at(145)));
        assert!(said(&e, "alignment").starts_with(&want), "{}", said(&e, "alignment"));
        let e = explain(&ls(json!({}), json!({}), json!({})), at(110));
        assert_eq!(said(&e, "alignment"), "not set (spec.alignment): start-anchored, off any grid");
    }

    #[test]
    fn after_skipped_due_times_the_catch_up_window_sets_the_next_loop() {
        let missed: Value = json!({"loopsMissed": 3, "lastMissed": {"firstDueTime": ts(130), "count": 3, "nextDueTime": ts(160), "time": ts(155), "message": "missed"}});
        let e = explain(&ls(json!({"catchUpWindow": "5s"}), missed.clone(), json!({})), at(155));
        assert_eq!((e.next.state.as_str(), e.next.at), ("Waiting", Some(Time(at(160)))));
        assert_eq!(applies(&e), ["catchUpWindow"]);
        let want = format!(
            "3 due times from {} skipped at {}, past the window: the next loop is due at the first due time not skipped, {}",
            ts(130),
            ts(155),
            Time(at(160))
        );
        assert!(said(&e, "catchUpWindow").starts_with(&want), "{}", said(&e, "catchUpWindow"));
        // Once loop 8 ran after them, the window is only a rule again.
        let mut ran = missed;
        ran.as_object_mut().unwrap().extend(
            json!({"loopsStarted": 8, "lastFinishedLoop": 8, "lastStartTime": ts(160), "lastCompletionTime": ts(161)})
                .as_object()
                .unwrap()
                .clone(),
        );
        let e = explain(&ls(json!({"catchUpWindow": "5s"}), ran, json!({})), at(170));
        assert_eq!((e.next.state.as_str(), e.next.at, applies(&e)), ("Waiting", Some(Time(at(190))), vec!["interval"]));
        let want = format!("a scheduled loop that would start more than 5s after it was due is skipped; 3 due time(s) skipped so far, the latest: 3 due times from {} skipped at {}", ts(130), ts(155));
        assert_eq!(said(&e, "catchUpWindow"), want);
        let e = explain(&ls(json!({}), json!({}), json!({})), at(110));
        assert_eq!(said(&e, "catchUpWindow"), "not set (spec.catchUpWindow): a late loop starts at once, however late");
    }

    #[test]
    fn a_loop_due_inside_a_pause_window_is_paused_until_its_end() {
        // at(0) is 08:00:00 UTC; the window is open from 08:02 for a minute, and loop 8 is due at 130.
        let spec = json!({"pauseWindows": [{"schedule": "2 8 * * *", "duration": "1m"}]});
        let e = explain(&ls(spec.clone(), json!({}), json!({})), at(110));
        assert_eq!((e.next.state.as_str(), e.next.at), ("Paused", Some(Time(at(180)))));
        assert!(
            e.next.summary.starts_with(&format!("loop 8 is paused by window \"2 8 * * *\" until {}", Time(at(180)))),
            "{}",
            e.next.summary
        );
        assert_eq!(applies(&e), ["pauseWindows"]);
        assert!(
            said(&e, "pauseWindows").starts_with("the next loop would start inside window \"2 8 * * *\": paused by window until"),
            "{}",
            said(&e, "pauseWindows")
        );
        // Before loop 7's interval ran out, and after the window: only a rule.
        let spec = json!({"pauseWindows": [{"schedule": "0 9 * * *", "duration": "1m", "timeZone": "Europe/Berlin"}]});
        let e = explain(&ls(spec, json!({}), json!({})), at(110));
        assert_eq!(said(&e, "pauseWindows"), "the next start is outside the windows: \"0 9 * * *\" (Europe/Berlin) for 1m");
        assert_eq!(said(&explain(&ls(json!({}), json!({}), json!({})), at(110)), "pauseWindows"), "none (spec.pauseWindows)");
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
        assert_eq!(said(&e, "runRequest"), "none pending (the latest handled: \"now-please\")");
    }

    #[test]
    fn the_loops_limit_counts_scheduled_loops_only_and_a_bad_spec_is_invalid() {
        let e = explain(&ls(json!({"loops": 6}), json!({"manualLoops": 1}), json!({})), at(110));
        assert_eq!(e.next.state, "Finished");
        assert_eq!(applies(&e), ["loopsLimit"]);
        let e = explain(&ls(json!({"loops": 7}), json!({"manualLoops": 1}), json!({})), at(110));
        assert_eq!(
            (e.next.state.as_str(), said(&e, "loopsLimit")),
            ("Waiting", "6 of 7 scheduled loops have run (spec.loops; run requests do not count)")
        );
        let e = explain(&ls(json!({"interval": "5"}), json!({}), json!({})), at(110));
        assert_eq!(e.next.state, "Invalid");
        assert!(e.next.summary.contains("spec.interval \"5\" is not a duration"), "{}", e.next.summary);
    }
}
