//! Renders Elasticsearch's configuration into `ES_PATH_CONF` before Elasticsearch starts:
//! elasticsearch.yml, jvm.options and log4j2.properties.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_yaml::{Mapping, Value};
use stateward_core::node_config::{
    ELASTICSEARCH_CONFIG_FILE, ElasticsearchNodeConfig, is_reserved_elasticsearch_yml_key,
};
use tracing::{info, warn};

use super::Args;
use crate::fsutil::write_atomic;

/// The largest heap that keeps compressed object pointers.
const MAX_HEAP_MIB: u64 = 31 * 1024;
const MIN_HEAP_MIB: u64 = 128;
const DEFAULT_HEAP_MIB: u64 = 1024;

/// The operator's node configuration; fields this pilot does not know are ignored, so a
/// newer operator never stops an older pilot. `path` may be the mounted ConfigMap's
/// directory.
pub fn load_settings(path: Option<&Path>) -> anyhow::Result<ElasticsearchNodeConfig> {
    let Some(path) = path else {
        return Ok(ElasticsearchNodeConfig::default());
    };
    let path: PathBuf = if path.is_dir() {
        path.join(ELASTICSEARCH_CONFIG_FILE)
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn render(args: &Args) -> anyhow::Result<()> {
    let settings = load_settings(args.config_file.as_deref())?;
    let conf = &args.conf_dir;
    // Not the logs directory: it belongs to the Elasticsearch container (a pod mounts it
    // there only), and Elasticsearch creates it when missing.
    for dir in [conf, &args.data_dir, &tmp_dir(args)] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bootstrap = bootstrap_masters(&settings, &args.data_dir)?;
    if !bootstrap.is_empty() {
        info!(masters = ?bootstrap, "fresh data directory: this node may bootstrap the cluster");
    }
    let yml = elasticsearch_yml(args, &settings, &bootstrap)?;
    write_atomic(&conf.join("elasticsearch.yml"), yml.as_bytes())?;
    write_atomic(
        &conf.join("jvm.options"),
        jvm_options(args, &settings)?.as_bytes(),
    )?;
    write_atomic(&conf.join("log4j2.properties"), LOG4J2.as_bytes())?;
    Ok(())
}

fn tmp_dir(args: &Args) -> PathBuf {
    // On the data volume: JNA and the JDK need an executable tmpdir, which a container's
    // /tmp may not be, and this one is already writable by the node's user.
    args.data_dir.join("tmp")
}

/// The names for `cluster.initial_master_nodes`: the configured ones only while the data
/// directory holds no cluster state. At its first start Elasticsearch (9.x) writes its node
/// ID and the cluster metadata as a Lucene index under `<path.data>/_state` and a `nodes`
/// file (a guard against downgrades; a directory before 8.0), so either means this node
/// started before and must never bootstrap a second cluster.
pub fn bootstrap_masters(
    settings: &ElasticsearchNodeConfig,
    data_dir: &Path,
) -> anyhow::Result<Vec<String>> {
    if settings.initial_master_nodes.is_empty() {
        return Ok(vec![]);
    }
    if data_dir.join("nodes").symlink_metadata().is_ok() {
        return Ok(vec![]);
    }
    let state = data_dir.join("_state");
    match std::fs::read_dir(&state).map(|mut entries| entries.next().is_some()) {
        Ok(true) => return Ok(vec![]),
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Cannot tell: the safe side is not to bootstrap.
        Err(e) => {
            warn!("reading {}: {e}; not bootstrapping", state.display());
            return Ok(vec![]);
        }
    }
    Ok(settings.initial_master_nodes.clone())
}

/// The user's settings as flat dotted keys: nested objects are flattened so a nested
/// `{"node": {"store": {...}}}` and the pilot's flat `node.store.allow_mmap` can never be
/// two spellings of one key (Elasticsearch refuses duplicates).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

pub fn elasticsearch_yml(
    args: &Args,
    settings: &ElasticsearchNodeConfig,
    initial_masters: &[String],
) -> anyhow::Result<String> {
    let mut m = Mapping::new();
    let mut set = |k: &str, v: Value| {
        m.insert(Value::String(k.into()), v);
    };
    // Defaults the settings may override. No mmap: it needs vm.max_map_count >= 262144,
    // a host setting a pod cannot change (and a bootstrap check in production mode).
    set("node.store.allow_mmap", false.into());
    let mut user = Vec::new();
    for (k, v) in &settings.elasticsearch_yml {
        flatten(k, v, &mut user);
    }
    for (k, v) in user {
        // The API refuses reserved keys and the operator drops them; one that still
        // arrives is ignored, not fatal.
        if is_reserved_elasticsearch_yml_key(&k) {
            warn!(key = %k, "elasticsearchYml sets a key Stateward owns; ignored");
            continue;
        }
        let v: Value = serde_yaml::to_value(&v).with_context(|| format!("elasticsearchYml.{k}"))?;
        set(&k, v);
    }
    // Owned keys last: they always win.
    let strings = |v: &[String]| Value::Sequence(v.iter().map(|s| s.as_str().into()).collect());
    let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
    let seeds = args.seed_host_list();
    if seeds.is_empty() {
        bail!("no seed hosts given (STATEWARD_SEED_HOSTS)");
    }
    set("cluster.name", args.cluster.as_str().into());
    set("node.name", args.common.node_name.as_str().into());
    set("node.roles", strings(&args.role_list()));
    set("node.attr.pool", args.pool.as_str().into());
    set("network.host", strings(&bind_hosts(args.pod_ip)));
    set("network.publish_host", args.pod_ip.to_string().into());
    set("http.port", args.http_port.into());
    set("transport.port", args.transport_port.into());
    set("discovery.seed_hosts", strings(&seeds));
    set("path.data", path(&args.data_dir));
    set("path.logs", path(&args.logs_dir));
    if !initial_masters.is_empty() {
        set("cluster.initial_master_nodes", strings(initial_masters));
    }
    let body = serde_yaml::to_string(&m).context("serialising elasticsearch.yml")?;
    Ok(format!(
        "# Rendered by the Stateward pilot from the operator's settings; do not edit.\n{body}"
    ))
}

/// Where Elasticsearch listens: the pod IP (peers and clients) and loopback (the pilot,
/// whatever the pod IP). Not 0.0.0.0: binding every interface would also collide with
/// other nodes on a shared host (local tests), and a loopback pod IP already covers both.
pub fn bind_hosts(pod_ip: IpAddr) -> Vec<String> {
    let mut hosts = vec![pod_ip.to_string()];
    if !pod_ip.is_loopback() {
        hosts.push(
            match pod_ip {
                IpAddr::V4(_) => "127.0.0.1",
                IpAddr::V6(_) => "::1",
            }
            .to_string(),
        );
    }
    hosts
}

fn jvm_options(args: &Args, settings: &ElasticsearchNodeConfig) -> anyhow::Result<String> {
    let heap = heap_size(args)?;
    let mut lines = vec![
        "# Rendered by the Stateward pilot; read by bin/elasticsearch.".to_string(),
        // Equal: a heap that grows pauses the node, and Elasticsearch checks it at boot.
        format!("-Xms{heap}"),
        format!("-Xmx{heap}"),
        "-XX:+UseG1GC".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
        // No GC log file (Elasticsearch's own jvm.options writes one under the
        // distribution): the JVM's warnings go to stdout, the container's log.
        format!("-Djava.io.tmpdir={}", tmp_dir(args).display()),
    ];
    lines.extend(settings.jvm_options.iter().cloned());
    Ok(lines.join("\n") + "\n")
}

/// The heap: STATEWARD_HEAP_SIZE if given, else half the container's memory limit (the
/// rest is Lucene's page cache and off-heap buffers) capped at 31 GiB (compressed
/// pointers); 1 GiB when neither is known.
pub fn heap_size(args: &Args) -> anyhow::Result<String> {
    if let Some(h) = &args.heap_size {
        let h = h.trim().to_lowercase();
        let ok = h.len() > 1
            && h[..h.len() - 1].chars().all(|c| c.is_ascii_digit())
            && h.ends_with(['k', 'm', 'g']);
        if !ok {
            bail!("heap size {h:?} must look like 512m or 2g");
        }
        return Ok(h);
    }
    let mib = match args.memory_limit_bytes {
        Some(limit) if limit > 0 => (limit / 2 / (1 << 20)).clamp(MIN_HEAP_MIB, MAX_HEAP_MIB),
        _ => DEFAULT_HEAP_MIB,
    };
    Ok(format!("{mib}m"))
}

/// Console only: the container runtime keeps stdout, so `kubectl logs` shows everything.
const LOG4J2: &str = "# Rendered by the Stateward pilot: console only.
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
";

#[cfg(test)]
mod tests {
    use super::*;
    use stateward_core::node_config::RESERVED_ELASTICSEARCH_YML_KEYS;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec![
            "--node-name=es-0",
            "--cluster=c1",
            "--pool=hot",
            "--conf-dir=/tmp/conf",
            "--data-dir=/usr/share/elasticsearch/data",
        ];
        // Defaults a test may replace (clap refuses a flag given twice).
        for (flag, default) in [
            ("--roles", "--roles=master, data,ingest"),
            ("--pod-ip", "--pod-ip=10.0.0.7"),
            (
                "--seed-hosts",
                "--seed-hosts=c1-discovery.ns.svc, 10.0.0.8:9300",
            ),
        ] {
            if !extra.iter().any(|a| a.starts_with(flag)) {
                argv.push(default);
            }
        }
        argv.extend_from_slice(extra);
        super::super::args::parse(&argv)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stateward-es-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn yaml(text: &str) -> anyhow::Result<serde_yaml::Value> {
        Ok(serde_yaml::from_str(text)?)
    }

    #[test]
    fn heap_from_limit_or_explicit() -> anyhow::Result<()> {
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=4294967296"]))?,
            "2048m"
        );
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=134217728"]))?,
            "128m"
        );
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=137438953472"]))?,
            "31744m"
        );
        assert_eq!(heap_size(&args(&["--heap-size=512M"]))?, "512m");
        assert_eq!(
            heap_size(&args(&[
                "--heap-size=2g",
                "--memory-limit-bytes=1073741824"
            ]))?,
            "2g"
        );
        assert!(heap_size(&args(&["--heap-size=lots"])).is_err());
        assert_eq!(heap_size(&args(&[]))?, "1024m");
        let jvm = jvm_options(
            &args(&["--heap-size=512m"]),
            &ElasticsearchNodeConfig {
                jvm_options: vec!["-XX:+AlwaysPreTouch".into()],
                ..Default::default()
            },
        )?;
        assert!(jvm.contains("-Xms512m\n-Xmx512m\n"), "{jvm}");
        assert!(jvm.contains("-Djava.io.tmpdir=/usr/share/elasticsearch/data/tmp"));
        assert!(jvm.ends_with("-XX:+AlwaysPreTouch\n"), "{jvm}");
        Ok(())
    }

    #[test]
    fn owned_keys_and_defaults() -> anyhow::Result<()> {
        let s = ElasticsearchNodeConfig::default();
        let y = yaml(&elasticsearch_yml(&args(&[]), &s, &[])?)?;
        assert_eq!(y["cluster.name"], Value::from("c1"));
        assert_eq!(y["node.name"], Value::from("es-0"));
        assert_eq!(y["node.attr.pool"], Value::from("hot"));
        assert_eq!(y["node.roles"], yaml("[master, data, ingest]")?);
        assert_eq!(y["network.host"], yaml("['10.0.0.7', '127.0.0.1']")?);
        assert_eq!(y["network.publish_host"], Value::from("10.0.0.7"));
        assert_eq!(y["http.port"], Value::from(9200));
        assert_eq!(y["transport.port"], Value::from(9300));
        assert_eq!(
            y["discovery.seed_hosts"],
            yaml("[c1-discovery.ns.svc, '10.0.0.8:9300']")?
        );
        assert_eq!(y["node.store.allow_mmap"], Value::from(false));
        assert!(y.get("cluster.initial_master_nodes").is_none());
        // Coordinating-only: an empty role list, not Elasticsearch's default of every role.
        let y = yaml(&elasticsearch_yml(&args(&["--roles="]), &s, &[])?)?;
        assert_eq!(y["node.roles"], yaml("[]")?);
        // A loopback pod IP (local tests) is bound alone.
        let y = yaml(&elasticsearch_yml(&args(&["--pod-ip=127.0.0.2"]), &s, &[])?)?;
        assert_eq!(y["network.host"], yaml("['127.0.0.2']")?);
        assert!(elasticsearch_yml(&args(&["--seed-hosts= ,"]), &s, &[]).is_err());
        Ok(())
    }

    #[test]
    fn reserved_keys_are_never_taken_and_user_keys_override_defaults() -> anyhow::Result<()> {
        let mut s = ElasticsearchNodeConfig::default();
        for k in RESERVED_ELASTICSEARCH_YML_KEYS {
            s.elasticsearch_yml
                .insert(k.to_string(), serde_json::json!("from-the-settings"));
        }
        // Nesting a reserved key, and a nested spelling of a default.
        s.elasticsearch_yml.insert(
            "discovery".into(),
            serde_json::json!({"seed_hosts": ["evil"]}),
        );
        s.elasticsearch_yml.insert(
            "node".into(),
            serde_json::json!({"store": {"allow_mmap": true}}),
        );
        s.elasticsearch_yml.insert(
            "indices.memory.index_buffer_size".into(),
            serde_json::json!("20%"),
        );
        let text = elasticsearch_yml(&args(&[]), &s, &[])?;
        assert!(!text.contains("from-the-settings"), "{text}");
        assert!(!text.contains("evil"), "{text}");
        let y = yaml(&text)?;
        assert_eq!(y["indices.memory.index_buffer_size"], Value::from("20%"));
        assert_eq!(y["node.store.allow_mmap"], Value::from(true));
        assert_eq!(y["cluster.name"], Value::from("c1"));
        assert!(
            y.get("node").is_none() && y.get("discovery").is_none(),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn initial_master_nodes_only_on_a_fresh_data_dir() -> anyhow::Result<()> {
        let dir = temp_dir("bootstrap");
        std::fs::create_dir_all(&dir)?;
        let s = ElasticsearchNodeConfig {
            initial_master_nodes: vec!["es-0".into(), "es-1".into(), "es-2".into()],
            ..Default::default()
        };
        assert_eq!(bootstrap_masters(&s, &dir)?, s.initial_master_nodes);
        let y = yaml(&elasticsearch_yml(
            &args(&[]),
            &s,
            &bootstrap_masters(&s, &dir)?,
        )?)?;
        assert_eq!(
            y["cluster.initial_master_nodes"],
            yaml("[es-0, es-1, es-2]")?
        );
        // The pilot's own state and an empty _state do not count as cluster state.
        std::fs::create_dir_all(dir.join("stateward/actions"))?;
        std::fs::create_dir_all(dir.join("_state"))?;
        assert_eq!(bootstrap_masters(&s, &dir)?.len(), 3);
        // Once Elasticsearch wrote its state (9.5.3 writes these at its first start), never
        // again.
        std::fs::write(dir.join("_state/_5.cfs"), b"x")?;
        assert!(bootstrap_masters(&s, &dir)?.is_empty());
        std::fs::remove_file(dir.join("_state/_5.cfs"))?;
        std::fs::write(
            dir.join("nodes"),
            "written by Elasticsearch 9.5.3 to prevent a downgrade to a version prior to v8.0.0",
        )?;
        assert!(bootstrap_masters(&s, &dir)?.is_empty());
        // Nothing configured: nothing written, fresh or not.
        let empty = ElasticsearchNodeConfig::default();
        assert!(bootstrap_masters(&empty, &temp_dir("bootstrap-none"))?.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn a_config_file_from_a_newer_operator_loads() -> anyhow::Result<()> {
        let dir = temp_dir("config");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(ELASTICSEARCH_CONFIG_FILE),
            r#"{"elasticsearchYml": {"a.b": 1}, "initialMasterNodes": ["es-0"], "future": 1}"#,
        )?;
        let loaded = load_settings(Some(&dir))?;
        assert_eq!(loaded.initial_master_nodes, ["es-0"]);
        assert_eq!(
            load_settings(Some(&dir.join(ELASTICSEARCH_CONFIG_FILE)))?,
            loaded
        );
        assert_eq!(load_settings(None)?, ElasticsearchNodeConfig::default());
        assert!(load_settings(Some(&dir.join("missing.json"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
