//! The pilot against a real three-node Elasticsearch cluster on loopback addresses.
//!
//! Elasticsearch comes from `elasticsearch_dist::ensure_dist` (assembled from Maven
//! Central), the pilot binary is built from this workspace. Each node has its own pilot,
//! which renders its configuration before Elasticsearch starts, as in a pod. Elasticsearch
//! refuses root, so it runs as `nobody` when the test runs as root. Nothing is skipped: a
//! node that cannot start fails the test with its log's tail.
//!
//! Run: `cargo test --release -p stateward-e2e --test pilot_elasticsearch -- --nocapture`

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use stateward_e2e::elasticsearch_dist::{ELASTICSEARCH_VERSION, ensure_dist};
use stateward_proto::v1::action_spec::Action;
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::pilot_client::PilotClient;
use stateward_proto::v1::{
    ActionPhase, ActionSpec, ActionState, AllocationExclusionAction, DecommissionAction,
    DrainAction, ElasticsearchStatus, GetStatusRequest, NodeStatus, ProcessState, ResumeAction,
    StartActionRequest, VotingExclusionAction, WatchActionRequest,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const CLUSTER: &str = "pilot-es-test";
const NAMESPACE: &str = "default";
const HTTP_PORT: u16 = 19200;
const TRANSPORT_PORT: u16 = 19300;
const GRPC_PORT: u16 = 17443;
const PROBE_PORT: u16 = 17080;
const NOBODY: u32 = 65534;
/// Loopback addresses of the three nodes (apart from the Cassandra tests' 127.0.0.1–3).
const FIRST_IP: u8 = 21;
const NAMES: [&str; 3] = ["es-1", "es-2", "es-3"];
const DOCS: usize = 300;

// ---------------------------------------------------------------------------------
// Certificates: a cluster CA, the pilots' server certificate, the operator's client one.
// ---------------------------------------------------------------------------------

struct Certs {
    ca: String,
    server: (String, String),
    operator: (String, String),
}

fn certs() -> anyhow::Result<Certs> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(DnType::CommonName, "stateward es-test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let leaf = |cn: &str, san: &str, client: bool| -> anyhow::Result<(String, String)> {
        let mut p = CertificateParams::new(vec![san.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let server_name = stateward_proto::pilot_server_name(CLUSTER, NAMESPACE);
    Ok(Certs {
        server: leaf("pilot", &server_name, false)?,
        operator: leaf("stateward-operator", "stateward-operator", true)?,
        ca: ca.pem(),
    })
}

// ---------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------

/// Builds the pilot binary from this workspace once per test process.
fn pilot_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("no workspace dir")?
            .to_path_buf();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "stateward-pilot"])
            .args(["--bin", "stateward-pilot"])
            .current_dir(&workspace)
            .status()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building the pilot failed: {status}"));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        Ok(target.join("release/stateward-pilot"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The distribution where `nobody` can reach it: the cache lives under root's home (mode
/// 0700 here), so a root test links it (hard links: no copy of the JDK) under `root`.
fn reachable_home(dist: &Path, root: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let others_can_enter = dist
        .ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if !as_root() || others_can_enter {
        return Ok(dist.to_path_buf());
    }
    let home = root.join("es-home");
    let linked = Command::new("cp").arg("-al").arg(dist).arg(&home).status();
    if !linked.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&home);
        stateward_e2e::cmd::run(Command::new("cp").arg("-a").arg(dist).arg(&home))?;
    }
    Ok(home)
}

struct Node {
    name: &'static str,
    ip: IpAddr,
    dir: PathBuf,
    pilot: Option<Child>,
    es: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in [self.pilot.as_mut(), self.es.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Node {
    fn new(root: &Path, index: usize, certs: &Certs) -> anyhow::Result<Self> {
        let name = NAMES[index];
        let dir = root.join(name);
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        std::fs::write(tls.join("ca.crt"), &certs.ca)?;
        std::fs::write(tls.join("tls.crt"), &certs.server.0)?;
        std::fs::write(tls.join("tls.key"), &certs.server.1)?;
        // What the operator's ConfigMap holds: user settings (the disk watermarks would
        // follow this shared machine's disk), C1 only (faster start on 2 cores), and the
        // first formation's masters.
        let settings = serde_json::json!({
            "elasticsearchYml": {
                "cluster.routing.allocation.disk.threshold_enabled": false,
                "node.name": "must-be-ignored",
            },
            "jvmOptions": ["-XX:TieredStopAtLevel=1"],
            "initialMasterNodes": NAMES,
        });
        std::fs::write(dir.join("elasticsearch.json"), settings.to_string())?;
        Ok(Node {
            name,
            ip: IpAddr::from([127, 0, 0, FIRST_IP + index as u8]),
            dir,
            pilot: None,
            es: None,
        })
    }

    fn grpc(&self) -> SocketAddr {
        SocketAddr::new(self.ip, GRPC_PORT)
    }

    fn http(&self) -> SocketAddr {
        SocketAddr::new(self.ip, HTTP_PORT)
    }

    fn seeds() -> String {
        (0..3)
            .map(|i| format!("127.0.0.{}:{TRANSPORT_PORT}", FIRST_IP + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn start_pilot(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("pilot.log"))?;
        let probe = SocketAddr::new(self.ip, PROBE_PORT);
        let child = Command::new(pilot_binary()?)
            .arg("elasticsearch")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("POD_NAME", self.name)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("POD_UID", format!("uid-{}", self.name))
            .env("STATEWARD_TEMPLATE_REVISION", "rev-1")
            .env("POD_IP", self.ip.to_string())
            .env("STATEWARD_CLUSTER", CLUSTER)
            .env("STATEWARD_POOL", "default")
            .env("STATEWARD_ROLES", "master,data,ingest")
            .env("STATEWARD_SEED_HOSTS", Self::seeds())
            .env("STATEWARD_CONFIG_FILE", self.dir.join("elasticsearch.json"))
            .env("STATEWARD_HEAP_SIZE", "256m")
            .env("STATEWARD_DATA_DIR", self.dir.join("data"))
            .env("STATEWARD_LOGS_DIR", self.dir.join("logs"))
            .env("ES_PATH_CONF", self.dir.join("config"))
            .env("STATEWARD_HTTP_PORT", HTTP_PORT.to_string())
            .env("STATEWARD_TRANSPORT_PORT", TRANSPORT_PORT.to_string())
            .env("STATEWARD_HTTP_ADDRESS", self.ip.to_string())
            .env("STATEWARD_TLS_DIR", self.dir.join("tls"))
            .env("STATEWARD_GRPC_LISTEN", self.grpc().to_string())
            .env("STATEWARD_PROBE_LISTEN", probe.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the pilot")?;
        self.pilot = Some(child);
        // Like the kubelet: the database container starts only after the startup probe.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http(probe, "GET", "/healthz/startup", None)
            .await
            .is_ok_and(|r| r.0 == 200)
        {
            if let Some(status) = self
                .pilot
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} pilot exited: {status}\n{}",
                    self.name,
                    self.log("pilot.log")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} pilot not started in 30 s\n{}",
                    self.name,
                    self.log("pilot.log")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn start_es(&mut self, home: &Path) -> anyhow::Result<()> {
        // The logs directory is the node's own (in a pod, an emptyDir of its container): the
        // pilot does not create it.
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        if as_root() {
            // The pilot (root here, the pod's user in a pod) rendered the files; the node's
            // user must own them, as fsGroup arranges in a pod.
            stateward_e2e::cmd::run(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{NOBODY}:{NOBODY}"))
                    .args([self.dir.join("config"), self.dir.join("data")])
                    .arg(self.dir.join("logs")),
            )?;
        }
        let log = std::fs::File::create(self.dir.join("es.log"))?;
        let mut cmd = Command::new(home.join("bin/elasticsearch"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &self.dir)
            .env("ES_PATH_CONF", self.dir.join("config"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if as_root() {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        self.es = Some(cmd.spawn().context("starting bin/elasticsearch")?);
        Ok(())
    }

    fn log(&self, file: &str) -> String {
        stateward_e2e::cmd::tail(&self.dir.join(file), 40)
    }

    async fn client(&self, certs: &Certs) -> anyhow::Result<PilotClient<Channel>> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&certs.ca))
            .domain_name(stateward_proto::pilot_server_name(CLUSTER, NAMESPACE))
            .identity(Identity::from_pem(&certs.operator.0, &certs.operator.1));
        let channel = Endpoint::from_shared(format!("https://{}", self.grpc()))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(PilotClient::new(channel))
    }

    /// Polls GetStatus until `pred` holds; fails with the logs after `timeout`.
    async fn wait_status(
        &mut self,
        certs: &Certs,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&NodeStatus, &ElasticsearchStatus) -> bool,
    ) -> anyhow::Result<NodeStatus> {
        let start = Instant::now();
        let mut client = self.client(certs).await?;
        loop {
            if let Some(status) = self.es.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "{}: Elasticsearch exited ({status})\n{}",
                    self.name,
                    self.log("es.log")
                );
            }
            let s = client.get_status(GetStatusRequest {}).await?.into_inner();
            if let Some(Detail::Elasticsearch(es)) = &s.detail
                && pred(&s, es)
            {
                println!("{}: {what} after {:.1?}", self.name, start.elapsed());
                return Ok(s);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: no {what} within {timeout:?}; last status {s:#?}\n--- es ---\n{}\n--- pilot ---\n{}",
                    self.name,
                    self.log("es.log"),
                    self.log("pilot.log")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`: the status and the (de-chunked) body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.unwrap_or("");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let ctype = if path.starts_with("/_bulk") {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, rest.to_string()));
    }
    let (mut out, mut rest) = (String::new(), rest);
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    Ok((status, out))
}

async fn es_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = http(addr, method, path, body).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text}"))
}

// ---------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------

/// Starts an action and follows it to its terminal state; prints its checks.
async fn run_action(
    client: &mut PilotClient<Channel>,
    id: &str,
    action: Action,
    timeout: Duration,
) -> anyhow::Result<ActionState> {
    let start = Instant::now();
    client
        .start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(ActionSpec {
                action: Some(action),
            }),
        })
        .await?;
    let mut states = client
        .watch_action(WatchActionRequest {
            action_id: id.into(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(state) = tokio::time::timeout(timeout, states.next())
        .await
        .with_context(|| format!("{id} did not finish in {timeout:?}"))?
    {
        last = Some(state?);
    }
    let state = last.context("empty action stream")?;
    println!("{id}: {:?} in {:.1?}", state.phase(), start.elapsed());
    for v in state.result.iter().flat_map(|r| &r.verifications) {
        let mark = if v.passed { "ok" } else { "FAILED" };
        println!("  [{mark}] {} — {} — {}", v.check, v.method, v.observed);
    }
    if let Some(r) = state.result.as_ref().filter(|r| !r.error.is_empty()) {
        println!("  error: {}", r.error);
    }
    Ok(state)
}

fn verified(state: &ActionState) -> bool {
    state.phase() == ActionPhase::Succeeded
        && state.result.as_ref().is_some_and(|r| {
            r.success && !r.verifications.is_empty() && r.verifications.iter().all(|v| v.passed)
        })
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn allocation(list: &[&str]) -> Action {
    Action::AllocationExclusion(AllocationExclusionAction {
        node_names: names(list),
    })
}

fn voting(list: &[&str]) -> Action {
    Action::VotingExclusion(VotingExclusionAction {
        node_names: names(list),
    })
}

fn decommission() -> Action {
    Action::Decommission(DecommissionAction { force: false })
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_status_exclusions_decommission_drain_resume() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let home = tokio::task::spawn_blocking(|| ensure_dist(ELASTICSEARCH_VERSION)).await??;
    println!(
        "Elasticsearch {ELASTICSEARCH_VERSION} at {} ({:.1?})",
        home.display(),
        t0.elapsed()
    );
    let certs = certs()?;
    let root = std::env::temp_dir().join(format!("stateward-pilot-es-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    let home = reachable_home(&home, &root)?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut n = Node::new(&root, i, &certs)?;
        n.start_pilot().await?;
        nodes.push(n);
    }
    check_rendering(&nodes[0])?;
    let started = Instant::now();
    for n in &mut nodes {
        n.start_es(&home)?;
    }
    formation(&mut nodes, &certs).await?;
    println!(
        "cluster of 3 formed, every pilot ready, {:.1?} after start",
        started.elapsed()
    );
    index_documents(&mut nodes, &certs).await?;
    exclusions_and_decommission(&mut nodes, &certs).await?;
    drain_resume_and_clear(&mut nodes, &certs).await?;
    drop(nodes);
    let _ = std::fs::remove_dir_all(&root);
    println!("whole test {:.1?}", t0.elapsed());
    Ok(())
}

/// What the pilot rendered before Elasticsearch started.
fn check_rendering(n: &Node) -> anyhow::Result<()> {
    let yml = std::fs::read_to_string(n.dir.join("config/elasticsearch.yml"))?;
    for want in [
        "node.name: es-1",
        "cluster.initial_master_nodes:",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        "network.publish_host: 127.0.0.21",
    ] {
        assert!(yml.contains(want), "{want:?} missing:\n{yml}");
    }
    assert!(!yml.contains("must-be-ignored"), "{yml}");
    let jvm = std::fs::read_to_string(n.dir.join("config/jvm.options"))?;
    assert!(jvm.contains("-Xms256m\n-Xmx256m\n"), "{jvm}");
    assert!(n.dir.join("config/log4j2.properties").is_file());
    Ok(())
}

/// Every node RUNNING and ready, in one cluster of three, exactly one elected master.
async fn formation(nodes: &mut [Node], certs: &Certs) -> anyhow::Result<()> {
    let mut masters = Vec::new();
    for n in nodes.iter_mut() {
        let s = n
            .wait_status(
                certs,
                "RUNNING, ready, 3 nodes",
                Duration::from_secs(180),
                |s, es| s.ready && es.cluster_nodes.len() == 3 && es.voting_config.len() == 3,
            )
            .await?;
        assert_eq!(s.process_state(), ProcessState::Running);
        assert_eq!(s.version, ELASTICSEARCH_VERSION);
        let Some(Detail::Elasticsearch(es)) = &s.detail else {
            bail!("no detail");
        };
        assert_eq!(es.roles, ["data", "ingest", "master"], "{es:?}");
        assert_eq!(es.cluster_name, CLUSTER);
        assert!(!es.cluster_uuid.is_empty() && !es.node_id.is_empty());
        assert_eq!(es.cluster_nodes, NAMES);
        // elasticsearch.yml turns the disk threshold off (see `Node::new`); the low watermark
        // stays at its default.
        let disk = es
            .disk_threshold
            .as_ref()
            .map(|d| (d.enabled, d.low_watermark.as_str()));
        assert_eq!(disk, Some((false, "85%")), "{es:?}");
        println!(
            "{}: node {} master {} voting {:?} health {:?}",
            n.name, es.node_id, es.elected_master_name, es.voting_config, es.cluster_health
        );
        masters.push((es.elected_master, es.elected_master_name.clone()));
    }
    assert_eq!(
        masters.iter().filter(|(me, _)| *me).count(),
        1,
        "{masters:?}"
    );
    assert!(masters.windows(2).all(|w| w[0].1 == w[1].1), "{masters:?}");
    Ok(())
}

/// A 3-shard, 1-replica index with a few hundred documents; green in every view.
async fn index_documents(nodes: &mut [Node], certs: &Certs) -> anyhow::Result<()> {
    let es1 = nodes[0].http();
    es_json(
        es1,
        "PUT",
        "/docs",
        Some(r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#),
    )
    .await?;
    let bulk: String = (0..DOCS)
        .map(|i| {
            format!("{{\"index\":{{\"_id\":\"{i}\"}}}}\n{{\"n\":{i},\"text\":\"document {i}\"}}\n")
        })
        .collect();
    let r = es_json(es1, "POST", "/docs/_bulk?refresh=true", Some(&bulk)).await?;
    assert_eq!(r["errors"], false, "{r}");
    let count = es_json(es1, "GET", "/docs/_count", None).await?;
    assert_eq!(count["count"], DOCS, "{count}");
    let green = Instant::now();
    for n in nodes.iter_mut() {
        let s = n
            .wait_status(
                certs,
                "green with the index",
                Duration::from_secs(60),
                |_, es| {
                    es.cluster_health == "green"
                        && es.indices_known
                        && es.indices.iter().any(|i| i.name == "docs")
                },
            )
            .await?;
        let Some(Detail::Elasticsearch(es)) = &s.detail else {
            bail!("no detail");
        };
        let docs = es
            .indices
            .iter()
            .find(|i| i.name == "docs")
            .context("docs")?;
        assert_eq!((docs.primaries, docs.replicas), (3, 1), "{docs:?}");
        println!(
            "{}: {} shard copies, {:?} data bytes, {} indices",
            n.name,
            es.shard_count,
            s.data_bytes,
            es.indices.len()
        );
    }
    println!(
        "{DOCS} documents indexed, green everywhere after {:.1?}",
        green.elapsed()
    );
    Ok(())
}

async fn exclusions_and_decommission(nodes: &mut [Node], certs: &Certs) -> anyhow::Result<()> {
    let mut c1 = nodes[0].client(certs).await?;
    let st = run_action(
        &mut c1,
        "alloc-1",
        allocation(&["es-3"]),
        Duration::from_secs(180),
    )
    .await?;
    assert!(verified(&st), "{st:#?}\n{}", nodes[0].log("pilot.log"));
    nodes[2]
        .wait_status(
            certs,
            "no shard copy, excluded",
            Duration::from_secs(10),
            |_, es| es.shard_count == 0 && es.allocation_excluded && es.indices_known,
        )
        .await?;
    // The same set again (another ID) is harmless and verified at once.
    let again = run_action(
        &mut c1,
        "alloc-2",
        allocation(&["es-3"]),
        Duration::from_secs(30),
    )
    .await?;
    assert!(verified(&again), "{again:#?}");

    let st = run_action(
        &mut c1,
        "vote-1",
        voting(&["es-3"]),
        Duration::from_secs(120),
    )
    .await?;
    assert!(verified(&st), "{st:#?}\n{}", nodes[0].log("pilot.log"));
    let s = nodes[0]
        .wait_status(
            certs,
            "voting config without es-3",
            Duration::from_secs(10),
            |_, es| {
                !es.voting_config.iter().any(|n| n == "es-3") && es.voting_exclusions == ["es-3"]
            },
        )
        .await?;
    if let Some(Detail::Elasticsearch(es)) = &s.detail {
        println!(
            "voting config now {:?}, master {}",
            es.voting_config, es.elected_master_name
        );
    }

    let mut c3 = nodes[2].client(certs).await?;
    let st = run_action(
        &mut c3,
        "decommission-3",
        decommission(),
        Duration::from_secs(30),
    )
    .await?;
    assert!(verified(&st), "{st:#?}");
    // Refused: node 1 still holds shards (and votes).
    let st = run_action(
        &mut c1,
        "decommission-1",
        decommission(),
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(st.phase(), ActionPhase::Failed, "{st:#?}");
    let result = st.result.as_ref().context("no result")?;
    assert!(
        result.error.contains("this node holds no shard copy"),
        "{result:?}"
    );
    Ok(())
}

async fn drain_resume_and_clear(nodes: &mut [Node], certs: &Certs) -> anyhow::Result<()> {
    let mut c1 = nodes[0].client(certs).await?;
    let st = run_action(
        &mut c1,
        "drain-1",
        Action::Drain(DrainAction {}),
        Duration::from_secs(60),
    )
    .await?;
    assert!(verified(&st), "{st:#?}");
    nodes[1]
        .wait_status(
            certs,
            "allocation primaries",
            Duration::from_secs(10),
            |_, es| es.allocation_enable == "primaries",
        )
        .await?;
    let resume = Action::Resume(ResumeAction {
        min_health: String::new(),
    });
    let st = run_action(&mut c1, "resume-1", resume, Duration::from_secs(120)).await?;
    assert!(verified(&st), "{st:#?}");

    // Both exclusions cleared with empty sets, through another node's pilot.
    let mut c2 = nodes[1].client(certs).await?;
    let st = run_action(
        &mut c2,
        "alloc-clear",
        allocation(&[]),
        Duration::from_secs(60),
    )
    .await?;
    assert!(verified(&st), "{st:#?}");
    let st = run_action(&mut c2, "vote-clear", voting(&[]), Duration::from_secs(60)).await?;
    assert!(verified(&st), "{st:#?}");
    let s = nodes[0]
        .wait_status(
            certs,
            "no exclusion left",
            Duration::from_secs(10),
            |_, es| {
                es.allocation_exclusions.is_empty()
                    && es.voting_exclusions.is_empty()
                    && es.allocation_enable == "all"
            },
        )
        .await?;
    assert!(s.ready);
    Ok(())
}
