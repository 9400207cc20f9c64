//! Prometheus metrics, served on /metrics: the operator's own (`loopservice_*`) and the
//! standard process metrics (`process_*`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::crd::LoopServiceStatus;
use crate::reasons::{ConditionType, Reason, FALSE, TRUE};

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

/// Which part of a loop's start a start delay measures.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    /// From the loop's due time (plus its jitter) to its Job's creation: the operator's part.
    Created,
    /// From a queued Job's creation to its queue admitting it (Kueue): the queue's part.
    Admitted,
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(match self {
            Stage::Created => "created",
            Stage::Admitted => "admitted",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: Stage,
}

/// Objects the watches were sent, by kind and by whether they are this shard's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `loopservice`, `job` or `pod`.
    pub kind: &'static str,
    /// `ours` (kept) or `others` (another shard's, dropped).
    pub shard: &'static str,
}

/// Why a reconcile asked to run again (`crate::reconcile::plan::Recheck`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequeueLabels {
    pub after: &'static str,
}

/// Which shard this release is.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub index: u32,
    pub shards: u32,
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
    pub loops_missed: Family<LsLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconciles: Counter,
    /// Reconciles by why they asked to run again (a time of their own, or only on a change).
    pub requeues: Family<RequeueLabels, Counter>,
    /// Reconciles that found the cached LoopService behind the operator's own last status
    /// write, and read the stored one instead.
    pub stale_reads: Counter,
    /// Reconciles put off for a moment because the cache did not show the operator's own
    /// status write yet.
    pub own_write_waits: Counter,
    pub reconcile_seconds: Histogram,
    /// By [`Stage`]: how late a loop's Job was created, and how long a queued one waited to be admitted.
    pub start_delay_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// From each LoopService's stored status, set after every reconcile that read or wrote it.
    pub consecutive_failures: Family<LsLabels, Gauge>,
    pub overrunning: Family<LsLabels, Gauge>,
    pub stuck: Family<LsLabels, Gauge>,
    /// The API server's clock minus this machine's, as last estimated.
    pub clock_offset_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// LoopServices another release of the operator works, which this one stands by for.
    pub claimed_elsewhere: Gauge,
    /// Objects the watches were sent (added, changed, deleted, listed), by kind and shard.
    pub watch_events: Family<WatchLabels, Counter>,
    /// 1, labelled with this release's shard and the number of shards.
    pub shard: Family<ShardLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(process::ProcessCollector::default()));
        let registry = root.sub_registry_with_prefix("loopservice");
        let m = Metrics {
            loops_started: Family::default(),
            loops_finished: Family::default(),
            overruns: Family::default(),
            loops_missed: Family::default(),
            reconcile_errors: Family::default(),
            reconciles: Counter::default(),
            requeues: Family::default(),
            stale_reads: Counter::default(),
            own_write_waits: Counter::default(),
            // 1 ms .. ~16 s
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            start_delay_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 15))),
            consecutive_failures: Family::default(),
            overrunning: Family::default(),
            stuck: Family::default(),
            clock_offset_seconds: Gauge::default(),
            claimed_elsewhere: Gauge::default(),
            watch_events: Family::default(),
            shard: Family::default(),
            registry: Registry::default(),
            seen: Default::default(),
        };
        m.register(registry);
        Metrics { registry: root, ..m }
    }
}

impl Metrics {
    /// Registers every series of the operator's own in `registry`.
    fn register(&self, registry: &mut Registry) {
        registry.register("loops_started", "Loops started (Jobs created)", self.loops_started.clone());
        registry.register("loops_finished", "Loops finished, by result (succeeded or failed)", self.loops_finished.clone());
        registry.register("overruns", "Loops that ran longer than their interval", self.overruns.clone());
        registry.register(
            "loops_missed",
            "Due times skipped because their loop would have started past spec.catchUpWindow",
            self.loops_missed.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by step; they are retried with backoff",
            self.reconcile_errors.clone(),
        );
        registry.register("reconciles", "Reconciles run", self.reconciles.clone());
        registry.register(
            "requeues",
            "Reconciles by what they asked for next: after, the reason to run again at a time of their own (due, running, refused, ...), or on_change",
            self.requeues.clone(),
        );
        registry.register(
            "stale_cache_reads",
            "Reconciles that found the cached LoopService behind the operator's own last status write and read the stored one",
            self.stale_reads.clone(),
        );
        registry.register(
            "own_write_waits",
            "Reconciles put off for a moment because the cache did not show the operator's own status write of a moment ago yet",
            self.own_write_waits.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time one reconcile took", self.reconcile_seconds.clone());
        registry.register(
            "start_delay_seconds",
            "How late a loop started, by stage: created (its Job's creation after the loop was due) and admitted (a queued Job's admission after its creation)",
            self.start_delay_seconds.clone(),
        );
        registry.register(
            "consecutive_failures",
            "Loops of the LoopService that failed in a row, up to now (status.consecutiveFailures; 0 after a success)",
            self.consecutive_failures.clone(),
        );
        registry.register(
            "overrunning",
            "1 while the LoopService's latest finished loop ran longer than its interval (the Overrun condition), else 0",
            self.overrunning.clone(),
        );
        registry.register(
            "stuck",
            "1 while the LoopService's loops cannot go on: the running loop's Pod cannot start (Ready=False, reason LoopStuck) or the next loop's Job name is taken (JobNameTaken), else 0",
            self.stuck.clone(),
        );
        registry.register(
            "clock_offset_seconds",
            "The API server's clock minus this machine's, as estimated from the times the API server stamps; loops are planned and recorded on the API server's",
            self.clock_offset_seconds.clone(),
        );
        registry.register(
            "claimed_elsewhere",
            "LoopServices another release of the operator claims and works, which this one stands by for",
            self.claimed_elsewhere.clone(),
        );
        registry.register(
            "watch_events",
            "Objects the watches were sent (listed, added, changed or deleted), by kind, and by shard: ours (kept) or others (another shard's, dropped here; none where the API server shards the LoopService watch itself)",
            self.watch_events.clone(),
        );
        registry.register("shard", "1, labelled with this release's shard index and the number of shards", self.shard.clone());
    }

    /// The start-delay histogram of one stage.
    pub fn start_delay(&self, stage: Stage) -> Histogram {
        self.start_delay_seconds.get_or_create(&StageLabels { stage }).clone()
    }

    /// Notes that `ls` has series.
    pub fn saw(&self, ls: &LsLabels) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(ls.clone());
    }

    /// Sets the per-LoopService gauges from the status stored for `ls`.
    /// Counts a reconcile's ask to run again, by why.
    pub fn requeued(&self, why: crate::reconcile::plan::Recheck) {
        self.requeues.get_or_create(&RequeueLabels { after: why.as_str() }).inc();
    }

    pub fn record_status(&self, ls: &LsLabels, st: &LoopServiceStatus) {
        self.saw(ls);
        let condition = |type_: ConditionType| st.conditions.iter().find(|c| type_ == c.type_);
        let overrunning = condition(ConditionType::Overrun).is_some_and(|c| c.status == TRUE);
        let stuck = condition(ConditionType::Ready)
            .is_some_and(|c| c.status == FALSE && matches!(Reason::parse(&c.reason), Some(Reason::LoopStuck | Reason::JobNameTaken)));
        // Sparse: a series only while its value is not 0, so that thousands of healthy or idle
        // LoopServices add nothing to /metrics (absent reads as 0 in every alert and panel).
        let set = |family: &Family<LsLabels, Gauge>, value: i64| {
            if value == 0 {
                family.remove(ls);
            } else {
                family.get_or_create(ls).set(value);
            }
        };
        set(&self.consecutive_failures, st.consecutive_failures);
        set(&self.overrunning, i64::from(overrunning));
        set(&self.stuck, i64::from(stuck));
    }

    /// Removes the series of LoopServices for which `exists` is false; returns them.
    pub fn forget_missing(&self, exists: impl Fn(&LsLabels) -> bool) -> Vec<LsLabels> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<LsLabels> = seen.iter().filter(|l| !exists(l)).cloned().collect();
        for l in &gone {
            seen.remove(l);
            self.loops_started.remove(l);
            self.overruns.remove(l);
            self.loops_missed.remove(l);
            self.consecutive_failures.remove(l);
            self.overrunning.remove(l);
            self.stuck.remove(l);
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

/// The process metrics, from procfs.
#[cfg(target_os = "linux")]
mod process {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::Unit;

    /// The standard process metrics of the Prometheus client libraries, read from procfs on each
    /// scrape: CPU time, resident and virtual memory, open and maximum file descriptors, threads
    /// and start time. Linux only.
    #[derive(Debug)]
    pub(super) struct ProcessCollector {
        /// Seconds since the Unix epoch at which this process started.
        start_time: Option<f64>,
    }

    impl Default for ProcessCollector {
        fn default() -> Self {
            let start_time = (|| {
                let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
                let boot = procfs::boot_time_secs().ok()?;
                Some(boot as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64)
            })();
            ProcessCollector { start_time }
        }
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
            if let Ok(stat) = me.stat() {
                let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
                let unit = Unit::Seconds;
                ConstCounter::new(cpu).encode(encoder.encode_descriptor(
                    "process_cpu",
                    "Total user and system CPU time spent in seconds",
                    Some(&unit),
                    MetricType::Counter,
                )?)?;
                let unit = Unit::Bytes;
                let rss = stat.rss.saturating_mul(procfs::page_size());
                ConstGauge::new(rss as i64).encode(encoder.encode_descriptor(
                    "process_resident_memory",
                    "Resident memory size in bytes",
                    Some(&unit),
                    MetricType::Gauge,
                )?)?;
                ConstGauge::new(stat.vsize as i64).encode(encoder.encode_descriptor(
                    "process_virtual_memory",
                    "Virtual memory size in bytes",
                    Some(&unit),
                    MetricType::Gauge,
                )?)?;
                ConstGauge::new(stat.num_threads).encode(encoder.encode_descriptor(
                    "process_threads",
                    "Number of OS threads in the process",
                    None,
                    MetricType::Gauge,
                )?)?;
            }
            if let Ok(n) = me.fd_count() {
                ConstGauge::new(n as i64).encode(encoder.encode_descriptor(
                    "process_open_fds",
                    "Number of open file descriptors",
                    None,
                    MetricType::Gauge,
                )?)?;
            }
            if let Ok(procfs::process::LimitValue::Value(n)) = me.limits().map(|l| l.max_open_files.soft_limit) {
                ConstGauge::new(n as i64).encode(encoder.encode_descriptor(
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    None,
                    MetricType::Gauge,
                )?)?;
            }
            if let Some(t) = self.start_time {
                let unit = Unit::Seconds;
                ConstGauge::new(t).encode(encoder.encode_descriptor(
                    "process_start_time",
                    "Start time of the process since the Unix epoch in seconds",
                    Some(&unit),
                    MetricType::Gauge,
                )?)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.loops_started.get_or_create(&LsLabels { namespace: "ns".into(), name: "a".into() }).inc();
        m.start_delay(Stage::Created).observe(0.02);
        let text = m.render();
        assert!(text.contains(r#"loopservice_loops_started_total{namespace="ns",name="a"} 1"#), "{text}");
        assert!(text.contains("loopservice_start_delay_seconds_count{stage=\"created\"} 1"), "{text}");
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

    #[test]
    fn status_gauges_follow_the_stored_status_and_go_with_the_loopservice() {
        use crate::crd::{Condition, Time};
        let m = Metrics::default();
        let ls = LsLabels { namespace: "ns".into(), name: "a".into() };
        let cond = |type_: &str, status: &str, reason: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        let mut st = LoopServiceStatus { consecutive_failures: 4, ..Default::default() };
        st.conditions = vec![cond("Ready", "False", "LoopStuck"), cond("Overrun", "True", "LoopOverran")];
        m.record_status(&ls, &st);
        let text = m.render();
        for line in [
            r#"loopservice_consecutive_failures{namespace="ns",name="a"} 4"#,
            r#"loopservice_overrunning{namespace="ns",name="a"} 1"#,
            r#"loopservice_stuck{namespace="ns",name="a"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        st.consecutive_failures = 0;
        st.conditions = vec![cond("Ready", "True", "Running"), cond("Overrun", "False", "OnTime")];
        m.record_status(&ls, &st);
        let text = m.render();
        // Sparse: a healthy LoopService has no gauge series (absent reads as 0).
        assert!(!text.contains(r#"name="a""#), "{text}");
        st.conditions = vec![cond("Ready", "False", "JobNameTaken")];
        m.record_status(&ls, &st);
        assert!(m.render().contains(r#"loopservice_stuck{namespace="ns",name="a"} 1"#));
        st.conditions = vec![cond("Ready", "False", "Suspended")];
        m.record_status(&ls, &st);
        assert!(!m.render().contains(r#"loopservice_stuck{namespace="ns",name="a"}"#), "suspended on purpose is not stuck");
        m.forget_missing(|_| false);
        assert!(!m.render().contains(r#"name="a""#));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn process_metrics_are_read_from_procfs() {
        let text = Metrics::default().render();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        // A test binary holds at least a few MiB resident, and fewer than it maps.
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 1e6 && rss < value("process_virtual_memory_bytes"), "{text}");
        assert!(value("process_threads") >= 1.0 && value("process_open_fds") >= 3.0, "{text}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 3600.0, "started {started}, now {now}");
        assert!(text.contains("# TYPE process_cpu_seconds counter"), "{text}");
    }
}
