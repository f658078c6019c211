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
mod lifecycle;
mod protocol;
mod select;
mod trust;
mod ttlv;
mod wrap;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use polykms_backend::crypto::{fill_random, random_secret};
use polykms_backend::{
    BackendError, ErrorKind, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes,
    WrappedKey,
};

pub use config::{KeySelector, KmipConfig};

use crate::client::{CallError, Client};
use crate::error::reason;
use crate::protocol::{KeyAttributes, Operation, state};
use crate::trust::SystemRoots;
use crate::wrap::GcmWrap;

/// AAD of the probe's canary round trip (never the plugin's own AAD).
const CANARY_AAD: &[u8] = b"polykms:kmip:canary";
/// GCM IV length we generate.
const IV_LEN: usize = 12;
/// Skipped key candidates named in a failed look-up's message.
const MAX_SKIPPED_SHOWN: usize = 5;

/// Wraps seeds with an AES key on a KMIP server.
pub struct KmipBackend {
    client: Client,
    selector: KeySelector,
    /// Unique Identifier of the key that wraps now, from the last look-up.
    current: ArcSwapOption<String>,
    /// The key the last successful look-up chose; unlike `current`, never cleared by a failed
    /// wrap, so the lifecycle read can say why that key stopped wrapping.
    last_resolved: ArcSwapOption<String>,
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
        Self::build(config, trust::native_roots)
    }

    fn build(config: &KmipConfig, system_roots: SystemRoots) -> Result<Self, BackendError> {
        let validated = config.validate()?;
        let client = Client::new(config, &validated, system_roots)?;
        Ok(KmipBackend {
            client,
            selector: validated.selector,
            current: ArcSwapOption::empty(),
            last_resolved: ArcSwapOption::empty(),
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
            KeySelector::Name(name) => self.named_key(name).await?,
        };
        check_usable(&key)?;
        let fresh = Some(Arc::new(key.uid.clone()));
        self.last_resolved.store(fresh.clone());
        let previous = self.current.swap(fresh);
        if previous.as_deref() != Some(&key.uid) {
            tracing::info!(endpoint = %self.client.address(), key = %key.uid,
                previous = previous.as_deref().map_or("", |s| s.as_str()),
                "kmip: key that wraps");
        }
        Ok(key)
    }

    /// The Active key named `name` activated most recently. Candidates that cannot be it are
    /// skipped rather than failing the look-up: a server may list objects that it then will
    /// not describe to this client (Permission Denied: another tenant's key of that name), or
    /// describe without a State, which does not show that the key is Active.
    async fn named_key(&self, name: &str) -> Result<KeyAttributes, BackendError> {
        let located = self
            .call(Operation::Locate, protocol::locate_active_keys(name))
            .await
            .map_err(CallError::into_backend)?;
        let uids = protocol::parse_locate(located.as_ref());
        let mut candidates = Vec::with_capacity(uids.len());
        let mut skipped = Vec::new();
        for uid in &uids {
            match self.attributes(uid).await {
                Ok(a) if a.state == Some(state::ACTIVE) => candidates.push(a),
                Ok(a) => skipped.push(match a.state {
                    Some(s) => format!("{uid} ({})", state::name(s)),
                    None => format!("{uid} (no State)"),
                }),
                // Destroyed between Locate and Get Attributes.
                Err(CallError::Kmip(f)) if f.kind() == ErrorKind::KeyUnavailable => {}
                Err(CallError::Kmip(f))
                    if f.is(reason::PERMISSION_DENIED) || f.is(reason::NOT_AUTHORISED) =>
                {
                    skipped.push(format!(
                        "{uid} ({})",
                        reason::name(f.reason.unwrap_or_default())
                    ));
                }
                Err(e) => return Err(e.into_backend()),
            }
        }
        if let Some(key) = select::newest(&candidates) {
            if !skipped.is_empty() {
                tracing::debug!(endpoint = %self.client.address(), name, skipped = %skipped.join(", "),
                    "kmip: candidates skipped in the key look-up");
            }
            return Ok(key.clone());
        }
        let mut message = format!(
            "no Active symmetric key named {name:?} on {}",
            self.client.address()
        );
        if !skipped.is_empty() {
            // Bounded: a name can match many objects.
            let shown = skipped.len().min(MAX_SKIPPED_SHOWN);
            message.push_str(&format!(" (skipped: {}", skipped[..shown].join(", ")));
            if skipped.len() > shown {
                message.push_str(&format!(" and {} more", skipped.len() - shown));
            }
            message.push(')');
        }
        Err(BackendError::key_unavailable(message))
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
        fill_random(&mut iv).map_err(|e| BackendError::internal(format!("GCM IV: {e}")))?;
        let payload = self
            .call(
                Operation::Encrypt,
                protocol::encrypt(uid, plaintext, &iv, aad),
            )
            .await?;
        let answer = protocol::parse_encrypt(payload.as_ref())
            .ok_or_else(|| BackendError::internal("KMIP Encrypt answer has no Data"))?;
        // KMIP lets a server return an IV of its own choosing. polykms always sends a fresh
        // random one; a server that used another (a fixed or counter IV of its own) may repeat
        // GCM nonces under one key, which reveals the authentication key and the XOR of
        // plaintexts. Such a wrap is refused, not retried: the server would do it again.
        if answer.iv.as_ref().is_some_and(|theirs| *theirs != iv) {
            return Err(BackendError::integrity(format!(
                "KMIP Encrypt under key {uid}: the server answered with an IV other than the one \
                 polykms sent; refusing the wrap (a server that picks its own GCM IVs may repeat \
                 nonces under one key)"
            ))
            .into());
        }
        let wrap = GcmWrap {
            iv,
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
        let probe = random_secret(32)
            .map_err(|e| BackendError::internal(format!("canary plaintext: {e}")))?;
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

    /// Get Attributes (State, Deactivation Date) of the key that wraps and of each older key
    /// in `in_use`: one call per key.
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        self.lifecycle_at(in_use, std::time::SystemTime::now())
            .await
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
mod tests;
