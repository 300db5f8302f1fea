//! The core stays pure: no Kubernetes client, async runtime, gRPC or network crate may enter its
//! dependency tree. A database-neutral rule that needs I/O belongs in the operator's platform
//! layer, not here.

use std::process::Command;

#[test]
fn core_depends_on_no_io_crate() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "stateward-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"serde"), "the tree was read: {tree}");
    for forbidden in [
        "kube",
        "kube-client",
        "kube-runtime",
        "k8s-openapi",
        "tokio",
        "tonic",
        "hyper",
        "reqwest",
        "stateward-proto",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "stateward-core depends on {forbidden}:\n{tree}"
        );
    }
}
