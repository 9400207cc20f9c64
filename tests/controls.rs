//! Timing controls against the local cluster: run now, history, the previous result, jitter, alignment,
//! failure backoff and suspend after failures, with real Jobs and busybox containers.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::ResourceExt;
use loopservice_operator::crd::Phase;
use serde_json::json;
use support::*;

/// What `kubectl annotate loopservice NAME loops.dev/run-requested-at=VALUE --overwrite` does.
async fn request_run(ns: &TestNs, name: &str, value: &str) -> jiff::Timestamp {
    let patch = json!({"metadata": {"annotations": {"loops.dev/run-requested-at": value}}});
    ns.loopservices().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    jiff::Timestamp::now()
}

fn trigger(j: &Job) -> &str {
    j.annotations().get("loops.dev/trigger").map(String::as_str).unwrap_or("")
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn run_now_starts_a_loop_at_once_or_after_the_running_one_and_anchors_the_next() {
    let ns = setup("runnow").await;
    let _op = Operator::start(&ns.name, &[]);
    // Loop 1 runs 4 s of a 20 s interval; the others end at once.
    create_ls(&ns, ls("nudge", "20s", "if [ $LOOP_NUMBER = 1 ]; then sleep 4; fi")).await.unwrap();
    let jobs = wait_jobs(&ns, "nudge", 1).await;
    assert_eq!(trigger(&jobs[0]), "Scheduled");

    // Requested while loop 1 runs: loop 2 starts when loop 1 ends, not before.
    request_run(&ns, "nudge", "first").await;
    let jobs = wait_jobs(&ns, "nudge", 2).await;
    let (_, end1) = wait_for("loop 1 to end", LONG, || async { finished(&loop_jobs(&ns, "nudge").await[0]) }).await;
    let (s1, s2) = (start_time(&jobs[0]), start_time(&jobs[1]));
    println!("run requested during loop 1: loop 1 started {s1}, ended {end1} (to the second), loop 2 started {s2}");
    // The end is stamped to the second: the true end lies in [end1, end1 + 1 s).
    assert!(secs(end1, s2) > -1.0 && secs(end1, s2) < 3.0, "loop 2 started {:.3}s after loop 1's end", secs(end1, s2));
    assert!(secs(s1, s2) > 3.5 && secs(s1, s2) < 15.0, "not before loop 1's end, not on schedule: {:.3}s", secs(s1, s2));
    assert_eq!((trigger(&jobs[1]), jobs[1].annotations()["loops.dev/run-request"].as_str()), ("Manual", "first"));
    let st =
        wait_status(&ns, "nudge", "loop 2 recorded as the request's", |st| st.last_handled_run_request.as_deref() == Some("first")).await;
    assert_eq!((st.loops_started, st.manual_loops), (2, 1));

    // The next scheduled loop is anchored on loop 2's start: 20 s after it.
    let jobs = wait_jobs(&ns, "nudge", 3).await;
    let s3 = start_time(&jobs[2]);
    println!("loop 3 (scheduled) started {:.3}s after loop 2 (manual)", secs(s2, s3));
    assert!((secs(s2, s3) - 20.0).abs() < 1.0, "{:.3}s", secs(s2, s3));
    assert_eq!(trigger(&jobs[2]), "Scheduled");

    // Requested while nothing runs: it starts at once.
    wait_for("loop 3 to end", LONG, || async { finished(&loop_jobs(&ns, "nudge").await[2]) }).await;
    let asked = request_run(&ns, "nudge", "second").await;
    let jobs = wait_jobs(&ns, "nudge", 4).await;
    let s4 = start_time(&jobs[3]);
    println!("run requested while waiting: loop 4 started {:.3}s after the request", secs(asked, s4));
    assert!(secs(asked, s4) < 2.0, "{:.3}s", secs(asked, s4));
    assert!(secs(s3, s4) < 15.0, "before loop 4's scheduled time");
    assert_eq!(trigger(&jobs[3]), "Manual");
    // The numbers run on, one Job per loop, and the status counts both kinds.
    assert_eq!(jobs.iter().map(loop_number).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let st = wait_status(&ns, "nudge", "loop 4 recorded", |st| st.last_handled_run_request.as_deref() == Some("second")).await;
    assert_eq!((st.loops_started, st.manual_loops), (4, 2));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn run_now_runs_one_loop_while_suspended_and_after_the_loops_ran_out() {
    let ns = setup("runsusp").await;
    let op = Operator::start(&ns.name, &[]);
    let mut v = ls("paused", "4s", "echo hi");
    v["spec"]["suspend"] = json!(true);
    create_ls(&ns, v).await.unwrap();
    wait_status(&ns, "paused", "phase Suspended", |st| st.phase == Some(Phase::Suspended)).await;
    assert!(loop_jobs(&ns, "paused").await.is_empty());

    request_run(&ns, "paused", "once").await;
    let jobs = wait_jobs(&ns, "paused", 1).await;
    assert_eq!(trigger(&jobs[0]), "Manual");
    let st =
        wait_status(&ns, "paused", "suspended again after the loop", |st| st.last_finished_loop == 1 && st.phase == Some(Phase::Suspended))
            .await;
    assert_eq!((st.loops_started, st.loops_succeeded, st.manual_loops), (1, 1, 1));
    // Past the time a scheduled loop would be due, and once the operator has looked since:
    // still only that one loop.
    reconciled_since(&op, &ns, &["paused"], next_due(&st, Duration::from_secs(4))).await;
    assert_eq!(loop_jobs(&ns, "paused").await.len(), 1, "one loop per request while suspended");

    // spec.loops: 2 and resumed: two scheduled loops run (the manual one is not counted),
    // then Finished; a request then runs one more, and it is Finished again.
    let patch = json!({"spec": {"suspend": false, "loops": 2}});
    ns.loopservices().patch("paused", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let st = wait_status(&ns, "paused", "phase Finished", |st| st.phase == Some(Phase::Finished)).await;
    assert_eq!((st.loops_started, st.manual_loops), (3, 1), "two scheduled loops besides the manual one");
    request_run(&ns, "paused", "after-the-end").await;
    let jobs = wait_jobs(&ns, "paused", 4).await;
    assert_eq!(trigger(&jobs[3]), "Manual");
    let st = wait_status(&ns, "paused", "finished again", |st| st.last_finished_loop == 4 && st.phase == Some(Phase::Finished)).await;
    assert_eq!((st.loops_started, st.loops_succeeded, st.manual_loops), (4, 4, 2));
    reconciled_since(&op, &ns, &["paused"], next_due(&st, Duration::from_secs(4))).await;
    assert_eq!(loop_jobs(&ns, "paused").await.len(), 4);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_run_request_starts_exactly_one_loop_across_operator_restarts() {
    let ns = setup("runonce").await;
    let mut v = ls("once", "4s", "echo hi");
    v["spec"]["suspend"] = json!(true);
    create_ls(&ns, v).await.unwrap();
    // This operator exits (as if killed) right after creating the request's Job, before the
    // status that records the request as handled is written.
    let mut op = Operator::start(&ns.name, &[("LOOPSERVICE_FAULT", "exit-after-job-create")]);
    wait_status(&ns, "once", "phase Suspended", |st| st.phase == Some(Phase::Suspended)).await;
    request_run(&ns, "once", "2026-11-25T10:00:00Z").await;
    let (code, _) = op.wait_exit(LONG).await;
    assert_eq!(code, Some(137), "the fault fired");
    assert_eq!(status(&ns, "once").await.last_handled_run_request, None, "status never recorded the request");
    assert_eq!(loop_jobs(&ns, "once").await.len(), 1);

    // The next instance adopts that Job as the request's loop, and starts no second one.
    let mut op2 = Operator::start(&ns.name, &[]);
    let st =
        wait_status(&ns, "once", "the request recorded", |st| st.last_handled_run_request.is_some() && st.last_finished_loop == 1).await;
    assert_eq!((st.loops_started, st.manual_loops), (1, 1));
    // And across a plain restart too.
    op2.signal("KILL");
    op2.wait_exit(Duration::from_secs(10)).await;
    let op3 = Operator::start(&ns.name, &[]);
    reconciled_since(&op3, &ns, &["once"], jiff::Timestamp::now()).await;
    let jobs = loop_jobs(&ns, "once").await;
    assert_eq!(jobs.len(), 1, "{:?}", jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>());
    assert_eq!(status(&ns, "once").await.phase, Some(Phase::Suspended));
    // A new value is a new request.
    request_run(&ns, "once", "2026-11-25T10:05:00Z").await;
    let jobs = wait_jobs(&ns, "once", 2).await;
    assert_eq!(jobs[1].annotations()["loops.dev/run-request"], "2026-11-25T10:05:00Z");
}

/// How and when a Job ended: its completionTime when it completed, else its condition's time.
fn job_end(j: &Job) -> Option<(bool, jiff::Timestamp)> {
    let (ok, at) = finished(j)?;
    let completion = j.status.as_ref().and_then(|s| s.completion_time.as_ref()).map(|t| t.0);
    Some((ok, if ok { completion.unwrap_or(at) } else { at }))
}

/// What a user reads off a loop's Job while it is there.
#[derive(Clone, Debug, PartialEq)]
struct SeenJob {
    name: String,
    due: jiff::Timestamp,
    start: jiff::Timestamp,
    trigger: String,
    end: Option<(bool, jiff::Timestamp)>,
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn status_history_matches_the_jobs_after_the_history_limit_deleted_them() {
    let ns = setup("history").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("kept", "4s", "echo loop $LOOP_NUMBER; [ $LOOP_NUMBER != 3 ] && [ $LOOP_NUMBER != 8 ]");
    v["spec"]["successfulJobsHistoryLimit"] = json!(1);
    v["spec"]["failedJobsHistoryLimit"] = json!(1);
    create_ls(&ns, v).await.unwrap();
    // Watch every Job while it exists (each lives about one interval past its end).
    let mut seen: std::collections::BTreeMap<i64, SeenJob> = Default::default();
    let mut requested = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        for j in loop_jobs(&ns, "kept").await {
            let s = SeenJob {
                name: j.name_any(),
                due: ann_time(&j, "loops.dev/scheduled-time"),
                start: start_time(&j),
                trigger: trigger(&j).to_string(),
                end: job_end(&j),
            };
            seen.insert(loop_number(&j), s);
        }
        // One loop in the middle is run by hand.
        if !requested && seen.len() >= 5 {
            request_run(&ns, "kept", "mid").await;
            requested = true;
        }
        let st = status(&ns, "kept").await;
        if st.last_finished_loop >= 12 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "12 loops did not finish in time: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = status(&ns, "kept").await;
    let left = loop_jobs(&ns, "kept").await.into_iter().filter(|j| j.metadata.deletion_timestamp.is_none()).count();
    println!("{} Jobs left of {} loops; history:", left, st.loops_started);
    for r in &st.history {
        println!(
            "  {} {} {:?} due {} start {} end {:?} {:?}s {:?} {:?} overran={}",
            r.r#loop,
            r.job_name,
            r.trigger,
            r.due_time,
            r.start_time,
            r.end_time.map(|t| t.to_string()),
            r.duration_seconds,
            r.result,
            r.reason,
            r.overran
        );
    }
    assert!(left <= 3, "the history limits deleted the old Jobs: {left} left");
    assert_eq!(st.history.len(), 10);
    let numbers: Vec<i64> = st.history.iter().map(|r| r.r#loop).collect();
    let newest = st.loops_started;
    assert_eq!(numbers, ((newest - 9)..=newest).rev().collect::<Vec<_>>(), "the last 10 loops, newest first");
    let mut manual = 0;
    for r in &st.history {
        let j = seen.get(&r.r#loop).unwrap_or_else(|| panic!("loop {} was never seen as a Job", r.r#loop));
        assert_eq!(
            (r.job_name.as_str(), r.due_time.0, r.start_time.0, r.trigger.as_str()),
            (j.name.as_str(), j.due, j.start, j.trigger.as_str()),
            "loop {}",
            r.r#loop
        );
        manual += usize::from(j.trigger == "Manual");
        let Some((ok, end)) = j.end else {
            assert_eq!(r.result, loopservice_operator::crd::LoopResult::Running, "loop {}", r.r#loop);
            continue;
        };
        let want = if ok { loopservice_operator::crd::LoopResult::Succeeded } else { loopservice_operator::crd::LoopResult::Failed };
        assert_eq!(r.result, want, "loop {}", r.r#loop);
        // The Job's end is stamped to the second; before the start, it is read as the start.
        assert_eq!(r.end_time.map(|t| t.0), Some(end.max(j.start)), "loop {}", r.r#loop);
        let took = secs(j.start, end.max(j.start));
        assert!((r.duration_seconds.unwrap() - took).abs() < 0.002, "loop {}: {:?} vs {took}", r.r#loop, r.duration_seconds);
        assert_eq!(r.overran, took > 4.0, "loop {}", r.r#loop);
        if !ok {
            assert_eq!(r.reason.as_deref(), Some("JobFailed"), "loop {}", r.r#loop);
            assert!(r.message.as_deref().unwrap_or("").contains("exited with code 1"), "{:?}", r.message);
        }
    }
    assert_eq!(manual, 1, "the requested loop is in the history as Manual");
    assert!(st.history.iter().any(|r| r.r#loop == 8 && r.result == loopservice_operator::crd::LoopResult::Failed));
}

/// The exit code and termination message of a Job's loop container (what it wrote to
/// /dev/termination-log).
async fn termination_message(ns: &TestNs, job: &str) -> Option<(i32, String)> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let list = pods.list(&kube::api::ListParams::default().labels(&format!("job-name={job}"))).await.ok()?;
    list.items.iter().find_map(|p| {
        let cs = p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == "loop")?;
        let t = cs.state.as_ref()?.terminated.as_ref()?;
        Some((t.exit_code, t.message.clone().unwrap_or_default()))
    })
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn each_loop_sees_the_previous_result_and_the_last_success_time() {
    let ns = setup("prevresult").await;
    let _op = Operator::start(&ns.name, &[]);
    // Loops 2 and 3 fail; each loop writes what it was given as its termination message.
    let script = r#"echo "previous=$LOOP_PREVIOUS_RESULT since=$LOOP_LAST_SUCCESS_TIME scheduled=$LOOP_SCHEDULED_TIME" > /dev/termination-log; [ $LOOP_NUMBER != 2 ] && [ $LOOP_NUMBER != 3 ]"#;
    create_ls(&ns, ls("incremental", "4s", script)).await.unwrap();
    wait_status(&ns, "incremental", "4 loops ended", |st| st.last_finished_loop >= 4).await;
    let jobs = loop_jobs(&ns, "incremental").await;
    let mut seen = vec![];
    for j in &jobs[..4] {
        let name = j.name_any();
        let (code, message) = wait_for("the loop's termination message", LONG, || termination_message(&ns, &name)).await;
        println!("{} exited {code}: {}", j.name_any(), message.trim());
        seen.push(message.trim().to_string());
    }
    let due = |n: usize| jobs[n - 1].annotations()["loops.dev/scheduled-time"].clone();
    assert_eq!(seen[0], format!("previous=None since= scheduled={}", due(1)));
    assert_eq!(seen[1], format!("previous=Succeeded since={} scheduled={}", due(1), due(2)));
    assert_eq!(seen[2], format!("previous=Failed since={} scheduled={}", due(1), due(3)), "a failure does not move the last success");
    assert_eq!(seen[3], format!("previous=Failed since={} scheduled={}", due(1), due(4)));
    let st = wait_status(&ns, "incremental", "loop 5 ended", |st| st.last_finished_loop >= 5).await;
    let fifth_job = loop_job_name(&ns, "incremental", 5).await;
    let (_, fifth) = wait_for("loop 5's termination message", LONG, || termination_message(&ns, &fifth_job)).await;
    assert_eq!(
        fifth.trim(),
        format!(
            "previous=Succeeded since={} scheduled={}",
            due(4),
            loop_jobs(&ns, "incremental").await[4].annotations()["loops.dev/scheduled-time"]
        )
    );
    assert!(st.last_success_scheduled_time.is_some());
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn jitter_delays_each_start_within_bounds_and_does_not_drift_over_10_loops() {
    let ns = setup("jitter").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("spread", "5s", "echo hi");
    v["spec"]["jitter"] = json!("2s");
    create_ls(&ns, v).await.unwrap();
    let jobs = wait_for("10 loops of spread", Duration::from_secs(120), || async {
        let jobs = loop_jobs(&ns, "spread").await;
        (jobs.len() >= 10).then_some(jobs)
    })
    .await;
    let created = ns.loopservices().get("spread").await.unwrap().metadata.creation_timestamp.unwrap().0;
    let mut offsets = vec![];
    for j in &jobs[..10] {
        let due = ann_time(j, "loops.dev/scheduled-time");
        let jittered = ann_time(j, "loops.dev/jittered-time");
        let offset = secs(due, jittered);
        let late = secs(jittered, start_time(j));
        assert!((0.0..2.0).contains(&offset), "{}: offset {offset:.3}s", j.name_any());
        assert!((0.0..1.0).contains(&late), "{}: created {late:.3}s after its jittered time", j.name_any());
        offsets.push(offset);
    }
    let dues: Vec<jiff::Timestamp> = jobs[..10].iter().map(|j| ann_time(j, "loops.dev/scheduled-time")).collect();
    let gaps: Vec<f64> = dues.windows(2).map(|w| secs(w[0], w[1])).collect();
    println!("jitter offsets of 10 loops (s): {:?}", offsets.iter().map(|o| (o * 1000.0).round() / 1000.0).collect::<Vec<_>>());
    println!("due-time gaps (s): {:?}", gaps.iter().map(|g| (g * 1000.0).round() / 1000.0).collect::<Vec<_>>());
    let span = secs(dues[0], dues[9]);
    println!("loop 1 due {:.3}s after creation; loop 10 due {span:.3}s after loop 1 (9 intervals = 45 s)", secs(created, dues[0]));
    // Loop 1 is due at creation (to the second the API server stamps it). Loop 2 is anchored
    // on when loop 1 really started, less its jitter (start-anchored: an operator that was
    // slow to start loop 1 moves the anchor by as much); each later loop one interval after
    // the previous one's due time: the offsets do not add up.
    assert!(secs(created, dues[0]).abs() < 1.0);
    let late_first = secs(ann_time(&jobs[0], "loops.dev/jittered-time"), start_time(&jobs[0]));
    assert!((gaps[0] - 5.0 - late_first).abs() < 0.5, "loop 2 due {:.3}s after loop 1, which started {late_first:.3}s late", gaps[0]);
    for g in &gaps[1..] {
        assert!((g - 5.0).abs() < 0.5, "due times {g:.3}s apart: {gaps:?}");
    }
    assert!((span - 45.0 - late_first).abs() < 1.0, "drifted: {span:.3}s");
    // The offsets differ from loop to loop.
    let distinct: std::collections::BTreeSet<i64> = offsets.iter().map(|o| (o * 1000.0) as i64).collect();
    assert!(distinct.len() >= 5, "{offsets:?}");
    // The variable is the due time.
    let st = status(&ns, "spread").await;
    assert!(st.history.iter().all(|r| r.start_time.0 >= r.due_time.0));
}

/// Milliseconds past the latest multiple of 10 s since the Unix epoch.
fn past_ten(t: jiff::Timestamp) -> i64 {
    t.as_millisecond().rem_euclid(10_000)
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn aligned_loops_start_on_the_grid_and_a_run_request_does_not_move_it() {
    let ns = setup("aligned").await;
    let _op = Operator::start(&ns.name, &[]);
    // Interval 10 s, offset 3 s: due at :03, :13, :23, ... of every minute.
    let mut v = ls("grid", "10s", "echo hi");
    v["spec"]["alignment"] = json!({"offset": "3s"});
    wait_served(&ns, &v, "spec.alignment", |ls| ls.spec.alignment.is_some()).await;
    create_ls(&ns, v).await.unwrap();
    let stored = ns.loopservices().get("grid").await.unwrap();
    assert!(stored.spec.alignment.is_some(), "the API server dropped spec.alignment: its CRD is not this one");
    let created = stored.metadata.creation_timestamp.unwrap().0;
    let jobs = wait_for("3 loops of grid, ended", LONG, || async {
        let jobs = loop_jobs(&ns, "grid").await;
        (jobs.len() >= 3 && finished(&jobs[2]).is_some()).then_some(jobs)
    })
    .await;
    let dues: Vec<jiff::Timestamp> = jobs[..3].iter().map(|j| ann_time(j, "loops.dev/scheduled-time")).collect();
    for (i, (j, due)) in jobs[..3].iter().zip(&dues).enumerate() {
        let created = j.metadata.creation_timestamp.as_ref().unwrap().0;
        let late = secs(*due, start_time(j));
        let (_, end) = finished(j).unwrap();
        println!("{}: due {due}, started {late:.3}s later, created {created}, ended {end}", j.name_any());
        assert_eq!(past_ten(*due), 3_000, "{}: due {due}", j.name_any());
        assert!((0.0..1.0).contains(&late), "{}: started {late:.3}s after its due time", j.name_any());
        // The API server stamps the creation to the second.
        assert!(secs(*due, created).abs() < 1.0, "{}: created {created}, due {due}", j.name_any());
        // The next is due one interval later, or at the first grid point after the end when
        // the loop overran (its end is stamped to the second).
        if let Some(next) = dues.get(i + 1) {
            let gap = secs(*due, *next);
            let overran = secs(*due, end) > 9.0;
            assert!(
                gap == 10.0 || (overran && gap % 10.0 == 0.0 && secs(end, *next) < 11.0),
                "loop {} due {gap}s after the previous",
                i + 2
            );
        }
    }
    // The first loop waited for the first grid point after the creation (stamped to the second).
    assert!((0.0..11.0).contains(&secs(created, dues[0])), "loop 1 due {:.3}s after the creation", secs(created, dues[0]));

    // A run request starts a loop at once, off the grid; the next scheduled loop is the first
    // grid point at least one interval after its start.
    wait_for("loop 3 to end", LONG, || async { finished(&loop_jobs(&ns, "grid").await[2]) }).await;
    let asked = request_run(&ns, "grid", "now").await;
    // Found by their trigger: a scheduled loop may start just before the request's.
    let (manual, next) = wait_for("the request's loop and a scheduled loop after it", LONG, || async {
        let jobs = loop_jobs(&ns, "grid").await;
        let i = jobs.iter().position(|j| trigger(j) == "Manual")?;
        let next = jobs[i + 1..].iter().find(|j| trigger(j) == "Scheduled")?;
        Some((start_time(&jobs[i]), ann_time(next, "loops.dev/scheduled-time")))
    })
    .await;
    assert!(secs(asked, manual) < 2.0, "the request's loop started {:.3}s after it", secs(asked, manual));
    println!("the request's loop started {manual}; the next scheduled loop is due {next}, {:.3}s later", secs(manual, next));
    assert_eq!(past_ten(next), 3_000);
    // A tenth of the interval is the slack for a start late on its grid point.
    assert!((9.0..20.0).contains(&secs(manual, next)), "due {:.3}s after the request's loop started", secs(manual, next));
    let st = wait_status(&ns, "grid", "a next run time after 5 loops", |st| st.last_finished_loop >= 5 && st.next_run_time.is_some()).await;
    assert_eq!(past_ten(st.next_run_time.unwrap().0), 3_000, "status.nextRunTime {:?}", st.next_run_time);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn failure_backoff_grows_after_each_failure_and_a_success_resets_it() {
    let ns = setup("backoff").await;
    let _op = Operator::start(&ns.name, &[]);
    // Every loop fails but loop 5.
    let mut v = ls("flaky", "4s", "[ $LOOP_NUMBER = 5 ]");
    v["spec"]["failureBackoff"] = json!({"initial": "4s", "max": "12s"});
    create_ls(&ns, v).await.unwrap();
    let jobs = wait_for("7 loops of flaky, 6 ended", Duration::from_secs(150), || async {
        let jobs = loop_jobs(&ns, "flaky").await;
        (jobs.len() >= 7 && jobs[..6].iter().all(|j| finished(j).is_some())).then_some(jobs)
    })
    .await;
    let mut after_end = vec![];
    for w in jobs[..7].windows(2) {
        let (ok, end) = finished(&w[0]).unwrap();
        assert_eq!(ok, loop_number(&w[0]) == 5, "{}", w[0].name_any());
        after_end.push((secs(end, start_time(&w[1])) * 1000.0).round() / 1000.0);
    }
    println!("next start after each loop's end (s), loops 1-6 (loop 5 succeeded): {after_end:?}");
    // After k failures in a row: at least 4, 8, 12 (max), 12 s after the failed end. The end
    // is stamped to the second, so the wait measured from it is at most ~1 s longer.
    for (i, want) in [(0, 4.0), (1, 8.0), (2, 12.0), (3, 12.0), (5, 4.0)] {
        let got = after_end[i];
        assert!(got >= want - 0.05 && got < want + 1.2, "after loop {}: {got}s, want {want}s", i + 1);
    }
    // After the success, the interval again: loop 6 one interval after loop 5's start.
    let gap = secs(start_time(&jobs[4]), start_time(&jobs[5]));
    println!("loop 6 started {gap:.3}s after loop 5 (succeeded) started");
    assert!((gap - 4.0).abs() < 0.5, "{gap:.3}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn suspends_itself_after_n_failures_and_resuming_resets_the_count() {
    let ns = setup("autosusp").await;
    let op = Operator::start(&ns.name, &[]);
    let mut v = ls("fragile", "4s", "echo cannot reach the database; exit 1");
    v["spec"]["suspendAfterFailures"] = json!(2);
    create_ls(&ns, v).await.unwrap();
    let st = wait_status(&ns, "fragile", "suspended after 2 failures", |st| st.failure_suspension.as_ref().is_some_and(|s| s.active)).await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    println!("Ready: {} {}: {}", ready.status, ready.reason, ready.message);
    assert_eq!((st.phase, ready.status.as_str(), ready.reason.as_str()), (Some(Phase::Suspended), "False", "SuspendedAfterFailures"));
    assert_eq!((st.loops_failed, st.consecutive_failures), (2, 2));
    // The Event follows the status write that it reports.
    suspension_events(&ns, 1).await;
    // Nothing more starts once the next loop would be due and the operator has looked since,
    // and the user's spec is untouched.
    reconciled_since(&op, &ns, &["fragile"], next_due(&st, Duration::from_secs(4))).await;
    assert_eq!(loop_jobs(&ns, "fragile").await.len(), 2, "no loop while suspended");
    let evs = events(&ns, "fragile").await;
    assert_eq!(evs.iter().filter(|(t, r, _)| t == "Warning" && r == "SuspendedAfterFailures").count(), 1, "{evs:?}");
    let obj = ns.loopservices().get("fragile").await.unwrap();
    assert_eq!((obj.spec.suspend, obj.metadata.generation), (None, Some(1)), "the operator did not write the spec");

    // The user resumes by writing suspend: false: two more loops (the count starts again),
    // then suspended again.
    let patch = json!({"spec": {"suspend": false}});
    ns.loopservices().patch("fragile", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let st = wait_status(&ns, "fragile", "suspended again after 2 more failures", |st| {
        st.failure_suspension.as_ref().is_some_and(|s| s.active && s.generation == 2)
    })
    .await;
    println!("after the resume: {} loops failed, suspended after loop {}", st.loops_failed, st.failure_suspension.as_ref().unwrap().r#loop);
    assert_eq!((st.loops_failed, st.consecutive_failures, st.failure_suspension.as_ref().unwrap().failures), (4, 4, 2));
    assert_eq!(loop_jobs(&ns, "fragile").await.len(), 4);
    let evs = suspension_events(&ns, 2).await;
    assert_eq!(evs.iter().filter(|(t, r, _)| t == "Warning" && r == "SuspendedAfterFailures").count(), 2, "{evs:?}");
}

/// The LoopService `fragile`'s Events once `n` of them say it suspended itself.
async fn suspension_events(ns: &TestNs, n: usize) -> Vec<(String, String, String)> {
    wait_for(&format!("{n} SuspendedAfterFailures Event(s)"), Duration::from_secs(10), || async {
        let evs = events(ns, "fragile").await;
        (evs.iter().filter(|(t, r, _)| t == "Warning" && r == "SuspendedAfterFailures").count() >= n).then_some(evs)
    })
    .await
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn kubectl_explain_documents_the_controls() {
    let ns = setup("explaincontrols").await;
    let _ = &ns;
    let explain = |what: &str| {
        let out = std::process::Command::new("kubectl").args(["explain", what]).output().unwrap();
        // Words only: kubectl wraps long descriptions.
        String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let spec = wait_for("kubectl explain loopservice.spec with the controls", LONG, || async {
        let text = explain("loopservice.spec");
        text.contains("suspendAfterFailures").then_some(text)
    })
    .await;
    for (field, words) in [
        ("jitter", "does not accumulate"),
        ("alignment", "Unix epoch"),
        ("failureBackoff", "after k failed loops in a row"),
        ("suspendAfterFailures", "SuspendedAfterFailures"),
    ] {
        assert!(spec.contains(field) && spec.contains(words), "{field}: {spec}");
    }
    let backoff = explain("loopservice.spec.failureBackoff");
    assert!(backoff.contains("initial") && backoff.contains("max") && backoff.contains("doubles"), "{backoff}");
    let status = explain("loopservice.status");
    for field in ["history", "lastHandledRunRequest", "manualLoops", "lastSuccessScheduledTime", "failureSuspension"] {
        assert!(status.contains(field), "{field}: {status}");
    }
    let history = explain("loopservice.status.history");
    for field in
        ["loop", "jobName", "trigger", "dueTime", "startTime", "endTime", "durationSeconds", "result", "reason", "message", "overran"]
    {
        assert!(history.contains(field), "{field}: {history}");
    }
    assert!(explain("loopservice.status.failureSuspension").contains("any change to the spec resumes it"));
    assert!(explain("loopservice.spec.env").contains("LOOP_LAST_SUCCESS_TIME"));
}
