//! The apiserver's side of the KMS v2 gRPC API, over the plugin's unix socket, with the
//! apiserver's habits: one Encrypt per seed, Decrypts cached by the wrapped seed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use polykms_core::proto::v2::key_management_service_client::KeyManagementServiceClient;
use polykms_core::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint, Uri};
use zeroize::Zeroizing;

use crate::envelope::{EncryptedObject, SOURCE_TYPE_HKDF_SEED, Seed};

/// The apiserver's default KMS call timeout is 3 s; a loaded CI machine gets more.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The write state: a seed wrapped under the plugin's current key_id.
pub struct WriteDek {
    /// Encrypts objects.
    pub seed: Seed,
    /// The EncryptedObject fields shared by every write under this seed.
    pub template: EncryptedObject,
}

/// A KMS v2 client with the apiserver's seed handling.
pub struct Kms {
    client: KeyManagementServiceClient<Channel>,
    /// Seeds already unwrapped, keyed by (key_id, wrapped seed).
    read_cache: HashMap<(String, Vec<u8>), Arc<Seed>>,
    /// Decrypt calls made (cache misses).
    pub decrypt_calls: u64,
}

impl Kms {
    /// Connects to the plugin's socket.
    pub async fn connect(socket: PathBuf) -> anyhow::Result<Self> {
        // The URI is never dialled: the connector below opens the socket.
        let channel = Endpoint::try_from("http://localhost")?
            .timeout(CALL_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .context("connecting to the KMS plugin socket")?;
        Ok(Kms {
            client: KeyManagementServiceClient::new(channel),
            read_cache: HashMap::new(),
            decrypt_calls: 0,
        })
    }

    /// Status; fails unless healthy, as the apiserver would refuse to write.
    pub async fn status_key_id(&mut self) -> anyhow::Result<String> {
        let s = self
            .client
            .status(StatusRequest {})
            .await
            .context("Status")?
            .into_inner();
        if s.healthz != "ok" {
            bail!("plugin unhealthy: healthz = {:?}", s.healthz);
        }
        if s.key_id.is_empty() {
            bail!("plugin returned an empty key_id");
        }
        Ok(s.key_id)
    }

    /// A fresh seed wrapped by the plugin; checks the Encrypt key_id equals Status's.
    pub async fn new_write_dek(&mut self) -> anyhow::Result<WriteDek> {
        let status_key_id = self.status_key_id().await?;
        let seed = Seed::generate();
        let resp = self
            .client
            .encrypt(EncryptRequest {
                plaintext: seed.expose().to_vec(),
                uid: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .context("Encrypt")?
            .into_inner();
        if resp.key_id != status_key_id {
            bail!(
                "Encrypt key_id {:?} differs from Status key_id {:?}",
                resp.key_id,
                status_key_id
            );
        }
        if resp.ciphertext.is_empty() || resp.ciphertext.len() > 1024 {
            bail!(
                "Encrypt ciphertext is {} bytes (want 1..=1024)",
                resp.ciphertext.len()
            );
        }
        Ok(WriteDek {
            seed,
            template: EncryptedObject {
                encrypted_data: Vec::new(),
                key_id: resp.key_id,
                encrypted_dek_source: resp.ciphertext,
                annotations: resp.annotations,
                encrypted_dek_source_type: SOURCE_TYPE_HKDF_SEED,
            },
        })
    }

    /// The seed of a stored object: from the cache, or one Decrypt.
    pub async fn seed_for(&mut self, object: &EncryptedObject) -> anyhow::Result<Arc<Seed>> {
        let cache_key = (object.key_id.clone(), object.encrypted_dek_source.clone());
        if let Some(seed) = self.read_cache.get(&cache_key) {
            return Ok(seed.clone());
        }
        self.decrypt_calls += 1;
        let resp = self
            .client
            .decrypt(DecryptRequest {
                ciphertext: object.encrypted_dek_source.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                key_id: object.key_id.clone(),
                annotations: object.annotations.clone(),
            })
            .await
            .with_context(|| format!("Decrypt of a seed under key_id {}", object.key_id))?
            .into_inner();
        let plaintext = Zeroizing::new(resp.plaintext);
        let seed = Arc::new(Seed::from_bytes(&plaintext)?);
        self.read_cache.insert(cache_key, seed.clone());
        Ok(seed)
    }
}
