//! The load the bench puts on a KMS socket: Encrypt+Decrypt round-trips at a fixed
//! concurrency, sequential Status calls, and a burst of concurrent Decrypts (the storm). The
//! same code drives the floor and polykms.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use polykms_core::proto::v2::key_management_service_client::KeyManagementServiceClient;
use polykms_core::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use serde::Serialize;
use tokio::sync::Barrier;
use tonic::transport::{Channel, Endpoint};

use crate::stats::Latency;

/// A KMS v2 client on one HTTP/2 connection, as kube-apiserver holds one per plugin.
pub type Kms = KeyManagementServiceClient<Channel>;

/// Connects to the KMS socket at `socket`.
pub async fn connect(socket: &Path) -> anyhow::Result<Kms> {
    let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .context("socket path is not a valid endpoint")?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    Ok(KeyManagementServiceClient::new(channel))
}

/// A DEK seed as the apiserver sends one: 32 bytes, distinct per call.
fn seed(n: usize) -> Vec<u8> {
    let b = (n as u64).to_le_bytes();
    b.iter().cycle().take(32).copied().collect()
}

/// Encrypts `seed` and decrypts the result, checking the plaintext comes back.
pub async fn round_trip(kms: &mut Kms, n: usize) -> anyhow::Result<()> {
    let plaintext = seed(n);
    let uid = format!("bench-{n}");
    let enc = kms
        .encrypt(EncryptRequest {
            plaintext: plaintext.clone(),
            uid: uid.clone(),
        })
        .await
        .context("Encrypt")?
        .into_inner();
    let dec = kms
        .decrypt(DecryptRequest {
            ciphertext: enc.ciphertext,
            uid,
            key_id: enc.key_id,
            annotations: enc.annotations,
        })
        .await
        .context("Decrypt")?
        .into_inner();
    ensure!(
        dec.plaintext == plaintext,
        "Decrypt returned other bytes than were encrypted"
    );
    Ok(())
}

/// One timed run of round-trips.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRun {
    /// Callers running round-trips at once.
    pub concurrency: usize,
    /// Round-trips completed.
    pub round_trips: usize,
    /// Wall time, ms.
    pub wall_ms: f64,
    /// Round-trips per second.
    pub per_sec: f64,
    /// Latency of one Encrypt+Decrypt round-trip.
    pub latency: Latency,
    /// CPU time the server spent per round-trip, µs (all its threads; set by the suite).
    pub server_cpu_us: f64,
}

/// Runs `total` round-trips from `concurrency` callers sharing `kms`'s connection.
pub async fn round_trips(kms: &Kms, concurrency: usize, total: usize) -> anyhow::Result<LoadRun> {
    ensure!(
        concurrency > 0 && total > 0,
        "concurrency and count must be positive"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut kms = kms.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(total / concurrency + 1);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(samples);
                    }
                    let t = Instant::now();
                    round_trip(&mut kms, n).await?;
                    samples.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(total);
    for task in futures::future::join_all(tasks).await {
        samples.extend(task.context("load task panicked")??);
    }
    let wall = started.elapsed();
    let latency = Latency::of(&mut samples).context("no round-trips recorded")?;
    Ok(LoadRun {
        concurrency,
        round_trips: total,
        wall_ms: wall.as_secs_f64() * 1e3,
        per_sec: total as f64 / wall.as_secs_f64(),
        latency,
        server_cpu_us: f64::NAN,
    })
}

/// Calls Status `count` times one after another; returns the latencies and the last `healthz`.
pub async fn status_calls(kms: &Kms, count: usize) -> anyhow::Result<(Latency, String)> {
    let mut kms = kms.clone();
    let mut samples = Vec::with_capacity(count);
    let mut healthz = String::new();
    for _ in 0..count {
        let t = Instant::now();
        let r = kms.status(StatusRequest {}).await.context("Status")?;
        samples.push(t.elapsed());
        healthz = r.into_inner().healthz;
    }
    let latency = Latency::of(&mut samples).context("no Status calls recorded")?;
    Ok((latency, healthz))
}

/// Encrypts `count` distinct seeds and returns the envelopes, for the storm.
pub async fn envelopes(kms: &Kms, count: usize) -> anyhow::Result<Vec<(Vec<u8>, EncryptResponse)>> {
    let mut kms = kms.clone();
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let plaintext = seed(1_000_000 + n);
        let enc = kms
            .encrypt(EncryptRequest {
                plaintext: plaintext.clone(),
                uid: format!("storm-seed-{n}"),
            })
            .await
            .context("Encrypt")?
            .into_inner();
        out.push((plaintext, enc));
    }
    Ok(out)
}

/// Starts `concurrency` Decrypts at once (released together by a barrier), cycling over
/// `envelopes`; checks each plaintext and returns the wall time of the burst.
pub async fn storm(
    kms: &Kms,
    envelopes: &[(Vec<u8>, EncryptResponse)],
    concurrency: usize,
) -> anyhow::Result<Duration> {
    ensure!(!envelopes.is_empty(), "the storm needs envelopes");
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut kms = kms.clone();
            let barrier = barrier.clone();
            let (plaintext, enc) = envelopes[i % envelopes.len()].clone();
            tokio::spawn(async move {
                let request = DecryptRequest {
                    ciphertext: enc.ciphertext,
                    uid: format!("storm-{i}"),
                    key_id: enc.key_id,
                    annotations: enc.annotations,
                };
                barrier.wait().await;
                let dec = kms.decrypt(request).await.context("Decrypt")?.into_inner();
                ensure!(
                    dec.plaintext == plaintext,
                    "storm Decrypt returned other bytes"
                );
                anyhow::Ok(())
            })
        })
        .collect();
    barrier.wait().await;
    let started = Instant::now();
    for task in futures::future::join_all(tasks).await {
        task.context("storm task panicked")??;
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_32_bytes_and_distinct() {
        assert_eq!(seed(1).len(), 32);
        assert_ne!(seed(1), seed(2));
        assert_ne!(seed(0), seed(1_000_000));
    }
}
