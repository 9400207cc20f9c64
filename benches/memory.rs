//! Where the operator's memory per LoopService goes, without a cluster (`cargo bench --bench
//! memory`): N suspended LoopServices as the API server returns them (managed fields included,
//! and the Pod template that puts the scale bench's Pods on the fake nodes), decoded and kept
//! in a reflector store as the operator keeps them (`CachedLoopService`: metadata, and spec and
//! status as compact JSON), then their metric series and per-object bookkeeping. Prints
//! resident memory after each step.

use std::collections::HashMap;

use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use loopservice_operator::cached::CachedLoopService;
use loopservice_operator::crd::LoopService;
use loopservice_operator::metrics::{LsLabels, Metrics};
use serde_json::json;

fn rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// A suspended LoopService as a LIST returns it after the operator wrote its status.
fn stored(i: usize) -> serde_json::Value {
    let cond = |t: &str, s: &str, r: &str, m: &str| json!({"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "2026-11-25T20:00:00.000Z", "observedGeneration": 1});
    json!({
        "apiVersion": "loops.dev/v1alpha1", "kind": "LoopService",
        "metadata": {
            "name": format!("idle-{i}"), "namespace": "bench", "uid": format!("0b7c1f2e-5d7a-4a8e-9f1c-{i:012}"),
            "resourceVersion": format!("{}", 100000 + i), "generation": 1, "creationTimestamp": "2026-11-25T20:00:00Z",
            "managedFields": [
                {"manager": "bench", "operation": "Update", "apiVersion": "loops.dev/v1alpha1", "time": "2026-11-25T20:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {".": {}, "f:command": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:interval": {}, "f:successfulJobsHistoryLimit": {}, "f:suspend": {}}}},
                {"manager": "loopservice-operator", "operation": "Update", "apiVersion": "loops.dev/v1alpha1", "time": "2026-11-25T20:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {".": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:phase": {}}}}
            ]
        },
        "spec": {"interval": "1h", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["true"], "suspend": true, "successfulJobsHistoryLimit": 100,
                 "template": {"spec": {"nodeSelector": {"loops.dev/fake-node": "true"},
                              "tolerations": [{"key": "loops.dev/fake-node", "operator": "Exists", "effect": "NoSchedule"}]}}},
        "status": {"phase": "Suspended", "observedGeneration": 1, "conditions": [
            cond("Ready", "False", "Suspended", "spec.suspend is true; 0 loops ran"),
            cond("Overrun", "False", "NoLoopFinished", "no loop has finished yet"),
            cond("Failing", "False", "NoFailures", "the latest loop did not fail"),
        ]}
    })
}

fn main() {
    let n: usize = std::env::var("BENCH_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let base = rss_kib();
    let per = |kib: f64| kib * 1024.0 / n as f64;
    println!("\nmemory per LoopService, {n} suspended ones, no cluster (resident memory of this process)");
    let (store, mut writer) = reflector::store::<CachedLoopService>();
    for i in 0..n {
        let mut ls: LoopService = serde_json::from_value(stored(i)).expect("decode");
        ls.metadata.managed_fields = None;
        writer.apply_watcher_event(&Event::Apply(CachedLoopService::new(ls)));
    }
    loopservice_operator::heap::trim();
    let after_store = rss_kib();
    println!(
        "  reflector store (cached objects)      {:8.1} MiB  {:6.0} bytes each",
        (after_store - base) / 1024.0,
        per(after_store - base)
    );
    let metrics = Metrics::default();
    for ls in store.state() {
        let l = LsLabels { namespace: "bench".into(), name: ls.metadata.name.clone().unwrap_or_default() };
        metrics.record_status(&l, ls.expand().expect("expand").status.as_ref().unwrap());
    }
    let after_metrics = rss_kib();
    println!(
        "  metrics (sparse gauges, the seen set)  {:8.1} MiB  {:6.0} bytes each; /metrics {} bytes",
        (after_metrics - after_store) / 1024.0,
        per(after_metrics - after_store),
        metrics.render().len()
    );
    // What the controller keeps per object: the predicate filter's hash, a last-write
    // fingerprint, and the scheduler's entry.
    let mut books: HashMap<String, (u64, u64, std::time::Instant)> = HashMap::new();
    for ls in store.state() {
        books.insert(ls.metadata.uid.clone().unwrap_or_default(), (1, 2, std::time::Instant::now()));
    }
    let after_books = rss_kib();
    println!(
        "  per-object bookkeeping (hash maps)    {:8.1} MiB  {:6.0} bytes each",
        (after_books - after_metrics) / 1024.0,
        per(after_books - after_metrics)
    );
    println!(
        "  total                                 {:8.1} MiB  {:6.0} bytes each",
        (after_books - base) / 1024.0,
        per(after_books - base)
    );
    std::hint::black_box((store, metrics, books));
}
