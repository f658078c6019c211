//! Version-1 envelopes written by polykms before format version 2 (fixtures committed under
//! integration/tests/fixtures/envelope-v1, made by commit 394abdd) decrypt forever, through
//! the same plugin code that serves the socket.

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

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integration/tests/fixtures/envelope-v1")
}

/// A local backend over the fixture key `name` (copied: git does not keep mode 0600).
fn local(dir: &Path, name: &str) -> LocalBackend {
    let path = dir.join(format!("{name}.key"));
    std::fs::copy(fixtures().join(format!("{name}.key")), &path).expect("fixture key");
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

#[tokio::test]
async fn version_1_fixtures_decrypt_and_multi_wrap_ones_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(fixtures().join("cases.json")).expect("cases.json");
    let cases: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let mut backends: Vec<NamedBackend> = Vec::new();
    for name in ["a", "b", "c"] {
        let backend: Arc<dyn KeyEncryptionBackend> = Arc::new(local(dir.path(), name));
        backends.push(NamedBackend {
            name: name.into(),
            backend,
        });
        let padded: Arc<dyn KeyEncryptionBackend> = Arc::new(PaddedBackend {
            inner: local(dir.path(), name),
            pad: 600,
        });
        backends.push(NamedBackend {
            name: format!("padded-{name}"),
            backend: padded,
        });
    }
    let metrics = Arc::new(Metrics::new());
    let ring = Keyring::new(backends, &["a".into()], metrics.clone()).expect("keyring");
    let plugin = Plugin::start(PluginSettings::new("fixtures"), ring, metrics).await;
    let list = cases["cases"].as_array().expect("a list of cases");
    assert_eq!(list.len(), 5);
    let mut multi = 0;
    for case in list {
        let name = case["name"].as_str().expect("name");
        let ciphertext = bytes(&case["ciphertext_b64"]);
        assert_eq!(
            &ciphertext[..3],
            b"PK\x01",
            "{name} is a version-1 envelope"
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
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.seed.expose(), bytes(&case["plaintext_b64"]), "{name}");
        if case["encrypt_with"].as_array().expect("encrypt_with").len() > 1 {
            multi += 1;
        }
    }
    assert_eq!(multi, 4);
    assert!(
        plugin
            .metrics()
            .encode()
            .contains(&format!("polykms_legacy_envelopes_total {multi}"))
    );
}
