//! The local backend: the key-encryption key is a 32-byte AES-256-GCM key in a file.
//!
//! `key_files` is an ordered list: the first key wraps, every key unwraps. Rotation is "prepend
//! a new key file, keep the old ones until everything is re-encrypted". It is the worked
//! example of a backend and the one for single-node clusters and tests; a key file on the
//! control-plane disk protects etcd dumps and backups, not a compromised node.

mod keyfile;

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use polykms_backend::crypto::{
    Aes256Gcm, GCM_NONCE_LEN as NONCE_LEN, GCM_TAG_LEN as TAG_LEN, Sha256,
};
use polykms_backend::{BackendError, KeyEncryptionBackend, KeyVersion, SecretBytes, WrappedKey};
use serde::Deserialize;

pub use keyfile::{KEY_LEN, generate_key_file, read_key_file};

/// `type = "local"` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Key files, newest first: the first wraps, all unwrap.
    pub key_files: Vec<PathBuf>,
    /// Development convenience: create the first key file (mode 0600) if it does not exist.
    #[serde(default)]
    pub generate_if_missing: bool,
}

impl polykms_backend::ConfigFiles for LocalConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        self.key_files.iter_mut().collect()
    }
}

/// One loaded key and its public version id.
struct LocalKey {
    version: KeyVersion,
    cipher: Aes256Gcm,
}

/// AES-256-GCM key-encryption keys read from files.
pub struct LocalBackend {
    keys: Vec<LocalKey>,
    files: Vec<PathBuf>,
}

impl fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalBackend")
            .field("files", &self.files)
            .field(
                "versions",
                &self
                    .keys
                    .iter()
                    .map(|k| k.version.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl LocalBackend {
    /// Loads every key file; any missing, malformed or too-open file is a `Config` error.
    pub fn from_config(config: &LocalConfig) -> Result<Self, BackendError> {
        if config.key_files.is_empty() {
            return Err(BackendError::config(
                "key_files: at least one key file is required",
            ));
        }
        if config.generate_if_missing && !config.key_files[0].exists() {
            generate_key_file(&config.key_files[0])?;
        }
        let mut keys = Vec::with_capacity(config.key_files.len());
        for (i, path) in config.key_files.iter().enumerate() {
            let key = read_key_file(path)
                .map_err(|e| BackendError::config(format!("key_files[{i}]: {}", e.message())))?;
            let version = key_version_of(key.expose());
            if keys.iter().any(|k: &LocalKey| k.version == version) {
                return Err(BackendError::config(format!(
                    "key_files[{i}]: {} holds the same key as an earlier file",
                    path.display()
                )));
            }
            let cipher = Aes256Gcm::new(key.expose()).map_err(|_| {
                BackendError::config(format!("{}: not a 256-bit key", path.display()))
            })?;
            keys.push(LocalKey { version, cipher });
        }
        Ok(LocalBackend {
            keys,
            files: config.key_files.clone(),
        })
    }

    fn current(&self) -> &LocalKey {
        &self.keys[0]
    }

    fn key_for(&self, version: &KeyVersion) -> Option<&LocalKey> {
        self.keys.iter().find(|k| &k.version == version)
    }

    /// Paths of the key files, newest first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(PathBuf::as_path)
    }
}

/// `local:` + 16 hex chars of a domain-separated SHA-256 of the key: identifies the key,
/// reveals nothing usable about it.
fn key_version_of(key: &[u8]) -> KeyVersion {
    let mut h = Sha256::new();
    h.update(b"polykms local key version v1\0");
    h.update(key);
    let digest = h.finish();
    KeyVersion::new(format!("local:{}", hex::encode(&digest[..8])))
}

#[async_trait]
impl KeyEncryptionBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    /// AES-256-GCM has no practical bound below the plugin's own.
    fn max_plaintext_len(&self) -> usize {
        usize::MAX
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        Ok(self.current().version.clone())
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        let key = self.current();
        let (nonce, sealed) = key
            .cipher
            .seal(aad, plaintext.expose())
            .map_err(|e| BackendError::internal(e.to_string()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(WrappedKey::new(key.version.clone(), out))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let key = self.key_for(&wrapped.key_version).ok_or_else(|| {
            BackendError::key_unavailable(format!(
                "key version {} is not in key_files",
                wrapped.key_version
            ))
        })?;
        let ct = &wrapped.ciphertext;
        if ct.len() < NONCE_LEN + TAG_LEN {
            return Err(BackendError::invalid_input(format!(
                "wrapped key is {} bytes, shorter than nonce and tag",
                ct.len()
            )));
        }
        let (nonce, sealed) = ct.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split_at gives NONCE_LEN bytes");
        key.cipher.open(&nonce, aad, sealed).map_err(|_| {
            BackendError::wrong_key("authentication failed: wrong key or context, or tampered")
        })
    }

    fn describe(&self) -> String {
        format!("local key files: {}", self.files.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_with(n: usize) -> (tempfile::TempDir, LocalConfig) {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..n)
            .map(|i| dir.path().join(format!("k{i}.key")))
            .collect();
        for f in &files {
            generate_key_file(f).unwrap();
        }
        (
            dir,
            LocalConfig {
                key_files: files,
                generate_if_missing: false,
            },
        )
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trips_with_aad() {
        let (_d, cfg) = backend_with(1);
        let b = LocalBackend::from_config(&cfg).unwrap();
        let seed = SecretBytes::copy_from(&[42u8; 32]);
        let w = b.wrap(&seed, b"ctx").await.unwrap();
        assert_eq!(w.ciphertext.len(), 12 + 32 + 16);
        assert_eq!(b.unwrap(&w, b"ctx").await.unwrap(), seed);
    }

    #[tokio::test]
    async fn unwrap_rejects_other_aad_and_tampering() {
        let (_d, cfg) = backend_with(1);
        let b = LocalBackend::from_config(&cfg).unwrap();
        let seed = SecretBytes::copy_from(&[1u8; 32]);
        let mut w = b.wrap(&seed, b"ctx").await.unwrap();
        let err = b.unwrap(&w, b"other").await.unwrap_err();
        assert_eq!(err.kind(), polykms_backend::ErrorKind::WrongKey);
        w.ciphertext[20] ^= 1;
        assert_eq!(
            b.unwrap(&w, b"ctx").await.unwrap_err().kind(),
            polykms_backend::ErrorKind::WrongKey
        );
        w.ciphertext.truncate(5);
        assert_eq!(
            b.unwrap(&w, b"ctx").await.unwrap_err().kind(),
            polykms_backend::ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn prepending_a_key_rotates_and_old_wraps_still_unwrap() {
        let (dir, cfg) = backend_with(1);
        let old = LocalBackend::from_config(&cfg).unwrap();
        let seed = SecretBytes::copy_from(&[9u8; 32]);
        let w_old = old.wrap(&seed, b"a").await.unwrap();

        let newer = dir.path().join("new.key");
        generate_key_file(&newer).unwrap();
        let rotated = LocalConfig {
            key_files: vec![newer, cfg.key_files[0].clone()],
            generate_if_missing: false,
        };
        let b = LocalBackend::from_config(&rotated).unwrap();
        assert_ne!(
            b.key_version().await.unwrap(),
            old.key_version().await.unwrap()
        );
        assert_eq!(b.unwrap(&w_old, b"a").await.unwrap(), seed);
        let w_new = b.wrap(&seed, b"a").await.unwrap();
        assert_eq!(w_new.key_version, b.key_version().await.unwrap());
        // The old backend never had the new key.
        let err = old.unwrap(&w_new, b"a").await.unwrap_err();
        assert_eq!(err.kind(), polykms_backend::ErrorKind::KeyUnavailable);
    }

    #[test]
    fn key_version_does_not_contain_the_key() {
        let key = [0xabu8; 32];
        let v = key_version_of(&key);
        assert!(!v.as_str().contains(&hex::encode(&key[..4])));
        assert_eq!(v.as_str().len(), "local:".len() + 16);
    }

    #[test]
    fn duplicate_key_files_are_rejected() {
        let (_d, cfg) = backend_with(1);
        let dup = LocalConfig {
            key_files: vec![cfg.key_files[0].clone(), cfg.key_files[0].clone()],
            generate_if_missing: false,
        };
        let err = LocalBackend::from_config(&dup).unwrap_err();
        assert!(err.to_string().contains("same key"), "{err}");
    }

    #[test]
    fn empty_key_files_is_a_config_error() {
        let err = LocalBackend::from_config(&LocalConfig {
            key_files: vec![],
            generate_if_missing: false,
        })
        .unwrap_err();
        assert_eq!(err.kind(), polykms_backend::ErrorKind::Config);
    }

    #[test]
    fn generate_if_missing_creates_the_first_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("dev.key");
        let cfg = LocalConfig {
            key_files: vec![path.clone()],
            generate_if_missing: true,
        };
        LocalBackend::from_config(&cfg).unwrap();
        assert!(path.exists());
        // A second load reuses it.
        let v1 = key_version_of(read_key_file(&path).unwrap().expose());
        let b = LocalBackend::from_config(&cfg).unwrap();
        assert_eq!(b.current().version, v1);
    }
}
