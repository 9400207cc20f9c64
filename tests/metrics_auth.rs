//! /metrics names every namespace and LoopService the operator sees: it answers only a bearer
//! token allowed `get` on /metrics (a TokenReview, then a SubjectAccessReview), over TLS when
//! given a certificate, while /healthz and /readyz stay open to the kubelet. The chart serves
//! it so by default, with the RBAC, ServiceMonitor and NetworkPolicy to match.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;
use support::*;

/// The documents `helm template` renders with `args`.
fn render(args: &[&str]) -> Vec<Value> {
    helm_render(args)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn container(docs: &[Value]) -> Value {
    find(docs, "Deployment", "x-loopservice-operator").expect("the Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn the_chart_asks_a_token_for_metrics_by_default_with_the_rbac_to_check_it_and_a_network_policy() {
    for watch in ["", "team-a"] {
        let docs = render(&["--set", &format!("watchNamespace={watch}")]);
        let a = args(&docs);
        assert!(a.contains(&"--metrics-auth=token".into()) && a.contains(&"--metrics-addr=0.0.0.0:8443".into()), "{a:?}");
        assert!(!a.iter().any(|a| a.starts_with("--metrics-tls")), "no TLS without a certificate: {a:?}");
        // The probes stay on their own port, and the Service exposes only the metrics port.
        let c = container(&docs);
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], yaml("8080"));
        assert_eq!(
            c["ports"],
            yaml("[{name: http, containerPort: 8080, protocol: TCP}, {name: metrics, containerPort: 8443, protocol: TCP}]")
        );
        let service = find(&docs, "Service", "x-loopservice-operator-metrics").expect("the metrics Service");
        assert_eq!(service["spec"]["ports"], yaml("[{name: metrics, port: 8443, targetPort: metrics, protocol: TCP}]"));

        // Reviews are cluster-scoped: a ClusterRole even for one namespace, with no more in it.
        let auth = find(&docs, "ClusterRole", "x-loopservice-operator-metrics-auth").expect("the reviews' ClusterRole");
        assert_eq!(
            auth["rules"],
            yaml(
                "[{apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]},
                  {apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create]}]"
            )
        );
        let binding = find(&docs, "ClusterRoleBinding", "x-loopservice-operator-metrics-auth").expect("its binding");
        assert_eq!(binding["subjects"], yaml("[{kind: ServiceAccount, name: x-loopservice-operator, namespace: ops}]"));
        let reader = find(&docs, "ClusterRole", "x-loopservice-operator-metrics-reader").expect("the reader ClusterRole");
        assert_eq!(reader["rules"], yaml("[{nonResourceURLs: [/metrics], verbs: [get]}]"));

        // Ingress: probes from anywhere, metrics from the chosen peers (every Pod by default).
        let policy = find(&docs, "NetworkPolicy", "x-loopservice-operator").expect("a NetworkPolicy by default");
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"],
            find(&docs, "Deployment", "x-loopservice-operator").unwrap()["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(policy["spec"]["policyTypes"], yaml("[Ingress]"), "egress is left open: the API server cannot be named portably");
        assert_eq!(
            policy["spec"]["ingress"],
            yaml("[{ports: [{port: http, protocol: TCP}]}, {from: [{namespaceSelector: {}}], ports: [{port: metrics, protocol: TCP}]}]")
        );
    }

    let docs = render(&["--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"]);
    let policy = find(&docs, "NetworkPolicy", "x-loopservice-operator").unwrap();
    assert_eq!(policy["spec"]["ingress"][1]["from"], yaml("[{namespaceSelector: {matchLabels: {name: monitoring}}}]"));
    assert!(find(&render(&["--set", "networkPolicy.enabled=false"]), "NetworkPolicy", "x-loopservice-operator").is_none());

    // Without the check the operator needs no reviews; the reader role can be left out.
    let docs = render(&["--set", "metrics.auth=none", "--set", "metrics.reader.create=false"]);
    assert!(args(&docs).contains(&"--metrics-auth=none".into()));
    assert!(!docs.iter().any(|d| d["metadata"]["name"].as_str().is_some_and(|n| n.contains("-metrics-"))
        && d["kind"].as_str().is_some_and(|k| k.starts_with("ClusterRole"))));
    let out = Command::new("helm")
        .args(["template", "x", "charts/loopservice-operator", "--set", "metrics.auth=off"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("metrics.auth must be token or none"));
}

#[test]
#[ignore = "needs helm from the local cluster's tools: run `make test`"]
fn the_service_monitor_sends_a_token_and_scrapes_https_when_the_chart_has_a_certificate() {
    let monitor = |extra: &[&str]| {
        let mut a = vec!["--set", "metrics.serviceMonitor.enabled=true"];
        a.extend(extra);
        let docs = render(&a);
        find(&docs, "ServiceMonitor", "x-loopservice-operator").expect("the ServiceMonitor")["spec"]["endpoints"][0].clone()
    };
    let plain = monitor(&[]);
    assert_eq!(plain["port"], yaml("metrics"));
    assert_eq!(plain["scheme"], yaml("http"));
    assert_eq!(plain["bearerTokenFile"], yaml("/var/run/secrets/kubernetes.io/serviceaccount/token"), "Prometheus's own token");
    assert!(plain["tlsConfig"].is_null());
    let from_secret =
        monitor(&["--set", "metrics.serviceMonitor.tokenSecret.name=prom", "--set", "metrics.serviceMonitor.tokenSecret.key=token"]);
    assert_eq!(from_secret["authorization"], yaml("{type: Bearer, credentials: {name: prom, key: token}}"));
    assert!(from_secret["bearerTokenFile"].is_null());
    let open = monitor(&["--set", "metrics.auth=none"]);
    assert!(open["bearerTokenFile"].is_null() && open["authorization"].is_null(), "no token where none is asked");

    // A certificate: the Secret mounted read-only, the flags pointing into it, and HTTPS
    // scrapes checking the server's name against the Secret's CA.
    let docs = render(&["--set", "metrics.tls.secretName=metrics-cert"]);
    let a = args(&docs);
    let dir = "/etc/loopservice-operator/metrics-tls";
    assert!(a.contains(&format!("--metrics-tls-cert={dir}/tls.crt")) && a.contains(&format!("--metrics-tls-key={dir}/tls.key")), "{a:?}");
    assert_eq!(container(&docs)["volumeMounts"], yaml(&format!("[{{name: metrics-tls, mountPath: {dir}, readOnly: true}}]")));
    let pod = &find(&docs, "Deployment", "x-loopservice-operator").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"], yaml("[{name: metrics-tls, secret: {secretName: metrics-cert}}]"));
    let tls = monitor(&["--set", "metrics.tls.secretName=metrics-cert"]);
    assert_eq!(tls["scheme"], yaml("https"));
    assert_eq!(
        tls["tlsConfig"],
        yaml("{serverName: x-loopservice-operator-metrics.ops.svc, ca: {secret: {name: metrics-cert, key: ca.crt}}}")
    );
    let own =
        monitor(&["--set", "metrics.tls.secretName=metrics-cert", "--set", "metrics.serviceMonitor.tlsConfig.insecureSkipVerify=true"]);
    assert_eq!(own["tlsConfig"], yaml("{insecureSkipVerify: true}"), "the user's tlsConfig replaces the default");
    assert!(container(&render(&[]))["volumeMounts"].is_null(), "nothing mounted without a certificate");
}

/// The LoopService whose name /metrics must not give away.
const SECRET_NAME: &str = "quarterly-layoffs";

/// An operator that asks a token for /metrics, with metrics about [`SECRET_NAME`].
async fn operator_with_a_loopservice(ns: &TestNs, env: &[(&str, &str)]) -> Operator {
    let mut all = vec![("METRICS_AUTH", "token")];
    all.extend_from_slice(env);
    let op = Operator::start(&ns.name, &all);
    create_ls(ns, ls(SECRET_NAME, "60s", "true")).await.unwrap();
    wait_status(ns, SECRET_NAME, "a first loop", |st| st.loops_started >= 1).await;
    op
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn metrics_answer_only_a_token_allowed_to_read_them_and_probes_answer_anyone() {
    let ns = setup("metrics-auth").await;
    let op = operator_with_a_loopservice(&ns, &[]).await;
    wait_for("/readyz without a token", LONG, || async { (op.get("/readyz").await.as_deref() == Some("ready")).then_some(()) }).await;
    assert_eq!(op.get_any("/healthz").await, Some((200, "ok".into())));

    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let stranger = service_account_token(&ns, "stranger").await;
    let reader = service_account_token(&ns, "reader").await;
    grant_metrics_reader(&ns, "reader").await;
    for (what, headers, want) in [
        ("no token", vec![], 401),
        ("a token of no one", vec![bearer("not-a-token")], 401),
        ("a token too large to be one", vec![bearer(&"x".repeat(100_000))], 401),
        ("another scheme", vec!["Authorization: Basic YWRtaW46YWRtaW4=".to_string()], 401),
        ("a ServiceAccount without the right", vec![bearer(&stranger)], 403),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (code, body) = op.get_with("/metrics", &headers).await.unwrap_or_else(|| panic!("{what}: no answer"));
        println!("{what}: {code} {body:?}");
        assert_eq!(code, want, "{what}: {body}");
        assert!(!body.contains(SECRET_NAME) && !body.contains(&ns.name), "{what}: {body}");
    }
    let (code, body) = op.get_with("/metrics", &[&bearer(&reader)]).await.expect("an answer");
    assert_eq!(code, 200, "{body}");
    let series = format!("loopservice_loops_started_total{{namespace=\"{}\",name=\"{SECRET_NAME}\"}}", ns.name);
    assert!(body.contains(&series), "{series} in\n{body}");
    // Still alive and answering after all that.
    assert_eq!(op.get_any("/healthz").await, Some((200, "ok".into())));
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn metrics_are_served_over_tls_with_the_certificate_given() {
    let ns = setup("metrics-tls").await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-tls", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=loopservice-operator",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert_path, key_path) = (cert.to_string_lossy().to_string(), key.to_string_lossy().to_string());
    let op = operator_with_a_loopservice(&ns, &[("METRICS_TLS_CERT", &cert_path), ("METRICS_TLS_KEY", &key_path)]).await;
    let reader = service_account_token(&ns, "reader").await;
    grant_metrics_reader(&ns, "reader").await;
    let addr = op.metrics_addr().await;
    assert!(op.log_text().contains("scheme=\"https\"") || op.log_text().contains("scheme=https"), "{}", op.log_text());

    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &cert_path, "-o", "-", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("https://{addr}/metrics"))
            .output()
            .expect("curl on PATH");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().to_string(), body.to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, body, err) = curl(&[]);
    assert_eq!(code, "401", "{body}{err}");
    let auth = format!("Authorization: Bearer {reader}");
    let (code, body, err) = curl(&["-H", &auth]);
    assert_eq!(code, "200", "{err}");
    assert!(body.contains(SECRET_NAME), "{body}");
    // Plain HTTP on the TLS port gets no metrics.
    let plain = op.get_with("/metrics", &[&auth]).await;
    assert!(plain.as_ref().is_none_or(|(code, body)| *code != 200 && !body.contains(SECRET_NAME)), "{plain:?}");
    wait_for("/readyz, still plain HTTP", Duration::from_secs(60), || async { op.get("/readyz").await.filter(|r| r == "ready") }).await;
}
