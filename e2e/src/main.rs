//! `cargo dev <verb>`: the local real-Kubernetes harness (see docs/local-cluster.md).

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use stateward_e2e::cluster::{self, Cluster};
use stateward_e2e::layout::Layout;
use stateward_e2e::{images, kubectl};

#[derive(Parser)]
#[command(
    name = "cargo dev",
    about = "Local single-node Kubernetes for Stateward"
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Build what is missing and start the cluster (reuses a healthy one); prints the
    /// kubeconfig path.
    Up,
    /// Stop everything `up` started and remove its mounts, network namespaces and links.
    Down {
        /// Also delete the cluster state (etcd, containerd, certificates); build caches stay.
        #[arg(long)]
        purge: bool,
    },
    /// Print the kubeconfig path: `export KUBECONFIG=$(cargo dev kubeconfig)`.
    Kubeconfig,
    /// (Re)build the project's images and import them into the node.
    Images,
    /// `up` + `images`, install the chart and the example Cassandra cluster, show it.
    Demo,
    /// `up` + `images`, then `cargo test --release --workspace [ARGS]` against the cluster.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build an upstream tool the benchmarks use (kwok, eck, kubectl) and print its binary's path.
    Tool { name: String },
    /// Run our kubectl with the cluster's kubeconfig: `cargo dev kubectl -- get pods -A`.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run our helm with the cluster's kubeconfig.
    Helm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let layout = Layout::discover()?;
    match cli.verb {
        Verb::Up => {
            let cluster = cluster::up(&layout)?;
            println!("{}", cluster.kubeconfig().display());
        }
        Verb::Down { purge } => cluster::down(&layout, purge)?,
        Verb::Kubeconfig => println!("{}", layout.kubeconfig().display()),
        Verb::Images => {
            let built = images::build_project(&layout)?;
            images::import(&layout, &built)?;
        }
        Verb::Demo => {
            let cluster = cluster::up_with_images(&layout)?;
            demo(&cluster)?;
        }
        Verb::Test { args } => {
            let cluster = cluster::up_with_images(&layout)?;
            return test(&cluster, &args);
        }
        Verb::Tool { name } => {
            let (component, binary) = stateward_e2e::components::tool(&name)
                .with_context(|| format!("no tool named {name:?} (kwok, eck, kubectl)"))?;
            stateward_e2e::components::ensure_built(&layout, &component)?;
            println!("{}", component.binary(&layout, binary).display());
        }
        Verb::Kubectl { args } => {
            let kubeconfig = layout.kubeconfig();
            cluster::require_binary(&kubeconfig)?;
            return kubectl::passthrough(&layout, &kubeconfig, &args);
        }
        Verb::Helm { args } => {
            let kubeconfig = layout.kubeconfig();
            cluster::require_binary(&kubeconfig)?;
            return kubectl::helm_passthrough(&layout, &kubeconfig, &args);
        }
    }
    Ok(0)
}

/// Runs the workspace's tests against the cluster: all of them in lanes side by side (see
/// [`stateward_e2e::lanes`]; `STATEWARD_TEST_LANES`, default 2), or, with arguments, `cargo
/// test` with those, streaming its output.
fn test(cluster: &Cluster, args: &[String]) -> anyhow::Result<i32> {
    if args.is_empty() {
        let lanes = std::env::var("STATEWARD_TEST_LANES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        let binaries = stateward_e2e::lanes::build(cluster.layout().repo())?;
        let env = [
            ("KUBECONFIG", cluster.kubeconfig()),
            ("STATEWARD_E2E", Path::new("1")),
        ];
        let passed = stateward_e2e::lanes::run(binaries, lanes, &env);
        return Ok(if passed { 0 } else { 1 });
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(cluster.layout().repo())
        .args(["test", "--release", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("STATEWARD_E2E", "1")
        .status()
        .context("run cargo test")?;
    Ok(status.code().unwrap_or(1))
}

/// Installs the chart and the example clusters (every database Stateward runs), waits until
/// each is Available, and shows them.
fn demo(cluster: &Cluster) -> anyhow::Result<()> {
    let repo = cluster.layout().repo();
    let chart = repo.join("charts/stateward");
    helm(
        cluster,
        &[
            "upgrade",
            "--install",
            "stateward",
            &chart.display().to_string(),
            "--namespace",
            "stateward-system",
            "--create-namespace",
            // The local images, loaded into the node by `images`.
            "--set",
            "image.repository=stateward.local/operator,image.tag=dev,image.pullPolicy=Never",
            "--set",
            "pilot.image.repository=stateward.local/pilot,pilot.image.tag=dev",
            "--set",
            "cassandra.image.repository=stateward.local/cassandra",
            "--set",
            "elasticsearch.image.repository=stateward.local/elasticsearch",
            "--wait",
            "--timeout=5m",
        ],
    )?;
    let examples: Vec<String> = ["examples/cassandra.yaml", "examples/elasticsearch.yaml"]
        .iter()
        .map(|e| repo.join(e).display().to_string())
        .collect();
    // Both at once: they form side by side.
    for example in &examples {
        cluster.kubectl(&["apply", "-f", example])?;
    }
    for example in &examples {
        cluster
            .kubectl(&[
                "wait",
                "--for=condition=Available",
                "-f",
                example,
                "--timeout=900s",
            ])
            .with_context(|| format!("the cluster of {example} did not become Available"))?;
    }
    for example in &examples {
        print!(
            "{}",
            cluster.kubectl(&["get", "-f", example, "-o", "wide"])?
        );
        print!("{}", cluster.kubectl(&["describe", "-f", example])?);
    }
    print!("{}", cluster.kubectl(&["get", "pods", "-A", "-o", "wide"])?);
    Ok(())
}

fn helm(cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
    let helm = stateward_e2e::components::helm().binary(cluster.layout(), "helm");
    let status = Command::new(&helm)
        .env("KUBECONFIG", cluster.kubeconfig())
        .args(args)
        .status()
        .with_context(|| format!("run {}", Path::new(&helm).display()))?;
    anyhow::ensure!(
        status.success(),
        "helm {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}
