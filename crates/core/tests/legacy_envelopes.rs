//! Envelopes of every format polykms ever wrote decrypt forever, through the same plugin code
//! that serves the socket: version 1 (fixtures under integration/tests/fixtures/envelope-v1,
//! made by commit 394abdd) and version 2 (envelope-v2, made by commit 7d6681f, the last that
//! wrote it, with `write_fixtures_of_the_current_format` below).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::PaddedBackend;
use polykms_backend::KeyEncryptionBackend;
use polykms_core::{Keyring, Metrics, NamedBackend, Plugin, PluginSettings};
use polykms_local::{LocalBackend, LocalConfig};
use serde_json::Value;

fn fixtures_of(format: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../integration/tests/fixtures/envelope-v{format}"
    ))
}

/// A local backend over the fixture key `name` (copied: git does not keep mode 0600).
fn local(dir: &Path, name: &str) -> LocalBackend {
    let path = dir.join(format!("{name}.key"));
    std::fs::copy(fixtures_of(1).join(format!("{name}.key")), &path).expect("fixture key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    LocalBackend::from_config(&LocalConfig {
        key_files: vec![path],
        generate_if_missing: false,
    })
    .expect("fixture key loads")
}

fn bytes(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// The fixtures' plugin: local backends over keys a, b and c, and padded ones (`padded-a`…)
/// whose wraps overflow into annotations; `encrypt_with` names the encrypt backends.
async fn fixture_plugin(dir: &Path, encrypt_with: &[String]) -> Arc<Plugin> {
    let mut backends: Vec<NamedBackend> = Vec::new();
    for name in ["a", "b", "c"] {
        let backend: Arc<dyn KeyEncryptionBackend> = Arc::new(local(dir, name));
        backends.push(NamedBackend {
            name: name.into(),
            backend,
        });
        let padded: Arc<dyn KeyEncryptionBackend> = Arc::new(PaddedBackend {
            inner: local(dir, name),
            pad: 600,
        });
        backends.push(NamedBackend {
            name: format!("padded-{name}"),
            backend: padded,
        });
    }
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(backends, encrypt_with, metrics.clone()).expect("keyring");
    Plugin::start(PluginSettings::new("fixtures"), ring, metrics).await
}

/// Decrypts every case of `fixtures_of(format)`; returns how many had several wraps.
async fn decrypt_fixtures(format: u8) -> (Arc<Plugin>, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(fixtures_of(format).join("cases.json")).expect("cases.json");
    let cases: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let plugin = fixture_plugin(dir.path(), &["a".into()]).await;
    let list = cases["cases"].as_array().expect("a list of cases");
    assert_eq!(list.len(), 5);
    let mut multi = 0;
    for case in list {
        let name = case["name"].as_str().expect("name");
        let ciphertext = bytes(&case["ciphertext_b64"]);
        assert_eq!(
            &ciphertext[..3],
            &[b'P', b'K', format],
            "{name} is a version-{format} envelope"
        );
        let annotations: BTreeMap<String, Vec<u8>> = case["annotations"]
            .as_object()
            .expect("annotations")
            .iter()
            .map(|(k, v)| (k.clone(), bytes(v)))
            .collect();
        let key_id = case["key_id"].as_str().expect("key_id");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let out = plugin
            .decrypt(&ciphertext, Some(key_id), &annotations, deadline)
            .await
            .unwrap_or_else(|e| panic!("v{format} {name}: {e}"));
        assert_eq!(out.seed.expose(), bytes(&case["plaintext_b64"]), "{name}");
        if case["encrypt_with"].as_array().expect("encrypt_with").len() > 1 {
            multi += 1;
        }
    }
    (plugin, multi)
}

#[tokio::test]
async fn version_1_fixtures_decrypt_and_multi_wrap_ones_are_counted() {
    let (plugin, multi) = decrypt_fixtures(1).await;
    assert_eq!(multi, 4);
    assert!(
        plugin
            .metrics()
            .encode()
            .contains(&format!("polykms_legacy_envelopes_total {multi}"))
    );
}

#[tokio::test]
async fn version_2_fixtures_decrypt_and_are_not_counted_as_legacy() {
    let (plugin, multi) = decrypt_fixtures(2).await;
    assert_eq!(multi, 4);
    assert!(
        plugin
            .metrics()
            .encode()
            .contains("polykms_legacy_envelopes_total 0")
    );
}

/// Writes the fixture cases of the format Encrypt writes today into
/// `$POLYKMS_WRITE_FIXTURES/cases.json` (keys a, b, c of envelope-v1): run it once, at the
/// last commit that writes a format, before the format changes.
#[tokio::test]
#[ignore = "writes fixtures; run by hand with POLYKMS_WRITE_FIXTURES=DIR"]
async fn write_fixtures_of_the_current_format() {
    let out =
        PathBuf::from(std::env::var("POLYKMS_WRITE_FIXTURES").expect("POLYKMS_WRITE_FIXTURES"));
    let dir = tempfile::tempdir().expect("temp dir");
    let orders: [&[&str]; 5] = [
        &["a"],
        &["a", "b"],
        &["a", "b", "c"],
        &["b", "a"],
        &["a", "padded-b", "padded-c"],
    ];
    let mut cases = Vec::new();
    for order in orders {
        let with: Vec<String> = order.iter().map(|s| s.to_string()).collect();
        let plugin = fixture_plugin(dir.path(), &with).await;
        let mut seed = vec![0u8; 32];
        rand::fill(&mut seed[..]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let enc = plugin
            .encrypt(polykms_backend::SecretBytes::new(seed.clone()), deadline)
            .await
            .expect("encrypt");
        let name = if order[1..].iter().any(|n| n.starts_with("padded")) {
            "padded-annotations".to_string()
        } else {
            format!("local-{}", order.join("-"))
        };
        cases.push(serde_json::json!({
            "name": name,
            "encrypt_with": order,
            "provider_name": "fixtures",
            "plaintext_b64": B64.encode(&seed),
            "ciphertext_b64": B64.encode(&enc.ciphertext),
            "key_id": enc.key_id,
            "annotations": enc.annotations.iter().map(|(k, v)| (k.clone(), Value::from(B64.encode(v)))).collect::<serde_json::Map<_, _>>(),
        }));
    }
    std::fs::create_dir_all(&out).expect("fixtures dir");
    let doc = serde_json::json!({
        "made_by": "polykms, by crates/core/tests/legacy_envelopes.rs write_fixtures_of_the_current_format (local backends over keys a, b, c; padded-* pad each wrap to 600 bytes so wraps overflow into annotations)",
        "cases": cases,
    });
    std::fs::write(
        out.join("cases.json"),
        serde_json::to_string_pretty(&doc).expect("json") + "\n",
    )
    .expect("write cases.json");
}
