//! Opt-in: the non-destructive part of the suite against a real AWS KMS key.
//!
//! ```sh
//! export POLYKMS_AWS_REAL_KEY_ARN=arn:aws:kms:eu-west-1:111122223333:key/…
//! # optional: POLYKMS_AWS_REAL_OTHER_KEY_ARN (a second key, same region),
//! #           POLYKMS_AWS_REAL_ASSUME_ROLE_ARN; credentials from the default chain
//! cargo test -p polykms-aws --test real_aws
//! ```
//! The key needs kms:Encrypt, kms:Decrypt, kms:DescribeKey, kms:ListKeyRotations. Nothing is
//! created, disabled or rotated. Skipped without the variable unless `POLYKMS_REQUIRE_REAL_AWS=1`.

mod common;

use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::{ErrorKind, KeyEncryptionBackend, WrappedKey};

use common::{backend, check_context_and_tampering_rejected, check_round_trip, seed};

fn real_key(test: &str) -> Option<String> {
    common::env_or_skip("POLYKMS_AWS_REAL_KEY_ARN", "POLYKMS_REQUIRE_REAL_AWS", test)
}

#[tokio::test]
async fn real_kms_round_trips_and_reports_a_stable_version() {
    let Some(arn) = real_key("real_kms_round_trips_and_reports_a_stable_version") else {
        return;
    };
    let b = backend(&arn, None, None).await;
    let w = check_round_trip(&b).await;
    assert!(
        w.key_version.as_str().starts_with(&arn),
        "{}",
        w.key_version
    );
    // Another node with the same config reports the same version.
    assert_eq!(
        backend(&arn, None, None).await.key_version().await.unwrap(),
        w.key_version
    );
    println!("{} -> {}", b.describe(), w.key_version);
}

#[tokio::test]
async fn real_kms_rejects_other_context_and_tampering() {
    let Some(arn) = real_key("real_kms_rejects_other_context_and_tampering") else {
        return;
    };
    check_context_and_tampering_rejected(&backend(&arn, None, None).await).await;
}

#[tokio::test]
async fn real_kms_rejects_ciphertext_of_another_key_as_wrong_key() {
    let Some(arn) = real_key("real_kms_rejects_ciphertext_of_another_key_as_wrong_key") else {
        return;
    };
    let Ok(other) = std::env::var("POLYKMS_AWS_REAL_OTHER_KEY_ARN") else {
        eprintln!("skipped: POLYKMS_AWS_REAL_OTHER_KEY_ARN is not set");
        return;
    };
    let a = backend(&arn, None, None).await;
    let b = backend(&other, None, None).await;
    let w_b = b.wrap(&seed(8), b"x").await.unwrap();
    assert_eq!(
        a.unwrap(&w_b, b"x").await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
    let relabelled = WrappedKey::new(a.key_version().await.unwrap(), w_b.ciphertext);
    let err = a.unwrap(&relabelled, b"x").await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::WrongKey,
        "IncorrectKeyException expected: {err}"
    );
}

#[tokio::test]
async fn real_kms_works_through_an_assumed_role() {
    let Some(arn) = real_key("real_kms_works_through_an_assumed_role") else {
        return;
    };
    let Ok(role) = std::env::var("POLYKMS_AWS_REAL_ASSUME_ROLE_ARN") else {
        eprintln!("skipped: POLYKMS_AWS_REAL_ASSUME_ROLE_ARN is not set");
        return;
    };
    let mut cfg = AwsConfig::new(&arn);
    cfg.assume_role_arn = Some(role);
    let b = AwsBackend::connect(&cfg).await.unwrap();
    check_round_trip(&b).await;
    assert!(b.credential_expiry().is_some());
}
