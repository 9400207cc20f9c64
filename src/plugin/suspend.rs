//! `suspend NAME` and `resume NAME`: spec.suspend, patched as `kubectl patch --type merge`,
//! in one write.

use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::connect::Target;
use super::{format, Error, EXIT_OK};
use crate::crd::LoopService;

pub async fn set_suspend(t: &Target, name: &str, suspend: bool) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let what = if suspend { "suspending" } else { "resuming" };
    let fail = |e| Error::loopservice(what, name, &t.namespace, e);
    // A patch of a missing object would say only "not found": read it first to say which.
    let before = api.get(name).await.map_err(fail)?;
    let self_suspended = before.status.as_ref().and_then(|s| s.failure_suspension.as_ref()).is_some_and(|s| s.active);
    let (patch, verb) = change(suspend, before.spec.suspend, self_suspended);
    if let Some(patch) = patch {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(fail)?;
    }
    format::print(&format!("loopservice.loops.dev/{name} {verb}\n"))?;
    Ok(EXIT_OK)
}

/// The merge patch `suspend` (true) or `resume` (false) writes, if any, and what it says
/// happened, from spec.suspend as read and whether the LoopService suspended itself after
/// failures. Such a suspension ends with any change to the spec (the operator never writes
/// the spec, so that a user's `suspend` stays theirs): where `suspend: false` is written
/// already, the change is to remove it, which means the same; one write either way, so that
/// no one sees the spec suspended for a moment, and no second write can fail after the first.
pub fn change(suspend: bool, spec_suspend: Option<bool>, self_suspended: bool) -> (Option<Value>, &'static str) {
    let write = |value: Value| Some(json!({"spec": {"suspend": value}}));
    let suspended = spec_suspend == Some(true);
    match (suspend, suspended, self_suspended) {
        (true, true, _) => (None, "already suspended"),
        (true, false, _) => (write(json!(true)), "suspended"),
        (false, true, _) => (write(json!(false)), "resumed"),
        (false, false, false) => (None, "was not suspended"),
        (false, false, true) => {
            let value = if spec_suspend.is_some() { Value::Null } else { json!(false) };
            (write(value), "resumed (its suspension after failures has ended)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::{Request, Response};
    use kube::client::Body;

    #[test]
    fn each_case_is_at_most_one_write_and_a_resume_after_failures_changes_the_spec() {
        let patch = |v: Value| Some(json!({"spec": {"suspend": v}}));
        let cases = [
            // (suspend?, spec.suspend, self-suspended) -> (patch, verb)
            ((true, Some(true), false), (None, "already suspended")),
            ((true, None, false), (patch(json!(true)), "suspended")),
            ((true, Some(false), true), (patch(json!(true)), "suspended")),
            ((false, Some(true), false), (patch(json!(false)), "resumed")),
            ((false, Some(true), true), (patch(json!(false)), "resumed")),
            ((false, None, false), (None, "was not suspended")),
            ((false, Some(false), false), (None, "was not suspended")),
            ((false, None, true), (patch(json!(false)), "resumed (its suspension after failures has ended)")),
            ((false, Some(false), true), (patch(Value::Null), "resumed (its suspension after failures has ended)")),
        ];
        for ((suspend, spec, selfs), want) in cases {
            assert_eq!(change(suspend, spec, selfs), want, "suspend={suspend} spec.suspend={spec:?} self-suspended={selfs}");
        }
    }

    /// The LoopService `report` in `ns`, `suspend: false`, suspended by itself after failures.
    fn self_suspended() -> Value {
        json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "report", "namespace": "ns", "uid": "u", "generation": 4, "resourceVersion": "7"},
            "spec": {"interval": "30s", "image": "busybox", "suspend": false},
            "status": {"failureSuspension": {"loop": 3, "failures": 3, "time": "2026-03-01T10:00:00Z", "generation": 4, "active": true}},
        })
    }

    #[tokio::test]
    async fn resume_after_failures_reads_once_and_writes_once() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let mut seen = vec![];
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("a request body");
                let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("a JSON body") };
                let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                seen.push((parts.method.to_string(), parts.uri.path().to_string(), content_type, body));
                let answer = serde_json::to_vec(&self_suspended()).expect("JSON");
                send.send_response(Response::builder().status(200).body(Body::from(answer)).expect("a response"));
            }
            seen
        });
        let target = Target { client: kube::Client::new(service, "ns"), namespace: "ns".into() };
        assert_eq!(set_suspend(&target, "report", false).await.unwrap(), EXIT_OK);
        drop(target);
        let seen = server.await.unwrap();
        let path = "/apis/loops.dev/v1alpha1/namespaces/ns/loopservices/report".to_string();
        assert_eq!(
            seen,
            [
                ("GET".to_string(), path.clone(), None, Value::Null),
                ("PATCH".to_string(), path, Some("application/merge-patch+json".to_string()), json!({"spec": {"suspend": null}})),
            ]
        );
    }
}
