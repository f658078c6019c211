use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use polykms_backend::{BackendError, SecretBytes, read_private_file};
use zeroize::Zeroizing;

/// Length of a local key-encryption key: AES-256.
pub const KEY_LEN: usize = 32;

/// Reads a key file: 32 raw bytes, or the same base64-encoded (one line).
///
/// Refuses files that group or others may read: a key anyone on the node can read protects
/// nothing.
pub fn read_key_file(path: &Path) -> Result<SecretBytes, BackendError> {
    let shown = path.display();
    let raw = read_private_file(path, "key file")?;
    if raw.len() == KEY_LEN {
        return Ok(SecretBytes::copy_from(&raw));
    }
    let text = raw.trim_ascii();
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default(),
    );
    if decoded.len() == KEY_LEN {
        return Ok(SecretBytes::copy_from(&decoded));
    }
    Err(BackendError::config(format!(
        "key file {shown}: expected {KEY_LEN} raw bytes or their base64, found {} bytes",
        raw.len()
    )))
}

/// Writes a fresh random key to `path` with mode 0600, creating parent directories.
/// Never overwrites an existing file.
pub fn generate_key_file(path: &Path) -> Result<(), BackendError> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| BackendError::config(format!("creating {}: {e}", parent.display())))?;
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    polykms_backend::crypto::fill_random(key.as_mut())
        .map_err(|e| BackendError::internal(format!("key file {shown}: {e}")))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| BackendError::config(format!("key file {shown}: {e}")))?;
    file.write_all(key.as_ref())
        .and_then(|()| file.sync_all())
        .map_err(|e| BackendError::config(format!("writing key file {shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_key_is_private_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate_key_file(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_key_file(&p).unwrap().len(), KEY_LEN);
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate_key_file(&p).unwrap();
        let before = fs::read(&p).unwrap();
        assert!(generate_key_file(&p).is_err());
        assert_eq!(fs::read(&p).unwrap(), before);
    }

    #[test]
    fn world_readable_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        generate_key_file(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&p).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn wrong_length_and_missing_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        fs::write(&p, [1u8; 16]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            read_key_file(&p)
                .unwrap_err()
                .to_string()
                .contains("found 16 bytes")
        );
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn base64_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b64");
        let text = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        fs::write(&p, format!("{text}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&p).unwrap().expose(), &[5u8; 32]);
    }
}
