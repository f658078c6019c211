use std::io::Write;

use super::*;

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    p
}

const MINIMAL: &str = r#"
[server]
socket = "/tmp/polykms.sock"
[[backends]]
name = "local"
type = "local"
key_files = ["keys/current.key", "/abs/older.key"]
[encrypt]
with = ["local"]
"#;

#[test]
fn minimal_local_config_loads_with_defaults_and_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", MINIMAL)).unwrap();
    assert_eq!(c.server.socket, "/tmp/polykms.sock");
    assert_eq!(c.server.apis, vec![ApiName::V2]);
    assert_eq!(c.server.status_version, StatusVersionName::V2);
    assert_eq!(c.http.listen, "127.0.0.1:8095");
    assert_eq!(c.health.probe_interval, Duration::from_secs(30));
    assert_eq!(c.decrypt.cache_size, 1024);
    assert_eq!(c.decrypt.cache_ttl, Duration::from_secs(30));
    #[allow(irrefutable_let_patterns)] // irrefutable when only the local backend is compiled in
    let crate::backends::BackendSettings::Local(l) = &c.backends[0].settings else {
        panic!("local backend expected")
    };
    assert_eq!(l.key_files[0], dir.path().join("keys/current.key"));
    assert_eq!(l.key_files[1], PathBuf::from("/abs/older.key"));
}

#[test]
fn yaml_is_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "server:\n  socket: /tmp/y.sock\n  status_version: v2beta1\n  apis: [v2, v1beta1]\nbackends:\n  - name: local\n    type: local\n    key_files: [/k]\nencrypt:\n  with: [local]\n";
    let c = Config::load(&write(dir.path(), "c.yaml", yaml)).unwrap();
    assert_eq!(c.server.status_version, StatusVersionName::V2Beta1);
    assert_eq!(c.server.apis, vec![ApiName::V2, ApiName::V1Beta1]);
}

fn error_of(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    Config::load(&write(dir.path(), "c.toml", body))
        .unwrap_err()
        .0
}

#[test]
fn unknown_fields_are_rejected_naming_the_field() {
    let e = error_of(&MINIMAL.replace("[server]", "[server]\nsokcet = \"/x\""));
    assert!(e.contains("sokcet"), "{e}");
    let e = error_of(&MINIMAL.replace("type = \"local\"", "type = \"local\"\nkey_file = \"/x\""));
    assert!(e.contains("key_file"), "{e}");
    let e = error_of(&format!("{MINIMAL}\n[surprise]\na = 1\n"));
    assert!(e.contains("surprise"), "{e}");
}

#[test]
fn bad_values_name_the_field() {
    let cases = [
        (
            MINIMAL.replace("type = \"local\"", "type = \"nope\""),
            "nope",
        ),
        (
            MINIMAL.replace("with = [\"local\"]", "with = [\"other\"]"),
            "encrypt.with[0]",
        ),
        (
            MINIMAL.replace("with = [\"local\"]", "with = []"),
            "encrypt.with",
        ),
        (
            MINIMAL.replace("name = \"local\"", "name = \"Local_1\""),
            "backends[0].name",
        ),
        (
            MINIMAL.replace("socket = \"/tmp/polykms.sock\"", "socket = 5"),
            "server.socket",
        ),
        (
            MINIMAL.replace("[server]", "[server]\nstatus_version = \"v3\""),
            "status_version",
        ),
        (
            MINIMAL.replace("[server]", "[server]\napis = [\"v1\"]"),
            "apis",
        ),
        (
            format!("{MINIMAL}\n[health]\nprobe_interval = \"soon\"\n"),
            "probe_interval",
        ),
        (
            format!("{MINIMAL}\n[http]\nlisten = \"nowhere\"\n"),
            "http.listen",
        ),
        (
            MINIMAL.replace("key_files = [\"keys/current.key\", \"/abs/older.key\"]", ""),
            "key_files",
        ),
    ];
    for (body, field) in cases {
        let e = error_of(&body);
        assert!(e.contains(field), "expected {field:?} in {e:?}");
    }
}

#[test]
fn duplicate_backend_names_are_rejected() {
    let body = MINIMAL.replace(
        "[encrypt]",
        "[[backends]]\nname = \"local\"\ntype = \"local\"\nkey_files = [\"/k\"]\n[encrypt]",
    );
    assert!(error_of(&body).contains("used twice"));
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure's error type
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "c.toml", MINIMAL);
    figment::Jail::expect_with(|jail| {
        jail.set_env("POLYKMS_SERVER__SOCKET", "/tmp/from-env.sock");
        jail.set_env("POLYKMS_SERVER__PROVIDER_NAME", "cluster-a");
        // Not configuration: must not be read as a top-level key.
        jail.set_env("POLYKMS_AWS_ENDPOINT", "http://127.0.0.1:1");
        jail.set_env("POLYKMS_CONFIG", "/etc/polykms/config.toml");
        let c = Config::load(&p).map_err(|e| e.0)?;
        assert_eq!(c.server.socket, "/tmp/from-env.sock");
        assert_eq!(c.server.provider_name, "cluster-a");
        Ok(())
    });
}

#[test]
fn missing_file_and_unknown_extension_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Config::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .0
            .contains("no such config file")
    );
    assert!(
        Config::load(&write(dir.path(), "c.ini", MINIMAL))
            .unwrap_err()
            .0
            .contains("unknown config format")
    );
}

#[test]
fn watch_config_is_on_by_default_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", MINIMAL)).unwrap();
    assert!(c.server.watch_config);
    let off = MINIMAL.replace("[server]", "[server]\nwatch_config = false");
    let c = Config::load(&write(dir.path(), "off.toml", &off)).unwrap();
    assert!(!c.server.watch_config);
}

#[test]
fn referenced_files_are_listed_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", MINIMAL)).unwrap();
    assert_eq!(
        c.referenced_files,
        vec![
            dir.path().join("keys/current.key"),
            PathBuf::from("/abs/older.key")
        ]
    );
}

/// Every remote backend's file settings (CA bundles, proxy credentials, client certificates,
/// token and secret files) resolve against the config file's directory, as key_files do.
#[cfg(all(feature = "aws", feature = "vault", feature = "gcp", feature = "azure"))]
#[test]
fn every_backends_relative_file_settings_resolve_against_the_config_directory() {
    let body = r#"
[[backends]]
name = "aws"
type = "aws"
key = "alias/k"
region = "eu-west-1"
ca_file = "ca/aws.pem"
proxy_credentials_file = "/abs/proxy-creds"
[[backends]]
name = "vault"
type = "vault"
address = "https://vault:8200"
key = "k"
ca_file = "ca/vault.pem"
client_cert_file = "tls/client.pem"
client_key_file = "tls/client.key"
auth = { method = "approle", role_id_file = "approle/role-id", secret_id_file = "approle/secret-id" }
[[backends]]
name = "gcp"
type = "gcp"
key = "projects/p/locations/l/keyRings/r/cryptoKeys/k"
auth = { method = "service_account", credentials_file = "gcp/sa.json" }
[[backends]]
name = "azure"
type = "azure"
vault_url = "https://v.vault.azure.net"
key_name = "k"
auth = { method = "client_secret", tenant_id = "t", client_id = "c", client_secret_file = "azure/secret" }
[encrypt]
with = ["aws"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", body)).unwrap();
    let d = dir.path();
    assert_eq!(
        c.referenced_files,
        vec![
            PathBuf::from("/abs/proxy-creds"),
            d.join("ca/aws.pem"),
            d.join("ca/vault.pem"),
            d.join("tls/client.pem"),
            d.join("tls/client.key"),
            d.join("approle/role-id"),
            d.join("approle/secret-id"),
            d.join("gcp/sa.json"),
            d.join("azure/secret"),
        ]
    );
    // The settings the backends are built from hold the resolved paths too.
    let crate::backends::BackendSettings::Vault(v) = &c.backends[1].settings else {
        panic!("vault backend expected")
    };
    assert_eq!(
        v.network.ca_file.as_deref(),
        Some(d.join("ca/vault.pem").as_path())
    );
}

#[cfg(all(feature = "pkcs11", feature = "kmip"))]
#[test]
fn pkcs11_pin_and_kmip_credential_files_resolve_but_a_module_name_is_the_loaders() {
    let body = r#"
[[backends]]
name = "hsm"
type = "pkcs11"
module = "libsofthsm2.so"
token_label = "t"
pin_file = "hsm/pin"
key_label = "k"
[[backends]]
name = "kmip"
type = "kmip"
endpoint = "kmip:5696"
ca_file = "kmip/ca.pem"
client_cert_file = "kmip/client.pem"
client_key_file = "/abs/client.key"
key_name = "k"
[encrypt]
with = ["hsm"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", body)).unwrap();
    let d = dir.path();
    assert_eq!(
        c.referenced_files,
        vec![
            d.join("hsm/pin"),
            d.join("kmip/ca.pem"),
            d.join("kmip/client.pem"),
            PathBuf::from("/abs/client.key"),
        ]
    );
    let crate::backends::BackendSettings::Pkcs11(p) = &c.backends[0].settings else {
        panic!("pkcs11 backend expected")
    };
    assert_eq!(p.module, PathBuf::from("libsofthsm2.so"));
}

#[cfg(feature = "escrow")]
const ESCROW: &str = r#"
[server]
apis = ["v2"]
[[backends]]
name = "a"
type = "local"
key_files = ["/k"]
[[backends]]
name = "escrow"
type = "escrow"
public_key_file = "escrow/escrow.pub"
private_key_file = "/offline/escrow.key"
[encrypt]
with = ["a", "escrow"]
"#;

#[cfg(feature = "escrow")]
#[test]
fn escrow_key_files_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "c.toml", ESCROW)).unwrap();
    assert_eq!(
        c.referenced_files,
        vec![
            PathBuf::from("/k"),
            dir.path().join("escrow/escrow.pub"),
            PathBuf::from("/offline/escrow.key"),
        ]
    );
}

#[cfg(feature = "escrow")]
#[test]
fn escrow_in_encrypt_with_is_refused_with_v1beta1_naming_the_fields() {
    let err = error_of(&ESCROW.replace(r#"apis = ["v2"]"#, r#"apis = ["v2", "v1beta1"]"#));
    assert!(
        err.starts_with("encrypt.with[1]: \"escrow\" (type \"escrow\")"),
        "{err}"
    );
    assert!(
        err.contains("server.apis") && err.contains("annotations"),
        "{err}"
    );
    // Decrypt-only (not in encrypt.with), an escrow backend is fine beside v1beta1.
    let decrypt_only = ESCROW
        .replace(r#"apis = ["v2"]"#, r#"apis = ["v2", "v1beta1"]"#)
        .replace(r#"with = ["a", "escrow"]"#, r#"with = ["a"]"#);
    let dir = tempfile::tempdir().unwrap();
    Config::load(&write(dir.path(), "c.toml", &decrypt_only)).unwrap();
}
