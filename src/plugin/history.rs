//! `history NAME`: status.history as a table, newest loop first.

use jiff::Timestamp;
use kube::Api;

use super::connect::Target;
use super::format::{self, NONE};
use super::{Error, Output, EXIT_OK};
use crate::crd::{LoopRecord, LoopResult, LoopService, Trigger};
use crate::requester::clean;

/// The longest message shown in the table; `-o json|yaml` has all of it.
const MESSAGE_WIDTH: usize = 80;
/// The longest requester and reason shown in the table.
const BY_WIDTH: usize = 40;
const REASON_WIDTH: usize = 40;
/// BY of a manual loop whose request did not say who asked.
pub const UNKNOWN: &str = "<unknown>";

pub async fn history(t: &Target, name: &str, output: Option<Output>) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let ls = api.get(name).await.map_err(|e| Error::loopservice("reading", name, &t.namespace, e))?;
    let history = ls.status.map(|s| s.history).unwrap_or_default();
    match output {
        Some(f) => format::print(&format::data(&history, f)?)?,
        None if history.is_empty() => format::note(&format!("No loops recorded for loopservice {name:?} yet.")),
        None => format::print(&render(&history, Timestamp::now()))?,
    }
    Ok(EXIT_OK)
}

/// `Succeeded`, `Running`, `Failed (REASON)` or `Missed`.
pub fn result_text(result: LoopResult, reason: Option<&str>) -> String {
    match (result, reason) {
        (LoopResult::Failed, Some(r)) if !r.is_empty() => format!("Failed ({r})"),
        (r, _) => format!("{r:?}"),
    }
}

/// The table, with start times relative to `now`. A Missed record ran no loop: it shows how
/// many due times it covers, from when.
pub fn render(history: &[LoopRecord], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|r| {
            if r.result == LoopResult::Missed {
                let count = r.missed_due_times.unwrap_or(1);
                return vec![
                    NONE.to_string(),
                    r.trigger.as_str().to_string(),
                    NONE.to_string(),
                    NONE.to_string(),
                    NONE.to_string(),
                    format!("Missed ({count} due time{}, from {})", if count == 1 { "" } else { "s" }, format::relative(r.due_time.0, now)),
                    NONE.to_string(),
                    NONE.to_string(),
                    shown(r.message.as_deref(), MESSAGE_WIDTH),
                ];
            }
            let mut duration = match r.duration_seconds {
                Some(s) if r.overran => format!("{} (overrun)", format::seconds(s)),
                Some(s) => format::seconds(s),
                None => NONE.to_string(),
            };
            // A loop whose Job waited for its queue: how much of its time that was.
            if let Some(admitted) = r.admitted_time {
                let queued = crate::schedule::seconds_between(r.start_time.0, admitted.0).max(0.0);
                duration.push_str(&format!(", {} queued", format::seconds(queued)));
            }
            vec![
                r.r#loop.to_string(),
                r.trigger.as_str().to_string(),
                requested_by(r),
                format::relative(r.start_time.0, now),
                duration,
                result_text(r.result, r.reason.as_deref()),
                r.job_name.clone(),
                shown(r.request_reason.as_deref(), REASON_WIDTH),
                shown(r.message.as_deref(), MESSAGE_WIDTH),
            ]
        })
        .collect();
    format::table(&["LOOP", "TRIGGER", "BY", "STARTED", "DURATION", "RESULT", "JOB", "REASON", "MESSAGE"], &rows)
}

/// Who asked for a manual loop ([`UNKNOWN`] when its request did not say); no one for a
/// scheduled loop.
fn requested_by(r: &LoopRecord) -> String {
    match (r.trigger, r.requested_by.as_deref()) {
        (Trigger::Scheduled, _) => NONE.to_string(),
        (Trigger::Manual, by) => {
            by.and_then(|by| clean(by, 4 * BY_WIDTH)).map_or_else(|| UNKNOWN.to_string(), |by| format::cell(&by, BY_WIDTH))
        }
    }
}

/// A text cell of at most `width` characters on one line, [`NONE`] when there is no text (or
/// only what cannot be shown).
fn shown(text: Option<&str>, width: usize) -> String {
    text.and_then(|t| clean(t, 4 * width)).map_or_else(|| NONE.to_string(), |t| format::cell(&t, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Time, Trigger};

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    #[test]
    fn the_table_has_one_row_per_loop_with_who_asked_why_the_result_and_a_one_line_message() {
        let h = vec![
            LoopRecord {
                r#loop: 4,
                job_name: "report-4".into(),
                trigger: Trigger::Manual,
                requested_by: Some("system:serviceaccount:ci:deployer".into()),
                request_reason: Some("release 2.3\nneeds a fresh report".into()),
                due_time: at(-2),
                start_time: at(-2),
                end_time: None,
                duration_seconds: None,
                result: LoopResult::Running,
                reason: None,
                message: None,
                overran: false,
                admitted_time: None,
                missed_due_times: None,
            },
            LoopRecord {
                r#loop: 3,
                job_name: "report-3".into(),
                trigger: Trigger::Manual,
                requested_by: None,
                request_reason: None,
                due_time: at(-5),
                start_time: at(-5),
                end_time: Some(at(-4)),
                duration_seconds: Some(1.0),
                result: LoopResult::Succeeded,
                reason: None,
                message: None,
                overran: false,
                admitted_time: None,
                missed_due_times: None,
            },
            LoopRecord {
                r#loop: 2,
                job_name: "report-2".into(),
                trigger: Trigger::Scheduled,
                requested_by: None,
                request_reason: None,
                due_time: at(-70),
                start_time: at(-70),
                end_time: Some(at(-28)),
                duration_seconds: Some(41.23),
                result: LoopResult::Failed,
                reason: Some("JobFailed".into()),
                message: Some("container exited with code 1 (Error):\nboom".into()),
                missed_due_times: None,
                overran: true,
                admitted_time: Some(at(-40)),
            },
        ];
        assert_eq!(
            render(&h, at(0).0),
            "LOOP   TRIGGER     BY                                  STARTED   DURATION                      RESULT               JOB        REASON                             MESSAGE\n\
             4      Manual      system:serviceaccount:ci:deployer   2s ago    <none>                        Running              report-4   release 2.3 needs a fresh report   <none>\n\
             3      Manual      <unknown>                           5s ago    1s                            Succeeded            report-3   <none>                             <none>\n\
             2      Scheduled   <none>                              70s ago   41.2s (overrun), 30s queued   Failed (JobFailed)   report-2   <none>                             container exited with code 1 (Error): boom\n"
        );
    }

    #[test]
    fn a_missed_record_shows_how_many_due_times_from_when_and_no_loop() {
        let missed = LoopRecord {
            r#loop: 5,
            job_name: String::new(),
            trigger: Trigger::Scheduled,
            due_time: at(-3600),
            start_time: at(-10),
            end_time: None,
            duration_seconds: None,
            result: LoopResult::Missed,
            reason: None,
            message: Some("missed 59 due times".into()),
            overran: false,
            admitted_time: None,
            missed_due_times: Some(59),
            requested_by: None,
            request_reason: None,
        };
        let table = render(&[missed], at(0).0);
        let row = table.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(
            cells,
            [
                "<none>",
                "Scheduled",
                "<none>",
                "<none>",
                "<none>",
                "Missed (59 due times, from 60m ago)",
                "<none>",
                "<none>",
                "missed 59 due times"
            ]
        );
    }
}
