//! Why a Job has no Pod: the Job controller's `FailedCreate` Events (a missing ServiceAccount, a
//! PodSecurity or quota refusal), kept by one watch of them.
//!
//! Reading them per Job, when a running loop's Job had no Pod, listed the namespace's Events
//! with a field selector. The API server keeps no watch cache for Events by default, so each
//! such list scanned every Event of the namespace in etcd; the Events of an hour of busy loops
//! (70,000 in the soak's namespace after 30 minutes) made each list take 11.7 s on average, and
//! some passed the reconcile's 30 s limit. A watch selecting `FailedCreate` Events of Jobs
//! lists them once and then hears only those.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::cache::{Cache, WATCH_TIMEOUT_SECS};
use crate::metrics::Metrics;
use crate::scope::Scope;
use crate::shard::{Filter, Shard};
use crate::text::clip;

/// What the watch selects: the Job controller's refusals to create a Job's Pod.
pub const FIELDS: &str = "involvedObject.kind=Job,reason=FailedCreate";

/// The watch's configuration in `scope`: the namespaces it leaves out, if any, are left out here too.
pub fn config(scope: &Scope) -> watcher::Config {
    let fields = match scope.field_selector() {
        Some(out) => format!("{FIELDS},{out}"),
        None => FIELDS.to_string(),
    };
    watcher::Config::default().fields(&fields).timeout(WATCH_TIMEOUT_SECS)
}

/// The watch's filter: every shard keeps every such Event, counted as kind `event`. An Event
/// names its Job, not the LoopService's uid, so a shard's filter by owner would keep them all
/// in shard 0 and none in the others.
pub fn filter(metrics: &Metrics) -> Filter {
    Filter::new(Shard::default(), metrics, "event")
}

/// Keeps what the answer reads: the Job, the message and when.
pub fn trim(e: &mut Event) {
    e.metadata.managed_fields = None;
    e.metadata.annotations = None;
    e.metadata.labels = None;
    e.source = None;
    e.related = None;
    e.series = None;
    e.involved_object.field_path = None;
}

/// Why the Job `job` in `namespace` has no Pod, from its latest `FailedCreate` Event, if any.
pub fn why(events: &Cache<Event>, namespace: &str, job: &str) -> Option<String> {
    let when = |e: &Arc<Event>| e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0));
    events
        .store
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(namespace) && e.involved_object.name.as_deref() == Some(job))
        .max_by_key(when)
        .and_then(|e| e.message.clone())
        .map(|m| format!("its Pod cannot be created: {}", clip(&m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ns: &str, job: &str, message: &str, at: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}.{at}"), "namespace": ns},
            "involvedObject": {"kind": "Job", "name": job, "namespace": ns},
            "reason": "FailedCreate", "message": message, "lastTimestamp": at,
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_refusal_of_the_job_in_its_own_namespace_says_why() {
        let events = Cache::from_objects(vec![
            event("a", "j-1", "error looking up service account a/old", "2026-01-01T00:00:00Z"),
            event("a", "j-1", "exceeded quota: pods=1", "2026-01-01T00:01:00Z"),
            event("b", "j-1", "another namespace's Job of the same name", "2026-01-01T00:02:00Z"),
            event("a", "j-2", "another Job", "2026-01-01T00:03:00Z"),
        ]);
        assert_eq!(why(&events, "a", "j-1").as_deref(), Some("its Pod cannot be created: exceeded quota: pods=1"));
        assert_eq!(why(&events, "a", "j-3"), None, "no Event: not known");
    }

    #[test]
    fn every_shard_keeps_every_refusal() {
        let e = kube::runtime::watcher::Event::Apply(event("a", "j-1", "exceeded quota", "2026-01-01T00:00:00Z"));
        assert!(filter(&Metrics::default()).keeps(&e, crate::shard::owner_label));
        // An owner filter of shard 1 of 2 would drop it: it has no owner label.
        let second = Filter::new(Shard::new(1, 2).unwrap(), &Metrics::default(), "event");
        assert!(!second.keeps(&e, crate::shard::owner_label));
    }

    #[test]
    fn the_watch_selects_refusals_of_jobs_and_leaves_out_what_the_scope_does() {
        let all = Scope::new(&[], &[]).unwrap();
        assert_eq!(config(&all).field_selector.as_deref(), Some(FIELDS));
        let but = Scope::new(&[], &["kube-system".into()]).unwrap();
        assert_eq!(config(&but).field_selector.as_deref(), Some(format!("{FIELDS},metadata.namespace!=kube-system").as_str()));
    }
}
