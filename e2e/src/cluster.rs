//! Bringing the single-node cluster up and down, and the handle tests use.
//!
//! The node runs as plain host processes started by the harness (there is no systemd):
//! etcd, containerd (Debian's, private root and socket), kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet and kube-proxy. CoreDNS and the
//! local-path provisioner run as Deployments on the node. `up` is idempotent: a healthy
//! cluster is reused; a partial one is stopped and restarted from its kept state.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::certs::{Leaf, Pki};
use crate::layout::Layout;
use crate::network::{
    self, APISERVER_PORT, DNS_SERVICE_IP, ETCD_CLIENT_PORT, ETCD_PEER_PORT, KUBERNETES_SERVICE_IP,
    NODE_IP, NODE_NAME, SERVICE_CIDR,
};
use crate::process::{self, Daemon};
use crate::{addons, cmd, components, configs, images, kubectl, prereqs};

/// Daemons in start order; `down` stops them in reverse.
const DAEMONS: [&str; 7] = [
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];

/// A running local cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    layout: Layout,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs our kubectl with the admin kubeconfig and returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        kubectl::output(&self.layout, &self.kubeconfig, args)
    }

    /// Runs kubectl with `input` on stdin (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        kubectl::with_input(&self.layout, &self.kubeconfig, args, input)
    }

    /// A kube client for the admin user.
    pub async fn kube_client(&self) -> anyhow::Result<kube::Client> {
        kube::Client::try_from(self.kube_config().await?).context("create a kube client")
    }

    /// The admin user's client configuration.
    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("read {}", self.kubeconfig.display()))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .context("load the cluster kubeconfig")
    }
}

/// Brings the cluster up once per process (tests share it) and returns it. Errors are
/// returned, never turned into skips: a test that needs the cluster fails without one.
pub fn ensure_up() -> anyhow::Result<Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            Layout::discover()
                .and_then(|layout| up(&layout))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("the local cluster could not be brought up: {e}"))
}

/// An exclusive lock on the harness, so concurrent `up`/`down` callers take turns.
struct Lock {
    _file: File,
}

impl Lock {
    fn take(layout: &Layout) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(layout.cache())
            .with_context(|| format!("create {}", layout.cache().display()))?;
        let file = File::create(layout.lock_file())
            .with_context(|| format!("open {}", layout.lock_file().display()))?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("lock the harness");
        }
        Ok(Self { _file: file })
    }
}

/// Builds what is missing, then starts the cluster unless a healthy one is running.
pub fn up(layout: &Layout) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let _lock = Lock::take(layout)?;
    prereqs::ensure(layout)?;
    for component in components::all() {
        components::ensure_built(layout, &component)?;
    }
    let infra = images::build_infra(layout)?;
    let cluster = Cluster {
        layout: layout.clone(),
        kubeconfig: layout.kubeconfig(),
    };
    if healthy(layout) {
        eprintln!(
            "cluster already running and healthy (checked in {:.1?})",
            started.elapsed()
        );
        return Ok(cluster);
    }
    if DAEMONS
        .iter()
        .any(|d| process::running(layout, d).is_some())
    {
        eprintln!("cluster partly running: restarting it");
        stop(layout).context("stop the partial cluster")?;
    }
    network::check_ports_free()?;
    if let Err(err) = start(layout, &infra) {
        eprintln!("`up` failed; stopping what it started");
        if let Err(stop_err) = stop(layout) {
            eprintln!("cleanup after the failed `up` also failed: {stop_err:#}");
        }
        return Err(err);
    }
    eprintln!("cluster up in {:.1?}", started.elapsed());
    Ok(cluster)
}

/// True when all daemons run, the API server is ready and the node is Ready.
fn healthy(layout: &Layout) -> bool {
    if DAEMONS
        .iter()
        .any(|d| process::running(layout, d).is_none())
    {
        return false;
    }
    let kc = layout.kubeconfig();
    kubectl::output(layout, &kc, &["get", "--raw", "/readyz"]).is_ok()
        && kubectl::output(
            layout,
            &kc,
            &[
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
        )
        .is_ok_and(|s| s.trim() == "True")
}

/// Paths of the generated kubeconfigs and certificates.
struct Files {
    ca: PathBuf,
    ca_key: PathBuf,
    sa_pub: PathBuf,
    sa_key: PathBuf,
    apiserver: (PathBuf, PathBuf),
    apiserver_kubelet_client: (PathBuf, PathBuf),
    kubelet_serving: (PathBuf, PathBuf),
    controller_manager_kc: PathBuf,
    scheduler_kc: PathBuf,
    kubelet_kc: PathBuf,
    proxy_kc: PathBuf,
}

/// Issues certificates and writes kubeconfigs and daemon configs.
fn write_files(layout: &Layout) -> anyhow::Result<Files> {
    let pki = Pki::ensure(&layout.pki())?;
    let config = layout.config();
    let ca = pki.ca();
    let client = |name: &str, cn: &str, org: Option<&str>| {
        pki.issue(&Leaf {
            name,
            cn,
            org,
            sans: &[],
        })
    };
    let write_kc = |file: &str, pair: &crate::certs::KeyPair, user: &str| {
        let path = config.join(file);
        configs::write(
            &path,
            &configs::kubeconfig(&ca.cert, &pair.cert, &pair.key, user),
        )
        .map(|()| path)
    };
    let admin = client("admin", "stateward-admin", Some("system:masters"))?;
    configs::write(
        &layout.kubeconfig(),
        &configs::kubeconfig(&ca.cert, &admin.cert, &admin.key, "stateward-admin"),
    )?;
    let cm = client("controller-manager", "system:kube-controller-manager", None)?;
    let sched = client("scheduler", "system:kube-scheduler", None)?;
    let kubelet = client(
        "kubelet-client",
        &format!("system:node:{NODE_NAME}"),
        Some("system:nodes"),
    )?;
    let proxy = client("kube-proxy", "system:kube-proxy", None)?;
    let apiserver_kubelet_client = client(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
    )?;
    let apiserver_sans: Vec<String> = [
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
        &format!("IP:{NODE_IP}"),
        &format!("IP:{KUBERNETES_SERVICE_IP}"),
        "IP:127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let apiserver = pki.issue(&Leaf {
        name: "apiserver",
        cn: "kube-apiserver",
        org: None,
        sans: &apiserver_sans,
    })?;
    let kubelet_serving = pki.issue(&Leaf {
        name: "kubelet-serving",
        cn: NODE_NAME,
        org: None,
        sans: &[format!("DNS:{NODE_NAME}"), format!("IP:{NODE_IP}")],
    })?;
    let sa = pki.service_account();
    let files = Files {
        ca: ca.cert.clone(),
        ca_key: ca.key.clone(),
        sa_pub: sa.cert,
        sa_key: sa.key,
        apiserver: (apiserver.cert, apiserver.key),
        apiserver_kubelet_client: (apiserver_kubelet_client.cert, apiserver_kubelet_client.key),
        kubelet_serving: (kubelet_serving.cert, kubelet_serving.key),
        controller_manager_kc: write_kc(
            "controller-manager.kubeconfig",
            &cm,
            "controller-manager",
        )?,
        scheduler_kc: write_kc("scheduler.kubeconfig", &sched, "scheduler")?,
        kubelet_kc: write_kc("kubelet.kubeconfig", &kubelet, "kubelet")?,
        proxy_kc: write_kc("kube-proxy.kubeconfig", &proxy, "kube-proxy")?,
    };
    configs::write(
        &config.join("containerd.toml"),
        &configs::containerd(layout),
    )?;
    configs::write(
        &layout.cni_conf().join("10-stateward.conflist"),
        &configs::cni(layout),
    )?;
    // Pods with dnsPolicy Default (CoreDNS itself) get no upstream resolver: hermetic.
    let resolv = config.join("resolv.conf");
    configs::write(&resolv, "")?;
    configs::write(
        &config.join("kubelet.yaml"),
        &configs::kubelet(
            layout,
            &configs::KubeletFiles {
                ca: &files.ca,
                serving_cert: &files.kubelet_serving.0,
                serving_key: &files.kubelet_serving.1,
                resolv_conf: &resolv,
            },
        ),
    )?;
    configs::write(
        &config.join("kube-proxy.yaml"),
        &configs::kube_proxy(&files.proxy_kc),
    )?;
    Ok(files)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn start(layout: &Layout, infra: &[images::Built]) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let k8s = components::kubernetes();
    let bin = |name: &str| k8s.binary(layout, name);
    network::setup()?;
    let f = write_files(layout)?;
    for dir in [layout.volumes(), layout.kubelet_root(), layout.cni_ipam()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }

    let etcd_url = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let peer_url = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    process::start(
        layout,
        &Daemon::new(
            "etcd",
            components::etcd().binary(layout, "etcd"),
            vec![
                "--name=stateward".into(),
                format!("--data-dir={}", s(&layout.run().join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=stateward={peer_url}"),
                // A throwaway dev cluster: durability is not worth the fsync latency.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        ),
    )?;
    let containerd_config = layout.config().join("containerd.toml");
    raise_open_files_limit();
    process::start(
        layout,
        &Daemon::new(
            "containerd",
            cmd::require("containerd")?,
            vec!["--config".into(), s(&containerd_config)],
        ),
    )?;
    process::wait_until(
        layout,
        "etcd",
        "etcd to listen",
        Duration::from_secs(30),
        || TcpStream::connect(("127.0.0.1", ETCD_CLIENT_PORT)).is_ok(),
    )?;

    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--bind-address={NODE_IP}"),
        format!("--advertise-address={NODE_IP}"),
        format!("--secure-port={APISERVER_PORT}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--client-ca-file={}", s(&f.ca)),
        format!("--tls-cert-file={}", s(&f.apiserver.0)),
        format!("--tls-private-key-file={}", s(&f.apiserver.1)),
        format!(
            "--kubelet-client-certificate={}",
            s(&f.apiserver_kubelet_client.0)
        ),
        format!("--kubelet-client-key={}", s(&f.apiserver_kubelet_client.1)),
        format!("--kubelet-certificate-authority={}", s(&f.ca)),
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--service-account-key-file={}", s(&f.sa_pub)),
        format!("--service-account-signing-key-file={}", s(&f.sa_key)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    process::start(
        layout,
        &Daemon::new("kube-apiserver", bin("kube-apiserver"), apiserver_args),
    )?;

    // Import the infra images while the API server starts.
    process::wait_until(
        layout,
        "containerd",
        "containerd's socket",
        Duration::from_secs(30),
        || {
            cmd::output(
                Command::new("ctr")
                    .arg("--address")
                    .arg(layout.containerd_socket())
                    .arg("version"),
            )
            .is_ok()
        },
    )?;
    images::import(layout, infra)?;

    let kc = layout.kubeconfig();
    process::wait_until(
        layout,
        "kube-apiserver",
        "the API server to be ready",
        Duration::from_secs(90),
        || kubectl::output(layout, &kc, &["get", "--raw", "/readyz"]).is_ok(),
    )?;
    eprintln!("  api server ready after {:.1?}", t0.elapsed());

    let kube_common = |kubeconfig: &Path| {
        vec![
            format!("--kubeconfig={}", s(kubeconfig)),
            format!("--authentication-kubeconfig={}", s(kubeconfig)),
            format!("--authorization-kubeconfig={}", s(kubeconfig)),
            "--bind-address=127.0.0.1".into(),
            "--leader-elect=false".into(),
        ]
    };
    let mut cm_args = kube_common(&f.controller_manager_kc);
    cm_args.extend([
        format!("--service-account-private-key-file={}", s(&f.sa_key)),
        format!("--root-ca-file={}", s(&f.ca)),
        format!("--cluster-signing-cert-file={}", s(&f.ca)),
        format!("--cluster-signing-key-file={}", s(&f.ca_key)),
        "--use-service-account-credentials=true".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        // The CNI config carries the pod subnet: no per-node CIDR allocation.
        "--allocate-node-cidrs=false".into(),
    ]);
    process::start(
        layout,
        &Daemon::new(
            "kube-controller-manager",
            bin("kube-controller-manager"),
            cm_args,
        ),
    )?;
    process::start(
        layout,
        &Daemon::new(
            "kube-scheduler",
            bin("kube-scheduler"),
            kube_common(&f.scheduler_kc),
        ),
    )?;
    process::start(
        layout,
        &Daemon::new(
            "kubelet",
            bin("kubelet"),
            vec![
                format!("--config={}", s(&layout.config().join("kubelet.yaml"))),
                format!("--kubeconfig={}", s(&f.kubelet_kc)),
                format!("--root-dir={}", s(&layout.kubelet_root())),
                format!("--node-ip={NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
                "--v=1".into(),
            ],
        ),
    )?;
    process::start(
        layout,
        &Daemon::new(
            "kube-proxy",
            bin("kube-proxy"),
            vec![format!(
                "--config={}",
                s(&layout.config().join("kube-proxy.yaml"))
            )],
        ),
    )?;

    kubectl::with_input(
        layout,
        &kc,
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &addons::manifests(layout),
    )
    .context("apply the add-ons (CoreDNS, local-path provisioner)")?;

    process::wait_until(
        layout,
        "kubelet",
        "the node to be Ready",
        Duration::from_secs(90),
        || {
            kubectl::output(
                layout,
                &kc,
                &[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ],
            )
            .is_ok_and(|s| s.trim() == "True")
        },
    )?;
    eprintln!("  node Ready after {:.1?}", t0.elapsed());
    // After a warm restart the API still shows the previous run's pod status: wait for pods
    // whose containers exist in this containerd (emptied by `down`).
    for (ns, selector) in [
        ("kube-system", "k8s-app=kube-dns"),
        ("local-path-storage", "app=local-path-provisioner"),
    ] {
        process::wait_until(
            layout,
            "kubelet",
            &format!("a Ready pod {selector} in {ns}"),
            Duration::from_secs(120),
            || fresh_ready_pod(layout, &kc, ns, selector),
        )?;
    }
    // End to end: the DNS Service answers through kube-proxy's rules.
    let dns: std::net::Ipv4Addr = DNS_SERVICE_IP.parse().context("DNS service IP")?;
    let api_ip: std::net::Ipv4Addr = KUBERNETES_SERVICE_IP.parse().context("service IP")?;
    process::wait_until(
        layout,
        "kube-proxy",
        "cluster DNS to resolve kubernetes.default",
        Duration::from_secs(60),
        || {
            network::resolve_a(
                dns,
                "kubernetes.default.svc.cluster.local",
                Duration::from_millis(500),
            )
            .is_ok_and(|ips| ips.contains(&api_ip))
        },
    )?;
    for d in DAEMONS {
        process::check_alive(layout, d)?;
    }
    eprintln!("  add-ons available after {:.1?}", t0.elapsed());
    Ok(())
}

/// True when a pod matching `selector` is Ready and runs containers that exist in our
/// containerd right now.
fn fresh_ready_pod(layout: &Layout, kubeconfig: &Path, ns: &str, selector: &str) -> bool {
    let Ok(existing) = cmd::output(ctr(layout).args(["containers", "ls", "-q"])) else {
        return false;
    };
    let Ok(pods) = kubectl::output(
        layout,
        kubeconfig,
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status} \
             {.status.containerStatuses[*].containerID}{\"\\n\"}{end}",
        ],
    ) else {
        return false;
    };
    pods.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("True")
            && words.all(|id| {
                id.strip_prefix("containerd://")
                    .is_some_and(|id| existing.lines().any(|l| l == id))
            })
            && line.contains("containerd://")
    })
}

/// Stops every daemon, container and pod of the cluster and removes its mounts, network
/// namespaces and links. Keeps the state (etcd data, images, certificates).
fn stop(layout: &Layout) -> anyhow::Result<()> {
    // Kubernetes first, so nothing restarts containers while they are being removed.
    let kubernetes: Vec<&str> = DAEMONS
        .iter()
        .copied()
        .filter(|n| *n != "containerd" && *n != "etcd")
        .collect();
    process::stop_all(layout, &kubernetes, Duration::from_secs(3))?;
    let mut netns = Vec::new();
    if process::running(layout, "containerd").is_some() {
        netns = remove_containers(layout).context("remove the node's containers")?;
    }
    process::stop(layout, "containerd", Duration::from_secs(10))?;
    // Whatever survived (containerd had died before `down`): pod processes are exactly the
    // members of the kubelet's pod cgroups, and the shims serve our socket only.
    kill_pod_processes()?;
    kill_our_shims(layout)?;
    process::stop(layout, "etcd", Duration::from_secs(10))?;
    network::delete_netns(&netns)?;
    network::unmount_below(&layout.run())?;
    network::teardown()?;
    network::remove_kube_iptables_chains()?;
    remove_pod_cgroups();
    if layout.cni_ipam().exists() {
        std::fs::remove_dir_all(layout.cni_ipam()).context("remove the IPAM state")?;
    }
    Ok(())
}

/// `down`: stops the cluster; `purge` also deletes its state (not the build caches).
pub fn down(layout: &Layout, purge: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let _lock = Lock::take(layout)?;
    stop(layout)?;
    eprintln!("cluster stopped in {:.1?}", started.elapsed());
    if purge && layout.run().exists() {
        std::fs::remove_dir_all(layout.run())
            .with_context(|| format!("remove {}", layout.run().display()))?;
    }
    Ok(())
}

fn ctr(layout: &Layout) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address")
        .arg(layout.containerd_socket())
        .args(["--namespace", "k8s.io"]);
    c
}

/// Kills and deletes every task and container of our containerd; returns the pods'
/// network namespaces (named, under /run/netns) for removal.
fn remove_containers(layout: &Layout) -> anyhow::Result<Vec<String>> {
    let mut netns = Vec::new();
    let containers = cmd::output(ctr(layout).args(["containers", "ls", "-q"]))?;
    for id in containers.lines().filter(|l| !l.is_empty()) {
        if let Ok(info) = cmd::output(ctr(layout).args(["containers", "info", id])) {
            netns.extend(network_namespace(&info));
        }
    }
    let tasks = cmd::output(ctr(layout).args(["tasks", "ls", "-q"]))?;
    for id in tasks.lines().filter(|l| !l.is_empty()) {
        // Already-exited tasks refuse the signal: fine, delete follows.
        let _ = cmd::run(ctr(layout).args(["tasks", "kill", "--all", "-s", "SIGKILL", id]));
    }
    // Deleting the last task of a pod also ends its sandbox's shim: poll the list until empty.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = cmd::output(ctr(layout).args(["tasks", "ls", "-q"]))?;
        let left: Vec<&str> = left.lines().filter(|l| !l.is_empty()).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("tasks still present after SIGKILL: {left:?}");
        }
        for id in left {
            let _ = cmd::run(ctr(layout).args(["tasks", "delete", "--force", id]));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in containers.lines().filter(|l| !l.is_empty()) {
        cmd::run(ctr(layout).args(["containers", "delete", id]))
            .with_context(|| format!("delete container {id}"))?;
    }
    netns.sort();
    netns.dedup();
    Ok(netns)
}

/// The named network namespace in a sandbox's `ctr containers info` JSON.
fn network_namespace(info: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v["Spec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")?["path"]
        .as_str()
        .and_then(|p| {
            p.strip_prefix("/var/run/netns/")
                .or(p.strip_prefix("/run/netns/"))
        })
        .map(str::to_string)
}

/// Cgroup directories the kubelet creates (cgroupfs driver, v1 hierarchies).
fn pod_cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("kubepods"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn kill_pod_processes() -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for root in pod_cgroup_roots() {
        let out = Command::new("find")
            .arg(&root)
            .args(["-name", "cgroup.procs"])
            .output()
            .context("list pod cgroups")?;
        for file in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(text) = std::fs::read_to_string(file) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    for pid in pids {
        // SAFETY: kill(2); these PIDs are members of our pods' cgroups.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    Ok(())
}

fn kill_our_shims(layout: &Layout) -> anyhow::Result<()> {
    let socket = s(&layout.containerd_socket());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
        if is_shim && args.iter().any(|a| a == &socket) {
            // SAFETY: kill(2); a shim serving our containerd's socket.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    Ok(())
}

/// Removes the (by now empty) pod cgroups, deepest first; best effort.
fn remove_pod_cgroups() {
    for root in pod_cgroup_roots() {
        if let Ok(out) = Command::new("find")
            .arg(&root)
            .args(["-depth", "-type", "d"])
            .output()
        {
            for dir in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// `up` + `images`: everything the project's tests and the demo need.
pub fn up_with_images(layout: &Layout) -> anyhow::Result<Cluster> {
    let cluster = up(layout)?;
    let built = images::build_project(layout)?;
    images::import(layout, &built)?;
    Ok(cluster)
}

/// Fails clearly when a component's binary is missing (someone ran `down --purge` on the
/// build caches by hand, or `up` never ran).
pub fn require_binary(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!("{} is missing: run `cargo dev up` first", path.display());
    }
    Ok(())
}

/// Containers get containerd's own open-files limit (the CRI plugin sets none, so containerd,
/// its shims and runc pass theirs on). A shell's usual 1024 or 20000 fails Elasticsearch's
/// bootstrap check (>= 65535) in pods that bind a non-loopback address, so containerd (and
/// with it every container) starts with the limit systemd gives containerd.service on Debian:
/// 1048576. Raising the hard limit needs CAP_SYS_RESOURCE; without it (some sandboxes) the
/// soft limit is raised to the hard one and a warning says what containers will get.
fn raise_open_files_limit() {
    const WANTED: libc::rlim_t = 1 << 20;
    let wanted = libc::rlimit {
        rlim_cur: WANTED,
        rlim_max: WANTED,
    };
    // SAFETY: setrlimit(2)/getrlimit(2) only read/write the struct we pass; the limit applies
    // to this process and the children it starts from now on.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return;
        }
        let error = std::io::Error::last_os_error();
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) == 0 {
            current.rlim_cur = current.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &current);
        }
        eprintln!(
            "warning: cannot raise the open files limit to {WANTED} ({error}); containers get \
             {} (Elasticsearch's bootstrap check wants at least 65535)",
            current.rlim_cur
        );
    }
}
