//! The KMIP backend: an AES key on a KMIP server (a key manager or HSM front end) wraps the
//! seeds with KMIP Encrypt, AES-GCM, the plugin's AAD as Authenticated Encryption Additional
//! Data. The key never leaves the server; the wrap records the IV and tag, the envelope the
//! key's Unique Identifier (the key version).
//!
//! With `key_name`, the key that wraps is the Active symmetric key of that Name activated most
//! recently ([`select`]), looked up again by every probe, so a new active key under the same
//! name changes key_id within one probe interval; older keys keep unwrapping while the server
//! lets them decrypt. With `key_uid`, the key is pinned.

mod client;
mod config;
mod error;
mod protocol;
mod select;
mod ttlv;
mod wrap;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use polykms_backend::{
    BackendError, ErrorKind, KeyEncryptionBackend, KeyVersion, SecretBytes, WrappedKey,
};
use rand::RngCore;

pub use config::{KeySelector, KmipConfig};

use crate::client::{CallError, Client};
use crate::error::reason;
use crate::protocol::{KeyAttributes, Operation, state};
use crate::wrap::GcmWrap;

/// AAD of the probe's canary round trip (never the plugin's own AAD).
const CANARY_AAD: &[u8] = b"polykms:kmip:canary";
/// GCM IV length we generate.
const IV_LEN: usize = 12;

/// Wraps seeds with an AES key on a KMIP server.
pub struct KmipBackend {
    client: Client,
    selector: KeySelector,
    /// Unique Identifier of the key that wraps now, from the last look-up.
    current: ArcSwapOption<String>,
}

impl fmt::Debug for KmipBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmipBackend")
            .field("endpoint", &self.client.address())
            .field("key", &self.selector)
            .finish_non_exhaustive()
    }
}

impl KmipBackend {
    /// Validates config and reads the certificate, key, CA and credential files. Does not
    /// connect: a server that is down now is reported by probe() later. Fails only on bad
    /// config or files (kind Config, naming the field).
    pub async fn connect(config: &KmipConfig) -> Result<Self, BackendError> {
        let validated = config.validate()?;
        let client = Client::new(config, &validated)?;
        Ok(KmipBackend {
            client,
            selector: validated.selector,
            current: ArcSwapOption::empty(),
        })
    }

    async fn call(
        &self,
        op: Operation,
        payload: Vec<ttlv::Ttlv>,
    ) -> Result<Option<ttlv::Ttlv>, CallError> {
        self.client.call(op, payload).await
    }

    async fn attributes(&self, uid: &str) -> Result<KeyAttributes, CallError> {
        let payload = self
            .call(
                Operation::GetAttributes,
                protocol::get_attributes(uid, &protocol::KEY_ATTRIBUTES),
            )
            .await?;
        Ok(protocol::parse_key_attributes(uid, payload.as_ref()))
    }

    /// Finds the key that wraps now and checks it can, remembering it for `wrap`.
    async fn resolve(&self) -> Result<KeyAttributes, BackendError> {
        let key = match &self.selector {
            KeySelector::Uid(uid) => self.attributes(uid).await.map_err(|e| for_key(e, uid))?,
            KeySelector::Name(name) => {
                let located = self
                    .call(Operation::Locate, protocol::locate_active_keys(name))
                    .await
                    .map_err(CallError::into_backend)?;
                let uids = protocol::parse_locate(located.as_ref());
                let mut candidates = Vec::with_capacity(uids.len());
                for uid in &uids {
                    match self.attributes(uid).await {
                        Ok(a) if a.state.is_none_or(|s| s == state::ACTIVE) => candidates.push(a),
                        Ok(_) => {}
                        // Destroyed between Locate and Get Attributes.
                        Err(CallError::Kmip(f)) if f.kind() == ErrorKind::KeyUnavailable => {}
                        Err(e) => return Err(e.into_backend()),
                    }
                }
                select::newest(&candidates).cloned().ok_or_else(|| {
                    BackendError::key_unavailable(format!(
                        "no Active symmetric key named {name:?} on {}",
                        self.client.address()
                    ))
                })?
            }
        };
        check_usable(&key)?;
        let fresh = Some(Arc::new(key.uid.clone()));
        let previous = self.current.swap(fresh);
        if previous.as_deref() != Some(&key.uid) {
            tracing::info!(endpoint = %self.client.address(), key = %key.uid,
                previous = previous.as_deref().map_or("", |s| s.as_str()),
                "kmip: key that wraps");
        }
        Ok(key)
    }

    async fn current_uid(&self) -> Result<Arc<String>, BackendError> {
        if let Some(uid) = self.current.load_full() {
            return Ok(uid);
        }
        let key = self.resolve().await?;
        Ok(Arc::new(key.uid))
    }

    async fn encrypt(&self, uid: &str, plaintext: &[u8], aad: &[u8]) -> Result<GcmWrap, CallError> {
        let mut iv = vec![0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        let payload = self
            .call(
                Operation::Encrypt,
                protocol::encrypt(uid, plaintext, &iv, aad),
            )
            .await?;
        let answer = protocol::parse_encrypt(payload.as_ref())
            .ok_or_else(|| BackendError::internal("KMIP Encrypt answer has no Data"))?;
        let wrap = GcmWrap {
            // The server may choose the IV itself; it then returns it.
            iv: answer.iv.unwrap_or(iv),
            tag: answer.tag.ok_or_else(|| {
                BackendError::internal(
                    "KMIP Encrypt answer has no Authenticated Encryption Tag (does the server \
                     implement AES-GCM of KMIP 1.4?)",
                )
            })?,
            ciphertext: answer.ciphertext,
        };
        wrap.check()
            .map_err(|why| BackendError::internal(format!("KMIP Encrypt answer: {why}")))?;
        Ok(wrap)
    }

    async fn decrypt(
        &self,
        uid: &str,
        wrap: &GcmWrap,
        aad: &[u8],
    ) -> Result<SecretBytes, CallError> {
        let payload = self
            .call(
                Operation::Decrypt,
                protocol::decrypt(uid, &wrap.ciphertext, &wrap.iv, &wrap.tag, aad),
            )
            .await?;
        protocol::take_decrypted(payload)
            .map(SecretBytes::new)
            .ok_or_else(|| BackendError::internal("KMIP Decrypt answer has no Data").into())
    }

    /// Encrypt then Decrypt of random bytes under `uid`: the server can use the key now.
    async fn canary(&self, uid: &str) -> Result<(), BackendError> {
        let mut probe = vec![0u8; 32];
        rand::rng().fill_bytes(&mut probe);
        let probe = SecretBytes::new(probe);
        let wrap = self
            .encrypt(uid, probe.expose(), CANARY_AAD)
            .await
            .map_err(|e| for_key(e, uid))?;
        let back = self
            .decrypt(uid, &wrap, CANARY_AAD)
            .await
            .map_err(|e| for_key(e, uid))?;
        if back != probe {
            return Err(BackendError::integrity(format!(
                "canary round trip under key {uid} returned different bytes"
            )));
        }
        Ok(())
    }

    /// Refines a failed Encrypt/Decrypt with one follow-up look at the key, where the result
    /// reason alone is ambiguous:
    /// - Permission Denied: the key's State says whether the key is no longer usable (PyKMIP
    ///   answers so for a Deactivated or Compromised key) or the client is not allowed;
    /// - General Failure of a Decrypt (PyKMIP's answer to a tag that does not verify): a
    ///   canary round trip under the same key says whether the server works, so the
    ///   ciphertext or AAD is at fault (WrongKey), or the server is failing (retryable).
    async fn explain(&self, e: CallError, uid: &str, op: Operation) -> BackendError {
        let CallError::Kmip(f) = e else {
            return e.into_backend();
        };
        if f.is(reason::PERMISSION_DENIED) {
            return match self.attributes(uid).await {
                Ok(a) if a.state.is_some_and(|s| s != state::ACTIVE) => {
                    let s = state::name(a.state.unwrap_or_default());
                    BackendError::key_unavailable(format!(
                        "key {uid} is {s}: the server refuses {} with it ({})",
                        op.name(),
                        f.describe()
                    ))
                }
                _ => f.to_error(),
            };
        }
        if op == Operation::Decrypt && (f.is(reason::GENERAL_FAILURE) || f.reason.is_none()) {
            return match self.canary(uid).await {
                Ok(()) => BackendError::wrong_key(format!(
                    "key {uid} decrypts a fresh ciphertext but not this one: the wrap was made \
                     under another key or AAD, or altered ({})",
                    f.describe()
                )),
                Err(_) => f.to_error(),
            };
        }
        for_key(CallError::Kmip(f), uid)
    }

    /// `1.4` once a connection negotiated, `not negotiated yet` before.
    fn version_text(&self) -> String {
        self.client
            .negotiated()
            .map_or_else(|| "not negotiated yet".to_owned(), |v| v.to_string())
    }
}

/// The key must be Active, allow Encrypt and Decrypt, and be AES (where the server says).
fn check_usable(key: &KeyAttributes) -> Result<(), BackendError> {
    let uid = &key.uid;
    match key.state {
        Some(state::ACTIVE) => {}
        Some(s) => {
            return Err(BackendError::key_unavailable(format!(
                "key {uid} is {}, not Active",
                state::name(s)
            )));
        }
        None => {
            return Err(BackendError::key_unavailable(format!(
                "key {uid}: the server did not report its State"
            )));
        }
    }
    if let Some(mask) = key.usage_mask {
        let need = protocol::USAGE_ENCRYPT | protocol::USAGE_DECRYPT;
        if mask & need != need {
            return Err(BackendError::key_unavailable(format!(
                "key {uid}: Cryptographic Usage Mask {mask:#X} does not allow both Encrypt and Decrypt"
            )));
        }
    }
    if let Some(alg) = key.algorithm
        && alg != protocol::ALGORITHM_AES
    {
        return Err(BackendError::config(format!(
            "key {uid}: Cryptographic Algorithm {alg:#X} is not AES; polykms wraps with AES-GCM"
        )));
    }
    Ok(())
}

#[async_trait]
impl KeyEncryptionBackend for KmipBackend {
    fn kind(&self) -> &'static str {
        "kmip"
    }

    /// AES-GCM ciphertext is as long as its plaintext; the wrap format bounds it.
    fn max_plaintext_len(&self) -> usize {
        wrap::MAX_CIPHERTEXT
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        Ok(KeyVersion::new(self.current_uid().await?.as_str()))
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        if plaintext.is_empty() || plaintext.len() > wrap::MAX_CIPHERTEXT {
            return Err(BackendError::invalid_input(format!(
                "plaintext is {} bytes; KMIP wraps take 1 to {}",
                plaintext.len(),
                wrap::MAX_CIPHERTEXT
            )));
        }
        let uid = self.current_uid().await?;
        match self.encrypt(&uid, plaintext.expose(), aad).await {
            Ok(wrap) => Ok(WrappedKey::new(
                KeyVersion::new(uid.as_str()),
                wrap.encode(),
            )),
            Err(e) => {
                let e = self.explain(e, &uid, Operation::Encrypt).await;
                if e.kind() == ErrorKind::KeyUnavailable {
                    // Look the key up again on the next wrap (the prober also does).
                    self.current.compare_and_swap(&Some(uid), None);
                }
                Err(e)
            }
        }
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let wrap = GcmWrap::decode(&wrapped.ciphertext)?;
        let uid = wrapped.key_version.as_str();
        if uid.is_empty() {
            return Err(BackendError::invalid_input(
                "KMIP wrap without a key version",
            ));
        }
        match self.decrypt(uid, &wrap, aad).await {
            Ok(plaintext) => Ok(plaintext),
            Err(e) => Err(self.explain(e, uid, Operation::Decrypt).await),
        }
    }

    /// Looks the key up (Locate by name, Get Attributes: Active, Encrypt and Decrypt allowed,
    /// AES) and round-trips a canary under it.
    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        let key = self.resolve().await?;
        self.canary(&key.uid).await?;
        Ok(KeyVersion::new(key.uid))
    }

    fn describe(&self) -> String {
        let key = match &self.selector {
            KeySelector::Name(n) => format!("key_name {n:?}"),
            KeySelector::Uid(u) => format!("key_uid {u:?}"),
        };
        format!(
            "kmip {} KMIP {}, {key}, AES-GCM via Encrypt/Decrypt ({}, no proxy)",
            self.client.address(),
            self.version_text(),
            self.client.trust()
        )
    }
}

/// A failed call about key `uid` (Get Attributes of a pinned or recorded key, or an
/// Encrypt/Decrypt under it before `explain`'s follow-up checks): a missing key names it.
fn for_key(e: CallError, uid: &str) -> BackendError {
    match e {
        CallError::Kmip(f) if f.kind() == ErrorKind::KeyUnavailable => {
            BackendError::key_unavailable(format!("key {uid}: {}", f.describe()))
        }
        other => other.into_backend(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: Option<u32>, mask: Option<i32>, algorithm: Option<u32>) -> KeyAttributes {
        KeyAttributes {
            uid: "7".into(),
            state,
            usage_mask: mask,
            algorithm,
            ..KeyAttributes::default()
        }
    }

    #[test]
    fn only_active_aes_keys_that_encrypt_and_decrypt_are_usable() {
        check_usable(&key(
            Some(state::ACTIVE),
            Some(12),
            Some(protocol::ALGORITHM_AES),
        ))
        .unwrap();
        // Servers that leave out the mask or algorithm are taken at their State.
        check_usable(&key(Some(state::ACTIVE), None, None)).unwrap();
        let deactivated = check_usable(&key(Some(state::DEACTIVATED), Some(12), None)).unwrap_err();
        assert_eq!(deactivated.kind(), ErrorKind::KeyUnavailable);
        assert!(
            deactivated.message().contains("key 7 is Deactivated"),
            "{deactivated}"
        );
        let no_state = check_usable(&key(None, Some(12), None)).unwrap_err();
        assert_eq!(no_state.kind(), ErrorKind::KeyUnavailable);
        let encrypt_only = check_usable(&key(Some(state::ACTIVE), Some(4), None)).unwrap_err();
        assert_eq!(encrypt_only.kind(), ErrorKind::KeyUnavailable);
        assert!(
            encrypt_only.message().contains("Usage Mask 0x4"),
            "{encrypt_only}"
        );
        // 3DES (0x02) cannot do AES-GCM.
        let des = check_usable(&key(Some(state::ACTIVE), Some(12), Some(0x02))).unwrap_err();
        assert_eq!(des.kind(), ErrorKind::Config);
    }

    #[tokio::test]
    async fn building_reads_the_files_and_names_the_field_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let base = || KmipConfig {
            endpoint: "127.0.0.1:5696".into(),
            ca_file: None,
            client_cert_file: Some(dir.path().join("missing.pem")),
            client_key_file: Some(dir.path().join("missing.key")),
            tls_server_name: None,
            key_name: Some("kek".into()),
            key_uid: None,
            username_file: None,
            password_file: None,
            kmip_version: "1.4".into(),
            timeout_ms: 1000,
        };
        let e = KmipBackend::connect(&base()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().starts_with("client_cert_file"), "{e}");
        let mut c = base();
        c.client_cert_file = None;
        c.client_key_file = None;
        c.username_file = Some(dir.path().join("user"));
        std::fs::write(dir.path().join("user"), "svc\n").unwrap();
        c.ca_file = Some(dir.path().join("ca.pem"));
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = KmipBackend::connect(&c).await.unwrap_err();
        assert!(e.message().starts_with("ca_file"), "{e}");
        c.ca_file = None;
        std::fs::write(dir.path().join("user"), "\n").unwrap();
        let e = KmipBackend::connect(&c).await.unwrap_err();
        assert!(
            e.message().starts_with("username_file") && e.message().contains("empty"),
            "{e}"
        );
        std::fs::write(dir.path().join("user"), "svc\n").unwrap();
        let b = KmipBackend::connect(&c).await.unwrap();
        assert!(
            b.describe().contains("KMIP not negotiated yet"),
            "{}",
            b.describe()
        );
        assert_eq!(b.max_plaintext_len(), 1024);
    }
}
