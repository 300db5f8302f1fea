//! Renders Cassandra's complete configuration into the shared config volume before
//! Cassandra starts: cassandra.yaml, cassandra-rackdc.properties, jvm-server.options,
//! jvm17-server.options, logback.xml, and the Jolokia agent jar.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_yaml::{Mapping, Value};
use stateward_core::node_config::{
    CASSANDRA_CONFIG_FILE, CassandraNodeConfig, is_reserved_cassandra_yaml_key,
};
use tracing::warn;

use super::Args;
use crate::fsutil::write_atomic;

pub const JOLOKIA_JAR: &str = "jolokia-agent.jar";
const JVM17_OPTIONS: &str = include_str!("jvm17-server.options");

/// The operator's node configuration (format and compatibility rules in
/// `stateward_core::node_config`): fields this pilot does not know are ignored, so a newer
/// operator never stops an older pilot. `path` may be the mounted ConfigMap's directory.
pub fn load_settings(path: Option<&Path>) -> anyhow::Result<CassandraNodeConfig> {
    let Some(path) = path else {
        return Ok(CassandraNodeConfig::default());
    };
    let path: PathBuf = if path.is_dir() {
        path.join(CASSANDRA_CONFIG_FILE)
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
    std::fs::create_dir_all(conf).with_context(|| format!("creating {}", conf.display()))?;

    let yaml = cassandra_yaml(args, &settings)?;
    write_atomic(&conf.join("cassandra.yaml"), yaml.as_bytes())?;
    let rackdc = format!(
        "# Rendered by the Stateward pilot; read by GossipingPropertyFileSnitch.\ndc={}\nrack={}\nprefer_local=true\n",
        args.datacenter, args.rack
    );
    write_atomic(&conf.join("cassandra-rackdc.properties"), rackdc.as_bytes())?;
    write_atomic(
        &conf.join("jvm-server.options"),
        jvm_options(args, &settings)?.as_bytes(),
    )?;
    write_atomic(&conf.join("jvm17-server.options"), JVM17_OPTIONS.as_bytes())?;
    write_atomic(&conf.join("logback.xml"), LOGBACK.as_bytes())?;
    let jar = std::fs::read(&args.jolokia_agent)
        .with_context(|| format!("reading the Jolokia agent {}", args.jolokia_agent.display()))?;
    write_atomic(&conf.join(JOLOKIA_JAR), &jar)?;
    Ok(())
}

fn cassandra_yaml(args: &Args, settings: &CassandraNodeConfig) -> anyhow::Result<String> {
    let data = &args.data_dir;
    let dir = |sub: &str| Value::String(data.join(sub).to_string_lossy().into_owned());
    let mut m = Mapping::new();
    let mut set = |k: &str, v: Value| {
        m.insert(Value::String(k.into()), v);
    };
    // Defaults the settings may override.
    set(
        "partitioner",
        "org.apache.cassandra.dht.Murmur3Partitioner".into(),
    );
    set("allocate_tokens_for_local_replication_factor", 3.into());
    set("commitlog_sync", "periodic".into());
    set("commitlog_sync_period", "10000ms".into());
    set("start_native_transport", true.into());
    set("disk_failure_policy", "stop".into());
    set("commit_failure_policy", "stop".into());
    for (k, v) in &settings.cassandra_yaml {
        // Reserved keys define the node's identity and how peers reach it: the API refuses
        // them and the operator drops them, so one here is ignored, not fatal.
        if is_reserved_cassandra_yaml_key(k) {
            warn!(key = %k, "cassandraYaml sets a key Stateward owns; ignored");
            continue;
        }
        let v: Value = serde_yaml::to_value(v).with_context(|| format!("cassandraYaml.{k}"))?;
        set(k.as_str(), v);
    }
    // Owned keys last: they always win.
    let ip = args.pod_ip.to_string();
    set("cluster_name", args.cluster.clone().into());
    set("num_tokens", settings.num_tokens.unwrap_or(16).into());
    set("listen_address", ip.clone().into());
    set("rpc_address", ip.into());
    set("storage_port", args.storage_port.into());
    set("native_transport_port", args.cql_port.into());
    set("endpoint_snitch", "GossipingPropertyFileSnitch".into());
    let (authenticator, authorizer, role_manager) = if settings.authentication {
        (
            "PasswordAuthenticator",
            "CassandraAuthorizer",
            "CassandraRoleManager",
        )
    } else {
        (
            "AllowAllAuthenticator",
            "AllowAllAuthorizer",
            "CassandraRoleManager",
        )
    };
    set("authenticator", authenticator.into());
    set("authorizer", authorizer.into());
    set("role_manager", role_manager.into());
    let seeds = args
        .seeds
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    if seeds.is_empty() {
        bail!("no seeds given (STATEWARD_SEEDS)");
    }
    let seed_provider: Value = serde_yaml::from_str(&format!(
        "- class_name: org.apache.cassandra.locator.SimpleSeedProvider\n  parameters:\n    - seeds: {seeds:?}\n"
    ))
    .context("building seed_provider")?;
    set("seed_provider", seed_provider);
    set("data_file_directories", Value::Sequence(vec![dir("data")]));
    set("commitlog_directory", dir("commitlog"));
    set("saved_caches_directory", dir("saved_caches"));
    set("hints_directory", dir("hints"));
    set("cdc_raw_directory", dir("cdc_raw"));
    let body = serde_yaml::to_string(&m).context("serialising cassandra.yaml")?;
    Ok(format!(
        "# Rendered by the Stateward pilot from the operator's settings; do not edit.\n{body}"
    ))
}

fn jvm_options(args: &Args, settings: &CassandraNodeConfig) -> anyhow::Result<String> {
    let heap = heap_size(args)?;
    let agent = args.conf_dir.join(JOLOKIA_JAR);
    // executor=fixed: the agent's default single thread would block every status read
    // while a long operation (decommission) runs.
    let jolokia = format!(
        "-javaagent:{}=host=127.0.0.1,port={},executor=fixed,threadNr=4,discoveryEnabled=false",
        agent.display(),
        args.jolokia_port
    );
    let mut lines = vec![
        "# Rendered by the Stateward pilot; read by bin/cassandra before jvm17-server.options."
            .to_string(),
        format!("-Xms{heap}"),
        format!("-Xmx{heap}"),
        "-Xss256k".into(),
        "-XX:+HeapDumpOnOutOfMemoryError".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
        "-XX:+PerfDisableSharedMem".into(),
        "-XX:+UseTLAB".into(),
        "-XX:+ResizeTLAB".into(),
        "-XX:+UseThreadPriorities".into(),
        "-Djava.net.preferIPv4Stack=true".into(),
        // The pilot reaches JMX through Jolokia in-process; no RMI port is opened.
        jolokia,
    ];
    lines.extend(settings.jvm_options.iter().cloned());
    Ok(lines.join("\n") + "\n")
}

/// The heap: STATEWARD_HEAP_SIZE if given, else half the container's memory limit (the
/// rest is for off-heap structures, thread stacks and the page cache), at most 8 GiB;
/// 1 GiB when neither is known.
pub fn heap_size(args: &Args) -> anyhow::Result<String> {
    if let Some(h) = &args.heap_size {
        let ok = h.len() > 1
            && h[..h.len() - 1].chars().all(|c| c.is_ascii_digit())
            && h.ends_with(['M', 'G', 'm', 'g']);
        if !ok {
            bail!("heap size {h:?} must look like 512M or 2G");
        }
        return Ok(h.to_uppercase());
    }
    let mib = match args.memory_limit_bytes {
        Some(limit) if limit > 0 => (limit / 2 / (1 << 20)).clamp(256, 8192),
        _ => 1024,
    };
    Ok(format!("{mib}M"))
}

const LOGBACK: &str = r#"<!-- Rendered by the Stateward pilot: console only, the container runtime keeps stdout. -->
<configuration scan="false">
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="STDOUT" />
  </root>
</configuration>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use stateward_core::node_config::RESERVED_CASSANDRA_YAML_KEYS;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec![
            "--node-name=n0",
            "--pod-ip=10.0.0.7",
            "--cluster=c1",
            "--seeds=c1-seeds.ns.svc, 10.0.0.8",
            "--conf-dir=/tmp/conf",
            "--data-dir=/var/lib/cassandra",
        ];
        argv.extend_from_slice(extra);
        super::super::args::parse(&argv)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stateward-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn heap_from_limit_or_explicit() -> anyhow::Result<()> {
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=2147483648"]))?,
            "1024M"
        );
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=268435456"]))?,
            "256M"
        );
        assert_eq!(
            heap_size(&args(&["--memory-limit-bytes=68719476736"]))?,
            "8192M"
        );
        assert_eq!(heap_size(&args(&["--heap-size=512m"]))?, "512M");
        assert!(heap_size(&args(&["--heap-size=lots"])).is_err());
        assert_eq!(heap_size(&args(&[]))?, "1024M");
        Ok(())
    }

    #[test]
    fn yaml_merges_settings() -> anyhow::Result<()> {
        let s: CassandraNodeConfig = serde_json::from_str(
            r#"{"numTokens": 8, "cassandraYaml": {"concurrent_compactors": 2, "commitlog_sync": "batch"}}"#,
        )?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&cassandra_yaml(&args(&[]), &s)?)?;
        assert_eq!(yaml["num_tokens"], serde_yaml::Value::from(8));
        assert_eq!(yaml["concurrent_compactors"], serde_yaml::Value::from(2));
        assert_eq!(yaml["commitlog_sync"], serde_yaml::Value::from("batch"));
        assert_eq!(yaml["listen_address"], serde_yaml::Value::from("10.0.0.7"));
        assert_eq!(
            yaml["seed_provider"][0]["parameters"][0]["seeds"],
            serde_yaml::Value::from("c1-seeds.ns.svc,10.0.0.8")
        );
        Ok(())
    }

    #[test]
    fn reserved_keys_are_never_taken() -> anyhow::Result<()> {
        assert!(RESERVED_CASSANDRA_YAML_KEYS.contains(&"initial_token"));
        let mut s = CassandraNodeConfig::default();
        for k in RESERVED_CASSANDRA_YAML_KEYS {
            s.cassandra_yaml
                .insert(k.to_string(), serde_json::json!("from-the-settings"));
        }
        s.cassandra_yaml
            .insert("concurrent_reads".into(), serde_json::json!(64));
        let text = cassandra_yaml(&args(&[]), &s)?;
        assert!(!text.contains("from-the-settings"), "{text}");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)?;
        assert_eq!(yaml["concurrent_reads"], serde_yaml::Value::from(64));
        assert_eq!(yaml["listen_address"], serde_yaml::Value::from("10.0.0.7"));
        assert_eq!(yaml["num_tokens"], serde_yaml::Value::from(16));
        assert!(yaml.get("initial_token").is_none(), "{text}");
        Ok(())
    }

    #[test]
    fn a_config_file_from_a_newer_operator_loads() -> anyhow::Result<()> {
        let dir = temp_dir("render-config");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(CASSANDRA_CONFIG_FILE);
        std::fs::write(
            &file,
            r#"{"numTokens": 4, "cassandraYaml": {"concurrent_reads": 64}, "someFutureField": {"x": 1}}"#,
        )?;
        let loaded = load_settings(Some(&file))?;
        assert_eq!(loaded.num_tokens, Some(4));
        assert_eq!(loaded.cassandra_yaml.len(), 1);
        // The mounted ConfigMap's directory works as well.
        assert_eq!(load_settings(Some(&dir))?, loaded);
        assert_eq!(load_settings(None)?, CassandraNodeConfig::default());
        assert!(load_settings(Some(&dir.join("missing.json"))).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
