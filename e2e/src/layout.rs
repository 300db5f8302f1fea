//! Where the harness keeps things on the machine.
//!
//! Everything lives under `~/.cache/stateward/` (override: `STATEWARD_CACHE_DIR`), never in the
//! repository: build outputs are keyed by component version so several checkouts share them,
//! and everything a running cluster owns sits under `run/` so `down --purge` can wipe exactly
//! that (and nothing that is expensive to rebuild).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Paths of the harness on this machine.
#[derive(Debug, Clone)]
pub struct Layout {
    cache: PathBuf,
    repo: PathBuf,
}

impl Layout {
    /// The layout for this user and this checkout.
    pub fn discover() -> anyhow::Result<Self> {
        let cache = match std::env::var_os("STATEWARD_CACHE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set")?;
                PathBuf::from(home).join(".cache/stateward")
            }
        };
        // The e2e crate is compiled from the checkout it runs in, so its manifest dir locates
        // the repository (e2e/upstream/*, charts/, examples/) both for `cargo dev` and tests.
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("e2e crate has no parent directory")?
            .to_path_buf();
        Ok(Self { cache, repo })
    }

    pub fn cache(&self) -> &Path {
        &self.cache
    }

    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// `e2e/upstream/<name>`: the pinned go.mod of one upstream component.
    pub fn upstream(&self, name: &str) -> PathBuf {
        self.repo.join("e2e/upstream").join(name)
    }

    /// Version-keyed directory of one component's binaries.
    pub fn bin_dir(&self, component: &str, version: &str) -> PathBuf {
        self.cache
            .join("bin")
            .join(format!("{component}-{version}"))
    }

    /// Build logs (kept so a failure can be inspected after the fact).
    pub fn build_logs(&self) -> PathBuf {
        self.cache.join("build-logs")
    }

    /// Cached root filesystems (debootstrap output and derived ones).
    pub fn rootfs_dir(&self) -> PathBuf {
        self.cache.join("rootfs")
    }

    /// Scratch space for assembling images (OCI layouts, archives).
    pub fn image_work(&self) -> PathBuf {
        self.cache.join("images")
    }

    /// State of the running cluster; `down --purge` removes it.
    pub fn run(&self) -> PathBuf {
        self.cache.join("run")
    }

    pub fn pki(&self) -> PathBuf {
        self.run().join("pki")
    }

    pub fn logs(&self) -> PathBuf {
        self.run().join("logs")
    }

    pub fn pids(&self) -> PathBuf {
        self.run().join("pids")
    }

    pub fn config(&self) -> PathBuf {
        self.run().join("config")
    }

    /// The admin kubeconfig that `cargo dev kubeconfig` prints.
    pub fn kubeconfig(&self) -> PathBuf {
        self.run().join("admin.kubeconfig")
    }

    pub fn containerd_root(&self) -> PathBuf {
        self.run().join("containerd/root")
    }

    pub fn containerd_state(&self) -> PathBuf {
        self.run().join("containerd/state")
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.run().join("containerd/containerd.sock")
    }

    pub fn kubelet_root(&self) -> PathBuf {
        self.run().join("kubelet")
    }

    /// Where the local-path provisioner creates volume directories.
    pub fn volumes(&self) -> PathBuf {
        self.run().join("volumes")
    }

    /// Host-local IPAM allocations (per-run: emptied by `down`).
    pub fn cni_ipam(&self) -> PathBuf {
        self.run().join("cni/ipam")
    }

    pub fn cni_conf(&self) -> PathBuf {
        self.run().join("cni/net.d")
    }

    /// Markers recording which image contents were imported into containerd.
    pub fn image_stamps(&self) -> PathBuf {
        self.run().join("image-stamps")
    }

    /// Serialises `up`/`down` between processes (two test binaries, a shell and a test, ...).
    pub fn lock_file(&self) -> PathBuf {
        self.cache.join("cluster.lock")
    }
}
