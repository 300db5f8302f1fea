//! A runnable Apache Cassandra assembled from Maven Central.
//!
//! The official binary tarball is not on Maven Central for 5.0, so we build the same
//! layout ourselves: `lib/` from `cassandra-all` and its runtime dependencies (via the
//! pom in `e2e/upstream/cassandra/` and `mvn dependency:copy-dependencies`), our own
//! `bin/cassandra` launcher honouring the official contract, default `conf/`, and the
//! Jolokia JVM agent at `agents/jolokia-agent.jar` (kept out of `lib/` so it is not on
//! Cassandra's classpath). The result is cached under
//! `~/.cache/stateward/cassandra-<version>/` (never in the repository); integration
//! tests run it as local processes and the local image builder copies it to
//! `/opt/cassandra`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The Cassandra version the tests and the local image use.
pub const CASSANDRA_VERSION: &str = "5.0.9";

/// The version upgrade tests start from (then upgrade to [`CASSANDRA_VERSION`]); the local
/// images include it.
pub const UPGRADE_FROM_VERSION: &str = "5.0.8";

/// The Jolokia agent inside a distribution built by [`ensure_dist`].
pub const JOLOKIA_AGENT_RELATIVE_PATH: &str = "agents/jolokia-agent.jar";

const UPSTREAM_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/upstream/cassandra");
/// Bumped whenever the layout or the launcher changes, so caches are rebuilt.
const LAYOUT_REVISION: &str = "2";

const LAUNCHER: &str = include_str!("../upstream/cassandra/cassandra");
const DEFAULT_CONF: &[(&str, &str)] = &[
    (
        "cassandra.yaml",
        include_str!("../upstream/cassandra/conf/cassandra.yaml"),
    ),
    (
        "cassandra-rackdc.properties",
        include_str!("../upstream/cassandra/conf/cassandra-rackdc.properties"),
    ),
    (
        "jvm-server.options",
        include_str!("../upstream/cassandra/conf/jvm-server.options"),
    ),
    (
        "jvm17-server.options",
        include_str!("../upstream/cassandra/conf/jvm17-server.options"),
    ),
    (
        "logback.xml",
        include_str!("../upstream/cassandra/conf/logback.xml"),
    ),
];

/// The cache directory for `version` (it may not exist yet).
pub fn dist_dir(version: &str) -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home =
                std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?;
            PathBuf::from(home).join(".cache")
        }
    };
    Ok(cache.join("stateward").join(format!("cassandra-{version}")))
}

/// Makes sure a Cassandra `version` distribution exists in the cache and returns its
/// directory (the `CASSANDRA_HOME`). Idempotent and safe to call from concurrent tests
/// and processes: builders serialise on a lock file, and a finished build is marked
/// complete only after every file is in place.
pub fn ensure_dist(version: &str) -> anyhow::Result<PathBuf> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        bail!("invalid Cassandra version {version:?}");
    }
    let dir = dist_dir(version)?;
    let parent = dir.parent().context("cache directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let marker = dir.join(".stateward-complete");
    let expected = format!("{version} layout {LAYOUT_REVISION}\n");
    if fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(dir);
    }

    let lock_path = parent.join(format!("cassandra-{version}.lock"));
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another process may have finished the build while we waited for the lock.
    if fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(dir);
    }

    let staging = parent.join(format!("cassandra-{version}.staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    build(version, &staging)
        .with_context(|| format!("assembling Cassandra {version} in {}", staging.display()))?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    fs::rename(&staging, &dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    fs::write(&marker, expected).with_context(|| format!("writing {}", marker.display()))?;
    Ok(dir)
}

fn build(version: &str, out: &Path) -> anyhow::Result<()> {
    let lib = out.join("lib");
    let agents = out.join("agents");
    for d in [&lib, &agents, &out.join("bin"), &out.join("conf")] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pom = Path::new(UPSTREAM_DIR).join("pom.xml");
    // Cassandra and its runtime dependencies.
    mvn(
        &pom,
        version,
        &[
            "dependency:copy-dependencies".into(),
            "-DincludeScope=runtime".into(),
            format!("-DoutputDirectory={}", lib.display()),
        ],
    )?;
    // The Jolokia agent is `provided` in the pom so it lands only here.
    mvn(
        &pom,
        version,
        &[
            "dependency:copy-dependencies".into(),
            "-DincludeScope=provided".into(),
            "-DincludeArtifactIds=jolokia-agent-jvm".into(),
            "-DstripVersion=true".into(),
            format!("-DoutputDirectory={}", agents.display()),
        ],
    )?;
    let agent = fs::read_dir(&agents)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jar"))
        .context("mvn copied no Jolokia agent jar")?;
    fs::rename(&agent, out.join(JOLOKIA_AGENT_RELATIVE_PATH))
        .context("renaming the Jolokia agent jar")?;
    let main_jar = lib.join(format!("cassandra-all-{version}.jar"));
    if !main_jar.is_file() {
        bail!("mvn did not produce {}", main_jar.display());
    }

    let launcher = out.join("bin/cassandra");
    fs::write(&launcher, LAUNCHER).with_context(|| format!("writing {}", launcher.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))?;
    for (name, text) in DEFAULT_CONF {
        let path = out.join("conf").join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    fs::create_dir_all(out.join("logs"))?;
    fs::create_dir_all(out.join("data"))?;
    Ok(())
}

fn mvn(pom: &Path, version: &str, args: &[String]) -> anyhow::Result<()> {
    let output = Command::new("mvn")
        .arg("-B")
        .arg("-q")
        .arg("-f")
        .arg(pom)
        .arg(format!("-Dcassandra.version={version}"))
        .args(args)
        .output()
        .context("running mvn (is Maven installed?)")?;
    if !output.status.success() {
        bail!(
            "mvn {} failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
