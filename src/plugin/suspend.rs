//! `suspend NAME` and `resume NAME`: spec.suspend, patched as `kubectl patch --type merge`.

use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use super::connect::Target;
use super::{format, Error, EXIT_OK};
use crate::crd::LoopService;

pub async fn set_suspend(t: &Target, name: &str, suspend: bool) -> Result<u8, Error> {
    let api: Api<LoopService> = Api::namespaced(t.client.clone(), &t.namespace);
    let what = if suspend { "suspending" } else { "resuming" };
    let fail = |e| Error::loopservice(what, name, &t.namespace, e);
    // A patch of a missing object would say only "not found": read it first to say which.
    let before = api.get(name).await.map_err(fail)?;
    let suspended = before.spec.is_suspended();
    let self_suspended = before.status.as_ref().and_then(|s| s.failure_suspension.as_ref()).is_some_and(|s| s.active);
    let patch = |value: bool| {
        let api = api.clone();
        async move { api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"suspend": value}}))).await }
    };
    let verb = match (suspend, suspended, self_suspended) {
        (true, true, _) => "already suspended",
        (true, false, _) => {
            patch(true).await.map_err(fail)?;
            "suspended"
        }
        (false, true, _) => {
            patch(false).await.map_err(fail)?;
            "resumed"
        }
        (false, false, false) => "was not suspended",
        (false, false, true) => {
            // A suspension after failures ends with a change to the spec; where `suspend:
            // false` is written already, that is true and back to false, as the README says.
            if before.spec.suspend == Some(false) {
                patch(true).await.map_err(fail)?;
            }
            patch(false).await.map_err(fail)?;
            "resumed (its suspension after failures has ended)"
        }
    };
    format::print(&format!("loopservice.loops.dev/{name} {verb}\n"))?;
    Ok(EXIT_OK)
}
