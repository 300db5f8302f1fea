//! The pinned upstream components and how their binaries are built.
//!
//! Each component has its own go.mod under `e2e/upstream/<name>/` whose `tool` directives
//! name the commands, so their dependency graphs never have to agree with each other. Binaries
//! land in `~/.cache/stateward/bin/<name>-<version>/` with a stamp recording the inputs; a
//! changed go.mod/go.sum or flags triggers a rebuild, which the Go build cache keeps cheap.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::cmd;
use crate::layout::Layout;

/// The Go toolchain every component is built with. Go 1.27 broke the API server's OpenAPI
/// handling; 1.26.x is known good with Kubernetes 1.36.
pub const GO_TOOLCHAIN: &str = "go1.26.5";

pub const KUBERNETES_VERSION: &str = "v1.36.3";
pub const ETCD_VERSION: &str = "v3.6.8";
pub const COREDNS_VERSION: &str = "v1.14.7";
pub const LOCAL_PATH_PROVISIONER_VERSION: &str = "v0.0.30";
pub const HELM_VERSION: &str = "v3.20.2";
/// Benchmark only (`e2e/bench/scale.sh`): simulated nodes and pods.
pub const KWOK_VERSION: &str = "v0.8.0";
/// Benchmark only: Elastic's operator, measured beside ours.
pub const ECK_VERSION: &str = "v3.5.0";
/// prometheus-operator's monitoring API, whose ServiceMonitor and PodMonitor CRDs the chart's
/// monitoring objects are checked against (the root module is not served; this one is).
pub const PROMETHEUS_OPERATOR_VERSION: &str = "v0.95.2";

/// One upstream Go component: a go.mod directory and the commands built from it.
pub struct Component {
    /// Directory under `e2e/upstream/` and cache key prefix.
    pub name: &'static str,
    pub version: &'static str,
    /// (Go package, binary name): the name is explicit because `go build` would call
    /// `go.etcd.io/etcd/server/v3` "server".
    pub commands: &'static [(&'static str, &'static str)],
    pub ldflags: String,
}

impl Component {
    /// Directory holding the built binaries.
    pub fn bin_dir(&self, layout: &Layout) -> PathBuf {
        layout.bin_dir(self.name, self.version)
    }

    /// Path of one of this component's binaries.
    pub fn binary(&self, layout: &Layout, name: &str) -> PathBuf {
        self.bin_dir(layout).join(name)
    }
}

pub fn kubernetes() -> Component {
    let v = KUBERNETES_VERSION;
    // What the upstream release build stamps, so `kubectl version` and the API report v1.36.3.
    let ldflags = format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={v} \
         -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor=36 \
         -X k8s.io/component-base/version.gitTreeState=clean \
         -X k8s.io/client-go/pkg/version.gitVersion={v} \
         -X k8s.io/component-base/version/base.gitVersion={v}"
    );
    Component {
        name: "kubernetes",
        version: v,
        commands: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
            ("k8s.io/kubernetes/cmd/kubelet", "kubelet"),
            ("k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy"),
            ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
        ],
        ldflags,
    }
}

pub fn etcd() -> Component {
    Component {
        name: "etcd",
        version: ETCD_VERSION,
        commands: &[("go.etcd.io/etcd/server/v3", "etcd")],
        ldflags: format!(
            "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={}",
            ETCD_VERSION
        ),
    }
}

pub fn coredns() -> Component {
    Component {
        name: "coredns",
        version: COREDNS_VERSION,
        commands: &[("github.com/coredns/coredns", "coredns")],
        ldflags: "-s -w".into(),
    }
}

pub fn local_path_provisioner() -> Component {
    Component {
        name: "local-path-provisioner",
        version: LOCAL_PATH_PROVISIONER_VERSION,
        commands: &[(
            "github.com/rancher/local-path-provisioner",
            "local-path-provisioner",
        )],
        ldflags: format!("-s -w -X main.VERSION={}", LOCAL_PATH_PROVISIONER_VERSION),
    }
}

pub fn helm() -> Component {
    Component {
        name: "helm",
        version: HELM_VERSION,
        commands: &[("helm.sh/helm/v3/cmd/helm", "helm")],
        ldflags: format!(
            "-s -w -X helm.sh/helm/v3/internal/version.version={}",
            HELM_VERSION
        ),
    }
}

/// kwok: a controller that makes Nodes and the Pods bound to them look Running without any
/// container, so the benchmark can hold hundreds of clusters on two cores.
pub fn kwok() -> Component {
    Component {
        name: "kwok",
        version: KWOK_VERSION,
        commands: &[("sigs.k8s.io/kwok/cmd/kwok", "kwok")],
        ldflags: "-s -w".into(),
    }
}

/// ECK's operator binary (`elastic-operator manager`), measured side by side with ours.
pub fn eck() -> Component {
    Component {
        name: "eck",
        version: ECK_VERSION,
        commands: &[("github.com/elastic/cloud-on-k8s/v3/cmd", "elastic-operator")],
        ldflags: format!(
            "-s -w -X github.com/elastic/cloud-on-k8s/v3/pkg/about.version={}",
            ECK_VERSION.trim_start_matches('v')
        ),
    }
}

/// controller-gen (sigs.k8s.io/controller-tools), pinned beside prometheus-operator's API types
/// it turns into CRDs: the same generator upstream publishes its CRDs with.
pub fn prometheus_operator_crds() -> Component {
    Component {
        name: "prometheus-operator",
        version: PROMETHEUS_OPERATOR_VERSION,
        commands: &[(
            "sigs.k8s.io/controller-tools/cmd/controller-gen",
            "controller-gen",
        )],
        ldflags: "-s -w".into(),
    }
}

/// prometheus-operator's `monitoring.coreos.com/v1` CRDs (ServiceMonitor, PodMonitor and the
/// rest), generated once from the pinned API types; returns their directory.
pub fn monitoring_crds(layout: &Layout) -> anyhow::Result<PathBuf> {
    let component = prometheus_operator_crds();
    ensure_built(layout, &component)?;
    let dir = component.bin_dir(layout).join("crds");
    if dir
        .join("monitoring.coreos.com_servicemonitors.yaml")
        .is_file()
    {
        return Ok(dir);
    }
    // Generated aside and renamed into place, so a reader never sees half a directory.
    let partial = component.bin_dir(layout).join("crds.partial");
    let _ = std::fs::remove_dir_all(&partial);
    let package = "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1";
    let log = layout.build_logs().join("prometheus-operator-crds.log");
    // controller-gen loads the types through `go list`: the Go found for builds goes first.
    let go = crate::prereqs::go()?;
    let go_dir = go.parent().context("Go's directory")?;
    let path = std::env::join_paths(std::iter::once(go_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .context("PATH with Go")?;
    cmd::run_logged(
        Command::new(component.binary(layout, "controller-gen"))
            .current_dir(layout.upstream(component.name))
            .env("GOTOOLCHAIN", GO_TOOLCHAIN)
            .env("PATH", path)
            .arg("crd:crdVersions=v1,maxDescLen=0")
            .arg(format!("paths={package}"))
            .arg(format!("output:crd:dir={}", partial.display())),
        &log,
    )
    .context("generating prometheus-operator's CRDs")?;
    std::fs::rename(&partial, &dir).with_context(|| format!("rename into {}", dir.display()))?;
    Ok(dir)
}

/// A binary the benchmarks run, by name (`cargo dev tool NAME`), with the component that
/// builds it. kwok and ECK are built on demand, never by `up`.
pub fn tool(name: &str) -> Option<(Component, &'static str)> {
    match name {
        "kwok" => Some((kwok(), "kwok")),
        "eck" => Some((eck(), "elastic-operator")),
        "kubectl" => Some((kubernetes(), "kubectl")),
        _ => None,
    }
}

/// Everything `up` needs, in build order (Kubernetes first: it is by far the longest).
pub fn all() -> Vec<Component> {
    vec![
        kubernetes(),
        etcd(),
        coredns(),
        local_path_provisioner(),
        helm(),
    ]
}

/// Builds `component` unless its binaries are present and were built from the same inputs.
pub fn ensure_built(layout: &Layout, component: &Component) -> anyhow::Result<()> {
    let src = layout.upstream(component.name);
    let bin_dir = component.bin_dir(layout);
    let key = input_key(&src, component)?;
    let stamp = bin_dir.join(".stamp");
    let all_present = component
        .commands
        .iter()
        .all(|(_, bin)| bin_dir.join(bin).is_file());
    if all_present && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key) {
        return Ok(());
    }
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("create {}", bin_dir.display()))?;
    let go = crate::prereqs::go()?;
    eprintln!(
        "building {} {} (first time: several minutes on 2 cores) ...",
        component.name, component.version
    );
    let log = layout
        .build_logs()
        .join(format!("{}-{}.log", component.name, component.version));
    // One `go build` for all commands: links run in parallel, and Go skips relinking a
    // binary already in the output directory whose build ID is current.
    cmd::run_logged(
        Command::new(&go)
            .current_dir(&src)
            .env("GOTOOLCHAIN", GO_TOOLCHAIN)
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-ldflags", &component.ldflags, "-o"])
            .arg(format!("{}/", bin_dir.display()))
            .args(component.commands.iter().map(|(package, _)| package)),
        &log,
    )
    .with_context(|| format!("building {} {}", component.name, component.version))?;
    for (package, bin) in component.commands {
        let built = bin_dir.join(go_binary_name(package));
        if built != bin_dir.join(bin) {
            std::fs::rename(&built, bin_dir.join(bin))
                .with_context(|| format!("rename {} to {bin}", built.display()))?;
        }
    }
    std::fs::write(&stamp, key).with_context(|| format!("write {}", stamp.display()))?;
    Ok(())
}

/// The file name `go build -o dir/` gives a package's binary: its last path element, or the
/// one before a major-version suffix (`.../server/v3` -> `server`).
fn go_binary_name(package: &str) -> &str {
    let mut parts = package.rsplit('/');
    let last = parts.next().unwrap_or(package);
    let is_major =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    match (is_major, parts.next()) {
        (true, Some(prev)) => prev,
        _ => last,
    }
}

/// Hash of what determines the binaries: the pinned module graph, flags and toolchain.
fn input_key(src: &Path, component: &Component) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for file in ["go.mod", "go.sum"] {
        let path = src.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        hasher.update(&bytes);
    }
    hasher.update(component.ldflags.as_bytes());
    hasher.update(GO_TOOLCHAIN.as_bytes());
    for (package, bin) in component.commands {
        hasher.update(package.as_bytes());
        hasher.update(bin.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}
