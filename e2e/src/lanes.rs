//! The whole suite in lanes: every test binary of the workspace is built once, then the binaries
//! run side by side, `lanes` at a time, longest first (most of a long scenario's time is spent
//! waiting on Cassandra, Elasticsearch or Kubernetes, not on the CPU). Each binary's output is
//! kept apart and printed whole when it ends, with cargo's `test result:` lines, so a reader
//! (and `.ci/run`'s totals) sees it as `cargo test` prints it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// One test executable as cargo built it.
#[derive(Debug, Clone)]
pub struct TestBinary {
    pub name: String,
    pub executable: PathBuf,
    /// Where `cargo test` would run it (its package's directory).
    pub package_dir: PathBuf,
}

/// Seconds each long scenario took on this machine (2 cores), to start the longest first;
/// anything not listed is short.
const EXPECTED_SECONDS: &[(&str, u64)] = &[
    ("cassandra_restarts", 920),
    ("cassandra_scaling", 520),
    ("elasticsearch_scaling", 420),
    ("pilot_cassandra", 400),
    ("pilot_elasticsearch", 240),
    ("operator_cassandra", 200),
    ("elasticsearch_dist", 120),
    ("chart_operator", 90),
    ("operator_health", 60),
];

fn expected(name: &str) -> u64 {
    EXPECTED_SECONDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(10, |(_, s)| *s)
}

/// Builds every test target of the workspace (release) and lists the executables.
pub fn build(repo: &Path) -> anyhow::Result<Vec<TestBinary>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo)
        .args(["test", "--release", "--workspace", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo test --no-run")?;
    anyhow::ensure!(out.status.success(), "building the tests failed");
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let (Some(executable), Some(manifest)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            continue;
        };
        let name = message["target"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let package_dir = Path::new(manifest)
            .parent()
            .context("manifest path without a directory")?
            .to_path_buf();
        binaries.push(TestBinary {
            name,
            executable: executable.into(),
            package_dir,
        });
    }
    binaries.sort_by_key(|b| std::cmp::Reverse(expected(&b.name)));
    Ok(binaries)
}

/// What one binary printed and how it ended.
struct Finished {
    name: String,
    success: bool,
    took: Duration,
}

/// Runs `binaries` in `lanes` lanes with `env`; true when every one passed.
pub fn run(binaries: Vec<TestBinary>, lanes: usize, env: &[(&str, &Path)]) -> bool {
    let queue = Arc::new(Mutex::new(VecDeque::from(binaries)));
    let printing = Arc::new(Mutex::new(Vec::<Finished>::new()));
    let workers: Vec<_> = (0..lanes.max(1))
        .map(|_| {
            let (queue, printing) = (queue.clone(), printing.clone());
            let env: Vec<(String, PathBuf)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_path_buf()))
                .collect();
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(binary) = next else { return };
                    let finished = run_one(&binary, &env);
                    printing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(finished);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let finished = printing.lock().unwrap_or_else(|p| p.into_inner());
    println!("\ntest binaries, in the order they ended:");
    for f in finished.iter() {
        let word = if f.success { "ok" } else { "FAILED" };
        println!("  {:<28} {word:<6} {:>7.1} s", f.name, f.took.as_secs_f64());
    }
    finished.iter().all(|f| f.success)
}

fn run_one(binary: &TestBinary, env: &[(String, PathBuf)]) -> Finished {
    let started = Instant::now();
    let output = Command::new(&binary.executable)
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())))
        .stdin(Stdio::null())
        .output();
    let took = started.elapsed();
    // One binary's whole output at once, so lanes never interleave lines.
    let (success, text) = match output {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("could not start: {e}\n")),
    };
    println!(
        "\n===== {} ({}, {:.1} s) =====\n{text}",
        binary.name,
        if success { "ok" } else { "FAILED" },
        took.as_secs_f64()
    );
    Finished {
        name: binary.name.clone(),
        success,
        took,
    }
}
