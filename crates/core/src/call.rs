//! One KMS call being served: counted in flight while it runs, then recorded once — a
//! metrics sample and a log line with the apiserver's uid, method, backend, outcome, latency
//! (identical failures repeated by a retrying client are summarised: [`crate::repeated`]).

use std::borrow::Cow;
use std::time::Instant;

use tonic::Status;

use crate::error::CoreError;
use crate::metrics::InFlight;
use crate::plugin::Plugin;
use crate::repeated::{self, FailureKind, Verdict};

/// Times and records a call; created at the start of a handler.
pub struct Call<'a> {
    plugin: &'a Plugin,
    api: &'static str,
    method: &'static str,
    uid: String,
    started: Instant,
    _in_flight: InFlight<'a>,
}

/// What the log line says about a successful call (borrowed from the answer: no copies).
#[derive(Debug, Default)]
pub struct Done<'a> {
    pub backend: Cow<'a, str>,
    pub key_id: Cow<'a, str>,
}

impl<'a> Done<'a> {
    /// Names of the backends that wrapped, comma-separated.
    pub fn backends(names: &'a [String]) -> Cow<'a, str> {
        match names {
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.join(",")),
        }
    }
}

impl<'a> Call<'a> {
    pub fn start(
        plugin: &'a Plugin,
        api: &'static str,
        method: &'static str,
        uid: impl Into<String>,
    ) -> Self {
        Call {
            plugin,
            api,
            method,
            uid: uid.into(),
            started: Instant::now(),
            _in_flight: plugin.metrics().request_started(),
        }
    }

    /// Records the outcome and turns an error into its gRPC status.
    pub fn finish<T>(
        self,
        result: Result<T, CoreError>,
        done: impl for<'v> FnOnce(&'v T) -> Done<'v>,
    ) -> Result<T, Status> {
        let elapsed = self.started.elapsed();
        let latency_ms = millis_to_the_microsecond(elapsed);
        let (api, method, uid) = (self.api, self.method, loggable(&self.uid));
        match result {
            Ok(value) => {
                self.plugin
                    .metrics()
                    .request_done(api, method, tonic::Code::Ok, elapsed);
                {
                    let d = done(&value);
                    tracing::info!(api, uid, method, backend = %d.backend, key_id = loggable(&d.key_id), outcome = "ok",
                        latency_ms, "request");
                }
                Ok(value)
            }
            Err(e) => {
                self.plugin
                    .metrics()
                    .request_done(api, method, e.code(), elapsed);
                let kind = FailureKind {
                    api,
                    method,
                    backend: match &e {
                        CoreError::Backend { backend, .. } => backend.clone(),
                        _ => "-".into(),
                    },
                    outcome: e.outcome(),
                };
                let error = e.to_string();
                match repeated::record(&kind, &error) {
                    Verdict::Log => {
                        tracing::warn!(api, uid, method, backend = %kind.backend, outcome = kind.outcome, error = %error, latency_ms, "request failed")
                    }
                    Verdict::Counted => {
                        tracing::debug!(api, uid, method, backend = %kind.backend, outcome = kind.outcome, error = %error, latency_ms,
                            "request failed (repeat: counted for the next summary)")
                    }
                }
                Err(e.into())
            }
        }
    }
}

/// A client-supplied string cut to a loggable length (uids and key_ids are public, but may be
/// junk from a hostile client).
pub fn loggable(s: &str) -> &str {
    let mut end = s.len().min(128);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Milliseconds rounded to the microsecond, as a person reads a log line: 41.126 µs is
/// `0.041`, not `0.041125999999999996` (a microsecond count divided by 1000 prints short).
fn millis_to_the_microsecond(elapsed: std::time::Duration) -> f64 {
    elapsed.as_micros() as f64 / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_logged_to_the_microsecond() {
        let ms = millis_to_the_microsecond(std::time::Duration::from_nanos(41_126));
        assert_eq!(ms.to_string(), "0.041");
        let ms = millis_to_the_microsecond(std::time::Duration::from_micros(1_500_250));
        assert_eq!(ms.to_string(), "1500.25");
    }
}
