//! The KMS v2 gRPC service: the apiserver's messages in, plugin calls, the contract's messages out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use polykms_backend::SecretBytes;
use tonic::{Request, Response, Status};

use crate::call::{Call, Done};
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
        // Polled every few seconds by every apiserver: counted, logged at debug only.
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
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let EncryptRequest { plaintext, uid } = request.into_inner();
        let call = Call::start(&self.plugin, API, "Encrypt", uid);
        let result = self
            .plugin
            .encrypt(SecretBytes::new(plaintext), deadline)
            .await;
        let enc = call.finish(result, |e| Done {
            backend: Done::backends(&e.backends),
            key_id: e.key_id.as_str().into(),
        })?;
        Ok(Response::new(EncryptResponse {
            ciphertext: enc.ciphertext,
            key_id: enc.key_id,
            annotations: enc.annotations.into_iter().collect(),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let DecryptRequest {
            ciphertext,
            uid,
            key_id,
            annotations,
        } = request.into_inner();
        let call = Call::start(&self.plugin, API, "Decrypt", uid);
        let annotations: BTreeMap<String, Vec<u8>> = annotations.into_iter().collect();
        let result = self
            .plugin
            .decrypt(&ciphertext, Some(&key_id), &annotations, deadline)
            .await;
        let out = call.finish(result, move |u| Done {
            backend: u.backend.as_str().into(),
            key_id: key_id.into(),
        })?;
        Ok(Response::new(DecryptResponse {
            plaintext: out.seed.expose().to_vec(),
        }))
    }
}
