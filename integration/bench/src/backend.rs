//! `polykms-bench backend`: round-trips per second of polykms over a configuration of the
//! caller's (e.g. the PKCS#11 backend on SoftHSM2), where the key store, not the plugin, is
//! what is measured. No floor: the number is the key store's throughput through polykms.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

use crate::load::{self, LoadRun};
use crate::process::Server;
use crate::stats::median;

/// What to measure.
pub struct BackendBench {
    pub polykms: PathBuf,
    /// A polykms config; its `server.socket` is replaced by a scratch socket. Turn the unwrap
    /// cache off (`[decrypt] cache_size = 0`) so that every Decrypt reaches the key store.
    pub config: PathBuf,
    pub concurrency: Vec<usize>,
    pub round_trips: usize,
    pub rounds: usize,
}

/// The runs at one concurrency and their median.
#[derive(Debug, Serialize)]
pub struct BackendResult {
    pub concurrency: usize,
    pub median_per_sec: f64,
    pub runs: Vec<LoadRun>,
}

/// Starts polykms on the config and runs `rounds` timed runs at each concurrency.
pub async fn run(b: &BackendBench) -> anyhow::Result<Vec<BackendResult>> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let socket = dir.path().join("kms.sock");
    let mut cmd = Command::new(&b.polykms);
    cmd.arg("serve")
        .arg("--config")
        .arg(&b.config)
        .arg("--socket")
        .arg(&socket)
        .env_remove("RUST_LOG");
    let server = Server::start(cmd, &socket, &dir.path().join("polykms.log"), None).await?;
    // Warm-up: sessions opened and logged in, key objects found.
    load::round_trips(&server.kms, 16, 64.max(b.round_trips / 10)).await?;
    let mut out = Vec::new();
    for &c in &b.concurrency {
        let mut runs = Vec::with_capacity(b.rounds);
        for _ in 0..b.rounds {
            runs.push(load::round_trips(&server.kms, c, b.round_trips).await?);
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.per_sec).collect();
        out.push(BackendResult {
            concurrency: c,
            median_per_sec: median(&rates).context("no runs")?,
            runs,
        });
    }
    server.stop();
    Ok(out)
}

/// One line per concurrency.
pub fn table(config: &Path, results: &[BackendResult]) -> String {
    let mut s = format!("polykms over {}\n", config.display());
    s.push_str("concurrency  round-trips/s (median)  p50 latency  p99 latency\n");
    for r in results {
        let best = r
            .runs
            .iter()
            .min_by(|a, b| {
                (a.per_sec - r.median_per_sec)
                    .abs()
                    .total_cmp(&(b.per_sec - r.median_per_sec).abs())
            })
            .expect("every result has runs");
        s.push_str(&format!(
            "{:>11}  {:>22.0}  {:>11}  {:>11}\n",
            r.concurrency,
            r.median_per_sec,
            format!("{:.2} ms", best.latency.p50_us / 1e3),
            format!("{:.2} ms", best.latency.p99_us / 1e3),
        ));
    }
    s
}
