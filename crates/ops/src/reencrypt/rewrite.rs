//! One object rewritten in place, as `kubectl replace` does: GET, then PUT it back unchanged
//! with the resourceVersion it was read at. The apiserver stores it again when it reads it as
//! stale (KMS v2: under another key_id), and answers with the same resourceVersion otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ReencryptError;
use super::api::{self, ApiError, ResourceUrls};
use kube::Client;
use serde_json::Value;

/// The annotation `--force-rewrite` adds and removes again.
pub const NONCE_ANNOTATION: &str = "reencrypt.polykms.io/nonce";

/// 409s tolerated per object: another apiserver of an HA control plane may still write with
/// the old key for up to a minute after a rotation.
const CONFLICT_RETRIES: u32 = 12;
/// 429/5xx/no answer tolerated per request.
const TRANSIENT_RETRIES: u32 = 8;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored again (new resourceVersion).
    Rewritten,
    /// Same resourceVersion: the apiserver did not write it; it was under the current key.
    AlreadyCurrent,
    /// Gone (404) between the list and the rewrite.
    Skipped,
    /// Gave up on this object; the message says why.
    Failed(String),
}

/// A client-side rate limit: at most `qps` requests per second over all workers.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Option<Duration>,
    start: Instant,
    /// The next free slot, as an offset from `start` (saturating: never overflows).
    next: std::sync::Mutex<Duration>,
}

/// The time between two requests at `qps` (None: no limit, `qps` ≤ 0); an error when `qps` is
/// so small that the interval is not a [`Duration`].
pub fn qps_interval(qps: f64) -> Result<Option<Duration>, ReencryptError> {
    if qps <= 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(1.0 / qps)
        .map(Some)
        .map_err(|_| {
            ReencryptError::Config(format!(
                "--qps {qps:e} is too small: the wait between two requests would not fit (0: \
                 no client-side limit)"
            ))
        })
}

impl RateLimiter {
    /// `qps` ≤ 0 means no limit.
    pub fn new(qps: f64) -> Result<Self, ReencryptError> {
        Ok(RateLimiter {
            interval: qps_interval(qps)?,
            start: Instant::now(),
            next: std::sync::Mutex::new(Duration::ZERO),
        })
    }

    /// Takes the next slot: how long to wait for it (None: no limit).
    fn reserve(&self) -> Option<Duration> {
        let interval = self.interval?;
        let now = self.start.elapsed();
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (*next).max(now);
        *next = slot.saturating_add(interval);
        Some(slot - now)
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        if let Some(wait) = self.reserve() {
            // tokio caps a sleep beyond what an Instant can hold instead of overflowing.
            tokio::time::sleep(wait).await;
        }
    }
}

/// What every worker shares.
#[derive(Clone)]
pub struct Rewriter {
    /// The API client.
    pub client: Client,
    /// Paths of the resource.
    pub urls: ResourceUrls,
    /// `--qps`.
    pub limiter: Arc<RateLimiter>,
    /// `--force-rewrite`.
    pub force: bool,
}

/// Sends a request at the `--qps` pace, retrying 429/5xx/no answer up to `TRANSIENT_RETRIES`
/// times with backoff (Retry-After when given): the rules of every request of a run.
pub async fn send<T: serde::de::DeserializeOwned>(
    client: &Client,
    limiter: &RateLimiter,
    build: impl Fn() -> http::Request<Vec<u8>>,
) -> Result<T, ApiError> {
    let mut backoff = BACKOFF_START;
    let mut attempt = 0;
    loop {
        limiter.acquire().await;
        match api::call::<T>(client, build()).await {
            Err(e) if e.is_transient() && attempt < TRANSIENT_RETRIES => {
                attempt += 1;
                let wait = e
                    .retry_after
                    .unwrap_or(backoff)
                    .min(Duration::from_secs(60));
                tracing::debug!(
                    code = e.code,
                    wait_ms = wait.as_millis() as u64,
                    "retrying: {e}"
                );
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            other => return other,
        }
    }
}

/// A failure that must stop the whole run (401/403: RBAC or credentials).
#[derive(Debug, Clone)]
pub struct Denied {
    /// The verb RBAC must allow.
    pub verb: &'static str,
    /// The server's answer.
    pub error: ApiError,
}

impl Rewriter {
    /// Sends a request, retrying 429/5xx/no answer with backoff (Retry-After when given).
    pub async fn send<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn() -> http::Request<Vec<u8>>,
    ) -> Result<T, ApiError> {
        send(&self.client, &self.limiter, build).await
    }

    /// Rewrites one object.
    pub async fn rewrite(&self, namespace: Option<&str>, name: &str) -> Result<Outcome, Denied> {
        let mut backoff = BACKOFF_START;
        for _ in 0..=CONFLICT_RETRIES {
            let step = if self.force {
                self.force_once(namespace, name).await
            } else {
                self.replace_once(namespace, name).await
            };
            match step {
                Ok(outcome) => return Ok(outcome),
                Err(Step::Conflict) => {
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(Step::Gone) => return Ok(Outcome::Skipped),
                Err(Step::Denied(d)) => return Err(d),
                Err(Step::Failed(m)) => return Ok(Outcome::Failed(m)),
            }
        }
        Ok(Outcome::Failed(format!(
            "still conflicting after {CONFLICT_RETRIES} retries (something keeps writing it)"
        )))
    }

    async fn get(&self, namespace: Option<&str>, name: &str) -> Result<Value, Step> {
        self.send(|| self.urls.get(namespace, name))
            .await
            .map_err(|e| Step::from_error(e, "get"))
    }

    async fn put(
        &self,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, Step> {
        self.send(|| self.urls.replace(namespace, name, object))
            .await
            .map_err(|e| Step::from_error(e, "update"))
    }

    async fn replace_once(&self, namespace: Option<&str>, name: &str) -> Result<Outcome, Step> {
        let object = self.get(namespace, name).await?;
        let before = resource_version(&object);
        let after = self.put(namespace, name, &object).await?;
        if before.is_some() && resource_version(&after) == before {
            Ok(Outcome::AlreadyCurrent)
        } else {
            Ok(Outcome::Rewritten)
        }
    }

    /// Two writes that each change the object, so the apiserver stores it whatever its KMS
    /// version: add the nonce annotation, then remove it again (the object ends as it was).
    async fn force_once(&self, namespace: Option<&str>, name: &str) -> Result<Outcome, Step> {
        let mut object = self.get(namespace, name).await?;
        if annotation(&object).is_none() {
            // Any value changes the object; randomness only keeps concurrent runs apart.
            let nonce = format!(
                "{:014x}",
                (polykms_backend::crypto::random_unit() * (1u64 << 53) as f64) as u64
            );
            set_annotation(&mut object, Some(nonce));
            object = self.put(namespace, name, &object).await?;
        }
        // A conflict from here on retries from a fresh GET, which finds the annotation and only
        // removes it.
        set_annotation(&mut object, None);
        self.put(namespace, name, &object).await?;
        Ok(Outcome::Rewritten)
    }
}

/// Why one attempt at an object did not finish.
enum Step {
    Conflict,
    Gone,
    Denied(Denied),
    Failed(String),
}

impl Step {
    fn from_error(e: ApiError, verb: &'static str) -> Self {
        match e.code {
            409 => Step::Conflict,
            404 => Step::Gone,
            401 | 403 => Step::Denied(Denied { verb, error: e }),
            _ => Step::Failed(format!("{verb}: {e}")),
        }
    }
}

fn resource_version(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
}

fn annotation(object: &Value) -> Option<&str> {
    object["metadata"]["annotations"][NONCE_ANNOTATION].as_str()
}

fn set_annotation(object: &mut Value, value: Option<String>) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match value {
        Some(v) => {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if !annotations.is_object() {
                *annotations = Value::Object(Default::default());
            }
            if let Some(a) = annotations.as_object_mut() {
                a.insert(NONCE_ANNOTATION.into(), Value::String(v));
            }
        }
        None => {
            let now_empty = match metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                Some(a) => {
                    a.remove(NONCE_ANNOTATION);
                    a.is_empty()
                }
                None => false,
            };
            if now_empty {
                metadata.remove("annotations");
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    polykms_backend::crypto::jitter(d, 0.5, 1.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_qps_too_small_for_a_duration_is_a_config_error_naming_the_flag() {
        for qps in [1e-20, 1e-300, f64::MIN_POSITIVE] {
            match RateLimiter::new(qps) {
                Err(ReencryptError::Config(m)) => assert!(m.contains("--qps"), "{m}"),
                other => panic!("{qps}: {other:?}"),
            }
        }
        assert_eq!(qps_interval(0.0).ok(), Some(None));
        assert_eq!(
            qps_interval(4.0).ok(),
            Some(Some(Duration::from_millis(250)))
        );
        // The largest intervals that are Durations: slots saturate instead of overflowing.
        let limiter = RateLimiter::new(1e-19).expect("1e19 s is a Duration");
        assert_eq!(limiter.reserve(), Some(Duration::ZERO));
        for _ in 0..1000 {
            assert!(limiter.reserve().is_some());
        }
        assert!(RateLimiter::new(0.0).expect("no limit").reserve().is_none());
    }

    #[test]
    fn nonce_annotation_is_added_and_removed_leaving_the_object_as_it_was() {
        for original in [
            json!({"metadata": {"name": "a"}}),
            json!({"metadata": {"name": "a", "annotations": {"keep": "me"}}}),
        ] {
            let mut o = original.clone();
            set_annotation(&mut o, Some("n1".into()));
            assert_eq!(annotation(&o), Some("n1"));
            set_annotation(&mut o, None);
            assert_eq!(o, original);
        }
    }

    #[test]
    fn conflicts_and_deletes_are_retried_or_skipped_and_rbac_denials_stop() {
        let e = |code| ApiError {
            code,
            reason: String::new(),
            message: "m".into(),
            retry_after: None,
            continue_token: None,
        };
        assert!(matches!(Step::from_error(e(409), "update"), Step::Conflict));
        assert!(matches!(Step::from_error(e(404), "get"), Step::Gone));
        assert!(matches!(
            Step::from_error(e(403), "update"),
            Step::Denied(Denied { verb: "update", .. })
        ));
        assert!(matches!(
            Step::from_error(e(422), "update"),
            Step::Failed(_)
        ));
        assert!(e(429).is_transient() && e(503).is_transient() && e(0).is_transient());
        assert!(!e(409).is_transient() && e(401).is_denied());
    }
}
