//! polykms-aws against moto_server (`integration/servers/moto.sh start`, then
//! `source integration/.run/moto.env`). Skipped without `POLYKMS_AWS_ENDPOINT` unless
//! `POLYKMS_REQUIRE_INTEGRATION=1`.
//!
//! Known moto limits, covered by the unit tests of the error mapping instead:
//! - a disabled key still encrypts and decrypts (real KMS: DisabledException), so only the
//!   DescribeKey probe sees it;
//! - Decrypt pinned to another key answers AccessDeniedException (real KMS:
//!   IncorrectKeyException), so that path is `Unauthorized` here, `WrongKey` on AWS;
//! - rotation does not change key material and DescribeKey has no CurrentKeyMaterialId, so the
//!   key version follows ListKeyRotations (which moto does fill on RotateKeyOnDemand).

mod common;

use aws_config::BehaviorVersion;
use aws_sdk_kms::Client;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::{ErrorKind, KeyEncryptionBackend, KeyVersion, WrappedKey};

use common::{backend, check_context_and_tampering_rejected, check_round_trip, seed};

struct Moto {
    endpoint: String,
    region: String,
    admin: Client,
}

impl Moto {
    async fn backend(&self, key: &str) -> AwsBackend {
        backend(key, Some(&self.endpoint), Some(&self.region)).await
    }

    /// A fresh key (ARN, key id) of the given usage and spec.
    async fn key_of(&self, usage: KeyUsageType, spec: KeySpec) -> (String, String) {
        let meta = self
            .admin
            .create_key()
            .description("polykms-aws test")
            .key_usage(usage)
            .key_spec(spec)
            .send()
            .await
            .expect("CreateKey")
            .key_metadata
            .expect("KeyMetadata");
        (meta.arn.expect("Arn"), meta.key_id)
    }

    async fn key(&self) -> (String, String) {
        self.key_of(KeyUsageType::EncryptDecrypt, KeySpec::SymmetricDefault)
            .await
    }
}

async fn moto(test: &str) -> Option<Moto> {
    let endpoint =
        common::env_or_skip("POLYKMS_AWS_ENDPOINT", "POLYKMS_REQUIRE_INTEGRATION", test)?;
    let region = std::env::var("POLYKMS_AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.clone()))
        .endpoint_url(&endpoint)
        .load()
        .await;
    Some(Moto {
        endpoint,
        region,
        admin: Client::new(&sdk),
    })
}

#[tokio::test]
async fn wrap_unwrap_round_trips_by_arn_alias_and_key_id() {
    let Some(m) = moto("wrap_unwrap_round_trips_by_arn_alias_and_key_id").await else {
        return;
    };
    let (arn, id) = m.key().await;
    let alias = format!("alias/polykms-{id}");
    m.admin
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&id)
        .send()
        .await
        .expect("CreateAlias");
    let by_arn = m.backend(&arn).await;
    let by_alias = m.backend(&alias).await;
    let by_id = m.backend(&id).await;
    let w = check_round_trip(&by_arn).await;
    check_round_trip(&by_alias).await;
    check_round_trip(&by_id).await;
    // One key, one version, whatever the configured form; each unwraps the others' wraps.
    assert_eq!(by_alias.key_version().await.unwrap(), w.key_version);
    assert_eq!(by_id.key_version().await.unwrap(), w.key_version);
    assert!(w.key_version.as_str().starts_with(&arn));
    assert_eq!(
        by_alias.unwrap(&w, b"polykms:v1:test").await.unwrap().len(),
        32
    );
    assert_eq!(
        by_id.unwrap(&w, b"polykms:v1:test").await.unwrap().len(),
        32
    );
}

#[tokio::test]
async fn unwrap_rejects_other_encryption_context() {
    let Some(m) = moto("unwrap_rejects_other_encryption_context").await else {
        return;
    };
    let (arn, _) = m.key().await;
    let b = m.backend(&arn).await;
    check_context_and_tampering_rejected(&b).await;

    // The configured context is part of the binding too.
    let mut cfg = AwsConfig::new(&arn);
    cfg.endpoint = Some(m.endpoint.clone());
    cfg.encryption_context
        .insert("cluster".into(), "prod-1".into());
    let with_ctx = AwsBackend::connect(&cfg).await.unwrap();
    let w = with_ctx.wrap(&seed(3), b"polykms:v1:test").await.unwrap();
    assert_eq!(
        b.unwrap(&w, b"polykms:v1:test").await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
    assert!(with_ctx.unwrap(&w, b"polykms:v1:test").await.is_ok());
}

#[tokio::test]
async fn unwrap_rejects_ciphertext_of_another_key() {
    let Some(m) = moto("unwrap_rejects_ciphertext_of_another_key").await else {
        return;
    };
    let (arn_a, _) = m.key().await;
    let (arn_b, _) = m.key().await;
    let a = m.backend(&arn_a).await;
    let b = m.backend(&arn_b).await;
    let w_b = b.wrap(&seed(4), b"x").await.unwrap();
    let err = a.unwrap(&w_b, b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");

    // Relabelled with A's version, it reaches KMS, and KMS (pinned to A) refuses it.
    let relabelled = WrappedKey::new(a.key_version().await.unwrap(), w_b.ciphertext.clone());
    let err = a.unwrap(&relabelled, b"x").await.unwrap_err();
    // moto: AccessDeniedException -> Unauthorized; real KMS: IncorrectKeyException -> WrongKey.
    assert!(
        matches!(err.kind(), ErrorKind::WrongKey | ErrorKind::Unauthorized),
        "{err}"
    );
}

#[tokio::test]
async fn disabled_key_fails_probe_and_recovers_when_enabled() {
    let Some(m) = moto("disabled_key_fails_probe_and_recovers_when_enabled").await else {
        return;
    };
    let (arn, id) = m.key().await;
    let b = m.backend(&arn).await;
    let healthy = b.probe().await.unwrap();
    m.admin
        .disable_key()
        .key_id(&id)
        .send()
        .await
        .expect("DisableKey");
    let err = b.probe().await.unwrap_err();
    assert_eq!(
        (err.kind(), err.is_retryable()),
        (ErrorKind::KeyUnavailable, false),
        "{err}"
    );
    assert!(err.message().contains("Disabled"), "{err}");
    // moto still encrypts with a disabled key; real KMS answers DisabledException.
    if let Err(e) = b.wrap(&seed(5), b"x").await {
        assert_eq!(e.kind(), ErrorKind::KeyUnavailable, "{e}");
    }
    m.admin
        .enable_key()
        .key_id(&id)
        .send()
        .await
        .expect("EnableKey");
    assert_eq!(b.probe().await.unwrap(), healthy);
}

#[tokio::test]
async fn key_pending_deletion_fails_probe_with_reason() {
    let Some(m) = moto("key_pending_deletion_fails_probe_with_reason").await else {
        return;
    };
    let (arn, id) = m.key().await;
    let b = m.backend(&arn).await;
    m.admin
        .schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(err.message().contains("pending deletion"), "{err}");
}

#[tokio::test]
async fn signing_and_asymmetric_keys_fail_probe() {
    let Some(m) = moto("signing_and_asymmetric_keys_fail_probe").await else {
        return;
    };
    let (sign, _) = m
        .key_of(KeyUsageType::SignVerify, KeySpec::EccNistP256)
        .await;
    let err = m.backend(&sign).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(err.message().contains("SIGN_VERIFY"), "{err}");
    let (rsa, _) = m
        .key_of(KeyUsageType::EncryptDecrypt, KeySpec::Rsa2048)
        .await;
    let err = m.backend(&rsa).await.probe().await.unwrap_err();
    assert!(err.message().contains("RSA_2048"), "{err}");
}

#[tokio::test]
async fn on_demand_rotation_changes_key_version_and_old_wraps_still_unwrap() {
    let name = "on_demand_rotation_changes_key_version_and_old_wraps_still_unwrap";
    let Some(m) = moto(name).await else { return };
    let (arn, id) = m.key().await;
    let b = m.backend(&arn).await;
    let before = b.probe().await.unwrap();
    assert_eq!(
        before,
        KeyVersion::new(&arn),
        "never rotated: the ARN alone"
    );
    let old = b.wrap(&seed(6), b"x").await.unwrap();

    m.admin
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .expect("RotateKeyOnDemand");
    let after = b.probe().await.unwrap();
    assert_ne!(after, before);
    assert!(
        after.as_str().starts_with(&format!("{arn}#rotated=")),
        "{after}"
    );
    // Stable: same answer again, and from a fresh backend (another node, a restart).
    assert_eq!(b.key_version().await.unwrap(), after);
    assert_eq!(m.backend(&arn).await.key_version().await.unwrap(), after);
    let new = b.wrap(&seed(6), b"x").await.unwrap();
    assert_eq!(new.key_version, after);
    assert!(b.unwrap(&old, b"x").await.is_ok());
    assert!(b.unwrap(&new, b"x").await.is_ok());
}

#[tokio::test]
async fn missing_key_connects_but_is_key_unavailable() {
    let Some(m) = moto("missing_key_connects_but_is_key_unavailable").await else {
        return;
    };
    let arn = format!(
        "arn:aws:kms:{}:123456789012:key/00000000-0000-0000-0000-000000000000",
        m.region
    );
    let b = m.backend(&arn).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    let err = b.wrap(&seed(7), b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
}

#[tokio::test]
async fn assumed_role_credentials_are_used_and_report_expiry() {
    let name = "assumed_role_credentials_are_used_and_report_expiry";
    let Some(m) = moto(name).await else { return };
    if std::env::var("AWS_ENDPOINT_URL_STS").is_err() {
        eprintln!("skipped {name}: AWS_ENDPOINT_URL_STS is not set (moto.sh sets it)");
        return;
    }
    let (arn, _) = m.key().await;
    let mut cfg = AwsConfig::new(&arn);
    cfg.endpoint = Some(m.endpoint.clone());
    cfg.assume_role_arn = Some("arn:aws:iam::123456789012:role/polykms-test".into());
    cfg.assume_role_session_name = Some("polykms-it".into());
    if polykms_backend::crypto::FIPS_BUILD {
        // STS AssumeRole would be signed outside the FIPS module: refused at config load.
        let err = AwsBackend::connect(&cfg).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.message().starts_with("assume_role_arn:"), "{err}");
        return;
    }
    let b = AwsBackend::connect(&cfg).await.unwrap();
    assert_eq!(
        b.credential_expiry(),
        None,
        "nothing fetched before the first call"
    );
    check_round_trip(&b).await;
    let expiry = b
        .credential_expiry()
        .expect("assumed-role credentials expire");
    assert!(expiry > std::time::SystemTime::now());
    assert!(b.describe().contains("polykms-test"), "{}", b.describe());
}
