//! One reconcile of one LoopService, in four stages:
//!
//! ```text
//! claim    whether this release works it, or another one does               claim.rs
//! observe  what the caches say (and the few reads they cannot answer)   observe.rs
//! plan     pure: the status, the Ready verdict, the launch, the requeue  plan.rs
//! act      the launch: the Job create, ahead of every other write       act.rs
//! record   the status write, then metrics, Events and old Jobs' deletes  record.rs
//! ```
//!
//! The clock is read once, at the start, and passed down. A reconcile that fails is retried
//! with backoff ([`error_policy`]) and shows in the Reconciled condition once it repeats.

pub mod act;
pub mod claim;
#[cfg(test)]
mod claim_tests;
pub mod context;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod fixtures;
pub mod observe;
pub mod plan;
pub mod record;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tracing::{debug, warn};

pub use context::{Caches, Context, Fault, LoopEvents, Parts, Settings};
use observe::Observation;
use plan::Recheck;

use crate::cached::CachedLoopService;
use crate::crd::LoopService;
use crate::metrics::ErrorLabels;
use crate::turns::Priority;
use crate::{is_transient, status, Error, Result};

/// Reconciles one LoopService.
pub async fn reconcile(cached: Arc<CachedLoopService>, ctx: Arc<Context>) -> Result<Action> {
    // Nothing is decided before the Jobs and Pods are known.
    if !ctx.caches.synced.load(Ordering::SeqCst) {
        ctx.metrics.requeued(Recheck::Unsynced);
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    // The controller starts every reconcile that is due; at most `max_reconciles` go past here
    // at once, namespaces in turn, so that thousands due in one namespace hold back another's
    // by a place each, not by all of theirs; and a quarter of the places is kept for reconciles
    // that may start a loop (`crate::urgency`). Waiting here costs little: nothing is expanded yet.
    let refused = cached.glance.refused(|key| ctx.verdicts.refused(key));
    let urgent = cached.glance.urgent(ctx.clock.now().as_millisecond(), |_| refused);
    let manner = claim::Manner { urgent, refused };
    let _slot = ctx.slot(urgent, cached.namespace().as_deref().unwrap_or_default()).await;
    let ls = Arc::new(cached.expand().map_err(|e| Error::Cached(cached.name_any(), e))?);
    let began = Instant::now();
    ctx.metrics.reconciles.inc();
    // The work is boxed, and so allocated only once the reconcile has its place: the controller
    // makes one of these for every LoopService due, and most finish in their first poll.
    let res = match tokio::time::timeout(ctx.settings.reconcile_timeout, Box::pin(stages(ls.clone(), &ctx, manner))).await {
        Ok(res) => res,
        Err(_) => Err(Error::TimedOut(ctx.settings.reconcile_timeout)),
    };
    // Timed only when it got to a decision: one put off for the cache to catch up is not one.
    let res = match res {
        Ok(Staged::PutOff(action)) => return Ok(action),
        Ok(Staged::Done(action)) => Ok(action),
        Err(e) => Err(e),
    };
    ctx.metrics.reconcile_seconds.observe(began.elapsed().as_secs_f64());
    match &res {
        Ok(_) => {
            ctx.retries(&key(ls.as_ref()), true);
        }
        // A conflict is the cache a step behind a write of our own: no news. An injected fault
        // stands for the process dying there: nothing more is written.
        Err(e) if !is_conflict(e) && !matches!(e, Error::Fault(_)) => report_failure(&ls, &ctx, e).await,
        Err(_) => {}
    }
    res
}

/// How a reconcile ended.
enum Staged {
    /// It decided, and did what it decided.
    Done(Action),
    /// The cache lacked this instance's own last write: it looks again shortly.
    PutOff(Action),
}

/// Claim, observe, plan, act, record.
async fn stages(ls: Arc<LoopService>, ctx: &Context, manner: claim::Manner) -> Result<Staged> {
    let now = ctx.clock.now();
    let (ls, paced) = match claim::claim(ls, ctx, manner, now).await? {
        claim::Claimed::Ours { ls, paced } => (ls, paced),
        claim::Claimed::Elsewhere(action) => {
            ctx.metrics.requeued(Recheck::StandBy);
            return Ok(Staged::Done(action));
        }
        claim::Claimed::Later(action) => {
            ctx.metrics.requeued(Recheck::Paced);
            return Ok(Staged::Done(action));
        }
    };
    let ns = ls.namespace().unwrap_or_default();
    let observed = match observe::observe(ls, ctx, now).await? {
        Observation::Seen(observed) => observed,
        Observation::Behind => {
            ctx.metrics.requeued(Recheck::OwnWrite);
            return Ok(Staged::PutOff(Action::requeue(observe::OWN_WRITE_RECHECK)));
        }
        Observation::Gone(held) => {
            record::release(ctx, &ns, &held, None).await?;
            ctx.metrics.requeued(Recheck::OnChange);
            return Ok(Staged::Done(Action::await_change()));
        }
    };
    let plan = plan::plan(&observed, now);
    let launched = act::act(&observed, plan.launch.as_ref(), ctx).await?;
    record::record(&observed, plan, launched, paced, ctx, now).await.map(Staged::Done)
}

fn is_conflict(e: &Error) -> bool {
    matches!(e.kube(), Some(kube::Error::Api(s)) if s.code == 409)
}

/// Shows a failing reconcile in status (`Reconciled=False` with the error), so that it is seen
/// with `kubectl describe`, not only in the operator's log. Best effort: the cause may forbid
/// the status write too. A transient error shows only once it repeats.
async fn report_failure(ls: &LoopService, ctx: &Context, err: &Error) {
    let failures = ctx.failures(&key(ls)) + 1;
    let transient = err.kube().is_some_and(is_transient);
    if transient && failures < 3 {
        return;
    }
    let prev = ls.status.clone().unwrap_or_default();
    let mut st = prev.clone();
    status::reconcile_failed(&mut st, &err.plain(), failures, ctx.clock.now());
    if st != prev {
        let _turn = ctx.request(Priority::Bookkeeping, ls.namespace().as_deref().unwrap_or_default()).await;
        if let Err(e) = record::write_status(ls, &st, ctx).await {
            debug!(name = %ls.name_any(), error = %e, "could not record the reconcile error in status");
        }
    }
}

/// The key of a LoopService's retry count.
fn key(ls: &impl ResourceExt) -> ObjectRef<LoopService> {
    ObjectRef::new(&ls.name_any()).within(ls.namespace().as_deref().unwrap_or_default())
}

/// Retries failed reconciles with exponential backoff per LoopService: 250 ms doubling to a
/// minute. The cap keeps a LoopService that cannot be reconciled (say, RBAC is missing) from
/// being retried hot, and is short enough that it recovers soon after the cause is fixed.
pub fn error_policy(ls: Arc<CachedLoopService>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.retries(&key(ls.as_ref()), false);
    let transient = err.kube().is_some_and(is_transient);
    // A transient error (the API server away) is retried within 2 s, so that a due loop starts
    // soon after the API server answers again, however long it was away.
    let cap = if transient { Duration::from_secs(2) } else { Duration::from_secs(60) };
    let delay = Duration::from_millis(250u64.saturating_mul(1 << n.clamp(1, 9).saturating_sub(1))).min(cap);
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { step: err.metric_label().to_string() }).inc();
    ctx.metrics.requeued(Recheck::Error);
    let (namespace, name, retry_in_ms) = (ls.namespace().unwrap_or_default(), ls.name_any(), delay.as_millis() as u64);
    if is_conflict(err) {
        // The cache was a step behind a write of our own; the retry reads the new version.
        debug!(%namespace, %name, error = %err, retry_in_ms, "reconcile conflicted");
    } else {
        warn!(%namespace, %name, error = %err.plain(), transient, retry_in_ms, "reconcile failed");
    }
    Action::requeue(delay)
}
