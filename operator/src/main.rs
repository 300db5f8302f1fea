use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use stateward_operator::config::OperatorConfig;
use stateward_operator::context::Context;
use stateward_operator::controller::Controllers;
use stateward_operator::pilots::PilotRegistry;

#[derive(Parser)]
#[command(name = "stateward-operator", version, about = "Stateward operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at startup: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (what crds/ holds).
    Crds,
    /// Run the controllers.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "STATEWARD_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Repository of the Cassandra image; the tag is the cluster's version.
    #[arg(
        long,
        env = "STATEWARD_CASSANDRA_IMAGE_REPOSITORY",
        default_value = "docker.io/library/cassandra"
    )]
    cassandra_image_repository: String,
    /// Repository of the Elasticsearch image; the tag is the cluster's version.
    #[arg(
        long,
        env = "STATEWARD_ELASTICSEARCH_IMAGE_REPOSITORY",
        default_value = "docker.elastic.co/elasticsearch/elasticsearch"
    )]
    elasticsearch_image_repository: String,
    /// Default pilot image.
    #[arg(
        long,
        env = "STATEWARD_PILOT_IMAGE",
        default_value = "ghcr.io/stateward/pilot:0.1.0"
    )]
    pilot_image: String,
    /// imagePullPolicy of the database pods.
    #[arg(
        long,
        env = "STATEWARD_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    image_pull_policy: String,
    /// Namespace of each cluster's CA and the operator's client credentials (default: the
    /// operator's own, from POD_NAMESPACE). App teams must not be able to read its Secrets.
    #[arg(long, env = "STATEWARD_CREDENTIALS_NAMESPACE")]
    credentials_namespace: Option<String>,
    /// Seconds between sweeps of the credentials of deleted clusters.
    #[arg(
        long,
        env = "STATEWARD_CREDENTIALS_SWEEP_SECONDS",
        default_value_t = 600
    )]
    credentials_sweep_seconds: u64,
    /// Seconds the pilots' and the operator's leaf certificates are valid (90 days); each is
    /// issued again once a third of it is left.
    #[arg(
        long,
        env = "STATEWARD_LEAF_CERTIFICATE_LIFETIME_SECONDS",
        default_value_t = 90 * 86_400
    )]
    leaf_certificate_lifetime_seconds: u64,
    /// Seconds between level-triggered resyncs of a steady cluster.
    #[arg(long, env = "STATEWARD_RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "STATEWARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Log format: text or json.
    #[arg(long, env = "STATEWARD_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            let yaml = stateward_operator::api::crds_yaml().context("rendering CRDs")?;
            print!("{yaml}");
            Ok(())
        }
        Command::Run(args) => {
            init_logging(&args.log_format);
            let credentials_namespace = args
                .credentials_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .context(
                    "no credentials namespace: set --credentials-namespace (or \
                     STATEWARD_CREDENTIALS_NAMESPACE, or POD_NAMESPACE in a pod)",
                )?;
            let kube_config = kube::Config::infer()
                .await
                .context("finding the Kubernetes API (in-cluster or KUBECONFIG)")?;
            let (client, requests) =
                stateward_operator::platform::requests::counted_client(kube_config)
                    .context("connecting to the Kubernetes API")?;
            let lifetime = args.leaf_certificate_lifetime_seconds.max(60);
            // Renewal happens in a reconcile, and the kubelet takes about a minute to update a
            // mounted Secret: a third of the lifetime must cover a resync and that.
            if lifetime / 3 < args.resync_seconds + 120 {
                tracing::warn!(
                    lifetime,
                    resync = args.resync_seconds,
                    "leaf certificates may expire before a renewed one reaches the pilots: \
                     a third of their lifetime is shorter than a resync plus two minutes"
                );
            }
            let config = OperatorConfig {
                cassandra_image_repository: args.cassandra_image_repository,
                elasticsearch_image_repository: args.elasticsearch_image_repository,
                pilot_image: args.pilot_image,
                image_pull_policy: args.image_pull_policy,
                credentials_namespace,
                leaf_certificate_lifetime: Duration::from_secs(lifetime),
                ..OperatorConfig::default()
            };
            let pilots = Arc::new(PilotRegistry::default());
            let (ctx, feeds) = Context::new(
                client,
                requests,
                config,
                pilots.clone(),
                Duration::from_secs(args.resync_seconds),
                args.namespace.as_deref(),
            );
            let ctx = Arc::new(ctx);
            let http = tokio::spawn(stateward_operator::http::serve(
                args.metrics_addr,
                ctx.clone(),
            ));
            let sweep = tokio::spawn(stateward_operator::controller::sweep_credentials(
                ctx.clone(),
                args.namespace.clone(),
                Duration::from_secs(args.credentials_sweep_seconds.max(1)),
            ));
            let controllers = Controllers {
                cassandra: true,
                elasticsearch: true,
                pilot_changes: Some(pilots),
            };
            stateward_operator::controller::run(ctx, feeds, args.namespace, controllers).await;
            http.abort();
            sweep.abort();
            Ok(())
        }
    }
}
