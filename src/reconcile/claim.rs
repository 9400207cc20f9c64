//! Claim: which release of the operator works a LoopService, when more than one is installed
//! (two namespaces, two lease names). Each release that runs with leader election has a name,
//! `<lease namespace>/<lease name>`, and writes it in the LoopService's `loops.dev/claimed-by`
//! annotation before its first write to that LoopService. Another release that finds a claim
//! reads the claimant's Lease: while it is renewed, it stands by for that LoopService (an Event,
//! a log line, and its /readyz say so); once the Lease is gone, has no holder, or has not been
//! renewed for its whole duration, it takes the claim over.
//!
//! The claim is written with the LoopService's resourceVersion as a precondition, so of two
//! releases claiming at once one wins and the other's write conflicts. Liveness is judged the way
//! client-go's leader election judges it: by whether the Lease changes, on this instance's own
//! monotonic clock, never by comparing the claimant's clock with ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::record;
use crate::crd::LoopService;
use crate::keys::ANN_CLAIMED_BY;
use crate::reasons::Reason;
use crate::status::Note;
use crate::turns::Priority;
use crate::{Error, Result};

/// A claimant's Lease read this recently is not read again: one read serves every LoopService
/// it claims.
const READ_EVERY: Duration = Duration::from_secs(1);
/// A release that stands by looks again this often (and a Lease without a duration is taken
/// to last this long).
const STAND_BY_RECHECK: Duration = Duration::from_secs(15);

/// What a reconcile does with its LoopService.
pub enum Claimed {
    /// This release works it: the LoopService to go on with (the stored one, when the claim was
    /// just written), and whether the claim took its turn in the reports' pace (the report that
    /// follows goes in that turn, without asking for another).
    Ours { ls: Arc<LoopService>, paced: bool },
    /// Another release works it: nothing is written; look again after the Action.
    Elsewhere(Action),
    /// Free, but its claim waits for its turn in the reports' pace: nothing is written; look
    /// again after the Action.
    Later(Action),
}

/// How a free LoopService's claim is written. The claim is the first write a new LoopService
/// costs, so it goes as the reconcile's next write would: with the launches when a loop may
/// start, else as bookkeeping; and when the spec is known refused, in the pace of the reports
/// of invalid specs, whose turn it shares with the report after it. Thousands of new broken
/// LoopServices then cost the API server no more claims a second than reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manner {
    /// The reconcile may start a loop ([`crate::urgency`]).
    pub urgent: bool,
    /// Its spec is known refused or invalid ([`crate::urgency::Glance::refused`]).
    pub refused: bool,
}

/// How a claimant's Lease looked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRead {
    /// No such Lease: the release is uninstalled.
    Missing,
    /// The Lease has no holder: the release's leader let it go (it stopped).
    Free,
    /// Held, at this resourceVersion, for `duration` after each renewal.
    Held { version: String, duration: Duration },
    /// It could not be read (no RBAC to read it, the API server away).
    Unreadable(String),
}

/// Whether a claimant still works what it claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Gone, and why (for the Event of the release that takes over).
    Dead(String),
    /// Not known (its Lease unreadable): treated as alive, since taking over a LoopService
    /// another release works would run its loops twice.
    Unknown(String),
}

/// What this instance last saw of a claimant's Lease.
#[derive(Clone, Debug)]
pub struct Sighting {
    version: Option<String>,
    /// When the Lease was first seen at `version`.
    since: Instant,
    /// When it was last read.
    read: Instant,
    verdict: Liveness,
}

/// Judges a claimant from a read of its Lease at `now`, after `before`: alive while its Lease
/// changes at least once per its duration.
pub fn judge(before: Option<&Sighting>, read: LeaseRead, now: Instant) -> Sighting {
    let sighting = |version: Option<String>, since: Instant, verdict| Sighting { version, since, read: now, verdict };
    match read {
        LeaseRead::Missing => sighting(None, now, Liveness::Dead("its Lease does not exist".into())),
        LeaseRead::Free => sighting(None, now, Liveness::Dead("its Lease has no holder".into())),
        LeaseRead::Unreadable(why) => {
            let since = before.map_or(now, |b| b.since);
            sighting(before.and_then(|b| b.version.clone()), since, Liveness::Unknown(why))
        }
        LeaseRead::Held { version, duration } => match before {
            Some(b) if b.version.as_deref() == Some(version.as_str()) => {
                let still = now.saturating_duration_since(b.since);
                let verdict = if still > duration {
                    Liveness::Dead(format!("its Lease was not renewed for {}s", still.as_secs()))
                } else {
                    Liveness::Alive
                };
                sighting(Some(version), b.since, verdict)
            }
            _ => sighting(Some(version), now, Liveness::Alive),
        },
    }
}

/// This release's name and what it knows of other releases' claims; shared by every term of
/// work of the process, and read by /readyz.
#[derive(Debug, Default)]
pub struct Claims {
    /// `<lease namespace>/<lease name>`, when this release claims (it runs with leader
    /// election); without, it claims nothing but still stands by for live claims of others.
    mine: Option<String>,
    seen: Mutex<HashMap<String, Sighting>>,
    /// LoopServices (by uid) another release works, and which.
    standing_by: Mutex<HashMap<String, String>>,
    /// LoopServices (by uid) this release works.
    working: Mutex<std::collections::HashSet<String>>,
}

/// What /readyz says of claims.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    /// Works every LoopService it reconciled (or none is claimed elsewhere).
    Working,
    /// Stands by for some: their count and claimants.
    Partly(String),
    /// Stands by for every LoopService it reconciled: another release works them all.
    Only(String),
}

impl Claims {
    pub fn new(mine: Option<String>) -> Self {
        Claims { mine, ..Claims::default() }
    }

    pub fn mine(&self) -> Option<&str> {
        self.mine.as_deref()
    }

    /// What to say at /readyz.
    pub fn standing(&self) -> Standing {
        let by = self.standing_by.lock().unwrap_or_else(|p| p.into_inner());
        if by.is_empty() {
            return Standing::Working;
        }
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for claimant in by.values() {
            *counts.entry(claimant.as_str()).or_default() += 1;
        }
        let list: Vec<String> = counts.iter().map(|(c, n)| format!("{n} claimed by {c}")).collect();
        let text = format!("standing by for {} LoopServices another release works: {}", by.len(), list.join(", "));
        if self.working.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            Standing::Only(text)
        } else {
            Standing::Partly(text)
        }
    }

    /// LoopServices this release stands by for.
    pub fn standing_by(&self) -> usize {
        self.standing_by.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets LoopServices that no longer exist.
    pub fn forget_missing(&self, uids: &std::collections::HashSet<String>) {
        self.standing_by.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid, _| uids.contains(uid));
        self.working.lock().unwrap_or_else(|p| p.into_inner()).retain(|uid| uids.contains(uid));
    }

    fn works(&self, uid: &str) {
        self.standing_by.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
        let mut working = self.working.lock().unwrap_or_else(|p| p.into_inner());
        if !working.contains(uid) {
            working.insert(uid.to_string());
        }
    }

    /// Records that `claimant` works `uid`; whether that is news.
    fn stands_by(&self, uid: &str, claimant: &str) -> bool {
        self.working.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
        let mut by = self.standing_by.lock().unwrap_or_else(|p| p.into_inner());
        by.insert(uid.to_string(), claimant.to_string()).as_deref() != Some(claimant)
    }

    /// Whether `claimant` still works what it claimed: its Lease read at most once per
    /// [`READ_EVERY`], however many LoopServices it claims.
    async fn liveness(&self, ctx: &Context, claimant: &str) -> Liveness {
        let now = Instant::now();
        let before = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(claimant).cloned();
        if let Some(b) = before.as_ref().filter(|b| now.saturating_duration_since(b.read) < READ_EVERY) {
            return b.verdict.clone();
        }
        let read = read_lease(ctx, claimant).await;
        let sighting = judge(before.as_ref(), read, Instant::now());
        let verdict = sighting.verdict.clone();
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(claimant.to_string(), sighting);
        verdict
    }
}

/// Reads the Lease a claim names (`<namespace>/<name>`).
async fn read_lease(ctx: &Context, claimant: &str) -> LeaseRead {
    let Some((ns, name)) = claimant.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty()) else {
        // Not a claim this operator writes: no release answers to it.
        return LeaseRead::Missing;
    };
    let _turn = ctx.request(Priority::Bookkeeping, ns).await;
    match Api::<Lease>::namespaced(ctx.client.clone(), ns).get_opt(name).await {
        Ok(None) => LeaseRead::Missing,
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            match spec.holder_identity.filter(|h| !h.is_empty()) {
                None => LeaseRead::Free,
                Some(_) => LeaseRead::Held {
                    version: lease.metadata.resource_version.unwrap_or_default(),
                    duration: spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(STAND_BY_RECHECK, Duration::from_secs),
                },
            }
        }
        Err(e) => LeaseRead::Unreadable(e.to_string()),
    }
}

/// Decides whether this release works `ls` at `now`, claiming it when it is free (or its
/// claimant gone) in the given `manner`.
pub async fn claim(ls: Arc<LoopService>, ctx: &Context, manner: Manner, now: jiff::Timestamp) -> Result<Claimed> {
    let claims = &ctx.claims;
    let uid = ls.uid().unwrap_or_default();
    let by = ls.annotations().get(ANN_CLAIMED_BY).filter(|v| !v.is_empty()).cloned();
    let mine = claims.mine();
    let ours = |ls| Ok(Claimed::Ours { ls, paced: false });
    if by.as_deref() == mine {
        claims.works(&uid);
        return ours(ls);
    }
    let mut took_over = None;
    if let Some(by) = by {
        match claims.liveness(ctx, &by).await {
            Liveness::Dead(why) => took_over = Some((by, why)),
            Liveness::Alive => return stand_by(&ls, ctx, &uid, &by, None).await,
            Liveness::Unknown(why) => return stand_by(&ls, ctx, &uid, &by, Some(why)).await,
        }
    }
    // Free (or its claimant gone). Without a name of its own this instance claims nothing; a
    // LoopService being deleted needs no claim to be let go.
    let Some(mine) = mine else {
        claims.works(&uid);
        return ours(ls);
    };
    if ls.meta().deletion_timestamp.is_some() {
        claims.works(&uid);
        return ours(ls);
    }
    let (ns, name) = (ls.namespace().unwrap_or_default(), ls.name_any());
    if manner.refused {
        if let Some(wait) = ctx.invalid_reports.turn(&ns, &name, now) {
            return Ok(Claimed::Later(Action::requeue(wait)));
        }
    }
    let priority = if manner.urgent { Priority::Launch } else { Priority::Bookkeeping };
    let stored = write_claim(&ls, ctx, mine, priority).await?;
    claims.works(&uid);
    ctx.metrics.claimed_elsewhere.set(claims.standing_by() as i64);
    if let Some((former, why)) = took_over {
        info!(namespace = %ns, %name, %former, %why, "took over a loopservice another release claimed");
        let note = Note::normal(
            Reason::ClaimTaken,
            format!("Release {mine} works this LoopService from now on; release {former} claimed it, but {why}."),
        );
        record::publish(&stored, ctx, &[note], None).await?;
    }
    Ok(Claimed::Ours { ls: Arc::new(stored), paced: manner.refused })
}

/// Writes this release's claim, on the condition that the LoopService is as read.
async fn write_claim(ls: &LoopService, ctx: &Context, mine: &str, priority: Priority) -> Result<LoopService> {
    let (ns, name) = (ls.namespace().unwrap_or_default(), ls.name_any());
    let patch = json!({"metadata": {"resourceVersion": ls.resource_version(), "annotations": {ANN_CLAIMED_BY: mine}}});
    let _turn = ctx.request(priority, &ns).await;
    Api::<LoopService>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::Claim(name, e))
}

/// Stands by for a LoopService `claimant` works: said once (a log line and an Event), then
/// looked at again now and then, in case the claimant goes.
async fn stand_by(ls: &LoopService, ctx: &Context, uid: &str, claimant: &str, unknown: Option<String>) -> Result<Claimed> {
    if ctx.claims.stands_by(uid, claimant) {
        let (ns, name) = (ls.namespace().unwrap_or_default(), ls.name_any());
        let mine = ctx.claims.mine().unwrap_or("this operator");
        let why = match &unknown {
            None => "its Lease is renewed".to_string(),
            Some(e) => format!("its Lease cannot be read ({e}), so it may still be working"),
        };
        warn!(namespace = %ns, %name, %claimant, %why, "standing by: another release works this loopservice");
        let note = Note {
            warning: true,
            reason: Reason::ClaimedElsewhere,
            message: format!(
                "Release {mine} stands by: release {claimant} works this LoopService and {why}. Uninstall one of the two releases."
            ),
            job: None,
            times: 1,
            requested: false,
            seconds: None,
        };
        record::publish(ls, ctx, &[note], None).await?;
    }
    ctx.metrics.claimed_elsewhere.set(ctx.claims.standing_by() as i64);
    Ok(Claimed::Elsewhere(Action::requeue(STAND_BY_RECHECK)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(v: &str) -> LeaseRead {
        LeaseRead::Held { version: v.into(), duration: Duration::from_secs(10) }
    }

    #[test]
    fn a_claimant_is_alive_while_its_lease_changes_and_dead_once_it_has_not_for_its_duration() {
        let t = Instant::now();
        let first = judge(None, held("1"), t);
        assert_eq!(first.verdict, Liveness::Alive, "first seen: alive until it could have expired");
        let same = judge(Some(&first), held("1"), t + Duration::from_secs(9));
        assert_eq!(same.verdict, Liveness::Alive);
        let renewed = judge(Some(&same), held("2"), t + Duration::from_secs(12));
        assert_eq!(renewed.verdict, Liveness::Alive, "renewed");
        let stale = judge(Some(&renewed), held("2"), t + Duration::from_secs(23));
        assert_eq!(stale.verdict, Liveness::Dead("its Lease was not renewed for 11s".into()));
    }

    #[test]
    fn a_missing_or_released_lease_is_a_dead_claimant_and_an_unreadable_one_is_not() {
        let t = Instant::now();
        assert!(matches!(judge(None, LeaseRead::Missing, t).verdict, Liveness::Dead(_)));
        assert!(matches!(judge(None, LeaseRead::Free, t).verdict, Liveness::Dead(_)));
        let before = judge(None, held("1"), t);
        let unreadable = judge(Some(&before), LeaseRead::Unreadable("forbidden".into()), t + Duration::from_secs(60));
        assert_eq!(unreadable.verdict, Liveness::Unknown("forbidden".into()));
    }

    #[test]
    fn readiness_says_whom_it_stands_by_for_and_fails_only_when_it_works_nothing() {
        let claims = Claims::new(Some("ops/a".into()));
        assert_eq!(claims.standing(), Standing::Working);
        assert!(claims.stands_by("u1", "other/b"));
        assert!(!claims.stands_by("u1", "other/b"), "said once");
        assert_eq!(claims.standing(), Standing::Only("standing by for 1 LoopServices another release works: 1 claimed by other/b".into()));
        claims.works("u2");
        assert!(matches!(claims.standing(), Standing::Partly(_)));
        claims.forget_missing(&["u2".to_string()].into());
        assert_eq!(claims.standing(), Standing::Working);
    }
}
