//! Per-cluster PKI for the operator ↔ pilot channel: one CA per cluster, a serving certificate
//! for the pilots and a client certificate for the operator, all kept in Secrets.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

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

/// Issue a leaf certificate signed by `ca`: a server certificate for `names` or, with
/// `client`, a client certificate whose common name is `names[0]`.
pub fn issue(
    ca: &CertificateAuthority,
    names: &[String],
    client: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_server_and_client_certificates() {
        let ca = new_ca("demo").expect("ca");
        let server = issue(&ca, &["pilot.demo.ns".into()], false).expect("server");
        let client = issue(&ca, &[OPERATOR_CLIENT_NAME.into()], true).expect("client");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(client.key_pem.contains("PRIVATE KEY"));
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
