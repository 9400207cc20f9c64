//! Who asked for a manual loop, and why: in its history record from its start to its end,
//! in its LoopStarted Event, and in a status rebuilt from the Jobs.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::requester::Requester;

const I: Duration = Duration::from_secs(10);

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn alice() -> Requester {
    Requester { by: Some("alice".into()), reason: Some("the night's data came late".into()) }
}

/// Loop `n`'s Job, started at `t(n)`; answering `request` by `requester` when there is one.
fn job(n: i64, request: Option<&str>, requester: Requester, end: Option<Outcome>) -> ObservedJob {
    ObservedJob {
        name: format!("r-{n}"),
        loop_number: n,
        start: t(n),
        scheduled: Some(t(n)),
        run_request: request.map(str::to_string),
        requester,
        end: end.map(|o| (t(n + 1), o)),
        queue: None,
        queued_since: None,
        admitted: None,
    }
}

fn record(st: &LoopServiceStatus, n: i64) -> (Trigger, Option<&str>, Option<&str>) {
    let r = st.history.iter().find(|r| r.r#loop == n).unwrap_or_else(|| panic!("loop {n} in {:?}", st.history));
    (r.trigger, r.requested_by.as_deref(), r.request_reason.as_deref())
}

#[test]
fn a_manual_loop_records_who_asked_and_why_from_its_start_to_its_end() {
    let mut st = LoopServiceStatus::default();
    let note = launched(&mut st, &job(1, Some("2026-11-25T10:00:00Z"), alice(), None));
    assert_eq!(note.message, "started loop 1 as Job r-1 (run requested at 2026-11-25T10:00:00Z by alice: the night's data came late)");
    assert_eq!(record(&st, 1), (Trigger::Manual, Some("alice"), Some("the night's data came late")));
    // Its end keeps them.
    let (st, _) = record_jobs(&st, &[job(1, Some("2026-11-25T10:00:00Z"), alice(), Some(Outcome::Succeeded))], I, t(3));
    assert_eq!(st.history[0].result, LoopResult::Succeeded);
    assert_eq!(record(&st, 1), (Trigger::Manual, Some("alice"), Some("the night's data came late")));

    // A request that does not say who asked (an annotation written by hand) is an unknown user's.
    let mut st = LoopServiceStatus::default();
    let note = launched(&mut st, &job(1, Some("by-hand"), Requester::UNKNOWN, None));
    assert_eq!(note.message, "started loop 1 as Job r-1 (run requested at by-hand by an unknown user)");
    assert_eq!(record(&st, 1), (Trigger::Manual, None, None));
    // A scheduled loop names no one, nor does its Event.
    let note = launched(&mut st, &job(2, None, alice(), None));
    assert_eq!(note.message, "started loop 2 as Job r-2");
    assert_eq!(record(&st, 2), (Trigger::Scheduled, None, None));
}

#[test]
fn a_refused_manual_loop_records_who_asked() {
    let mut st = LoopServiceStatus::default();
    rejected(&mut st, &job(1, Some("now"), alice(), None), "exceeded quota: pods=10", I);
    assert_eq!(st.history[0].result, LoopResult::Failed);
    assert_eq!(record(&st, 1), (Trigger::Manual, Some("alice"), Some("the night's data came late")));
}

#[test]
fn a_status_rebuilt_from_the_jobs_keeps_who_asked_for_each_manual_loop() {
    let bob = Requester { by: Some("bob".into()), reason: None };
    let jobs = [
        job(1, None, Requester::UNKNOWN, Some(Outcome::Succeeded)),
        job(2, Some("a"), alice(), Some(Outcome::Succeeded)),
        job(3, Some("b"), bob, None),
    ];
    // The status was lost (a restore, a CRD reinstalled): the Jobs say it all again.
    let (st, _) = record_jobs(&LoopServiceStatus::default(), &jobs, I, t(10));
    assert_eq!(record(&st, 1), (Trigger::Scheduled, None, None));
    assert_eq!(record(&st, 2), (Trigger::Manual, Some("alice"), Some("the night's data came late")));
    assert_eq!(record(&st, 3), (Trigger::Manual, Some("bob"), None));
}
