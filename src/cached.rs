//! What the operator's LoopService cache keeps of each LoopService: its metadata, and its spec
//! and status as compact JSON text, decoded again when a reconcile runs.
//!
//! A decoded LoopService is about 3 KB in memory (1.3 KB of it the struct itself, mostly
//! unset options), and the cache holds every LoopService for as long as it exists; most of
//! them sit idle between loops. As text, the spec and status of an idle LoopService take a
//! few hundred bytes. Decoding them for a reconcile takes microseconds.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::crd::{LoopService, LoopServiceSpec, LoopServiceStatus};
use crate::urgency::Glance;

/// A LoopService as the cache keeps it. `expand` gives the LoopService back.
#[derive(Clone, Debug)]
pub struct CachedLoopService {
    pub metadata: ObjectMeta,
    /// `{"spec": …, "status": …}`, as serialized from a decoded LoopService.
    body: Box<str>,
    /// Whether a reconcile of it is urgent, known without decoding it.
    pub glance: Glance,
}

#[derive(Deserialize)]
struct Body {
    spec: LoopServiceSpec,
    status: Option<LoopServiceStatus>,
}

impl CachedLoopService {
    pub fn new(ls: LoopService) -> CachedLoopService {
        let status = ls.status.as_ref().and_then(|st| serde_json::to_value(st).ok()).map(|mut v| {
            // Every status field defaults to null or [] when absent: leave those out.
            if let Some(fields) = v.as_object_mut() {
                fields.retain(|_, f| !(f.is_null() || f.as_array().is_some_and(|a| a.is_empty())));
            }
            v
        });
        // Serializing plain data structs to a String does not fail.
        let spec = serde_json::to_string(&ls.spec).unwrap_or_default();
        let glance = Glance::of(&ls, &spec);
        let status = status.map(|st| serde_json::to_string(&st).unwrap_or_default());
        let body = format!("{{\"spec\":{spec},\"status\":{}}}", status.as_deref().unwrap_or("null"));
        CachedLoopService { metadata: ls.metadata, body: body.into_boxed_str(), glance }
    }

    /// The LoopService this was made from. It was serialized from a decoded LoopService, so it
    /// decodes again; the error is kept only so that nothing here can panic.
    pub fn expand(&self) -> Result<LoopService, serde_json::Error> {
        let Body { spec, status } = serde_json::from_str(&self.body)?;
        Ok(LoopService { metadata: self.metadata.clone(), spec, status })
    }
}

impl From<LoopService> for CachedLoopService {
    fn from(ls: LoopService) -> CachedLoopService {
        CachedLoopService::new(ls)
    }
}

/// Decoded as a LoopService, so that it is checked as one.
impl<'de> Deserialize<'de> for CachedLoopService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CachedLoopService, D::Error> {
        LoopService::deserialize(d).map(CachedLoopService::new)
    }
}

impl Resource for CachedLoopService {
    type DynamicType = ();
    type Scope = <LoopService as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        LoopService::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        LoopService::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        LoopService::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        LoopService::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn busy() -> LoopService {
        serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 2,
                         "labels": {"team": "x"}, "annotations": {"loops.dev/run-requested": "r1"}},
            "spec": {"interval": "30s", "image": "busybox", "command": ["sh", "-c", "true"], "env": [{"name": "A", "value": "1"}],
                     "resources": {"limits": {"cpu": "100m"}}, "jitter": "5s", "failureBackoff": {"initial": "1s", "max": "1m"},
                     "template": {"spec": {"nodeSelector": {"k": "v"}}}, "loops": 10, "suspend": false},
            "status": {"phase": "Running", "observedGeneration": 2, "loopsStarted": 4, "loopsFailed": 1, "activeJob": "a-4",
                       "lastStartTime": "2026-11-25T20:00:00Z", "nextRunTime": "2026-11-25T20:00:30Z",
                       "lastOverrun": {"loop": 3, "durationSeconds": 40.5, "intervalSeconds": 30.0, "time": "2026-11-25T19:59:00Z", "message": "m"},
                       "history": [{"loop": 3, "jobName": "a-3", "trigger": "Scheduled", "dueTime": "2026-11-25T19:59:30Z",
                                    "startTime": "2026-11-25T19:59:30Z", "result": "Failed", "reason": "BackoffLimitExceeded", "overran": true}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": "loop 4 running",
                                       "lastTransitionTime": "2026-11-25T20:00:00Z", "observedGeneration": 2}]}
        }))
        .expect("a valid LoopService")
    }

    #[test]
    fn a_cached_loopservice_expands_to_the_same_loopservice() {
        let same = |ls: &LoopService| {
            let back = CachedLoopService::new(ls.clone()).expand().unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(ls).unwrap());
        };
        let ls = busy();
        same(&ls);
        let mut idle = ls.clone();
        idle.status = Some(LoopServiceStatus { observed_generation: Some(0), ..LoopServiceStatus::default() });
        same(&idle);
        let mut bare = ls;
        bare.status = None;
        same(&bare);
    }

    #[test]
    fn it_decodes_as_a_loopservice_and_refuses_what_a_loopservice_refuses() {
        let value = serde_json::to_value(busy()).unwrap();
        let cached: CachedLoopService = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(cached.expand().unwrap()).unwrap(), serde_json::to_value(busy()).unwrap());
        let mut bad = value;
        bad["spec"]["loops"] = json!("ten");
        assert!(serde_json::from_value::<CachedLoopService>(bad).is_err());
    }

    /// The key read off the cache is the one the reconcile's dry run is kept under, so that a
    /// LoopService of a spec known refused is known so before it is decoded.
    #[tokio::test]
    async fn its_spec_key_is_the_dry_run_verdicts_key() {
        let cached = CachedLoopService::new(busy());
        let verdicts = crate::verdicts::Verdicts::default();
        let spec = cached.expand().unwrap().spec;
        let cell = verdicts.cell("ns", &spec);
        cell.get_or_init(|| async { crate::verdicts::Verdict::refused("quota".into()) }).await;
        assert!(verdicts.refused(cached.glance.spec_key));
    }

    #[test]
    fn it_is_the_loopservice_resource() {
        assert_eq!(CachedLoopService::kind(&()), "LoopService");
        assert_eq!(CachedLoopService::api_version(&()), "loops.dev/v1alpha1");
        assert_eq!(CachedLoopService::plural(&()), "loopservices");
    }

    #[test]
    fn it_is_smaller_than_the_loopservice_it_keeps() {
        assert!(std::mem::size_of::<CachedLoopService>() * 3 < std::mem::size_of::<LoopService>());
    }
}
