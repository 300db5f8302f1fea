//! The operator binary as a child process of the test (so a test can SIGKILL it mid-operation),
//! watching one namespace, with its log appended to a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use stateward_e2e::{Cluster, images};

/// Where the operators of the tests keep the clusters' CAs and their client credentials (as the
/// chart's operator keeps them in its own namespace): one namespace shared by every test.
pub const CREDENTIALS_NAMESPACE: &str = "stateward-e2e-credentials";

/// Creates the credentials namespace unless it exists.
pub fn ensure_credentials_namespace(cluster: &Cluster) -> anyhow::Result<()> {
    let manifest =
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {CREDENTIALS_NAMESPACE}\n");
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &manifest)
        .map(|_| ())
}

/// The operator binary `cargo dev images` builds, running as a child process.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts the operator for namespace `ns`, with the local images, its log appended to `log`.
    pub fn start(cluster: &Cluster, ns: &str, log: &Path) -> anyhow::Result<Self> {
        Self::start_with(cluster, ns, log, cluster.kubeconfig(), "127.0.0.1:0")
    }

    /// As [`start`](Self::start), with extra environment (settings of the test's own).
    pub fn start_env(
        cluster: &Cluster,
        ns: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(cluster, ns, log, cluster.kubeconfig(), "127.0.0.1:0", env)
    }

    /// As [`start_env`](Self::start_env), with another kubeconfig.
    pub fn spawn_env(
        cluster: &Cluster,
        ns: &str,
        log: &Path,
        kubeconfig: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(cluster, ns, log, kubeconfig, "127.0.0.1:0", env)
    }

    /// As [`start`](Self::start), with another kubeconfig and the address of its HTTP endpoint
    /// (`/healthz`, `/readyz`, `/metrics`).
    pub fn start_with(
        cluster: &Cluster,
        ns: &str,
        log: &Path,
        kubeconfig: &Path,
        http_address: &str,
    ) -> anyhow::Result<Self> {
        Self::spawn(cluster, ns, log, kubeconfig, http_address, &[])
    }

    fn spawn(
        cluster: &Cluster,
        ns: &str,
        log: &Path,
        kubeconfig: &Path,
        http_address: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let binary = images::operator_binary(cluster.layout());
        stateward_e2e::cluster::require_binary(&binary)?;
        ensure_credentials_namespace(cluster)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new(&binary)
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("STATEWARD_WATCH_NAMESPACE", ns)
            .env(
                "STATEWARD_CASSANDRA_IMAGE_REPOSITORY",
                images::CASSANDRA_REPOSITORY,
            )
            .env(
                "STATEWARD_ELASTICSEARCH_IMAGE_REPOSITORY",
                images::ELASTICSEARCH_REPOSITORY,
            )
            .env("STATEWARD_PILOT_IMAGE", images::PILOT_IMAGE)
            .env("STATEWARD_METRICS_ADDR", http_address)
            .env("STATEWARD_RESYNC_SECONDS", "30")
            .env("STATEWARD_CREDENTIALS_NAMESPACE", CREDENTIALS_NAMESPACE)
            .env("STATEWARD_CREDENTIALS_SWEEP_SECONDS", "5")
            .env("RUST_LOG", "info,kube=warn")
            // Its identity in the leader election: one per namespace, so an operator started
            // again after a kill takes its own lease back at once (as a restarted container
            // does). Two processes alive at once in one namespace must each be named (POD_NAME
            // in `env`), or both would take the lease as their own.
            .env("POD_NAME", format!("e2e-operator-{ns}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(OperatorProcess {
            child,
            log: log.to_path_buf(),
        })
    }

    /// SIGKILL: no shutdown path runs, as when a node dies under the operator.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, as the kubelet stops a pod, and wait until the process exits (30 s at most,
    /// as the kubelet's grace period; then SIGKILL and an error).
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child's pid, which `wait` has not reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        anyhow::ensure!(sent == 0, "SIGTERM to {pid} failed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.kill()?;
        anyhow::bail!("the operator did not stop within 30 s of SIGTERM")
    }

    /// The last `lines` lines of the operator's log (every process that appended to it).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port for an operator's HTTP endpoint.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// The operator's `/metrics` text at `127.0.0.1:port`.
pub async fn metrics(port: u16) -> anyhow::Result<String> {
    metrics_at("127.0.0.1", port).await
}

/// The `/metrics` text at `host:port` (an operator's, or a pilot's on its pod's probe port).
pub async fn metrics_at(host: &str, port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.to_string())
}

/// The counters of a metrics text: `name{labels}` to value.
pub fn counters(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The GETs and LISTs of the kinds the operator owns that `after` counts more than `before`.
pub fn owned_reads_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    const OWNED: [&str; 7] = [
        "statefulsets",
        "pods",
        "persistentvolumeclaims",
        "configmaps",
        "services",
        "poddisruptionbudgets",
        "secrets",
    ];
    after
        .iter()
        .filter(|(name, _)| name.starts_with("stateward_api_requests_total{"))
        .filter(|(name, _)| name.contains("verb=\"get\"") || name.contains("verb=\"list\""))
        .filter(|(name, _)| {
            OWNED
                .iter()
                .any(|kind| name.contains(&format!("resource=\"{kind}\"")))
        })
        .filter_map(|(name, n)| {
            let grew = n - before.get(name).copied().unwrap_or(0);
            (grew > 0).then(|| (name.clone(), grew))
        })
        .collect()
}

/// The last `lines` lines of the file at `path` (or why it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// Who holds the operator's Lease in the credentials namespace (the operator of namespace `ns`),
/// if anyone.
pub async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), CREDENTIALS_NAMESPACE);
    let lease = leases
        .get_opt(&format!("stateward-operator-{ns}"))
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// The writes (create, update, patch, delete) an operator's metrics count, but of its Lease.
pub fn writes_but_the_lease(text: &str) -> Vec<(String, u64)> {
    counters(text)
        .into_iter()
        .filter(|(name, n)| {
            *n > 0
                && name.starts_with("stateward_api_requests_total{")
                && !name.contains("resource=\"leases\"")
                && ["create", "update", "patch", "delete"]
                    .iter()
                    .any(|verb| name.contains(&format!("verb=\"{verb}\"")))
        })
        .collect()
}
