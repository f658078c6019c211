//! The files a backend's settings name, so that the binary treats them all alike.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::BackendError;

/// Settings that name files: key files, CA bundles, token, PIN, secret and credential files.
///
/// The binary resolves every relative path against the config file's directory and reloads
/// when one of these files changes on disk (`[server] watch_config`). A backend's config type
/// implements this by listing each of its path fields, optional ones when set; a path left out
/// is taken as written and not watched.
pub trait ConfigFiles {
    /// Every file path the settings name, mutable so that relative ones can be resolved.
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf>;
}

/// Reads a file that holds a secret (a key, a PIN), refusing what would leak it: a path that
/// is not a regular file, or a mode that lets group or others read it (a secret anyone on the
/// node can read protects nothing). The bytes come back zeroized on drop.
///
/// Errors are `Config` and read `"{label} {path}: …"`, e.g. `key file /etc/k: not a regular
/// file`; they name the file, never its content.
pub fn read_private_file(path: &Path, label: &str) -> Result<Zeroizing<Vec<u8>>, BackendError> {
    let shown = path.display();
    let meta =
        fs::metadata(path).map_err(|e| BackendError::config(format!("{label} {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(BackendError::config(format!(
            "{label} {shown}: not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BackendError::config(format!(
            "{label} {shown}: mode {mode:04o} lets group or others read it; chmod 600 it"
        )));
    }
    Ok(Zeroizing::new(fs::read(path).map_err(|e| {
        BackendError::config(format!("{label} {shown}: {e}"))
    })?))
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;

    use super::*;

    fn file_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("secret-{mode:o}"));
        fs::write(&path, b"s3cret").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn owner_only_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400] {
            let path = file_with_mode(dir.path(), mode);
            assert_eq!(
                &read_private_file(&path, "pin_file:").unwrap()[..],
                b"s3cret"
            );
        }
    }

    #[test]
    fn group_or_other_bits_are_refused_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610, 0o601] {
            let path = file_with_mode(dir.path(), mode);
            let err = read_private_file(&path, "key file").unwrap_err();
            let msg = err.message();
            assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
            assert!(
                msg.starts_with(&format!("key file {}", path.display())),
                "{msg}"
            );
            assert!(!msg.contains("s3cret"), "{msg}");
        }
    }

    #[test]
    fn directories_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_private_file(dir.path(), "key file").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_private_file(&dir.path().join("absent"), "key file").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
