//! Binding a wrapped seed to its AAD: Key Vault's wrapKey has no associated-data parameter for
//! RSA-OAEP or AES key wrap (the `aad` field of the REST API applies only to AES-GCM
//! encrypt/decrypt on Managed HSM,
//! https://learn.microsoft.com/rest/api/keyvault/keys/wrap-key/wrap-key#request-body), so the
//! binding travels inside the wrapped value ([`AadDigestBinding`]).

pub(crate) use polykms_backend::AAD_DIGEST_LEN as DIGEST_LEN;
use polykms_backend::AadDigestBinding;

/// This backend's domain: unchanged since the first release, so existing wraps keep opening.
pub(crate) const BINDING: AadDigestBinding = AadDigestBinding::new(b"polykms azure aad v1\0");
