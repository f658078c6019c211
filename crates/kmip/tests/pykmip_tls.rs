//! TLS against a real PyKMIP server (`integration/servers/kmip.sh start`): which server
//! certificates are trusted, and what a handshake the server refuses says.
//! `source integration/.run/kmip.env && cargo test -p polykms-kmip --test pykmip_tls`.

mod common;

use polykms_backend::{ErrorKind, KeyEncryptionBackend};

use common::{Instance, env, free_port};

/// Set in the child process that the trust test runs itself in (see below).
const CHILD: &str = "POLYKMS_KMIP_TEST_SYSTEM_ROOTS_CHILD";

#[tokio::test]
async fn a_server_certificate_outside_ca_file_is_refused() {
    let Some(e) = env("a_server_certificate_outside_ca_file_is_refused") else {
        return;
    };
    let mut c = e.config("polykms");
    c.ca_file = Some(e.rogue_cert.with_file_name("rogue-ca.pem"));
    let err = e.backend(&c).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("ca_file"), "{err}");
    // The certificate names 127.0.0.1 and localhost, nothing else.
    let mut c = e.config("polykms");
    c.tls_server_name = Some("kmip.example".into());
    let err = e.backend(&c).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}

/// With ca_file, that CA alone is trusted, even when the system trusts the server's CA. The
/// server's CA is made a system root through `SSL_CERT_FILE`; the environment is the whole
/// process's, so the test runs again in a child process of this binary with it set.
#[tokio::test]
async fn a_server_certificate_from_a_system_trusted_ca_outside_ca_file_is_refused() {
    const NAME: &str = "a_server_certificate_from_a_system_trusted_ca_outside_ca_file_is_refused";
    let Some(e) = env(NAME) else {
        return;
    };
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env("SSL_CERT_FILE", &e.ca)
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let mut c = e.config("polykms");
    c.ca_file = Some(e.rogue_cert.with_file_name("rogue-ca.pem"));
    let err = e.backend(&c).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("ca_file"), "{err}");
    // Asked for, the system roots (here: the server's CA) are trusted as well.
    c.also_trust_system_roots = true;
    let b = e.backend(&c).await;
    b.probe().await.unwrap();
    assert!(b.describe().contains("+ system roots"), "{}", b.describe());
}

/// PyKMIP's TLS 1.2 suites with an RSA server certificate are RSA key exchange and CBC only:
/// none that polykms offers, so PyKMIP refuses the handshake.
#[tokio::test]
async fn a_server_offering_no_suite_of_ours_is_a_config_error_naming_what_polykms_offers() {
    let Some(e) =
        env("a_server_offering_no_suite_of_ours_is_a_config_error_naming_what_polykms_offers")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Instance::start(&e, free_port(), dir.path(), "server-rsa");
    let mut c = e.config("polykms");
    c.endpoint = server.endpoint.clone();
    let err = e.backend(&c).await.probe().await.unwrap_err();
    server.stop();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());
    for said in [
        "HandshakeFailure",
        "TLS 1.2",
        "ECDHE",
        "AES-GCM",
        "ChaCha20",
        "server side",
    ] {
        assert!(err.message().contains(said), "{said}: {err}");
    }
}
