//! Kubernetes plumbing every database shares: object names, PKI Secrets, volumes, pods, and
//! recording status and Events. The database modules call it; it knows no database.

pub mod cache;
pub mod index;
pub mod leader;
pub mod login;
pub mod names;
pub mod pki;
pub mod pods;
pub mod record;
pub mod requests;
pub mod volumes;

/// An error of the reconcile pipeline, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("rendering the pilot configuration: {0}")]
    Render(String),
    #[error("creating certificates: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the object has no namespace")]
    NoNamespace,
    #[error("the object has no UID")]
    NoUid,
    #[error("Secret {0} exists but holds no usable CA certificate and key")]
    UnusableCa(String),
    #[error("the CA Secret {ca} is missing while {pilot_tls} still holds certificates it issued")]
    MissingCa { ca: String, pilot_tls: String },
    #[error("the caches: {0}")]
    Cache(String),
    /// A cache does not show the operator's own last write of this object yet: wait for it.
    #[error("the cache does not show the last write of {0} yet")]
    Stale(String),
}

impl Error {
    /// A short, stable name of what went wrong, for metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    403 => "api_forbidden",
                    404 => "api_not_found",
                    409 => "api_conflict",
                    422 => "api_invalid",
                    429 => "api_throttled",
                    500..=599 => "api_server_error",
                    _ => "api_refused",
                },
                _ => "api_unreachable",
            },
            Error::Render(_) => "render",
            Error::Tls(_) => "tls",
            Error::NoNamespace | Error::NoUid => "invalid_object",
            Error::UnusableCa(_) => "unusable_ca",
            Error::MissingCa { .. } => "missing_ca",
            Error::Cache(_) => "cache",
            Error::Stale(_) => "stale_cache",
        }
    }
}

pub trait KubeContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            what: what(),
            source,
        })
    }
}

/// Now, RFC 3339 in whole seconds (the precision Kubernetes stores), so statuses compare
/// equal across resyncs within one second.
pub fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
