//! Machine prerequisites: Debian packages and Go.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::layout::Layout;

/// Runs `e2e/scripts/install-prereqs.sh`, which returns at once when everything is installed
/// and otherwise installs the missing Debian packages (CI starts from a fresh machine).
pub fn ensure(layout: &Layout) -> anyhow::Result<()> {
    let script = layout.repo().join("e2e/scripts/install-prereqs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("run {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its messages above",
            script.display()
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the local cluster needs root (network bridge, mounts, containerd, kubelet); \
             run `cargo dev` as root"
        );
    }
    Ok(())
}

/// The `go` command: PATH first, then the usual install location.
pub fn go() -> anyhow::Result<PathBuf> {
    crate::cmd::which("go")
        .or_else(|| {
            let p = PathBuf::from("/usr/local/go/bin/go");
            p.is_file().then_some(p)
        })
        .context("Go is not installed (need >= 1.21; it fetches the pinned toolchain itself)")
}
