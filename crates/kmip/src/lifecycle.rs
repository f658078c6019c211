//! What the KMIP server says of the life of the keys polykms needs, from Get Attributes (State,
//! Deactivation Date) of the key that wraps and of the older keys Decrypts used: a current key
//! that is not Active blocks wraps; a Deactivation Date ahead, or an older key that is no
//! longer Active or is gone, is a warning.
//!
//! KMIP has no way back from Deactivated, Compromised or Destroyed (KMIP 1.4 §3.22 state
//! transitions), so the remedies for those say what to do instead: a new Active key, and
//! re-encrypting before the old one goes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polykms_backend::{BackendError, KeyLifecycle, KeyVersion, LifecycleFinding, LifecycleState};

use crate::client::CallError;
use crate::config::KeySelector;
use crate::error::reason;
use crate::protocol::{KeyAttributes, state};
use crate::{KmipBackend, for_key};

/// What Get Attributes of one key came to.
#[derive(Debug)]
pub(crate) enum Read {
    Found(KeyAttributes),
    /// Item Not Found, Object Not Found or Object Destroyed: the server no longer has it.
    Gone,
    /// Object Archived: kept off-line; KMIP Recover brings it back.
    Archived,
}

impl KmipBackend {
    /// [`KeyEncryptionBackend::key_lifecycle`](polykms_backend::KeyEncryptionBackend) at `now`.
    pub(crate) async fn lifecycle_at(
        &self,
        in_use: &[KeyVersion],
        now: SystemTime,
    ) -> Result<KeyLifecycle, BackendError> {
        let mut findings = Vec::new();
        // The pinned key, or the one the last successful look-up chose: a named key that was
        // revoked since is still the one whose state explains why nothing wraps.
        let current = match &self.selector {
            KeySelector::Uid(uid) => Some(uid.clone()),
            KeySelector::Name(_) => self.last_resolved.load_full().map(|u| (*u).clone()),
        };
        if let Some(uid) = &current {
            let read = self.read(uid).await?;
            findings.extend(current_finding(uid, &read, &self.selector, now));
        }
        let mut seen = Vec::new();
        for version in in_use {
            let uid = version.as_str();
            if uid.is_empty() || Some(uid) == current.as_deref() || seen.contains(&uid) {
                continue;
            }
            seen.push(uid);
            let read = self.read(uid).await?;
            findings.extend(older_finding(uid, &read, now));
        }
        Ok(KeyLifecycle::of(findings))
    }

    /// Get Attributes of `uid`; a key the server no longer has is an answer, not an error.
    async fn read(&self, uid: &str) -> Result<Read, BackendError> {
        match self.attributes(uid).await {
            Ok(a) => Ok(Read::Found(a)),
            Err(CallError::Kmip(f))
                if f.is(reason::ITEM_NOT_FOUND)
                    || f.is(reason::OBJECT_NOT_FOUND)
                    || f.is(reason::OBJECT_DESTROYED) =>
            {
                Ok(Read::Gone)
            }
            Err(CallError::Kmip(f)) if f.is(reason::OBJECT_ARCHIVED) => Ok(Read::Archived),
            Err(e) => Err(for_key(e, uid)),
        }
    }
}

/// The key that wraps: anything but Active stops it (Disabled, blocking); an Active key with a
/// Deactivation Date ahead is Expiring. A past Deactivation Date is not looked at: the server
/// has moved the key to Deactivated by then, and its State says so.
pub(crate) fn current_finding(
    uid: &str,
    read: &Read,
    selector: &KeySelector,
    now: SystemTime,
) -> Option<LifecycleFinding> {
    let new_key = match selector {
        KeySelector::Name(name) => {
            format!("make a new Active key named {name:?} (Create, Activate)")
        }
        KeySelector::Uid(_) => {
            "make a new Active key (Create, Activate) and set key_uid to its Unique Identifier"
                .to_owned()
        }
    };
    let blocked = |remedy: String| {
        Some(LifecycleFinding::new(LifecycleState::Disabled, uid, remedy).blocking())
    };
    let key = match read {
        Read::Found(key) => key,
        Read::Gone => {
            return blocked(format!(
                "it is gone from the KMIP server (destroyed): {new_key}"
            ));
        }
        Read::Archived => {
            return blocked(format!(
                "it is archived: Recover it on the KMIP server, or {new_key}"
            ));
        }
    };
    match key.state? {
        state::ACTIVE => expiring(
            uid,
            key,
            now,
            &format!(
                "move its Deactivation Date later (Modify Attribute), or before then {new_key}"
            ),
        ),
        state::PRE_ACTIVE => blocked(format!("it is Pre-Active: Activate it, or {new_key}")),
        s => blocked(format!(
            "it is {}, which KMIP cannot undo: {new_key}",
            state::name(s)
        )),
    }
}

/// An older key Decrypts used: a warning when it is set to be deactivated, is no longer
/// Active (servers may refuse Decrypt with it: PyKMIP does, though KMIP allows it for a
/// Deactivated key), or is gone, when Decrypts of what it wrapped fail.
pub(crate) fn older_finding(uid: &str, read: &Read, now: SystemTime) -> Option<LifecycleFinding> {
    const REENCRYPT: &str = "re-encrypt the Secrets it wrapped under the current key \
                             (polykms reencrypt) before it is destroyed";
    let retired = |remedy: String| {
        Some(LifecycleFinding::new(
            LifecycleState::VersionRetired,
            uid,
            remedy,
        ))
    };
    let key = match read {
        Read::Found(key) => key,
        Read::Gone => {
            return retired(
                "it is gone from the KMIP server (destroyed), which KMIP cannot undo: restore it \
                 from the key manager's backup, or re-create the Secrets it wrapped"
                    .to_owned(),
            );
        }
        Read::Archived => {
            return retired(format!(
                "it is archived: Recover it on the KMIP server, then {REENCRYPT}"
            ));
        }
    };
    let disabled =
        |remedy: String| Some(LifecycleFinding::new(LifecycleState::Disabled, uid, remedy));
    match key.state? {
        state::ACTIVE => expiring(
            uid,
            key,
            now,
            &format!("move its Deactivation Date later (Modify Attribute), or {REENCRYPT}"),
        ),
        state::PRE_ACTIVE => disabled(format!("it is Pre-Active: Activate it, or {REENCRYPT}")),
        s @ (state::DESTROYED | state::DESTROYED_COMPROMISED) => retired(format!(
            "it is {}, which KMIP cannot undo: restore it from the key manager's backup, or \
             re-create the Secrets it wrapped",
            state::name(s)
        )),
        s => disabled(format!(
            "it is {}, which KMIP cannot undo: {REENCRYPT}",
            state::name(s)
        )),
    }
}

/// Expiring at the key's Deactivation Date, when that is ahead of `now`.
fn expiring(
    uid: &str,
    key: &KeyAttributes,
    now: SystemTime,
    remedy: &str,
) -> Option<LifecycleFinding> {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(key.deactivation_date?).ok()?);
    (at > now).then(|| LifecycleFinding::new(LifecycleState::Expiring, uid, remedy).at(at))
}
