//! `list [-A]`: `kubectl get loopservices` with relative times and the last result.

use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::connect::Target;
use super::format::{self, NONE};
use super::history::result_text;
use super::{Error, Output, EXIT_OK};
use crate::crd::{LoopResult, LoopService, LoopServiceStatus, Time};

/// One LoopService as `list` shows it; `-o json|yaml` prints these, times absolute.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub interval: String,
    pub phase: Option<String>,
    pub loops: i64,
    pub failed: i64,
    /// How the latest finished loop ended: `Succeeded`, or `Failed (REASON)`.
    pub last_result: Option<String>,
    pub last_run: Option<Time>,
    pub next_run: Option<Time>,
    pub created: Option<Time>,
}

pub async fn list(t: &Target, all_namespaces: bool, output: Option<Output>) -> Result<u8, Error> {
    let api: Api<LoopService> = if all_namespaces { Api::all(t.client.clone()) } else { Api::namespaced(t.client.clone(), &t.namespace) };
    let items = api.list(&ListParams::default()).await.map_err(|e| Error::api("listing loopservices", e))?.items;
    let mut rows: Vec<Row> = items.iter().map(row).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    match output {
        Some(f) => format::print(&format::data(&rows, f)?)?,
        None if rows.is_empty() => {
            if all_namespaces {
                format::note("No resources found");
            } else {
                format::note(&format!("No resources found in {} namespace.", t.namespace));
            }
        }
        None => format::print(&render(&rows, all_namespaces, Timestamp::now()))?,
    }
    Ok(EXIT_OK)
}

fn row(ls: &LoopService) -> Row {
    let st = ls.status.clone().unwrap_or_default();
    Row {
        namespace: ls.namespace().unwrap_or_default(),
        name: ls.name_any(),
        interval: ls.spec.interval.clone(),
        phase: st.phase.map(|p| p.to_string()),
        loops: st.loops_started,
        failed: st.loops_failed,
        last_result: last_result(&st),
        last_run: st.last_start_time,
        next_run: st.next_run_time,
        created: ls.metadata.creation_timestamp.as_ref().map(|t| Time(t.0)),
    }
}

/// How the latest finished loop ended, from the history, else from the counters (a status
/// written before the history existed).
pub fn last_result(st: &LoopServiceStatus) -> Option<String> {
    if let Some(r) = st.history.iter().find(|r| r.result != LoopResult::Running) {
        return Some(result_text(r.result, r.reason.as_deref()));
    }
    if st.last_finished_loop == 0 {
        return None;
    }
    if st.consecutive_failures > 0 {
        let reason = st.last_error.as_ref().map(|e| e.reason.as_str());
        return Some(result_text(LoopResult::Failed, reason));
    }
    Some(result_text(LoopResult::Succeeded, None))
}

/// The table, with times relative to `now`.
pub fn render(rows: &[Row], with_namespace: bool, now: Timestamp) -> String {
    let mut headers = vec!["NAME", "INTERVAL", "PHASE", "LOOPS", "FAILED", "LAST RESULT", "LAST RUN", "NEXT RUN", "AGE"];
    if with_namespace {
        headers.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut c = vec![
                r.name.clone(),
                r.interval.clone(),
                r.phase.clone().unwrap_or_else(|| NONE.to_string()),
                r.loops.to_string(),
                r.failed.to_string(),
                r.last_result.clone().unwrap_or_else(|| NONE.to_string()),
                format::relative_or_none(r.last_run.map(|t| t.0), now),
                format::relative_or_none(r.next_run.map(|t| t.0), now),
                r.created.map_or_else(|| NONE.to_string(), |c| format::human_duration(crate::schedule::until(now, c.0))),
            ];
            if with_namespace {
                c.insert(0, r.namespace.clone());
            }
            c
        })
        .collect();
    format::table(&headers, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LoopError, LoopRecord, Trigger};

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    fn record(n: i64, result: LoopResult, reason: Option<&str>) -> LoopRecord {
        LoopRecord {
            r#loop: n,
            job_name: format!("x-{n}"),
            trigger: Trigger::Scheduled,
            due_time: at(0),
            start_time: at(0),
            end_time: None,
            duration_seconds: None,
            result,
            reason: reason.map(str::to_string),
            message: None,
            overran: false,
        }
    }

    #[test]
    fn the_last_result_is_the_latest_finished_loops() {
        let mut st = LoopServiceStatus::default();
        assert_eq!(last_result(&st), None);
        st.history = vec![
            record(3, LoopResult::Running, None),
            record(2, LoopResult::Failed, Some("DeadlineExceeded")),
            record(1, LoopResult::Succeeded, None),
        ];
        assert_eq!(last_result(&st).as_deref(), Some("Failed (DeadlineExceeded)"));
        st.history.remove(1);
        assert_eq!(last_result(&st).as_deref(), Some("Succeeded"));
        // Without a history, the counters say it.
        let st = LoopServiceStatus {
            last_finished_loop: 4,
            consecutive_failures: 1,
            last_error: Some(LoopError { r#loop: 4, reason: "JobFailed".into(), message: "m".into(), time: at(0) }),
            ..LoopServiceStatus::default()
        };
        assert_eq!(last_result(&st).as_deref(), Some("Failed (JobFailed)"));
    }

    #[test]
    fn the_table_shows_relative_times_from_the_injected_now() {
        let rows = vec![
            Row {
                namespace: "ops".into(),
                name: "hello".into(),
                interval: "10s".into(),
                phase: Some("Waiting".into()),
                loops: 3,
                failed: 0,
                last_result: Some("Succeeded".into()),
                last_run: Some(at(-8)),
                next_run: Some(at(2)),
                created: Some(at(-30)),
            },
            Row {
                namespace: "ops".into(),
                name: "new".into(),
                interval: "1h".into(),
                phase: None,
                loops: 0,
                failed: 0,
                last_result: None,
                last_run: None,
                next_run: None,
                created: Some(at(-200)),
            },
        ];
        assert_eq!(
            render(&rows, false, at(0).0),
            "NAME    INTERVAL   PHASE     LOOPS   FAILED   LAST RESULT   LAST RUN   NEXT RUN   AGE\n\
             hello   10s        Waiting   3       0        Succeeded     8s ago     in 2s      30s\n\
             new     1h         <none>    0       0        <none>        <none>     <none>     3m20s\n"
        );
        assert!(render(&rows, true, at(0).0).starts_with("NAMESPACE   NAME "));
    }
}
