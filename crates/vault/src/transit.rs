//! The three Transit calls polykms makes, as rustify endpoints run through vaultrs' plumbing.
//!
//! vaultrs' own `transit` module is not used: its key read lacks `latest_version` and fails on
//! key types it does not know, and its request/response types keep plaintext in plain
//! `String`s. These endpoints go through `vaultrs::api::exec_with_result`, so they share the
//! client's HTTP stack, token and namespace middleware and error parsing.

use std::fmt;

use rustify::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError as RestError;
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroize;

/// Key types whose Transit encryption is an AEAD that binds `associated_data`.
const AEAD_KEY_TYPES: &[&str] = &[
    "aes128-gcm96",
    "aes256-gcm96",
    "chacha20-poly1305",
    "xchacha20-poly1305",
];

/// What `GET {mount}/keys/{name}` tells about a key (the fields polykms uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KeyInfo {
    /// Key type, e.g. `aes256-gcm96`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// Newest version; encrypt uses it.
    pub latest_version: u64,
    /// Oldest version decrypt still accepts.
    #[serde(default)]
    pub min_decryption_version: u64,
    /// Whether the key can encrypt at all.
    #[serde(default)]
    pub supports_encryption: bool,
    /// Whether the key can decrypt at all.
    #[serde(default)]
    pub supports_decryption: bool,
    /// Derived keys need a `context` on every call.
    #[serde(default)]
    pub derived: bool,
    /// OpenBao: the key is soft-deleted and refuses all operations until restored.
    #[serde(default)]
    pub soft_deleted: bool,
    /// Whether a `DELETE {mount}/keys/{name}` would delete the key and every version for good.
    #[serde(default)]
    pub deletion_allowed: bool,
    /// Versions below it were trimmed: deleted for good. 0 when nothing was trimmed.
    #[serde(default)]
    pub min_available_version: u64,
}

impl KeyInfo {
    /// Largest plaintext Transit encrypts with this key type: RSA-OAEP (SHA-256) takes
    /// k − 66 bytes for a k-byte modulus; AEAD types have no bound below the plugin's own.
    pub(crate) fn max_plaintext_len(&self) -> usize {
        match self.key_type.as_str() {
            "rsa-2048" => 256 - 66,
            "rsa-3072" => 384 - 66,
            "rsa-4096" => 512 - 66,
            _ => usize::MAX,
        }
    }

    /// Whether `version` is no longer in the key: trimmed, or past the newest one (the key
    /// was deleted and made again). The read's `keys` map cannot tell: it lists only the
    /// versions from `min_decryption_version` on.
    pub(crate) fn version_gone(&self, version: u64) -> bool {
        version < self.min_available_version || version > self.latest_version
    }

    /// Whether encrypt with this key binds `associated_data`.
    pub fn binds_associated_data(&self) -> bool {
        AEAD_KEY_TYPES.contains(&self.key_type.as_str())
    }
}

/// Base64 of a secret, wiped on drop and never printed.
#[derive(Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct SecretBase64(String);

impl SecretBase64 {
    pub fn new(text: String) -> Self {
        SecretBase64(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretBase64 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBase64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl Serialize for SecretBase64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

fn json_body<T: Serialize>(body: &T) -> Result<Option<Vec<u8>>, RestError> {
    serde_json::to_vec(body)
        .map(Some)
        .map_err(|e| RestError::DataParseError { source: e.into() })
}

/// `GET {mount}/keys/{name}`.
#[derive(Debug)]
pub(crate) struct ReadKey<'a> {
    pub mount: &'a str,
    pub name: &'a str,
}

impl Endpoint for ReadKey<'_> {
    type Response = KeyInfo;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/keys/{}", self.mount, self.name)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::GET
    }
}

/// `POST {mount}/encrypt/{name}`.
#[derive(Debug, Serialize)]
pub(crate) struct Encrypt<'a> {
    #[serde(skip)]
    pub mount: &'a str,
    #[serde(skip)]
    pub name: &'a str,
    pub plaintext: SecretBase64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Answer of encrypt: `vault:vN:<base64>`.
#[derive(Debug, Deserialize)]
pub(crate) struct EncryptResponse {
    pub ciphertext: String,
}

impl Endpoint for Encrypt<'_> {
    type Response = EncryptResponse;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/encrypt/{}", self.mount, self.name)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::POST
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        json_body(self)
    }
}

/// `POST {mount}/decrypt/{name}`.
#[derive(Debug, Serialize)]
pub(crate) struct Decrypt<'a> {
    #[serde(skip)]
    pub mount: &'a str,
    #[serde(skip)]
    pub name: &'a str,
    pub ciphertext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Answer of decrypt: the plaintext, base64.
#[derive(Debug, Deserialize)]
pub(crate) struct DecryptResponse {
    pub plaintext: SecretBase64,
}

impl Endpoint for Decrypt<'_> {
    type Response = DecryptResponse;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        format!("{}/decrypt/{}", self.mount, self.name)
    }

    fn method(&self) -> RequestMethod {
        RequestMethod::POST
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        json_body(self)
    }
}

/// The key version in a Transit ciphertext `vault:v<N>:<base64>`, if it has that shape.
pub(crate) fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (version, body) = rest.split_once(':')?;
    if body.is_empty() || version.starts_with('0') {
        return None;
    }
    version.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_version_reads_transit_prefix() {
        assert_eq!(ciphertext_version("vault:v1:abcd"), Some(1));
        assert_eq!(ciphertext_version("vault:v42:x"), Some(42));
        assert_eq!(ciphertext_version("vault:v1:"), None);
        assert_eq!(ciphertext_version("vault:v0:x"), None);
        assert_eq!(ciphertext_version("vault:vx:abcd"), None);
        assert_eq!(ciphertext_version("bao:v1:abcd"), None);
        assert_eq!(ciphertext_version("vault:v1"), None);
    }

    #[test]
    fn key_info_parses_openbao_answer_and_knows_aead_types() {
        let json = r#"{"type":"aes256-gcm96","latest_version":3,"min_decryption_version":1,
            "min_encryption_version":0,"supports_encryption":true,"supports_decryption":true,
            "derived":false,"keys":{"1":1,"2":2,"3":3},"name":"k","exportable":false}"#;
        let info: KeyInfo = serde_json::from_str(json).unwrap();
        assert_eq!(info.latest_version, 3);
        assert!(info.binds_associated_data());
        let rsa = KeyInfo {
            key_type: "rsa-4096".into(),
            ..info
        };
        assert!(!rsa.binds_associated_data());
    }

    #[test]
    fn encrypt_body_carries_fields_but_debug_hides_plaintext() {
        let e = Encrypt {
            mount: "transit",
            name: "k",
            plaintext: SecretBase64::new("c2VjcmV0".into()),
            associated_data: Some("YQ==".into()),
            context: None,
        };
        let body = String::from_utf8(e.body().unwrap().unwrap()).unwrap();
        assert_eq!(body, r#"{"plaintext":"c2VjcmV0","associated_data":"YQ=="}"#);
        assert!(!format!("{e:?}").contains("c2VjcmV0"));
        assert_eq!(e.path(), "transit/encrypt/k");
    }
}
