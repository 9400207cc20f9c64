//! A loop whose Job waits for a queue (Kueue): phase Queued while it waits, the time of its
//! admission in its history record with one LoopAdmitted note carrying the wait, and an overrun
//! that says how much of it was the queue's.

use std::time::Duration;

use jiff::Timestamp;

use super::*;

const I: Duration = Duration::from_secs(10);

fn t(s: f64) -> Timestamp {
    Timestamp::from_millisecond(1_800_000_000_000 + (s * 1000.0) as i64).unwrap()
}

/// Loop `n`'s Job for queue `q`, created at `t(start)`: waiting, admitted at `admitted`, and
/// ended (succeeded) at `end`, as given.
fn queued(n: i64, start: f64, admitted: Option<f64>, end: Option<f64>) -> ObservedJob {
    ObservedJob {
        name: format!("r-{n}"),
        loop_number: n,
        start: t(start),
        scheduled: Some(t(start)),
        run_request: None,
        requester: Default::default(),
        end: end.map(|e| (t(e), Outcome::Succeeded)),
        queue: Some("q".into()),
        queued_since: admitted.is_none().then(|| t(start)),
        admitted: admitted.map(t),
    }
}

fn step(st: &LoopServiceStatus, jobs: &[ObservedJob], now: f64) -> (LoopServiceStatus, Vec<Note>) {
    let (mut st, notes) = record_jobs(st, jobs, I, t(now));
    let rules = Rules::every(I);
    let d = decide(&st, &rules, t(now));
    let prev = st.clone();
    finalize(&mut st, &prev, Verdict { decision: &d, obstacle: None, loops: None, generation: Some(1) }, t(now));
    (st, notes)
}

fn admitted_notes(notes: &[Note]) -> Vec<(String, Option<f64>)> {
    notes.iter().filter(|n| n.reason == Reason::LoopAdmitted).map(|n| (n.message.clone(), n.seconds)).collect()
}

#[test]
fn a_loop_waits_queued_then_runs_and_its_record_says_when_it_was_admitted() {
    let mut st = LoopServiceStatus::default();
    let note = launched(&mut st, &queued(1, 0.0, None, None));
    assert!(note.message.contains("waiting for queue q to admit it"), "{}", note.message);
    assert_eq!(st.queued_since, Some(Time(t(0.0))), "queued from the launch on");

    let (st, notes) = step(&st, &[queued(1, 0.0, None, None)], 4.0);
    assert_eq!(st.phase, Some(Phase::Queued));
    assert_eq!(st.queued_since, Some(Time(t(0.0))));
    let ready = st.conditions.iter().find(|c| c.type_ == ConditionType::Ready).unwrap();
    assert_eq!(ready.reason, Reason::Queued.as_str());
    assert!(ready.message.contains("waits for its queue to admit Job r-1"), "{}", ready.message);
    assert!(admitted_notes(&notes).is_empty());
    assert_eq!(st.history[0].admitted_time, None);

    let (st, notes) = step(&st, &[queued(1, 0.0, Some(2.5), None)], 5.0);
    assert_eq!(st.phase, Some(Phase::Running));
    assert_eq!(st.queued_since, None);
    assert_eq!(st.history[0].admitted_time, Some(Time(t(2.5))));
    assert_eq!(admitted_notes(&notes), vec![("queue q admitted Job r-1 of loop 1 after 2.5 s".to_string(), Some(2.5))]);

    // Seen again: no second note.
    let (st, notes) = step(&st, &[queued(1, 0.0, Some(2.5), None)], 6.0);
    assert!(admitted_notes(&notes).is_empty());
    // It ends within its interval: the next loop is due one interval after its Job's creation.
    let (st, _) = step(&st, &[queued(1, 0.0, Some(2.5), Some(7.0))], 7.5);
    assert_eq!((st.overruns, st.loops_succeeded), (0, 1));
    assert_eq!(st.next_run_time, Some(Time(t(10.0))));
    assert_eq!(st.history[0].admitted_time, Some(Time(t(2.5))), "kept once ended");
}

#[test]
fn a_loop_admitted_and_ended_between_two_looks_is_recorded_whole() {
    let mut st = LoopServiceStatus::default();
    launched(&mut st, &queued(1, 0.0, None, None));
    let (st, notes) = step(&st, &[queued(1, 0.0, Some(3.0), Some(4.0))], 5.0);
    assert_eq!(st.history[0].admitted_time, Some(Time(t(3.0))));
    assert_eq!(admitted_notes(&notes).len(), 1, "its wait is counted once");
    assert_eq!(st.phase, Some(Phase::Waiting));
}

#[test]
fn a_long_wait_in_the_queue_is_an_overrun_that_says_so() {
    let mut st = LoopServiceStatus::default();
    launched(&mut st, &queued(1, 0.0, None, None));
    let (st, _) = step(&st, &[queued(1, 0.0, Some(9.0), None)], 9.5);
    let (st, notes) = step(&st, &[queued(1, 0.0, Some(9.0), Some(12.0))], 12.5);
    assert_eq!(st.overruns, 1);
    let overrun = notes.iter().find(|n| n.reason == Reason::LoopOverrun).expect("an overrun note");
    assert!(overrun.message.contains("9.0 s of it waiting for its queue"), "{}", overrun.message);
    assert!(st.last_overrun.as_ref().unwrap().message.contains("waiting for its queue"));
    // The next loop starts at once: the previous one ended after its interval.
    assert_eq!(st.next_run_time, Some(Time(t(12.0))));
}

#[test]
fn a_loop_put_back_in_its_queue_is_queued_again() {
    // Kueue may evict an admitted Job (preemption): it is suspended again and waits.
    let mut st = LoopServiceStatus::default();
    launched(&mut st, &queued(1, 0.0, None, None));
    let (st, _) = step(&st, &[queued(1, 0.0, Some(1.0), None)], 2.0);
    assert_eq!(st.phase, Some(Phase::Running));
    let mut evicted = queued(1, 0.0, None, None);
    evicted.queued_since = Some(t(3.0));
    let (st, _) = step(&st, &[evicted], 4.0);
    assert_eq!(st.phase, Some(Phase::Queued));
    assert_eq!(st.queued_since, Some(Time(t(3.0))));
}
