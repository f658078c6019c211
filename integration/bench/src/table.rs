//! The table printed for people after a run.

use std::fmt::Write as _;

use crate::report::{Report, Round};
use crate::stats::{Latency, median};

/// The table printed after a run.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let m = &r.machine;
    let _ = writeln!(
        t,
        "polykms bench{}",
        if r.quick {
            " (--quick: smoke run, numbers not meaningful)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        t,
        "machine: {} x {}, {} MiB, Linux {}, load {}",
        m.cpus, m.cpu_model, m.memory_mib, m.kernel, m.loadavg_at_start
    );
    let _ = writeln!(
        t,
        "binary:  {} ({}, {:.1} MiB), plugin log level {}\n",
        m.polykms_binary,
        m.polykms_version,
        r.footprint.binary_bytes as f64 / 1048576.0,
        r.plugin_log_level
    );
    let _ = writeln!(
        t,
        "Encrypt+Decrypt round-trips (median over {} interleaved rounds)",
        r.round_trips.first().map_or(0, |c| c.rounds.len())
    );
    let _ = writeln!(
        t,
        "{:>4} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "c",
        "floor p50",
        "plugin p50",
        "floor p99",
        "plugin p99",
        "floor rt/s",
        "plugin rt/s",
        "p50 x",
        "p99 x",
        "rt/s x",
        "cpu/rt x"
    );
    for c in &r.round_trips {
        let med = |f: &dyn Fn(&Round) -> f64| {
            median(&c.rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let _ = writeln!(
            t,
            "{:>4} {:>9.0}µs {:>9.0}µs {:>9.0}µs {:>9.0}µs {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            c.concurrency,
            med(&|r| r.floor.latency.p50_us),
            med(&|r| r.plugin.latency.p50_us),
            med(&|r| r.floor.latency.p99_us),
            med(&|r| r.plugin.latency.p99_us),
            med(&|r| r.floor.per_sec),
            med(&|r| r.plugin.per_sec),
            c.median_p50_ratio,
            c.median_p99_ratio,
            c.median_throughput_ratio,
            c.median_cpu_ratio
        );
    }
    let s = &r.status;
    let _ = writeln!(t, "\nStatus (sequential)   p50      p99      max");
    let mut status_row = |name: &str, l: &Latency| {
        let _ = writeln!(
            t,
            "  {name:<18} {:>6.0}µs {:>6.0}µs {:>6.0}µs",
            l.p50_us, l.p99_us, l.max_us
        );
    };
    status_row("floor", &s.floor);
    status_row("healthy", &s.healthy);
    match (&s.failing, &s.failing_skipped) {
        (Some(l), _) => status_row("backend failing", l),
        (None, why) => {
            let _ = writeln!(
                t,
                "  backend failing    skipped: {}",
                why.as_deref().unwrap_or("?")
            );
        }
    }
    let _ = writeln!(
        t,
        "\nStartup storm (fresh plugin)  C     K  unwraps  coalesced  cache hits  wall"
    );
    for st in &r.storms {
        let _ = writeln!(
            t,
            "  {:<26} {:>4} {:>5} {:>8} {:>10} {:>11} {:>6.1}ms",
            st.config,
            st.concurrency,
            st.envelopes,
            st.backend_unwraps,
            st.coalesced,
            st.cache_hits,
            st.wall_ms
        );
    }
    let f = &r.footprint;
    let _ = writeln!(
        t,
        "\nFootprint: idle RSS {:.1} MiB ({:.1} anonymous, {:.1} file pages; {} fds), after load {:.1} MiB ({} fds); floor idle {:.1} MiB",
        f.idle_rss_kib as f64 / 1024.0,
        f.idle_rss_anon_kib as f64 / 1024.0,
        f.idle_rss_file_kib as f64 / 1024.0,
        f.idle_fds,
        f.loaded_rss_kib as f64 / 1024.0,
        f.loaded_fds,
        f.floor_idle_rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        t,
        "exec-to-ready: median {:.1} ms over {} starts (max {:.1} ms)",
        f.exec_to_ready_median_ms,
        f.exec_to_ready_ms.len(),
        f.exec_to_ready_ms.iter().copied().fold(0.0, f64::max)
    );
    let _ = writeln!(t, "\nTargets (issue 10)");
    for g in &r.targets {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        let _ = writeln!(
            t,
            "  {:<36} {:<14} {:<18} {verdict}",
            g.name, g.target, g.measured
        );
    }
    t
}
