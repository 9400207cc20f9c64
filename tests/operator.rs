//! The operator against the local cluster: real API server, real Jobs, real busybox containers.

mod support;

use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use loopservice_operator::crd::Phase;
use serde_json::json;
use support::*;

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_quick_loop_starts_its_jobs_one_interval_apart() {
    let ns = setup("spacing").await;
    // Per-loop Events are opt-in (the default publishes only what a person acts on).
    let _op = Operator::start(&ns.name, &[("LOOP_EVENTS", "all")]);
    create_ls(&ns, ls("tick", "5s", "echo tick $LOOP_NUMBER")).await.unwrap();
    let jobs = wait_jobs(&ns, "tick", 4).await;
    let starts: Vec<_> = jobs.iter().map(start_time).collect();
    let gaps: Vec<f64> = starts.windows(2).map(|w| secs(w[0], w[1])).collect();
    let errors_ms: Vec<f64> = gaps.iter().map(|g| ((g - 5.0) * 1000.0).round()).collect();
    println!("start spacing of a 5s loop, error in ms: {errors_ms:?}");
    for (i, g) in gaps.iter().enumerate() {
        assert!((g - 5.0).abs() < 1.0, "loop {} started {g:.3}s after loop {}", i + 2, i + 1);
    }
    // Each Job was created when its loop was due (the scheduled-time annotation).
    for j in &jobs[1..] {
        let late = secs(ann_time(j, "loops.dev/scheduled-time"), start_time(j));
        assert!((0.0..1.0).contains(&late), "{} created {late:.3}s after it was due", j.name_any());
    }
    // Every loop is one Job, numbered 1, 2, 3, ... and the first started at once.
    let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
    let created = ns.loopservices().get("tick").await.unwrap().metadata.creation_timestamp.unwrap().0;
    assert!(secs(created, starts[0]) < 2.0, "first loop started {}s after creation", secs(created, starts[0]));

    let st = wait_status(&ns, "tick", "3 successes", |st| st.loops_succeeded >= 3).await;
    assert_eq!(st.loops_failed, 0);
    assert!(st.last_start_time.is_some() && st.last_success_time.is_some());
    assert!(st.last_start_time.unwrap().format().contains('.'), "timestamps carry milliseconds");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    // What `kubectl get loopservices` shows: every column filled in once it is waiting.
    let row = wait_for("a kubectl row with every column", LONG, || async {
        let out = std::process::Command::new("kubectl").args(["get", "loopservices", "-n", &ns.name]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = text.lines();
        let header = lines.next()?.to_string();
        let row = lines.next()?.to_string();
        // A missing value shows as blank or `<none>`: wait for a row with all nine.
        let full = row.split_whitespace().count() == 9 && !row.contains("<none>") && !row.contains("<invalid>");
        full.then_some((header, row))
    })
    .await;
    println!("{}\n{}", row.0, row.1);
    let cols: Vec<&str> = row.0.split("  ").map(str::trim).filter(|s| !s.is_empty()).collect();
    assert_eq!(cols, ["NAME", "INTERVAL", "PHASE", "LOOPS", "FAILED", "OVERRUNS", "LAST RUN", "NEXT RUN", "AGE"]);

    let mut started = vec![];
    for n in 1..=3 {
        started.push(format!("started loop {n} as Job {}", loop_job_name(&ns, "tick", n).await));
    }
    events_where(&ns, "tick", "a LoopStarted Event naming the Job of each of loops 1 to 3, and a LoopSucceeded", |evs| {
        started.iter().all(|s| evs.iter().any(|(t, r, m)| t == "Normal" && r == "LoopStarted" && m == s))
            && evs.iter().any(|(t, r, _)| t == "Normal" && r == "LoopSucceeded")
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn an_overrun_is_recorded_and_the_next_loop_starts_right_after_it() {
    let ns = setup("overrun").await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("slow", "2s", "sleep 4")).await.unwrap();
    let jobs = wait_jobs(&ns, "slow", 3).await;
    let (_, end1) = wait_for("loop 1 to end", LONG, || async { finished(&loop_jobs(&ns, "slow").await[0]) }).await;
    let (s1, s2) = (start_time(&jobs[0]), start_time(&jobs[1]));
    println!("loop 1 started {s1}, ended {end1} (to the second); loop 2 started {s2}");
    assert!(secs(s1, s2) > 3.5, "loop 2 waited for loop 1 to end: {:.3}s", secs(s1, s2));
    // The Job's end is stamped to the second, so the true end lies in [end1, end1 + 1s).
    let after_end = secs(end1, s2);
    assert!((0.0..3.0).contains(&after_end), "loop 2 started {after_end:.3}s after loop 1 ended");

    let st = wait_status(&ns, "slow", "an overrun in status", |st| st.overruns >= 1).await;
    let o = st.last_overrun.unwrap();
    assert!(o.duration_seconds > 2.0 && o.interval_seconds == 2.0, "{o:?}");
    assert!(o.message.contains("seconds, which is longer than its interval of 2 seconds"), "{}", o.message);
    let c = st.conditions.iter().find(|c| c.type_ == "Overrun").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "LoopOverran"));
    let evs = events_where(&ns, "slow", "a LoopOverrun Warning", |evs| {
        evs.iter().any(|(t, r, n)| t == "Warning" && r == "LoopOverrun" && n.contains("longer than its interval"))
    })
    .await;
    // By default a loop that merely starts or succeeds is no Event: status and metrics count it.
    assert!(!evs.iter().any(|(_, r, _)| r == "LoopStarted" || r == "LoopSucceeded"), "{evs:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_failing_loop_records_exit_code_and_message_and_goes_on() {
    let ns = setup("fail").await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("broken", "2s", "echo disk is full; exit 1")).await.unwrap();
    let st = wait_status(&ns, "broken", "two failed loops", |st| st.loops_failed >= 2).await;
    let e = st.last_error.clone().unwrap();
    println!("lastError: {e:?}");
    assert_eq!(e.reason, "JobFailed");
    assert!(e.message.contains("exited with code 1"), "{}", e.message);
    assert!(e.message.contains("disk is full"), "{}", e.message);
    assert!(st.consecutive_failures >= 2);
    let c = st.conditions.iter().find(|c| c.type_ == "Failing").unwrap();
    assert_eq!(c.status, "True");
    assert!(loop_jobs(&ns, "broken").await.len() >= 2, "the loop went on after a failure");
    events_where(&ns, "broken", "a LoopFailed Warning with the exit code", |evs| {
        evs.iter().any(|(t, r, n)| t == "Warning" && r == "LoopFailed" && n.contains("code 1"))
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn loops_3_stops_after_exactly_three_jobs() {
    let ns = setup("limit").await;
    let op = Operator::start(&ns.name, &[]);
    let mut v = ls("three", "1s", "echo once");
    v["spec"]["loops"] = json!(3);
    create_ls(&ns, v).await.unwrap();
    let st = wait_status(&ns, "three", "phase Finished", |st| st.phase == Some(Phase::Finished)).await;
    assert_eq!((st.loops_started, st.loops_succeeded, st.loops_failed), (3, 3, 0));
    assert_eq!(st.next_run_time, None);
    // Past the time a fourth loop would be due, and the operator has looked since.
    reconciled_since(&op, &ns, &["three"], next_due(&st, Duration::from_secs(1))).await;
    let jobs = loop_jobs(&ns, "three").await;
    assert_eq!(jobs.len(), 3, "{:?}", jobs.iter().map(|j| j.name_any()).collect::<Vec<_>>());
    assert_eq!(status(&ns, "three").await.loops_started, 3);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn suspend_pauses_and_resume_goes_on_without_losing_counts() {
    let ns = setup("suspend").await;
    let op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("pausable", "2s", "echo hi")).await.unwrap();
    wait_status(&ns, "pausable", "2 successes", |st| st.loops_succeeded >= 2).await;
    let patch = |s: bool| json!({"spec": {"suspend": s}});
    ns.loopservices().patch("pausable", &PatchParams::default(), &Patch::Merge(&patch(true))).await.unwrap();
    let st = wait_status(&ns, "pausable", "phase Suspended", |st| st.phase == Some(Phase::Suspended)).await;
    let paused_at = loop_jobs(&ns, "pausable").await.len();
    // Past the time the next loop would be due, and the operator has looked since.
    reconciled_since(&op, &ns, &["pausable"], next_due(&st, Duration::from_secs(2))).await;
    assert_eq!(loop_jobs(&ns, "pausable").await.len(), paused_at, "no loop starts while suspended");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Suspended"));

    ns.loopservices().patch("pausable", &PatchParams::default(), &Patch::Merge(&patch(false))).await.unwrap();
    let jobs = wait_jobs(&ns, "pausable", paused_at + 2).await;
    let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "numbering goes on after resume");
    let after = status(&ns, "pausable").await;
    assert!(after.loops_started > st.loops_started && after.loops_succeeded >= st.loops_succeeded);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn sigkill_mid_loop_and_restart_makes_no_duplicate_and_loses_no_loop() {
    let ns = setup("kill").await;
    let mut op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("sturdy", "2s", "sleep 3")).await.unwrap();
    wait_jobs(&ns, "sturdy", 2).await;
    op.signal("KILL");
    op.wait_exit(Duration::from_secs(10)).await;
    // Loop 2 ends while no operator runs.
    wait_for("loop 2's Job to end with no operator running", LONG, || async {
        let jobs = loop_jobs(&ns, "sturdy").await;
        finished(jobs.iter().find(|j| loop_number(j) == 2)?)
    })
    .await;
    let _op2 = Operator::start(&ns.name, &[]);
    let st = wait_status(&ns, "sturdy", "loop 4 started and 3 ended", |st| st.loops_started >= 4 && st.last_finished_loop >= 3).await;
    let jobs = loop_jobs(&ns, "sturdy").await;
    let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "one Job per loop, none skipped");
    assert_eq!(st.loops_succeeded + st.loops_failed, st.last_finished_loop, "every finished loop counted once");
    assert_eq!(st.loops_failed, 0);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn killed_between_job_create_and_status_write_adopts_the_job() {
    let ns = setup("adopt").await;
    let mut op = Operator::start(&ns.name, &[("LOOPSERVICE_FAULT", "exit-after-job-create")]);
    create_ls(&ns, ls("adoptee", "3s", "echo hi")).await.unwrap();
    let (code, _) = op.wait_exit(LONG).await;
    assert_eq!(code, Some(137), "the fault fired");
    let st = status(&ns, "adoptee").await;
    assert_eq!(st.loops_started, 0, "status never recorded the Job");
    assert_eq!(loop_jobs(&ns, "adoptee").await.len(), 1);

    let _op2 = Operator::start(&ns.name, &[]);
    let jobs = wait_jobs(&ns, "adoptee", 2).await;
    let gap = secs(start_time(&jobs[0]), start_time(&jobs[1]));
    assert_eq!(jobs.iter().map(loop_number).collect::<Vec<_>>(), [1, 2]);
    assert!(gap > 2.5, "loop 2 came one interval after the adopted loop 1, not as a duplicate: {gap:.3}s");
    events_where(&ns, "adoptee", "a LoopAdopted Event", |evs| evs.iter().any(|(_, r, _)| r == "LoopAdopted")).await;
    let st = wait_status(&ns, "adoptee", "loop 1 recorded", |st| st.last_finished_loop >= 1).await;
    assert!(st.loops_succeeded >= 1);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn sigterm_drains_writes_status_and_exits_zero() {
    let ns = setup("term").await;
    let mut op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("graceful", "2s", "sleep 1")).await.unwrap();
    wait_status(&ns, "graceful", "loop 1 in status", |st| st.loops_started >= 1).await;
    assert_eq!(op.get("/readyz").await.as_deref(), Some("ready"));
    assert_eq!(op.get("/healthz").await.as_deref(), Some("ok"));
    let metrics = op.get("/metrics").await.unwrap_or_default();
    assert!(metrics.contains("loopservice_loops_started_total{namespace="), "{metrics}");
    op.signal("TERM");
    let (code, took) = op.wait_exit(Duration::from_secs(30)).await;
    println!("SIGTERM to exit: {} ms", took.as_millis());
    assert_eq!(code, Some(0), "log:\n{}", op.log_text());
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(op.log_text().contains("drained"), "{}", op.log_text());
    // The Job keeps running and the next instance records how it ended.
    let started = status(&ns, "graceful").await.loops_started;
    let _op2 = Operator::start(&ns.name, &[]);
    wait_for("the next instance to record loop ends", LONG, || async {
        (status(&ns, "graceful").await.last_finished_loop >= started).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn after_downtime_one_loop_starts_at_once_and_no_burst_follows() {
    let ns = setup("down").await;
    let mut op = Operator::start(&ns.name, &[]);
    // A loop takes 1-3 s here (Kubernetes 1.31+ marks a Job Complete once its Pod has
    // stopped), so a 4 s interval keeps every loop on time.
    create_ls(&ns, ls("patient", "4s", "echo hi")).await.unwrap();
    wait_jobs(&ns, "patient", 2).await;
    op.signal("TERM");
    op.wait_exit(Duration::from_secs(30)).await;
    let jobs = loop_jobs(&ns, "patient").await;
    let before = jobs.len();
    // Three loops come due with no operator: the clock passes the last start plus three
    // intervals (the first of those due times is after the exit, or the operator would have
    // started that loop).
    wait_until(start_time(jobs.last().unwrap()) + jiff::SignedDuration::from_secs(12)).await;
    let restarted = jiff::Timestamp::now();
    let op2 = Operator::start(&ns.name, &[]);
    let jobs = wait_jobs(&ns, "patient", before + 1).await;
    let first = start_time(&jobs[before]);
    assert!(secs(restarted, first) < 5.0, "the missed loop started {:.3}s after restart", secs(restarted, first));
    // The operator has looked again since it started the missed loop.
    wait_status(&ns, "patient", "the missed loop in status", |st| st.loops_started as usize > before).await;
    reconciled_since(&op2, &ns, &["patient"], jiff::Timestamp::now()).await;
    assert_eq!(loop_jobs(&ns, "patient").await.len(), before + 1, "no catch-up burst");
    let jobs = wait_jobs(&ns, "patient", before + 2).await;
    let gap = secs(first, start_time(&jobs[before + 1]));
    assert!((gap - 4.0).abs() < 1.0, "the loop after it came one interval later: {gap:.3}s");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn timeout_fails_a_loop_that_runs_too_long() {
    let ns = setup("timeout").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("stuck", "3s", "sleep 60");
    v["spec"]["timeout"] = json!("2s");
    create_ls(&ns, v).await.unwrap();
    let st =
        wait_status(&ns, "stuck", "a DeadlineExceeded loop", |st| st.last_error.as_ref().is_some_and(|e| e.reason == "DeadlineExceeded"))
            .await;
    println!("lastError: {:?}", st.last_error);
    assert!(st.loops_failed >= 1);
    assert_eq!(st.last_error.unwrap().r#loop, 1);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_job_the_api_server_would_refuse_is_invalid_spec_with_its_message_and_never_runs() {
    let ns = setup("refused").await;
    let op = Operator::start(&ns.name, &[]);
    let mut v = ls("refused", "2s", "echo hi");
    // `=` is refused in a variable's name by every Kubernetes version (1.34 allows spaces).
    v["spec"]["env"] = json!([{"name": "A=B", "value": "x"}]);
    create_ls(&ns, v).await.unwrap();
    let st = wait_status(&ns, "refused", "InvalidSpec", |st| st.phase == Some(Phase::Invalid)).await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    println!("Ready: {} {}: {}", ready.status, ready.reason, ready.message);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("env[") && ready.message.contains("A=B"), "{}", ready.message);
    // Checked before the first loop: none started, none failed, however often the operator looks.
    reconciled_since(&op, &ns, &["refused"], jiff::Timestamp::now()).await;
    let st = status(&ns, "refused").await;
    assert_eq!((st.loops_started, st.loops_failed), (0, 0));
    assert!(loop_jobs(&ns, "refused").await.is_empty());
    events_where(&ns, "refused", "an InvalidSpec Warning", |evs| evs.iter().any(|(t, r, _)| t == "Warning" && r == "InvalidSpec")).await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn invalid_specs_are_refused_by_the_api_server_with_a_readable_message() {
    // What only CEL rules refuse (a missing image, say) is in tests/template.rs, with the
    // InvalidSpec that catches it on API servers without CEL.
    let ns = setup("invalid").await;
    let cases = [
        (json!({"interval": "500ms", "image": "busybox:1.36"}), "spec.interval"),
        (json!({"interval": "0s", "image": "busybox:1.36"}), "spec.interval"),
        (json!({"interval": "every minute", "image": "busybox:1.36"}), "spec.interval"),
        (json!({"interval": "1.5s", "image": "busybox:1.36"}), "spec.interval"),
        (json!({"image": "busybox:1.36"}), "spec.interval"),
        (json!({"interval": "30s", "image": ""}), "spec.image"),
        (json!({"interval": "30s", "image": "busybox:1.36", "loops": 0}), "spec.loops"),
        (json!({"interval": "30s", "image": "busybox:1.36", "timeout": "0s"}), "spec.timeout"),
        (json!({"interval": "30s", "image": "busybox:1.36", "imagePullPolicy": "Sometimes"}), "spec.imagePullPolicy"),
    ];
    for (i, (spec, field)) in cases.into_iter().enumerate() {
        let err = create_raw(&ns, json!({"metadata": {"name": format!("bad-{i}")}, "spec": spec})).await.unwrap_err();
        let kube::Error::Api(s) = err else { panic!("case {i}: {err}") };
        println!("case {i}: {} {}", s.code, s.message);
        assert_eq!(s.code, 422, "case {i}: {}", s.message);
        assert!(s.message.contains(field), "case {i}: {}", s.message);
    }
    assert!(ns.loopservices().list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn what_the_schema_cannot_catch_is_reported_in_status_and_nothing_runs() {
    let ns = setup("semantic").await;
    let _op = Operator::start(&ns.name, &[]);
    // Longer than a year: the pattern lets it through (it bounds digits, not the total).
    create_ls(&ns, ls("huge", "9999h", "echo hi")).await.unwrap();
    let st = wait_status(&ns, "huge", "phase Invalid", |st| st.phase == Some(Phase::Invalid)).await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    println!("Ready: {} {} {}", ready.status, ready.reason, ready.message);
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    assert!(ready.message.contains("spec.interval") && ready.message.contains("maximum"), "{}", ready.message);
    assert!(loop_jobs(&ns, "huge").await.is_empty());
    // Fixed, it runs.
    let fix = json!({"spec": {"interval": "2s"}});
    ns.loopservices().patch("huge", &PatchParams::default(), &Patch::Merge(&fix)).await.unwrap();
    wait_jobs(&ns, "huge", 1).await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn old_jobs_beyond_the_history_limit_are_deleted() {
    let ns = setup("history").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("tidy", "1s", "echo hi");
    v["spec"]["successfulJobsHistoryLimit"] = json!(2);
    create_ls(&ns, v).await.unwrap();
    wait_status(&ns, "tidy", "6 successes", |st| st.loops_succeeded >= 6).await;
    let jobs = wait_for("old jobs deleted", Duration::from_secs(20), || async {
        let jobs = loop_jobs(&ns, "tidy").await;
        let live: Vec<_> = jobs.into_iter().filter(|j| j.metadata.deletion_timestamp.is_none()).collect();
        (live.len() <= 3).then_some(live)
    })
    .await;
    let newest = jobs.iter().map(loop_number).max().unwrap();
    assert!(jobs.iter().all(|j| loop_number(j) >= newest - 2), "only the newest jobs are kept");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn with_leader_election_one_instance_works_and_a_standby_takes_over_on_drain() {
    let ns = setup("leader").await;
    let env = [("LEADER_ELECT", "true"), ("POD_NAMESPACE", ns.name.as_str())];
    let mut a = Operator::start(&ns.name, &env);
    wait_for("a to lead", LONG, || async { a.log_text().contains("became the leader").then_some(()) }).await;
    let b = Operator::start(&ns.name, &env);
    wait_for("b to stand by", LONG, || async { b.log_text().contains("standing by").then_some(()) }).await;
    assert_eq!(b.get("/readyz").await.as_deref(), Some("ready"), "a standby is ready to take over");

    create_ls(&ns, ls("led", "2s", "echo hi")).await.unwrap();
    wait_jobs(&ns, "led", 3).await;
    assert!(!b.log_text().contains("became the leader") && !b.log_text().contains("started loop"), "the standby did nothing");

    a.signal("TERM");
    let (code, _) = a.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{}", a.log_text());
    assert!(a.log_text().contains("released the leader lease"), "{}", a.log_text());
    let released = jiff::Timestamp::now();
    wait_for("b to lead", Duration::from_secs(30), || async { b.log_text().contains("became the leader").then_some(()) }).await;
    println!("standby took over {:.3}s after the leader exited", secs(released, jiff::Timestamp::now()));
    let before = loop_jobs(&ns, "led").await.len();
    let jobs = wait_jobs(&ns, "led", before + 2).await;
    let numbers: Vec<i64> = jobs.iter().map(loop_number).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "one Job per loop across the handover");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_loop_whose_pod_cannot_start_is_reported_not_silent() {
    let ns = setup("stuck").await;
    let op = Operator::start(&ns.name, &[]);
    let mut v = ls("typo", "5s", "echo hi");
    // `Never` keeps the node from reaching for a registry: the image is simply not there.
    v["spec"]["image"] = json!("loops.dev/no-such-image:1");
    v["spec"]["imagePullPolicy"] = json!("Never");
    create_ls(&ns, v).await.unwrap();
    let st =
        wait_status(&ns, "typo", "Ready=False LoopStuck", |st| st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "LoopStuck"))
            .await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    println!("Ready: {} {}: {}", ready.status, ready.reason, ready.message);
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("ErrImageNeverPull") && ready.message.contains(&loop_job_name(&ns, "typo", 1).await),
        "{}",
        ready.message
    );
    assert_eq!(st.phase, Some(Phase::Running), "the loop is still running: no second Job");
    assert_eq!(loop_jobs(&ns, "typo").await.len(), 1);
    // After the operator's own rechecks (every 15 s while a loop runs) it is still reported,
    // and only once.
    rechecked_since(&op, &["typo"], jiff::Timestamp::now(), Duration::from_secs(45)).await;
    let again = status(&ns, "typo").await;
    let still = again.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((still.reason.as_str(), still.last_transition_time), ("LoopStuck", ready.last_transition_time));
    let evs = events_where(&ns, "typo", "a LoopStuck Warning", |evs| evs.iter().any(|(t, r, _)| t == "Warning" && r == "LoopStuck")).await;
    assert_eq!(evs.iter().filter(|(t, r, _)| t == "Warning" && r == "LoopStuck").count(), 1, "{evs:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn kubectl_explain_documents_the_fields() {
    let ns = setup("explain").await;
    let _ = &ns;
    let text = wait_for("kubectl explain loopservice.spec", LONG, || async {
        let out = std::process::Command::new("kubectl").args(["explain", "loopservice.spec"]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.contains("interval").then_some(text)
    })
    .await;
    for (field, words) in [
        ("interval", "start of one loop to the start of the next"),
        ("image", "Container image"),
        ("timeout", "Longest a loop may run"),
        ("loops", "Stop after this many loops"),
        ("suspend", "no new loop starts"),
    ] {
        assert!(text.contains(field) && text.contains(words), "{field}: {text}");
    }
    let out = std::process::Command::new("kubectl").args(["explain", "loopservice.status.lastError"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("termination") && text.contains("reason"), "{text}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_job_name_taken_by_another_object_is_reported_and_the_loop_starts_once_it_is_free() {
    let ns = setup("taken").await;
    let _op = Operator::start(&ns.name, &[]);
    // A Job of the user's own, with the name loop 1 would use.
    let taken = create_ls_with_first_job_name_taken(&ns, ls("taken", "2s", "echo hi")).await;
    let st = wait_status(&ns, "taken", "Ready=False JobNameTaken", |st| {
        st.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "JobNameTaken")
    })
    .await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains(&taken), "{}", ready.message);
    assert_eq!(st.loops_started, 0);
    // The Event is published just after the status that records it is written.
    wait_for("a Warning Event JobNameTaken", Duration::from_secs(10), || async {
        events(&ns, "taken").await.iter().any(|(t, r, _)| t == "Warning" && r == "JobNameTaken").then_some(())
    })
    .await;

    ns.jobs().delete(&taken, &kube::api::DeleteParams::foreground()).await.unwrap();
    let jobs = wait_jobs(&ns, "taken", 2).await;
    assert_eq!(jobs.iter().map(loop_number).collect::<Vec<_>>()[..2], [1, 2]);
    let st = status(&ns, "taken").await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True", "{ready:?}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_job_deleted_mid_loop_is_a_failure_and_the_next_loop_waits_for_its_pod() {
    let ns = setup("deleted").await;
    let _op = Operator::start(&ns.name, &[]);
    // On SIGTERM the container takes 3 s more to stop, as real work winding down would.
    create_ls(&ns, ls("cut", "2s", "trap 'sleep 3; exit 0' TERM; while true; do sleep 1; done")).await.unwrap();
    let first = loop_job_name(&ns, "cut", 1).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let selector = format!("job-name={first}");
    let running = || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        list.items.into_iter().find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    };
    wait_for("loop 1's pod to run", LONG, || async { running().await }).await;
    ns.jobs().delete(&first, &kube::api::DeleteParams::background()).await.unwrap();
    wait_for("the pod of loop 1 to be gone", LONG, || async { running().await.is_none().then_some(()) }).await;
    let gone = jiff::Timestamp::now();
    let jobs = wait_jobs(&ns, "cut", 1).await;
    let next = jobs.iter().find(|j| loop_number(j) == 2).expect("loop 2");
    let after = secs(gone, start_time(next));
    println!("loop 2 started {after:.3}s after loop 1's pod was gone");
    assert!(after > -0.5, "loop 2 started {:.3}s before loop 1's pod had stopped", -after);
    let st = wait_status(&ns, "cut", "loop 1 recorded", |st| st.last_finished_loop >= 1).await;
    let e = st.last_error.unwrap();
    assert_eq!((e.r#loop, e.reason.as_str()), (1, "JobDeleted"));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn a_leader_that_loses_its_lease_stops_loops_stands_by_and_leads_again_without_exiting() {
    let ns = setup("steal").await;
    let env = [("LEADER_ELECT", "true"), ("POD_NAMESPACE", ns.name.as_str())];
    let mut a = Operator::start(&ns.name, &env);
    wait_for("a to lead", LONG, || async { a.log_text().contains("became the leader").then_some(()) }).await;
    create_ls(&ns, ls("steady", "3s", "true")).await.unwrap();
    wait_jobs(&ns, "steady", 1).await;
    // Something else takes the Lease (as a standby would after renewals failed unnoticed),
    // and never renews it.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let stolen = jiff::Timestamp::now();
    let patch =
        json!({"spec": {"holderIdentity": "intruder", "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(stolen)}});
    leases.patch("loopservice-operator", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for("a to stop its loops", Duration::from_secs(20), || async {
        a.log_text().contains("lost the leader lease; stopping loops and standing by").then_some(())
    })
    .await;
    let stopped = jiff::Timestamp::now();
    println!("the leader stopped its loops {:.3}s after its Lease was taken", secs(stolen, stopped));
    assert!(a.log_text().contains("another holder"), "{}", a.log_text());
    // It stands by instead of exiting, and leads again once the intruder's Lease expires.
    wait_for("a to lead again", Duration::from_secs(40), || async {
        (a.log_text().matches("became the leader").count() >= 2).then_some(())
    })
    .await;
    // When it led again by its own log (the test sees the line later, and the due loop starts
    // at once).
    let text = a.log_text();
    let again: jiff::Timestamp = text
        .lines()
        .filter(|l| l.contains("became the leader"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no time on the second \"became the leader\" line: {text}"));
    assert!(a.child.try_wait().unwrap().is_none(), "the operator exited: {}", a.log_text());
    println!("led again {:.3}s after the Lease was taken", secs(stolen, again));
    // No loop started while another instance held the Lease; loops go on afterwards.
    let before = loop_jobs(&ns, "steady").await;
    let during: Vec<_> = before.iter().filter(|j| start_time(j) > stopped && start_time(j) < again).map(|j| j.name_any()).collect();
    assert!(during.is_empty(), "loops started while standing by: {during:?}");
    let n = before.iter().map(loop_number).max().unwrap();
    wait_for("a loop after leading again", Duration::from_secs(20), || async {
        let jobs = loop_jobs(&ns, "steady").await;
        (jobs.iter().map(loop_number).max() > Some(n)).then_some(())
    })
    .await;
    let numbers: Vec<i64> = loop_jobs(&ns, "steady").await.iter().map(loop_number).collect();
    let mut sorted = numbers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), numbers.len(), "no loop ran twice: {numbers:?}");
}
