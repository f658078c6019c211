//! The reqwest helper's own rustls config against local TLS servers (the test CA in
//! `testdata/`): roots, client certificates, and what a FIPS build refuses to negotiate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polykms_net::testing::TlsRelay;
use polykms_net::tls::{ClientIdentity, Trust};
use polykms_net::{CaRoots, NetworkConfig};
use rustls::crypto::aws_lc_rs::cipher_suite;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// A TLS server config with the test certificate, the given suites, and optionally requiring
/// a client certificate from the test CA.
fn server_config(
    suites: Vec<rustls::SupportedCipherSuite>,
    require_client_cert: bool,
) -> rustls::ServerConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = suites;
    let provider = Arc::new(provider);
    let certs = CertificateDer::pem_file_iter(testdata("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(testdata("server.key")).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(testdata("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).unwrap()
}

fn approved_suites() -> Vec<rustls::SupportedCipherSuite> {
    vec![
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ]
}

fn client(
    ca_file: Option<PathBuf>,
    trust: Trust,
    identity: Option<ClientIdentity>,
) -> Result<reqwest::Client, String> {
    let network = NetworkConfig {
        ca_file,
        proxy: Some(String::new()),
        ..Default::default()
    }
    .resolve_with(|_| None)
    .map_err(|e| e.to_string())?;
    polykms_net::reqwest_client::configure(
        reqwest::Client::builder(),
        &network,
        trust,
        identity,
        "test client",
    )
    .map_err(|e| e.to_string())?
    .build()
    .map_err(|e| e.to_string())
}

/// The whole error chain of a failed request (reqwest keeps the TLS cause in `source()`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    match client.get(url).send().await {
        Ok(r) => r.text().await.map_err(|e| chain(&e)),
        Err(e) => Err(chain(&e)),
    }
}

#[tokio::test]
async fn ca_file_is_trusted_alone_or_beside_the_system_roots() {
    let relay = TlsRelay::start_with(
        server_config(approved_suites(), false),
        polykms_net::testing::origin().await,
    )
    .await
    .unwrap();
    for roots in [CaRoots::Only, CaRoots::AddToSystem] {
        let c = client(Some(testdata("ca.pem")), Trust::System(roots), None).unwrap();
        assert_eq!(get(&c, &relay.url()).await.unwrap(), "origin", "{roots:?}");
    }
    let c = client(Some(testdata("ca.pem")), Trust::NoSystem, None).unwrap();
    assert_eq!(get(&c, &relay.url()).await.unwrap(), "origin");
}

#[tokio::test]
async fn a_server_outside_the_trusted_roots_is_refused() {
    let relay = TlsRelay::start_with(
        server_config(approved_suites(), false),
        polykms_net::testing::origin().await,
    )
    .await
    .unwrap();
    let c = client(None, Trust::NoSystem, None).unwrap();
    let err = get(&c, &relay.url()).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn the_client_certificate_is_presented_when_configured() {
    let relay = TlsRelay::start_with(
        server_config(approved_suites(), true),
        polykms_net::testing::origin().await,
    )
    .await
    .unwrap();
    let identity = ClientIdentity::from_pem(
        "client_cert_file",
        &std::fs::read(testdata("client.pem")).unwrap(),
        &std::fs::read(testdata("client.key")).unwrap(),
    )
    .unwrap();
    let with = client(Some(testdata("ca.pem")), Trust::NoSystem, Some(identity)).unwrap();
    assert_eq!(get(&with, &relay.url()).await.unwrap(), "origin");
    let without = client(Some(testdata("ca.pem")), Trust::NoSystem, None).unwrap();
    get(&without, &relay.url()).await.unwrap_err();
}

/// A server that offers ChaCha20-Poly1305 only (TLS 1.3 and 1.2): not FIPS-approved. The
/// default build connects; a FIPS build's client offers AES-GCM only and the handshake fails.
#[tokio::test]
async fn a_server_offering_only_non_approved_suites_is_refused_in_a_fips_build() {
    let suites = vec![
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let relay = TlsRelay::start_with(
        server_config(suites, false),
        polykms_net::testing::origin().await,
    )
    .await
    .unwrap();
    let c = client(Some(testdata("ca.pem")), Trust::NoSystem, None).unwrap();
    let result = get(&c, &relay.url()).await;
    if polykms_backend::crypto::FIPS_BUILD {
        let err = result.unwrap_err();
        assert!(err.to_lowercase().contains("handshake"), "{err}");
    } else {
        assert_eq!(result.unwrap(), "origin");
    }
}
