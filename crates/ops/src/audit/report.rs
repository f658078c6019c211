//! Counting classified values and rendering the result (table or JSON). Holds counts and the
//! names of offending keys only, never values.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::classify::{DekSource, ValueClass};

/// Offending key names kept in memory (and printed); beyond this only the count grows.
pub const MAX_LISTED: usize = 10_000;

/// What the operator expects every value to be under.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// `--expect-provider`: the EncryptionConfiguration KMS provider name.
    pub provider: Option<String>,
    /// `--expect-key-id`: the plugin's current key_id.
    pub key_id: Option<String>,
    /// `--allow-kms-v1`: a KMS v1 value passes when it meets the other expectations (its
    /// key_id read from its polykms envelope).
    pub allow_kms_v1: bool,
}

/// One key that fails the audit, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The etcd key (e.g. `/registry/secrets/ns/name`), lossily UTF-8.
    pub key: String,
    /// Why it fails (class, or which expectation it misses).
    pub reason: String,
}

/// The running result of an audit.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    /// Keys scanned.
    pub total: u64,
    /// Count per class label (`identity`, `kms-v2`, ...).
    pub classes: BTreeMap<&'static str, u64>,
    /// KMS v2 count per provider name, then per key_id.
    pub kms_v2: BTreeMap<String, BTreeMap<String, u64>>,
    /// KMS v1 count per provider name, then per key_id of the polykms envelope (`unknown`
    /// when the DEK is not one).
    pub kms_v1: BTreeMap<String, BTreeMap<String, u64>>,
    /// KMS v2 count per plugin envelope format (`v3`, `v2`, `v1`, `v1-multi-wrap`, `other`).
    pub envelope_formats: BTreeMap<String, u64>,
    /// KMS v2 values whose envelope is a version-2 multi-wrap (counted under `v2` too): to be
    /// re-encrypted, though they pass.
    pub v2_multi_wrap: u64,
    /// KMS v2 values whose DEK source is an AES-GCM key rather than an HKDF seed.
    pub kms_v2_aes_gcm_key_sources: u64,
    /// Keys that fail (first `MAX_LISTED`).
    pub findings: Vec<Finding>,
    /// Number of failing keys, including those not listed.
    pub findings_total: u64,
}

impl Tally {
    /// Adds one key and its class; checks it against the expectations.
    pub fn add(&mut self, key: &[u8], class: &ValueClass, expect: &Expectations) {
        self.total += 1;
        *self.classes.entry(class.label()).or_default() += 1;
        let reason = match class {
            ValueClass::KmsV2 {
                provider,
                key_id,
                dek_source,
                envelope,
            } => {
                *self.envelope_formats.entry(envelope.label()).or_default() += 1;
                if envelope.is_v2_multi_wrap() {
                    self.v2_multi_wrap += 1;
                }
                *self
                    .kms_v2
                    .entry(provider.clone())
                    .or_default()
                    .entry(key_id.clone())
                    .or_default() += 1;
                if *dek_source == DekSource::AesGcmKey {
                    self.kms_v2_aes_gcm_key_sources += 1;
                }
                mismatch(provider, key_id, expect)
            }
            ValueClass::KmsV2Malformed { provider, reason } => Some(format!(
                "kms-v2 (provider {provider}) with a malformed EncryptedObject: {reason}"
            )),
            ValueClass::Identity => Some("not encrypted (identity)".into()),
            ValueClass::AesCbc { key } => Some(format!("aescbc (key {key}), not KMS v2")),
            ValueClass::AesGcm { key } => Some(format!("aesgcm (key {key}), not KMS v2")),
            ValueClass::Secretbox { key } => Some(format!("secretbox (key {key}), not KMS v2")),
            ValueClass::KmsV1 { provider, key_id } => {
                *self
                    .kms_v1
                    .entry(provider.clone())
                    .or_default()
                    .entry(key_id.clone().unwrap_or_else(|| UNKNOWN_KEY_ID.into()))
                    .or_default() += 1;
                kms_v1_finding(provider, key_id.as_deref(), expect)
            }
            ValueClass::Unknown => Some("unrecognised value format".into()),
        };
        if let Some(reason) = reason {
            self.findings_total += 1;
            if self.findings.len() < MAX_LISTED {
                self.findings.push(Finding {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason,
                });
            }
        }
    }

    /// True when every key passed and there was at least one: a scan that read nothing
    /// proves nothing (a wrong prefix, or a canary that is gone).
    pub fn passed(&self) -> bool {
        self.findings_total == 0 && self.total > 0
    }

    /// A human-readable report.
    pub fn to_table(&self, prefix: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scanned {} key(s) under {prefix}", self.total);
        let _ = writeln!(out, "\n{:<20} {:>10}", "CLASS", "COUNT");
        for (class, n) in &self.classes {
            let _ = writeln!(out, "{class:<20} {n:>10}");
        }
        if !self.kms_v2.is_empty() {
            let _ = writeln!(out, "\n{:<20} {:<40} {:>10}", "PROVIDER", "KEY_ID", "COUNT");
            for (provider, ids) in &self.kms_v2 {
                for (key_id, n) in ids {
                    let _ = writeln!(out, "{provider:<20} {key_id:<40} {n:>10}");
                }
            }
        }
        if !self.kms_v1.is_empty() {
            let _ = writeln!(
                out,
                "\n{:<20} {:<40} {:>10}",
                "KMS V1 PROVIDER", "KEY_ID", "COUNT"
            );
            for (provider, ids) in &self.kms_v1 {
                for (key_id, n) in ids {
                    let _ = writeln!(out, "{provider:<20} {key_id:<40} {n:>10}");
                }
            }
        }
        if !self.envelope_formats.is_empty() {
            let _ = writeln!(out, "\n{:<20} {:>10}", "ENVELOPE", "COUNT");
            for (format, n) in &self.envelope_formats {
                let _ = writeln!(out, "{format:<20} {n:>10}");
            }
        }
        if let Some(n) = self.envelope_formats.get("v1-multi-wrap") {
            let _ = writeln!(
                out,
                "\nnote: {n} value(s) use version-1 multi-wrap envelopes (wraps not bound to each other); re-encrypt them, then set [decrypt] accept_legacy_multi_wrap = false"
            );
        }
        if self.v2_multi_wrap > 0 {
            let _ = writeln!(
                out,
                "\nnote: {} value(s) use version-2 multi-wrap envelopes (their wraps share version 1's AAD, so an etcd writer can rewrite them as version 1); re-encrypt them (polykms reencrypt --force-rewrite writes version 3), then set [decrypt] accept_legacy_multi_wrap = false",
                self.v2_multi_wrap
            );
        }
        if self.kms_v2_aes_gcm_key_sources > 0 {
            let _ = writeln!(
                out,
                "\nnote: {} KMS v2 value(s) use an AES-GCM DEK (written before HKDF seeds, kube < 1.29); rewrite them to refresh",
                self.kms_v2_aes_gcm_key_sources
            );
        }
        if self.findings_total > 0 {
            let _ = writeln!(out, "\n{} key(s) FAIL:", self.findings_total);
            for f in &self.findings {
                let _ = writeln!(out, "  {}  {}", f.key, f.reason);
            }
            let unlisted = self.findings_total - self.findings.len() as u64;
            if unlisted > 0 {
                let _ = writeln!(out, "  ... and {unlisted} more");
            }
        } else if self.total == 0 {
            let _ = writeln!(
                out,
                "\nFAIL: no keys under {prefix}: nothing was checked (check --prefix; secrets live under /registry/secrets/)"
            );
        } else {
            let _ = writeln!(
                out,
                "\nOK: every value is KMS v2{} and meets the expectations",
                if self.kms_v1.is_empty() {
                    ""
                } else {
                    " or an accepted KMS v1 value"
                }
            );
        }
        out
    }
}

/// The `kms_v1` key for a DEK whose key_id cannot be read.
const UNKNOWN_KEY_ID: &str = "unknown";

fn kms_v1_finding(provider: &str, key_id: Option<&str>, expect: &Expectations) -> Option<String> {
    if !expect.allow_kms_v1 {
        return Some(format!(
            "kms v1 (provider {provider}, key_id {}), not KMS v2 (--allow-kms-v1 accepts it)",
            key_id.unwrap_or(UNKNOWN_KEY_ID)
        ));
    }
    match key_id {
        Some(k) => mismatch(provider, k, expect).map(|m| m.replacen("kms-v2", "kms-v1", 1)),
        None if expect.key_id.is_some() => Some(format!(
            "kms v1 (provider {provider}) whose DEK is not a polykms envelope: its key_id \
             cannot be checked"
        )),
        None => mismatch(
            provider,
            "",
            &Expectations {
                key_id: None,
                ..expect.clone()
            },
        )
        .map(|m| m.replacen("kms-v2", "kms-v1", 1)),
    }
}

fn mismatch(provider: &str, key_id: &str, expect: &Expectations) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some(want) = &expect.provider
        && want != provider
    {
        reasons.push(format!("provider {provider}, expected {want}"));
    }
    if let Some(want) = &expect.key_id
        && want != key_id
    {
        reasons.push(format!("key_id {key_id}, expected {want}"));
    }
    (!reasons.is_empty()).then(|| format!("kms-v2 under {}", reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::classify::EnvelopeFormat;

    fn v2(provider: &str, key_id: &str) -> ValueClass {
        ValueClass::KmsV2 {
            provider: provider.into(),
            key_id: key_id.into(),
            dek_source: DekSource::HkdfSeed,
            envelope: EnvelopeFormat::Polykms {
                version: 2,
                wraps: 1,
            },
        }
    }

    #[test]
    fn all_kms_v2_passes_and_counts_per_provider_and_key_id() {
        let mut t = Tally::default();
        let none = Expectations::default();
        t.add(b"/registry/secrets/a/1", &v2("p", "k1"), &none);
        t.add(b"/registry/secrets/a/2", &v2("p", "k1"), &none);
        t.add(b"/registry/secrets/a/3", &v2("p", "k2"), &none);
        assert!(t.passed());
        assert_eq!(t.total, 3);
        assert_eq!(t.classes["kms-v2"], 3);
        assert_eq!(t.kms_v2["p"]["k1"], 2);
        assert_eq!(t.kms_v2["p"]["k2"], 1);
        assert!(t.to_table("/registry/secrets/").contains("OK: every value"));
    }

    #[test]
    fn plaintext_and_other_transformers_are_findings_with_their_key_names() {
        let mut t = Tally::default();
        let none = Expectations::default();
        t.add(b"/registry/secrets/a/plain", &ValueClass::Identity, &none);
        t.add(
            b"/registry/secrets/a/cbc",
            &ValueClass::AesCbc { key: "k".into() },
            &none,
        );
        t.add(b"/registry/secrets/a/ok", &v2("p", "k1"), &none);
        assert!(!t.passed());
        assert_eq!(t.findings_total, 2);
        let keys: Vec<_> = t.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            ["/registry/secrets/a/plain", "/registry/secrets/a/cbc"]
        );
        let table = t.to_table("/registry/secrets/");
        assert!(table.contains("2 key(s) FAIL"), "{table}");
        assert!(
            table.contains("/registry/secrets/a/plain  not encrypted"),
            "{table}"
        );
    }

    #[test]
    fn expectations_flag_other_providers_and_stale_key_ids() {
        let expect = Expectations {
            provider: Some("p".into()),
            key_id: Some("new".into()),
            allow_kms_v1: false,
        };
        let mut t = Tally::default();
        t.add(b"/k/1", &v2("p", "new"), &expect);
        t.add(b"/k/2", &v2("p", "old"), &expect);
        t.add(b"/k/3", &v2("q", "new"), &expect);
        assert_eq!(t.findings_total, 2);
        assert!(t.findings[0].reason.contains("key_id old, expected new"));
        assert!(t.findings[1].reason.contains("provider q, expected p"));
    }

    #[test]
    fn version_2_multi_wrap_envelopes_pass_with_a_note_to_re_encrypt_them() {
        let with = |version, wraps| ValueClass::KmsV2 {
            provider: "p".into(),
            key_id: "k".into(),
            dek_source: DekSource::HkdfSeed,
            envelope: EnvelopeFormat::Polykms { version, wraps },
        };
        let mut t = Tally::default();
        let none = Expectations::default();
        t.add(b"/k/1", &with(2, 2), &none);
        t.add(b"/k/2", &with(2, 1), &none);
        t.add(b"/k/3", &with(3, 2), &none);
        assert!(t.passed());
        assert_eq!(t.v2_multi_wrap, 1);
        assert_eq!(t.envelope_formats["v2"], 2);
        assert_eq!(t.envelope_formats["v3"], 1);
        let table = t.to_table("/k/");
        assert!(
            table.contains("1 value(s) use version-2 multi-wrap"),
            "{table}"
        );
        assert!(table.contains("OK: every value"), "{table}");
        let mut t = Tally::default();
        t.add(b"/k/3", &with(3, 2), &none);
        assert!(!t.to_table("/k/").contains("multi-wrap"));
    }

    #[test]
    fn findings_beyond_the_cap_are_counted_not_kept() {
        let mut t = Tally::default();
        let none = Expectations::default();
        for i in 0..MAX_LISTED + 5 {
            t.add(format!("/k/{i}").as_bytes(), &ValueClass::Identity, &none);
        }
        assert_eq!(t.findings.len(), MAX_LISTED);
        assert_eq!(t.findings_total, (MAX_LISTED + 5) as u64);
        assert!(t.to_table("/k/").contains("... and 5 more"));
    }

    #[test]
    fn json_report_has_counts_and_findings() {
        let mut t = Tally::default();
        t.add(b"/k/1", &ValueClass::Identity, &Expectations::default());
        let json = serde_json::to_value(&t).expect("a Tally always serialises");
        assert_eq!(json["total"], 1);
        assert_eq!(json["classes"]["identity"], 1);
        assert_eq!(json["findings"][0]["key"], "/k/1");
    }

    #[test]
    fn a_scan_that_read_nothing_does_not_pass() {
        let t = Tally::default();
        assert!(!t.passed());
        assert!(
            t.to_table("/registry/canary/")
                .contains("FAIL: no keys under")
        );
    }

    #[test]
    fn kms_v1_values_pass_only_when_allowed_and_under_the_expected_key_id() {
        let v1 = |key_id: Option<&str>| ValueClass::KmsV1 {
            provider: "p".into(),
            key_id: key_id.map(str::to_string),
        };
        let strict = Expectations {
            key_id: Some("new".into()),
            ..Expectations::default()
        };
        let mut t = Tally::default();
        t.add(b"/k/1", &v1(Some("new")), &strict);
        assert!(!t.passed());
        assert!(
            t.findings[0].reason.contains("not KMS v2"),
            "{:?}",
            t.findings
        );

        let allow = Expectations {
            allow_kms_v1: true,
            ..strict
        };
        let mut t = Tally::default();
        t.add(b"/k/1", &v1(Some("new")), &allow);
        assert!(t.passed());
        t.add(b"/k/2", &v1(Some("old")), &allow);
        t.add(b"/k/3", &v1(None), &allow);
        assert_eq!(t.findings_total, 2);
        assert!(
            t.findings[0]
                .reason
                .contains("kms-v1 under key_id old, expected new")
        );
        assert!(t.findings[1].reason.contains("cannot be checked"));
        assert_eq!(t.kms_v1["p"]["new"], 1);
        assert_eq!(t.kms_v1["p"]["unknown"], 1);
        assert!(t.to_table("/k/").contains("KMS V1 PROVIDER"));
    }
}
