//! Prometheus metrics, all prefixed `polykms_`, with bounded labels: API, method, gRPC code,
//! configured backend names, error kinds. Never a uid, never key material.

use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    api: &'static str,
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    api: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendCallLabels {
    backend: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyIdLabels {
    key_id: String,
    /// As kube-apiserver labels its `apiserver_envelope_encryption_key_id_hash_*` metrics, so
    /// a dashboard can join the two.
    key_id_hash: String,
    backend: String,
    key_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LifecycleLabels {
    backend: String,
    state: &'static str,
}

/// The `state` of `polykms_key_lifecycle` when the key store reports nothing to worry about.
pub const LIFECYCLE_OK: &str = "ok";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// "true" when the cryptographic module runs in FIPS mode (a FIPS build that started).
    fips: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The plugin's metrics and the registry they are exposed from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<MethodLabels, Histogram>,
    in_flight: Gauge,
    backend_calls: Family<BackendCallLabels, Counter>,
    backend_duration: Family<BackendCallLabels, Histogram>,
    backend_healthy: Family<BackendLabels, Gauge>,
    backend_last_success: Family<BackendLabels, FloatGauge>,
    credential_expiry: Family<BackendLabels, FloatGauge>,
    key_id_info: Family<KeyIdLabels, Gauge>,
    key_lifecycle: Family<LifecycleLabels, Gauge>,
    key_deletion: Family<BackendLabels, FloatGauge>,
    key_id_changes: Counter,
    coalesced: Counter,
    unwrap_cache_hits: Counter,
    legacy_envelopes: Counter,
    peer_refused: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    /// (api, method, code) → that request counter and the (api, method) histogram.
    request_series: SeriesCache<(&'static str, &'static str, &'static str)>,
    /// (backend, operation, outcome) → that counter and histogram.
    backend_series: SeriesCache<(String, &'static str, &'static str)>,
}

/// Handles (shared with their family) of the series a call updates, found by a short scan
/// instead of prometheus-client's `Family::get_or_create`, which hashes the whole label set
/// with SipHash (and allocates the backend name) on every call. Keys are few: label values are
/// bounded (API, method, code; configured backends, operation, outcome kind).
#[derive(Debug, Default)]
struct SeriesCache<K> {
    entries: RwLock<Vec<(K, Counter, Histogram)>>,
}

impl<K> SeriesCache<K> {
    fn observe(
        &self,
        matches: impl Fn(&K) -> bool,
        create: impl FnOnce() -> (K, Counter, Histogram),
        seconds: f64,
    ) {
        {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, counter, histogram)) = entries.iter().find(|(k, _, _)| matches(k)) {
                counter.inc();
                histogram.observe(seconds);
                return;
            }
        }
        let (key, counter, histogram) = create();
        counter.inc();
        histogram.observe(seconds);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if !entries.iter().any(|(k, _, _)| matches(k)) {
            entries.push((key, counter, histogram));
        }
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("polykms");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "KMS API requests by API, method and gRPC code",
            requests.clone(),
        );
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "KMS API request latency by API and method",
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "KMS API requests being served now",
            in_flight.clone(),
        );
        let backend_calls = Family::<BackendCallLabels, Counter>::default();
        registry.register(
            "backend_requests",
            "Calls to key stores by backend, operation and outcome kind",
            backend_calls.clone(),
        );
        let backend_duration = Family::<BackendCallLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "backend_request_duration_seconds",
            "Key store call latency by backend, operation and outcome kind",
            backend_duration.clone(),
        );
        let backend_healthy = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "backend_healthy",
            "1 if the backend's last health probe passed",
            backend_healthy.clone(),
        );
        let backend_last_success = Family::<BackendLabels, FloatGauge>::default();
        registry.register(
            "backend_last_successful_probe_timestamp_seconds",
            "Unix time of the backend's last passed health probe",
            backend_last_success.clone(),
        );
        let credential_expiry = Family::<BackendLabels, FloatGauge>::default();
        registry.register(
            "backend_credential_expiry_seconds",
            "Seconds until the backend's credentials expire (backends with expiring credentials)",
            credential_expiry.clone(),
        );
        let key_id_info = Family::<KeyIdLabels, Gauge>::default();
        registry.register(
            "key_id_info",
            "Current key_id and the key version of each encrypt backend behind it",
            key_id_info.clone(),
        );
        let key_lifecycle = Family::<LifecycleLabels, Gauge>::default();
        registry.register(
            "key_lifecycle",
            "Lifecycle of the keys a backend needs, as its key store reports it: 1 for each state that applies (ok when none does)",
            key_lifecycle.clone(),
        );
        let key_deletion = Family::<BackendLabels, FloatGauge>::default();
        registry.register(
            "key_deletion_timestamp_seconds",
            "When the key store deletes, destroys or expires a key this backend needs (Unix time; absent when nothing is scheduled)",
            key_deletion.clone(),
        );
        let key_id_changes = Counter::default();
        registry.register(
            "key_id_changes",
            "Times the Status key_id changed",
            key_id_changes.clone(),
        );
        let coalesced = Counter::default();
        registry.register(
            "decrypt_coalesced",
            "Decrypt calls answered by sharing another identical call's backend unwrap",
            coalesced.clone(),
        );
        let unwrap_cache_hits = Counter::default();
        registry.register(
            "unwrap_cache_hits",
            "Decrypt calls answered from the unwrap cache",
            unwrap_cache_hits.clone(),
        );
        let legacy_envelopes = Counter::default();
        registry.register(
            "legacy_envelopes",
            "Decrypt calls of version-1 multi-wrap envelopes (wraps not bound to each other): re-encrypt",
            legacy_envelopes.clone(),
        );
        let peer_refused = Counter::default();
        registry.register(
            "peer_refused",
            "Calls refused by the peer credential check ([server] allowed_peers and the lists it names)",
            peer_refused.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        // Both outcomes exist from the start, so `increase()` sees the first failure.
        for outcome in ["success", "failure"] {
            drop(reloads.get_or_create(&OutcomeLabels { outcome }));
        }
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            reloads.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                fips: if polykms_backend::crypto::module().fips_mode {
                    "true"
                } else {
                    "false"
                },
            })
            .set(1);
        registry.register("build_info", "polykms build information", build);
        Metrics {
            registry,
            requests,
            request_duration,
            in_flight,
            backend_calls,
            backend_duration,
            backend_healthy,
            backend_last_success,
            credential_expiry,
            key_id_info,
            key_lifecycle,
            key_deletion,
            key_id_changes,
            coalesced,
            unwrap_cache_hits,
            legacy_envelopes,
            peer_refused,
            reloads,
            request_series: SeriesCache::default(),
            backend_series: SeriesCache::default(),
        }
    }

    /// The registry in OpenMetrics text form.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn request_done(
        &self,
        api: &'static str,
        method: &'static str,
        code: tonic::Code,
        elapsed: Duration,
    ) {
        let code = code_label(code);
        self.request_series.observe(
            |k| *k == (api, method, code),
            || {
                let labels = RequestLabels { api, method, code };
                (
                    (api, method, code),
                    self.requests.get_or_create(&labels).clone(),
                    self.request_duration
                        .get_or_create(&MethodLabels { api, method })
                        .clone(),
                )
            },
            elapsed.as_secs_f64(),
        );
    }

    pub fn backend_call(
        &self,
        backend: &str,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.backend_series.observe(
            |(b, o, r)| b == backend && *o == operation && *r == outcome,
            || {
                let labels = BackendCallLabels {
                    backend: backend.to_string(),
                    operation,
                    outcome,
                };
                (
                    (backend.to_string(), operation, outcome),
                    self.backend_calls.get_or_create(&labels).clone(),
                    self.backend_duration.get_or_create(&labels).clone(),
                )
            },
            elapsed.as_secs_f64(),
        );
    }

    pub fn backend_health(&self, backend: &str, healthy: bool, expiry: Option<SystemTime>) {
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        self.backend_healthy
            .get_or_create(&labels)
            .set(healthy as i64);
        if healthy {
            self.backend_last_success
                .get_or_create(&labels)
                .set(unix_seconds(SystemTime::now()));
        }
        if let Some(expiry) = expiry {
            let left = expiry
                .duration_since(SystemTime::now())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.credential_expiry.get_or_create(&labels).set(left);
        }
    }

    /// Replaces the key_id info series; counts a change when `changed`.
    pub fn key_id(&self, key_id: &str, versions: &[(String, String)], changed: bool) {
        self.key_id_info.clear();
        let key_id_hash = apiserver_key_id_hash(key_id);
        for (backend, key_version) in versions {
            let labels = KeyIdLabels {
                key_id: key_id.to_string(),
                key_id_hash: key_id_hash.clone(),
                backend: backend.clone(),
                key_version: key_version.clone(),
            };
            self.key_id_info.get_or_create(&labels).set(1);
        }
        if changed {
            self.key_id_changes.inc();
        }
    }

    /// Counts a key_id change made by a configuration reload.
    pub fn key_id_changed(&self) {
        self.key_id_changes.inc();
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn unwrap_cache_hit(&self) {
        self.unwrap_cache_hits.inc();
    }

    pub fn legacy_envelope(&self) {
        self.legacy_envelopes.inc();
    }

    /// Sets `polykms_key_lifecycle` (every state, 0 or 1) and the deletion timestamp of
    /// `backend`.
    pub fn key_lifecycle(&self, backend: &str, lifecycle: &polykms_backend::KeyLifecycle) {
        let states = polykms_backend::LifecycleState::ALL
            .iter()
            .map(|s| (s.as_str(), lifecycle.has(*s)));
        let ok = (LIFECYCLE_OK, lifecycle.findings.is_empty());
        for (state, on) in std::iter::once(ok).chain(states) {
            self.key_lifecycle
                .get_or_create(&LifecycleLabels {
                    backend: backend.to_string(),
                    state,
                })
                .set(on as i64);
        }
        let labels = BackendLabels {
            backend: backend.to_string(),
        };
        match lifecycle.next_deletion() {
            Some(at) => {
                self.key_deletion
                    .get_or_create(&labels)
                    .set(unix_seconds(at));
            }
            None => {
                self.key_deletion.remove(&labels);
            }
        }
    }

    /// A call refused by the peer check.
    pub fn peer_refused(&self) {
        self.peer_refused.inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// Drops per-backend series of backends that are no longer configured.
    pub fn retain_backends(&self, names: &[String]) {
        for name in self.known_backends() {
            if !names.contains(&name) {
                let labels = BackendLabels { backend: name };
                self.backend_healthy.remove(&labels);
                self.backend_last_success.remove(&labels);
                self.credential_expiry.remove(&labels);
                self.key_deletion.remove(&labels);
                let states = polykms_backend::LifecycleState::ALL
                    .iter()
                    .map(|s| s.as_str());
                for state in std::iter::once(LIFECYCLE_OK).chain(states) {
                    self.key_lifecycle.remove(&LifecycleLabels {
                        backend: labels.backend.clone(),
                        state,
                    });
                }
            }
        }
    }

    fn known_backends(&self) -> Vec<String> {
        // Family has no iterator; parse the names back from our own exposition.
        self.encode()
            .lines()
            .filter_map(|l| l.strip_prefix("polykms_backend_healthy{backend=\""))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// kube-apiserver's label for a key_id: `sha256:` and the hex SHA-256 of the key_id (empty
/// for an empty key_id), as `getHash` in its envelope metrics computes it.
pub fn apiserver_key_id_hash(key_id: &str) -> String {
    if key_id.is_empty() {
        return String::new();
    }
    format!(
        "sha256:{}",
        hex::encode(polykms_backend::crypto::sha256(key_id.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_prefixed_metrics_and_bounded_labels() {
        let m = Metrics::new();
        m.request_done("v2", "Encrypt", tonic::Code::Ok, Duration::from_millis(2));
        m.backend_call("local", "wrap", "ok", Duration::from_micros(50));
        m.backend_health("local", true, None);
        m.key_id("pk1-abc", &[("local".into(), "local:00".into())], true);
        let text = m.encode();
        for name in [
            "polykms_requests_total{api=\"v2\",method=\"Encrypt\",code=\"OK\"} 1",
            "polykms_request_duration_seconds_bucket",
            "polykms_backend_requests_total{backend=\"local\",operation=\"wrap\",outcome=\"ok\"} 1",
            "polykms_backend_healthy{backend=\"local\"} 1",
            "polykms_key_id_info{key_id=\"pk1-abc\",key_id_hash=\"sha256:ff835b068571d895524b2fc241a5f2bab350dd82709f480730d88846675e7557\",backend=\"local\",key_version=\"local:00\"} 1",
            "polykms_key_id_changes_total 1",
            "polykms_build_info{version=",
            if polykms_backend::crypto::FIPS_BUILD {
                ",fips=\"true\"} 1"
            } else {
                ",fips=\"false\"} 1"
            },
            "polykms_in_flight_requests 0",
            "polykms_config_reloads_total{outcome=\"success\"} 0",
            "polykms_config_reloads_total{outcome=\"failure\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn removed_backends_lose_their_series() {
        let m = Metrics::new();
        m.backend_health("a", true, None);
        m.backend_health("b", false, None);
        m.retain_backends(&["b".to_string()]);
        let text = m.encode();
        assert!(!text.contains("backend=\"a\""));
        assert!(text.contains("polykms_backend_healthy{backend=\"b\"} 0"));
    }

    #[test]
    fn repeated_calls_count_into_one_series_per_label_set() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.request_done("v2", "Decrypt", tonic::Code::Ok, Duration::from_millis(1));
        }
        m.request_done(
            "v2",
            "Decrypt",
            tonic::Code::Unavailable,
            Duration::from_millis(1),
        );
        m.request_done(
            "v1beta1",
            "Decrypt",
            tonic::Code::Ok,
            Duration::from_secs(1),
        );
        for _ in 0..2 {
            m.backend_call("a", "unwrap", "ok", Duration::from_micros(50));
        }
        m.backend_call("b", "unwrap", "ok", Duration::from_micros(50));
        m.backend_call("a", "unwrap", "unavailable", Duration::from_micros(50));
        let text = m.encode();
        for line in [
            "polykms_requests_total{api=\"v2\",method=\"Decrypt\",code=\"OK\"} 3",
            "polykms_requests_total{api=\"v2\",method=\"Decrypt\",code=\"Unavailable\"} 1",
            "polykms_requests_total{api=\"v1beta1\",method=\"Decrypt\",code=\"OK\"} 1",
            "polykms_request_duration_seconds_count{api=\"v2\",method=\"Decrypt\"} 4",
            "polykms_request_duration_seconds_count{api=\"v1beta1\",method=\"Decrypt\"} 1",
            "polykms_backend_requests_total{backend=\"a\",operation=\"unwrap\",outcome=\"ok\"} 2",
            "polykms_backend_requests_total{backend=\"b\",operation=\"unwrap\",outcome=\"ok\"} 1",
            "polykms_backend_requests_total{backend=\"a\",operation=\"unwrap\",outcome=\"unavailable\"} 1",
            "polykms_backend_request_duration_seconds_count{backend=\"a\",operation=\"unwrap\",outcome=\"ok\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
