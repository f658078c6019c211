//! `ca_file`: a PEM bundle of extra trusted roots, read and checked once at startup.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::NetError;

/// The certificates of a `ca_file`, checked to hold at least one PEM certificate.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    pem: Vec<u8>,
    count: usize,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.count)
            .finish()
    }
}

impl CaBundle {
    /// Reads `path`; fails (naming `ca_file`) when it is unreadable or holds no certificate.
    pub fn load(path: &Path) -> Result<Self, NetError> {
        let pem = std::fs::read(path).map_err(|e| {
            NetError::new("ca_file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_pem(path, pem)
    }

    /// Checks PEM bytes read from `path` (which is only used in messages).
    pub fn from_pem(path: &Path, pem: Vec<u8>) -> Result<Self, NetError> {
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            cert.map_err(|e| {
                NetError::new(
                    "ca_file",
                    format!("{} is not a PEM bundle: {e}", path.display()),
                )
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(NetError::new(
                "ca_file",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
        Ok(CaBundle {
            path: path.to_owned(),
            pem,
            count,
        })
    }

    /// Where the bundle was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bundle as read (PEM text, possibly several certificates).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// Each certificate on its own, DER-encoded.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.pem)
            .filter_map(Result::ok)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_or_garbage_files_are_errors_naming_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = CaBundle::load(&dir.path().join("missing.pem")).unwrap_err();
        assert_eq!(err.field, "ca_file");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(
            CaBundle::load(&empty)
                .unwrap_err()
                .reason
                .contains("no PEM")
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(CaBundle::load(&garbage).unwrap_err().field, "ca_file");
    }
}
