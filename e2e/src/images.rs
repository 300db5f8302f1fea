//! Container images built on this machine and imported into the node's containerd.
//!
//! There is no registry: images are assembled with umoci (an OCI layout per image, one layer
//! per input directory), converted with skopeo to a docker archive that names the reference,
//! and imported with `ctr -n k8s.io images import`. Pods use `imagePullPolicy: IfNotPresent`
//! or `Never`. Every image has a content key (hash of its inputs): an unchanged image is
//! neither rebuilt nor reimported, which keeps a warm `up` fast.
//!
//! Root filesystems come from `debootstrap --variant=minbase bookworm` against the Debian
//! mirror apt already uses here, cached under `~/.cache/stateward/rootfs/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::cmd;
use crate::components;
use crate::configs::PAUSE_IMAGE;
use crate::layout::Layout;

pub const COREDNS_IMAGE: &str = "stateward.local/coredns:v1.14.7";
pub const LOCAL_PATH_IMAGE: &str = "stateward.local/local-path-provisioner:v0.0.30";
/// Debian minbase with a shell and coreutils: test workloads and the provisioner's helper pods.
pub const TESTBOX_IMAGE: &str = "stateward.local/testbox:dev";
pub const OPERATOR_IMAGE: &str = "stateward.local/operator:dev";
pub const PILOT_IMAGE: &str = "stateward.local/pilot:dev";
/// The Cassandra images' repository; an image is `<repository>:<version>`, as the operator names
/// it from `spec.version` (e2e runs set the operator's repository to this).
pub const CASSANDRA_REPOSITORY: &str = "stateward.local/cassandra";
/// The Cassandra versions `cargo dev images` builds: the one the tests run, and the one an
/// upgrade test starts from.
pub const CASSANDRA_IMAGE_VERSIONS: &[&str] = &[
    crate::cassandra_dist::CASSANDRA_VERSION,
    crate::cassandra_dist::UPGRADE_FROM_VERSION,
];
/// The Elasticsearch images' repository; an image is `<repository>:<version>`.
pub const ELASTICSEARCH_REPOSITORY: &str = "stateward.local/elasticsearch";
/// The Elasticsearch versions `cargo dev images` builds.
pub const ELASTICSEARCH_IMAGE_VERSIONS: &[&str] =
    &[crate::elasticsearch_dist::ELASTICSEARCH_VERSION];
/// ES_HOME in the Elasticsearch image, as in the official one.
pub const ELASTICSEARCH_HOME: &str = "/usr/share/elasticsearch";

const PAUSE_SOURCE: &str = include_str!("../images/pause.c");
const NOFILE_FLOOR_SOURCE: &str = include_str!("../images/nofile-floor.c");
const NONROOT_UID: u32 = 65532;
const CASSANDRA_UID: u32 = 999;
/// Bump when the Cassandra image's assembly changes (its inputs' hashes do not see code).
const CASSANDRA_LAYOUT_REVISION: &str = "3";
const JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// The official Elasticsearch image's user: uid 1000, group 0 (so an arbitrary uid in group 0,
/// as OpenShift assigns, can write too).
const ELASTICSEARCH_UID: u32 = 1000;
/// Bump when the Elasticsearch image's assembly changes (its inputs' hashes do not see code).
const ELASTICSEARCH_LAYOUT_REVISION: &str = "1";

/// Image runtime configuration (the OCI config fields we use).
#[derive(Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: String,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub volumes: Vec<String>,
}

/// A root filesystem several images start from. Its layer is made once, in an OCI layout of
/// its own; each image built on it starts from that layout (blobs hard-linked) and adds its
/// layers, so the images share one base blob: compressed once here, stored and unpacked once
/// by containerd (same digest).
#[derive(Clone)]
pub struct BaseLayer {
    pub name: String,
    pub rootfs: PathBuf,
    /// Hash of what the root filesystem is made from.
    pub key: String,
}

/// An image to build: each directory becomes one layer, inserted at `/`.
pub struct ImageSpec {
    pub reference: String,
    /// The bottom layer, shared with other images, when there is one.
    pub base: Option<BaseLayer>,
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// Hash of everything the image is made from.
    pub key: String,
}

/// A built image ready to import.
pub struct Built {
    pub reference: String,
    pub key: String,
    pub archive: PathBuf,
}

fn sanitize(reference: &str) -> String {
    reference.replace(['/', ':'], "_")
}

fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

fn hash_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(hash_parts(&[&bytes]))
}

/// The image's content key (its inputs, base layer and configuration) and where it is built.
fn built_paths(layout: &Layout, spec: &ImageSpec) -> (Built, PathBuf) {
    let work = layout.image_work().join(sanitize(&spec.reference));
    let config_key = format!(
        "{:?}{:?}{}{:?}{:?}{:?}",
        spec.config.entrypoint,
        spec.config.cmd,
        spec.config.user,
        spec.config.env,
        spec.config.workdir,
        spec.config.volumes
    );
    let key = match &spec.base {
        None => hash_parts(&[spec.key.as_bytes(), config_key.as_bytes()]),
        Some(base) => hash_parts(&[
            spec.key.as_bytes(),
            config_key.as_bytes(),
            base.key.as_bytes(),
        ]),
    };
    let built = Built {
        reference: spec.reference.clone(),
        key,
        archive: work.join("image.tar"),
    };
    (built, work)
}

/// The image's archive when it is up to date (nothing to build).
pub fn current(layout: &Layout, spec: &ImageSpec) -> Option<Built> {
    let (built, work) = built_paths(layout, spec);
    (built.archive.is_file()
        && std::fs::read_to_string(work.join("key")).is_ok_and(|k| k == built.key))
    .then_some(built)
}

/// Builds (or reuses) the OCI image and its docker archive.
pub fn build(layout: &Layout, spec: &ImageSpec) -> anyhow::Result<Built> {
    if let Some(built) = current(layout, spec) {
        return Ok(built);
    }
    let (built, work) = built_paths(layout, spec);
    let archive = built.archive.clone();
    let key_file = work.join("key");
    eprintln!("building image {} ...", spec.reference);
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let umoci = cmd::require("umoci")?;
    let oci = work.join("oci");
    let image = format!("{}:image", oci.display());
    match &spec.base {
        Some(base) => link_layout(&base_layout(layout, base)?, &oci)
            .with_context(|| format!("start {} from the {} layer", spec.reference, base.name))?,
        None => {
            cmd::run(Command::new(&umoci).arg("init").arg("--layout").arg(&oci))?;
            cmd::run(Command::new(&umoci).args(["new", "--image", &image]))?;
        }
    }
    for layer in &spec.layers {
        cmd::run(
            Command::new(&umoci)
                .args(["insert", "--image", &image])
                .arg(layer)
                .arg("/"),
        )
        .with_context(|| format!("add layer {} to {}", layer.display(), spec.reference))?;
    }
    let mut config = Command::new(&umoci);
    config.args([
        "config",
        "--image",
        &image,
        "--config.user",
        &spec.config.user,
    ]);
    for e in &spec.config.entrypoint {
        config.args(["--config.entrypoint", e]);
    }
    for c in &spec.config.cmd {
        config.args(["--config.cmd", c]);
    }
    for e in &spec.config.env {
        config.args(["--config.env", e]);
    }
    for v in &spec.config.volumes {
        config.args(["--config.volume", v]);
    }
    if let Some(w) = &spec.config.workdir {
        config.args(["--config.workingdir", w]);
    }
    cmd::run(&mut config).with_context(|| format!("configure {}", spec.reference))?;
    cmd::run(
        Command::new(cmd::require("skopeo")?)
            .args(["copy", "--quiet"])
            .arg(format!("oci:{image}"))
            .arg(format!(
                "docker-archive:{}:{}",
                archive.display(),
                spec.reference
            )),
    )
    .with_context(|| format!("export {} as a docker archive", spec.reference))?;
    std::fs::remove_dir_all(&oci).with_context(|| format!("remove {}", oci.display()))?;
    std::fs::write(&key_file, &built.key)
        .with_context(|| format!("write {}", key_file.display()))?;
    Ok(built)
}

/// The OCI layout (tag `image`) holding only `base`'s layer, built once per base key.
fn base_layout(layout: &Layout, base: &BaseLayer) -> anyhow::Result<PathBuf> {
    let dir = layout.image_work().join("base").join(&base.name);
    let oci = dir.join("oci");
    let key_file = dir.join("key");
    if oci.is_dir() && std::fs::read_to_string(&key_file).is_ok_and(|k| k == base.key) {
        return Ok(oci);
    }
    eprintln!("building the {} base layer ...", base.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let umoci = cmd::require("umoci")?;
    let image = format!("{}:image", oci.display());
    cmd::run(Command::new(&umoci).arg("init").arg("--layout").arg(&oci))?;
    cmd::run(Command::new(&umoci).args(["new", "--image", &image]))?;
    cmd::run(
        Command::new(&umoci)
            .args(["insert", "--image", &image])
            .arg(&base.rootfs)
            .arg("/"),
    )
    .with_context(|| format!("make the {} layer", base.name))?;
    std::fs::write(&key_file, &base.key)
        .with_context(|| format!("write {}", key_file.display()))?;
    Ok(oci)
}

/// A copy of the OCI layout `from` at `to`: blobs (content-addressed, never rewritten) as hard
/// links, everything else (index.json, oci-layout) as real copies umoci may rewrite.
fn link_layout(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_layout(&src, &dest)?;
        } else if src.parent().is_some_and(|p| p.ends_with("blobs/sha256")) {
            std::fs::hard_link(&src, &dest)
                .with_context(|| format!("link {} to {}", src.display(), dest.display()))?;
        } else {
            std::fs::copy(&src, &dest)
                .with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
        }
    }
    Ok(())
}

fn ctr(layout: &Layout) -> anyhow::Result<Command> {
    let mut c = Command::new(cmd::require("ctr")?);
    c.arg("--address")
        .arg(layout.containerd_socket())
        .args(["--namespace", "k8s.io"]);
    Ok(c)
}

/// References present in the node's containerd.
pub fn present(layout: &Layout) -> anyhow::Result<HashSet<String>> {
    let out = cmd::output(ctr(layout)?.args(["images", "ls", "-q"]))
        .context("list images in the node's containerd")?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Imports built images whose content is not in containerd yet.
pub fn import(layout: &Layout, images: &[Built]) -> anyhow::Result<()> {
    let present = present(layout)?;
    let stamps = layout.image_stamps();
    std::fs::create_dir_all(&stamps).with_context(|| format!("create {}", stamps.display()))?;
    for image in images {
        let stamp = stamps.join(sanitize(&image.reference));
        if present.contains(&image.reference)
            && std::fs::read_to_string(&stamp).is_ok_and(|k| k == image.key)
        {
            continue;
        }
        eprintln!("importing {} into the node ...", image.reference);
        cmd::run(ctr(layout)?.args(["images", "import"]).arg(&image.archive))
            .with_context(|| format!("import {}", image.reference))?;
        std::fs::write(&stamp, &image.key).with_context(|| format!("write {}", stamp.display()))?;
    }
    Ok(())
}

/// Builds the images `up` itself needs (sandbox, DNS, storage, test/helper box).
pub fn build_infra(layout: &Layout) -> anyhow::Result<Vec<Built>> {
    let specs = [
        pause(layout)?,
        static_binary(
            layout,
            COREDNS_IMAGE,
            &components::coredns().binary(layout, "coredns"),
        )?,
        static_binary(
            layout,
            LOCAL_PATH_IMAGE,
            &components::local_path_provisioner().binary(layout, "local-path-provisioner"),
        )?,
        testbox(layout)?,
    ];
    specs.iter().map(|s| build(layout, s)).collect()
}

/// Builds the project's images: operator, pilot, Cassandra.
pub fn build_project(layout: &Layout) -> anyhow::Result<Vec<Built>> {
    // The whole workspace with every target, not just the two binaries: `cargo dev test`
    // runs `cargo test --release --workspace` next, and cargo unifies features over what a
    // command selects (dev-dependencies included only when tests are built). With the same
    // selection both commands share one set of compiled units, so the test run compiles
    // nothing again; with `-p operator -p pilot` kube, rustls, tokio etc. were built twice.
    eprintln!("cargo build --release --workspace --all-targets ...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(layout.repo())
        .args(["build", "--release", "--workspace", "--all-targets"])
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build of the workspace failed ({status}); see above");
    }
    let target = cargo_target_dir(layout).join("release");
    let specs = [
        rust_binary(layout, OPERATOR_IMAGE, &target.join("stateward-operator"))?,
        pilot(layout, &target.join("stateward-pilot"))?,
    ];
    let mut built = specs
        .iter()
        .map(|s| build(layout, s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let jre = jre_base(layout)?;
    for version in CASSANDRA_IMAGE_VERSIONS {
        built.push(cassandra(layout, &jre, version)?);
    }
    let base = minbase_base(layout)?;
    for version in ELASTICSEARCH_IMAGE_VERSIONS {
        built.push(elasticsearch(layout, &base, version)?);
    }
    Ok(built)
}

/// `<CASSANDRA_REPOSITORY>:<version>`, the image the operator runs for `spec.version`.
pub fn cassandra_image(version: &str) -> String {
    format!("{CASSANDRA_REPOSITORY}:{version}")
}

/// `<ELASTICSEARCH_REPOSITORY>:<version>`.
pub fn elasticsearch_image(version: &str) -> String {
    format!("{ELASTICSEARCH_REPOSITORY}:{version}")
}

/// The workspace's target directory (shared; honours CARGO_TARGET_DIR if a user set it).
/// The operator binary `build_project` builds (what the operator image runs); tests that must
/// kill a real operator process run it from here.
pub fn operator_binary(layout: &Layout) -> PathBuf {
    cargo_target_dir(layout)
        .join("release")
        .join("stateward-operator")
}

fn cargo_target_dir(layout: &Layout) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| layout.repo().join("target"))
}

/// A fresh staging directory for one image's layer.
fn stage(layout: &Layout, reference: &str) -> anyhow::Result<PathBuf> {
    let dir = layout.image_work().join("stage").join(sanitize(reference));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn pause(layout: &Layout) -> anyhow::Result<ImageSpec> {
    let dir = stage(layout, PAUSE_IMAGE)?;
    let src = layout.image_work().join("pause.c");
    std::fs::write(&src, PAUSE_SOURCE).with_context(|| format!("write {}", src.display()))?;
    cmd::run(
        Command::new(cmd::require("gcc")?)
            .args(["-static", "-Os", "-s", "-o"])
            .arg(dir.join("pause"))
            .arg(&src),
    )
    .context("compile the pause binary (needs gcc and libc6-dev)")?;
    Ok(ImageSpec {
        reference: PAUSE_IMAGE.into(),
        base: None,
        layers: vec![dir],
        config: ImageConfig {
            entrypoint: vec!["/pause".into()],
            user: format!("{NONROOT_UID}:{NONROOT_UID}"),
            ..Default::default()
        },
        key: hash_parts(&[PAUSE_SOURCE.as_bytes()]),
    })
}

/// A static Go binary alone in an image (CoreDNS, the provisioner), with CA certificates.
fn static_binary(layout: &Layout, reference: &str, binary: &Path) -> anyhow::Result<ImageSpec> {
    let dir = stage(layout, reference)?;
    let name = binary
        .file_name()
        .context("binary without a file name")?
        .to_string_lossy()
        .into_owned();
    copy_into(
        binary,
        &dir,
        Path::new("/usr/local/bin").join(&name).as_path(),
    )?;
    base_files(&dir)?;
    Ok(ImageSpec {
        reference: reference.into(),
        base: None,
        layers: vec![dir],
        config: ImageConfig {
            entrypoint: vec![format!("/usr/local/bin/{name}")],
            user: "0:0".into(),
            ..Default::default()
        },
        key: hash_file(binary)?,
    })
}

/// A Rust binary with exactly the shared libraries `ldd` lists, CA certificates and a
/// non-root user: the minimal runtime for the operator and the pilot.
fn rust_binary(layout: &Layout, reference: &str, binary: &Path) -> anyhow::Result<ImageSpec> {
    if !binary.is_file() {
        bail!("{} was not built", binary.display());
    }
    let dir = stage(layout, reference)?;
    let name = binary
        .file_name()
        .context("binary without a file name")?
        .to_string_lossy()
        .into_owned();
    let target = Path::new("/usr/local/bin").join(&name);
    copy_into(binary, &dir, &target)?;
    for lib in shared_libraries(binary)? {
        copy_into(&lib, &dir, &lib)?;
    }
    base_files(&dir)?;
    Ok(ImageSpec {
        reference: reference.into(),
        base: None,
        layers: vec![dir],
        config: ImageConfig {
            entrypoint: vec![target.display().to_string()],
            user: format!("{NONROOT_UID}:{NONROOT_UID}"),
            ..Default::default()
        },
        key: hash_file(binary)?,
    })
}

/// The pilot plus the Jolokia JVM agent it hands to Cassandra (at the path the pilot expects,
/// /usr/share/stateward/jolokia-agent.jar).
fn pilot(layout: &Layout, binary: &Path) -> anyhow::Result<ImageSpec> {
    let mut spec = rust_binary(layout, PILOT_IMAGE, binary)?;
    let dist = crate::cassandra_dist::ensure_dist(crate::cassandra_dist::CASSANDRA_VERSION)?;
    let agent = dist.join(crate::cassandra_dist::JOLOKIA_AGENT_RELATIVE_PATH);
    let layer = spec
        .layers
        .first()
        .context("the pilot image has no layer")?
        .clone();
    copy_into(
        &agent,
        &layer,
        Path::new("/usr/share/stateward/jolokia-agent.jar"),
    )?;
    spec.key = hash_parts(&[spec.key.as_bytes(), hash_file(&agent)?.as_bytes()]);
    Ok(spec)
}

/// Shared libraries (and the dynamic loader) of `binary`, from `ldd`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Copies the content of `src` (following symlinks) to `root` + `target`.
fn copy_into(src: &Path, root: &Path, target: &Path) -> anyhow::Result<()> {
    let dest = root.join(target.strip_prefix("/").unwrap_or(target));
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::copy(src, &dest)
        .with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
    Ok(())
}

/// /etc/passwd, /etc/group, CA certificates and a sticky /tmp for distroless-style images.
fn base_files(root: &Path) -> anyhow::Result<()> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).with_context(|| format!("create {}", etc.display()))?;
    std::fs::write(
        etc.join("passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
        ),
    )
    .context("write /etc/passwd")?;
    std::fs::write(
        etc.join("group"),
        format!("root:x:0:\nnonroot:x:{NONROOT_UID}:\n"),
    )
    .context("write /etc/group")?;
    copy_into(
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
        root,
        Path::new("/etc/ssl/certs/ca-certificates.crt"),
    )?;
    let home = root.join("home/nonroot");
    std::fs::create_dir_all(&home).context("create /home/nonroot")?;
    std::os::unix::fs::chown(&home, Some(NONROOT_UID), Some(NONROOT_UID))
        .context("chown /home/nonroot")?;
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).context("create /tmp")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .context("chmod /tmp")?;
    Ok(())
}

fn testbox(layout: &Layout) -> anyhow::Result<ImageSpec> {
    let (rootfs, key) = minbase(layout)?;
    Ok(ImageSpec {
        reference: TESTBOX_IMAGE.into(),
        base: None,
        layers: vec![rootfs],
        config: ImageConfig {
            cmd: vec!["sleep".into(), "infinity".into()],
            user: "0:0".into(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..Default::default()
        },
        key,
    })
}

/// `stateward.local/cassandra:<version>`: the JRE base layer (shared by every version) and a
/// layer with the distribution. Staged only when its inputs changed, so an unchanged image
/// costs a hash of the distribution's listing.
fn cassandra(layout: &Layout, jre: &BaseLayer, version: &str) -> anyhow::Result<Built> {
    let reference = cassandra_image(version);
    let dist = crate::cassandra_dist::ensure_dist(version)
        .with_context(|| format!("assemble the Cassandra {version} distribution"))?;
    let listing = cmd::output(
        Command::new("find")
            .arg(&dist)
            .args(["-printf", "%P %s %T@\n"]),
    )
    .context("list the Cassandra distribution")?;
    let spec = ImageSpec {
        reference: reference.clone(),
        base: Some(jre.clone()),
        layers: vec![layout.image_work().join("stage").join(sanitize(&reference))],
        config: ImageConfig {
            cmd: vec!["cassandra".into(), "-f".into()],
            user: format!("{CASSANDRA_UID}:{CASSANDRA_UID}"),
            env: vec![
                "CASSANDRA_HOME=/opt/cassandra".into(),
                "CASSANDRA_CONF=/etc/cassandra".into(),
                format!("JAVA_HOME={JAVA_HOME}"),
                "PATH=/opt/cassandra/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                    .into(),
            ],
            workdir: Some("/opt/cassandra".into()),
            volumes: vec!["/var/lib/cassandra".into()],
            ..Default::default()
        },
        key: hash_parts(&[listing.as_bytes(), CASSANDRA_LAYOUT_REVISION.as_bytes()]),
    };
    if let Some(built) = current(layout, &spec) {
        return Ok(built);
    }
    let dir = stage(layout, &reference)?;
    stage_cassandra(&dist, &dir)?;
    let built = build(layout, &spec)?;
    // The staged copy is in the archive now; it is made again only when the inputs change.
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    Ok(built)
}

/// The official image's layout in `dir`: the distribution in /opt/cassandra, its conf moved to
/// /etc/cassandra (owned by cassandra, so entrypoints can edit it) and linked back; data and
/// logs in /var/lib/cassandra and /var/log/cassandra, linked from the home.
fn stage_cassandra(dist: &Path, dir: &Path) -> anyhow::Result<()> {
    let home = dir.join("opt/cassandra");
    std::fs::create_dir_all(dir.join("opt")).context("create /opt")?;
    std::fs::create_dir_all(dir.join("etc")).context("create /etc")?;
    cmd::run(Command::new("cp").arg("-a").arg(dist).arg(&home))
        .context("copy the Cassandra distribution")?;
    let conf = home.join("conf");
    if conf.is_dir() && !conf.is_symlink() {
        cmd::run(Command::new("mv").arg(&conf).arg(dir.join("etc/cassandra")))?;
    } else {
        std::fs::create_dir_all(dir.join("etc/cassandra")).context("create /etc/cassandra")?;
    }
    for (link, target) in [
        ("conf", "/etc/cassandra"),
        ("data", "/var/lib/cassandra"),
        ("logs", "/var/log/cassandra"),
    ] {
        let path = home.join(link);
        // The distribution ships empty data/ and logs/ directories (owned by root): the
        // links replace them so Cassandra, running as uid 999, writes to the volumes.
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        std::os::unix::fs::symlink(target, &path)
            .with_context(|| format!("link {}", path.display()))?;
    }
    for sub in ["var/lib/cassandra", "var/log/cassandra"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create /{sub}"))?;
    }
    cmd::run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{CASSANDRA_UID}:{CASSANDRA_UID}"))
            .arg(dir.join("etc/cassandra"))
            .arg(dir.join("var/lib/cassandra"))
            .arg(dir.join("var/log/cassandra")),
    )?;
    Ok(())
}

/// `stateward.local/elasticsearch:<version>`: the minbase layer (shared) and a layer with the
/// distribution, which brings its own JDK. Staged only when its inputs changed.
fn elasticsearch(layout: &Layout, base: &BaseLayer, version: &str) -> anyhow::Result<Built> {
    let reference = elasticsearch_image(version);
    let dist = crate::elasticsearch_dist::ensure_dist(version)
        .with_context(|| format!("assemble the Elasticsearch {version} distribution"))?;
    let listing = cmd::output(
        Command::new("find")
            .arg(&dist)
            .args(["-printf", "%P %s %T@\n"]),
    )
    .context("list the Elasticsearch distribution")?;
    let spec = ImageSpec {
        reference: reference.clone(),
        base: Some(base.clone()),
        layers: vec![layout.image_work().join("stage").join(sanitize(&reference))],
        config: ImageConfig {
            cmd: vec![format!("{ELASTICSEARCH_HOME}/bin/elasticsearch")],
            user: format!("{ELASTICSEARCH_UID}:0"),
            env: vec![
                format!("ES_HOME={ELASTICSEARCH_HOME}"),
                format!("ES_PATH_CONF={ELASTICSEARCH_HOME}/config"),
                format!(
                    "PATH={ELASTICSEARCH_HOME}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                ),
            ],
            workdir: Some(ELASTICSEARCH_HOME.into()),
            ..Default::default()
        },
        key: hash_parts(&[
            listing.as_bytes(),
            ELASTICSEARCH_LAYOUT_REVISION.as_bytes(),
            NOFILE_FLOOR_SOURCE.as_bytes(),
        ]),
    };
    if let Some(built) = current(layout, &spec) {
        return Ok(built);
    }
    let dir = stage(layout, &reference)?;
    stage_elasticsearch(layout, &dist, &dir)?;
    let built = build(layout, &spec)?;
    // The staged copy is in the archive now; it is made again only when the inputs change.
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    Ok(built)
}

/// The official image's layout in `dir`: the distribution in /usr/share/elasticsearch with
/// config/, data/ and logs/ owned by uid 1000 and group 0 (group-writable), and an
/// `elasticsearch` user in /etc/passwd (the JVM wants a home for user.home).
fn stage_elasticsearch(layout: &Layout, dist: &Path, dir: &Path) -> anyhow::Result<()> {
    let home = dir.join(ELASTICSEARCH_HOME.trim_start_matches('/'));
    let parent = home.parent().context("ES_HOME has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    cmd::run(Command::new("cp").arg("-a").arg(dist).arg(&home))
        .context("copy the Elasticsearch distribution")?;
    // The cache's completion marker means nothing inside the image.
    std::fs::remove_file(home.join(".stateward-complete")).ok();
    nofile_floor(layout, &home)?;
    let owned: Vec<PathBuf> = ["config", "data", "logs"]
        .iter()
        .map(|d| home.join(d))
        .collect();
    cmd::run(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{ELASTICSEARCH_UID}:0"))
            .args(&owned),
    )?;
    cmd::run(Command::new("chmod").arg("-R").arg("g=u").args(&owned))?;
    // A whole /etc/passwd (a layer replaces the file): minbase's plus the elasticsearch user.
    let (rootfs, _) = minbase(layout)?;
    let passwd =
        std::fs::read_to_string(rootfs.join("etc/passwd")).context("read minbase's /etc/passwd")?;
    std::fs::create_dir_all(dir.join("etc")).context("create /etc")?;
    std::fs::write(
        dir.join("etc/passwd"),
        format!(
            "{passwd}elasticsearch:x:{ELASTICSEARCH_UID}:0:elasticsearch:{ELASTICSEARCH_HOME}:/bin/sh\n"
        ),
    )
    .context("write /etc/passwd")?;
    Ok(())
}

/// The open-files floor preloaded by `bin/elasticsearch` when the machine's limit is below
/// Elasticsearch's bootstrap minimum (see `e2e/images/nofile-floor.c`), built against the
/// host's gcc and glibc (the same Debian release as the image's).
fn nofile_floor(layout: &Layout, home: &Path) -> anyhow::Result<()> {
    let src = layout.image_work().join("nofile-floor.c");
    std::fs::write(&src, NOFILE_FLOOR_SOURCE)
        .with_context(|| format!("write {}", src.display()))?;
    let out = home.join("lib/stateward");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    cmd::run(
        Command::new(cmd::require("gcc")?)
            .args(["-shared", "-fPIC", "-Os", "-s", "-o"])
            .arg(out.join("nofile-floor.so"))
            .arg(&src)
            .arg("-ldl"),
    )
    .context("compile the open-files floor (needs gcc and libc6-dev)")
}

/// The Debian mirror apt uses on this machine (deb822 or one-line sources).
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            if let Ok(t) = std::fs::read_to_string(entry.path()) {
                texts.push(t);
            }
        }
    }
    for text in &texts {
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if line.starts_with("deb ") && line.contains(" bookworm") {
                line.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return uri.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// `debootstrap --variant=minbase bookworm`, cached. Returns the directory and its key.
pub fn minbase(layout: &Layout) -> anyhow::Result<(PathBuf, String)> {
    let mirror = debian_mirror();
    let key = hash_parts(&[b"bookworm minbase", mirror.as_bytes()]);
    cached_rootfs(layout, "bookworm-minbase", &key, |tmp| {
        let log = layout.build_logs().join("debootstrap-bookworm-minbase.log");
        eprintln!("debootstrap --variant=minbase bookworm from {mirror} (a few minutes, once) ...");
        cmd::run_logged(
            Command::new(cmd::require("debootstrap")?)
                .args(["--variant=minbase", "bookworm"])
                .arg(tmp)
                .arg(&mirror),
            &log,
        )
        .context("debootstrap failed")?;
        // Same suites as the host (updates, security) for packages installed later.
        let sources = Path::new("/etc/apt/sources.list.d/debian.sources");
        if sources.is_file() {
            std::fs::copy(sources, tmp.join("etc/apt/sources.list.d/debian.sources"))
                .context("copy debian.sources")?;
            std::fs::remove_file(tmp.join("etc/apt/sources.list")).ok();
        }
        clean_apt(tmp)
    })
    .map(|dir| (dir, key))
}

/// Debian minbase as a shared base layer (the Elasticsearch images bring their own JDK).
fn minbase_base(layout: &Layout) -> anyhow::Result<BaseLayer> {
    let (rootfs, key) = minbase(layout)?;
    Ok(BaseLayer {
        name: "bookworm-minbase".into(),
        rootfs,
        key,
    })
}

/// The JRE root filesystem as the shared base layer of the Cassandra images.
fn jre_base(layout: &Layout) -> anyhow::Result<BaseLayer> {
    let (rootfs, key) = jre_rootfs(layout)?;
    Ok(BaseLayer {
        name: "bookworm-jre17".into(),
        rootfs,
        key,
    })
}

/// minbase + openjdk-17-jre-headless + the `cassandra` user (uid/gid 999).
fn jre_rootfs(layout: &Layout) -> anyhow::Result<(PathBuf, String)> {
    let (base, base_key) = minbase(layout)?;
    let key = hash_parts(&[
        base_key.as_bytes(),
        b"openjdk-17-jre-headless cassandra:999",
    ]);
    cached_rootfs(layout, "bookworm-jre17", &key, |tmp| {
        std::fs::remove_dir(tmp).context("remove empty staging dir")?;
        cmd::run(Command::new("cp").arg("-a").arg(&base).arg(tmp)).context("copy minbase")?;
        std::fs::copy("/etc/resolv.conf", tmp.join("etc/resolv.conf"))
            .context("copy resolv.conf into the chroot")?;
        let proc_dir = tmp.join("proc");
        cmd::run(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&proc_dir),
        )?;
        let log = layout.build_logs().join("rootfs-bookworm-jre17.log");
        eprintln!("installing openjdk-17-jre-headless into a rootfs (once) ...");
        let result = cmd::run_logged(
            Command::new("chroot")
                .arg(tmp)
                .args(["/bin/sh", "-c"])
                .arg(format!(
                    "set -e; apt-get update; \
                     DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
                       openjdk-17-jre-headless procps; \
                     groupadd -r -g {CASSANDRA_UID} cassandra; \
                     useradd -r -u {CASSANDRA_UID} -g {CASSANDRA_UID} -d /var/lib/cassandra \
                       -s /usr/sbin/nologin cassandra"
                )),
            &log,
        );
        let unmounted = cmd::run(Command::new("umount").arg(&proc_dir));
        result?;
        unmounted?;
        std::fs::write(tmp.join("etc/resolv.conf"), "").context("reset resolv.conf")?;
        clean_apt(tmp)
    })
    .map(|dir| (dir, key))
}

fn clean_apt(root: &Path) -> anyhow::Result<()> {
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let path = root.join(dir);
        if let Ok(entries) = std::fs::read_dir(&path) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_file() {
                    std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// A root filesystem under the cache, made by `make` in a temporary directory and renamed
/// into place only when complete (an interrupted build never looks done).
fn cached_rootfs(
    layout: &Layout,
    name: &str,
    key: &str,
    make: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let dir = layout.rootfs_dir().join(name);
    let stamp = layout.rootfs_dir().join(format!("{name}.key"));
    if dir.is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return Ok(dir);
    }
    let tmp = layout.rootfs_dir().join(format!("{name}.tmp"));
    for old in [&tmp, &dir] {
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| format!("remove {}", old.display()))?;
        }
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    make(&tmp).with_context(|| format!("build the {name} root filesystem"))?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("rename {}", tmp.display()))?;
    std::fs::write(&stamp, key).with_context(|| format!("write {}", stamp.display()))?;
    Ok(dir)
}
