//! Property tests: the duration parser, the reading of Jobs and the status bookkeeping never
//! panic on any input, and keep their invariants.
//!
//! `cargo test` runs few cases (64 per property) to stay fast; `make fuzz` runs many, bounded
//! in time: `PROPTEST_CASES` cases per property (default here 64), stopping early after
//! `FUZZ_SECONDS` seconds per property when that is set. Each property prints how many cases
//! ran and how long they took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use loopservice_operator::crd::{LoopServiceStatus, Time};
use loopservice_operator::job::{self, ObservedJob, Outcome};
use loopservice_operator::keys;
use loopservice_operator::schedule::{self, parse_duration, Alignment, Grid, Jitter, MAX_DURATION};
use loopservice_operator::status::{self, Decision};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

/// Runs `test` on values of `strategy`: `PROPTEST_CASES` cases (64 when unset), in chunks,
/// stopping after `FUZZ_SECONDS` when set. Prints the count and the time taken.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases: u32 = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    let budget = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs);
    let began = Instant::now();
    let mut ran = 0u32;
    while ran < cases && budget.is_none_or(|b| began.elapsed() < b) {
        let chunk = (cases - ran).min(1000);
        // Each chunk is seeded afresh from the OS, so chunks try different inputs.
        let mut runner = TestRunner::new(Config { cases: chunk, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        ran += chunk;
    }
    println!("fuzz {name}: {ran} cases in {:.2} s", began.elapsed().as_secs_f64());
}

// ---- durations ----

/// The parts a duration is written with, each with its bound on significant digits.
const UNITS: [(&str, u128, usize); 4] = [("h", 3_600_000, 5), ("m", 60_000, 7), ("s", 1000, 9), ("ms", 1, 12)];

/// What `parse_duration` should answer, written independently of the regular expression:
/// `Some(milliseconds)` for a valid duration of at least 1 s and at most a year.
fn reference(value: &str) -> Option<u128> {
    let mut rest = value;
    let mut total = 0u128;
    let mut next_unit = 0;
    let mut whole = false;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (number, after) = rest.split_at(digits);
        // "ms" before "m": "1ms" is never a minute followed by a part without digits.
        let i = if after.starts_with("ms") {
            3
        } else if after.starts_with('h') {
            0
        } else if after.starts_with('m') {
            1
        } else if after.starts_with('s') {
            2
        } else {
            return None;
        };
        if i < next_unit {
            return None;
        }
        let unit = &UNITS[i];
        let significant = number.trim_start_matches('0');
        if significant.len() > unit.2 {
            return None;
        }
        let n: u128 = if significant.is_empty() { 0 } else { significant.parse().ok()? };
        if n > 0 && unit.0 != "ms" {
            whole = true;
        }
        total += n * unit.1;
        next_unit = i + 1;
        rest = &after[unit.0.len()..];
    }
    (whole && total >= 1000 && total <= MAX_DURATION.as_millis()).then_some(total)
}

/// Strings that look like durations: parts in any order, with leading zeros, signs, spaces,
/// dots, unknown units, non-ASCII digits and letters.
fn duration_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        4 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => "[0-9]{1,16}",
        1 => "0{1,6}[0-9]{1,4}",
        1 => prop::sample::select(vec!["", "-1", "+1", "1.5", " 1", "1 ", "１", "٣", "\u{200b}1", "99999999999999999999999"]).prop_map(String::from),
    ];
    let unit = prop::sample::select(vec!["h", "m", "s", "ms", "ms", "us", "ns", "d", "y", "H", "S", "sec", "", " ", "ｓ", "ѕ"]);
    prop::collection::vec((number, unit), 0..5).prop_map(|parts| parts.into_iter().map(|(n, u)| format!("{n}{u}")).collect())
}

/// Durations in the documented shape (parts in order), with numbers of every size.
fn duration_shaped() -> impl Strategy<Value = String> {
    let number = prop_oneof![3 => 0u64..100, 2 => 0u64..100_000, 1 => any::<u64>()];
    let part = (prop::option::of("0{1,3}"), number);
    prop::collection::vec(prop::option::of(part), 4).prop_map(|parts| {
        let mut out = String::new();
        for ((zeros, n), (unit, _, _)) in parts.into_iter().zip(UNITS).filter_map(|(p, u)| p.map(|p| (p, u))) {
            out.push_str(&format!("{}{n}{unit}", zeros.unwrap_or_default()));
        }
        out
    })
}

#[test]
fn the_duration_parser_never_panics_and_agrees_with_a_reference() {
    let strategy = prop_oneof![3 => duration_shaped(), 3 => duration_like(), 1 => any::<String>(), 1 => "[0-9hms]{0,40}"];
    let accepted = AtomicU64::new(0);
    fuzz("durations", strategy, |s| {
        let got = parse_duration("interval", &s);
        if got.is_ok() {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        let want = reference(&s);
        match (&got, want) {
            (Ok(d), Some(ms)) => prop_assert_eq!(d.as_millis(), ms, "{:?}", s),
            (Err(e), None) => {
                prop_assert!(e.starts_with("spec.interval "), "{:?}: {}", s, e);
                prop_assert!(e.len() <= 400, "the message stays short: {}", e);
            }
            _ => prop_assert!(false, "{:?}: parser {:?}, reference {:?}", s, got, want),
        }
        // What it accepts reads back the same written in canonical form.
        if let Ok(d) = got {
            let ms = d.as_millis();
            let canonical = format!("{}h{}m{}s{}ms", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
            prop_assert_eq!(parse_duration("interval", &canonical), Ok(d), "{}", canonical);
        }
        Ok(())
    });
    println!("  of which accepted: {}", accepted.into_inner());
}

#[test]
fn what_the_schema_pattern_lets_through_never_overflows_a_go_duration() {
    let re = regex::Regex::new(loopservice_operator::crd::DURATION_PATTERN).unwrap();
    // Go's time.Duration holds up to 2562047h47m16.854775807s.
    let go_max = Duration::from_nanos(i64::MAX as u64);
    let parts = prop::collection::vec(("0{0,3}[0-9]{1,13}", prop::sample::select(vec!["h", "m", "s", "ms"])), 1..5);
    fuzz("pattern bounds", parts.prop_map(|p| p.into_iter().map(|(n, u)| format!("{n}{u}")).collect::<String>()), |s| {
        if re.is_match(&s) {
            let d = humantime::parse_duration(&s).map_err(|e| TestCaseError::fail(format!("{s}: {e}")))?;
            prop_assert!(d < go_max, "{} is {:?}", s, d);
        }
        Ok(())
    });
}

// ---- Jobs ----

/// Any instant jiff can hold, or close to the edges, to the millisecond.
fn instant() -> impl Strategy<Value = Timestamp> {
    let (min, max) = (Timestamp::MIN.as_second() * 1000, Timestamp::MAX.as_second() * 1000);
    prop_oneof![
        4 => 1_700_000_000_000i64..1_900_000_000_000,
        1 => min..=max,
        1 => prop::sample::select(vec![min, max, 0, -1, 1]),
    ]
    .prop_map(|ms| Timestamp::from_millisecond(ms).unwrap())
}

/// An instant in Kubernetes' form (to the second), as the API server stamps it.
fn k8s_time() -> impl Strategy<Value = String> {
    // The API server's times are years 0001 to 9999.
    (-62_135_596_800i64..253_402_300_799).prop_map(|s| Timestamp::from_second(s).unwrap().to_string())
}

fn annotation_time() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => instant().prop_map(|t| Time(t).format()),
        1 => any::<String>(),
        1 => prop::sample::select(vec!["", "now", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "-009999-01-01T00:00:00Z", "2026-01-01T00:00:00+14:00"]).prop_map(String::from),
    ]
}

fn loop_label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (1i64..20).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["", "0", "-1", "+3", " 3", "3.0", "9223372036854775808", "x"]).prop_map(String::from),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget", "Suspended", ""]),
        prop::sample::select(vec!["True", "False", "Unknown", "true", ""]),
        prop::option::of(k8s_time()),
        prop::option::of(prop::sample::select(vec!["DeadlineExceeded", "BackoffLimitExceeded", "", "PodFailurePolicy"])),
        prop::option::of(".{0,2000}"),
    )
        .prop_map(
            |(t, s, at, reason, message)| json!({"type": t, "status": s, "lastTransitionTime": at, "reason": reason, "message": message}),
        )
}

/// A Job as the API server could return it after anyone edited its labels and annotations.
fn any_job() -> impl Strategy<Value = Value> {
    let annotations = (
        prop::option::of(annotation_time()),
        prop::option::of(annotation_time()),
        prop::option::of(".{0,100}"),
        prop::collection::btree_map(".{0,20}", ".{0,40}", 0..3),
    );
    (
        prop_oneof![9 => "[a-z0-9.-]{1,70}".prop_map(Some), 1 => Just(None)],
        prop_oneof![9 => loop_label().prop_map(Some), 1 => Just(None)],
        annotations,
        prop::option::of(k8s_time()),
        prop::collection::vec(condition(), 0..4),
        prop::option::of(k8s_time()),
    )
        .prop_map(|(name, label, (start, scheduled, request, extra), created, conditions, completion)| {
            let mut ann: BTreeMap<String, String> = extra;
            for (k, v) in [(keys::ANN_STARTED, start), (keys::ANN_SCHEDULED, scheduled), (keys::ANN_RUN_REQUEST, request)] {
                if let Some(v) = v {
                    ann.insert(k.to_string(), v);
                }
            }
            let labels: BTreeMap<String, String> = label.map(|l| (keys::LABEL_LOOP.to_string(), l)).into_iter().collect();
            json!({
                "metadata": {"name": name, "labels": labels, "annotations": ann, "creationTimestamp": created},
                "status": {"conditions": conditions, "completionTime": completion},
            })
        })
}

#[test]
fn reading_any_job_never_panics_and_no_annotation_moves_the_loop_past_the_servers_stamps() {
    let read = AtomicU64::new(0);
    fuzz("observe", any_job(), |v| {
        let job: Job = serde_json::from_value(v.clone()).map_err(|e| TestCaseError::fail(format!("{e}: {v}")))?;
        let Some(seen) = job::observe(&job) else { return Ok(()) };
        read.fetch_add(1, Ordering::Relaxed);
        prop_assert!(seen.loop_number > 0);
        if let Some(created) = job.metadata.creation_timestamp.as_ref().map(|t| t.0) {
            let slack = job::START_SLACK;
            prop_assert!(
                seen.start >= schedule::sub(created, slack) && seen.start <= schedule::add(created, slack),
                "{:?} vs {}",
                seen.start,
                created
            );
        }
        if let Some(s) = seen.scheduled {
            prop_assert!(s <= seen.start);
        }
        if let Some((end, outcome)) = &seen.end {
            prop_assert!(*end >= seen.start);
            if let Outcome::Failed { reason, .. } = outcome {
                prop_assert!(reason == "JobFailed" || reason == "DeadlineExceeded");
            }
        }
        Ok(())
    });
    println!("  of which read as a loop's Job: {}", read.into_inner());
}

// ---- status ----

fn counter() -> impl Strategy<Value = i64> {
    prop_oneof![6 => 0i64..30, 1 => any::<i64>(), 1 => prop::sample::select(vec![i64::MAX, i64::MAX - 1, i64::MIN, -1])]
}

/// A status as JSON: mostly well formed with extreme values, sometimes with fields of the
/// wrong type or unknown ones.
fn status_json() -> impl Strategy<Value = Value> {
    let time = || prop::option::of(instant().prop_map(|t| Value::String(Time(t).format())));
    let record = (
        counter(),
        instant(),
        prop::option::of(instant()),
        prop_oneof![20 => prop::sample::select(vec!["Running", "Succeeded", "Failed"]), 1 => Just("Other")],
        any::<bool>(),
    )
        .prop_map(|(n, start, end, result, manual)| {
            json!({"loop": n, "jobName": format!("r-{n}"), "trigger": if manual {"Manual"} else {"Scheduled"},
                   "dueTime": Time(start).format(), "startTime": Time(start).format(),
                   "endTime": end.map(|e| Time(e).format()), "result": result})
        });
    let typed = (
        (counter(), counter(), counter(), counter(), counter(), counter(), counter()),
        (time(), time(), time(), time()),
        prop::option::of(prop::sample::select(vec!["a", "b", ""])),
        prop::option::of("r-[0-9]{1,3}"),
        prop::collection::vec(record, 0..12),
        prop::option::of((counter(), counter(), any::<bool>(), instant())),
    )
        .prop_map(|((started, finished, ok, failed, overruns, streak, manual), (last_start, last_end, last_failure, last_success), request, active, history, suspension)| {
            json!({
                "loopsStarted": started, "lastFinishedLoop": finished, "loopsSucceeded": ok, "loopsFailed": failed,
                "overruns": overruns, "consecutiveFailures": streak, "manualLoops": manual,
                "lastStartTime": last_start, "lastCompletionTime": last_end, "lastFailureTime": last_failure,
                "lastSuccessTime": last_success, "lastHandledRunRequest": request, "activeJob": active,
                "history": history,
                "failureSuspension": suspension.map(|(l, f, active, t)| json!({"loop": l, "failures": f, "generation": 1, "active": active, "time": Time(t).format()})),
            })
        });
    let garbage = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,30}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({"x": 1})),
    ];
    let keys = prop::sample::select(vec![
        "loopsStarted",
        "lastStartTime",
        "history",
        "conditions",
        "phase",
        "lastOverrun",
        "unknownField",
        "activeJob",
    ]);
    let spoil = prop_oneof![4 => Just(None), 1 => (keys, garbage).prop_map(Some)];
    (typed, spoil).prop_map(|(mut v, spoil)| {
        if let Some((k, g)) = spoil {
            v[k] = g;
        }
        v
    })
}

/// The Jobs of a LoopService as observed, numbered near the status's counters.
fn observed_jobs() -> impl Strategy<Value = Vec<ObservedJob>> {
    let one = (
        prop_oneof![4 => 1i64..25, 1 => 1i64..=i64::MAX],
        instant(),
        prop::option::of((instant(), any::<bool>())),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
        // No queue, waiting for its queue (running), or admitted by it.
        prop::option::of(prop::option::of(instant())),
    )
        .prop_map(|(n, start, end, request, queue)| ObservedJob {
            name: format!("r-{n}"),
            loop_number: n,
            start,
            scheduled: Some(start),
            run_request: request.map(String::from),
            requester: Default::default(),
            end: end.map(|(e, ok)| {
                (
                    e.max(start),
                    if ok {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed { reason: loopservice_operator::reasons::Reason::JobFailed, message: "exit 1".into() }
                    },
                )
            }),
            queue: queue.map(|_| "q".to_string()),
            queued_since: match (queue, end) {
                (Some(None), None) => Some(start),
                _ => None,
            },
            admitted: queue.flatten().map(|a| a.max(start)),
        });
    prop::collection::vec(one, 0..6)
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![3 => (1000u64..120_000).prop_map(Duration::from_millis), 1 => Just(Duration::from_secs(1)), 1 => Just(MAX_DURATION)]
}

#[test]
fn any_status_and_jobs_are_recorded_and_decided_without_panic_and_counters_never_go_back() {
    let inputs = (
        status_json(),
        observed_jobs(),
        instant(),
        duration(),
        prop::option::of(duration()),
        prop::option::of((duration(), duration())),
        (
            prop::option::of(counter()),
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["a", "b", "c", ""])),
            prop::option::of(counter()),
            prop::option::of(duration()),
            prop::option::of(duration()),
        ),
    );
    let decoded = AtomicU64::new(0);
    fuzz("status", inputs, |(raw, jobs, now, interval, jitter, backoff, (loops, suspended, request, suspend_after, offset, window))| {
        let Ok(prev) = serde_json::from_value::<LoopServiceStatus>(raw) else { return Ok(()) };
        decoded.fetch_add(1, Ordering::Relaxed);
        // What the operator writes, it reads back the same.
        let again: LoopServiceStatus = serde_json::from_value(serde_json::to_value(&prev).unwrap()).unwrap();
        prop_assert_eq!(&again, &prev);

        let (mut st, _notes) = status::record_jobs(&prev, &jobs, interval, now);
        for (what, before, after) in [
            ("loopsStarted", prev.loops_started, st.loops_started),
            ("lastFinishedLoop", prev.last_finished_loop, st.last_finished_loop),
            ("loopsSucceeded", prev.loops_succeeded, st.loops_succeeded),
            ("loopsFailed", prev.loops_failed, st.loops_failed),
            ("overruns", prev.overruns, st.overruns),
        ] {
            prop_assert!(after >= before, "{} went from {} to {}", what, before, after);
        }
        if prev.history.len() <= status::HISTORY {
            prop_assert!(st.history.len() <= status::HISTORY);
        }
        let backoff = backoff.map(|(a, b)| (a.min(b), a.max(b)));
        let _ = status::suspend_after_failures(&mut st, suspend_after, Some(1), now);
        let uid = "0c4d2f7e-1111-2222-3333-444455556666";
        let jitter = jitter.filter(|j| *j < interval).map(|max| Jitter { uid, max, created: now });
        let alignment = offset.filter(|o| *o < interval).map(|offset| Alignment { offset, created: now });
        let rules = status::Rules {
            loops,
            suspended,
            run_request: request,
            interval,
            jitter: jitter.as_ref(),
            backoff,
            alignment,
            catch_up: window,
            windows: &[],
        };
        let grid = alignment.map(|a| Grid { interval, offset: a.offset });
        let missed_before = st.loops_missed;
        let skipped = status::skip_missed(&mut st, &rules, now);
        prop_assert!(st.loops_missed >= missed_before);
        prop_assert_eq!(skipped.is_some(), st.loops_missed > missed_before);
        let decision = status::decide(&st, &rules, now);
        // After the skip, a scheduled loop due now is no later than the window.
        if let (Some(w), Decision::Launch { scheduled, run_request: None, loop_number }) = (window, &decision) {
            let start = jitter.map_or(*scheduled, |j| schedule::add(*scheduled, j.offset(*loop_number)));
            prop_assert!(
                schedule::until(now, start) <= w,
                "starts {:?} after it was due, past the window {:?}",
                schedule::until(now, start),
                w
            );
        }
        match &decision {
            Decision::Launch { loop_number, scheduled, run_request } => {
                prop_assert_eq!(*loop_number, st.loops_started.saturating_add(1));
                prop_assert!(*scheduled <= schedule::add(now, Duration::from_millis(5)));
                // With alignment, a scheduled loop is due on the grid.
                if let (Some(g), None) = (grid, run_request) {
                    prop_assert_eq!(g.at_or_after(*scheduled), *scheduled);
                }
            }
            Decision::Wait { until } => {
                // Nothing recorded holds a loop back longer than one interval, its jitter
                // and the longest backoff, and with alignment up to one more interval.
                let aligned = grid.map_or(Duration::ZERO, |g| g.interval);
                let most = interval + aligned + jitter.map_or(Duration::ZERO, |j| j.max) + backoff.map_or(Duration::ZERO, |b| b.1);
                prop_assert!(*until > now && *until <= schedule::add(now, most), "{:?} from {} with {:?}", until, now, most);
            }
            Decision::Running { job } => prop_assert_eq!(Some(job), st.active_job.as_ref()),
            Decision::Finished => prop_assert!(loops.is_some()),
            Decision::Suspended => prop_assert!(suspended),
            Decision::SuspendedAfterFailures { .. } => {}
            Decision::Paused { .. } => prop_assert!(false, "paused with no pause windows"),
            Decision::Invalid { .. } => prop_assert!(false, "decide never finds a spec invalid"),
        }
        let prev = st.clone();
        status::finalize(&mut st, &prev, status::Verdict { decision: &decision, obstacle: None, loops, generation: Some(1) }, now);
        prop_assert!(st.phase.is_some());
        prop_assert!(st.conditions.iter().filter(|c| c.type_ == "Ready").count() == 1);
        status::invalid(&mut st, &"x".repeat(100_000), Some(2), now);
        prop_assert!(st.conditions.iter().all(|c| c.message.len() <= status::MAX_INVALID_MESSAGE));
        // And it is still a status the operator can write and read.
        let written: LoopServiceStatus = serde_json::from_value(serde_json::to_value(&st).unwrap()).unwrap();
        prop_assert_eq!(written, st);
        Ok(())
    });
    println!("  of which decoded and decided: {}", decoded.into_inner());
}
