//! Smoke test of the local cluster: a StatefulSet with volume claim templates on the
//! locally built test image, checked for scheduling, dynamic provisioning, DNS through a
//! headless Service, exec/logs, and data surviving a scale-down and scale-up.
//!
//! Needs root and the harness prerequisites; brings the cluster up if it is not running, and
//! fails (does not skip) when it cannot.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use stateward_e2e::Cluster;
use stateward_e2e::images::TESTBOX_IMAGE;

/// Deletes the test namespace however the test ends.
struct Namespace<'a> {
    cluster: &'a Cluster,
    name: String,
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=true",
            "--timeout=120s",
        ]) {
            eprintln!("cleanup of namespace {} failed: {e:#}", self.name);
        }
    }
}

fn manifest(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: box
  namespace: {ns}
spec:
  clusterIP: None
  selector:
    app: box
  ports:
  - {{name: none, port: 9}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: box
  namespace: {ns}
spec:
  serviceName: box
  replicas: 2
  podManagementPolicy: Parallel
  persistentVolumeClaimRetentionPolicy:
    whenScaled: Retain
    whenDeleted: Delete
  selector:
    matchLabels:
      app: box
  template:
    metadata:
      labels:
        app: box
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: box
        image: {TESTBOX_IMAGE}
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "echo box started on $(hostname); exec sleep infinity"]
        volumeMounts:
        - {{name: data, mountPath: /data}}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 64Mi
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_volumes_dns_exec_and_retained_claims() -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(stateward_e2e::ensure_up).await??;
    let suffix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000;
    let ns = Namespace {
        cluster: &cluster,
        name: format!("smoke-{}-{suffix}", std::process::id()),
    };
    let name = ns.name.as_str();
    let k = |args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["-n", name];
        full.extend_from_slice(args);
        cluster.kubectl(&full)
    };

    cluster.kubectl_stdin(&["apply", "-f", "-"], &manifest(name))?;
    k(&["rollout", "status", "statefulset/box", "--timeout=180s"])
        .context("the StatefulSet did not roll out")?;

    // Pods Running, seen through the kube client.
    let pods: Api<Pod> = Api::namespaced(cluster.kube_client().await?, name);
    let list = pods.list(&ListParams::default().labels("app=box")).await?;
    let mut phases: Vec<(String, String)> = list
        .items
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    phases.sort();
    ensure!(
        phases
            == vec![
                ("box-0".to_string(), "Running".to_string()),
                ("box-1".to_string(), "Running".to_string())
            ],
        "unexpected pods: {phases:?}"
    );

    // Claims provisioned dynamically by the default StorageClass and Bound.
    let claims = k(&[
        "get",
        "pvc",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.phase}/{.spec.storageClassName} {end}",
    ])?;
    ensure!(
        claims.trim() == "data-box-0=Bound/local-path data-box-1=Bound/local-path",
        "unexpected claims: {claims}"
    );

    // DNS: the API service and a pod's stable name through the headless Service.
    let api = k(&[
        "exec",
        "box-0",
        "--",
        "getent",
        "hosts",
        "kubernetes.default.svc.cluster.local",
    ])?;
    ensure!(
        api.starts_with("10.96.0.1 "),
        "kubernetes.default resolved to {api:?}"
    );
    let box1_ip = k(&["get", "pod", "box-1", "-o", "jsonpath={.status.podIP}"])?;
    let fqdn = format!("box-1.box.{name}.svc.cluster.local");
    let resolved = k(&["exec", "box-0", "--", "getent", "hosts", &fqdn])?;
    ensure!(
        resolved.split_whitespace().next() == Some(box1_ip.trim()),
        "{fqdn} resolved to {resolved:?}, pod IP is {box1_ip}"
    );

    // Logs and exec.
    let logs = k(&["logs", "box-1"])?;
    ensure!(logs.contains("box started on box-1"), "logs: {logs:?}");
    let marker = format!("written-by-{name}");
    k(&[
        "exec",
        "box-1",
        "--",
        "sh",
        "-c",
        &format!("echo {marker} > /data/marker && sync"),
    ])?;

    // Scale down: box-1 goes, its claim stays; scale up: the new box-1 sees the data.
    k(&["scale", "statefulset/box", "--replicas=1"])?;
    k(&["wait", "--for=delete", "pod/box-1", "--timeout=120s"])?;
    let retained = k(&["get", "pvc", "data-box-1", "-o", "jsonpath={.status.phase}"])?;
    ensure!(
        retained == "Bound",
        "data-box-1 after scale-down: {retained}"
    );
    k(&["scale", "statefulset/box", "--replicas=2"])?;
    k(&["rollout", "status", "statefulset/box", "--timeout=180s"])?;
    let read = k(&["exec", "box-1", "--", "cat", "/data/marker"])?;
    ensure!(read.trim() == marker, "data after scale-up: {read:?}");
    Ok(())
}
