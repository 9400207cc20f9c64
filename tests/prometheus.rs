//! The chart's Prometheus alerts and Grafana dashboard against what the operator exports:
//! the dashboard's queries name only exported metrics; `promtool` checks and unit-tests the
//! PrometheusRule as Helm renders it; and a real Prometheus scrapes a real operator and fires
//! the alerts for LoopServices that fail, overrun and are stuck.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loopservice_operator::crd::LoopServiceStatus;
use loopservice_operator::metrics::{ErrorLabels, LsLabels, Metrics, ResultLabels};
use serde_json::{json, Value};
use support::*;

const CHART: &str = "charts/loopservice-operator";
const DASHBOARD: &str = "charts/loopservice-operator/dashboards/loopservice-operator.json";
const ALERT_TESTS: &str = "tests/prometheus/alerts.test.yaml";
const ALERTS: [&str; 6] = [
    "LoopServiceFailing",
    "LoopServiceOverrunning",
    "LoopServiceStuck",
    "LoopServiceLate",
    "LoopServiceOperatorDown",
    "LoopServiceReconcileErrors",
];

/// Every sample name the operator's /metrics can show, from its registry with one series in
/// each family.
fn exported_metrics() -> BTreeSet<String> {
    let m = Metrics::default();
    let ls = LsLabels { namespace: "ns".into(), name: "a".into() };
    m.loops_started.get_or_create(&ls).inc();
    for result in ["succeeded", "failed"] {
        m.loops_finished.get_or_create(&ResultLabels { namespace: "ns".into(), name: "a".into(), result: result.into() }).inc();
    }
    m.overruns.get_or_create(&ls).inc();
    m.reconcile_errors.get_or_create(&ErrorLabels { step: "list_jobs".into() }).inc();
    m.reconciles.inc();
    m.reconcile_seconds.observe(0.01);
    m.start_delay(loopservice_operator::metrics::Stage::Created).observe(0.01);
    // The per-LoopService gauges are sparse (present while not 0): a failing, overrunning, stuck one.
    let cond = |t: &str, s: &str, r: &str| json!({"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let st: LoopServiceStatus = serde_json::from_value(json!({
        "consecutiveFailures": 2,
        "conditions": [cond("Ready", "False", "LoopStuck"), cond("Overrun", "True", "LoopOverran")],
    }))
    .unwrap();
    m.record_status(&ls, &st);
    let names: BTreeSet<String> = m
        .render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect();
    assert!(names.contains("process_resident_memory_bytes") || !cfg!(target_os = "linux"), "{names:?}");
    names
}

/// The operator's metric names a PromQL expression uses.
fn metrics_named_in(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(?:loopservice|process)_[A-Za-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// Every PromQL query of the dashboard, with the panel (or variable) it belongs to.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                let title = o.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(e) = o.get("expr").and_then(Value::as_str) {
                    out.push((title.to_string(), e.to_string()));
                }
                for v in o.values() {
                    walk(v, title, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], "", &mut out);
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            out.push((format!("variable {}", var["name"]), var["query"]["query"].as_str().unwrap().to_string()));
        }
    }
    out
}

fn read_dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap()).expect("the dashboard is JSON")
}

#[test]
fn the_dashboard_queries_only_metrics_the_operator_exports() {
    let exported = exported_metrics();
    let dash = read_dashboard();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 10, "{queries:?}");
    for (title, expr) in &queries {
        let named = metrics_named_in(expr);
        assert!(!named.is_empty(), "{title}: {expr} names no metric of the operator");
        for m in named {
            assert!(exported.contains(&m), "{title}: {expr} queries {m}, which the operator does not export: {exported:?}");
        }
    }
    // The panels the operator's users look for.
    let panel = |title: &str| -> Value {
        dash["panels"].as_array().unwrap().iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("a panel {title}")).clone()
    };
    for (title, metric) in [
        ("Loops started", "loopservice_loops_started_total"),
        ("Loops succeeded", "loopservice_loops_finished_total"),
        ("Loops failed", "loopservice_loops_finished_total"),
        ("Overruns", "loopservice_overruns_total"),
        ("Start delay", "loopservice_start_delay_seconds_bucket"),
        ("Reconcile errors", "loopservice_reconcile_errors_total"),
        ("Reconciles and their duration", "loopservice_reconcile_duration_seconds_bucket"),
        ("Operator memory", "process_resident_memory_bytes"),
    ] {
        let p = panel(title);
        assert!(p["targets"].as_array().unwrap().iter().any(|t| t["expr"].as_str().unwrap().contains(metric)), "{title} shows {metric}");
    }
    assert_eq!(panel("Start delay")["type"], "heatmap");
    // Per LoopService: the loop panels split by namespace and name.
    for title in ["Loops started", "Loops succeeded", "Loops failed", "Overruns"] {
        let expr = panel(title)["targets"][0]["expr"].as_str().unwrap().to_string();
        assert!(expr.contains("by (namespace, name)"), "{title}: {expr}");
    }
}

fn tool(cmd: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(cmd).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("running {cmd}: {e} (helm: eval \"$(hack/cluster.sh env)\"; promtool and prometheus: Debian's prometheus package)")
    });
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The rule groups of the chart's PrometheusRule, rendered by Helm with `extra` values, as
/// a Prometheus rules file.
fn render_rules(extra: &[&str]) -> String {
    let mut args = vec![
        "template",
        "loopservice-operator",
        CHART,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ];
    for e in extra {
        args.extend(["--set", e]);
    }
    let (ok, text) = tool("helm", &args, &repo_root());
    assert!(ok, "helm template: {text}");
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).expect("the PrometheusRule is YAML");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"), "{text}");
    assert_eq!(rule["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"), "{text}");
    let groups = serde_yaml::Mapping::from_iter([("groups".into(), rule["spec"]["groups"].clone())]);
    serde_yaml::to_string(&groups).unwrap()
}

/// A directory of its own under the tests' temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `promtool test rules` on the repository's alert tests against the rules rendered
/// with `extra` values.
fn promtool_test(extra: &[&str]) -> (bool, String) {
    let dir = TempDir::new("promtool");
    std::fs::write(dir.0.join("rules.yaml"), render_rules(extra)).unwrap();
    std::fs::copy(repo_root().join(ALERT_TESTS), dir.0.join("alerts.test.yaml")).unwrap();
    let (ok, text) = tool("promtool", &["check", "rules", "rules.yaml"], &dir.0);
    assert!(ok, "promtool check rules:\n{text}");
    assert!(text.contains(&format!("SUCCESS: {} rules found", ALERTS.len())), "{text}");
    tool("promtool", &["test", "rules", "alerts.test.yaml"], &dir.0)
}

#[test]
#[ignore = "needs helm from the local cluster's tools and promtool from Debian's prometheus package: run `make test`"]
fn the_chart_alerts_pass_promtool_check_and_their_unit_tests() {
    let (ok, text) = promtool_test(&[]);
    println!("{text}");
    assert!(ok && text.contains("SUCCESS"), "promtool test rules:\n{text}");

    // Every alert of the chart is in the rules, and has a unit test.
    let rules: serde_yaml::Value = serde_yaml::from_str(&render_rules(&[])).unwrap();
    let rendered: Vec<&str> = rules["groups"][0]["rules"].as_sequence().unwrap().iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(rendered, ALERTS, "the alerts, in order");
    let tests: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(repo_root().join(ALERT_TESTS)).unwrap()).unwrap();
    let tested: BTreeSet<&str> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().into_iter().flatten())
        .filter(|a| a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()))
        .filter_map(|a| a["alertname"].as_str())
        .collect();
    for alert in ALERTS {
        assert!(tested.contains(alert), "{alert} has a unit test in {ALERT_TESTS} that expects it to fire");
    }

    // The alerts query only what the operator exports (and Prometheus's own `up`).
    let exported = exported_metrics();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        let named = metrics_named_in(expr);
        assert!(!named.is_empty() || expr.contains("up{"), "{expr}");
        for m in named {
            assert!(
                exported.contains(&m),
                "{}: {expr} queries {m}, which the operator does not export",
                rule["alert"].as_str().unwrap_or_default()
            );
        }
    }

    // The thresholds come from values: with a lower one, the tests that expect silence fail.
    let (ok, text) =
        promtool_test(&["metrics.prometheusRule.failing.consecutiveFailures=2", "metrics.prometheusRule.operatorDown.for=10m"]);
    assert!(!ok, "the unit tests should fail against other thresholds:\n{text}");
    assert!(text.contains("alertname: LoopServiceFailing") && text.contains("alertname: LoopServiceOperatorDown"), "{text}");

    // The dashboard's queries are valid PromQL, as promtool reads recording rules.
    let dash = read_dashboard();
    let records: Vec<Value> = dashboard_queries(&dash)
        .iter()
        .filter(|(_, e)| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, (_, e))| {
            let e = e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$namespace", ".*").replace("$name", ".*");
            json!({"record": format!("dashboard:query{i}"), "expr": e})
        })
        .collect();
    let dir = TempDir::new("dashboard-promql");
    std::fs::write(
        dir.0.join("dashboard.yaml"),
        serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": records}]})).unwrap(),
    )
    .unwrap();
    let (ok, text) = tool("promtool", &["check", "rules", "dashboard.yaml"], &dir.0);
    assert!(ok, "the dashboard's queries, as promtool sees them:\n{text}");
}

/// GETs `path_and_query` from a server on loopback: the status code and body.
fn http_get(addr: &str, path_and_query: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // HTTP/1.0: the server closes the connection after one plain (unchunked) body.
    conn.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on loopback with its own storage, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    fn start(dir: TempDir) -> Prometheus {
        // A free port on loopback, for Prometheus to bind again at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.0.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .args(["--config.file=prometheus.yml", "--storage.tsdb.path=data", &format!("--web.listen-address={addr}"), "--log.level=info"])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start prometheus (Debian's prometheus package)");
        Prometheus { child, addr, log, _dir: dir }
    }

    /// GETs an API path and returns its `data`, or `None` unless it answered with success.
    fn api(&self, path_and_query: &str) -> Option<Value> {
        let (code, body) = http_get(&self.addr, path_and_query)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["status"] == "success").then(|| v["data"].clone())
    }

    fn query(&self, promql: &str) -> Option<Vec<Value>> {
        Some(self.api(&format!("/api/v1/query?query={}", url_encode(promql)))?["result"].as_array()?.clone())
    }

    /// The alerts in state `state` named `name`.
    fn alerts(&self, name: &str, state: &str) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").unwrap_or_default();
        data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
            .cloned()
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What Prometheus sees, for a failure message: its targets, its rules' health, its alerts
    /// and the series of `query`.
    fn explain(&self, query: &str) -> String {
        let targets = self.api("/api/v1/targets").map(|t| {
            t["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{} {} {}", t["scrapeUrl"], t["health"], t["lastError"]))
                .collect::<Vec<_>>()
        });
        let rules = self.api("/api/v1/rules").map(|r| {
            r["groups"][0]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
                .collect::<Vec<_>>()
        });
        format!(
            "targets: {targets:?}\nrules: {rules:?}\nalerts: {}\n{query}: {:?}",
            self.api("/api/v1/alerts").unwrap_or_default(),
            self.query(query)
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn ls(name: &str, interval: &str, image: &str, script: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "interval": interval,
            "image": image,
            // `Never` keeps the node from reaching for a registry for the missing image.
            "imagePullPolicy": if image == "busybox:1.36" { "IfNotPresent" } else { "Never" },
            "command": ["sh", "-c"],
            "args": [script],
        }
    })
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn prometheus_scrapes_the_operator_and_fires_its_alerts() {
    let ns = TestNs::new("prom").await;
    ensure_crd(&ns.client).await;
    // Prometheus scrapes as the chart has it: with the token of a ServiceAccount bound to the
    // chart's metrics-reader ClusterRole.
    let mut op = Operator::start(&ns.name, &[("METRICS_AUTH", "token")]);
    let token = service_account_token(&ns, "prometheus").await;
    grant_metrics_reader(&ns, "prometheus").await;
    op.metrics_token = Some(token.clone());
    let target = op.metrics_addr().await;

    // The chart's rules, with short waits so that they fire within the test.
    let job = "loopservice-e2e";
    let job_value = format!("metrics.prometheusRule.job={job}");
    let rules = render_rules(&[
        &job_value,
        "metrics.prometheusRule.failing.consecutiveFailures=2",
        "metrics.prometheusRule.failing.for=2s",
        "metrics.prometheusRule.overrunning.for=2s",
        "metrics.prometheusRule.stuck.for=2s",
        "metrics.prometheusRule.operatorDown.for=2s",
    ]);
    let dir = TempDir::new("prometheus");
    std::fs::write(dir.0.join("rules.yaml"), rules).unwrap();
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{"job_name": job, "authorization": {"credentials": token}, "static_configs": [{"targets": [target]}]}],
    });
    std::fs::write(dir.0.join("prometheus.yml"), serde_yaml::to_string(&config).unwrap()).unwrap();
    let prom = Prometheus::start(dir);
    wait_for("Prometheus to be ready", Duration::from_secs(30), || async { http_get(&prom.addr, "/-/ready").filter(|(c, _)| *c == 200) })
        .await;
    let rule_groups = prom.api("/api/v1/rules").unwrap();
    assert_eq!(rule_groups["groups"][0]["rules"].as_array().unwrap().len(), 6, "{rule_groups}");

    let began = Instant::now();
    // Well within its interval (a Job's end is stamped to the second, and a busy node is
    // slow to start Pods), so that it fails but never overruns.
    create_ls(&ns, ls("fails", "8s", "busybox:1.36", "echo failing on purpose; exit 3")).await.unwrap();
    create_ls(&ns, ls("slow", "2s", "busybox:1.36", "sleep 4")).await.unwrap();
    create_ls(&ns, ls("typo", "5s", "loops.dev/no-such-image:1", "echo hi")).await.unwrap();
    // A Job of the user's own holds the name loop 1 of `taken` would use.
    create_ls_with_first_job_name_taken(&ns, ls("taken", "5s", "busybox:1.36", "echo hi")).await;

    // The operator's own /metrics has the series the alerts read, for each LoopService (they
    // are sparse: present while not 0).
    for (gauge, name) in [("consecutive_failures", "fails"), ("overrunning", "slow"), ("stuck", "typo"), ("stuck", "taken")] {
        let series = format!("loopservice_{gauge}{{namespace=\"{}\",name=\"{name}\"}} 1", ns.name);
        let series = if gauge == "consecutive_failures" { series.trim_end_matches(" 1").to_string() } else { series };
        wait_for(&format!("{series} on the operator's /metrics"), Duration::from_secs(30), || async {
            op.get("/metrics").await.filter(|m| m.contains(&series)).map(|_| ())
        })
        .await;
    }

    let up = wait_for("Prometheus to scrape the operator", Duration::from_secs(30), || async {
        let t = prom.api("/api/v1/targets")?;
        let t = t["activeTargets"].as_array()?.iter().find(|t| t["labels"]["job"] == job)?.clone();
        (t["health"] == "up").then_some(t)
    })
    .await;
    println!("target {} up after {:.1}s", up["scrapeUrl"], began.elapsed().as_secs_f64());

    let labels = |a: &Value| {
        (a["labels"]["namespace"].as_str().unwrap_or_default().to_string(), a["labels"]["name"].as_str().unwrap_or_default().to_string())
    };
    let mine = |name: &str| (ns.name.clone(), name.to_string());
    let firing = |alert: &'static str, name: &'static str, limit: u64| {
        let (prom, mine, labels) = (&prom, &mine, &labels);
        async move {
            let start = Instant::now();
            let a = loop {
                if let Some(a) = prom.alerts(alert, "firing").into_iter().find(|a| labels(a) == mine(name)) {
                    break a;
                }
                if start.elapsed() > Duration::from_secs(limit) {
                    let series = format!("{{namespace=\"{}\", name=\"{name}\"}}", mine(name).0);
                    panic!("{alert} did not fire for {name} within {limit}s; Prometheus saw:\n{}", prom.explain(&series));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            println!(
                "{alert} firing for {name} {:.1}s after the LoopServices were created: {}",
                began.elapsed().as_secs_f64(),
                a["annotations"]["description"]
            );
            a
        }
    };
    let failing = firing("LoopServiceFailing", "fails", 90).await;
    assert_eq!(failing["labels"]["severity"], "warning");
    assert!(failing["annotations"]["summary"].as_str().unwrap().contains(&format!("{}/fails is failing", ns.name)), "{failing}");
    firing("LoopServiceOverrunning", "slow", 90).await;
    firing("LoopServiceStuck", "typo", 120).await;
    firing("LoopServiceStuck", "taken", 30).await;

    // What Prometheus holds agrees with what the user reads in status.
    let failed = prom
        .query(&format!("loopservice_loops_finished_total{{job=\"{job}\", namespace=\"{}\", name=\"fails\", result=\"failed\"}}", ns.name))
        .unwrap();
    let failed: f64 = failed[0]["value"][1].as_str().unwrap().parse().unwrap();
    let st = status(&ns, "fails").await;
    assert!(failed >= 2.0 && failed <= st.loops_failed as f64, "Prometheus saw {failed} failed loops, status says {}", st.loops_failed);
    for (alert, name) in [
        ("LoopServiceFailing", "slow"),
        ("LoopServiceFailing", "typo"),
        ("LoopServiceOverrunning", "fails"),
        ("LoopServiceStuck", "fails"),
        ("LoopServiceStuck", "slow"),
    ] {
        assert!(prom.alerts(alert, "firing").iter().all(|a| labels(a) != mine(name)), "{alert} fires for {name}");
    }
    for alert in ["LoopServiceOperatorDown", "LoopServiceLate"] {
        assert!(prom.alerts(alert, "firing").is_empty() && prom.alerts(alert, "pending").is_empty(), "{alert} is not due");
    }

    // Every query of the dashboard runs on this Prometheus; the ones about failing loops and
    // the operator itself show data.
    let dash = read_dashboard();
    for (title, expr) in dashboard_queries(&dash) {
        if expr.starts_with("label_values(") {
            continue;
        }
        let expr = expr.replace("$__rate_interval", "30s").replace("$job", job).replace("$namespace", &ns.name).replace("$name", ".*");
        let result = prom.query(&expr).unwrap_or_else(|| panic!("{title}: {expr} is refused"));
        let must_show = [
            "Loops started",
            "Loops failed",
            "Consecutive failures",
            "Start delay",
            "Reconciles and their duration",
            "Operator memory",
            "Operator CPU",
        ];
        assert!(!must_show.contains(&title.as_str()) || !result.is_empty(), "{title}: {expr} shows nothing");
    }
    let rss = prom.query(&format!("process_resident_memory_bytes{{job=\"{job}\"}}")).unwrap();
    let rss: f64 = rss[0]["value"][1].as_str().unwrap().parse().unwrap();
    println!("operator resident memory as Prometheus saw it: {:.1} MiB", rss / 1048576.0);
    assert!(rss > 1e6 && rss < 512e6, "{rss}");

    // The operator goes away: `up` says so, and LoopServiceOperatorDown fires.
    drop(op);
    let gone = Instant::now();
    wait_for("up = 0 once the operator is gone", Duration::from_secs(30), || async {
        let r = prom.query(&format!("up{{job=\"{job}\"}}"))?;
        (r.first()?["value"][1] == "0").then_some(())
    })
    .await;
    let down = wait_for("LoopServiceOperatorDown firing", Duration::from_secs(30), || async {
        prom.alerts("LoopServiceOperatorDown", "firing").into_iter().next()
    })
    .await;
    assert_eq!(down["labels"]["severity"], "critical");
    println!("LoopServiceOperatorDown firing {:.1}s after the operator was killed", gone.elapsed().as_secs_f64());
}
