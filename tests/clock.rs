//! One clock: loops are planned and recorded on the API server's clock, whatever this machine's
//! says. An operator whose clock is an hour ahead, and one whose clock is an hour behind (a test
//! build's `LOOPSERVICE_CLOCK_OFFSET`), each run a LoopService; a Job watch of the test's own
//! reads the API server's stamps.

mod support;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use support::*;

/// Every 10 s, a loop of about a second: no loop overruns, on any honest clock.
const INTERVAL_SECS: f64 = 10.0;

async fn loops_on_a_clock_off_by(offset: &str, hours: f64) {
    let ns = setup(&format!("clock-{}", if hours > 0.0 { "ahead" } else { "behind" })).await;
    // Each Job's creationTimestamp, as the API server stamped it, by loop number.
    let created: std::sync::Arc<std::sync::Mutex<BTreeMap<i64, jiff::Timestamp>>> = Default::default();
    let (api, out) = (ns.jobs(), created.clone());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
        while let Some(item) = stream.next().await {
            let Ok(j) = item else { continue };
            let j: Job = j;
            if let Some(t) = &j.metadata.creation_timestamp {
                out.lock().unwrap().insert(loop_number(&j), t.0);
            }
        }
    });
    create_ls(&ns, ls("l", "10s", "sleep 1")).await.unwrap();
    let op = Operator::start(&ns.name, &[("LOOPSERVICE_CLOCK_OFFSET", offset)]);
    wait_status(&ns, "l", "three loops recorded", |st| st.last_finished_loop >= 3).await;
    ns.loopservices().patch("l", &Default::default(), &kube::api::Patch::Merge(json!({"spec": {"suspend": true}}))).await.unwrap();
    let st = wait_status(&ns, "l", "suspended with every loop recorded", |st| {
        st.active_job.is_none() && st.last_finished_loop == st.loops_started
    })
    .await;

    // The operator saw how far off its clock is.
    let metrics = op.get("/metrics").await.expect("/metrics");
    let line = metrics.lines().find(|l| l.starts_with("loopservice_clock_offset_seconds ")).expect("the clock offset metric");
    let seen: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((seen + hours * 3600.0).abs() < 2.0, "{offset}: the API server's clock minus the operator's machine's: {seen} s");

    // Durations and overruns agree with the API server's stamps: no loop overran.
    assert_eq!(st.overruns, 0, "{offset}: {st:?}");
    let stamps = created.lock().unwrap().clone();
    for r in &st.history {
        let d = r.duration_seconds.expect("a finished loop's duration");
        assert!((0.0..INTERVAL_SECS).contains(&d) && !r.overran, "{offset}: loop {}: {d} s, overran {}: {r:?}", r.r#loop, r.overran);
        // Its start is the API server's time of its Job's creation (stamped to the second).
        let job_created = stamps.get(&r.r#loop).unwrap_or_else(|| panic!("{offset}: no Job seen for loop {}", r.r#loop));
        let off = r.start_time.0.duration_since(*job_created).as_secs_f64();
        assert!(
            (-0.5..1.5).contains(&off),
            "{offset}: loop {} started {} by status, its Job created {job_created}",
            r.r#loop,
            r.start_time.0
        );
    }
    // Start-anchored on the API server's clock: a loop every interval, neither back to back
    // (an operator an hour ahead) nor an hour apart (an hour behind).
    let starts: Vec<jiff::Timestamp> = stamps.values().copied().collect();
    for w in starts.windows(2) {
        let gap = w[1].duration_since(w[0]).as_secs_f64();
        assert!((INTERVAL_SECS - 1.5..INTERVAL_SECS + 3.0).contains(&gap), "{offset}: Jobs created {gap} s apart: {starts:?}");
    }
    println!("clock {offset}: {} loops, offset seen {seen:.3} s, 0 overruns, starts {starts:?}", st.loops_started);
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn an_operator_whose_clock_is_an_hour_ahead_records_durations_and_overruns_by_the_api_servers_clock() {
    loops_on_a_clock_off_by("1h", 1.0).await;
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn an_operator_whose_clock_is_an_hour_behind_records_durations_and_overruns_by_the_api_servers_clock() {
    loops_on_a_clock_off_by("-1h", -1.0).await;
}
