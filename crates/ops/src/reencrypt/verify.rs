//! `--verify-etcd-endpoints`: after the run, `polykms audit`'s classification over the etcd keys
//! of every resource rewritten, failing on any value not KMS v2 under the expected key_id.

use crate::audit::{self, AuditError, EtcdConnection, Expectations, Tally};
use std::fmt::Write as _;

use super::{ReencryptError, etcd_prefix};

/// Offending keys printed in the text summary (the JSON one has up to audit's limit).
const FINDINGS_SHOWN: usize = 20;

/// Where etcd is and what every value must be under.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// etcd's client URLs and TLS files.
    pub etcd: EtcdConnection,
    /// The apiserver's `--etcd-prefix` (default `/registry`).
    pub etcd_prefix: String,
    /// The key_id every value must be under.
    pub expect_key_id: String,
}

/// One audit per resource prefix, checked before the run starts.
#[derive(Debug, Clone)]
pub struct VerifyPlan {
    expect_key_id: String,
    audits: Vec<(String, audit::Options)>,
}

impl VerifyPlan {
    /// Checks the settings for `resources` (in `namespace`, if given) before any request.
    pub fn new(
        options: &VerifyOptions,
        resources: &[String],
        namespace: Option<&str>,
    ) -> Result<Self, ReencryptError> {
        if options.expect_key_id.is_empty() {
            return Err(ReencryptError::Config(
                "--verify-etcd-endpoints needs --expect-key-id (the key_id every value must be under)"
                    .into(),
            ));
        }
        let audits = resources
            .iter()
            .map(|resource| {
                let audit = audit::Options {
                    etcd: options.etcd.clone(),
                    prefix: etcd_prefix(&options.etcd_prefix, resource, namespace),
                    expect: Expectations {
                        provider: None,
                        key_id: Some(options.expect_key_id.clone()),
                    },
                    output: "json".into(),
                };
                audit::validate(&audit)
                    .map_err(verify_error)
                    .map(|_| (resource.clone(), audit))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VerifyPlan {
            expect_key_id: options.expect_key_id.clone(),
            audits,
        })
    }

    /// Scans every prefix (read-only).
    pub async fn run(&self) -> Result<Verified, ReencryptError> {
        let mut results = Vec::with_capacity(self.audits.len());
        for (resource, options) in &self.audits {
            let tally = audit::scan(options).await.map_err(verify_error)?;
            results.push((resource.clone(), options.prefix.clone(), tally));
        }
        Ok(Verified {
            expect_key_id: self.expect_key_id.clone(),
            results,
        })
    }
}

/// audit's messages name its own flags; these are the same settings under reencrypt's names.
fn verify_error(e: AuditError) -> ReencryptError {
    let rename = |m: String| {
        m.replace("--etcd-endpoints", "--verify-etcd-endpoints")
            .replace("--cacert", "--etcd-cacert")
            .replace("--cert and --key", "--etcd-cert and --etcd-key")
            .replace("--prefix", "--etcd-prefix")
    };
    match e {
        AuditError::Config(m) => ReencryptError::Config(rename(m)),
        AuditError::Unavailable(m) => ReencryptError::Unavailable(m),
        AuditError::Findings(m) => ReencryptError::Verify(m),
    }
}

/// The audits after the run.
#[derive(Debug)]
pub struct Verified {
    /// The key_id every value had to be under.
    pub expect_key_id: String,
    results: Vec<(String, String, Tally)>,
}

impl Verified {
    /// Values not KMS v2 under the expected key_id, over every resource.
    pub fn findings(&self) -> u64 {
        self.results.iter().map(|(_, _, t)| t.findings_total).sum()
    }

    /// Nothing found.
    pub fn passed(&self) -> bool {
        self.findings() == 0
    }

    /// Lines for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (resource, prefix, t) in &self.results {
            let _ = writeln!(
                out,
                "verify {resource}: {} value(s) under {prefix}, {} not KMS v2 under key_id {}",
                t.total, t.findings_total, self.expect_key_id
            );
            for f in t.findings.iter().take(FINDINGS_SHOWN) {
                let _ = writeln!(out, "  {}: {}", f.key, f.reason);
            }
            if t.findings_total > FINDINGS_SHOWN as u64 {
                let _ = writeln!(
                    out,
                    "  ... and {} more (polykms audit --prefix {prefix} lists them all)",
                    t.findings_total - FINDINGS_SHOWN as u64
                );
            }
        }
        out
    }

    /// One JSON value: the audit report of every prefix.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "expect_key_id": self.expect_key_id,
            "passed": self.passed(),
            "resources": self.results.iter().map(|(resource, prefix, t)| serde_json::json!({
                "resource": resource, "prefix": prefix, "report": t,
            })).collect::<Vec<_>>(),
        })
    }
}
