//! One generation of configured backends: their health, their key versions, and the key_id
//! they add up to. A config reload builds a new `Keyring` and swaps it in whole; calls in
//! flight finish on the one they started with.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use polykms_backend::{KeyEncryptionBackend, KeyLifecycle, KeyVersion};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::error::CoreError;
use crate::keyid;
use crate::metrics::Metrics;

/// A backend with the name it has in the config.
#[derive(Debug, Clone)]
pub struct NamedBackend {
    pub name: String,
    pub backend: Arc<dyn KeyEncryptionBackend>,
}

/// How often and how patiently backends are probed.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub healthy_interval: Duration,
    pub unhealthy_interval: Duration,
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            healthy_interval: Duration::from_secs(30),
            unhealthy_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A backend's last known health.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `None` until the first probe finished.
    pub healthy: Option<bool>,
    /// The last key version a probe or a wrap reported; kept while unhealthy, so a key store
    /// outage does not change key_id.
    pub key_version: Option<KeyVersion>,
    /// Short, secret-free reason when unhealthy.
    pub reason: Option<String>,
    pub last_success: Option<SystemTime>,
    /// What the key store last said of the keys' lifecycle.
    pub lifecycle: KeyLifecycle,
}

/// Older key versions a backend's unwraps used, most recent last: what its lifecycle read
/// must also cover. Bounded; the least recently used version goes first.
#[derive(Debug, Default)]
struct UnwrappedVersions(Mutex<Vec<KeyVersion>>);

/// Versions remembered per backend.
const MAX_UNWRAPPED_VERSIONS: usize = 32;

impl UnwrappedVersions {
    fn note(&self, version: &KeyVersion) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if list.last() == Some(version) {
            return;
        }
        list.retain(|v| v != version);
        list.push(version.clone());
        if list.len() > MAX_UNWRAPPED_VERSIONS {
            list.remove(0);
        }
    }

    fn list(&self) -> Vec<KeyVersion> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One configured backend and its health.
#[derive(Debug)]
pub struct BackendSlot {
    pub name: String,
    pub backend: Arc<dyn KeyEncryptionBackend>,
    health: RwLock<Health>,
    wake: Notify,
    unwrapped: UnwrappedVersions,
}

impl BackendSlot {
    pub fn health(&self) -> Health {
        self.health
            .read()
            .expect("health lock is never poisoned: no panics under it")
            .clone()
    }

    /// Whether `version` is the key version last seen (without copying the health record).
    fn has_key_version(&self, version: &KeyVersion) -> bool {
        self.health
            .read()
            .expect("health lock is never poisoned: no panics under it")
            .key_version
            .as_ref()
            == Some(version)
    }

    pub fn is_healthy(&self) -> bool {
        self.health
            .read()
            .expect("health lock is never poisoned: no panics under it")
            .healthy
            == Some(true)
    }

    /// Records a key version an unwrap used, so lifecycle reads cover it.
    pub fn note_unwrapped(&self, version: &KeyVersion) {
        self.unwrapped.note(version);
    }

    /// Asks the prober to check now (a call just failed in a way that suggests an outage).
    pub fn probe_soon(&self) {
        self.wake.notify_one();
    }

    fn set_health(&self, f: impl FnOnce(&mut Health)) {
        f(&mut self
            .health
            .write()
            .expect("health lock is never poisoned: no panics under it"));
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct KeyIdState {
    key_id: String,
    versions: Vec<(String, String)>,
}

/// The backends of one configuration, the subset that wraps, and their probers.
#[derive(Debug)]
pub struct Keyring {
    slots: Vec<Arc<BackendSlot>>,
    encrypt: Vec<Arc<BackendSlot>>,
    key_id: RwLock<KeyIdState>,
    probers: Mutex<Vec<AbortHandle>>,
    metrics: Arc<Metrics>,
}

/// What Status reports when an encrypt backend's key version was never learnt: the plugin is
/// unhealthy then, and Encrypt cannot succeed, so this value is never stored with data.
pub const KEY_ID_UNKNOWN: &str = "pk1-unknown";

/// Checks a backend name: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric. Names are
/// stored in every envelope, so they must stay stable and simple.
pub fn validate_backend_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name.bytes().next().is_some_and(|b| b != b'-')
        && name.bytes().last().is_some_and(|b| b != b'-');
    if (1..=63).contains(&name.len()) && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "backend name {name:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

impl Keyring {
    /// Validates names and `encrypt_with` and builds the keyring (no probe yet).
    pub fn new(
        backends: Vec<NamedBackend>,
        encrypt_with: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Self, CoreError> {
        if backends.is_empty() {
            return Err(CoreError::Config(
                "backends: at least one backend is required".into(),
            ));
        }
        let mut slots: Vec<Arc<BackendSlot>> = Vec::with_capacity(backends.len());
        for b in backends {
            validate_backend_name(&b.name)
                .map_err(|e| CoreError::Config(format!("backends: {e}")))?;
            if slots.iter().any(|s| s.name == b.name) {
                return Err(CoreError::Config(format!(
                    "backends: name {:?} is used twice",
                    b.name
                )));
            }
            slots.push(Arc::new(BackendSlot {
                name: b.name,
                backend: b.backend,
                health: RwLock::new(Health::default()),
                wake: Notify::new(),
                unwrapped: UnwrappedVersions::default(),
            }));
        }
        if encrypt_with.is_empty() {
            return Err(CoreError::Config(
                "encrypt.with: name at least one backend".into(),
            ));
        }
        let mut encrypt = Vec::with_capacity(encrypt_with.len());
        for name in encrypt_with {
            let slot = slots.iter().find(|s| &s.name == name).ok_or_else(|| {
                CoreError::Config(format!("encrypt.with: no backend is named {name:?}"))
            })?;
            if encrypt.iter().any(|s: &Arc<BackendSlot>| &s.name == name) {
                return Err(CoreError::Config(format!(
                    "encrypt.with: {name:?} is listed twice"
                )));
            }
            encrypt.push(slot.clone());
        }
        if encrypt.len() > crate::envelope::MAX_WRAPS {
            return Err(CoreError::Config(format!(
                "encrypt.with: at most {} backends",
                crate::envelope::MAX_WRAPS
            )));
        }
        let ring = Keyring {
            slots,
            encrypt,
            key_id: RwLock::default(),
            probers: Mutex::default(),
            metrics,
        };
        ring.refresh_key_id();
        Ok(ring)
    }

    pub fn slots(&self) -> &[Arc<BackendSlot>] {
        &self.slots
    }

    pub fn encrypt_slots(&self) -> &[Arc<BackendSlot>] {
        &self.encrypt
    }

    pub fn slot(&self, name: &str) -> Option<&Arc<BackendSlot>> {
        self.slots.iter().find(|s| s.name == name)
    }

    pub fn backend_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// The current key_id (from the last known key versions of the encrypt backends).
    pub fn key_id(&self) -> String {
        self.key_id
            .read()
            .expect("key_id lock is never poisoned: no panics under it")
            .key_id
            .clone()
    }

    /// `Ok` when every encrypt backend's last probe passed; otherwise the reasons.
    pub fn healthz(&self) -> Result<(), String> {
        let reasons: Vec<String> = self
            .encrypt
            .iter()
            .filter_map(|s| {
                let h = s.health();
                match h.healthy {
                    Some(true) => None,
                    Some(false) => Some(format!(
                        "{}: {}",
                        s.name,
                        h.reason.unwrap_or_else(|| "unhealthy".into())
                    )),
                    None => Some(format!("{}: not probed yet", s.name)),
                }
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// Records a key version seen on a wrap (fresher than the last probe).
    pub fn observe_key_version(&self, slot: &BackendSlot, version: &KeyVersion) {
        if !slot.has_key_version(version) {
            slot.set_health(|h| h.key_version = Some(version.clone()));
            self.refresh_key_id();
        }
    }

    /// The current key_id if it was computed from exactly these (backend, key version) pairs,
    /// so Encrypt need not hash them again.
    pub fn key_id_if_current<'a>(
        &self,
        versions: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    ) -> Option<String> {
        let state = self
            .key_id
            .read()
            .expect("key_id lock is never poisoned: no panics under it");
        (versions.len() == state.versions.len()
            && versions
                .zip(&state.versions)
                .all(|((n, v), (sn, sv))| n == sn && v == sv))
        .then(|| state.key_id.clone())
    }

    /// Recomputes key_id from the encrypt backends' key versions; logs and counts a change.
    fn refresh_key_id(&self) {
        let versions: Option<Vec<(String, String)>> = self
            .encrypt
            .iter()
            .map(|s| {
                s.health()
                    .key_version
                    .map(|v| (s.name.clone(), v.as_str().to_string()))
            })
            .collect();
        let next = match versions {
            Some(versions) => KeyIdState {
                key_id: keyid::key_id(versions.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                versions,
            },
            None => KeyIdState {
                key_id: KEY_ID_UNKNOWN.to_string(),
                versions: Vec::new(),
            },
        };
        let mut current = self
            .key_id
            .write()
            .expect("key_id lock is never poisoned: no panics under it");
        if *current == next {
            return;
        }
        let changed = !current.key_id.is_empty()
            && current.key_id != KEY_ID_UNKNOWN
            && next.key_id != current.key_id;
        if changed {
            tracing::info!(old = %current.key_id, new = %next.key_id, "key_id changed");
        }
        self.metrics.key_id(&next.key_id, &next.versions, changed);
        *current = next;
    }

    /// Carries over the key versions that `old`'s backends unwrapped to the backends of the same
    /// name here (a reload keeps what Decrypts still use in view).
    pub fn inherit_unwrapped(&self, old: &Keyring) {
        for slot in &self.slots {
            if let Some(prev) = old.slot(&slot.name) {
                for v in prev.unwrapped.list() {
                    slot.unwrapped.note(&v);
                }
            }
        }
    }

    /// Probes every backend once, concurrently, each bounded by `timeout`.
    pub async fn probe_all(&self, timeout: Duration) {
        futures::future::join_all(self.slots.iter().map(|s| self.probe_slot(s, timeout))).await;
    }

    async fn probe_slot(&self, slot: &BackendSlot, timeout: Duration) -> bool {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, slot.backend.probe()).await {
            Ok(r) => r,
            Err(_) => Err(polykms_backend::BackendError::timeout(format!(
                "probe got no answer in {timeout:?}"
            ))),
        };
        let outcome = result
            .as_ref()
            .map(|_| "ok")
            .unwrap_or_else(|e| e.kind().as_str());
        self.metrics
            .backend_call(&slot.name, "probe", outcome, started.elapsed());
        let lifecycle = self.read_lifecycle(slot, timeout).await;
        let was = slot.health().healthy;
        // A key the store says can no longer wrap is unhealthy even if the probe passed (a
        // probe that does not wrap), and the reason says why and what undoes it.
        let blocking = lifecycle.as_ref().and_then(|l| l.blocking().cloned());
        let healthy = result.is_ok() && blocking.is_none();
        let reason = match (&result, &blocking) {
            (_, Some(finding)) => match &result {
                Err(e) => Some(format!("{finding} ({e})")),
                Ok(_) => Some(finding.to_string()),
            },
            (Err(e), None) => Some(e.to_string()),
            (Ok(_), None) => None,
        };
        match result {
            Ok(version) => slot.set_health(|h| {
                h.healthy = Some(healthy);
                h.key_version = Some(version);
                h.reason = reason;
                if healthy {
                    h.last_success = Some(SystemTime::now());
                }
            }),
            Err(_) => slot.set_health(|h| {
                h.healthy = Some(false);
                h.reason = reason;
            }),
        }
        if let Some(lifecycle) = lifecycle {
            // A blocking finding that turns the backend unhealthy now is said once, in the
            // "backend unhealthy" line below (its reason is the finding).
            let said_below = (was != Some(healthy) && !healthy)
                .then_some(blocking.as_ref())
                .flatten();
            self.record_lifecycle(slot, lifecycle, said_below);
        }
        if was != Some(healthy) {
            let h = slot.health();
            if healthy {
                let key_version = h.key_version.as_ref().map_or("", KeyVersion::as_str);
                tracing::info!(backend = %slot.name, key_version, "backend healthy");
            } else {
                tracing::warn!(backend = %slot.name, reason = h.reason.as_deref().unwrap_or(""), "backend unhealthy");
            }
        }
        self.metrics
            .backend_health(&slot.name, healthy, slot.backend.credential_expiry());
        self.refresh_key_id();
        healthy
    }

    /// The key store's word on the keys' lifecycle, or `None` when it could not be read (the
    /// last answer then stands; the probe decides health).
    async fn read_lifecycle(&self, slot: &BackendSlot, timeout: Duration) -> Option<KeyLifecycle> {
        let in_use = slot.unwrapped.list();
        match tokio::time::timeout(timeout, slot.backend.key_lifecycle(&in_use)).await {
            Ok(Ok(l)) => Some(l),
            Ok(Err(e)) => {
                tracing::debug!(backend = %slot.name, error = %e, "key lifecycle not readable");
                None
            }
            Err(_) => {
                tracing::debug!(backend = %slot.name, "key lifecycle read got no answer in time");
                None
            }
        }
    }

    /// Stores, exports and, when it changed, logs what the key store says of the keys (each
    /// new finding once, but `said_elsewhere`).
    fn record_lifecycle(
        &self,
        slot: &BackendSlot,
        lifecycle: KeyLifecycle,
        said_elsewhere: Option<&polykms_backend::LifecycleFinding>,
    ) {
        self.metrics.key_lifecycle(&slot.name, &lifecycle);
        let previous = slot.health().lifecycle;
        if previous == lifecycle {
            return;
        }
        let new = lifecycle
            .findings
            .iter()
            .filter(|f| !previous.findings.contains(f) && Some(*f) != said_elsewhere);
        for finding in new {
            tracing::warn!(backend = %slot.name, state = finding.state.as_str(),
                blocks_wrap = finding.blocks_wrap, "{finding}");
        }
        if lifecycle.findings.is_empty() {
            tracing::info!(backend = %slot.name, "key lifecycle: nothing scheduled, every key active");
        }
        slot.set_health(|h| h.lifecycle = lifecycle);
    }

    /// Starts one background prober per backend; they stop when the keyring is dropped.
    pub fn start_probers(self: &Arc<Self>, settings: &ProbeSettings) {
        let mut handles = self
            .probers
            .lock()
            .expect("prober list lock is never poisoned");
        for index in 0..self.slots.len() {
            let ring = Arc::downgrade(self);
            let settings = settings.clone();
            handles.push(tokio::spawn(prober(ring, index, settings)).abort_handle());
        }
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        if let Ok(handles) = self.probers.get_mut() {
            for h in handles.drain(..) {
                h.abort();
            }
        }
    }
}

async fn prober(ring: Weak<Keyring>, index: usize, settings: ProbeSettings) {
    loop {
        let (slot, healthy) = {
            let Some(ring) = ring.upgrade() else { return };
            let slot = ring.slots[index].clone();
            let healthy = slot.is_healthy();
            (slot, healthy)
        };
        let base = if healthy {
            settings.healthy_interval
        } else {
            settings.unhealthy_interval
        };
        // ±10 % jitter, so many nodes do not probe a shared key store in lock step.
        let wait = polykms_backend::crypto::jitter(base, 0.9, 1.1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = slot.wake.notified() => {}
        }
        drop(slot);
        let Some(ring) = ring.upgrade() else { return };
        let slot = ring.slots[index].clone();
        ring.probe_slot(&slot, settings.timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_are_validated() {
        for ok in ["a", "aws-prod", "vault-dc1", "x9"] {
            assert!(validate_backend_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "AWS", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(validate_backend_name(bad).is_err(), "{bad}");
        }
    }
}
