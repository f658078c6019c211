//! The floor: a KMS v2 server on the same tonic/h2 stack and socket kind as polykms that does
//! no work (Encrypt and Decrypt return the request bytes), so the client code is identical and
//! the difference is what polykms adds.

use std::path::Path;

use anyhow::Context;
use polykms_core::proto::v2::key_management_service_server::{
    KeyManagementService, KeyManagementServiceServer,
};
use polykms_core::proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// Same limit as polykms's server, so both decode under the same settings.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A KMS v2 service that echoes: ciphertext = plaintext and back.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoKms;

#[tonic::async_trait]
impl KeyManagementService for EchoKms {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: "echo".into(),
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        Ok(Response::new(EncryptResponse {
            ciphertext: request.into_inner().plaintext,
            key_id: "echo".into(),
            annotations: Default::default(),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        Ok(Response::new(DecryptResponse {
            plaintext: request.into_inner().ciphertext,
        }))
    }
}

/// Serves [`EchoKms`] on a unix socket at `socket` until the process is killed, on a
/// multi-threaded runtime with default settings, as `polykms serve` does.
pub fn serve_blocking(socket: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener =
            UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        tonic::transport::Server::builder()
            .add_service(
                KeyManagementServiceServer::new(EchoKms)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .context("serving the echo KMS")
    })
}
