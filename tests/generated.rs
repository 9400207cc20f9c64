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
