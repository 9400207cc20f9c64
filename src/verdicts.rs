//! What the API server said of a dry-run create of a spec's Job, by namespace and spec, kept
//! for [`VERDICT_TTL`]: LoopServices stamped from one spec (hundreds made at once, or all
//! overdue when the operator starts) are checked once, not once each. Those checking the same
//! spec at the same time wait for one answer. Only "the API server takes it as it is" is kept;
//! a refusal is asked again next time, since its cause (a quota, a webhook) may go.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

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
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ns.hash(&mut h);
        serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
        let key = h.finish();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (at, cell)| at.elapsed() < VERDICT_TTL && cell.get().is_none_or(|v| v.refused.is_none()));
        map.entry(key).or_insert_with(|| (Instant::now(), Arc::default())).1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(image: &str) -> LoopServiceSpec {
        serde_json::from_value(serde_json::json!({"interval": "1m", "image": image})).unwrap()
    }

    #[tokio::test]
    async fn one_check_per_spec_and_namespace_and_refusals_are_asked_again() {
        let v = Verdicts::default();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let check = |ns: &'static str, image: &'static str, answer: Verdict| {
            let cell = v.cell(ns, &spec(image));
            let asked = &asked;
            async move {
                cell.get_or_try_init(|| async {
                    asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, ()>(answer)
                })
                .await
                .unwrap()
                .clone()
            }
        };
        let takes = Verdict::default;
        let warned = Verdict { refused: None, warning: Some("PodSecurity warn".into()) };
        assert_eq!(check("a", "busybox", warned.clone()).await, warned);
        assert_eq!(check("a", "busybox", Verdict::refused("not asked".into())).await, warned, "the same spec is answered from before");
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            check("b", "busybox", Verdict::refused("quota".into())).await.refused.as_deref(),
            Some("quota"),
            "another namespace is asked"
        );
        assert_eq!(check("b", "busybox", takes()).await, takes(), "a refusal is asked again");
        assert_eq!(check("a", "alpine", takes()).await, takes());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
