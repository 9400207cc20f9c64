//! An independent Job watch: when each Job's ADDED event reaches the bench, by the bench's
//! clock, with the Job's labels and annotations as they were then, and when the Job was first
//! seen ended (a Complete or Failed condition): the moment its end could be known to any
//! watcher, the operator included, to the millisecond (the Job's own completionTime is to the
//! second). It runs on a thread and runtime of its own, so that the bench's other work does not
//! delay the readings.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

#[derive(Clone, Debug)]
pub struct Seen {
    /// Wall-clock time the ADDED event arrived.
    pub at: jiff::Timestamp,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Seen only in a relist after the watch was interrupted: its time is late.
    pub relisted: bool,
    /// When the watch first saw it ended, if it did (not in a relist).
    pub ended: Option<jiff::Timestamp>,
}

impl Seen {
    pub fn ann_time(&self, key: &str) -> Option<jiff::Timestamp> {
        self.annotations.get(key)?.parse().ok()
    }
}

pub struct JobWatch {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl JobWatch {
    /// Starts watching Jobs in `ns` and returns once the initial list is done.
    pub fn start(ns: &str) -> JobWatch {
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (ns, map) = (ns.to_string(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("watch runtime");
            rt.block_on(async move {
                let client = Client::try_default().await.expect("a client for the Job watch");
                let api: Api<Job> = Api::namespaced(client, &ns);
                // Lists from the watch cache, so that the watch resumes at a resourceVersion it
                // still holds (a quorum list's can be older than its window: 410 Expired).
                let stream = watcher::watcher(api, watcher::Config::default().any_semantic());
                futures::pin_mut!(stream);
                let mut synced = false;
                loop {
                    let ev = tokio::select! {
                        _ = &mut stop_rx => return,
                        ev = stream.try_next() => ev,
                    };
                    let at = jiff::Timestamp::now();
                    let (obj, relisted) = match ev {
                        Ok(Some(Event::Apply(o))) => (o, false),
                        Ok(Some(Event::InitApply(o))) if synced => (o, true),
                        Ok(Some(Event::InitDone)) => {
                            if !synced {
                                synced = true;
                                let _ = ready_tx.send(());
                            }
                            continue;
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => return,
                        Err(e) => {
                            eprintln!("bench Job watch: {e} (the watcher retries)");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let ended = ended(&obj) && !relisted;
                    let mut map = map.lock().unwrap();
                    let seen = map.entry(name).or_insert_with(|| Seen {
                        at,
                        labels: obj.metadata.labels.clone().unwrap_or_default(),
                        annotations: obj.metadata.annotations.clone().unwrap_or_default(),
                        relisted,
                        ended: None,
                    });
                    if ended && seen.ended.is_none() {
                        seen.ended = Some(at);
                    }
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("the bench's Job watch listed within 30 s");
        JobWatch { seen, stop: Some(stop_tx) }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<(String, Seen)> {
        self.seen.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Whether a Job has ended: a Complete or Failed condition that is true (as the operator reads it).
fn ended(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Counts the writes to LoopServices in a namespace after it started, from a watch of them:
/// each MODIFIED event is one write; it is a status write when the status changed.
pub struct LsWrites {
    counts: Arc<Mutex<(usize, usize, usize)>>,
    task: tokio::task::JoinHandle<()>,
}

impl LsWrites {
    pub async fn start(api: Api<loopservice_operator::crd::LoopService>) -> LsWrites {
        let counts: Arc<Mutex<(usize, usize, usize)>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut last: HashMap<String, serde_json::Value> = HashMap::new();
            let mut ready_tx = Some(ready_tx);
            // A watch error is retried with backoff: the stream goes on after it.
            let stream = watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff();
            let mut synced = false;
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Err(e) => eprintln!("bench LoopService watch: {e} (retrying)"),
                    Ok(Event::InitDone) => {
                        synced = true;
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Apply(ls)) => {
                        let name = ls.metadata.name.clone().unwrap_or_default();
                        let status = serde_json::to_value(&ls.status).unwrap_or_default();
                        if let Some(prev) = last.insert(name, status.clone()) {
                            let mut c = c.lock().unwrap();
                            if prev != status {
                                c.0 += 1
                            } else {
                                c.1 += 1
                            }
                        }
                    }
                    // After a watch gap, a changed status counts as one write (there may have been more).
                    Ok(Event::InitApply(ls)) if synced => {
                        let status = serde_json::to_value(&ls.status).unwrap_or_default();
                        let mut c = c.lock().unwrap();
                        c.2 += 1;
                        if last.insert(ls.metadata.name.clone().unwrap_or_default(), status.clone()).is_some_and(|p| p != status) {
                            c.0 += 1;
                        }
                    }
                    _ => {}
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
        LsWrites { counts, task }
    }

    /// (status writes, other writes, objects seen again in a relist) so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        *self.counts.lock().unwrap()
    }
}

impl Drop for LsWrites {
    fn drop(&mut self) {
        self.task.abort();
    }
}
