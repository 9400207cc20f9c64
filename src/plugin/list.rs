//! `list [-A]`: `kubectl get loopservices` with relative times and the last result. Each
//! LoopService is decoded on its own: one that does not decode (stored before a change to the
//! CRD, or written past its schema) is a row that says why, not the end of the listing.

use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::connect::Target;
use super::format::{self, note, NONE};
use super::history::result_text;
use super::{Error, Output, EXIT_OK};
use crate::crd::{LoopResult, LoopService, LoopServiceStatus, Time};

/// One LoopService as `list` shows it; `-o json|yaml` prints these, times absolute.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub interval: Option<String>,
    pub phase: Option<String>,
    pub loops: Option<i64>,
    pub failed: Option<i64>,
    /// How the latest finished loop ended: `Succeeded`, or `Failed (REASON)`.
    pub last_result: Option<String>,
    pub last_run: Option<Time>,
    pub next_run: Option<Time>,
    pub created: Option<Time>,
    /// Why the LoopService cannot be read; the fields above it are unknown then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the table shows for a value of a LoopService it cannot read (kubectl's word).
const UNKNOWN: &str = "<unknown>";

/// The longest error shown in the table; `-o json|yaml` has all of it.
const ERROR_WIDTH: usize = 60;

pub async fn list(t: &Target, all_namespaces: bool, output: Option<Output>) -> Result<u8, Error> {
    let resource = ApiResource::erase::<LoopService>(&());
    let client = t.client.clone();
    let api: Api<DynamicObject> =
        if all_namespaces { Api::all_with(client, &resource) } else { Api::namespaced_with(client, &t.namespace, &resource) };
    let items = api.list(&ListParams::default()).await.map_err(|e| Error::api("listing loopservices", e))?.items;
    let rows = rows(&items);
    for r in &rows {
        if let Some(why) = &r.error {
            note(&format!("warning: loopservice {:?} in namespace {:?} cannot be read: {why}", r.name, r.namespace));
        }
    }
    match output {
        Some(f) => format::print(&format::data(&rows, f)?)?,
        None if rows.is_empty() => {
            if all_namespaces {
                note("No resources found");
            } else {
                note(&format!("No resources found in {} namespace.", t.namespace));
            }
        }
        None => format::print(&render(&rows, all_namespaces, Timestamp::now()))?,
    }
    Ok(EXIT_OK)
}

/// The rows of listed LoopServices, in namespace and name order.
pub fn rows(items: &[DynamicObject]) -> Vec<Row> {
    let mut rows: Vec<Row> = items.iter().map(|o| decode(o).map_or_else(|why| unreadable(o, why), |ls| row(&ls))).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// A listed object as a LoopService, or where and why it does not decode as one.
fn decode(obj: &DynamicObject) -> Result<LoopService, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize::<_, LoopService>(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

fn row(ls: &LoopService) -> Row {
    let st = ls.status.clone().unwrap_or_default();
    Row {
        namespace: ls.namespace().unwrap_or_default(),
        name: ls.name_any(),
        interval: Some(ls.spec.interval.clone()),
        phase: st.phase.map(|p| p.to_string()),
        loops: Some(st.loops_started),
        failed: Some(st.loops_failed),
        last_result: last_result(&st),
        last_run: st.last_start_time,
        next_run: st.next_run_time,
        created: ls.metadata.creation_timestamp.as_ref().map(|t| Time(t.0)),
        error: None,
    }
}

/// The row of an object that does not decode: its name, its age, and `why`.
fn unreadable(obj: &DynamicObject, why: String) -> Row {
    Row {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        interval: None,
        phase: None,
        loops: None,
        failed: None,
        last_result: None,
        last_run: None,
        next_run: None,
        created: obj.metadata.creation_timestamp.as_ref().map(|t| Time(t.0)),
        error: Some(why),
    }
}

/// How the latest finished loop ended, from the history, else from the counters (a status
/// written before the history existed).
pub fn last_result(st: &LoopServiceStatus) -> Option<String> {
    if let Some(r) = st.history.iter().find(|r| !matches!(r.result, LoopResult::Running | LoopResult::Missed)) {
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
            let mut c = match &r.error {
                None => cells(r, now),
                Some(why) => error_cells(r, why, now),
            };
            if with_namespace {
                c.insert(0, r.namespace.clone());
            }
            c
        })
        .collect();
    format::table(&headers, &cells)
}

fn cells(r: &Row, now: Timestamp) -> Vec<String> {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_string());
    vec![
        r.name.clone(),
        or_none(r.interval.clone()),
        or_none(r.phase.clone()),
        or_none(r.loops.map(|n| n.to_string())),
        or_none(r.failed.map(|n| n.to_string())),
        or_none(r.last_result.clone()),
        format::relative_or_none(r.last_run.map(|t| t.0), now),
        format::relative_or_none(r.next_run.map(|t| t.0), now),
        age(r, now),
    ]
}

/// A LoopService that cannot be read: PHASE says so, and LAST RESULT says why.
fn error_cells(r: &Row, why: &str, now: Timestamp) -> Vec<String> {
    let unknown = || UNKNOWN.to_string();
    vec![
        r.name.clone(),
        unknown(),
        "<error>".to_string(),
        unknown(),
        unknown(),
        format::cell(&format!("cannot read it: {why}"), ERROR_WIDTH),
        unknown(),
        unknown(),
        age(r, now),
    ]
}

fn age(r: &Row, now: Timestamp) -> String {
    r.created.map_or_else(|| NONE.to_string(), |c| format::human_duration(crate::schedule::until(now, c.0)))
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
            requested_by: None,
            request_reason: None,
            due_time: at(0),
            start_time: at(0),
            end_time: None,
            duration_seconds: None,
            result,
            reason: reason.map(str::to_string),
            message: None,
            overran: false,
            admitted_time: None,
            missed_due_times: None,
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
                interval: Some("10s".into()),
                phase: Some("Waiting".into()),
                loops: Some(3),
                failed: Some(0),
                last_result: Some("Succeeded".into()),
                last_run: Some(at(-8)),
                next_run: Some(at(2)),
                created: Some(at(-30)),
                error: None,
            },
            Row {
                namespace: "ops".into(),
                name: "new".into(),
                interval: Some("1h".into()),
                phase: None,
                loops: Some(0),
                failed: Some(0),
                last_result: None,
                last_run: None,
                next_run: None,
                created: Some(at(-200)),
                error: None,
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

    #[test]
    fn a_loopservice_that_does_not_decode_is_a_row_that_says_why_among_the_others() {
        let list: kube::core::ObjectList<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopServiceList", "metadata": {"resourceVersion": "9"},
            "items": [
                {"apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
                 "metadata": {"name": "zeta", "namespace": "ops", "creationTimestamp": "2027-01-15T07:59:30Z"},
                 "spec": {"interval": "10s", "image": "busybox"},
                 "status": {"phase": "Waiting", "loopsStarted": 2}},
                {"apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
                 "metadata": {"name": "broken", "namespace": "ops", "creationTimestamp": "2027-01-15T07:58:00Z"},
                 "spec": {"interval": 30, "image": "busybox"}},
            ],
        }))
        .unwrap();
        let rows = rows(&list.items);
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["broken", "zeta"]);
        assert_eq!(rows[0].error.as_deref(), Some("spec.interval: invalid type: integer `30`, expected a string"));
        assert_eq!((rows[1].error.as_deref(), rows[1].loops), (None, Some(2)));
        assert_eq!(
            render(&rows, false, at(0).0),
            "NAME     INTERVAL    PHASE     LOOPS       FAILED      LAST RESULT                                                    LAST RUN    NEXT RUN    AGE\n\
             broken   <unknown>   <error>   <unknown>   <unknown>   cannot read it: spec.interval: invalid type: integer `30`...   <unknown>   <unknown>   2m\n\
             zeta     10s         Waiting   2           0           <none>                                                         <none>      <none>      30s\n"
        );
        // As data, the error is there in full and what is unknown is null.
        let json = serde_json::to_value(&rows).unwrap();
        assert_eq!((json[0]["loops"].clone(), json[0]["error"].as_str()), (serde_json::Value::Null, rows[0].error.as_deref()));
        assert!(json[1].get("error").is_none());
    }
}
