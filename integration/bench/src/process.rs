//! The servers under test as child processes: started, waited on until Status answers,
//! observed through /proc and `/metrics`, and stopped.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use polykms_core::proto::v2::StatusRequest;

use crate::load::{Kms, connect};

/// How long a server may take to answer its first Status before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server (polykms or the echo floor) with a connected client.
#[derive(Debug)]
pub struct Server {
    child: Child,
    log: PathBuf,
    /// Connected KMS v2 client (the one that saw the first Status).
    pub kms: Kms,
    /// `[http] listen` of a polykms process, for `/metrics`.
    pub http: Option<SocketAddr>,
    /// From spawn until the first Status answered.
    pub exec_to_ready: Duration,
}

impl Server {
    /// Spawns `cmd` (stdout and stderr to `log`) and waits until Status answers on `socket`.
    pub async fn start(
        mut cmd: Command,
        socket: &Path,
        log: &Path,
        http: Option<SocketAddr>,
    ) -> anyhow::Result<Server> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        loop {
            if let Some(status) = child.try_wait().context("polling the child")? {
                bail!("{cmd:?} exited with {status}:\n{}", tail(log));
            }
            if let Ok(mut kms) = connect(socket).await {
                let answered =
                    tokio::time::timeout(Duration::from_secs(1), kms.status(StatusRequest {}));
                if let Ok(Ok(_)) = answered.await {
                    return Ok(Server {
                        child,
                        log: log.to_path_buf(),
                        kms,
                        http,
                        exec_to_ready: started.elapsed(),
                    });
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                stop_child(&mut child);
                bail!(
                    "{cmd:?} did not answer Status in {READY_TIMEOUT:?}:\n{}",
                    tail(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Resident set size now, KiB (`VmRSS` in /proc/<pid>/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        Ok(self.rss()?.total_kib)
    }

    /// Resident set size now, and how much of it is anonymous memory and file pages.
    pub fn rss(&self) -> anyhow::Result<Rss> {
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field =
            |name: &str| status_kib(&text, name).with_context(|| format!("no {name} in {path}"));
        Ok(Rss {
            total_kib: field("VmRSS")?,
            anon_kib: field("RssAnon")?,
            file_kib: field("RssFile")?,
        })
    }

    /// CPU time all threads of the process have run so far, ns (/proc/<pid>/task/*/schedstat).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut total = 0;
        for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = task?.path().join("schedstat");
            // A thread that exits between the listing and the read has nothing left to count.
            if let Ok(text) = std::fs::read_to_string(&path) {
                total += schedstat_run_ns(&text)
                    .with_context(|| format!("unexpected {}", path.display()))?;
            }
        }
        Ok(total)
    }

    /// Open file descriptors now (entries of /proc/<pid>/fd).
    pub fn fds(&self) -> anyhow::Result<usize> {
        let path = format!("/proc/{}/fd", self.child.id());
        Ok(std::fs::read_dir(&path)
            .with_context(|| format!("listing {path}"))?
            .count())
    }

    /// The `/metrics` exposition of a polykms process.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let addr = self.http.context("this server has no metrics listener")?;
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri = format!("http://{addr}/metrics")
            .parse()
            .context("metrics URI")?;
        let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
            .await
            .context("GET /metrics timed out")?
            .context("GET /metrics")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading /metrics")?;
        let text = String::from_utf8(body.to_bytes().to_vec()).context("/metrics is not UTF-8")?;
        if !status.is_success() {
            bail!("GET /metrics answered {status}");
        }
        Ok(text)
    }

    /// The end of the server's log (for error messages).
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Asks the process to stop (SIGTERM), waits up to 5 s, then kills it.
    pub fn stop(mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Time on CPU, ns: the first field of /proc/<pid>/task/<tid>/schedstat.
pub fn schedstat_run_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// Resident set size, KiB: in all, anonymous memory (heap, stacks, relocated data) and pages
/// of mapped files (the binary's code and read-only data, shared libraries).
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub total_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
}

/// Field `name` (e.g. `VmRSS`) from the text of /proc/<pid>/status, in KiB.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sum of the samples of counter `name` whose labels include every `labels` pair.
pub fn counter_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr().context("probe port address")?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# HELP polykms_backend_requests Backend calls
# TYPE polykms_backend_requests counter
polykms_backend_requests_total{backend=\"local\",operation=\"wrap\",outcome=\"ok\"} 5
polykms_backend_requests_total{backend=\"local\",operation=\"unwrap\",outcome=\"ok\"} 16
polykms_backend_requests_total{backend=\"local\",operation=\"unwrap\",outcome=\"error\"} 2
polykms_backend_requests_total{backend=\"other\",operation=\"unwrap\",outcome=\"ok\"} 1
polykms_decrypt_coalesced_total 240
";

    #[test]
    fn counter_sum_adds_matching_series_only() {
        let unwraps = counter_sum(
            EXPOSITION,
            "polykms_backend_requests_total",
            &[("operation", "unwrap")],
        );
        assert_eq!(unwraps, 19.0);
        let local_ok = counter_sum(
            EXPOSITION,
            "polykms_backend_requests_total",
            &[
                ("backend", "local"),
                ("operation", "unwrap"),
                ("outcome", "ok"),
            ],
        );
        assert_eq!(local_ok, 16.0);
        assert_eq!(
            counter_sum(EXPOSITION, "polykms_decrypt_coalesced_total", &[]),
            240.0
        );
        assert_eq!(counter_sum(EXPOSITION, "polykms_missing_total", &[]), 0.0);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tpolykms\nVmPeak:\t  20000 kB\nVmRSS:\t    7312 kB\n\
                      RssAnon:\t    1300 kB\nRssFile:\t    6012 kB\nThreads:\t3\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(7312));
        assert_eq!(status_kib(status, "RssAnon"), Some(1300));
        assert_eq!(status_kib(status, "RssFile"), Some(6012));
        assert_eq!(status_kib(status, "Rss"), None);
        assert_eq!(status_kib("Name:\tx\n", "VmRSS"), None);
        assert_eq!(schedstat_run_ns("123456789 5000 42\n"), Some(123456789));
        assert_eq!(schedstat_run_ns(""), None);
    }
}
