//! Counting Job creations from a watch of the test's own: each loop number created once, by
//! uid, whatever the operator or the Jobs' deletes did.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::DeleteParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use loopservice_operator::crd::LoopResult;

use super::*;

/// One Job creation the watch saw.
#[derive(Clone, Debug)]
pub struct Created {
    pub name: String,
    pub r#loop: i64,
    start: jiff::Timestamp,
    /// Its end, the last the watch saw (to the second, as Kubernetes stamps it).
    end: Option<jiff::Timestamp>,
}

/// Every Job of the namespace the watch has seen, by uid, grouped by LoopService.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<String, Created>>>>;

/// Watches the namespace's Jobs; a user-delete LoopService's Jobs are deleted once finished.
pub fn watch_jobs(ns: &TestNs, delete_finished_of: Vec<String>) -> Seen {
    let seen: Seen = Arc::default();
    let (api, out) = (ns.jobs(), seen.clone());
    tokio::spawn(async move {
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects();
        let mut stream = std::pin::pin!(stream);
        // A watch error (the API server restarting) is retried by the watcher, from where it
        // was: the stream goes on after it.
        while let Some(item) = stream.next().await {
            let Ok(j) = item else { continue };
            let Some(ls) = j.labels().get("loops.dev/loopservice").cloned() else { continue };
            let end = finished(&j).map(|(_, t)| t);
            let c = Created { name: j.name_any(), r#loop: loop_number(&j), start: start_time(&j), end };
            out.lock().unwrap().entry(ls.clone()).or_default().insert(j.uid().unwrap_or_default(), c);
            if end.is_some() && delete_finished_of.contains(&ls) && j.metadata.deletion_timestamp.is_none() {
                let _ = api.delete(&j.name_any(), &DeleteParams::background()).await;
            }
        }
    });
    seen
}

/// Each loop number created once (1..n by uid), never two loops at once, and status counting
/// every loop created with its end recorded. Returns the loops created.
pub async fn assert_once(ns: &TestNs, ls: &str, seen: &Seen) -> usize {
    let created: Vec<Created> = seen.lock().unwrap().get(ls).map(|m| m.values().cloned().collect()).unwrap_or_default();
    let mut by_loop: BTreeMap<i64, Vec<&Created>> = BTreeMap::new();
    for c in &created {
        by_loop.entry(c.r#loop).or_default().push(c);
    }
    for (n, cs) in &by_loop {
        assert_eq!(cs.len(), 1, "{ls}: loop {n} was created {} times: {cs:#?}", cs.len());
    }
    let numbers: Vec<i64> = by_loop.keys().copied().collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "{ls}: loop numbers are not 1..n");
    let ordered: Vec<&Created> = by_loop.values().map(|cs| cs[0]).collect();
    for w in ordered.windows(2) {
        // Ends are stamped to the second, rounded down: a start within that second is no overlap.
        if let Some(end) = w[0].end {
            assert!(
                secs(end, w[1].start) > -1.0,
                "{ls}: loop {} ({}) started before loop {} ended at {end}",
                w[1].r#loop,
                w[1].name,
                w[0].r#loop
            );
        }
    }
    let st = status(ns, ls).await;
    let n = numbers.len() as i64;
    assert_eq!(st.loops_started, n, "{ls}: status counts {} loops started, the watch saw {n} created", st.loops_started);
    assert_eq!(st.last_finished_loop, n, "{ls}: every loop's end is recorded");
    assert_eq!(st.loops_succeeded + st.loops_failed, n, "{ls}: each loop counted once, succeeded or failed");
    for r in &st.history {
        assert_ne!(r.result, LoopResult::Running, "{ls}: loop {} still shows running: {r:?}", r.r#loop);
    }
    numbers.len()
}
