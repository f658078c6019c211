//! The backend registry: one config variant and one constructor line per backend crate, each
//! behind its cargo feature. Adding a backend is a crate, a variant here, and a match arm.

use std::path::Path;
use std::sync::Arc;

use polykms_backend::{BackendError, KeyEncryptionBackend};
use polykms_core::NamedBackend;
use serde::Deserialize;

use crate::config::{BackendEntry, resolve};

/// `type = "…"` and that backend's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendSettings {
    Local(polykms_local::LocalConfig),
}

impl BackendSettings {
    /// The `type` value.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendSettings::Local(_) => "local",
        }
    }

    /// Makes relative file paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            BackendSettings::Local(c) => c.key_files.iter_mut().for_each(|p| resolve(base, p)),
        }
    }

    async fn connect(&self) -> Result<Arc<dyn KeyEncryptionBackend>, BackendError> {
        Ok(match self {
            BackendSettings::Local(c) => Arc::new(polykms_local::LocalBackend::from_config(c)?),
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
#[error("backends[{index}] ({name}, type {kind}): {source}")]
pub struct BackendBuildError {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    #[source]
    pub source: BackendError,
}
