//! The vault backend's TLS against a server offering only a non-approved cipher suite
//! (ChaCha20-Poly1305): a FIPS build fails the handshake and says so in the error the health
//! prober reports; other builds get past TLS. No OpenBao needed: the server behind the TLS relay
//! answers every request with a 503.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polykms_backend::KeyEncryptionBackend;
use polykms_backend::crypto::FIPS_BUILD;
use polykms_net::testing::TlsRelay;
use polykms_vault::{AuthConfig, VaultConfig};
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn net_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../net/testdata")
        .join(name)
}

fn chacha_only_server() -> rustls::ServerConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let certs = CertificateDer::pem_file_iter(net_testdata("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(net_testdata("server.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

#[tokio::test]
async fn a_fips_build_reports_the_failed_handshake_against_non_approved_suites() {
    let relay = TlsRelay::start_with(
        chacha_only_server(),
        polykms_net::testing::canned_origin(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s.test").unwrap();
    let mut network = polykms_net::NetworkConfig {
        ca_file: Some(net_testdata("ca.pem")),
        proxy: Some(String::new()),
        ..Default::default()
    };
    network.no_proxy = None;
    let config = VaultConfig {
        address: relay.url(),
        mount: "transit".into(),
        key: "k".into(),
        namespace: None,
        network,
        client_cert_file: None,
        client_key_file: None,
        tls_server_name: None,
        timeout_ms: 2000,
        allow_key_without_aad: false,
        auth: AuthConfig::Token {
            token_file: Some(token),
            token_env: None,
        },
    };
    let backend = polykms_vault::VaultBackend::connect(&config)
        .await
        .expect("connect builds the client without the network");
    let err = backend.probe().await.unwrap_err();
    let message = err.to_string().to_lowercase();
    if FIPS_BUILD {
        assert!(message.contains("handshake"), "{err}");
    } else {
        assert!(!message.contains("handshake"), "{err}");
    }
}
