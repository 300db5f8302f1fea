//! Host networking of the node: addresses, the node bridge, and teardown.
//!
//! This kernel has no `dummy` link type, so the node IP lives on a bridge of its own
//! (`stw0`, no ports): local addresses answer whatever the carrier state. Pods get a second
//! bridge (`stwcni0`) made by the CNI bridge plugin with host-local IPAM.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::cmd;

/// Node name registered by the kubelet.
pub const NODE_NAME: &str = "stateward-dev";
/// Bridge carrying the node IP.
pub const NODE_BRIDGE: &str = "stw0";
pub const NODE_IP: &str = "172.30.99.1";
pub const NODE_PREFIX: u8 = 24;
/// Bridge the CNI plugin attaches pods to.
pub const CNI_BRIDGE: &str = "stwcni0";
pub const POD_SUBNET: &str = "10.244.0.0/24";
pub const POD_GATEWAY: &str = "10.244.0.1";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// First service IP: the `kubernetes` Service.
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Fixed ports; all checked before start so a clash is reported clearly.
pub const APISERVER_PORT: u16 = 16443;
pub const ETCD_CLIENT_PORT: u16 = 23790;
pub const ETCD_PEER_PORT: u16 = 23800;
/// Ports the components bind with their defaults (kubelet, its healthz, kube-proxy's
/// healthz and metrics, controller-manager, scheduler).
pub const DEFAULT_PORTS: [(u16, &str); 6] = [
    (10250, "kubelet"),
    (10248, "kubelet healthz"),
    (10256, "kube-proxy healthz"),
    (10249, "kube-proxy metrics"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];

/// The API server URL used by kubeconfigs (host and pods alike).
pub fn apiserver_url() -> String {
    format!("https://{NODE_IP}:{APISERVER_PORT}")
}

/// Fails naming the owner when a port the cluster needs is taken by someone else.
pub fn check_ports_free() -> anyhow::Result<()> {
    let mut ports = vec![
        (APISERVER_PORT, "kube-apiserver"),
        (ETCD_CLIENT_PORT, "etcd client"),
        (ETCD_PEER_PORT, "etcd peer"),
    ];
    ports.extend(DEFAULT_PORTS);
    for (port, what) in ports {
        // Binding the wildcard address clashes with a listener on any address.
        if let Err(err) = std::net::TcpListener::bind(("0.0.0.0", port)) {
            let owner = Command::new("ss")
                .args(["-Hltnp", &format!("sport = :{port}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            anyhow::bail!(
                "port {port} (needed by {what}) is already taken ({err}); listener: {}. \
                 Stop that process (or `cargo dev down` if it is a stale cluster) and retry",
                if owner.is_empty() { "unknown" } else { &owner }
            );
        }
    }
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn write_sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("set sysctl {key}={value}"))
}

/// Creates the node bridge and the kernel settings Kubernetes networking relies on.
pub fn setup() -> anyhow::Result<()> {
    // Pods reach services and the node through the host: forwarding on, and bridged traffic
    // through netfilter so kube-proxy's DNAT is undone for replies between pods on a bridge.
    write_sysctl("net.ipv4.ip_forward", "1")?;
    write_sysctl("net.bridge.bridge-nf-call-iptables", "1")?;
    if !link_exists(NODE_BRIDGE) {
        cmd::run(Command::new("ip").args(["link", "add", NODE_BRIDGE, "type", "bridge"]))
            .context("create the node bridge (is the bridge module available?)")?;
    }
    let addrs =
        cmd::output(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", NODE_BRIDGE]))?;
    if !addrs.contains(&format!("{NODE_IP}/")) {
        cmd::run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{NODE_IP}/{NODE_PREFIX}"),
            "dev",
            NODE_BRIDGE,
        ]))
        .context("assign the node IP")?;
    }
    cmd::run(Command::new("ip").args(["link", "set", NODE_BRIDGE, "up"]))?;
    Ok(())
}

/// Removes named network namespaces (pods' namespaces: removing one removes its veth pair).
pub fn delete_netns(names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if Path::new("/run/netns").join(name).exists() {
            cmd::run(Command::new("ip").args(["netns", "delete", name]))
                .with_context(|| format!("delete network namespace {name}"))?;
        }
    }
    Ok(())
}

/// Removes the bridges and kube-proxy's nftables tables.
pub fn teardown() -> anyhow::Result<()> {
    for link in [CNI_BRIDGE, NODE_BRIDGE] {
        if link_exists(link) {
            cmd::run(Command::new("ip").args(["link", "delete", link]))
                .with_context(|| format!("delete link {link}"))?;
        }
    }
    // kube-proxy (nftables mode) owns exactly these tables.
    for family in ["ip", "ip6"] {
        let listed = Command::new("nft")
            .args(["list", "table", family, "kube-proxy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if listed {
            cmd::run(Command::new("nft").args(["delete", "table", family, "kube-proxy"]))
                .with_context(|| format!("delete nftables table {family} kube-proxy"))?;
        }
    }
    Ok(())
}

/// Removes the iptables chains the kubelet creates (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
/// KUBE-IPTABLES-HINT, ...) and the rules jumping to them, for IPv4 and IPv6. Only `KUBE-`
/// chains are touched: that prefix belongs to Kubernetes components.
pub fn remove_kube_iptables_chains() -> anyhow::Result<()> {
    for tool in ["iptables", "ip6tables"] {
        if cmd::which(tool).is_none() {
            continue;
        }
        for table in ["mangle", "filter", "nat"] {
            let Ok(rules) = cmd::output(Command::new(tool).args(["-w", "-t", table, "-S"])) else {
                continue;
            };
            for rule in rules.lines() {
                let Some(spec) = rule.strip_prefix("-A ") else {
                    continue;
                };
                let words: Vec<&str> = spec.split_whitespace().collect();
                let builtin = !words.first().is_some_and(|c| c.starts_with("KUBE-"));
                let jumps_to_kube = words
                    .windows(2)
                    .any(|w| w[0] == "-j" && w[1].starts_with("KUBE-"));
                if builtin && jumps_to_kube {
                    // -S prints quoted comments; pass the rule through a shell to unquote.
                    cmd::run(
                        Command::new("sh")
                            .arg("-c")
                            .arg(format!("{tool} -w -t {table} -D {spec}")),
                    )
                    .with_context(|| format!("delete {tool} rule {spec}"))?;
                }
            }
            let chains: Vec<String> = rules
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| c.starts_with("KUBE-"))
                .map(str::to_string)
                .collect();
            for flag in ["-F", "-X"] {
                for chain in &chains {
                    cmd::run(Command::new(tool).args(["-w", "-t", table, flag, chain]))
                        .with_context(|| format!("{tool} {flag} {chain} in {table}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Unmounts everything mounted below `root`, deepest first (pod volumes, container rootfs
/// overlays, shm). Lazy detach: a straggling reader must not block `down`.
pub fn unmount_below(root: &Path) -> anyhow::Result<usize> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    let prefix = format!("{}/", root.display());
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in &points {
        let c = std::ffi::CString::new(point.as_str()).context("mount point with NUL")?;
        // SAFETY: umount2 with a valid C string; failure is reported below.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = std::io::Error::last_os_error();
            // Already gone with its parent (stacked mounts): fine.
            if err.raw_os_error() != Some(libc::EINVAL) && err.raw_os_error() != Some(libc::ENOENT)
            {
                return Err(err).with_context(|| format!("unmount {point}"));
            }
        }
    }
    Ok(points.len())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Resolves `name` to IPv4 addresses by asking `server` directly (one UDP query, no
/// recursion needed): lets `up` prove that the cluster DNS Service answers through
/// kube-proxy's rules before declaring the cluster ready.
pub fn resolve_a(
    server: std::net::Ipv4Addr,
    name: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<std::net::Ipv4Addr>> {
    use std::net::{Ipv4Addr, UdpSocket};
    const ID: [u8; 2] = [0x53, 0x57];
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&ID);
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).context("DNS label too long")?;
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    let socket = UdpSocket::bind(("0.0.0.0", 0)).context("bind a UDP socket")?;
    socket.set_read_timeout(Some(timeout))?;
    socket
        .send_to(&query, (server, 53))
        .with_context(|| format!("send a DNS query to {server}"))?;
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .with_context(|| format!("no DNS answer from {server}"))?;
    let msg = &buf[..n];
    anyhow::ensure!(n >= 12 && msg[..2] == ID, "malformed DNS answer");
    let rcode = msg[3] & 0x0f;
    anyhow::ensure!(rcode == 0, "DNS answer code {rcode} for {name}");
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    // Skip the echoed question: our own encoding, same length.
    let mut pos = query.len();
    let mut out = Vec::new();
    for _ in 0..answers {
        // Owner name: a compression pointer (2 bytes) or labels ending in 0.
        while pos < n {
            let b = msg[pos];
            if b & 0xc0 == 0xc0 {
                pos += 2;
                break;
            }
            pos += 1 + usize::from(b);
            if b == 0 {
                break;
            }
        }
        anyhow::ensure!(pos + 10 <= n, "truncated DNS answer");
        let rtype = u16::from_be_bytes([msg[pos], msg[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([msg[pos + 8], msg[pos + 9]]));
        pos += 10;
        anyhow::ensure!(pos + len <= n, "truncated DNS record");
        if rtype == 1 && len == 4 {
            out.push(Ipv4Addr::new(
                msg[pos],
                msg[pos + 1],
                msg[pos + 2],
                msg[pos + 3],
            ));
        }
        pos += len;
    }
    Ok(out)
}
