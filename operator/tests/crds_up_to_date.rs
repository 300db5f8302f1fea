//! crds/ is generated from the Rust types (`stateward-operator crds`); this fails when the
//! committed file drifts from what the types generate.

#[test]
fn committed_crds_match_the_types() {
    let generated = stateward_operator::api::crds_yaml().expect("render CRDs");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/stateward.io_crds.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("read crds/stateward.io_crds.yaml");
    assert!(
        committed == generated,
        "crds/stateward.io_crds.yaml is stale: run `cargo run -p stateward-operator -- crds > crds/stateward.io_crds.yaml`"
    );
}

#[test]
fn chart_ships_the_generated_crds() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).expect(p);
    assert!(
        read("charts/stateward/crds/stateward.io_crds.yaml") == read("crds/stateward.io_crds.yaml"),
        "charts/stateward/crds/ differs from crds/: copy crds/stateward.io_crds.yaml into the chart"
    );
}
