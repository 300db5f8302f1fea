//! A runnable Elasticsearch assembled from Maven Central.
//!
//! Elastic publishes the server, its libraries and some modules to Maven Central, but not the
//! tarball, its launcher (`server-cli`), the entitlement agent or the ansi-console tool (facts:
//! `/work/shared/elasticsearch-from-maven.md`, pins: `e2e/upstream/elasticsearch/README.md`).
//! This builds the tarball's layout from what is published plus small stand-ins compiled here:
//!
//! - `lib/`: the server and its runtime dependencies (`mvn dependency:copy-dependencies` over
//!   `e2e/upstream/elasticsearch/pom.xml`); `lib/entitlement-bridge/` (patched into
//!   `java.base`), `lib/entitlement-agent/` and `lib/tools/ansi-console/` (our stand-ins),
//!   `lib/tools/stateward-launcher/` (the one-shot step of `bin/elasticsearch`) and
//!   `lib/platform/linux-x64/libzstd.so` (Debian's, from this machine);
//! - `modules/transport-netty4/`: the module jar, Netty, and the descriptor files extracted;
//! - `jdk/`: Temurin 25 (jlink cannot make a smaller runtime here: Temurin ships no jmods, and
//!   a runtime linked from the JDK itself may not contain `jdk.jlink`, which the server's
//!   entitlement module requires), without sources, `ct.sym`, headers and man pages;
//! - `bin/elasticsearch` (see the script for its contract), a default `config/`, empty
//!   `plugins/`, `data/` and `logs/`.
//!
//! The result is cached under `~/.cache/stateward/elasticsearch-<version>/`; integration tests
//! run it as local processes (as a non-root user: Elasticsearch refuses root) and the local
//! image builder copies it to `/usr/share/elasticsearch`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The Elasticsearch version the tests and the local image use.
pub const ELASTICSEARCH_VERSION: &str = "9.5.3";

/// The JDK copied into every distribution as `jdk/` (the machine image has it).
pub const JDK_SOURCE: &str = "/usr/lib/jvm/temurin-25-jdk-amd64";

/// Debian's libzstd (package libzstd1, which dpkg depends on, so every Debian has it); the same
/// bookworm library serves the host-run distribution and the bookworm-based image.
const LIBZSTD: &str = "/usr/lib/x86_64-linux-gnu/libzstd.so.1";

const UPSTREAM_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/upstream/elasticsearch");
/// Bumped whenever the layout, the launcher or the stand-ins change, so caches are rebuilt.
const LAYOUT_REVISION: &str = "1";

const LAUNCHER: &str = include_str!("../upstream/elasticsearch/elasticsearch");
const DEFAULT_CONFIG: &[(&str, &str)] = &[
    (
        "elasticsearch.yml",
        include_str!("../upstream/elasticsearch/config/elasticsearch.yml"),
    ),
    (
        "jvm.options",
        include_str!("../upstream/elasticsearch/config/jvm.options"),
    ),
    (
        "log4j2.properties",
        include_str!("../upstream/elasticsearch/config/log4j2.properties"),
    ),
];
/// The Java stand-ins: (source directory under java/, jar to build, needs the server's jars).
const JAVA_PARTS: &[(&str, &str, bool)] = &[
    (
        "agent",
        "lib/entitlement-agent/stateward-entitlement-agent.jar",
        false,
    ),
    (
        "ansi-console",
        "lib/tools/ansi-console/stateward-ansi-console.jar",
        false,
    ),
    (
        "launcher",
        "lib/tools/stateward-launcher/stateward-launcher.jar",
        true,
    ),
];
// Embedded so that a change to a stand-in changes the binary, and the marker below with it.
const JAVA_SOURCES: &[&str] = &[
    include_str!(
        "../upstream/elasticsearch/java/agent/io/stateward/elasticsearch/agent/EntitlementAgent.java"
    ),
    include_str!("../upstream/elasticsearch/java/agent/MANIFEST.MF"),
    include_str!(
        "../upstream/elasticsearch/java/ansi-console/org/elasticsearch/io/ansi/AnsiConsoleLoader.java"
    ),
    include_str!(
        "../upstream/elasticsearch/java/launcher/io/stateward/elasticsearch/launcher/Prepare.java"
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
    Ok(cache
        .join("stateward")
        .join(format!("elasticsearch-{version}")))
}

/// Makes sure an Elasticsearch `version` distribution exists in the cache and returns its
/// directory (the `ES_HOME`). Idempotent and safe to call from concurrent tests and
/// processes: builders serialise on a lock file, and a finished build is marked complete only
/// after every file is in place. The first build takes about a minute (Maven downloads, javac,
/// copying the JDK); later calls read one file.
pub fn ensure_dist(version: &str) -> anyhow::Result<PathBuf> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
    {
        bail!("invalid Elasticsearch version {version:?}");
    }
    let dir = dist_dir(version)?;
    let parent = dir.parent().context("cache directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let marker = dir.join(".stateward-complete");
    let expected = marker_text(version)?;
    if fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(dir);
    }

    let lock_path = parent.join(format!("elasticsearch-{version}.lock"));
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another process may have finished the build while we waited for the lock.
    if fs::read_to_string(&marker).is_ok_and(|m| m == expected) {
        return Ok(dir);
    }

    let staging = parent.join(format!("elasticsearch-{version}.staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    eprintln!("assembling Elasticsearch {version} from Maven Central (once) ...");
    build(version, &staging).with_context(|| {
        format!(
            "assembling Elasticsearch {version} in {}",
            staging.display()
        )
    })?;
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    fs::rename(&staging, &dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    fs::write(&marker, expected).with_context(|| format!("writing {}", marker.display()))?;
    Ok(dir)
}

/// [`ensure_dist`] for nodes run as another, unprivileged user (Elasticsearch refuses root).
/// The cache usually sits in root's home, which others may not enter; then this returns a
/// mirror in the temporary directory (hard links, or a copy across file systems), refreshed
/// when the distribution changes.
pub fn ensure_dist_for_all_users(version: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = ensure_dist(version)?;
    let reachable = dir
        .ancestors()
        .skip(1)
        .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if reachable {
        return Ok(dir);
    }
    let marker = fs::read_to_string(dir.join(".stateward-complete"))
        .context("reading the distribution's completion marker")?;
    let mirror = std::env::temp_dir().join(format!("stateward-elasticsearch-{version}"));
    let mirror_marker = mirror.join(".stateward-complete");
    let lock_path = std::env::temp_dir().join(format!("stateward-elasticsearch-{version}.lock"));
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if fs::read_to_string(&mirror_marker).is_ok_and(|m| m == marker) {
        return Ok(mirror);
    }
    if mirror.exists() {
        fs::remove_dir_all(&mirror).with_context(|| format!("removing {}", mirror.display()))?;
    }
    if run(Command::new("cp").arg("-al").arg(&dir).arg(&mirror)).is_err() {
        if mirror.exists() {
            fs::remove_dir_all(&mirror)
                .with_context(|| format!("removing {}", mirror.display()))?;
        }
        run(Command::new("cp").arg("-a").arg(&dir).arg(&mirror))
            .with_context(|| format!("copying {} to {}", dir.display(), mirror.display()))?;
    }
    Ok(mirror)
}

/// What a complete build of `version` records: the layout revision, a hash of the launcher
/// and stand-ins, and the JDK's version (a JDK update on the machine rebuilds the copy).
fn marker_text(version: &str) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [LAUNCHER]
        .iter()
        .chain(JAVA_SOURCES)
        .chain(DEFAULT_CONFIG.iter().map(|(_, text)| text))
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let release = Path::new(JDK_SOURCE).join("release");
    let release = fs::read_to_string(&release).with_context(|| {
        format!(
            "reading {} (Temurin 25 is expected at {JDK_SOURCE})",
            release.display()
        )
    })?;
    let jdk = release
        .lines()
        .find_map(|l| l.strip_prefix("JAVA_RUNTIME_VERSION="))
        .unwrap_or("unknown")
        .trim_matches('"');
    Ok(format!(
        "{version} layout {LAYOUT_REVISION} sources {} jdk {jdk}\n",
        hex::encode(h.finalize())
    ))
}

fn build(version: &str, out: &Path) -> anyhow::Result<()> {
    let lib = out.join("lib");
    let module = out.join("modules/transport-netty4");
    let bridge = lib.join("entitlement-bridge");
    let platform = lib.join("platform/linux-x64");
    for d in [
        &lib,
        &module,
        &bridge,
        &platform,
        &out.join("bin"),
        &out.join("config"),
        &out.join("plugins"),
        &out.join("data"),
        &out.join("logs"),
    ] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pom = Path::new(UPSTREAM_DIR).join("pom.xml");
    // The server and its runtime dependencies.
    mvn(
        &pom,
        version,
        &[
            "dependency:copy-dependencies".into(),
            "-DincludeScope=runtime".into(),
            format!("-DoutputDirectory={}", lib.display()),
        ],
    )?;
    // The transport module is `provided` in the pom, so it and Netty land only in its folder.
    mvn(
        &pom,
        version,
        &[
            "dependency:copy-dependencies".into(),
            "-DincludeScope=provided".into(),
            format!("-DoutputDirectory={}", module.display()),
        ],
    )?;
    // The bridge is patched into java.base, so it must not be on the module path (lib/).
    mvn(
        &pom,
        version,
        &[
            "dependency:copy".into(),
            format!("-Dartifact=org.elasticsearch:elasticsearch-entitlement-bridge:{version}"),
            format!("-DoutputDirectory={}", bridge.display()),
        ],
    )?;
    for jar in [
        lib.join(format!("elasticsearch-{version}.jar")),
        module.join(format!("transport-netty4-{version}.jar")),
        bridge.join(format!("elasticsearch-entitlement-bridge-{version}.jar")),
    ] {
        if !jar.is_file() {
            bail!("mvn did not produce {}", jar.display());
        }
    }

    copy_jdk(&out.join("jdk"))?;
    // The machine's JDK compiles: the copy lacks ct.sym, which `javac --release` reads.
    let jdk_bin = Path::new(JDK_SOURCE).join("bin");
    extract_descriptor(
        &jdk_bin.join("jar"),
        &module.join(format!("transport-netty4-{version}.jar")),
        "transport-netty4",
        &module,
    )?;
    for (src, jar, needs_server) in JAVA_PARTS {
        compile(&jdk_bin, &lib, src, &out.join(jar), *needs_server)
            .with_context(|| format!("building {jar}"))?;
    }

    let zstd = Path::new(LIBZSTD);
    if !zstd.exists() {
        bail!("{LIBZSTD} is missing (Debian package libzstd1)");
    }
    // Copied (not linked) so the image gets the library itself.
    fs::copy(zstd, platform.join("libzstd.so")).with_context(|| format!("copying {LIBZSTD}"))?;

    let launcher = out.join("bin/elasticsearch");
    fs::write(&launcher, LAUNCHER).with_context(|| format!("writing {}", launcher.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))?;
    for (name, text) in DEFAULT_CONFIG {
        let path = out.join("config").join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // Tests run the distribution as an unprivileged user: everything readable (and
    // directories and programs executable) by others, whatever the umask was.
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(out))
}

/// The JDK minus what only development needs (sources, javac's `ct.sym`, headers, man pages).
fn copy_jdk(dest: &Path) -> anyhow::Result<()> {
    let src = Path::new(JDK_SOURCE);
    if !src.join("bin/java").is_file() {
        bail!("no JDK at {JDK_SOURCE} (Temurin 25 is expected there)");
    }
    run(Command::new("cp").arg("-a").arg(src).arg(dest)).context("copying the JDK")?;
    for unneeded in [
        "lib/src.zip",
        "lib/ct.sym",
        "include",
        "man",
        "jmods",
        "demo",
    ] {
        let path = dest.join(unneeded);
        if path.is_dir() {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        } else if path.exists() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// A module's `plugin-descriptor.properties` and `entitlement-policy.yaml`, which it carries in
/// its jar under `META-INF/es-plugins/<name>/`, extracted into its folder as a distribution has
/// them.
fn extract_descriptor(jar_tool: &Path, jar: &Path, name: &str, dest: &Path) -> anyhow::Result<()> {
    let tmp = dest.join(".extract");
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let inner = format!("META-INF/es-plugins/{name}");
    run(Command::new(jar_tool)
        .current_dir(&tmp)
        .arg("--extract")
        .arg("--file")
        .arg(jar)
        .arg(&inner))
    .with_context(|| format!("extracting {inner} from {}", jar.display()))?;
    for file in ["plugin-descriptor.properties", "entitlement-policy.yaml"] {
        let from = tmp.join(&inner).join(file);
        if !from.is_file() {
            bail!("{} has no {inner}/{file}", jar.display());
        }
        fs::rename(&from, dest.join(file)).with_context(|| format!("moving {file}"))?;
    }
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))
}

/// Compiles `java/<src>` (against the server's jars when `needs_server`) into `jar`, with
/// `java/<src>/MANIFEST.MF` when there is one.
fn compile(
    jdk_bin: &Path,
    lib: &Path,
    src: &str,
    jar: &Path,
    needs_server: bool,
) -> anyhow::Result<()> {
    let src_dir = Path::new(UPSTREAM_DIR).join("java").join(src);
    let classes = jar.with_extension("classes");
    fs::create_dir_all(&classes).with_context(|| format!("creating {}", classes.display()))?;
    let sources = run_output(
        Command::new("find")
            .arg(&src_dir)
            .args(["-name", "*.java", "-type", "f"]),
    )?;
    let mut javac = Command::new(jdk_bin.join("javac"));
    // The server supports Java 21+: so do the stand-ins, whatever JDK runs them.
    javac
        .args(["--release", "21", "-nowarn", "-d"])
        .arg(&classes);
    if needs_server {
        javac.arg("-cp").arg(format!("{}/*", lib.display()));
    }
    javac.args(sources.lines().filter(|l| !l.is_empty()));
    run(&mut javac)?;
    if let Some(dir) = jar.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut jar_cmd = Command::new(jdk_bin.join("jar"));
    jar_cmd.arg("--create").arg("--file").arg(jar);
    let manifest = src_dir.join("MANIFEST.MF");
    if manifest.is_file() {
        jar_cmd.arg("--manifest").arg(&manifest);
    }
    run(jar_cmd.arg("-C").arg(&classes).arg("."))?;
    fs::remove_dir_all(&classes).with_context(|| format!("removing {}", classes.display()))
}

fn mvn(pom: &Path, version: &str, args: &[String]) -> anyhow::Result<()> {
    run(Command::new("mvn")
        .arg("-B")
        .arg("-q")
        .arg("-f")
        .arg(pom)
        .arg(format!("-Delasticsearch.version={version}"))
        .args(args))
    .with_context(|| format!("mvn {} (is Maven installed?)", args.join(" ")))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    run_output(cmd).map(drop)
}

fn run_output(cmd: &mut Command) -> anyhow::Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("running {}", crate::cmd::describe(cmd)))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            crate::cmd::describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
