//! Per-cluster PKI for the operator ↔ pilot channel: one CA per cluster, a serving certificate
//! for the pilots and a client certificate for the operator, all kept in Secrets.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// The identity the pilots accept on client certificates.
pub const OPERATOR_CLIENT_NAME: &str = "stateward-operator";

#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct TlsError(#[from] rcgen::Error);

pub struct CertificateAuthority {
    /// The cluster the CA belongs to: its subject name is derived from it.
    pub cluster: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA's parameters are a function of the cluster name, so the issuer can be rebuilt from
/// the stored key alone (no certificate parsing needed).
fn ca_params(cluster: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("stateward {cluster} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

pub fn new_ca(cluster: &str) -> Result<CertificateAuthority, TlsError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(cluster)?.self_signed(&key)?;
    Ok(CertificateAuthority {
        cluster: cluster.to_string(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Whether a stored CA can sign: its key parses and its certificate is a PEM certificate.
pub fn check_ca(ca: &CertificateAuthority) -> Result<(), TlsError> {
    KeyPair::from_pem(&ca.key_pem)?;
    let pem = ca.cert_pem.trim();
    if pem.starts_with("-----BEGIN CERTIFICATE-----") && pem.ends_with("-----END CERTIFICATE-----")
    {
        Ok(())
    } else {
        Err(TlsError(rcgen::Error::CouldNotParseCertificate))
    }
}

/// How long before its issue a leaf is already valid: clocks of the pods may lag the operator's.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Issue a leaf certificate signed by `ca`, valid for `lifetime` from now: a server certificate
/// for `names` or, with `client`, a client certificate whose common name is `names[0]`.
pub fn issue(
    ca: &CertificateAuthority,
    names: &[String],
    client: bool,
    lifetime: Duration,
) -> Result<IssuedCertificate, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params(&ca.cluster)?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.clone());
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// When a PEM certificate stops being valid (seconds since the epoch).
pub fn not_after(cert_pem: &str) -> Result<i64, TlsError> {
    let unreadable = || TlsError(rcgen::Error::CouldNotParseCertificate);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|_| unreadable())?;
    let cert = pem.parse_x509().map_err(|_| unreadable())?;
    Ok(cert.validity().not_after.timestamp())
}

/// Whether a leaf expiring at `not_after` is issued again now: once less than a third of
/// `lifetime` is left, or when it outlives the lifetime (issued under a longer one, such as
/// before lifetimes were bounded).
pub fn renewal_due(not_after: i64, now: i64, lifetime: Duration) -> bool {
    let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
    let left = not_after.saturating_sub(now);
    left < lifetime / 3 || left > lifetime.saturating_add(CLOCK_SKEW.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_server_and_client_certificates() {
        let ca = new_ca("demo").expect("ca");
        let day = Duration::from_secs(86_400);
        let server = issue(&ca, &["pilot.demo.ns".into()], false, day).expect("server");
        let client = issue(&ca, &[OPERATOR_CLIENT_NAME.into()], true, day).expect("client");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(client.key_pem.contains("PRIVATE KEY"));
        let expires = not_after(&server.cert_pem).expect("parses");
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((expires - now - 86_400).abs() < 5, "{expires} vs {now}");
    }

    #[test]
    fn renewal_is_due_in_the_last_third_and_for_longer_lived_leaves() {
        let lifetime = Duration::from_secs(900);
        assert!(!renewal_due(1_900, 1_000, lifetime), "fresh");
        assert!(
            !renewal_due(1_301, 1_000, lifetime),
            "a third and a second left"
        );
        assert!(
            renewal_due(1_299, 1_000, lifetime),
            "less than a third left"
        );
        assert!(renewal_due(900, 1_000, lifetime), "expired");
        assert!(
            renewal_due(1_000 + 86_400, 1_000, lifetime),
            "issued for longer"
        );
    }

    #[test]
    fn a_stored_ca_is_usable_only_when_key_and_certificate_parse() {
        let ca = new_ca("demo").expect("ca");
        assert!(check_ca(&ca).is_ok());
        let broken_key = CertificateAuthority {
            key_pem: "not a key".into(),
            ..new_ca("demo").expect("ca")
        };
        assert!(check_ca(&broken_key).is_err());
        let broken_cert = CertificateAuthority {
            cert_pem: "garbage".into(),
            ..new_ca("demo").expect("ca")
        };
        assert!(check_ca(&broken_cert).is_err());
    }
}
