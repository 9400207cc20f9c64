//! Generated files must match what generates them.

use std::path::Path;

fn check(path: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let on_disk = std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let generated = loopservice_operator::crdgen_yaml().unwrap();
    assert!(
        on_disk == generated,
        "{path} is out of date with src/crd.rs: run `make crd` (cargo run --bin crdgen > crds/loopservice.yaml) and commit it"
    );
}

#[test]
fn crd_yaml_matches_the_rust_types() {
    check("crds/loopservice.yaml");
}

#[test]
fn the_charts_crd_copy_matches_the_rust_types() {
    check("charts/loopservice-operator/crds/loopservice.yaml");
}

/// Client-side `kubectl apply` keeps the whole object in the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation, and the API server refuses
/// annotations of more than 256 KiB in all.
const ANNOTATIONS_LIMIT: usize = 262_144;

/// `spec.template` as the full PodTemplateSpec schema, for comparison with the schema the CRD
/// has (the parts the operator reads, preserving the rest).
mod full {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
    #[kube(group = "loops.dev", version = "v1alpha1", kind = "FullTemplate", namespaced)]
    pub struct FullTemplateSpec {
        /// The loop's Pod.
        pub template: Option<PodTemplateSpec>,
    }
}

/// The CRD as JSON (what `kubectl apply` stores in its annotation), with `spec.template`'s
/// schema replaced by `template` when given.
fn crd_json(template: Option<serde_json::Value>) -> String {
    use kube::CustomResourceExt;
    let yaml = loopservice_operator::crdgen_yaml().unwrap();
    let mut crd: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    if let Some(t) = template {
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"] = t;
    }
    let _ = full::FullTemplate::crd_name();
    serde_json::to_string(&crd).unwrap()
}

fn full_template_schema() -> serde_json::Value {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(full::FullTemplate::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"].clone()
}

#[test]
fn the_crd_fits_a_client_side_apply_and_the_full_pod_schema_would_not() {
    let ours = crd_json(None);
    let full = crd_json(Some(full_template_schema()));
    let kib = |s: &str| s.len() as f64 / 1024.0;
    println!("CRD as JSON, spec.template preserving unknown fields: {} bytes ({:.1} KiB)", ours.len(), kib(&ours));
    println!("CRD as JSON, spec.template as the full PodTemplateSpec schema: {} bytes ({:.1} KiB)", full.len(), kib(&full));
    println!("client-side apply limit (all annotations): {ANNOTATIONS_LIMIT} bytes");
    assert!(ours.len() < ANNOTATIONS_LIMIT / 4, "the CRD stays far below the annotation limit");
    assert!(full.len() > ANNOTATIONS_LIMIT, "if the full schema fits after all, reconsider the choice in README");
}
