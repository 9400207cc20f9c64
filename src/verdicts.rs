//! What the API server said of a dry-run create of a spec's Job (or, for a spec the operator's
//! own rules refuse, what they said), by namespace and spec, kept for [`VERDICT_TTL`]: LoopServices stamped from one spec (hundreds made at once, or all
//! overdue when the operator starts) are checked once, not once each. Those checking the same
//! spec at the same time wait for one answer. A refusal is kept as long: its cause (a quota, a
//! webhook) may go, but thousands of LoopServices of one broken spec (one tenant's mistake, or
//! its attempt to load the API server) then cost one dry run every [`VERDICT_TTL`], not one
//! each.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::crd::LoopServiceSpec;

pub const VERDICT_TTL: Duration = Duration::from_secs(10);

/// What the API server said of a spec's Job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Why it refuses the Job, drops part of it, or would refuse its Pods; `None`: it takes it.
    pub refused: Option<String>,
    /// A warning it took the Job with that the user should read (the Pod template breaks the
    /// namespace's PodSecurity `warn` level, not its `enforce` level).
    pub warning: Option<String>,
}

impl Verdict {
    pub fn refused(why: String) -> Verdict {
        Verdict { refused: Some(why), warning: None }
    }
}

/// A spec's answer, and when it was first asked for.
type Entry = (Instant, Arc<OnceCell<Verdict>>);

#[derive(Default)]
pub struct Verdicts(Mutex<HashMap<u64, Entry>>);

impl Verdicts {
    /// The answer for `spec` in `ns`: filled already, or to be filled by the first caller
    /// (`OnceCell::get_or_try_init`), whom the others wait for.
    pub fn cell(&self, ns: &str, spec: &LoopServiceSpec) -> Arc<OnceCell<Verdict>> {
        let key = key(ns, &serde_json::to_string(spec).unwrap_or_default());
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (at, _)| at.elapsed() < VERDICT_TTL);
        map.entry(key).or_insert_with(|| (Instant::now(), Arc::default())).1.clone()
    }

    /// Whether the spec of `key` ([`key`]) is known refused: asked within [`VERDICT_TTL`] and
    /// refused.
    pub fn refused(&self, key: u64) -> bool {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).is_some_and(|(at, cell)| at.elapsed() < VERDICT_TTL && cell.get().is_some_and(|v| v.refused.is_some()))
    }
}

/// The key of a spec (as its JSON text) in `ns`.
pub fn key(ns: &str, spec_json: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ns.hash(&mut h);
    spec_json.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str) -> LoopServiceSpec {
        serde_json::from_value(serde_json::json!({"interval": "1m", "image": image})).unwrap()
    }

    /// Asks `v` for `image`'s verdict in `ns`, counting in `asked` the times it was not known.
    async fn check(v: &Verdicts, asked: &std::sync::atomic::AtomicUsize, ns: &str, image: &str, answer: Verdict) -> Verdict {
        let cell = v.cell(ns, &spec(image));
        cell.get_or_try_init(|| async {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(answer)
        })
        .await
        .unwrap()
        .clone()
    }

    #[tokio::test]
    async fn one_check_per_spec_and_namespace_refusals_included() {
        let v = Verdicts::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let takes = Verdict::default;
        let warned = Verdict { refused: None, warning: Some("PodSecurity warn".into()) };
        assert_eq!(check(&v, &asked, "a", "busybox", warned.clone()).await, warned);
        assert_eq!(
            check(&v, &asked, "a", "busybox", Verdict::refused("not asked".into())).await,
            warned,
            "the same spec is answered from before"
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        let quota = Verdict::refused("quota".into());
        assert_eq!(check(&v, &asked, "b", "busybox", quota.clone()).await, quota, "another namespace is asked");
        // Thousands of LoopServices of one refused spec: one dry run.
        for _ in 0..1000 {
            assert_eq!(check(&v, &asked, "b", "busybox", takes()).await, quota, "a refusal is kept too");
        }
        assert_eq!(check(&v, &asked, "a", "alpine", takes()).await, takes());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_asked_again_once_they_are_old() {
        let v = Verdicts::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let quota = Verdict::refused("quota".into());
        assert_eq!(check(&v, &asked, "b", "busybox", quota.clone()).await, quota);
        assert_eq!(check(&v, &asked, "b", "busybox", Verdict::default()).await, quota);
        tokio::time::advance(VERDICT_TTL - Duration::from_millis(1)).await;
        assert_eq!(check(&v, &asked, "b", "busybox", Verdict::default()).await, quota, "kept for the whole time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(check(&v, &asked, "b", "busybox", Verdict::default()).await, Verdict::default(), "the quota went: asked again");
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spec_is_known_refused_only_while_its_refusal_is_kept() {
        let v = Verdicts::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let of = |ns: &str, image: &str| key(ns, &serde_json::to_string(&spec(image)).unwrap());
        assert!(!v.refused(of("b", "busybox")), "never asked");
        check(&v, &asked, "b", "busybox", Verdict::refused("quota".into())).await;
        check(&v, &asked, "b", "alpine", Verdict::default()).await;
        assert!(v.refused(of("b", "busybox")));
        assert!(!v.refused(of("b", "alpine")), "taken");
        assert!(!v.refused(of("a", "busybox")), "another namespace's spec");
        tokio::time::advance(VERDICT_TTL).await;
        assert!(!v.refused(of("b", "busybox")), "old");
    }
}
