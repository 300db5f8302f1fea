//! Configuration files of the node's daemons, rendered from the layout and network constants.

use std::path::Path;

use anyhow::Context;

use crate::layout::Layout;
use crate::network::{
    CLUSTER_DOMAIN, CNI_BRIDGE, DNS_SERVICE_IP, NODE_IP, NODE_NAME, POD_GATEWAY, POD_SUBNET,
    apiserver_url,
};

/// The sandbox ("pause") image, built locally and pinned in containerd's CRI config.
pub const PAUSE_IMAGE: &str = "stateward.local/pause:3.10";

/// Writes `contents` to `path` (creating parents).
pub fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

/// containerd 1.6 (Debian) config. The private root, state and socket keep it apart from any
/// system containerd.
pub fn containerd(layout: &Layout) -> String {
    let root = layout.containerd_root();
    let state = layout.containerd_state();
    let sock = layout.containerd_socket();
    let cni_conf = layout.cni_conf();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{sock}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM's capability bounding set lacks CAP_SYS_RESOURCE: without this, runc fails with
  # "nsexec: failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd on this machine: cgroupfs, like the kubelet.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"#,
        root = root.display(),
        state = state.display(),
        sock = sock.display(),
        cni_conf = cni_conf.display(),
    )
}

/// CNI: one bridge, host-local IPAM with its state under our run directory. No IP
/// masquerading: nothing in the cluster talks off-host, and it would leave iptables rules.
pub fn cni(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "stateward",
        "plugins": [{
            "type": "bridge",
            "bridge": CNI_BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            // A pod reaching itself through its Service goes out and back in the same port.
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": layout.cni_ipam(),
            }
        }]
    })
    .to_string()
}

/// A kubeconfig with file references (the files live beside it under run/pki).
pub fn kubeconfig(ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Config
clusters:
- name: stateward-dev
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: stateward-dev
  context:
    cluster: stateward-dev
    user: {user}
current-context: stateward-dev
"#,
        server = apiserver_url(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

pub struct KubeletFiles<'a> {
    pub ca: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
    pub resolv_conf: &'a Path,
}

pub fn kubelet(layout: &Layout, files: &KubeletFiles) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# This VM mounts cgroup v1; recent kubelets refuse it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{sock}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
clusterDomain: {CLUSTER_DOMAIN}
clusterDNS:
- {DNS_SERVICE_IP}
resolvConf: {resolv}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
failSwapOn: false
podLogsDir: {pod_logs}
# A dev machine's disk is shared with builds: never evict pods or GC our imported images
# (they cannot be pulled back: there is no registry).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
"#,
        sock = layout.containerd_socket().display(),
        ca = files.ca.display(),
        resolv = files.resolv_conf.display(),
        cert = files.serving_cert.display(),
        key = files.serving_key.display(),
        pod_logs = layout.run().join("pod-logs").display(),
    )
}

pub fn kube_proxy(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack sysctls alone (0 = do not set).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = kubeconfig.display(),
    )
}
