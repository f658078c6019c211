//! What kube-apiserver stores in etcd for a KMS v2 encrypted object: the `EncryptedObject`
//! message after the `k8s:enc:kms:v2:<provider>:` prefix (kms-protocol.md, "What lands in
//! etcd"; upstream k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2/api.proto).
//! Shared by `polykms audit` and the apiserver emulator under integration/.

use std::collections::HashMap;

/// The KMS v2 `EncryptedObject`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    /// AES-GCM of the object (`info || nonce || ciphertext+tag` for HKDF seeds).
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The plugin's key_id when the DEK (or seed) was wrapped.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The plugin's ciphertext of the DEK or seed.
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// Annotations the plugin returned from Encrypt.
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
    /// 0 = AES-GCM key (apiserver < 1.29 default), 1 = HKDF-SHA256 seed.
    #[prost(int32, tag = "5")]
    pub encrypted_dek_source_type: i32,
}
