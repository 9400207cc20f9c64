//! `release-jobs`: after the operator is uninstalled, takes its finalizer off the loops' Jobs.
//! The operator holds each loop's Job with the finalizer `loops.dev/record-end` until it has
//! recorded the loop's end; a Job of a loop that ran while the operator went away keeps it,
//! and its delete (a TTL, a user, the garbage collector) waits until the finalizer is off.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::connect::Target;
use super::{format, Error, EXIT_OK};
use crate::job;
use crate::keys::{LABEL_MANAGED_BY, MANAGER};

pub async fn release_jobs(t: &Target, all_namespaces: bool) -> Result<u8, Error> {
    let api: Api<Job> = if all_namespaces { Api::all(t.client.clone()) } else { Api::namespaced(t.client.clone(), &t.namespace) };
    let where_ = if all_namespaces { "any namespace".to_string() } else { format!("namespace {:?}", t.namespace) };
    let lp = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    let jobs = api.list(&lp).await.map_err(|source| Error::Api { what: format!("listing the loops' jobs in {where_}"), source })?;
    let mut released = 0;
    for j in &jobs.items {
        let Some(held) = job::held(j) else { continue };
        let ns = j.namespace().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(t.client.clone(), &ns);
        match api.patch(&held.name, &PatchParams::default(), &Patch::<()>::Json(job::release_patch(held.index))).await {
            Ok(_) => {
                format::print(&format!("job.batch/{} released (namespace {ns})\n", held.name))?;
                released += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Api { what: format!("taking the finalizer off job {} in namespace {ns:?}", held.name), source })
            }
        }
    }
    format::print(&format!("{released} job(s) released in {where_}\n"))?;
    Ok(EXIT_OK)
}
