//! The escrow backend: wrap-only under a public key whose private half is kept offline.
//!
//! Listed in `encrypt.with` beside a key store (`["aws", "escrow"]`), it wraps every DEK seed
//! a second time under an escrow public key, with HPKE over a post-quantum KEM (see `suite`):
//! ML-KEM-1024 with AES-256-GCM, FIPS-approved and the only suite of a FIPS build (`mlkem`),
//! or the X-Wing hybrid (ML-KEM-768 + X25519) with ChaCha20-Poly1305 (`xwing`). Nothing on the node can open those wraps in normal operation: Decrypt skips
//! them (`can_unwrap` is false). When the key store is lost, the operator mounts the private
//! key (`private_key_file`), reloads, and every stored object reads again through the escrow
//! wraps (docs/operations.md, "Disaster recovery: the cloud key is gone").
//!
//! The key version is the public key's fingerprint, so a new escrow key changes key_id like
//! any rotation, while adding or removing the private key does not.

mod keyfile;
mod mlkem;
mod schedule;
mod suite;
#[cfg(test)]
mod vectors;
mod xwing;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use polykms_backend::{BackendError, KeyEncryptionBackend, KeyVersion, SecretBytes, WrappedKey};
use serde::Deserialize;

pub use keyfile::generate_key_pair;
pub use suite::Kem;

/// `type = "escrow"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowConfig {
    /// The escrow public key (`polykms escrow keygen --public-out`): every wrap is made to it.
    pub public_key_file: PathBuf,
    /// Recovery mode only: the matching private key (mode 0600), which opens the wraps.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

impl polykms_backend::ConfigFiles for EscrowConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut paths = vec![&mut self.public_key_file];
        paths.extend(self.private_key_file.as_mut());
        paths
    }
}

/// Wraps under an escrow public key; unwraps only when the private key is configured.
pub struct EscrowBackend {
    public: suite::PublicKey,
    private: Option<suite::PrivateKey>,
    version: KeyVersion,
    config: EscrowConfig,
}

impl fmt::Debug for EscrowBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowBackend")
            .field("version", &self.version)
            .field("public_key_file", &self.config.public_key_file)
            .field("private_key_file", &self.config.private_key_file)
            .finish()
    }
}

impl EscrowBackend {
    /// Loads the public key and, when configured, the private key, refusing a private key
    /// whose public half is not the configured public key (compared by fingerprint).
    /// A FIPS build refuses X-Wing key files (X25519 and ChaCha20-Poly1305 are not approved).
    pub fn from_config(config: &EscrowConfig) -> Result<Self, BackendError> {
        Self::load(config, polykms_backend::crypto::FIPS_BUILD)
    }

    /// [`Self::from_config`] as a build with (`fips`) or without the FIPS module does it.
    fn load(config: &EscrowConfig, fips: bool) -> Result<Self, BackendError> {
        let public = keyfile::read_public_key_file(&config.public_key_file, fips)
            .map_err(|e| BackendError::config(format!("public_key_file: {}", e.message())))?;
        let version = keyfile::fingerprint(&public.to_bytes());
        let private = match &config.private_key_file {
            None => None,
            Some(path) => {
                let private = keyfile::read_private_key_file(path, fips).map_err(|e| {
                    BackendError::config(format!("private_key_file: {}", e.message()))
                })?;
                let belongs_to = keyfile::fingerprint(&private.public_bytes());
                if belongs_to != version {
                    return Err(BackendError::config(format!(
                        "private_key_file: {} is the private key of {belongs_to}, but \
                         public_key_file {} is {version}; give the private key made with \
                         this public key",
                        path.display(),
                        config.public_key_file.display()
                    )));
                }
                Some(private)
            }
        };
        Ok(EscrowBackend {
            public,
            private,
            version,
            config: config.clone(),
        })
    }

    /// The KEM (and so the suite) of the escrow key.
    pub fn kem(&self) -> Kem {
        self.public.kem()
    }

    /// Whether the private key is loaded (recovery mode).
    pub fn has_private_key(&self) -> bool {
        self.private.is_some()
    }
}

#[async_trait]
impl KeyEncryptionBackend for EscrowBackend {
    fn kind(&self) -> &'static str {
        "escrow"
    }

    /// Neither AES-256-GCM nor ChaCha20-Poly1305 has a practical bound below the plugin's own.
    fn max_plaintext_len(&self) -> usize {
        usize::MAX
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        Ok(self.version.clone())
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        let sealed = suite::seal(&self.public, plaintext, aad)?;
        Ok(WrappedKey::new(self.version.clone(), sealed))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let Some(private) = &self.private else {
            return Err(BackendError::key_unavailable(
                "the escrow private key is not on this node (wrap-only); set private_key_file \
                 to recover",
            ));
        };
        if wrapped.key_version != self.version {
            return Err(BackendError::key_unavailable(format!(
                "wrapped under escrow key {}; this backend holds {}",
                wrapped.key_version, self.version
            )));
        }
        suite::open(private, &wrapped.ciphertext, aad)
    }

    fn can_unwrap(&self) -> bool {
        self.private.is_some()
    }

    fn describe(&self) -> String {
        let private = match &self.config.private_key_file {
            Some(p) => format!("private key {} (recovery mode)", p.display()),
            None => "no private key (wrap-only)".to_string(),
        };
        format!(
            "escrow public key {} (HPKE, {}), {private}",
            self.config.public_key_file.display(),
            self.public.kem().suite_name()
        )
    }
}

#[cfg(test)]
mod tests;
