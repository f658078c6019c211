//! The census by wrap: for every KMS value, which backends and key versions its DEK envelope
//! holds, read from the envelope without a key. A key version counts the objects whose envelope
//! holds a wrap under it, the distinct DEK envelopes among them, and their resources. The
//! distinct envelopes are kept (their digests; with `--unwrap`, what a Decrypt is given) so
//! that each is unwrapped once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use polykms_core::envelope::Envelope;
use serde::Serialize;
use serde_json::json;

use super::dek::StoredDek;

/// Object names kept per DEK envelope, to name what would become unreadable.
pub const FIRST_OBJECTS: usize = 5;

/// One backend's key version, as an envelope names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KeyVersionId {
    /// The configured backend name (`[[backends]] name`).
    pub backend: String,
    /// The key version the backend reported when it wrapped.
    pub key_version: String,
}

impl std::fmt::Display for KeyVersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.backend, self.key_version)
    }
}

/// Counts for one key version (or for the DEKs that are not polykms envelopes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WrapCount {
    /// Objects whose DEK envelope holds a wrap under it.
    pub objects: u64,
    /// Distinct DEK envelopes among them.
    pub dek_envelopes: u64,
    /// Objects per resource.
    pub resources: BTreeMap<String, u64>,
}

impl WrapCount {
    fn add(&mut self, new_envelope: bool, resource: &str) {
        self.objects += 1;
        self.dek_envelopes += u64::from(new_envelope);
        *self.resources.entry(resource.to_string()).or_default() += 1;
    }
}

/// One distinct DEK envelope and the objects that share it.
#[derive(Debug)]
pub struct DekEntry {
    /// The key versions of its wraps, or why it is not a polykms envelope.
    pub wraps: Result<Vec<KeyVersionId>, String>,
    /// Objects stored with it.
    pub objects: u64,
    /// The first [`FIRST_OBJECTS`] of them (kept when unwrapping).
    pub first_objects: Vec<String>,
    /// What a Decrypt is given (kept when unwrapping).
    pub request: Option<StoredDek>,
}

/// The census of one audit.
#[derive(Debug, Default)]
pub struct Census {
    /// Counts per key version.
    pub key_versions: BTreeMap<KeyVersionId, WrapCount>,
    /// KMS values whose DEK is not a polykms envelope (another plugin's, or altered).
    pub not_polykms: WrapCount,
    /// KMS values counted.
    pub objects: u64,
    envelopes: HashMap<[u8; 32], DekEntry>,
    keep_requests: bool,
}

impl Census {
    /// A census that keeps what each distinct envelope's Decrypt needs (for `--unwrap`).
    pub fn keeping_requests() -> Self {
        Census {
            keep_requests: true,
            ..Census::default()
        }
    }

    /// Counts one KMS value stored at `key` with `dek`.
    pub fn add(&mut self, key: &[u8], dek: StoredDek, resource: &str) {
        self.objects += 1;
        let digest = dek.digest();
        let keep = self.keep_requests;
        let new_envelope = !self.envelopes.contains_key(&digest);
        let entry = self.envelopes.entry(digest).or_insert_with(|| DekEntry {
            wraps: key_versions(&dek),
            objects: 0,
            first_objects: Vec::new(),
            request: keep.then_some(dek),
        });
        entry.objects += 1;
        if keep && entry.first_objects.len() < FIRST_OBJECTS {
            entry
                .first_objects
                .push(String::from_utf8_lossy(key).into_owned());
        }
        match &entry.wraps {
            Ok(wraps) => {
                for w in wraps {
                    self.key_versions
                        .entry(w.clone())
                        .or_default()
                        .add(new_envelope, resource);
                }
            }
            Err(_) => self.not_polykms.add(new_envelope, resource),
        }
    }

    /// Distinct DEK envelopes.
    pub fn dek_envelopes(&self) -> u64 {
        self.envelopes.len() as u64
    }

    /// Every distinct DEK envelope.
    pub fn envelopes(&self) -> impl Iterator<Item = &DekEntry> {
        self.envelopes.values()
    }

    /// The census as JSON: key versions in order, each with its counts.
    pub fn to_json(&self) -> serde_json::Value {
        let key_versions: Vec<_> = self
            .key_versions
            .iter()
            .map(|(id, count)| {
                json!({
                    "backend": id.backend,
                    "key_version": id.key_version,
                    "objects": count.objects,
                    "dek_envelopes": count.dek_envelopes,
                    "resources": count.resources,
                })
            })
            .collect();
        json!({
            "objects": self.objects,
            "dek_envelopes": self.dek_envelopes(),
            "key_versions": key_versions,
            "not_polykms": self.not_polykms,
        })
    }

    /// The census as a table (empty when no KMS value was read).
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if self.objects == 0 {
            return out;
        }
        let _ = writeln!(
            out,
            "\nDEK ENVELOPES BY WRAP: {} KMS value(s), {} distinct DEK envelope(s)",
            self.objects,
            self.dek_envelopes()
        );
        let _ = writeln!(
            out,
            "{:<20} {:<40} {:>10} {:>14}  RESOURCES",
            "BACKEND", "KEY VERSION", "OBJECTS", "DEK ENVELOPES"
        );
        let rows = self
            .key_versions
            .iter()
            .map(|(id, c)| (id.backend.as_str(), id.key_version.as_str(), c));
        let other =
            (self.not_polykms.objects > 0).then_some(("(not polykms)", "-", &self.not_polykms));
        for (backend, version, c) in rows.chain(other) {
            let resources: Vec<&str> = c.resources.keys().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "{backend:<20} {version:<40} {:>10} {:>14}  {}",
                c.objects,
                c.dek_envelopes,
                resources.join(",")
            );
        }
        out
    }
}

/// The key versions of the wraps of a DEK envelope, read without a key; a wrap listed twice
/// counts once.
fn key_versions(dek: &StoredDek) -> Result<Vec<KeyVersionId>, String> {
    let envelope =
        Envelope::decode(&dek.ciphertext, &dek.annotations).map_err(|e| e.to_string())?;
    let ids: BTreeSet<KeyVersionId> = envelope
        .wraps
        .into_iter()
        .map(|w| KeyVersionId {
            backend: w.backend,
            key_version: w.key_version,
        })
        .collect();
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::dek::KmsApi;
    use polykms_core::envelope::{Wrap, seal};

    /// A sealed DEK envelope with one wrap per (backend, key version), of a fresh seed.
    pub fn envelope(wraps: &[(&str, &str)]) -> StoredDek {
        let wraps: Vec<Wrap> = wraps
            .iter()
            .map(|(b, v)| Wrap {
                backend: (*b).into(),
                key_version: (*v).into(),
                ciphertext: vec![rand::random(); 40],
            })
            .collect();
        let seed = polykms_backend::SecretBytes::from(vec![rand::random(); 32]);
        let (ciphertext, annotations) = seal(&wraps, &seed).expect("small wraps seal");
        StoredDek {
            api: KmsApi::V2,
            ciphertext,
            annotations,
            key_id: Some("kid".into()),
        }
    }

    pub fn id(backend: &str, version: &str) -> KeyVersionId {
        KeyVersionId {
            backend: backend.into(),
            key_version: version.into(),
        }
    }

    #[test]
    fn objects_count_under_every_key_version_of_their_envelope_and_envelopes_once() {
        let old = envelope(&[("a", "v1")]);
        let both = envelope(&[("a", "v2"), ("b", "k1")]);
        let mut c = Census::default();
        for i in 0..3 {
            c.add(
                format!("/r/secrets/ns/o{i}").as_bytes(),
                old.clone(),
                "secrets",
            );
        }
        c.add(b"/r/configmaps/ns/c", old.clone(), "configmaps");
        c.add(b"/r/secrets/ns/n", both.clone(), "secrets");
        assert_eq!((c.objects, c.dek_envelopes()), (5, 2));
        let v1 = &c.key_versions[&id("a", "v1")];
        assert_eq!((v1.objects, v1.dek_envelopes), (4, 1));
        assert_eq!(v1.resources["secrets"], 3);
        assert_eq!(v1.resources["configmaps"], 1);
        for k in [id("a", "v2"), id("b", "k1")] {
            assert_eq!(
                (c.key_versions[&k].objects, c.key_versions[&k].dek_envelopes),
                (1, 1)
            );
        }
        let table = c.to_table();
        assert!(table.contains("2 distinct DEK envelope(s)"), "{table}");
        assert!(table.contains("configmaps,secrets"), "{table}");
        let json = c.to_json();
        assert_eq!(json["key_versions"][0]["backend"], "a");
        assert_eq!(json["key_versions"][0]["key_version"], "v1");
        assert_eq!(json["key_versions"][0]["objects"], 4);
        assert_eq!(json["key_versions"][0]["dek_envelopes"], 1);
    }

    #[test]
    fn another_plugins_deks_are_counted_apart() {
        let mut c = Census::default();
        let foreign = StoredDek {
            api: KmsApi::V1,
            ciphertext: b"vault:v1:abc".to_vec(),
            annotations: BTreeMap::new(),
            key_id: None,
        };
        c.add(b"/k/1", foreign.clone(), "secrets");
        c.add(b"/k/2", foreign, "secrets");
        assert!(c.key_versions.is_empty());
        assert_eq!((c.not_polykms.objects, c.not_polykms.dek_envelopes), (2, 1));
        assert!(c.to_table().contains("(not polykms)"));
        assert_eq!(c.to_json()["not_polykms"]["objects"], 2);
    }

    #[test]
    fn requests_and_object_names_are_kept_only_when_unwrapping() {
        let dek = envelope(&[("a", "v1")]);
        let mut plain = Census::default();
        let mut keeping = Census::keeping_requests();
        for i in 0..FIRST_OBJECTS + 2 {
            plain.add(format!("/k/{i}").as_bytes(), dek.clone(), "s");
            keeping.add(format!("/k/{i}").as_bytes(), dek.clone(), "s");
        }
        let e = plain.envelopes().next().expect("one envelope");
        assert!(e.request.is_none() && e.first_objects.is_empty());
        let e = keeping.envelopes().next().expect("one envelope");
        assert_eq!(e.request.as_ref(), Some(&dek));
        assert_eq!(e.first_objects.len(), FIRST_OBJECTS);
        assert_eq!(e.objects, (FIRST_OBJECTS + 2) as u64);
    }
}
