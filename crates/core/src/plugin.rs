//! What the plugin does, independent of gRPC: Status from memory, Encrypt as one wrap per
//! encrypt backend, Decrypt routed by the envelope with coalescing, retries within the
//! caller's deadline, and config reload.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use polykms_backend::crypto::Sha256;
use polykms_backend::{BackendError, SecretBytes, WrappedKey};
use tokio::time::Instant;

use crate::cache::{CacheSettings, UnwrapCache};
use crate::coalesce::Coalescer;
use crate::envelope::{self, Envelope, EnvelopeError, FORMAT_CURRENT, MAX_CIPHERTEXT, Wrap};
use crate::error::CoreError;
use crate::keyid;
use crate::keyring::{BackendSlot, Keyring, ProbeSettings};
use crate::legacy::LegacyEnvelopes;
use crate::metrics::Metrics;

/// Largest seed/DEK the plugin wraps. The apiserver sends 32 bytes.
pub const MAX_PLAINTEXT: usize = 256;
/// Contract bound on key_id.
pub const MAX_KEY_ID: usize = 1024;
/// Contract bound on annotation keys plus values.
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

/// What Status reports as `version`: fixed for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusVersion {
    V2,
    V2Beta1,
}

impl StatusVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusVersion::V2 => "v2",
            StatusVersion::V2Beta1 => "v2beta1",
        }
    }
}

/// Backoff for retryable backend errors.
#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_attempts: 4,
        }
    }
}

/// Plugin-wide settings that a reload does not change.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Bound into every wrap as AAD: a ciphertext moved to another cluster's plugin does not decrypt.
    pub provider_name: String,
    pub status_version: StatusVersion,
    pub probe: ProbeSettings,
    pub retry: RetrySettings,
    /// Deadline of a call that carries no `grpc-timeout`.
    pub default_timeout: Duration,
    pub unwrap_cache: Option<CacheSettings>,
    /// Whether version-1 envelopes with several wraps still decrypt. Their wraps are not bound
    /// to each other; turn this off once `polykms audit` finds none left (a hostile etcd writer
    /// could otherwise rewrite a version-2 envelope as version 1; version-3 wraps are bound to their
    /// format and unwrap nowhere when so rewritten).
    pub accept_legacy_multi_wrap: bool,
}

impl PluginSettings {
    pub fn new(provider_name: impl Into<String>) -> Self {
        PluginSettings {
            provider_name: provider_name.into(),
            status_version: StatusVersion::V2,
            probe: ProbeSettings::default(),
            retry: RetrySettings::default(),
            default_timeout: Duration::from_secs(3),
            unwrap_cache: None,
            accept_legacy_multi_wrap: true,
        }
    }
}

/// A Status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub version: &'static str,
    pub healthz: String,
    pub key_id: String,
}

/// A Decrypt answer: the seed and the backend that unwrapped it (for logs).
#[derive(Debug)]
pub struct Unwrapped {
    pub seed: SecretBytes,
    pub backend: String,
}

/// An Encrypt answer.
#[derive(Debug, Clone)]
pub struct Encrypted {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub annotations: BTreeMap<String, Vec<u8>>,
    /// Backends that wrapped, for logs.
    pub backends: Vec<String>,
}

/// The running plugin.
#[derive(Debug)]
pub struct Plugin {
    settings: PluginSettings,
    /// The AAD of wraps Encrypt makes now ([`FORMAT_CURRENT`]).
    aad: Vec<u8>,
    keyring: ArcSwap<Keyring>,
    coalescer: Coalescer<Arc<Unwrapped>>,
    cache: Option<UnwrapCache<Arc<Unwrapped>>>,
    legacy: LegacyEnvelopes,
    /// `accept_legacy_multi_wrap`, changed by a reload.
    accept_legacy: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The AAD the wraps Encrypt makes now are bound to (see [`envelope::wrap_aad`]).
pub fn aad_for(provider_name: &str) -> Vec<u8> {
    envelope::wrap_aad(provider_name, FORMAT_CURRENT)
}

impl Plugin {
    /// Probes every backend once, then starts the background probers.
    pub async fn start(
        settings: PluginSettings,
        keyring: Keyring,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        keyring.probe_all(settings.probe.timeout).await;
        let keyring = Arc::new(keyring);
        keyring.start_probers(&settings.probe);
        let accept_legacy = settings.accept_legacy_multi_wrap;
        let plugin = Arc::new(Plugin {
            aad: aad_for(&settings.provider_name),
            cache: settings.unwrap_cache.map(UnwrapCache::new),
            settings,
            keyring: ArcSwap::new(keyring),
            coalescer: Coalescer::default(),
            legacy: LegacyEnvelopes::default(),
            accept_legacy: AtomicBool::new(accept_legacy),
            metrics,
        });
        if let Some(cache) = &plugin.cache {
            tokio::spawn(purge_cache(
                Arc::downgrade(&plugin),
                cache.settings().ttl / 2,
            ));
        }
        plugin
    }

    /// Seeds held by the unwrap cache (0 when it is off).
    pub fn cached_seeds(&self) -> usize {
        self.cache.as_ref().map_or(0, UnwrapCache::len)
    }

    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.load_full()
    }

    /// Status, from memory: never waits on a key store.
    pub fn status(&self) -> StatusReport {
        let ring = self.keyring.load();
        let healthz = match ring.healthz() {
            Ok(()) => "ok".to_string(),
            Err(reasons) => format!("unhealthy: {reasons}"),
        };
        StatusReport {
            version: self.settings.status_version.as_str(),
            healthz,
            key_id: ring.key_id(),
        }
    }

    /// Whether every encrypt backend is healthy (for readiness).
    pub fn ready(&self) -> bool {
        self.keyring.load().healthz().is_ok()
    }

    /// The deadline of a call: the caller's timeout, less a margin so that our own answer
    /// (rather than the caller's timer) ends the call.
    pub fn deadline(&self, grpc_timeout: Option<Duration>) -> Instant {
        let budget = grpc_timeout.unwrap_or(self.settings.default_timeout);
        let margin = (budget / 10).clamp(Duration::from_millis(5), Duration::from_millis(250));
        Instant::now() + budget.saturating_sub(margin)
    }

    /// Wraps `plaintext` under every encrypt backend.
    pub async fn encrypt(
        &self,
        plaintext: SecretBytes,
        deadline: Instant,
    ) -> Result<Encrypted, CoreError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(CoreError::InvalidRequest(format!(
                "plaintext is {} bytes; expected 1 to {MAX_PLAINTEXT}",
                plaintext.len()
            )));
        }
        let ring = self.keyring.load_full();
        // Known before any remote call: a plaintext one backend cannot wrap fails the whole
        // Encrypt up front instead of after the others have wrapped it.
        for slot in ring.encrypt_slots() {
            let limit = slot.backend.max_plaintext_len();
            if plaintext.len() > limit {
                return Err(CoreError::InvalidRequest(format!(
                    "plaintext is {} bytes; backend {} ({}) wraps at most {limit}",
                    plaintext.len(),
                    slot.name,
                    slot.backend.kind()
                )));
            }
        }
        let wraps = futures::future::try_join_all(ring.encrypt_slots().iter().map(|slot| {
            let pt = &plaintext;
            self.call(slot, "wrap", deadline, move || {
                slot.backend.wrap(pt, &self.aad)
            })
        }))
        .await?;
        for (slot, w) in ring.encrypt_slots().iter().zip(&wraps) {
            ring.observe_key_version(slot, &w.key_version);
        }
        let wraps: Vec<Wrap> = ring
            .encrypt_slots()
            .iter()
            .zip(wraps)
            .map(
                |(
                    slot,
                    WrappedKey {
                        key_version,
                        ciphertext,
                    },
                )| Wrap {
                    backend: slot.name.clone(),
                    key_version: key_version.as_str().to_string(),
                    ciphertext,
                },
            )
            .collect();
        let pairs = wraps
            .iter()
            .map(|w| (w.backend.as_str(), w.key_version.as_str()));
        let key_id = ring
            .key_id_if_current(pairs)
            .unwrap_or_else(|| wraps_key_id(&wraps));
        let (ciphertext, annotations) =
            envelope::seal(&wraps, &plaintext).map_err(|e| match e {
                EnvelopeError::TooLarge(_) => CoreError::Config(e.to_string()),
                e => CoreError::Config(format!("backend answer cannot be enveloped: {e}")),
            })?;
        Ok(Encrypted {
            ciphertext,
            key_id,
            annotations,
            backends: wraps.into_iter().map(|w| w.backend).collect(),
        })
    }

    /// Unwraps a ciphertext made by `encrypt` (under this or any earlier configuration that
    /// used backends still configured). `key_id` is checked when given.
    pub async fn decrypt(
        self: &Arc<Self>,
        ciphertext: &[u8],
        key_id: Option<&str>,
        annotations: &BTreeMap<String, Vec<u8>>,
        deadline: Instant,
    ) -> Result<Arc<Unwrapped>, CoreError> {
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT {
            return Err(CoreError::InvalidRequest(format!(
                "ciphertext is {} bytes; expected 1 to {MAX_CIPHERTEXT}",
                ciphertext.len()
            )));
        }
        let annotation_bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if annotation_bytes > MAX_ANNOTATIONS_BYTES {
            return Err(CoreError::InvalidRequest(format!(
                "annotations are {annotation_bytes} bytes; at most {MAX_ANNOTATIONS_BYTES}"
            )));
        }
        let envelope = Envelope::decode(ciphertext, annotations)?;
        if let Some(key_id) = key_id {
            if key_id.is_empty() || key_id.len() > MAX_KEY_ID {
                return Err(CoreError::InvalidRequest(format!(
                    "key_id is {} bytes; expected 1 to {MAX_KEY_ID}",
                    key_id.len()
                )));
            }
            if key_id != envelope_key_id(&envelope) {
                return Err(CoreError::InvalidRequest(
                    "key_id does not match the ciphertext's envelope".into(),
                ));
            }
        }
        let digest = request_digest(ciphertext, annotations);
        if envelope.is_legacy_multi_wrap() {
            self.metrics.legacy_envelope();
            if !self.accept_legacy.load(Ordering::Relaxed) {
                return Err(CoreError::InvalidRequest(
                    "version-1 multi-wrap envelopes are refused ([decrypt] accept_legacy_multi_wrap = false)".into(),
                ));
            }
            if self.legacy.first_sighting(&digest) {
                tracing::warn!(
                    key_id = %envelope_key_id(&envelope),
                    backends = ?envelope.wraps.iter().map(|w| w.backend.as_str()).collect::<Vec<_>>(),
                    "decrypting a version-1 multi-wrap envelope: its wraps are not bound to each other; re-encrypt (docs/rotation.md)"
                );
            }
        }
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&digest)) {
            self.metrics.unwrap_cache_hit();
            return Ok(hit);
        }
        let this = self.clone();
        let (result, joined) = self
            .coalescer
            .run(digest, async move {
                // Taken before the keyring is read: a reload clears the cache after swapping
                // the keyring, and this unwrap's seed is then not cached.
                let generation = this.cache.as_ref().map(UnwrapCache::generation);
                let result = this.unwrap_envelope(envelope, deadline).await.map(Arc::new);
                // Cached before the in-flight entry goes, so no caller misses both.
                if let (Ok(seed), Some(cache), Some(generation)) =
                    (&result, &this.cache, generation)
                {
                    cache.insert(digest, seed.clone(), generation);
                }
                result
            })
            .await;
        if joined {
            self.metrics.coalesced();
        }
        result
    }

    async fn unwrap_envelope(
        &self,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<Unwrapped, CoreError> {
        let ring = self.keyring.load_full();
        let mut candidates: Vec<(&Arc<BackendSlot>, WrappedKey)> = envelope
            .wraps
            .iter()
            .filter_map(|w| {
                ring.slot(&w.backend).map(|slot| {
                    (
                        slot,
                        WrappedKey::new(
                            polykms_backend::KeyVersion::new(w.key_version.clone()),
                            w.ciphertext.clone(),
                        ),
                    )
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err(CoreError::UnknownBackends(
                envelope.wraps.iter().map(|w| w.backend.clone()).collect(),
            ));
        }
        // Wrap-only backends (an escrow key without its private half) are skipped, not called.
        let wrap_only: Vec<String> = candidates
            .iter()
            .filter(|(slot, _)| !slot.backend.can_unwrap())
            .map(|(slot, _)| slot.name.clone())
            .collect();
        candidates.retain(|(slot, _)| slot.backend.can_unwrap());
        if candidates.is_empty() {
            return Err(CoreError::WrapOnly(wrap_only));
        }
        // Each format's wraps are bound to its own AAD: a downgraded envelope unwraps nowhere.
        let legacy_aad;
        let aad: &[u8] = if envelope.version == FORMAT_CURRENT {
            &self.aad
        } else {
            legacy_aad = envelope::wrap_aad(&self.settings.provider_name, envelope.version);
            &legacy_aad
        };
        // Healthy backends first; the sort is stable, so envelope order breaks ties.
        candidates.sort_by_key(|(slot, _)| !slot.is_healthy());
        let mut first_error = None;
        for (slot, wrapped) in &candidates {
            match self
                .call(slot, "unwrap", deadline, || {
                    slot.backend.unwrap(wrapped, aad)
                })
                .await
            {
                Ok(seed) if seed.is_empty() || seed.len() > MAX_PLAINTEXT => {
                    first_error.get_or_insert(CoreError::backend(
                        &slot.name,
                        BackendError::integrity(format!("unwrapped {} bytes", seed.len())),
                    ));
                }
                Ok(seed) => {
                    // The seed leaves only with an envelope that it commits to. A wrap that
                    // unwraps but does not verify ends the Decrypt: trying the next wrap could
                    // only yield a different seed for the same object.
                    envelope.verify(&seed)?;
                    slot.note_unwrapped(&wrapped.key_version);
                    return Ok(Unwrapped {
                        seed,
                        backend: slot.name.clone(),
                    });
                }
                Err(e) => {
                    tracing::debug!(backend = %slot.name, error = %e, "unwrap failed; trying the next wrap");
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("at least one candidate was tried"))
    }

    /// Calls a backend with retries of retryable errors inside `deadline`, recording metrics.
    /// A backend known to be down gets one attempt, so calls fail fast during an outage.
    async fn call<T, F, Fut>(
        &self,
        slot: &BackendSlot,
        operation: &'static str,
        deadline: Instant,
        f: F,
    ) -> Result<T, CoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let retry = &self.settings.retry;
        let attempts = if slot.health().healthy == Some(false) {
            1
        } else {
            retry.max_attempts.max(1)
        };
        let mut backoff = retry.initial_backoff;
        for attempt in 1..=attempts {
            let started = std::time::Instant::now();
            if Instant::now() >= deadline {
                return Err(CoreError::Deadline(format!(
                    "before calling backend {}",
                    slot.name
                )));
            }
            let result = match tokio::time::timeout_at(deadline, f()).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::timeout(
                    "no answer within the request deadline",
                )),
            };
            let outcome = result
                .as_ref()
                .map(|_| "ok")
                .unwrap_or_else(|e| e.kind().as_str());
            self.metrics
                .backend_call(&slot.name, operation, outcome, started.elapsed());
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if matches!(
                err.kind(),
                polykms_backend::ErrorKind::Timeout | polykms_backend::ErrorKind::Unavailable
            ) {
                slot.probe_soon();
            }
            let sleep = polykms_backend::crypto::jitter(backoff, 0.5, 1.0);
            if !err.is_retryable() || attempt == attempts || Instant::now() + sleep >= deadline {
                return Err(CoreError::backend(&slot.name, err));
            }
            tracing::debug!(backend = %slot.name, operation, attempt, error = %err, "retrying");
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(retry.max_backoff);
        }
        unreachable!("the last attempt returns")
    }

    /// Whether version-1 multi-wrap envelopes decrypt from now on (a reloadable setting).
    pub fn set_accept_legacy_multi_wrap(&self, accept: bool) {
        if self.accept_legacy.swap(accept, Ordering::Relaxed) != accept {
            tracing::info!(accept, "accept_legacy_multi_wrap changed");
        }
    }

    /// Replaces the backends and `encrypt.with`. The new keyring is probed first; it is
    /// rejected, and the running one kept, when an encrypt backend fails that probe.
    pub async fn reload(&self, keyring: Keyring) -> Result<(), CoreError> {
        keyring.inherit_unwrapped(&self.keyring.load());
        keyring.probe_all(self.settings.probe.timeout).await;
        if let Err(reasons) = keyring.healthz() {
            self.metrics.reload(false);
            return Err(CoreError::Config(format!(
                "new configuration rejected, encrypt backends unhealthy: {reasons}"
            )));
        }
        for slot in keyring.slots() {
            if !slot.is_healthy() {
                tracing::warn!(backend = %slot.name, "decrypt-only backend is unhealthy after reload");
            }
        }
        let keyring = Arc::new(keyring);
        keyring.start_probers(&self.settings.probe);
        self.metrics.retain_backends(&keyring.backend_names());
        let old = self.keyring.swap(keyring.clone());
        // Seeds unwrapped under the old backends must not outlive them (a backend removed by
        // the reload no longer decrypts anything).
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        if old.key_id() != keyring.key_id() {
            tracing::info!(old = %old.key_id(), new = %keyring.key_id(), "key_id changed by reload");
            self.metrics.key_id_changed();
        }
        self.metrics.reload(true);
        Ok(())
    }
}

/// Drops expired seeds from the unwrap cache every `every` while the plugin lives, so they
/// are zeroized even when no Decrypt comes to push them out.
async fn purge_cache(plugin: std::sync::Weak<Plugin>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(plugin) = plugin.upgrade() else {
            return;
        };
        if let Some(cache) = &plugin.cache {
            cache.purge_expired();
        }
    }
}

/// key_id of an envelope: recomputed from its wraps, so Decrypt can check the stored one.
pub fn envelope_key_id(envelope: &Envelope) -> String {
    wraps_key_id(&envelope.wraps)
}

fn wraps_key_id(wraps: &[Wrap]) -> String {
    keyid::key_id(
        wraps
            .iter()
            .map(|w| (w.backend.as_str(), w.key_version.as_str())),
    )
}

fn request_digest(ciphertext: &[u8], annotations: &BTreeMap<String, Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&(ciphertext.len() as u64).to_be_bytes());
    h.update(ciphertext);
    for (k, v) in annotations {
        h.update(&(k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finish()
}

#[cfg(test)]
mod tests;
