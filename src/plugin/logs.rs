//! `logs NAME [--loop N] [-f]`: the log of a loop's Pod (container `loop`). When the API
//! server cannot serve it (a kubelet it cannot reach, say), its error goes to stderr and the
//! container's termination message stands in: by default the tail of a failed loop's log, or
//! what the loop wrote to /dev/termination-log.

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};

use super::connect::Target;
use super::{Error, EXIT_OK};
use crate::crd::LoopService;
use crate::keys::{CONTAINER, LABEL_LOOP, LABEL_UID};

pub async fn logs(t: &Target, name: &str, loop_number: Option<i64>, follow: bool) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let ls = api.get(name).await.map_err(|e| Error::loopservice("reading", name, &t.namespace, e))?;
    let uid = ls.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &t.namespace);
    let mut selector = format!("{LABEL_UID}={uid}");
    if let Some(n) = loop_number {
        selector.push_str(&format!(",{LABEL_LOOP}={n}"));
    }
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::api(format!("listing the pods of loopservice {name:?}"), e))?
        .items;
    let pod = pick_pod(&list, loop_number).ok_or_else(|| match loop_number {
        Some(n) => Error::Other(format!("loop {n} of loopservice {name:?} has no Pod (it has not run, or its Job was deleted)")),
        None => Error::Other(format!("loopservice {name:?} has no loop with a Pod (no loop has run, or their Jobs were deleted)")),
    })?;
    let pod_name = pod.name_any();
    eprintln!("loop {}: pod/{pod_name}", pod_loop(pod).unwrap_or_default());
    let params = LogParams { container: Some(CONTAINER.to_string()), follow, ..LogParams::default() };
    let fetched =
        if follow { stream(&pods, &pod_name, &params).await } else { pods.logs(&pod_name, &params).await.map(|text| print!("{text}")) };
    let Err(e) = fetched else { return Ok(EXIT_OK) };
    eprintln!("error: the API server could not serve the log of pod/{pod_name} container {CONTAINER:?}: {}", super::describe(&e));
    let ended = match termination(pod) {
        Some(t) => t,
        None if follow => {
            eprintln!("waiting for the container to end, to show its termination message instead");
            let done = await_condition(pods, &pod_name, |p: Option<&Pod>| p.is_none_or(|p| termination(p).is_some()))
                .await
                .map_err(|e| Error::Other(format!("watching pod/{pod_name}: {e}")))?;
            done.as_ref()
                .and_then(termination)
                .ok_or_else(|| Error::Other(format!("pod/{pod_name} was deleted before its container ended")))?
        }
        None => {
            return Err(Error::Other(format!(
                "container {CONTAINER:?} of pod/{pod_name} is still running, so it has no termination message to show instead; try again when it has ended, or with -f"
            )));
        }
    };
    eprintln!(
        "showing the termination message of container {CONTAINER:?} instead (it exited with code {}): the tail of its log when it failed, else what it wrote to /dev/termination-log",
        ended.exit_code
    );
    match ended.message {
        Some(m) => println!("{}", m.trim_end()),
        None => eprintln!("(the termination message is empty)"),
    }
    Ok(EXIT_OK)
}

/// Copies the followed log to stdout line by line, as it comes.
async fn stream(pods: &Api<Pod>, name: &str, params: &LogParams) -> Result<(), kube::Error> {
    let mut lines = pods.log_stream(name, params).await?.lines();
    while let Some(line) = lines.try_next().await.map_err(kube::Error::ReadEvents)? {
        println!("{line}");
    }
    Ok(())
}

/// The loop number a Pod belongs to (its `loops.dev/loop` label).
fn pod_loop(p: &Pod) -> Option<i64> {
    p.labels().get(LABEL_LOOP)?.parse().ok()
}

/// The Pod to read: of loop `n` when asked for, else of the latest loop that has one; of
/// several Pods of that loop (the retries of `backoffLimit`), the newest.
pub fn pick_pod(pods: &[Pod], n: Option<i64>) -> Option<&Pod> {
    pods.iter()
        .filter(|p| pod_loop(p).is_some_and(|l| n.is_none_or(|n| n == l)))
        .max_by_key(|p| (pod_loop(p), p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.name_any()))
}

/// The loop container's end, once it has ended.
#[derive(Debug, PartialEq)]
pub struct Ended {
    pub exit_code: i32,
    /// The termination message, when not empty.
    pub message: Option<String>,
}

/// How the `loop` container of `pod` ended; `None` while it has not.
pub fn termination(pod: &Pod) -> Option<Ended> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let t = statuses.iter().find(|c| c.name == CONTAINER)?.state.as_ref()?.terminated.as_ref()?;
    let message = t.message.clone().filter(|m| !m.trim().is_empty());
    Some(Ended { exit_code: t.exit_code, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, n: i64, created: &str, terminated: Option<(i32, &str)>) -> Pod {
        let state = match terminated {
            Some((code, m)) => json!({"terminated": {"exitCode": code, "message": m}}),
            None => json!({"running": {}}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created, "labels": {"loops.dev/loop": n.to_string()}},
            "status": {"containerStatuses": [
                {"name": "sidecar", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": {"terminated": {"exitCode": 9, "message": "not mine"}}},
                {"name": "loop", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_loop_is_picked_unless_a_loop_is_asked_for_and_its_newest_pod() {
        let pods = [
            pod("r-9-aaaaa", 9, "2026-11-25T10:00:00Z", Some((0, ""))),
            pod("r-10-first", 10, "2026-11-25T10:01:00Z", Some((1, "try 1"))),
            pod("r-10-again", 10, "2026-11-25T10:01:05Z", None),
            pod("r-2-bbbbb", 2, "2026-11-25T09:00:00Z", None),
        ];
        let name = |p: Option<&Pod>| p.map(|p| p.name_any());
        // Loop 10 sorts after loop 9 and 2 as a number, not as text.
        assert_eq!(name(pick_pod(&pods, None)).as_deref(), Some("r-10-again"));
        assert_eq!(name(pick_pod(&pods, Some(9))).as_deref(), Some("r-9-aaaaa"));
        assert_eq!(name(pick_pod(&pods, Some(3))), None);
        assert_eq!(name(pick_pod(&[], None)), None);
    }

    #[test]
    fn the_termination_message_is_the_loop_containers_once_it_ended() {
        let ended = pod("a", 1, "2026-11-25T10:00:00Z", Some((1, "last lines\n")));
        assert_eq!(termination(&ended), Some(Ended { exit_code: 1, message: Some("last lines\n".into()) }));
        let quiet = pod("b", 1, "2026-11-25T10:00:00Z", Some((0, " \n")));
        assert_eq!(termination(&quiet), Some(Ended { exit_code: 0, message: None }));
        assert_eq!(termination(&pod("c", 1, "2026-11-25T10:00:00Z", None)), None, "the sidecar's end is not the loop's");
    }
}
