//! What a key store says about the life of the keys a backend needs: scheduled for deletion,
//! disabled, expiring, deletable without a recovery period. Read from key metadata at the
//! probe interval, so polykms warns before a key goes away instead of failing after.

use std::fmt;
use std::time::SystemTime;

/// Where a key stands in its key store's life cycle, when that is worth an operator's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LifecycleState {
    /// Scheduled for deletion or destruction (AWS `PendingDeletion`, GCP `DESTROY_SCHEDULED`).
    PendingDeletion,
    /// Disabled, or otherwise not usable for new wraps (AWS `Disabled`, GCP `DISABLED`, Azure
    /// `enabled = false`, a KMIP key not `Active`).
    Disabled,
    /// Past its expiry (Azure `exp`, PKCS#11 `CKA_END_DATE`).
    Expired,
    /// Expires or is deactivated within the warning window (Azure `exp`, KMIP `Deactivation
    /// Date`).
    Expiring,
    /// The key store lets anyone with the right permission delete it for good, with no
    /// recovery period (Azure without purge protection, Transit `deletion_allowed = true`).
    DeletionAllowed,
    /// An older key version that Decrypts still use can no longer decrypt (Transit
    /// `min_decryption_version` raised above it).
    VersionRetired,
}

impl LifecycleState {
    /// Every state, in the order metrics list them.
    pub const ALL: [LifecycleState; 6] = [
        LifecycleState::PendingDeletion,
        LifecycleState::Disabled,
        LifecycleState::Expired,
        LifecycleState::Expiring,
        LifecycleState::DeletionAllowed,
        LifecycleState::VersionRetired,
    ];

    /// The `state` label of `polykms_key_lifecycle`.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::PendingDeletion => "pending_deletion",
            LifecycleState::Disabled => "disabled",
            LifecycleState::Expired => "expired",
            LifecycleState::Expiring => "expiring",
            LifecycleState::DeletionAllowed => "deletion_allowed",
            LifecycleState::VersionRetired => "version_retired",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            LifecycleState::PendingDeletion => "is scheduled for deletion",
            LifecycleState::Disabled => "is disabled",
            LifecycleState::Expired => "has expired",
            LifecycleState::Expiring => "expires",
            LifecycleState::DeletionAllowed => "can be deleted for good (no recovery period)",
            LifecycleState::VersionRetired => "can no longer decrypt",
        }
    }
}

/// One thing the key store says about a key the backend needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleFinding {
    pub state: LifecycleState,
    /// The key or key version concerned (its public identity).
    pub key: String,
    /// True when the backend's current key can no longer wrap because of it: Status turns
    /// unhealthy. False for a warning about a key that still works but is set to go away
    /// (an unhealthy Status would take apiservers out of service early).
    pub blocks_wrap: bool,
    /// When the key store deletes, destroys, expires or deactivates it, when it says.
    pub at: Option<SystemTime>,
    /// What undoes it, in the key store's own terms (`CancelKeyDeletion`, then `EnableKey`).
    pub remedy: String,
}

impl LifecycleFinding {
    pub fn new(state: LifecycleState, key: impl Into<String>, remedy: impl Into<String>) -> Self {
        LifecycleFinding {
            state,
            key: key.into(),
            blocks_wrap: false,
            at: None,
            remedy: remedy.into(),
        }
    }

    /// Marks the finding as one that stops the current key from wrapping.
    pub fn blocking(mut self) -> Self {
        self.blocks_wrap = true;
        self
    }

    /// Sets when the key store acts.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = Some(at);
        self
    }
}

impl fmt::Display for LifecycleFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} {}", self.key, self.state.phrase())?;
        if let Some(at) = self.at {
            let when = humantime::format_rfc3339_seconds(at);
            match self.state {
                LifecycleState::Expiring => write!(f, " at {when}")?,
                _ => write!(f, " (on {when})")?,
            }
        }
        write!(f, "; to undo: {}", self.remedy)
    }
}

/// What a backend knows of its keys' lifecycle: nothing to say when `findings` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLifecycle {
    pub findings: Vec<LifecycleFinding>,
}

impl KeyLifecycle {
    pub fn of(findings: Vec<LifecycleFinding>) -> Self {
        KeyLifecycle { findings }
    }

    /// The first finding that stops the current key from wrapping.
    pub fn blocking(&self) -> Option<&LifecycleFinding> {
        self.findings.iter().find(|f| f.blocks_wrap)
    }

    /// Whether any finding has `state`.
    pub fn has(&self, state: LifecycleState) -> bool {
        self.findings.iter().any(|f| f.state == state)
    }

    /// The earliest time the key store deletes, destroys or expires a key, if any is set.
    pub fn next_deletion(&self) -> Option<SystemTime> {
        self.findings
            .iter()
            .filter(|f| {
                matches!(
                    f.state,
                    LifecycleState::PendingDeletion
                        | LifecycleState::Expiring
                        | LifecycleState::Expired
                )
            })
            .filter_map(|f| f.at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_finding_says_what_when_and_how_to_undo_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = LifecycleFinding::new(
            LifecycleState::PendingDeletion,
            "arn:aws:kms:eu-west-1:111122223333:key/k",
            "CancelKeyDeletion, then EnableKey",
        )
        .blocking()
        .at(at);
        assert_eq!(
            f.to_string(),
            "key arn:aws:kms:eu-west-1:111122223333:key/k is scheduled for deletion \
             (on 2027-01-15T08:00:00Z); to undo: CancelKeyDeletion, then EnableKey"
        );
        let l = KeyLifecycle::of(vec![
            LifecycleFinding::new(LifecycleState::DeletionAllowed, "t", "set it false"),
            f.clone(),
        ]);
        assert_eq!(l.blocking(), Some(&f));
        assert_eq!(l.next_deletion(), Some(at));
        assert!(l.has(LifecycleState::DeletionAllowed) && !l.has(LifecycleState::Expired));
    }

    #[test]
    fn state_labels_are_distinct() {
        let mut labels: Vec<&str> = LifecycleState::ALL.iter().map(|s| s.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), LifecycleState::ALL.len());
    }
}
