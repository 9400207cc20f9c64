//! Which reconciles are urgent, read off the cached LoopService without decoding it: a loop due
//! now (or within [`LOOKAHEAD_MS`]), a running loop past its next due time (it relaunches the moment
//! its Job ends), a spec not yet checked for this generation (unless it is one the API server
//! refuses right now), and a run request. The rest (the end of a loop not yet due again, a
//! recheck of a refused spec, a deletion) can wait: a reconcile holds one of a bounded number of
//! places while it runs, and those can all be taken by reconciles waiting to write status and
//! Events (a namespace with thousands of new broken LoopServices to report). Urgent reconciles
//! have places kept for them (see `reconcile::Context::slot`).

use crate::crd::{LoopService, Phase};
use crate::keys::ANN_RUN_REQUESTED_AT;

/// A loop due this soon counts as due now (a reconcile is requeued for the due time, and may
/// run a moment early).
pub const LOOKAHEAD_MS: i64 = 1_000;

/// What decides urgency, kept beside each cached LoopService.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Glance {
    /// The spec's key in the dry-run verdicts ([`crate::verdicts::key`]).
    pub spec_key: u64,
    /// The status is this generation's (the spec was checked).
    pub checked: bool,
    /// The status says the spec is invalid.
    pub invalid: bool,
    /// When a loop is next due (milliseconds since the epoch): `status.nextRunTime`, or while
    /// a loop runs, its start plus the interval.
    pub due_ms: Option<i64>,
    pub run_requested: bool,
    pub deleting: bool,
}

impl Glance {
    pub fn of(ls: &LoopService, spec_json: &str) -> Glance {
        let ns = ls.metadata.namespace.as_deref().unwrap_or_default();
        let st = ls.status.as_ref();
        let checked = st.is_some_and(|s| s.observed_generation.is_some() && s.observed_generation == ls.metadata.generation);
        let running_due = || {
            let st = st?;
            st.active_job.as_ref()?;
            let interval = crate::duration::parse_duration("interval", &ls.spec.interval).ok()?;
            Some(st.last_start_time.as_ref()?.0.as_millisecond().saturating_add(interval.as_millis() as i64))
        };
        Glance {
            spec_key: crate::verdicts::key(ns, spec_json),
            checked,
            invalid: st.is_some_and(|s| s.phase == Some(Phase::Invalid)),
            due_ms: st.and_then(|s| s.next_run_time.as_ref()).map(|t| t.0.as_millisecond()).or_else(running_due),
            run_requested: ls.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANN_RUN_REQUESTED_AT)),
            deleting: ls.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Whether the reconcile may be about to start a loop, at `now_ms`; `refused` says whether
    /// a spec key is known refused.
    pub fn urgent(&self, now_ms: i64, refused: impl FnOnce(u64) -> bool) -> bool {
        if self.deleting {
            return false;
        }
        if self.run_requested {
            return true;
        }
        if !self.checked {
            return !refused(self.spec_key);
        }
        !self.invalid && self.due_ms.is_some_and(|due| due <= now_ms.saturating_add(LOOKAHEAD_MS))
    }

    /// Whether its spec is known invalid: the status says so for this generation, or the
    /// generation is not yet checked and `refused` says its spec is refused right now.
    pub fn refused(&self, refused: impl FnOnce(u64) -> bool) -> bool {
        if self.checked {
            self.invalid
        } else {
            refused(self.spec_key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn ls(status: serde_json::Value, annotations: serde_json::Value) -> LoopService {
        serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "a", "namespace": "ns", "generation": 2, "annotations": annotations},
            "spec": {"interval": "30s", "image": "busybox"},
            "status": status,
        }))
        .unwrap()
    }

    fn at(ms: i64) -> String {
        jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    #[test]
    fn urgent_when_a_loop_may_start() {
        let waiting = |due: i64| json!({"observedGeneration": 2, "phase": "Waiting", "nextRunTime": at(due)});
        let running = |started: i64| json!({"observedGeneration": 2, "phase": "Running", "activeJob": "a-1", "lastStartTime": at(started)});
        let invalid = json!({"observedGeneration": 2, "phase": "Invalid"});
        let none = json!({});
        let request = json!({"loops.dev/run-requested-at": "2026-12-06T00:00:00Z"});
        let cases: &[(&str, serde_json::Value, &serde_json::Value, bool, bool)] = &[
            // (what, status, annotations, spec known refused, urgent)
            ("due now", waiting(NOW), &none, false, true),
            ("due within the lookahead", waiting(NOW + LOOKAHEAD_MS), &none, false, true),
            ("due later", waiting(NOW + LOOKAHEAD_MS + 1), &none, false, false),
            ("new, not checked yet", json!(null), &none, false, true),
            ("new, its spec refused now", json!(null), &none, true, false),
            ("spec changed", json!({"observedGeneration": 1, "phase": "Waiting", "nextRunTime": at(NOW + 60_000)}), &none, false, true),
            ("refused before, rechecked", invalid.clone(), &none, false, false),
            ("running, next due later: its end can wait", running(NOW - 10_000), &none, false, false),
            ("running past its next due: it overran", running(NOW - 30_000), &none, false, true),
            ("a run request", waiting(NOW + 60_000), &request, false, true),
            ("suspended", json!({"observedGeneration": 2, "phase": "Suspended"}), &none, false, false),
        ];
        for (what, status, annotations, refused, urgent) in cases {
            let ls = ls(status.clone(), (*annotations).clone());
            let g = Glance::of(&ls, "{}");
            assert_eq!(g.urgent(NOW, |k| *refused && k == g.spec_key), *urgent, "{what}");
        }
        let mut deleting = ls(waiting(NOW), json!({}));
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()));
        assert!(!Glance::of(&deleting, "{}").urgent(NOW, |_| false), "being deleted");
    }
}
