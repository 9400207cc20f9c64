//! spec.catchUpWindow: a scheduled loop that would start too late is not run. Its due time,
//! and each one an interval after it whose loop would be as late, become one `Missed` record,
//! and the next loop is due at the first due time not past the window.

use std::time::Duration;

use jiff::Timestamp;

use super::{decide, remember, timing, Decision, Note, Rules, HISTORY_MESSAGE};
use crate::crd::{to_millisecond, LoopRecord, LoopResult, LoopServiceStatus, Missed, Time, Trigger};
use crate::reasons::Reason;
use crate::schedule;
use crate::text::{clip, clip_to};

/// spec.catchUpWindow: when the next scheduled loop would start more than the window after
/// it was due, skips its due time and each one an interval after it whose loop would start
/// past the window too. They are one Missed record in the history, `loopsMissed` and
/// `lastMissed`, so that the next loop is due at the first due time not past the window (it
/// may be now). Nothing for a run request, a running loop or one held back.
pub fn skip_missed(st: &mut LoopServiceStatus, rules: &Rules<'_>, now: Timestamp) -> Option<Note> {
    let window = rules.catch_up?;
    if !matches!(decide(st, rules, now), Decision::Launch { run_request: None, .. }) {
        return None;
    }
    let t = timing(st, rules, now);
    let late = schedule::until(now, t.start);
    if late <= window {
        return None;
    }
    // The fewest intervals k with start + k × interval no more than the window before now.
    let interval = rules.interval.as_nanos().max(1);
    let k = (late - window).as_nanos().div_ceil(interval);
    let count = i64::try_from(k).unwrap_or(i64::MAX);
    // In seconds and nanoseconds: as nanoseconds alone, a span past 584 years would saturate.
    let span = |k: u128| {
        let n = k.saturating_mul(interval);
        Duration::new(u64::try_from(n / 1_000_000_000).unwrap_or(u64::MAX), (n % 1_000_000_000) as u32)
    };
    // To the millisecond, as status keeps times.
    let on_ms = |k: u128| to_millisecond(schedule::add(t.due, span(k)));
    let (first, last, next_due) = (t.due, on_ms(k - 1), on_ms(k));
    let which =
        if count == 1 { format!("the due time {}", Time(first)) } else { format!("{count} due times, {} to {}", Time(first), Time(last)) };
    let message = format!(
        "missed {which}: loop {} would have started {} after it was due, past spec.catchUpWindow ({}); it is due at {}",
        t.next,
        rounded(late),
        rounded(window),
        Time(next_due)
    );
    st.loops_missed = st.loops_missed.saturating_add(count);
    st.last_missed =
        Some(Missed { first_due_time: Time(first), count, next_due_time: Time(next_due), time: Time(now), message: clip(&message) });
    remember(
        st,
        LoopRecord {
            r#loop: t.next,
            job_name: String::new(),
            trigger: Trigger::Scheduled,
            due_time: Time(first),
            start_time: Time(now),
            end_time: None,
            duration_seconds: None,
            result: LoopResult::Missed,
            reason: None,
            message: Some(clip_to(&message, HISTORY_MESSAGE)),
            overran: false,
            admitted_time: None,
            missed_due_times: Some(count),
            requested_by: None,
            request_reason: None,
        },
    );
    Some(Note { times: u64::try_from(count).unwrap_or(u64::MAX), ..Note::warning(Reason::LoopsMissed, message) })
}

/// A duration for a message, to the second (to the millisecond below a second).
fn rounded(d: Duration) -> String {
    let d = if d >= Duration::from_secs(1) { Duration::from_secs(d.as_secs()) } else { Duration::from_millis(d.as_millis() as u64) };
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ObservedJob;
    use crate::schedule::{Alignment, Jitter};
    use serde_json::json;

    const I: Duration = Duration::from_secs(10);
    const WINDOW: Duration = Duration::from_secs(5);

    fn t(s: f64) -> Timestamp {
        Timestamp::from_millisecond((s * 1000.0) as i64).unwrap()
    }

    /// Loop 7 started at 100 (due then) and succeeded at 103.
    fn after_loop_7() -> LoopServiceStatus {
        serde_json::from_value(json!({
            "loopsStarted": 7, "lastFinishedLoop": 7, "loopsSucceeded": 7,
            "lastStartTime": Time(t(100.0)), "lastCompletionTime": Time(t(103.0)),
            "history": [{"loop": 7, "jobName": "r-7", "trigger": "Scheduled", "dueTime": Time(t(100.0)), "startTime": Time(t(100.0)), "endTime": Time(t(103.0)), "result": "Succeeded"}],
        }))
        .unwrap()
    }

    fn rules(catch_up: Option<Duration>) -> Rules<'static> {
        Rules { catch_up, ..Rules::every(I) }
    }

    /// What a reconcile at `now` does: skips, then decides.
    fn look(st: &mut LoopServiceStatus, rules: &Rules<'_>, now: f64) -> (Option<Note>, Decision) {
        let note = skip_missed(st, rules, t(now));
        (note, decide(st, rules, t(now)))
    }

    fn launch(n: i64, due: f64) -> Decision {
        Decision::Launch { loop_number: n, scheduled: t(due), run_request: None }
    }

    /// (name, now, what is skipped: (count, first due time, next due time), the decision).
    type Case = (&'static str, f64, Option<(i64, f64, f64)>, Decision);

    #[test]
    fn a_loop_within_the_window_starts_late_and_one_past_it_is_skipped_to_the_next_due_time() {
        // Loop 8 is due at 110; the window is 5 s.
        #[rustfmt::skip]
        let cases: [Case; 6] = [
            ("on time", 110.0, None, launch(8, 110.0)),
            ("late, within the window", 115.0, None, launch(8, 110.0)),
            // (count, first due skipped, next due)
            ("just past the window: the next due time is in 4 s", 116.0, Some((1, 110.0, 120.0)), Decision::Wait { until: t(120.0) }),
            ("past the window by one interval and more", 126.5, Some((2, 110.0, 130.0)), Decision::Wait { until: t(130.0) }),
            // 890 s late: due times 110, 120, ... 990 are skipped (89); 1000 is not past the window.
            ("after 15 minutes down: the due time now runs", 1000.0, Some((89, 110.0, 1000.0)), launch(8, 1000.0)),
            ("the due time 4 s ago is within the window", 1004.0, Some((89, 110.0, 1000.0)), launch(8, 1000.0)),
        ];
        for (name, now, skipped, decision) in cases {
            let mut st = after_loop_7();
            let (note, d) = look(&mut st, &rules(Some(WINDOW)), now);
            assert_eq!(d, decision, "{name}");
            match skipped {
                None => assert!(note.is_none() && st.last_missed.is_none() && st.loops_missed == 0, "{name}: {note:?}"),
                Some((count, first, next)) => {
                    let note = note.unwrap_or_else(|| panic!("{name}: nothing skipped"));
                    assert_eq!((note.reason, note.warning, note.times), (Reason::LoopsMissed, true, count as u64), "{name}");
                    let m = st.last_missed.clone().unwrap();
                    assert_eq!(
                        (m.count, m.first_due_time, m.next_due_time, m.time),
                        (count, Time(t(first)), Time(t(next)), Time(t(now))),
                        "{name}"
                    );
                    assert_eq!(st.loops_missed, count, "{name}");
                    // One record for all of them, before loop 8's (the loop that runs after them).
                    let r = &st.history[0];
                    assert_eq!(
                        (r.r#loop, r.result, r.missed_due_times, r.due_time),
                        (8, LoopResult::Missed, Some(count), Time(t(first))),
                        "{name}"
                    );
                    assert_eq!(st.history[1].r#loop, 7);
                    // Looking again changes nothing: the next due time is not past the window.
                    let before = st.clone();
                    assert_eq!(look(&mut st, &rules(Some(WINDOW)), now), (None, d), "{name}: again");
                    assert_eq!(st, before, "{name}: again");
                }
            }
        }
    }

    #[test]
    fn the_message_says_which_due_times_how_late_and_when_the_next_is_due() {
        let mut st = after_loop_7();
        let note = skip_missed(&mut st, &rules(Some(WINDOW)), t(126.5)).unwrap();
        assert_eq!(
            note.message,
            format!(
                "missed 2 due times, {} to {}: loop 8 would have started 16s after it was due, past spec.catchUpWindow (5s); it is due at {}",
                Time(t(110.0)),
                Time(t(120.0)),
                Time(t(130.0))
            )
        );
        let mut st = after_loop_7();
        let note = skip_missed(&mut st, &rules(Some(WINDOW)), t(116.0)).unwrap();
        assert!(
            note.message.starts_with(&format!("missed the due time {}: loop 8 would have started 6s after", Time(t(110.0)))),
            "{}",
            note.message
        );
    }

    #[test]
    fn without_a_window_a_late_loop_starts_at_once_however_late() {
        let mut st = after_loop_7();
        assert_eq!(look(&mut st, &rules(None), 100_000.0), (None, launch(8, 110.0)));
    }

    #[test]
    fn run_requests_running_loops_and_suspended_ones_are_never_skipped() {
        let request = Rules { run_request: Some("now"), ..rules(Some(WINDOW)) };
        let mut st = after_loop_7();
        assert!(skip_missed(&mut st, &request, t(1000.0)).is_none(), "a run request");
        let mut running = after_loop_7();
        running.active_job = Some("r-7".into());
        assert!(skip_missed(&mut running, &rules(Some(WINDOW)), t(1000.0)).is_none(), "a running loop");
        let suspended = Rules { suspended: true, ..rules(Some(WINDOW)) };
        assert!(skip_missed(&mut after_loop_7(), &suspended, t(1000.0)).is_none(), "suspended");
        // Resumed later, the loop due while it was suspended is skipped like any late one.
        let mut st = after_loop_7();
        assert_eq!(skip_missed(&mut st, &rules(Some(WINDOW)), t(1000.0)).map(|n| n.times), Some(89));
    }

    #[test]
    fn the_loop_after_the_skip_anchors_the_next_as_usual() {
        let mut st = after_loop_7();
        skip_missed(&mut st, &rules(Some(WINDOW)), t(116.0)).unwrap();
        // Loop 8 starts at its due time, 120, and ends at 121.
        let job = ObservedJob {
            name: "r-8".into(),
            loop_number: 8,
            start: t(120.1),
            scheduled: Some(t(120.0)),
            run_request: None,
            requester: Default::default(),
            end: None,
            queue: None,
            queued_since: None,
            admitted: None,
        };
        super::super::launched(&mut st, &job);
        let ended = ObservedJob { end: Some((t(121.0), crate::job::Outcome::Succeeded)), ..job };
        let (mut st, _) = super::super::record_jobs(&st, &[ended], I, t(121.0));
        assert_eq!(look(&mut st, &rules(Some(WINDOW)), 121.0), (None, Decision::Wait { until: t(130.1) }));
        // The history keeps both: loop 8, then the due time it was skipped to from.
        let kinds: Vec<(i64, LoopResult)> = st.history.iter().map(|r| (r.r#loop, r.result)).collect();
        assert_eq!(kinds, [(8, LoopResult::Succeeded), (8, LoopResult::Missed), (7, LoopResult::Succeeded)]);
    }

    #[test]
    fn with_alignment_the_next_due_time_stays_on_the_grid() {
        // The grid is 3, 13, 23 ... s: loop 8 is due at 113.
        let aligned = Rules { alignment: Some(Alignment { offset: Duration::from_secs(3), created: t(0.0) }), ..rules(Some(WINDOW)) };
        let mut st = after_loop_7();
        let note = skip_missed(&mut st, &aligned, t(150.0)).unwrap();
        assert_eq!(note.times, 4, "113, 123, 133 and 143 are past the window at 150");
        assert_eq!(st.last_missed.unwrap().next_due_time, Time(t(153.0)));
        assert_eq!(decide(&after_loop_7_skipped(&aligned, 150.0), &aligned, t(150.0)), Decision::Wait { until: t(153.0) });
    }

    /// Missed for longer than a span of nanoseconds can say (584 years): the loop is skipped to
    /// its next due time within the window all the same, and the times recorded are to the
    /// millisecond, so the status reads back as it was written.
    #[test]
    fn centuries_missed_are_skipped_and_recorded_to_the_millisecond() {
        for years in [600, 5_000] {
            let mut st = after_loop_7();
            let now = schedule::add(t(0.0), Duration::from_secs(years * 365 * 24 * 3600));
            skip_missed(&mut st, &rules(Some(WINDOW)), now).expect("loop 8 is past the window");
            let next = st.last_missed.as_ref().unwrap().next_due_time.0;
            assert!(next > schedule::sub(now, WINDOW) && next <= schedule::add(now, I), "{years} years: due at {next}, now {now}");
            let written: LoopServiceStatus = serde_json::from_value(serde_json::to_value(&st).unwrap()).unwrap();
            assert_eq!(written, st);
        }
    }

    fn after_loop_7_skipped(rules: &Rules<'_>, now: f64) -> LoopServiceStatus {
        let mut st = after_loop_7();
        skip_missed(&mut st, rules, t(now));
        st
    }

    #[test]
    fn with_jitter_lateness_counts_from_the_jittered_start() {
        let j = Jitter { uid: "u-1", max: Duration::from_secs(8), created: t(0.0) };
        let jittered = Rules { jitter: Some(&j), ..rules(Some(WINDOW)) };
        // Loop 7 was due at 100 - offset(7); loop 8 at 110 - offset(7), to start offset(8) later.
        let due = schedule::sub(t(110.0), j.offset(7));
        let start = schedule::add(due, j.offset(8));
        let mut st = after_loop_7();
        assert!(skip_missed(&mut st, &jittered, schedule::add(start, WINDOW)).is_none(), "5 s after its jittered start");
        let late = schedule::add(start, WINDOW + Duration::from_millis(1));
        let note = skip_missed(&mut st, &jittered, late).unwrap();
        assert_eq!(note.times, 1);
        assert_eq!(st.last_missed.unwrap().next_due_time, Time(schedule::add(due, I)));
    }

    #[test]
    fn an_edited_next_due_time_far_ahead_holds_the_loop_back_one_interval_at_most() {
        let mut st = after_loop_7();
        skip_missed(&mut st, &rules(Some(WINDOW)), t(116.0)).unwrap();
        st.last_missed.as_mut().unwrap().next_due_time = Time(t(1_000_000.0));
        assert_eq!(decide(&st, &rules(Some(WINDOW)), t(117.0)), Decision::Wait { until: t(127.0) });
    }
}
