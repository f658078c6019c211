//! Key lifecycle from Get Attributes, against the in-process fake server: the Deactivation
//! Date cases live here because PyKMIP neither keeps nor reports a Deactivation Date (its Get
//! Attributes answers nothing for it); State and destroyed keys are also covered by
//! `tests/pykmip.rs` against the real server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polykms_backend::{KeyEncryptionBackend, KeyVersion, LifecycleState, SecretBytes};

use super::fake::{self, Answer};
use super::{fake_backend, named};
use crate::error::reason;
use crate::lifecycle::{Read, current_finding, older_finding};
use crate::protocol::{KeyAttributes, Operation, state, tag};
use crate::{KeySelector, ttlv};

const NOW: u64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn found(s: u32, deactivation_date: Option<i64>) -> Read {
    Read::Found(KeyAttributes {
        uid: "7".into(),
        state: Some(s),
        deactivation_date,
        ..KeyAttributes::default()
    })
}

fn by_name() -> KeySelector {
    KeySelector::Name("kube-kek".into())
}

#[test]
fn an_active_current_key_with_a_deactivation_date_ahead_is_expiring_not_blocking() {
    let at = NOW as i64 + 10 * DAY;
    let f = current_finding("7", &found(state::ACTIVE, Some(at)), &by_name(), now()).unwrap();
    assert_eq!(f.state, LifecycleState::Expiring);
    assert!(!f.blocks_wrap);
    assert_eq!(f.at, Some(UNIX_EPOCH + Duration::from_secs(at as u64)));
    assert!(
        f.remedy.contains("Deactivation Date later")
            && f.remedy.contains("new Active key named \"kube-kek\""),
        "{f}"
    );
    // No date, or one already past (the State then says Deactivated), says nothing.
    for date in [None, Some(NOW as i64 - DAY)] {
        assert_eq!(
            current_finding("7", &found(state::ACTIVE, date), &by_name(), now()),
            None
        );
    }
}

#[test]
fn a_current_key_that_is_not_active_blocks_wraps_and_names_what_restores_them() {
    let pre = current_finding("7", &found(state::PRE_ACTIVE, None), &by_name(), now()).unwrap();
    assert_eq!(
        (pre.state, pre.blocks_wrap),
        (LifecycleState::Disabled, true)
    );
    assert!(
        pre.remedy
            .starts_with("it is Pre-Active: Activate it, or make a new Active key"),
        "{pre}"
    );
    let pinned = KeySelector::Uid("7".into());
    for s in [state::DEACTIVATED, state::COMPROMISED, state::DESTROYED] {
        let f = current_finding("7", &found(s, None), &pinned, now()).unwrap();
        assert_eq!((f.state, f.blocks_wrap), (LifecycleState::Disabled, true));
        assert!(
            f.remedy.contains(&state::name(s))
                && f.remedy.contains("KMIP cannot undo")
                && f.remedy.contains("set key_uid"),
            "{f}"
        );
    }
    let gone = current_finding("7", &Read::Gone, &by_name(), now()).unwrap();
    assert!(gone.blocks_wrap && gone.remedy.contains("gone"), "{gone}");
    // A server that reports no State: the probe says so; nothing to add.
    let no_state = Read::Found(KeyAttributes::default());
    assert_eq!(current_finding("7", &no_state, &by_name(), now()), None);
}

#[test]
fn older_keys_not_active_or_gone_are_warnings_never_blocking() {
    let deactivated = older_finding("5", &found(state::DEACTIVATED, None), now()).unwrap();
    assert_eq!(
        (deactivated.state, deactivated.blocks_wrap),
        (LifecycleState::Disabled, false)
    );
    assert!(
        deactivated.remedy.contains("Deactivated") && deactivated.remedy.contains("reencrypt"),
        "{deactivated}"
    );
    for read in [Read::Gone, found(state::DESTROYED, None)] {
        let f = older_finding("5", &read, now()).unwrap();
        assert_eq!(
            (f.state, f.blocks_wrap),
            (LifecycleState::VersionRetired, false)
        );
        assert!(f.remedy.contains("backup"), "{f}");
    }
    let archived = older_finding("5", &Read::Archived, now()).unwrap();
    assert!(archived.remedy.contains("Recover"), "{archived}");
    let soon = older_finding("5", &found(state::ACTIVE, Some(NOW as i64 + DAY)), now()).unwrap();
    assert_eq!(
        (soon.state, soon.blocks_wrap),
        (LifecycleState::Expiring, false)
    );
    assert_eq!(older_finding("5", &found(state::ACTIVE, None), now()), None);
}

/// Key "1" Active, deactivated at `deactivation`; "2" Deactivated; "3" destroyed (Item Not
/// Found, as PyKMIP answers); "4" refused (Permission Denied).
fn lifecycle_server(
    deactivation: i64,
) -> impl Fn(Operation, &ttlv::Ttlv) -> Answer + Send + Sync + 'static {
    move |op, payload| match (op, fake::uid(payload).as_str()) {
        (Operation::GetAttributes, "1") => {
            fake::attributes_deactivated_at("1", Some(state::ACTIVE), 10, Some(deactivation))
        }
        (Operation::GetAttributes, "2") => fake::attributes("2", Some(state::DEACTIVATED), 5),
        (Operation::GetAttributes, "3") => {
            Answer::Failure(reason::ITEM_NOT_FOUND, "Could not locate object: 3")
        }
        (Operation::GetAttributes, "4") => {
            Answer::Failure(reason::PERMISSION_DENIED, "Permission denied")
        }
        (other, uid) => panic!("unexpected {other:?} of {uid:?}"),
    }
}

fn versions(uids: &[&str]) -> Vec<KeyVersion> {
    uids.iter().map(|u| KeyVersion::new(*u)).collect()
}

#[tokio::test]
async fn get_attributes_of_the_current_and_in_use_keys_give_one_finding_each() {
    let at = NOW as i64 + 10 * DAY;
    let address = fake::start("server", lifecycle_server(at)).await;
    let b = fake_backend(&address, false);
    // The current key among the in-use ones is read once; repeats are skipped.
    let l = b
        .lifecycle_at(&versions(&["2", "1", "3", "2"]), now())
        .await
        .unwrap();
    let seen: Vec<_> = l
        .findings
        .iter()
        .map(|f| (f.key.as_str(), f.state, f.blocks_wrap))
        .collect();
    assert_eq!(
        seen,
        [
            ("1", LifecycleState::Expiring, false),
            ("2", LifecycleState::Disabled, false),
            ("3", LifecycleState::VersionRetired, false),
        ]
    );
    assert_eq!(l.blocking(), None);
    assert_eq!(
        l.findings[0].at,
        Some(UNIX_EPOCH + Duration::from_secs(at as u64))
    );
}

#[tokio::test]
async fn a_refused_metadata_read_is_an_error_not_a_finding() {
    let address = fake::start("server", lifecycle_server(0)).await;
    let b = fake_backend(&address, false);
    let e = b.lifecycle_at(&versions(&["4"]), now()).await.unwrap_err();
    assert_eq!(e.kind(), polykms_backend::ErrorKind::Unauthorized, "{e}");
}

#[tokio::test]
async fn a_named_key_revoked_after_it_was_chosen_is_reported_blocking_though_wraps_failed() {
    static STATE: AtomicU32 = AtomicU32::new(state::ACTIVE);
    let address = fake::start("server", |op, payload| match op {
        Operation::Locate => fake::located(&["1"]),
        Operation::GetAttributes => fake::attributes("1", Some(STATE.load(Ordering::SeqCst)), 10),
        Operation::Encrypt if STATE.load(Ordering::SeqCst) == state::ACTIVE => {
            fake::encrypted(payload, Some(fake::bytes(payload, tag::IV_COUNTER_NONCE)))
        }
        Operation::Encrypt => Answer::Failure(reason::PERMISSION_DENIED, "Permission denied"),
        Operation::Decrypt => fake::decrypted(payload),
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let b = named(fake_backend(&address, false), "kube-kek");
    let before = b.lifecycle_at(&[], now()).await.unwrap();
    assert!(before.findings.is_empty(), "{before:?}");
    b.wrap(&SecretBytes::copy_from(&[1; 32]), b"aad")
        .await
        .unwrap();
    STATE.store(state::DEACTIVATED, Ordering::SeqCst);
    // The failed wrap makes the next wrap look the key up again; the probe finds no Active key.
    b.wrap(&SecretBytes::copy_from(&[1; 32]), b"aad")
        .await
        .unwrap_err();
    b.probe().await.unwrap_err();
    let l = b.lifecycle_at(&[], now()).await.unwrap();
    let f = l.blocking().expect("the revoked key blocks wraps");
    assert_eq!((f.key.as_str(), f.state), ("1", LifecycleState::Disabled));
    assert!(
        f.to_string().contains("Deactivated") && f.remedy.contains("\"kube-kek\""),
        "{f}"
    );
}
