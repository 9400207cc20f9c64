//! `apiserver_request_total` from the API server's own /metrics, summed by verb and
//! resource, to count the calls made while one phase ran. The counter has no client label:
//! every client of the cluster is in it.

use std::collections::BTreeMap;

use kube::Client;

/// (verb, resource with `/subresource`, ` (dry run)` for one, and, unless 2xx, ` (code)`,
/// group) -> requests.
pub type Counts = BTreeMap<(String, String, String), f64>;

pub const RESOURCES: [&str; 5] = ["loopservices", "jobs", "pods", "events", "leases"];

pub async fn scrape(client: &Client) -> Counts {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("GET /metrics from the API server");
    let mut out = Counts::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line["apiserver_request_total".len()..].rsplit_once(' ') else { continue };
        let labels = parse_labels(labels.trim_start_matches('{').trim_end_matches('}'));
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let resource = get("resource");
        if !RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        let sub = get("subresource");
        let mut res = if sub.is_empty() { resource } else { format!("{resource}/{sub}") };
        // Dry runs (the operator's check of a new spec) change nothing: counted apart.
        if !get("dry_run").is_empty() {
            res = format!("{res} (dry run)");
        }
        // Refused requests (409 AlreadyExists, 404, ...) are counted apart.
        let code = get("code");
        if !code.starts_with('2') {
            res = format!("{res} ({code})");
        }
        *out.entry((get("verb"), res, get("group"))).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    assert!(!out.is_empty(), "the API server's /metrics has no apiserver_request_total for {RESOURCES:?}");
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').unwrap_or(after.len());
        out.insert(key.trim_start_matches(',').to_string(), after[..end].to_string());
        rest = &after[(end + 1).min(after.len())..];
    }
    out
}

pub fn diff(before: &Counts, after: &Counts) -> Counts {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect()
}

/// The sum over `verbs` for resource `res` (any group unless `group` is given).
pub fn sum(c: &Counts, verbs: &[&str], res: &str, group: Option<&str>) -> f64 {
    // A float sum of nothing is -0.0: + 0.0 prints it as 0.
    c.iter().filter(|((v, r, g), _)| verbs.contains(&v.as_str()) && r == res && group.is_none_or(|gr| gr == g)).map(|(_, n)| n).sum::<f64>()
        + 0.0
}
