//! Serving the KMS APIs on the unix socket, with graceful drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::authority::AuthorityFixStream;
use crate::peer::{PeerCheck, PeerPolicy};
use crate::plugin::Plugin;
use crate::proto::{v1beta1, v2};
use crate::service_v1::KmsV1Beta1;
use crate::service_v2::KmsV2;
use crate::socket::BoundSocket;

/// Largest gRPC message accepted: a Decrypt carries ≤ 1 KiB of ciphertext and ≤ 32 KiB of
/// annotations, so anything near this is hostile.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Which KMS APIs the socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V2,
    V1Beta1,
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("serving the KMS socket: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `apis` on `socket` to the callers `peers` allows until `shutdown` resolves, then lets
/// in-flight calls finish and removes the socket file. `serving` is true while the socket
/// accepts calls (for /readyz).
pub async fn serve(
    plugin: Arc<Plugin>,
    socket: BoundSocket,
    apis: &[Api],
    peers: PeerPolicy,
    serving: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let peers = Arc::new(peers);
    let check = |api| {
        let check = PeerCheck::new(peers.clone(), plugin.metrics().clone(), api);
        move |request| check.intercept(request)
    };
    let v2 = apis.contains(&Api::V2).then(|| {
        InterceptedService::new(
            v2::key_management_service_server::KeyManagementServiceServer::new(KmsV2::new(
                plugin.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            check("v2"),
        )
    });
    let v1 = apis.contains(&Api::V1Beta1).then(|| {
        InterceptedService::new(
            v1beta1::key_management_service_server::KeyManagementServiceServer::new(
                KmsV1Beta1::new(plugin.clone()),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
            check("v1beta1"),
        )
    });
    let (listener, guard) = socket.into_parts();
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFixStream::new));
    tracing::info!(socket = %guard.spec(), ?apis, peers = ?*peers, "serving KMS API");
    serving.store(true, Ordering::SeqCst);
    let result = Server::builder()
        .add_optional_service(v2)
        .add_optional_service(v1)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            serving.store(false, Ordering::SeqCst);
            tracing::info!("shutting down: draining in-flight calls");
        })
        .await;
    serving.store(false, Ordering::SeqCst);
    guard.cleanup();
    result.map_err(ServeError::from)
}
