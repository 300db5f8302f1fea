//! The operator's pilot client (`stateward_operator::pilot_client`) against a real pilot
//! process. No Cassandra: the pilot reports it as not running,
//! which is all the stream mechanics need.

use stateward_operator::pilot_client;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pilot_client::{ClientTls, PilotError, PilotHub, PilotTarget, PodKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use stateward_e2e::cassandra_dist::{CASSANDRA_VERSION, JOLOKIA_AGENT_RELATIVE_PATH, ensure_dist};
use stateward_proto::v1::{
    ActionSpec, AllocationExclusionAction, ProcessState, action_spec::Action,
};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pilot_binary() -> anyhow::Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace")?
        .to_path_buf();
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "stateward-pilot",
            "--bin",
            "stateward-pilot",
        ])
        .current_dir(&workspace)
        .status()?;
    if !status.success() {
        bail!("building the pilot failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("release/stateward-pilot"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_watches_reconnects_and_runs_actions() -> anyhow::Result<()> {
    let dist = tokio::task::spawn_blocking(|| ensure_dist(CASSANDRA_VERSION)).await??;
    let bin = pilot_binary()?;
    let root = std::env::temp_dir().join(format!("stateward-pilot-client-{}", std::process::id()));
    let tls = root.join("tls");
    std::fs::create_dir_all(&tls)?;

    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let server_name = stateward_proto::pilot_server_name("c1", "ns1");
    let leaf = |sans: Vec<String>, client: bool| -> anyhow::Result<(String, String)> {
        let mut p = CertificateParams::new(sans)?;
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let k = KeyPair::generate()?;
        Ok((p.signed_by(&k, &ca)?.pem(), k.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(vec![server_name.clone()], false)?;
    let (client_cert, client_key) =
        leaf(vec![stateward_proto::OPERATOR_CLIENT_IDENTITY.into()], true)?;
    std::fs::write(tls.join("ca.crt"), ca.pem())?;
    std::fs::write(tls.join("tls.crt"), server_cert)?;
    std::fs::write(tls.join("tls.key"), server_key)?;

    let start_pilot = || -> anyhow::Result<Killed> {
        Ok(Killed(
            Command::new(&bin)
                .arg("cassandra")
                .env("POD_NAME", "c1-0")
                .env("POD_IP", "127.0.0.4")
                .env("STATEWARD_CLUSTER", "c1")
                .env("STATEWARD_SEEDS", "127.0.0.4")
                .env("STATEWARD_TLS_DIR", &tls)
                .env("STATEWARD_DATA_DIR", root.join("data"))
                .env("CASSANDRA_CONF", root.join("conf"))
                .env(
                    "STATEWARD_JOLOKIA_AGENT",
                    dist.join(JOLOKIA_AGENT_RELATIVE_PATH),
                )
                .env("STATEWARD_JOLOKIA_PORT", "18794")
                .env("STATEWARD_GRPC_LISTEN", "127.0.0.4:17443")
                .env("STATEWARD_PROBE_LISTEN", "127.0.0.4:17080")
                .spawn()?,
        ))
    };

    let hub = PilotHub::new(ClientTls {
        ca_pem: ca.pem(),
        cert_pem: client_cert,
        key_pem: client_key,
    });
    let pod = PodKey {
        namespace: "ns1".into(),
        name: "c1-0".into(),
    };
    let target = PilotTarget {
        pod: pod.clone(),
        endpoint: "https://127.0.0.4:17443".into(),
        server_name,
    };
    let mut changes = hub.subscribe();

    let wait = |want_connected: bool, what: &'static str| {
        let hub = hub.clone();
        let pod = pod.clone();
        async move {
            let start = Instant::now();
            loop {
                if let Some(v) = hub.view(&pod)
                    && v.connected == want_connected
                    && (!want_connected || v.current().is_some())
                {
                    println!("{what} after {:.2?}", start.elapsed());
                    return Ok(v);
                }
                if start.elapsed() > Duration::from_secs(20) {
                    bail!("no {what} in 20 s: {:?}", hub.view(&pod));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Watch before the pilot exists: the hub keeps retrying with backoff.
    hub.ensure_watch(target.clone());
    let pilot = start_pilot()?;
    let v = wait(true, "connected").await?;
    let status = v.current().context("no current status")?;
    assert_eq!(status.process_state(), ProcessState::NotRunning);
    // Announced (a receiver that fell behind the hub's few slots hears Lagged: still a change).
    let announced = changes.try_recv();
    assert!(
        !matches!(
            announced,
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "a change was announced: {announced:?}"
    );

    // Unsupported action (an Elasticsearch one): refused at once, not retried forever.
    let spec = ActionSpec {
        action: Some(Action::AllocationExclusion(AllocationExclusionAction {
            node_names: vec!["c1-0".into()],
        })),
    };
    match hub
        .run_action(&target, "evacuate-1", spec, Duration::from_secs(20))
        .await
    {
        Err(PilotError::Rpc(s)) if s.code() == tonic::Code::Unimplemented => {
            println!("unsupported action refused: {s}")
        }
        other => bail!("expected Unimplemented, got {other:?}"),
    }

    // The pilot dies: the hub notices, and reconnects once it is back.
    drop(pilot);
    wait(false, "disconnect noticed").await?;
    let _pilot = start_pilot()?;
    wait(true, "reconnected").await?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
