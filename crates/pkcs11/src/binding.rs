//! Binding a key-wrapped seed to its AAD: AES key wrap (RFC 5649) has no associated data, so,
//! as the Azure backend does, the binding travels inside the wrapped value
//! ([`AadDigestBinding`]).

pub(crate) use polykms_backend::AAD_DIGEST_LEN as DIGEST_LEN;
use polykms_backend::AadDigestBinding;

/// This backend's domain.
pub(crate) const BINDING: AadDigestBinding = AadDigestBinding::new(b"polykms pkcs11 aad v1\0");
