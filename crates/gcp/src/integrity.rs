//! End-to-end integrity checks as Cloud KMS documents them, and zeroized request buffers.
//!
//! <https://cloud.google.com/kms/docs/data-integrity-guidelines>: send CRC32C checksums of the
//! request's plaintext/ciphertext and AAD, require the `verified_*` flags in the answer, and
//! check the CRC32C of the returned bytes. A mismatch means corruption between us and KMS;
//! the guidelines say to discard the answer and retry a limited number of times, so these
//! errors are `Integrity` and retryable (core's retry policy bounds the count).

use bytes::Bytes;
use polykms_backend::{BackendError, SecretBytes};

/// CRC32C as the API's `Int64Value` fields carry it (a non-negative value below 2^32).
pub(crate) fn crc32c(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

/// Checks a CRC32C returned by KMS against the bytes it returned with it.
pub(crate) fn check_returned_crc(
    field: &str,
    data: &[u8],
    returned: Option<i64>,
) -> Result<(), BackendError> {
    match returned {
        Some(crc) if crc == crc32c(data) => Ok(()),
        Some(_) => Err(corrupted(format!(
            "{field} does not match the returned bytes"
        ))),
        None => Err(corrupted(format!("{field} is missing from the response"))),
    }
}

/// Checks a `verified_*_crc32c` flag: false means KMS never saw (or never checked) the
/// checksum we sent, so the request may have been altered on the way.
pub(crate) fn check_verified(field: &str, verified: bool) -> Result<(), BackendError> {
    if verified {
        Ok(())
    } else {
        Err(corrupted(format!(
            "{field} is false: the request checksum was not verified by KMS"
        )))
    }
}

fn corrupted(detail: String) -> BackendError {
    BackendError::integrity(format!(
        "cloud kms response failed its integrity check: {detail}"
    ))
    .with_retryable(true)
}

/// Owns a secret for a `Bytes` handed to the client: when the client drops its last
/// reference, the secret is zeroized (`SecretBytes` zeroizes on drop).
struct ZeroizingOwner(SecretBytes);

impl AsRef<[u8]> for ZeroizingOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

/// A copy of `secret` as `Bytes` that is zeroized when the client library lets go of it.
pub(crate) fn secret_bytes(secret: &SecretBytes) -> Bytes {
    Bytes::from_owner(ZeroizingOwner(secret.clone()))
}

/// Moves plaintext returned by the client into a `SecretBytes`, zeroizing the client's
/// buffer when we hold its only reference (we do, for a decoded response).
pub(crate) fn take_secret(bytes: Bytes) -> SecretBytes {
    let secret = SecretBytes::copy_from(&bytes);
    if let Ok(mut owned) = bytes.try_into_mut() {
        zeroize::Zeroize::zeroize(owned.as_mut());
    }
    secret
}

#[cfg(test)]
mod tests {
    use polykms_backend::ErrorKind;

    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        // The standard check value of CRC-32C over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn returned_crc_must_be_present_and_match() {
        check_returned_crc("ciphertext_crc32c", b"abc", Some(crc32c(b"abc"))).unwrap();
        let e = check_returned_crc("ciphertext_crc32c", b"abc", Some(crc32c(b"abd"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.is_retryable());
        let e = check_returned_crc("plaintext_crc32c", b"abc", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.message().contains("missing"));
    }

    #[test]
    fn unverified_request_checksums_are_rejected() {
        check_verified("verified_plaintext_crc32c", true).unwrap();
        let e = check_verified("verified_plaintext_crc32c", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.is_retryable());
    }

    #[test]
    fn secret_bytes_round_trip_through_bytes() {
        let s = SecretBytes::copy_from(b"seed-material");
        let b = secret_bytes(&s);
        assert_eq!(&b[..], b"seed-material");
        assert_eq!(take_secret(b), s);
        assert_eq!(
            take_secret(Bytes::from(b"plain".to_vec())).expose(),
            b"plain"
        );
    }
}
