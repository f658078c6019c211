//! Backend tests: key checks, config files, and calls against an in-process fake KMIP server
//! ([`fake`]) that answers in the wire shapes of a real one.

mod fake;
mod lifecycle;

use std::sync::Mutex;

use fake::Answer;

use super::*;
use crate::error::reason;
use crate::protocol::tag;

fn key(state: Option<u32>, mask: Option<i32>, algorithm: Option<u32>) -> KeyAttributes {
    KeyAttributes {
        uid: "7".into(),
        state,
        usage_mask: mask,
        algorithm,
        ..KeyAttributes::default()
    }
}

#[test]
fn only_active_aes_keys_that_encrypt_and_decrypt_are_usable() {
    check_usable(&key(
        Some(state::ACTIVE),
        Some(12),
        Some(protocol::ALGORITHM_AES),
    ))
    .unwrap();
    // Servers that leave out the mask or algorithm are taken at their State.
    check_usable(&key(Some(state::ACTIVE), None, None)).unwrap();
    let deactivated = check_usable(&key(Some(state::DEACTIVATED), Some(12), None)).unwrap_err();
    assert_eq!(deactivated.kind(), ErrorKind::KeyUnavailable);
    assert!(
        deactivated.message().contains("key 7 is Deactivated"),
        "{deactivated}"
    );
    let no_state = check_usable(&key(None, Some(12), None)).unwrap_err();
    assert_eq!(no_state.kind(), ErrorKind::KeyUnavailable);
    let encrypt_only = check_usable(&key(Some(state::ACTIVE), Some(4), None)).unwrap_err();
    assert_eq!(encrypt_only.kind(), ErrorKind::KeyUnavailable);
    assert!(
        encrypt_only.message().contains("Usage Mask 0x4"),
        "{encrypt_only}"
    );
    // 3DES (0x02) cannot do AES-GCM.
    let des = check_usable(&key(Some(state::ACTIVE), Some(12), Some(0x02))).unwrap_err();
    assert_eq!(des.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn building_reads_the_files_and_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let base = || KmipConfig {
        endpoint: "127.0.0.1:5696".into(),
        ca_file: None,
        also_trust_system_roots: false,
        client_cert_file: Some(dir.path().join("missing.pem")),
        client_key_file: Some(dir.path().join("missing.key")),
        tls_server_name: None,
        key_name: Some("kek".into()),
        key_uid: None,
        username_file: None,
        password_file: None,
        kmip_version: "1.4".into(),
        timeout_ms: 1000,
    };
    let e = KmipBackend::connect(&base()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().starts_with("client_cert_file"), "{e}");
    let mut c = base();
    c.client_cert_file = None;
    c.client_key_file = None;
    c.username_file = Some(dir.path().join("user"));
    std::fs::write(dir.path().join("user"), "svc\n").unwrap();
    c.ca_file = Some(dir.path().join("ca.pem"));
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let e = KmipBackend::connect(&c).await.unwrap_err();
    assert!(e.message().starts_with("ca_file"), "{e}");
    c.ca_file = None;
    std::fs::write(dir.path().join("user"), "\n").unwrap();
    let e = KmipBackend::connect(&c).await.unwrap_err();
    assert!(
        e.message().starts_with("username_file") && e.message().contains("empty"),
        "{e}"
    );
    std::fs::write(dir.path().join("user"), "svc\n").unwrap();
    let b = KmipBackend::connect(&c).await.unwrap();
    assert!(
        b.describe().contains("KMIP not negotiated yet"),
        "{}",
        b.describe()
    );
    assert_eq!(b.max_plaintext_len(), 1024);
}

/// A backend of the fake server at `address`, trusting `testdata/ca.pem` and, as the system's
/// roots, `testdata/system-ca.pem`.
fn fake_backend(address: &str, also_trust_system_roots: bool) -> KmipBackend {
    let config = KmipConfig {
        endpoint: address.into(),
        ca_file: Some(fake::testdata("ca.pem")),
        also_trust_system_roots,
        client_cert_file: Some(fake::testdata("client.pem")),
        client_key_file: Some(fake::testdata("client.key")),
        tls_server_name: None,
        key_name: None,
        key_uid: Some("1".into()),
        username_file: None,
        password_file: None,
        kmip_version: "1.4".into(),
        timeout_ms: 5000,
    };
    KmipBackend::build(&config, fake::system_roots).unwrap()
}

fn named(mut b: KmipBackend, name: &str) -> KmipBackend {
    b.selector = KeySelector::Name(name.into());
    b
}

/// An Active key "1" that encrypts and decrypts, the IV answered by `iv`.
fn key_server(
    iv: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> impl Fn(Operation, &ttlv::Ttlv) -> Answer + Send + Sync + 'static {
    move |op, payload| match op {
        Operation::GetAttributes => fake::attributes("1", Some(state::ACTIVE), 10),
        Operation::Encrypt => {
            fake::encrypted(payload, iv(&fake::bytes(payload, tag::IV_COUNTER_NONCE)))
        }
        Operation::Decrypt => fake::decrypted(payload),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_server_certificate_from_a_ca_outside_ca_file_is_refused_though_the_system_trusts_it() {
    let address = fake::start("server-system", key_server(|ours| Some(ours.to_vec()))).await;
    let b = fake_backend(&address, false);
    let e = b.key_version().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.message().contains("ca_file"), "{e}");
    assert!(b.describe().contains("ca.pem only"), "{}", b.describe());
    // Trusted when the operator asks for the system roots as well.
    let b = fake_backend(&address, true);
    assert_eq!(b.key_version().await.unwrap().as_str(), "1");
    assert!(b.describe().contains("+ system roots"), "{}", b.describe());
    // And a server certificate from ca_file's CA is trusted without them.
    let address = fake::start("server", key_server(|ours| Some(ours.to_vec()))).await;
    assert_eq!(
        fake_backend(&address, false)
            .key_version()
            .await
            .unwrap()
            .as_str(),
        "1"
    );
}

#[tokio::test]
async fn an_encrypt_answer_with_another_iv_than_ours_is_an_integrity_error() {
    let address = fake::start("server", key_server(|_| Some(vec![0u8; 12]))).await;
    let b = fake_backend(&address, false);
    let seed = SecretBytes::copy_from(&[3u8; 32]);
    let e = b.wrap(&seed, b"aad").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(!e.is_retryable());
    assert!(e.message().contains("IV"), "{e}");
    // The probe's canary is refused alike.
    assert_eq!(b.probe().await.unwrap_err().kind(), ErrorKind::Integrity);
}

#[tokio::test]
async fn an_encrypt_answer_with_our_iv_or_none_wraps_under_the_iv_polykms_sent() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    for echo in [true, false] {
        let seen = Arc::clone(&sent);
        let address = fake::start(
            "server",
            key_server(move |ours| {
                seen.lock().unwrap().push(ours.to_vec());
                echo.then(|| ours.to_vec())
            }),
        )
        .await;
        let b = fake_backend(&address, false);
        let seed = SecretBytes::copy_from(&[4u8; 32]);
        let wrapped = b.wrap(&seed, b"aad").await.unwrap();
        let wrap = GcmWrap::decode(&wrapped.ciphertext).unwrap();
        let last = sent.lock().unwrap().last().cloned().unwrap();
        assert_eq!(wrap.iv, last, "echo {echo}");
        assert_eq!(wrap.iv.len(), IV_LEN);
        assert_eq!(b.unwrap(&wrapped, b"aad").await.unwrap(), seed);
    }
    // A fresh IV per wrap.
    let ivs = sent.lock().unwrap();
    assert_ne!(ivs[0], ivs[1]);
}

/// Locate lists `uids`; "1" is Active, "2" has no State, "3" answers Permission Denied, "4"
/// is Deactivated, "5" answers Not Authorised. "2" to "5" are newer than "1".
fn candidates_server(uids: &'static [&'static str]) -> impl Fn(Operation, &ttlv::Ttlv) -> Answer {
    move |op, payload| match (op, fake::uid_or_empty(payload).as_str()) {
        (Operation::Locate, _) => fake::located(uids),
        (Operation::GetAttributes, "1") => fake::attributes("1", Some(state::ACTIVE), 10),
        (Operation::GetAttributes, "2") => fake::attributes("2", None, 20),
        (Operation::GetAttributes, "3") => {
            Answer::Failure(reason::PERMISSION_DENIED, "Permission denied")
        }
        (Operation::GetAttributes, "4") => fake::attributes("4", Some(state::DEACTIVATED), 40),
        (Operation::GetAttributes, "5") => Answer::Failure(reason::NOT_AUTHORISED, "no"),
        (other, uid) => panic!("unexpected {other:?} of {uid:?}"),
    }
}

#[tokio::test]
async fn key_lookup_by_name_skips_candidates_without_a_state_or_refused_and_keeps_the_active() {
    let address = fake::start("server", candidates_server(&["1", "2", "3", "4", "5"])).await;
    let b = named(fake_backend(&address, false), "kek");
    assert_eq!(b.key_version().await.unwrap().as_str(), "1");
}

#[tokio::test]
async fn key_lookup_with_no_usable_candidate_names_the_skipped_ones() {
    let address = fake::start("server", candidates_server(&["2", "3", "4"])).await;
    let b = named(fake_backend(&address, false), "kek");
    let e = b.key_version().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyUnavailable, "{e}");
    assert!(
        e.message()
            .contains("no Active symmetric key named \"kek\" on 127.0.0.1:")
            && e.message()
                .contains("(skipped: 2 (no State), 3 (Permission Denied), 4 (Deactivated))"),
        "{e}"
    );
}
