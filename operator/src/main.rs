use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use stateward_operator::config::OperatorConfig;
use stateward_operator::context::Context;
use stateward_operator::controller::Controllers;
use stateward_operator::pilots::PilotRegistry;
use stateward_operator::platform::leader::{Elector, LeaseSettings, Waiting};
use stateward_operator::readiness::Leadership;
use stateward_operator::shutdown::Shutdown;

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
    /// Act only while holding a Lease, so that replicas never write at once (false: act at
    /// once; run one replica only).
    #[arg(
        long,
        env = "STATEWARD_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    leader_election: bool,
    /// Namespace of the Lease (default: the operator's own, POD_NAMESPACE; else the
    /// credentials namespace).
    #[arg(long, env = "STATEWARD_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease (default: stateward-operator, or stateward-operator-<namespace> for
    /// an operator that watches one namespace: operators of different namespaces do not
    /// contend).
    #[arg(long, env = "STATEWARD_LEADER_ELECTION_LEASE")]
    leader_election_lease: Option<String>,
}

impl RunArgs {
    fn lease(&self, credentials_namespace: &str) -> LeaseSettings {
        let namespace = (self.leader_election_namespace.clone())
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| credentials_namespace.to_string());
        let name = self
            .leader_election_lease
            .clone()
            .unwrap_or_else(|| match &self.namespace {
                Some(ns) => format!("stateward-operator-{ns}"),
                None => "stateward-operator".into(),
            });
        // The pod's name: a restarted container takes its own lease back at once, and two
        // pods never share a name. Outside a pod, the host and the process.
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", std::process::id())
        });
        LeaseSettings::new(namespace, name, identity)
    }
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
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let credentials_namespace = args
        .credentials_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .context(
            "no credentials namespace: set --credentials-namespace (or \
             STATEWARD_CREDENTIALS_NAMESPACE, or POD_NAMESPACE in a pod)",
        )?;
    let kube_config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let (client, requests) = stateward_operator::platform::requests::counted_client(kube_config)
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
    let lease = args
        .leader_election
        .then(|| args.lease(&credentials_namespace));
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
        client.clone(),
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
    let shutdown = Shutdown::on_signals().context("listening for SIGTERM and SIGINT")?;
    let act = Acting {
        ctx: ctx.clone(),
        feeds,
        namespace: args.namespace,
        sweep_every: Duration::from_secs(args.credentials_sweep_seconds.max(1)),
        pilots,
        shutdown,
    };
    let result = match lease {
        Some(lease) => lead(Elector::new(client, lease), act).await,
        None => {
            act.run().await;
            Ok(())
        }
    };
    http.abort();
    result
}

/// What the operator does while it may act: the controllers and the credentials sweep.
struct Acting {
    ctx: Arc<Context>,
    feeds: stateward_operator::platform::cache::Feeds,
    namespace: Option<String>,
    sweep_every: Duration,
    pilots: Arc<PilotRegistry>,
    shutdown: Shutdown,
}

impl Acting {
    /// Until a shutdown request stops the controllers (their reconciles finished).
    async fn run(self) {
        let sweep = tokio::spawn(stateward_operator::controller::sweep_credentials(
            self.ctx.clone(),
            self.namespace.clone(),
            self.sweep_every,
        ));
        let controllers = Controllers {
            cassandra: true,
            elasticsearch: true,
            pilot_changes: Some(self.pilots),
            shutdown: self.shutdown,
        };
        stateward_operator::controller::run(self.ctx, self.feeds, self.namespace, controllers)
            .await;
        sweep.abort();
        // A delete already sent must land before the lease is freed.
        let _ = sweep.await;
    }
}

/// Wait for the lease (as a standby, ready), then act while it is held. A lost lease ends the
/// process at once: whatever a reconcile was writing, the new leader must be the only writer
/// (its pod restarts as a standby). A shutdown request stops the controllers, then frees the
/// lease for the standby (a second signal exits without freeing it: see [`Shutdown`]).
async fn lead(mut elector: Elector, act: Acting) -> anyhow::Result<()> {
    let readiness = &act.ctx.readiness;
    let lease = elector.settings().lease();
    readiness.set_leadership(Leadership::Candidate(format!("reading the lease {lease}")));
    let renewed = tokio::select! {
        renewed = elector.acquire(|waiting| readiness.set_leadership(match waiting {
            Waiting::Standby(holder) => Leadership::Standby(holder),
            Waiting::Unreachable(e) => Leadership::Candidate(format!(
                "cannot read or write the lease {lease}: {e}"
            )),
        })) => renewed,
        () = act.shutdown.clone().requested() => return Ok(()),
    };
    readiness.set_leadership(Leadership::Leading);
    let ctx = act.ctx.clone();
    let lost = tokio::select! {
        () = act.run() => None,
        lost = elector.hold(renewed) => Some(lost),
    };
    match lost {
        None => {
            elector.release().await;
            Ok(())
        }
        Some(lost) => {
            ctx.readiness
                .set_leadership(Leadership::Candidate(format!("lost the lease: {lost}")));
            tracing::error!(reason = %lost, "lost the lease: stopping at once so that only the new leader acts");
            std::process::exit(1)
        }
    }
}
