//! The legacy KMS v1beta1 gRPC service, on the same backends and envelope as v2.
//!
//! v1 has no key_id and no annotations: a multi-wrap envelope must fit in the ciphertext.

use std::collections::BTreeMap;
use std::sync::Arc;

use polykms_backend::SecretBytes;
use tonic::{Request, Response, Status};

use crate::call::{Call, Done};
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
}

fn check_version(version: &str) -> Result<(), CoreError> {
    if version == VERSION {
        Ok(())
    } else {
        Err(CoreError::InvalidRequest(format!(
            "unsupported KMS API version {:?}; this service speaks {VERSION}",
            crate::call::loggable(version)
        )))
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV1Beta1 {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let call = Call::start(&self.plugin, API, "Version", "");
        let result = check_version(&request.get_ref().version).map(|()| VersionResponse {
            version: VERSION.to_string(),
            runtime_name: "polykms".to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        });
        call.finish(result, |_| Done::default()).map(Response::new)
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let EncryptRequest { version, plain } = request.into_inner();
        let call = Call::start(&self.plugin, API, "Encrypt", "");
        let plain = SecretBytes::new(plain);
        let result = async {
            check_version(&version)?;
            let enc = self.plugin.encrypt(plain, deadline).await?;
            if !enc.annotations.is_empty() {
                return Err(CoreError::Config(
                    "encrypt.with wraps do not fit in one v1beta1 ciphertext (v1beta1 has no annotations)".into(),
                ));
            }
            Ok(enc)
        }
        .await;
        let enc = call.finish(result, |e| Done {
            backend: Done::backends(&e.backends),
            key_id: e.key_id.as_str().into(),
        })?;
        Ok(Response::new(EncryptResponse {
            cipher: enc.ciphertext,
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let deadline = self.plugin.deadline(grpc_timeout::of(&request));
        let DecryptRequest { version, cipher } = request.into_inner();
        let call = Call::start(&self.plugin, API, "Decrypt", "");
        let result = async {
            check_version(&version)?;
            self.plugin
                .decrypt(&cipher, None, &BTreeMap::new(), deadline)
                .await
        }
        .await;
        let out = call.finish(result, |u| Done {
            backend: u.backend.as_str().into(),
            key_id: "".into(),
        })?;
        Ok(Response::new(DecryptResponse {
            plain: out.seed.expose().to_vec(),
        }))
    }
}
