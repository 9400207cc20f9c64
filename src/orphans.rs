//! Jobs whose LoopService is gone. A loop's Job carries the operator's finalizer until its end
//! is recorded; when its LoopService is deleted, no end will be, and the garbage collector's
//! delete of the Job would wait for ever. A held Job being deleted whose owner the cache does
//! not know is checked against the API server and, when the owner is truly gone, let go.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::cached::CachedLoopService;
use crate::crd::LoopService;
use crate::job;
use crate::reconcile::{record, Context};

/// Looks at each Job event the controller gets; spawns the release of an orphan.
pub fn watch(store: Store<CachedLoopService>, ctx: Arc<Context>) -> impl FnMut(&Job) + Send + 'static {
    move |j: &Job| check(j, &store, &ctx)
}

/// Looks at every cached Job once the caches have synced, then every `every`: an orphan whose
/// last event came before they synced (its LoopService deleted while no operator ran) is let
/// go then.
pub fn sweep(store: Store<CachedLoopService>, ctx: Arc<Context>, every: Duration) {
    tokio::spawn(async move {
        while !ctx.caches.synced.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            for j in ctx.caches.jobs.store.state() {
                check(&j, &store, &ctx);
            }
            tokio::time::sleep(every).await;
        }
    });
}

fn check(j: &Job, store: &Store<CachedLoopService>, ctx: &Arc<Context>) {
    let Some(held) = job::held(j).filter(|h| h.deleting) else { return };
    let Some(owner) = j.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "LoopService").cloned() else {
        return;
    };
    let ns = j.namespace().unwrap_or_default();
    let known = store.get(&ObjectRef::new(&owner.name).within(&ns)).is_some_and(|ls| ls.uid().as_deref() == Some(&owner.uid));
    // Before the caches are synced, a LoopService missing from them proves nothing.
    if known || !ctx.caches.synced.load(Ordering::SeqCst) {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let api: Api<LoopService> = Api::namespaced(ctx.client.clone(), &ns);
        match api.get_opt(&owner.name).await {
            Ok(Some(ls)) if ls.uid().as_deref() == Some(&owner.uid) => return,
            Ok(_) => {}
            Err(e) => {
                warn!(namespace = %ns, job = %held.name, error = %e, "could not check the owner of a held job");
                return;
            }
        }
        match record::release(&ctx, &ns, std::slice::from_ref(&held), None).await {
            Ok(()) => info!(namespace = %ns, job = %held.name, loopservice = %owner.name, "released the job of a deleted loopservice"),
            Err(e) => warn!(namespace = %ns, job = %held.name, error = %e.plain(), "could not release the job of a deleted loopservice"),
        }
    });
}
