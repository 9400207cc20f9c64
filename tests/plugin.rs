//! The kubectl plugin (`kubectl loopservice`) against the local cluster: each command run as
//! a user runs it, with KUBECONFIG from the environment, asserting what they would read and
//! the exit code.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use loopservice_operator::crd::Phase;
use loopservice_operator::schedule::{self, Jitter};
use regex::Regex;
use serde_json::{json, Value};
use support::*;

/// What one run of the plugin printed, and its exit code.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl-loopservice ARGS` (off the async runtime, which the operator test helpers share).
async fn plugin(args: &[&str]) -> Ran {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-loopservice")).args(&args).output().expect("run kubectl-loopservice")
    })
    .await
    .unwrap();
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    println!("$ kubectl loopservice ... -> exit {}\n{}{}", ran.code, ran.stdout, ran.stderr);
    ran
}

/// The line of `text` that starts with `start`.
fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{text}"))
}

fn assert_matches(pattern: &str, text: &str) {
    assert!(Regex::new(pattern).unwrap().is_match(text), "{text:?} does not match {pattern}");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn list_shows_phase_last_result_and_relative_times() {
    let ns = setup("plist").await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("quick", "1h", "echo hi")).await.unwrap();
    create_ls(&ns, ls("broken", "1h", "exit 3")).await.unwrap();
    let mut paused = ls("paused", "1h", "echo hi");
    paused["spec"]["suspend"] = json!(true);
    create_ls(&ns, paused).await.unwrap();
    for name in ["quick", "broken"] {
        wait_status(&ns, name, "loop 1 recorded", |st| st.last_finished_loop == 1).await;
    }
    wait_status(&ns, "paused", "phase Suspended", |st| st.phase == Some(Phase::Suspended)).await;

    let out = plugin(&["list", "-n", &ns.name]).await;
    assert_eq!(out.code, 0);
    assert_matches(r"^NAME +INTERVAL +PHASE +LOOPS +FAILED +LAST RESULT +LAST RUN +NEXT RUN +AGE$", out.stdout.lines().next().unwrap());
    // Rows in name order; one interval of 1h after a start a few seconds ago is "in 59m".
    let names: Vec<&str> = out.stdout.lines().skip(1).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["broken", "paused", "quick"]);
    assert_matches(r"^quick +1h +Waiting +1 +0 +Succeeded +(\d+s ago|now) +in 59m +\d+s$", line(&out.stdout, "quick "));
    assert_matches(r"^broken +1h +Failing +1 +1 +Failed \(JobFailed\) +(\d+s ago|now) +in 59m +\d+s$", line(&out.stdout, "broken "));
    assert_matches(r"^paused +1h +Suspended +0 +0 +<none> +<none> +<none> +\d+s$", line(&out.stdout, "paused "));

    // -o json: the same rows, with absolute times.
    let out = plugin(&["list", "-n", &ns.name, "-o", "json"]).await;
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let quick = rows.iter().find(|r| r["name"] == "quick").unwrap();
    assert_eq!(
        (quick["namespace"].as_str(), quick["phase"].as_str(), quick["lastResult"].as_str()),
        (Some(ns.name.as_str()), Some("Waiting"), Some("Succeeded"))
    );
    let (last, next): (jiff::Timestamp, jiff::Timestamp) =
        (quick["lastRun"].as_str().unwrap().parse().unwrap(), quick["nextRun"].as_str().unwrap().parse().unwrap());
    assert_eq!(secs(last, next), 3600.0);

    // -A: a NAMESPACE column first, this namespace's rows among the others.
    let out = plugin(&["list", "-A"]).await;
    assert!(out.stdout.starts_with("NAMESPACE "), "{}", out.stdout);
    assert_matches(&format!(r"(?m)^{} +quick +1h +Waiting ", ns.name), &out.stdout);

    // An explicit kubeconfig and context work as kubectl's do; a context that is not there is an error.
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let context = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap().current_context.expect("a current context");
    let out = plugin(&["--kubeconfig", &kubeconfig, "--context", &context, "list", "-n", &ns.name]).await;
    assert_eq!((out.code, out.stdout.lines().count()), (0, 4));
    let out = plugin(&["list", "-n", &ns.name, "--context", "no-such-context"]).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: kubeconfig: ") && out.stderr.contains("no-such-context"), "{}", out.stderr);
    // A namespace without LoopServices says so, as kubectl does.
    let empty = format!("{}-empty", ns.name);
    let out = plugin(&["list", "-n", &empty]).await;
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.trim()), (0, "", format!("No resources found in {empty} namespace.").as_str()));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn run_wait_prints_the_loops_result_and_exits_2_when_it_failed() {
    let ns = setup("prun").await;
    let mut op = Operator::start(&ns.name, &[]);
    // Suspended: only requests run loops. Loop 1 writes a result; loop 2 fails.
    let mut v =
        ls("manual", "1h", r#"if [ $LOOP_NUMBER = 2 ]; then echo "disk full" >&2; exit 3; fi; echo "42 rows" > /dev/termination-log"#);
    v["spec"]["suspend"] = json!(true);
    create_ls(&ns, v).await.unwrap();

    let out = plugin(&["run", "manual", "-n", &ns.name, "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    // By the user the API server knows (from 1.28, which serves SelfSubjectReview).
    let requested = Regex::new(r"^loopservice.loops.dev/manual run requested (by \S+ )?\(loops.dev/run-requested-at=(\S+)\)$").unwrap();
    let value = requested.captures(out.stdout.lines().next().unwrap()).expect("the request line")[2].to_string();
    let result: Vec<&str> = out.stdout.lines().skip(1).collect();
    let (job1, job2) = (loop_job_name(&ns, "manual", 1).await, loop_job_name(&ns, "manual", 2).await);
    assert_eq!(result[..3], ["loop:      1", &format!("job:       {job1}"), "result:    Succeeded"]);
    assert_matches(r"^duration:  \d+(\.\d)?s$", result[3]);
    assert_eq!(result[4..], ["message:   42 rows"]);
    assert!(out.stderr.contains(&format!("loop 1 started: job/{job1}")), "{}", out.stderr);
    // The Job answers exactly that request.
    let job = ns.jobs().get(&job1).await.unwrap();
    assert_eq!(job.annotations()["loops.dev/run-request"], value);

    let out = plugin(&["run", "manual", "-n", &ns.name, "--wait"]).await;
    assert_eq!(out.code, 2, "a failed loop exits 2: {out:?}");
    assert!(out.stdout.contains(&format!("loop:      2\njob:       {job2}\nresult:    Failed (JobFailed)\n")), "{}", out.stdout);
    assert_matches(
        r"(?m)^message:   container exited with code 3 \(Error\): disk full\s*; Job manual-[0-9a-f]{5}-2 failed: BackoffLimitExceeded",
        &out.stdout,
    );

    let out = plugin(&["run", "nosuch", "-n", &ns.name]).await;
    assert_eq!(
        (out.code, out.stderr.trim()),
        (1, format!("error: loopservice \"nosuch\" not found in namespace \"{}\"", ns.name).as_str())
    );

    // With no operator to answer, --timeout gives up with exit 4, naming what the status shows.
    op.signal("KILL");
    op.wait_exit(Duration::from_secs(10)).await;
    let out = plugin(&["run", "manual", "-n", &ns.name, "--wait", "--timeout", "2s"]).await;
    assert_eq!(out.code, 4, "{out:?}");
    assert_matches(
        r#"^error: no operator took up run request \S+ within 2s: status\.lastHandledRunRequest of loopservice "manual" is still \S+, and the status shows phase Suspended, Ready False \(Suspended\): .+$"#,
        out.stderr.lines().last().unwrap(),
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn run_wait_exits_3_with_the_ready_message_when_the_spec_is_invalid() {
    let ns = setup("pinval").await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("bad", "9999h", "echo hi")).await.unwrap();
    wait_status(&ns, "bad", "phase Invalid", |st| st.phase == Some(Phase::Invalid)).await;

    let out = plugin(&["run", "bad", "-n", &ns.name, "--wait", "--timeout", "60s"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_matches(
        r#"^error: loopservice "bad" cannot run the request: Ready is False \(InvalidSpec\): .*spec\.interval"#,
        out.stderr.lines().last().unwrap(),
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn suspend_and_resume_patch_spec_suspend_and_end_a_suspension_after_failures() {
    let ns = setup("psusp").await;
    let op = Operator::start(&ns.name, &[]);
    create_ls(&ns, ls("toggle", "4s", "echo hi")).await.unwrap();
    let mut failing = ls("failing", "4s", "exit 1");
    failing["spec"]["suspendAfterFailures"] = json!(1);
    create_ls(&ns, failing).await.unwrap();
    wait_jobs(&ns, "toggle", 1).await;

    let out = plugin(&["suspend", "toggle", "-n", &ns.name]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "loopservice.loops.dev/toggle suspended\n"));
    assert_eq!(ns.loopservices().get("toggle").await.unwrap().spec.suspend, Some(true));
    let st = wait_status(&ns, "toggle", "phase Suspended", |st| st.phase == Some(Phase::Suspended)).await;
    let out = plugin(&["suspend", "toggle", "-n", &ns.name]).await;
    assert_eq!(out.stdout, "loopservice.loops.dev/toggle already suspended\n");
    // Past the time the next loop would be due, and once the operator has looked since.
    reconciled_since(&op, &ns, &["toggle"], next_due(&st, Duration::from_secs(4))).await;
    assert_eq!(loop_jobs(&ns, "toggle").await.len() as i64, st.loops_started, "no loop while suspended");

    let out = plugin(&["resume", "toggle", "-n", &ns.name]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "loopservice.loops.dev/toggle resumed\n"));
    assert_eq!(ns.loopservices().get("toggle").await.unwrap().spec.suspend, Some(false));
    wait_jobs(&ns, "toggle", st.loops_started as usize + 1).await;
    let out = plugin(&["resume", "toggle", "-n", &ns.name]).await;
    assert_eq!(out.stdout, "loopservice.loops.dev/toggle was not suspended\n");

    // Suspended by itself after a failure (spec.suspend untouched): resume ends that too.
    wait_status(&ns, "failing", "suspended after 1 failure", |st| st.failure_suspension.as_ref().is_some_and(|s| s.active)).await;
    let out = plugin(&["resume", "failing", "-n", &ns.name]).await;
    assert_eq!(out.stdout, "loopservice.loops.dev/failing resumed (its suspension after failures has ended)\n");
    wait_jobs(&ns, "failing", 2).await;

    let out = plugin(&["suspend", "nosuch", "-n", &ns.name]).await;
    assert_eq!(
        (out.code, out.stderr.trim()),
        (1, format!("error: loopservice \"nosuch\" not found in namespace \"{}\"", ns.name).as_str())
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn history_lists_the_latest_loops_newest_first() {
    let ns = setup("phist").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("three", "4s", "if [ $LOOP_NUMBER = 2 ]; then echo broken; exit 1; fi");
    v["spec"]["loops"] = json!(3);
    create_ls(&ns, v).await.unwrap();
    let mut idle = ls("idle", "4s", "true");
    idle["spec"]["suspend"] = json!(true);
    create_ls(&ns, idle).await.unwrap();
    wait_status(&ns, "three", "phase Finished", |st| st.phase == Some(Phase::Finished) && st.last_finished_loop == 3).await;

    let out = plugin(&["history", "three", "-n", &ns.name]).await;
    assert_eq!(out.code, 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_matches(r"^LOOP +TRIGGER +BY +STARTED +DURATION +RESULT +JOB +REASON +MESSAGE$", lines[0]);
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_matches(
        r"^3 +Scheduled +<none> +(\d+s ago|now) +\d+(\.\d)?s( \(overrun\))? +Succeeded +three-[0-9a-f]{5}-3 +<none> +<none>$",
        lines[1],
    );
    assert_matches(
        r"^2 +Scheduled +<none> +(\d+s ago|now) +\d+(\.\d)?s( \(overrun\))? +Failed \(JobFailed\) +three-[0-9a-f]{5}-2 +<none> +container exited with code 1 \(Error\): broken",
        lines[2],
    );
    assert_matches(
        r"^1 +Scheduled +<none> +(\d+s ago|now) +\d+(\.\d)?s( \(overrun\))? +Succeeded +three-[0-9a-f]{5}-1 +<none> +<none>$",
        lines[3],
    );

    for format in ["json", "yaml"] {
        let out = plugin(&["history", "three", "-n", &ns.name, "-o", format]).await;
        let records: Vec<Value> =
            if format == "json" { serde_json::from_str(&out.stdout).unwrap() } else { serde_yaml::from_str(&out.stdout).unwrap() };
        let loops: Vec<(i64, &str)> = records.iter().map(|r| (r["loop"].as_i64().unwrap(), r["result"].as_str().unwrap())).collect();
        assert_eq!(loops, [(3, "Succeeded"), (2, "Failed"), (1, "Succeeded")], "{format}");
        assert_eq!(records[1]["reason"], "JobFailed");
    }

    let out = plugin(&["history", "idle", "-n", &ns.name]).await;
    assert_eq!((out.code, out.stdout.as_str(), out.stderr.trim()), (0, "", "No loops recorded for loopservice \"idle\" yet."));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn logs_picks_the_loops_pod_and_falls_back_to_its_termination_message() {
    let ns = setup("plogs").await;
    let _op = Operator::start(&ns.name, &[]);
    // Loop 1 writes its result to the termination log; loop 2 fails, and the tail of its log
    // becomes its termination message.
    let mut v = ls(
        "talk",
        "4s",
        r#"echo "log of loop $LOOP_NUMBER"; if [ $LOOP_NUMBER = 1 ]; then echo "result of loop 1" > /dev/termination-log; else exit 1; fi"#,
    );
    v["spec"]["loops"] = json!(2);
    create_ls(&ns, v).await.unwrap();
    wait_status(&ns, "talk", "phase Finished", |st| st.phase == Some(Phase::Finished) && st.last_finished_loop == 2).await;

    // Whether this cluster's API server can serve Pod logs at all (the local one's node has no
    // address, so it cannot): the plugin must print them, or say why not and fall back.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pod2 = pods.list(&ListParams::default().labels("loops.dev/loop=2")).await.unwrap().items.remove(0).name_any();
    let served = pods.logs(&pod2, &Default::default()).await.is_ok();
    println!("this cluster serves Pod logs: {served}");

    let (talk1, talk2) = (loop_job_name(&ns, "talk", 1).await, loop_job_name(&ns, "talk", 2).await);
    let expect = |out: &Ran, n: i64, log: &str, code: i32, message: &str| {
        let pod_prefix = format!("{}-", if n == 1 { &talk1 } else { &talk2 });
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stderr.starts_with(&format!("loop {n}: pod/{pod_prefix}")), "{}", out.stderr);
        if served {
            assert_eq!(out.stdout, format!("{log}\n"));
        } else {
            assert!(out.stderr.contains(&format!("error: the API server could not serve the log of pod/{pod_prefix}")), "{}", out.stderr);
            let note = format!("showing the termination message of container \"loop\" instead (it exited with code {code})");
            assert!(out.stderr.contains(&note), "{}", out.stderr);
            assert_eq!(out.stdout, format!("{message}\n"));
        }
    };
    // Without --loop: the latest loop's Pod.
    let out = plugin(&["logs", "talk", "-n", &ns.name]).await;
    expect(&out, 2, "log of loop 2", 1, "log of loop 2");
    let out = plugin(&["logs", "talk", "-n", &ns.name, "--loop", "1"]).await;
    expect(&out, 1, "log of loop 1", 0, "result of loop 1");
    // -f on an ended container: the same.
    let out = plugin(&["logs", "talk", "-n", &ns.name, "--loop", "1", "-f"]).await;
    expect(&out, 1, "log of loop 1", 0, "result of loop 1");

    let out = plugin(&["logs", "talk", "-n", &ns.name, "--loop", "5"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.trim(), "error: loop 5 of loopservice \"talk\" has no Pod (it has not run, or its Job was deleted)");
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn explain_timing_names_what_sets_the_next_start() {
    let ns = setup("pexpl").await;
    let mut op = Operator::start(&ns.name, &[]);
    let mut hourly = ls("hourly", "1h", "true");
    hourly["spec"]["jitter"] = json!("2s");
    create_ls(&ns, hourly).await.unwrap();
    let mut backoff = ls("backoff", "4s", "exit 1");
    backoff["spec"]["failureBackoff"] = json!({"initial": "1m", "max": "5m"});
    create_ls(&ns, backoff).await.unwrap();
    let st = wait_status(&ns, "hourly", "loop 1 recorded", |st| st.last_finished_loop == 1 && st.next_run_time.is_some()).await;
    let failed = wait_status(&ns, "backoff", "loop 1 failed", |st| st.last_finished_loop == 1 && st.next_run_time.is_some()).await;

    // Loop 2 of hourly: one hour after loop 1 was due (its start less its jitter delay), plus
    // loop 2's own delay, as the library computes them.
    let ls_hourly = ns.loopservices().get("hourly").await.unwrap();
    let jitter = Jitter {
        uid: &ls_hourly.uid().unwrap(),
        max: Duration::from_secs(2),
        created: ls_hourly.metadata.creation_timestamp.clone().unwrap().0,
    };
    let want = schedule::add(
        schedule::add(schedule::sub(st.last_start_time.unwrap().0, jitter.offset(1)), Duration::from_secs(3600)),
        jitter.offset(2),
    );
    let out = plugin(&["explain-timing", "hourly", "-n", &ns.name, "-o", "json"]).await;
    assert_eq!(out.code, 0);
    let e: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((e["next"]["state"].as_str(), e["next"]["loop"].as_i64()), (Some("Waiting"), Some(2)));
    assert_eq!(e["next"]["at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), want);
    assert_eq!(e["statusNextRunTime"], e["next"]["at"], "the operator's own status agrees");
    let factors: Vec<(&str, bool)> =
        e["factors"].as_array().unwrap().iter().map(|f| (f["factor"].as_str().unwrap(), f["applies"].as_bool().unwrap())).collect();
    assert_eq!(
        factors,
        [
            ("interval", true),
            ("overrun", false),
            ("failureBackoff", false),
            ("catchUpWindow", false),
            ("alignment", false),
            ("jitter", true),
            ("pauseWindows", false),
            ("suspend", false),
            ("loopsLimit", false),
            ("runRequest", false)
        ]
    );

    // backoff: held back 1m after the failed end, and the text says so.
    let out = plugin(&["explain-timing", "backoff", "-n", &ns.name]).await;
    assert_eq!(out.code, 0);
    let end = failed.last_failure_time.unwrap();
    let at = schedule::add(end.0, Duration::from_secs(60));
    let next = format!("next: loop 2 starts at {} (in ", loopservice_operator::crd::Time(at));
    assert!(line(&out.stdout, "next: ").starts_with(&next), "{}", out.stdout);
    assert_matches(
        r"^failure backoff +yes +1 loop\(s\) failed in a row: the next waits min\(1m x 2\^0, 5m\) = 1m after the latest failed end",
        line(&out.stdout, "failure backoff"),
    );
    assert_matches(r"^interval +no +loop 1 started at ", line(&out.stdout, "interval "));

    // A run request the operator has not taken up yet (it is stopped): due now, and why.
    op.signal("KILL");
    op.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(plugin(&["run", "hourly", "-n", &ns.name]).await.code, 0);
    let out = plugin(&["explain-timing", "hourly", "-n", &ns.name]).await;
    assert_matches(r#"^next: loop 2 starts now, for run request "[^"]+"$"#, line(&out.stdout, "next: "));
    assert_matches(
        r#"^run request +yes +run request "[^"]+" \(loops.dev/run-requested-at\) is pending: its loop starts at once$"#,
        line(&out.stdout, "run request "),
    );
    assert_matches(r"^jitter +no +loop 2 starts [\dms ]+ after it is due .*; a run request is not delayed$", line(&out.stdout, "jitter "));

    let out = plugin(&["explain-timing", "nosuch", "-n", &ns.name]).await;
    assert_eq!(
        (out.code, out.stderr.trim()),
        (1, format!("error: loopservice \"nosuch\" not found in namespace \"{}\"", ns.name).as_str())
    );
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn explain_timing_next_lists_the_starts_the_operator_then_makes() {
    let ns = setup("next").await;
    let _op = Operator::start(&ns.name, &[]);
    let mut v = ls("ahead", "5s", "echo hi");
    v["spec"]["jitter"] = json!("2s");
    v["spec"]["loops"] = json!(5);
    create_ls(&ns, v).await.unwrap();
    // After loop 1 ended, with loop 2 waiting: the next 3 starts, and the plan ends at loop 5.
    wait_status(&ns, "ahead", "loop 1 ended", |st| st.last_finished_loop == 1 && st.active_job.is_none()).await;
    let out = plugin(&["explain-timing", "ahead", "-n", &ns.name, "--next", "3"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let planned: Vec<jiff::Timestamp> = out.stdout.lines().map(|l| l.parse().unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
    assert_eq!(planned.len(), 3, "{}", out.stdout);
    let out = plugin(&["explain-timing", "ahead", "-n", &ns.name, "--next", "10", "-o", "json"]).await;
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    let loops: Vec<i64> = all["starts"].as_array().unwrap().iter().map(|p| p["loop"].as_i64().unwrap()).collect();
    assert_eq!(loops, [2, 3, 4, 5], "spec.loops ends the plan at loop 5");
    assert_eq!(all["stop"], "spec.loops scheduled loops will have run");
    // The operator starts loops 2 to 4 when the plan said, give or take the milliseconds each
    // Job create takes (a start anchors the next).
    let jobs = wait_for("loops 2 to 4 started", LONG, || async {
        let jobs = loop_jobs(&ns, "ahead").await;
        (jobs.len() >= 4).then_some(jobs)
    })
    .await;
    for (job, want) in jobs[1..4].iter().zip(&planned) {
        let started = ann_time(job, "loops.dev/jittered-time");
        println!("{}: planned {want}, to start {started} ({:+.3}s)", job.name_any(), secs(*want, started));
        assert!(secs(*want, started).abs() < 0.5, "{}: planned {want}, to start {started}", job.name_any());
    }
    let out = plugin(&["explain-timing", "nosuch", "-n", &ns.name, "--next", "3"]).await;
    assert_ne!(out.code, 0);
    let out = plugin(&["explain-timing", "ahead", "-n", &ns.name, "--next", "0"]).await;
    assert_ne!(out.code, 0, "--next 0 is refused");
}

#[test]
fn the_krew_manifest_installs_this_binary_on_each_platform() {
    let text = std::fs::read_to_string(repo_root().join("plugins/krew/loopservice.yaml")).unwrap();
    let m: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!((m["kind"].as_str(), m["metadata"]["name"].as_str()), (Some("Plugin"), Some("loopservice")));
    let platforms = m["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        // The binary this crate builds, and a placeholder for each archive's checksum.
        assert_eq!(p["bin"], "kubectl-loopservice");
        assert!(p["sha256"].as_str().unwrap().starts_with("{{SHA256_"), "{p}");
        assert!(p["uri"].as_str().unwrap().contains("{{VERSION}}"), "{p}");
    }
    assert_eq!(m["spec"]["version"], "{{VERSION}}");
}
