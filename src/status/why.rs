//! Why the next loop starts when it does, as one value: what sets its start (the interval,
//! an overrun, the failure backoff, a run request, or nothing, because a loop runs, it is
//! suspended or finished), what happens next, and a typed fact for each thing that can move
//! the start. It is worked out from the inputs of [`decide`] and [`timing`] and from what
//! they say, never beside them; `kubectl loopservice explain-timing` renders it.

use std::time::Duration;

use jiff::Timestamp;

use super::{decide, failures_toward_suspension, pending_run_request, timing, Backoff, Decision, Rules, Timing};
use crate::crd::{LoopServiceStatus, Missed, Phase};
use crate::reasons::ConditionType;
use crate::schedule::{self, Grid};

/// A loop due longer ago than this, with none running, is overdue: the operator starts a
/// due loop as soon as it looks, so it is not looking.
pub const OVERDUE: Duration = Duration::from_secs(10);

/// Why the next loop starts when it does.
#[derive(Clone, Debug, PartialEq)]
pub struct Why {
    pub set_by: SetBy,
    pub next: Next,
    pub factors: Factors,
}

/// What sets the next loop's start, or what holds it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetBy {
    /// One interval after the previous loop was due.
    Interval,
    /// The previous loop's end, later than one interval after it was due.
    Overrun,
    /// The failure backoff, later than the loop rule's time.
    FailureBackoff,
    /// Due times were skipped past spec.catchUpWindow: the first one not skipped.
    CatchUpWindow,
    /// It would start inside a window of spec.pauseWindows: the end of the windows.
    PauseWindow,
    /// A pending run request: at once.
    RunRequest,
    /// No loop has started yet: the first is due when the LoopService exists.
    FirstLoop,
    /// A loop runs; the next starts when it ends at the earliest.
    Running,
    Suspended,
    SuspendedAfterFailures,
    Finished,
    Invalid,
}

/// What happens next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Loop `loop_number` starts now; it was to start `at` (now, for a run request), and
    /// `overdue` says that was longer ago than [`OVERDUE`].
    Due {
        loop_number: i64,
        at: Timestamp,
        run_request: Option<String>,
        overdue: bool,
    },
    /// Loop `loop_number` starts `at`.
    Waiting {
        loop_number: i64,
        at: Timestamp,
    },
    /// Loop `loop_number` waits for `window` (of spec.pauseWindows, and those after it) to
    /// end, and starts `at`.
    Paused {
        loop_number: i64,
        at: Timestamp,
        window: String,
    },
    /// Loop `loop_number` runs as `job`; the next starts when it ends, or at `not_before`
    /// (one interval after it was due) when that is later.
    Running {
        loop_number: i64,
        job: String,
        not_before: Option<Timestamp>,
    },
    Suspended,
    SuspendedAfterFailures {
        failures: i64,
        r#loop: i64,
    },
    Finished,
    /// The operator found the spec cannot run; `message` is its Ready condition's.
    Invalid {
        message: Option<String>,
    },
}

impl Next {
    /// The state's name, as explain-timing prints it.
    pub fn state(&self) -> &'static str {
        match self {
            Next::Due { .. } => "Due",
            Next::Waiting { .. } => "Waiting",
            Next::Paused { .. } => "Paused",
            Next::Running { .. } => "Running",
            Next::Suspended => "Suspended",
            Next::SuspendedAfterFailures { .. } => "SuspendedAfterFailures",
            Next::Finished => "Finished",
            Next::Invalid { .. } => "Invalid",
        }
    }

    /// The loop it is about: the next one, or the running one.
    pub fn loop_number(&self) -> Option<i64> {
        match self {
            Next::Due { loop_number, .. }
            | Next::Waiting { loop_number, .. }
            | Next::Paused { loop_number, .. }
            | Next::Running { loop_number, .. } => Some(*loop_number),
            _ => None,
        }
    }

    /// When the next loop starts (Due, Waiting).
    pub fn at(&self) -> Option<Timestamp> {
        match self {
            Next::Due { at, .. } | Next::Waiting { at, .. } | Next::Paused { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// The things that can move the next loop's start, in the order explain-timing shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorKind {
    Interval,
    Overrun,
    FailureBackoff,
    CatchUpWindow,
    Alignment,
    Jitter,
    PauseWindows,
    Suspend,
    LoopsLimit,
    RunRequest,
}

impl FactorKind {
    pub const ALL: [FactorKind; 10] = [
        FactorKind::Interval,
        FactorKind::Overrun,
        FactorKind::FailureBackoff,
        FactorKind::CatchUpWindow,
        FactorKind::Alignment,
        FactorKind::Jitter,
        FactorKind::PauseWindows,
        FactorKind::Suspend,
        FactorKind::LoopsLimit,
        FactorKind::RunRequest,
    ];

    /// The name in explain-timing's JSON.
    pub fn name(self) -> &'static str {
        match self {
            FactorKind::Interval => "interval",
            FactorKind::Overrun => "overrun",
            FactorKind::FailureBackoff => "failureBackoff",
            FactorKind::CatchUpWindow => "catchUpWindow",
            FactorKind::Alignment => "alignment",
            FactorKind::Jitter => "jitter",
            FactorKind::PauseWindows => "pauseWindows",
            FactorKind::Suspend => "suspend",
            FactorKind::LoopsLimit => "loopsLimit",
            FactorKind::RunRequest => "runRequest",
        }
    }
}

/// One fact per factor: whether it sets (or holds back) the next start now, and what it
/// is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Factors {
    pub interval: IntervalFact,
    pub overrun: OverrunFact,
    pub failure_backoff: BackoffFact,
    pub catch_up: CatchUpFact,
    pub alignment: AlignmentFact,
    pub jitter: JitterFact,
    pub pause: PauseFact,
    pub suspend: SuspendFact,
    pub loops_limit: LoopsLimitFact,
    pub run_request: RunRequestFact,
}

impl Factors {
    /// Whether factor `kind` sets or holds back the next start now.
    pub fn applies(&self, kind: FactorKind) -> bool {
        match kind {
            FactorKind::Interval => self.interval.applies,
            FactorKind::Overrun => self.overrun.applies,
            FactorKind::FailureBackoff => self.failure_backoff.applies,
            FactorKind::CatchUpWindow => self.catch_up.applies,
            FactorKind::Alignment => self.alignment.applies,
            FactorKind::Jitter => self.jitter.applies,
            FactorKind::PauseWindows => self.pause.applies,
            FactorKind::Suspend => self.suspend.applies,
            FactorKind::LoopsLimit => self.loops_limit.applies,
            FactorKind::RunRequest => self.run_request.applies,
        }
    }

    /// The instant factor `kind` alone would start the next loop at, if it names one.
    pub fn at(&self, kind: FactorKind) -> Option<Timestamp> {
        match kind {
            FactorKind::Interval => Some(self.interval.at),
            FactorKind::Overrun => self.overrun.at,
            FactorKind::FailureBackoff => self.failure_backoff.in_force.map(|b| b.until),
            FactorKind::CatchUpWindow => self.catch_up.at,
            FactorKind::Alignment => self.alignment.at,
            FactorKind::RunRequest => self.run_request.at,
            FactorKind::PauseWindows => self.pause.until,
            FactorKind::Jitter | FactorKind::Suspend | FactorKind::LoopsLimit => None,
        }
    }
}

/// The loop rule's interval term: one interval after the previous loop was due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntervalFact {
    /// It sets the next start: no overrun or backoff is later, and no run request, suspension
    /// or loops limit comes first; or a loop runs and the interval has not passed.
    pub applies: bool,
    /// One interval after the previous loop was due, or when the first loop is due.
    pub at: Timestamp,
    /// None before the first loop.
    pub previous: Option<PreviousStart>,
}

/// The latest loop's start, and when it was due: `delay` (its jitter delay) earlier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PreviousStart {
    pub loop_number: i64,
    pub start: Timestamp,
    pub due: Timestamp,
    pub delay: Duration,
}

/// The loop rule's other term: the previous loop's end, when it ran past its interval.
#[derive(Clone, Debug, PartialEq)]
pub struct OverrunFact {
    /// The previous loop ended later than one interval after it was due, or the running loop
    /// is still running past that.
    pub applies: bool,
    /// The previous loop's end, when it overran.
    pub at: Option<Timestamp>,
    pub previous: PreviousRun,
}

/// How the latest loop went, as far as its timing goes.
#[derive(Clone, Debug, PartialEq)]
pub enum PreviousRun {
    NoneYet,
    /// Loop `loop_number` runs as `job`, for `ran` so far.
    Running {
        loop_number: i64,
        job: String,
        ran: Duration,
    },
    /// Loop `loop_number` ended at `end`, `took` after its start.
    Ended {
        loop_number: i64,
        end: Timestamp,
        took: Duration,
    },
    EndNotRecorded {
        loop_number: i64,
    },
}

/// spec.failureBackoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffFact {
    /// A backoff is in force and ends later than the loop rule's time.
    pub applies: bool,
    /// (initial, max), when set.
    pub rule: Option<(Duration, Duration)>,
    /// After failures in a row.
    pub in_force: Option<Backoff>,
}

/// spec.catchUpWindow: due times whose loop would start past it are skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct CatchUpFact {
    /// Due times were skipped, and the first one not skipped sets the next start.
    pub applies: bool,
    /// spec.catchUpWindow, when set.
    pub window: Option<Duration>,
    /// The due times skipped so far (status.loopsMissed), and the latest skip.
    pub missed: i64,
    pub last: Option<Missed>,
    /// The first due time not skipped, when it sets the next start.
    pub at: Option<Timestamp>,
}

/// spec.alignment: the due time on the grid epoch + offset + k × interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlignmentFact {
    /// Set, and the next loop is a scheduled one.
    pub applies: bool,
    pub grid: Option<Grid>,
    /// The loop rule's time, or the backoff's when later: what moves onto the grid.
    pub from: Timestamp,
    /// The first grid point at or after `from`.
    pub at: Option<Timestamp>,
}

/// spec.jitter: a stable delay after the due time, for scheduled loops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterFact {
    /// Set, and the next loop is a scheduled one.
    pub applies: bool,
    pub loop_number: i64,
    /// spec.jitter, when set, and the next loop's delay.
    pub max: Option<Duration>,
    pub delay: Duration,
    /// A run request is pending: its loop is not delayed.
    pub run_request_pending: bool,
}

/// spec.pauseWindows: no scheduled loop starts inside one.
#[derive(Clone, Debug, PartialEq)]
pub struct PauseFact {
    /// The next scheduled loop would start inside a window: it starts at its end.
    pub applies: bool,
    /// Each window, described (schedule, zone, duration).
    pub windows: Vec<String>,
    /// The end of the windows that cover the next start, and the latest of them.
    pub until: Option<Timestamp>,
    pub by: Option<String>,
}

/// spec.suspend, or a suspension after failures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuspendFact {
    pub applies: bool,
    pub by: Option<Suspension>,
    /// Failed loops in a row that count toward spec.suspendAfterFailures.
    pub failures_in_a_row: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspension {
    /// spec.suspend is true.
    Spec,
    /// It suspended itself after `failures` loops failed in a row, the last `loop`.
    AfterFailures { failures: i64, r#loop: i64 },
}

/// spec.loops, which counts scheduled loops only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopsLimitFact {
    /// All the scheduled loops have run.
    pub applies: bool,
    pub limit: Option<i64>,
    pub scheduled: i64,
}

/// The run request annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRequestFact {
    /// A run request is pending.
    pub applies: bool,
    pub pending: Option<String>,
    /// The running loop's Job its loop waits for.
    pub waits_for: Option<String>,
    /// Now, when its loop starts at once.
    pub at: Option<Timestamp>,
    pub last_handled: Option<String>,
}

/// Why the next loop starts when it does, for the recorded `status` under `rules` at `now`.
pub fn why(status: &LoopServiceStatus, rules: &Rules<'_>, now: Timestamp) -> Why {
    let (t, decision) = (timing(status, rules, now), decide(status, rules, now));
    let overrun = overrun(status, &t, now);
    let failure_backoff = BackoffFact { applies: t.backoff.is_some_and(|b| b.until > t.by_rule), rule: rules.backoff, in_force: t.backoff };
    let set_by =
        if status.phase == Some(Phase::Invalid) { SetBy::Invalid } else { set_by(&decision, &t, overrun.applies, failure_backoff.applies) };
    // While a loop runs within its interval, the next starts one interval after it was due
    // at the earliest, unless the backoff holds it back longer.
    let running_within = set_by == SetBy::Running && t.by_interval.is_some_and(|d| d > now);
    let scheduled = matches!(
        set_by,
        SetBy::Interval | SetBy::Overrun | SetBy::FailureBackoff | SetBy::CatchUpWindow | SetBy::PauseWindow | SetBy::FirstLoop
    );
    let catch_up = CatchUpFact {
        applies: set_by == SetBy::CatchUpWindow,
        window: rules.catch_up,
        missed: status.loops_missed,
        last: status.last_missed.clone(),
        at: t.resumed.filter(|_| set_by == SetBy::CatchUpWindow),
    };
    let interval = IntervalFact {
        applies: matches!(set_by, SetBy::Interval | SetBy::FirstLoop) || (running_within && !failure_backoff.applies),
        at: t.by_interval.unwrap_or(t.by_rule),
        previous: t.previous_start.zip(t.anchor).map(|(start, due)| PreviousStart {
            loop_number: status.loops_started,
            start,
            due,
            delay: schedule::until(start, due),
        }),
    };
    let alignment = AlignmentFact {
        applies: scheduled && t.grid.is_some(),
        grid: t.grid,
        from: t.off_grid,
        at: t.grid.map(|g| g.at_or_after(t.off_grid)),
    };
    let pending = pending_run_request(status, rules.run_request);
    let jitter = JitterFact {
        applies: scheduled && rules.jitter.is_some(),
        loop_number: t.next,
        max: rules.jitter.map(|j| j.max),
        delay: t.jitter.unwrap_or_default(),
        run_request_pending: pending.is_some(),
    };
    let run_request = RunRequestFact {
        applies: pending.is_some(),
        pending: pending.map(str::to_string),
        waits_for: status.active_job.clone().filter(|_| pending.is_some()),
        at: pending.filter(|_| status.active_job.is_none()).map(|_| now),
        last_handled: status.last_handled_run_request.clone(),
    };
    let pause = PauseFact {
        applies: set_by == SetBy::PauseWindow,
        windows: rules.windows.iter().map(|w| format!("{} for {}", w.describe(), humantime::format_duration(w.duration))).collect(),
        until: t.pause.map(|p| p.until).filter(|_| set_by == SetBy::PauseWindow),
        by: t.pause.and_then(|p| rules.windows.get(p.window)).map(|w| w.describe()).filter(|_| set_by == SetBy::PauseWindow),
    };
    let factors = Factors {
        interval,
        overrun,
        failure_backoff,
        catch_up,
        alignment,
        jitter,
        pause,
        suspend: suspend(status, rules),
        loops_limit: loops_limit(status, rules),
        run_request,
    };
    Why { set_by, next: next(status, decision, &t, now), factors }
}

/// What sets the start of the loop `decision` is about.
fn set_by(decision: &Decision, t: &Timing, overrun: bool, backoff: bool) -> SetBy {
    match decision {
        Decision::Launch { run_request: Some(_), .. } => SetBy::RunRequest,
        Decision::Paused { .. } => SetBy::PauseWindow,
        Decision::Launch { .. } | Decision::Wait { .. } if t.pause.is_some() => SetBy::PauseWindow,
        Decision::Launch { .. } | Decision::Wait { .. } if backoff => SetBy::FailureBackoff,
        Decision::Launch { .. } | Decision::Wait { .. } if t.resumed.is_some() => SetBy::CatchUpWindow,
        Decision::Launch { .. } | Decision::Wait { .. } if overrun => SetBy::Overrun,
        Decision::Launch { .. } | Decision::Wait { .. } if t.previous_start.is_none() => SetBy::FirstLoop,
        Decision::Launch { .. } | Decision::Wait { .. } => SetBy::Interval,
        Decision::Running { .. } => SetBy::Running,
        Decision::Suspended => SetBy::Suspended,
        Decision::SuspendedAfterFailures { .. } => SetBy::SuspendedAfterFailures,
        Decision::Finished => SetBy::Finished,
        Decision::Invalid { .. } => SetBy::Invalid,
    }
}

/// The previous loop's run against its interval.
fn overrun(status: &LoopServiceStatus, t: &Timing, now: Timestamp) -> OverrunFact {
    let loop_number = status.loops_started;
    let (Some(start), Some(by_interval)) = (t.previous_start, t.by_interval) else {
        return OverrunFact { applies: false, at: None, previous: PreviousRun::NoneYet };
    };
    // An end recorded before the latest start is an earlier loop's.
    let ended = status.last_completion_time.zip(status.last_start_time).is_some_and(|(e, s)| e >= s);
    match (&status.active_job, ended, t.previous_end) {
        (Some(job), ..) => OverrunFact {
            applies: now > by_interval,
            at: None,
            previous: PreviousRun::Running { loop_number, job: job.clone(), ran: schedule::until(now, start) },
        },
        (None, true, Some(end)) => OverrunFact {
            applies: end > by_interval,
            at: Some(end).filter(|e| *e > by_interval),
            previous: PreviousRun::Ended { loop_number, end, took: schedule::until(end, start) },
        },
        (None, ..) => OverrunFact { applies: false, at: None, previous: PreviousRun::EndNotRecorded { loop_number } },
    }
}

fn suspend(status: &LoopServiceStatus, rules: &Rules<'_>) -> SuspendFact {
    let by = match status.failure_suspension.as_ref().filter(|s| s.active) {
        _ if rules.suspended => Some(Suspension::Spec),
        Some(s) => Some(Suspension::AfterFailures { failures: s.failures, r#loop: s.r#loop }),
        None => None,
    };
    SuspendFact { applies: by.is_some(), by, failures_in_a_row: failures_toward_suspension(status) }
}

fn loops_limit(status: &LoopServiceStatus, rules: &Rules<'_>) -> LoopsLimitFact {
    let scheduled = status.loops_started.saturating_sub(status.manual_loops);
    LoopsLimitFact { applies: rules.loops.is_some_and(|n| scheduled >= n), limit: rules.loops, scheduled }
}

/// What happens next: what `decision` says, with the start from timing `t`.
fn next(status: &LoopServiceStatus, decision: Decision, t: &Timing, now: Timestamp) -> Next {
    let due = |loop_number: i64, at: Timestamp, run_request: Option<String>| Next::Due {
        loop_number,
        at,
        run_request,
        overdue: schedule::until(now, at) > OVERDUE,
    };
    if status.phase == Some(Phase::Invalid) {
        let ready = status.conditions.iter().find(|c| ConditionType::Ready == c.type_);
        return Next::Invalid { message: ready.map(|c| c.message.clone()) };
    }
    match decision {
        Decision::Launch { loop_number, scheduled, run_request: Some(r) } => due(loop_number, scheduled, Some(r)),
        // decide's `scheduled` is the due time; the loop starts after its jitter delay.
        Decision::Launch { loop_number, run_request: None, .. } => due(loop_number, t.start, None),
        Decision::Wait { until } => Next::Waiting { loop_number: t.next, at: until },
        Decision::Paused { until, window } => Next::Paused { loop_number: t.next, at: until, window },
        Decision::Running { job } => {
            let not_before = t.by_interval.map(|d| t.grid.map_or(d, |g| g.at_or_after(d)));
            Next::Running { loop_number: status.loops_started, job, not_before: not_before.filter(|d| *d > now) }
        }
        Decision::Suspended => Next::Suspended,
        Decision::SuspendedAfterFailures { failures, r#loop } => Next::SuspendedAfterFailures { failures, r#loop },
        Decision::Finished => Next::Finished,
        Decision::Invalid { message, .. } => Next::Invalid { message: Some(message) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Time;
    use crate::schedule::Jitter;
    use serde_json::{json, Value};
    use FactorKind::{
        Alignment as Alignment_, CatchUpWindow, FailureBackoff as Backoff_, Interval, Jitter as Jitter_, LoopsLimit, Overrun, RunRequest,
        Suspend,
    };

    const T0: i64 = 1_800_000_000;
    const UID: &str = "0c4d2f7e-1111";

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn ts(s: i64) -> String {
        Time(at(s)).format()
    }

    /// The spec's controls besides its interval (30s): spec.loops, spec.suspend, the run
    /// request annotation, spec.jitter and spec.failureBackoff (initial, max), in seconds.
    #[derive(Clone, Copy, Default)]
    struct Controls {
        loops: Option<i64>,
        suspended: bool,
        run_request: Option<&'static str>,
        jitter: Option<u64>,
        backoff: Option<(u64, u64)>,
        /// spec.alignment.offset, with the LoopService created at 0.
        alignment: Option<u64>,
        /// spec.catchUpWindow.
        catch_up: Option<u64>,
    }

    /// Loop 7 (scheduled) started at 100 and succeeded at 103, with `patch` over that; the
    /// LoopService was created at 0.
    fn status(patch: &Value) -> LoopServiceStatus {
        let mut st = json!({
            "phase": "Waiting", "loopsStarted": 7, "lastFinishedLoop": 7, "loopsSucceeded": 7,
            "lastStartTime": ts(100), "lastCompletionTime": ts(103),
            "history": [{"loop": 7, "jobName": "r-7", "trigger": "Scheduled", "dueTime": ts(100), "startTime": ts(100), "result": "Succeeded"}],
        });
        st.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        serde_json::from_value(st).unwrap()
    }

    fn jitter(max: u64) -> Jitter<'static> {
        Jitter { uid: UID, max: Duration::from_secs(max), created: at(0) }
    }

    fn why_at(patch: &Value, c: Controls, now: i64) -> Why {
        let j = c.jitter.map(jitter);
        let secs = Duration::from_secs;
        let rules = Rules {
            loops: c.loops,
            suspended: c.suspended,
            run_request: c.run_request,
            interval: secs(30),
            jitter: j.as_ref(),
            backoff: c.backoff.map(|(i, m)| (secs(i), secs(m))),
            alignment: c.alignment.map(|o| crate::schedule::Alignment { offset: secs(o), created: at(0) }),
            catch_up: c.catch_up.map(secs),
            windows: &[],
        };
        why(&status(patch), &rules, at(now))
    }

    fn running() -> Value {
        json!({"loopsStarted": 8, "activeJob": "r-8", "phase": "Running"})
    }

    fn manual_loop_7() -> Value {
        json!({"manualLoops": 1, "history": [{"loop": 7, "jobName": "r-7", "trigger": "Manual", "dueTime": ts(100), "startTime": ts(100), "result": "Succeeded"}]})
    }

    fn first_loop() -> Value {
        json!({"phase": "Pending", "loopsStarted": 0, "lastFinishedLoop": 0, "loopsSucceeded": 0, "lastStartTime": null, "lastCompletionTime": null, "history": []})
    }

    struct Case {
        name: &'static str,
        status: Value,
        controls: Controls,
        now: i64,
        set_by: SetBy,
        /// (state, loop, at); `at` less the jitter delay when the jitter applies (that delay
        /// is checked on its own).
        next: (&'static str, Option<i64>, Option<i64>),
        applies: &'static [FactorKind],
        /// Instants the factors name.
        at: &'static [(FactorKind, Option<i64>)],
    }

    fn cases() -> Vec<Case> {
        let none = Controls::default();
        let c = |f: fn(&mut Controls)| {
            let mut c = none;
            f(&mut c);
            c
        };
        let backoff_2 = json!({"loopsSucceeded": 5, "consecutiveFailures": 2, "lastFailureTime": ts(103)});
        let self_suspended = json!({
            "consecutiveFailures": 3, "lastFailureTime": ts(103),
            "failureSuspension": {"loop": 7, "failures": 3, "time": ts(103), "generation": 1, "active": true},
        });
        let mut running_requested = running();
        running_requested["lastCompletionTime"] = json!(ts(95));
        vec![
            Case {
                name: "one interval after the previous start",
                status: json!({}),
                controls: none,
                now: 110,
                set_by: SetBy::Interval,
                next: ("Waiting", Some(8), Some(130)),
                applies: &[Interval],
                at: &[(Interval, Some(130)), (Overrun, None), (Backoff_, None), (RunRequest, None)],
            },
            Case {
                name: "an overrun: the previous loop ended late",
                status: json!({"lastCompletionTime": ts(145)}),
                controls: none,
                now: 146,
                set_by: SetBy::Overrun,
                next: ("Due", Some(8), Some(145)),
                applies: &[Overrun],
                at: &[(Interval, Some(130)), (Overrun, Some(145))],
            },
            Case {
                name: "aligned: an overrun waits for the next grid point",
                status: json!({"lastCompletionTime": ts(145)}),
                controls: c(|c| c.alignment = Some(10)),
                now: 146,
                set_by: SetBy::Overrun,
                next: ("Waiting", Some(8), Some(160)),
                applies: &[Overrun, Alignment_],
                at: &[(Interval, Some(130)), (Overrun, Some(145)), (Alignment_, Some(160))],
            },
            Case {
                name: "aligned: the first loop waits for the grid",
                status: first_loop(),
                controls: c(|c| c.alignment = Some(10)),
                now: 5,
                set_by: SetBy::FirstLoop,
                next: ("Waiting", Some(1), Some(10)),
                applies: &[Interval, Alignment_],
                at: &[(Interval, Some(0)), (Alignment_, Some(10))],
            },
            Case {
                name: "after due times were skipped past the catch-up window",
                // Loop 8 was due at 130; at 155 the due times 130, 140 and 150 were skipped.
                status: json!({"loopsMissed": 3, "lastMissed": {"firstDueTime": ts(130), "count": 3, "nextDueTime": ts(160), "time": ts(155), "message": "missed"}}),
                controls: c(|c| c.catch_up = Some(5)),
                now: 155,
                set_by: SetBy::CatchUpWindow,
                next: ("Waiting", Some(8), Some(160)),
                applies: &[CatchUpWindow],
                at: &[(Interval, Some(130)), (CatchUpWindow, Some(160))],
            },
            Case {
                name: "a skip before the latest loop no longer counts",
                status: json!({"lastMissed": {"firstDueTime": ts(60), "count": 1, "nextDueTime": ts(70), "time": ts(66), "message": "missed"}}),
                controls: c(|c| c.catch_up = Some(5)),
                now: 110,
                set_by: SetBy::Interval,
                next: ("Waiting", Some(8), Some(130)),
                applies: &[Interval],
                at: &[(Interval, Some(130)), (CatchUpWindow, None)],
            },
            Case {
                name: "a loop runs within its interval",
                status: running(),
                controls: none,
                now: 110,
                set_by: SetBy::Running,
                next: ("Running", Some(8), None),
                applies: &[Interval],
                at: &[(Interval, Some(130)), (Overrun, None)],
            },
            Case {
                name: "a loop runs past its interval",
                status: running(),
                controls: none,
                now: 140,
                set_by: SetBy::Running,
                next: ("Running", Some(8), None),
                applies: &[Overrun],
                at: &[(Interval, Some(130)), (Overrun, None)],
            },
            Case {
                name: "a backoff later than the loop rule's time",
                status: backoff_2.clone(),
                controls: c(|c| c.backoff = Some((30, 600))),
                now: 110,
                set_by: SetBy::FailureBackoff,
                next: ("Waiting", Some(8), Some(163)),
                applies: &[Backoff_],
                at: &[(Interval, Some(130)), (Backoff_, Some(163))],
            },
            Case {
                name: "a backoff earlier than the loop rule's time",
                status: backoff_2,
                controls: c(|c| c.backoff = Some((5, 600))),
                now: 110,
                set_by: SetBy::Interval,
                next: ("Waiting", Some(8), Some(130)),
                applies: &[Interval],
                at: &[(Interval, Some(130)), (Backoff_, Some(113))],
            },
            Case {
                name: "a backoff later than an overrun's end",
                status: json!({"lastCompletionTime": ts(145), "consecutiveFailures": 1, "lastFailureTime": ts(145)}),
                controls: c(|c| c.backoff = Some((60, 600))),
                now: 146,
                set_by: SetBy::FailureBackoff,
                next: ("Waiting", Some(8), Some(205)),
                applies: &[Overrun, Backoff_],
                at: &[(Overrun, Some(145)), (Backoff_, Some(205))],
            },
            Case {
                name: "the jitter delays a scheduled loop",
                status: manual_loop_7(),
                controls: c(|c| c.jitter = Some(10)),
                now: 110,
                set_by: SetBy::Interval,
                next: ("Waiting", Some(8), Some(130)),
                applies: &[Interval, Jitter_],
                at: &[(Interval, Some(130)), (Jitter_, None)],
            },
            Case {
                name: "the jitter does not delay a run request",
                status: manual_loop_7(),
                controls: c(|c| (c.jitter, c.run_request) = (Some(10), Some("go"))),
                now: 110,
                set_by: SetBy::RunRequest,
                next: ("Due", Some(8), Some(110)),
                applies: &[RunRequest],
                at: &[(Interval, Some(130)), (RunRequest, Some(110))],
            },
            Case {
                name: "a run request waits for the running loop",
                status: running_requested,
                controls: c(|c| c.run_request = Some("go")),
                now: 110,
                set_by: SetBy::Running,
                next: ("Running", Some(8), None),
                applies: &[Interval, RunRequest],
                at: &[(RunRequest, None)],
            },
            Case {
                name: "spec.suspend",
                status: json!({}),
                controls: c(|c| c.suspended = true),
                now: 110,
                set_by: SetBy::Suspended,
                next: ("Suspended", None, None),
                applies: &[Suspend],
                at: &[(Interval, Some(130))],
            },
            Case {
                name: "a run request while suspended",
                status: json!({}),
                controls: c(|c| (c.suspended, c.run_request) = (true, Some("go"))),
                now: 110,
                set_by: SetBy::RunRequest,
                next: ("Due", Some(8), Some(110)),
                applies: &[Suspend, RunRequest],
                at: &[(RunRequest, Some(110))],
            },
            Case {
                name: "suspended itself after failures",
                status: self_suspended,
                controls: none,
                now: 110,
                set_by: SetBy::SuspendedAfterFailures,
                next: ("SuspendedAfterFailures", None, None),
                applies: &[Suspend],
                at: &[],
            },
            Case {
                name: "the loops limit is reached (run requests do not count)",
                status: json!({"manualLoops": 1}),
                controls: c(|c| c.loops = Some(6)),
                now: 110,
                set_by: SetBy::Finished,
                next: ("Finished", None, None),
                applies: &[LoopsLimit],
                at: &[],
            },
            Case {
                name: "the loops limit is not reached (run requests do not count)",
                status: json!({"manualLoops": 1}),
                controls: c(|c| c.loops = Some(7)),
                now: 110,
                set_by: SetBy::Interval,
                next: ("Waiting", Some(8), Some(130)),
                applies: &[Interval],
                at: &[],
            },
            Case {
                name: "the first loop is due at once",
                status: first_loop(),
                controls: none,
                now: 110,
                set_by: SetBy::FirstLoop,
                next: ("Due", Some(1), Some(110)),
                applies: &[Interval],
                at: &[(Interval, Some(110)), (Overrun, None)],
            },
            Case {
                name: "the first loop with jitter is due when the LoopService was created",
                status: first_loop(),
                controls: c(|c| c.jitter = Some(10)),
                now: 110,
                set_by: SetBy::FirstLoop,
                next: ("Due", Some(1), Some(0)),
                applies: &[Interval, Jitter_],
                at: &[(Interval, Some(0))],
            },
            Case {
                name: "the operator found the spec invalid",
                status: json!({"phase": "Invalid", "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "quota", "lastTransitionTime": ts(90)}]}),
                controls: none,
                now: 110,
                set_by: SetBy::Invalid,
                next: ("Invalid", None, None),
                applies: &[],
                at: &[],
            },
        ]
    }

    #[test]
    fn each_case_names_what_sets_the_next_start() {
        for case in cases() {
            let w = why_at(&case.status, case.controls, case.now);
            let name = case.name;
            assert_eq!(w.set_by, case.set_by, "{name}");
            let delay = if w.factors.jitter.applies { w.factors.jitter.delay } else { Duration::ZERO };
            let next = (w.next.state(), w.next.loop_number(), w.next.at().map(|a| schedule::sub(a, delay)));
            assert_eq!(next, (case.next.0, case.next.1, case.next.2.map(at)), "{name}");
            let applies: Vec<FactorKind> = FactorKind::ALL.into_iter().filter(|k| w.factors.applies(*k)).collect();
            assert_eq!(applies, case.applies, "{name}");
            for (kind, want) in case.at {
                assert_eq!(w.factors.at(*kind), want.map(at), "{name}: {}", kind.name());
            }
            if let Some(max) = w.factors.jitter.max {
                let j = Jitter { uid: UID, max, created: at(0) };
                assert_eq!(w.factors.jitter.delay, j.offset(w.factors.jitter.loop_number), "{name}");
            }
        }
    }

    #[test]
    fn the_facts_carry_what_the_explanation_says() {
        let none = Controls::default();
        let w = why_at(&json!({}), none, 110);
        let previous = PreviousStart { loop_number: 7, start: at(100), due: at(100), delay: Duration::ZERO };
        assert_eq!(w.factors.interval.previous, Some(previous));
        assert_eq!(w.factors.overrun.previous, PreviousRun::Ended { loop_number: 7, end: at(103), took: Duration::from_secs(3) });
        assert_eq!(w.factors.loops_limit, LoopsLimitFact { applies: false, limit: None, scheduled: 7 });
        // The jitter: loop 7 was due its own delay before its start.
        let w = why_at(&json!({}), Controls { jitter: Some(10), ..none }, 110);
        let previous = w.factors.interval.previous.unwrap();
        assert_eq!((previous.delay, previous.due), (jitter(10).offset(7), schedule::sub(at(100), jitter(10).offset(7))));
        let w = why_at(&manual_loop_7(), Controls { jitter: Some(10), run_request: Some("go"), ..none }, 110);
        assert!(w.factors.jitter.run_request_pending && !w.factors.jitter.applies);
        assert_eq!(w.next, Next::Due { loop_number: 8, at: at(110), run_request: Some("go".into()), overdue: false });

        let w = why_at(&running(), Controls { run_request: Some("go"), ..none }, 140);
        assert_eq!(w.factors.overrun.previous, PreviousRun::Running { loop_number: 8, job: "r-8".into(), ran: Duration::from_secs(40) });
        assert_eq!((w.factors.run_request.pending.as_deref(), w.factors.run_request.waits_for.as_deref()), (Some("go"), Some("r-8")));
        let w = why_at(&running(), none, 110);
        assert_eq!(w.next, Next::Running { loop_number: 8, job: "r-8".into(), not_before: Some(at(130)) });

        let w = why_at(&json!({"lastHandledRunRequest": "go"}), Controls { suspended: true, run_request: Some("go"), ..none }, 110);
        assert_eq!((w.set_by, w.factors.suspend.by), (SetBy::Suspended, Some(Suspension::Spec)));
        assert_eq!((w.factors.run_request.applies, w.factors.run_request.last_handled.as_deref()), (false, Some("go")));
        let self_suspended = json!({
            "consecutiveFailures": 3, "lastFailureTime": ts(103),
            "failureSuspension": {"loop": 7, "failures": 3, "time": ts(103), "generation": 1, "active": true},
        });
        let w = why_at(&self_suspended, none, 110);
        assert_eq!(
            w.factors.suspend,
            SuspendFact { applies: true, by: Some(Suspension::AfterFailures { failures: 3, r#loop: 7 }), failures_in_a_row: 3 }
        );
        assert_eq!(w.next, Next::SuspendedAfterFailures { failures: 3, r#loop: 7 });

        let w = why_at(&json!({"manualLoops": 1}), Controls { loops: Some(6), ..none }, 110);
        assert_eq!(w.factors.loops_limit, LoopsLimitFact { applies: true, limit: Some(6), scheduled: 6 });
        // A loop due long ago that no operator started.
        let w = why_at(&json!({}), none, 200);
        assert_eq!(w.next, Next::Due { loop_number: 8, at: at(130), run_request: None, overdue: true });
        for end in [Value::Null, json!(ts(95))] {
            let w = why_at(&json!({"lastCompletionTime": end}), none, 110);
            assert_eq!(w.factors.overrun.previous, PreviousRun::EndNotRecorded { loop_number: 7 }, "{end}");
        }
        let w = why_at(&first_loop(), none, 110);
        assert_eq!((w.factors.interval.previous, &w.factors.overrun.previous), (None, &PreviousRun::NoneYet));
        let invalid = json!({"phase": "Invalid", "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "quota", "lastTransitionTime": ts(90)}]});
        assert_eq!(why_at(&invalid, none, 110).next, Next::Invalid { message: Some("quota".into()) });
    }
}
