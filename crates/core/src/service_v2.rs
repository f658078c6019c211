//! The KMS v2 gRPC service: validation at the edge, logging with the apiserver's uid, metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use polykms_backend::SecretBytes;
use tonic::{Request, Response, Status};

use crate::grpc_timeout;
use crate::plugin::Plugin;
use crate::proto::v2::key_management_service_server::KeyManagementService;
use crate::proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};

const API: &str = "v2";

/// `/v2.KeyManagementService`.
#[derive(Debug, Clone)]
pub struct KmsV2 {
    plugin: Arc<Plugin>,
}

impl KmsV2 {
    pub fn new(plugin: Arc<Plugin>) -> Self {
        KmsV2 { plugin }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV2 {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let started = Instant::now();
        let report = self.plugin.status();
        self.plugin
            .metrics()
            .request_done(API, "Status", tonic::Code::Ok, started.elapsed());
        tracing::debug!(method = "Status", healthz = %report.healthz, key_id = %report.key_id, "status");
        Ok(Response::new(StatusResponse {
            version: report.version.to_string(),
            healthz: report.healthz,
            key_id: report.key_id,
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.plugin.metrics().request_started();
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let EncryptRequest { plaintext, uid } = request.into_inner();
        let plaintext = SecretBytes::new(plaintext);
        let result = self.plugin.encrypt(plaintext, deadline).await;
        let elapsed = started.elapsed();
        match result {
            Ok(enc) => {
                self.plugin
                    .metrics()
                    .request_done(API, "Encrypt", tonic::Code::Ok, elapsed);
                tracing::info!(uid = %uid, method = "Encrypt", backend = %enc.backends.join(","), key_id = %enc.key_id,
                    outcome = "ok", latency_ms = elapsed.as_secs_f64() * 1e3, "request");
                Ok(Response::new(EncryptResponse {
                    ciphertext: enc.ciphertext,
                    key_id: enc.key_id,
                    annotations: enc.annotations.into_iter().collect(),
                }))
            }
            Err(e) => {
                self.plugin
                    .metrics()
                    .request_done(API, "Encrypt", e.code(), elapsed);
                tracing::warn!(uid = %uid, method = "Encrypt", outcome = e.outcome(), error = %e,
                    latency_ms = elapsed.as_secs_f64() * 1e3, "request failed");
                Err(e.into())
            }
        }
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.plugin.metrics().request_started();
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let DecryptRequest {
            ciphertext,
            uid,
            key_id,
            annotations,
        } = request.into_inner();
        let annotations: BTreeMap<String, Vec<u8>> = annotations.into_iter().collect();
        let result = self
            .plugin
            .decrypt(&ciphertext, Some(&key_id), &annotations, deadline)
            .await;
        let elapsed = started.elapsed();
        match result {
            Ok(seed) => {
                self.plugin
                    .metrics()
                    .request_done(API, "Decrypt", tonic::Code::Ok, elapsed);
                tracing::info!(uid = %uid, method = "Decrypt", key_id = %key_id, outcome = "ok",
                    latency_ms = elapsed.as_secs_f64() * 1e3, "request");
                Ok(Response::new(DecryptResponse {
                    plaintext: seed.expose().to_vec(),
                }))
            }
            Err(e) => {
                self.plugin
                    .metrics()
                    .request_done(API, "Decrypt", e.code(), elapsed);
                tracing::warn!(uid = %uid, method = "Decrypt", key_id = %truncate(&key_id), outcome = e.outcome(),
                    error = %e, latency_ms = elapsed.as_secs_f64() * 1e3, "request failed");
                Err(e.into())
            }
        }
    }
}

/// A key_id from a request, cut to a loggable length (it is public, but may be junk).
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
