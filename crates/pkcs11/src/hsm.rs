//! The token as the blocking side sees it: a pool of logged-in sessions, the slot the token
//! is in, the key objects, and recovery when the token goes away and comes back. Every
//! function here calls into the module and runs on a blocking thread.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::Slot;
use polykms_backend::{BackendError, KeyVersion, SecretBytes, WrappedKey};

use crate::config::{TokenSelector, WrapMechanism};
use crate::error::{self, Operation};
use crate::idle::IdleSessions;
use crate::keys::{self, KeyObject, KeySet};
use crate::mechanism;
use crate::module::{Module, Reinit};
use crate::pin::PinGate;

/// A failure inside a module call: a raw PKCS#11 error (still to be classified, and telling
/// whether the session survives) or an error already sorted.
#[derive(Debug)]
pub(crate) enum Failure {
    Module(Operation, Error),
    Backend(BackendError),
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        Failure::Backend(e)
    }
}

/// The token found in a module generation.
#[derive(Debug, Clone)]
pub(crate) struct FoundToken {
    generation: u64,
    slot: Slot,
    pub(crate) label: String,
    pub(crate) serial: String,
}

impl std::fmt::Display for FoundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token label {:?} serial {:?} slot {}",
            self.label,
            self.serial,
            self.slot.id()
        )
    }
}

/// How long start-up waits for calls in the module to finish before re-enumerating tokens.
const START_PATIENCE: Duration = Duration::from_secs(2);
/// How long a probe waits; it tries again at the next probe.
const PROBE_PATIENCE: Duration = Duration::from_millis(200);

/// Sessions, token and key objects of one configured backend.
pub(crate) struct Hsm {
    pub(crate) module: Arc<Module>,
    selector: TokenSelector,
    pub(crate) pin: PinGate,
    pub(crate) key_label: String,
    pub(crate) mechanism: WrapMechanism,
    pub(crate) idle: IdleSessions,
    found: Mutex<Option<FoundToken>>,
    keys: Mutex<Option<Arc<KeySet>>>,
    /// Set when the token looked gone; the next probe re-enumerates tokens.
    gone: AtomicBool,
    /// Set when a fresh slot listing lacked the token; finding it again resets the module's
    /// re-initialization backoff.
    missing: AtomicBool,
    /// Key versions already warned about (extractable or not sensitive).
    warned: Mutex<HashSet<KeyVersion>>,
}

impl Hsm {
    pub(crate) fn new(
        module: Arc<Module>,
        selector: TokenSelector,
        pin: PinGate,
        key_label: String,
        mechanism: WrapMechanism,
    ) -> Self {
        Hsm {
            module,
            selector,
            pin,
            key_label,
            mechanism,
            idle: IdleSessions::default(),
            found: Mutex::new(None),
            keys: Mutex::new(None),
            gone: AtomicBool::new(false),
            missing: AtomicBool::new(false),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The token as last found, for `describe`.
    pub(crate) fn found_token(&self) -> Option<FoundToken> {
        lock(&self.found).clone()
    }

    pub(crate) fn selector(&self) -> &TokenSelector {
        &self.selector
    }

    /// The key objects as the last probe (or wrap, unwrap) listed them, if any did.
    pub(crate) fn listed_keys(&self) -> Option<Arc<KeySet>> {
        lock(&self.keys).clone()
    }

    /// Runs `f` with a logged-in session of the current module generation. A session lost
    /// under a reused session (closed, logged out, token re-inserted) is replaced once.
    pub(crate) fn with_session<T>(
        &self,
        mut f: impl FnMut(&Session, u64) -> Result<T, Failure>,
    ) -> Result<T, BackendError> {
        let guard = self.module.enter();
        let generation = guard.generation;
        for attempt in 0..2 {
            let (session, reused) = match self.idle.take(generation) {
                Some(s) => (s, true),
                None => (self.open(generation)?, false),
            };
            match f(&session, generation) {
                Ok(v) => {
                    self.idle.give_back(session, generation);
                    return Ok(v);
                }
                Err(Failure::Backend(e)) => {
                    self.idle.give_back(session, generation);
                    return Err(e);
                }
                Err(Failure::Module(op, e)) => {
                    self.note_token_errors(&e);
                    if error::loses_session(&e) {
                        drop(session);
                        if reused && attempt == 0 {
                            continue;
                        }
                    } else {
                        self.idle.give_back(session, generation);
                    }
                    return Err(error::classify(op, &e));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Re-enumerates the module's tokens if the token looked gone since the last probe and
    /// the slots, listed again, still do not show it. An error that only looked like a lost
    /// token (a passing device error) must not finalize a module that every backend and
    /// reload naming it shares, nor finalize it at every probe while the token stays missing
    /// (the module's backoff spaces those out; `now` is its clock).
    pub(crate) fn recover(&self, patience: Duration, now: Instant) {
        if !self.gone.swap(false, Ordering::AcqRel) {
            return;
        }
        let seen = {
            let guard = self.module.enter();
            // `found` was cleared when the token looked gone: this lists the slots afresh.
            if self.token(guard.generation).is_ok() {
                return;
            }
            guard.generation
        };
        self.missing.store(true, Ordering::Release);
        // The look above marked the token gone again; after a re-initialization the next
        // call finds out afresh, as before. Otherwise the next probe asks again.
        match self.module.reinitialize(seen, patience, now) {
            Reinit::Done | Reinit::Newer => self.gone.store(false, Ordering::Release),
            Reinit::Busy => self.gone.store(true, Ordering::Release),
            Reinit::Deferred(next) => {
                tracing::debug!(
                    wait = ?next.saturating_duration_since(now),
                    "pkcs11: token still missing; the module enumerates tokens again later"
                );
                self.gone.store(true, Ordering::Release);
            }
        }
    }

    fn note_token_errors(&self, e: &Error) {
        if error::token_gone(e) {
            self.gone.store(true, Ordering::Release);
            lock(&self.found).take();
        }
    }

    fn open(&self, generation: u64) -> Result<Session, BackendError> {
        let token = self.token(generation)?;
        let pkcs11 = &self.module.pkcs11;
        let session = pkcs11.open_ro_session(token.slot).map_err(|e| {
            self.note_token_errors(&e);
            error::classify(Operation::OpenSession, &e)
        })?;
        self.pin
            .login(&session, &format!("token {:?}", token.label), |s| {
                s.get_session_info().map(|i| {
                    matches!(
                        i.session_state(),
                        SessionState::RoUser | SessionState::RwUser
                    )
                })
            })?;
        Ok(session)
    }

    /// The slot of the configured token in this generation.
    fn token(&self, generation: u64) -> Result<FoundToken, BackendError> {
        if let Some(t) = lock(&self.found)
            .as_ref()
            .filter(|t| t.generation == generation)
        {
            return Ok(t.clone());
        }
        let pkcs11 = &self.module.pkcs11;
        let classify = |e: Error| {
            self.note_token_errors(&e);
            error::classify(Operation::FindToken, &e)
        };
        let slots = pkcs11.get_slots_with_token().map_err(classify)?;
        let mut found = None;
        for slot in slots {
            if let TokenSelector::Slot(id) = &self.selector
                && slot.id() != *id
            {
                continue;
            }
            // A slot whose token errs (e.g. deleted under SoftHSM2) is not ours to use.
            let Ok(info) = pkcs11.get_token_info(slot) else {
                continue;
            };
            let matches = match &self.selector {
                TokenSelector::Label(l) => info.label().trim_end() == l,
                TokenSelector::Serial(s) => info.serial_number().trim_end() == s,
                TokenSelector::Slot(_) => true,
            };
            if matches && info.token_initialized() {
                found = Some(FoundToken {
                    generation,
                    slot,
                    label: info.label().trim_end().to_string(),
                    serial: info.serial_number().trim_end().to_string(),
                });
                break;
            }
        }
        let Some(token) = found else {
            self.gone.store(true, Ordering::Release);
            return Err(BackendError::unavailable(format!(
                "no initialized token with {} in module {}",
                self.selector,
                self.module.path.display()
            )));
        };
        *lock(&self.found) = Some(token.clone());
        if self.missing.swap(false, Ordering::AcqRel) {
            self.module.reset_backoff();
        }
        Ok(token)
    }

    /// The key objects, from the cache of this generation unless `refresh`.
    fn keys(
        &self,
        session: &Session,
        generation: u64,
        refresh: bool,
    ) -> Result<Arc<KeySet>, Failure> {
        if !refresh
            && let Some(k) = lock(&self.keys)
                .as_ref()
                .filter(|k| k.generation == generation)
        {
            return Ok(k.clone());
        }
        let set = keys::find(session, generation, &self.key_label, self.mechanism)?;
        if set.keys.is_empty() {
            // SoftHSM2 finds nothing, without an error, on a token deleted under it.
            self.token_present(session)?;
        }
        let set = Arc::new(set);
        *lock(&self.keys) = Some(set.clone());
        Ok(set)
    }

    /// Fails with the module's error when the session's token is no longer there.
    fn token_present(&self, session: &Session) -> Result<(), Failure> {
        let slot = session
            .get_session_info()
            .map_err(|e| Failure::Module(Operation::FindToken, e))?
            .slot_id();
        self.module
            .pkcs11
            .get_token_info(slot)
            .map(drop)
            .map_err(|e| Failure::Module(Operation::FindToken, e))
    }

    /// Unwraps, telling a failed integrity check from a failing token: SoftHSM2 (and other
    /// modules) answer CKR_GENERAL_ERROR to a GCM tag or an RFC 5649 check value that does not
    /// verify; if the token is still there afterwards, the ciphertext was the problem.
    fn unwrap_with(
        &self,
        session: &Session,
        key: &KeyObject,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes, Failure> {
        match mechanism::unwrap(self.mechanism, session, key.handle, wrapped, aad) {
            Err(Failure::Module(_, Error::Pkcs11(RvError::GeneralError, _)))
                if self.token_present(session).is_ok() =>
            {
                Err(BackendError::wrong_key(format!(
                    "{} under {} did not authenticate (the module answered \
                     CKR_GENERAL_ERROR): wrong key or context (AAD), or tampered",
                    self.mechanism.as_str(),
                    key.version
                ))
                .into())
            }
            other => other,
        }
    }

    /// Wraps under the key with the greatest CKA_ID.
    pub(crate) fn wrap(&self, seed: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        self.with_session(|session, generation| {
            let mut refresh = false;
            loop {
                let set = self.keys(session, generation, refresh)?;
                let key = set.current()?;
                match mechanism::wrap(self.mechanism, session, key.handle, seed, aad) {
                    Err(Failure::Module(_, e)) if error::stale_handle(&e) && !refresh => {
                        refresh = true
                    }
                    other => return other.map(|c| WrappedKey::new(key.version.clone(), c)),
                }
            }
        })
    }

    /// Unwraps with the exact key object the wrapped key names.
    pub(crate) fn unwrap(
        &self,
        wrapped: &WrappedKey,
        aad: &[u8],
    ) -> Result<SecretBytes, BackendError> {
        let id = keys::id_of(&self.key_label, &wrapped.key_version)?;
        self.with_session(|session, generation| {
            let mut refresh = false;
            loop {
                let set = self.keys(session, generation, refresh)?;
                let Some(key) = set.with_id(&id) else {
                    if refresh {
                        return Err(missing(&wrapped.key_version).into());
                    }
                    refresh = true;
                    continue;
                };
                match self.unwrap_with(session, key, &wrapped.ciphertext, aad) {
                    Err(Failure::Module(_, e)) if error::stale_handle(&e) => {
                        if refresh {
                            return Err(missing(&wrapped.key_version).into());
                        }
                        refresh = true;
                    }
                    other => return other,
                }
            }
        })
    }

    /// Logs in and reads the key objects: the start-up check.
    /// A token made after the module was initialized is found by enumerating again.
    pub(crate) fn start(&self) -> Result<(), BackendError> {
        let attempt = || {
            self.with_session(|session, generation| self.keys(session, generation, true).map(drop))
        };
        match attempt() {
            Err(e) if self.gone.load(Ordering::Acquire) && self.pin.refusal().is_none() => {
                tracing::debug!(error = %e, "pkcs11: token not found at start; enumerating again");
                self.recover(START_PATIENCE, Instant::now());
                attempt()
            }
            other => other,
        }
    }

    /// Health: token present and logged in, key objects found and usable, a canary round
    /// trip under the current key. Returns the current key version.
    pub(crate) fn probe(&self) -> Result<KeyVersion, BackendError> {
        self.probe_at(Instant::now())
    }

    /// [`Hsm::probe`] on the backoff clock `now`.
    pub(crate) fn probe_at(&self, now: Instant) -> Result<KeyVersion, BackendError> {
        self.recover(PROBE_PATIENCE, now);
        if let Some(refused) = self.pin.refusal() {
            return Err(refused);
        }
        self.with_session(|session, generation| {
            self.token_present(session)?;
            let set = self.keys(session, generation, true)?;
            let key = set.current()?;
            self.warn_about(&set);
            self.canary(session, key)?;
            Ok(key.version.clone())
        })
    }

    fn canary(&self, session: &Session, key: &KeyObject) -> Result<(), Failure> {
        const AAD: &[u8] = b"polykms pkcs11 health canary";
        let seed = SecretBytes::copy_from(&[0x5a; 32]);
        let wrapped = mechanism::wrap(self.mechanism, session, key.handle, &seed, AAD)?;
        let back = self.unwrap_with(session, key, &wrapped, AAD)?;
        if back != seed {
            return Err(BackendError::integrity(format!(
                "canary round trip under {} returned other bytes",
                key.version
            ))
            .into());
        }
        Ok(())
    }

    fn warn_about(&self, set: &KeySet) {
        let mut warned = lock(&self.warned);
        for k in &set.keys {
            if let Some(why) = k.exposure
                && warned.insert(k.version.clone())
            {
                tracing::warn!(key_version = %k.version, "pkcs11: key object {why}");
            }
        }
    }
}

impl Drop for Hsm {
    /// On reload the old backend's idle sessions go: those of the current generation are
    /// closed inside the module (a re-initialization must not run under C_CloseSession), the
    /// rest are forgotten (their handles may name another backend's sessions now).
    fn drop(&mut self) {
        if self.idle.is_empty() {
            return;
        }
        let guard = self.module.enter();
        self.idle.close(guard.generation);
    }
}

fn missing(version: &KeyVersion) -> BackendError {
    BackendError::key_unavailable(format!(
        "key version {version} is not on the token (its key object was deleted?)"
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
