//! `logs NAME [--loop N] [-f]`: the log of a loop's Pod (container `loop`). When the API
//! server cannot serve it (a kubelet it cannot reach, say), its error goes to stderr and the
//! container's termination message stands in: by default the tail of a failed loop's log, or
//! what the loop wrote to /dev/termination-log.
//!
//! The log goes to stdout as the API server sends it, byte for byte: a log can be larger
//! than memory, and a loop may write what is not UTF-8.

use std::io::{self, Write};

use futures::{pin_mut, AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};

use super::connect::Target;
use super::format::{self, note};
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
    note(&format!("loop {}: pod/{pod_name}", pod_loop(pod).unwrap_or_default()));
    let params = LogParams { container: Some(CONTAINER.to_string()), follow, ..LogParams::default() };
    let Err(e) = stream(&pods, &pod_name, &params).await? else { return Ok(EXIT_OK) };
    note(&format!("error: the API server could not serve the log of pod/{pod_name} container {CONTAINER:?}: {}", super::describe(&e)));
    let ended = match termination(pod) {
        Some(t) => t,
        None if follow => {
            note("waiting for the container to end, to show its termination message instead");
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
    note(&format!(
        "showing the termination message of container {CONTAINER:?} instead (it exited with code {}): the tail of its log when it failed, else what it wrote to /dev/termination-log",
        ended.exit_code
    ));
    match ended.message {
        Some(m) => format::print(&format!("{}\n", m.trim_end()))?,
        None => note("(the termination message is empty)"),
    }
    Ok(EXIT_OK)
}

/// Copies the log (followed or not) to stdout as it comes. The inner error is the API
/// server's, which the termination message can stand in for; the outer one is stdout's.
async fn stream(pods: &Api<Pod>, name: &str, params: &LogParams) -> Result<Result<(), kube::Error>, Error> {
    let log = match pods.log_stream(name, params).await {
        Ok(log) => log,
        Err(e) => return Ok(Err(e)),
    };
    match copy(log, &mut Stdout).await {
        Ok(()) => Ok(Ok(())),
        Err(Broken::Read(e)) => Ok(Err(kube::Error::ReadEvents(e))),
        Err(Broken::Write(e)) => Err(e),
    }
}

/// Where a copy stopped short.
#[derive(Debug)]
pub enum Broken {
    /// Reading the log failed.
    Read(io::Error),
    /// Writing it failed ([`Error::StdoutClosed`] when its reader has gone).
    Write(Error),
}

/// Copies `from` to `out` chunk by chunk as the bytes come, each flushed at once: at most one
/// chunk is held, and the bytes are never read as text.
pub async fn copy(from: impl AsyncBufRead, out: &mut impl Write) -> Result<(), Broken> {
    pin_mut!(from);
    loop {
        let chunk = from.fill_buf().await.map_err(Broken::Read)?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        format::write_out(out, chunk).map_err(Broken::Write)?;
        from.consume_unpin(n);
    }
}

/// Stdout, locked for each write only: the copy awaits the log between writes, and a lock held
/// across an await would tie the future to the thread it started on.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
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

    #[tokio::test]
    async fn a_log_is_copied_byte_for_byte_and_a_closed_stdout_stops_the_copy() {
        // Not UTF-8, no final newline, and more than one read buffer's worth.
        let mut log = b"caf\xe9 \xff\xfe\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', 20_000));
        let from = futures::io::BufReader::with_capacity(4096, futures::io::Cursor::new(log.clone()));
        let mut out = vec![];
        copy(from, &mut out).await.unwrap();
        assert_eq!(out, log);

        use super::format::tests::Closed;
        let from = futures::io::Cursor::new(log);
        assert!(matches!(copy(from, &mut Closed).await, Err(Broken::Write(Error::StdoutClosed))));
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
