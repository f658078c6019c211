//! KMIP failures sorted into polykms error kinds at the edge: the Result Status and Result
//! Reason of a response (KMIP 1.4 §9.1.3.2.29–30), and I/O and TLS failures of the connection.

use polykms_backend::{BackendError, ErrorKind};
use tokio_rustls::rustls;

use crate::protocol::{BatchResult, Operation, ResultStatus};

/// Result Reason values that the mapping names (KMIP 1.4 §9.1.3.2.30).
pub mod reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const RESPONSE_TOO_LARGE: u32 = 0x02;
    pub const AUTHENTICATION_NOT_SUCCESSFUL: u32 = 0x03;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const MISSING_DATA: u32 = 0x06;
    pub const INVALID_FIELD: u32 = 0x07;
    pub const FEATURE_NOT_SUPPORTED: u32 = 0x08;
    pub const OPERATION_CANCELED_BY_REQUESTER: u32 = 0x09;
    pub const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub const ILLEGAL_OPERATION: u32 = 0x0B;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    pub const OBJECT_ARCHIVED: u32 = 0x0D;
    pub const KEY_FORMAT_TYPE_NOT_SUPPORTED: u32 = 0x10;
    pub const USAGE_LIMIT_EXCEEDED: u32 = 0x1A;
    pub const BAD_CRYPTOGRAPHIC_PARAMETERS: u32 = 0x24;
    pub const BAD_PASSWORD: u32 = 0x25;
    pub const INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x29;
    pub const INTERNAL_SERVER_ERROR: u32 = 0x2A;
    pub const OBJECT_DESTROYED: u32 = 0x36;
    pub const OBJECT_NOT_FOUND: u32 = 0x37;
    pub const NOT_AUTHORISED: u32 = 0x39;
    pub const SERVER_LIMIT_EXCEEDED: u32 = 0x3A;
    pub const UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS: u32 = 0x3E;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u32 = 0x3F;
    pub const GENERAL_FAILURE: u32 = 0x100;

    /// The specification's name of a reason, for messages.
    pub fn name(reason: u32) -> String {
        let known = match reason {
            ITEM_NOT_FOUND => "Item Not Found",
            RESPONSE_TOO_LARGE => "Response Too Large",
            AUTHENTICATION_NOT_SUCCESSFUL => "Authentication Not Successful",
            INVALID_MESSAGE => "Invalid Message",
            OPERATION_NOT_SUPPORTED => "Operation Not Supported",
            MISSING_DATA => "Missing Data",
            INVALID_FIELD => "Invalid Field",
            FEATURE_NOT_SUPPORTED => "Feature Not Supported",
            OPERATION_CANCELED_BY_REQUESTER => "Operation Canceled By Requester",
            CRYPTOGRAPHIC_FAILURE => "Cryptographic Failure",
            ILLEGAL_OPERATION => "Illegal Operation",
            PERMISSION_DENIED => "Permission Denied",
            OBJECT_ARCHIVED => "Object Archived",
            KEY_FORMAT_TYPE_NOT_SUPPORTED => "Key Format Type Not Supported",
            USAGE_LIMIT_EXCEEDED => "Usage Limit Exceeded",
            BAD_CRYPTOGRAPHIC_PARAMETERS => "Bad Cryptographic Parameters",
            BAD_PASSWORD => "Bad Password",
            INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK => "Incompatible Cryptographic Usage Mask",
            INTERNAL_SERVER_ERROR => "Internal Server Error",
            OBJECT_DESTROYED => "Object Destroyed",
            OBJECT_NOT_FOUND => "Object Not Found",
            NOT_AUTHORISED => "Not Authorised",
            SERVER_LIMIT_EXCEEDED => "Server Limit Exceeded",
            UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS => "Unsupported Cryptographic Parameters",
            UNSUPPORTED_PROTOCOL_VERSION => "Unsupported Protocol Version",
            GENERAL_FAILURE => "General Failure",
            other => return format!("reason {other:#X}"),
        };
        known.to_owned()
    }
}

/// Longest part of a server's Result Message kept in our errors.
const MAX_SERVER_MESSAGE: usize = 200;

/// A failed batch item, before any follow-up call refines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipFailure {
    pub operation: Operation,
    pub status: ResultStatus,
    pub reason: Option<u32>,
    pub message: Option<String>,
}

impl KmipFailure {
    pub fn from_result(operation: Operation, result: &BatchResult) -> Self {
        KmipFailure {
            operation,
            status: result.status,
            reason: result.reason,
            message: result.message.clone(),
        }
    }

    pub fn is(&self, reason: u32) -> bool {
        self.reason == Some(reason)
    }

    /// `Decrypt failed: Item Not Found ("Could not locate object: 7")`.
    pub fn describe(&self) -> String {
        let status = match self.status {
            ResultStatus::OperationFailed => "failed",
            ResultStatus::OperationPending => "is pending (asynchronous answers are not used)",
            ResultStatus::OperationUndone => "was undone",
            ResultStatus::Success => "succeeded",
            ResultStatus::Other(_) => "has an unknown result status",
        };
        let reason = self
            .reason
            .map(|r| format!(": {}", reason::name(r)))
            .unwrap_or_default();
        let message = self
            .message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .map(|m| {
                let m: String = m
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_SERVER_MESSAGE)
                    .collect();
                format!(" ({m:?})")
            })
            .unwrap_or_default();
        format!("KMIP {} {status}{reason}{message}", self.operation.name())
    }

    /// The kind this failure has on its own (some are refined by a follow-up call: see
    /// `KmipBackend`).
    pub fn kind(&self) -> ErrorKind {
        use reason::*;
        if self.status == ResultStatus::OperationUndone {
            return ErrorKind::Unavailable;
        }
        if self.status != ResultStatus::OperationFailed {
            return ErrorKind::Internal;
        }
        match self.reason.unwrap_or(GENERAL_FAILURE) {
            ITEM_NOT_FOUND
            | OBJECT_NOT_FOUND
            | OBJECT_DESTROYED
            | OBJECT_ARCHIVED
            | ILLEGAL_OPERATION
            | USAGE_LIMIT_EXCEEDED
            | INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK => ErrorKind::KeyUnavailable,
            AUTHENTICATION_NOT_SUCCESSFUL | PERMISSION_DENIED | NOT_AUTHORISED | BAD_PASSWORD => {
                ErrorKind::Unauthorized
            }
            CRYPTOGRAPHIC_FAILURE if self.operation == Operation::Decrypt => ErrorKind::WrongKey,
            OPERATION_NOT_SUPPORTED
            | FEATURE_NOT_SUPPORTED
            | BAD_CRYPTOGRAPHIC_PARAMETERS
            | UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS
            | KEY_FORMAT_TYPE_NOT_SUPPORTED
            | UNSUPPORTED_PROTOCOL_VERSION => ErrorKind::Config,
            INVALID_MESSAGE | MISSING_DATA | INVALID_FIELD | RESPONSE_TOO_LARGE => {
                ErrorKind::Internal
            }
            // Transient on the server's side: overloaded, cancelled, failing inside.
            SERVER_LIMIT_EXCEEDED
            | OPERATION_CANCELED_BY_REQUESTER
            | INTERNAL_SERVER_ERROR
            | GENERAL_FAILURE
            | CRYPTOGRAPHIC_FAILURE => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    pub fn to_error(&self) -> BackendError {
        BackendError::new(self.kind(), self.describe())
    }
}

/// What polykms' TLS client offers (rustls' safe defaults on aws-lc-rs), checked by a test
/// against the provider.
pub const OFFERED: &str = "polykms offers TLS 1.3 and TLS 1.2 with ECDHE key exchange and \
     AES-GCM or ChaCha20-Poly1305 only (TLS 1.2: ECDHE-ECDSA or ECDHE-RSA with AES128-GCM, \
     AES256-GCM or CHACHA20-POLY1305; no RSA key exchange, no CBC)";

/// Sorts a connection failure: TLS refusals are authentication problems (not retried); the
/// rest is the network (retried).
pub fn io_error(context: &str, endpoint: &str, e: &std::io::Error) -> BackendError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls_error(context, endpoint, tls);
    }
    BackendError::unavailable(format!("{context} {endpoint}: {e}"))
}

fn tls_error(context: &str, endpoint: &str, e: &rustls::Error) -> BackendError {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateRequired
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied
            | A::DecryptError),
        ) => BackendError::unauthorized(format!(
            "{context} {endpoint}: the KMIP server refused our client certificate (TLS alert \
             {alert:?}): check that client_cert_file is issued by a CA the server trusts and is \
             registered for this client"
        )),
        // Servers answer so when no protocol version or cipher suite is shared (and some, in TLS
        // 1.2, for a missing client certificate). Retrying cannot help; the server must offer
        // one of ours, so the message says what polykms offers.
        rustls::Error::AlertReceived(A::HandshakeFailure) => BackendError::config(format!(
            "{context} {endpoint}: the KMIP server refused the TLS handshake (alert \
             HandshakeFailure): {OFFERED}; a server that offers only RSA key exchange or CBC \
             suites (PyKMIP with an RSA server certificate) needs a fix on the server side: allow \
             an ECDHE suite with AES-GCM or ChaCha20 (for PyKMIP: an ECDSA server certificate); \
             some servers also answer so for a missing client certificate (client_cert_file)"
        )),
        rustls::Error::InvalidCertificate(why) => BackendError::unauthorized(format!(
            "{context} {endpoint}: the KMIP server's certificate is not trusted ({why:?}): check \
             ca_file and that the endpoint (or tls_server_name) matches the certificate"
        )),
        other => BackendError::unavailable(format!("{context} {endpoint}: TLS: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(operation: Operation, reason: u32) -> KmipFailure {
        KmipFailure {
            operation,
            status: ResultStatus::OperationFailed,
            reason: Some(reason),
            message: Some("detail".into()),
        }
    }

    #[test]
    fn reasons_map_to_the_kinds_the_issue_names() {
        use reason::*;
        let kinds = [
            (
                Operation::Decrypt,
                ITEM_NOT_FOUND,
                ErrorKind::KeyUnavailable,
            ),
            (
                Operation::Encrypt,
                PERMISSION_DENIED,
                ErrorKind::Unauthorized,
            ),
            (
                Operation::Locate,
                AUTHENTICATION_NOT_SUCCESSFUL,
                ErrorKind::Unauthorized,
            ),
            (
                Operation::Decrypt,
                CRYPTOGRAPHIC_FAILURE,
                ErrorKind::WrongKey,
            ),
            (
                Operation::Encrypt,
                CRYPTOGRAPHIC_FAILURE,
                ErrorKind::Unavailable,
            ),
            (
                Operation::Encrypt,
                SERVER_LIMIT_EXCEEDED,
                ErrorKind::Unavailable,
            ),
            (
                Operation::Encrypt,
                UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS,
                ErrorKind::Config,
            ),
        ];
        for (op, r, want) in kinds {
            assert_eq!(failure(op, r).kind(), want, "{op:?} reason {r:#x}");
        }
        let retryable = [
            (Operation::Decrypt, GENERAL_FAILURE, true),
            (Operation::Decrypt, PERMISSION_DENIED, false),
            (Operation::Decrypt, CRYPTOGRAPHIC_FAILURE, false),
        ];
        for (op, r, want) in retryable {
            let e = failure(op, r).to_error();
            assert_eq!(e.is_retryable(), want, "{op:?} reason {r:#x}");
        }
        let undone = KmipFailure {
            status: ResultStatus::OperationUndone,
            ..failure(Operation::Encrypt, GENERAL_FAILURE)
        };
        assert_eq!(undone.kind(), ErrorKind::Unavailable);
        let pending = KmipFailure {
            status: ResultStatus::OperationPending,
            reason: None,
            ..failure(Operation::Encrypt, GENERAL_FAILURE)
        };
        assert_eq!(pending.kind(), ErrorKind::Internal);
    }

    #[test]
    fn description_names_operation_reason_and_a_bounded_server_message() {
        let f = failure(Operation::Decrypt, reason::ITEM_NOT_FOUND);
        assert_eq!(
            f.describe(),
            "KMIP Decrypt failed: Item Not Found (\"detail\")"
        );
        let long = KmipFailure {
            message: Some(format!("{}\n{}", "x".repeat(500), "y")),
            ..f
        };
        let d = long.describe();
        assert!(d.len() < 260 && !d.contains('\n'), "{d}");
        assert!(
            failure(Operation::Locate, 0x77)
                .describe()
                .contains("reason 0x77")
        );
    }

    /// The handshake-failure message must stay true of the client we build.
    #[test]
    fn the_offer_named_in_handshake_failures_is_what_the_client_offers() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            let aead = name.ends_with("_GCM_SHA256")
                || name.ends_with("_GCM_SHA384")
                || name.ends_with("_CHACHA20_POLY1305_SHA256");
            let kx = name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_");
            assert!(aead && kx, "{name} is not named in OFFERED");
        }
        let versions: Vec<_> = rustls::DEFAULT_VERSIONS
            .iter()
            .map(|v| format!("{:?}", v.version))
            .collect();
        assert_eq!(versions, ["TLSv1_3", "TLSv1_2"]);
    }

    #[test]
    fn tls_refusals_are_unauthorized_and_other_io_errors_unavailable() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let e = io_error("connecting to", "kmip:5696", &refused);
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(e.message().contains("client_cert_file"), "{e}");
        let no_common_suite = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
        );
        let e = io_error("TLS handshake with", "kmip:5696", &no_common_suite);
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(!e.is_retryable());
        for offered in [
            "TLS 1.3",
            "TLS 1.2",
            "ECDHE",
            "AES-GCM",
            "ChaCha20",
            "server side",
        ] {
            assert!(e.message().contains(offered), "{offered}: {e}");
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let e = io_error("reading from", "kmip:5696", &reset);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
    }
}
