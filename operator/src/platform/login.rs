//! The Secret holding a database's administrative login: generated once when the user names
//! none, never changed afterwards; a Secret the user named is only read.
//!
//! A generated Secret has no owner reference: it outlives the cluster, as retained volumes do,
//! because the data on them holds the role it logs in as. A cluster re-created under the same
//! name on those volumes then logs in with it; deleting it is the user's choice.

use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use stateward_core::words::Fault;
use tracing::info;

use super::pki::SecretStores;
use super::{Error, pki};
use crate::apply::WriteCounter;

/// The keys a login Secret holds.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";
/// Cassandra's default role: never the superuser (Stateward disables it).
const RESERVED_USERNAME: &str = "cassandra";

/// The login Secret a cluster uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginSecret {
    pub name: String,
    /// The username to generate it with; `None` for a Secret the user named (never created).
    pub generate_for: Option<String>,
}

/// A fresh password: 32 letters and digits (about 190 bits), without modulo bias.
fn generate_password() -> Result<String, Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of 62 below 256: bytes from it on are drawn again.
    const LIMIT: u8 = 248;
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::Render(format!("no randomness: {e}")))?;
        password.extend(
            bytes
                .iter()
                .filter(|b| **b < LIMIT)
                .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char),
        );
    }
    password.truncate(32);
    Ok(password)
}

/// Ensures the Secret exists (creating a generated one) and holds both keys; a missing or
/// incomplete Secret the user named is a fault to show. A generated Secret carries the
/// operator's labels and is read from the cache; one the user named is read at most once per
/// `recheck` (a fault, once per reconcile, so its repair shows at once).
pub async fn ensure(
    stores: &SecretStores<'_>,
    wanted: &LoginSecret,
    labels: BTreeMap<String, String>,
    writes: &WriteCounter,
    recheck: Duration,
) -> Result<Option<Fault>, Error> {
    let existing = match wanted.generate_for {
        Some(_) => stores.read_app(&wanted.name)?,
        None => {
            stores
                .caches
                .named_secret(&stores.app_namespace, &wanted.name, recheck)
                .await?
        }
    };
    match (existing, &wanted.generate_for) {
        (Some(secret), _) => {
            let fault = incomplete(&secret, &wanted.name);
            if fault.is_some() {
                stores
                    .caches
                    .forget_named(&stores.app_namespace, &wanted.name);
            }
            Ok(fault)
        }
        (None, Some(username)) => {
            let metadata = kube::api::ObjectMeta {
                name: Some(wanted.name.clone()),
                labels: Some(labels),
                ..Default::default()
            };
            let data = [
                (USERNAME, username.clone()),
                (PASSWORD, generate_password()?),
            ];
            pki::create_secret(&stores.app, metadata, &data, writes).await?;
            info!(secret = %wanted.name, "generated the superuser Secret");
            Ok(None)
        }
        (None, None) => {
            stores
                .caches
                .forget_named(&stores.app_namespace, &wanted.name);
            Ok(Some(Fault {
                reason: "SuperuserSecretMissing".into(),
                message: format!(
                    "the Secret {} named in spec.authentication.superuserSecretName does not exist: \
                 create it with keys {USERNAME} and {PASSWORD}",
                    wanted.name
                ),
            }))
        }
    }
}

fn incomplete(secret: &Secret, name: &str) -> Option<Fault> {
    let has = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .is_some_and(|v| !v.0.is_empty())
    };
    let missing: Vec<&str> = [USERNAME, PASSWORD]
        .into_iter()
        .filter(|k| !has(k))
        .collect();
    if !missing.is_empty() {
        return Some(Fault {
            reason: "SuperuserSecretInvalid".into(),
            message: format!(
                "the superuser Secret {name} has no (or an empty) {}",
                missing.join(" and no ")
            ),
        });
    }
    let username = secret.data.as_ref().and_then(|d| d.get(USERNAME));
    (username.map(|u| u.0.as_slice()) == Some(RESERVED_USERNAME.as_bytes())).then(|| Fault {
        reason: "SuperuserSecretInvalid".into(),
        message: format!(
            "the superuser Secret {name} names {RESERVED_USERNAME:?}, the database's default \
             role, which Stateward disables: name another role"
        ),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn passwords_are_long_letters_and_digits_and_differ() -> Result<(), Error> {
        let a = generate_password()?;
        let b = generate_password()?;
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        Ok(())
    }

    #[test]
    fn a_secret_without_both_keys_is_a_fault() {
        let mut secret = Secret {
            data: Some([(USERNAME.to_string(), ByteString(b"admin".to_vec()))].into()),
            ..Secret::default()
        };
        let fault = incomplete(&secret, "s").expect("a fault");
        assert_eq!(fault.reason, "SuperuserSecretInvalid");
        assert!(fault.message.contains(PASSWORD), "{}", fault.message);
        secret
            .data
            .get_or_insert_default()
            .insert(PASSWORD.into(), ByteString(b"pw".to_vec()));
        assert_eq!(incomplete(&secret, "s"), None);
        secret
            .data
            .get_or_insert_default()
            .insert(USERNAME.into(), ByteString(b"cassandra".to_vec()));
        assert!(
            incomplete(&secret, "s").is_some(),
            "the default role is refused"
        );
    }
}
