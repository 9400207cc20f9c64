//! When each Job first appeared, as a watch outside the operator saw it: how late a loop
//! started, measured by the test and not by the operator's own clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

/// A watch of the Jobs of one namespace, from before the operator starts.
pub struct JobWatch {
    seen: Arc<Mutex<BTreeMap<String, jiff::Timestamp>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JobWatch {
    /// Starts watching, and returns once the watch has listed the namespace's Jobs.
    pub async fn start(api: Api<Job>) -> JobWatch {
        let seen: Arc<Mutex<BTreeMap<String, jiff::Timestamp>>> = Arc::default();
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let mut listed_tx = Some(listed_tx);
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let now = jiff::Timestamp::now();
                match event {
                    Ok(Event::Apply(j) | Event::InitApply(j)) => {
                        record.lock().unwrap().entry(j.name_any()).or_insert(now);
                    }
                    Ok(Event::InitDone) => {
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        listed.await.expect("the Job watch listed the namespace");
        JobWatch { seen, task }
    }

    /// When Job `name` was first seen.
    pub fn seen(&self, name: &str) -> Option<jiff::Timestamp> {
        self.seen.lock().unwrap().get(name).copied()
    }

    /// The Jobs seen so far, with when, in order of appearance.
    pub fn all(&self) -> Vec<(String, jiff::Timestamp)> {
        let mut all: Vec<_> = self.seen.lock().unwrap().iter().map(|(n, t)| (n.clone(), *t)).collect();
        all.sort_by_key(|(_, t)| *t);
        all
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
