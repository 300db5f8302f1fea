//! Mutual TLS for the gRPC port: the client must present a certificate that chains to
//! the cluster's CA *and* names the operator (DNS SAN `stateward-operator`). Checking the
//! identity during the handshake (not per request) means anything else the CA may have
//! signed, such as another pilot's server certificate, cannot even open a connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tracing::{info, warn};

/// How often the mounted files are compared with the ones in use.
const RECHECK: Duration = Duration::from_secs(10);
const FILES: [&str; 3] = ["ca.crt", "tls.crt", "tls.key"];

/// The server configuration, loaded again when the mounted Secret's files change: the operator
/// renews the pilot's certificate before it expires, and the kubelet updates the files in place,
/// so new connections get the new certificate without a restart of the pilot or the database.
pub struct ReloadingServerConfig {
    dir: PathBuf,
    client_identity: String,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    files: Vec<Vec<u8>>,
    config: Arc<ServerConfig>,
    checked_at: Instant,
}

fn read_files(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    FILES.iter().map(|f| std::fs::read(dir.join(f))).collect()
}

impl ReloadingServerConfig {
    pub fn load(dir: &Path, client_identity: &str) -> anyhow::Result<Self> {
        let files = read_files(dir).with_context(|| format!("reading {}", dir.display()))?;
        let config = server_config(dir, client_identity)?;
        Ok(ReloadingServerConfig {
            dir: dir.to_path_buf(),
            client_identity: client_identity.to_string(),
            loaded: Mutex::new(Loaded {
                files,
                config,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The configuration for a new connection. Files that changed but do not load keep the
    /// previous configuration in use (a Secret caught mid-update loads on the next check).
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked_at.elapsed() < RECHECK {
            return loaded.config.clone();
        }
        loaded.checked_at = Instant::now();
        match read_files(&self.dir) {
            Ok(files) if files != loaded.files => {
                match server_config(&self.dir, &self.client_identity) {
                    Ok(config) => {
                        info!(dir = %self.dir.display(), "loaded the renewed TLS certificate");
                        loaded.files = files;
                        loaded.config = config;
                    }
                    Err(e) => warn!("keeping the TLS certificate in use: {e:#}"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!(
                "keeping the TLS certificate in use: reading {}: {e}",
                self.dir.display()
            ),
        }
        loaded.config.clone()
    }
}

pub fn server_config(dir: &Path, client_identity: &str) -> anyhow::Result<Arc<ServerConfig>> {
    let ca_path = dir.join("ca.crt");
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?
    {
        let ca = ca.with_context(|| format!("parsing {}", ca_path.display()))?;
        roots
            .add(ca)
            .with_context(|| format!("adding a CA from {}", ca_path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{} holds no certificate", ca_path.display());
    }
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;

    let provider = Arc::new(default_provider());
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client certificate verifier")?;
    let identity = ServerName::try_from(client_identity.to_string())
        .with_context(|| format!("{client_identity:?} is not a DNS name"))?;
    let verifier = IdentityVerifier { inner, identity };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .context("the pilot's certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Chain verification by webpki, then the client's identity.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    identity: ServerName<'static>,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_is_valid_for_subject_name(&self.identity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
