//! The emulator's commands: create objects, rewrite them under the current key (the
//! `kubectl replace` step of a rotation), read them all back.
//!
//! Objects are small JSON Secrets. The apiserver stores Secrets as protobuf, but encryption
//! treats the bytes as opaque; JSON lets `read-all` check that every decrypted object is the
//! one stored under its key. Unencrypted objects get the `k8s\0` magic of the apiserver's
//! protobuf encoding, so they look to `polykms audit` like identity-stored Secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rand::RngCore;
use serde_json::json;

use crate::envelope::{self, EncryptedObject};
use crate::kms::Kms;
use crate::store::Store;

pub const IDENTITY_MAGIC: &[u8] = b"k8s\x00";
const MAX_LISTED: usize = 100;
const CONFLICT_RETRIES: usize = 5;

/// Connections and settings shared by the commands.
pub struct Context {
    /// The KMS plugin, when the command needs it.
    pub kms: Option<Kms>,
    /// etcd, when the command needs it.
    pub store: Option<Store>,
    /// The EncryptionConfiguration provider name.
    pub provider: String,
}

impl Context {
    /// Connects to both the plugin and etcd.
    pub async fn connect(&mut self, socket: PathBuf, endpoints: &[String]) -> anyhow::Result<()> {
        self.kms = Some(Kms::connect(socket).await?);
        self.connect_store(endpoints).await
    }

    /// Connects to etcd only.
    pub async fn connect_store(&mut self, endpoints: &[String]) -> anyhow::Result<()> {
        self.store = Some(Store::connect(endpoints).await?);
        Ok(())
    }

    fn parts(&mut self) -> anyhow::Result<(&mut Kms, &mut Store)> {
        match (self.kms.as_mut(), self.store.as_mut()) {
            (Some(k), Some(s)) => Ok((k, s)),
            _ => bail!("not connected"),
        }
    }
}

/// Failed keys: all counted, the first `MAX_LISTED` named.
#[derive(Default)]
struct Failures {
    count: u64,
    listed: Vec<String>,
}

impl Failures {
    fn add(&mut self, message: String) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(message);
        }
    }
}

/// What a stored value holds, for the emulator.
pub enum Stored {
    /// A KMS v2 envelope of our provider.
    KmsV2(EncryptedObject),
    /// Stored unencrypted: the payload.
    Identity(Vec<u8>),
    /// Something else (another provider or format).
    Other,
}

/// Sorts a stored value.
pub fn inspect(provider: &str, value: &[u8]) -> Result<Stored, envelope::EnvelopeError> {
    if value.starts_with(&envelope::value_prefix(provider)) {
        return envelope::decode_value(provider, value).map(Stored::KmsV2);
    }
    if let Some(payload) = value.strip_prefix(IDENTITY_MAGIC) {
        return Ok(Stored::Identity(payload.to_vec()));
    }
    if value.starts_with(b"{") {
        return Ok(Stored::Identity(value.to_vec()));
    }
    Ok(Stored::Other)
}

fn secret_json(namespace: &str, name: &str) -> Vec<u8> {
    let mut token = [0u8; 24];
    rand::rng().fill_bytes(&mut token);
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "namespace": namespace, "name": name },
        "stringData": { "token": token },
    })
    .to_string()
    .into_bytes()
}

/// Checks that `payload` is the Secret stored under `key` (`<prefix><ns>/<name>`).
fn check_payload(key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(payload).context("object is not JSON")?;
    let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    if !key.ends_with(&format!("/{ns}/{name}")) {
        bail!("object {ns}/{name} is stored under another key");
    }
    Ok(())
}

/// Creates `count` Secrets, encrypted (one seed for all, as the apiserver does) or not.
pub async fn write(
    ctx: &mut Context,
    prefix: &str,
    namespace: &str,
    name_prefix: &str,
    count: usize,
    encrypt: bool,
) -> anyhow::Result<serde_json::Value> {
    let provider = ctx.provider.clone();
    let dek = match ctx.kms.as_mut() {
        Some(kms) if encrypt => Some(kms.new_write_dek().await?),
        _ => None,
    };
    let store = ctx.store.as_mut().context("not connected to etcd")?;
    for i in 0..count {
        let name = format!("{name_prefix}{i:05}");
        let key = format!("{prefix}{namespace}/{name}");
        let payload = secret_json(namespace, &name);
        let value = match &dek {
            Some(dek) => {
                let object = EncryptedObject {
                    encrypted_data: dek.seed.seal(&payload, key.as_bytes()),
                    ..dek.template.clone()
                };
                envelope::encode_value(&provider, &object)
            }
            None => [IDENTITY_MAGIC, &payload].concat(),
        };
        store.put(&key, value).await?;
    }
    Ok(json!({
        "written": count,
        "encrypted": encrypt,
        "key_id": dek.map(|d| d.template.key_id),
    }))
}

/// Creates `count` Secrets as a KMS v1 provider stores them: a new DEK per object, each
/// wrapped by its own Encrypt (`storage/value/encrypt/envelope/envelope.go`).
pub async fn write_kms_v1(
    ctx: &mut Context,
    prefix: &str,
    namespace: &str,
    name_prefix: &str,
    count: usize,
) -> anyhow::Result<serde_json::Value> {
    let provider = ctx.provider.clone();
    let (kms, store) = ctx.parts()?;
    let mut key_ids = BTreeMap::<String, u64>::new();
    for i in 0..count {
        let name = format!("{name_prefix}{i:05}");
        let key = format!("{prefix}{namespace}/{name}");
        let dek = kms.new_write_dek().await?;
        let value = envelope::encode_v1_value(
            &provider,
            &dek.template.encrypted_dek_source,
            &dek.seed
                .seal(&secret_json(namespace, &name), key.as_bytes()),
        );
        store.put(&key, value).await?;
        *key_ids.entry(dek.template.key_id).or_default() += 1;
    }
    Ok(json!({ "written": count, "encrypted": true, "kms_v1": true, "key_ids": key_ids }))
}

/// Rewrites every object not already under the current key_id, with retries on conflicts.
pub async fn rewrite(ctx: &mut Context, scope: &str) -> anyhow::Result<serde_json::Value> {
    let provider = ctx.provider.clone();
    let (kms, store) = ctx.parts()?;
    let dek = kms.new_write_dek().await?;
    let (mut rewritten, mut unchanged, mut conflicts) = (0u64, 0u64, 0u64);
    let mut from: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Failures::default();
    let mut start = scope.as_bytes().to_vec();
    loop {
        let page = store.page(scope.as_bytes(), &start).await?;
        for first in page.kvs {
            let key = String::from_utf8_lossy(first.key()).into_owned();
            let mut current = Some(first);
            for _ in 0..CONFLICT_RETRIES {
                let Some(kv) = current.take() else { break };
                let (plaintext, old) = match inspect(&provider, kv.value()) {
                    Ok(Stored::KmsV2(o)) if o.key_id == dek.template.key_id => {
                        unchanged += 1;
                        break;
                    }
                    Ok(Stored::KmsV2(o)) => match kms.seed_for(&o).await {
                        Ok(seed) => (seed.open(&o.encrypted_data, kv.key()), o.key_id),
                        Err(e) => {
                            failures.add(format!("{key}: {e:#}"));
                            break;
                        }
                    },
                    Ok(Stored::Identity(p)) => (Ok(p), "identity".to_string()),
                    Ok(Stored::Other) => {
                        failures.add(format!("{key}: not readable by this provider"));
                        break;
                    }
                    Err(e) => {
                        failures.add(format!("{key}: {e}"));
                        break;
                    }
                };
                let plaintext = match plaintext {
                    Ok(p) => p,
                    Err(e) => {
                        failures.add(format!("{key}: {e}"));
                        break;
                    }
                };
                let object = EncryptedObject {
                    encrypted_data: dek.seed.seal(&plaintext, kv.key()),
                    ..dek.template.clone()
                };
                let value = envelope::encode_value(&provider, &object);
                if store.replace(kv.key(), kv.mod_revision(), value).await? {
                    rewritten += 1;
                    *from.entry(old).or_default() += 1;
                } else {
                    // Someone wrote in between: read again and redo, as GuaranteedUpdate does.
                    conflicts += 1;
                    current = store.get(kv.key()).await?;
                }
            }
        }
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(json!({
        "key_id": dek.template.key_id,
        "rewritten": rewritten,
        "unchanged": unchanged,
        "conflicts": conflicts,
        "rewritten_from": from,
        "failed": failures.count,
        "failures": failures.listed,
        "decrypt_calls": kms.decrypt_calls,
    }))
}

/// Reads every object in scope: KMS v2 ones through Decrypt, and checks each payload.
pub async fn read_all(ctx: &mut Context, scope: &str) -> anyhow::Result<serde_json::Value> {
    let provider = ctx.provider.clone();
    let (kms, store) = ctx.parts()?;
    let (mut read, mut identity) = (0u64, 0u64);
    let mut key_ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Failures::default();
    let mut start = scope.as_bytes().to_vec();
    loop {
        let page = store.page(scope.as_bytes(), &start).await?;
        for kv in page.kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let payload = match inspect(&provider, kv.value()) {
                Ok(Stored::KmsV2(o)) => match kms.seed_for(&o).await {
                    Ok(seed) => {
                        *key_ids.entry(o.key_id.clone()).or_default() += 1;
                        seed.open(&o.encrypted_data, kv.key())
                            .map_err(anyhow::Error::from)
                    }
                    Err(e) => Err(e),
                },
                Ok(Stored::Identity(p)) => {
                    identity += 1;
                    Ok(p)
                }
                Ok(Stored::Other) => Err(anyhow::anyhow!("not readable by this provider")),
                Err(e) => Err(e.into()),
            };
            match payload.and_then(|p| check_payload(&key, &p)) {
                Ok(()) => read += 1,
                Err(e) => failures.add(format!("{key}: {e:#}")),
            }
        }
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(json!({
        "read": read,
        "identity": identity,
        "kms_v2_key_ids": key_ids,
        "failed": failures.count,
        "failures": failures.listed,
        "decrypt_calls": kms.decrypt_calls,
    }))
}
