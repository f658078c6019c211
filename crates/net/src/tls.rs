//! The one place that says which rustls `CryptoProvider` polykms' TLS clients use: the FIPS
//! provider of aws-lc-rs (the AWS-LC FIPS 140-3 module) in a FIPS build (`--features fips`),
//! aws-lc-rs' default provider otherwise. Every client config built here, or handed to us by a
//! library, goes through [`require_fips`] so that a FIPS build never opens a connection whose
//! config does not report `fips() == true`.

use std::sync::Arc;

use polykms_backend::crypto::FIPS_BUILD;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{CaRoots, NetError, Network};

/// The rustls provider of this build: `default_fips_provider()` with `--features fips`.
pub fn provider() -> CryptoProvider {
    #[cfg(feature = "fips")]
    {
        rustls::crypto::default_fips_provider()
    }
    #[cfg(not(feature = "fips"))]
    {
        rustls::crypto::aws_lc_rs::default_provider()
    }
}

/// Installs [`provider`] as the process default (for libraries that build their TLS config
/// from `CryptoProvider::get_default()`, e.g. etcd-client). Idempotent; in a FIPS build it fails
/// when another, non-FIPS provider was installed first.
pub fn install_default() -> Result<(), NetError> {
    // Err only means that a provider is installed already; which one is checked below.
    let _ = provider().install_default();
    require_default_fips("process default")
}

/// In a FIPS build, refuses when the process-default provider is missing or not FIPS (the check
/// for clients that take `CryptoProvider::get_default()` and give no config to inspect).
pub fn require_default_fips(client: &str) -> Result<(), NetError> {
    check_default_fips(
        CryptoProvider::get_default().map(|p| p.fips()),
        client,
        FIPS_BUILD,
    )
}

fn check_default_fips(
    default_is_fips: Option<bool>,
    client: &str,
    fips_build: bool,
) -> Result<(), NetError> {
    match default_is_fips {
        _ if !fips_build => Ok(()),
        Some(true) => Ok(()),
        Some(false) => Err(NetError::new(
            "tls",
            format!(
                "{client}: the process-default rustls crypto provider is not the FIPS one \
                 (FIPS build)"
            ),
        )),
        None => Err(NetError::new(
            "tls",
            format!(
                "{client}: no process-default rustls crypto provider is installed \
                 (a FIPS build installs the FIPS provider at start)"
            ),
        )),
    }
}

/// In a FIPS build, refuses a client config that does not report `fips()` (a non-FIPS provider,
/// a non-approved suite or key exchange, or TLS 1.2 without extended master secret), naming the
/// client. In other builds every config passes.
pub fn require_fips(config: &ClientConfig, client: &str) -> Result<(), NetError> {
    require_fips_in(config, client, FIPS_BUILD)
}

/// [`require_fips`] as a build with `fips_build` would decide: both branches testable in any
/// build.
pub fn require_fips_in(
    config: &ClientConfig,
    client: &str,
    fips_build: bool,
) -> Result<(), NetError> {
    if !fips_build || config.fips() {
        return Ok(());
    }
    Err(NetError::new(
        "tls",
        format!(
            "{client}: its TLS client config is not FIPS (fips() is false: provider, cipher \
             suites, key exchange groups or extended master secret); a FIPS build refuses it"
        ),
    ))
}

/// A client certificate chain and its private key (mutual TLS), parsed from PEM.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// The certificates and the first private key (PKCS#8, PKCS#1 or SEC1) found in `pem`;
    /// `field` names the config keys in errors, which never show the key.
    pub fn from_pem(field: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, NetError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetError::new(field, format!("not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(NetError::new(field, "holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| NetError::new(field, "holds no usable PEM private key"))?;
        Ok(ClientIdentity { chain, key })
    }
}

/// Which roots a client config trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The system roots (rustls-native-certs) and `ca_file` as `CaRoots` says.
    System(CaRoots),
    /// `ca_file` only, or nothing: for a plain-HTTP endpoint, where loading the system store
    /// would only cost time (and fail on hosts that have none).
    NoSystem,
}

/// A rustls client config on [`provider`], trusting what `trust` and `network`'s `ca_file`
/// say, presenting `identity` if given, offering `alpn`; checked with [`require_fips`].
pub fn client_config(
    network: &Network,
    trust: Trust,
    identity: Option<ClientIdentity>,
    alpn: &[&[u8]],
    client: &str,
) -> Result<ClientConfig, NetError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = network.ca() {
        for cert in ca.certificates() {
            roots
                .add(cert)
                .map_err(|e| NetError::new("ca_file", format!("{}: {e}", ca.path().display())))?;
        }
    }
    let system = match trust {
        Trust::System(CaRoots::AddToSystem) => true,
        Trust::System(CaRoots::Only) => network.ca().is_none(),
        Trust::NoSystem => false,
    };
    if system {
        // Unreadable system certificates are skipped, as rustls-platform-verifier (reqwest's
        // default) does; an empty store with no `ca_file` is an error below.
        let native = rustls_native_certs::load_native_certs();
        let (_, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "some system CA certificates could not be parsed");
        }
        if roots.is_empty() {
            return Err(NetError::new(
                "ca_file",
                "no CA certificates were loaded from the system and no ca_file is set",
            ));
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::new("tls", format!("{client}: {e}")))?;
    // An empty store (plain HTTP) verifies nothing and so refuses every certificate.
    let builder = builder.with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| NetError::new("client_cert_file", format!("{client}: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    require_fips(&config, client)?;
    Ok(config)
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
