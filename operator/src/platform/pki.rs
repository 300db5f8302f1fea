//! The per-cluster PKI: a CA, the pilots' serving certificate and the operator's client
//! certificate, each in a Secret created once and never rewritten by a resync.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::PostParams;

use super::names::Names;
use super::{Error, KubeContext};
use crate::apply::WriteCounter;
use crate::pilot_client::ClientTls;
use crate::tls;

/// Who owns the Secrets and how they are labelled.
pub struct SecretOwner<'a> {
    pub owner: Option<OwnerReference>,
    pub labels: BTreeMap<String, String>,
    pub names: &'a Names,
}

/// Create the cluster's CA and certificates once.
pub async fn ensure(
    secrets: &Api<Secret>,
    owner: &SecretOwner<'_>,
    writes: &WriteCounter,
) -> Result<(), Error> {
    let names = owner.names;
    let ca_name = names.ca_secret();
    let ca = match secrets
        .get_opt(&ca_name)
        .await
        .context(|| format!("reading Secret {ca_name}"))?
    {
        // A CA that exists but cannot be read is never replaced silently: every pilot trusts
        // the stored one.
        Some(secret) => {
            ca_from_secret(&secret, &names.cluster).ok_or(Error::UnusableCa(ca_name.clone()))?
        }
        None => {
            let ca = tls::new_ca(&names.cluster)?;
            let data = [
                ("ca.crt", ca.cert_pem.clone()),
                ("ca.key", ca.key_pem.clone()),
            ];
            create_secret(secrets, owner, &ca_name, &data, writes).await?;
            // Another writer may have won the race: always continue with what is stored.
            let stored = secrets
                .get(&ca_name)
                .await
                .context(|| format!("reading Secret {ca_name}"))?;
            ca_from_secret(&stored, &names.cluster).ok_or(Error::UnusableCa(ca_name.clone()))?
        }
    };
    let server_names = vec![
        names.pilot_tls_name(),
        format!(
            "*.{}.{}.svc.cluster.local",
            names.nodes_service(),
            names.namespace
        ),
    ];
    let client_names = vec![tls::OPERATOR_CLIENT_NAME.to_string()];
    for (secret_name, cert_names, client_cert) in [
        (names.pilot_tls_secret(), server_names, false),
        (names.operator_client_secret(), client_names, true),
    ] {
        let existing = secrets
            .get_opt(&secret_name)
            .await
            .context(|| format!("reading Secret {secret_name}"))?;
        if existing.is_some() {
            continue;
        }
        let issued = tls::issue(&ca, &cert_names, client_cert)?;
        let data = [
            ("ca.crt", ca.cert_pem.clone()),
            ("tls.crt", issued.cert_pem),
            ("tls.key", issued.key_pem),
        ];
        create_secret(secrets, owner, &secret_name, &data, writes).await?;
    }
    Ok(())
}

/// The operator's client credentials for the cluster's pilots, once they exist.
pub async fn client_tls(secrets: &Api<Secret>, names: &Names) -> Result<Option<ClientTls>, Error> {
    let secret_name = names.operator_client_secret();
    let Some(secret) = secrets
        .get_opt(&secret_name)
        .await
        .context(|| format!("reading Secret {secret_name}"))?
    else {
        return Ok(None);
    };
    let text = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Ok(match (text("ca.crt"), text("tls.crt"), text("tls.key")) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(ClientTls {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

fn ca_from_secret(secret: &Secret, cluster: &str) -> Option<tls::CertificateAuthority> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Some(tls::CertificateAuthority {
        cluster: cluster.to_string(),
        cert_pem: text("ca.crt")?,
        key_pem: text("ca.key")?,
    })
}

async fn create_secret(
    secrets: &Api<Secret>,
    owner: &SecretOwner<'_>,
    name: &str,
    data: &[(&str, String)],
    writes: &WriteCounter,
) -> Result<(), Error> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(owner.names.namespace.clone()),
            labels: Some(owner.labels.clone()),
            owner_references: owner.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    };
    writes.record("Secret");
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("creating Secret {name}"),
            source,
        }),
    }
}
