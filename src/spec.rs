//! The checks a spec must pass before a loop runs, and the validated spec they yield.
//!
//! The CRD carries some of these checks as CEL rules (`x-kubernetes-validations`), where the
//! API server refuses the object at once with the rule's message. Kubernetes before 1.25 does
//! not run CEL rules (1.20 drops them when the CRD is created), so every rule here has its
//! twin in [`LoopServiceSpec::validate`], with the same message, and a spec that breaks it is
//! reported as `Ready=False`, reason `InvalidSpec`, and never runs.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use k8s_openapi::api::batch::v1::PodFailurePolicy;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use crate::crd::{LoopServiceSpec, PodTemplate};
use crate::keys::{CONTAINER, LOOP_ENV};
use crate::pause::Window;
use crate::schedule::{parse_duration, parse_offset};
use crate::text::clip_to;

pub use crate::rules::*;

/// One thing wrong with a spec, in a sentence that starts with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The longest message of one problem: a value quoted in it (an unknown field's name, a label
/// key) may be as long as the object, and the message goes into status and an Event.
pub const MAX_SPEC_ERROR: usize = 400;

impl SpecError {
    /// The message, cut to [`MAX_SPEC_ERROR`] bytes keeping its start, which names the field.
    fn new(message: impl Into<String>) -> Self {
        SpecError { message: clip_to(&message.into(), MAX_SPEC_ERROR) }
    }
}

/// Everything wrong with a spec, in one sentence per problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> = self.0.iter().map(|e| e.message.as_str()).collect();
        f.write_str(&parts.join("; "))
    }
}

/// A spec that passed every check: what the operator runs from.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub interval: Duration,
    pub timeout: Option<Duration>,
    pub jitter: Option<Duration>,
    /// `spec.failureBackoff`: (initial, max).
    pub failure_backoff: Option<(Duration, Duration)>,
    /// `spec.alignment`: the grid's offset (zero when absent).
    pub alignment: Option<Duration>,
    /// `spec.catchUpWindow`.
    pub catch_up_window: Option<Duration>,
    /// `spec.pauseWindows`, read.
    pub pause_windows: Vec<Window>,
    /// Labels and annotations the template asks for on the loop's Pods.
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels and annotations `spec.jobMetadata` asks for on the loop's Job.
    pub job_labels: BTreeMap<String, String>,
    pub job_annotations: BTreeMap<String, String>,
    /// The Pod spec with the loop's container in place, before the per-loop variables.
    pub pod: PodSpec,
    /// The template's Pod spec fields that `pod`'s types do not have (a Pod field newer than
    /// them, or a typo), where the template has them ([`unknown_fields`]): the loop's Job
    /// carries them as written, and the API server, which knows its own Pod fields, decides.
    pub pod_unknown: Option<Value>,
    pub backoff_limit: i32,
    pub pod_failure_policy: Option<PodFailurePolicy>,
    pub ttl_seconds_after_finished: Option<i32>,
}

/// What a template has, typed, and the Pod spec's fields the types do not have.
struct Template {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pod: PodSpec,
    unknown: Option<Value>,
}

/// A spec's durations, each as far as it reads (`None` when absent or wrong).
#[derive(Default)]
struct Durations {
    interval: Option<Duration>,
    timeout: Option<Duration>,
    jitter: Option<Duration>,
    /// (initial, max)
    failure_backoff: Option<(Duration, Duration)>,
    /// The alignment offset.
    alignment: Option<Duration>,
    catch_up_window: Option<Duration>,
}

impl LoopServiceSpec {
    /// Checks everything the operator needs of a spec, and builds the loop's Pod spec from the
    /// shorthand fields and the template. Every problem is reported, not just the first.
    pub fn validate(&self) -> Result<ValidSpec, SpecErrors> {
        let mut errors = vec![];
        let Durations { interval, timeout, jitter, failure_backoff, alignment, catch_up_window } = self.durations(&mut errors);
        let pause_windows = self.pause_windows(&mut errors);
        let template = match &self.template {
            None => Some(Template { labels: BTreeMap::new(), annotations: BTreeMap::new(), pod: PodSpec::default(), unknown: None }),
            Some(t) => read_template(t, &mut errors),
        };
        if let Some(t) = &template {
            self.check_template(t, &mut errors);
        }
        if let Some(e) = self.env.iter().flatten().find(|e| is_loop_env(&e.name)) {
            errors.push(SpecError::new(format!("{MSG_ENV_OWNED} (found {})", e.name)));
        }
        if let Some(image) = &self.image {
            check_image("spec.image", image, &mut errors);
        }
        if let Some(r) = &self.resources {
            check_resources("spec.resources", r, &mut errors);
        }
        if let Some(t) = &template {
            check_pod(&t.pod, &mut errors);
        }
        let (job_labels, job_annotations) = self.job_metadata(&mut errors);

        match (interval, template) {
            (Some(interval), Some(t)) if errors.is_empty() => Ok(ValidSpec {
                interval,
                timeout,
                jitter,
                failure_backoff,
                alignment,
                catch_up_window,
                pause_windows,
                pod_labels: t.labels,
                pod_annotations: t.annotations,
                job_labels,
                job_annotations,
                pod: self.pod_spec(t.pod),
                pod_unknown: t.unknown,
                backoff_limit: self.backoff_limit.unwrap_or(0),
                pod_failure_policy: self.pod_failure_policy.clone(),
                ttl_seconds_after_finished: self.ttl_seconds_after_finished,
            }),
            _ => Err(SpecErrors(errors)),
        }
    }

    /// `spec.jobMetadata`'s labels and annotations, without the keys the operator and the Job
    /// controller own (each one found is an error, the twin of a CEL rule).
    fn job_metadata(&self, errors: &mut Vec<SpecError>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let meta = self.job_metadata.clone().unwrap_or_default();
        let (labels, annotations) = (meta.labels.unwrap_or_default(), meta.annotations.unwrap_or_default());
        for k in labels.keys().filter(|k| owned_label(k)) {
            errors.push(SpecError::new(format!("{MSG_JOB_OWNED_LABELS} (found {k:?})")));
        }
        for k in annotations.keys().filter(|k| k.starts_with(OWNED_ANNOTATION_PREFIX)) {
            errors.push(SpecError::new(format!("{MSG_JOB_OWNED_ANNOTATIONS} (found {k:?})")));
        }
        (labels, annotations)
    }

    /// The durations, each `None` when absent or wrong (and then `errors` says why).
    fn durations(&self, errors: &mut Vec<SpecError>) -> Durations {
        let mut parse = |field: &str, raw: Option<&str>| match raw.map(|v| parse_duration(field, v)).transpose() {
            Ok(d) => d,
            Err(m) => {
                errors.push(SpecError::new(m));
                None
            }
        };
        let interval = parse("interval", Some(&self.interval));
        let timeout = parse("timeout", self.timeout.as_deref());
        let jitter = parse("jitter", self.jitter.as_deref());
        let catch_up_window = parse("catchUpWindow", self.catch_up_window.as_deref());
        let backoff = self
            .failure_backoff
            .as_ref()
            .map(|b| (parse("failureBackoff.initial", Some(&b.initial)), parse("failureBackoff.max", Some(&b.max))));
        if let (Some(i), Some(j)) = (interval, jitter) {
            if j >= i {
                errors.push(SpecError::new(MSG_JITTER));
            }
        }
        let failure_backoff = match backoff {
            Some((Some(i), Some(m))) => {
                if m < i {
                    errors.push(SpecError::new(MSG_BACKOFF));
                }
                Some((i, m))
            }
            _ => None,
        };
        let alignment = self.alignment.as_ref().and_then(|a| match a.offset.as_deref().map(parse_offset).transpose() {
            Ok(offset) => Some(offset.unwrap_or_default()),
            Err(m) => {
                errors.push(SpecError::new(m));
                None
            }
        });
        if let (Some(i), Some(o)) = (interval, alignment) {
            if o >= i {
                errors.push(SpecError::new(MSG_ALIGNMENT_OFFSET));
            }
        }
        Durations { interval, timeout, jitter, failure_backoff, alignment, catch_up_window }
    }

    /// `spec.pauseWindows`, each read; the ones that do not read are in `errors`.
    fn pause_windows(&self, errors: &mut Vec<SpecError>) -> Vec<Window> {
        let mut windows = vec![];
        for (i, w) in self.pause_windows.iter().flatten().enumerate() {
            let read = parse_duration(&format!("pauseWindows[{i}].duration"), &w.duration)
                .and_then(|d| Window::parse(i, &w.schedule, d, w.time_zone.as_deref()));
            match read {
                Ok(w) => windows.push(w),
                Err(m) => errors.push(SpecError::new(m)),
            }
        }
        windows
    }

    /// The rules between the shorthand fields and the template (each a CEL rule's twin).
    fn check_template(&self, t: &Template, errors: &mut Vec<SpecError>) {
        let loop_in_template = t.pod.containers.iter().any(|c| c.name == CONTAINER);
        match (&self.image, loop_in_template) {
            (Some(_), true) => errors.push(SpecError::new(MSG_LOOP_CONTAINER_TWICE)),
            (None, false) => errors.push(SpecError::new(MSG_LOOP_CONTAINER_MISSING)),
            _ => {}
        }
        if self.image.is_none() {
            let set = [
                self.command.is_some(),
                self.args.is_some(),
                self.env.is_some(),
                self.resources.is_some(),
                self.image_pull_policy.is_some(),
            ];
            for (f, _) in SHORTHAND.iter().zip(set).filter(|(_, s)| *s) {
                errors.push(SpecError::new(shorthand_message(f)));
            }
        }
        if self.service_account_name.is_some() && t.pod.service_account_name.is_some() {
            errors.push(SpecError::new(MSG_SERVICE_ACCOUNT_TWICE));
        }
        match t.pod.restart_policy.as_deref() {
            None | Some("Never") => {}
            Some("OnFailure") if self.pod_failure_policy.is_some() => errors.push(SpecError::new(MSG_POD_FAILURE_POLICY_RESTART)),
            Some("OnFailure") => {}
            Some(other) => errors.push(SpecError::new(format!(
                "spec.template.spec.restartPolicy: {other:?} is not allowed: a loop's Pod restarts Never or OnFailure"
            ))),
        }
        for k in t.labels.keys().filter(|k| owned_label(k)) {
            errors.push(SpecError::new(format!("{MSG_OWNED_LABELS} (found {k:?})")));
        }
        for k in t.annotations.keys().filter(|k| k.starts_with(OWNED_ANNOTATION_PREFIX)) {
            errors.push(SpecError::new(format!("{MSG_OWNED_ANNOTATIONS} (found {k:?})")));
        }
        let loop_env = t.pod.containers.iter().filter(|c| c.name == CONTAINER).flat_map(|c| c.env.iter().flatten());
        if let Some(e) = loop_env.into_iter().find(|e| is_loop_env(&e.name)) {
            errors.push(SpecError::new(format!("{MSG_TEMPLATE_ENV_OWNED} (found {})", e.name)));
        }
    }

    /// The template's Pod spec with the loop's container built from the shorthand, when
    /// `image` is set, and the operator's restart policy and ServiceAccount. The built
    /// container comes after the template's, so that the API server's messages about
    /// `containers[i]` name the same container as the template does.
    fn pod_spec(&self, mut pod: PodSpec) -> PodSpec {
        if let Some(image) = &self.image {
            let c = Container {
                name: CONTAINER.to_string(),
                image: Some(image.clone()),
                command: self.command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                image_pull_policy: self.image_pull_policy.clone(),
                resources: self.resources.clone(),
                ..Container::default()
            };
            pod.containers.push(c);
        }
        pod.restart_policy = Some(pod.restart_policy.unwrap_or_else(|| "Never".to_string()));
        if let Some(sa) = self.service_account_name.clone().filter(|s| !s.is_empty()) {
            pod.service_account_name = Some(sa);
        }
        pod
    }
}

/// The longest image reference accepted: a repository name is at most 255 characters, a tag
/// 128, a digest 135 (sha512), with registry host and separators well inside this.
pub const MAX_IMAGE: usize = 1024;

/// An image reference the kubelet could never pull (the API server takes any string) is
/// refused here, rather than as a loop stuck on InvalidImageName.
fn check_image(field: &str, image: &str, errors: &mut Vec<SpecError>) {
    if image.trim().is_empty() {
        errors.push(SpecError::new(format!("{field} must not be empty")));
    } else if image.len() > MAX_IMAGE {
        errors.push(SpecError::new(format!(
            "{field} is {} bytes long: an image reference is at most {MAX_IMAGE} (a repository name at most 255 characters)",
            image.len()
        )));
    } else if let Some(c) = image.chars().find(|c| !c.is_ascii_graphic()) {
        errors.push(SpecError::new(format!(
            "{field} {image:?} is not an image reference: it contains {c:?} (whitespace, a control character or a character outside ASCII)"
        )));
    }
}

/// Kubernetes' quantity syntax (resource.ParseQuantity): a decimal number, then a binary
/// (Ki..Ei) or decimal (n, u, m, k, M..E) suffix or a decimal exponent.
fn quantity_ok(q: &str) -> bool {
    static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$").expect("a valid regex")
    });
    QUANTITY.is_match(q)
}

/// A quantity the API server cannot read makes it refuse the Job with a message that names no
/// field ("quantities must match the regular expression ..."): name it here.
fn check_quantity(field: &str, q: &Quantity, errors: &mut Vec<SpecError>) {
    let v = q.0.as_str();
    if !quantity_ok(v) {
        errors.push(SpecError::new(format!("{field} {v:?} is not a quantity such as 500m, 2, 1.5Gi or 128Mi")));
    } else if v.starts_with('-') && v.chars().any(|c| c.is_ascii_digit() && c != '0') {
        errors.push(SpecError::new(format!("{field} {v:?} must not be negative")));
    }
}

fn check_quantities(at: &str, map: Option<&BTreeMap<String, Quantity>>, errors: &mut Vec<SpecError>) {
    for (k, q) in map.into_iter().flatten() {
        check_quantity(&format!("{at}.{k}"), q, errors);
    }
}

fn check_resources(at: &str, r: &ResourceRequirements, errors: &mut Vec<SpecError>) {
    check_quantities(&format!("{at}.limits"), r.limits.as_ref(), errors);
    check_quantities(&format!("{at}.requests"), r.requests.as_ref(), errors);
}

/// The template's images and quantities, named by their paths in the LoopService.
fn check_pod(pod: &PodSpec, errors: &mut Vec<SpecError>) {
    let lists = [("containers", Some(&pod.containers)), ("initContainers", pod.init_containers.as_ref())];
    for (list, containers) in lists {
        for (i, c) in containers.into_iter().flatten().enumerate() {
            let at = format!("spec.template.spec.{list}[{i}]");
            if let Some(image) = &c.image {
                check_image(&format!("{at}.image"), image, errors);
            }
            if let Some(r) = &c.resources {
                check_resources(&format!("{at}.resources"), r, errors);
            }
        }
    }
    if let Some(r) = &pod.resources {
        check_resources("spec.template.spec.resources", r, errors);
    }
    check_quantities("spec.template.spec.overhead", pod.overhead.as_ref(), errors);
    for (i, v) in pod.volumes.iter().flatten().enumerate() {
        if let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            check_quantity(&format!("spec.template.spec.volumes[{i}].emptyDir.sizeLimit"), q, errors);
        }
    }
}

fn is_loop_env(name: &str) -> bool {
    LOOP_ENV.contains(&name)
}

fn owned_label(k: &str) -> bool {
    OWNED_LABELS.contains(&k) || OWNED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p))
}

/// Reads the template as a Pod template: a field of the wrong type is an error that names it.
/// A Pod spec field the types do not have is kept aside, to be sent as written: the API
/// server may be newer than the types, and its dry run of the loop's Job says whether it has
/// the field (one it drops, such as a typo, makes the spec invalid, naming the field).
fn read_template(t: &PodTemplate, errors: &mut Vec<SpecError>) -> Option<Template> {
    let t = t.map();
    let mut ok = true;
    for key in t.keys().filter(|k| *k != "metadata" && *k != "spec") {
        errors.push(SpecError::new(format!("spec.template.{key}: unknown field (a Pod template has metadata and spec)")));
        ok = false;
    }
    let meta = t.get("metadata").cloned().unwrap_or(Value::Null);
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if let Value::Object(m) = &meta {
        for key in m.keys().filter(|k| *k != "labels" && *k != "annotations") {
            errors.push(SpecError::new(format!(
                "spec.template.metadata.{key}: unknown field (a loop's Pods take only labels and annotations from the template)"
            )));
            ok = false;
        }
        for (field, out) in [("labels", &mut labels), ("annotations", &mut annotations)] {
            match m.get(field).cloned().map(serde_json::from_value::<Option<BTreeMap<String, String>>>) {
                None | Some(Ok(None)) => {}
                Some(Ok(Some(v))) => *out = v,
                Some(Err(e)) => {
                    errors.push(SpecError::new(format!("spec.template.metadata.{field}: {e}")));
                    ok = false;
                }
            }
        }
    } else if !meta.is_null() {
        errors.push(SpecError::new("spec.template.metadata: must be an object with labels and annotations"));
        ok = false;
    }
    let raw = t.get("spec").cloned().unwrap_or(Value::Null);
    let raw = if raw.is_null() { json!({}) } else { raw };
    let pod: Option<PodSpec> = match serde_path_to_error::deserialize(&raw) {
        Ok(pod) => Some(pod),
        Err(e) => {
            errors.push(SpecError::new(format!("spec.template.spec.{}: {}", e.path(), e.inner())));
            None
        }
    };
    match pod {
        Some(pod) if ok => {
            let unknown = unknown_fields(&raw, &serde_json::to_value(&pod).unwrap_or(Value::Null));
            Some(Template { labels, annotations, pod, unknown })
        }
        _ => None,
    }
}

pub use crate::json_paths::{dropped_paths, unknown_fields};

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> LoopServiceSpec {
        let mut base = json!({"interval": "30s"});
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn errors(v: Value) -> String {
        match spec(v).validate() {
            Ok(_) => panic!("expected the spec to be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn shorthand_alone_builds_the_loop_container() {
        let v = spec(json!({"image": "busybox:1.36", "command": ["sh", "-c"], "args": ["echo hi"], "serviceAccountName": "robot"}))
            .validate()
            .unwrap();
        assert_eq!(v.pod.containers.len(), 1);
        let c = &v.pod.containers[0];
        assert_eq!((c.name.as_str(), c.image.as_deref()), ("loop", Some("busybox:1.36")));
        assert_eq!(v.pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(v.pod.service_account_name.as_deref(), Some("robot"));
        assert_eq!((v.interval, v.backoff_limit), (Duration::from_secs(30), 0));
    }

    #[test]
    fn shorthand_and_template_combine_the_loop_container_last() {
        let v = spec(json!({
            "image": "busybox:1.36",
            "template": {
                "metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "initContainers": [{"name": "prepare", "image": "busybox:1.36"}],
                    "containers": [{"name": "helper", "image": "busybox:1.36"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}],
                }
            }
        }))
        .validate()
        .unwrap();
        let names: Vec<&str> = v.pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["helper", "loop"]);
        assert_eq!(v.pod.restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(v.pod.init_containers.as_ref().unwrap()[0].name, "prepare");
        assert_eq!(v.pod.volumes.as_ref().unwrap()[0].name, "cfg");
        assert_eq!(v.pod_labels["team"], "a");
        assert_eq!(v.pod_annotations["note"], "x");
    }

    #[test]
    fn the_template_may_bring_the_loop_container_itself() {
        let v = spec(json!({"template": {"spec": {"containers": [{"name": "loop", "image": "busybox:1.36", "command": ["true"]}]}}}))
            .validate()
            .unwrap();
        assert_eq!(v.pod.containers[0].command.as_ref().unwrap(), &vec!["true".to_string()]);
    }

    #[test]
    fn each_conflict_is_refused_with_a_message_naming_the_field() {
        let loop_c = json!({"spec": {"containers": [{"name": "loop", "image": "busybox:1.36"}]}});
        assert_eq!(errors(json!({"image": "a", "template": loop_c})), MSG_LOOP_CONTAINER_TWICE);
        assert_eq!(errors(json!({})), MSG_LOOP_CONTAINER_MISSING);
        assert_eq!(errors(json!({"template": {"spec": {"containers": [{"name": "other", "image": "a"}]}}})), MSG_LOOP_CONTAINER_MISSING);
        for f in SHORTHAND {
            let value = match f {
                "resources" => json!({}),
                "imagePullPolicy" => json!("Never"),
                "env" => json!([{"name": "A", "value": "b"}]),
                _ => json!(["x"]),
            };
            let mut v = json!({"template": loop_c});
            v[f] = value;
            let e = errors(v);
            assert_eq!(e, shorthand_message(f));
            assert!(e.starts_with(&format!("spec.{f} ")), "{e}");
        }
        let sa = json!({"image": "a", "serviceAccountName": "x", "template": {"spec": {"serviceAccountName": "y"}}});
        assert_eq!(errors(sa), MSG_SERVICE_ACCOUNT_TWICE);
        let pfp = json!({"image": "a", "podFailurePolicy": {"rules": []}, "template": {"spec": {"restartPolicy": "OnFailure"}}});
        assert_eq!(errors(pfp), MSG_POD_FAILURE_POLICY_RESTART);
        let always = errors(json!({"image": "a", "template": {"spec": {"restartPolicy": "Always"}}}));
        assert!(always.contains("spec.template.spec.restartPolicy") && always.contains("Never or OnFailure"), "{always}");
    }

    #[test]
    fn what_the_operator_owns_is_refused() {
        for key in [
            "loops.dev/loop",
            "loops.dev/anything",
            "app.kubernetes.io/managed-by",
            "job-name",
            "controller-uid",
            "batch.kubernetes.io/job-name",
        ] {
            let e = errors(json!({"image": "a", "template": {"metadata": {"labels": {key: "x"}}}}));
            assert!(e.starts_with(MSG_OWNED_LABELS) && e.contains(key), "{e}");
            let e = errors(json!({"image": "a", "jobMetadata": {"labels": {key: "x"}}}));
            assert!(e.starts_with(MSG_JOB_OWNED_LABELS) && e.contains(key), "{e}");
        }
        let e = errors(json!({"image": "a", "jobMetadata": {"annotations": {"loops.dev/scheduled-time": "now"}}}));
        assert!(e.starts_with(MSG_JOB_OWNED_ANNOTATIONS), "{e}");
        let queued = spec(
            json!({"interval": "1m", "image": "a", "jobMetadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}, "annotations": {"a": "b"}}}),
        );
        let v = queued.validate().unwrap();
        assert_eq!((v.job_labels.len(), v.job_annotations.len()), (1, 1));
        let e = errors(json!({"image": "a", "template": {"metadata": {"annotations": {"loops.dev/loop": "1"}}}}));
        assert!(e.starts_with(MSG_OWNED_ANNOTATIONS), "{e}");
        let e = errors(json!({"image": "a", "env": [{"name": "LOOP_NUMBER", "value": "9"}]}));
        assert!(e.starts_with(MSG_ENV_OWNED) && e.contains("LOOP_NUMBER"), "{e}");
        let e = errors(
            json!({"template": {"spec": {"containers": [{"name": "loop", "image": "a", "env": [{"name": "LOOPSERVICE_NAME", "value": "x"}]}]}}}),
        );
        assert!(e.starts_with(MSG_TEMPLATE_ENV_OWNED), "{e}");
        // Other containers may use those names for themselves.
        spec(json!({"image": "a", "template": {"spec": {"containers": [{"name": "side", "image": "a", "env": [{"name": "LOOP_NUMBER", "value": "x"}]}]}}}))
            .validate()
            .unwrap();
        let e = errors(json!({"image": "a", "template": {"metadata": {"name": "x", "ownerReferences": []}}}));
        assert!(e.contains("spec.template.metadata.name: unknown field") && e.contains("spec.template.metadata.ownerReferences"), "{e}");
    }

    #[test]
    fn wrong_types_in_the_template_are_named_and_unknown_fields_kept_for_the_api_server() {
        // A field the types do not have is the API server's to judge (its dry run names one it
        // drops, such as a typo): kept, where the template has it.
        let v = spec(json!({"image": "a", "template": {"spec": {"nodeSelecter": {"a": "b"}, "hostnameOverride": "h",
            "containers": [{"name": "x", "image": "a", "imagePullPolicyy": "Never"}]}}}))
        .validate()
        .unwrap();
        assert_eq!(v.pod_unknown, Some(json!({"nodeSelecter": {"a": "b"}, "containers": [{"imagePullPolicyy": "Never"}]})));
        assert_eq!(v.pod.hostname_override.as_deref(), Some("h"), "a Pod field of Kubernetes 1.34 is known");
        assert_eq!(spec(json!({"image": "a", "template": {"spec": {"nodeSelector": {"a": "b"}}}})).validate().unwrap().pod_unknown, None);
        let e = errors(json!({"image": "a", "template": {"spec": {"tolerations": "all"}}}));
        assert!(e.starts_with("spec.template.spec.tolerations: invalid type: string"), "{e}");
        let e = errors(json!({"image": "a", "template": {"spec": {"containers": [{"name": "x", "ports": [{"containerPort": "80"}]}]}}}));
        assert!(e.starts_with("spec.template.spec.containers[0].ports[0].containerPort: invalid type"), "{e}");
        // What the API server accepts in either form is accepted here too.
        spec(json!({"image": "a", "template": {"spec": {"containers": [{"name": "x", "image": "a",
            "resources": {"limits": {"cpu": 1, "memory": "64Mi"}},
            "livenessProbe": {"httpGet": {"port": 8080}}, "readinessProbe": {"httpGet": {"port": "http"}}}]}}}))
        .validate()
        .unwrap();
        // Nulls are absent values, not unknown fields.
        spec(json!({"image": "a", "template": {"metadata": null, "spec": {"nodeSelector": null}}})).validate().unwrap();
    }

    #[test]
    fn images_the_kubelet_could_never_pull_are_named() {
        for (image, what) in
            [(" ", "must not be empty"), (" busybox", "contains ' '"), ("busybox:1.36\n", "contains '\\n'"), ("busyböx", "contains 'ö'")]
        {
            let e = errors(json!({"image": image}));
            assert!(e.starts_with("spec.image ") && e.contains(what), "{image:?}: {e}");
        }
        let e = errors(json!({"image": format!("busybox:{}", "x".repeat(5000))}));
        assert!(e.starts_with("spec.image is 5008 bytes long") && e.len() < 200, "{e}");
        let e = errors(json!({"template": {"spec": {"containers": [{"name": "side", "image": "a"}, {"name": "loop", "image": "a b"}]}}}));
        assert!(e.starts_with("spec.template.spec.containers[1].image "), "{e}");
        let e = errors(json!({"image": "a", "template": {"spec": {"initContainers": [{"name": "init", "image": ""}]}}}));
        assert!(e.starts_with("spec.template.spec.initContainers[0].image must not be empty"), "{e}");
        spec(
            json!({"image": "registry.example:5000/team/app:v1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}),
        )
        .validate()
        .unwrap();
    }

    #[test]
    fn quantities_the_api_server_cannot_read_are_named() {
        let e = errors(json!({"image": "a", "resources": {"limits": {"cpu": "lots"}}}));
        assert!(e.starts_with("spec.resources.limits.cpu \"lots\" is not a quantity"), "{e}");
        let e = errors(json!({"image": "a", "resources": {"requests": {"memory": "-64Mi"}}}));
        assert!(e.starts_with("spec.resources.requests.memory \"-64Mi\" must not be negative"), "{e}");
        let e = errors(
            json!({"image": "a", "template": {"spec": {"containers": [{"name": "x", "image": "a", "resources": {"limits": {"memory": "1 Gi"}}}]}}}),
        );
        assert!(e.starts_with("spec.template.spec.containers[0].resources.limits.memory"), "{e}");
        let e = errors(json!({"image": "a", "template": {"spec": {"volumes": [{"name": "s", "emptyDir": {"sizeLimit": "big"}}]}}}));
        assert!(e.starts_with("spec.template.spec.volumes[0].emptyDir.sizeLimit"), "{e}");
        let e = errors(json!({"image": "a", "template": {"spec": {"overhead": {"cpu": "1.2.3"}}}}));
        assert!(e.starts_with("spec.template.spec.overhead.cpu"), "{e}");
        // What Kubernetes reads is accepted.
        for q in ["1", "0.5", ".5", "500m", "128Mi", "1Gi", "1e3", "2E", "+1", "1.5k", "-0"] {
            spec(json!({"image": "a", "resources": {"limits": {"cpu": q}}})).validate().unwrap_or_else(|e| panic!("{q}: {e}"));
        }
        spec(json!({"image": "a", "resources": {"limits": {"cpu": 2, "memory": 1.5}}})).validate().unwrap();
    }

    #[test]
    fn the_catch_up_window_is_a_duration_of_a_second_or_more_and_may_exceed_the_interval() {
        let window = |w: &str| spec(json!({"image": "a", "interval": "1m", "catchUpWindow": w})).validate().unwrap().catch_up_window;
        assert_eq!(window("5m"), Some(Duration::from_secs(300)));
        assert_eq!(window("30s"), Some(Duration::from_secs(30)));
        assert_eq!(spec(json!({"image": "a"})).validate().unwrap().catch_up_window, None);
        for w in ["0s", "500ms", "soon", "-5m"] {
            let e = errors(json!({"image": "a", "catchUpWindow": w}));
            assert!(e.starts_with("spec.catchUpWindow"), "{w}: {e}");
        }
    }

    #[test]
    fn the_alignment_offset_is_zero_or_a_duration_shorter_than_the_interval() {
        let offset = |a: Value| spec(json!({"image": "a", "interval": "15m", "alignment": a})).validate().unwrap().alignment;
        assert_eq!(offset(json!({})), Some(Duration::ZERO));
        assert_eq!(offset(json!({"offset": "0s"})), Some(Duration::ZERO));
        assert_eq!(offset(json!({"offset": "00m"})), Some(Duration::ZERO));
        assert_eq!(offset(json!({"offset": "14m59s"})), Some(Duration::from_secs(899)));
        assert_eq!(spec(json!({"image": "a"})).validate().unwrap().alignment, None);
        for o in ["15m", "1h"] {
            assert_eq!(errors(json!({"image": "a", "interval": "15m", "alignment": {"offset": o}})), MSG_ALIGNMENT_OFFSET, "{o}");
        }
        for o in ["soon", "-5m", "500ms", ""] {
            let e = errors(json!({"image": "a", "alignment": {"offset": o}}));
            assert!(e.starts_with("spec.alignment.offset") && e.contains("not a duration"), "{o}: {e}");
        }
        // The schema's pattern lets through what the operator reads.
        let re = Regex::new(crate::crd::OFFSET_PATTERN).unwrap();
        for o in ["0s", "0m", "0h", "5m", "1h30m", "1s500ms"] {
            assert!(re.is_match(o), "{o}");
        }
        for o in ["", "0", "0ms", "500ms", "-1s", "5 m", "0s0s"] {
            assert!(!re.is_match(o), "{o}");
        }
    }

    #[test]
    fn a_huge_value_in_an_error_is_cut_but_the_field_is_named() {
        let key = format!("loops.dev/{}", "k".repeat(200_000));
        let e = errors(json!({"image": "a", "template": {"metadata": {"labels": {key: "x"}}}}));
        assert!(e.starts_with("spec.template.metadata.labels") && e.len() <= MAX_SPEC_ERROR, "{}", e.len());
        let e = errors(json!({"image": "a", "template": {"spec": {"containers": [{"name": "k".repeat(100_000), "image": 1}]}}}));
        assert!(e.starts_with("spec.template.spec.containers[0].image: invalid type") && e.len() <= MAX_SPEC_ERROR, "{e}");
    }

    #[test]
    fn jitter_must_be_shorter_than_the_interval() {
        assert_eq!(spec(json!({"image": "a", "jitter": "29s999ms"})).validate().unwrap().jitter, Some(Duration::from_millis(29_999)));
        assert_eq!(errors(json!({"image": "a", "jitter": "30s"})), MSG_JITTER);
        assert_eq!(errors(json!({"image": "a", "jitter": "1m"})), MSG_JITTER);
        assert!(errors(json!({"image": "a", "jitter": "soon"})).starts_with("spec.jitter"));
    }

    #[test]
    fn failure_backoff_max_is_not_shorter_than_initial() {
        let v = spec(json!({"image": "a", "failureBackoff": {"initial": "10s", "max": "5m"}})).validate().unwrap();
        assert_eq!(v.failure_backoff, Some((Duration::from_secs(10), Duration::from_secs(300))));
        assert_eq!(errors(json!({"image": "a", "failureBackoff": {"initial": "1m", "max": "30s"}})), MSG_BACKOFF);
        assert!(errors(json!({"image": "a", "failureBackoff": {"initial": "0s", "max": "30s"}})).starts_with("spec.failureBackoff.initial"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(json!({"interval": "5x", "env": [{"name": "LOOP_NUMBER"}]}));
        assert!(e.contains("spec.interval") && e.contains(MSG_LOOP_CONTAINER_MISSING) && e.contains(MSG_ENV_OWNED), "{e}");
    }

    #[test]
    fn dropped_fields_are_found_but_empty_values_are_not() {
        let sent = json!({"podFailurePolicy": {"rules": [{"action": "Ignore"}]}, "backoffLimit": 0, "template": {"spec": {"initContainers": [{"name": "s", "restartPolicy": "Always", "args": []}]}}});
        let back = json!({"backoffLimit": 0, "template": {"spec": {"initContainers": [{"name": "s"}]}}});
        assert_eq!(dropped_paths(&sent, &back, "spec"), ["spec.podFailurePolicy", "spec.template.spec.initContainers[0].restartPolicy"]);
        assert!(dropped_paths(&json!({"a": "", "b": false, "c": {}}), &json!({}), "x").is_empty());
    }

    #[test]
    fn the_cel_rules_are_in_the_crd() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&crate::crd::LoopService::crd()).unwrap();
        for (rule, message) in cel_rules() {
            assert!(crd.contains(&message), "{message}");
            assert!(crd.contains(rule.split(" && ").next().unwrap()), "{rule}");
        }
        for m in [
            MSG_OWNED_LABELS,
            MSG_OWNED_ANNOTATIONS,
            MSG_JOB_OWNED_LABELS,
            MSG_JOB_OWNED_ANNOTATIONS,
            MSG_ENV_OWNED,
            MSG_TEMPLATE_ENV_OWNED,
        ] {
            assert!(crd.contains(m), "{m}");
        }
        let yaml = crate::crdgen_yaml().unwrap();
        assert!(yaml.contains(RULE_NAME_LENGTH) && yaml.contains(MSG_NAME_LENGTH), "the name's bound is a rule of the whole object");
    }
}
