//! The legacy KMS v1beta1 gRPC service, on the same backends and envelope as v2.
//!
//! v1 has no key_id and no annotations: a multi-wrap envelope must fit in the ciphertext.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use polykms_backend::SecretBytes;
use tonic::{Request, Response, Status};

use crate::error::CoreError;
use crate::grpc_timeout;
use crate::plugin::Plugin;
use crate::proto::v1beta1::key_management_service_server::KeyManagementService;
use crate::proto::v1beta1::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, VersionRequest,
    VersionResponse,
};

const API: &str = "v1beta1";
const VERSION: &str = "v1beta1";

/// `/v1beta1.KeyManagementService`.
#[derive(Debug, Clone)]
pub struct KmsV1Beta1 {
    plugin: Arc<Plugin>,
}

impl KmsV1Beta1 {
    pub fn new(plugin: Arc<Plugin>) -> Self {
        KmsV1Beta1 { plugin }
    }

    fn finish<T>(
        &self,
        method: &'static str,
        started: Instant,
        result: Result<T, CoreError>,
    ) -> Result<Response<T>, Status> {
        let elapsed = started.elapsed();
        match result {
            Ok(v) => {
                self.plugin
                    .metrics()
                    .request_done(API, method, tonic::Code::Ok, elapsed);
                tracing::info!(
                    api = API,
                    method,
                    outcome = "ok",
                    latency_ms = elapsed.as_secs_f64() * 1e3,
                    "request"
                );
                Ok(Response::new(v))
            }
            Err(e) => {
                self.plugin
                    .metrics()
                    .request_done(API, method, e.code(), elapsed);
                tracing::warn!(api = API, method, outcome = e.outcome(), error = %e,
                    latency_ms = elapsed.as_secs_f64() * 1e3, "request failed");
                Err(e.into())
            }
        }
    }
}

fn check_version(version: &str) -> Result<(), CoreError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(CoreError::InvalidRequest(format!(
            "unsupported KMS API version {version:?}; this service speaks {VERSION}"
        )))
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV1Beta1 {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let started = Instant::now();
        let result = check_version(&request.get_ref().version).map(|()| VersionResponse {
            version: VERSION.to_string(),
            runtime_name: "polykms".to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        self.finish("Version", started, result)
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.plugin.metrics().request_started();
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let EncryptRequest { version, plain } = request.into_inner();
        let plain = SecretBytes::new(plain);
        let result = async {
            check_version(&version)?;
            let enc = self.plugin.encrypt(plain, deadline).await?;
            if !enc.annotations.is_empty() {
                return Err(CoreError::Config(
                    "encrypt.with wraps do not fit in one v1beta1 ciphertext (v1beta1 has no annotations)".into(),
                ));
            }
            Ok(EncryptResponse { cipher: enc.ciphertext })
        }
        .await;
        self.finish("Encrypt", started, result)
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.plugin.metrics().request_started();
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let DecryptRequest { version, cipher } = request.into_inner();
        let result = async {
            check_version(&version)?;
            let seed = self
                .plugin
                .decrypt(&cipher, None, &BTreeMap::new(), deadline)
                .await?;
            Ok(DecryptResponse {
                plain: seed.expose().to_vec(),
            })
        }
        .await;
        self.finish("Decrypt", started, result)
    }
}
