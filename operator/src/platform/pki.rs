//! The per-cluster PKI: a CA, the pilots' serving certificate and the operator's client
//! certificate, each in a Secret created once and never rewritten by a resync.
//!
//! Where they live is the point: whoever holds the CA's key, or the operator's client key, can
//! ask a pilot for anything the operator may ask (a forced decommission past every check). Both
//! live in the operator's own namespace (the credentials namespace), named by the cluster's
//! UID so a re-created cluster of the same name never inherits them. The app's namespace holds
//! only what its pods need: the CA certificate and the pilots' own leaf.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::info;

use super::cache::Caches;
use super::names::Names;
use super::{Error, KubeContext};
use crate::apply::WriteCounter;
use crate::labels;
use crate::pilot_client::ClientTls;
use crate::tls;

/// Label on the credentials Secrets: the UID of the cluster they belong to.
pub const CLUSTER_UID: &str = "stateward.io/cluster-uid";
/// Label on the credentials Secrets: the namespace of the cluster they belong to.
pub const CLUSTER_NAMESPACE: &str = "stateward.io/cluster-namespace";
/// Label that marks a Secret of the credentials namespace as a cluster's credentials.
pub const CREDENTIALS: &str = "stateward.io/credentials";

/// Who owns the Secrets and how they are labelled.
pub struct SecretOwner<'a> {
    pub owner: Option<OwnerReference>,
    pub labels: BTreeMap<String, String>,
    pub names: &'a Names,
    /// The cluster's UID: names its credentials.
    pub uid: String,
}

/// The Secrets of a cluster's PKI: the app namespace's and the credentials namespace's, read
/// from the caches and written through the API.
pub struct SecretStores<'a> {
    pub app: Api<Secret>,
    pub credentials: Api<Secret>,
    pub app_namespace: String,
    pub credentials_namespace: String,
    pub caches: &'a Caches,
}

impl<'a> SecretStores<'a> {
    pub fn new(
        client: &kube::Client,
        caches: &'a Caches,
        app_namespace: &str,
        credentials_namespace: &str,
    ) -> Self {
        SecretStores {
            app: Api::namespaced(client.clone(), app_namespace),
            credentials: Api::namespaced(client.clone(), credentials_namespace),
            app_namespace: app_namespace.to_string(),
            credentials_namespace: credentials_namespace.to_string(),
            caches,
        }
    }

    /// A Secret of the app namespace, from the cache.
    pub fn read_app(&self, name: &str) -> Result<Option<Secret>, Error> {
        self.caches.get(&self.app_namespace, name)
    }

    /// A Secret of the credentials namespace, from the cache.
    pub fn read_credentials(&self, name: &str) -> Result<Option<Secret>, Error> {
        self.caches.get(&self.credentials_namespace, name)
    }
}

/// The CA of a cluster, in the credentials namespace.
pub fn ca_secret(uid: &str) -> String {
    format!("stateward-ca-{uid}")
}

/// The operator's client credentials for a cluster's pilots, in the credentials namespace.
pub fn operator_client_secret(uid: &str) -> String {
    format!("stateward-operator-client-{uid}")
}

/// Create the cluster's CA and certificates once; move a CA an earlier version kept in the app
/// namespace to the credentials namespace.
pub async fn ensure(
    stores: &SecretStores<'_>,
    owner: &SecretOwner<'_>,
    lifetime: Duration,
    writes: &WriteCounter,
) -> Result<(), Error> {
    let ca = load_or_create_ca(stores, owner, writes).await?;
    let client_name = operator_client_secret(&owner.uid);
    let client_names = [tls::OPERATOR_CLIENT_NAME.to_string()];
    match stores.read_credentials(&client_name)? {
        None => {
            // Also where a move from the app namespace ends: the copies there are deleted
            // before the client Secret that marks the move done is created.
            remove_legacy(stores, owner.names, writes).await?;
            let data = leaf_data(&ca, &client_names, true, lifetime)?;
            let meta = credentials_meta(stores, owner, &client_name);
            create_secret(&stores.credentials, meta, &data, writes).await?;
        }
        Some(secret) if leaf_due(&secret, lifetime) => {
            let data = leaf_data(&ca, &client_names, true, lifetime)?;
            renew_secret(&stores.credentials, secret, &data, writes).await?;
        }
        Some(_) => {}
    }
    let names = owner.names;
    let pilot_name = names.pilot_tls_secret();
    let server_names = vec![
        names.pilot_tls_name(),
        format!(
            "*.{}.{}.svc.cluster.local",
            names.nodes_service(),
            names.namespace
        ),
    ];
    match stores.read_app(&pilot_name)? {
        None => {
            let data = leaf_data(&ca, &server_names, false, lifetime)?;
            let meta = app_meta(owner, &pilot_name);
            create_secret(&stores.app, meta, &data, writes).await?;
        }
        // The pilots read the new certificate where the Secret is mounted, without a restart.
        Some(secret) if leaf_due(&secret, lifetime) => {
            let data = leaf_data(&ca, &server_names, false, lifetime)?;
            renew_secret(&stores.app, secret, &data, writes).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// A leaf Secret's data: the CA certificate, and a new certificate with its key.
fn leaf_data(
    ca: &tls::CertificateAuthority,
    names: &[String],
    client: bool,
    lifetime: Duration,
) -> Result<[(&'static str, String); 3], Error> {
    let issued = tls::issue(ca, names, client, lifetime)?;
    Ok([
        ("ca.crt", ca.cert_pem.clone()),
        ("tls.crt", issued.cert_pem),
        ("tls.key", issued.key_pem),
    ])
}

/// Whether the leaf a Secret holds is issued again now (it cannot be read, is in the last
/// third of its lifetime, or outlives the lifetime).
fn leaf_due(secret: &Secret, lifetime: Duration) -> bool {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    text_of(secret, "tls.crt")
        .and_then(|pem| tls::not_after(&pem).ok())
        .is_none_or(|not_after| tls::renewal_due(not_after, now, lifetime))
}

/// Replaces a leaf Secret's data, conditional on the version read (a concurrent change wins
/// and the next reconcile looks again).
async fn renew_secret(
    secrets: &Api<Secret>,
    mut secret: Secret,
    data: &[(&str, String)],
    writes: &WriteCounter,
) -> Result<(), Error> {
    let name = secret.name_any();
    let before = secret.resource_version();
    secret.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
            .collect(),
    );
    writes.record("Secret");
    match secrets
        .replace(&name, &PostParams::default(), &secret)
        .await
    {
        Ok(renewed) => {
            writes.expectations.expect(
                "Secret",
                &renewed.namespace().unwrap_or_default(),
                &name,
                before,
                renewed.resource_version(),
            );
            info!(secret = %name, "issued its certificate again before it expires");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("renewing the certificate in Secret {name}"),
            source,
        }),
    }
}

/// The stored CA; a new one only when none exists in either place. A CA that exists but cannot
/// be read is never replaced: every pilot trusts the stored one.
async fn load_or_create_ca(
    stores: &SecretStores<'_>,
    owner: &SecretOwner<'_>,
    writes: &WriteCounter,
) -> Result<tls::CertificateAuthority, Error> {
    let cluster = &owner.names.cluster;
    let name = ca_secret(&owner.uid);
    let unusable = |ns: &str, name: &str| Error::UnusableCa(format!("{ns}/{name}"));
    let creds_ns = &stores.credentials_namespace;
    if let Some(secret) = stores.read_credentials(&name)? {
        return ca_from_secret(&secret, cluster).ok_or_else(|| unusable(creds_ns, &name));
    }
    let legacy_name = owner.names.ca_secret();
    let legacy = stores
        .read_app(&legacy_name)?
        .filter(|secret| made_for(secret, &owner.uid));
    let (ca, moved) = match legacy {
        Some(secret) => match ca_from_secret(&secret, cluster) {
            Some(ca) => (ca, true),
            None => return Err(unusable(&owner.names.namespace, &legacy_name)),
        },
        None => {
            // The pilots already trust a CA: a new one would lock the operator out of them.
            let pilot_tls = owner.names.pilot_tls_secret();
            if stores.read_app(&pilot_tls)?.is_some() {
                return Err(Error::MissingCa {
                    ca: format!("{creds_ns}/{name}"),
                    pilot_tls: format!("{}/{pilot_tls}", owner.names.namespace),
                });
            }
            (tls::new_ca(cluster)?, false)
        }
    };
    let data = [
        ("ca.crt", ca.cert_pem.clone()),
        ("ca.key", ca.key_pem.clone()),
    ];
    let meta = credentials_meta(stores, owner, &name);
    create_secret(&stores.credentials, meta, &data, writes).await?;
    if moved {
        info!(cluster, from = %legacy_name, to = %format!("{creds_ns}/{name}"),
            "moved the cluster's CA out of its namespace");
    }
    // Another writer may have won the race: always continue with what is stored.
    let stored = stores
        .credentials
        .get(&name)
        .await
        .context(|| format!("reading Secret {creds_ns}/{name}"))?;
    ca_from_secret(&stored, cluster).ok_or_else(|| unusable(creds_ns, &name))
}

/// Whether `secret` is one the operator made for the cluster of `uid` (labelled as managed and
/// owned by that cluster): a Secret anyone else put there is never adopted as a trust root.
fn made_for(secret: &Secret, uid: &str) -> bool {
    let managed = secret.labels().get(labels::MANAGED_BY).map(String::as_str)
        == Some(labels::MANAGED_BY_VALUE);
    managed && secret.owner_references().iter().any(|o| o.uid == uid)
}

/// Deletes the CA and client Secrets an earlier version kept in the app namespace.
async fn remove_legacy(
    stores: &SecretStores<'_>,
    names: &Names,
    writes: &WriteCounter,
) -> Result<(), Error> {
    for name in [names.ca_secret(), names.operator_client_secret()] {
        let Some(secret) = stores.read_app(&name)? else {
            continue;
        };
        // Only what the operator made (a user's Secret of that name stays).
        if secret.labels().get(labels::MANAGED_BY).map(String::as_str)
            != Some(labels::MANAGED_BY_VALUE)
        {
            continue;
        }
        writes.record("Secret");
        match stores.app.delete(&name, &DeleteParams::default()).await {
            Ok(gone) => {
                let after = gone.left().and_then(|s| s.resource_version());
                let before = secret.resource_version();
                writes
                    .expectations
                    .expect("Secret", &names.namespace, &name, before, after);
                info!(secret = %name, namespace = %names.namespace,
                    "deleted the copy in the app namespace");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting Secret {}/{name}", names.namespace),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// The operator's client credentials for the cluster's pilots, once they exist (for a cluster
/// not yet moved, a paused one for example, those an earlier version kept in the app namespace).
pub fn client_tls(
    stores: &SecretStores<'_>,
    names: &Names,
    uid: &str,
) -> Result<Option<ClientTls>, Error> {
    let secret = match stores.read_credentials(&operator_client_secret(uid))? {
        Some(secret) => secret,
        None => match stores.read_app(&names.operator_client_secret())? {
            Some(secret) if made_for(&secret, uid) => secret,
            _ => return Ok(None),
        },
    };
    let text = |k: &str| text_of(&secret, k);
    Ok(match (text("ca.crt"), text("tls.crt"), text("tls.key")) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(ClientTls {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

/// Deletes the credentials of clusters that no longer exist. `live` holds the UIDs of every
/// cluster there is, listed *after* the Secrets, so a cluster created meanwhile is in it;
/// `namespaces` limits the sweep to the watched namespaces (all when `None`).
pub async fn sweep(
    stores: &SecretStores<'_>,
    live: impl Fn() -> futures::future::BoxFuture<'static, Result<BTreeSet<String>, Error>>,
    namespaces: Option<&str>,
    writes: &WriteCounter,
) -> Result<usize, Error> {
    let selector = [
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (CREDENTIALS.to_string(), "true".to_string()),
    ]
    .into();
    let secrets: Vec<Secret> = stores
        .caches
        .list(&stores.credentials_namespace, &selector)?;
    let credentials = &stores.credentials;
    if secrets.is_empty() {
        return Ok(0);
    }
    let live = live().await?;
    let mut deleted = 0;
    for secret in secrets {
        let labels = secret.labels();
        let Some(uid) = labels.get(CLUSTER_UID) else {
            continue;
        };
        let watched = namespaces
            .is_none_or(|ns| labels.get(CLUSTER_NAMESPACE).map(String::as_str) == Some(ns));
        if !watched || live.contains(uid) {
            continue;
        }
        let name = secret.name_any();
        writes.record("Secret");
        match credentials.delete(&name, &DeleteParams::default()).await {
            Ok(gone) => {
                let after = gone.left().and_then(|s| s.resource_version());
                let before = secret.resource_version();
                let ns = &stores.credentials_namespace;
                writes
                    .expectations
                    .expect("Secret", ns, &name, before, after);
                info!(secret = %name, "deleted the credentials of a cluster that no longer exists");
                deleted += 1;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    what: format!("deleting Secret {name}"),
                    source,
                });
            }
        }
    }
    Ok(deleted)
}

fn text_of(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

fn ca_from_secret(secret: &Secret, cluster: &str) -> Option<tls::CertificateAuthority> {
    let ca = tls::CertificateAuthority {
        cluster: cluster.to_string(),
        cert_pem: text_of(secret, "ca.crt")?,
        key_pem: text_of(secret, "ca.key")?,
    };
    // Usable means it can sign: a key that does not parse is caught here, not at issue time.
    tls::check_ca(&ca).ok().map(|()| ca)
}

/// Metadata of a Secret in the app namespace: owned by the cluster, deleted with it.
fn app_meta(owner: &SecretOwner<'_>, name: &str) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(owner.names.namespace.clone()),
        labels: Some(owner.labels.clone()),
        owner_references: owner.owner.clone().map(|o| vec![o]),
        ..Default::default()
    }
}

/// Metadata of a Secret in the credentials namespace: no owner reference can cross
/// namespaces, so labels say whose it is and [`sweep`] deletes it once the cluster is gone.
fn credentials_meta(
    stores: &SecretStores<'_>,
    owner: &SecretOwner<'_>,
    name: &str,
) -> kube::api::ObjectMeta {
    let mut labels = owner.labels.clone();
    labels.insert(CREDENTIALS.into(), "true".into());
    labels.insert(CLUSTER_UID.into(), owner.uid.clone());
    labels.insert(CLUSTER_NAMESPACE.into(), owner.names.namespace.clone());
    kube::api::ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(stores.credentials_namespace.clone()),
        labels: Some(labels),
        ..Default::default()
    }
}

pub(super) async fn create_secret(
    secrets: &Api<Secret>,
    metadata: kube::api::ObjectMeta,
    data: &[(&str, String)],
    writes: &WriteCounter,
) -> Result<(), Error> {
    let name = metadata.name.clone().unwrap_or_default();
    let secret = Secret {
        metadata,
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
        Ok(created) => {
            writes.expectations.expect(
                "Secret",
                &created.namespace().unwrap_or_default(),
                &name,
                None,
                created.resource_version(),
            );
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("creating Secret {name}"),
            source,
        }),
    }
}
