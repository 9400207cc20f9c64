//! Bad input, table-driven: each invalid LoopService is either refused by the API server (the
//! CRD's schema and CEL rules), with an answer that names the field, or accepted and then
//! shown by the operator as `Ready=False`, reason `InvalidSpec`, with a message that names
//! the field, and never run. The operator stays up and never panics, and an accepted object is
//! stored as it was written.
//!
//! Objects are created as `kubectl create` does, with `fieldValidation=Strict`, so that an
//! unknown field is refused rather than silently dropped.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use serde_json::{json, Value};
use support::*;

/// How a bad input is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The API server refuses it (OpenAPI schema: pattern, type, range, enum, unknown field).
    Refused,
    /// A CEL rule refuses it; Kubernetes before 1.25 has none, and the operator's twin makes
    /// it InvalidSpec with the same message.
    Cel,
    /// Accepted; the operator reports InvalidSpec.
    Invalid,
    /// A field the schema does not have: strict field validation (Kubernetes 1.25 and later, as
    /// `kubectl` asks for it) refuses it; before, the API server drops the field as it stores
    /// the object, and nothing of it reaches the operator.
    Unknown,
}
use Answer::*;

struct Case {
    what: &'static str,
    /// The object's `metadata` (a name is added when absent) and `spec`.
    body: Value,
    /// What the answer must name.
    field: &'static str,
    answer: Answer,
}

fn base() -> Value {
    json!({"interval": "30s", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c"], "args": ["true"]})
}

/// The base spec with `patch` merged in at the top level (`null` removes a field).
fn spec(patch: Value) -> Value {
    let mut s = base();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            s.as_object_mut().unwrap().remove(k);
        } else {
            s[k] = v.clone();
        }
    }
    json!({"spec": s})
}

/// The spec with the loop's container in the template instead of `image`.
fn template_spec(patch: Value) -> Value {
    let mut v = spec(json!({"image": null, "command": null, "args": null, "imagePullPolicy": null,
        "template": {"spec": {"containers": [{"name": "loop", "image": "busybox:1.36", "command": ["true"]}]}}}));
    for (k, val) in patch.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    v
}

/// A field path without its list indices: older API servers (1.20) name `a.b[0].c` as `a.b.c`.
fn without_indices(field: &str) -> String {
    regex::Regex::new(r"\[\d+\]").unwrap().replace_all(field, "").into_owned()
}

fn case(what: &'static str, body: Value, field: &'static str, answer: Answer) -> Case {
    Case { what, body, field, answer }
}

fn cases() -> Vec<Case> {
    let loop_container = json!({"spec": {"containers": [{"name": "loop", "image": "busybox:1.36"}]}});
    let many_containers: Vec<Value> = (0..65).map(|i| json!({"name": format!("c{i}"), "image": "busybox:1.36"})).collect();
    vec![
        // interval
        case("empty interval", spec(json!({"interval": ""})), "spec.interval", Refused),
        case("negative interval", spec(json!({"interval": "-1s"})), "spec.interval", Refused),
        case("interval without a unit", spec(json!({"interval": "30"})), "spec.interval", Refused),
        case("fractional interval", spec(json!({"interval": "1.5s"})), "spec.interval", Refused),
        case("interval in days", spec(json!({"interval": "1d"})), "spec.interval", Refused),
        case("interval unit spelled out", spec(json!({"interval": "30sec"})), "spec.interval", Refused),
        case("leading space", spec(json!({"interval": " 30s"})), "spec.interval", Refused),
        case("trailing newline", spec(json!({"interval": "30s\n"})), "spec.interval", Refused),
        case("space between parts", spec(json!({"interval": "1m 30s"})), "spec.interval", Refused),
        case("fullwidth digits", spec(json!({"interval": "３０s"})), "spec.interval", Refused),
        case("Cyrillic s", spec(json!({"interval": "30ѕ"})), "spec.interval", Refused),
        case("zero-width space", spec(json!({"interval": "30s\u{200b}"})), "spec.interval", Refused),
        case("parts out of order", spec(json!({"interval": "30s1m"})), "spec.interval", Refused),
        case("shorter than 1s", spec(json!({"interval": "500ms"})), "spec.interval", Refused),
        case("zero interval", spec(json!({"interval": "0m0s"})), "spec.interval", Refused),
        case("overflowing hours", spec(json!({"interval": "99999999999h"})), "spec.interval", Refused),
        case("overflowing seconds", spec(json!({"interval": "99999999999999999999999s"})), "spec.interval", Refused),
        case("longer than a year", spec(json!({"interval": "9999h"})), "spec.interval", Invalid),
        case("interval too long a string", spec(json!({"interval": format!("{}s", "1".repeat(40))})), "spec.interval", Refused),
        case("interval a number", spec(json!({"interval": 30})), "spec.interval", Refused),
        case("interval missing", spec(json!({"interval": null})), "spec.interval", Refused),
        // timeout, jitter, failureBackoff
        case("zero timeout", spec(json!({"timeout": "0s"})), "spec.timeout", Refused),
        case("negative timeout", spec(json!({"timeout": "-5m"})), "spec.timeout", Refused),
        case("timeout with a space", spec(json!({"timeout": "5 m"})), "spec.timeout", Refused),
        case("timeout over a year", spec(json!({"timeout": "8761h"})), "spec.timeout", Invalid),
        case("jitter equal to the interval", spec(json!({"jitter": "30s"})), "spec.jitter", Cel),
        case("jitter longer than the interval", spec(json!({"jitter": "1m"})), "spec.jitter", Cel),
        case("jitter of years", spec(json!({"jitter": "99999h"})), "spec.jitter", Cel),
        case("jitter not a duration", spec(json!({"jitter": "abc"})), "spec.jitter", Refused),
        case("backoff max below initial", spec(json!({"failureBackoff": {"initial": "1m", "max": "30s"}})), "spec.failureBackoff", Cel),
        case("backoff without max", spec(json!({"failureBackoff": {"initial": "30s"}})), "spec.failureBackoff.max", Refused),
        case(
            "backoff initial zero",
            spec(json!({"failureBackoff": {"initial": "0s", "max": "1m"}})),
            "spec.failureBackoff.initial",
            Refused,
        ),
        case(
            "backoff max over a year",
            spec(json!({"failureBackoff": {"initial": "10s", "max": "9000h"}})),
            "spec.failureBackoff.max",
            Invalid,
        ),
        case("backoff a string", spec(json!({"failureBackoff": "30s"})), "spec.failureBackoff", Refused),
        // counts and limits
        case("zero loops", spec(json!({"loops": 0})), "spec.loops", Refused),
        case("negative loops", spec(json!({"loops": -1})), "spec.loops", Refused),
        case("loops a word", spec(json!({"loops": "ten"})), "spec.loops", Refused),
        case("loops past int64", spec(json!({"loops": 9223372036854775808u64})), "spec.loops", Refused),
        case("fractional loops", spec(json!({"loops": 1.5})), "spec.loops", Refused),
        case("suspend after zero failures", spec(json!({"suspendAfterFailures": 0})), "spec.suspendAfterFailures", Refused),
        case("backoffLimit over 100", spec(json!({"backoffLimit": 101})), "spec.backoffLimit", Refused),
        case("negative backoffLimit", spec(json!({"backoffLimit": -1})), "spec.backoffLimit", Refused),
        case("negative success history", spec(json!({"successfulJobsHistoryLimit": -1})), "spec.successfulJobsHistoryLimit", Refused),
        case("failed history over 100", spec(json!({"failedJobsHistoryLimit": 1000})), "spec.failedJobsHistoryLimit", Refused),
        case("negative TTL", spec(json!({"ttlSecondsAfterFinished": -1})), "spec.ttlSecondsAfterFinished", Refused),
        case("TTL past int32", spec(json!({"ttlSecondsAfterFinished": 2147483648u64})), "spec.ttlSecondsAfterFinished", Refused),
        case("suspend a word", spec(json!({"suspend": "yes"})), "spec.suspend", Refused),
        // image and the loop's container
        case("empty image", spec(json!({"image": ""})), "spec.image", Refused),
        case("blank image", spec(json!({"image": " "})), "spec.image", Invalid),
        case("image with a leading space", spec(json!({"image": " busybox:1.36"})), "spec.image", Invalid),
        case("image with a newline", spec(json!({"image": "busybox:1.36\n"})), "spec.image", Invalid),
        case("non-ASCII image", spec(json!({"image": "büsybox:1.36"})), "spec.image", Invalid),
        case("huge image", spec(json!({"image": format!("busybox:{}", "x".repeat(5000))})), "spec.image", Refused),
        case("image a list", spec(json!({"image": ["busybox:1.36"]})), "spec.image", Refused),
        case(
            "no image and no loop container",
            spec(json!({"image": null, "command": null, "args": null, "imagePullPolicy": null})),
            "spec.image",
            Cel,
        ),
        case("image and a loop container", spec(json!({"template": loop_container})), "spec.image", Cel),
        case("command without image", template_spec(json!({"command": ["true"]})), "spec.command", Cel),
        case("resources without image", template_spec(json!({"resources": {}})), "spec.resources", Cel),
        case("unknown pull policy", spec(json!({"imagePullPolicy": "Sometimes"})), "spec.imagePullPolicy", Refused),
        case(
            "ServiceAccount twice",
            spec(json!({"serviceAccountName": "a", "template": {"spec": {"serviceAccountName": "b"}}})),
            "spec.serviceAccountName",
            Cel,
        ),
        case(
            "podFailurePolicy with OnFailure",
            spec(json!({"podFailurePolicy": {"rules": []}, "template": {"spec": {"restartPolicy": "OnFailure"}}})),
            "spec.podFailurePolicy",
            Cel,
        ),
        case(
            "restartPolicy Always",
            spec(json!({"template": {"spec": {"restartPolicy": "Always"}}})),
            "spec.template.spec.restartPolicy",
            Refused,
        ),
        case(
            "restartPolicy in lower case",
            spec(json!({"template": {"spec": {"restartPolicy": "never"}}})),
            "spec.template.spec.restartPolicy",
            Refused,
        ),
        case(
            "loop container without an image",
            template_spec(json!({"template": {"spec": {"containers": [{"name": "loop", "image": ""}]}}})),
            "spec.template.spec.containers[0].image",
            Invalid,
        ),
        // what the operator owns
        case(
            "loops.dev label",
            spec(json!({"template": {"metadata": {"labels": {"loops.dev/loop": "1"}}}})),
            "spec.template.metadata.labels",
            Cel,
        ),
        case(
            "job-name label",
            spec(json!({"template": {"metadata": {"labels": {"job-name": "x"}}}})),
            "spec.template.metadata.labels",
            Cel,
        ),
        case(
            "managed-by label",
            spec(json!({"template": {"metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}}})),
            "spec.template.metadata.labels",
            Cel,
        ),
        case(
            "loops.dev annotation",
            spec(json!({"template": {"metadata": {"annotations": {"loops.dev/start-time": "2099-01-01T00:00:00Z"}}}})),
            "spec.template.metadata.annotations",
            Cel,
        ),
        case("LOOP_NUMBER in env", spec(json!({"env": [{"name": "LOOP_NUMBER", "value": "7"}]})), "spec.env", Cel),
        case("LOOPSERVICE_NAME in env", spec(json!({"env": [{"name": "LOOPSERVICE_NAME", "value": "x"}]})), "spec.env", Cel),
        case(
            "loop variable in the loop container",
            template_spec(
                json!({"template": {"spec": {"containers": [{"name": "loop", "image": "busybox:1.36", "env": [{"name": "LOOP_SCHEDULED_TIME", "value": "x"}]}]}}}),
            ),
            "spec.template.spec.containers",
            Cel,
        ),
        // resources
        case("quantity not a number", spec(json!({"resources": {"limits": {"cpu": "lots"}}})), "spec.resources.limits.cpu", Invalid),
        case("negative quantity", spec(json!({"resources": {"requests": {"memory": "-1Mi"}}})), "spec.resources.requests.memory", Invalid),
        case(
            "request above limit",
            spec(json!({"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}})),
            "resources.requests",
            Invalid,
        ),
        case("resources a string", spec(json!({"resources": "big"})), "spec.resources", Refused),
        case(
            "template quantity",
            spec(json!({"template": {"spec": {"volumes": [{"name": "s", "emptyDir": {"sizeLimit": "huge"}}]}}})),
            "spec.template.spec.volumes[0].emptyDir.sizeLimit",
            Invalid,
        ),
        // the template
        case(
            "Pod spec typo",
            spec(json!({"template": {"spec": {"nodeSelecter": {"a": "b"}}}})),
            "spec.template.spec.nodeSelecter",
            Invalid,
        ),
        case(
            "tolerations a string",
            spec(json!({"template": {"spec": {"tolerations": "all"}}})),
            "spec.template.spec.tolerations",
            Invalid,
        ),
        case(
            "container without a name",
            spec(json!({"template": {"spec": {"containers": [{"image": "busybox:1.36"}]}}})),
            "spec.template.spec.containers[0]",
            Invalid,
        ),
        case(
            "mount of a missing volume",
            spec(
                json!({"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1.36", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]}}}),
            ),
            "volumeMounts[0].name",
            Invalid,
        ),
        case("containers a string", spec(json!({"template": {"spec": {"containers": "loop"}}})), "spec.template.spec.containers", Refused),
        case(
            "65 containers",
            spec(json!({"template": {"spec": {"containers": many_containers}}})),
            "spec.template.spec.containers",
            Refused,
        ),
        case(
            "container name too long",
            spec(json!({"template": {"spec": {"containers": [{"name": "c".repeat(100), "image": "busybox:1.36"}]}}})),
            "spec.template.spec.containers[0].name",
            Refused,
        ),
        case(
            "env name too long",
            spec(
                json!({"template": {"spec": {"containers": [{"name": "side", "image": "busybox:1.36", "env": [{"name": "E".repeat(2000)}]}]}}}),
            ),
            "spec.template.spec.containers[0].env[0].name",
            Refused,
        ),
        case("label key too long", spec(json!({"template": {"metadata": {"labels": {"k".repeat(100): "v"}}}})), "labels", Invalid),
        case(
            "label value not a string",
            spec(json!({"template": {"metadata": {"labels": {"team": 5}}}})),
            "spec.template.metadata.labels.team",
            Refused,
        ),
        case(
            "huge annotation",
            spec(json!({"template": {"metadata": {"annotations": {"note": "n".repeat(300_000)}}}})),
            "its spec is 294 KiB of JSON, and a LoopService's spec may take at most 32 KiB",
            Invalid,
        ),
        case(
            "huge loops.dev label key",
            spec(json!({"template": {"metadata": {"labels": {format!("loops.dev/{}", "k".repeat(10_000)): "v"}}}})),
            "spec.template.metadata.labels",
            Cel,
        ),
        case("template name", spec(json!({"template": {"metadata": {"name": "x"}}})), "spec.template.metadata.name", Unknown),
        case("template a string", spec(json!({"template": "pod"})), "spec.template", Refused),
        case("template spec a string", spec(json!({"template": {"spec": "pod"}})), "spec.template.spec", Refused),
        case("invalid variable name", spec(json!({"env": [{"name": "A=B", "value": "x"}]})), "env[0].name", Invalid),
        // wrong types and unknown fields
        case("env a string", spec(json!({"env": "A=b"})), "spec.env", Refused),
        case("command a string", spec(json!({"command": "sh"})), "spec.command", Refused),
        case("args of numbers", spec(json!({"args": [1, 2]})), "spec.args[0]", Refused),
        case("misspelt field", spec(json!({"intervall": "30s"})), "spec.intervall", Unknown),
        case(
            "unknown backoff field",
            spec(json!({"failureBackoff": {"initial": "1s", "max": "2s", "maximum": "3s"}})),
            "spec.failureBackoff.maximum",
            Unknown,
        ),
        case("spec a string", json!({"spec": "run every 30s"}), "spec", Refused),
        // names
        case("name with an underscore", json!({"metadata": {"name": "bad_name"}, "spec": base()}), "metadata.name", Refused),
        case("name in upper case", json!({"metadata": {"name": "Report"}, "spec": base()}), "metadata.name", Refused),
        case("name of 254 characters", json!({"metadata": {"name": "a".repeat(254)}, "spec": base()}), "metadata.name", Refused),
        case("name of 64 characters", json!({"metadata": {"name": "a".repeat(64)}, "spec": base()}), "metadata.name", Cel),
        case("name starting with a dash", json!({"metadata": {"name": "-report"}, "spec": base()}), "metadata.name", Refused),
    ]
}

/// Creates an object as `kubectl create` does: unknown fields are errors, not dropped.
async fn create_strict(client: &Client, ns: &str, obj: &Value) -> Result<Value, kube::Error> {
    let url = format!("/apis/loops.dev/v1alpha1/namespaces/{ns}/loopservices?fieldValidation=Strict");
    let req = http::Request::post(url).header("content-type", "application/json").body(serde_json::to_vec(obj).unwrap()).unwrap();
    client.request::<Value>(req).await
}

fn ready(obj: &Value) -> Option<(String, String, String)> {
    let c = obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some((c["status"].as_str()?.into(), c["reason"].as_str()?.into(), c["message"].as_str()?.into()))
}

#[tokio::test]
#[ignore = "needs the local cluster: run `make test`"]
async fn every_bad_input_is_refused_or_invalid_spec_naming_the_field_and_nothing_panics() {
    let ns = setup("bad-input").await;
    let cel = server_minor(&ns.client).await >= 25;
    let mut op = Operator::start(&ns.name, &[]);
    let cases = cases();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.what).collect();
    assert_eq!(names.len(), cases.len(), "each case says what it is");

    let (mut refused, mut accepted, mut skipped) = (vec![], BTreeMap::new(), vec![]);
    let mut failures = vec![];
    for (i, c) in cases.iter().enumerate() {
        let mut obj = c.body.clone();
        obj["apiVersion"] = json!("loops.dev/v1alpha1");
        obj["kind"] = json!("LoopService");
        if obj["metadata"]["name"].is_null() {
            obj["metadata"]["name"] = json!(format!("case-{i}"));
        }
        if c.answer == Unknown && !cel {
            println!("skipped  {:<40} this API server has no strict field validation: it drops the unknown field", c.what);
            skipped.push(c.what);
            continue;
        }
        let expect_refused = c.answer == Refused || c.answer == Unknown || (c.answer == Cel && cel);
        match create_strict(&ns.client, &ns.name, &obj).await {
            Err(kube::Error::Api(s)) => {
                let message = s.message.chars().take(400).collect::<String>();
                println!("refused  {:<40} {message}", c.what);
                if !expect_refused {
                    failures.push(format!("{}: refused, expected InvalidSpec: {message}", c.what));
                } else if !s.message.contains(c.field) && !s.message.contains(&without_indices(c.field)) {
                    failures.push(format!("{}: the refusal does not name {}: {message}", c.what, c.field));
                }
                refused.push(c.what);
            }
            Err(e) => panic!("{}: {e}", c.what),
            Ok(stored) => {
                if expect_refused {
                    failures.push(format!("{}: accepted, expected a refusal naming {}", c.what, c.field));
                }
                // Stored as written: nothing dropped or changed.
                if stored["spec"] != obj["spec"] {
                    failures.push(format!("{}: stored spec differs from what was sent", c.what));
                }
                accepted.insert(obj["metadata"]["name"].as_str().unwrap().to_string(), c);
            }
        }
    }

    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<loopservice_operator::crd::LoopService>(&()),
    );
    let mut readable = vec![];
    for (name, c) in &accepted {
        let obj = wait_for(&format!("{}: Ready=False InvalidSpec", c.what), Duration::from_secs(60), || async {
            let o = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            let (status, reason, _) = ready(&o)?;
            (status == "False" && reason == "InvalidSpec").then_some(o)
        })
        .await;
        let (_, _, message) = ready(&obj).unwrap();
        println!("invalid  {:<40} {}", c.what, message.chars().take(400).collect::<String>());
        if !message.starts_with(UNREADABLE) {
            readable.push(name.clone());
        }
        assert_eq!(obj["status"]["phase"], "Invalid", "{}", c.what);
        if !message.contains(c.field) {
            failures.push(format!("{}: the InvalidSpec message does not name {}: {message}", c.what, c.field));
        }
        if message.len() > 4000 {
            failures.push(format!("{}: a message of {} bytes", c.what, message.len()));
        }
    }
    // Anything that would start a loop anyway has had its chance: the operator has looked
    // again at each accepted case it can read (one it cannot read is never in its cache, and
    // never reconciled).
    let names: Vec<&str> = readable.iter().map(String::as_str).collect();
    reconciled_since(&op, &ns, &names, jiff::Timestamp::now()).await;
    println!(
        "{} of {} InvalidSpec cases reconciled again without a Job; {} unreadable",
        names.len(),
        accepted.len(),
        accepted.len() - names.len()
    );
    let jobs = ns.jobs().list(&Default::default()).await.unwrap().items;
    assert!(jobs.is_empty(), "no bad input runs: {:?}", jobs.iter().map(|j| j.metadata.name.clone()).collect::<Vec<_>>());

    println!(
        "{} cases: {} refused by the API server, {} InvalidSpec (CEL rules {}), {} skipped (not checked on this version){}",
        cases.len(),
        refused.len(),
        accepted.len(),
        if cel { "run by the API server" } else { "not run: Kubernetes before 1.25" },
        skipped.len(),
        if skipped.is_empty() { String::new() } else { format!(": {skipped:?}") }
    );
    assert_eq!(refused.len() + accepted.len() + skipped.len(), cases.len(), "every case is refused, InvalidSpec or skipped");
    assert!(op.child.try_wait().unwrap().is_none(), "the operator exited; log:\n{}", op.log_text());
    let log = op.log_text();
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
