//! The cross-field rules of the spec: each a CEL rule in the CRD schema and a check in
//! [`crate::spec`], with one message for both (Kubernetes before 1.25 does not run CEL).

use schemars::Schema;
use serde_json::{json, Value};

use crate::keys::{self, LOOP_ENV};

/// The shorthand fields that shape the container built from `spec.image`.
pub const SHORTHAND: [&str; 5] = ["command", "args", "env", "resources", "imagePullPolicy"];

/// Label keys (exact) the operator or the Job controller set on a loop's Pods.
pub const OWNED_LABELS: [&str; 4] = [keys::LABEL_MANAGED_BY, keys::LABEL_JOB_NAME, keys::LABEL_CONTROLLER_UID, keys::LABEL_BATCH_JOB_NAME];
/// Label and annotation key prefixes the operator (`loops.dev/`) or the Job controller own.
pub const OWNED_LABEL_PREFIXES: [&str; 2] = ["loops.dev/", "batch.kubernetes.io/"];
pub const OWNED_ANNOTATION_PREFIX: &str = "loops.dev/";

pub const MSG_LOOP_CONTAINER_TWICE: &str =
    "spec.image and a container named loop in spec.template.spec.containers both define the loop's container: keep one of them";
/// The longest LoopService name: a DNS label, so that the name is whole in its Jobs' labels and
/// its Events' names (Kubernetes alone would admit 253 characters).
pub const MAX_LOOPSERVICE_NAME: usize = 63;
pub const RULE_NAME_LENGTH: &str = "size(self.metadata.name) <= 63";
pub const MSG_NAME_LENGTH: &str = "metadata.name: a LoopService name may have at most 63 characters (it names its Jobs, labels and Events)";
pub const MSG_LOOP_CONTAINER_MISSING: &str = "spec.image is required, unless spec.template.spec.containers has a container named loop";
pub const MSG_SERVICE_ACCOUNT_TWICE: &str =
    "spec.serviceAccountName and spec.template.spec.serviceAccountName are both set: keep one of them";
pub const MSG_POD_FAILURE_POLICY_RESTART: &str =
    "spec.podFailurePolicy needs restartPolicy Never, but spec.template.spec.restartPolicy is OnFailure";
pub const MSG_OWNED_LABELS: &str = "spec.template.metadata.labels: keys under loops.dev/ and batch.kubernetes.io/, app.kubernetes.io/managed-by, job-name and controller-uid are set by the operator and the Job controller";
pub const MSG_OWNED_ANNOTATIONS: &str = "spec.template.metadata.annotations: keys under loops.dev/ are set by the operator";
pub const MSG_JOB_OWNED_LABELS: &str = "spec.jobMetadata.labels: keys under loops.dev/ and batch.kubernetes.io/, app.kubernetes.io/managed-by, job-name and controller-uid are set by the operator and the Job controller";
pub const MSG_JOB_OWNED_ANNOTATIONS: &str = "spec.jobMetadata.annotations: keys under loops.dev/ are set by the operator";
pub const MSG_JITTER: &str = "spec.jitter must be shorter than spec.interval";
pub const MSG_ALIGNMENT_OFFSET: &str = "spec.alignment.offset must be shorter than spec.interval";
pub const MSG_BACKOFF: &str = "spec.failureBackoff.max must not be shorter than spec.failureBackoff.initial";
pub const MSG_ENV_OWNED: &str =
    "spec.env: LOOP_NUMBER, LOOP_SCHEDULED_TIME, LOOPSERVICE_NAME, LOOP_PREVIOUS_RESULT and LOOP_LAST_SUCCESS_TIME are set by the operator";
pub const MSG_TEMPLATE_ENV_OWNED: &str =
    "spec.template.spec.containers: the container named loop gets LOOP_NUMBER, LOOP_SCHEDULED_TIME, LOOPSERVICE_NAME, LOOP_PREVIOUS_RESULT and LOOP_LAST_SUCCESS_TIME from the operator";

/// The message of a shorthand field set while the loop's container comes from the template.
pub fn shorthand_message(field: &str) -> String {
    format!(
        "spec.{field} shapes the container built from spec.image, and spec.image is not set: set {field} in the container named loop in spec.template.spec.containers instead"
    )
}

/// The CEL rules on `spec`, each with the message the API server answers when it breaks.
pub fn cel_rules() -> Vec<(String, String)> {
    const HAS_LOOP: &str = "has(self.template) && has(self.template.spec) && has(self.template.spec.containers) && self.template.spec.containers.exists(c, has(c.name) && c.name == 'loop')";
    let mut rules = vec![
        (format!("!(has(self.image) && ({HAS_LOOP}))"), MSG_LOOP_CONTAINER_TWICE.to_string()),
        (format!("has(self.image) || ({HAS_LOOP})"), MSG_LOOP_CONTAINER_MISSING.to_string()),
        // CEL's duration() reads the h, m, s, ms parts of DURATION_PATTERN as Go does.
        ("!has(self.jitter) || duration(self.jitter) < duration(self.interval)".into(), MSG_JITTER.to_string()),
        (
            "!has(self.alignment) || !has(self.alignment.offset) || duration(self.alignment.offset) < duration(self.interval)".into(),
            MSG_ALIGNMENT_OFFSET.to_string(),
        ),
        (
            "!has(self.failureBackoff) || duration(self.failureBackoff.max) >= duration(self.failureBackoff.initial)".into(),
            MSG_BACKOFF.to_string(),
        ),
        (
            "!(has(self.serviceAccountName) && has(self.template) && has(self.template.spec) && has(self.template.spec.serviceAccountName))".into(),
            MSG_SERVICE_ACCOUNT_TWICE.to_string(),
        ),
        (
            "!(has(self.podFailurePolicy) && has(self.template) && has(self.template.spec) && has(self.template.spec.restartPolicy) && self.template.spec.restartPolicy == 'OnFailure')".into(),
            MSG_POD_FAILURE_POLICY_RESTART.to_string(),
        ),
    ];
    for f in SHORTHAND {
        rules.push((format!("!has(self.{f}) || has(self.image)"), shorthand_message(f)));
    }
    rules
}

/// A CEL list literal of the operator's loop variables.
fn loop_env_list() -> String {
    let names: Vec<String> = LOOP_ENV.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", names.join(", "))
}

fn label_rule() -> String {
    let mut parts: Vec<String> = OWNED_LABEL_PREFIXES.iter().map(|p| format!("!k.startsWith('{p}')")).collect();
    parts.extend(OWNED_LABELS.iter().map(|l| format!("k != '{l}'")));
    format!("self.all(k, {})", parts.join(" && "))
}

/// Adds the CEL rules to the schema of `LoopServiceSpec` (a schemars transform).
pub fn add_cel_rules(schema: &mut Schema) {
    let rule = |(rule, message): (String, String)| json!({"rule": rule, "message": message});
    let Some(obj) = schema.as_object_mut() else { return };
    obj.insert("x-kubernetes-validations".into(), Value::Array(cel_rules().into_iter().map(rule).collect()));
    let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) else { return };
    let annotation_rule = format!("self.all(k, !k.startsWith('{OWNED_ANNOTATION_PREFIX}'))");
    if let Some(meta) = props.get_mut("jobMetadata").and_then(|m| m.get_mut("properties")).and_then(Value::as_object_mut) {
        for (field, rules) in [
            ("labels", json!([rule((label_rule(), MSG_JOB_OWNED_LABELS.into()))])),
            ("annotations", json!([rule((annotation_rule.clone(), MSG_JOB_OWNED_ANNOTATIONS.into()))])),
        ] {
            if let Some(o) = meta.get_mut(field).and_then(Value::as_object_mut) {
                o.insert("x-kubernetes-validations".into(), rules);
            }
        }
    }
    let env_rule = format!("self.all(e, !(e.name in {}))", loop_env_list());
    if let Some(env) = props.get_mut("env").and_then(Value::as_object_mut) {
        env.insert("x-kubernetes-validations".into(), json!([rule((env_rule, MSG_ENV_OWNED.into()))]));
    }
    let Some(template) = props.get_mut("template") else { return };
    let set = |v: &mut Value, path: &[&str], rules: Value| {
        let mut cur = v;
        for p in path {
            match cur.get_mut("properties").and_then(|x| x.get_mut(*p)) {
                Some(next) => cur = next,
                None => return,
            }
        }
        if let Some(o) = cur.as_object_mut() {
            o.insert("x-kubernetes-validations".into(), rules);
        }
    };
    set(template, &["metadata", "labels"], json!([rule((label_rule(), MSG_OWNED_LABELS.into()))]));
    set(template, &["metadata", "annotations"], json!([rule((annotation_rule, MSG_OWNED_ANNOTATIONS.into()))]));
    let container_env = format!(
        "self.all(c, !has(c.name) || c.name != 'loop' || !has(c.env) || c.env.all(e, !has(e.name) || !(e.name in {})))",
        loop_env_list()
    );
    set(template, &["spec", "containers"], json!([rule((container_env, MSG_TEMPLATE_ENV_OWNED.into()))]));
}
