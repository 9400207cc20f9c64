//! spec.pauseWindows against the local cluster: no loop starts inside a window, and the loop
//! due in it starts once at its end, timed by a Job watch outside the operator.

mod support;

use loopservice_operator::crd::Phase;
use serde_json::json;
use support::job_watch::JobWatch;
use support::*;

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn no_loop_starts_inside_a_pause_window_and_the_one_due_starts_once_at_its_end() {
    let ns = setup("quiet").await;
    // A window opens every minute, on the minute (UTC), for 20 s; loops are due every 5 s.
    let mut v = ls("quiet", "5s", "echo hi");
    v["spec"]["pauseWindows"] = json!([{"schedule": "* * * * *", "duration": "20s"}]);
    wait_served(&ns, &v, "spec.pauseWindows", |ls| ls.spec.pause_windows.is_some()).await;
    let watch = JobWatch::start(ns.jobs()).await;
    let _op = Operator::start(&ns.name, &[]);
    create_ls(&ns, v).await.unwrap();

    // Two windows: in the first the first loop waits (it is due when the operator looks); in
    // the second a loop due by the loop rule.
    let mut last_end = jiff::Timestamp::UNIX_EPOCH;
    for window in 1..=2 {
        let until = paused_window(&ns, &watch, last_end, window).await;
        last_end = until;
    }
}

/// Waits for a window that ends after `after`, checks what the Job watch saw of it, and
/// returns its end.
async fn paused_window(ns: &TestNs, watch: &JobWatch, after: jiff::Timestamp, window: usize) -> jiff::Timestamp {
    // A loop comes due inside a window: status says so, and when it ends.
    let st =
        wait_status(ns, "quiet", "phase Paused", |st| st.phase == Some(Phase::Paused) && st.next_run_time.is_some_and(|t| t.0 > after))
            .await;
    let until = st.next_run_time.expect("status.nextRunTime while paused").0;
    let opened = until - jiff::SignedDuration::from_secs(20);
    assert_eq!(opened.as_millisecond() % 60_000, 0, "the window ends 20 s after a minute: {until}");
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "Paused");
    assert!(ready.message.contains(&format!("is paused by window \"* * * * *\" until {}", st.next_run_time.unwrap())), "{}", ready.message);

    // Wait for the first loop after the window, and one more interval.
    wait_until(until + jiff::SignedDuration::from_secs(7)).await;
    let jobs = loop_jobs(ns, "quiet").await;
    let seen = watch.all();
    println!("window {window}: {opened} to {until}; Jobs seen: {seen:?}");
    // None appeared inside the window (half a second for a Job created just before it opened).
    let inside: Vec<_> = seen.iter().filter(|(_, t)| *t >= opened + jiff::SignedDuration::from_millis(500) && *t < until).collect();
    assert!(inside.is_empty(), "Jobs appeared inside the window: {inside:?}");
    // One appeared at its end, due then: the loop due inside it, once.
    let at_end: Vec<_> = seen.iter().filter(|(_, t)| *t >= until && secs(until, *t) < 2.5).collect();
    assert_eq!(at_end.len(), 1, "{at_end:?}");
    let (name, seen_at) = at_end[0];
    let job = jobs.iter().find(|j| kube::ResourceExt::name_any(*j) == *name).expect("the Job at the window's end");
    let due = ann_time(job, "loops.dev/scheduled-time");
    if loop_number(job) == 1 {
        // The first loop is due when the operator looks: at once, here.
        assert!((0.0..1.0).contains(&secs(until, due)), "due {due}, the window ended {until}");
    } else {
        assert_eq!(due, until, "loop {} is due at the window's end", loop_number(job));
    }
    println!("{name}: due {due}, seen {:.3}s after the window ended", secs(until, *seen_at));
    assert!(secs(until, *seen_at) < 1.0, "seen {:.3}s after the window ended", secs(until, *seen_at));
    // The next follows one interval after that start, not at once.
    let next: Vec<_> = seen.iter().filter(|(_, t)| *t > *seen_at).collect();
    assert!(next.iter().all(|(_, t)| secs(*seen_at, *t) > 4.0), "{next:?}");
    until
}
