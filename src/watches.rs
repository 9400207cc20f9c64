//! Watches of one kind in several namespaces, as one stream of events that one reflector store
//! keeps as if a single watch had listed them all.
//!
//! A store takes a list (`Init`, `InitApply`…, `InitDone`) as the whole truth: it swaps its
//! contents for the list's objects. Lists of several namespaces, interleaved, would each replace
//! the others'. So the merged stream opens with one list that spans every namespace, ends it
//! (the store becomes ready) only once each namespace's first list is over, and holds back the
//! changes of a namespace listed early until then. A namespace listed again later (its watch
//! expired) is told to the store as changes: its objects as applied, and those of its namespace
//! that the new list lacks as deleted.

use std::collections::{HashSet, VecDeque};

use futures::stream::{self, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};

/// `watches`, a stream per namespace (or one cluster-wide, `None`), as one stream for one
/// reflector whose reader is `store`. One watch is its own stream.
pub fn combine<K, E, S>(mut watches: Vec<(Option<String>, S)>, store: &Store<K>) -> BoxStream<'static, Result<Event<K>, E>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    E: Send + 'static,
    S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
{
    if watches.len() == 1 {
        if let Some((_, s)) = watches.pop() {
            return s.boxed();
        }
    }
    merge(watches.into_iter().map(|(ns, s)| (ns.unwrap_or_default(), s)).collect(), store.clone()).boxed()
}

/// `watches`, a stream per namespace, as one stream for one reflector whose reader is `store`.
pub fn merge<K, E, S>(watches: Vec<(String, S)>, store: Store<K>) -> impl Stream<Item = Result<Event<K>, E>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    E: Send + 'static,
    S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
{
    let mut all: SelectAll<Numbered<K, E>> = SelectAll::new();
    let mut namespaces = vec![];
    for (i, (ns, s)) in watches.into_iter().enumerate() {
        namespaces.push(ns);
        all.push(s.map(move |e| (i, e)).boxed());
    }
    let merge = Merge::new(namespaces, store);
    stream::unfold((all, merge), |(mut all, mut merge)| async move {
        loop {
            if let Some(e) = merge.pop() {
                return Some((Ok(e), (all, merge)));
            }
            match all.next().await? {
                (_, Err(e)) => return Some((Err(e), (all, merge))),
                (i, Ok(event)) => merge.push(i, event),
            }
        }
    })
}

/// A namespace's watch, its events numbered by the namespace's place in the list.
type Numbered<K, E> = BoxStream<'static, (usize, Result<Event<K>, E>)>;

/// What is next for the store: an event, or the deletion of what a namespace's new list lacks
/// (worked out when its turn comes, once the store holds every event before it).
enum Out<K> {
    Event(Event<K>),
    Sweep(usize, HashSet<String>),
}

struct Merge<K: Resource<DynamicType = ()> + Clone + 'static> {
    namespaces: Vec<String>,
    store: Store<K>,
    /// Namespaces whose first list is not over: while any is, the merged list goes on.
    first: HashSet<usize>,
    /// Events of namespaces listed early, held until the merged list is over.
    held: VecDeque<(usize, Event<K>)>,
    /// The names in each namespace's list under way.
    relists: Vec<Option<HashSet<String>>>,
    /// Namespaces whose first list started again before it ended, and their sweeps, due once
    /// the merged list is over.
    restarted: HashSet<usize>,
    sweeps: Vec<Out<K>>,
    out: VecDeque<Out<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Merge<K> {
    fn new(namespaces: Vec<String>, store: Store<K>) -> Self {
        let n = namespaces.len();
        Merge {
            namespaces,
            store,
            first: (0..n).collect(),
            held: VecDeque::new(),
            relists: vec![None; n],
            restarted: HashSet::new(),
            sweeps: vec![],
            out: VecDeque::from([Out::Event(Event::Init)]),
        }
    }

    fn push(&mut self, i: usize, event: Event<K>) {
        if self.first.contains(&i) {
            self.first_list(i, event);
        } else if !self.first.is_empty() {
            self.held.push_back((i, event));
        } else {
            self.changes(i, event);
        }
    }

    /// Namespace `i`'s first list, a part of the merged one.
    fn first_list(&mut self, i: usize, event: Event<K>) {
        match event {
            // The merged list began with the stream. A list started again before it ended (its
            // watch failed) adds to it; what only the earlier attempt had is swept once the
            // merged list is over.
            Event::Init => {
                if self.relists[i].replace(HashSet::new()).is_some() {
                    self.restarted.insert(i);
                }
            }
            Event::InitApply(o) | Event::Apply(o) => {
                self.relists[i].get_or_insert_with(HashSet::new).insert(o.name_any());
                self.out.push_back(Out::Event(Event::InitApply(o)));
            }
            Event::Delete(_) => {}
            Event::InitDone => {
                self.first.remove(&i);
                let seen = self.relists[i].take().unwrap_or_default();
                if self.restarted.remove(&i) {
                    self.sweeps.push(Out::Sweep(i, seen));
                }
                if self.first.is_empty() {
                    self.out.push_back(Out::Event(Event::InitDone));
                    self.out.extend(self.sweeps.drain(..));
                    while let Some((j, e)) = self.held.pop_front() {
                        self.changes(j, e);
                    }
                }
            }
        }
    }

    /// Namespace `i`'s events once the merged list is over: a list of its own becomes changes.
    fn changes(&mut self, i: usize, event: Event<K>) {
        match event {
            Event::Apply(_) | Event::Delete(_) => self.out.push_back(Out::Event(event)),
            Event::Init => self.relists[i] = Some(HashSet::new()),
            Event::InitApply(o) => {
                self.relists[i].get_or_insert_with(HashSet::new).insert(o.name_any());
                self.out.push_back(Out::Event(Event::Apply(o)));
            }
            Event::InitDone => {
                let seen = self.relists[i].take().unwrap_or_default();
                self.out.push_back(Out::Sweep(i, seen));
            }
        }
    }

    fn pop(&mut self) -> Option<Event<K>> {
        loop {
            match self.out.pop_front()? {
                Out::Event(e) => return Some(e),
                Out::Sweep(i, seen) => {
                    let ns = self.namespaces[i].as_str();
                    let gone =
                        self.store.state().into_iter().filter(|o| o.namespace().as_deref() == Some(ns) && !seen.contains(&o.name_any()));
                    for o in gone {
                        self.out.push_front(Out::Event(Event::Delete(K::clone(&o))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::WatchStreamExt;
    use std::time::Duration;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"namespace": ns, "name": name}, "data": {"v": v}})).unwrap()
    }

    type Events = Vec<Result<Event<ConfigMap>, kube::runtime::watcher::Error>>;

    fn list(ns: &str, names: &[&str]) -> Events {
        let mut e = vec![Ok(Event::Init)];
        e.extend(names.iter().map(|n| Ok(Event::InitApply(cm(ns, n, "1")))));
        e.push(Ok(Event::InitDone));
        e
    }

    /// Feeds each namespace's events (then silence) through `merge` into a store; returns the
    /// store after `items` events came out, and whether it is ready.
    async fn run(watches: Vec<(&str, Events)>, items: usize) -> (Vec<String>, bool) {
        let (store, writer) = reflector::store::<ConfigMap>();
        let watches = watches.into_iter().map(|(ns, e)| (ns.to_string(), stream::iter(e).chain(stream::pending()))).collect();
        let mut s = std::pin::pin!(merge(watches, store.clone()).reflect(writer));
        for _ in 0..items {
            tokio::time::timeout(Duration::from_secs(1), s.next()).await.expect("an event").expect("the stream goes on").ok();
        }
        assert!(tokio::time::timeout(Duration::from_millis(50), s.next()).await.is_err(), "no more events");
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}={}", o.namespace().unwrap(), o.name_any(), o.data.as_ref().unwrap()["v"]))
            .collect();
        names.sort();
        let ready = tokio::time::timeout(Duration::from_millis(10), store.wait_until_ready()).await.is_ok();
        (names, ready)
    }

    #[tokio::test]
    async fn the_store_holds_every_namespaces_list_and_is_ready_once_all_are_listed() {
        let (names, ready) = run(vec![("a", list("a", &["x", "y"])), ("b", list("b", &["x"]))], 5).await;
        assert_eq!(names, ["a/x=1", "a/y=1", "b/x=1"]);
        assert!(ready);
    }

    #[tokio::test]
    async fn a_namespace_not_yet_listed_keeps_the_store_unready_and_the_others_changes_wait() {
        let mut a = list("a", &["x"]);
        a.push(Ok(Event::Apply(cm("a", "x", "2"))));
        // Init, a/x, then nothing: b never lists, and a's change is held.
        let (names, ready) = run(vec![("a", a), ("b", vec![Ok(Event::Init)])], 2).await;
        assert!(!ready);
        assert!(names.is_empty(), "a list is stored when it ends: {names:?}");
    }

    #[tokio::test]
    async fn changes_held_during_the_first_list_come_after_it() {
        let mut a = list("a", &["x", "gone"]);
        a.extend([Ok(Event::Apply(cm("a", "x", "2"))), Ok(Event::Delete(cm("a", "gone", "1")))]);
        let (names, ready) = run(vec![("a", a), ("b", list("b", &["x"]))], 7).await;
        assert_eq!(names, ["a/x=2", "b/x=1"]);
        assert!(ready);
    }

    #[tokio::test]
    async fn a_first_list_started_again_keeps_only_what_its_last_attempt_listed() {
        // a's watch failed while listing: listed again, without y (deleted meanwhile).
        let mut a = vec![Ok(Event::Init), Ok(Event::InitApply(cm("a", "x", "1"))), Ok(Event::InitApply(cm("a", "y", "1")))];
        a.extend(list("a", &["x"]));
        // Init, a/x, a/y, a/x, b/x, InitDone, then y's deletion.
        let (names, ready) = run(vec![("a", a), ("b", list("b", &["x"]))], 7).await;
        assert_eq!(names, ["a/x=1", "b/x=1"]);
        assert!(ready);
    }

    #[tokio::test]
    async fn a_namespace_listed_again_replaces_its_own_objects_only() {
        let mut a = list("a", &["x", "y"]);
        a.push(Ok(Event::Apply(cm("a", "z", "1"))));
        // a's watch expired: listed again, y and z are gone and x changed.
        a.extend([Ok(Event::Init), Ok(Event::InitApply(cm("a", "x", "3"))), Ok(Event::InitDone)]);
        let (names, ready) = run(vec![("a", a), ("b", list("b", &["y"]))], 5 + 1 + 1 + 2).await;
        assert_eq!(names, ["a/x=3", "b/y=1"]);
        assert!(ready);
    }
}
