//! `AwsBackend` against a canned KMS endpoint: every error path goes through the real SDK.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kms::config::Credentials;
use polykms_backend::ErrorKind;

use super::*;
use crate::test_server::{self, Responder, error_body};

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER: &str = "arn:aws:kms:us-east-1:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab";
const SECRET: &str = "test-secret-access-key";

fn creds(expiry: Option<SystemTime>) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new("AKIDTEST", SECRET, None, expiry, "test"))
}

async fn backend_at(endpoint: &str, key: &str) -> AwsBackend {
    let mut cfg = AwsConfig::new(key);
    cfg.region = Some("us-east-1".into());
    cfg.endpoint = Some(endpoint.into());
    cfg.max_attempts = 1;
    cfg.timeout_ms = 800;
    cfg.connect_timeout_ms = 300;
    AwsBackend::connect_with(&cfg, Some(creds(None)))
        .await
        .unwrap()
}

fn describe_ok(extra: &str) -> String {
    format!(
        r#"{{"KeyMetadata":{{"KeyId":"1234abcd-12ab-34cd-56ef-1234567890ab","Arn":"{ARN}",
        "Enabled":true,"KeyState":"Enabled","KeyUsage":"ENCRYPT_DECRYPT",
        "KeySpec":"SYMMETRIC_DEFAULT"{extra}}}}}"#
    )
}

fn responder(f: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static) -> Responder {
    Arc::new(f)
}

fn wrapped(version: &str) -> WrappedKey {
    WrappedKey::new(KeyVersion::new(version), vec![1u8; 64])
}

#[tokio::test]
async fn every_listed_kms_error_is_classified_through_the_sdk() {
    let cases = [
        ("ThrottlingException", 400, ErrorKind::Unavailable, true),
        ("KMSInternalException", 500, ErrorKind::Unavailable, true),
        ("DependencyTimeoutException", 503, ErrorKind::Timeout, true),
        (
            "InvalidCiphertextException",
            400,
            ErrorKind::WrongKey,
            false,
        ),
        ("IncorrectKeyException", 400, ErrorKind::WrongKey, false),
        ("AccessDeniedException", 400, ErrorKind::Unauthorized, false),
        ("DisabledException", 400, ErrorKind::KeyUnavailable, false),
        (
            "KMSInvalidStateException",
            400,
            ErrorKind::KeyUnavailable,
            false,
        ),
        ("NotFoundException", 400, ErrorKind::KeyUnavailable, false),
    ];
    for (code, status, kind, retryable) in cases {
        let kms = test_server::serve(responder(move |_, _| (status, error_body(code, "no")))).await;
        let b = backend_at(&kms.endpoint, ARN).await;
        let err = b.unwrap(&wrapped(ARN), b"aad").await.unwrap_err();
        assert_eq!(
            (err.kind(), err.is_retryable()),
            (kind, retryable),
            "{code}: {err}"
        );
        assert!(err.message().contains(code), "{err}");
        let err = b
            .wrap(&SecretBytes::copy_from(&[7; 32]), b"aad")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "Encrypt {code}: {err}");
    }
}

#[tokio::test]
async fn gateway_errors_without_kms_body_are_retryable() {
    let kms = test_server::serve(responder(|_, _| (502, "<html>bad gateway</html>".into()))).await;
    let err = backend_at(&kms.endpoint, ARN)
        .await
        .probe()
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.is_retryable()),
        (ErrorKind::Unavailable, true),
        "{err}"
    );
}

#[tokio::test]
async fn dead_endpoint_is_unavailable_quickly() {
    let b = backend_at(&test_server::closed_port().await, ARN).await;
    let t = Instant::now();
    let err = b.probe().await.unwrap_err();
    assert_eq!(
        (err.kind(), err.is_retryable()),
        (ErrorKind::Unavailable, true),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn silent_endpoint_times_out_within_timeout() {
    let b = backend_at(&test_server::blackhole().await, ARN).await;
    let t = Instant::now();
    let err = b
        .wrap(&SecretBytes::copy_from(&[1; 32]), b"a")
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.is_retryable()),
        (ErrorKind::Timeout, true),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn unwrap_refuses_version_of_another_key_without_calling_kms() {
    let kms = test_server::serve(responder(|_, _| (500, String::new()))).await;
    let b = backend_at(&kms.endpoint, ARN).await;
    let err = b
        .unwrap(&wrapped(&format!("{OTHER}#material=m")), b"a")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    assert!(kms.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn kms_answer_naming_another_key_is_refused() {
    let kms = test_server::serve(responder(|op, _| match op {
        "Decrypt" => (200, format!(r#"{{"KeyId":"{OTHER}","Plaintext":"AAAA"}}"#)),
        _ => (
            200,
            format!(r#"{{"KeyId":"{OTHER}","CiphertextBlob":"AAAA"}}"#),
        ),
    }))
    .await;
    let b = backend_at(&kms.endpoint, ARN).await;
    let err = b.unwrap(&wrapped(ARN), b"a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    let err = b
        .wrap(&SecretBytes::copy_from(&[1; 32]), b"a")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
}

#[tokio::test]
async fn wrap_records_current_key_material_and_caches_it() {
    let kms = test_server::serve(responder(|op, body| match op {
        "DescribeKey" => (200, describe_ok(r#","CurrentKeyMaterialId":"m-1""#)),
        "Encrypt" => {
            assert!(body.contains(r#""polykms:aad":"polykms:v1:p""#), "{body}");
            (
                200,
                format!(r#"{{"KeyId":"{ARN}","CiphertextBlob":"c2VhbGVk"}}"#),
            )
        }
        other => (400, error_body("UnknownOperationException", other)),
    }))
    .await;
    let b = backend_at(&kms.endpoint, "alias/k").await;
    let seed = SecretBytes::copy_from(&[3; 32]);
    let w = b.wrap(&seed, b"polykms:v1:p").await.unwrap();
    assert_eq!(w.key_version.as_str(), format!("{ARN}#material=m-1"));
    assert_eq!(w.ciphertext, b"sealed");
    b.wrap(&seed, b"polykms:v1:p").await.unwrap();
    assert_eq!(
        *kms.calls.lock().unwrap(),
        ["Encrypt", "DescribeKey", "Encrypt"]
    );
}

#[tokio::test]
async fn refused_rotation_listing_falls_back_to_key_arn() {
    let kms = test_server::serve(responder(|op, _| match op {
        "DescribeKey" => (200, describe_ok("")),
        _ => (400, error_body("AccessDeniedException", "not allowed")),
    }))
    .await;
    let b = backend_at(&kms.endpoint, ARN).await;
    assert_eq!(b.probe().await.unwrap().as_str(), ARN);
    assert_eq!(b.key_version().await.unwrap().as_str(), ARN);
}

#[tokio::test]
async fn throttled_rotation_listing_is_an_error_not_a_guess() {
    let kms = test_server::serve(responder(|op, _| match op {
        "DescribeKey" => (200, describe_ok("")),
        _ => (400, error_body("ThrottlingException", "slow down")),
    }))
    .await;
    let err = backend_at(&kms.endpoint, ARN)
        .await
        .probe()
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.is_retryable()),
        (ErrorKind::Unavailable, true),
        "{err}"
    );
}

#[tokio::test]
async fn rotation_listing_follows_pages_to_the_newest_rotation() {
    let kms = test_server::serve(responder(|op, body| match op {
        "DescribeKey" => (200, describe_ok("")),
        _ if body.contains("\"Marker\"") => (
            200,
            r#"{"Rotations":[{"RotationDate":200.5}],"Truncated":false}"#.into(),
        ),
        _ => (
            200,
            r#"{"Rotations":[{"RotationDate":100}],"Truncated":true,"NextMarker":"p2"}"#.into(),
        ),
    }))
    .await;
    let v = backend_at(&kms.endpoint, ARN).await.probe().await.unwrap();
    assert_eq!(v.as_str(), format!("{ARN}#rotated=200.500000000"));
}

#[tokio::test]
async fn disabled_key_fails_the_probe_with_its_state() {
    let kms = test_server::serve(responder(|_, _| {
        (
            200,
            describe_ok("").replace(r#""KeyState":"Enabled""#, r#""KeyState":"Disabled""#),
        )
    }))
    .await;
    let err = backend_at(&kms.endpoint, ARN)
        .await
        .probe()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(err.message().contains("Disabled"), "{err}");
}

#[tokio::test]
async fn bad_sizes_are_refused_without_calling_kms() {
    let kms = test_server::serve(responder(|_, _| (500, String::new()))).await;
    let b = backend_at(&kms.endpoint, ARN).await;
    for p in [vec![], vec![0u8; 4097]] {
        let err = b.wrap(&SecretBytes::new(p), b"a").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    for c in [vec![], vec![0u8; 6145]] {
        let err = b
            .unwrap(&WrappedKey::new(KeyVersion::new(ARN), c), b"a")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }
    assert!(kms.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn credential_expiry_is_that_of_the_credentials_in_use() {
    let kms = test_server::serve(responder(|_, _| {
        (200, describe_ok(r#","CurrentKeyMaterialId":"m""#))
    }))
    .await;
    let mut cfg = AwsConfig::new(ARN);
    cfg.endpoint = Some(kms.endpoint.clone());
    let at = SystemTime::now() + Duration::from_secs(3600);
    let b = AwsBackend::connect_with(&cfg, Some(creds(Some(at))))
        .await
        .unwrap();
    assert_eq!(b.credential_expiry(), None);
    b.probe().await.unwrap();
    assert_eq!(b.credential_expiry(), Some(at));
}

#[tokio::test]
async fn describe_and_debug_name_the_key_and_no_secret() {
    let b = backend_at("http://127.0.0.1:9", ARN).await;
    let line = b.describe();
    assert!(
        line.contains(ARN) && line.contains("us-east-1") && line.contains("127.0.0.1:9"),
        "{line}"
    );
    let dbg = format!("{b:?}");
    assert!(!dbg.contains(SECRET) && !line.contains(SECRET), "{dbg}");
}

#[tokio::test]
async fn lifecycle_reads_the_probes_describe_key_instead_of_calling_again() {
    let kms = test_server::serve(responder(|_, _| {
        let pending = describe_ok(r#","DeletionDate":1800000000"#)
            .replace(r#""KeyState":"Enabled""#, r#""KeyState":"PendingDeletion""#);
        (200, pending)
    }))
    .await;
    let b = backend_at(&kms.endpoint, ARN).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    let l = b.key_lifecycle(&[KeyVersion::new(ARN)]).await.unwrap();
    let f = l.blocking().expect("pending deletion stops wraps");
    assert_eq!(f.key, ARN);
    assert_eq!(
        f.at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    );
    assert!(f.to_string().contains("CancelKeyDeletion"), "{f}");
    assert_eq!(*kms.calls.lock().unwrap(), ["DescribeKey"]);
    // Without a probe just before, the lifecycle read asks KMS itself.
    b.key_lifecycle(&[]).await.unwrap();
    assert_eq!(*kms.calls.lock().unwrap(), ["DescribeKey", "DescribeKey"]);
}

#[tokio::test]
async fn enabled_key_has_an_empty_lifecycle() {
    let kms = test_server::serve(responder(|_, _| (200, describe_ok("")))).await;
    let b = backend_at(&kms.endpoint, ARN).await;
    assert_eq!(
        b.key_lifecycle(&[]).await.unwrap(),
        polykms_backend::KeyLifecycle::default()
    );
}

#[tokio::test]
async fn refused_describe_key_is_a_classified_lifecycle_error() {
    let kms = test_server::serve(responder(|_, _| {
        (
            400,
            error_body("AccessDeniedException", "no kms:DescribeKey"),
        )
    }))
    .await;
    let b = backend_at(&kms.endpoint, ARN).await;
    let err = b.key_lifecycle(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("DescribeKey"), "{err}");
    // A probe that could not read the key leaves nothing to reuse but its error.
    b.probe().await.unwrap_err();
    let err = b.key_lifecycle(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert_eq!(
        kms.calls.lock().unwrap().len(),
        2,
        "the probe's error is reused"
    );
}
