//! The backend registry: one config variant and one constructor line per backend crate, each
//! behind its cargo feature. Adding a backend is a crate, a variant here, and a match arm.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polykms_backend::{BackendError, ConfigFiles, KeyEncryptionBackend};
use polykms_core::NamedBackend;
use serde::Deserialize;

use crate::config::{BackendEntry, resolve};

/// `type = "…"` and that backend's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendSettings {
    Local(polykms_local::LocalConfig),
    #[cfg(feature = "aws")]
    Aws(polykms_aws::AwsConfig),
    #[cfg(feature = "vault")]
    Vault(polykms_vault::VaultConfig),
    #[cfg(feature = "gcp")]
    Gcp(polykms_gcp::GcpConfig),
    #[cfg(feature = "azure")]
    Azure(polykms_azure::AzureConfig),
    #[cfg(feature = "pkcs11")]
    Pkcs11(polykms_pkcs11::Pkcs11Config),
    #[cfg(feature = "kmip")]
    Kmip(polykms_kmip::KmipConfig),
    #[cfg(feature = "escrow")]
    Escrow(polykms_escrow::EscrowConfig),
}

impl BackendSettings {
    /// The `type` value.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendSettings::Local(_) => "local",
            #[cfg(feature = "aws")]
            BackendSettings::Aws(_) => "aws",
            #[cfg(feature = "vault")]
            BackendSettings::Vault(_) => "vault",
            #[cfg(feature = "gcp")]
            BackendSettings::Gcp(_) => "gcp",
            #[cfg(feature = "azure")]
            BackendSettings::Azure(_) => "azure",
            #[cfg(feature = "pkcs11")]
            BackendSettings::Pkcs11(_) => "pkcs11",
            #[cfg(feature = "kmip")]
            BackendSettings::Kmip(_) => "kmip",
            #[cfg(feature = "escrow")]
            BackendSettings::Escrow(_) => "escrow",
        }
    }

    /// Whether every wrap of this backend exceeds the 1024-byte ciphertext bound, so that it
    /// can only travel in an annotation (which KMS v1beta1 does not have).
    pub fn wraps_need_annotations(&self) -> bool {
        match self {
            #[cfg(feature = "escrow")]
            BackendSettings::Escrow(_) => true,
            _ => false,
        }
    }

    /// The key file `serve` would create at start (a local backend's missing first key file
    /// with `generate_if_missing`): `check` and `audit` report it and write nothing.
    pub fn file_serve_would_generate(&self) -> Option<&Path> {
        match self {
            BackendSettings::Local(c) if c.generate_if_missing => c
                .key_files
                .first()
                .filter(|p| !p.exists())
                .map(PathBuf::as_path),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Every file these settings name (key files, CA bundles, token, PIN, secret and
    /// credential files): a new backend lists its own through [`ConfigFiles`].
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            BackendSettings::Local(c) => c.file_paths_mut(),
            #[cfg(feature = "aws")]
            BackendSettings::Aws(c) => c.file_paths_mut(),
            #[cfg(feature = "vault")]
            BackendSettings::Vault(c) => c.file_paths_mut(),
            #[cfg(feature = "gcp")]
            BackendSettings::Gcp(c) => c.file_paths_mut(),
            #[cfg(feature = "azure")]
            BackendSettings::Azure(c) => c.file_paths_mut(),
            #[cfg(feature = "pkcs11")]
            BackendSettings::Pkcs11(c) => c.file_paths_mut(),
            #[cfg(feature = "kmip")]
            BackendSettings::Kmip(c) => c.file_paths_mut(),
            #[cfg(feature = "escrow")]
            BackendSettings::Escrow(c) => c.file_paths_mut(),
        }
    }

    /// Makes every relative file path relative to the config file's directory and returns
    /// the resolved paths (the files a config reload watches).
    pub fn resolve_paths(&mut self, base: &Path) -> Vec<PathBuf> {
        self.file_paths_mut()
            .into_iter()
            .map(|p| {
                resolve(base, p);
                p.clone()
            })
            .collect()
    }

    async fn connect(&self) -> Result<Arc<dyn KeyEncryptionBackend>, BackendError> {
        Ok(match self {
            BackendSettings::Local(c) => Arc::new(polykms_local::LocalBackend::from_config(c)?),
            #[cfg(feature = "aws")]
            BackendSettings::Aws(c) => Arc::new(polykms_aws::AwsBackend::connect(c).await?),
            #[cfg(feature = "vault")]
            BackendSettings::Vault(c) => Arc::new(polykms_vault::VaultBackend::connect(c).await?),
            #[cfg(feature = "gcp")]
            BackendSettings::Gcp(c) => Arc::new(polykms_gcp::GcpBackend::connect(c).await?),
            #[cfg(feature = "azure")]
            BackendSettings::Azure(c) => Arc::new(polykms_azure::AzureBackend::connect(c).await?),
            #[cfg(feature = "pkcs11")]
            BackendSettings::Pkcs11(c) => {
                Arc::new(polykms_pkcs11::Pkcs11Backend::connect(c).await?)
            }
            #[cfg(feature = "kmip")]
            BackendSettings::Kmip(c) => Arc::new(polykms_kmip::KmipBackend::connect(c).await?),
            #[cfg(feature = "escrow")]
            BackendSettings::Escrow(c) => Arc::new(polykms_escrow::EscrowBackend::from_config(c)?),
        })
    }
}

/// Builds every configured backend. Fails only on configuration problems (a missing key file,
/// bad credentials file); a key store that is down is reported by health later.
pub async fn build(entries: &[BackendEntry]) -> Result<Vec<NamedBackend>, BackendBuildError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let backend = entry
            .settings
            .connect()
            .await
            .map_err(|source| BackendBuildError {
                index: i,
                name: entry.name.clone(),
                kind: entry.settings.kind(),
                source,
            })?;
        out.push(NamedBackend {
            name: entry.name.clone(),
            backend,
        });
    }
    Ok(out)
}

/// A backend that could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("backends[{index}] ({name}, type {kind}): {}", describe(source))]
pub struct BackendBuildError {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    #[source]
    pub source: BackendError,
}

/// Config errors already say what is wrong; other kinds keep their kind as a prefix.
fn describe(e: &BackendError) -> String {
    if e.kind() == polykms_backend::ErrorKind::Config {
        e.message().to_string()
    } else {
        e.to_string()
    }
}
