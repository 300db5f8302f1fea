//! The pilot against real Cassandra processes on loopback addresses.
//!
//! Cassandra comes from `ensure_dist` (assembled from Maven Central), the pilot binary is
//! built from this workspace. Nothing is skipped: if Cassandra cannot start, the test
//! fails with the tail of its log.
//!
//! Run: `cargo test --release -p stateward-e2e --test pilot_cassandra -- --nocapture`

use std::net::{IpAddr, SocketAddr};
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
use stateward_e2e::cassandra_dist::{CASSANDRA_VERSION, JOLOKIA_AGENT_RELATIVE_PATH, ensure_dist};
use stateward_proto::v1::action_spec::Action;
use stateward_proto::v1::node_status::Detail;
use stateward_proto::v1::pilot_client::PilotClient;
use stateward_proto::v1::{
    ActionPhase, ActionSpec, ActionState, CassandraOperationMode, CassandraStatus,
    DecommissionAction, DrainAction, GetActionRequest, GetStatusRequest, NodeStatus, PeerLiveness,
    PeerState, StartActionRequest, UpgradeSsTablesAction, WatchActionRequest, WatchStatusRequest,
    watch_status_response,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const CLUSTER: &str = "pilot-test";
const NAMESPACE: &str = "default";
const STORAGE_PORT: u16 = 17000;
const CQL_PORT: u16 = 19042;
const GRPC_PORT: u16 = 17443;
const PROBE_PORT: u16 = 17080;

// ---------------------------------------------------------------------------------
// Certificates (rcgen): a cluster CA, the pilot's server certificate, the operator's
// client certificate, and clients the pilot must refuse.
// ---------------------------------------------------------------------------------

struct Pem {
    cert: String,
    key: String,
}

struct Certs {
    ca: String,
    server: Pem,
    operator: Pem,
    /// Signed by the cluster CA but not the operator's identity.
    rogue_same_ca: Pem,
    /// The operator's identity, signed by another CA.
    rogue_other_ca: Pem,
}

fn ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(p, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: &[&str],
    client: bool,
) -> anyhow::Result<Pem> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
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
    let cert = p.signed_by(&key, issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn certs() -> anyhow::Result<Certs> {
    let cluster_ca = ca("stateward pilot-test CA")?;
    let other_ca = ca("somebody else's CA")?;
    let server_name = stateward_proto::pilot_server_name(CLUSTER, NAMESPACE);
    Ok(Certs {
        ca: cluster_ca.pem(),
        server: leaf(&cluster_ca, "pilot", &[&server_name, "localhost"], false)?,
        operator: leaf(
            &cluster_ca,
            "stateward-operator",
            &["stateward-operator"],
            true,
        )?,
        rogue_same_ca: leaf(&cluster_ca, "intruder", &["intruder"], true)?,
        rogue_other_ca: leaf(
            &other_ca,
            "stateward-operator",
            &["stateward-operator"],
            true,
        )?,
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
            .args([
                "build",
                "--release",
                "-p",
                "stateward-pilot",
                "--bin",
                "stateward-pilot",
            ])
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

fn kill(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
}

struct Node {
    name: String,
    ip: IpAddr,
    dir: PathBuf,
    jolokia_port: u16,
    pilot: Option<Child>,
    cassandra: Option<Child>,
    pilot_starts: u32,
    cassandra_starts: u32,
    /// What the downward API would give the pilot: the pod's UID and its
    /// `controller-revision-hash` label.
    pod_uid: String,
    template_revision: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        for child in [self.pilot.as_mut(), self.cassandra.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Node {
    fn new(root: &Path, index: u8, certs: &Certs) -> anyhow::Result<Self> {
        let name = format!("node{index}");
        let dir = root.join(&name);
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        std::fs::write(tls.join("ca.crt"), &certs.ca)?;
        std::fs::write(tls.join("tls.crt"), &certs.server.cert)?;
        std::fs::write(tls.join("tls.key"), &certs.server.key)?;
        std::fs::write(
            dir.join("settings.json"),
            r#"{"numTokens": 16, "cassandraYaml": {"concurrent_compactors": 1}, "jvmOptions": []}"#,
        )?;
        Ok(Node {
            name,
            ip: IpAddr::from([127, 0, 0, index]),
            dir,
            jolokia_port: 18780 + u16::from(index),
            pilot: None,
            cassandra: None,
            pilot_starts: 0,
            cassandra_starts: 0,
            pod_uid: format!("00000000-0000-4000-8000-{index:012}"),
            template_revision: format!("{CLUSTER}-rack1-5d8f7c{index}"),
        })
    }

    fn grpc(&self) -> SocketAddr {
        SocketAddr::new(self.ip, GRPC_PORT)
    }

    fn probe(&self) -> SocketAddr {
        SocketAddr::new(self.ip, PROBE_PORT)
    }

    async fn start_pilot(&mut self, dist: &Path) -> anyhow::Result<()> {
        self.pilot_starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("pilot-{}.log", self.pilot_starts)))?;
        let child = Command::new(pilot_binary()?)
            .arg("cassandra")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("POD_NAME", &self.name)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("POD_UID", &self.pod_uid)
            .env("STATEWARD_TEMPLATE_REVISION", &self.template_revision)
            .env("POD_IP", self.ip.to_string())
            .env("STATEWARD_CLUSTER", CLUSTER)
            .env("STATEWARD_DATACENTER", "dc1")
            .env("STATEWARD_RACK", "rack1")
            .env("STATEWARD_SEEDS", "127.0.0.1")
            .env("STATEWARD_HEAP_SIZE", "384M")
            .env("STATEWARD_CONFIG_FILE", self.dir.join("settings.json"))
            .env("STATEWARD_TLS_DIR", self.dir.join("tls"))
            .env("STATEWARD_DATA_DIR", self.dir.join("data"))
            .env("CASSANDRA_CONF", self.dir.join("conf"))
            .env(
                "STATEWARD_JOLOKIA_AGENT",
                dist.join(JOLOKIA_AGENT_RELATIVE_PATH),
            )
            .env("STATEWARD_JOLOKIA_PORT", self.jolokia_port.to_string())
            .env("STATEWARD_STORAGE_PORT", STORAGE_PORT.to_string())
            .env("STATEWARD_CQL_PORT", CQL_PORT.to_string())
            .env("STATEWARD_GRPC_LISTEN", self.grpc().to_string())
            .env("STATEWARD_PROBE_LISTEN", self.probe().to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the pilot")?;
        self.pilot = Some(child);
        // Like the kubelet: the database container starts only after the startup probe.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(self.probe(), "/healthz/startup").await.ok() == Some(200) {
                return Ok(());
            }
            if let Some(c) = self.pilot.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!("{} pilot exited: {status}\n{}", self.name, self.pilot_log());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} pilot not started in 30 s\n{}",
                    self.name,
                    self.pilot_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pilot_log(&self) -> String {
        tail(
            &self.dir.join(format!("pilot-{}.log", self.pilot_starts)),
            30,
        )
    }

    fn cassandra_log(&self) -> String {
        tail(
            &self
                .dir
                .join(format!("cassandra-{}.log", self.cassandra_starts)),
            60,
        )
    }

    fn start_cassandra(&mut self, dist: &Path) -> anyhow::Result<()> {
        self.cassandra_starts += 1;
        let log = std::fs::File::create(
            self.dir
                .join(format!("cassandra-{}.log", self.cassandra_starts)),
        )?;
        let child = Command::new(dist.join("bin/cassandra"))
            // -R: these tests run as root on CI; the image runs as user cassandra.
            .args(["-f", "-R"])
            .env("CASSANDRA_CONF", self.dir.join("conf"))
            .env("CASSANDRA_LOG_DIR", self.dir.join("logs"))
            // Test-only speed-ups: short ring delay (bootstrap, decommission) and no wait
            // for gossip to settle; C1 only, which starts faster on 2 busy cores.
            .env(
                "JVM_EXTRA_OPTS",
                "-Dcassandra.ring_delay_ms=5000 -Dcassandra.skip_wait_for_gossip_to_settle=0 -XX:TieredStopAtLevel=1",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Cassandra")?;
        self.cassandra = Some(child);
        Ok(())
    }

    async fn client(&self, certs: &Certs) -> anyhow::Result<PilotClient<Channel>> {
        connect(self.grpc(), &certs.ca, Some(&certs.operator)).await
    }

    /// Polls GetStatus until `pred` holds; fails with the logs after `timeout`.
    async fn wait_status(
        &mut self,
        certs: &Certs,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&NodeStatus) -> bool,
    ) -> anyhow::Result<NodeStatus> {
        let start = Instant::now();
        let mut client = self.client(certs).await?;
        let mut last = None;
        loop {
            if let Some(c) = self.cassandra.as_mut()
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "{}: Cassandra exited ({status}) while waiting for {what}\n{}",
                    self.name,
                    self.cassandra_log()
                );
            }
            match client.get_status(GetStatusRequest {}).await {
                Ok(s) => {
                    let s = s.into_inner();
                    if pred(&s) {
                        println!("{}: {what} after {:.1?}", self.name, start.elapsed());
                        return Ok(s);
                    }
                    last = Some(s);
                }
                Err(e) => println!("{}: GetStatus: {e}", self.name),
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: no {what} within {timeout:?}; last status {last:#?}\n--- cassandra log ---\n{}\n--- pilot log ---\n{}",
                    self.name,
                    self.cassandra_log(),
                    self.pilot_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A bare HTTP/1.0 GET, enough for the probe endpoints; returns the status code.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    Ok(http_get_body(addr, path).await?.0)
}

/// A bare HTTP/1.0 GET; returns the status code and the body.
async fn http_get_body(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: pilot\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .context("no status line")?
        .parse()
        .context("bad status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

async fn connect(
    addr: SocketAddr,
    ca: &str,
    client: Option<&Pem>,
) -> anyhow::Result<PilotClient<Channel>> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(stateward_proto::pilot_server_name(CLUSTER, NAMESPACE));
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(PilotClient::new(channel))
}

fn cassandra(s: &NodeStatus) -> Option<&CassandraStatus> {
    match &s.detail {
        Some(Detail::Cassandra(c)) => Some(c),
        _ => None,
    }
}

fn mode(s: &NodeStatus) -> CassandraOperationMode {
    cassandra(s).map(|c| c.operation_mode()).unwrap_or_default()
}

/// Both nodes Up and Normal in this node's view.
fn sees_both_up_normal(s: &NodeStatus) -> bool {
    s.ready
        && cassandra(s).is_some_and(|c| {
            ["127.0.0.1", "127.0.0.2"].iter().all(|ip| {
                c.peers.iter().any(|p| {
                    p.address == *ip
                        && p.liveness() == PeerLiveness::Up
                        && p.state() == PeerState::Normal
                        && !p.host_id.is_empty()
                })
            })
        })
}

fn peer_liveness(s: &NodeStatus, ip: &str) -> Option<PeerLiveness> {
    cassandra(s)?
        .peers
        .iter()
        .find(|p| p.address == ip)
        .map(|p| p.liveness())
}

fn test_root(name: &str) -> anyhow::Result<PathBuf> {
    let root = std::env::temp_dir().join(format!("stateward-{name}-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    Ok(root)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    line.split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()
        .context("bad VmRSS")
}

/// Starts an action and follows it to its terminal state.
async fn run_action(
    client: &mut PilotClient<Channel>,
    id: &str,
    spec: ActionSpec,
    timeout: Duration,
) -> anyhow::Result<ActionState> {
    client
        .start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(spec),
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
    last.context("empty action stream")
}

fn print_verifications(id: &str, state: &ActionState) {
    println!("{id}: {:?} attempts={}", state.phase(), state.attempts);
    for v in state.result.iter().flat_map(|r| &r.verifications) {
        println!(
            "  [{}] {} — {} — {}",
            if v.passed { "ok" } else { "FAILED" },
            v.check,
            v.method,
            v.observed
        );
    }
}

fn all_verified(state: &ActionState) -> bool {
    state.phase() == ActionPhase::Succeeded
        && state.result.as_ref().is_some_and(|r| {
            r.success && !r.verifications.is_empty() && r.verifications.iter().all(|v| v.passed)
        })
}

fn drain() -> ActionSpec {
    ActionSpec {
        action: Some(Action::Drain(DrainAction {})),
    }
}

fn upgrade_sstables(keyspaces: &[&str], jobs: u32) -> ActionSpec {
    ActionSpec {
        action: Some(Action::UpgradeSstables(UpgradeSsTablesAction {
            keyspaces: keyspaces.iter().map(|k| k.to_string()).collect(),
            jobs,
        })),
    }
}

fn decommission(force: bool) -> ActionSpec {
    ActionSpec {
        action: Some(Action::Decommission(DecommissionAction { force })),
    }
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// Only the operator's certificate gets in; no Cassandra needed for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_other_than_the_operator() -> anyhow::Result<()> {
    let dist = tokio::task::spawn_blocking(|| ensure_dist(CASSANDRA_VERSION)).await??;
    let certs = certs()?;
    let root = test_root("pilot-mtls")?;
    let mut node = Node::new(&root, 3, &certs)?;
    node.start_pilot(&dist).await?;

    // The operator gets an answer: Cassandra is not running, and the pilot says so.
    let mut ok = node.client(&certs).await?;
    let s = ok.get_status(GetStatusRequest {}).await?.into_inner();
    assert!(!s.ready, "{s:?}");
    println!(
        "operator client: GetStatus ok, process_state={:?}",
        s.process_state()
    );

    for (what, client) in [
        (
            "a client certificate from the cluster CA without the operator's identity",
            Some(&certs.rogue_same_ca),
        ),
        (
            "the operator's identity signed by another CA",
            Some(&certs.rogue_other_ca),
        ),
        ("no client certificate", None),
    ] {
        let result = async {
            let mut c = connect(node.grpc(), &certs.ca, client).await?;
            c.get_status(GetStatusRequest {}).await?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => bail!("the pilot accepted {what}"),
            Err(e) => println!("refused {what}: {e:#}"),
        }
    }
    // The rendered configuration is what Cassandra will read.
    let yaml = std::fs::read_to_string(node.dir.join("conf/cassandra.yaml"))?;
    assert!(yaml.contains("listen_address: 127.0.0.3"), "{yaml}");
    assert!(yaml.contains("concurrent_compactors: 1"), "{yaml}");
    let jvm = std::fs::read_to_string(node.dir.join("conf/jvm-server.options"))?;
    assert!(
        jvm.contains("-Xmx384M") && jvm.contains("jolokia-agent.jar=host=127.0.0.1"),
        "{jvm}"
    );
    assert!(node.dir.join("conf/jolokia-agent.jar").is_file());
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Two real Cassandra nodes with a pilot each: status, failure detection through the
/// watch stream, identity across a restart, and a decommission that survives a pilot
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_cluster_status_watch_and_decommission() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dist = tokio::task::spawn_blocking(|| ensure_dist(CASSANDRA_VERSION)).await??;
    println!(
        "Cassandra {CASSANDRA_VERSION} distribution at {} ({:.1?})",
        dist.display(),
        t0.elapsed()
    );
    let certs = certs()?;
    let root = test_root("pilot-cassandra")?;
    let mut n1 = Node::new(&root, 1, &certs)?;
    let mut n2 = Node::new(&root, 2, &certs)?;
    n1.start_pilot(&dist).await?;
    n2.start_pilot(&dist).await?;

    // Node 1 (the seed) first, then node 2 bootstraps into it.
    n1.start_cassandra(&dist)?;
    n1.wait_status(&certs, "node 1 ready", Duration::from_secs(240), |s| {
        s.ready
    })
    .await?;
    n2.start_cassandra(&dist)?;
    let s2 = n2
        .wait_status(
            &certs,
            "node 2 sees both Up/Normal",
            Duration::from_secs(300),
            sees_both_up_normal,
        )
        .await?;
    let s1 = n1
        .wait_status(
            &certs,
            "node 1 sees both Up/Normal",
            Duration::from_secs(60),
            sees_both_up_normal,
        )
        .await?;

    // Host IDs agree across the two views.
    let (c1, c2) = (
        cassandra(&s1).context("no detail")?,
        cassandra(&s2).context("no detail")?,
    );
    for (view, other) in [(c1, c2), (c2, c1)] {
        let p = view
            .peers
            .iter()
            .find(|p| p.address == other.address)
            .context("peer missing")?;
        assert_eq!(
            p.host_id, other.host_id,
            "host ID of {} differs between views",
            other.address
        );
    }
    assert_eq!(c1.tokens.len(), 16);
    assert_eq!(c1.schema_version, c2.schema_version);
    assert_eq!(s1.version, CASSANDRA_VERSION);
    let node2_host_id = c2.host_id.clone();
    println!("host IDs: node1={} node2={}", c1.host_id, c2.host_id);
    assert_eq!(http_get(n1.probe(), "/healthz/ready").await?, 200);
    assert_eq!(http_get(n1.probe(), "/healthz/live").await?, 200);
    // The pod identity from the downward API is reported as given.
    for (s, n) in [(&s1, &n1), (&s2, &n2)] {
        assert_eq!(
            (s.pod_uid.as_str(), s.template_revision.as_str()),
            (n.pod_uid.as_str(), n.template_revision.as_str()),
            "{}",
            n.name
        );
    }

    // upgradesstables on every keyspace (the system ones included), then on one keyspace
    // with one job: verified by Cassandra's status for each keyspace.
    let mut c1 = n1.client(&certs).await?;
    let upgrade_start = Instant::now();
    let all = run_action(
        &mut c1,
        "upgradesstables-node1-1",
        upgrade_sstables(&[], 0),
        Duration::from_secs(120),
    )
    .await?;
    print_verifications("upgradesstables-node1-1", &all);
    println!(
        "upgradesstables of every keyspace took {:.1?}",
        upgrade_start.elapsed()
    );
    assert!(all_verified(&all), "{all:#?}\n{}", n1.pilot_log());
    let checked: Vec<&str> = all
        .result
        .iter()
        .flat_map(|r| &r.verifications)
        .map(|v| v.check.as_str())
        .collect();
    for ks in ["system", "system_schema", "system_auth"] {
        assert!(
            checked.contains(&format!("upgradesstables of keyspace {ks} completed").as_str()),
            "{ks} not upgraded: {checked:?}"
        );
    }
    let one = run_action(
        &mut c1,
        "upgradesstables-node1-2",
        upgrade_sstables(&["system_auth"], 1),
        Duration::from_secs(60),
    )
    .await?;
    print_verifications("upgradesstables-node1-2", &one);
    assert!(all_verified(&one), "{one:#?}");
    assert_eq!(one.result.as_ref().map(|r| r.verifications.len()), Some(1));
    let again = c1
        .start_action(StartActionRequest {
            action_id: "upgradesstables-node1-1".into(),
            spec: Some(upgrade_sstables(&[], 0)),
        })
        .await?
        .into_inner();
    assert_eq!(
        again, all,
        "a repeated StartAction returns the recorded result"
    );

    // Idle RSS of a pilot serving a watch stream.
    let mut watcher = n1.client(&certs).await?;
    let mut stream = watcher
        .watch_status(WatchStatusRequest {
            heartbeat_interval_ms: 500,
        })
        .await?
        .into_inner();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pilot_pid = n1.pilot.as_ref().context("no pilot")?.id();
    println!("IDLE PILOT RSS: {} KiB", rss_kib(pilot_pid)?);

    // Stop Cassandra on node 2; node 1's pilot must push the change within ~2 s.
    let mut heartbeats = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        if let Some(watch_status_response::Event::Heartbeat(_)) = m?.event {
            heartbeats += 1;
        }
    }
    let stopped_at = Instant::now();
    kill(n2.cassandra.as_ref().context("no cassandra 2")?, "TERM");
    let delay = loop {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .context("no status within 10 s after stopping node 2")?
            .context("watch stream ended")??;
        match m.event {
            Some(watch_status_response::Event::Status(s))
                if peer_liveness(&s, "127.0.0.2") == Some(PeerLiveness::Down) =>
            {
                break stopped_at.elapsed();
            }
            Some(watch_status_response::Event::Heartbeat(_)) => heartbeats += 1,
            _ => {}
        }
    };
    println!(
        "FAILURE DETECTION: node 1's pilot streamed node 2 DOWN {delay:.2?} after SIGTERM to node 2's Cassandra ({heartbeats} heartbeats seen)"
    );
    assert!(
        delay < Duration::from_millis(2500),
        "detection took {delay:?}"
    );
    assert!(heartbeats > 0, "no heartbeats on an idle stream");
    let s1_down = n1
        .client(&certs)
        .await?
        .get_status(GetStatusRequest {})
        .await?
        .into_inner();
    assert!(
        s1_down.ready,
        "node 1 stays ready while node 2 is down: {s1_down:?}"
    );
    let exit = tokio::task::spawn_blocking({
        let mut c = n2.cassandra.take().context("no cassandra 2")?;
        move || c.wait()
    })
    .await??;
    println!("node 2 Cassandra exited: {exit}");

    // Restart node 2's Cassandra: same identity, both Up/Normal again.
    n2.start_cassandra(&dist)?;
    let s2 = n2
        .wait_status(
            &certs,
            "node 2 back Up/Normal",
            Duration::from_secs(240),
            sees_both_up_normal,
        )
        .await?;
    assert_eq!(
        cassandra(&s2).context("no detail")?.host_id,
        node2_host_id,
        "node 2 changed identity"
    );
    assert_eq!(
        cassandra(&s2).context("no detail")?.recorded_host_id,
        node2_host_id
    );
    n1.wait_status(
        &certs,
        "node 1 sees node 2 back",
        Duration::from_secs(60),
        sees_both_up_normal,
    )
    .await?;

    // The replication guard against real Cassandra: a keyspace with two replicas in dc1
    // cannot keep them on the one dc1 node that would remain; nothing starts.
    let cql = scylla::client::session_builder::SessionBuilder::new()
        .known_node(format!("127.0.0.1:{CQL_PORT}"))
        .connection_timeout(Duration::from_secs(10))
        .build()
        .await?;
    cql.query_unpaged(
        "CREATE KEYSPACE guarded WITH replication = \
         {'class': 'NetworkTopologyStrategy', 'dc1': 2}",
        (),
    )
    .await?;
    let mut c2 = n2.client(&certs).await?;
    let refused = run_action(
        &mut c2,
        "decommission-node2-guarded",
        decommission(true),
        Duration::from_secs(60),
    )
    .await?;
    let error = refused
        .result
        .as_ref()
        .map(|r| r.error.clone())
        .unwrap_or_default();
    println!("guarded decommission: {:?}: {error}", refused.phase());
    assert_eq!(refused.phase(), ActionPhase::Failed, "{refused:#?}");
    assert!(
        error.contains("1 nodes would remain in datacenter dc1")
            && error.contains("guarded (RF 2)"),
        "{error}"
    );
    let s2 = n2
        .client(&certs)
        .await?
        .get_status(GetStatusRequest {})
        .await?
        .into_inner();
    assert_eq!(
        mode(&s2),
        CassandraOperationMode::Normal,
        "the guard touched nothing"
    );
    cql.query_unpaged("DROP KEYSPACE guarded", ()).await?;

    // Decommission node 2; kill its pilot mid-action and start a new one.
    let id = "decommission-node2-1";
    let mut c2 = n2.client(&certs).await?;
    let started = c2
        .start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(decommission(true)),
        })
        .await?
        .into_inner();
    println!("started: {:?} {}", started.phase(), started.message);
    // A second, different action is refused while this one runs.
    let busy = c2
        .start_action(StartActionRequest {
            action_id: "drain-now".into(),
            spec: Some(ActionSpec {
                action: Some(Action::Drain(DrainAction {})),
            }),
        })
        .await;
    assert_eq!(
        busy.err().map(|e| e.code()),
        Some(tonic::Code::FailedPrecondition)
    );
    n2.wait_status(&certs, "node 2 LEAVING", Duration::from_secs(60), |s| {
        mode(s) == CassandraOperationMode::Leaving
    })
    .await?;
    let pilot = n2.pilot.as_mut().context("no pilot 2")?;
    pilot.kill()?;
    pilot.wait()?;
    println!("killed node 2's pilot mid-decommission");
    n2.start_pilot(&dist).await?;
    let mut c2 = n2.client(&certs).await?;
    let mut actions = c2
        .watch_action(WatchActionRequest {
            action_id: id.into(),
        })
        .await?
        .into_inner();
    let mut last = None;
    let decom_start = Instant::now();
    while let Some(state) = tokio::time::timeout(Duration::from_secs(300), actions.next())
        .await
        .context("decommission did not finish in 300 s")?
    {
        let state = state?;
        println!(
            "action: {:?} attempts={} {}",
            state.phase(),
            state.attempts,
            state.message
        );
        last = Some(state);
    }
    let last = last.context("empty action stream")?;
    println!(
        "decommission finished {:.1?} after the pilot restart: {:#?}",
        decom_start.elapsed(),
        last.result
    );
    assert_eq!(
        last.phase(),
        ActionPhase::Succeeded,
        "{last:#?}\n{}",
        n2.pilot_log()
    );
    assert!(
        last.attempts >= 2,
        "the restarted pilot resumed the action: {last:?}"
    );
    let result = last.result.clone().context("no result")?;
    assert!(
        result.success
            && !result.verifications.is_empty()
            && result.verifications.iter().all(|v| v.passed)
    );

    // Node 2's own pilot reports DECOMMISSIONED; node 1's pilot no longer has it in the ring.
    // The status is a periodic sample: it may trail the action's own fresh check by one period.
    let s2 = n2
        .wait_status(
            &certs,
            "node 2 reports DECOMMISSIONED",
            Duration::from_secs(30),
            |s| mode(s) == CassandraOperationMode::Decommissioned,
        )
        .await?;
    assert!(!s2.ready);
    n1.wait_status(
        &certs,
        "node 1 without node 2 in the ring",
        Duration::from_secs(60),
        |s| {
            cassandra(s).is_some_and(|c| {
                !c.peers
                    .iter()
                    .any(|p| p.address == "127.0.0.2" && p.state() != PeerState::Unspecified)
                    && c.peers
                        .iter()
                        .any(|p| p.is_self && p.state() == PeerState::Normal)
            })
        },
    )
    .await?;

    // The same ID again: nothing new runs, the final result comes back.
    let again = c2
        .start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(decommission(true)),
        })
        .await?
        .into_inner();
    assert_eq!(
        again, last,
        "repeating the action ID must return the recorded final state"
    );
    let got = c2
        .get_action(GetActionRequest {
            action_id: id.into(),
        })
        .await?
        .into_inner();
    assert_eq!(got, last);
    // The same ID with another spec is a conflict.
    let conflict = c2
        .start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(decommission(false)),
        })
        .await;
    assert_eq!(
        conflict.err().map(|e| e.code()),
        Some(tonic::Code::AlreadyExists)
    );

    drain_node1(&mut n1, &certs, &dist).await?;
    println!("total {:.1?}", t0.elapsed());
    drop((n1, n2));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Node 1 (Cassandra NORMAL): a Drain action, verified DRAINED and idempotent by ID; a
/// preStop and a second Drain on the drained node succeed at once; a Drain resumed by a
/// restarted pilot on the drained node succeeds; a SIGTERM to the pilot finds nothing to do.
async fn drain_node1(n1: &mut Node, certs: &Certs, dist: &Path) -> anyhow::Result<()> {
    let mut c1 = n1.client(certs).await?;
    let drain_start = Instant::now();
    let drained = run_action(&mut c1, "drain-node1-1", drain(), Duration::from_secs(120)).await?;
    print_verifications("drain-node1-1", &drained);
    println!("drain took {:.1?}", drain_start.elapsed());
    assert!(all_verified(&drained), "{drained:#?}\n{}", n1.pilot_log());
    let observed: Vec<&str> = drained
        .result
        .iter()
        .flat_map(|r| &r.verifications)
        .map(|v| v.observed.as_str())
        .collect();
    assert_eq!(observed, ["DRAINED"]);
    let again = c1
        .start_action(StartActionRequest {
            action_id: "drain-node1-1".into(),
            spec: Some(drain()),
        })
        .await?
        .into_inner();
    assert_eq!(
        again, drained,
        "a repeated StartAction returns the recorded result"
    );
    n1.wait_status(
        certs,
        "node 1 reports DRAINED",
        Duration::from_secs(30),
        |s| mode(s) == CassandraOperationMode::Drained && !s.ready,
    )
    .await?;

    // Already drained: the preStop hook and a new Drain succeed without waiting.
    let pre_stop = Instant::now();
    let (code, body) = http_get_body(n1.probe(), "/lifecycle/pre-stop").await?;
    println!(
        "preStop on a drained node: {code} {} in {:.2?}",
        body.trim(),
        pre_stop.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    let second = run_action(&mut c1, "drain-node1-2", drain(), Duration::from_secs(30)).await?;
    assert!(all_verified(&second), "{second:#?}");

    // A Drain the pilot journalled as RUNNING, then died: Cassandra is frozen (SIGSTOP) so
    // the action cannot end, the pilot is killed, and a new pilot resumes it from the
    // journal on the (drained) node.
    let id = "drain-node1-3";
    let jvm = n1.cassandra.as_ref().context("no cassandra 1")?;
    kill(jvm, "STOP");
    let resumed = async {
        c1.start_action(StartActionRequest {
            action_id: id.into(),
            spec: Some(drain()),
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = c1
                .get_action(GetActionRequest {
                    action_id: id.into(),
                })
                .await?
                .into_inner();
            if state.phase() == ActionPhase::Running {
                break;
            }
            if Instant::now() > deadline {
                bail!("{id} not RUNNING: {state:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pilot = n1.pilot.as_mut().context("no pilot 1")?;
        pilot.kill()?;
        pilot.wait()?;
        anyhow::Ok(())
    }
    .await;
    kill(n1.cassandra.as_ref().context("no cassandra 1")?, "CONT");
    resumed?;
    println!("killed node 1's pilot with {id} RUNNING");
    n1.start_pilot(dist).await?;
    let mut c1 = n1.client(certs).await?;
    let mut states = c1
        .watch_action(WatchActionRequest {
            action_id: id.into(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(state) = tokio::time::timeout(Duration::from_secs(180), states.next())
        .await
        .context("the resumed drain did not finish in 180 s")?
    {
        last = Some(state?);
    }
    let last = last.context("empty action stream")?;
    print_verifications(id, &last);
    assert!(all_verified(&last), "{last:#?}\n{}", n1.pilot_log());
    assert!(last.attempts >= 2, "resumed from the journal: {last:?}");
    // The journal kept the first drain's final state across the restart.
    let first = c1
        .get_action(GetActionRequest {
            action_id: "drain-node1-1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(first, drained);
    let s = c1.get_status(GetStatusRequest {}).await?.into_inner();
    assert_eq!(
        (s.pod_uid.as_str(), s.template_revision.as_str()),
        (n1.pod_uid.as_str(), n1.template_revision.as_str())
    );

    // SIGTERM to the pilot: Cassandra is drained already, so the pilot stops at once.
    let pilot1 = n1.pilot.as_mut().context("no pilot 1")?;
    kill(pilot1, "TERM");
    let stop_start = Instant::now();
    loop {
        if let Some(status) = pilot1.try_wait()? {
            println!(
                "node 1 pilot exited ({status}) {:.1?} after SIGTERM",
                stop_start.elapsed()
            );
            break;
        }
        if stop_start.elapsed() > Duration::from_secs(30) {
            bail!("node 1 pilot did not stop within 30 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jolokia = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), n1.jolokia_port);
    let (_, body) = http_get_body(
        jolokia,
        "/jolokia/read/org.apache.cassandra.db:type=StorageService/OperationMode",
    )
    .await?;
    assert!(
        body.contains("\"value\":\"DRAINED\""),
        "node 1 not DRAINED: {body}"
    );
    Ok(())
}
