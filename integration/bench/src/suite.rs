//! One bench run: start the floor and polykms, alternate them under the same load, then
//! Status, the startup storm and the footprint; collect a [`Report`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::configs;
use crate::load::{self, LoadRun};
use crate::process::{Server, counter_sum, free_port};
use crate::report::{self, Concurrency, Footprint, Machine, Report, Round, StatusLatency, Storm};
use crate::stats::median;

/// How much to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `polykms` binary under test.
    pub polykms: PathBuf,
    /// This bench binary (started again as the echo floor).
    pub bench: PathBuf,
    pub quick: bool,
    /// `log.level` of the plugins (polykms logs every request at info).
    pub log_level: String,
    /// Interleaved floor/plugin rounds per concurrency.
    pub rounds: usize,
    /// (concurrency, round-trips per run).
    pub loads: Vec<(usize, usize)>,
    pub warmup: usize,
    pub status_calls: usize,
    pub storm_concurrency: usize,
    pub storm_envelopes: usize,
    /// Starts measured for exec-to-ready.
    pub starts: usize,
    /// Pause before reading idle RSS.
    pub settle: Duration,
}

impl Settings {
    /// Full run (about a minute on 2 cores) or `--quick` (a few seconds).
    pub fn new(polykms: PathBuf, bench: PathBuf, quick: bool) -> Settings {
        let (rounds, loads, warmup, status_calls, storm, starts, settle) = if quick {
            (
                2,
                vec![(1, 50), (16, 200), (64, 400)],
                50,
                100,
                (32, 4),
                3,
                300,
            )
        } else {
            (
                5,
                vec![(1, 3_000), (16, 12_000), (64, 24_000)],
                2_000,
                5_000,
                (512, 16),
                10,
                2_000,
            )
        };
        Settings {
            polykms,
            bench,
            quick,
            log_level: "info".into(),
            rounds,
            loads,
            warmup,
            status_calls,
            storm_concurrency: storm.0,
            storm_envelopes: storm.1,
            starts,
            settle: Duration::from_millis(settle),
        }
    }
}

/// A scratch directory with short paths (unix socket paths are limited to 107 bytes).
struct Scratch {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Scratch {
    fn new(polykms: &Path) -> anyhow::Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("pkb-")
            .tempdir_in("/tmp")
            .context("creating a scratch directory")?;
        let key = dir.path().join("bench.key");
        let out = Command::new(polykms)
            .arg("keygen")
            .arg("--out")
            .arg(&key)
            .output()
            .with_context(|| format!("running {} keygen", polykms.display()))?;
        if !out.status.success() {
            bail!(
                "polykms keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Scratch { dir, key })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts polykms with `config_text(socket, http)` under `name`.
    async fn polykms(
        &self,
        bin: &Path,
        name: &str,
        config_text: impl FnOnce(&Path, std::net::SocketAddr) -> String,
    ) -> anyhow::Result<Server> {
        let socket = self.path(&format!("{name}.sock"));
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = self.path(&format!("{name}.toml"));
        std::fs::write(&config, config_text(&socket, http))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG");
        Server::start(cmd, &socket, &self.path(&format!("{name}.log")), Some(http)).await
    }

    async fn local(
        &self,
        settings: &Settings,
        name: &str,
        cache: Option<usize>,
    ) -> anyhow::Result<Server> {
        let (key, level) = (self.key.clone(), settings.log_level.as_str());
        self.polykms(&settings.polykms, name, |s, h| {
            configs::local(s, h, &key, level, cache)
        })
        .await
    }
}

/// Runs everything in `settings` and returns the report.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let bin = settings.polykms.as_path();
    let machine = machine(bin)?;
    let scratch = Scratch::new(bin)?;

    let mut exec_to_ready = Vec::with_capacity(settings.starts);
    for i in 0..settings.starts {
        let s = scratch.local(settings, &format!("start{i}"), None).await?;
        exec_to_ready.push(s.exec_to_ready.as_secs_f64() * 1e3);
        s.stop();
    }

    let plugin = scratch.local(settings, "plugin", None).await?;
    let floor = {
        let socket = scratch.path("floor.sock");
        let mut cmd = Command::new(&settings.bench);
        cmd.arg("echo-server").arg("--socket").arg(&socket);
        Server::start(cmd, &socket, &scratch.path("floor.log"), None).await?
    };
    tokio::time::sleep(settings.settle).await;
    let (idle_rss, idle_fds) = (plugin.rss()?, plugin.fds()?);
    let floor_idle_rss_kib = floor.rss_kib()?;

    load::round_trips(&floor.kms, 16, settings.warmup).await?;
    load::round_trips(&plugin.kms, 16, settings.warmup).await?;
    let mut round_trips = Vec::new();
    for &(concurrency, count) in &settings.loads {
        let mut rounds = Vec::with_capacity(settings.rounds);
        for r in 0..settings.rounds {
            // Alternate which goes first, so drift in machine load hits both alike.
            let (floor_run, plugin_run) = if r % 2 == 0 {
                let f = measure(&floor, concurrency, count).await?;
                (f, measure(&plugin, concurrency, count).await?)
            } else {
                let p = measure(&plugin, concurrency, count).await?;
                (measure(&floor, concurrency, count).await?, p)
            };
            rounds.push(Round {
                floor: floor_run,
                plugin: plugin_run,
            });
        }
        round_trips.push(concurrency_summary(concurrency, rounds));
    }
    let (loaded_rss_kib, loaded_fds) = (plugin.rss_kib()?, plugin.fds()?);

    let (floor_status, _) = load::status_calls(&floor.kms, settings.status_calls).await?;
    let (healthy, healthz) = load::status_calls(&plugin.kms, settings.status_calls).await?;
    if healthz != "ok" {
        bail!(
            "the local-backend plugin reports healthz {healthz:?}:\n{}",
            plugin.log_tail()
        );
    }
    floor.stop();

    let envelopes = load::envelopes(&plugin.kms, settings.storm_envelopes).await?;
    plugin.stop();
    let mut storms = Vec::new();
    // The default configuration (coalescing and the unwrap cache), then coalescing alone.
    for (label, cache) in [("default", None), ("cache off", Some(0))] {
        let fresh = scratch
            .local(settings, &format!("storm-{}", storms.len()), cache)
            .await?;
        storms.push(storm(&fresh, label, &envelopes, settings.storm_concurrency).await?);
        fresh.stop();
    }

    let mut status = StatusLatency {
        floor: floor_status,
        healthy,
        failing: None,
        failing_healthz: None,
        failing_skipped: None,
    };
    failing_status(&scratch, bin, settings.status_calls, &mut status).await?;

    let mut report = Report {
        machine,
        quick: settings.quick,
        plugin_log_level: settings.log_level.clone(),
        round_trips,
        status,
        storms,
        footprint: Footprint {
            idle_rss_kib: idle_rss.total_kib,
            idle_rss_anon_kib: idle_rss.anon_kib,
            idle_rss_file_kib: idle_rss.file_kib,
            loaded_rss_kib,
            idle_fds,
            loaded_fds,
            floor_idle_rss_kib,
            exec_to_ready_median_ms: median(&exec_to_ready).unwrap_or(f64::NAN),
            exec_to_ready_ms: exec_to_ready,
            binary_bytes: std::fs::metadata(bin)
                .with_context(|| format!("stat {}", bin.display()))?
                .len(),
        },
        targets: Vec::new(),
    };
    report.targets = report::targets(&report);
    Ok(report)
}

/// Round-trips against `server`, with the CPU time it spent on them.
async fn measure(server: &Server, concurrency: usize, count: usize) -> anyhow::Result<LoadRun> {
    let before = server.cpu_ns()?;
    let mut run = load::round_trips(&server.kms, concurrency, count)
        .await
        .with_context(|| server.log_tail())?;
    let spent_ns = server.cpu_ns()?.saturating_sub(before);
    run.server_cpu_us = spent_ns as f64 / 1e3 / run.round_trips as f64;
    Ok(run)
}

fn concurrency_summary(concurrency: usize, rounds: Vec<Round>) -> Concurrency {
    let ratio = |f: fn(&LoadRun) -> f64| {
        let v: Vec<f64> = rounds.iter().map(|r| f(&r.plugin) / f(&r.floor)).collect();
        median(&v).unwrap_or(f64::NAN)
    };
    Concurrency {
        concurrency,
        median_p50_ratio: ratio(|l| l.latency.p50_us),
        median_p99_ratio: ratio(|l| l.latency.p99_us),
        median_throughput_ratio: ratio(|l| l.per_sec),
        median_cpu_ratio: ratio(|l| l.server_cpu_us),
        rounds,
    }
}

async fn storm(
    plugin: &Server,
    label: &str,
    envelopes: &[(Vec<u8>, polykms_core::proto::v2::EncryptResponse)],
    concurrency: usize,
) -> anyhow::Result<Storm> {
    const UNWRAPS: &str = "polykms_backend_requests_total";
    let count = |text: &str| {
        (
            counter_sum(text, UNWRAPS, &[("operation", "unwrap")]),
            counter_sum(text, "polykms_decrypt_coalesced_total", &[]),
            counter_sum(text, "polykms_unwrap_cache_hits_total", &[]),
        )
    };
    let before = count(&plugin.metrics().await?);
    let wall = load::storm(&plugin.kms, envelopes, concurrency)
        .await
        .with_context(|| plugin.log_tail())?;
    let after = count(&plugin.metrics().await?);
    Ok(Storm {
        config: label.into(),
        concurrency,
        envelopes: envelopes.len(),
        backend_unwraps: after.0 - before.0,
        coalesced: after.1 - before.1,
        cache_hits: after.2 - before.2,
        wall_ms: wall.as_secs_f64() * 1e3,
    })
}

/// Status while the only encrypt backend is down; skipped when the binary has no `vault`.
async fn failing_status(
    scratch: &Scratch,
    bin: &Path,
    calls: usize,
    out: &mut StatusLatency,
) -> anyhow::Result<()> {
    let token = scratch.path("vault-token");
    std::fs::write(&token, "bench-token-not-a-secret").context("writing the token file")?;
    let port = free_port()?;
    let started = scratch
        .polykms(bin, "failing", |s, h| {
            configs::unreachable_vault(s, h, port, &token)
        })
        .await;
    let plugin = match started {
        Ok(p) => p,
        Err(e) if format!("{e:#}").contains("unknown variant") => {
            out.failing_skipped =
                Some("the polykms binary was built without the vault backend".into());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // The prober's first failure flips Status; wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, healthz) = load::status_calls(&plugin.kms, 1).await?;
        if healthz != "ok" {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "Status stayed ok with an unreachable backend:\n{}",
                plugin.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (latency, healthz) = load::status_calls(&plugin.kms, calls).await?;
    out.failing = Some(latency);
    out.failing_healthz = Some(healthz);
    plugin.stop();
    Ok(())
}

fn machine(bin: &Path) -> anyhow::Result<Machine> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or_else(|| "unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let version = Command::new(bin)
        .arg("version")
        .output()
        .with_context(|| format!("running {} version", bin.display()))?;
    Ok(Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        loadavg_at_start: read("/proc/loadavg").trim().to_string(),
        polykms_binary: bin.display().to_string(),
        polykms_version: String::from_utf8_lossy(&version.stdout).trim().to_string(),
    })
}
