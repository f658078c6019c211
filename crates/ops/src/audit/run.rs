//! The `polykms audit` command: scan the prefix (or each resource's prefix), classify and count
//! every value, take the census by wrap, unwrap with `--unwrap`, print, and decide.

use serde_json::json;

use super::census::Census;
use super::unwrap::{self, EnvelopeOpener, UnwrapReport, UnwrapSettings, group_label};
use super::{AuditError, Connector, EtcdFlags, Options, OutputFormat, Tally, classify, etcd};
use crate::reencrypt::etcd_prefix;

/// Where the census looks for resources, and which to scan.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `--etcd-prefix`: the apiserver's `--etcd-prefix`, which names the resource of each key
    /// in the census and under which `--resources` are stored.
    pub etcd_root: String,
    /// `--resources`: scan these resources (`plural` or `plural.group`) instead of `--prefix`;
    /// each must hold at least one value.
    pub resources: Vec<String>,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            etcd_root: "/registry".into(),
            resources: Vec::new(),
        }
    }
}

impl Scope {
    /// The prefixes to scan, each with the resource it was asked for (None: `--prefix`).
    fn prefixes(&self, options: &Options) -> Result<Vec<(Option<String>, String)>, AuditError> {
        if !self.etcd_root.starts_with('/') {
            return Err(AuditError::Config(format!(
                "--etcd-prefix must start with /, not {:?}",
                self.etcd_root
            )));
        }
        if self.resources.is_empty() {
            return Ok(vec![(None, options.prefix.clone())]);
        }
        self.resources
            .iter()
            .map(|r| {
                let ok = !r.is_empty()
                    && r.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c));
                if ok {
                    Ok((Some(r.clone()), etcd_prefix(&self.etcd_root, r, None)))
                } else {
                    Err(AuditError::Config(format!(
                        "--resources: {r:?} is not a resource name (plural or plural.group, e.g. \
                         secrets)"
                    )))
                }
            })
            .collect()
    }
}

/// What one run found.
struct Outcome {
    tally: Tally,
    census: Census,
    /// Prefixes scanned, each with its resource (if asked for by name) and its key count.
    scanned: Vec<(Option<String>, String, u64)>,
    unwrap: Option<UnwrapReport>,
}

/// Runs the audit, prints the report (table or JSON) and says whether it passed; `Err` carries
/// the exit code. With `unwrap`, every distinct DEK envelope is unwrapped through the opener.
pub async fn run(
    options: &Options,
    scope: &Scope,
    unwrap: Option<(&dyn EnvelopeOpener, UnwrapSettings)>,
) -> Result<(), AuditError> {
    let format = super::validate(options)?;
    let prefixes = scope.prefixes(options)?;
    if let Some((_, settings)) = &unwrap {
        settings.validate()?;
    }
    let mut client = Connector::new(&options.etcd, &EtcdFlags::AUDIT)?
        .connect()
        .await?;
    let mut tally = Tally::default();
    let mut census = if unwrap.is_some() {
        Census::keeping_requests()
    } else {
        Census::default()
    };
    let mut scanned = Vec::with_capacity(prefixes.len());
    for (resource, prefix) in prefixes {
        let before = tally.total;
        etcd::for_each_value(&mut client, &prefix, |key, value| {
            tally.add(key, &classify::classify(value), &options.expect);
            if let Some(dek) = super::stored_dek(value) {
                let name = resource.clone().or_else(|| {
                    super::resource_of(&String::from_utf8_lossy(key), &scope.etcd_root)
                });
                census.add(key, dek, name.as_deref().unwrap_or(&prefix));
            }
        })
        .await?;
        scanned.push((resource, prefix, tally.total - before));
    }
    let unwrap = match unwrap {
        Some((opener, settings)) => {
            if census.dek_envelopes() > 0 {
                eprintln!(
                    "unwrapping {} distinct DEK envelope(s) through --config, at most {} per \
                     second, {} at a time",
                    census.dek_envelopes(),
                    if settings.qps > 0.0 {
                        settings.qps.to_string()
                    } else {
                        "any number".into()
                    },
                    settings.concurrency
                );
            }
            Some(unwrap::unwrap_all(&census, opener, settings).await?)
        }
        None => None,
    };
    let outcome = Outcome {
        tally,
        census,
        scanned,
        unwrap,
    };
    print(&outcome, options, format);
    match outcome.failures() {
        failures if failures.is_empty() => Ok(()),
        failures => Err(AuditError::Findings(format!(
            "audit failed: {}",
            failures.join("; ")
        ))),
    }
}

impl Outcome {
    /// Every prefix scanned, for messages.
    fn prefixes(&self) -> String {
        let all: Vec<&str> = self.scanned.iter().map(|(_, p, _)| p.as_str()).collect();
        all.join(", ")
    }

    /// Why the audit fails; empty when it passes. A scan that read nothing, or a resource
    /// asked for by name that holds nothing, fails: nothing was checked.
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tally.total == 0 {
            out.push(format!(
                "no key under {}: nothing was checked (a wrong --prefix, or the objects \
                 expected there are gone)",
                self.prefixes()
            ));
        }
        for (resource, prefix, n) in &self.scanned {
            if let (Some(resource), 0) = (resource, n)
                && self.tally.total > 0
            {
                out.push(format!(
                    "resource {resource} holds no key under {prefix}: nothing was checked for \
                     it (check --resources and --etcd-prefix)"
                ));
            }
        }
        if self.tally.findings_total > 0 {
            out.push(format!(
                "{} of {} value(s) under {} are not encrypted as expected",
                self.tally.findings_total,
                self.tally.total,
                self.prefixes()
            ));
        }
        if let Some(report) = &self.unwrap {
            if report.unreadable_objects > 0 {
                let groups: Vec<String> = report
                    .unreadable
                    .iter()
                    .map(|g| format!("{} under {}", g.objects, group_label(&g.key_versions)))
                    .collect();
                out.push(format!(
                    "{} object(s) would become unreadable with this configuration ({})",
                    report.unreadable_objects,
                    groups.join(", ")
                ));
            } else if report.readable_objects == 0 && self.tally.total > 0 {
                out.push(format!(
                    "--unwrap found no KMS value under {} to decrypt: nothing was proven",
                    self.prefixes()
                ));
            }
        }
        out
    }
}

fn print(outcome: &Outcome, options: &Options, format: OutputFormat) {
    let passed = outcome.failures().is_empty();
    match format {
        OutputFormat::Table => {
            let mut out = outcome.tally.to_table(&outcome.prefixes());
            out.push_str(&outcome.census.to_table());
            if let Some(report) = &outcome.unwrap {
                out.push_str(&report.to_table());
                out.push_str(if report.passed() {
                    "\nOK: every object's DEK envelope unwraps through --config: it is safe, for \
                     what is stored now, to deploy it\n"
                } else {
                    "\nFAIL: with --config, the objects above would become unreadable: keep the \
                     key versions they need (or re-encrypt them first, docs/rotation.md)\n"
                });
            }
            print!("{out}");
        }
        OutputFormat::Json => {
            let resources: Vec<_> = outcome
                .scanned
                .iter()
                .map(|(resource, prefix, keys)| {
                    json!({ "resource": resource, "prefix": prefix, "keys": keys })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "prefix": outcome.prefixes(),
                    "scanned": resources,
                    "passed": passed,
                    "expect_provider": options.expect.provider,
                    "expect_key_id": options.expect.key_id,
                    "allow_kms_v1": options.expect.allow_kms_v1,
                    "report": outcome.tally,
                    "census": outcome.census.to_json(),
                    "unwrap": outcome.unwrap,
                })
            );
        }
    }
}
