//! The fake API server's storage: objects in etcd under the KMS v2 envelope, with the
//! apiserver's resourceVersion (= etcd mod_revision), conditional updates, "stale" rewrites and
//! paged lists whose continue tokens are the apiserver's (`{"v","rv","start"}`, base64url).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::envelope::{self, EncryptedObject};
use crate::kms::{Kms, WriteDek};
use crate::objects::{self, Stored};
use crate::store::{RangeError, Store};

/// How often the write key is checked against the plugin's Status (the apiserver polls Status).
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Objects of the fake cluster.
pub struct Storage {
    kms: Kms,
    /// etcd (public for the fault injections).
    pub store: Store,
    provider: String,
    root: String,
    dek: Option<WriteDek>,
    dek_checked: Option<Instant>,
    /// Write KMS v1 values (one Encrypt per write) instead of KMS v2 ones.
    kms_v1: bool,
}

/// Where kube-apiserver keeps a resource under its `--etcd-prefix` (the table and its upstream
/// sources are in docs/rotation.md, "Where objects live in etcd"): the storage factory's groups
/// drop the group, a few resources have legacy paths, every other group (custom resources) is
/// `<group>/<resource>`.
pub fn resource_path(group: &str, resource: &str) -> String {
    match (group, resource) {
        ("", "services") => "services/specs".into(),
        ("", _) => resource.into(),
        _ => format!("{group}/{resource}"),
    }
}

/// A stored object, decrypted.
pub struct Current {
    /// The object without resourceVersion, as stored.
    pub object: Value,
    /// etcd mod_revision.
    pub revision: i64,
    /// Stored under another key_id than the current one, or unencrypted.
    pub stale: bool,
}

/// The result of a PUT.
pub enum Updated {
    /// Stored (or found current and left alone); the object with its resourceVersion.
    Ok(Value),
    /// No such object.
    NotFound,
    /// The resourceVersion given is not the current one.
    Conflict,
}

/// The result of a list request.
pub enum Listed {
    /// A page.
    Page(Value),
    /// The continue token's revision is compacted: 410 with a token that continues inconsistently.
    Expired(String),
    /// The continue token does not decode.
    BadContinue(String),
}

impl Storage {
    /// Storage rooted at `root` (the apiserver's `--etcd-prefix`, e.g. `/registry`).
    pub fn new(kms: Kms, store: Store, provider: String, root: String, kms_v1: bool) -> Self {
        Storage {
            kms,
            store,
            provider,
            root: root.trim_end_matches('/').to_string(),
            dek: None,
            dek_checked: None,
            kms_v1,
        }
    }

    /// The etcd key of an object.
    pub fn key(&self, group: &str, resource: &str, namespace: &str, name: &str) -> String {
        format!(
            "{}{namespace}/{name}",
            self.list_prefix(group, resource, None)
        )
    }

    /// The etcd prefix a list covers.
    pub fn list_prefix(&self, group: &str, resource: &str, namespace: Option<&str>) -> String {
        let path = resource_path(group, resource);
        match namespace {
            Some(ns) => format!("{}/{path}/{ns}/", self.root),
            None => format!("{}/{path}/", self.root),
        }
    }

    /// A stable identity of this fake cluster (the kube-system namespace's UID): the same for
    /// every server on the same etcd root.
    pub fn cluster_uid(&self) -> String {
        use sha2::Digest as _;
        let h = sha2::Sha256::digest(self.root.as_bytes());
        let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// A key that is not an object, for the compaction marker.
    pub fn marker_key(&self) -> String {
        format!("{}/~compaction-marker", self.root)
    }

    /// The write key: a new seed whenever the plugin's key_id changes, as the apiserver does.
    async fn dek(&mut self) -> anyhow::Result<&WriteDek> {
        let due = self.dek_checked.is_none_or(|t| t.elapsed() >= STATUS_EVERY);
        if due {
            let key_id = self.kms.status_key_id().await?;
            if self
                .dek
                .as_ref()
                .is_none_or(|d| d.template.key_id != key_id)
            {
                self.dek = Some(self.kms.new_write_dek().await?);
            }
            self.dek_checked = Some(Instant::now());
        }
        self.dek.as_ref().context("a write key was just set")
    }

    /// Reads and decrypts one object.
    pub async fn read(&mut self, key: &str) -> anyhow::Result<Option<Current>> {
        let Some(kv) = self.store.get(key.as_bytes()).await? else {
            return Ok(None);
        };
        let current_key_id = self.dek().await?.template.key_id.clone();
        if let Some((dek, data)) = envelope::decode_v1_value(&self.provider, kv.value()) {
            // KMS v1 stores no key_id beside the object, so the apiserver has no staleness
            // signal: a v1 value is never stale, an unchanged update stores nothing.
            let payload = self.open_v1(dek, data, key).await?;
            let object: Value =
                serde_json::from_slice(&payload).context("stored object is not JSON")?;
            return Ok(Some(Current {
                object,
                revision: kv.mod_revision(),
                stale: false,
            }));
        }
        let (payload, stale) = match objects::inspect(&self.provider, kv.value())? {
            Stored::KmsV2(o) => {
                let seed = self.kms.seed_for(&o).await?;
                (
                    seed.open(&o.encrypted_data, key.as_bytes())?,
                    o.key_id != current_key_id,
                )
            }
            Stored::Identity(p) => (p, true),
            Stored::Other => bail!("{key}: not readable by this provider"),
        };
        let object: Value =
            serde_json::from_slice(&payload).context("stored object is not JSON")?;
        Ok(Some(Current {
            object,
            revision: kv.mod_revision(),
            stale,
        }))
    }

    /// The object of a KMS v1 value: the plugin's Decrypt of its DEK (through the v2 API, with
    /// the key_id recomputed from the polykms envelope), then the data.
    async fn open_v1(&mut self, dek: &[u8], data: &[u8], key: &str) -> anyhow::Result<Vec<u8>> {
        let envelope = polykms_core::envelope::Envelope::decode(dek, &Default::default())
            .context("the DEK of a KMS v1 value is not a polykms envelope")?;
        let object = EncryptedObject {
            key_id: polykms_core::plugin::envelope_key_id(&envelope),
            encrypted_dek_source: dek.to_vec(),
            ..Default::default()
        };
        let seed = self.kms.seed_for(&object).await?;
        Ok(seed.open(data, key.as_bytes())?)
    }

    /// Encrypts `object` under the current key and writes it if `key` is still at `revision`.
    async fn write(
        &mut self,
        key: &str,
        revision: i64,
        object: &Value,
    ) -> anyhow::Result<Option<i64>> {
        let payload = serde_json::to_vec(object)?;
        let provider = self.provider.clone();
        if self.kms_v1 {
            // KMS v1: a new DEK for every write, wrapped by one Encrypt.
            let dek = self.kms.new_write_dek().await?;
            let value = envelope::encode_v1_value(
                &provider,
                &dek.template.encrypted_dek_source,
                &dek.seed.seal(&payload, key.as_bytes()),
            );
            return self.store.replace_at(key.as_bytes(), revision, value).await;
        }
        let dek = self.dek().await?;
        let value = envelope::encode_value(
            &provider,
            &EncryptedObject {
                encrypted_data: dek.seed.seal(&payload, key.as_bytes()),
                ..dek.template.clone()
            },
        );
        self.store.replace_at(key.as_bytes(), revision, value).await
    }

    /// GET: the object with its resourceVersion.
    pub async fn get(&mut self, key: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .read(key)
            .await?
            .map(|c| with_resource_version(c.object, c.revision)))
    }

    /// PUT, as the apiserver's GuaranteedUpdate: a stale resourceVersion conflicts; an object
    /// equal to the stored one is written again only when it is stored stale.
    pub async fn update(&mut self, key: &str, mut body: Value) -> anyhow::Result<Updated> {
        let given = body["metadata"]["resourceVersion"]
            .as_str()
            .map(|s| s.parse::<i64>())
            .transpose()
            .context("metadata.resourceVersion is not a number")?;
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let Some(current) = self.read(key).await? else {
            return Ok(Updated::NotFound);
        };
        if given.is_some_and(|rv| rv != current.revision) {
            return Ok(Updated::Conflict);
        }
        if body == current.object && !current.stale {
            return Ok(Updated::Ok(with_resource_version(body, current.revision)));
        }
        match self.write(key, current.revision, &body).await? {
            Some(revision) => Ok(Updated::Ok(with_resource_version(body, revision))),
            None => Ok(Updated::Conflict),
        }
    }

    /// Stores `key` again unchanged under the current key: a write by someone else.
    pub async fn touch(&mut self, key: &str) -> anyhow::Result<()> {
        if let Some(current) = self.read(key).await? {
            self.write(key, current.revision, &current.object).await?;
        }
        Ok(())
    }

    /// The etcd keys of one page under `prefix` from `start`, and where the next page starts.
    pub async fn keys(
        &mut self,
        prefix: &str,
        start: &str,
        limit: i64,
    ) -> anyhow::Result<(Vec<String>, Option<String>)> {
        let end = polykms_core::storage::prefix_end(prefix.as_bytes());
        let range = match self.store.range_at(start.as_bytes(), &end, limit, 0).await {
            Ok(r) => r,
            Err(RangeError::Compacted) => bail!("latest revision compacted"),
            Err(RangeError::Other(e)) => return Err(e),
        };
        let keys: Vec<String> = range
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        let next = match keys.last() {
            Some(last) if range.more => Some(format!("{last}\u{0}")),
            _ => None,
        };
        Ok((keys, next))
    }

    /// Stores `key` again if it is stale (what a StorageVersionMigration's no-op update does).
    pub async fn refresh(&mut self, key: &str) -> anyhow::Result<bool> {
        for _ in 0..5 {
            let Some(current) = self.read(key).await? else {
                return Ok(false);
            };
            if !current.stale {
                return Ok(false);
            }
            if self
                .write(key, current.revision, &current.object)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        bail!("{key}: conflicts outlasted the retries")
    }

    /// One page of a list: `limit` objects after the continue token's start key, at its revision.
    pub async fn list(
        &mut self,
        base: &str,
        prefix: &str,
        limit: i64,
        continue_token: Option<&str>,
        metadata_only: bool,
    ) -> anyhow::Result<Listed> {
        let (start, revision) = match continue_token {
            None => (prefix.to_string(), 0),
            Some(t) => match decode_continue(t) {
                Ok((start, rv)) => (format!("{prefix}{start}"), if rv < 0 { 0 } else { rv }),
                Err(e) => return Ok(Listed::BadContinue(e)),
            },
        };
        let end = polykms_core::storage::prefix_end(prefix.as_bytes());
        let limit = if limit <= 0 { 0 } else { limit };
        let range = match self
            .store
            .range_at(start.as_bytes(), &end, limit, revision)
            .await
        {
            Ok(r) => r,
            Err(RangeError::Compacted) => {
                let rel = start.strip_prefix(prefix).unwrap_or_default();
                return Ok(Listed::Expired(encode_continue(rel, -1)));
            }
            Err(RangeError::Other(e)) => return Err(e),
        };
        let mut items = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            // `base` is the resource's prefix: what follows is `<ns>/<name>`.
            let rel = key.strip_prefix(base).unwrap_or(&key);
            let Some((ns, name)) = rel.split_once('/') else {
                continue;
            };
            if metadata_only {
                items.push(json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": {
                        "name": name, "namespace": ns,
                        "resourceVersion": kv.mod_revision().to_string(),
                    },
                }));
            } else if let Some(o) = self.get(&key).await? {
                items.push(o);
            }
        }
        let mut metadata = json!({ "resourceVersion": range.revision.to_string() });
        if range.more
            && let Some(last) = range.kvs.last()
        {
            let last = String::from_utf8_lossy(last.key());
            let rel = last.strip_prefix(prefix).unwrap_or(&last);
            let rv = if revision > 0 {
                revision
            } else {
                range.revision
            };
            metadata["continue"] = encode_continue(&format!("{rel}\u{0}"), rv).into();
            metadata["remainingItemCount"] = (range.count - range.kvs.len() as i64).into();
        }
        let (api_version, kind) = if metadata_only {
            ("meta.k8s.io/v1", "PartialObjectMetadataList")
        } else {
            ("v1", "List")
        };
        Ok(Listed::Page(json!({
            "apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items,
        })))
    }
}

fn with_resource_version(mut object: Value, revision: i64) -> Value {
    if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), revision.to_string().into());
    }
    object
}

/// The apiserver's continue token: base64url(JSON {v, rv, start}), start relative to the list's
/// key prefix; rv -1 continues at the latest revision (the token a 410 hands out).
pub fn encode_continue(start: &str, rv: i64) -> String {
    URL_SAFE_NO_PAD.encode(json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": start }).to_string())
}

fn decode_continue(token: &str) -> Result<(String, i64), String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| format!("continue key is not valid: {e}"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("continue key is not valid: {e}"))?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(
            "continue key is not valid: server does not recognize this encoded version".into(),
        );
    }
    let rv = v["rv"].as_i64().unwrap_or(0);
    let start = v["start"].as_str().unwrap_or_default().to_string();
    if rv == 0 || start.is_empty() || start.contains("..") {
        return Err(
            "continue key is not valid: incorrect encoded start resourceVersion or key".into(),
        );
    }
    Ok((start, rv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue("ns/name\u{0}", 42);
        assert_eq!(decode_continue(&t), Ok(("ns/name\u{0}".to_string(), 42)));
        assert!(decode_continue("%%%").is_err());
        assert!(decode_continue(&encode_continue("x", 0)).is_err());
        assert!(decode_continue(&encode_continue("../x", 5)).is_err());
    }
}
