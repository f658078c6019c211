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
            results.push((resource.clone(), options.prefix.clone(), tally));
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
        };
        let resources = [
            "secrets".to_string(),
            "clusterroles.rbac.authorization.k8s.io".into(),
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
            ["/registry/secrets/app/", "/registry/clusterroles/"]
        );
        assert_eq!(
            prefixes(&plan(None), &summary()),
            ["/registry/secrets/", "/registry/clusterroles/"]
        );
    }
}
