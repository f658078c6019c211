//! Shared helpers for the tests against the fake Key Vault (integration/servers/azure-fake.sh).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use polykms_azure::{AzureBackend, AzureConfig};
use serde_json::{Value, json};

/// The running fake, from the env file its script writes.
pub struct Fake {
    pub url: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    control: reqwest::Client,
}

/// The fake from the environment, or `None` (test skipped) when it is not running, unless
/// `POLYKMS_REQUIRE_INTEGRATION=1`, which makes a missing fake a failure.
pub fn fake(test: &str) -> Option<Fake> {
    let url = std::env::var("POLYKMS_AZURE_VAULT_URL").ok();
    let ca = std::env::var("POLYKMS_AZURE_CA_FILE").ok();
    let token = std::env::var("POLYKMS_AZURE_TOKEN_FILE").ok();
    let (Some(url), Some(ca), Some(token)) = (url, ca, token) else {
        if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") {
            panic!(
                "{test}: POLYKMS_AZURE_* not set; run integration/servers/azure-fake.sh start and source its env"
            );
        }
        eprintln!(
            "skipped {test}: POLYKMS_AZURE_VAULT_URL not set (integration/servers/azure-fake.sh start)"
        );
        return None;
    };
    let pem = std::fs::read(&ca).expect("POLYKMS_AZURE_CA_FILE is readable");
    let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("test CA is PEM");
    let control = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .expect("control client builds");
    Some(Fake {
        url,
        ca_file: ca.into(),
        token_file: token.into(),
        control,
    })
}

/// A key name no other test uses, so tests can run in parallel against one fake.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Fake {
    /// Calls the fake's test-control API (`/__control/...`).
    pub async fn control(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/__control/{path}", self.url);
        let req = match body {
            Some(b) => self
                .control
                .post(url)
                .header("content-type", "application/json")
                .body(b.to_string()),
            None => self.control.get(url),
        };
        let rsp = req.send().await.expect("control call reaches the fake");
        assert!(
            rsp.status().is_success(),
            "control {path}: {}",
            rsp.status()
        );
        serde_json::from_slice(&rsp.bytes().await.expect("control body"))
            .expect("control answers JSON")
    }

    /// Creates a fresh key (`{"kty":"RSA"}` etc.) and returns its name.
    pub async fn create_key(&self, prefix: &str, spec: Value) -> String {
        let name = unique_name(prefix);
        self.control(&format!("keys/{name}"), Some(spec)).await;
        name
    }

    /// Update Key, the real call an operator's `az keyvault key set-attributes` makes:
    /// `PATCH /keys/{name}/{version}` with `{"attributes": {...}}`, under the test token.
    pub async fn update_key(&self, name: &str, version: &str, body: Value) -> Value {
        let token = std::fs::read_to_string(&self.token_file).expect("token file is readable");
        let rsp = self
            .control
            .patch(format!(
                "{}/keys/{name}/{version}?api-version=7.6",
                self.url
            ))
            .bearer_auth(token.trim())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("update key reaches the fake");
        assert!(rsp.status().is_success(), "update key: {}", rsp.status());
        serde_json::from_slice(&rsp.bytes().await.expect("update key body"))
            .expect("update key answers JSON")
    }

    /// Config for `key` on the fake: test CA, token file, no challenge-resource check (the
    /// fake's host is 127.0.0.1), no SDK retries so failures are immediate.
    pub fn config(&self, key: &str) -> AzureConfig {
        self.config_with(key, json!({}))
    }

    /// Like `config`, with fields of `overrides` replacing the defaults.
    pub fn config_with(&self, key: &str, overrides: Value) -> AzureConfig {
        let mut c = json!({
            "vault_url": self.url,
            "key_name": key,
            "ca_file": self.ca_file,
            "verify_challenge_resource": false,
            "max_retries": 0,
            "timeout_ms": 5000,
            "auth": {"method": "token_file", "token_file": self.token_file},
        });
        if let (Some(base), Some(extra)) = (c.as_object_mut(), overrides.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(c).expect("test config parses")
    }

    /// A backend for `key` with the default test config.
    pub async fn backend(&self, key: &str) -> AzureBackend {
        AzureBackend::connect(&self.config(key))
            .await
            .expect("connect to the fake")
    }
}
