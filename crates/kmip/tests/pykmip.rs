//! Against a real PyKMIP server over mutual TLS, started by `integration/servers/kmip.sh start`:
//! `source integration/.run/kmip.env && cargo test -p polykms-kmip --test pykmip`.
//! Keys are created, activated, revoked and destroyed with PyKMIP's own client.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes, WrappedKey};

use common::{Instance, env, free_port, unique};

const AAD: &[u8] = b"polykms:v1:test-cluster";

fn seed(byte: u8) -> SecretBytes {
    SecretBytes::copy_from(&[byte; 32])
}

#[tokio::test]
async fn round_trips_under_the_named_key_and_reports_its_unique_identifier() {
    let Some(e) = env("round_trips_under_the_named_key_and_reports_its_unique_identifier") else {
        return;
    };
    let name = unique("rt");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    assert!(
        b.describe().contains("not negotiated yet"),
        "{}",
        b.describe()
    );
    let version = b.probe().await.unwrap();
    assert_eq!(version.as_str(), uid);
    let wrapped = b.wrap(&seed(7), AAD).await.unwrap();
    assert_eq!(wrapped.key_version, version);
    // format + IV + tag + 32 bytes of ciphertext: the key never left the server.
    assert_eq!(wrapped.ciphertext.len(), 1 + 1 + 12 + 1 + 16 + 32);
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(7));
    let text = b.describe();
    assert!(
        text.contains(&e.endpoint) && text.contains("KMIP 1.4") && text.contains(&name),
        "{text}"
    );
}

#[tokio::test]
async fn pykmip_client_decrypts_our_wraps_and_we_unwrap_its_encryptions() {
    let Some(e) = env("pykmip_client_decrypts_our_wraps_and_we_unwrap_its_encryptions") else {
        return;
    };
    let name = unique("conformance");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    // Ours, decrypted by an independent KMIP client with the same IV, tag and AAD.
    let wrapped = b.wrap(&seed(3), AAD).await.unwrap();
    let plain = e.admin(&[
        "decrypt",
        &uid,
        &hex::encode(&wrapped.ciphertext),
        &hex::encode(AAD),
    ]);
    assert_eq!(plain, hex::encode([3u8; 32]));
    // Under another AAD the independent client is refused too: the AAD is bound server-side.
    let out = std::process::Command::new(&e.python)
        .arg(&e.admin)
        .args(["decrypt", &uid, &hex::encode(&wrapped.ciphertext), "00"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Theirs, unwrapped by us.
    let theirs = e.admin(&["encrypt", &uid, &hex::encode([9u8; 32]), &hex::encode(AAD)]);
    let wrapped = WrappedKey::new(wrapped.key_version, hex::decode(theirs).unwrap());
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(9));
}

#[tokio::test]
async fn ciphertexts_are_bound_to_the_aad() {
    let Some(e) = env("ciphertexts_are_bound_to_the_aad") else {
        return;
    };
    let name = unique("aad");
    e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    let wrapped = b.wrap(&seed(1), AAD).await.unwrap();
    for other in [&b"polykms:v1:other-cluster"[..], b""] {
        let err = b.unwrap(&wrapped, other).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
        assert!(!err.is_retryable());
    }
    // Wrapped without AAD, unwrapped with one: refused as well.
    let bare = b.wrap(&seed(2), b"").await.unwrap();
    assert_eq!(b.unwrap(&bare, b"").await.unwrap(), seed(2));
    assert_eq!(
        b.unwrap(&bare, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn tampered_wraps_are_refused() {
    let Some(e) = env("tampered_wraps_are_refused") else {
        return;
    };
    let name = unique("tamper");
    e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    let wrapped = b.wrap(&seed(5), AAD).await.unwrap();
    let n = wrapped.ciphertext.len();
    // One flipped bit in the IV, the tag, the first and the last ciphertext byte.
    for at in [2, 1 + 1 + 12 + 1, n - 32, n - 1] {
        let mut bad = wrapped.clone();
        bad.ciphertext[at] ^= 0x01;
        let err = b.unwrap(&bad, AAD).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongKey, "byte {at}: {err}");
    }
    // Structurally broken wraps never reach the server.
    let mut short = wrapped.clone();
    short.ciphertext.truncate(10);
    assert_eq!(
        b.unwrap(&short, AAD).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // The original still decrypts.
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(5));
}

#[tokio::test]
async fn a_newer_active_key_under_the_same_name_rotates_and_old_wraps_still_unwrap() {
    let Some(e) = env("a_newer_active_key_under_the_same_name_rotates_and_old_wraps_still_unwrap")
    else {
        return;
    };
    let name = unique("rotate");
    let first = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    assert_eq!(b.probe().await.unwrap().as_str(), first);
    let old = b.wrap(&seed(1), AAD).await.unwrap();
    // PyKMIP keeps no Activation Date; its Initial Dates have one-second resolution, so the
    // newer key is also told apart by its greater Unique Identifier.
    let second = e.create_key(&name);
    assert_ne!(first, second);
    assert_eq!(b.probe().await.unwrap().as_str(), second);
    let new = b.wrap(&seed(2), AAD).await.unwrap();
    assert_eq!(new.key_version.as_str(), second);
    assert_eq!(b.unwrap(&old, AAD).await.unwrap(), seed(1));
    assert_eq!(b.unwrap(&new, AAD).await.unwrap(), seed(2));
    // Revoking the newer key hands wrapping back to the older one at the next probe.
    e.admin(&["revoke", &second]);
    assert_eq!(b.probe().await.unwrap().as_str(), first);
}

#[tokio::test]
async fn a_pinned_key_uid_does_not_follow_newer_keys() {
    let Some(e) = env("a_pinned_key_uid_does_not_follow_newer_keys") else {
        return;
    };
    let name = unique("pinned");
    let uid = e.create_key(&name);
    let mut c = e.config(&name);
    c.key_name = None;
    c.key_uid = Some(uid.clone());
    let b = e.backend(&c).await;
    e.create_key(&name);
    assert_eq!(b.probe().await.unwrap().as_str(), uid);
    assert!(b.describe().contains(&format!("key_uid {uid:?}")));
    let w = b.wrap(&seed(4), AAD).await.unwrap();
    assert_eq!(w.key_version.as_str(), uid);
}

#[tokio::test]
async fn a_revoked_key_is_unhealthy_and_its_wraps_fail_as_key_unavailable() {
    let Some(e) = env("a_revoked_key_is_unhealthy_and_its_wraps_fail_as_key_unavailable") else {
        return;
    };
    let name = unique("revoke");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    b.probe().await.unwrap();
    let wrapped = b.wrap(&seed(6), AAD).await.unwrap();
    e.admin(&["revoke", &uid]);
    let probe = b.probe().await.unwrap_err();
    assert_eq!(probe.kind(), ErrorKind::KeyUnavailable, "{probe}");
    assert!(probe.message().contains(&name), "{probe}");
    // PyKMIP refuses Decrypt with a Deactivated key (KMIP would allow it): the State names why.
    let err = b.unwrap(&wrapped, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(
        err.message().contains(&uid) && err.message().contains("Deactivated"),
        "{err}"
    );
    let err = b.wrap(&seed(6), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
}

#[tokio::test]
async fn a_destroyed_or_compromised_key_fails_as_key_unavailable_naming_the_version() {
    let Some(e) = env("a_destroyed_or_compromised_key_fails_as_key_unavailable_naming_the_version")
    else {
        return;
    };
    let name = unique("destroy");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    let wrapped = b.wrap(&seed(8), AAD).await.unwrap();
    e.admin(&["destroy", &uid]);
    let err = b.unwrap(&wrapped, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains(&uid), "{err}");
    assert_eq!(
        b.probe().await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );

    let name = unique("compromise");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    let wrapped = b.wrap(&seed(8), AAD).await.unwrap();
    e.admin(&["compromise", &uid]);
    let err = b.unwrap(&wrapped, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("Compromised"), "{err}");
}

#[tokio::test]
async fn another_tenants_certificate_sees_no_key_and_is_not_allowed_a_pinned_one() {
    let Some(e) = env("another_tenants_certificate_sees_no_key_and_is_not_allowed_a_pinned_one")
    else {
        return;
    };
    let name = unique("tenant");
    let uid = e.create_key(&name);
    let mut c = e.config(&name);
    c.client_cert_file = Some(e.other_cert.clone());
    c.client_key_file = Some(e.other_key.clone());
    let by_name = e.backend(&c).await;
    let err = by_name.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    c.key_name = None;
    c.key_uid = Some(uid);
    let pinned = e.backend(&c).await;
    let err = pinned.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_client_certificate_from_an_unknown_ca_is_a_clean_unauthorized_error() {
    let Some(e) = env("a_client_certificate_from_an_unknown_ca_is_a_clean_unauthorized_error")
    else {
        return;
    };
    let mut c = e.config("polykms");
    c.client_cert_file = Some(e.rogue_cert.clone());
    c.client_key_file = Some(e.rogue_key.clone());
    let b = e.backend(&c).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("client certificate"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_server_limited_to_kmip_1_3_is_reported_precisely() {
    let Some(e) = env("a_server_limited_to_kmip_1_3_is_reported_precisely") else {
        return;
    };
    let mut c = e.config(&std::env::var("POLYKMS_KMIP_KEY").unwrap_or("polykms".into()));
    c.kmip_version = "1.3".into();
    let b = e.backend(&c).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("needs KMIP 1.4"), "{err}");
    assert!(b.describe().contains("KMIP 1.3"), "{}", b.describe());
}

#[tokio::test]
async fn a_username_and_password_credential_is_sent_and_accepted() {
    let Some(e) = env("a_username_and_password_credential_is_sent_and_accepted") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("user"), "svc-polykms\n").unwrap();
    std::fs::write(dir.path().join("password"), "s3cret\n").unwrap();
    let name = unique("cred");
    e.create_key(&name);
    let mut c = e.config(&name);
    c.username_file = Some(dir.path().join("user"));
    c.password_file = Some(dir.path().join("password"));
    let b = e.backend(&c).await;
    let w = b.wrap(&seed(1), AAD).await.unwrap();
    assert_eq!(b.unwrap(&w, AAD).await.unwrap(), seed(1));
    assert!(!format!("{b:?} {}", b.describe()).contains("s3cret"));
}

#[tokio::test]
async fn nothing_listening_is_a_quick_retryable_unavailable() {
    let Some(e) = env("nothing_listening_is_a_quick_retryable_unavailable") else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = e.config("polykms");
    c.endpoint = format!("127.0.0.1:{port}");
    let err = e.backend(&c).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_clients_share_the_pool() {
    let Some(e) = env("thirty_two_concurrent_clients_share_the_pool") else {
        return;
    };
    let name = unique("load");
    e.create_key(&name);
    let b = Arc::new(e.backend(&e.config(&name)).await);
    b.probe().await.unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..32u8)
        .map(|i| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for round in 0..3u8 {
                    let s = seed(i.wrapping_mul(7).wrapping_add(round));
                    let w = b.wrap(&s, AAD).await?;
                    let back = b.unwrap(&w, AAD).await?;
                    assert_eq!(back, s);
                }
                Ok::<_, polykms_backend::BackendError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eprintln!("192 round trips in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_server_stopped_and_restarted_is_unhealthy_then_healthy_without_a_restart() {
    let Some(e) = env("a_server_stopped_and_restarted_is_unhealthy_then_healthy_without_a_restart")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Instance::start(&e, port, dir.path(), "server");
    let uid = e.admin_at(Some(&server.endpoint), &["create", "restart"]);
    let mut c = e.config("restart");
    c.endpoint = server.endpoint.clone();
    c.timeout_ms = 1500;
    let b = e.backend(&c).await;
    assert_eq!(b.probe().await.unwrap().as_str(), uid);
    let before = b.wrap(&seed(1), AAD).await.unwrap();

    server.stop();
    let err = b.probe().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(b.unwrap(&before, AAD).await.unwrap_err().is_retryable());

    // The same database: the key survives; the backend reconnects by itself.
    let server = Instance::start(&e, port, dir.path(), "server");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match b.probe().await {
            Ok(v) => {
                assert_eq!(v.as_str(), uid);
                break;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "not healthy again: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(b.unwrap(&before, AAD).await.unwrap(), seed(1));
    server.stop();
}
