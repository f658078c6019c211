//! What DescribeKey says of the key's life: scheduled for deletion, disabled, waiting for key
//! material, cut off from its custom key store. Every one of these stops Encrypt, so each is a
//! blocking finding; KMS has no state in which a key still wraps but is set to go away.
//!
//! All key material versions of a KMS key share the key's state, so the versions Decrypts used
//! add nothing to read: the key itself is the one thing to report.
//!
//! The probe already calls DescribeKey; its answer is kept for the lifecycle read that core
//! makes right after, so a probe interval costs one DescribeKey, not two.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::types::{KeyMetadata, KeyState};
use polykms_backend::{BackendError, KeyLifecycle, LifecycleFinding, LifecycleState};

/// How long a DescribeKey answer stands in for a fresh read. Core asks for the lifecycle right
/// after the probe; anything older comes from an unrelated call and is read again.
const MAX_READ_AGE: Duration = Duration::from_secs(5);

/// What to do about a key scheduled for deletion: cancelling leaves it `Disabled`.
pub(crate) const UNDO_PENDING_DELETION: &str = "CancelKeyDeletion, then EnableKey";

/// The last DescribeKey outcome, taken by the next lifecycle read.
#[derive(Debug, Default)]
pub(crate) struct LastDescribe(Mutex<Option<(Instant, Result<KeyMetadata, BackendError>)>>);

impl LastDescribe {
    /// Remembers what DescribeKey just answered.
    pub(crate) fn record(&self, outcome: Result<KeyMetadata, BackendError>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), outcome));
    }

    /// The last outcome if it is recent, once: a later read asks KMS again.
    pub(crate) fn take_fresh(&self) -> Option<Result<KeyMetadata, BackendError>> {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match last.take() {
            Some((at, outcome)) if at.elapsed() <= MAX_READ_AGE => Some(outcome),
            _ => None,
        }
    }
}

/// The findings for one DescribeKey answer.
pub(crate) fn of_metadata(meta: &KeyMetadata) -> KeyLifecycle {
    let key = meta.arn().unwrap_or(meta.key_id());
    let finding = match meta.key_state() {
        Some(KeyState::PendingDeletion) => {
            let f =
                LifecycleFinding::new(LifecycleState::PendingDeletion, key, UNDO_PENDING_DELETION)
                    .blocking();
            match meta
                .deletion_date()
                .and_then(|d| SystemTime::try_from(*d).ok())
            {
                Some(at) => Some(f.at(at)),
                None => Some(f),
            }
        }
        // A multi-Region primary waiting for its replicas to go: no date until the last one
        // is deleted, and CancelKeyDeletion still applies.
        Some(KeyState::PendingReplicaDeletion) => Some(
            LifecycleFinding::new(LifecycleState::PendingDeletion, key, UNDO_PENDING_DELETION)
                .blocking(),
        ),
        Some(KeyState::Disabled) => {
            Some(LifecycleFinding::new(LifecycleState::Disabled, key, "EnableKey").blocking())
        }
        // Imported key material never imported, expired or deleted: unusable like a disabled
        // key, and what restores it is another import.
        Some(KeyState::PendingImport) => Some(
            LifecycleFinding::new(
                LifecycleState::Disabled,
                key,
                "ImportKeyMaterial (the key's imported key material expired, was deleted or was \
                 never imported)",
            )
            .blocking(),
        ),
        // A custom key store disconnected on purpose by an operator.
        Some(KeyState::Unavailable) => Some(
            LifecycleFinding::new(
                LifecycleState::Disabled,
                key,
                "ConnectCustomKeyStore (the key's custom key store is disconnected)",
            )
            .blocking(),
        ),
        None if !meta.enabled() => {
            Some(LifecycleFinding::new(LifecycleState::Disabled, key, "EnableKey").blocking())
        }
        // Enabled; Creating and Updating pass by themselves (the probe reports them as
        // retryable); a state this SDK does not know is left to the probe's message.
        _ => None,
    };
    KeyLifecycle::of(finding.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use aws_sdk_kms::primitives::DateTime;

    use super::*;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn meta(
        state: Option<KeyState>,
        enabled: bool,
    ) -> aws_sdk_kms::types::builders::KeyMetadataBuilder {
        KeyMetadata::builder()
            .key_id("1234abcd-12ab-34cd-56ef-1234567890ab")
            .arn(ARN)
            .enabled(enabled)
            .set_key_state(state)
    }

    fn only(l: &KeyLifecycle) -> &LifecycleFinding {
        assert_eq!(l.findings.len(), 1, "{l:?}");
        &l.findings[0]
    }

    #[test]
    fn pending_deletion_blocks_with_its_date_and_cancel_then_enable() {
        let m = meta(Some(KeyState::PendingDeletion), false)
            .deletion_date(DateTime::from_secs(1_800_000_000))
            .build()
            .expect("key_id is set");
        let l = of_metadata(&m);
        let f = only(&l);
        assert_eq!(f.state, LifecycleState::PendingDeletion);
        assert!(f.blocks_wrap);
        assert_eq!(f.key, ARN);
        assert_eq!(
            f.at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        assert_eq!(f.remedy, "CancelKeyDeletion, then EnableKey");
        assert_eq!(l.next_deletion(), f.at);
    }

    #[test]
    fn primary_waiting_for_replica_deletion_is_pending_deletion_without_a_date() {
        let m = meta(Some(KeyState::PendingReplicaDeletion), false)
            .build()
            .expect("key_id is set");
        let l = of_metadata(&m);
        let f = only(&l);
        assert_eq!(
            (f.state, f.blocks_wrap, f.at),
            (LifecycleState::PendingDeletion, true, None)
        );
        assert!(f.remedy.contains("CancelKeyDeletion"));
    }

    #[test]
    fn disabled_pending_import_and_unavailable_block_with_their_own_undo() {
        for (state, remedy) in [
            (KeyState::Disabled, "EnableKey"),
            (KeyState::PendingImport, "ImportKeyMaterial"),
            (KeyState::Unavailable, "ConnectCustomKeyStore"),
        ] {
            let l = of_metadata(
                &meta(Some(state.clone()), false)
                    .build()
                    .expect("key_id is set"),
            );
            let f = only(&l);
            assert_eq!(f.state, LifecycleState::Disabled, "{state:?}");
            assert!(f.blocks_wrap, "{state:?}");
            assert!(f.remedy.starts_with(remedy), "{state:?}: {}", f.remedy);
        }
        // An endpoint that leaves KeyState out but says Enabled=false.
        let f = of_metadata(&meta(None, false).build().expect("key_id is set"));
        assert_eq!(only(&f).state, LifecycleState::Disabled);
    }

    #[test]
    fn enabled_or_transient_states_have_nothing_to_say() {
        for state in [
            Some(KeyState::Enabled),
            Some(KeyState::Creating),
            Some(KeyState::Updating),
            None,
        ] {
            let m = meta(state.clone(), true).build().expect("key_id is set");
            assert_eq!(of_metadata(&m), KeyLifecycle::default(), "{state:?}");
        }
    }

    #[test]
    fn a_describe_answer_is_reused_once_and_only_while_fresh() {
        let last = LastDescribe::default();
        assert!(last.take_fresh().is_none());
        last.record(Err(BackendError::unavailable("down")));
        assert!(last.take_fresh().is_some_and(|r| r.is_err()));
        assert!(last.take_fresh().is_none(), "taken once");
        let stale = Instant::now()
            .checked_sub(MAX_READ_AGE + Duration::from_secs(1))
            .expect("the monotonic clock is past a few seconds");
        *last.0.lock().unwrap() = Some((stale, Err(BackendError::unavailable("old"))));
        assert!(last.take_fresh().is_none(), "stale answers are read again");
    }
}
