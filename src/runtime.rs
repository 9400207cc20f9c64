//! The controller's wiring: the watches and caches of LoopServices, Jobs and Pods, the
//! controller that runs [`reconcile`] on them, and the housekeeping beside it (sweeping what
//! deleted LoopServices leave, handing freed heap back, saying when the caches are ready).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cache::{self, Cache};
use crate::cached::CachedLoopService;
use crate::crd::{LoopService, Phase};
use crate::keys::ANN_LAST_APPLIED;
use crate::metrics::LsLabels;
use crate::reasons::{ConditionType, Reason, FALSE};
use crate::reconcile::{error_policy, reconcile, Caches, Context, Parts};
use crate::scope::Scope;
use crate::shard::{Filter, Shard};
use crate::text::clip;

/// How often the series of deleted LoopServices are swept from /metrics.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long no reconcile runs (give or take half of it) before freed heap is handed back.
const QUIET_BEFORE_TRIM: Duration = Duration::from_secs(1);

/// The LoopServices the operator works: those of its namespaces and its shard.
#[derive(Clone)]
pub struct Selection {
    pub scope: Scope,
    pub shard: Shard,
    /// The client of the LoopService watch when it differs from the operator's: one that asks
    /// the API server for the shard's LoopServices only.
    pub loopservice_client: Option<Client>,
}

/// Runs the controller on the LoopServices of `selection` until `shutdown` resolves and every
/// in-flight reconcile has finished. `ready` is set once the caches have synced.
pub async fn run(parts: Parts, selection: Selection, ready: Arc<AtomicBool>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = parts.client.clone();
    let Selection { scope, shard, loopservice_client } = selection;
    let filter = |kind| Filter::new(shard, &parts.metrics, kind);
    let owned = || scope.config(cache::owned_config());
    let (jobs, job_stream) = Cache::new(apis(&client, &scope), owned(), filter("job"), cache::trim_job);
    let (pods, pod_stream) = Cache::new(apis(&client, &scope), owned(), filter("pod"), cache::trim_pod);
    let failed_creates_config = crate::failed_creates::config(&scope);
    let (failed_creates, failed_create_stream) = Cache::new(
        apis(&client, &scope),
        failed_creates_config,
        crate::failed_creates::filter(&parts.metrics),
        crate::failed_creates::trim,
    );
    let caches =
        Caches { jobs, pods, failed_creates, synced: Arc::new(AtomicBool::new(false)), watch_failed_at: Arc::new(AtomicI64::new(0)) };
    cache::drive(pod_stream, "pods", caches.watch_failed_at.clone());
    // Its failures do not make the other caches suspect: without it, a Job without a Pod is
    // only not told why.
    cache::drive(failed_create_stream, "FailedCreate events", Arc::new(AtomicI64::new(0)));
    let (store, writer) = reflector::store();
    let ls_client = loopservice_client.unwrap_or_else(|| client.clone());
    let ls_stream = loopservices(&ls_client, &scope, filter("loopservice"), &store)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(loopservice_fingerprint, Default::default());
    let ctx = Arc::new(Context::new(parts, caches.clone()));
    // No limit here: `reconcile` takes one of `max_reconciles` places, handed out fairly between
    // namespaces (the controller's own limit serves waiting reconciles in no particular order).
    let config = kube::runtime::controller::Config::default().concurrency(0);
    // Each watch is decoded, and its store kept, on a task of its own (see `cache::on_own_task`).
    let ls_stream = cache::on_own_task(ls_stream, cache::HANDOFF);
    let job_stream =
        cache::on_own_task(cache::job_triggers(job_stream).inspect_ok(crate::orphans::watch(store.clone(), ctx.clone())), cache::HANDOFF);
    let controller =
        Controller::for_stream(ls_stream, store.clone()).owns_stream(job_stream).with_config(config).graceful_shutdown_on(shutdown);
    sweep_deleted(store.clone(), ctx.clone());
    crate::orphans::sweep(store.clone(), ctx.clone(), SWEEP_EVERY);
    trim_heap_when_quiet(ctx.clone());
    signal_ready(store, &caches, ready, ctx.clone());
    let watch_failed_at = caches.watch_failed_at.clone();
    controller.run(reconcile, error_policy, ctx).for_each(|res| log_result(res, &watch_failed_at)).await;
}

/// Reads the API server's clock `n` times; says how far off this machine's clock is when that
/// is more than a second.
async fn read_server_clock(ctx: Arc<Context>, n: usize) {
    let before = ctx.clock.now().as_millisecond() - ctx.clock.machine().as_millisecond();
    if crate::clock::read_server_clock(&ctx.client, ctx.clock.as_ref(), n).await == 0 {
        warn!("could not read the API server's clock (the Date of its answers); loops follow this machine's");
        return;
    }
    let offset = ctx.clock.now().as_millisecond() - ctx.clock.machine().as_millisecond();
    ctx.metrics.clock_offset_seconds.set(offset as f64 / 1000.0);
    if offset.abs() > 1000 && (offset - before).abs() > 1000 {
        warn!(offset_ms = offset, "this machine's clock is off the API server's; loops are planned and recorded on the API server's");
    }
}

/// A watch's API per watch of `scope`: a namespace's, or the cluster's (`None`).
fn apis<K>(client: &Client, scope: &Scope) -> Vec<(Option<String>, Api<K>)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    let api = |ns: Option<&str>| ns.map_or_else(|| Api::all(client.clone()), |ns| Api::namespaced(client.clone(), ns));
    scope.watches().into_iter().map(|ns| (ns.map(String::from), api(ns))).collect()
}

/// The LoopService watch (one per namespace of a list, merged for the one `store`).
/// LoopServices are read untyped and decoded one by one: one the operator cannot decode (a value
/// the schema let through) is reported in its own status, and never keeps the others from a list.
fn loopservices(
    client: &Client,
    scope: &Scope,
    shard: Filter,
    store: &Store<CachedLoopService>,
) -> impl Stream<Item = Result<watcher::Event<CachedLoopService>, watcher::Error>> + Send + 'static {
    let ar = ApiResource::erase::<LoopService>(&());
    let config = scope.config(watcher::Config::default().timeout(cache::WATCH_TIMEOUT_SECS));
    let watches = scope.watches().into_iter().map(|ns| {
        let raw_api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let undecodable = raw_api.clone();
        let shard = shard.clone();
        let stream = watcher(raw_api, config.clone())
            .backoff(cache::watch_backoff())
            .try_filter(move |event| std::future::ready(shard.keeps(event, |o| o.metadata.uid.as_deref())))
            .try_filter_map(move |event| std::future::ready(Ok(decode_event(event, &undecodable))))
            .modify(trim_loopservice)
            .map_ok(to_cached);
        (ns.map(String::from), stream)
    });
    crate::watches::combine(watches.collect(), store)
}

/// Deleted LoopServices are never reconciled again: their metric series, retry counters and
/// last writes are swept now and then.
fn sweep_deleted(store: Store<CachedLoopService>, ctx: Arc<Context>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            read_server_clock(ctx.clone(), 1).await;
            let exists = |l: &LsLabels| store.get(&ObjectRef::new(&l.name).within(&l.namespace)).is_some();
            for gone in ctx.metrics.forget_missing(exists) {
                debug!(namespace = %gone.namespace, name = %gone.name, "removed the metrics of a deleted loopservice");
            }
            let uids: std::collections::HashSet<String> = store.state().iter().filter_map(|l| l.uid()).collect();
            ctx.forget_missing(|k| store.get(&ObjectRef::new(&k.name).within(k.namespace.as_deref().unwrap_or_default())).is_some(), &uids);
            drop(uids);
            let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
        }
    });
}

/// Freed heap is handed back once a burst of reconciles (a start, a wave of due loops) is
/// over: when none ran for a while after some did.
fn trim_heap_when_quiet(ctx: Arc<Context>) {
    tokio::spawn(async move {
        let (mut seen, mut trimmed) = (0, 0);
        loop {
            tokio::time::sleep(QUIET_BEFORE_TRIM / 2).await;
            let now = ctx.metrics.reconciles.get();
            if now == seen && now != trimmed {
                let _ = tokio::task::spawn_blocking(crate::heap::trim).await;
                trimmed = now;
            }
            seen = now;
        }
    });
}

/// Sets `synced` and `ready` once the LoopService, Job and Pod caches have all synced.
///
/// The API server's clock is read meanwhile: no loop is planned before the first reading (or
/// a failure to take it within a few seconds).
fn signal_ready(store: Store<CachedLoopService>, caches: &Caches, ready: Arc<AtomicBool>, ctx: Arc<Context>) {
    let (job_store, pod_store, synced) = (caches.jobs.store.clone(), caches.pods.store.clone(), caches.synced.clone());
    let clock_read = tokio::spawn(read_server_clock(ctx.clone(), 1));
    tokio::spawn(async move {
        // The stores' readiness signals wake only the last task that polled them, and the
        // controller polls one too: poll again now and then rather than wait to be woken.
        let all = async {
            store.wait_until_ready().await?;
            job_store.wait_until_ready().await?;
            pod_store.wait_until_ready().await
        };
        let mut all = std::pin::pin!(all);
        loop {
            match tokio::time::timeout(Duration::from_millis(100), &mut all).await {
                Ok(Ok(())) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), clock_read).await;
                    // More readings narrow the window; loops' Job creates add theirs.
                    tokio::spawn(read_server_clock(ctx.clone(), 3));
                    info!("caches synced");
                    synced.store(true, Ordering::SeqCst);
                    ready.store(true, Ordering::SeqCst);
                    // The initial lists' decoding is over: hand its freed pages back.
                    tokio::task::spawn_blocking(crate::heap::trim);
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
    });
}

type RunResult = Result<
    (ObjectRef<CachedLoopService>, kube::runtime::controller::Action),
    kube::runtime::controller::Error<crate::Error, watcher::Error>,
>;

async fn log_result(res: RunResult, watch_failed_at: &AtomicI64) {
    match res {
        Ok((obj, _)) => debug!(name = %obj.name, namespace = obj.namespace.as_deref().unwrap_or(""), "reconciled"),
        // Logged by error_policy already.
        Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
        // Watch failures (the API server unreachable, RBAC missing) land here; the watcher
        // retries them with backoff.
        Err(e) => {
            watch_failed_at.store(Timestamp::now().as_millisecond(), Ordering::SeqCst);
            warn!(error = %e, "controller stream error");
        }
    }
}

/// A watch event of untyped LoopServices as typed ones. One that cannot be decoded leaves the
/// cache (a Delete of its name), and its status says why.
fn decode_event(event: watcher::Event<DynamicObject>, api: &Api<DynamicObject>) -> Option<watcher::Event<LoopService>> {
    use watcher::Event as E;
    // The object comes back with the error, boxed: it is far larger than a LoopService's Ok.
    let decode = |obj: DynamicObject| -> std::result::Result<LoopService, Box<(DynamicObject, String)>> {
        // Measured before anything is copied: an oversized spec is never decoded, or cached.
        if let Some(why) = oversized(&obj) {
            return Err(Box::new((obj, why)));
        }
        let value = serde_json::to_value(&obj).unwrap_or_default();
        serde_path_to_error::deserialize::<_, LoopService>(value).map_err(|e| Box::new((obj, format!("{}: {}", e.path(), e.inner()))))
    };
    let apply = |obj: DynamicObject, init: bool| match decode(obj) {
        Ok(ls) if init => Some(E::InitApply(ls)),
        Ok(ls) => Some(E::Apply(ls)),
        Err(failed) => {
            let (obj, why) = *failed;
            report_undecodable(api, &obj, &why);
            // The cache drops it (during a list, by leaving it out): with a spec it cannot read,
            // nothing runs.
            if init {
                None
            } else {
                placeholder(&obj).map(E::Delete)
            }
        }
    };
    match event {
        E::Apply(o) => apply(o, false),
        E::InitApply(o) => apply(o, true),
        E::Delete(o) => match decode(o) {
            Ok(ls) => Some(E::Delete(ls)),
            Err(failed) => placeholder(&failed.0).map(E::Delete),
        },
        E::Init => Some(E::Init),
        E::InitDone => Some(E::InitDone),
    }
}

/// The most a LoopService's spec may take, as compact JSON. A Pod template with dozens of
/// variables and volumes takes a few KiB; the cap keeps what one namespace can make the
/// operator hold small (1,000 LoopServices at the cap are 32 MiB of text in its cache), where
/// Kubernetes alone would admit specs of about 1.5 MiB each.
pub const MAX_SPEC_BYTES: usize = 32 * 1024;

/// Why a LoopService's spec is too large to run, if it is.
fn oversized(obj: &DynamicObject) -> Option<String> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, obj.data.get("spec")?).ok()?;
    (n.0 > MAX_SPEC_BYTES).then(|| {
        format!(
            "its spec is {} KiB of JSON, and a LoopService's spec may take at most {} KiB: keep large data in a ConfigMap or Secret and mount it",
            n.0.div_ceil(1024),
            MAX_SPEC_BYTES / 1024
        )
    })
}

/// A watch event of LoopServices as the cache keeps them.
fn to_cached(event: watcher::Event<LoopService>) -> watcher::Event<CachedLoopService> {
    use watcher::Event as E;
    match event {
        E::Apply(ls) => E::Apply(ls.into()),
        E::InitApply(ls) => E::InitApply(ls.into()),
        E::Delete(ls) => E::Delete(ls.into()),
        E::Init => E::Init,
        E::InitDone => E::InitDone,
    }
}

/// A LoopService with only the name and namespace of `obj`, to remove it from the cache.
fn placeholder(obj: &DynamicObject) -> Option<LoopService> {
    let mut ls = LoopService::new(obj.metadata.name.as_deref()?, serde_json::from_value(json!({"interval": "1h", "image": "-"})).ok()?);
    ls.metadata.namespace = obj.metadata.namespace.clone();
    ls.metadata.uid = obj.metadata.uid.clone();
    Some(ls)
}

/// Writes `Ready=False InvalidSpec` with why the LoopService cannot be read, unless its status
/// says so already (its own status write comes back through the watch).
fn report_undecodable(api: &Api<DynamicObject>, obj: &DynamicObject, why: &str) {
    let (Some(ns), Some(name)) = (obj.metadata.namespace.clone(), obj.metadata.name.clone()) else { return };
    let message = clip(&format!("the operator cannot read this LoopService: {why}"));
    let conditions = obj.data.pointer("/status/conditions").and_then(|c| c.as_array());
    if conditions.is_some_and(|cs| cs.iter().any(|c| c["type"] == ConditionType::Ready.as_str() && c["message"] == message.as_str())) {
        return;
    }
    warn!(namespace = %ns, %name, error = %why, "cannot decode a loopservice");
    let api = Api::<DynamicObject>::namespaced_with(api.clone().into_client(), &ns, &ApiResource::erase::<LoopService>(&()));
    let patch = json!({"status": {
        "phase": Phase::Invalid,
        "observedGeneration": obj.metadata.generation,
        "conditions": [{
            "type": ConditionType::Ready.as_str(), "status": FALSE, "reason": Reason::InvalidSpec.as_str(), "message": message,
            "lastTransitionTime": crate::crd::Time(Timestamp::now()), "observedGeneration": obj.metadata.generation,
        }],
    }});
    tokio::spawn(async move {
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(namespace = %ns, %name, error = %e, "could not report an unreadable loopservice");
        }
    });
}

/// Drops what the decisions never read from a cached LoopService.
pub fn trim_loopservice(ls: &mut LoopService) {
    ls.metadata.managed_fields = None;
    if let Some(a) = ls.metadata.annotations.as_mut() {
        a.remove(ANN_LAST_APPLIED);
        // A run request too long to run is kept as its digest, which is refused the same way.
        if let Some(r) = a.get_mut(crate::keys::ANN_RUN_REQUESTED_AT).filter(|r| r.len() > crate::status::RUN_REQUEST_MAX) {
            *r = crate::status::refused_request_key(r);
        }
        // Who asked and why are kept as far as they are ever read (see `requester::clean`).
        for (key, max) in [
            (crate::keys::ANN_RUN_REQUESTED_BY, crate::requester::REQUESTER_MAX),
            (crate::keys::ANN_RUN_REASON, crate::requester::REASON_MAX),
        ] {
            if let Some(v) = a.get_mut(key).filter(|v| v.len() > max) {
                *v = crate::requester::clean(v, max).unwrap_or_default();
            }
        }
    }
}

/// Whether a change to a LoopService can change a decision: its spec (generation), its
/// annotations (a run request), its deletion. Status writes, the operator's own above all, do
/// not re-run the plan.
fn loopservice_fingerprint(ls: &CachedLoopService) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ls.metadata.uid.hash(&mut h);
    ls.metadata.generation.hash(&mut h);
    ls.metadata.deletion_timestamp.is_some().hash(&mut h);
    ls.metadata.annotations.hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn a_placeholder_can_always_be_made_to_drop_an_unreadable_loopservice() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
            "spec": {"interval": "1h", "image": "busybox", "ttlSecondsAfterFinished": 2147483648u64},
        }))
        .unwrap();
        let value = serde_json::to_value(&obj).unwrap();
        assert!(serde_json::from_value::<LoopService>(value).is_err(), "an i32 past its range does not decode");
        let p = placeholder(&obj).expect("a placeholder");
        assert_eq!((p.metadata.name.as_deref(), p.metadata.namespace.as_deref()), (Some("x"), Some("ns")));
    }

    #[test]
    fn the_cache_keeps_a_requester_and_reason_only_as_far_as_they_are_read() {
        use crate::keys::{ANN_RUN_REASON, ANN_RUN_REQUESTED_BY};
        let mut ls = LoopService::new("x", serde_json::from_value(json!({"interval": "1h", "image": "busybox"})).unwrap());
        ls.metadata.annotations = Some(
            [(ANN_RUN_REQUESTED_BY, "a".repeat(200_000)), (ANN_RUN_REASON, "why\n".repeat(50_000))].map(|(k, v)| (k.to_string(), v)).into(),
        );
        trim_loopservice(&mut ls);
        let a = ls.metadata.annotations.unwrap();
        assert!(a[ANN_RUN_REQUESTED_BY].len() <= crate::requester::REQUESTER_MAX, "{}", a[ANN_RUN_REQUESTED_BY].len());
        assert!(
            a[ANN_RUN_REASON].len() <= crate::requester::REASON_MAX && a[ANN_RUN_REASON].starts_with("why why"),
            "{}",
            a[ANN_RUN_REASON]
        );
    }

    #[test]
    fn a_spec_past_the_cap_is_refused_with_its_size_and_the_cap() {
        let with_env = |n: usize| -> DynamicObject {
            let env: Vec<serde_json::Value> = (0..n).map(|i| json!({"name": format!("V{i:05}"), "value": "x".repeat(40)})).collect();
            serde_json::from_value(json!({
                "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
                "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
                "spec": {"interval": "1h", "image": "busybox", "env": env},
            }))
            .unwrap()
        };
        assert_eq!(oversized(&with_env(100)), None, "about 6 KiB");
        let why = oversized(&with_env(20_000)).expect("about 1.2 MiB");
        assert!(why.starts_with("its spec is 1348 KiB of JSON, and a LoopService's spec may take at most 32 KiB"), "{why}");
    }
}
