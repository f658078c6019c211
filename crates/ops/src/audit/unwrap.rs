//! `--unwrap`: proves that a configuration decrypts every stored object, by unwrapping each
//! distinct DEK envelope of the census once through an [`EnvelopeOpener`] (the binary's, built
//! from the configuration: the plugin's own Decrypt), at most `--qps` calls per second and
//! `--concurrency` at a time. Seeds never reach this module: an opener says whether a Decrypt
//! would succeed, and why not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::Serialize;

use super::AuditError;
use super::census::{Census, DekEntry, FIRST_OBJECTS, KeyVersionId};
use super::dek::StoredDek;

/// Why a DEK envelope does not unwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwrapFailure {
    /// A short stable kind: the backend error kind (`key_unavailable`, `wrong_key`,
    /// `unavailable`, ...), or `unknown_backend`, `wrap_only`, `invalid_envelope`, `deadline`.
    pub kind: String,
    /// What the plugin said: backends and kinds, never key material.
    pub message: String,
}

/// Decrypts DEK envelopes as the plugin's Decrypt does (commitment and key_id checked) and
/// drops each seed (zeroized) before answering: only the outcome leaves.
pub trait EnvelopeOpener: Send + Sync {
    /// `Ok` when a Decrypt of `dek` would return its seed.
    fn open<'a>(&'a self, dek: &'a StoredDek) -> BoxFuture<'a, Result<(), UnwrapFailure>>;
}

/// `--qps` and `--concurrency`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnwrapSettings {
    /// Unwrap calls per second over all workers (0: no limit).
    pub qps: f64,
    /// Unwrap calls in flight.
    pub concurrency: usize,
}

impl UnwrapSettings {
    /// Checks the flags before any request.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.concurrency == 0 {
            return Err(AuditError::Config(
                "--concurrency must be at least 1".into(),
            ));
        }
        interval(self.qps).map(|_| ())
    }
}

/// The time between two calls at `qps` (None: no limit).
fn interval(qps: f64) -> Result<Option<Duration>, AuditError> {
    if qps == 0.0 {
        return Ok(None);
    }
    if qps.is_nan() || qps < 0.0 {
        return Err(AuditError::Config(format!(
            "--qps must be a positive number (0: no limit), not {qps}"
        )));
    }
    Duration::try_from_secs_f64(1.0 / qps)
        .map(Some)
        .map_err(|_| AuditError::Config(format!("--qps {qps:e} is too small")))
}

/// Hands out call slots `interval` apart, over all workers.
struct Pacer {
    interval: Option<Duration>,
    start: Instant,
    next: std::sync::Mutex<Duration>,
}

impl Pacer {
    async fn acquire(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let wait = {
            let now = self.start.elapsed();
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(now);
            *next = slot.saturating_add(interval);
            slot - now
        };
        tokio::time::sleep(wait).await;
    }
}

/// Envelopes that no configured backend unwraps, with the same key versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnreadableGroup {
    /// The key versions of their wraps (empty: not polykms envelopes).
    pub key_versions: Vec<KeyVersionId>,
    /// Objects that would become unreadable.
    pub objects: u64,
    /// Distinct DEK envelopes among them.
    pub dek_envelopes: u64,
    /// Envelopes per failure kind.
    pub reasons: BTreeMap<String, u64>,
    /// One failure message, for the operator.
    pub message: String,
    /// The first object names (sorted), at most [`FIRST_OBJECTS`].
    pub first_objects: Vec<String>,
}

/// The outcome of `--unwrap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnwrapReport {
    /// Distinct DEK envelopes checked.
    pub dek_envelopes: u64,
    /// Calls made through the opener (envelopes that are not polykms ones need none).
    pub unwrap_calls: u64,
    /// Objects whose envelope unwrapped.
    pub readable_objects: u64,
    /// Objects whose envelope did not.
    pub unreadable_objects: u64,
    /// What would become unreadable, by key versions.
    pub unreadable: Vec<UnreadableGroup>,
}

impl UnwrapReport {
    /// True when every object's envelope unwrapped, and there was at least one.
    pub fn passed(&self) -> bool {
        self.unreadable_objects == 0 && self.readable_objects > 0
    }

    /// A human-readable account.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nUNWRAP through --config: {} distinct DEK envelope(s), {} unwrap call(s)",
            self.dek_envelopes, self.unwrap_calls
        );
        let _ = writeln!(out, "  readable:   {} object(s)", self.readable_objects);
        let _ = writeln!(out, "  unreadable: {} object(s)", self.unreadable_objects);
        for g in &self.unreadable {
            let _ = writeln!(
                out,
                "\n  UNREADABLE under {}: {} object(s), {} DEK envelope(s) ({})",
                group_label(&g.key_versions),
                g.objects,
                g.dek_envelopes,
                g.reasons
                    .iter()
                    .map(|(kind, n)| format!("{kind}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = writeln!(out, "    {}", g.message);
            for name in &g.first_objects {
                let _ = writeln!(out, "    {name}");
            }
            let more = g.objects.saturating_sub(g.first_objects.len() as u64);
            if more > 0 {
                let _ = writeln!(out, "    ... and {more} more");
            }
        }
        out
    }
}

/// `backend version` for each wrap, `+` between them.
pub fn group_label(key_versions: &[KeyVersionId]) -> String {
    if key_versions.is_empty() {
        return "(not polykms envelopes)".into();
    }
    key_versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Unwraps every distinct DEK envelope of `census` (which must keep requests:
/// [`Census::keeping_requests`]) once through `opener`.
pub async fn unwrap_all(
    census: &Census,
    opener: &dyn EnvelopeOpener,
    settings: UnwrapSettings,
) -> Result<UnwrapReport, AuditError> {
    settings.validate()?;
    let pacer = Pacer {
        interval: interval(settings.qps)?,
        start: Instant::now(),
        next: std::sync::Mutex::new(Duration::ZERO),
    };
    let calls = AtomicU64::new(0);
    let (pacer, calls) = (&pacer, &calls);
    let mut outcomes = futures::stream::iter(census.envelopes())
        .map(|entry| async move {
            let outcome = match (&entry.wraps, &entry.request) {
                (Err(why), _) => Err(UnwrapFailure {
                    kind: "not_polykms".into(),
                    message: format!("not a polykms DEK envelope: {why}"),
                }),
                (Ok(_), Some(dek)) => {
                    pacer.acquire().await;
                    calls.fetch_add(1, Ordering::Relaxed);
                    opener.open(dek).await
                }
                (Ok(_), None) => Err(UnwrapFailure {
                    kind: "internal".into(),
                    message: "the census kept no Decrypt request for this envelope".into(),
                }),
            };
            (entry, outcome)
        })
        .buffer_unordered(settings.concurrency);
    let mut report = UnwrapReport::default();
    let mut groups: BTreeMap<Vec<KeyVersionId>, UnreadableGroup> = BTreeMap::new();
    while let Some((entry, outcome)) = outcomes.next().await {
        report.dek_envelopes += 1;
        match outcome {
            Ok(()) => report.readable_objects += entry.objects,
            Err(failure) => {
                report.unreadable_objects += entry.objects;
                add_unreadable(&mut groups, entry, failure);
            }
        }
    }
    report.unwrap_calls = calls.load(Ordering::Relaxed);
    report.unreadable = groups.into_values().collect();
    Ok(report)
}

fn add_unreadable(
    groups: &mut BTreeMap<Vec<KeyVersionId>, UnreadableGroup>,
    entry: &DekEntry,
    failure: UnwrapFailure,
) {
    let key = entry.wraps.clone().unwrap_or_default();
    let group = groups
        .entry(key.clone())
        .or_insert_with(|| UnreadableGroup {
            key_versions: key,
            ..UnreadableGroup::default()
        });
    group.objects += entry.objects;
    group.dek_envelopes += 1;
    *group.reasons.entry(failure.kind).or_default() += 1;
    if group.message.is_empty() {
        group.message = failure.message;
    }
    // The smallest names, so that the list does not depend on the order of the calls.
    group
        .first_objects
        .extend(entry.first_objects.iter().cloned());
    group.first_objects.sort();
    group.first_objects.dedup();
    group.first_objects.truncate(FIRST_OBJECTS);
}

#[cfg(test)]
#[path = "unwrap_tests.rs"]
mod tests;
