//! The next start times the plan implies: [`decide`] and [`timing`] run forward from the
//! recorded status, as the operator would run them, with every control (jitter, alignment,
//! the failure backoff in force, the catch-up window, the loops limit, a pending run request).
//! What no plan can know is assumed: each loop succeeds and ends within its interval, and a
//! loop running now ends now.

use jiff::Timestamp;

use super::{decide, launched, skip_missed, timing, Decision, Rules};
use crate::crd::{LoopServiceStatus, Time};
use crate::job::ObservedJob;

/// The longest forecast: `explain-timing --next` asks for at most this many starts.
pub const MAX_STARTS: usize = 1000;

/// One loop the plan implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub loop_number: i64,
    /// When it is due (a run request's loop: now).
    pub due: Timestamp,
    /// When it starts: due plus its jitter delay, or now when that has passed.
    pub start: Timestamp,
    /// The run request it answers.
    pub run_request: Option<String>,
}

/// Why no further loop starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// spec.suspend.
    Suspended,
    /// It suspended itself after failures in a row.
    SuspendedAfterFailures,
    /// spec.loops loops have run.
    Finished,
}

/// The next (at most `n`, at most [`MAX_STARTS`]) starts after `now`, and why they end
/// there when fewer.
pub fn next_starts(status: &LoopServiceStatus, rules: &Rules<'_>, now: Timestamp, n: usize) -> (Vec<Planned>, Option<Stop>) {
    let mut st = status.clone();
    let mut now = now;
    // The running loop ends now (it may end earlier than its interval allows the next).
    if st.active_job.is_some() {
        ended(&mut st, now);
    }
    let mut out = vec![];
    while out.len() < n.min(MAX_STARTS) {
        // Only the first look can find a loop late: the plan starts each on time after that.
        skip_missed(&mut st, rules, now);
        let (loop_number, due, run_request) = match decide(&st, rules, now) {
            Decision::Launch { loop_number, scheduled, run_request } => (loop_number, scheduled, run_request),
            Decision::Wait { until } | Decision::Paused { until, .. } => {
                now = until.max(now);
                continue;
            }
            Decision::Suspended => return (out, Some(Stop::Suspended)),
            Decision::SuspendedAfterFailures { .. } => return (out, Some(Stop::SuspendedAfterFailures)),
            Decision::Finished => return (out, Some(Stop::Finished)),
            // Not after `ended`, and decide never finds a spec invalid.
            Decision::Running { .. } | Decision::Invalid { .. } => break,
        };
        let start = match &run_request {
            Some(_) => now,
            None => timing(&st, rules, now).start.max(now),
        };
        let job = ObservedJob {
            name: String::new(),
            loop_number,
            start,
            scheduled: Some(due),
            run_request: run_request.clone(),
            requester: Default::default(),
            end: None,
            queue: None,
            queued_since: None,
            admitted: None,
        };
        launched(&mut st, &job);
        ended(&mut st, start);
        out.push(Planned { loop_number, due, start, run_request });
        now = start;
    }
    (out, None)
}

/// The latest loop ends at `at` and succeeds.
fn ended(st: &mut LoopServiceStatus, at: Timestamp) {
    let end = st.last_start_time.map_or(at, |s| s.0.max(at));
    st.active_job = None;
    st.last_finished_loop = st.loops_started;
    st.last_completion_time = Some(Time(end));
    st.last_success_time = Some(Time(end));
    st.consecutive_failures = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{self, Alignment, Jitter};
    use serde_json::json;
    use std::time::Duration;

    const I: Duration = Duration::from_secs(30);

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Loop 7 started at 100 and succeeded at 103, with `patch` over that.
    fn status(patch: serde_json::Value) -> LoopServiceStatus {
        let mut st = json!({
            "loopsStarted": 7, "lastFinishedLoop": 7, "loopsSucceeded": 7,
            "lastStartTime": Time(at(100)), "lastCompletionTime": Time(at(103)),
        });
        st.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        serde_json::from_value(st).unwrap()
    }

    fn rules() -> Rules<'static> {
        Rules::every(I)
    }

    fn starts(f: &(Vec<Planned>, Option<Stop>)) -> Vec<Timestamp> {
        f.0.iter().map(|p| p.start).collect()
    }

    #[test]
    fn start_anchored_loops_follow_one_interval_apart() {
        let f = next_starts(&status(json!({})), &rules(), at(110), 3);
        assert_eq!(starts(&f), [at(130), at(160), at(190)]);
        assert_eq!(f.0.iter().map(|p| p.loop_number).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(f.1, None);
        // Asked for none, none.
        assert_eq!(next_starts(&status(json!({})), &rules(), at(110), 0), (vec![], None));
    }

    #[test]
    fn the_loops_limit_ends_the_list_and_says_so() {
        let limited = Rules { loops: Some(9), ..rules() };
        let f = next_starts(&status(json!({})), &limited, at(110), 5);
        assert_eq!((starts(&f), f.1), (vec![at(130), at(160)], Some(Stop::Finished)));
        let suspended = Rules { suspended: true, ..rules() };
        assert_eq!(next_starts(&status(json!({})), &suspended, at(110), 5), (vec![], Some(Stop::Suspended)));
    }

    #[test]
    fn a_pending_run_request_starts_now_and_anchors_the_rest() {
        let requested = Rules { run_request: Some("please"), suspended: true, ..rules() };
        let f = next_starts(&status(json!({})), &requested, at(110), 3);
        assert_eq!(f.0[0], Planned { loop_number: 8, due: at(110), start: at(110), run_request: Some("please".into()) });
        // Suspended: only the request's loop runs.
        assert_eq!(f.1, Some(Stop::Suspended));
        let requested = Rules { run_request: Some("please"), ..rules() };
        assert_eq!(starts(&next_starts(&status(json!({})), &requested, at(110), 3)), [at(110), at(140), at(170)]);
    }

    #[test]
    fn a_running_loop_is_taken_to_end_now() {
        let running = status(json!({"loopsStarted": 8, "activeJob": "r-8", "lastStartTime": Time(at(130))}));
        assert_eq!(starts(&next_starts(&running, &rules(), at(140), 2)), [at(160), at(190)]);
        // Past its interval: the next starts as soon as it ends, taken to be now.
        assert_eq!(starts(&next_starts(&running, &rules(), at(175), 2)), [at(175), at(205)]);
    }

    #[test]
    fn alignment_jitter_backoff_and_the_catch_up_window_are_all_in_it() {
        // On the grid 20 s past each multiple of 30 s: loop 7 started off it, so loop 8 waits
        // for the first grid point one interval after it, and the rest follow on the grid.
        let aligned = Rules { alignment: Some(Alignment { offset: Duration::from_secs(20), created: at(0) }), ..rules() };
        assert_eq!(starts(&next_starts(&status(json!({})), &aligned, at(110), 3)), [at(140), at(170), at(200)]);
        // Jitter: each start is its due time plus the loop's own delay.
        let j = Jitter { uid: "u-1", max: Duration::from_secs(10), created: at(0) };
        let jittered = Rules { jitter: Some(&j), ..rules() };
        let f = next_starts(&status(json!({})), &jittered, at(110), 3);
        for p in &f.0 {
            assert_eq!(p.start, schedule::add(p.due, j.offset(p.loop_number)), "loop {}", p.loop_number);
        }
        // The backoff in force holds the first back; the rest assume success.
        let backoff = Rules { backoff: Some((Duration::from_secs(60), Duration::from_secs(600))), ..rules() };
        let failing = status(json!({"consecutiveFailures": 2, "lastFailureTime": Time(at(103))}));
        assert_eq!(starts(&next_starts(&failing, &backoff, at(110), 2)), [at(223), at(253)]);
        // Long overdue with a catch-up window: skipped to the first due time within it.
        let window = Rules { catch_up: Some(Duration::from_secs(5)), ..rules() };
        assert_eq!(starts(&next_starts(&status(json!({})), &window, at(1000), 2)), [at(1000), at(1030)]);
        assert_eq!(starts(&next_starts(&status(json!({})), &window, at(1006), 2)), [at(1030), at(1060)]);
    }

    #[test]
    fn a_loop_due_inside_a_pause_window_starts_once_at_its_end() {
        // at(0) is 08:00:00 UTC; the window is open from 08:02 for a minute: [120, 180).
        let windows = [crate::pause::Window::parse(0, "2 8 * * *", Duration::from_secs(60), None).unwrap()];
        let paused = Rules { windows: &windows, ..rules() };
        assert_eq!(
            decide(&status(json!({})), &paused, at(110)),
            Decision::Paused { until: at(180), window: "\"2 8 * * *\"".into() },
            "loop 8, due at 130, waits for the window's end"
        );
        // Once, at the end, and the next one interval after that start.
        assert_eq!(starts(&next_starts(&status(json!({})), &paused, at(110), 3)), [at(180), at(210), at(240)]);
        let t = timing(&status(json!({})), &paused, at(110));
        assert_eq!((t.due, t.pause.map(|p| p.until)), (at(180), Some(at(180))), "the due time is the window's end");
        // Found overdue inside the window (the operator was down): still the window's end.
        assert_eq!(decide(&status(json!({})), &paused, at(150)), Decision::Paused { until: at(180), window: "\"2 8 * * *\"".into() });
        // Found after the window ended: due at its end, and it starts now.
        assert_eq!(
            decide(&status(json!({})), &paused, at(181)),
            Decision::Launch { loop_number: 8, scheduled: at(180), run_request: None }
        );
        // Due before a window that is open now: it waits for the window's end.
        let early = Rules { windows: &windows, ..rules() };
        let st = status(json!({"lastStartTime": Time(at(60)), "lastCompletionTime": Time(at(61))}));
        assert_eq!(
            decide(&st, &early, at(130)),
            Decision::Paused { until: at(180), window: "\"2 8 * * *\"".into() },
            "due at 90, found at 130"
        );
        // A run request is not paused.
        let requested = Rules { run_request: Some("now"), ..paused };
        assert!(matches!(decide(&status(json!({})), &requested, at(150)), Decision::Launch { run_request: Some(_), .. }));
    }
}
