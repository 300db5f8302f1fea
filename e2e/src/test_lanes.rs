//! `cargo dev test` without arguments: every test binary of the workspace is built once, then
//! run in two lanes side by side. The long rolling-restart scenario has a lane of its own and
//! every other binary runs, one after another, in the second: each end-to-end test has its
//! own namespace and operator, so the shared cluster keeps them apart, and the machine has
//! room for two scenarios at once (not for more: the databases are CPU-bound on two cores).
//!
//! Each binary's output is kept and printed whole when it ends, in cargo's format (a
//! `Running` line, then the binary's own `test result:` lines), so logs and the counts
//! `.ci/run` prints stay readable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd::describe;

/// Scenarios long enough to get a lane of their own (about a third of the whole run each).
const OWN_LANE: &[&str] = &["cassandra_restarts"];

/// One test binary cargo built.
#[derive(Debug, Clone, PartialEq)]
pub struct TestBinary {
    /// The target's name (`cassandra_scaling`, or the crate's name for unit tests).
    pub name: String,
    /// `lib`, `bin` or `test`.
    pub kind: String,
    pub executable: PathBuf,
    /// Cargo runs a test binary in its package's directory; so does this.
    pub package_dir: PathBuf,
}

/// Reads the binaries from `cargo test --no-run --message-format=json` output.
pub fn binaries_of(messages: &str) -> anyhow::Result<Vec<TestBinary>> {
    let mut found = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).context("a cargo message is not JSON")?;
        let is_test = v["reason"] == "compiler-artifact" && v["profile"]["test"] == true;
        let Some(executable) = v["executable"].as_str().filter(|_| is_test) else {
            continue;
        };
        let manifest = v["manifest_path"]
            .as_str()
            .context("a test artifact without manifest_path")?;
        found.push(TestBinary {
            name: v["target"]["name"].as_str().unwrap_or_default().to_string(),
            kind: v["target"]["kind"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            executable: executable.into(),
            package_dir: Path::new(manifest)
                .parent()
                .context("manifest_path has no directory")?
                .to_path_buf(),
        });
    }
    found.sort_by(|a, b| (&a.package_dir, &a.name).cmp(&(&b.package_dir, &b.name)));
    Ok(found)
}

/// Splits the binaries into the lanes they run in.
pub fn lanes(binaries: Vec<TestBinary>) -> Vec<Vec<TestBinary>> {
    let (own, rest): (Vec<_>, Vec<_>) = binaries
        .into_iter()
        .partition(|b| b.kind == "test" && OWN_LANE.contains(&b.name.as_str()));
    let mut lanes: Vec<Vec<TestBinary>> = own.into_iter().map(|b| vec![b]).collect();
    lanes.push(rest);
    lanes.retain(|l| !l.is_empty());
    lanes
}

/// Builds every test binary of the workspace (release, as the images are).
pub fn build(repo: &Path, cargo: &str) -> anyhow::Result<Vec<TestBinary>> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo).args([
        "test",
        "--release",
        "--workspace",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(&cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", describe(&cmd), out.status);
    }
    binaries_of(&String::from_utf8_lossy(&out.stdout))
}

/// Runs the lanes side by side; returns the binaries that failed.
pub fn run(lanes: &[Vec<TestBinary>], env: &[(&str, &str)]) -> Vec<String> {
    let failed = Mutex::new(Vec::new());
    let print = Mutex::new(());
    let (failed_ref, print_ref) = (&failed, &print);
    std::thread::scope(|s| {
        for lane in lanes {
            s.spawn(move || {
                for binary in lane {
                    let (ok, output) = run_one(binary, env);
                    let _guard = print_ref.lock().unwrap_or_else(|p| p.into_inner());
                    print!("{output}");
                    if !ok {
                        failed_ref
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(binary.name.clone());
                    }
                }
            });
        }
    });
    failed.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// Runs one binary with its output captured; returns whether it passed and what to print.
fn run_one(binary: &TestBinary, env: &[(&str, &str)]) -> (bool, String) {
    let started = Instant::now();
    let mut header = format!(
        "     Running {} `{}` ({})\n",
        binary.kind,
        binary.name,
        binary.executable.display()
    );
    let mut cmd = Command::new(&binary.executable);
    cmd.current_dir(&binary.package_dir)
        .stdin(Stdio::null())
        .envs(env.iter().copied());
    match cmd.output() {
        Ok(out) => {
            header.push_str(&String::from_utf8_lossy(&out.stdout));
            header.push_str(&String::from_utf8_lossy(&out.stderr));
            header.push_str(&format!(
                "     Finished `{}` in {:.0?}: {}\n",
                binary.name,
                started.elapsed(),
                out.status
            ));
            (out.status.success(), header)
        }
        Err(e) => {
            header.push_str(&format!("cannot start {}: {e}\n", describe(&cmd)));
            (false, header)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str, kind: &str, test: bool, executable: Option<&str>) -> String {
        serde_json::json!({
            "reason": "compiler-artifact",
            "manifest_path": "/repo/e2e/Cargo.toml",
            "target": {"name": name, "kind": [kind]},
            "profile": {"test": test},
            "executable": executable,
        })
        .to_string()
    }

    #[test]
    fn test_artifacts_become_lanes() -> anyhow::Result<()> {
        let messages = [
            artifact("cassandra_scaling", "test", true, Some("/t/cs")),
            artifact("dev", "bin", false, Some("/t/dev")),
            artifact("stateward_e2e", "lib", true, Some("/t/lib")),
            artifact("cassandra_restarts", "test", true, Some("/t/cr")),
            artifact("serde", "lib", false, None),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
            "   Compiling noise".to_string(),
        ]
        .join("\n");
        let found = binaries_of(&messages)?;
        let names: Vec<&str> = found.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["cassandra_restarts", "cassandra_scaling", "stateward_e2e"]
        );
        assert_eq!(found[0].package_dir, Path::new("/repo/e2e"));
        let lanes = lanes(found);
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes[0][0].name, "cassandra_restarts");
        assert_eq!(lanes[1].len(), 2);
        Ok(())
    }
}
