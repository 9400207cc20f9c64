//! spec.catchUpWindow against the local cluster: after the operator was down, the loop due
//! while it was away is skipped to the first due time not past the window, with real Jobs,
//! timed by a Job watch outside the operator.

mod support;

use std::time::Duration;

use kube::ResourceExt;
use loopservice_operator::crd::LoopResult;
use serde_json::json;
use support::job_watch::JobWatch;
use support::*;

const INTERVAL: f64 = 5.0;
const WINDOW: f64 = 2.0;

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loop_later_than_the_catch_up_window_is_skipped_to_the_next_due_time_within_it() {
    let ns = setup("catchup").await;
    let mut v = ls("late", "5s", "echo hi");
    v["spec"]["catchUpWindow"] = json!("2s");
    wait_served(&ns, &v, "spec.catchUpWindow", |ls| ls.spec.catch_up_window.is_some()).await;
    let watch = JobWatch::start(ns.jobs()).await;
    let mut op = Operator::start(&ns.name, &[]);
    create_ls(&ns, v).await.unwrap();
    // A loop ended and the next waits for its time (a Pod may take longer than the interval
    // to start and end here, and then the next loop follows at once).
    let before =
        wait_status(&ns, "late", "a loop ended, the next waiting", |st| st.last_finished_loop >= 1 && st.active_job.is_none()).await;
    op.signal("KILL");
    op.wait_exit(Duration::from_secs(10)).await;
    let n = before.loops_started;
    // Down until loop n + 1 is 16 s late: its due time and the two after it are past the window.
    let due_skipped = next_due(&before, Duration::from_secs_f64(INTERVAL));
    let after = status(&ns, "late").await;
    assert_eq!((after.loops_started, after.last_start_time), (n, before.last_start_time), "no loop while the operator was down");
    wait_until(due_skipped + jiff::SignedDuration::from_secs(16)).await;
    let back = jiff::Timestamp::now();
    let op = Operator::start(&ns.name, &[]);

    let st = wait_status(&ns, "late", "a loop started after the skip", |st| st.loops_started > n && st.loops_missed > 0).await;
    let jobs = loop_jobs(&ns, "late").await;
    let job_after = jobs.iter().find(|j| loop_number(j) == n + 1).expect("the Job of the loop after the skip");
    let scheduled = ann_time(job_after, "loops.dev/scheduled-time");
    let seen = watch.seen(&job_after.name_any()).expect("the watch saw loop n + 1's Job");
    let missed = st.last_missed.clone().expect("status.lastMissed");
    println!(
        "loop {} was due {due_skipped}; the operator came back {back}; skipped {} due times from {}; loop {} scheduled {scheduled}, seen {seen} ({:.3}s later)",
        n + 1,
        missed.count,
        missed.first_due_time,
        n + 1,
        secs(scheduled, seen)
    );
    // The first due time skipped is loop n + 1's, and each skipped one is an interval after it.
    assert_eq!(missed.first_due_time.0, due_skipped);
    let steps = secs(due_skipped, scheduled) / INTERVAL;
    assert!((steps - steps.round()).abs() < 0.001, "loop n + 1 is due {steps} intervals after its first due time");
    assert_eq!(missed.count, steps.round() as i64, "the due times before loop n + 1's are the ones skipped");
    assert!(missed.count >= 3, "16 s late with a 5 s interval and a 2 s window: at least 3 skipped, {}", missed.count);
    assert_eq!((st.loops_missed, missed.next_due_time.0), (missed.count, scheduled));
    // Loop 3 was due no more than the window before the operator looked, and started then or
    // at its due time, whichever was later.
    assert!(secs(scheduled, back) <= WINDOW + 0.5, "loop n + 1 was due {:.3}s before the operator came back", secs(scheduled, back));
    assert!(secs(scheduled, seen) >= 0.0, "loop n + 1's Job appeared {:.3}s before it was due", secs(seen, scheduled));
    assert!(
        secs(scheduled, seen) <= WINDOW + 1.0,
        "loop n + 1's Job appeared {:.3}s after it was due, later than the window",
        secs(scheduled, seen)
    );
    // One Job for the skip, never a burst: the Jobs that appeared since the operator came
    // back are loop n + 1's and at most the one after it.
    let since: Vec<String> = watch.all().into_iter().filter(|(_, t)| *t >= back).map(|(j, _)| j).collect();
    assert!(since.len() <= 2 && since.first() == Some(&job_after.name_any()), "{since:?}");

    // What a user sees: a Missed record in the history, a Warning Event, the metric.
    let record = st.history.iter().find(|r| r.result == LoopResult::Missed).expect("a Missed record in status.history");
    assert_eq!((record.r#loop, record.missed_due_times, record.due_time.0), (n + 1, Some(missed.count), due_skipped));
    let evs = events_where(&ns, "late", "a LoopsMissed Event", |evs| evs.iter().any(|(_, r, _)| r == "LoopsMissed")).await;
    let (kind, _, note) = evs.iter().find(|(_, r, _)| r == "LoopsMissed").unwrap();
    assert_eq!(kind, "Warning");
    assert!(note.starts_with(&format!("missed {} due times", missed.count)) && note.contains("past spec.catchUpWindow (2s)"), "{note}");
    let metrics = op.get("/metrics").await.unwrap_or_default();
    let line = format!("loopservice_loops_missed_total{{namespace=\"{}\",name=\"late\"}} {}", ns.name, missed.count);
    assert!(metrics.lines().any(|l| l == line), "no line {line:?} in /metrics");

    // The loop after follows on the loop rule: one interval after loop n + 1's start, or its
    // end when later.
    let st = wait_status(&ns, "late", "the loop after started", |st| st.loops_started > n + 1).await;
    let jobs = loop_jobs(&ns, "late").await;
    let next = jobs.iter().find(|j| loop_number(j) == n + 2).expect("the Job of the loop after");
    let (start_after, due_next) = (start_time(job_after), ann_time(next, "loops.dev/scheduled-time"));
    let end_after = finished(&jobs.iter().find(|j| loop_number(j) == n + 1).unwrap().clone()).map(|(_, end)| end);
    let by_rule = end_after.map_or(start_after + jiff::SignedDuration::from_secs_f64(INTERVAL), |e| {
        e.max(start_after + jiff::SignedDuration::from_secs_f64(INTERVAL))
    });
    assert!(secs(by_rule, due_next).abs() < 1.01, "the loop after is due {due_next}, the loop rule says {by_rule}");
    assert_eq!(st.loops_missed, missed.count, "nothing more skipped while the operator runs");
}
