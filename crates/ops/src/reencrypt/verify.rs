//! `--verify-etcd-endpoints`: after the run, `polykms audit`'s classification over the etcd keys
//! of every resource rewritten, failing on any value not KMS v2 under the expected key_id.

use crate::audit::{self, AuditError, EtcdConnection, EtcdFlags, Expectations, Tally};
use std::fmt::Write as _;

use super::{ReencryptError, Summary, etcd_prefix};

/// reencrypt's names for the settings audit takes as `--etcd-endpoints`, `--cacert`, ...
const FLAGS: EtcdFlags = EtcdFlags {
    endpoints: "--verify-etcd-endpoints",
    cacert: "--etcd-cacert",
    cert: "--etcd-cert",
    key: "--etcd-key",
    prefix: "--etcd-prefix",
};

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
    /// `--allow-kms-v1`: KMS v1 values under the expected key_id pass too.
    pub allow_kms_v1: bool,
}

/// One audit per resource, checked before the run starts; the prefixes follow the run.
#[derive(Debug, Clone)]
pub struct VerifyPlan {
    expect_key_id: String,
    /// The apiserver's `--etcd-prefix`.
    root: String,
    /// `--namespace`: narrows the prefix of namespaced resources only.
    namespace: Option<String>,
    /// etcd's URLs with the TLS files read (before the run, so a bad path fails first).
    connector: audit::Connector,
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
                        allow_kms_v1: options.allow_kms_v1,
                    },
                    output: "json".into(),
                };
                audit::validate_named(&audit, &FLAGS)
                    .map_err(verify_error)
                    .map(|_| (resource.clone(), audit))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connector = audit::Connector::new(&options.etcd, &FLAGS).map_err(verify_error)?;
        Ok(VerifyPlan {
            expect_key_id: options.expect_key_id.clone(),
            root: options.etcd_prefix.clone(),
            namespace: namespace.map(str::to_string),
            connector,
            audits,
        })
    }

    /// The audits for what `summary` says the run did: a cluster-scoped resource was rewritten
    /// whole even with `--namespace`, so its prefix is the whole resource's (a namespace prefix
    /// would hold nothing, and the check would pass having read nothing).
    fn audits_for(&self, summary: &Summary) -> Vec<(String, audit::Options)> {
        self.audits
            .iter()
            .map(|(resource, audit)| {
                let cluster_scoped = summary
                    .resources
                    .iter()
                    .any(|r| &r.resource == resource && r.cluster_scoped);
                let mut audit = audit.clone();
                if cluster_scoped && self.namespace.is_some() {
                    audit.prefix = etcd_prefix(&self.root, resource, None);
                }
                (resource.clone(), audit)
            })
            .collect()
    }

    /// Scans every prefix (read-only, over one connection), after the run that `summary`
    /// describes.
    pub async fn run(&self, summary: &Summary) -> Result<Verified, ReencryptError> {
        let audits = self.audits_for(summary);
        let mut client = self.connector.connect().await.map_err(verify_error)?;
        let mut results = Vec::with_capacity(audits.len());
        for (resource, options) in &audits {
            let tally = audit::scan_client(&mut client, &options.prefix, &options.expect)
                .await
                .map_err(verify_error)?;
            let seen = summary
                .resources
                .iter()
                .find(|r| &r.resource == resource)
                .map_or(0, |r| r.counts.processed);
            results.push(Checked {
                resource: resource.clone(),
                prefix: options.prefix.clone(),
                seen,
                tally,
            });
        }
        Ok(Verified {
            expect_key_id: self.expect_key_id.clone(),
            results,
        })
    }
}

/// audit's errors as the run's (their messages name reencrypt's flags: [`FLAGS`]).
fn verify_error(e: AuditError) -> ReencryptError {
    match e {
        AuditError::Config(m) => ReencryptError::Config(m),
        AuditError::Unavailable(m) => ReencryptError::Unavailable(m),
        // Only audit::run returns Findings; validate and scan report findings in the Tally,
        // which Verified turns into the exit code. Kept at exit 1 should that ever change.
        AuditError::Findings(m) => ReencryptError::Io(m),
    }
}

/// One resource's audit after the run.
#[derive(Debug)]
struct Checked {
    resource: String,
    prefix: String,
    /// Objects the run handled (listed) for this resource.
    seen: u64,
    tally: Tally,
}

/// The audits after the run.
#[derive(Debug)]
pub struct Verified {
    /// The key_id every value had to be under.
    pub expect_key_id: String,
    results: Vec<Checked>,
}

impl Verified {
    /// Values not KMS v2 under the expected key_id, over every resource.
    pub fn findings(&self) -> u64 {
        self.results.iter().map(|c| c.tally.findings_total).sum()
    }

    /// KMS v1 values among the findings: the apiserver does not rewrite those unasked.
    pub fn kms_v1_findings(&self) -> u64 {
        self.results
            .iter()
            .filter(|c| c.tally.findings_total > 0)
            .map(|c| c.tally.classes.get("kms-v1").copied().unwrap_or(0))
            .sum()
    }

    /// Why the check proves nothing, if it read nothing: a prefix empty while the run saw
    /// objects of its resource (a wrong storage path or `--etcd-prefix`), or no value at all.
    pub fn read_nothing(&self) -> Option<String> {
        let empty: Vec<String> = self
            .results
            .iter()
            .filter(|c| c.tally.total == 0 && c.seen > 0)
            .map(|c| {
                format!(
                    "{} holds no value while the run saw {} {} object(s)",
                    c.prefix, c.seen, c.resource
                )
            })
            .collect();
        if !empty.is_empty() {
            return Some(format!(
                "{}: check --etcd-prefix (the apiserver's --etcd-prefix)",
                empty.join("; ")
            ));
        }
        if self.results.iter().all(|c| c.tally.total == 0) {
            let prefixes: Vec<&str> = self.results.iter().map(|c| c.prefix.as_str()).collect();
            return Some(format!(
                "read no value under {}: nothing was verified",
                prefixes.join(", ")
            ));
        }
        None
    }

    /// Something was read and nothing found.
    pub fn passed(&self) -> bool {
        self.findings() == 0 && self.read_nothing().is_none()
    }

    /// Why the check failed, in one sentence, with what to do about KMS v1 values.
    pub fn failure(&self) -> Option<String> {
        if let Some(why) = self.read_nothing() {
            return Some(format!("verification read nothing: {why}"));
        }
        if self.findings() == 0 {
            return None;
        }
        let mut out = format!(
            "verification failed: {} value(s) in etcd are not KMS v2 under key_id {}",
            self.findings(),
            self.expect_key_id
        );
        let v1 = self.kms_v1_findings();
        if v1 > 0 {
            let _ = write!(
                out,
                "; {v1} are KMS v1 values: the apiserver does not store an unchanged KMS v1 \
                 object again, so rewrite them with --force-rewrite (and pass --allow-kms-v1 to \
                 accept KMS v1 values under the expected key_id)"
            );
        }
        Some(out)
    }

    /// Lines for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.results {
            let (resource, prefix, t) = (&c.resource, &c.prefix, &c.tally);
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
        if let Some(why) = self.failure() {
            let _ = writeln!(out, "{why}");
        }
        out
    }

    /// One JSON value: the audit report of every prefix.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "expect_key_id": self.expect_key_id,
            "passed": self.passed(),
            "failure": self.failure(),
            "resources": self.results.iter().map(|c| serde_json::json!({
                "resource": c.resource, "prefix": c.prefix, "listed": c.seen, "report": c.tally,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reencrypt::ResourceSummary;

    fn plan(namespace: Option<&str>) -> VerifyPlan {
        let options = VerifyOptions {
            etcd: EtcdConnection {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                ..EtcdConnection::default()
            },
            etcd_prefix: "/registry".into(),
            expect_key_id: "k".into(),
            allow_kms_v1: false,
        };
        let resources = [
            "secrets".to_string(),
            "clusterroles.rbac.authorization.k8s.io".into(),
            "widgets.example.com".into(),
        ];
        VerifyPlan::new(&options, &resources, namespace).expect("valid settings")
    }

    fn summary() -> Summary {
        let entry = |resource: &str, cluster_scoped| ResourceSummary {
            resource: resource.into(),
            done: true,
            cluster_scoped,
            ..Default::default()
        };
        Summary {
            resources: vec![
                entry("secrets", false),
                entry("clusterroles.rbac.authorization.k8s.io", true),
                entry("widgets.example.com", false),
            ],
            ..Default::default()
        }
    }

    fn config_error(result: Result<impl std::fmt::Debug, ReencryptError>) -> String {
        match result {
            Err(ReencryptError::Config(m)) => m,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn settings_errors_name_reencrypts_flags() {
        let options = |change: fn(&mut EtcdConnection)| {
            let mut etcd = EtcdConnection {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                ..EtcdConnection::default()
            };
            change(&mut etcd);
            VerifyOptions {
                etcd,
                etcd_prefix: "/registry".into(),
                expect_key_id: "k".into(),
                allow_kms_v1: false,
            }
        };
        let new = |o: &VerifyOptions| VerifyPlan::new(o, &["secrets".into()], None);
        let m = config_error(new(&options(|e| e.endpoints = vec![" ".into()])));
        assert!(m.starts_with("--verify-etcd-endpoints: "), "{m}");
        let m = config_error(new(&options(|e| e.cert = Some("c.pem".into()))));
        assert!(
            m.starts_with("--etcd-cert and --etcd-key go together"),
            "{m}"
        );
        // The TLS files are read before the run.
        for (change, flag) in [
            (
                (|e: &mut EtcdConnection| e.cacert = Some("/nonexistent/ca.pem".into()))
                    as fn(&mut EtcdConnection),
                "--etcd-cacert /nonexistent/ca.pem: ",
            ),
            (
                |e| {
                    e.cert = Some("/nonexistent/c.pem".into());
                    e.key = Some("k.pem".into());
                },
                "--etcd-cert /nonexistent/c.pem: ",
            ),
            (
                |e| {
                    e.cert = Some("Cargo.toml".into());
                    e.key = Some("/nonexistent/k.pem".into());
                },
                "--etcd-key /nonexistent/k.pem: ",
            ),
        ] {
            let m = config_error(new(&options(change)));
            assert!(m.starts_with(flag), "{flag}: {m}");
        }
    }

    fn prefixes(plan: &VerifyPlan, summary: &Summary) -> Vec<String> {
        plan.audits_for(summary)
            .into_iter()
            .map(|(_, a)| a.prefix)
            .collect()
    }

    #[test]
    fn a_cluster_scoped_resource_is_verified_whole_even_with_a_namespace() {
        assert_eq!(
            prefixes(&plan(Some("app")), &summary()),
            [
                "/registry/secrets/app/",
                "/registry/clusterroles/",
                "/registry/example.com/widgets/app/"
            ]
        );
        assert_eq!(
            prefixes(&plan(None), &summary()),
            [
                "/registry/secrets/",
                "/registry/clusterroles/",
                "/registry/example.com/widgets/"
            ]
        );
    }

    fn checked(resource: &str, seen: u64, values: u64) -> Checked {
        let mut tally = Tally::default();
        for i in 0..values {
            tally.add(
                format!("/registry/{resource}/ns/{i}").as_bytes(),
                &audit::ValueClass::KmsV2 {
                    provider: "p".into(),
                    key_id: "k".into(),
                    dek_source: audit::DekSource::HkdfSeed,
                    envelope: audit::EnvelopeFormat::Foreign,
                },
                &Expectations::default(),
            );
        }
        Checked {
            resource: resource.into(),
            prefix: format!("/registry/{resource}/"),
            seen,
            tally,
        }
    }

    #[test]
    fn an_empty_prefix_fails_when_the_run_saw_objects_of_its_resource() {
        let verified = |results| Verified {
            expect_key_id: "k".into(),
            results,
        };
        let v = verified(vec![checked("secrets", 3, 3), checked("widgets", 5, 0)]);
        assert!(!v.passed());
        let why = v.failure().unwrap_or_default();
        assert!(
            why.contains("/registry/widgets/ holds no value while the run saw 5 widgets"),
            "{why}"
        );
        // Nothing read anywhere: nothing verified, which is not a pass either.
        let v = verified(vec![checked("secrets", 0, 0)]);
        assert!(!v.passed() && v.failure().is_some_and(|m| m.contains("read nothing")));
        // A resource with no objects beside one that was read is fine.
        assert!(verified(vec![checked("secrets", 2, 2), checked("widgets", 0, 0)]).passed());
    }
}
