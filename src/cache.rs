//! What reconciles read: caches (reflector stores) of the operator's Jobs and their Pods, kept
//! by watches, trimmed to the fields the decisions read, and indexed by the LoopService that
//! owns them, so a reconcile makes no LIST and looks at its own objects only.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodStatus};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::keys;
use crate::shard::{owner_label, Filter};

/// Watches are closed and re-opened by the server after this many seconds; a watch that hears
/// nothing for this long (plus kube's margin) is taken for dead and re-opened.
pub const WATCH_TIMEOUT_SECS: u32 = 60;

/// How watches back off after a failure: 100 ms doubling to 3 s, with jitter, reset by the next
/// event received. A short cap means the caches catch up within seconds of the API server
/// answering again, however long it was away.
pub fn watch_backoff() -> impl kube::runtime::utils::Backoff + 'static {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::watcher::ExponentialBackoff::from(builder)
}

/// The watch configuration of the operator's own objects: labelled as managed by it.
pub fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", keys::LABEL_MANAGED_BY, keys::MANAGER)).timeout(WATCH_TIMEOUT_SECS)
}

/// Names of cached objects by the namespace and uid of the LoopService they belong to (their
/// own namespace and `loops.dev/loopservice-uid` label): an object in another namespace that
/// carries a LoopService's uid is never taken for one of its own. Entries of deleted objects
/// may linger until looked up; lookups check the store, which is the truth.
#[derive(Clone, Default)]
pub struct OwnerIndex(Arc<Mutex<HashMap<Owner, HashSet<String>>>>);

/// A LoopService, as the objects that belong to it name it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Owner {
    namespace: String,
    uid: String,
}

impl OwnerIndex {
    fn key<K: Resource>(obj: &K) -> Option<(Owner, String)> {
        let uid = obj.meta().labels.as_ref()?.get(keys::LABEL_UID)?.clone();
        Some((Owner { namespace: obj.meta().namespace.clone()?, uid }, obj.meta().name.clone()?))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, HashSet<String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn saw<K: Resource>(&self, event: &Event<K>) {
        match event {
            Event::Apply(o) | Event::InitApply(o) => {
                if let Some((owner, name)) = Self::key(o) {
                    self.lock().entry(owner).or_default().insert(name);
                }
            }
            Event::Delete(o) => {
                if let Some((owner, name)) = Self::key(o) {
                    let mut map = self.lock();
                    if let Some(set) = map.get_mut(&owner) {
                        set.remove(&name);
                        if set.is_empty() {
                            map.remove(&owner);
                        }
                    }
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }

    /// The cached objects in `namespace` of the LoopService with this uid.
    pub fn get<K>(&self, store: &Store<K>, namespace: &str, uid: &str) -> Vec<Arc<K>>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let owner = Owner { namespace: namespace.to_string(), uid: uid.to_string() };
        let mut map = self.lock();
        let Some(set) = map.get_mut(&owner) else { return vec![] };
        let mut found = Vec::with_capacity(set.len());
        set.retain(|name| match store.get(&ObjectRef::new(name).within(namespace)) {
            Some(o) if o.labels().get(keys::LABEL_UID).map(String::as_str) == Some(uid) => {
                found.push(o);
                true
            }
            // Gone (or relabelled) while this watch was away: drop the entry.
            _ => false,
        });
        if set.is_empty() {
            map.remove(&owner);
        }
        found
    }
}

/// A cache of one kind: its store, its index by owner, and the watch stream that fills both
/// (it must be polled; its items are the objects that changed).
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    pub index: OwnerIndex,
}

impl<K> Clone for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn clone(&self) -> Self {
        Cache { store: self.store.clone(), index: self.index.clone() }
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts a cache of the objects that `config` selects through `apis` (one watch each: a
    /// namespace's, or a cluster-wide one, `None`) and that `shard` keeps (by the LoopService
    /// they are labelled as), each trimmed by `trim` before it is stored. Returns the cache and
    /// the stream of changed objects that keeps it.
    pub fn new(
        apis: Vec<(Option<String>, Api<K>)>,
        config: watcher::Config,
        shard: Filter,
        trim: fn(&mut K),
    ) -> (Self, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static) {
        let (store, writer) = reflector::store();
        let index = OwnerIndex::default();
        let indexer = index.clone();
        let watch = |api| {
            let shard = shard.clone();
            watcher::watcher(api, config.clone())
                .backoff(watch_backoff())
                .try_filter(move |e| std::future::ready(shard.keeps(e, owner_label)))
                .modify(trim)
        };
        let watches = apis.into_iter().map(|(ns, api)| (ns, watch(api))).collect();
        let stream = crate::watches::combine(watches, &store)
            .inspect(move |e| {
                if let Ok(e) = e {
                    indexer.saw(e);
                }
            })
            .reflect(writer)
            .applied_objects();
        (Cache { store, index }, stream)
    }

    /// A cache holding `objects`, as a watch that listed them would have left it, and kept by
    /// no watch: for tests and tools that decide on objects they made by hand.
    pub fn from_objects(objects: Vec<K>) -> Self {
        let (store, mut writer) = reflector::store();
        let index = OwnerIndex::default();
        for obj in objects {
            let event = Event::Apply(obj);
            index.saw(&event);
            writer.apply_watcher_event(&event);
        }
        Cache { store, index }
    }

    /// The cached objects in `namespace` labelled as the LoopService `uid`'s.
    pub fn of(&self, namespace: &str, uid: &str) -> Vec<Arc<K>> {
        self.index.get(&self.store, namespace, uid)
    }
}

/// Drops what the decisions never read from a Job: its spec (the Pod template is the largest
/// part) but `suspend: true`, which says that it waits for its queue, managed fields and the
/// status counters.
pub fn trim_job(j: &mut Job) {
    j.metadata.managed_fields = None;
    let suspended = j.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    j.spec = suspended.then(|| JobSpec { suspend: Some(true), ..JobSpec::default() });
    if let Some(s) = j.status.take() {
        j.status = Some(JobStatus {
            conditions: s.conditions,
            completion_time: s.completion_time,
            start_time: s.start_time,
            ..JobStatus::default()
        });
    }
}

/// Drops what the decisions never read from a Pod: its spec, annotations, managed fields, and
/// the status fields other than phase, conditions and the containers' states.
pub fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    // Only the labels the index and the decisions read: a Pod's other labels (copied from a
    // template its author wrote) would be held for every kept Pod.
    if let Some(labels) = p.metadata.labels.as_mut() {
        labels.retain(|k, _| k == keys::LABEL_UID || k == keys::LABEL_JOB_NAME);
    }
    p.spec = None;
    if let Some(s) = p.status.take() {
        let states = |cs: Option<Vec<ContainerStatus>>| {
            cs.map(|cs| {
                cs.into_iter()
                    .map(|c| ContainerStatus { name: c.name, state: c.state, ready: c.ready, ..ContainerStatus::default() })
                    .collect::<Vec<_>>()
            })
        };
        p.status = Some(PodStatus {
            phase: s.phase,
            conditions: s.conditions.map(|cs| {
                cs.into_iter()
                    .map(|c| PodCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        message: c.message,
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            container_statuses: states(s.container_statuses),
            init_container_statuses: states(s.init_container_statuses),
            reason: s.reason,
            message: s.message,
            ..PodStatus::default()
        });
    }
}

/// Whether a change to a Job can change a decision: its loop's end (a terminal or
/// failure-target condition), its admission by its queue (resumed), its creation or its deletion. Status counters (active, ready,
/// the uncounted terminated Pods) move several times per loop and change nothing.
pub fn job_fingerprint(j: &Job) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    j.metadata.uid.hash(&mut h);
    j.metadata.deletion_timestamp.is_some().hash(&mut h);
    j.spec.as_ref().and_then(|s| s.suspend).hash(&mut h);
    j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).hash(&mut h);
    for c in j.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
        (&c.type_, &c.status).hash(&mut h);
    }
    Some(h.finish())
}

/// A Job watch's changed objects, only those that can change a decision. A Job still running
/// and not being deleted is not news: the operator created it and wrote so in status in the
/// same reconcile, and a reconcile woken by its creation would only find the cache a status
/// write behind. Such a Job wakes its LoopService once it ends or is deleted.
pub fn job_triggers(
    stream: impl Stream<Item = Result<Job, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Job, watcher::Error>> + Send + 'static {
    stream.try_filter(|j| std::future::ready(!is_running_untouched(j))).predicate_filter(job_fingerprint, Default::default())
}

/// A Job with no condition yet and no deletion under way.
fn is_running_untouched(j: &Job) -> bool {
    j.metadata.deletion_timestamp.is_none() && j.status.as_ref().and_then(|s| s.conditions.as_ref()).is_none_or(|c| c.is_empty())
}

/// Events a stream driven on its own task ([`on_own_task`]) may have ready before the controller
/// takes them.
pub const HANDOFF: usize = 1024;

/// Drives `stream` on a task of its own and hands its items over through a channel of `buffer`.
///
/// The controller polls its trigger streams and every reconcile from one task. Whatever a
/// stream does before its items reach the controller (decoding, trimming, updating its
/// reflector store) then waits for all of that, and the reconciles for it: while 5,000
/// LoopServices were created in one namespace, the Job watch fell behind, and a loop whose Job
/// had ended started 3.1 s after its due time; after a restart beside them, the due loops waited
/// for the 5,000 to be decoded. On a task of its own, each watch keeps its store current and its
/// decoding runs beside the reconciles, on another worker thread when there is one.
pub fn on_own_task<T: Send + 'static>(
    stream: impl Stream<Item = T> + Send + 'static,
    buffer: usize,
) -> impl Stream<Item = T> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            // The controller stopped (its term ended): the watch and its store go with it at
            // once, even while no event comes.
            let item = tokio::select! {
                _ = tx.closed() => return,
                item = stream.next() => item,
            };
            let Some(item) = item else { return };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// Keeps polling a cache's stream (for caches that trigger nothing), logging its errors.
/// Records in `failed_at` when a watch last failed (ms since the Unix epoch).
pub fn drive<K: Send + 'static>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    what: &'static str,
    failed_at: Arc<std::sync::atomic::AtomicI64>,
) {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                failed_at.store(jiff::Timestamp::now().as_millisecond(), std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(error = %e, cache = what, "watch failed; retrying");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobCondition;

    /// A stream on its own task goes on while nobody takes its items, up to the buffer (a
    /// watch keeps its store current while the controller is busy), and hands every item over
    /// in order.
    #[tokio::test]
    async fn a_stream_on_its_own_task_runs_ahead_of_its_taker_and_loses_nothing() {
        let polled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = polled.clone();
        let stream = futures::stream::iter(0..100).inspect(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let handed = on_own_task(stream, 8);
        let ahead = tokio::time::timeout(Duration::from_secs(5), async {
            while polled.load(std::sync::atomic::Ordering::SeqCst) < 8 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(ahead.is_ok(), "the stream was not polled until its items were taken");
        assert!(polled.load(std::sync::atomic::Ordering::SeqCst) < 100, "it ran past the buffer with nobody taking");
        assert_eq!(handed.collect::<Vec<_>>().await, (0..100).collect::<Vec<_>>());
    }

    /// Once its taker is gone, a stream on its own task is dropped (a watch closed) although it
    /// has nothing to hand over.
    #[tokio::test]
    async fn a_stream_on_its_own_task_ends_with_its_taker() {
        struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let (tx, dropped) = tokio::sync::oneshot::channel();
        let guard = Dropped(Some(tx));
        // A stream that never yields, like a watch of a quiet namespace.
        let idle = futures::stream::pending::<()>().map(move |x| {
            let _ = &guard;
            x
        });
        let handed = on_own_task(idle, 8);
        drop(handed);
        assert!(tokio::time::timeout(Duration::from_secs(5), dropped).await.is_ok(), "the stream outlived its taker");
    }
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "x-1", "namespace": "ns", "uid": "u1", "labels": {"loops.dev/loopservice-uid": "ls1"},
                         "managedFields": [{"manager": "m"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "loop", "image": "busybox"}]}}},
            "status": {"active": 1, "ready": 1, "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn trimming_keeps_what_decisions_read() {
        let mut j = job(json!([{"type": "Complete", "status": "True"}]));
        trim_job(&mut j);
        assert!(j.spec.is_none() && j.metadata.managed_fields.is_none());
        let mut queued = job(json!([]));
        queued.spec = Some(JobSpec { suspend: Some(true), parallelism: Some(3), ..JobSpec::default() });
        trim_job(&mut queued);
        assert_eq!(queued.spec.as_ref().map(|s| (s.suspend, s.parallelism)), Some((Some(true), None)), "suspend only");
        let s = j.status.unwrap();
        assert_eq!(s.active, None);
        assert_eq!(s.conditions.unwrap()[0].type_, "Complete");
        assert_eq!(j.metadata.labels.unwrap()[keys::LABEL_UID], "ls1");
    }

    #[test]
    fn counters_do_not_change_the_fingerprint_but_conditions_do() {
        let running = job(json!([]));
        let mut more_active = running.clone();
        more_active.status.as_mut().unwrap().active = Some(2);
        assert_eq!(job_fingerprint(&running), job_fingerprint(&more_active));
        let mut done = running.clone();
        done.status.as_mut().unwrap().conditions =
            Some(vec![JobCondition { type_: "Complete".into(), status: "True".into(), ..JobCondition::default() }]);
        assert_ne!(job_fingerprint(&running), job_fingerprint(&done));
        // A Job its queue admits: resumed, and started.
        let mut queued = running.clone();
        queued.spec = Some(JobSpec { suspend: Some(true), ..JobSpec::default() });
        let mut admitted = queued.clone();
        admitted.spec.as_mut().unwrap().suspend = Some(false);
        assert_ne!(job_fingerprint(&queued), job_fingerprint(&admitted));
    }

    #[tokio::test]
    async fn a_job_wakes_its_loopservice_when_it_ends_or_is_deleted_not_when_it_appears() {
        let created = job(json!([]));
        let mut counted = created.clone();
        counted.status.as_mut().unwrap().active = Some(2);
        let done = job(json!([{"type": "Complete", "status": "True"}]));
        let mut other = job(json!([]));
        other.metadata.name = Some("x-2".into());
        other.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        let seen = [created, counted, done.clone(), done, other];
        let woke: Vec<(String, bool)> = job_triggers(futures::stream::iter(seen.map(Ok)))
            .map(|j| j.map(|j| (j.name_any(), j.status.and_then(|s| s.conditions).is_some_and(|c| !c.is_empty()))))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(woke, vec![("x-1".to_string(), true), ("x-2".to_string(), false)]);
    }

    #[test]
    fn a_cached_pod_keeps_only_what_decisions_read() {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"loops.dev/loopservice-uid": "ls1", "job-name": "x-1",
                         "team": "t".repeat(60), "app.kubernetes.io/managed-by": "loopservice-operator"},
                         "annotations": {"a": "b".repeat(1000)}},
            "spec": {"containers": [{"name": "loop", "image": "busybox"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "m",
                                                           "lastProbeTime": null, "lastTransitionTime": "2026-12-05T00:00:00Z"}],
                       "containerStatuses": [{"name": "loop", "image": "busybox", "imageID": "sha256:abc", "ready": false, "restartCount": 3,
                                              "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}}]},
        }))
        .unwrap();
        trim_pod(&mut p);
        let labels: Vec<&String> = p.metadata.labels.as_ref().unwrap().keys().collect();
        assert_eq!(labels, ["job-name", "loops.dev/loopservice-uid"]);
        assert!(p.metadata.annotations.is_none() && p.spec.is_none());
        let st = p.status.unwrap();
        let c = &st.container_statuses.unwrap()[0];
        assert_eq!((c.name.as_str(), c.image.as_str(), c.restart_count), ("loop", "", 0));
        assert_eq!(c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()), Some("ErrImagePull"));
        let cond = &st.conditions.unwrap()[0];
        assert_eq!((cond.reason.as_deref(), cond.last_transition_time.is_none()), (Some("Unschedulable"), true));
    }

    #[test]
    fn the_index_finds_the_owners_objects_and_forgets_deleted_ones() {
        let (store, mut writer) = reflector::store::<Job>();
        let index = OwnerIndex::default();
        let j = job(json!([]));
        let e = Event::Apply(j.clone());
        index.saw(&e);
        writer.apply_watcher_event(&e);
        assert_eq!(index.get(&store, "ns", "ls1").len(), 1);
        assert!(index.get(&store, "ns", "other").is_empty());
        let e = Event::Delete(j);
        index.saw(&e);
        writer.apply_watcher_event(&e);
        assert!(index.get(&store, "ns", "ls1").is_empty());
    }

    #[test]
    fn an_object_in_another_namespace_with_a_loopservices_uid_is_not_its_own() {
        let (store, mut writer) = reflector::store::<Job>();
        let index = OwnerIndex::default();
        let mut spoof = job(json!([]));
        spoof.metadata.namespace = Some("elsewhere".into());
        let e = Event::Apply(spoof);
        index.saw(&e);
        writer.apply_watcher_event(&e);
        assert!(index.get(&store, "ns", "ls1").is_empty(), "labelled with ls1's uid, but in another namespace");
        assert_eq!(index.get(&store, "elsewhere", "ls1").len(), 1);
    }

    #[test]
    fn stale_index_entries_are_checked_against_the_store() {
        let (store, _writer) = reflector::store::<Job>();
        let index = OwnerIndex::default();
        index.saw(&Event::Apply(job(json!([]))));
        // The store never saw it (say, deleted while the watch was away): not returned.
        assert!(index.get(&store, "ns", "ls1").is_empty());
    }
}
