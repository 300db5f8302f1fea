//! Running our kubectl and helm against the local cluster.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::cmd;
use crate::components;
use crate::layout::Layout;

/// A `kubectl` command bound to `kubeconfig`.
pub fn command(layout: &Layout, kubeconfig: &Path) -> Command {
    let mut c = Command::new(components::kubernetes().binary(layout, "kubectl"));
    c.arg("--kubeconfig").arg(kubeconfig);
    c
}

/// Runs kubectl and returns stdout; errors carry the arguments and stderr.
pub fn output(layout: &Layout, kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    cmd::output(command(layout, kubeconfig).args(args))
}

/// Runs kubectl with `stdin` as input (e.g. `apply -f -`).
pub fn with_input(
    layout: &Layout,
    kubeconfig: &Path,
    args: &[&str],
    stdin: &str,
) -> anyhow::Result<String> {
    use std::io::Write;
    let mut c = command(layout, kubeconfig);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("start `{}`", cmd::describe(&c)))?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(stdin.as_bytes())
        .context("write kubectl input")?;
    let out = child.wait_with_output().context("wait for kubectl")?;
    if !out.status.success() {
        anyhow::bail!(
            "`{}` failed ({}): {}",
            cmd::describe(&c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kubectl printed non-UTF-8")
}

/// Runs kubectl interactively (inherited stdio), returning its exit code.
pub fn passthrough(layout: &Layout, kubeconfig: &Path, args: &[String]) -> anyhow::Result<i32> {
    let status = command(layout, kubeconfig)
        .args(args)
        .status()
        .context("run kubectl")?;
    Ok(status.code().unwrap_or(1))
}

/// Runs our helm interactively with the cluster's kubeconfig, returning its exit code.
pub fn helm_passthrough(
    layout: &Layout,
    kubeconfig: &Path,
    args: &[String],
) -> anyhow::Result<i32> {
    let status = Command::new(components::helm().binary(layout, "helm"))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .status()
        .context("run helm")?;
    Ok(status.code().unwrap_or(1))
}
