//! Stateward pilot: the sidecar next to one database node.
//!
//! Before the database starts it renders the node's configuration into the shared config
//! volume; then it watches the node through the database's management endpoint, serves
//! the verified status and the admin actions to the operator over gRPC with mutual TLS,
//! and answers the pod's probes. See `pilot/README.md`.
//!
//! Everything here is database-neutral except [`Command`], which picks the driver; each
//! database lives in its own module behind [`driver::Driver`].

mod actions;
mod cassandra;
mod cli;
mod driver;
mod elasticsearch;
mod fsutil;
mod grpc;
mod metrics;
mod probes;
mod status;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::actions::ActionManager;
use crate::cli::CommonArgs;
use crate::driver::Driver;
use crate::status::{PodIdentity, StatusHub};

#[derive(Debug, Parser)]
#[command(name = "stateward-pilot", version, about = "Stateward pilot sidecar")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The database this pilot drives.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a Cassandra node.
    Cassandra(cassandra::Args),
    /// Drive an Elasticsearch node.
    Elasticsearch(elasticsearch::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The CQL driver logs every refused login as an error, and the authentication checks make
    // some on purpose; their outcome is reported by the pilot itself.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,scylla=off")),
        )
        .with_target(false)
        .init();
    // Two worker threads are plenty for a handful of connections and one poller, and keep
    // the pilot's memory small next to the database it serves.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Cassandra(args) => {
                cassandra::render::render(&args)
                    .context("rendering the Cassandra configuration")?;
                let driver =
                    cassandra::Cassandra::new(&args).context("setting up the Cassandra driver")?;
                run(args.common, &args.data_dir, driver).await
            }
            Command::Elasticsearch(args) => {
                elasticsearch::render::render(&args)
                    .context("rendering the Elasticsearch configuration")?;
                let driver = elasticsearch::Elasticsearch::new(&args)
                    .context("setting up the Elasticsearch driver")?;
                run(args.common, &args.data_dir, driver).await
            }
        }
    });
    if let Err(e) = &result {
        error!("pilot failed: {e:#}");
    }
    result
}

/// Everything after the configuration is rendered, the same for every database.
async fn run<D: Driver>(common: CommonArgs, data_dir: &Path, driver: D) -> anyhow::Result<()> {
    let driver = Arc::new(driver);
    let tls = tls::ReloadingServerConfig::load(
        &common.tls_dir,
        stateward_proto::OPERATOR_CLIENT_IDENTITY,
    )
    .map(Arc::new)
    .with_context(|| format!("loading TLS material from {}", common.tls_dir.display()))?;
    let metrics = Arc::new(metrics::PilotMetrics::default());
    let journal = fsutil::state_dir(data_dir).join("actions");
    let actions = ActionManager::open(driver.clone(), &journal, metrics.clone())
        .await
        .context("opening the action journal")?;
    let hub = StatusHub::start(
        driver.clone(),
        actions.clone(),
        PodIdentity {
            node_name: common.node_name.clone(),
            pod_uid: common.pod_uid.clone(),
            template_revision: common.template_revision.clone(),
        },
        PathBuf::from(data_dir),
        Duration::from_millis(common.poll_interval_ms.max(50)),
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let grpc_listener = tokio::net::TcpListener::bind(common.grpc_listen)
        .await
        .with_context(|| format!("binding gRPC on {}", common.grpc_listen))?;
    let probe_listener = tokio::net::TcpListener::bind(common.probe_listen)
        .await
        .with_context(|| format!("binding probes on {}", common.probe_listen))?;
    info!(
        grpc = %common.grpc_listen,
        probes = %common.probe_listen,
        node = %common.node_name,
        namespace = %common.namespace,
        pod_uid = %common.pod_uid,
        template_revision = %common.template_revision,
        "pilot serving"
    );

    let probes = tokio::spawn(probes::serve(
        probe_listener,
        driver.clone(),
        hub.clone(),
        metrics,
        shutdown_rx.clone(),
    ));
    let grpc = tokio::spawn(grpc::serve(
        grpc_listener,
        tls,
        hub.clone(),
        actions.clone(),
        shutdown_rx.clone(),
    ));

    wait_for_signal().await?;
    // SIGTERM: with a native sidecar the kubelet stops the database container first (and
    // its preStop hook prepares it through /lifecycle/pre-stop); if the database still
    // answers here, the pilot is being stopped on its own and prepares it so no write is
    // lost.
    info!("termination signal: preparing the database to stop if it still runs");
    match tokio::time::timeout(common.drain_timeout(), driver.prepare_stop()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("preparing the database to stop failed: {e:#}"),
        Err(_) => warn!("preparing the database to stop timed out"),
    }
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = grpc.await;
        let _ = probes.await;
    })
    .await;
    info!("pilot stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
