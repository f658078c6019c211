//! What one bench run found: the JSON document and the targets of issue 10 checked against it.

use serde::Serialize;

use crate::load::LoadRun;
use crate::stats::Latency;

/// The whole result, written as JSON for tracking over time.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// `--quick`: small counts, a smoke test; numbers are not meaningful.
    pub quick: bool,
    /// `log.level` of the plugins (each request logs at info).
    pub plugin_log_level: String,
    /// Encrypt+Decrypt round-trips, one entry per concurrency.
    pub round_trips: Vec<Concurrency>,
    /// Status latency.
    pub status: StatusLatency,
    /// Startup storms, one per plugin configuration.
    pub storms: Vec<Storm>,
    /// Memory, descriptors, start time, size.
    pub footprint: Footprint,
    /// Issue 10's targets against what was measured.
    pub targets: Vec<Target>,
}

/// The machine and the binaries.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// /proc/loadavg when the run started (a noisy machine shows here).
    pub loadavg_at_start: String,
    pub polykms_binary: String,
    pub polykms_version: String,
}

/// Floor and plugin at one concurrency, run in alternation.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrency {
    pub concurrency: usize,
    /// Each round ran the floor and the plugin back to back (order alternating).
    pub rounds: Vec<Round>,
    /// Median over rounds of plugin p50 / floor p50.
    pub median_p50_ratio: f64,
    /// Median over rounds of plugin p99 / floor p99.
    pub median_p99_ratio: f64,
    /// Median over rounds of plugin round-trips/s / floor round-trips/s.
    pub median_throughput_ratio: f64,
    /// Median over rounds of the plugin's CPU time per round-trip / the floor's: what polykms
    /// costs on top of the transport, steadier than throughput on a shared machine.
    pub median_cpu_ratio: f64,
}

/// One floor run and one plugin run.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub floor: LoadRun,
    pub plugin: LoadRun,
}

/// Status latency, sequential calls.
#[derive(Debug, Clone, Serialize)]
pub struct StatusLatency {
    pub floor: Latency,
    pub healthy: Latency,
    /// `None` when skipped (see `failing_skipped`).
    pub failing: Option<Latency>,
    /// `healthz` the failing plugin reported.
    pub failing_healthz: Option<String>,
    pub failing_skipped: Option<String>,
}

/// Concurrent Decrypts over a few distinct envelopes against a just-started plugin.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    /// "default" (coalescing and the unwrap cache) or "cache off" (`cache_size = 0`, coalescing
    /// alone: no target, it shows how much the cache does).
    pub config: String,
    pub concurrency: usize,
    /// Distinct envelopes (K).
    pub envelopes: usize,
    /// `polykms_backend_requests_total{operation="unwrap"}` after minus before.
    pub backend_unwraps: f64,
    /// `polykms_decrypt_coalesced_total` after minus before.
    pub coalesced: f64,
    /// `polykms_unwrap_cache_hits_total` after minus before.
    pub cache_hits: f64,
    pub wall_ms: f64,
}

/// Process footprint of polykms (and the floor, for scale).
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub idle_rss_kib: u64,
    /// Of the idle RSS: anonymous memory (heap, stacks, relocated data).
    pub idle_rss_anon_kib: u64,
    /// Of the idle RSS: pages of the binary and shared libraries mapped by the kernel, 64 KiB
    /// around each page the code touches (fault-around).
    pub idle_rss_file_kib: u64,
    pub loaded_rss_kib: u64,
    pub idle_fds: usize,
    pub loaded_fds: usize,
    pub floor_idle_rss_kib: u64,
    /// Spawn until Status answered, over several starts.
    pub exec_to_ready_ms: Vec<f64>,
    pub exec_to_ready_median_ms: f64,
    pub binary_bytes: u64,
}

/// One target of issue 10.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    /// `None` when not measured in this run.
    pub met: Option<bool>,
}

fn target(name: &str, goal: &str, measured: String, met: Option<bool>) -> Target {
    Target {
        name: name.into(),
        target: goal.into(),
        measured,
        met,
    }
}

/// Checks the targets against `r`.
pub fn targets(r: &Report) -> Vec<Target> {
    let mut out = Vec::new();
    for c in &r.round_trips {
        match c.concurrency {
            1 => out.push(target(
                "Encrypt+Decrypt p50, c=1",
                "<= 1.3x floor",
                format!("{:.2}x", c.median_p50_ratio),
                Some(c.median_p50_ratio <= 1.3),
            )),
            n => out.push(target(
                &format!("round-trips/s, c={n}"),
                ">= 0.8x floor",
                format!("{:.2}x", c.median_throughput_ratio),
                Some(c.median_throughput_ratio >= 0.8),
            )),
        }
    }
    let s = &r.status;
    out.push(target(
        "Status p99, healthy",
        "< 1 ms",
        format!("{:.0} µs", s.healthy.p99_us),
        Some(s.healthy.p99_us < 1000.0),
    ));
    out.push(match &s.failing {
        Some(l) => target(
            "Status p99, backend failing",
            "< 1 ms",
            format!("{:.0} µs", l.p99_us),
            Some(l.p99_us < 1000.0),
        ),
        None => target(
            "Status p99, backend failing",
            "< 1 ms",
            "skipped".into(),
            None,
        ),
    });
    for st in &r.storms {
        out.push(target(
            &format!("storm backend calls ({})", st.config),
            "= K",
            format!("{} for K={}", st.backend_unwraps, st.envelopes),
            (st.config == "default").then_some(st.backend_unwraps == st.envelopes as f64),
        ));
    }
    let f = &r.footprint;
    out.push(target(
        "idle RSS",
        "<= 8 MiB",
        format!("{:.1} MiB", f.idle_rss_kib as f64 / 1024.0),
        Some(f.idle_rss_kib <= 8 * 1024),
    ));
    out.push(target(
        "exec-to-ready (median)",
        "< 50 ms",
        format!("{:.1} ms", f.exec_to_ready_median_ms),
        Some(f.exec_to_ready_median_ms < 50.0),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50_us: f64, p99_us: f64) -> Latency {
        Latency {
            count: 10,
            p50_us,
            p99_us,
            max_us: p99_us,
        }
    }

    fn run(concurrency: usize, per_sec: f64, p50_us: f64) -> LoadRun {
        LoadRun {
            concurrency,
            round_trips: 10,
            wall_ms: 1.0,
            per_sec,
            latency: latency(p50_us, p50_us),
            server_cpu_us: 50.0,
        }
    }

    fn report(p50_ratio: f64, throughput_ratio: f64, unwraps: f64, idle_rss_kib: u64) -> Report {
        let conc = |c: usize| Concurrency {
            concurrency: c,
            rounds: vec![Round {
                floor: run(c, 1000.0, 100.0),
                plugin: run(c, 1000.0 * throughput_ratio, 100.0 * p50_ratio),
            }],
            median_p50_ratio: p50_ratio,
            median_p99_ratio: p50_ratio,
            median_throughput_ratio: throughput_ratio,
            median_cpu_ratio: 1.0,
        };
        let mut r = Report {
            machine: Machine {
                cpu_model: "test".into(),
                cpus: 2,
                memory_mib: 1,
                kernel: "test".into(),
                loadavg_at_start: String::new(),
                polykms_binary: "polykms".into(),
                polykms_version: "polykms 0".into(),
            },
            quick: false,
            plugin_log_level: "info".into(),
            round_trips: vec![conc(1), conc(16)],
            status: StatusLatency {
                floor: latency(50.0, 90.0),
                healthy: latency(60.0, 900.0),
                failing: None,
                failing_healthz: None,
                failing_skipped: Some("no vault".into()),
            },
            storms: vec![Storm {
                config: "default".into(),
                concurrency: 64,
                envelopes: 8,
                backend_unwraps: unwraps,
                coalesced: 0.0,
                cache_hits: 0.0,
                wall_ms: 1.0,
            }],
            footprint: Footprint {
                idle_rss_kib,
                idle_rss_anon_kib: idle_rss_kib / 4,
                idle_rss_file_kib: idle_rss_kib - idle_rss_kib / 4,
                loaded_rss_kib: idle_rss_kib,
                idle_fds: 10,
                loaded_fds: 10,
                floor_idle_rss_kib: 1,
                exec_to_ready_ms: vec![10.0],
                exec_to_ready_median_ms: 10.0,
                binary_bytes: 1,
            },
            targets: Vec::new(),
        };
        r.targets = targets(&r);
        r
    }

    fn verdicts(r: &Report) -> Vec<(String, Option<bool>)> {
        r.targets.iter().map(|t| (t.name.clone(), t.met)).collect()
    }

    #[test]
    fn targets_met_when_within_bounds() {
        let r = report(1.2, 0.9, 8.0, 8 * 1024);
        for (name, met) in verdicts(&r) {
            let expected = (name != "Status p99, backend failing").then_some(true);
            assert_eq!(met, expected, "{name}");
        }
    }

    #[test]
    fn targets_missed_are_reported() {
        let r = report(1.5, 0.5, 9.0, 8 * 1024 + 1);
        let missed: Vec<String> = verdicts(&r)
            .into_iter()
            .filter(|(_, met)| *met == Some(false))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            missed,
            [
                "Encrypt+Decrypt p50, c=1",
                "round-trips/s, c=16",
                "storm backend calls (default)",
                "idle RSS",
            ]
        );
        assert!(crate::table::table(&r).contains("MISSED"));
    }

    #[test]
    fn the_cache_off_storm_is_shown_without_a_verdict() {
        let mut r = report(1.2, 0.9, 8.0, 8 * 1024);
        let mut off = r.storms[0].clone();
        off.config = "cache off".into();
        off.backend_unwraps = 60.0;
        r.storms.push(off);
        r.targets = targets(&r);
        let v = verdicts(&r);
        assert!(v.contains(&("storm backend calls (default)".into(), Some(true))));
        assert!(v.contains(&("storm backend calls (cache off)".into(), None)));
    }
}
