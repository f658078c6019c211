//! A frozen KMS endpoint makes calls time out within `timeout_ms`, and the backend recovers by
//! itself when it answers again. Its own test binary (cargo runs test binaries one at a time),
//! because freezing moto_server would stall the other moto tests.
//! Needs `POLYKMS_AWS_ENDPOINT` and `POLYKMS_MOTO_PID_FILE` from `integration/.run/moto.env`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::{ErrorKind, KeyEncryptionBackend};

/// Sends SIGSTOP now and SIGCONT when dropped, even if the test panics.
struct Frozen(String);

impl Frozen {
    fn new(pid: String) -> Self {
        signal("-STOP", &pid);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(sig: &str, pid: &str) {
    let ok = Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

#[tokio::test]
async fn frozen_endpoint_times_out_and_backend_recovers() {
    let name = "frozen_endpoint_times_out_and_backend_recovers";
    let Some(endpoint) =
        common::env_or_skip("POLYKMS_AWS_ENDPOINT", "POLYKMS_REQUIRE_INTEGRATION", name)
    else {
        return;
    };
    let Some(pid_file) =
        common::env_or_skip("POLYKMS_MOTO_PID_FILE", "POLYKMS_REQUIRE_INTEGRATION", name)
    else {
        return;
    };
    let key = std::env::var("POLYKMS_AWS_KEY_ARN").expect("moto.env sets POLYKMS_AWS_KEY_ARN");
    let pid = std::fs::read_to_string(&pid_file)
        .expect("moto pid file")
        .trim()
        .to_owned();

    let mut cfg = AwsConfig::new(&key);
    cfg.endpoint = Some(endpoint);
    cfg.timeout_ms = 1_000;
    cfg.max_attempts = 1;
    let b = AwsBackend::connect(&cfg).await.unwrap();
    let healthy = b.probe().await.unwrap();
    let w = b.wrap(&common::seed(9), b"x").await.unwrap();

    {
        let _frozen = Frozen::new(pid);
        let t = Instant::now();
        let err = b.probe().await.unwrap_err();
        assert_eq!(
            (err.kind(), err.is_retryable()),
            (ErrorKind::Timeout, true),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let err = b.unwrap(&w, b"x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    }

    assert_eq!(b.probe().await.unwrap(), healthy);
    assert!(b.unwrap(&w, b"x").await.is_ok());
}
