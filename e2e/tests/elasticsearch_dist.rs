//! The Elasticsearch distribution assembled from Maven Central (`elasticsearch_dist`) runs a
//! real 3-node cluster on loopback: it forms, reaches green with a 3-shard × 1-replica index,
//! and a node stopped with SIGTERM exits cleanly.
//!
//! Nodes run as an unprivileged user (Elasticsearch refuses root): `nobody` when the test runs
//! as root. Nothing is skipped: a node that cannot start fails the test with its log's tail.
//!
//! Run: `cargo test --release --workspace --test elasticsearch_dist -- --nocapture`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stateward_e2e::elasticsearch_dist::{ELASTICSEARCH_VERSION, ensure_dist_for_all_users};

const NOBODY: u32 = 65534;
/// Small heaps: three nodes share this machine with the local cluster.
const JVM_OPTIONS: &str = "-Xms256m\n-Xmx256m\n-XX:+UseG1GC\n";

struct Node {
    name: String,
    http: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// Kills whatever is still running when the test ends (or panics).
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral port")?;
    Ok(listener.local_addr()?.port())
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (the node closes the connection): status, body.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    let (head, rest) = response
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    // Small JSON answers; chunked ones are unwrapped to their first chunk.
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest.split_once("\r\n")
            .map(|(_, r)| r.rsplit_once("\r\n0\r\n").map_or(r, |(b, _)| b))
            .unwrap_or(rest)
            .trim_end_matches("\r\n")
            .to_string()
    } else {
        rest.to_string()
    };
    Ok((status, payload))
}

fn json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let (status, text) = http(port, method, path, body)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {path} answered {text:?}"))
}

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

fn tail(path: &Path) -> String {
    stateward_e2e::cmd::tail(path, 40)
}

fn wait_exit(child: &mut Child, within: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_reach_green_and_stop_cleanly() -> anyhow::Result<()> {
    let started = Instant::now();
    let home = ensure_dist_for_all_users(ELASTICSEARCH_VERSION)?;
    eprintln!(
        "distribution ready in {:?}: {}",
        started.elapsed(),
        home.display()
    );

    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let base = std::env::temp_dir().join(format!("stateward-es-dist-{}", std::process::id()));
    if base.exists() {
        std::fs::remove_dir_all(&base)?;
    }
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let seeds: Vec<String> = ports
        .iter()
        .map(|(_, t)| format!("\"127.0.0.1:{t}\""))
        .collect();
    let log4j = std::fs::read_to_string(home.join("config/log4j2.properties"))?;

    let mut nodes = Nodes(Vec::new());
    let launch = Instant::now();
    for (i, (http_port, transport_port)) in ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let dir = base.join(&name);
        let config = dir.join("config");
        for d in [&config, &dir.join("data"), &dir.join("logs")] {
            std::fs::create_dir_all(d)?;
        }
        // The nodes share this machine's disk, whose fill level is not under test: with the
        // disk threshold on, replicas stay unassigned once that disk is 85% used.
        std::fs::write(
            config.join("elasticsearch.yml"),
            format!(
                "cluster.name: dist-test\n\
                 node.name: {name}\n\
                 network.host: 127.0.0.1\n\
                 http.port: {http_port}\n\
                 transport.port: {transport_port}\n\
                 discovery.seed_hosts: [{}]\n\
                 cluster.initial_master_nodes: [\"n1\", \"n2\", \"n3\"]\n\
                 node.store.allow_mmap: false\n\
                 cluster.routing.allocation.disk.threshold_enabled: false\n\
                 path.data: {}\n\
                 path.logs: {}\n",
                seeds.join(", "),
                dir.join("data").display(),
                dir.join("logs").display(),
            ),
        )?;
        std::fs::write(config.join("jvm.options"), JVM_OPTIONS)?;
        std::fs::write(config.join("log4j2.properties"), &log4j)?;
        let log = dir.join("out.log");
        let out = std::fs::File::create(&log)?;
        if as_root {
            stateward_e2e::cmd::run(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{NOBODY}:{NOBODY}"))
                    .arg(&base),
            )?;
        }
        let mut cmd = Command::new(home.join("bin/elasticsearch"));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &dir)
            .env("ES_PATH_CONF", &config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if as_root {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let child = cmd.spawn().context("start bin/elasticsearch")?;
        nodes.0.push(Node {
            name,
            http: *http_port,
            log,
            child: Some(child),
        });
    }

    // Every node answers HTTP, then one cluster of three.
    for node in &mut nodes.0 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if http(node.http, "GET", "/_cluster/health", None).is_ok() {
                eprintln!("{} answers HTTP after {:?}", node.name, launch.elapsed());
                break;
            }
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("{} exited ({status}):\n{}", node.name, tail(&node.log));
            }
            if Instant::now() > deadline {
                bail!("{} does not answer HTTP:\n{}", node.name, tail(&node.log));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let first = nodes.0[0].http;
    let health = json(
        first,
        "GET",
        "/_cluster/health?wait_for_nodes=3&timeout=60s",
        None,
    )?;
    assert_eq!(health["number_of_nodes"], 3, "{health}");
    eprintln!("3 nodes in one cluster after {:?}", launch.elapsed());

    json(
        first,
        "PUT",
        "/dist-test",
        Some(r#"{"settings":{"number_of_shards":3,"number_of_replicas":1}}"#),
    )?;
    let health = json(
        first,
        "GET",
        "/_cluster/health/dist-test?wait_for_status=green&timeout=60s",
        None,
    )?;
    assert_eq!(health["status"], "green", "{health}");
    assert_eq!(health["active_shards"], 6, "{health}");
    eprintln!("index of 3x1 shards green after {:?}", launch.elapsed());
    for node in &nodes.0 {
        if let Some(child) = &node.child {
            eprintln!("{} RSS {:?} MiB", node.name, rss_mib(child.id()));
        }
    }

    // SIGTERM to the node's process (the server JVM itself: the launcher exec'd it).
    let n3 = &mut nodes.0[2];
    let child = n3.child.as_mut().context("n3 is not running")?;
    let pid = i32::try_from(child.id())?;
    let stopping = Instant::now();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!("kill n3: {}", std::io::Error::last_os_error());
    }
    let status = wait_exit(child, Duration::from_secs(60))
        .with_context(|| format!("n3 after SIGTERM:\n{}", tail(&n3.log)))?;
    n3.child = None;
    eprintln!("n3 exited {status} after {:?}", stopping.elapsed());
    assert!(
        matches!(status.code(), Some(0) | Some(143)),
        "n3 exited {status}:\n{}",
        tail(&n3.log)
    );
    let log = std::fs::read_to_string(&n3.log)?;
    assert!(
        log.contains("closed"),
        "n3 did not close cleanly:\n{}",
        tail(&n3.log)
    );

    // The two others still form the cluster (2 of 3 master-eligible nodes are a quorum).
    let health = json(
        first,
        "GET",
        "/_cluster/health?wait_for_nodes=2&timeout=30s",
        None,
    )?;
    assert_eq!(health["number_of_nodes"], 2, "{health}");

    drop(nodes);
    std::fs::remove_dir_all(&base).with_context(|| format!("remove {}", base.display()))?;
    eprintln!("total {:?}", started.elapsed());
    Ok(())
}
