//! Prometheus metrics, served on /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LsLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub namespace: String,
    pub name: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub step: String,
}

pub struct Metrics {
    pub registry: Registry,
    /// The LoopServices that have series, so that a deleted one's can be removed.
    seen: std::sync::Mutex<std::collections::HashSet<LsLabels>>,
    pub loops_started: Family<LsLabels, Counter>,
    pub loops_finished: Family<ResultLabels, Counter>,
    pub overruns: Family<LsLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_seconds: Histogram,
    pub start_delay_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("loopservice");
        let m = Metrics {
            loops_started: Family::default(),
            loops_finished: Family::default(),
            overruns: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            // 1 ms .. ~16 s
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            start_delay_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            registry: Registry::default(),
            seen: Default::default(),
        };
        registry.register("loops_started", "Loops started (Jobs created)", m.loops_started.clone());
        registry.register("loops_finished", "Loops finished, by result (succeeded or failed)", m.loops_finished.clone());
        registry.register("overruns", "Loops that ran longer than their interval", m.overruns.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by step; they are retried with backoff", m.reconcile_errors.clone());
        registry.register("reconciles", "Reconciles run", m.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", m.reconcile_seconds.clone());
        registry.register(
            "start_delay_seconds",
            "How late a loop's Job was created after the loop was due",
            m.start_delay_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Notes that `ls` has series.
    pub fn saw(&self, ls: &LsLabels) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(ls.clone());
    }

    /// Removes the series of LoopServices for which `exists` is false; returns them.
    pub fn forget_missing(&self, exists: impl Fn(&LsLabels) -> bool) -> Vec<LsLabels> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<LsLabels> = seen.iter().filter(|l| !exists(l)).cloned().collect();
        for l in &gone {
            seen.remove(l);
            self.loops_started.remove(l);
            self.overruns.remove(l);
            for result in ["succeeded", "failed"] {
                self.loops_finished.remove(&ResultLabels { namespace: l.namespace.clone(), name: l.name.clone(), result: result.into() });
            }
        }
        gone
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.loops_started.get_or_create(&LsLabels { namespace: "ns".into(), name: "a".into() }).inc();
        m.start_delay_seconds.observe(0.02);
        let text = m.render();
        assert!(text.contains(r#"loopservice_loops_started_total{namespace="ns",name="a"} 1"#), "{text}");
        assert!(text.contains("loopservice_start_delay_seconds_count 1"), "{text}");
    }

    #[test]
    fn series_of_deleted_loopservices_are_removed() {
        let m = Metrics::default();
        let (a, b) = (LsLabels { namespace: "ns".into(), name: "a".into() }, LsLabels { namespace: "ns".into(), name: "b".into() });
        for l in [&a, &b] {
            m.saw(l);
            m.loops_started.get_or_create(l).inc();
        }
        let gone = m.forget_missing(|l| l.name == "b");
        assert_eq!(gone, vec![a]);
        let text = m.render();
        assert!(!text.contains(r#"name="a""#) && text.contains(r#"name="b""#), "{text}");
    }
}
