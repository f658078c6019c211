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

/// The first key after every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// range end that reads a whole prefix, e.g. `/registry/secrets/`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: scan to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"/registry/secrets/"), b"/registry/secrets0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\x00");
    }
}
