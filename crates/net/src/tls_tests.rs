use std::path::Path;

use super::*;
use crate::NetworkConfig;

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn network_with_ca() -> Network {
    NetworkConfig {
        ca_file: Some(testdata("ca.pem")),
        ..Default::default()
    }
    .resolve_with(|_| None)
    .unwrap()
}

/// A config on aws-lc-rs' full default provider: never FIPS, whatever the build (in a FIPS
/// build the non-approved ChaCha20 suites make it so).
fn non_fips_config() -> ClientConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES.to_vec();
    ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

#[test]
fn the_provider_is_fips_exactly_in_a_fips_build() {
    assert_eq!(provider().fips(), FIPS_BUILD);
    let config = client_config(&Network::direct(), Trust::NoSystem, None, &[], "t").unwrap();
    assert_eq!(config.fips(), FIPS_BUILD);
}

#[test]
fn a_fips_build_refuses_a_non_fips_config_naming_the_client() {
    let config = non_fips_config();
    assert!(!config.fips());
    let err = require_fips_in(&config, "vault backend", true).unwrap_err();
    assert_eq!(err.field, "tls");
    assert!(err.reason.starts_with("vault backend:"), "{err}");
    assert!(err.reason.contains("fips() is false"), "{err}");
    require_fips_in(&config, "vault backend", false).unwrap();
    assert_eq!(require_fips(&config, "x").is_ok(), !FIPS_BUILD);
}

#[test]
fn a_fips_build_refuses_a_missing_or_non_fips_default_provider() {
    check_default_fips(Some(true), "etcd client", true).unwrap();
    let err = check_default_fips(Some(false), "etcd client", true).unwrap_err();
    assert!(err.reason.starts_with("etcd client:"), "{err}");
    assert!(err.reason.contains("not the FIPS one"), "{err}");
    let err = check_default_fips(None, "etcd client", true).unwrap_err();
    assert!(err.reason.contains("no process-default"), "{err}");
    for default in [None, Some(false), Some(true)] {
        check_default_fips(default, "etcd client", false).unwrap();
    }
}

#[test]
fn install_default_is_idempotent_and_installs_this_builds_provider() {
    install_default().unwrap();
    install_default().unwrap();
    let installed = CryptoProvider::get_default().unwrap();
    assert_eq!(installed.fips(), FIPS_BUILD);
    require_default_fips("etcd client").unwrap();
}

#[test]
fn alpn_and_client_identity_are_carried() {
    let identity = ClientIdentity::from_pem(
        "client_cert_file",
        &std::fs::read(testdata("client.pem")).unwrap(),
        &std::fs::read(testdata("client.key")).unwrap(),
    )
    .unwrap();
    let config = client_config(
        &network_with_ca(),
        Trust::System(CaRoots::Only),
        Some(identity),
        &[b"http/1.1"],
        "t",
    )
    .unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(config.client_auth_cert_resolver.has_certs());
}

#[test]
fn identity_errors_name_the_field_and_never_show_the_key() {
    let cert = std::fs::read(testdata("client.pem")).unwrap();
    let key = std::fs::read(testdata("client.key")).unwrap();
    let err = ClientIdentity::from_pem("client_cert_file", b"", &key).unwrap_err();
    assert_eq!(err.field, "client_cert_file");
    let err = ClientIdentity::from_pem("client_key_file", &cert, b"MIIE not a key").unwrap_err();
    assert_eq!(err.field, "client_key_file");
    assert!(!err.reason.contains("MIIE"), "{err}");
}

#[test]
fn system_roots_are_loaded_unless_ca_file_alone_is_asked_for() {
    // Trust::NoSystem with no ca_file: an empty store, built without touching the system.
    client_config(&Network::direct(), Trust::NoSystem, None, &[], "t").unwrap();
    // With the system store present (as on the CI hosts), both meanings build.
    if !rustls_native_certs::load_native_certs().certs.is_empty() {
        for roots in [CaRoots::AddToSystem, CaRoots::Only] {
            client_config(&network_with_ca(), Trust::System(roots), None, &[], "t").unwrap();
            client_config(&Network::direct(), Trust::System(roots), None, &[], "t").unwrap();
        }
    }
}
