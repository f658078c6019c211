//! Helpers for tests against the fake Cloud KMS started by `integration/servers/gcp-fake.sh`.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use polykms_gcp::{GcpAuth, GcpBackend, GcpConfig};
use rand::Rng;

/// What the server script exported.
pub struct Fake {
    pub endpoint: String,
    pub seeded_key: String,
    pub sa_file: String,
    pub untrusted_sa_file: String,
}

/// The fake's address, or `None` (after saying so) when the suite runs without it.
/// With `POLYKMS_REQUIRE_INTEGRATION=1` a missing fake fails the test instead.
pub fn fake(test: &str) -> Option<Fake> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        get("POLYKMS_GCP_ENDPOINT"),
        get("POLYKMS_GCP_KEY"),
        get("POLYKMS_GCP_SA_FILE"),
        get("POLYKMS_GCP_UNTRUSTED_SA_FILE"),
    ) {
        (Some(endpoint), Some(seeded_key), Some(sa_file), Some(untrusted_sa_file)) => Some(Fake {
            endpoint,
            seeded_key,
            sa_file,
            untrusted_sa_file,
        }),
        _ if std::env::var("POLYKMS_REQUIRE_INTEGRATION").as_deref() == Ok("1") => panic!(
            "{test}: POLYKMS_REQUIRE_INTEGRATION=1 but POLYKMS_GCP_* is not set; \
             run `integration/servers/gcp-fake.sh start` and source integration/.run/gcp-fake.env"
        ),
        _ => {
            eprintln!(
                "{test}: skipped, POLYKMS_GCP_ENDPOINT not set (start integration/servers/gcp-fake.sh)"
            );
            None
        }
    }
}

impl Fake {
    /// Anonymous config for `key`.
    pub fn config(&self, key: &str) -> GcpConfig {
        GcpConfig {
            key: key.to_string(),
            endpoint: Some(self.endpoint.clone()),
            auth: GcpAuth::Anonymous,
            timeout_ms: 3000,
            network: Default::default(),
        }
    }

    pub async fn backend(&self, key: &str) -> GcpBackend {
        GcpBackend::connect(&self.config(key))
            .await
            .expect("anonymous config is valid")
    }

    /// A new ENCRYPT_DECRYPT (or other purpose) key of its own for one test, created through
    /// the real REST admin calls (keyRings.create, cryptoKeys.create).
    pub fn new_key(&self, purpose: &str) -> String {
        let location = "projects/polykms-test/locations/global";
        let (status, _) = self.http(
            "POST",
            &format!("/v1/{location}/keyRings?keyRingId=tests"),
            "{}",
        );
        assert!(
            status == 200 || status == 409,
            "create key ring: HTTP {status}"
        );
        let id: u64 = rand::rng().random();
        let ring = format!("{location}/keyRings/tests");
        let (status, body) = self.http(
            "POST",
            &format!("/v1/{ring}/cryptoKeys?cryptoKeyId=k{id:016x}"),
            &format!(r#"{{"purpose":"{purpose}"}}"#),
        );
        assert_eq!(status, 200, "create crypto key: {body}");
        format!("{ring}/cryptoKeys/k{id:016x}")
    }

    /// Sets a version's state through the real UpdateCryptoKeyVersion call.
    pub fn set_version_state(&self, version: &str, state: &str) {
        let (status, body) = self.http(
            "PATCH",
            &format!("/v1/{version}?updateMask=state"),
            &format!(r#"{{"state":"{state}"}}"#),
        );
        assert_eq!(status, 200, "update version state: {body}");
    }

    /// POSTs to the fake's test-control API and expects success.
    pub fn control(&self, action: &str, body: &str) -> String {
        let (status, text) = self.http("POST", &format!("/__control/{action}"), body);
        assert_eq!(status, 200, "control {action}: {text}");
        text
    }

    /// Paths and integrity fields of the calls the fake saw (no payloads).
    pub fn requests(&self) -> String {
        self.http("GET", "/__control/requests", "").1
    }

    /// A minimal HTTP/1.1 exchange (test-only; the backend itself uses the official client).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let authority = self
            .endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut stream = TcpStream::connect(authority).expect("fake is listening");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("socket option");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send to fake");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read from fake");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("fake answers with an HTTP status line");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}
