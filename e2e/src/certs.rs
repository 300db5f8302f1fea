//! The cluster's PKI: one CA, serving and client certificates, the service-account key pair.
//!
//! Made with the openssl CLI (always on Debian) as P-256 keys: fast to generate and
//! accepted by every component. Generated once per state directory; `down --purge` forgets
//! them. Certificates are valid for ten years: a dev cluster should never expire under you.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::cmd;

/// A certificate to issue from the cluster CA.
pub struct Leaf<'a> {
    /// File stem under the PKI directory (`<name>.crt`, `<name>.key`).
    pub name: &'a str,
    /// Subject common name: the user name for client certificates.
    pub cn: &'a str,
    /// Subject organisation: the group for client certificates.
    pub org: Option<&'a str>,
    /// Subject alternative names (`DNS:...`, `IP:...`) for serving certificates.
    pub sans: &'a [String],
}

/// Paths to one issued key pair.
pub struct KeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The PKI directory and its CA.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Opens the PKI at `dir`, creating the CA and service-account keys if absent.
    pub fn ensure(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        if !pki.ca().cert.is_file() {
            let ca = pki.ca();
            cmd::run(
                Command::new("openssl")
                    .args(["req", "-x509", "-new", "-nodes", "-days", "3650"])
                    .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                    .args(["-subj", "/CN=stateward-dev-ca"])
                    .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                    .args([
                        "-addext",
                        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                    ])
                    .arg("-keyout")
                    .arg(&ca.key)
                    .arg("-out")
                    .arg(&ca.cert),
            )
            .context("create the cluster CA")?;
        }
        let sa_key = pki.dir.join("sa.key");
        if !sa_key.is_file() {
            cmd::run(
                Command::new("openssl")
                    .args(["genpkey", "-algorithm", "EC"])
                    .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
                    .arg(&sa_key),
            )
            .context("create the service-account signing key")?;
            cmd::run(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&sa_key)
                    .arg("-out")
                    .arg(pki.dir.join("sa.pub")),
            )
            .context("derive the service-account public key")?;
        }
        Ok(pki)
    }

    pub fn ca(&self) -> KeyPair {
        self.pair("ca")
    }

    /// Service-account token signing key and its public half.
    pub fn service_account(&self) -> KeyPair {
        KeyPair {
            cert: self.dir.join("sa.pub"),
            key: self.dir.join("sa.key"),
        }
    }

    fn pair(&self, name: &str) -> KeyPair {
        KeyPair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// Issues `leaf` from the CA unless it already exists with the same subject and names.
    pub fn issue(&self, leaf: &Leaf) -> anyhow::Result<KeyPair> {
        let pair = self.pair(leaf.name);
        let subject = match leaf.org {
            Some(org) => format!("/O={org}/CN={}", leaf.cn),
            None => format!("/CN={}", leaf.cn),
        };
        let mut ext = String::from(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        );
        if !leaf.sans.is_empty() {
            ext.push_str(&format!("subjectAltName={}\n", leaf.sans.join(",")));
        }
        // The request parameters are kept beside the certificate; a change (new SAN) reissues.
        let spec_file = self.dir.join(format!("{}.spec", leaf.name));
        let spec = format!("{subject}\n{ext}");
        if pair.cert.is_file() && std::fs::read_to_string(&spec_file).is_ok_and(|s| s == spec) {
            return Ok(pair);
        }
        let ext_file = self.dir.join(format!("{}.ext", leaf.name));
        std::fs::write(&ext_file, &ext).with_context(|| format!("write {}", ext_file.display()))?;
        let csr = self.dir.join(format!("{}.csr", leaf.name));
        cmd::run(
            Command::new("openssl")
                .args(["req", "-new", "-nodes"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .args(["-subj", &subject, "-keyout"])
                .arg(&pair.key)
                .arg("-out")
                .arg(&csr),
        )
        .with_context(|| format!("create the {} key and request", leaf.name))?;
        let ca = self.ca();
        cmd::run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "3650", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&ca.cert)
                .arg("-CAkey")
                .arg(&ca.key)
                .args(["-CAcreateserial", "-CAserial"])
                .arg(self.dir.join("ca.srl"))
                .arg("-extfile")
                .arg(&ext_file)
                .arg("-out")
                .arg(&pair.cert),
        )
        .with_context(|| format!("sign the {} certificate", leaf.name))?;
        std::fs::write(&spec_file, spec)
            .with_context(|| format!("write {}", spec_file.display()))?;
        for tmp in [csr, ext_file] {
            std::fs::remove_file(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
        }
        Ok(pair)
    }
}
