//! `polykms-bench run --quick` against a built polykms: the bench still starts both servers,
//! drives every measurement and writes a complete JSON report. No timing is asserted.
//!
//! The polykms binary is `POLYKMS_BIN`, or `polykms` next to the bench binary (build it first:
//! `cargo build -p polykms`). Without one the test is skipped, unless
//! `POLYKMS_REQUIRE_INTEGRATION` is set (as in `integration/run-tests.sh`), where it fails.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn polykms_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("POLYKMS_BIN") {
        return Some(PathBuf::from(p));
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_polykms-bench"));
    let sibling = bench.parent()?.join("polykms");
    sibling.exists().then_some(sibling)
}

#[test]
fn quick_run_measures_everything_and_writes_json() {
    let Some(polykms) = polykms_binary() else {
        assert!(
            std::env::var_os("POLYKMS_REQUIRE_INTEGRATION").is_none(),
            "no polykms binary: set POLYKMS_BIN or build polykms first"
        );
        eprintln!("skipped: no polykms binary (set POLYKMS_BIN or build polykms)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_polykms-bench"))
        .args(["run", "--quick", "--polykms"])
        .arg(&polykms)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("running polykms-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "polykms-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Targets (issue 10)"), "no table:\n{stdout}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written"))
            .expect("valid JSON");
    assert_eq!(report["quick"], true);
    let concurrencies: Vec<u64> = report["round_trips"]
        .as_array()
        .expect("round_trips")
        .iter()
        .map(|c| c["concurrency"].as_u64().expect("concurrency"))
        .collect();
    assert_eq!(concurrencies, [1, 16, 64]);
    for c in report["round_trips"].as_array().expect("round_trips") {
        for round in c["rounds"].as_array().expect("rounds") {
            for side in ["floor", "plugin"] {
                assert!(round[side]["round_trips"].as_u64().expect("count") > 0);
                assert!(round[side]["latency"]["p50_us"].as_f64().expect("p50") > 0.0);
            }
        }
    }
    assert!(
        report["status"]["healthy"]["count"]
            .as_u64()
            .expect("status count")
            > 0
    );
    // Either measured against an unhealthy backend, or skipped with a reason.
    let failing = &report["status"];
    assert!(
        failing["failing_healthz"]
            .as_str()
            .is_some_and(|h| h != "ok")
            || failing["failing_skipped"].is_string(),
        "failing Status neither measured nor skipped: {failing}"
    );
    let storms = report["storms"].as_array().expect("storms");
    assert_eq!(storms.len(), 2);
    for storm in storms {
        let k = storm["envelopes"].as_f64().expect("K");
        let unwraps = storm["backend_unwraps"].as_f64().expect("unwraps");
        // The unwrap counter moved: every distinct envelope was unwrapped at least once.
        assert!(
            unwraps >= k,
            "storm made {unwraps} backend unwraps for K={k}"
        );
    }
    let f = &report["footprint"];
    assert!(f["idle_rss_kib"].as_u64().expect("rss") > 0);
    assert!(f["binary_bytes"].as_u64().expect("size") > 0);
    assert_eq!(f["exec_to_ready_ms"].as_array().expect("starts").len(), 3);
}
