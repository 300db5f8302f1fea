//! The ElasticsearchCluster API on the local real cluster: what the API server accepts and what
//! it rejects at `kubectl apply` time (schema and CEL rules), each rejection with its message.
//!
//! No operator runs here: the status is written by the test alone, so rules that read it are
//! checked against exactly the status the test wrote.

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use stateward_operator::api::elasticsearch::ElasticsearchCluster;

// `wait_for` is not used here.
#[allow(dead_code)]
mod common;
use common::{NamespaceGuard, install_crd};

/// A valid cluster, as JSON, for the cases to break one way each.
fn valid(name: &str) -> Value {
    json!({
        "apiVersion": "stateward.io/v1alpha1",
        "kind": "ElasticsearchCluster",
        "metadata": {"name": name},
        "spec": {
            "version": "9.5.3",
            "paused": true,
            "nodePools": [{"name": "main", "replicas": 3, "storage": {"size": "1Gi"}}]
        }
    })
}

/// `valid("bad")` with `edit` applied to its spec.
fn with_spec(edit: impl FnOnce(&mut Value)) -> Value {
    let mut object = valid("bad");
    edit(&mut object["spec"]);
    object
}

fn with_pool(pool: Value) -> Value {
    with_spec(|spec| spec["nodePools"] = json!([pool]))
}

fn pool(extra: Value) -> Value {
    let mut p = json!({"name": "main", "replicas": 3, "storage": {"size": "1Gi"}});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

fn yml(key: &str) -> Value {
    with_spec(|spec| spec["config"] = json!({"elasticsearchYml": {key: "x"}}))
}

/// Created (dry run) without an error.
async fn create_ok(api: &Api<DynamicObject>, what: &str, object: Value) -> anyhow::Result<()> {
    let object: DynamicObject = serde_json::from_value(object)?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&dry_run, &object)
        .await
        .map_err(|e| anyhow::anyhow!("{what} was rejected: {e}"))?;
    println!("accepted {what}");
    Ok(())
}

/// Creation (dry run) rejected with `expect` in the message.
async fn create_rejected(
    api: &Api<DynamicObject>,
    what: &str,
    object: Value,
    expect: &str,
) -> anyhow::Result<()> {
    let object: DynamicObject = serde_json::from_value(object)?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let err = api
        .create(&dry_run, &object)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("{what} was accepted"))?;
    anyhow::ensure!(
        err.to_string().contains(expect),
        "{what}: expected {expect:?} in {err}"
    );
    println!("rejected {what}: {expect}");
    Ok(())
}

type Case = (&'static str, Value, &'static str);

/// Create-time cases of the schema itself and of the spec-wide rules.
fn spec_cases() -> Vec<Case> {
    const VERSION: &str = "spec.version must be a supported Elasticsearch release";
    const NO_MASTER: &str = "no master-eligible node";
    let two_pools = json!([pool(json!({})), pool(json!({"name": "other"}))]);
    vec![
        (
            "an 8.x version",
            with_spec(|s| s["version"] = json!("8.17.0")),
            VERSION,
        ),
        (
            "a version without patch",
            with_spec(|s| s["version"] = json!("9.5")),
            VERSION,
        ),
        (
            "a 41-character name",
            valid(&"a".repeat(41)),
            "metadata.name must be a DNS label of at most 40 characters",
        ),
        (
            "a dotted name",
            valid("a.b"),
            "metadata.name must be a DNS label",
        ),
        (
            "no pools",
            with_spec(|s| s["nodePools"] = json!([])),
            "should have at least 1 items",
        ),
        (
            "spec.replicas with two pools",
            with_spec(|s| {
                s["replicas"] = json!(3);
                s["nodePools"] = two_pools;
            }),
            "spec.replicas is the shortcut for single-pool clusters",
        ),
        (
            "duplicate pool names",
            with_spec(|s| s["nodePools"] = json!([pool(json!({})), pool(json!({}))])),
            "Duplicate value",
        ),
        (
            "no master role",
            with_pool(pool(json!({"roles": ["data", "ingest"]}))),
            NO_MASTER,
        ),
        (
            "only coordinating nodes",
            with_pool(pool(json!({"roles": []}))),
            NO_MASTER,
        ),
        (
            "masters scaled to 0",
            with_pool(pool(json!({"replicas": 0}))),
            NO_MASTER,
        ),
        (
            "spec.replicas 0",
            with_spec(|s| s["replicas"] = json!(0)),
            NO_MASTER,
        ),
        (
            "-Xmx in jvmOptions",
            with_spec(|s| s["config"] = json!({"jvmOptions": ["-Xmx4g"]})),
            "config.jvmOptions may not set the heap",
        ),
    ]
}

/// Create-time cases of one node pool's fields.
fn pool_cases() -> Vec<Case> {
    let case = |what, extra: Value, expect| (what, with_pool(pool(extra)), expect);
    vec![
        case(
            "an unknown role",
            json!({"roles": ["master", "voting_only"]}),
            "Unsupported value",
        ),
        case(
            "a repeated role",
            json!({"roles": ["master", "master"]}),
            "Duplicate value",
        ),
        case(
            "data with a data tier",
            json!({"roles": ["master", "data", "data_hot"]}),
            "roles cannot combine the generic 'data' role with data tier roles",
        ),
        case(
            "an invalid pool name",
            json!({"name": "Main"}),
            "node pool name must be a DNS label",
        ),
        case(
            "a 17-character pool name",
            json!({"name": "p".repeat(17)}),
            "may not be more than 16",
        ),
        case(
            "negative replicas",
            json!({"replicas": -1}),
            "Invalid value: -1",
        ),
        case(
            "heap in MB",
            json!({"heapSize": "512MB"}),
            "heapSize is a whole number followed by m or g",
        ),
        case(
            "a zero volume",
            json!({"storage": {"size": "0"}}),
            "storage.size must be a positive quantity",
        ),
    ]
}

/// Create-time cases of `config.elasticsearchYml`: reserved keys, keys nesting them or under
/// them, and its size.
fn yml_cases() -> Vec<Case> {
    const RESERVED: &str = "config.elasticsearchYml may not set keys that Stateward owns";
    let mut cases: Vec<Case> = [
        ("reserved key node.roles", "node.roles"),
        ("reserved key cluster.name", "cluster.name"),
        ("a key nesting a reserved one (discovery)", "discovery"),
        (
            "a key nesting a reserved one (xpack.security)",
            "xpack.security",
        ),
        (
            "a key under a reserved one (path.data.extra)",
            "path.data.extra",
        ),
        (
            "a key under a reserved one (cluster.initial_master_nodes.0)",
            "cluster.initial_master_nodes.0",
        ),
    ]
    .into_iter()
    .map(|(what, key)| (what, yml(key), RESERVED))
    .collect();
    let keys: serde_json::Map<String, Value> = (0..65)
        .map(|i| (format!("indices.k{i}"), json!("1")))
        .collect();
    cases.push((
        "65 elasticsearch.yml keys",
        with_spec(|s| s["config"] = json!({"elasticsearchYml": keys})),
        "must have at most 64 items",
    ));
    cases
}

fn creation_accepted() -> Vec<(&'static str, Value)> {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/elasticsearch.yaml"
    ))
    .expect("read examples/elasticsearch.yaml");
    let example: Value = serde_yaml::from_str(&example).expect("examples/elasticsearch.yaml");
    vec![
        ("examples/elasticsearch.yaml", example),
        (
            "dedicated masters, a hot tier and coordinating nodes",
            with_spec(|s| {
                s["nodePools"] = json!([
                    pool(json!({"name": "masters", "roles": ["master"]})),
                    pool(json!({"name": "hot", "roles": ["data_hot", "data_content", "ingest"]})),
                    pool(json!({"name": "coord", "roles": [], "replicas": 1})),
                ]);
            }),
        ),
        (
            "unreserved settings beside reserved ones' siblings",
            with_spec(|s| {
                s["config"] = json!({
                    "elasticsearchYml": {
                        "node.attr.zone": "z1",
                        "cluster.routing.allocation.awareness.attributes": "[zone]",
                        "indices.memory.index_buffer_size": "20%",
                        "path.shared_data": "/x"
                    },
                    "jvmOptions": ["-XX:+AlwaysPreTouch"]
                });
            }),
        ),
    ]
}

/// One step of a sequence of edits of the stored `edits` cluster.
enum Edit {
    /// A spec merge patch the API server accepts.
    Accept(&'static str, Value),
    /// A spec merge patch it rejects with this message.
    Reject(&'static str, Value, &'static str),
    /// A status merge patch it accepts (the test plays the operator).
    Status(Value),
    /// A status merge patch it rejects with this message.
    RejectStatus(&'static str, Value, &'static str),
}

async fn run(clusters: &Api<ElasticsearchCluster>, edits: Vec<Edit>) -> anyhow::Result<()> {
    let params = PatchParams::default();
    for edit in edits {
        let (what, result, expect) = match edit {
            Edit::Accept(what, spec) => {
                let result = clusters.patch("edits", &params, &Patch::Merge(spec)).await;
                (what, result, None)
            }
            Edit::Reject(what, spec, expect) => {
                let result = clusters.patch("edits", &params, &Patch::Merge(spec)).await;
                (what, result, Some(expect))
            }
            Edit::Status(status) => {
                let patch = Patch::Merge(json!({ "status": status }));
                let result = clusters.patch_status("edits", &params, &patch).await;
                ("a status write", result, None)
            }
            Edit::RejectStatus(what, status, expect) => {
                let patch = Patch::Merge(json!({ "status": status }));
                let result = clusters.patch_status("edits", &params, &patch).await;
                (what, result, Some(expect))
            }
        };
        match (result, expect) {
            (Ok(_), None) => println!("accepted {what}"),
            (Err(e), None) => anyhow::bail!("{what} was rejected: {e}"),
            (Ok(_), Some(_)) => anyhow::bail!("{what} was accepted"),
            (Err(e), Some(expect)) => {
                anyhow::ensure!(
                    e.to_string().contains(expect),
                    "{what}: expected {expect:?} in {e}"
                );
                println!("rejected {what}: {expect}");
            }
        }
    }
    Ok(())
}

/// A spec patch setting both pools of the role sequence.
fn two_pools(main: Value, main_replicas: i32, masters: Value, masters_replicas: i32) -> Value {
    let pool = |name: &str, roles: Value, replicas: i32| json!({"name": name, "roles": roles, "replicas": replicas, "storage": {"size": "1Gi"}});
    json!({"spec": {"nodePools": [
        pool("main", main, main_replicas),
        pool("masters", masters, masters_replicas)
    ]}})
}

/// `status.pools` showing `main_pods` pods left in pool main.
fn pods_left(main_pods: i32) -> Edit {
    Edit::Status(json!({"pools": [
        {"name": "main", "desired": 0, "replicas": main_pods, "readyReplicas": main_pods},
        {"name": "masters", "desired": 1, "replicas": 1, "readyReplicas": 1}
    ]}))
}

/// Role changes: legal as rolling restarts, except what would strand a node's data or metadata.
fn role_edits() -> Vec<Edit> {
    use Edit::*;
    const ROLES: &str = "a node pool with nodes cannot drop its data roles";
    let m = || json!(["master"]);
    let tiers = || json!(["master", "data_hot", "data_content"]);
    let only_masters = json!({"spec": {"nodePools": [
        {"name": "masters", "roles": ["master"], "replicas": 1, "storage": {"size": "1Gi"}}
    ]}});
    vec![
        Accept(
            "adding a master-only pool",
            two_pools(json!(["master", "data", "ingest"]), 1, m(), 1),
        ),
        Accept(
            "adding roles",
            two_pools(json!(["master", "data", "ingest", "ml"]), 1, m(), 1),
        ),
        Accept("moving data to tiers", two_pools(tiers(), 1, m(), 1)),
        Reject(
            "dropping every data role from a pool with nodes",
            two_pools(m(), 1, m(), 1),
            ROLES,
        ),
        Reject(
            "making master-only nodes coordinating-only",
            two_pools(tiers(), 1, json!([]), 1),
            ROLES,
        ),
        Reject(
            "removing a pool that still has nodes",
            json!({"spec": {"nodePools": [{"name": "main", "roles": tiers(), "replicas": 1, "storage": {"size": "1Gi"}}]}}),
            "a node pool can be removed only after its nodes have left",
        ),
        // Scaled to 0 in the spec, but the status still shows a pod: still refused.
        Accept("scaling the data pool to 0", two_pools(tiers(), 0, m(), 1)),
        pods_left(1),
        Reject(
            "dropping data roles while status.pools shows a node",
            two_pools(m(), 0, m(), 1),
            ROLES,
        ),
        pods_left(0),
        Accept(
            "dropping data roles from a pool with no node left",
            two_pools(m(), 0, m(), 1),
        ),
        Reject(
            "scaling the last master-eligible nodes to 0",
            two_pools(m(), 0, m(), 0),
            "no master-eligible node",
        ),
        Accept("removing a pool with no node left", only_masters),
    ]
}

/// Storage and version rules, against the stored object and the status the test writes.
fn storage_and_version_edits() -> Vec<Edit> {
    use Edit::*;
    let storage = |storage: Value| {
        json!({"spec": {"nodePools": [
            {"name": "masters", "roles": ["master"], "replicas": 1, "storage": storage}
        ]}})
    };
    let version = |v: &str| json!({"spec": {"version": v}});
    let upgrading = json!({"version": "9.5.2", "operation": {
        "kind": "Upgrade", "phase": "Draining", "node": "edits-masters-0", "pool": "masters",
        "ordinal": 0, "actionId": "drain-edits-masters-0-r1", "generation": 1,
        "startedAt": "2026-01-01T00:00:00Z", "targetVersion": "9.5.3"
    }});
    vec![
        Reject(
            "shrinking storage",
            storage(json!({"size": "512Mi"})),
            "storage.size cannot shrink",
        ),
        Reject(
            "changing the storage class",
            storage(json!({"size": "1Gi", "storageClassName": "other"})),
            "storageClassName of an existing node pool cannot change",
        ),
        Accept("growing storage", storage(json!({"size": "2Gi"}))),
        Status(json!({"version": "9.5.3"})),
        Reject(
            "a downgrade 9.5.3 -> 9.5.2",
            version("9.5.2"),
            "Elasticsearch does not support downgrades",
        ),
        // Every write is checked against the whole object, status writes too.
        RejectStatus(
            "a status two majors behind the spec (7.17.0 under 9.5.3)",
            json!({"version": "7.17.0"}),
            "may move at most one major version past",
        ),
        Status(upgrading),
        Reject(
            "going back while an upgrade runs",
            version("9.5.2"),
            "spec.version cannot go back while an upgrade runs",
        ),
        Accept(
            "moving further forward while an upgrade runs",
            version("9.5.4"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_cluster_rules_are_enforced_at_apply_time() -> anyhow::Result<()> {
    let cluster = stateward_e2e::ensure_up()?;
    let client = cluster.kube_client().await?;
    install_crd(&client).await?;
    let ns = format!("sw-es-api-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let _guard = NamespaceGuard {
        cluster: cluster.clone(),
        ns: ns.clone(),
    };

    let resource = ApiResource::erase::<ElasticsearchCluster>(&());
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    for (what, object) in creation_accepted() {
        create_ok(&dynamic, what, object).await?;
    }
    let cases = [spec_cases(), pool_cases(), yml_cases()].concat();
    anyhow::ensure!(cases.len() >= 25, "corpus too small");
    for (what, object, expect) in cases {
        create_rejected(&dynamic, what, object, expect).await?;
    }

    // Transition rules: changes that are invalid only relative to the stored object (or its
    // status). Paused, and no operator runs, so nothing else writes it.
    let mut edits = valid("edits");
    edits["spec"]["nodePools"][0]["replicas"] = json!(1);
    dynamic
        .create(&PostParams::default(), &serde_json::from_value(edits)?)
        .await?;
    let clusters: Api<ElasticsearchCluster> = Api::namespaced(client.clone(), &ns);
    run(&clusters, role_edits()).await?;
    run(&clusters, storage_and_version_edits()).await
}
